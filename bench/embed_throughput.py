"""Embedding throughput of the real ECAPA-TDNN: 1.5 s windows, batch 1/8/32, per precision.

    python bench/embed_throughput.py [--devices cpu cuda] [--precisions fp32 bf16 fp16] [--seconds 3]

Prints windows per second and audio seconds per second (a window = 1.5 s of audio), and the
CPU time of this process per window (all threads): on a shared machine the wall-clock rates
move with the other load, the CPU time per window much less.
"""

from __future__ import annotations

from stream_spk.runtime import configure_threads

configure_threads()  # before torch loads

import argparse
import time

import numpy as np
import torch

from stream_spk.models.embedder import Embedder, load_ecapa
from stream_spk.models.registry import resolve_checkpoint

WINDOW = 1.5


def measure(embedder: Embedder, batch: int, min_seconds: float) -> tuple[float, float]:
    """(windows per wall second, CPU milliseconds per window)."""
    rng = np.random.default_rng(0)
    wavs = [rng.standard_normal(int(WINDOW * 16000)).astype(np.float32) * 0.1 for _ in range(batch)]
    embedder.embed(wavs)  # warm-up
    if embedder.device.type == "cuda":
        torch.cuda.synchronize()
    done, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < min_seconds or done < 2 * batch:
        embedder.embed(wavs)
        done += batch
    if embedder.device.type == "cuda":
        torch.cuda.synchronize()
    return done / (time.perf_counter() - start), (time.process_time() - cpu) * 1000 / done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum timing per cell")
    args = parser.parse_args()
    model = load_ecapa(resolve_checkpoint(quiet=True))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; 1.5 s windows, real weights")
    print(f"{'device':6} {'precision':9} {'batch':>5} {'windows/s':>10} {'audio s/s':>10} {'cpu ms/win':>10}")
    for device in args.devices:
        for precision in args.precisions:
            emb = Embedder(model, device=device, precision=precision)
            for batch in args.batches:
                rate, cpu_ms = measure(emb, batch, args.seconds)
                print(f"{device:6} {precision:9} {batch:5d} {rate:10.1f} {rate * WINDOW:10.1f} {cpu_ms:10.1f}",
                      flush=True)


if __name__ == "__main__":
    main()
