"""Inference backends for the ECAPA-TDNN: torch (any device), ONNX Runtime and OpenVINO (CPU).

The features stay in torch (they cost ~0.3 ms of CPU per 1.5 s window, under 1% of the
network); what runs elsewhere is the network after them: an ONNX graph with dynamic batch and
time axes that takes ``feats`` [B, T, 80], ``lengths`` [B] (valid frames, int64) and ``weights``
[B, T] (per-frame weights; all ones for plain embeddings) and returns raw embeddings [B, 192].
It is traced through the general masked path of :mod:`.ecapa` (per-item reflection padding,
masked pooling), so an item padded into a batch gets the embedding it gets alone, as in torch.

The exported file is cached in the model cache folder, keyed by the checkpoint's sha256 and
:data:`EXPORT_VERSION`, written atomically with a ``.json`` record of its own sha256 (a file that
does not match it is exported again). Nothing here imports onnx, onnxruntime or openvino until
a backend is started (:func:`start_backend`, at an embedder's first embedding).

Measured on the 2-core dev machine (AMX + AVX512-BF16), 1.5 s windows, CPU ms per window at
batch 1 / 4 / 16 (``python bench/embed_throughput.py``, figures in docs/performance.md):
torch bf16 53 / 28 / 25, OpenVINO bf16 28 / 26 / 25 (torch's bf16 autocast re-casts every
weight at each call, which small batches, the ones a stream makes, pay in full); torch fp32
77 / 55 / 52, ONNX Runtime fp32 67 / 57 / 55, OpenVINO fp32 67 / 56 / 56. Hence ``auto``
(:func:`resolve_backend`): torch on CUDA; on the CPU OpenVINO when it is installed, else ONNX
Runtime when the precision is fp32 and it is installed, else torch. Those OpenVINO figures are
for the graph compiled with dynamic axes; compiled for one fixed shape it runs 1.4-1.8x as
fast, so short windows run on fixed-shape compilations (:class:`FixedShapeEcapaRunner`).

The segmentation model (pyannote segmentation-3.0, :class:`~.segmentation.Segmenter`) runs
through the same export cache and runners, whole (waveforms in, log-probs out), checked against
torch fp32 at its first call. ``python bench/segmentation_throughput.py`` (figures in
docs/performance.md), ms per 5 s chunk (wall / CPU) at batch 1 and 4, interleaved runs: ONNX
Runtime fp32 19 / 27 and 10 / 19, OpenVINO fp32 21 / 40 and 12 / 24, OpenVINO bf16 15 / 31 and
7 / 15; torch fp32 30 / 30 and 19 / 19 in an early run, 206 / 169 and 103 / 89 later on the same
machine. Over 379 real 5 s chunks of the dev set (111k frames) the largest probability
difference to torch fp32 is 6.7e-5 (ONNX Runtime) and 2.1e-5 (OpenVINO fp32); the largest
log-prob difference 2.6e-4 and 1.1e-4, but up to 9e-3 on the mostly zero-padded chunks at the
start of a stream, whose instance norms amplify rounding (their probabilities still agree to
2.4e-5). Hence the check is on probabilities (what the pipeline uses), :data:`SEG_MAX_PROB_DIFF`
1e-3. OpenVINO bf16 changes the most likely class of 0.70% of the frames (torch bf16 0.24%), over
the 0.5% allowed (:data:`SEG_MIN_ARGMAX_AGREEMENT`). Split in two at the LSTM, each engine is
best at one half (``python bench/segmentation_throughput.py --halves --chunk-seconds 10``, 8
chunks, 2 threads, fp32): the convolutional front end takes 41 ms on OpenVINO and 69 ms on ONNX
Runtime, the LSTM back end 69 ms on ONNX Runtime and 99 ms on OpenVINO. Hence ``auto`` for segmentation
(:func:`resolve_segmentation_backend`): :data:`SPLIT_BACKEND` (both halves exported and cached
separately, checked together) when both are installed, else ONNX Runtime fp32, else OpenVINO
fp32, else torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stream_spk.errors import ModelError

from .precision import cpu_has_native_bf16

BACKEND_CHOICES = ("auto", "torch", "onnx", "openvino")
#: bump when the exported graph changes (a new file name: old exports are never reused)
EXPORT_VERSION = 1
OPSET = 17
#: a backend whose embeddings are less similar than this to torch fp32 is refused
MIN_COSINE = 0.9999

#: Python modules each non-torch backend needs (run time, and ``onnx`` for the export)
_REQUIRES = {"onnx": ("onnxruntime", "onnx"), "openvino": ("openvino", "onnx")}
_EXTRA = {"onnx": "onnx", "openvino": "openvino"}
#: precisions each CPU backend runs (ONNX Runtime has no bf16/fp16 kernels for x86 convolutions)
_PRECISIONS = {"onnx": ("fp32",), "openvino": ("fp32", "bf16", "fp16")}


class BackendError(ModelError):
    """A backend that was asked for but cannot run here (not installed, wrong device or precision)."""


def installed(backend: str) -> bool:
    """True when the Python packages ``backend`` needs are importable (nothing is imported)."""
    if backend == "torch":
        return True
    return all(importlib.util.find_spec(mod) is not None for mod in _REQUIRES[backend])


def available_backends() -> list[str]:
    """The concrete backends usable here, torch first."""
    return [b for b in BACKEND_CHOICES[1:] if installed(b)]


def resolve_backend(backend: str, device: torch.device, precision: str) -> str:
    """The concrete backend for a request: ``torch``, ``onnx`` or ``openvino``.

    ``precision`` is the user's (``auto`` included). An explicit backend that is not installed,
    or cannot run on ``device`` or at ``precision``, is a one-line :class:`BackendError`;
    ``auto`` silently takes the fastest usable one (see the module docstring).
    """
    if backend not in BACKEND_CHOICES:
        raise BackendError(f"unknown inference backend {backend!r} (use {', '.join(BACKEND_CHOICES)})")
    if backend == "torch":
        return "torch"
    if backend == "auto":
        if device.type != "cpu":
            return "torch"
        if installed("openvino"):
            return "openvino"
        runs_fp32 = precision == "fp32" or (precision == "auto" and not cpu_has_native_bf16())
        return "onnx" if runs_fp32 and installed("onnx") else "torch"
    if not installed(backend):
        missing = [m for m in _REQUIRES[backend] if importlib.util.find_spec(m) is None]
        raise BackendError(f"inference backend {backend!r} needs {' and '.join(missing)}, not installed here "
                           f"(pip install 'stream-spk[{_EXTRA[backend]}]')")
    if device.type != "cpu":
        raise BackendError(f"inference backend {backend!r} runs on the CPU only, not on {device} "
                           f"(use --compute-device cpu, or --backend torch)")
    if precision != "auto" and precision not in _PRECISIONS[backend]:
        raise BackendError(f"inference backend {backend!r} runs {'/'.join(_PRECISIONS[backend])} only, "
                           f"not {precision} (use --precision auto or fp32)")
    return backend


def backend_precision(backend: str, precision: str, native_bf16: bool) -> str:
    """The precision a CPU backend runs for the user's ``precision`` (``auto`` resolved)."""
    if precision != "auto":
        return precision
    if backend == "openvino" and native_bf16:
        return "bf16"
    return "fp32"


