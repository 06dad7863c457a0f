"""Recognition of enrolled speakers in a streamed meeting; calibration of ``profile_threshold``.

    OMP_NUM_THREADS=1 python bench/enroll_id.py [--profile-threshold T ...] [--latency 1.0]
                                                [--precision bf16] [--libri] [--vad pyannote|silero]
    python bench/enroll_id.py --timing | --cli-timing

Enrolls VCTK p225..p228 from ``data/enroll/vctk_p22x/*.wav`` (3 utterances each, none of them in
the meeting) with :func:`enroll_audio` and the real ECAPA weights into a temporary store, streams
``data/dev/dev_vctk4.wav`` (3.4 min, the same 4 speakers; reference labels ``vctk_p225`` ...
map to the enrolled names ``p225`` ...) through the default streaming pipeline (``--vad pyannote``:
segmentation-3.0; ``--vad silero``: the sliding-window :class:`Pipeline`), latency 1.0 s, labels
exactly as the stream finalised them and scores, on a 10 ms grid:

- ident: share of an enrolled speaker's reference speech (where they speak alone) whose final
  label is their name. Missed speech counts against it.
- wrong: share of it labelled with another enrolled name.
- false-name: share of the non-enrolled speakers' speech (where they speak alone) labelled with
  any enrolled name.
- DER (collar 0.25, overlap scored; pyannote's optimal label mapping) and, with all four
  enrolled, IER: pyannote's identification error rate (collar 0.25, no mapping: the reference
  labels mapped to the names, so every anonymous or wrong label is an error).

Scenarios: none enrolled (baseline), all four enrolled, p225+p226 enrolled (p227/p228 unknown),
p227+p228 enrolled (p225/p226 unknown). Window embeddings are cached across runs (the windows
depend only on the audio), so a sweep costs one embedding pass.

With the default segmented pipeline (``--vad pyannote``, with the 10 s second look, 2026-12-01, same machine)::

    OMP_NUM_THREADS=1 python bench/enroll_id.py --profile-threshold 0.4 0.42 0.45

        T  all four: ident  worst ident  worst false-name
     0.40             98.7         97.8              0.4
     0.42             98.7         97.8              0.3    <- the segmented default
     0.45             97.9         96.7              0.3
    (--libri cross-check at 0.42, later halves: ident 92.9%, false names 0.3%)

Calibration (this 2-core Xeon, bf16, silero VAD, latency 1.0 s; criterion: identification >= 95%
in every scenario with false-name <= 2% in every scenario, with the most margin)::

    OMP_NUM_THREADS=1 python bench/enroll_id.py --libri --profile-threshold 0.3 0.35 0.38 0.4 0.42 0.45 0.5

    (This sweep predates the fix that labels speech with the closest enrolled speaker when only
    enrolled speakers exist and none reaches the threshold. Re-run at 0.40 after it: all four
    96.9% ident / 2.1% miss / DER 4.0%; p225+p226 97.0% / false 0.5%; p227+p228 96.1% / 0.0%.)

    enrolled: 20-24 s of speech each; centroid cosines between the four 0.04-0.29
        T scenario    ident  p225  p226  p227  p228  wrong  false   miss    DER    IER
     0.30 none            -     -     -     -     -      -    0.0    2.1    3.8      -
     0.30 all four     97.5  98.8  97.2  96.2  97.9    0.3      -    2.1    3.6    3.6
     0.30 p225+p226    98.0  98.8  97.2     -     -    0.0    6.7    2.1    6.5      -
     0.30 p227+p228    97.6     -     -  96.2  99.0    0.0   10.6    2.1   15.2      -
     0.35 all four     97.4  98.4  97.2  96.2  97.9    0.3      -    2.2    3.6    3.6
     0.35 p225+p226    97.8  98.4  97.2     -     -    0.0    2.1    2.1    4.3      -
     0.35 p227+p228    97.1     -     -  96.2  98.0    0.0    3.1    2.1    5.2      -
     0.38 all four     96.6  98.4  95.9  94.3  97.9    0.2      -    2.6    4.3    4.3
     0.38 p225+p226    97.1  98.4  95.9     -     -    0.0    1.6    2.1    4.4      -
     0.38 p227+p228    96.1     -     -  94.3  97.9    0.0    0.0    2.1    4.3      -
     0.40 all four     96.5  98.4  95.7  94.3  97.9    0.2      -    2.5    4.4    4.4
     0.40 p225+p226    97.0  98.4  95.7     -     -    0.0    0.5    2.1    3.8      -
     0.40 p227+p228    96.1     -     -  94.3  97.9    0.0    0.0    2.1    4.3      -
     0.42 all four     96.1  98.4  95.5  93.7  96.8    0.2      -    2.5    4.7    4.7
     0.42 p225+p226    96.9  98.4  95.5     -     -    0.0    0.5    2.1    3.8      -
     0.42 p227+p228    95.3     -     -  93.7  96.8    0.0    0.0    2.1    4.6      -
     0.45 all four     95.2  97.4  93.6  93.2  96.8    0.2      -    2.4    5.6    5.6
     0.45 p225+p226    95.4  97.4  93.6     -     -    0.0    0.5    2.1    4.3      -
     0.45 p227+p228    95.0     -     -  93.2  96.8    0.0    0.0    2.1    4.8      -
     0.50 all four     92.4  95.2  92.0  87.2  95.6    0.2      -    2.3    8.3    8.3
     0.50 p225+p226    93.6  95.2  92.0     -     -    0.0    0.5    2.1    5.1      -
     0.50 p227+p228    91.4     -     -  87.2  95.6    0.0    0.0    2.1    6.3      -

    T      worst ident  worst false-name  margin (min of ident-95%, 2%-false)
     0.30        97.5%             10.6%    -8.6
     0.35        97.1%              3.1%    -1.1
     0.38        96.1%              1.6%    +0.4 ok
     0.40        96.1%              0.5%    +1.1 ok
     0.42        95.3%              0.5%    +0.3 ok
     0.45        95.0%              0.5%    +0.0 ok
     0.50        91.4%              0.5%    -3.6

    cross-check on dev_libri00..07 (40 speakers, each enrolled from the first half of their own solo
    speech in the meeting, 3-7 s, when that reaches 3 s (32 did); alternate speakers enrolled):
     T     ident (second half)  false-name
     0.30       95.6%              3.0%
     0.35       94.6%              1.4%
     0.38       93.8%              1.1%
     0.40       92.9%              0.8%
     0.42       92.2%              0.6%
     0.45       90.6%              0.2%
     0.50       85.4%              0.2%

Finer steps (0.36-0.44 by 0.01) give the same picture: 0.40 has the most margin (+1.1), so the
default ``ClusterConfig.profile_threshold = 0.4`` stands (unchanged). Below 0.38 unknown voices get
enrolled names (false-name 1.6-10.6%); above 0.42 enrolled voices fall back to anonymous labels.
With short enrollments (3-7 s, the Libri cross-check) identification is lower (93% at 0.40); 8 s or
more of enrollment speech is what ``enroll`` asks for. ``miss`` above the baseline's 2.1% (e.g.
2.5% at 0.40, all four enrolled) is speech the pipeline finalised with no label at all: when only
enrolled speakers exist and a piece's averaged score is below the threshold for all of them,
``OnlineClusterer.pick`` returns -1 and ``Pipeline._label_piece`` drops the piece.

Enrollment timing (``python bench/enroll_id.py --timing``; 2 threads, model loaded, bf16):
enroll_audio on 9.9 s of speech (the first 10 s of p226_023) takes 0.41 s (median of 5; 0.49 s as
the first call in the process); the whole ``stream-spk enroll NAME FILE`` process takes 1.89 s
(median of 5, ``--cli-timing``), of which about 1.1 s is Python start-up and importing torch.
"""

