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
    may be called from any thread and ends the run after the current chunk, with a flush.
    """

    def __init__(self, source: Iterable[AudioChunk], pipeline: Pipeline, sinks: Iterable = (),
                 on_events: EventCallback | None = None, clock: Callable[[], float] = time.monotonic,
                 on_chunk: Callable[[AudioChunk, RunSummary], None] | None = None) -> None:
        self.source = source
        self.pipeline = pipeline
        self.sinks = list(sinks)
        self.on_events = on_events
        self.on_chunk = on_chunk
        self.clock = clock
        self._stop = threading.Event()

    def stop(self) -> None:
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

    def run(self) -> RunSummary:
        summary = RunSummary()
        start = self.clock()
        speed = getattr(self.source, "speed", None)
        try:
            try:
                for chunk in self.source:
                    if self._stop.is_set():
                        summary.stopped = True
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
            except KeyboardInterrupt:  # Ctrl-C ends a live run like stop(): flush and write outputs
                summary.stopped = True
                self.stop()
            self._emit(self.pipeline.flush(), summary)
        finally:
            summary.wall_seconds = self.clock() - start
            summary.speakers = self.pipeline.speakers()
            for sink in self.sinks:
                sink.close()
        return summary
