"""Tuning and cross-validation of the segmentation-driven pipeline (``--vad pyannote``).

    python bench/tune_segmented.py [--folder DIR ...] [--cv [--grid JSON] [--cv-shifts 0.1,0.2] [--no-worse P]]
                                   [--shifts 0.3,0.6,1.09] [--set key=value ...] [--cache FILE] [--oracle-labels]

Model outputs are cached by audio content (segmentation chunks and embedding windows), so each
setting re-runs only the pipeline logic. Without ``--cv`` it scores one setting (the defaults,
changed by ``--set``) per subset, on the session record (merges applied, what ``--rttm`` writes)
and on the labels as emitted. ``--cv`` searches the grid below with leave-one-subset-out
cross-validation: for each subset (dev: libri, vctk, ami, pyannote_sample; more with extra
``--folder``s, e.g. the simulated meetings of ``bench/make_tune_set.py``) the setting is chosen on
the other subsets and scored on the held-out one; the cross-validated DER is the speech-weighted
total of those held-out scores. ``--no-worse P`` only lets a setting be chosen when no training
subset is more than P points worse than under the grid's first setting (the defaults). Settings
not in ``--set`` or the grid are the shipped ones (``SessionOptions().segmented_config()``).
``--shifts`` re-scores with that much silence put in front of every file (reference shifted to
match): labels should not depend on where audio falls on the step grid.
``--oracle-labels`` also scores the pipeline's own decisions of how many voices speak (0, 1, 2
per 10 ms) labelled with the reference's speakers: the DER a perfect clustering would reach, so
the error splits into segmentation and labelling.
"""

from __future__ import annotations

from stream_spk.runtime import configure_threads

configure_threads()  # before torch loads

import argparse
import hashlib
import itertools
import pickle
import re
import time
import warnings
from dataclasses import fields
from pathlib import Path

import numpy as np
import soundfile as sf

from stream_spk.clustering import ClusterConfig
from stream_spk.evaluation import der_report
from stream_spk.rttm import read_rttm
from stream_spk.segmented import SegmentationConfig, SegmentedConfig, SegmentedPipeline
from stream_spk.sinks import emitted_record, session_record
from stream_spk.types import AudioChunk, SpeakerTurn

DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dev"
GRID = {
    "speech_threshold": [0.5, 0.6, 0.7],
    "overlap_threshold": [0.5, 0.6, 0.7],
    "assign_threshold": [0.3, 0.4],
    "merge_threshold": [0.55, 0.7],
    "candidate_margin": [0.0, 0.2],
    "new_voice_margin": [0.0, 0.2],
}


def subset(uri: str) -> str:
    return re.sub(r"\d+$", "", uri).rstrip("_") or uri


class Cached:
    """A model call behind a content-keyed cache."""

    def __init__(self) -> None:
        self.cache: dict[bytes, np.ndarray] = {}
        self.seconds = 0.0

    @staticmethod
    def key(*arrays: np.ndarray | None) -> bytes:
        h = hashlib.blake2b(digest_size=16)
        for a in arrays:
            h.update(b"-" if a is None else np.ascontiguousarray(a).tobytes())
        return h.digest()


