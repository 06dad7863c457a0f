"""pyannote ``segmentation-3.0`` (PyanNet) in plain torch, with its exact frame geometry.

Architecture and weights: pyannote.audio's PyanNet as trained for ``pyannote/segmentation-3.0``
(MIT licence, Copyright (c) 2020- CNRS, the pyannote.audio authors; Hervé Bredin et al.,
https://github.com/pyannote/pyannote-audio, https://huggingface.co/pyannote/segmentation-3.0).
The network is written here from that architecture; it loads the released checkpoint's
``state_dict`` unchanged (``strict=True``).

Network (16 kHz mono in, one frame every 270 samples out)::

    waveform [B,1,N] -> InstanceNorm(1, affine)
      -> parametric sinc filterbank: 40 learnable bands (low_hz_, band_hz_) x {cos, sin} = 80
         filters of 251 taps, stride 10 -> |x| -> MaxPool(3) -> InstanceNorm(80) -> LeakyReLU
      -> Conv1d(80, 60, 5) -> MaxPool(3) -> InstanceNorm(60) -> LeakyReLU
      -> Conv1d(60, 60, 5) -> MaxPool(3) -> InstanceNorm(60) -> LeakyReLU
      -> 4-layer bidirectional LSTM (128 per direction)
      -> Linear(256, 128) -> LeakyReLU -> Linear(128, 128) -> LeakyReLU
      -> Linear(128, 7) -> log-softmax               => log-probs [B, F, 7]

The 7 outputs are the *powerset* classes of at most 2 of 3 local speakers, in pyannote's order:
0 = nobody, 1 = {1}, 2 = {2}, 3 = {3}, 4 = {1,2}, 5 = {1,3}, 6 = {2,3}.

Frame geometry (from the conv/pool arithmetic, no padding anywhere): output frame ``f`` sees
exactly samples ``[270 f, 270 f + 991)``, so the frame step is 270 samples (16.875 ms), the
frame duration (receptive field) 991 samples (61.9375 ms) and the frame centre sample
``270 f + 495``. ``N`` samples give ``floor((N - 721) / 270)`` frames (``N >= 991``); see
:func:`num_frames`. The model itself needs at least 2 frames (``N >= 1261``,
:data:`MIN_SAMPLES`): its last instance norm cannot normalise a single value.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .precision import Precision, autocast, resolve_device, resolve_precision

SAMPLE_RATE = 16_000
NUM_SPEAKERS = 3  # local speakers per chunk
NUM_CLASSES = 7  # powerset classes: nobody, 3 singles, 3 pairs
#: powerset class -> the set of local speakers (0-based) active in it, in pyannote's order
POWERSET_CLASSES: tuple[tuple[int, ...], ...] = ((), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2))

SINC_FILTERS = 80
SINC_KERNEL = 251
SINC_STRIDE = 10
POOL = 3
CONV_KERNEL = 5

#: samples between consecutive output frames: 10 (sinc stride) * 3 * 3 * 3 (pools)
FRAME_STEP = SINC_STRIDE * POOL**3  # 270
#: samples one output frame sees (its receptive field)
FRAME_SIZE = SINC_KERNEL + SINC_STRIDE * ((POOL - 1) + POOL * ((CONV_KERNEL - 1) + (POOL - 1)
                                          + POOL * ((CONV_KERNEL - 1) + (POOL - 1))))  # 991
#: the shortest input the model accepts: two frames (instance norm needs more than one value)
MIN_SAMPLES = FRAME_SIZE + FRAME_STEP  # 1261
FRAME_STEP_S = FRAME_STEP / SAMPLE_RATE  # 0.016875
FRAME_SIZE_S = FRAME_SIZE / SAMPLE_RATE  # 0.0619375


def num_frames(num_samples: int) -> int:
    """Output frames for ``num_samples`` input samples (0 below :data:`FRAME_SIZE`).

    Layer by layer: sinc conv ``(N - 251) // 10 + 1``, pool ``// 3``, conv ``- 4``, pool ``// 3``,
    conv ``- 4``, pool ``// 3``; nested floors collapse to ``(N - 721) // 270``.
    """
    n = int(num_samples)
    if n < FRAME_SIZE:
        return 0
    return (n - (FRAME_SIZE - FRAME_STEP)) // FRAME_STEP


def frame_start(frame: int | np.ndarray) -> int | np.ndarray:
    """First input sample seen by output frame ``frame``."""
    return frame * FRAME_STEP


def frame_center(frame: int | np.ndarray) -> int | np.ndarray:
    """Centre sample of output frame ``frame``'s receptive field: ``270 f + 495``."""
    return frame * FRAME_STEP + (FRAME_SIZE - 1) // 2


