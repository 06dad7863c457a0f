"""Reading audio files into 16 kHz mono float32, with one-line errors naming the file."""

from __future__ import annotations

import os
import struct
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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


def _looks_like_mpeg(path: Path) -> bool:
    """An ID3 tag or an MPEG audio frame sync at the start: libmpg123 will decode it."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(3)
    except OSError:
        return False
    return head[:3] == b"ID3" or (len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0)


@contextmanager
def quiet_native_stderr(enabled: bool = True) -> Iterator[None]:
    """Discard what C libraries (libmpg123) write to file descriptor 2 inside the block.

    libmpg123 prints notes and warnings straight to stderr even for good MP3 files. Python's
    own ``sys.stderr`` output is flushed first; it is only lost if another thread writes during
    the (short) block.
    """
    if not enabled:
        yield
        return
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 at all: nothing to silence
        yield
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
        finally:
            os.close(devnull)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class QuietSource:
    """Wraps an audio source so that each chunk is decoded under :func:`quiet_native_stderr`;
    every other attribute (``speed``, ``stop``, ``nonfinite_samples``...) is the source's."""

    def __init__(self, source, enabled: bool = True) -> None:
        self._source = source
        self._enabled = enabled

    def __getattr__(self, name: str):
        return getattr(self._source, name)

    def __iter__(self):
        it = iter(self._source)
        while True:
            with quiet_native_stderr(self._enabled):
                try:
                    chunk = next(it)
                except StopIteration:
                    return
            yield chunk


def audio_info(path: str | os.PathLike):
    """``soundfile.info`` of a file, or an :class:`AudioError` naming it."""
    import soundfile as sf

    p = Path(path)
    if not p.exists():
        raise AudioError(f"{p}: no such file")
    if p.is_dir():
        raise AudioError(f"{p}: is a folder, not an audio file")
    try:
        with quiet_native_stderr(_looks_like_mpeg(p)):
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


def ogg_unterminated(path: str | os.PathLike) -> bool:
    """True for an Ogg file whose last page is cut short or lacks the end-of-stream flag (a
    download or recording that stopped); False for a complete one or another format."""
    try:
        with open(path, "rb") as fh:
            if fh.read(4) != b"OggS":
                return False
            size = fh.seek(0, os.SEEK_END)
            tail_start = max(0, size - _OGG_MAX_PAGE)
            fh.seek(tail_start)
            tail = fh.read()
    except OSError:
        return False
    at = len(tail)
    while True:
        at = tail.rfind(b"OggS", 0, at)
        if at < 0:
            return True  # no page header in the last 64 kB: not a well-formed end
        header = tail[at:at + 27]
        if len(header) == 27 and header[4] == 0:  # version 0: a real page header
            break
    flags, nsegs = header[5], header[26]
    lacing = tail[at + 27:at + 27 + nsegs]
    if len(lacing) < nsegs:
        return True
    page_end = at + 27 + nsegs + sum(lacing)
    return page_end > len(tail) or not flags & 0x04


_OGG_MAX_PAGE = 27 + 255 + 255 * 255
_MP3_SLACK_FRAMES = 4 * 1152  # encoder delay/padding: a few MPEG frames are not a truncation


@dataclass
class AudioProbe:
    """What a file's header says, checked the one way every command uses (:func:`probe_audio`)."""

    path: Path
    sample_rate: int
    channels: int
    frames: int  # frames libsndfile says it can decode
    format: str
    declared_frames: int | None = None  # WAV: frames the header promises, when more than are there
    unterminated: bool = False  # Ogg: the stream stops without its end page
    mpeg: bool = False  # decoded by libmpg123 (noisy on stderr; length from its Xing/VBR header)

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0

    def notes(self, decoded_seconds: float | None = None, nonfinite: int = 0) -> list[str]:
        """One-line warnings about faults that were survived: a truncated file (WAV: the header
        promises more; MP3: decoding ended well before the length its header gives; Ogg: no end
        page) and NaN/infinite samples replaced by silence. ``decoded_seconds`` is how much audio
        decoding actually produced."""
        out = []
        if self.declared_frames is not None:
            out.append(truncated_note(self.path, self.declared_frames / self.sample_rate, self.duration))
        elif (self.mpeg and decoded_seconds is not None
              and decoded_seconds * self.sample_rate < self.frames - _MP3_SLACK_FRAMES):
            out.append(truncated_note(self.path, self.duration, decoded_seconds))
        elif self.unterminated:
            held = self.duration if decoded_seconds is None else decoded_seconds
            out.append(f"{self.path}: truncated: the stream stops at {held:.2f} s without its end; "
                       "used what is there")
        if nonfinite:
            out.append(nonfinite_note(self.path, nonfinite))
        return out


