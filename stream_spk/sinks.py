"""Event sinks: RTTM file, JSON lines, console. Each takes ``handle(events)`` and ``close()``."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from stream_spk.errors import StreamSpkError
from stream_spk.rttm import Turn, atomic_file, atomic_write_text, format_rttm
from stream_spk.types import Event, Relabel, SpeakerTurn, SpeechEnd, SpeechStart, Stats

MERGE_GAP = 0.05  # seconds: same-label turns closer than this are written as one

EVENT_TYPES: dict[str, type] = {"speech_start": SpeechStart, "speech_end": SpeechEnd, "turn": SpeakerTurn,
                                 "relabel": Relabel, "stats": Stats}


class _Sink:
    def handle(self, events: list[Event]) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - interface
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def merge_turns(turns: list[Turn], gap: float = MERGE_GAP) -> list[Turn]:
    """Turns sorted by start, same-label turns overlapping or less than ``gap`` apart merged."""
    by_label: dict[str, list[Turn]] = {}
    for turn in sorted(turns):
        by_label.setdefault(turn[2], []).append(turn)
    out: list[Turn] = []
    for label, items in by_label.items():
        cur_start, cur_end = items[0][0], items[0][1]
        for start, end, _ in items[1:]:
            if start - cur_end < gap:
                cur_end = max(cur_end, end)
            else:
                out.append((cur_start, cur_end, label))
                cur_start, cur_end = start, end
        out.append((cur_start, cur_end, label))
    return sorted(out)


class SessionRecord:
    """The final turns of a stream, as emitted and as they stand at the end of the session.

    Feed it every event in order (:meth:`handle`). A final :class:`SpeakerTurn` with a known
    ``turn_id`` replaces the earlier version; provisional turns are ignored. A :class:`Relabel`
    moves every turn that carries ``old`` *at that point of the stream* to ``new``, so chains
    (a -> b, later b -> c) end at c, and a label used again after it was relabelled starts a
    new speaker.
    """

    def __init__(self) -> None:
        self._turns: dict[int, Turn] = {}  # as emitted
        self._label: dict[int, str] = {}  # turn_id -> label at the end of the session (so far)
        self._members: dict[str, set[int]] = {}  # current label -> turn ids

    def handle(self, events: list[Event]) -> None:
        for ev in events:
            if isinstance(ev, SpeakerTurn) and ev.status == "final":
                previous = self._label.get(ev.turn_id)
                if previous is not None:
                    self._members[previous].discard(ev.turn_id)
                self._turns[ev.turn_id] = (ev.start, ev.end, ev.label)
                self._label[ev.turn_id] = ev.label
                self._members.setdefault(ev.label, set()).add(ev.turn_id)
            elif isinstance(ev, Relabel) and ev.old != ev.new:
                moved = self._members.pop(ev.old, set())
                for turn_id in moved:
                    self._label[turn_id] = ev.new
                self._members.setdefault(ev.new, set()).update(moved)

    def turns(self) -> list[Turn]:
        """Final turns under the label each speaker has at the end of the session (merges and
        renames applied), sorted, touching same-label turns joined; different speakers that
        overlap in time stay separate turns."""
        return merge_turns([(a, b, self._label[i]) for i, (a, b, _) in self._turns.items()])

    def emitted(self) -> list[Turn]:
        """Final turns with the labels as the stream emitted them (sorted, joined)."""
        return merge_turns(list(self._turns.values()))


def session_record(events: Iterable[Event]) -> list[Turn]:
    """The session record of a list of events: :meth:`SessionRecord.turns` (what ``--rttm`` and
    ``diarize`` write)."""
    record = SessionRecord()
    record.handle(list(events))
    return record.turns()


def emitted_record(events: Iterable[Event]) -> list[Turn]:
    """Final turns with the labels as emitted (relabels ignored): :meth:`SessionRecord.emitted`."""
    record = SessionRecord()
    record.handle(list(events))
    return record.emitted()


class RttmWriter(_Sink):
    """Collects final :class:`SpeakerTurn` and :class:`Relabel` events; writes the session record
    (:class:`SessionRecord`: every turn under the speaker's label at the end of the session) as
    RTTM on ``close()``, atomically (temporary file + rename, owner-only). ``abort()`` writes
    nothing: an earlier file at ``path`` stays as it was.
    """

    def __init__(self, path: str | os.PathLike, uri: str) -> None:
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise StreamSpkError(f"{self.path}: output folder {self.path.parent} does not exist")
        self.uri = uri
        self.record = SessionRecord()
        self._closed = False

    def handle(self, events: list[Event]) -> None:
        self.record.handle(events)

    def turns(self) -> list[Turn]:
        """The turns as they would be written now (final labels, sorted, joined)."""
        return self.record.turns()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        atomic_write_text(self.path, format_rttm(self.uri, self.turns()))

    def abort(self) -> None:
        self._closed = True


class OnSuccess(_Sink):
    """Holds file sinks for a run whose input may still fail: the runner's ``close()`` does not
    write them; :meth:`commit` (after a run that ended normally) does, :meth:`abort` drops them,
    so a failed input never replaces a good earlier output nor leaves a temporary file."""

    def __init__(self, sinks: Iterable[_Sink]) -> None:
        self.sinks = list(sinks)

    def handle(self, events: list[Event]) -> None:
        for sink in self.sinks:
            sink.handle(events)

    def close(self) -> None:
        pass

    def commit(self) -> None:
        try:
            for sink in self.sinks:
                sink.close()
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        for sink in self.sinks:
            abort = getattr(sink, "abort", None)
            if abort is not None:
                abort()


def _clean(value: Any) -> Any:
    """JSON-ready copy: floats rounded to 3 decimals (non-finite -> None), numpy scalars unboxed."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", None) == 0:
        value = value.item()  # numpy scalar
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return round(value, 3) if math.isfinite(value) else None
    if hasattr(value, "tolist"):
        return _clean(value.tolist())
    return str(value)


