"""The GUI side of the worker: a timer drains the worker's outbox and re-emits Qt signals.

The worker thread never calls into Qt; every ``interval_ms`` (default 50 ms, i.e. at most 20
redraws a second) the GUI thread takes whatever messages are waiting, joins consecutive event
batches into one, and emits them as signals. Command results are routed to the callbacks given
to :meth:`WorkerBridge.call`.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PyQt5.QtCore import QObject, QTimer, pyqtSignal

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
from stream_spk.ui.worker import SessionWorker


@dataclass
class _Callbacks:
    done: Callable[[Any], None] | None
    failed: Callable[[str], None] | None
    progress: Callable[[float, str], None] | None


def join_batches(batches: list[Batch]) -> Batch:
    """One batch holding the events and level frames of several, in order."""
    nows = [b.now for b in batches if b.now is not None]
    return Batch(tuple(ev for b in batches for ev in b.events), tuple(f for b in batches for f in b.levels),
                 max(nows) if nows else None)


class WorkerBridge(QObject):
    """Turns :class:`SessionWorker` messages into Qt signals on the GUI thread."""

    batch = pyqtSignal(object)  # Batch
    status = pyqtSignal(str)
    modelReady = pyqtSignal(object)  # ModelReady
    sessionStarted = pyqtSignal(object)  # SessionStarted
    sessionEnded = pyqtSignal(object)  # SessionEnded
    failure = pyqtSignal(str)
    drained = pyqtSignal()  # after each non-empty drain

    def __init__(self, worker: SessionWorker, interval_ms: int | None = 50, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.worker = worker
        self._callbacks: dict[int, _Callbacks] = {}
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.drain)
        if interval_ms is not None:  # None: the owner calls drain() from its own frame timer
            self.timer.setInterval(interval_ms)
            self.timer.start()

    def call(self, fn: Callable[[SessionWorker], Any], done: Callable[[Any], None] | None = None,
             failed: Callable[[str], None] | None = None,
             progress: Callable[[float, str], None] | None = None) -> int:
        """Run ``fn(worker)`` on the worker thread; ``done(value)`` or ``failed(text)`` follow here."""
        token = self.worker.call(fn)
        self._callbacks[token] = _Callbacks(done, failed, progress)
        return token

    def pending(self) -> int:
        """Commands sent whose result has not arrived yet."""
        return len(self._callbacks)

    def drain(self) -> None:
        """Handle every message waiting now (called by the timer; tests may call it too)."""
        messages = []
        while True:
            try:
                messages.append(self.worker.outbox.get_nowait())
            except queue.Empty:
                break
        if not messages:
            return
        batches: list[Batch] = []
        for msg in messages:
            if isinstance(msg, Batch):
                batches.append(msg)
                continue
            if batches:
                self.batch.emit(join_batches(batches))
                batches = []
            self._dispatch(msg)
        if batches:
            self.batch.emit(join_batches(batches))
        self.drained.emit()

    def _dispatch(self, msg: object) -> None:
        if isinstance(msg, StatusText):
            self.status.emit(msg.text)
        elif isinstance(msg, ModelReady):
            self.modelReady.emit(msg)
        elif isinstance(msg, SessionStarted):
            self.sessionStarted.emit(msg)
        elif isinstance(msg, SessionEnded):
            self.sessionEnded.emit(msg)
        elif isinstance(msg, Failure):
            self.failure.emit(msg.text)
        elif isinstance(msg, Progress):
            cb = self._callbacks.get(msg.token)
            if cb is not None and cb.progress is not None:
                cb.progress(msg.fraction, msg.text)
        elif isinstance(msg, CommandDone):
            cb = self._callbacks.pop(msg.token, None)
            if cb is None:
                return
            if msg.error is None:
                if cb.done is not None:
                    cb.done(msg.value)
            elif cb.failed is not None:
                cb.failed(msg.error)
            else:
                self.failure.emit(msg.error)

    def stop(self) -> None:
        self.timer.stop()
