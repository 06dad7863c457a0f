"""Optional audio playback of a replayed file (sounddevice OutputStream, imported lazily).

The worker pushes each chunk as it hands it to the pipeline; the PortAudio callback only copies
queued samples into its buffer (silence when none are queued).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from stream_spk.types import SAMPLE_RATE

OutputFactory = Callable[[int, int, Callable[..., None]], Any]
"""``(samplerate, blocksize, callback) -> stream`` with start/stop/close (tests inject one)."""


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


def playback_unavailable() -> str | None:
    """Why audio playback cannot work here (one line), or None when it can."""
    try:
        import sounddevice as sd
    except OSError as exc:
        return f"PortAudio library not found ({_reason(exc)}): install libportaudio2"
    except ImportError:
        return "the sounddevice package is not installed: pip install 'stream-spk[mic]'"
    try:
        sd.query_devices(kind="output")
    except Exception as exc:
        return f"no audio output device ({_reason(exc)})"
    return None


def _sounddevice_output(samplerate: int, blocksize: int, callback: Callable[..., None]) -> Any:
    import sounddevice as sd

    return sd.OutputStream(samplerate=samplerate, channels=1, blocksize=blocksize, dtype="float32",
                           callback=callback)


class AudioPlayer:
    """Plays pushed 16 kHz mono chunks; opens its stream on the first push."""

    def __init__(self, stream_factory: OutputFactory | None = None, max_seconds: float = 4.0) -> None:
        self._factory = stream_factory or _sounddevice_output
        self._max = int(max_seconds * SAMPLE_RATE)
        self._parts: collections.deque[np.ndarray] = collections.deque()
        self._queued = 0
        self._lock = threading.Lock()
        self._stream: Any = None
        self.underruns = 0

    def push(self, samples: np.ndarray) -> None:
        """Queue samples for playback (oldest dropped beyond ``max_seconds``)."""
        if self._stream is None:
            self._stream = self._factory(SAMPLE_RATE, 800, self._callback)
            self._stream.start()
        x = np.asarray(samples, np.float32).reshape(-1)
        with self._lock:
            self._parts.append(x)
            self._queued += x.size
            while self._queued > self._max and self._parts:
                self._queued -= self._parts.popleft().size

    def _callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        out = outdata.reshape(-1)
        filled = 0
        with self._lock:
            while filled < frames and self._parts:
                part = self._parts[0]
                take = min(frames - filled, part.size)
                out[filled:filled + take] = part[:take]
                filled += take
                self._queued -= take
                if take == part.size:
                    self._parts.popleft()
                else:
                    self._parts[0] = part[take:]
        if filled < frames:
            out[filled:] = 0.0
            if filled:
                self.underruns += 1

    def close(self) -> None:
        """Stop and close the stream (safe to call twice)."""
        stream, self._stream = self._stream, None
        with self._lock:
            self._parts.clear()
            self._queued = 0
        if stream is not None:
            for method in ("stop", "close"):
                try:
                    getattr(stream, method)()
                except Exception:
                    pass  # a vanished device cannot be closed cleanly
