"""Enrolled speaker profiles kept across sessions: a small SQLite store of voice embeddings.

One file (``$STREAM_SPK_PROFILES``, else ``<user data dir>/stream-spk/profiles.sqlite3``),
created owner-only (0600). Every write is one ``BEGIN IMMEDIATE`` transaction in WAL mode, so
two processes writing at once both succeed (or one gets a clear "database is busy" error) and a
process killed mid-write leaves the store as it was. A store remembers which embedding model
made its vectors; vectors of another model are refused rather than matched.

No torch here: the Qt UI imports this module.

Example:
    >>> store = ProfileStore(tmp / "p.sqlite3")                    # doctest: +SKIP
    >>> store.add_embeddings("Anna", vecs, ["a.wav"] * len(vecs), [1.5] * len(vecs))  # doctest: +SKIP
    KnownSpeaker(name='Anna', centroid=array([...], dtype=float32), n_embeddings=12, ...)
"""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from stream_spk.errors import ProfileError

ENV_PROFILES = "STREAM_SPK_PROFILES"
SCHEMA_VERSION = 2
EXPORT_FORMAT = "stream-spk-profiles"
EXPORT_VERSION = 1
EMBED_DIM = 192
MAX_NAME_LENGTH = 64
MAX_IMPORT_NORM = 1e3  # exported vectors have length 1
MAX_SPEECH_SECONDS = 1e7  # 115 days of speech
MAX_TIME_LENGTH = 40
SQLITE_MAGIC = b"SQLite format 3\x00"
# The pipeline labels anonymous speakers "speaker N"; an enrolled name must not look like one.
_ANONYMOUS = re.compile(r"speaker\s*\d+", re.IGNORECASE)


def default_model() -> tuple[str, str]:
    """(model_id, sha256) of the embedding model the app runs (the verified ECAPA checkpoint)."""
    from stream_spk.models.registry import ECAPA_VOXCELEB

    return ECAPA_VOXCELEB.model_id, ECAPA_VOXCELEB.sha256


def default_profiles_path() -> Path:
    """``$STREAM_SPK_PROFILES``, else ``profiles.sqlite3`` in the user data dir."""
    env = os.environ.get(ENV_PROFILES)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("stream-spk")) / "profiles.sqlite3"


# control, format (zero-width, bidi), line/paragraph separator characters; surrogates, unassigned
_INVISIBLE = {"Cc", "Cf", "Zl", "Zp", "Cs", "Cn"}


def name_key(name: str) -> str:
    """What makes two names the same speaker: compatibility-normalised, case-folded
    (``Émile`` = ``E\u0301mile`` = ``émile``, ``Straße`` = ``STRASSE``)."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


def validate_name(name: str, *, lookup: bool = False) -> str:
    """The stripped speaker name in Unicode NFC, or a :class:`ProfileError` saying what is wrong.

    Names are compared by :func:`name_key`. Invisible characters (control, zero-width, bidi
    controls, line/paragraph separators) are refused: two names that look the same must be
    the same name. With ``lookup`` (a name that only finds an enrolled speaker: get, rename's
    old name, delete, export) they are allowed, so that a speaker enrolled before this rule
    can still be managed.
    """
    if not isinstance(name, str):
        raise ProfileError(f"speaker name must be text, not {type(name).__name__}")
    clean = unicodedata.normalize("NFC", name.strip())
    if not clean:
        raise ProfileError("speaker name is empty")
    if len(clean) > MAX_NAME_LENGTH:
        raise ProfileError(f"speaker name {clean[:20]!r}... is {len(clean)} characters long; "
                           f"at most {MAX_NAME_LENGTH} are allowed")
    bad = sorted({f"U+{ord(c):04X}" for c in clean if unicodedata.category(c) in _INVISIBLE})
    if bad and not lookup:
        raise ProfileError(f"speaker name {clean!r} contains invisible or control characters "
                           f"({', '.join(bad[:5])})")
    if not name_key(clean).strip():
        raise ProfileError("speaker name is empty")
    if _ANONYMOUS.fullmatch(clean):
        raise ProfileError(f"speaker name {clean!r} is reserved for anonymous speakers; choose a real name")
    return clean


@dataclass(frozen=True)
class KnownSpeaker:
    """An enrolled speaker as the clusterer sees it: a name and an L2-normalised centroid [192]."""

    name: str
    centroid: np.ndarray
    n_embeddings: int
    speech_seconds: float


@dataclass(frozen=True)
class SpeakerRecord:
    """One row of :meth:`ProfileStore.list`: what a person would want to see about a speaker."""

    name: str
    created: str  # ISO 8601, UTC
    updated: str
    n_embeddings: int
    speech_seconds: float
    model_id: str
    model_hash: str


# ---- schema ---------------------------------------------------------------------------------

_SCHEMA_V2 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE speakers (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    model_id TEXT NOT NULL,
    model_hash TEXT NOT NULL,
    centroid BLOB NOT NULL,
    n_embeddings INTEGER NOT NULL,
    speech_seconds REAL NOT NULL DEFAULT 0
);
CREATE TABLE embeddings (
    id INTEGER PRIMARY KEY,
    speaker_id INTEGER NOT NULL REFERENCES speakers(id) ON DELETE CASCADE,
    vector BLOB NOT NULL,
    source TEXT NOT NULL,
    duration REAL NOT NULL DEFAULT 0,
    created TEXT NOT NULL
);
CREATE INDEX embeddings_speaker ON embeddings(speaker_id);
"""


