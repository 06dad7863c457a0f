"""Input level and voice-activity figures for the signal strip (pure numpy, no Qt).

The worker measures each chunk in 50 ms blocks (RMS and peak in dBFS); the GUI keeps a bounded
history of those blocks and of the VAD frame probabilities, indexed by stream time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stream_spk.types import SAMPLE_RATE

BLOCK_SECONDS = 0.05
FLOOR_DB = -90.0  # digital silence is shown at this level


def to_db(x: np.ndarray | float) -> np.ndarray:
    """Amplitude -> dBFS, floored at ``FLOOR_DB``."""
    return np.maximum(20.0 * np.log10(np.maximum(np.asarray(x, np.float64), 1e-12)), FLOOR_DB)


def block_levels(samples: np.ndarray, block: int = round(BLOCK_SECONDS * SAMPLE_RATE)
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(RMS dBFS, peak dBFS) of consecutive ``block``-sample blocks (a short last block counts).

    Example:
        >>> rms, peak = block_levels(np.full(1600, 0.5, np.float32), block=800)
        >>> [round(float(v), 2) for v in rms], [round(float(v), 2) for v in peak]
        ([-6.02, -6.02], [-6.02, -6.02])
    """
    x = np.asarray(samples, np.float32).reshape(-1)
    if x.size == 0:
        return np.zeros(0), np.zeros(0)
    n = -(-x.size // block)
    padded = np.zeros(n * block, np.float32)
    padded[: x.size] = x
    frames = padded.reshape(n, block)
    counts = np.full(n, block, np.float64)
    counts[-1] = x.size - (n - 1) * block
    rms = np.sqrt(np.square(frames, dtype=np.float64).sum(axis=1) / counts)
    peak = np.abs(frames).max(axis=1)
    return to_db(rms), to_db(peak)


@dataclass(frozen=True)
class LevelFrame:
    """The signal figures of one chunk: level blocks from ``t0`` and VAD frames at ``vad_t``."""

    t0: float
    t1: float
    rms_db: np.ndarray
    peak_db: np.ndarray
    vad_t: np.ndarray
    vad_p: np.ndarray

    @staticmethod
    def measure(samples: np.ndarray, t0: float) -> LevelFrame:
        """Levels of a chunk starting at ``t0`` (no VAD figures yet)."""
        rms, peak = block_levels(samples)
        return LevelFrame(t0, t0 + samples.size / SAMPLE_RATE, rms, peak, np.zeros(0), np.zeros(0))

    def with_vad(self, times: np.ndarray, probs: np.ndarray) -> LevelFrame:
        return LevelFrame(self.t0, self.t1, self.rms_db, self.peak_db, np.asarray(times, np.float64),
                          np.asarray(probs, np.float64))


class _Series:
    """A growing (t, values...) series that keeps at most ``capacity`` newest points."""

    def __init__(self, columns: int, capacity: int) -> None:
        self.capacity = capacity
        self._data = np.zeros((0, columns))

    def extend(self, rows: np.ndarray) -> None:
        if rows.size == 0:
            return
        data = np.concatenate([self._data, rows])
        if len(data) > self.capacity:
            data = data[-self.capacity:]
        self._data = data

    def clear(self) -> None:
        self._data = self._data[:0]

    @property
    def data(self) -> np.ndarray:
        return self._data


class SignalHistory:
    """Level blocks and VAD probabilities over stream time (the newest ``keep_seconds``)."""

    def __init__(self, keep_seconds: float = 900.0) -> None:
        self._levels = _Series(3, int(keep_seconds / BLOCK_SECONDS))
        self._vad = _Series(2, int(keep_seconds / 0.03) + 1)
        self.latest_rms = FLOOR_DB
        self.latest_peak = FLOOR_DB
        self.latest_vad = 0.0
        self.version = 0

    def clear(self) -> None:
        self._levels.clear()
        self._vad.clear()
        self.latest_rms = self.latest_peak = FLOOR_DB
        self.latest_vad = 0.0
        self.version += 1

    def add(self, frame: LevelFrame) -> None:
        """Append one chunk's figures."""
        n = frame.rms_db.size
        if n:
            t = frame.t0 + (np.arange(n) + 0.5) * BLOCK_SECONDS
            self._levels.extend(np.column_stack([t, frame.rms_db, frame.peak_db]))
            self.latest_rms, self.latest_peak = float(frame.rms_db[-1]), float(frame.peak_db.max())
        if frame.vad_p.size:
            self._vad.extend(np.column_stack([frame.vad_t, frame.vad_p]))
            self.latest_vad = float(frame.vad_p[-min(5, frame.vad_p.size):].max())
        self.version += 1

    def levels(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(times, rms dBFS, peak dBFS)."""
        d = self._levels.data
        return d[:, 0], d[:, 1], d[:, 2]

    def vad(self) -> tuple[np.ndarray, np.ndarray]:
        """(times, speech probabilities)."""
        d = self._vad.data
        return d[:, 0], d[:, 1]