def frame_center_seconds(frame: int | np.ndarray) -> float | np.ndarray:
    """:func:`frame_center` in seconds from the start of the chunk."""
    return frame_center(frame) / SAMPLE_RATE


class ParamSincFB(nn.Module):
    """Learnable band-pass sinc filterbank (Ravanelli & Bengio's SincNet, asteroid's layout).

    ``n_filters // 2`` bands, each given by a learnable low cut-off ``low_hz_`` and width
    ``band_hz_`` (Hz); every band yields a cosine (even) and a sine (odd) Hamming-windowed
    filter, so there are ``n_filters`` outputs. ``window_`` (half Hamming window) and ``n_``
    (2 pi t / sample_rate for the left half of the taps) are fixed buffers saved with the model.
    """

    def __init__(self, n_filters: int = SINC_FILTERS, kernel_size: int = SINC_KERNEL, stride: int = SINC_STRIDE,
                 sample_rate: int = SAMPLE_RATE, min_low_hz: float = 50.0, min_band_hz: float = 50.0) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError("kernel_size must be odd")
        self.n_filters, self.kernel_size, self.stride = n_filters, kernel_size, stride
        self.sample_rate, self.min_low_hz, self.min_band_hz = sample_rate, min_low_hz, min_band_hz
        bands = n_filters // 2
        # mel-spaced initial bands (overwritten by the checkpoint)
        lo_mel, hi_mel = _hz_to_mel(30.0), _hz_to_mel(sample_rate / 2 - (min_low_hz + min_band_hz))
        edges = _mel_to_hz(np.linspace(lo_mel, hi_mel, bands + 1)).astype(np.float32)
        self.low_hz_ = nn.Parameter(torch.from_numpy(edges[:-1].copy()).view(-1, 1))
        self.band_hz_ = nn.Parameter(torch.from_numpy(np.diff(edges)).view(-1, 1))
        half = kernel_size // 2
        taps = torch.linspace(0, kernel_size / 2 - 1, steps=half)
        self.register_buffer("window_", 0.54 - 0.46 * torch.cos(2 * math.pi * taps / kernel_size))
        centre = (kernel_size - 1) / 2
        self.register_buffer("n_", 2 * math.pi * torch.arange(-centre, 0).view(1, -1) / sample_rate)

    def filters(self) -> torch.Tensor:
        """The current filters [n_filters, 1, kernel_size]: all cosine filters, then all sine ones."""
        low = self.min_low_hz + self.low_hz_.abs()
        high = torch.clamp(low + self.min_band_hz + self.band_hz_.abs(), self.min_low_hz, self.sample_rate / 2)
        band = high - low  # [bands, 1]
        arg_low, arg_high = low @ self.n_, high @ self.n_  # [bands, half]
        scale = self.window_ / (self.n_ / 2)
        cos_left = (torch.sin(arg_high) - torch.sin(arg_low)) * scale
        sin_left = (torch.cos(arg_low) - torch.cos(arg_high)) * scale
        cos_f = torch.cat([cos_left, 2 * band, cos_left.flip(1)], dim=1)
        sin_f = torch.cat([sin_left, torch.zeros_like(band), -sin_left.flip(1)], dim=1)
        out = torch.cat([cos_f, sin_f], dim=0) / (2 * torch.cat([band, band], dim=0))
        return out.unsqueeze(1)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        # always fp32: the filter phases (up to ~400 rad) are meaningless at bf16/fp16 precision
        with torch.autocast(device_type=waveforms.device.type, enabled=False):
            dtype = torch.promote_types(waveforms.dtype, torch.float32)
            return F.conv1d(waveforms.to(dtype), self.filters().to(dtype), stride=self.stride)