def _migrate_v1_to_v2(conn: sqlite3.Connection) -> None:
    """v1 had no durations: add ``speakers.speech_seconds`` and ``embeddings.duration`` (0 = unknown)."""
    conn.execute("ALTER TABLE speakers ADD COLUMN speech_seconds REAL NOT NULL DEFAULT 0")
    conn.execute("ALTER TABLE embeddings ADD COLUMN duration REAL NOT NULL DEFAULT 0")


# MIGRATIONS[v] turns a version-v database into version v + 1 (inside one transaction).
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _migrate_v1_to_v2}
_OUR_TABLES = {"meta", "speakers", "embeddings"}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _checked_time(value: object) -> str:
    """An imported ISO 8601 time stamp (now when absent); anything else is a ValueError."""
    if value is None or value == "":
        return _now()
    if not isinstance(value, str) or len(value) > MAX_TIME_LENGTH:
        shown = f"{type(value).__name__} of {len(value)} characters" if isinstance(value, str) else repr(value)[:40]
        raise ValueError(f"'created' must be an ISO 8601 time, not {shown}")
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"'created' must be an ISO 8601 time, not {value!r}") from None
    return value


def _blob(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def _normalise_rows(vectors: np.ndarray) -> np.ndarray:
    v = np.asarray(vectors, np.float64)  # float32 norms of large values overflow to inf
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class ProfileStore:
    """Enrolled speakers in one SQLite file; see the module docstring.

    ``model_id``/``model_hash`` name the embedding model the caller runs (default: the app's
    ECAPA checkpoint). With ``check_model`` (default) a store made with another model is refused
    on open; without it the store opens for listing, renaming, deleting and exporting, and only
    the calls that use vectors (:meth:`known_speakers`, :meth:`add_embeddings`) refuse. With
    ``create=False`` a missing file is an error instead of a new store. ``timeout`` is how long
    a write waits for another process's write before "database is busy".
    """

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        model_id: str | None = None,
        model_hash: str | None = None,
        *,
        check_model: bool = True,
        create: bool = True,
        timeout: float = 10.0,
    ) -> None:
        default_id, default_hash = (None, None) if model_id and model_hash else default_model()
        self.model_id: str = model_id or default_id
        self.model_hash: str = model_hash or default_hash
        self.path = Path(path).expanduser() if path is not None else default_profiles_path()
        self._lock = threading.RLock()
        self._timeout = timeout
        self._check_model_on_open = check_model
        self._pending = False  # no file yet: an empty in-memory store until the first write
        if not create and not self.path.exists():
            raise ProfileError(f"{self.path}: no profile store there yet (enroll a speaker first)")
        in_memory = not (self.path.exists() or self.path.is_symlink())
        if in_memory:
            self._check_creatable(self.path)
            self._conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        else:
            self._conn = self._open(timeout)
        try:
            self._prepare()
            if check_model:
                self._check_model()
        except BaseException:
            self._conn.close()
            raise
        self._pending = in_memory  # decided once: another process may create the file meanwhile

    @staticmethod
    def _check_creatable(path: Path) -> None:
        """A one-line error now (not after the work) when the store could never be created."""
        parent = path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise ProfileError(f"{path}: cannot create the profile store ({parent} is not a folder)")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ProfileError(f"{path}: cannot create the profile store ({parent} is not writable)")

    def _materialise(self) -> None:
        """The first write to a store that was not there: create the file now (an enrollment or
        import that fails or is refused never leaves an empty store behind)."""
        with self._lock:
            if not self._pending:
                return
            self._pending = False
            memory = self._conn
            self._conn = self._open(self._timeout)
            memory.close()
            try:
                self._prepare()
                if self._check_model_on_open:
                    self._check_model()
            except BaseException:
                self._conn.close()
                self._conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
                raise

    # ---- opening ----------------------------------------------------------------------------

    def _open(self, timeout: float) -> sqlite3.Connection:
        path = self.path
        if path.is_dir():
            raise ProfileError(f"{path}: is a folder, not a profile store")
        if path.exists():
            try:
                with open(path, "rb") as fh:
                    head = fh.read(len(SQLITE_MAGIC))
            except OSError as exc:
                raise ProfileError(f"{path}: cannot read the profile store ({exc.strerror})") from None
            if head and head != SQLITE_MAGIC:
                raise ProfileError(f"{path}: not a stream-spk profile store (not an SQLite database); "
                                   "left untouched")
        else:
            self._create_file(path)
        try:
            conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error as exc:
            raise ProfileError(f"{path}: cannot open the profile store ({_first_line(exc)})") from None
        return conn

    @staticmethod
    def _create_file(path: Path) -> None:
        """Create the parent folders (0700) and an empty db file (0600) before SQLite opens it."""
        missing = []
        parent = path.parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        try:
            for folder in reversed(missing):
                os.mkdir(folder, 0o700)
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            os.close(fd)
        except FileExistsError:
            pass  # another process created it first; it made it 0600 too
        except OSError as exc:
            raise ProfileError(f"{path}: cannot create the profile store ({exc.strerror})") from None

    def _prepare(self) -> None:
        """Check what the file holds; create, migrate or refuse it; then switch on WAL."""
        with self._sql():
            conn = self._conn
            # Read-only inspection first: a foreign database must not be modified. One read
            # transaction, so that another process initialising the file between the two reads
            # cannot show us its tables with the old version number.
            conn.execute("BEGIN")
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            finally:
                conn.execute("COMMIT")
            if tables and not _OUR_TABLES <= tables:
                raise ProfileError(f"{self.path}: an SQLite database but not a stream-spk profile store; "
                                   "left untouched")
            if version > SCHEMA_VERSION:
                raise ProfileError(f"{self.path}: profile store schema v{version} is newer than this "
                                   f"stream-spk understands (v{SCHEMA_VERSION}); upgrade stream-spk")
            if tables and version not in MIGRATIONS and version != SCHEMA_VERSION:
                raise ProfileError(f"{self.path}: profile store schema v{version} is unknown; left untouched")
            conn.execute("PRAGMA foreign_keys=ON")
            self._switch_to_wal()
            conn.execute("PRAGMA synchronous=NORMAL")
        if not tables:
            self._initialise()
        elif version < SCHEMA_VERSION:
            self._migrate()

    def _switch_to_wal(self) -> None:
        """Turn on WAL, retrying while another process holds the file.

        Changing the journal mode needs an exclusive lock, and SQLite answers "database is
        locked" at once there instead of waiting through the busy timeout; two processes
        opening a new store together hit this (found by CI), so we wait here ourselves.
        """
        conn = self._conn
        deadline = time.monotonic() + self._timeout
        pause = 0.005
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL").fetchone()  # a no-op when WAL is on already
                return
            except sqlite3.OperationalError as exc:
                text = _first_line(exc)
                if ("locked" not in text and "busy" not in text) or time.monotonic() > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.1)

    def _initialise(self) -> None:
        with self._write() as conn:
            if conn.execute("SELECT count(*) FROM sqlite_master WHERE name='meta'").fetchone()[0]:
                return  # another process initialised it while we waited for the lock
            for statement in _SCHEMA_V2.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                             [("schema_version", str(SCHEMA_VERSION)), ("model_id", self.model_id),
                              ("model_hash", self.model_hash)])
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _migrate(self) -> None:
        with self._write() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            while version < SCHEMA_VERSION:
                MIGRATIONS[version](conn)
                version += 1
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                         (str(version),))
            conn.execute(f"PRAGMA user_version={version}")

    def _meta(self) -> dict[str, str]:
        with self._sql():
            return dict(self._conn.execute("SELECT key, value FROM meta").fetchall())

    @property
    def store_model(self) -> tuple[str, str]:
        """(model_id, model_hash) the vectors in this store were made with."""
        meta = self._meta()
        return meta.get("model_id", "?"), meta.get("model_hash", "?")

    def _check_model(self) -> None:
        """Refuse a store made by another model; an empty one is adopted by the running model."""
        store_id, store_hash = self.store_model
        if store_hash == self.model_hash:
            return
        with self._sql():
            empty = self._conn.execute("SELECT count(*) FROM speakers").fetchone()[0] == 0
        if empty:
            with self._write() as conn:  # re-checked inside the write: a speaker may just have come
                if conn.execute("SELECT count(*) FROM speakers").fetchone()[0] == 0:
                    conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                                     [("model_id", self.model_id), ("model_hash", self.model_hash)])
                    return
        raise ProfileError(f"profiles in {self.path} were made with model {store_id} ({store_hash[:12]}), "
                           f"not the running {self.model_id} ({self.model_hash[:12]}); "
                           "re-enroll or use --profiles")

    # ---- transactions -----------------------------------------------------------------------

    @contextmanager
    def _sql(self) -> Iterator[None]:
        """Turn SQLite failures into one-line :class:`ProfileError` naming the file."""
        if self._pending and self.path.exists():  # another connection created the store meanwhile
            self._materialise()
        with self._lock:
            try:
                yield
            except sqlite3.OperationalError as exc:
                text = _first_line(exc)
                if "locked" in text or "busy" in text:
                    raise ProfileError(f"{self.path}: database is busy (another stream-spk is writing "
                                       "to it); try again") from None
                raise ProfileError(f"{self.path}: profile store error ({text})") from None
            except sqlite3.DatabaseError as exc:
                raise ProfileError(f"{self.path}: not a usable profile store ({_first_line(exc)}); "
                                   "left untouched") from None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed whole, or rolled back whole."""
        if self._pending:
            self._materialise()
        with self._sql():
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: one consistent snapshot for several statements."""
        with self._sql():
            conn = self._conn
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    # ---- queries ----------------------------------------------------------------------------

    @staticmethod
    def _find(conn: sqlite3.Connection, name: str) -> tuple[int, str] | None:
        """(id, stored name) of the speaker ``name`` denotes (:func:`name_key`), or None."""
        key = name_key(name)
        rows = [r for r in conn.execute("SELECT id, name FROM speakers ORDER BY id") if name_key(r[1]) == key]
        if not rows:
            return None
        exact = [r for r in rows if r[1] == name]  # an older store may hold two spellings
        return tuple(exact[0] if exact else rows[0])  # type: ignore[return-value]

    def _speaker_id(self, conn: sqlite3.Connection, name: str) -> int:
        row = self._find(conn, name)
        if row is None:
            raise ProfileError(f"no enrolled speaker named {name!r}")
        return row[0]

    def _vector(self, blob: bytes) -> np.ndarray:
        if len(blob) != EMBED_DIM * 4:
            raise ProfileError(f"{self.path}: a stored vector has {len(blob)} bytes, not "
                               f"{EMBED_DIM * 4}; the store is damaged")
        return np.frombuffer(blob, dtype="<f4").astype(np.float32)

    def list(self) -> list[SpeakerRecord]:
        """Every enrolled speaker, by name."""
        with self._sql():
            rows = self._conn.execute(
                "SELECT name, created, updated, n_embeddings, speech_seconds, model_id, model_hash "
                "FROM speakers ORDER BY name").fetchall()
        return [SpeakerRecord(r[0], r[1], r[2], int(r[3]), float(r[4]), r[5], r[6]) for r in rows]

    def get(self, name: str) -> SpeakerRecord:
        """The record of one speaker (names match as :func:`name_key` says)."""
        name = validate_name(name, lookup=True)
        with self._read() as conn:
            sid = self._speaker_id(conn, name)
            r = conn.execute(
                "SELECT name, created, updated, n_embeddings, speech_seconds, model_id, model_hash "
                "FROM speakers WHERE id = ?", (sid,)).fetchone()
        return SpeakerRecord(r[0], r[1], r[2], int(r[3]), float(r[4]), r[5], r[6])

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str) or not name.strip():
            return False
        with self._sql():
            return self._find(self._conn, unicodedata.normalize("NFC", name.strip())) is not None

    def known_speakers(self) -> list[KnownSpeaker]:
        """Every enrolled speaker with its centroid, for the clusterer (refuses another model's store)."""
        self._check_model()
        with self._sql():
            rows = self._conn.execute(
                "SELECT name, centroid, n_embeddings, speech_seconds, model_hash FROM speakers "
                "ORDER BY name").fetchall()
        out = []
        for name, blob, n, seconds, model_hash in rows:
            if model_hash != self.model_hash:
                raise ProfileError(f"speaker {name!r} in {self.path} was enrolled with another model "
                                   f"({model_hash[:12]}); re-enroll or delete them")
            out.append(KnownSpeaker(name, self._vector(blob), int(n), float(seconds)))
        return out

    def embeddings(self, name: str) -> tuple[np.ndarray, list[str], list[float]]:
        """All stored vectors [N, 192] of one speaker with their sources and durations."""
        name = validate_name(name, lookup=True)
        with self._read() as conn:
            sid = self._speaker_id(conn, name)
            rows = conn.execute("SELECT vector, source, duration FROM embeddings WHERE speaker_id = ? "
                                "ORDER BY id", (sid,)).fetchall()
        if not rows:
            return np.zeros((0, EMBED_DIM), np.float32), [], []
        vectors = np.stack([self._vector(r[0]) for r in rows])
        return vectors, [r[1] for r in rows], [float(r[2]) for r in rows]

    # ---- writes -----------------------------------------------------------------------------

    def add_embeddings(
        self,
        name: str,
        vectors: np.ndarray,
        sources: Sequence[str],
        durations: Sequence[float],
        speech_seconds: float | None = None,
    ) -> KnownSpeaker:
        """Create speaker ``name`` or add material to it; return it with its new centroid.

        ``vectors`` [N, 192] are stored L2-normalised; the centroid is the normalised mean of all
        the speaker's stored vectors, recomputed in the same transaction. ``speech_seconds`` is
        the speech the vectors cover (default: the sum of ``durations``; pass the real coverage
        when windows overlap).
        """
        name = validate_name(name)
        vectors = self._checked_vectors(vectors, sources, durations)
        seconds = float(np.sum(durations)) if speech_seconds is None else float(speech_seconds)
        self._check_model()
        with self._write() as conn:
            return self._insert(conn, name, vectors, sources, durations, seconds)

    def _checked_vectors(self, vectors: np.ndarray, sources: Sequence[str],
                         durations: Sequence[float]) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != EMBED_DIM or vectors.shape[0] == 0:
            raise ValueError(f"vectors must have shape [N >= 1, {EMBED_DIM}], not {list(vectors.shape)}")
        if len(sources) != len(vectors) or len(durations) != len(vectors):
            raise ValueError(f"{len(vectors)} vectors but {len(sources)} sources and "
                             f"{len(durations)} durations")
        norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
        if not np.isfinite(vectors).all() or (norms < 1e-6).any():
            raise ValueError("vectors must be finite and non-zero")
        if not all(np.isfinite(d) and d >= 0 for d in durations):
            raise ValueError("durations must be finite and >= 0")
        return _normalise_rows(vectors)

    def _insert(self, conn: sqlite3.Connection, name: str, vectors: np.ndarray, sources: Sequence[str],
                durations: Sequence[float], seconds: float, created: str | None = None) -> KnownSpeaker:
        now = _now()
        row = self._find(conn, name)
        if row is None:
            cur = conn.execute(
                "INSERT INTO speakers (name, created, updated, model_id, model_hash, centroid, "
                "n_embeddings, speech_seconds) VALUES (?, ?, ?, ?, ?, ?, 0, 0)",
                (name, created or now, now, self.model_id, self.model_hash, _blob(np.zeros(EMBED_DIM))))
            sid = cur.lastrowid
        else:
            sid = row[0]
        conn.executemany(
            "INSERT INTO embeddings (speaker_id, vector, source, duration, created) VALUES (?, ?, ?, ?, ?)",
            [(sid, _blob(v), str(s), float(d), now)
             for v, s, d in zip(vectors, sources, durations, strict=True)])
        blobs = conn.execute("SELECT vector FROM embeddings WHERE speaker_id = ?", (sid,)).fetchall()
        stored = np.stack([self._vector(b[0]) for b in blobs])
        mean = stored.mean(axis=0, dtype=np.float64)
        centroid = (mean / np.linalg.norm(mean)).astype(np.float32)
        conn.execute("UPDATE speakers SET centroid = ?, n_embeddings = ?, "
                     "speech_seconds = speech_seconds + ?, updated = ? WHERE id = ?",
                     (_blob(centroid), len(stored), seconds, now, sid))
        stored_name, total = conn.execute("SELECT name, speech_seconds FROM speakers WHERE id = ?",
                                          (sid,)).fetchone()
        return KnownSpeaker(stored_name, centroid, len(stored), float(total))

    def rename(self, old: str, new: str) -> None:
        """Rename a speaker (a change of case only is allowed); the new name must be free."""
        old, new = validate_name(old, lookup=True), validate_name(new)
        with self._write() as conn:
            sid = self._speaker_id(conn, old)
            clash = self._find(conn, new)
            if clash is not None and clash[0] != sid:
                raise ProfileError(f"a speaker named {clash[1]!r} is already enrolled")
            conn.execute("UPDATE speakers SET name = ?, updated = ? WHERE id = ?", (new, _now(), sid))

    def delete(self, name: str) -> None:
        """Delete a speaker and all its embeddings."""
        name = validate_name(name, lookup=True)
        with self._write() as conn:
            sid = self._speaker_id(conn, name)
            conn.execute("DELETE FROM speakers WHERE id = ?", (sid,))

    # ---- portable JSON ----------------------------------------------------------------------

    def export_json(self, path: str | os.PathLike, names: Sequence[str] | None = None) -> int:
        """Write speakers (all, or ``names``) with their embeddings to a JSON file; no audio.

        The file is written owner-only (0600) and atomically. Returns the number of speakers.
        """
        path = Path(path)
        wanted = None if names is None else [validate_name(n, lookup=True) for n in names]
        store_id, store_hash = self.store_model
        speakers = []
        with self._read() as conn:
            ids = None if wanted is None else {self._speaker_id(conn, n) for n in wanted}
            rows = conn.execute("SELECT id, name, created, updated, speech_seconds FROM speakers "
                                "ORDER BY name").fetchall()
            for sid, name, created, updated, seconds in rows:
                if ids is not None and sid not in ids:
                    continue
                emb = conn.execute("SELECT vector, source, duration FROM embeddings WHERE speaker_id = ? "
                                   "ORDER BY id", (sid,)).fetchall()
                speakers.append({
                    "name": name, "created": created, "updated": updated, "speech_seconds": seconds,
                    "embeddings": [self._vector(e[0]).tolist() for e in emb],
                    "sources": [e[1] for e in emb], "durations": [e[2] for e in emb],
                })
        doc = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "model_id": store_id,
               "model_hash": store_hash, "exported": _now(), "speakers": speakers}
        if not path.parent.is_dir():
            raise ProfileError(f"{path}: output folder {path.parent} does not exist")
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(doc, fh)
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise ProfileError(f"{path}: cannot write ({exc.strerror})") from None
        return len(speakers)

    def import_json(self, path: str | os.PathLike, replace: bool = False) -> list[str]:
        """Add the speakers of an exported JSON file; return their names.

        Refuses a file made with another model, and names already enrolled unless ``replace``
        (which replaces those speakers' material with the file's). All or nothing.
        """
        path = Path(path)
        entries = self._read_export(path)
        self._check_model()
        with self._write() as conn:
            clashes = [e["name"] for e in entries if self._find(conn, e["name"]) is not None]
            if clashes and not replace:
                raise ProfileError(f"{path}: already enrolled: {', '.join(clashes)} (use --replace to "
                                   "overwrite them)")
            for e in entries:
                old = self._find(conn, e["name"])
                if old is not None:
                    conn.execute("DELETE FROM speakers WHERE id = ?", (old[0],))
                self._insert(conn, e["name"], e["vectors"], e["sources"], e["durations"],
                             e["speech_seconds"], created=e["created"])
        return [e["name"] for e in entries]

    def _read_export(self, path: Path) -> list[dict]:
        """Parse and validate an export file; every problem is a one-line error naming it."""
        try:
            with open(path, encoding="utf-8") as fh:
                doc = json.load(fh)
        except FileNotFoundError:
            raise ProfileError(f"{path}: no such file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProfileError(f"{path}: not a stream-spk profile export ({_first_line(exc)})") from None
        if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
            raise ProfileError(f"{path}: not a stream-spk profile export")
        if doc.get("version") != EXPORT_VERSION:
            raise ProfileError(f"{path}: profile export version {doc.get('version')!r} is not supported "
                               f"(this stream-spk reads version {EXPORT_VERSION})")
        if doc.get("model_hash") != self.model_hash:
            raise ProfileError(f"{path}: profiles were made with model {doc.get('model_id')} "
                               f"({str(doc.get('model_hash'))[:12]}), not the running {self.model_id} "
                               f"({self.model_hash[:12]}); re-enroll instead")
        entries, seen = [], set()
        speakers = doc.get("speakers")
        if not isinstance(speakers, list):
            raise ProfileError(f"{path}: 'speakers' must be a list")
        for i, sp in enumerate(speakers):
            try:
                name = validate_name(sp["name"])
                vectors = np.asarray(sp["embeddings"], dtype=np.float64)
                norms = np.linalg.norm(vectors, axis=1) if vectors.ndim == 2 else np.zeros(0)
                if vectors.ndim == 2 and not (np.isfinite(norms) & (norms <= MAX_IMPORT_NORM)).all():
                    raise ValueError("embeddings must be finite vectors of moderate length (exported "
                                     "ones have length 1)")
                sources = [str(s) for s in sp["sources"]]
                durations = [float(d) for d in sp["durations"]]
                vectors = self._checked_vectors(vectors, sources, durations)
                seconds = float(sp.get("speech_seconds", sum(durations)))
                if not (math.isfinite(seconds) and 0 <= seconds <= MAX_SPEECH_SECONDS):
                    raise ValueError(f"speech_seconds {seconds!r} must be between 0 and {MAX_SPEECH_SECONDS:g}")
                created = _checked_time(sp.get("created"))
            except (KeyError, TypeError, ValueError, ProfileError) as exc:
                raise ProfileError(f"{path}: speaker {i + 1} is malformed ({_first_line(exc)})") from None
            if name_key(name) in seen:
                raise ProfileError(f"{path}: speaker {name!r} appears twice")
            seen.add(name_key(name))
            entries.append({"name": name, "vectors": vectors, "sources": sources, "durations": durations,
                            "speech_seconds": seconds, "created": created})
        return entries

    # ---- lifetime ---------------------------------------------------------------------------

    def integrity_ok(self) -> bool:
        """SQLite's own ``PRAGMA integrity_check`` says the file is sound."""
        with self._sql():
            return self._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> ProfileStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