from __future__ import annotations

from stream_spk.runtime import configure_threads

configure_threads()  # before torch loads

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import soundfile as sf

from stream_spk.clustering import ClusterConfig
from stream_spk.enrollment import enroll_audio
from stream_spk.evaluation import der_report
from stream_spk.pipeline import Pipeline, PipelineConfig
from stream_spk.rttm import read_rttm
from stream_spk.session import open_store
from stream_spk.types import AudioChunk, SpeakerTurn
from stream_spk.vad import VadConfig

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SPEAKERS = ("p225", "p226", "p227", "p228")
SCENARIOS: dict[str, tuple[str, ...]] = {
    "none": (),
    "all four": SPEAKERS,
    "p225+p226": ("p225", "p226"),
    "p227+p228": ("p227", "p228"),
}
FRAME = 0.01  # scoring grid (s)
IDENT_TARGET, FALSE_NAME_LIMIT = 0.95, 0.02


class CachedEmbedder:
    """Wraps an embedder; windows already embedded (same samples) are served from a cache."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.min_samples = inner.min_samples
        self._cache: dict[bytes, np.ndarray] = {}

    def embed(self, wavs, weights=None):
        weights = list(weights) if weights is not None else [None] * len(wavs)

        def key(w, wt):
            h = hashlib.sha1(np.ascontiguousarray(w, np.float32).tobytes())
            h.update(b"-" if wt is None else np.ascontiguousarray(wt, np.float32).tobytes())
            return h.digest()

        keys = [key(w, wt) for w, wt in zip(wavs, weights, strict=True)]
        todo = {k: (w, wt) for k, w, wt in zip(keys, wavs, weights, strict=True) if k not in self._cache}
        if todo:
            items = list(todo.values())
            embs = self.inner.embed([w for w, _ in items], weights=[wt for _, wt in items]) \
                if any(wt is not None for _, wt in items) else self.inner.embed([w for w, _ in items])
            for k, e in zip(todo, embs, strict=True):
                self._cache[k] = np.asarray(e, np.float32)
        return np.stack([self._cache[k] for k in keys]) if keys else np.zeros((0, 192), np.float32)


class CachedSegmenter:
    """Wraps a chunk segmenter; chunks already seen are served from a cache."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.chunk_samples = inner.chunk_samples
        self.frame_centres = inner.frame_centres
        self._cache: dict[bytes, np.ndarray] = {}

    def segment(self, chunks: np.ndarray) -> np.ndarray:
        keys = [hashlib.sha1(np.ascontiguousarray(c).tobytes()).digest() for c in chunks]
        todo = [i for i, k in enumerate(keys) if k not in self._cache]
        if todo:
            for i, p in zip(todo, self.inner.segment(chunks[todo]), strict=True):
                self._cache[keys[i]] = p
        return np.stack([self._cache[k] for k in keys])