def event_to_dict(event: Event) -> dict:
    """An event as a JSON-ready dict, ``kind`` first, floats rounded to 3 decimals."""
    data = _clean(dataclasses.asdict(event))
    return {"kind": data.pop("kind"), **data}


def event_from_dict(data: dict) -> Event:
    """The event a dict from :func:`event_to_dict` (or a JSON line) describes."""
    kind = data.get("kind")
    cls = EVENT_TYPES.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise StreamSpkError(f"unknown event kind {kind!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


class JsonlWriter(_Sink):
    """One JSON object per event per line (schema: docs/events.md), flushed after each batch.

    A path is written through a temporary file next to it (owner-only, 0600) that replaces the
    path on ``close()``; ``abort()`` removes it and leaves an earlier file as it was. An open
    text file is written to and flushed but left open.
    """

    def __init__(self, path_or_fh: str | os.PathLike | IO[str]) -> None:
        self._atomic: atomic_file | None = None
        if hasattr(path_or_fh, "write"):
            self._fh: IO[str] = path_or_fh  # type: ignore[assignment]
        else:
            self._atomic = atomic_file(Path(path_or_fh), "w")  # type: ignore[arg-type]
            self._fh = self._atomic  # type: ignore[assignment]

    def handle(self, events: list[Event]) -> None:
        if not events:
            return
        self._fh.write("".join(json.dumps(event_to_dict(ev)) + "\n" for ev in events))
        self._fh.flush()

    def close(self) -> None:
        if self._atomic is not None:
            self._atomic.commit()
        else:
            self._fh.flush()

    def abort(self) -> None:
        if self._atomic is not None:
            self._atomic.abort()


def read_jsonl(path: str | os.PathLike) -> list[Event]:
    """Events from a JSON-lines file written by :class:`JsonlWriter`."""
    events = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                events.append(event_from_dict(json.loads(line)))
            except (ValueError, TypeError, StreamSpkError) as exc:
                raise StreamSpkError(f"{path}:{lineno}: bad event line ({exc})") from None
    return events


_COLORS = (31, 32, 33, 34, 35, 36, 91, 92, 93, 94, 95, 96)  # ANSI foreground colours
_SPEAKER_N = re.compile(r"speaker (\d+)$")


def label_color(label: str) -> int:
    """A stable ANSI colour code for a label (``speaker N`` cycles through the palette)."""
    m = _SPEAKER_N.match(label)
    index = int(m.group(1)) - 1 if m else zlib.crc32(label.encode("utf-8"))
    return _COLORS[index % len(_COLORS)]


class ConsoleView(_Sink):
    """Prints one line per completed final turn, and one per :class:`Relabel`.

    A turn is printed when a final event with a new ``turn_id`` arrives, or on ``close()``.
    Labels are coloured (stable colour per label) when ``stream`` is a TTY or ``color=True``.
    """

    def __init__(self, stream: IO[str] | None = None, color: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        if color is None:
            isatty = getattr(self.stream, "isatty", None)
            color = bool(isatty and isatty()) and "NO_COLOR" not in os.environ
        self.color = color
        self._open: dict[int, SpeakerTurn] = {}
        self._printed: set[int] = set()

    def handle(self, events: list[Event]) -> None:
        for ev in events:
            if isinstance(ev, SpeakerTurn) and ev.status == "final":
                if ev.turn_id in self._printed:
                    continue
                if ev.turn_id not in self._open:
                    self._flush()
                self._open[ev.turn_id] = ev
            elif isinstance(ev, Relabel):
                self._write(f"  ~ {self._paint(ev.old)} -> {self._paint(ev.new)} ({ev.reason})")
        self.stream.flush()

    def close(self) -> None:
        self._flush()
        self.stream.flush()

    def format_turn(self, turn: SpeakerTurn) -> str:
        """``  12.50 -  15.75  speaker 2   (0.81)``."""
        label = self._paint(turn.label, width=11)
        return f"{turn.start:7.2f} -{turn.end:7.2f}  {label} ({turn.score:.2f})"

    def _paint(self, label: str, width: int = 0) -> str:
        padding = " " * max(0, width - len(label))
        if not self.color:
            return label + padding
        return f"\033[{label_color(label)}m{label}\033[0m{padding}"

    def _flush(self) -> None:
        for turn in sorted(self._open.values(), key=lambda t: (t.start, t.turn_id)):
            self._write(self.format_turn(turn))
            self._printed.add(turn.turn_id)
        self._open.clear()

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
