"""The worker's view of an audio source: pacing, pause, commands between chunks, chunk hooks.

:class:`Feed` wraps any iterable of :class:`AudioChunk` (a file read as fast as possible, or a
microphone). It is what :class:`StreamRunner` iterates, so everything it does happens on the
worker thread *between* two ``Pipeline.process`` calls: ``between_chunks`` runs before each
chunk is fetched (the worker drains its command queue there), ``on_chunk`` sees each chunk just
before the pipeline does (levels, playback).

File replay is paced here rather than in :class:`FileSource` so that a pause, or a change of
speed, re-anchors the clock instead of making the replay rush to catch up. For the same reason
the size of a file's chunks follows the current speed here: the source hands out short chunks
(smooth meters when paced) and, as fast as possible, consecutive ones are joined into
``fast_chunk`` seconds per ``Pipeline.process`` call (the pipeline batches the step-grid points
of a chunk into one network call each, so short chunks would cost throughput; its events do not
depend on the chunking).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from stream_spk.types import SAMPLE_RATE, AudioChunk

_POLL = 0.05  # seconds between checks while paused or waiting


class Feed:
    """Iterable of chunks for :class:`StreamRunner`; ``stop()``/``pause()``/``set_speed()`` from any thread.

    ``speed`` (file replay): 1.0 real time, 4.0 four times faster, None as fast as possible.
    ``fast_chunk`` (file replay): while the speed is None, consecutive chunks are joined into one
    of at least this many seconds (the last one of a file, or one cut short by a pause or stop,
    may be shorter); None hands every chunk out as the source made it.
    ``live`` sources (microphones) are never paced nor joined; while paused their chunks are
    dropped (and counted in ``dropped``) instead of piling up. A stopped live source is read to
    its end: the audio it captured before the stop is still analysed (a file stops at once).
    """

    def __init__(self, source: Iterable[AudioChunk], *, speed: float | None = None, live: bool = False,
                 between_chunks: Callable[[], None] | None = None,
                 on_chunk: Callable[[AudioChunk], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, fast_chunk: float | None = None) -> None:
        self.source = source
        self.live = live
        self._fast_samples = round(fast_chunk * SAMPLE_RATE) if fast_chunk and not live else 0
        self._speed = None if live else speed
        self._between = between_chunks or (lambda: None)
        self._on_chunk = on_chunk or (lambda chunk: None)
        self._clock = clock
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._retime = True
        self.dropped = 0
        self.position = 0.0  # stream time of the end of the last chunk handed out

    # --- control (any thread) -------------------------------------------------------------
    @property
    def speed(self) -> float | None:
        return self._speed

    def set_speed(self, speed: float | None) -> None:
        """Change the replay speed from the next chunk on (ignored for live sources)."""
        if not self.live:
            self._speed = speed
            self._retime = True

    @property
    def paused(self) -> bool:
        return self._paused.is_set()

    def pause(self, paused: bool = True) -> None:
        if paused:
            self._paused.set()
        else:
            self._paused.clear()
        self._retime = True

    def stop(self) -> None:
        """End the iteration after the current chunk (wakes any wait)."""
        self._stop.set()
        self._paused.clear()
        stopper = getattr(self.source, "stop", None)
        if callable(stopper):
            stopper()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # --- iteration (worker thread) --------------------------------------------------------
    def __iter__(self) -> Iterator[AudioChunk]:
        inner = iter(self.source)
        anchor: tuple[float, float] | None = None  # (wall clock, stream time) pacing origin
        ended = [False]  # the source ran out while chunks were being joined
        try:
            while True:
                stopping = self._stop.is_set()
                if stopping and not self.live:
                    return
                self._between()
                if self._paused.is_set() and not self.live:
                    self._stop.wait(_POLL)
                    continue
                if ended[0]:
                    return
                try:
                    chunk = next(inner)  # a stopped live source still hands out what it captured
                except StopIteration:
                    return
                if self._paused.is_set() and not self._stop.is_set():
                    self.dropped += 1  # live: what is heard while paused is not analysed
                    continue
                chunk = self._join(chunk, inner, ended)
                anchor = self._pace(chunk, anchor)
                if self._stop.is_set() and not self.live:
                    return
                self._on_chunk(chunk)
                self.position = chunk.t1
                yield chunk
        finally:
            closer = getattr(inner, "close", None)
            if callable(closer):
                closer()  # a generator source (microphone) closes its stream now

    def _join(self, chunk: AudioChunk, inner: Iterator[AudioChunk], ended: list[bool]) -> AudioChunk:
        """As fast as possible: ``chunk`` and the next ones, up to ``fast_chunk`` seconds."""
        if not self._fast_samples or self._speed is not None or chunk.samples.size >= self._fast_samples:
            return chunk
        parts, size = [chunk], chunk.samples.size
        while size < self._fast_samples and self._speed is None and not (
                self._stop.is_set() or self._paused.is_set()):
            try:
                part = next(inner)
            except StopIteration:
                ended[0] = True
                break
            parts.append(part)
            size += part.samples.size
        if len(parts) == 1:
            return chunk
        return AudioChunk(np.concatenate([p.samples for p in parts]), chunk.t0, sum(p.overruns for p in parts))

    def wait_released(self, timeout: float = 1.0) -> bool:
        """The source's :meth:`MicSource.wait_released` (True when it has none)."""
        waiter = getattr(self.source, "wait_released", None)
        return bool(waiter(timeout)) if callable(waiter) else True

    def _pace(self, chunk: AudioChunk, anchor: tuple[float, float] | None) -> tuple[float, float] | None:
        """Wait until ``chunk`` is due at the current speed; returns the pacing origin."""
        while not self._stop.is_set():
            if self._paused.is_set() and not self.live:  # hold this chunk until resumed
                self._between()
                self._stop.wait(_POLL)
                continue
            speed = self._speed
            if speed is None:
                return None
            if self._retime or anchor is None:
                anchor = (self._clock(), chunk.t0)
                self._retime = False
            wait = anchor[0] + (chunk.t1 - anchor[1]) / speed - self._clock()
            if wait <= 0:
                return anchor
            self._stop.wait(min(wait, _POLL))
        return anchor