SEGMENTER: list = []  # the segmentation model on the chunk and on the context chunk, loaded once (--vad pyannote)


def read(path: Path) -> np.ndarray:
    x, sr = sf.read(path, dtype="float32")
    assert sr == 16000 and x.ndim == 1, path
    return x


def enroll_all(embedder, store_path: Path, enroll_dir: Path) -> dict[str, object]:
    """Enroll every speaker of SPEAKERS; returns {name: KnownSpeaker}."""
    out = {}
    with open_store(store_path) as store:
        for name in SPEAKERS:
            files = sorted((enroll_dir / f"vctk_{name}").glob("*.wav"))
            res = enroll_audio(name, [(f.name, read(f)) for f in files], embedder, store)
            assert res.accepted, res
            notes = f" ({', '.join(res.codes)})" if res.feedback else ""
            print(f"enrolled {name}: {res.speech_seconds:.1f} s of speech, {res.n_windows} windows{notes}",
                  flush=True)
            out[name] = res.speaker
    return out


def stream(embedder, audio: np.ndarray, profiles: list, threshold: float, latency: float,
           chunk: float = 4.0) -> list[tuple[float, float, str]]:
    """Final turns (start, end, label) as the stream emitted them."""
    if SEGMENTER:  # --vad pyannote: the default segmented pipeline with this profile threshold
        from stream_spk.segmented import SegmentedPipeline
        from stream_spk.session import SessionOptions

        seg_cfg = SessionOptions(latency=latency, use_profiles=False).segmented_config()
        seg_cfg = replace(seg_cfg, cluster=replace(seg_cfg.cluster, profile_threshold=threshold))
        pipe = SegmentedPipeline(embedder, SEGMENTER[0], seg_cfg, profiles=profiles, context_segmenter=SEGMENTER[1])
    else:
        cfg = PipelineConfig(latency=latency, step=0.5 if latency >= 1.0 else max(0.1, latency / 2),
                             vad=VadConfig(backend="silero"), cluster=ClusterConfig(profile_threshold=threshold))
        pipe = Pipeline(embedder, cfg, profiles=profiles)
    finals: dict[int, tuple[float, float, str]] = {}
    n = int(chunk * 16000)

    def take(events):
        for ev in events:
            if isinstance(ev, SpeakerTurn) and ev.status == "final":
                finals[ev.turn_id] = (ev.start, ev.end, ev.label)

    for i in range(0, audio.size, n):
        take(pipe.process(AudioChunk(audio[i : i + n], i / 16000)))
    take(pipe.flush())
    return sorted(finals.values())


