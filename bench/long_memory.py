"""Memory stays flat on long input: a 2-hour recording (dev files concatenated) streamed fast.

    python bench/long_memory.py [--hours 2] [--folder ../shared/data/dev]

Writes the long file to a temporary folder (16-bit WAV, written block by block), streams it
through FileSource + Pipeline as fast as possible, and prints the process RSS after the first
10 minutes of audio and at the end (Linux /proc), and the throughput.
"""

from __future__ import annotations

from stream_spk.runtime import configure_threads

configure_threads()  # before torch loads

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import soundfile as sf

from stream_spk.session import SessionOptions, build_pipeline
from stream_spk.sources import FileSource

DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dev"


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--folder", default=str(DEFAULT))
    args = parser.parse_args()
    wavs = sorted(Path(args.folder).glob("*.wav"))
    target = int(args.hours * 3600 * 16000)
    with tempfile.TemporaryDirectory() as tmp:
        long_path = Path(tmp) / "long.wav"
        written = 0
        with sf.SoundFile(long_path, "w", samplerate=16000, channels=1, subtype="PCM_16") as out:
            for wav in itertools.cycle(wavs):
                data, _ = sf.read(wav, dtype="float32")
                data = data[: target - written]
                out.write(data)
                written += data.size
                if written >= target:
                    break
        pipeline = build_pipeline(SessionOptions(use_profiles=False))
        rss_start = rss_mib()
        rss_10min = None
        peak = rss_start
        t0 = time.perf_counter()
        marks = []
        for chunk in FileSource(long_path, chunk_seconds=4.0, speed=None):
            pipeline.process(chunk)
            if rss_10min is None and chunk.t1 >= 600:
                rss_10min = rss_mib()
            if int(chunk.t1) % 600 < 4 and chunk.t1 > 4:
                marks.append((chunk.t1 / 60, rss_mib()))
                peak = max(peak, marks[-1][1])
        pipeline.flush()
        wall = time.perf_counter() - t0
        rss_end = rss_mib()
        peak = max(peak, rss_end)
    print(f"{written / 16000 / 3600:.2f} h of audio in {wall:.0f} s ({written / 16000 / wall:.1f}x real time)")
    print(f"RSS: after model load {rss_start:.0f} MiB, after 10 min of audio {rss_10min:.0f} MiB, "
          f"peak {peak:.0f} MiB, at the end {rss_end:.0f} MiB (growth after 10 min: {peak - rss_10min:+.0f} MiB)")
    print("RSS every 10 min of audio: " + ", ".join(f"{m:.0f} min {r:.0f} MiB" for m, r in marks))
    print(f"speakers in the session: {len(pipeline.clusterer.clusters)}")


if __name__ == "__main__":
    main()
