"""Embedding throughput of the real ECAPA-TDNN: 1.5 s windows, batch 1/8/32, per backend and precision.

    python bench/embed_throughput.py [--devices cpu cuda] [--backends torch onnx openvino]
                                     [--precisions fp32 bf16 fp16] [--batches 1 8 32] [--seconds 3]
                                     [--openvino-dynamic]

Every available backend x precision (combinations a backend cannot run, or backends that are not
installed, get one line saying so). Prints windows per second and audio seconds per second (a
window = 1.5 s of audio), the CPU time of this process per window (all threads): on a shared
machine the wall-clock rates move with the other load, the CPU time per window much less; and
the worst cosine to torch fp32 over the four real clips of tests/data, alone and in one padded
batch.
"""

from __future__ import annotations

from stream_spk.runtime import configure_threads

configure_threads()  # before torch loads

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from stream_spk.errors import ModelError
from stream_spk.models import backends
from stream_spk.models.backends import BACKEND_CHOICES
from stream_spk.models.embedder import Embedder, load_ecapa
from stream_spk.models.registry import ECAPA_VOXCELEB, resolve_checkpoint

WINDOW = 1.5
CLIPS = Path(__file__).resolve().parent.parent / "tests" / "data"


def clips() -> list[np.ndarray]:
    import soundfile as sf

    return [sf.read(p, dtype="float32")[0] for p in sorted(CLIPS.glob("clip*_vctk_*.wav"))]


def worst_cosine(embedder: Embedder, wavs: list[np.ndarray], ref: np.ndarray) -> float:
    """Worst cosine to the torch fp32 embeddings ``ref``: each clip alone and all in one batch."""
    alone = np.stack([embedder.embed([w])[0] for w in wavs])
    batch = embedder.embed(wavs)
    return float(min((alone * ref).sum(1).min(), (batch * ref).sum(1).min()))


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
    parser.add_argument("--backends", nargs="+", default=list(BACKEND_CHOICES[1:]), choices=BACKEND_CHOICES[1:])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum timing per cell")
    parser.add_argument("--openvino-dynamic", action="store_true",
                        help="OpenVINO on its dynamic-axes compilation only (no fixed-shape ones), for comparison")
    args = parser.parse_args()
    if args.openvino_dynamic:
        backends.FIXED_FRAMES = 0  # every batch is longer: FixedShapeEcapaRunner hands it to the dynamic one
    model = load_ecapa(resolve_checkpoint(quiet=True))
    wavs = clips()
    ref = Embedder(model, device="cpu", precision="fp32").embed(wavs)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; 1.5 s windows, real weights; "
          f"cosine: worst over {len(wavs)} real clips (alone and batched) to torch fp32 on the CPU")
    print(f"{'device':6} {'backend':8} {'precision':9} {'batch':>5} {'windows/s':>10} {'audio s/s':>10} "
          f"{'cpu ms/win':>10} {'cosine':>9}")
    for device in args.devices:
        for backend in args.backends:
            for precision in args.precisions:
                try:
                    emb = Embedder(model, device=device, precision=precision, backend=backend,
                                   weights_sha256=ECAPA_VOXCELEB.sha256)
                except ModelError as exc:
                    print(f"{device:6} {backend:8} {precision:9} -- {exc}", flush=True)
                    continue
                cos = worst_cosine(emb, wavs, ref)  # also starts (exports, verifies) the backend
                if emb.backend != backend:
                    print(f"{device:6} {backend:8} {precision:9} -- fell back to {emb.backend}", flush=True)
                    continue
                for batch in args.batches:
                    rate, cpu_ms = measure(emb, batch, args.seconds)
                    print(f"{device:6} {backend:8} {precision:9} {batch:5d} {rate:10.1f} {rate * WINDOW:10.1f} "
                          f"{cpu_ms:10.1f} {cos:9.6f}", flush=True)


if __name__ == "__main__":
    main()