def _hz_to_mel(hz: float) -> float:
    return 2595.0 * math.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10 ** (mel / 2595.0) - 1.0)


class SincEncoder(nn.Module):
    """Holds the filterbank under ``filterbank`` (the checkpoint's key layout)."""

    def __init__(self) -> None:
        super().__init__()
        self.filterbank = ParamSincFB()

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        return self.filterbank(waveforms)


class SincNet(nn.Module):
    """Waveform front end: sinc filterbank + two convolutions, each pooled, normalised, leaky-ReLU'd."""

    def __init__(self) -> None:
        super().__init__()
        self.wav_norm1d = nn.InstanceNorm1d(1, affine=True)
        self.conv1d = nn.ModuleList([SincEncoder(), nn.Conv1d(SINC_FILTERS, 60, CONV_KERNEL),
                                     nn.Conv1d(60, 60, CONV_KERNEL)])
        self.pool1d = nn.ModuleList([nn.MaxPool1d(POOL, stride=POOL) for _ in range(3)])
        self.norm1d = nn.ModuleList([nn.InstanceNorm1d(c, affine=True) for c in (SINC_FILTERS, 60, 60)])

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        x = self.wav_norm1d(waveforms)
        for i, (conv, pool, norm) in enumerate(zip(self.conv1d, self.pool1d, self.norm1d)):
            x = conv(x)
            if i == 0:
                x = x.abs()
            x = F.leaky_relu(norm(pool(x)))
        return x


class SegmentationModel(nn.Module):
    """PyanNet for segmentation-3.0: ``forward(waveforms [B,1,N]) -> log-probs [B, F, 7]``.

    ``F = num_frames(N)``; ``N`` must be at least :data:`MIN_SAMPLES`. The LSTM's dropout only
    acts in training mode.
    """

    def __init__(self) -> None:
        super().__init__()
        self.sincnet = SincNet()
        self.lstm = nn.LSTM(60, 128, num_layers=4, bidirectional=True, batch_first=True, dropout=0.5)
        self.linear = nn.ModuleList([nn.Linear(256, 128), nn.Linear(128, 128)])
        self.classifier = nn.Linear(128, NUM_CLASSES)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        if waveforms.dim() != 3 or waveforms.shape[1] != 1:
            raise ValueError(f"expected waveforms [B, 1, N], got {tuple(waveforms.shape)}")
        if waveforms.shape[-1] < MIN_SAMPLES:
            raise ValueError(f"need at least {MIN_SAMPLES} samples, got {waveforms.shape[-1]}")
        return self.classify(self.features(waveforms))

    def features(self, waveforms: torch.Tensor) -> torch.Tensor:
        """The convolutional front end: waveforms [B, 1, N] -> features [B, F, 60]."""
        return self.sincnet(waveforms).transpose(1, 2)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """The recurrent back end: features [B, F, 60] -> powerset log-probs [B, F, 7]."""
        x, _ = self.lstm(features)
        for layer in self.linear:
            x = F.leaky_relu(layer(x))
        return F.log_softmax(self.classifier(x), dim=-1)


