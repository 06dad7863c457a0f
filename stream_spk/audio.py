"""Reading audio files into 16 kHz mono float32, with one-line errors naming the file."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from stream_spk.errors import AudioError

SAMPLE_RATE = 16000


def to_mono(data: np.ndarray) -> np.ndarray:
    """Average the channels of [frames, channels] (or pass 1-D through) as float32."""
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 2:
        data = data.mean(axis=1, dtype=np.float32)
    return data


def resample(samples: np.ndarray, sample_rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """High-quality resampling of a 1-D float32 signal (soxr)."""
    if sample_rate == target or samples.size == 0:
        return samples.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(samples, sample_rate, target, quality="HQ").astype(np.float32, copy=False)


def audio_info(path: str | os.PathLike):
    """``soundfile.info`` of a file, or an :class:`AudioError` naming it."""
    import soundfile as sf

    p = Path(path)
    if not p.exists():
        raise AudioError(f"{p}: no such file")
    if p.is_dir():
        raise AudioError(f"{p}: is a folder, not an audio file")
    try:
        return sf.info(str(p))
    except Exception as exc:  # soundfile raises several types for non-audio input
        raise AudioError(f"{p}: not a readable audio file ({_reason(exc)})") from None


def wav_declared_frames(path: str | os.PathLike) -> int | None:
    """Frames a WAV file's header promises, or None (not WAV, or a streaming placeholder size).

    libsndfile silently clamps a cut WAV to what is on disk; comparing with this number is how a
    truncated recording is noticed.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block_align = 0
            while True:
                chunk = fh.read(8)
                if len(chunk) < 8:
                    return None
                kind, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if kind == b"fmt ":
                    fmt = fh.read(size)
                    if len(fmt) < 14:
                        return None
                    block_align = struct.unpack("<H", fmt[12:14])[0]
                    if size % 2:
                        fh.seek(1, os.SEEK_CUR)
                elif kind == b"data":
                    # 0 and 0xFFFFFFFF are what recorders write before they know the length
                    if not block_align or size in (0, 0xFFFFFFFF):
                        return None
                    return size // block_align
                else:
                    fh.seek(size + (size % 2), os.SEEK_CUR)
    except OSError:
        return None


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


def read_audio(path: str | os.PathLike, *, allow_empty: bool = False) -> np.ndarray:
    """Whole file as 16 kHz mono float32; any rate and channel count are converted.

    Raises :class:`AudioError` for missing, non-audio, truncated, empty or NaN-containing files.
    """
    import soundfile as sf

    audio_info(path)
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(f"{path}: cannot decode audio ({_reason(exc)})") from None
    if data.shape[0] == 0 and not allow_empty:
        raise AudioError(f"{path}: contains no audio samples")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: contains NaN or infinite samples")
    return resample(to_mono(data), int(rate))