# ---- export and cache ---------------------------------------------------------------------


class _ExportedEcapa(torch.nn.Module):
    """The network with all three inputs positional (the traced signature)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return self.model(feats, lengths, weights)


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over a model's configuration, parameter names, shapes and values (for models that
    did not come from a known checkpoint file)."""
    digest = hashlib.sha256(repr(getattr(model, "config", type(model).__name__)).encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def export_path(weights_sha256: str, folder: Path | None = None) -> Path:
    """Where the ONNX export of the weights with this sha256 is cached."""
    if folder is None:
        from .registry import cache_dir

        folder = cache_dir() / "exports"
    return folder / f"ecapa-{weights_sha256[:16]}-x{EXPORT_VERSION}-op{OPSET}.onnx"


def _file_sha256(path: Path) -> str:
    from .registry import sha256_of

    return sha256_of(path)


def _record_of(path: Path) -> Path:
    return path.with_suffix(".json")


def cached_export_ok(path: Path, weights_sha256: str, export_version: int = EXPORT_VERSION) -> bool:
    """True when ``path`` and its record exist and the file's sha256 is the recorded one."""
    try:
        record = json.loads(_record_of(path).read_text())
        return (record.get("weights_sha256") == weights_sha256 and record.get("export_version") == export_version
                and record.get("sha256") == _file_sha256(path))
    except (OSError, ValueError, AttributeError):
        return False


def export_onnx(model: torch.nn.Module, path: Path) -> None:
    """Trace ``model`` (CPU, fp32) to ONNX at ``path`` (dynamic batch and time axes)."""
    model = _ExportedEcapa(model).eval()
    feats = torch.randn(2, 120, model.model.config.input_size, generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([120, 70])
    weights = torch.ones(2, 120)
    dynamic = {"feats": {0: "batch", 1: "frames"}, "lengths": {0: "batch"},
               "weights": {0: "batch", 1: "frames"}, "embeddings": {0: "batch"}}
    with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")  # tracer warnings about shape comparisons turned into constants
        torch.onnx.export(model, (feats, lengths, weights), str(path), dynamo=False, opset_version=OPSET,
                          input_names=["feats", "lengths", "weights"], output_names=["embeddings"],
                          dynamic_axes=dynamic, do_constant_folding=True)


def ensure_export(model: torch.nn.Module, weights_sha256: str, folder: Path | None = None) -> tuple[Path, bool]:
    """The cached ONNX export for these weights, exported now unless a verified copy exists.

    Returns ``(path, exported)``. The file and its record are written under temporary names in
    the same folder and renamed into place, so a reader never sees a partial file.
    """
    return _ensure_cached(export_path(weights_sha256, folder), weights_sha256, EXPORT_VERSION,
                          lambda path: export_onnx(model, path))


def _ensure_cached(path: Path, weights_sha256: str, export_version: int, export) -> tuple[Path, bool]:
    """``path`` when it holds a verified export, else ``export(tmp)`` renamed into place with its record."""
    from .registry import ensure_cache_dir

    if cached_export_ok(path, weights_sha256, export_version):
        return path, False
    ensure_cache_dir(path.parent)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".export-", suffix=".onnx")
    os.close(fd)
    tmp = Path(tmp_name)
    tmp_record = tmp.with_suffix(".json")
    try:
        export(tmp)
        record = {"weights_sha256": weights_sha256, "export_version": export_version, "opset": OPSET,
                  "torch": torch.__version__, "sha256": _file_sha256(tmp)}
        tmp_record.write_text(json.dumps(record, indent=1) + "\n")
        os.replace(tmp, path)
        os.replace(tmp_record, _record_of(path))
    finally:
        tmp.unlink(missing_ok=True)
        tmp_record.unlink(missing_ok=True)
    return path, True


# ---- runners ------------------------------------------------------------------------------


class OnnxRuntimeRunner:
    """The exported network on ONNX Runtime's CPU provider (fp32)."""

    name = "onnx"

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # idle pool threads sleep instead of spinning (as OMP_WAIT_POLICY=PASSIVE does for torch)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The graph's first output for these named inputs."""
        return self.session.run(None, feeds)[0]

    def __call__(self, feats: np.ndarray, lengths: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return self.run({"feats": feats, "lengths": lengths, "weights": weights})


_OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


class OpenVinoRunner:
    """The exported network compiled by OpenVINO for the CPU, at fp32, bf16 or fp16.

    OpenVINO keeps its compiled model in ``path``'s folder under ``openvino/`` (its own cache,
    keyed by the model and the settings): later processes load it in ~0.1 s instead of
    compiling for ~0.6 s.
    """

    name = "openvino"

    def __init__(self, path: Path, threads: int, precision: str,
                 shapes: dict[str, list[int]] | None = None) -> None:
        import openvino as ov

        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": _OV_PRECISION[precision], "INFERENCE_NUM_THREADS": threads,
                  "PERFORMANCE_HINT": "LATENCY"}
        try:
            (path.parent / "openvino").mkdir(exist_ok=True)
            core.set_property({"CACHE_DIR": str(path.parent / "openvino")})
        except (OSError, RuntimeError):
            pass  # no compiled-model cache: compile each time
        if shapes is None:
            self.compiled = core.compile_model(str(path), "CPU", config)
        else:
            model = core.read_model(str(path))
            model.reshape(shapes)
            self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The graph's first output for these named inputs (a copy: the request reuses its buffers)."""
        result = self.request.infer(feeds)
        return np.array(result[self.compiled.output(0)], dtype=np.float32)

    def __call__(self, feats: np.ndarray, lengths: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return self.run({"feats": feats, "lengths": lengths, "weights": weights})


#: ECAPA batches of windows up to this many frames (1.6 s) run on fixed-shape OpenVINO compilations
FIXED_FRAMES = 160
#: the batch sizes compiled for them; a batch is cut greedily into pieces of these sizes
FIXED_BATCHES = (16, 4, 1)


class FixedShapeEcapaRunner:
    """The ECAPA graph on OpenVINO, compiled per input shape for short windows.

    OpenVINO runs a graph compiled for one fixed input shape much faster than the same graph with
    dynamic axes (``python bench/embed_throughput.py --backends openvino --precisions bf16``, with
    and without ``--openvino-dynamic``: 124 against 70 windows/s at batch 8, 2 threads; the dynamic
    version spends the difference on layout reorders and reference broadcasts). A stream's windows
    are short and nearly all of one length, so batches whose longest item has at most
    :data:`FIXED_FRAMES` frames are zero-padded to that many frames (weight 0, ``lengths``
    unchanged: padding never reaches an item's embedding, see :mod:`.ecapa`) and cut into pieces
    of the :data:`FIXED_BATCHES` sizes, each run on its own compilation, made at its first use
    (~0.5 s the first time, ~0.45 s from OpenVINO's cache). Longer inputs (enrollment clips) run on
    the dynamic compilation, also made at first use.
    """

    name = "openvino"

    def __init__(self, path: Path, threads: int, precision: str) -> None:
        self._path, self._threads, self._precision = path, threads, precision
        self._fixed: dict[int, OpenVinoRunner] = {}
        self._dynamic: OpenVinoRunner | None = None

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Raw embeddings [B, 192] for ``feats`` [B, T, 80], ``lengths`` [B] and ``weights`` [B, T]."""
        feats, lengths, weights = feeds["feats"], feeds["lengths"], feeds["weights"]
        batch, frames = weights.shape
        if frames > FIXED_FRAMES:
            if self._dynamic is None:
                self._dynamic = OpenVinoRunner(self._path, self._threads, self._precision)
            return self._dynamic.run(feeds)
        padded_feats = np.zeros((batch, FIXED_FRAMES, feats.shape[2]), np.float32)
        padded_feats[:, :frames] = feats
        padded_weights = np.zeros((batch, FIXED_FRAMES), np.float32)
        padded_weights[:, :frames] = weights
        out, start = [], 0
        while start < batch:
            size = next(s for s in FIXED_BATCHES if s <= batch - start)
            piece = slice(start, start + size)
            piece_feeds = {"feats": padded_feats[piece], "lengths": lengths[piece], "weights": padded_weights[piece]}
            out.append(self._compiled(size, feats.shape[2]).run(piece_feeds))
            start += size
        return np.concatenate(out)

    def _compiled(self, size: int, dim: int) -> OpenVinoRunner:
        if size not in self._fixed:
            shapes = {"feats": [size, FIXED_FRAMES, dim], "lengths": [size], "weights": [size, FIXED_FRAMES]}
            self._fixed[size] = OpenVinoRunner(self._path, self._threads, self._precision, shapes=shapes)
        return self._fixed[size]

    def __call__(self, feats: np.ndarray, lengths: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return self.run({"feats": feats, "lengths": lengths, "weights": weights})


SMALL_BATCH = 2  # batches up to this size run on one thread (see BatchSizedRunner)


class BatchSizedRunner:
    """Two instances of one runner: a one-thread one for small batches, a ``threads`` one for big.

    A live stream hands the networks one chunk and a window or two every step; on two threads
    such a call costs ~20% more CPU than on one (the second thread mostly waits), which is most
    of what a live session uses. Batches from files (``diarize``, fast replay) are big, and there
    the second thread pays. Both instances run the same graph at the same precision.
    """

    def __init__(self, small, large) -> None:
        self.small, self.large = small, large
        self.name = large.name

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        batch = next(iter(feeds.values())).shape[0]
        return (self.small if batch <= SMALL_BATCH else self.large).run(feeds)

    def __call__(self, feats: np.ndarray, lengths: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return self.run({"feats": feats, "lengths": lengths, "weights": weights})


def _make_one(backend: str, path: Path, precision: str, threads: int, ecapa: bool):
    if backend == "onnx":
        return OnnxRuntimeRunner(path, threads)
    if backend == "openvino":
        return FixedShapeEcapaRunner(path, threads, precision) if ecapa else OpenVinoRunner(path, threads, precision)
    raise ValueError(f"no runner for backend {backend!r}")


def make_runner(backend: str, path: Path, precision: str, threads: int, ecapa: bool = True):
    """A runner of the exported graph at ``path`` (the ECAPA graph, else the segmentation graph);
    with several threads, one-thread small batches."""
    large = _make_one(backend, path, precision, threads, ecapa)
    if threads <= 1:
        return large
    return BatchSizedRunner(_make_one(backend, path, precision, 1, ecapa), large)


# ---- verification -------------------------------------------------------------------------


@dataclass(frozen=True)
class Verification:
    """Worst cosine of a backend's embeddings to torch fp32 over the check items."""

    min_cosine: float

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.min_cosine) and self.min_cosine >= MIN_COSINE)

    def describe(self) -> str:
        return f"cosine {self.min_cosine:.6f} to torch fp32 is below {MIN_COSINE}"