def load_segmentation(path: str | os.PathLike) -> SegmentationModel:
    """A :class:`SegmentationModel` in eval mode with the checkpoint's weights (strict load).

    The checkpoint is read with :func:`~stream_spk.models.safe_load.load_state_dict`, which never
    executes code from the file.
    """
    from .safe_load import load_state_dict

    model = SegmentationModel()
    model.load_state_dict(load_state_dict(path), strict=True)
    return model.eval()


# ---------------------------------------------------------------------------------------------
# powerset -> per-speaker activity

_MAPPING = torch.tensor([[1.0 if s in cls else 0.0 for s in range(NUM_SPEAKERS)] for cls in POWERSET_CLASSES])


def powerset_mapping() -> np.ndarray:
    """[7, 3] 0/1 matrix: row ``c`` marks the local speakers active in powerset class ``c``."""
    return _MAPPING.numpy().copy()


def _as_tensor(x: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, bool]:
    if isinstance(x, torch.Tensor):
        return x, False
    return torch.from_numpy(np.asarray(x, dtype=np.float32)), True


def powerset_to_multilabel(scores: np.ndarray | torch.Tensor, soft: bool = False,
                           log: bool | None = None) -> np.ndarray | torch.Tensor:
    """Per-speaker activity [..., 3] from powerset scores [..., 7] (classes in pyannote's order).

    Hard (default): the most likely class, as 0/1 per local speaker (probabilities and
    log-probabilities give the same argmax). Soft: each speaker's marginal probability, the
    summed probability of every class containing it (in [0, 1]; a frame's three values sum to at
    most 2). ``log`` says whether ``scores`` are log-probabilities; ``None`` decides from the values
    (any negative value means log-probabilities; probabilities are never negative). Returns float32
    of the same kind (numpy / torch) as given.
    """
    x, was_numpy = _as_tensor(scores)
    if x.shape[-1] != NUM_CLASSES:
        raise ValueError(f"expected {NUM_CLASSES} powerset scores in the last axis, got {x.shape[-1]}")
    mapping = _MAPPING.to(device=x.device)
    if soft:
        probs = x.float()
        if log if log is not None else bool((probs < 0).any()):
            probs = probs.exp()
        out = probs @ mapping
    else:
        out = mapping[x.argmax(dim=-1)]
    return out.numpy() if was_numpy else out


# ---------------------------------------------------------------------------------------------
# inference wrapper


@dataclass(frozen=True)
class SegmentationOutput:
    """What :class:`Segmenter` returns for a batch of equal-length chunks."""

    log_probs: np.ndarray  # float32 [B, F, 7] powerset log-probabilities
    num_samples: int  # samples per input chunk

    @property
    def num_frames(self) -> int:
        return self.log_probs.shape[1]

    @property
    def probs(self) -> np.ndarray:
        """Powerset probabilities [B, F, 7]."""
        return np.exp(self.log_probs)

    def speakers(self, soft: bool = False) -> np.ndarray:
        """Per-speaker activity [B, F, 3] (hard 0/1, or marginal probabilities when ``soft``)."""
        return powerset_to_multilabel(self.probs if soft else self.log_probs, soft=soft)

    def frame_centers(self) -> np.ndarray:
        """Centre sample of every frame [F] (relative to the chunk start)."""
        return frame_center(np.arange(self.num_frames))


