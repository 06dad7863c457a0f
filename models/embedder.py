"""Batched speaker embeddings of variable-length waveforms with exact length masks."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from .ecapa import EcapaConfig, EcapaTdnn
from .features import HOP_LENGTH, SAMPLE_RATE, Fbank, num_frames, sentence_mean_norm
from .precision import Precision, autocast, resolve_device, resolve_precision


class Embedder:
    """ECAPA-TDNN embeddings for lists of 16 kHz mono waveforms of any lengths.

    A window gets the same embedding (fp32: cosine >= 0.99999) whether it is embedded alone or
    padded into a batch with longer ones. Lists longer than ``max_batch`` are sorted by length
    and embedded in several forward passes inside one call.

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
    ) -> None:
        self.device = resolve_device(device)
        self.precision: Precision = resolve_precision(precision, self.device)
        self.model = model.eval().to(self.device)
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
        quiet: bool = False,
        **kwargs,
    ) -> Embedder:
        """Load the real ``spkrec-ecapa-voxceleb`` weights (fetched once, verified, cached)."""
        from .registry import resolve_checkpoint

        path = resolve_checkpoint(model_file, quiet=quiet)
        return cls(load_ecapa(path), device=device, precision=precision, **kwargs)

    @torch.inference_mode()
    def embed_padded(self, wavs: torch.Tensor, num_samples: torch.Tensor) -> torch.Tensor:
        """Raw embeddings [B, 192] of a padded batch [B, N]; samples past ``num_samples`` are ignored."""
        wavs = wavs.to(self.device, torch.float32)
        num_samples = num_samples.to(self.device)
        valid = torch.arange(wavs.shape[1], device=self.device)[None, :] < num_samples[:, None]
        wavs = wavs.masked_fill(~valid, 0.0)
        frames = num_frames(num_samples)
        feats = sentence_mean_norm(self.fbank(wavs, num_samples), frames)
        with autocast(self.precision, self.device):
            out = self.model(feats, frames)
        return out.float()

    def embed(self, wavs: Sequence[np.ndarray]) -> np.ndarray:
        """L2-normalised float32 embeddings [len(wavs), 192], in input order."""
        if len(wavs) == 0:
            return np.zeros((0, self.dim), np.float32)
        arrays = [np.asarray(w, dtype=np.float32).reshape(-1) for w in wavs]
        for i, a in enumerate(arrays):
            if a.size < self.min_samples:
                raise ValueError(f"waveform {i} has {a.size} samples; at least {self.min_samples} "
                                 f"({self.min_samples / SAMPLE_RATE:.2f} s) are needed")
            if not np.isfinite(a).all():
                raise ValueError(f"waveform {i} contains NaN or infinite samples")
        order = sorted(range(len(arrays)), key=lambda i: arrays[i].size)
        out = np.empty((len(arrays), self.dim), np.float32)
        for start in range(0, len(order), self.max_batch):
            idx = order[start : start + self.max_batch]
            lengths = [arrays[i].size for i in idx]
            batch = np.zeros((len(idx), max(lengths)), np.float32)
            for row, i in enumerate(idx):
                batch[row, : lengths[row]] = arrays[i]
            emb = self.embed_padded(torch.from_numpy(batch), torch.tensor(lengths))
            out[idx] = torch.nn.functional.normalize(emb, dim=1).cpu().numpy()
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
    return model.eval()
