"""Reading and writing RTTM speaker turns (``SPEAKER <uri> 1 <start> <dur> <NA> <NA> <spk> <NA> <NA>``)."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from stream_spk.errors import StreamSpkError

Turn = tuple[float, float, str]
"""(start, end, speaker) in seconds."""


def read_rttm(path: str | os.PathLike) -> dict[str, list[Turn]]:
    """SPEAKER turns of an RTTM file by uri, each list sorted by start.

    Blank lines, ``#`` comments and other record types are skipped; a malformed SPEAKER line
    raises :class:`StreamSpkError` naming the file and line number.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StreamSpkError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StreamSpkError(f"{p}: cannot read RTTM ({exc.__class__.__name__})") from None
    out: dict[str, list[Turn]] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#") or fields[0] != "SPEAKER":
            continue
        if len(fields) < 8:
            raise StreamSpkError(f"{p}:{lineno}: malformed RTTM line ({len(fields)} fields, "
                                 "at least 8 expected)")
        try:
            start, dur = float(fields[3]), float(fields[4])
        except ValueError:
            raise StreamSpkError(f"{p}:{lineno}: malformed RTTM line (start/duration "
                                 f"{fields[3]!r} {fields[4]!r} are not numbers)") from None
        if not (math.isfinite(start) and math.isfinite(dur)) or start < 0 or dur < 0:
            raise StreamSpkError(f"{p}:{lineno}: malformed RTTM line (start {fields[3]}, "
                                 f"duration {fields[4]} must be finite and >= 0)")
        out.setdefault(fields[1], []).append((start, start + dur, fields[7]))
    for turns in out.values():
        turns.sort()
    return out


def _token(text: str) -> str:
    return "_".join(str(text).split()) or "_"


def format_rttm(uri: str, turns: Iterable[Turn]) -> str:
    """RTTM text for ``turns`` of ``uri``; spaces in names become ``_``; times on a 1 ms grid,
    turns empty on that grid are dropped."""
    uri = _token(uri)
    lines = []
    for start, end, speaker in turns:
        start, end = round(start, 3), round(end, 3)  # millisecond grid: no drift of the end times
        if end <= start:
            continue
        lines.append(f"SPEAKER {uri} 1 {start:.3f} {end - start:.3f} <NA> <NA> {_token(speaker)} "
                     "<NA> <NA>\n")
    return "".join(lines)


def write_rttm(fh_or_path: IO[str] | str | os.PathLike, uri: str, turns: Iterable[Turn]) -> None:
    """Write ``turns`` as RTTM lines to an open text file, or atomically to a path."""
    text = format_rttm(uri, turns)
    if hasattr(fh_or_path, "write"):
        fh_or_path.write(text)  # type: ignore[union-attr]
    else:
        atomic_write_text(Path(fh_or_path), text)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path``, then rename it over ``path``.

    The file is owner-only (0600). On any failure ``path`` is left as it was and no temporary
    file remains.
    """
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    with atomic_file(path, "wb") as fh:
        fh.write(data)


def _cannot_write(path: Path, exc: BaseException) -> StreamSpkError:
    reason = getattr(exc, "strerror", None) or exc.__class__.__name__
    return StreamSpkError(f"{path}: cannot write ({reason})")


class atomic_file:  # noqa: N801 - used like open()
    """``with atomic_file(path, "w") as fh:`` writes a temporary file next to ``path`` (0600) that
    replaces ``path`` only when the block ends without an exception; otherwise it is removed
    and ``path`` keeps its earlier contents. ``commit()``/``abort()`` do the same by hand.
    OS errors become :class:`StreamSpkError` naming ``path``.
    """

    def __init__(self, path: str | os.PathLike, mode: str = "w") -> None:
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise StreamSpkError(f"{self.path}: folder {self.path.parent} does not exist")
        if self.path.is_dir():
            raise StreamSpkError(f"{self.path}: is a folder")
        try:
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        except OSError as exc:
            raise _cannot_write(self.path, exc) from None
        self.tmp = Path(tmp)
        self.fh = os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"}))
        self.done = False

    def write(self, data):
        try:
            return self.fh.write(data)
        except OSError as exc:
            self.abort()
            raise _cannot_write(self.path, exc) from None

    def flush(self) -> None:
        try:
            self.fh.flush()
        except OSError as exc:
            self.abort()
            raise _cannot_write(self.path, exc) from None

    def commit(self) -> None:
        """Flush, sync and rename over ``path`` (idempotent)."""
        if self.done:
            return
        try:
            self.fh.flush()
            os.fsync(self.fh.fileno())
            self.fh.close()
            os.replace(self.tmp, self.path)
        except BaseException as exc:
            self.abort()
            if isinstance(exc, OSError):
                raise _cannot_write(self.path, exc) from None
            raise
        self.done = True

    def abort(self) -> None:
        """Drop what was written; ``path`` keeps its earlier contents (idempotent)."""
        if self.done:
            return
        self.done = True
        try:
            self.fh.close()
        except OSError:
            pass
        try:
            os.unlink(self.tmp)
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
