"""GPU check: CUDA vs CPU parity, autocast parity, masked batching on CUDA, batch-64 throughput.

    python bench/gpu_check.py        (needs a CUDA device; exits 1 otherwise)

Prints each check with its measured value and PASS/FAIL; exit status 0 only if all pass.
"""

from __future__ import annotations

from stream_spk.runtime import configure_threads

configure_threads()  # before torch loads

import sys
import time

import numpy as np
import torch

from stream_spk.models.embedder import Embedder, load_ecapa
from stream_spk.models.registry import resolve_checkpoint


def cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 1
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    model = load_ecapa(resolve_checkpoint(quiet=True))
    rng = np.random.default_rng(0)
    wavs = [rng.standard_normal(int(s * 16000)).astype(np.float32) * 0.1 for s in rng.uniform(0.5, 6, 16)]
    cpu = Embedder(model, device="cpu", precision="fp32").embed(wavs)
    ok = True

    def report(name: str, value: float, passed: bool) -> None:
        nonlocal ok
        ok &= passed
        print(f"{'PASS' if passed else 'FAIL'}  {name}: {value:.6f}")

    gpu32 = Embedder(load_ecapa(resolve_checkpoint(quiet=True)), device="cuda", precision="fp32")
    value = cos(gpu32.embed(wavs), cpu).min()
    report("CUDA fp32 vs CPU fp32, min cosine", value, value > 0.9999)
    for precision in ("fp16", "bf16"):
        low = Embedder(gpu32.model, device="cuda", precision=precision)
        value = cos(low.embed(wavs), cpu).min()
        report(f"CUDA {precision} autocast vs CPU fp32, min cosine", value, value > 0.999)
    alone = np.stack([gpu32.embed([w])[0] for w in wavs])
    value = cos(gpu32.embed(wavs), alone).min()
    report("CUDA fp32 masked batch vs alone, min cosine", value, value >= 0.99999)
    for precision in ("fp32", "fp16", "bf16"):
        emb = Embedder(gpu32.model, device="cuda", precision=precision)
        batch = [rng.standard_normal(24000).astype(np.float32) * 0.1 for _ in range(64)]
        emb.embed(batch)
        torch.cuda.synchronize()
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < 3:
            emb.embed(batch)
            n += 64
        torch.cuda.synchronize()
        rate = n / (time.perf_counter() - start)
        print(f"INFO  CUDA {precision} batch 64 x 1.5 s: {rate:.0f} windows/s ({rate * 1.5:.0f} audio s/s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
