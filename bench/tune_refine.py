"""Grid search of the offline second pass (``diarize --refine``) settings on the dev set.

    python bench/tune_refine.py [--folder ../shared/data/dev] [--threshold 0.5 0.6 0.65 0.7 0.8]

Streams every file once with the default pipeline, keeping its window embeddings, then runs
:func:`refine_turns` over the grid (linkage threshold x segment length x minimum speaker time)
and prints DER at collar 0.25, overall and per subset, for each setting.

The defaults in stream_spk/refine.py came from this search (streamed: 14.16%): threshold 0.6,
segment 3 s, min_speaker 2 s gave 12.38%. Thresholds 0.6-0.7 with 3 s segments stay within
12.2-12.9%; 0.5 over-splits (13.9-16.2%); 0.8, or 0.7 with 5 s segments, merges the VCTK
speakers (18-27%). 0.6 was taken over the marginally better 0.65 (12.22-12.31%) to stay
further from that cliff on unseen audio.
"""

from __future__ import annotations

from stream_spk.runtime import configure_threads

configure_threads()  # before torch loads

import argparse
import itertools
import re
import sys
import tempfile
from pathlib import Path

from stream_spk.evaluation import der_report
from stream_spk.pipeline import Pipeline
from stream_spk.refine import RefineConfig, refine_turns
from stream_spk.rttm import read_rttm
from stream_spk.runner import StreamRunner
from stream_spk.session import SessionOptions, build_pipeline
from stream_spk.sinks import RttmWriter
from stream_spk.sources import FileSource

DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dev"


def score(ref: dict, hyp: dict) -> str:
    report = der_report(ref, hyp, collar=0.25)
    subsets: dict[str, list[float]] = {}
    for f in report.files:
        name = re.sub(r"\d+$", "", f.uri).rstrip("_")
        acc = subsets.setdefault(name, [0.0, 0.0])
        acc[0] += f.der * f.speech
        acc[1] += f.speech
    total = sum(a[0] for a in subsets.values()) / sum(a[1] for a in subsets.values())
    parts = "  ".join(f"{k} {a[0] / a[1]:5.1%}" for k, a in sorted(subsets.items()))
    return f"DER {total:6.2%}   {parts}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--folder", default=str(DEFAULT))
    ap.add_argument("--threshold", type=float, nargs="+", default=[0.5, 0.6, 0.65, 0.7, 0.8])
    ap.add_argument("--segment", type=float, nargs="+", default=[3.0, 5.0])
    ap.add_argument("--min-speaker", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    args = ap.parse_args()
    wavs = sorted(Path(args.folder).glob("*.wav"))
    if not wavs:
        print(f"no .wav files in {args.folder}", file=sys.stderr)
        return 2
    base = build_pipeline(SessionOptions(use_profiles=False))
    pipeline = Pipeline(base.embedder, base.config, keep_windows=True)
    ref: dict = {}
    streamed: dict = {}
    logs: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for wav in wavs:
            pipeline.reset()
            writer = RttmWriter(Path(tmp) / f"{wav.stem}.rttm", wav.stem)
            StreamRunner(FileSource(wav, chunk_seconds=4.0, speed=None), pipeline, [writer]).run()
            ref.update(read_rttm(wav.with_suffix(".rttm")))
            streamed[wav.stem], logs[wav.stem] = writer.turns(), list(pipeline.window_log)
            print(f"streamed {wav.stem}: {len(logs[wav.stem])} windows", file=sys.stderr, flush=True)
    print(f"{'streamed (no second pass)':44s} {score(ref, streamed)}")
    for t, seg, min_sp in itertools.product(args.threshold, args.segment, args.min_speaker):
        cfg = RefineConfig(threshold=t, segment=seg, min_speaker=min_sp)
        hyp = {uri: refine_turns(streamed[uri], logs[uri], cfg) for uri in streamed}
        print(f"threshold {t:4.2f} segment {seg:3.1f} min_speaker {min_sp:3.1f}   {score(ref, hyp)}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
