"""Drive a source through a pipeline into sinks (the edge where time and threads live)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from stream_spk.pipeline import Pipeline
from stream_spk.types import AudioChunk, Event, SpeakerTurn, Stats

EventCallback = Callable[[list[Event]], None]


@dataclass
class RunSummary:
    """What a finished (or stopped) run did."""

    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    final_turns: int = 0
    overruns: int = 0
    stopped: bool = False
    last_stats: Stats | None = None
    wall_lag_max: float = 0.0  # longest wall-clock delay from a chunk's real-time due time to its events
    speakers: list = field(default_factory=list)

    @property
    def speed(self) -> float:
        """Audio seconds processed per wall second."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else float("inf")


class StreamRunner:
    """Feeds every chunk of ``source`` to ``pipeline`` and hands the events to sinks/callbacks.

    ``run()`` blocks in the calling thread (the UI calls it from one worker thread); ``stop()``
    may be called from any thread. A source with a ``stop()`` method (a microphone) is stopped
    and then read to its end, so the audio it captured before the stop is still analysed (for at
    most ``drain_seconds`` of wall time); any other source ends after the current chunk.

    Whatever ends the run (the source's end, ``stop()``, Ctrl-C, a device that fails mid-stream)
    the pipeline is flushed, the sinks are closed (outputs written) and only then is the source
    asked to release its device, for at most ``release_seconds``; an error is re-raised after
    that. ``summary`` holds what was done so far, also when ``run()`` raised.
    """

    def __init__(self, source: Iterable[AudioChunk], pipeline: Pipeline, sinks: Iterable = (),
                 on_events: EventCallback | None = None, clock: Callable[[], float] = time.monotonic,
                 on_chunk: Callable[[AudioChunk, RunSummary], None] | None = None,
                 drain_seconds: float = 1.0, release_seconds: float = 0.5) -> None:
        self.source = source
        self.pipeline = pipeline
        self.sinks = list(sinks)
        self.on_events = on_events
        self.on_chunk = on_chunk
        self.clock = clock
        self.drain_seconds = drain_seconds
        self.release_seconds = release_seconds
        self.summary = RunSummary()
        self._stop = threading.Event()
        self._stopped_at: float | None = None  # monotonic time of the first stop()

    def stop(self) -> None:
        if self._stopped_at is None:
            self._stopped_at = time.monotonic()
        self._stop.set()
        stopper = getattr(self.source, "stop", None)
        if callable(stopper):
            stopper()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _emit(self, events: list[Event], summary: RunSummary) -> None:
        if not events:
            return
        for ev in events:
            if isinstance(ev, SpeakerTurn) and ev.status == "final":
                summary.final_turns += 1
            elif isinstance(ev, Stats):
                summary.last_stats = ev
        for sink in self.sinks:
            sink.handle(events)
        if self.on_events is not None:
            self.on_events(events)

    def _drain_expired(self) -> bool:
        return self._stopped_at is not None and time.monotonic() - self._stopped_at > self.drain_seconds

    def run(self) -> RunSummary:
        summary = self.summary = RunSummary()
        start = self.clock()
        speed = getattr(self.source, "speed", None)
        drains = callable(getattr(self.source, "stop", None))  # stopping it ends it after its backlog
        error: BaseException | None = None
        it = iter(self.source)
        try:
            while True:
                try:
                    if self._stop.is_set() and (not drains or self._drain_expired()):
                        break
                    try:
                        chunk = next(it)
                    except StopIteration:
                        break
                    events = self.pipeline.process(chunk)
                    summary.audio_seconds = chunk.t1
                    summary.overruns += chunk.overruns
                    if speed:
                        lag = self.clock() - (start + chunk.t1 / speed)
                        summary.wall_lag_max = max(summary.wall_lag_max, lag)
                    self._emit(events, summary)
                    if self.on_chunk is not None:
                        self.on_chunk(chunk, summary)
                except KeyboardInterrupt:  # Ctrl-C ends a live run like stop(): drain, flush, write
                    if self._stop.is_set():
                        break  # a second Ctrl-C: no more draining
                    self.stop()
        except BaseException as exc:  # a device lost mid-stream: keep what was heard, then report
            error = exc
        finally:
            summary.stopped = summary.stopped or self._stop.is_set()
            try:
                closer = getattr(it, "close", None)
                if callable(closer):
                    closer()  # a generator source releases its device (without waiting for it)
            except Exception:
                pass
            try:
                self._emit(self.pipeline.flush(), summary)
            except Exception as exc:
                if error is None:
                    error = exc
            finally:
                summary.wall_seconds = self.clock() - start
                try:
                    summary.speakers = self.pipeline.speakers()
                except Exception:
                    pass
                for sink in self.sinks:
                    try:
                        sink.close()
                    except Exception as exc:
                        if error is None:
                            error = exc
                waiter = getattr(self.source, "wait_released", None)
                if callable(waiter):
                    waiter(self.release_seconds)
        if error is not None:
            raise error
        return summary
