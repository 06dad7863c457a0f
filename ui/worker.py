"""The one worker thread: loads the model, runs :class:`StreamRunner`, executes commands.

Everything that touches the pipeline (and so the model) happens on this thread. The GUI thread
only puts requests on ``inbox`` and reads :mod:`stream_spk.ui.messages` from ``outbox``:

* while a session runs, commands (rename, merge, save speaker, enrollment) are executed between
  two chunks, from :class:`Feed`'s ``between_chunks`` hook, so never concurrently with
  ``Pipeline.process``;
* while idle, the thread blocks on ``inbox`` and executes requests as they come.

Pure Python (no Qt): the GUI polls ``outbox`` with a timer (:mod:`stream_spk.ui.bridge`).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stream_spk.errors import ProfileError, StreamSpkError
from stream_spk.pipeline import Pipeline
from stream_spk.runner import StreamRunner
from stream_spk.session import SessionOptions
from stream_spk.types import SAMPLE_RATE, AudioChunk, Event
from stream_spk.ui.feed import Feed
from stream_spk.ui.levels import LevelFrame
from stream_spk.ui.messages import (
    Batch,
    CommandDone,
    Failure,
    ModelReady,
    Progress,
    SessionEnded,
    SessionStarted,
    StatusText,
)

log = logging.getLogger("stream_spk.ui")

WORKER_NICE = 5  # niceness added to the worker thread (Linux), see SessionWorker._lower_priority

PipelineFactory = Callable[[SessionOptions, Any], Pipeline]
"""``(options, embedder or None) -> Pipeline``; None means "load the model"."""


def default_pipeline_factory(options: SessionOptions, embedder: Any = None) -> Pipeline:
    """:func:`stream_spk.session.build_pipeline` (imports torch lazily, on the calling thread)."""
    from stream_spk.session import build_pipeline

    return build_pipeline(options, embedder=embedder)


def error_text(exc: BaseException) -> str:
    """One line for a user: the message of our own errors, type and message otherwise."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    if isinstance(exc, (StreamSpkError, ValueError)):
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = str(exc).strip().splitlines()
    return f"unexpected error: {type(exc).__name__}" + (f": {text[-1]}" if text else "")


class VadTap:
    """Collects every VAD frame probability of a segmenter, with its stream time.

    ``Pipeline`` may call ``vad.process`` several times per chunk and ``vad.last_probs`` only
    keeps the last call's frames, so the tap wraps the instance's ``process``.
    """

    def __init__(self, vad: Any) -> None:
        self.frame = int(getattr(vad, "frame", 512))
        self._frames = 0
        self._probs: list[np.ndarray] = []
        self._times: list[np.ndarray] = []
        original = getattr(vad, "process", None)
        self.active = callable(original) and hasattr(vad, "last_probs")
        if self.active:
            def process(samples: np.ndarray, _orig=original, _vad=vad):  # noqa: ANN202
                out = _orig(samples)
                self._record(np.asarray(_vad.last_probs, np.float64).reshape(-1))
                return out

            vad.process = process

    def _record(self, probs: np.ndarray) -> None:
        if probs.size:
            idx = self._frames + np.arange(probs.size)
            self._times.append((idx + 0.5) * self.frame / SAMPLE_RATE)
            self._probs.append(probs)
            self._frames += probs.size

    def reset(self) -> None:
        self._frames = 0
        self._probs, self._times = [], []

    def take(self) -> tuple[np.ndarray, np.ndarray]:
        """(times, probabilities) recorded since the previous call."""
        if not self._probs:
            return np.zeros(0), np.zeros(0)
        t, p = np.concatenate(self._times), np.concatenate(self._probs)
        self._probs, self._times = [], []
        return t, p


@dataclass
class _Command:
    token: int
    fn: Callable[[SessionWorker], Any]


@dataclass
class _Session:
    source: Iterable[AudioChunk]
    speed: float | None
    live: bool
    description: str
    duration: float | None
    player: Any = None  # AudioPlayer or None
    fast_chunk: float | None = None  # Feed's: chunks joined to this many seconds as fast as possible
    paused: bool = False  # requests that arrived before the session started
    cancelled: bool = False


class _LoadModel:
    pass


_QUIT = object()


