"""Segmentation-3.0 throughput and accuracy per backend: 5 s chunks, batch 1/4, CPU.

    python bench/segmentation_throughput.py [--backends torch onnx openvino openvino+onnx] [--precisions fp32 bf16]
                                            [--batches 1 4] [--seconds 3] [--audio A.wav ...] [--hop 2.5]

Every backend x precision the CPU can run (others get one line saying why). Prints, per batch
size, the wall-clock and CPU (this process, all threads) milliseconds per 5 s chunk; and over
the 5 s chunks of the audio files (every ``--hop`` seconds; default tests/data/dev_libri03.wav)
the largest |probability| and |log-prob| differences to torch fp32 and the share of frames whose
most likely powerset class is torch fp32's (the ``auto`` choice for segmentation keeps fp32 unless bf16
changes at most 0.5% of them). The exported backends are used as the pipeline uses them
(checked at first use; a refused one is reported, and then measured anyway, unchecked).
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
from stream_spk.models.registry import SEGMENTATION_3_0, resolve_checkpoint
from stream_spk.models.segmentation import Segmenter, load_segmentation

CHUNK = 80_000  # 5 s at 16 kHz, as the segmented pipeline feeds the model
DEFAULT_AUDIO = Path(__file__).resolve().parent.parent / "tests" / "data" / "dev_libri03.wav"


def real_chunks(paths: list[Path], hop: float) -> np.ndarray:
    import soundfile as sf

    out = []
    for path in paths:
        wav, sr = sf.read(path, dtype="float32", always_2d=True)
        if sr != 16_000:
            raise SystemExit(f"{path}: {sr} Hz, need 16 kHz")
        wav = wav.mean(1)
        step = int(hop * 16_000)
        out += [wav[s : s + CHUNK] for s in range(0, len(wav) - CHUNK + 1, step)]
    return np.stack(out)


def run_all(seg: Segmenter, chunks: np.ndarray, batch: int = 8) -> np.ndarray:
    return np.concatenate([seg(chunks[i : i + batch]).log_probs for i in range(0, len(chunks), batch)])


def measure(seg: Segmenter, chunks: np.ndarray, batch: int, min_seconds: float) -> tuple[float, float]:
    """(wall ms per chunk, CPU ms per chunk) over batches of ``batch`` real chunks."""
    batches = [chunks[i : i + batch] for i in range(0, len(chunks) - batch + 1, batch)]
    seg(batches[0])  # warm-up
    done, k, start, cpu = 0, 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < min_seconds or done < 4 * batch:
        seg(batches[k % len(batches)])
        done += batch
        k += 1
    return (time.perf_counter() - start) * 1000 / done, (time.process_time() - cpu) * 1000 / done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    choices = [*backends.BACKEND_CHOICES[1:], backends.SPLIT_BACKEND]
    parser.add_argument("--backends", nargs="+", default=choices, choices=choices)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum timing per cell")
    parser.add_argument("--audio", nargs="+", type=Path, default=[DEFAULT_AUDIO], help="16 kHz files for accuracy")
    parser.add_argument("--hop", type=float, default=2.5, help="seconds between accuracy chunks")
    args = parser.parse_args()
    model = load_segmentation(resolve_checkpoint(None, SEGMENTATION_3_0, quiet=True))
    chunks = real_chunks(args.audio, args.hop)
    ref = run_all(Segmenter(model, device="cpu", precision="fp32"), chunks)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; 5 s chunks, real weights; accuracy over "
          f"{len(chunks)} chunks ({ref.shape[0] * ref.shape[1]} frames) of {len(args.audio)} file(s) vs torch fp32")
    print(f"{'backend':13} {'precision':9} {'batch':>5} {'wall ms/chunk':>13} {'cpu ms/chunk':>12} "
          f"{'max|dp|':>9} {'max|dlogp|':>10} {'argmax agree':>12}")
    for backend in args.backends:
        for precision in args.precisions:
            try:
                seg = Segmenter(model, device="cpu", precision=precision, backend=backend,
                                weights_sha256=SEGMENTATION_3_0.sha256)
            except (ModelError, ValueError) as exc:
                print(f"{backend:13} {precision:9} -- {exc}", flush=True)
                continue
            seg(chunks[:4])  # starts (exports, checks) the backend on real chunks, as the pipeline does
            if seg.backend != backend:  # refused by the check: measure it anyway, unchecked
                seg.backend, seg.precision = backend, precision
                seg._runner = backends.make_segmentation_runner(backend, model, SEGMENTATION_3_0.sha256, precision,
                                                                torch.get_num_threads())
                print(f"{backend:13} {precision:9} -- refused at first use (measured anyway)", flush=True)
            out = run_all(seg, chunks)
            diff = float(np.abs(out - ref).max())
            pdiff = float(np.abs(np.exp(out) - np.exp(ref)).max())
            agree = float((out.argmax(-1) == ref.argmax(-1)).mean())
            for batch in args.batches:
                wall, cpu = measure(seg, chunks, batch, args.seconds)
                print(f"{backend:13} {precision:9} {batch:5d} {wall:13.1f} {cpu:12.1f} {pdiff:9.1e} {diff:10.2e} "
                      f"{100 * agree:11.2f}%", flush=True)


if __name__ == "__main__":
    main()