def verify(embedder, runner) -> Verification:
    """Compare ``runner`` with the embedder's torch model in fp32 on three seeded items of random
    lengths (0.3-1 s): the shortest alone, all padded into one batch, and that batch with random
    frame weights (~0.3 s of CPU on the real model)."""
    from .features import num_frames, sentence_mean_norm

    rng = np.random.default_rng(20240610)
    lengths = sorted(int(n) for n in rng.integers(max(embedder.min_samples + 1, 4800), 16000, 3))
    wavs = torch.zeros(3, lengths[-1])
    for i, n in enumerate(lengths):
        wavs[i, :n] = torch.from_numpy(rng.standard_normal(n).astype(np.float32) * 0.1)
    num_samples = torch.tensor(lengths)
    frames = num_frames(num_samples)
    with torch.inference_mode():
        feats = sentence_mean_norm(embedder.fbank(wavs, num_samples), frames)
        weights = torch.from_numpy(rng.uniform(0.0, 1.0, feats.shape[:2]).astype(np.float32))
        cases = [(feats[:1, : int(frames[0])], frames[:1], None), (feats, frames, None), (feats, frames, weights)]
        worst = 1.0
        for f, n, w in cases:
            ref = (embedder.model(f, n) if w is None else embedder.model(f, n, w)).float().numpy()
            ones = np.ones(f.shape[:2], np.float32) if w is None else w.numpy()
            out = runner(f.numpy(), n.numpy().astype(np.int64), ones)
            cos = (ref * out).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1))
            worst = min(worst, float(np.nan_to_num(cos, nan=-1.0).min()))
    return Verification(worst)