def frames_of(turns, n_frames: int) -> list[set[str]]:
    out: list[set[str]] = [set() for _ in range(n_frames)]
    for s, e, label in turns:
        for k in range(int(round(s / FRAME)), min(n_frames, int(round(e / FRAME)))):
            out[k].add(label)
    return out


def score(ref_turns, hyp_turns, enrolled: tuple[str, ...], duration: float) -> dict:
    """ident / wrong per enrolled speaker, false-name over the others, DER and (all enrolled) IER."""
    n = int(np.ceil(duration / FRAME)) + 1
    ref = frames_of([(s, e, lab.removeprefix("vctk_")) for s, e, lab in ref_turns], n)
    hyp = frames_of(hyp_turns, n)
    names = set(enrolled)
    right: dict[str, int] = dict.fromkeys(SPEAKERS, 0)
    wrong: dict[str, int] = dict.fromkeys(SPEAKERS, 0)
    total: dict[str, int] = dict.fromkeys(SPEAKERS, 0)
    missed = 0
    for r, h in zip(ref, hyp, strict=True):
        if len(r) != 1:
            continue
        (who,) = r
        total[who] += 1
        missed += not h
        if who in h:
            right[who] += 1
        elif h & names:
            wrong[who] += 1
    res: dict = {"ident": {}, "wrong": {}, "missed": missed / sum(total.values())}
    for who in enrolled:
        res["ident"][who] = right[who] / total[who]
        res["wrong"][who] = wrong[who] / total[who]
    known = [w for w in SPEAKERS if w in names]
    unknown = [w for w in SPEAKERS if w not in names]
    res["ident_all"] = sum(right[w] for w in known) / sum(total[w] for w in known) if known else float("nan")
    res["false_name"] = (sum(wrong[w] + right[w] for w in unknown) / sum(total[w] for w in unknown)
                         if unknown else float("nan"))  # an unknown voice has no right name: right[] is 0
    uri = "dev_vctk4"
    res["der"] = der_report({uri: ref_turns}, {uri: hyp_turns}, collar=0.25).total.der
    res["ier"] = float("nan")
    if len(known) == len(SPEAKERS):
        from pyannote.core import Annotation, Segment
        from pyannote.metrics.identification import IdentificationErrorRate

        def ann(turns):
            a = Annotation(uri=uri)
            for k, (s, e, lab) in enumerate(turns):
                a[Segment(s, e), k] = lab
            return a

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res["ier"] = IdentificationErrorRate(collar=0.25)(
                ann([(s, e, lab.removeprefix("vctk_")) for s, e, lab in ref_turns]), ann(hyp_turns))
    return res