class CachingSegmenter(Cached):
    """The segmentation model on chunks of any length (``at(seconds)``), one cache for all."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model
        self._views: dict[float, _ChunkView] = {}

    def at(self, seconds: float) -> _ChunkView:
        """A :class:`LocalSegmenter` for ``seconds``-long chunks that shares this cache."""
        if seconds not in self._views:
            from stream_spk.local_segmentation import ChunkSegmenter

            self._views[seconds] = _ChunkView(self, ChunkSegmenter(self.model, seconds))
        return self._views[seconds]


class _ChunkView:
    def __init__(self, owner: CachingSegmenter, inner) -> None:
        self.owner, self.inner = owner, inner
        self.chunk_samples = inner.chunk_samples
        self.frame_centres = inner.frame_centres

    def segment(self, chunks: np.ndarray) -> np.ndarray:
        cache = self.owner.cache
        keys = [self.owner.key(c) for c in chunks]
        todo = [i for i, k in enumerate(keys) if k not in cache]
        if todo:
            t0 = time.perf_counter()
            out = self.inner.segment(chunks[todo])
            self.owner.seconds += time.perf_counter() - t0
            for i, p in zip(todo, out):
                cache[keys[i]] = p
        return np.stack([cache[k] for k in keys])


class CachingEmbedder(Cached):
    def __init__(self, inner) -> None:
        super().__init__()
        self.inner = inner
        self.min_samples = inner.min_samples

    def embed(self, wavs, weights=None):
        weights = weights or [None] * len(wavs)
        keys = [self.key(w, wt) for w, wt in zip(wavs, weights)]
        todo = [i for i, k in enumerate(keys) if k not in self.cache]
        if todo:
            t0 = time.perf_counter()
            out = self.inner.embed([wavs[i] for i in todo], weights=[weights[i] for i in todo])
            self.seconds += time.perf_counter() - t0
            for i, e in zip(todo, out):
                self.cache[keys[i]] = e
        return np.stack([self.cache[k] for k in keys]) if keys else np.zeros((0, 192), np.float32)


def make_config(params: dict) -> SegmentedConfig:
    """The shipped settings (what ``stream-spk diarize`` runs) with ``params`` changed."""
    from dataclasses import replace

    from stream_spk.session import SessionOptions

    seg_names = {f.name for f in fields(SegmentationConfig)}
    clu_names = {f.name for f in fields(ClusterConfig)}
    top_names = {f.name for f in fields(SegmentedConfig)} - {"segmentation", "cluster"}
    unknown = set(params) - seg_names - clu_names - top_names
    if unknown:
        raise SystemExit(f"unknown setting(s): {', '.join(sorted(unknown))}")
    base = SessionOptions().segmented_config()
    return replace(base, segmentation=replace(base.segmentation, **{k: v for k, v in params.items() if k in seg_names}),
                   cluster=replace(base.cluster, **{k: v for k, v in params.items() if k in clu_names}),
                   **{k: v for k, v in params.items() if k in top_names})


def run_file(pipe: SegmentedPipeline, audio: np.ndarray, chunk: float = 2.0) -> list:
    pipe.reset()
    n = int(chunk * 16000)
    events = []
    for i in range(0, audio.size, n):
        events += pipe.process(AudioChunk(audio[i : i + n], i / 16000))
    return events + pipe.flush()


def score(ref: dict, hyp: dict, uris: list[str], collar: float = 0.25) -> tuple[float, dict]:
    """Speech-weighted DER over ``uris`` and per-subset (der, fa, miss, conf, speech)."""
    report = der_report({u: ref[u] for u in uris}, {u: hyp.get(u, []) for u in uris}, collar=collar)
    by: dict[str, list] = {}
    for f in report.files:
        by.setdefault(subset(f.uri), []).append(f)
    out = {}
    for name, fs in by.items():
        sp = sum(f.speech for f in fs)
        out[name] = tuple(sum(getattr(f, a) * f.speech for f in fs) / sp for a in
                          ("der", "false_alarm", "missed", "confusion")) + (sp,)
    sp = sum(v[4] for v in out.values())
    return sum(v[0] * v[4] for v in out.values()) / sp, out


def pooled(files: dict, uris: list[str]) -> float:
    """DER over ``uris`` from per-file (error seconds, speech seconds)."""
    err = sum(files[u][0] for u in uris if u in files)
    sp = sum(files[u][1] for u in uris if u in files)
    return err / sp if sp else float("nan")


def provisional_agreement(events: list, step: float = 0.01) -> tuple[float, float]:
    """(seconds, total seconds) of provisional labels ("who is speaking now") that the final label
    emitted later for the same stretch confirms; only stretches that got a final label count."""
    finals: dict[int, SpeakerTurn] = {}
    for e in events:
        if isinstance(e, SpeakerTurn) and e.status == "final":
            finals[e.turn_id] = e
    steps: dict[int, set] = {}
    for t in finals.values():
        for i in range(int(round(t.start / step)), int(round(t.end / step))):
            steps.setdefault(i, set()).add(t.label)
    agree = total = 0
    for e in events:
        if isinstance(e, SpeakerTurn) and e.status == "provisional":
            for i in range(int(round(e.start / step)), int(round(e.end / step))):
                if i in steps:
                    total += 1
                    agree += e.label in steps[i]
    return agree * step, total * step


def evaluate(params: dict, audio: dict, seg, emb, shift: float = 0.0, keep: bool = False,
             counts: dict | None = None, provisional: list | None = None):
    """Session record (and, with ``keep``, the labels as emitted) of every file; ``counts``, when
    given, receives each file's (start, end, voices) runs (``SegmentedPipeline.count_log``), and
    ``provisional`` each file's :func:`provisional_agreement`."""
    config = make_config(params)
    pipe = SegmentedPipeline(emb, seg.at(config.chunk), config, context_segmenter=seg.at(config.context_chunk),
                             keep_counts=counts is not None)
    hyp, emitted = {}, {}
    for uri, a in audio.items():
        if shift:
            a = np.concatenate([np.zeros(int(round(shift * 16000)), np.float32), a])
        events = run_file(pipe, a)
        hyp[uri] = [(s - shift, e - shift, lab) for s, e, lab in session_record(events)]
        if keep:
            emitted[uri] = [(s - shift, e - shift, lab) for s, e, lab in emitted_record(events)]
        if counts is not None:
            counts[uri] = [(s - shift, e - shift, n) for s, e, n in pipe.count_log]
        if provisional is not None:
            provisional.append(provisional_agreement(events))
    return hyp, emitted