def start_backend(embedder, backend: str, precision: str, weights_sha256: str | None):
    """Export (or reuse the cached export), load and verify ``backend`` for ``embedder``.

    Returns the runner, or None after printing one warning line when any step fails (the
    embedder then keeps using torch).
    """
    def start():
        path, _ = ensure_export(embedder.model, weights_sha256 or weights_digest(embedder.model))
        runner = make_runner(backend, path, precision, torch.get_num_threads())
        return runner, verify(embedder, runner)

    return _start_checked(f"inference backend {backend} ({precision})", start)


def _start_checked(what: str, start):
    """``start() -> (runner, verification)``; the runner when it passed, else None after one
    warning line naming why (any exception included): the caller then keeps torch."""
    try:
        runner, check = start()
    except Exception as exc:  # noqa: BLE001 (any failure means: fall back to torch, say why in one line)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        _warn(f"{what} not usable ({first[:200]}); using torch")
        return None
    if not check.ok:
        _warn(f"{what} refused: {check.describe()}; using torch")
        return None
    return runner


def _warn(note: str) -> None:
    print(f"stream-spk: warning: {note}", file=sys.stderr, flush=True)


# ---- the segmentation model (pyannote segmentation-3.0) ----------------------------------------
#
# The whole network runs exported: waveforms [B, 1, N] -> log-probs [B, F, 7], dynamic batch and
# length (the sinc filters are computed from their parameters once, at export, and folded into a
# constant). Same cache folder and rules as the ECAPA export, under its own name and version.

