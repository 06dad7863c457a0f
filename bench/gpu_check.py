"""GPU check: everything that runs on CUDA here, against the CPU.

    python bench/gpu_check.py        (needs a CUDA device; exits 1 otherwise)

ECAPA embedder: CUDA fp32 vs CPU parity, fp16/bf16 autocast parity, masked batching on CUDA,
batch-64 throughput. Backend choice: ``auto`` on CUDA must pick torch for both networks (the
exported ONNX Runtime / OpenVINO backends run on the CPU only). Segmentation model
(segmentation-3.0, :class:`~stream_spk.models.segmentation.Segmenter`): CUDA fp32 vs CPU torch fp32
on real 5 s chunks of tests/data/dev_libri03.wav (one batch) and on zero-padded stream-start
chunks (alone), held to the limits the CPU backends are held to in
:func:`stream_spk.models.backends.verify_segmentation` (probabilities within
:data:`~stream_spk.models.backends.SEG_MAX_PROB_DIFF`, the most likely class the same on at
least :data:`~stream_spk.models.backends.SEG_MIN_ARGMAX_AGREEMENT` of the frames), and its
batch-32 throughput. End to end: the default pipeline (``build_pipeline``, no profiles) with
``compute_device="cuda"`` and with ``"cpu"`` over dev_libri03.wav through ``diarize_file``, DER at
collar 0.25 against its RTTM: the CUDA DER must be within 1 point of the CPU DER; both
throughputs (x real time) are printed.

Prints each check with its measured value and PASS/FAIL (INFO lines: measured, not judged);
exit status 0 only if all pass.
"""

from __future__ import annotations

from stream_spk.runtime import configure_threads

configure_threads()  # before torch loads

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from stream_spk.models.embedder import Embedder, load_ecapa
from stream_spk.models.registry import resolve_checkpoint

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
DEV_WAV = DATA / "dev_libri03.wav"
DEV_RTTM = DATA / "dev_libri03.rttm"
CHUNK_S = 5.0  # the segmented pipeline's chunk (ChunkSegmenter's default)
#: the end-to-end CUDA DER may be this much above (or below) the CPU DER
MAX_DER_GAP = 0.01


def cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def backend_choices(device: str) -> dict[str, str]:
    """What ``auto`` resolves to on ``device`` for the embedder (at each precision) and the segmentation model."""
    from stream_spk.models.backends import resolve_backend, resolve_segmentation_backend

    dev = torch.device(device)
    out = {f"embedder auto ({p})": resolve_backend("auto", dev, p) for p in ("auto", "fp32", "bf16", "fp16")}
    out["segmentation auto (auto)"] = resolve_segmentation_backend("auto", dev, "auto")
    out["segmentation auto (fp32)"] = resolve_segmentation_backend("auto", dev, "fp32")
    return out


def speech_chunks(seconds: float = CHUNK_S, hop: float = 2.5) -> tuple[np.ndarray, list[np.ndarray]]:
    """Real chunks of dev_libri03.wav: every ``hop`` s a ``seconds`` chunk [B, N]; and stream-start
    chunks (0.5, 1, 2 and 3 s of the file's start at the end of zeros), as the pipeline's first steps see."""
    import soundfile as sf

    audio, rate = sf.read(DEV_WAV, dtype="float32")
    assert rate == 16_000 and audio.ndim == 1
    n, step = int(seconds * rate), int(hop * rate)
    chunks = np.stack([audio[s : s + n] for s in range(0, audio.size - n + 1, step)])
    starts = []
    for head in (0.5, 1.0, 2.0, 3.0):
        chunk = np.zeros(n, np.float32)
        k = int(head * rate)
        chunk[-k:] = audio[:k]
        starts.append(chunk)
    return chunks, starts


def segmentation_parity(device: str, ref_device: str = "cpu") -> tuple[float, float, int]:
    """Segmenter (torch fp32) on ``device`` vs on ``ref_device``: (max |probability difference|,
    share of frames with the same most likely powerset class, frames) over the real chunks in one
    batch and each stream-start chunk alone."""
    from stream_spk.models.segmentation import Segmenter

    chunks, starts = speech_chunks()
    test = Segmenter.from_checkpoint(device=device, precision="fp32", backend="torch", quiet=True)
    ref = Segmenter.from_checkpoint(device=ref_device, precision="fp32", backend="torch", quiet=True)
    worst, agree, frames = 0.0, 0, 0
    for batch in [chunks] + [s[None] for s in starts]:
        a, b = test(batch).probs, ref(batch).probs
        worst = max(worst, float(np.nan_to_num(np.abs(a - b), nan=np.inf).max()))
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        frames += int(a.shape[0] * a.shape[1])
    return worst, agree / max(frames, 1), frames