def solo_turns(turns, who: str) -> list[tuple[float, float]]:
    """``who``'s reference turns with the parts where someone else also speaks cut out."""
    others = [(s, e) for s, e, lab in turns if lab != who]
    out = []
    for s, e, lab in turns:
        if lab != who:
            continue
        pieces = [(s, e)]
        for os_, oe in others:
            pieces = [p for a, b in pieces for p in ((a, min(b, os_)), (max(a, oe), b)) if p[1] - p[0] > 0.05]
        out += pieces
    return sorted(out)


def libri_crosscheck(embedder, inner, dev_dir: Path, thresholds: list[float], latency: float) -> list[tuple]:
    """Enroll each LibriSpeech meeting speaker from the first half of their solo speech in that
    meeting (refused under 3 s of speech: then always unknown); stream the meeting with alternate
    speakers enrolled, the others unknown. Ident is scored on the second half only."""
    rows = []
    wavs = sorted(dev_dir.glob("dev_libri*.wav"))
    cases = []  # (audio, ref_turns, enrolled profiles, {name: later-half start}, unknown names)
    with tempfile.TemporaryDirectory() as tmp:
        for wav in wavs:
            audio = read(wav)
            ref = read_rttm(wav.with_suffix(".rttm"))[wav.stem]
            order = sorted({lab for _, _, lab in ref}, key=lambda w: min(s for s, _, lab in ref if lab == w))
            profiles, later = {}, {}
            with open_store(Path(tmp) / f"{wav.stem}.sqlite3") as store:
                for who in order:
                    solo = solo_turns(ref, who)
                    half, acc, cut = sum(e - s for s, e in solo) / 2, 0.0, []
                    for s, e in solo:  # the first half of their solo speech time (a turn may be cut)
                        if acc >= half:
                            break
                        cut.append((s, min(e, s + half - acc)))
                        acc += cut[-1][1] - s
                    res = enroll_audio(who.replace("_", " "), [(f"{s:.1f}", audio[int(s * 16000):int(e * 16000)])
                                                               for s, e in cut], inner, store)
                    if res.accepted:
                        profiles[who] = res.speaker
                        later[who] = cut[-1][1]
            for parity in (0, 1):
                enrolled = [w for i, w in enumerate(order) if i % 2 == parity and w in profiles]
                cases.append((wav.stem, audio, ref, [profiles[w] for w in enrolled], later, enrolled,
                              [w for w in order if w not in enrolled]))
            print(f"{wav.stem}: {len(profiles)}/{len(order)} speakers enrolled from their first half", flush=True)
    for t in thresholds:
        right = total = false = unknown_total = 0.0
        for _uri, audio, ref, profs, later, enrolled, unknown in cases:
            hyp = stream(embedder, audio, profs, t, latency)
            n = int(np.ceil(audio.size / 16000 / FRAME)) + 1
            hyp_f = frames_of(hyp, n)
            names = {w.replace("_", " ") for w in enrolled}
            for who in enrolled + unknown:
                for s, e in solo_turns(ref, who):
                    for k in range(int(round(s / FRAME)), min(n, int(round(e / FRAME)))):
                        if who in enrolled:
                            if k * FRAME >= later[who] - 1e-6:
                                total += 1
                                right += who.replace("_", " ") in hyp_f[k]
                        else:
                            unknown_total += 1
                            false += bool(hyp_f[k] & names)
        rows.append((t, right / total, false / unknown_total))
        print(f"{t:5.2f}  ident (later half) {pct(right / total)}%  false-name {pct(false / unknown_total)}%",
              flush=True)
    return rows


def pct(x: float) -> str:
    return f"{100 * x:5.1f}" if np.isfinite(x) else "    -"