def oracle_labels(counts: list[tuple[float, float, int]], reference: list, step: float = 0.01) -> list:
    """Turns with the pipeline's speech / overlap decisions (``counts``: start, end, voices) but
    the reference's speakers: each ``step`` gets as many of the reference speakers active there as
    voices were decided (sorted by name), and placeholder labels where the reference has fewer
    speakers than that. Scored, this is the DER of the segmentation alone: what a perfect
    clustering would reach."""
    names = sorted({lab for _, _, lab in reference})
    frames = int(round(max([e for _, e, _ in reference] + [e for _, e, _ in counts] + [0.0]) / step)) + 1
    active = np.zeros((frames, len(names)), bool)
    for s, e, lab in reference:
        active[int(round(s / step)) : int(round(e / step)), names.index(lab)] = True
    out = []
    for start, end, n in counts:
        for i in range(int(round(start / step)), int(round(end / step))) if n > 0 else ():
            labels = ([names[k] for k in np.flatnonzero(active[i])] + [f"<extra {k}>" for k in range(1, n + 1)])[:n]
            out += [(i * step, (i + 1) * step, lab) for lab in labels]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", action="append", metavar="DIR",
                        help="WAV + RTTM folder; repeat to add more (default: the dev set). Each subset "
                             "(file name less its trailing digits) is one cross-validation fold")
    parser.add_argument("--cv", action="store_true", help="leave-one-subset-out search over the grid")
    parser.add_argument("--shifts", default="", help="comma-separated leading silences (s) to score too")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="settings to change")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--cache", metavar="FILE", help="keep model outputs in FILE between runs (pickle)")
    parser.add_argument("--grid", metavar="JSON",
                        help='search this grid instead, e.g. \'{"assign_threshold": [0.3, 0.4]}\'')
    parser.add_argument("--cv-shifts", default="", metavar="S,...",
                        help="score every --cv setting with these leading silences too (errors summed over "
                             "all shifts), so the choice does not depend on the step-grid phase")
    parser.add_argument("--oracle-labels", action="store_true",
                        help="also score the pipeline's speech / overlap decisions with the reference's "
                             "speakers as labels: the floor a perfect clustering would reach")
    parser.add_argument("--no-worse", type=float, metavar="POINTS",
                        help="--cv chooses only settings that leave no (training) subset more than POINTS "
                             "worse than the grid's first setting (put the current defaults first)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    from stream_spk.models.embedder import Embedder
    from stream_spk.models.segmentation import Segmenter

    wavs = sorted(w for folder in (args.folder or [str(DEFAULT)]) for w in Path(folder).glob("*.wav"))
    if len({w.stem for w in wavs}) != len(wavs):
        raise SystemExit("error: two --folder files share a name; names are the scoring keys")
    audio = {w.stem: sf.read(w, dtype="float32")[0] for w in wavs}
    ref: dict = {}
    for w in wavs:
        ref.update(read_rttm(w.with_suffix(".rttm")))
    seg = CachingSegmenter(Segmenter.from_checkpoint(device="cpu", backend="auto"))
    emb = CachingEmbedder(Embedder.from_checkpoint(precision=args.precision))
    if args.cache and Path(args.cache).exists():
        with open(args.cache, "rb") as fh:
            seg.cache, emb.cache = pickle.load(fh)

    def save_cache() -> None:
        if args.cache:
            with open(args.cache, "wb") as fh:
                pickle.dump((seg.cache, emb.cache), fh)
    params = {}
    for item in args.set:
        k, v = item.split("=", 1)
        params[k] = float(v) if re.fullmatch(r"[-+0-9.e]+|inf", v) else v
    total = sum(a.size for a in audio.values()) / 16000
    uris = sorted(audio)

    t0 = time.perf_counter()
    counts: dict | None = {} if args.oracle_labels else None
    agreement: list = []
    hyp, emitted = evaluate(params, audio, seg, emb, keep=True, counts=counts, provisional=agreement)
    wall = time.perf_counter() - t0
    print(f"{len(uris)} files, {total:.0f} s; first pass {wall:.1f} s ({total / wall:.1f}x real time; "
          f"segmentation {seg.seconds:.1f} s, embeddings {emb.seconds:.1f} s)")
    confirmed, shown = (sum(x) for x in zip(*agreement)) if agreement else (0.0, 0.0)
    if shown:
        print(f"provisional labels (who is speaking now) confirmed by the final label: "
              f"{confirmed / shown:.1%} of {shown:.0f} s")
    records = [("session record (merges applied)", hyp), ("labels as emitted", emitted)]
    if counts is not None:
        oracle = {u: oracle_labels(counts[u], ref[u]) for u in uris}
        records.append(("reference speakers on the pipeline's speech / overlap decisions", oracle))
    for title, h in records:
        for collar in (0.25, 0.0):
            der, parts = score(ref, h, uris, collar)
            print(f"\n{title}, collar {collar}: DER {der:.2%}")
            for name, (d, fa, miss, conf, sp) in sorted(parts.items()):
                print(f"  {name:16s} DER {d:6.1%}  FA {fa:6.1%}  miss {miss:6.1%}  conf {conf:6.1%}  ({sp:.0f} s)")
    save_cache()
    base = score(ref, hyp, uris)[0]
    for shift in [float(s) for s in args.shifts.split(",") if s]:
        h, _ = evaluate(params, audio, seg, emb, shift=shift)
        der = score(ref, h, uris)[0]
        print(f"shift {shift:.2f} s: DER {der:.2%} (change {100 * (der - base):+.2f} points)", flush=True)
    if args.shifts:
        save_cache()

    if args.cv:
        import json

        grid = json.loads(args.grid) if args.grid else GRID
        names = list(grid)
        combos = [dict(zip(names, vals)) for vals in itertools.product(*grid.values())]
        cv_shifts = [0.0] + [float(x) for x in args.cv_shifts.split(",") if x]
        results = []
        t0 = time.perf_counter()
        for i, combo in enumerate(combos):
            files: dict[str, tuple[float, float]] = {}
            for shift in cv_shifts:
                h, _ = evaluate({**params, **combo}, audio, seg, emb, shift=shift)
                for f in der_report(ref, h, collar=0.25).files:
                    err, sp = files.get(f.uri, (0.0, 0.0))
                    files[f.uri] = (err + f.der * f.speech, sp + f.speech)
            results.append((combo, files))
            if i == 0:
                print(f"\n{len(combos)} settings x {len(cv_shifts)} shifts, "
                      f"~{(time.perf_counter() - t0) * len(combos) / 60:.0f} min", flush=True)
        subsets = sorted({subset(u) for u in uris})
        members = {n: [u for u in uris if subset(u) == n] for n in subsets}

        def eligible(files: dict, names: list[str]) -> bool:
            """No subset in ``names`` worse than under the grid's first setting by --no-worse."""
            if args.no_worse is None:
                return True
            ref_files = results[0][1]
            return all(pooled(files, members[n]) <= pooled(ref_files, members[n]) + args.no_worse / 100
                       for n in names)

        held_total, held_speech = 0.0, 0.0
        print("\nleave-one-subset-out:")
        for held in subsets:
            train = [u for u in uris if subset(u) != held]
            test = [u for u in uris if subset(u) == held]
            ok = [r for r in results if eligible(r[1], [n for n in subsets if n != held])]
            best = min(ok, key=lambda r: pooled(r[1], train))
            der = pooled(best[1], test)
            sp = sum(best[1][u][1] for u in test)
            held_total += der * sp
            held_speech += sp
            print(f"  held out {held:16s} DER {der:6.1%} with {best[0]}")
        print(f"cross-validated DER: {held_total / held_speech:.2%}")
        ranked = sorted((r for r in results if eligible(r[1], subsets)), key=lambda r: pooled(r[1], uris))[:8]
        print("best on all files (optimistic), with each subset's DER:")
        for combo, files in ranked + ([results[0]] if results[0] not in ranked else []):
            per = " ".join(f"{name[:8]} {pooled(files, members[name]):.1%}" for name in subsets)
            print(f"  {pooled(files, uris):.2%} {combo} | {per}")
        save_cache()  # the shifted model outputs too
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
