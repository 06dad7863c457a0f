"""What the worker thread tells the GUI thread (plain frozen dataclasses, put on a queue)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stream_spk.types import Event
from stream_spk.ui.levels import LevelFrame


@dataclass(frozen=True)
class Batch:
    """Events and signal figures of one or more chunks; ``now`` is the stream time reached."""

    events: tuple[Event, ...] = ()
    levels: tuple[LevelFrame, ...] = ()
    now: float | None = None


@dataclass(frozen=True)
class StatusText:
    """A transient status-bar message."""

    text: str


@dataclass(frozen=True)
class ModelReady:
    """The model is loaded: where it runs and at which precision; ``known`` enrolled names."""

    device: str
    precision: str
    known: tuple[str, ...] = ()


@dataclass(frozen=True)
class SessionStarted:
    description: str
    duration: float | None  # seconds of a file; None for a microphone
    known: tuple[str, ...] = ()


@dataclass(frozen=True)
class SessionEnded:
    """A session finished (``stopped`` by the user, or ended with ``error``)."""

    stopped: bool
    audio_seconds: float
    wall_seconds: float
    error: str | None = None
    dropped_chunks: int = 0


@dataclass(frozen=True)
class Progress:
    """Progress of a long command (enrollment)."""

    token: int
    fraction: float
    text: str


@dataclass(frozen=True)
class CommandDone:
    """A command finished: ``value`` on success, ``error`` (one line) otherwise."""

    token: int
    value: Any = None
    error: str | None = None


@dataclass(frozen=True)
class Failure:
    """Something went wrong outside any command (shown as a dialog)."""

    text: str
    details: dict = field(default_factory=dict)