def time_enrollment(embedder, enroll_dir: Path, repeats: int = 5) -> None:
    """enroll_audio on ~10 s of speech (one person's utterances) with a loaded, warmed-up model."""
    audio = [("p226_023[:10s]", read(enroll_dir / "vctk_p226" / "p226_023.wav")[: 10 * 16000])]
    times, speech = [], 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(repeats + 1):
            with open_store(Path(tmp) / f"t{k}.sqlite3") as store:
                t0 = time.perf_counter()
                res = enroll_audio("Timing Test", audio, embedder, store)
                dt = time.perf_counter() - t0
            speech = res.speech_seconds
            if k:  # the first call warms up the VAD and the model's kernels
                times.append(dt)
            else:
                print(f"enroll_audio, first call in the process: {dt:.2f} s", flush=True)
    print(f"enroll_audio on {speech:.1f} s of speech ({sum(x.size for _, x in audio) / 16000:.1f} s of audio), "
          f"warm, {repeats} runs: median {statistics.median(times):.2f} s, max {max(times):.2f} s "
          f"(torch threads {__import__('torch').get_num_threads()})", flush=True)


def time_cli(enroll_dir: Path, model_file: str | None) -> None:
    """Whole-process `stream-spk enroll NAME FILE...` (imports, model load, enrollment, store)."""
    with tempfile.TemporaryDirectory() as tmp:
        files = [str(Path(tmp) / "p226_023_10s.wav")]
        sf.write(files[0], read(enroll_dir / "vctk_p226" / "p226_023.wav")[: 10 * 16000], 16000)
        times = []
        for k in range(5):
            cmd = [sys.executable, "-m", "stream_spk", "enroll", f"Cli {k}", *files,
                   "--profiles", str(Path(tmp) / "cli.sqlite3")]
            if model_file:
                cmd += ["--model-file", model_file]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            print(f"`stream-spk enroll` whole process, run {k + 1}: {times[-1]:.2f} s (exit {proc.returncode})",
                  flush=True)
        print(f"  median {np.median(times):.2f} s, min {min(times):.2f} s, max {max(times):.2f} s")
        imports = []
        for _ in range(3):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import stream_spk.cli.main, torch, stream_spk.models.embedder, os; "
                            "os._exit(0)"],
                           check=True)
            imports.append(time.perf_counter() - t0)
        print(f"  of which python start + imports (cli, torch, model code): median {np.median(imports):.2f} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile-threshold", type=float, nargs="+", default=[ClusterConfig().profile_threshold],
                    metavar="T", help="profile thresholds to evaluate (default: the ClusterConfig default)")
    ap.add_argument("--latency", type=float, default=1.0)
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--vad", choices=("pyannote", "silero"), default="pyannote",
                    help="pyannote: the default segmented pipeline; silero: the sliding-window pipeline")
    ap.add_argument("--data", default=str(DATA), help="folder holding dev/ and enroll/")
    ap.add_argument("--model-file", help="ECAPA checkpoint (default: the cached download)")
    ap.add_argument("--timing", action="store_true", help="only time enroll_audio on ~10 s of speech")
    ap.add_argument("--cli-timing", action="store_true", help="only time the whole `stream-spk enroll` process")
    ap.add_argument("--libri", action="store_true",
                    help="also cross-check on dev_libri* (speakers enrolled from the first half of their own "
                         "turns; alternate speakers enrolled)")
    args = ap.parse_args()
    data = Path(args.data)
    enroll_dir = data / "enroll"
    if args.cli_timing:
        time_cli(enroll_dir, args.model_file)
        return 0

    from stream_spk.models.embedder import Embedder

    t0 = time.perf_counter()
    inner = Embedder.from_checkpoint(args.model_file, device="cpu", precision=args.precision, quiet=True)
    print(f"model loaded in {time.perf_counter() - t0:.1f} s; precision {inner.precision}, "
          f"torch threads {__import__('torch').get_num_threads()}", flush=True)
    if args.timing:
        time_enrollment(inner, enroll_dir)
        return 0

    embedder = CachedEmbedder(inner)
    if args.vad == "pyannote":
        from stream_spk.local_segmentation import ChunkSegmenter
        from stream_spk.models.segmentation import Segmenter
        from stream_spk.session import SessionOptions

        model = Segmenter.from_checkpoint(device="cpu", quiet=True)
        seg_cfg = SessionOptions(use_profiles=False).segmented_config()
        SEGMENTER.extend(CachedSegmenter(ChunkSegmenter(model, seconds))  # the chunk, then the longer look
                         for seconds in (seg_cfg.chunk, seg_cfg.context_chunk))
    with tempfile.TemporaryDirectory() as tmp:
        known = enroll_all(inner, Path(tmp) / "profiles.sqlite3", enroll_dir)
    names = list(known)
    cents = np.stack([known[n].centroid for n in names])
    sim = cents @ cents.T
    print("enrolled centroid cosines: " + ", ".join(
        f"{names[i]}-{names[j]} {sim[i, j]:.2f}" for i in range(len(names)) for j in range(i + 1, len(names))))

    wav = data / "dev" / "dev_vctk4.wav"
    audio = read(wav)
    ref_turns = read_rttm(wav.with_suffix(".rttm"))["dev_vctk4"]
    duration = audio.size / 16000
    head = (f"{'T':>5} {'scenario':<10} {'ident':>6} " + " ".join(f"{s:>5}" for s in SPEAKERS)
            + f" {'wrong':>6} {'false':>6} {'miss':>6} {'DER':>6} {'IER':>6}")
    print("\nident/wrong: % of an enrolled speaker's solo speech labelled with their / another enrolled name;"
          "\nfalse: % of non-enrolled speakers' solo speech labelled with an enrolled name;"
          "\nmiss: % of all solo speech with no final label (VAD misses; part of every ident);"
          f"\nDER / IER at collar 0.25 (latency {args.latency} s)\n")
    print(head)
    print("-" * len(head))
    verdicts = []
    for t in args.profile_threshold:
        worst_ident, worst_false = 1.0, 0.0
        for scen, enrolled in SCENARIOS.items():
            if not enrolled and t != args.profile_threshold[0]:
                continue  # the baseline does not depend on T
            t1 = time.perf_counter()
            hyp = stream(embedder, audio, [known[n] for n in enrolled], t, args.latency)
            res = score(ref_turns, hyp, enrolled, duration)
            per = " ".join(pct(res["ident"][s]) if s in res["ident"] else "    -" for s in SPEAKERS)
            wrong = sum(res["wrong"].values()) / len(enrolled) if enrolled else float("nan")
            print(f"{t:5.2f} {scen:<10} {pct(res['ident_all']):>6} {per} {pct(wrong):>6} "
                  f"{pct(res['false_name']):>6} {pct(res['missed']):>6} {pct(res['der']):>6} {pct(res['ier']):>6}"
                  f"   ({time.perf_counter() - t1:.0f} s)", flush=True)
            if enrolled:
                worst_ident = min(worst_ident, res["ident_all"])
            if np.isfinite(res["false_name"]):
                worst_false = max(worst_false, res["false_name"])
        margin = min(worst_ident - IDENT_TARGET, FALSE_NAME_LIMIT - worst_false)
        verdicts.append((t, worst_ident, worst_false, margin))
    print("\nT      worst ident  worst false-name  margin (min of ident-95%, 2%-false)")
    for t, wi, wf, m in verdicts:
        print(f"{t:5.2f}  {pct(wi):>10}%  {pct(wf):>15}%  {100 * m:+6.1f} {'ok' if m >= 0 else ''}")
    if args.libri:
        print("\ncross-check on dev_libri00..07 (40 speakers; each enrolled once, unknown once):")
        libri_crosscheck(embedder, inner, data / "dev", args.profile_threshold, args.latency)
    ok = [v for v in verdicts if v[3] >= 0]
    if ok:
        best = max(ok, key=lambda v: v[3])
        print(f"best: profile_threshold {best[0]:.2f} (margin {100 * best[3]:+.1f} points)")
    else:
        print("no threshold meets identification >= 95% with false-name <= 2%")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    sys.exit(main())
