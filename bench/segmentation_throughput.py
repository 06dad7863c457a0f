"""Segmentation-3.0 throughput and accuracy per backend: 5 s chunks (``--chunk-seconds``), batch 1/4, CPU.

    python bench/segmentation_throughput.py [--backends torch onnx openvino openvino+onnx] [--precisions fp32 bf16]
                                            [--batches 1 4] [--seconds 3] [--audio A.wav ...] [--hop 2.5]
                                            [--chunk-seconds 5] [--halves]

Every backend x precision the CPU can run (others get one line saying why). Prints, per batch
size, the wall-clock and CPU (this process, all threads) milliseconds per chunk; and over
the chunks of the audio files (every ``--hop`` seconds; default tests/data/dev_libri03.wav)
the largest |probability| and |log-prob| differences to torch fp32 and the share of frames whose
most likely powerset class is torch fp32's (the ``auto`` choice for segmentation keeps fp32 unless bf16
changes at most 0.5% of them). The exported backends are used as the pipeline uses them
(checked at first use; a refused one is reported, and then measured anyway, unchecked).
``--chunk-seconds 10``: the second look's chunks. ``--halves``: instead, the wall-clock ms per
call of each half of the network (the convolutional front end, the LSTM back end) on OpenVINO and
on ONNX Runtime at fp32, the numbers behind the ``auto`` split.
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

DEFAULT_AUDIO = Path(__file__).resolve().parent.parent / "tests" / "data" / "dev_libri03.wav"


def real_chunks(paths: list[Path], hop: float, chunk: int) -> np.ndarray:
    import soundfile as sf

    out = []
    for path in paths:
        wav, sr = sf.read(path, dtype="float32", always_2d=True)
        if sr != 16_000:
            raise SystemExit(f"{path}: {sr} Hz, need 16 kHz")
        wav = wav.mean(1)
        step = int(hop * 16_000)
        out += [wav[s : s + chunk] for s in range(0, len(wav) - chunk + 1, step)]
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


def halves(model, chunks: np.ndarray, batch_sizes: list[int], min_seconds: float) -> None:
    """Wall-clock ms per call of each half of the network, per engine, at fp32."""
    threads = torch.get_num_threads()
    paths = {part: backends.ensure_segmentation_export(model, SEGMENTATION_3_0.sha256, part=part)[0]
             for part in ("front", "back")}
    print(f"{'half':6} {'engine':9} " + " ".join(f"{f'batch {b} ms':>11}" for b in batch_sizes))
    for part in ("front", "back"):
        for engine in ("openvino", "onnx"):
            if not backends.installed(engine):
                print(f"{part:6} {engine:9} -- not installed")
                continue
            runner = backends.make_runner(engine, paths[part], "fp32", threads, ecapa=False)
            cells = []
            for b in batch_sizes:
                waves = chunks[:b][:, None, :]
                feeds = ({"waveforms": waves} if part == "front" else
                         {"features": np.asarray(model.features(torch.from_numpy(waves)).detach().numpy())})
                runner.run(feeds)  # warm-up
                done, start = 0, time.perf_counter()
                while time.perf_counter() - start < min_seconds or done < 4:
                    runner.run(feeds)
                    done += 1
                cells.append(f"{(time.perf_counter() - start) * 1000 / done:11.1f}")
            print(f"{part:6} {engine:9} " + " ".join(cells), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    choices = [*backends.BACKEND_CHOICES[1:], backends.SPLIT_BACKEND]
    parser.add_argument("--backends", nargs="+", default=choices, choices=choices)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum timing per cell")
    parser.add_argument("--audio", nargs="+", type=Path, default=[DEFAULT_AUDIO], help="16 kHz files for accuracy")
    parser.add_argument("--hop", type=float, default=2.5, help="seconds between accuracy chunks")
    parser.add_argument("--chunk-seconds", type=float, default=5.0,
                        help="chunk length (5: the pipeline's chunk; 10: its second look)")
    parser.add_argument("--halves", action="store_true",
                        help="instead: ms per call of the front end and the LSTM back end on each engine")
    args = parser.parse_args()
    model = load_segmentation(resolve_checkpoint(None, SEGMENTATION_3_0, quiet=True))
    chunks = real_chunks(args.audio, args.hop, int(args.chunk_seconds * 16_000))
    if len(chunks) < max(args.batches):
        raise SystemExit(f"only {len(chunks)} chunks of {args.chunk_seconds:g} s in the audio; "
                         f"give more --audio or a smaller --hop")
    if args.halves:
        with torch.inference_mode():
            halves(model, chunks, args.batches, args.seconds)
        return
    ref = run_all(Segmenter(model, device="cpu", precision="fp32"), chunks)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.chunk_seconds:g} s chunks, "
          f"real weights; accuracy over "
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
