"""Where the default segmented pipeline spends its time: the 5 s look, the 10 s look, embeddings.

    python bench/stage_times.py [FOLDER_OR_WAV ...] [--chunk-seconds 4] [--backend auto] [--precision auto]

Feeds every 16 kHz WAV (default: ../shared/data/dev) through ``build_pipeline`` in chunks of
``--chunk-seconds`` (4 s, as ``diarize`` reads files), one pipeline for all files, and prints the
audio seconds, the wall time, the real-time factor and the seconds spent in each model call (the
chunk segmenter, the context segmenter, the embedder), timed around the calls; the rest is
the pipeline's own logic. Model loading is not timed; the backends' first-use checks are.
"""

from __future__ import annotations

from stream_spk.runtime import configure_threads

configure_threads()  # before torch loads

import argparse
import sys
import time
from pathlib import Path

import soundfile as sf

from stream_spk.session import SessionOptions, build_pipeline
from stream_spk.types import AudioChunk

DEFAULT = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "dev"


def timed(obj, name: str, totals: dict[str, float], key: str) -> None:
    """Replace ``obj.name`` by a wrapper that adds its wall time to ``totals[key]``."""
    call = getattr(obj, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            totals[key] += time.perf_counter() - start

    setattr(obj, name, wrapper)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="*", type=Path, default=[DEFAULT])
    parser.add_argument("--chunk-seconds", type=float, default=4.0)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    wavs = sorted(w for p in args.inputs for w in (p.glob("*.wav") if p.is_dir() else [p]))
    if not wavs:
        print("no .wav files given", file=sys.stderr)
        return 2
    pipe = build_pipeline(SessionOptions(use_profiles=False, backend=args.backend, precision=args.precision))
    totals = {"5 s look": 0.0, "10 s look": 0.0, "embeddings": 0.0}
    timed(pipe.segmenter, "segment", totals, "5 s look")
    timed(pipe.context_segmenter, "segment", totals, "10 s look")
    timed(pipe.embedder, "embed", totals, "embeddings")
    step = int(args.chunk_seconds * 16_000)
    audio = wall = 0.0
    for wav in wavs:
        try:
            samples, sr = sf.read(wav, dtype="float32")
        except (OSError, RuntimeError) as exc:  # soundfile's errors derive from RuntimeError
            print(f"{wav}: cannot read ({str(exc).splitlines()[0]}), skipped", file=sys.stderr)
            continue
        if sr != 16_000 or samples.ndim != 1:
            print(f"{wav}: need 16 kHz mono, skipped", file=sys.stderr)
            continue
        audio += len(samples) / sr
        start = time.perf_counter()
        pipe.reset()
        for i in range(0, len(samples), step):
            pipe.process(AudioChunk(samples[i : i + step], i / sr))
        pipe.flush()
        wall += time.perf_counter() - start
    if wall == 0.0:
        print("no readable 16 kHz mono WAV among the inputs", file=sys.stderr)
        return 2
    parts = ", ".join(f"{k} {v:.1f} s ({v / wall:.0%})" for k, v in totals.items())
    print(f"{len(wavs)} files, {audio:.0f} s of audio in {wall:.1f} s = {audio / wall:.1f}x real time; {parts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