def segmentation_throughput(device: str, batch: int = 32, seconds: float = 3.0) -> float:
    """5 s chunks per second through the Segmenter (torch fp32) on ``device`` at ``batch``."""
    from stream_spk.models.segmentation import Segmenter

    chunks, _ = speech_chunks()
    x = np.ascontiguousarray(np.resize(chunks, (batch, chunks.shape[1])))
    seg = Segmenter.from_checkpoint(device=device, precision="fp32", backend="torch", quiet=True)
    seg(x)  # warm-up (cuDNN plans, allocator)
    _sync(device)
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        seg(x)  # returns numpy: each call ends with a device-to-host copy
        n += batch
    _sync(device)
    return n / (time.perf_counter() - start)


def diarize_dev(device: str) -> tuple[float, float, str]:
    """The default pipeline on ``device`` over dev_libri03.wav as ``diarize`` runs it: (DER at
    collar 0.25 of the session record, throughput in x real time, what ran)."""
    from stream_spk.cli.diarize_cmd import diarize_file
    from stream_spk.evaluation import der_report
    from stream_spk.rttm import read_rttm
    from stream_spk.session import SessionOptions, build_pipeline

    options = SessionOptions(compute_device=device, use_profiles=False)
    pipeline = build_pipeline(options)
    emb = pipeline.embedder
    what = f"embedder {emb.backend} {emb.precision} on {emb.device}"
    seg = getattr(getattr(pipeline, "segmenter", None), "segmenter", None)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        res = diarize_file(str(DEV_WAV), out, options, pipeline=pipeline)
        wall = time.perf_counter() - t0
        hyp = read_rttm(Path(out) / f"{DEV_WAV.stem}.rttm") or {DEV_WAV.stem: []}
    if seg is not None:  # read after the run: a backend that failed its check fell back to torch
        what += f", segmentation {seg.backend} {seg.precision} on {seg.device}"
    ref = read_rttm(DEV_RTTM)
    der = der_report(ref, {k: v for k, v in hyp.items() if k in ref}, collar=0.25).total.der
    return der, res["audio"] / wall, what


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

    def report(name: str, value: float | str, passed: bool) -> None:
        nonlocal ok
        ok &= passed
        shown = value if isinstance(value, str) else f"{value:.6f}"
        print(f"{'PASS' if passed else 'FAIL'}  {name}: {shown}")

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
    del gpu32, low, emb
    torch.cuda.empty_cache()

    # backend choice: the exported backends are CPU-only, so auto must be torch on CUDA
    for name, chosen in backend_choices("cuda").items():
        report(f"CUDA backend {name}", chosen, chosen == "torch")

    # segmentation model: CUDA vs CPU, the limits the CPU backends are held to
    from stream_spk.models.backends import SEG_MAX_PROB_DIFF, SEG_MIN_ARGMAX_AGREEMENT

    print(f"INFO  cuDNN TF32 allowed: {torch.backends.cudnn.allow_tf32}, "
          f"matmul TF32 allowed: {torch.backends.cuda.matmul.allow_tf32}")
    max_dp, agreement, frames = segmentation_parity("cuda", "cpu")
    report(f"segmentation CUDA fp32 vs CPU fp32, max |dp| over {frames} frames", max_dp, max_dp <= SEG_MAX_PROB_DIFF)
    report(f"segmentation CUDA fp32 vs CPU fp32, same class share of {frames} frames", agreement,
           agreement >= SEG_MIN_ARGMAX_AGREEMENT)
    rate = segmentation_throughput("cuda", batch=32)
    print(f"INFO  segmentation CUDA fp32 batch 32 x {CHUNK_S:g} s: {rate:.0f} chunks/s "
          f"({rate * CHUNK_S:.0f} audio s/s)")

    # end to end: the default pipeline on CUDA vs on the CPU
    der_cpu, xrt_cpu, what_cpu = diarize_dev("cpu")
    print(f"INFO  end to end CPU ({what_cpu}): DER {der_cpu:.2%}, {xrt_cpu:.1f}x real time")
    der_gpu, xrt_gpu, what_gpu = diarize_dev("cuda")
    print(f"INFO  end to end CUDA ({what_gpu}): DER {der_gpu:.2%}, {xrt_gpu:.1f}x real time")
    report(f"end to end {DEV_WAV.name} DER collar 0.25, CUDA {der_gpu:.2%} vs CPU {der_cpu:.2%}, "
           f"|CUDA - CPU| (at most {MAX_DER_GAP:g})",
           abs(der_gpu - der_cpu), abs(der_gpu - der_cpu) <= MAX_DER_GAP)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
