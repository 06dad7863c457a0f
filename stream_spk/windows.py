"""Sliding windows over speech only: which stretch of audio to embed at each decision time."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Window:
    """Audio [start, end) (samples) to embed, and its embedding once computed."""

    start: int
    end: int
    emb: np.ndarray | None = None

    @property
    def samples(self) -> int:
        return self.end - self.start


class WindowMaker:
    """Tracks speech regions from decided VAD spans and cuts windows inside the current one.

    At a decision time ``t`` the window is the last ``window`` samples of the speech region in
    progress (up to ``t``), or of a region that ended during the last ``step``; a region shorter
    than ``window`` gives a shorter window, and one shorter than ``min_window`` gives none.

    Example:
        >>> wm = WindowMaker(window=24000, step=8000, min_window=4000)
        >>> wm.observe([(0, 3200, False), (3200, 9600, True)])
        >>> wm.at(16000, in_speech=True)
        Window(start=3200, end=16000, emb=None)
    """

    def __init__(self, window: int, step: int, min_window: int) -> None:
        self.window, self.step, self.min_window = window, step, min_window
        self.reset()

    def reset(self) -> None:
        self.region_start: int | None = None
        self.region_end: int | None = None

    def observe(self, spans: list[tuple[int, int, bool]]) -> None:
        """Take newly decided VAD spans ``(start, end, is_speech)`` (contiguous, in order)."""
        for s, e, speech in spans:
            if speech:
                if self.region_start is None or self.region_end is None or s > self.region_end:
                    self.region_start = s
                self.region_end = e

    def at(self, t: int, in_speech: bool, earliest: int = 0) -> Window | None:
        """The window to embed at decision time ``t`` (None when there is no recent speech).

        ``in_speech``: the VAD is inside a region whose end is not decided yet (it extends to t).
        ``earliest``: first sample still available in the audio buffer.
        """
        if self.region_start is None:
            return None
        if in_speech:
            end = t
        elif self.region_end is not None and self.region_end > t - self.step:
            end = min(self.region_end, t)
        else:
            return None
        start = max(self.region_start, end - self.window, earliest)
        if end - start < self.min_window:
            return None
        return Window(start, end)

    def closing(self, t: int, last_window_end: int, earliest: int = 0) -> Window | None:
        """At end of stream: a window for the tail of the last region if no window reached it."""
        if self.region_start is None or self.region_end is None or self.region_end <= last_window_end:
            return None
        end = min(self.region_end, t)
        start = max(self.region_start, end - self.window, earliest)
        return Window(start, end) if end - start >= self.min_window else None