class SessionWorker:
    """Owns the worker thread; see the module docstring. GUI-thread methods return at once."""

    def __init__(self, options: SessionOptions | None = None, pipeline_factory: PipelineFactory | None = None,
                 outbox: queue.Queue | None = None, nice: int = WORKER_NICE) -> None:
        self.options = options or SessionOptions()
        self.nice = nice
        self._factory = pipeline_factory or default_pipeline_factory
        self.outbox: queue.Queue = outbox or queue.Queue()
        self._inbox: queue.Queue = queue.Queue()
        self._deferred: list[Any] = []
        self._tokens = itertools.count(1)
        self._lock = threading.Lock()
        self._feed: Feed | None = None
        self._runner: StreamRunner | None = None
        self._pending: _Session | None = None  # the session job not yet running
        self._thread = threading.Thread(target=self._loop, name="stream-spk-worker", daemon=True)
        # worker-thread state
        self._pipeline: Pipeline | None = None
        self._tap: VadTap | None = None
        self._profiles_dirty = False
        self._events: list[Event] = []
        self._frame: LevelFrame | None = None
        self._player: Any = None
        self._token: int | None = None

    # ================= GUI thread ==========================================================
    def start(self) -> None:
        """Start the thread (once)."""
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def load_model(self) -> None:
        """Load the model now (in the background) rather than at the first session."""
        self._inbox.put(_LoadModel())

    def start_session(self, source: Iterable[AudioChunk], *, speed: float | None, live: bool, description: str,
                      duration: float | None = None, player: Any = None, fast_chunk: float | None = None) -> None:
        """Run ``source`` through the pipeline (the speakers of the previous session are forgotten).

        ``fast_chunk``: a file's chunks are joined into chunks of this many seconds while it is
        replayed as fast as possible (see :class:`Feed`).
        """
        session = _Session(source, speed, live, description, duration, player, fast_chunk)
        with self._lock:
            self._pending = session
        self._inbox.put(session)

    def pause(self, paused: bool) -> None:
        """Pause or resume the session (also one still waiting for the model)."""
        with self._lock:
            if self._pending is not None:
                self._pending.paused = paused
            if self._feed is not None:
                self._feed.pause(paused)

    def set_speed(self, speed: float | None) -> None:
        with self._lock:
            if self._pending is not None:
                self._pending.speed = speed
            if self._feed is not None:
                self._feed.set_speed(speed)

    def stop_session(self) -> None:
        """End the running session after the current chunk (the pipeline is flushed); a session still
        waiting for the model is cancelled."""
        with self._lock:
            runner = self._runner
            if self._pending is not None:
                self._pending.cancelled = True
        if runner is not None:
            runner.stop()

    @property
    def running(self) -> bool:
        with self._lock:
            return self._runner is not None

    def call(self, fn: Callable[[SessionWorker], Any]) -> int:
        """Run ``fn(worker)`` on the worker thread (between chunks, or at once when idle).

        Returns a token; a :class:`CommandDone` with it follows on ``outbox``.
        """
        token = next(self._tokens)
        self._inbox.put(_Command(token, fn))
        return token

    def shutdown(self, timeout: float = 3.0) -> bool:
        """Stop any session, let queued commands finish, end the thread; True if it ended in time."""
        self.stop_session()
        self._inbox.put(_QUIT)
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    # ================= worker thread: API for commands ===================================
    @property
    def pipeline(self) -> Pipeline:
        """The session's pipeline (built on first use); call only from commands."""
        return self._ensure_pipeline()

    @property
    def has_pipeline(self) -> bool:
        return self._pipeline is not None

    def emit_events(self, events: list[Event]) -> None:
        """Send events a command caused (e.g. a Relabel) to the GUI, in stream order."""
        self._flush_batch()
        if events:
            self.outbox.put(Batch(tuple(events)))

    def progress(self, fraction: float, text: str) -> None:
        """Report progress of the running command."""
        if self._token is not None:
            self.outbox.put(Progress(self._token, float(fraction), text))

    def profiles_changed(self) -> None:
        """The profile store changed: the next session rebuilds the pipeline with it."""
        self._profiles_dirty = True

    def profiles_path(self) -> Path | None:
        """The profile store this session uses (None: the default location)."""
        return Path(self.options.profiles) if self.options.profiles else None

    # ================= worker thread: internals ===========================================
    def _lower_priority(self) -> None:
        """Linux: renice this thread (and the torch threads it will spawn) so the GUI thread wins
        the CPU when both want it. Elsewhere a process-wide nice would slow the GUI too: skipped."""
        if self.nice <= 0 or not sys.platform.startswith("linux"):
            return
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + self.nice)
        except (OSError, AttributeError):
            pass  # not allowed or not supported: run at normal priority

    def _loop(self) -> None:
        self._lower_priority()
        while True:
            job = self._deferred.pop(0) if self._deferred else self._inbox.get()
            if job is _QUIT:
                return
            try:
                if isinstance(job, _Command):
                    self._run_command(job)
                elif isinstance(job, _Session):
                    self._run_session(job)
                elif isinstance(job, _LoadModel):
                    self._ensure_pipeline()
            except Exception as exc:  # keep the thread alive whatever happens
                log.exception("worker job failed")
                self.outbox.put(Failure(error_text(exc)))

    def _run_command(self, cmd: _Command) -> None:
        self._token = cmd.token
        try:
            value = cmd.fn(self)
        except Exception as exc:
            if not isinstance(exc, (StreamSpkError, KeyError, ValueError)):
                log.exception("command failed")
            self.outbox.put(CommandDone(cmd.token, error=error_text(exc)))
        else:
            self.outbox.put(CommandDone(cmd.token, value=value))
        finally:
            self._token = None

    def _drain_commands(self) -> None:
        while True:
            try:
                job = self._inbox.get_nowait()
            except queue.Empty:
                return
            if isinstance(job, _Command):
                self._run_command(job)
            else:
                self._deferred.append(job)  # a quit or another session waits for this one

    def _build_options(self) -> SessionOptions:
        opts = self.options
        if opts.profiles and not Path(opts.profiles).exists():
            opts = dataclasses.replace(opts, use_profiles=False)  # nobody enrolled there yet
        return opts

    def _ensure_pipeline(self) -> Pipeline:
        if self._pipeline is not None and not self._profiles_dirty:
            return self._pipeline
        embedder = self._pipeline.embedder if self._pipeline is not None else None
        if embedder is None:
            self.outbox.put(StatusText("loading model…"))
        opts = self._build_options()
        try:
            pipeline = self._factory(opts, embedder)
        except ProfileError as exc:
            self.outbox.put(Failure(f"enrolled speakers not loaded: {exc}"))
            pipeline = self._factory(dataclasses.replace(opts, use_profiles=False), embedder)
        self._tap = VadTap(pipeline.vad)
        self._pipeline, self._profiles_dirty = pipeline, False
        known = tuple(s.name for s in pipeline.speakers() if s.name)
        if embedder is None:
            emb = pipeline.embedder
            device = str(getattr(emb, "device", "cpu")).upper()
            precision = str(getattr(emb, "precision", "fp32"))
            backend = str(getattr(emb, "backend", "torch"))
            if backend != "torch":
                precision = f"{precision} ({backend})"
            self.outbox.put(ModelReady(device, precision, known))
        return pipeline

    def _run_session(self, job: _Session) -> None:
        started = time.monotonic()
        try:
            pipeline = self._ensure_pipeline()
        except Exception as exc:
            if not isinstance(exc, StreamSpkError):
                log.exception("model loading failed")
            with self._lock:
                self._pending = None
            self.outbox.put(SessionEnded(False, 0.0, 0.0, error=error_text(exc)))
            return
        pipeline.reset()
        if self._tap is not None:
            self._tap.reset()
        self._events, self._frame, self._player = [], None, job.player
        with self._lock:
            if self._pending is job:
                self._pending = None
            if job.cancelled:
                self.outbox.put(SessionEnded(True, 0.0, 0.0))
                return
            feed = Feed(job.source, speed=job.speed, live=job.live, between_chunks=self._between_chunks,
                        on_chunk=self._on_chunk, fast_chunk=job.fast_chunk)
            feed.pause(job.paused)
            runner = StreamRunner(feed, pipeline, on_events=self._events.extend)
            self._feed, self._runner = feed, runner
        known = tuple(s.name for s in pipeline.speakers() if s.name)
        self.outbox.put(SessionStarted(job.description, job.duration, known))
        error = None
        try:
            runner.run()
        except Exception as exc:
            if not isinstance(exc, StreamSpkError):
                log.exception("session failed")
            error = error_text(exc)
        finally:
            with self._lock:
                self._feed, self._runner = None, None
            self._flush_batch()
            if self._player is not None:
                self._player.close()
                self._player = None
        self.outbox.put(SessionEnded(feed.stopping, feed.position, time.monotonic() - started, error,
                                     feed.dropped))

    def _on_chunk(self, chunk: AudioChunk) -> None:
        """Just before the pipeline sees ``chunk``: measure it, play it."""
        self._flush_batch()
        self._frame = LevelFrame.measure(chunk.samples, chunk.t0)
        if self._player is not None:
            try:
                self._player.push(chunk.samples)
            except Exception as exc:
                self._player = None
                self.outbox.put(StatusText(f"audio playback stopped: {error_text(exc)}"))

    def _between_chunks(self) -> None:
        """After the pipeline processed a chunk (and before the next): report, then run commands."""
        self._flush_batch()
        self._drain_commands()

    def _flush_batch(self) -> None:
        frame, self._frame = self._frame, None
        events, self._events[:] = list(self._events), []
        if frame is not None and self._tap is not None and self._tap.active:
            frame = frame.with_vad(*self._tap.take())
        if frame is None and not events:
            return
        self.outbox.put(Batch(tuple(events), (frame,) if frame is not None else (), frame.t1 if frame else None))