def truncated_note(path: str | os.PathLike, promised: float, held: float) -> str:
    return (f"{path}: truncated: the header promises {promised:.2f} s, the file holds {held:.2f} s; "
            "used what is there")


def nonfinite_note(path: str | os.PathLike, count: int) -> str:
    return f"{path}: {count} NaN or infinite sample value(s) replaced by silence"


def warn(note: str) -> None:
    """Print a one-line warning the way every command does."""
    print(f"stream-spk: warning: {note}", file=sys.stderr)


def probe_audio(path: str | os.PathLike) -> AudioProbe:
    """Check a file before any work: :class:`AudioError` for a missing, non-audio, empty or
    header-only file; faults that are survivable (truncation) are noted in the result.

    This is the one rule of every command (embed, enroll, replay, diarize): a truncated file is
    used up to where it ends with a warning, NaN/infinite samples become silence with a
    warning, a file without a single sample is an error.
    """
    p = Path(path)
    info = audio_info(p)
    frames = max(0, int(info.frames))
    declared = wav_declared_frames(p)
    if frames == 0:
        if declared:
            raise AudioError(f"{p}: contains no audio samples (only a header promising "
                             f"{declared / info.samplerate:.2f} s)")
        raise AudioError(f"{p}: contains no audio samples")
    return AudioProbe(p, int(info.samplerate), int(info.channels), frames, str(info.format),
                      declared_frames=declared if declared and declared > frames else None,
                      unterminated=ogg_unterminated(p), mpeg=str(info.format) == "MP3" or _looks_like_mpeg(p))


_READ_BLOCK = 1 << 20  # frames per decode call: errors are located, memory stays near the result


def read_audio(path: str | os.PathLike, *, notes: list[str] | None = None) -> np.ndarray:
    """Whole file as 16 kHz mono float32; any rate and channel count are converted.

    Raises :class:`AudioError` for missing, non-audio, empty or undecodable files (naming the
    position where decoding failed). A truncated file is used up to where it ends and NaN or
    infinite samples become silence; each is a one-line note appended to ``notes``, or printed
    as a warning when ``notes`` is None.
    """
    import soundfile as sf

    probe = probe_audio(path)
    parts: list[np.ndarray] = []
    decoded = nonfinite = 0
    with quiet_native_stderr(probe.mpeg):
        try:
            fh = sf.SoundFile(str(probe.path))
        except Exception as exc:
            raise AudioError(f"{path}: not a readable audio file ({_reason(exc)})") from None
        with fh:
            while True:
                try:
                    block = fh.read(_READ_BLOCK, dtype="float32", always_2d=True)
                except Exception as exc:
                    raise AudioError(f"{path}: cannot decode audio at {decoded / probe.sample_rate:.2f} s "
                                     f"({_reason(exc)})") from None
                if block.shape[0] == 0:
                    break
                decoded += block.shape[0]
                bad = ~np.isfinite(block)
                if bad.any():
                    nonfinite += int(bad.sum())
                    block[bad] = 0.0
                parts.append(to_mono(block))
                if block.shape[0] < _READ_BLOCK:
                    break
    if decoded == 0:
        raise AudioError(f"{path}: contains no audio samples")
    mono = parts[0] if len(parts) == 1 else np.concatenate(parts)
    found = probe.notes(decoded / probe.sample_rate, nonfinite)
    if notes is None:
        for note in found:
            warn(note)
    else:
        notes.extend(found)
    return resample(mono, probe.sample_rate)
