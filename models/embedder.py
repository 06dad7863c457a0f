"""Batched speaker embeddings of variable-length waveforms with exact length masks."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from .ecapa import EcapaConfig, EcapaTdnn, flush_denormals_
from .features import (
    HOP_LENGTH,
    SAMPLE_RATE,
    Fbank,
    num_frames,
    sample_to_frame_weights,
    sentence_mean_norm,
)
from .precision import Precision, autocast, cpu_has_native_bf16, resolve_device, resolve_precision

#: An item whose sample weights never exceed this has nothing to embed (ValueError).
MIN_WEIGHT = 1e-6


class Embedder:
    """ECAPA-TDNN embeddings for lists of 16 kHz mono waveforms of any lengths.

    A window gets the same embedding (fp32: cosine >= 0.99999) whether it is embedded alone or
    padded into a batch with longer ones. Lists longer than ``max_batch`` are sorted by length
    and embedded in several forward passes inside one call.

    Optional per-sample weights (e.g. 0 where another speaker talks) make an embedding ignore
    frames in its pooled statistics; see :meth:`embed`.

    ``backend``: ``torch`` (default here), ``onnx`` (ONNX Runtime, CPU, fp32), ``openvino`` (CPU,
    fp32/bf16/fp16) or ``auto`` (see :mod:`.backends`). The network is exported to ONNX and
    checked against torch fp32 at the first embedding, not at construction; a backend that
    fails then is replaced by torch with one warning line. ``backend`` and ``precision`` say
    what runs once that has happened.

    Example:
        >>> emb = Embedder.from_checkpoint()            # doctest: +SKIP
        >>> emb.embed([np.zeros(24000, np.float32), np.ones(8000, np.float32)]).shape  # doctest: +SKIP
        (2, 192)
    """

    def __init__(
        self,
        model: EcapaTdnn,
        device: str | torch.device = "auto",
        precision: str = "auto",
        max_batch: int = 64,
        backend: str = "torch",
        weights_sha256: str | None = None,
    ) -> None:
        from .backends import backend_precision, resolve_backend

        if backend not in ("torch", "auto") and device == "auto":
            device = "cpu"  # the exported backends run on the CPU: auto means the CPU for them
        self.device = resolve_device(device)
        self.backend = resolve_backend(backend, self.device, precision)
        self._torch_precision: Precision = resolve_precision(precision, self.device)
        if self.backend == "torch":
            self.precision: Precision = self._torch_precision
        else:
            self.precision = backend_precision(self.backend, precision, cpu_has_native_bf16())  # type: ignore[assignment]
        self._weights_sha256 = weights_sha256
        self._runner = None  # the exported network, started at the first embedding (non-torch backends)
        self.model = model.eval().to(self.device)
        flush_denormals_(self.model)  # in place; subnormal weights make fp32 ~4.5x slower on CPU
        self.fbank = Fbank().to(self.device)
        self.max_batch = max_batch
        self.min_samples = (model.config.min_frames - 1) * HOP_LENGTH
        self.dim = model.config.lin_neurons

    @classmethod
    def from_checkpoint(
        cls,
        model_file: str | os.PathLike | None = None,
        device: str | torch.device = "auto",
        precision: str = "auto",
        *,
        backend: str = "torch",
        quiet: bool = False,
        **kwargs,
    ) -> Embedder:
        """Load the real ``spkrec-ecapa-voxceleb`` weights (fetched once, verified, cached).

        An unknown or unusable ``backend`` is reported before the checkpoint is loaded.
        """
        from .backends import resolve_backend
        from .registry import ECAPA_VOXCELEB, resolve_checkpoint

        if backend not in ("torch", "auto"):
            resolve_backend(backend, resolve_device("cpu" if device == "auto" else device), precision)
        path = resolve_checkpoint(model_file, quiet=quiet)
        kwargs.setdefault("weights_sha256", ECAPA_VOXCELEB.sha256)  # resolve_checkpoint verified the file
        return cls(load_ecapa(path), device=device, precision=precision, backend=backend, **kwargs)

    def _start_backend(self) -> None:
        """Export/load/verify the non-torch backend once; on failure fall back to torch."""
        from .backends import start_backend

        self._runner = start_backend(self, self.backend, self.precision, self._weights_sha256)
        if self._runner is None:
            self.backend, self.precision = "torch", self._torch_precision

    @torch.inference_mode()
    def embed_padded(
        self,
        wavs: torch.Tensor,
        num_samples: torch.Tensor,
        frame_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Raw embeddings [B, 192] of a padded batch [B, N]; samples past ``num_samples`` are ignored.

        ``frame_weights``: optional [B, T] weights at the feature frame rate (T >= the longest
        item's ``1 + num_samples // 160``; values past an item's frame count are ignored), as
        :func:`~stream_spk.models.features.sample_to_frame_weights` makes them.
        """
        wavs = wavs.to(self.device, torch.float32)
        num_samples = num_samples.to(self.device)
        valid = torch.arange(wavs.shape[1], device=self.device)[None, :] < num_samples[:, None]
        wavs = wavs.masked_fill(~valid, 0.0)
        frames = num_frames(num_samples)
        feats = sentence_mean_norm(self.fbank(wavs, num_samples), frames)
        if frame_weights is not None:
            frame_weights = frame_weights.to(self.device, torch.float32)[:, : feats.shape[1]]
        if self.backend != "torch" and self._runner is None:
            self._start_backend()
        if self._runner is not None:
            weights = torch.ones(feats.shape[:2]) if frame_weights is None else frame_weights
            out = self._runner(feats.cpu().numpy(), frames.cpu().numpy().astype(np.int64),
                               weights.cpu().numpy())
            return torch.from_numpy(out)
        with autocast(self.precision, self.device):
            if frame_weights is None:
                out = self.model(feats, frames)
            else:
                out = self.model(feats, frames, frame_weights)
        return out.float()

    def embed(
        self,
        wavs: Sequence[np.ndarray],
        weights: Sequence[np.ndarray | None] | None = None,
    ) -> np.ndarray:
        """L2-normalised float32 embeddings [len(wavs), 192], in input order.

        ``weights``: optional, one entry per waveform: None (every frame counts fully) or a
        float array in [0, 1] with one value per sample of that waveform. Each feature frame
        gets the mean of the sample weights over its 400-sample (25 ms) analysis span, and
        that weight scales the frame's share in the SE squeezes and in the attentive
        statistics pooling (weight 0: the frame enters no pooled statistic). The convolutions
        still see every sample as context. All-None (or ``weights=None``) gives exactly the
        unweighted embeddings; an all-ones array gives the same embedding as None.

        Raises ValueError for a too-short or non-finite waveform, and for weights of the wrong
        length, outside [0, 1], non-finite, or all ~0 (max <= 1e-6: nothing to embed).
        """
        if len(wavs) == 0:
            return np.zeros((0, self.dim), np.float32)
        arrays = [np.asarray(w, dtype=np.float32).reshape(-1) for w in wavs]
        for i, a in enumerate(arrays):
            if a.size < self.min_samples:
                raise ValueError(f"waveform {i} has {a.size} samples; at least {self.min_samples} "
                                 f"({self.min_samples / SAMPLE_RATE:.2f} s) are needed")
            if not np.isfinite(a).all():
                raise ValueError(f"waveform {i} contains NaN or infinite samples")
        frame_w = self._frame_weights(arrays, weights)
        order = sorted(range(len(arrays)), key=lambda i: arrays[i].size)
        out = np.empty((len(arrays), self.dim), np.float32)
        for start in range(0, len(order), self.max_batch):
            idx = order[start : start + self.max_batch]
            lengths = [arrays[i].size for i in idx]
            batch = np.zeros((len(idx), max(lengths)), np.float32)
            for row, i in enumerate(idx):
                batch[row, : lengths[row]] = arrays[i]
            batch_w = None
            if frame_w is not None:
                batch_w = np.zeros((len(idx), int(num_frames(max(lengths)))), np.float32)
                for row, i in enumerate(idx):
                    fw = frame_w[i]
                    batch_w[row, : int(num_frames(lengths[row]))] = 1.0 if fw is None else fw
                batch_w = torch.from_numpy(batch_w)
            emb = self.embed_padded(torch.from_numpy(batch), torch.tensor(lengths), batch_w)
            out[idx] = torch.nn.functional.normalize(emb, dim=1).cpu().numpy()
        return out

    @staticmethod
    def _frame_weights(
        arrays: list[np.ndarray], weights: Sequence[np.ndarray | None] | None
    ) -> list[np.ndarray | None] | None:
        """Validated per-frame weights per waveform; None when no waveform is weighted."""
        if weights is None:
            return None
        if len(weights) != len(arrays):
            raise ValueError(f"{len(weights)} weight arrays for {len(arrays)} waveforms")
        if all(w is None for w in weights):
            return None
        out: list[np.ndarray | None] = []
        for i, (a, w) in enumerate(zip(arrays, weights)):
            if w is None:
                out.append(None)
                continue
            w = np.asarray(w, dtype=np.float32).reshape(-1)
            if w.size != a.size:
                raise ValueError(f"weights {i} have {w.size} values for {a.size} samples")
            if not np.isfinite(w).all():
                raise ValueError(f"weights {i} contain NaN or infinite values")
            if w.min() < 0.0 or w.max() > 1.0:
                raise ValueError(f"weights {i} must lie in [0, 1] (range {w.min():g}..{w.max():g})")
            if w.max() <= MIN_WEIGHT:
                raise ValueError(f"weights {i} are all ~0 (max {w.max():g}): nothing to embed")
            out.append(sample_to_frame_weights(w))
        return out


def load_ecapa(path: str | os.PathLike, config: EcapaConfig | None = None) -> EcapaTdnn:
    """An :class:`EcapaTdnn` with the checkpoint at ``path`` loaded strictly (CPU, eval mode)."""
    from stream_spk.errors import ModelError

    with torch.device("meta"):  # no random initialisation of 20 M weights about to be replaced
        model = EcapaTdnn(config)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True, assign=True)
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: not a usable ECAPA-TDNN checkpoint ({first})") from None
    flush_denormals_(model)
    return model.eval()
