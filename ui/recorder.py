"""Recording a few seconds from a microphone for enrollment, on a small thread of its own.

The PortAudio callback (inside :class:`MicSource`) only enqueues; this thread reads the chunks,
keeps them and the latest level; the dialog polls :meth:`MicRecorder.state` with a timer.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream_spk.sources import MicSource, StreamFactory
from stream_spk.types import SAMPLE_RATE
from stream_spk.ui.levels import FLOOR_DB, block_levels


@dataclass(frozen=True)
class RecorderState:
    """What the dialog shows: seconds recorded, the latest level, and whether it ended."""

    seconds: float
    rms_db: float
    peak_db: float
    done: bool
    error: str | None


class MicRecorder:
    """Records up to ``seconds`` of 16 kHz mono audio from ``device``."""

    def __init__(self, device: Any, seconds: float, stream_factory: StreamFactory | None = None) -> None:
        self.seconds = float(seconds)
        self._source = MicSource(device, chunk_seconds=0.1, stream_factory=stream_factory, stall_seconds=3.0)
        self._parts: list[np.ndarray] = []
        self._count = 0
        self._rms = self._peak = FLOOR_DB
        self._error: str | None = None
        self._done = threading.Event()
        self._cancelled = False
        self._thread = threading.Thread(target=self._run, name="stream-spk-recorder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            for chunk in self._source:
                if self._cancelled:
                    break
                self._parts.append(chunk.samples)
                self._count += chunk.samples.size
                rms, peak = block_levels(chunk.samples)
                if rms.size:
                    self._rms, self._peak = float(rms[-1]), float(peak.max())
                if self._count >= self.seconds * SAMPLE_RATE:
                    self._source.stop()
        except Exception as exc:
            text = str(exc).strip().splitlines()
            self._error = text[0] if text else type(exc).__name__
        finally:
            self._done.set()

    def stop(self) -> None:
        """Finish early; what was recorded is kept."""
        self._source.stop()

    def cancel(self, timeout: float = 1.0) -> None:
        """Finish and discard the recording."""
        self._cancelled = True
        self._source.stop()
        self._thread.join(timeout)

    def state(self) -> RecorderState:
        return RecorderState(self._count / SAMPLE_RATE, self._rms, self._peak, self._done.is_set(), self._error)

    def samples(self) -> np.ndarray:
        """The recording so far (16 kHz mono float32)."""
        parts = list(self._parts)
        samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        return samples[: int(self.seconds * SAMPLE_RATE)]