class Segmenter:
    """Batched segmentation-3.0 inference on 16 kHz mono chunks (CPU or CUDA).

    ``backend``: ``torch`` (default here), ``onnx`` (ONNX Runtime, CPU, fp32), ``openvino`` (CPU)
    or ``auto`` (see :func:`~stream_spk.models.backends.resolve_segmentation_backend`). As for the
    embedder, the network is exported to ONNX (cached per checkpoint sha256) and checked against
    torch fp32 at the first call, on that call's chunks; a backend that fails is replaced by
    torch with one warning line. ``backend`` and ``precision`` say what runs once that happened.

    Example:
        >>> seg = Segmenter.from_checkpoint(device="cpu")         # doctest: +SKIP
        >>> seg(np.zeros((10, 80000), np.float32)).log_probs.shape  # doctest: +SKIP
        (10, 293, 7)
    """

    def __init__(self, model: SegmentationModel, device: str | torch.device = "auto",
                 precision: str = "fp32", backend: str = "torch", weights_sha256: str | None = None) -> None:
        from .backends import resolve_segmentation_backend, segmentation_backend_precision

        if backend not in ("torch", "auto") and device == "auto":
            device = "cpu"  # the exported backends run on the CPU: auto means the CPU for them
        self.device = resolve_device(device)
        self.backend = resolve_segmentation_backend(backend, self.device, precision)
        self._torch_precision: Precision = resolve_precision(precision, self.device)
        if self.backend == "torch":
            self.precision: Precision = self._torch_precision
        else:
            self.precision = segmentation_backend_precision(self.backend, precision)  # type: ignore[assignment]
        self._weights_sha256 = weights_sha256
        self._runner = None  # the exported network, started at the first call (non-torch backends)
        self.model = model.eval().to(self.device)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike | None = None, device: str | torch.device = "auto",
                        precision: str = "fp32", *, backend: str = "torch", quiet: bool = False) -> Segmenter:
        """Load the real weights: ``path``, else ``$STREAM_SPK_SEGMENTATION_CKPT``, else the verified cache
        (fetched once). ``precision`` defaults to fp32: bf16 autocast changes ~0.6% of the frame
        classes on real speech (the sinc filterbank always runs in fp32). An unknown or unusable
        ``backend`` is reported before the checkpoint is loaded."""
        from .backends import resolve_segmentation_backend
        from .registry import SEGMENTATION_3_0, resolve_checkpoint

        if backend not in ("torch", "auto"):
            resolve_segmentation_backend(backend, resolve_device("cpu" if device == "auto" else device), precision)
        ckpt = resolve_checkpoint(path, SEGMENTATION_3_0, quiet=quiet)
        # resolve_checkpoint verified the file against the registry's sha256 (the export's cache key)
        return cls(load_segmentation(ckpt), device=device, precision=precision, backend=backend,
                   weights_sha256=SEGMENTATION_3_0.sha256)

    def _start_backend(self, chunks: np.ndarray) -> None:
        """Export/load/verify the non-torch backend once, on the first call's chunks; on failure torch."""
        from .backends import start_segmentation_backend

        self._runner = start_segmentation_backend(self.model, self.backend, self.precision, self._weights_sha256,
                                                  chunks)
        if self._runner is None:
            self.backend, self.precision = "torch", self._torch_precision

    @torch.inference_mode()
    def __call__(self, chunks: np.ndarray | torch.Tensor) -> SegmentationOutput:
        """Log-probs for ``chunks`` [B, N] (or one chunk [N]); always a batch dimension in the output."""
        x = chunks if isinstance(chunks, torch.Tensor) else torch.from_numpy(np.asarray(chunks, dtype=np.float32))
        if x.dim() == 1:
            x = x[None]
        if x.dim() != 2:
            raise ValueError(f"expected chunks [B, N] or [N], got shape {tuple(x.shape)}")
        n = x.shape[1]
        if n < MIN_SAMPLES:
            raise ValueError(f"chunks need at least {MIN_SAMPLES} samples, got {n}")
        if x.shape[0] == 0:
            return SegmentationOutput(np.zeros((0, num_frames(n), NUM_CLASSES), np.float32), n)
        if self.backend != "torch":
            batch = x.detach().to("cpu", torch.float32).numpy()
            if self._runner is None:
                self._start_backend(batch)
            if self._runner is not None:
                return SegmentationOutput(self._runner(batch[:, None, :]), n)
        x = x.to(self.device, torch.float32)[:, None, :]
        with autocast(self.precision, self.device):
            out = self.model(x)
        return SegmentationOutput(out.float().cpu().numpy(), n)