#: bump when the exported segmentation graph changes
SEG_EXPORT_VERSION = 1
#: the ``auto`` segmentation backend when both engines are installed (not a user choice)
SPLIT_BACKEND = "openvino+onnx"
#: an fp32 backend whose probabilities differ from torch fp32's by more than this anywhere is refused
#: (measured: <= 6.7e-5 on real chunks and on zero-padded stream starts)
SEG_MAX_PROB_DIFF = 1e-3
#: a reduced-precision backend whose most likely class differs from torch fp32's on more than
#: 0.5% of the check frames is refused
SEG_MIN_ARGMAX_AGREEMENT = 0.995
#: at most this many of the first call's chunks take part in the check (bounds its cost)
SEG_VERIFY_CHUNKS = 4


def resolve_segmentation_backend(backend: str, device: torch.device, precision: str) -> str:
    """The concrete backend for the segmentation model; explicit choices as :func:`resolve_backend`.

    ``auto``: torch on CUDA, and torch for an explicit bf16/fp16 (no exported backend runs those
    accurately enough, see :data:`SEG_MIN_ARGMAX_AGREEMENT`); else, on the CPU, at fp32:
    :data:`SPLIT_BACKEND` when both are installed (OpenVINO runs the convolutional front end
    fastest, ONNX Runtime the LSTM), else ONNX Runtime, else OpenVINO, else torch.
    """
    if backend == SPLIT_BACKEND:  # named by benches and tests; users choose auto, onnx or openvino
        for name in ("openvino", "onnx"):
            resolve_backend(name, device, "fp32" if precision == "auto" else precision)
        return backend
    if backend != "auto":
        return resolve_backend(backend, device, precision)
    if device.type != "cpu" or precision not in ("auto", "fp32"):
        return "torch"
    if installed("openvino") and installed("onnx"):
        return SPLIT_BACKEND
    for name in ("onnx", "openvino"):
        if installed(name):
            return name
    return "torch"


