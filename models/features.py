"""Log-mel filterbank features identical to SpeechBrain's ``Fbank(n_mels=80)`` and
``InputNormalization(norm_type="sentence", std_norm=False)``, in pure torch.

All functions take padded batches plus per-item sample or frame counts, so that a window
padded into a batch gets exactly the features it gets alone. :func:`sample_to_frame_weights`
maps per-sample weights of a waveform to the feature frame rate.
"""

from __future__ import annotations

import math

import numpy as np
import torch

SAMPLE_RATE = 16000
N_FFT = 400
WIN_LENGTH = 400  # 25 ms
HOP_LENGTH = 160  # 10 ms
N_MELS = 80
AMIN = 1e-10
TOP_DB = 80.0


def num_frames(num_samples: int | torch.Tensor) -> int | torch.Tensor:
    """Frames produced for ``num_samples`` samples (centered STFT): ``1 + samples // 160``."""
    return 1 + num_samples // HOP_LENGTH


def lengths_to_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """Boolean mask [B, max_len], True on the first ``lengths[b]`` positions of row b."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def _hz_to_mel(hz: float | torch.Tensor) -> float | torch.Tensor:
    if isinstance(hz, torch.Tensor):
        return 2595.0 * torch.log10(1.0 + hz / 700.0)
    return 2595.0 * math.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(
    n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE
) -> torch.Tensor:
    """Triangular mel filters [n_fft // 2 + 1, n_mels] as SpeechBrain builds them.

    SpeechBrain's triangles are symmetric around each centre frequency with a half-width
    equal to the distance to the previous centre.
    """
    mel = torch.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_mels + 2)
    hz = _mel_to_hz(mel)
    half_width = (hz[1:] - hz[:-1])[:-1]
    centre = hz[1:-1]
    freqs = torch.linspace(0, sample_rate // 2, n_fft // 2 + 1)
    slope = (freqs[None, :] - centre[:, None]) / half_width[:, None]
    tri = torch.minimum(slope + 1.0, 1.0 - slope).clamp(min=0.0)
    return tri.transpose(0, 1).contiguous()


class Fbank(torch.nn.Module):
    """80-band log-mel filterbank of 16 kHz audio, with a per-item 80 dB floor.

    Example:
        >>> fb = Fbank()
        >>> feats = fb(torch.zeros(2, 16000), torch.tensor([16000, 8000]))
        >>> feats.shape
        torch.Size([2, 101, 80])
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("window", torch.hamming_window(WIN_LENGTH), persistent=False)
        self.register_buffer("filters", mel_filterbank(), persistent=False)

    def forward(self, wavs: torch.Tensor, num_samples: torch.Tensor) -> torch.Tensor:
        """wavs [B, N] float, zero beyond each item's ``num_samples``; returns [B, T, 80].

        Frames past an item's own frame count hold unspecified values.
        """
        # center=True with zero padding: an item's valid frames only ever see its own
        # samples and zeros, so batching does not change them (the caller zeroes padding).
        spec = torch.stft(
            wavs.float(),
            n_fft=N_FFT,
            hop_length=HOP_LENGTH,
            win_length=WIN_LENGTH,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        power = spec.real.square() + spec.imag.square()  # [B, F, T]
        mels = torch.matmul(power.transpose(1, 2), self.filters)  # [B, T, 80]
        db = 10.0 * torch.log10(mels.clamp(min=AMIN))
        frames = num_frames(num_samples)
        valid = lengths_to_mask(frames, db.shape[1])[:, :, None]
        item_max = db.masked_fill(~valid, -math.inf).amax(dim=(1, 2), keepdim=True)
        return torch.maximum(db, item_max - TOP_DB)


def sentence_mean_norm(feats: torch.Tensor, num_frames_: torch.Tensor) -> torch.Tensor:
    """Subtract each item's mean over its own valid frames; padded frames become 0."""
    valid = lengths_to_mask(num_frames_, feats.shape[1])[:, :, None].to(feats.dtype)
    mean = (feats * valid).sum(dim=1, keepdim=True) / num_frames_[:, None, None].to(feats.dtype)
    return (feats - mean) * valid


def sample_to_frame_weights(sample_weights: np.ndarray) -> np.ndarray:
    """Per-sample weights of one waveform [N] -> per-frame weights [1 + N // 160] (float32).

    Frame ``i`` is centred on sample ``i * 160`` and analyses the 400 samples
    ``[i*160 - 200, i*160 + 200)`` (the centred STFT window). Its weight is the mean of the
    sample weights over the part of that span inside the waveform, so a constant weight maps
    to the same constant (all ones -> all ones) and every sample counts in at least one frame.

    Example:
        >>> w = np.r_[np.ones(800), np.zeros(800)].astype(np.float32)
        >>> [round(float(v), 2) for v in sample_to_frame_weights(w)]
        [1.0, 1.0, 1.0, 1.0, 0.9, 0.5, 0.1, 0.0, 0.0, 0.0, 0.0]
    """
    w = np.asarray(sample_weights, dtype=np.float64).reshape(-1)
    n = w.size
    cum = np.concatenate([[0.0], np.cumsum(w)])
    centres = np.arange(num_frames(n)) * HOP_LENGTH
    lo = np.clip(centres - WIN_LENGTH // 2, 0, n)
    hi = np.clip(centres + WIN_LENGTH // 2, 0, n)
    out = (cum[hi] - cum[lo]) / np.maximum(hi - lo, 1)
    return out.astype(np.float32)