def segmentation_backend_precision(backend: str, precision: str) -> str:
    """The precision a CPU backend runs the segmentation model at: ``auto`` means fp32 (OpenVINO
    bf16 changes the most likely class of 0.7% of the dev set's frames, more than the 0.5% allowed)."""
    return "fp32" if precision == "auto" else precision


def segmentation_export_path(weights_sha256: str, folder: Path | None = None, part: str = "whole") -> Path:
    """Where the ONNX export of the segmentation weights with this sha256 is cached: the ``whole``
    network, or its ``front`` (waveforms -> features) or ``back`` (features -> log-probs) part."""
    if folder is None:
        from .registry import cache_dir

        folder = cache_dir() / "exports"
    name = "segmentation" if part == "whole" else f"segmentation-{part}"
    return folder / f"{name}-{weights_sha256[:16]}-x{SEG_EXPORT_VERSION}-op{OPSET}.onnx"


class _SegmentationPart(torch.nn.Module):
    """One part of the segmentation network as its own module (what gets traced)."""

    def __init__(self, model: torch.nn.Module, part: str) -> None:
        super().__init__()
        self.model, self.part = model, part

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x) if self.part == "front" else self.model.classify(x)


def export_segmentation_onnx(model: torch.nn.Module, path: Path, part: str = "whole") -> None:
    """Trace the segmentation ``model`` (CPU, fp32), or one ``part`` of it (see
    :func:`segmentation_export_path`), to ONNX at ``path`` (dynamic batch and length)."""
    model = model.to("cpu").eval()
    waveforms = 0.1 * torch.randn(2, 1, 16_000, generator=torch.Generator().manual_seed(0))
    if part == "back":
        with torch.no_grad():
            inputs, names = model.features(waveforms), ("features", "log_probs")
        dynamic = {"features": {0: "batch", 1: "frames"}, "log_probs": {0: "batch", 1: "frames"}}
    else:
        inputs, names = waveforms, ("waveforms", "features" if part == "front" else "log_probs")
        dynamic = {"waveforms": {0: "batch", 2: "samples"}, names[1]: {0: "batch", 1: "frames"}}
    # a new module starts in training mode, which the export restores afterwards: eval() keeps the
    # model's LSTM dropout off for the caller
    traced = model if part == "whole" else _SegmentationPart(model, part).eval()
    with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")  # tracer warnings about the input checks turned into constants
        torch.onnx.export(traced, (inputs,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=[names[0]], output_names=[names[1]], dynamic_axes=dynamic,
                          do_constant_folding=True)


def ensure_segmentation_export(model: torch.nn.Module, weights_sha256: str,
                               folder: Path | None = None, part: str = "whole") -> tuple[Path, bool]:
    """The cached segmentation export (``part`` as :func:`segmentation_export_path`) for these
    weights (see :func:`ensure_export`)."""
    return _ensure_cached(segmentation_export_path(weights_sha256, folder, part), weights_sha256,
                          SEG_EXPORT_VERSION, lambda path: export_segmentation_onnx(model, path, part))


class SegmentationRunner:
    """An exported segmentation model: ``runner(waveforms [B, 1, N] float32) -> log-probs [B, F, 7]``."""

    def __init__(self, runner) -> None:
        self.runner = runner
        self.name = runner.name

    def __call__(self, waveforms: np.ndarray) -> np.ndarray:
        return self.runner.run({"waveforms": np.ascontiguousarray(waveforms, dtype=np.float32)})


class SplitSegmentationRunner:
    """The segmentation network in two parts on two engines: the convolutional front end on
    OpenVINO, the LSTM back end on ONNX Runtime, both fp32 (see the module docstring)."""

    name = SPLIT_BACKEND

    def __init__(self, front, back) -> None:
        self.front, self.back = front, back

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Log-probs for ``{"waveforms": [B, 1, N]}``."""
        return self.back.run({"features": self.front.run(feeds)})


def make_segmentation_runner(backend: str, model: torch.nn.Module, weights_sha256: str, precision: str,
                             threads: int) -> SegmentationRunner:
    """The exported segmentation ``model`` (the cached exports, made now when missing) on ``backend``."""
    if backend == SPLIT_BACKEND:
        front, _ = ensure_segmentation_export(model, weights_sha256, part="front")
        back, _ = ensure_segmentation_export(model, weights_sha256, part="back")
        return SegmentationRunner(SplitSegmentationRunner(
            make_runner("openvino", front, precision, threads, ecapa=False),
            make_runner("onnx", back, precision, threads, ecapa=False)))
    path, _ = ensure_segmentation_export(model, weights_sha256)
    return SegmentationRunner(make_runner(backend, path, precision, threads, ecapa=False))


@dataclass(frozen=True)
class SegmentationVerification:
    """How a backend's output compares with torch fp32's over the check frames."""

    precision: str
    max_prob_diff: float  # largest |probability difference| of any class in any frame
    max_logprob_diff: float  # the same in log-probabilities (reported only: ill-conditioned on near silence)
    argmax_agreement: float  # share of frames with torch fp32's most likely class
    frames: int

    @property
    def ok(self) -> bool:
        if not (np.isfinite(self.max_prob_diff) and np.isfinite(self.argmax_agreement)):
            return False
        if self.precision == "fp32":
            return self.max_prob_diff <= SEG_MAX_PROB_DIFF
        return self.argmax_agreement >= SEG_MIN_ARGMAX_AGREEMENT

    def describe(self) -> str:
        if self.precision == "fp32":
            return f"max probability difference {self.max_prob_diff:.2g} to torch fp32 is above {SEG_MAX_PROB_DIFF:g}"
        return (f"most likely class agrees with torch fp32 on {100 * self.argmax_agreement:.2f}% of "
                f"{self.frames} frames, below {100 * SEG_MIN_ARGMAX_AGREEMENT:.1f}%")


def _check_chunks(chunks: np.ndarray) -> list[np.ndarray]:
    """The check batches: up to :data:`SEG_VERIFY_CHUNKS` of the caller's chunks in one batch, and a
    seeded item of the same length alone (two harmonic 'voices' that overlap, in noise)."""
    n = chunks.shape[1]
    rng = np.random.default_rng(20240611)
    t = np.arange(n) / 16_000
    voices = np.zeros(n)
    for f0, (a, b) in ((120.0, (0.1, 0.6)), (210.0, (0.4, 0.9))):
        phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.1 * np.sin(2 * np.pi * 3 * t))) / 16_000
        wave = sum(np.sin(k * phase) / k for k in range(1, 20))
        voices += wave * ((t >= a * t[-1]) & (t < b * t[-1])) * (0.5 + 0.5 * np.abs(np.sin(2 * np.pi * 4 * t)))
    synthetic = (0.1 * voices + 0.01 * rng.standard_normal(n)).astype(np.float32)
    return [np.ascontiguousarray(chunks[:SEG_VERIFY_CHUNKS], np.float32), synthetic[None]]


def verify_segmentation(model: torch.nn.Module, runner, chunks: np.ndarray, precision: str) -> SegmentationVerification:
    """Compare ``runner`` with ``model`` in torch fp32 on the first call's ``chunks`` [B, N] (real
    audio, up to :data:`SEG_VERIFY_CHUNKS`), on a seeded item alone (batch of one) and on all of
    them in one batch of at least three (so a :class:`BatchSizedRunner`'s big-batch instance is
    checked too; its reference is the first two's, torch runs no more)."""
    worst_p, worst_log, agree, frames = 0.0, 0.0, 0, 0
    with torch.inference_mode():
        caller, single = _check_chunks(chunks)
        refs = [model(torch.from_numpy(b)[:, None, :]).float().numpy() for b in (caller, single)]
        together = np.concatenate([caller, single, single])
        cases = [(caller, refs[0]), (single, refs[1]), (together, np.concatenate([refs[0], refs[1], refs[1]]))]
        for batch, ref in cases:
            out = runner(batch[:, None, :])
            if out.shape != ref.shape:
                return SegmentationVerification(precision, float("inf"), float("inf"), 0.0, ref.shape[0] * ref.shape[1])
            worst_p = max(worst_p, float(np.nan_to_num(np.abs(np.exp(out) - np.exp(ref)), nan=np.inf).max()))
            worst_log = max(worst_log, float(np.nan_to_num(np.abs(out - ref), nan=np.inf).max()))
            agree += int((out.argmax(-1) == ref.argmax(-1)).sum())
            frames += int(ref.shape[0] * ref.shape[1])
    return SegmentationVerification(precision, worst_p, worst_log, agree / max(frames, 1), frames)


def start_segmentation_backend(model: torch.nn.Module, backend: str, precision: str, weights_sha256: str | None,
                               chunks: np.ndarray):
    """Export (or reuse), load and verify ``backend`` for the segmentation ``model`` at its first
    call on ``chunks``. Returns the runner, or None after one warning line (then torch is used)."""
    def start():
        runner = make_segmentation_runner(backend, model, weights_sha256 or weights_digest(model), precision,
                                          torch.get_num_threads())
        return runner, verify_segmentation(model, runner, chunks, precision)

    return _start_checked(f"inference backend {backend} ({precision}) for the segmentation model", start)
