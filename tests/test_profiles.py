"""The speaker-profile store: CRUD, names, permissions, models, foreign files, JSON, migration,
concurrent writers and a writer killed mid-transaction."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import sqlite3
import stat
import threading
import time
from dataclasses import FrozenInstanceError
from pathlib import Path

import numpy as np
import pytest

from stream_spk.errors import ProfileError
from stream_spk.profiles import (
    KnownSpeaker,
    ProfileStore,
    SpeakerRecord,
    default_profiles_path,
    validate_name,
)

MODEL = ("test/model", "a" * 64)
OTHER = ("test/other", "b" * 64)


@pytest.fixture(autouse=True)
def _no_user_store(tmp_path, monkeypatch):
    """Whatever a test forgets to pass, it never reaches the user's real profile store."""
    monkeypatch.setenv("STREAM_SPK_PROFILES", str(tmp_path / "env-default.sqlite3"))


def vecs(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, 192)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def open_store(path: Path, model=MODEL, **kw) -> ProfileStore:
    return ProfileStore(path, model_id=model[0], model_hash=model[1], **kw)


def add(store: ProfileStore, name: str, n: int = 3, seed: int = 0) -> KnownSpeaker:
    return store.add_embeddings(name, vecs(n, seed), [f"{name}.wav"] * n, [1.5] * n)


def _created(path: Path, model=MODEL) -> None:
    """An initialised store file without speakers (a store is only created by a first write)."""
    with open_store(path, model) as store:
        add(store, "Temporary")
        store.delete("Temporary")
    assert path.is_file()


def expected_centroid(v: np.ndarray) -> np.ndarray:
    m = (v / np.linalg.norm(v, axis=1, keepdims=True)).mean(0)
    return m / np.linalg.norm(m)


def test_default_path_follows_env_then_user_data_dir(monkeypatch, tmp_path):
    assert default_profiles_path() == tmp_path / "env-default.sqlite3"
    monkeypatch.delenv("STREAM_SPK_PROFILES")
    path = default_profiles_path()  # only computed, never opened here
    assert path.name == "profiles.sqlite3" and path.parent.name == "stream-spk"


def test_store_without_path_uses_env(tmp_path):
    with ProfileStore(model_id=MODEL[0], model_hash=MODEL[1]) as store:
        assert store.path == tmp_path / "env-default.sqlite3"
        add(store, "Anna")
    assert (tmp_path / "env-default.sqlite3").is_file()


def test_a_new_store_is_created_only_when_something_is_saved(tmp_path):
    path = tmp_path / "new" / "p.sqlite3"
    with open_store(path) as store:
        assert store.list() == [] and store.known_speakers() == [] and "Anna" not in store
        with pytest.raises(ProfileError):
            store.get("Anna")
        with pytest.raises(ValueError):
            store.add_embeddings("Anna", np.full((1, 192), np.nan, np.float32), ["a.wav"], [1.0])
        with pytest.raises(ProfileError):
            store.import_json(tmp_path / "missing.json")
    assert not path.exists() and not path.parent.exists()
    with open_store(path) as store:
        add(store, "Anna")
        assert [r.name for r in store.list()] == ["Anna"]
    with open_store(path) as store:
        assert [r.name for r in store.list()] == ["Anna"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ProfileError, match="not a folder"):
        open_store(tmp_path / "file" / "p.sqlite3")


@pytest.mark.parametrize("first, second", [("Émile", "émile"), ("E\u0301mile", "Émile"), ("Straße", "STRASSE"),
                                           ("ﬁona", "Fiona"), ("ANNA", "anna")])
def test_names_equal_under_case_folding_and_normalisation_are_one_speaker(tmp_path, first, second):
    path = tmp_path / "p.sqlite3"
    with open_store(path) as store:
        add(store, first, n=2, seed=1)
        sp = add(store, second, n=3, seed=2)  # adds material to the same speaker
        assert len(store.list()) == 1 and sp.n_embeddings == 5
        assert second in store and store.get(second).name == store.list()[0].name
        add(store, "Other", seed=3)
        with pytest.raises(ProfileError, match="already enrolled"):
            store.rename("Other", second)
        store.export_json(tmp_path / "x.json")
    with open_store(tmp_path / "q.sqlite3") as other:  # the export can be imported again
        assert len(other.import_json(tmp_path / "x.json")) == 2
        with pytest.raises(ProfileError, match="already enrolled"):
            other.import_json(tmp_path / "x.json")
        other.import_json(tmp_path / "x.json", replace=True)
        assert sorted(r.n_embeddings for r in other.list()) == [3, 5]
    doc = json.loads((tmp_path / "x.json").read_text())
    doc["speakers"].append(dict(doc["speakers"][0], name=second.upper()))
    (tmp_path / "twice.json").write_text(json.dumps(doc))
    with open_store(tmp_path / "r.sqlite3") as other:
        with pytest.raises(ProfileError, match="appears twice"):
            other.import_json(tmp_path / "twice.json")


def test_names_are_stored_in_nfc(tmp_path):
    with open_store(tmp_path / "p.sqlite3") as store:
        add(store, "E\u0301mile")
        assert store.list()[0].name == "Émile"


def test_add_list_get_and_centroid(tmp_path):
    with open_store(tmp_path / "p.sqlite3") as store:
        assert store.list() == [] and store.known_speakers() == []
        first = vecs(3, 1)
        sp = store.add_embeddings("  Anna ", first, ["a.wav"] * 3, [1.5, 1.5, 0.8])
        assert sp.name == "Anna" and sp.n_embeddings == 3
        assert sp.speech_seconds == pytest.approx(3.8)
        assert sp.centroid.dtype == np.float32 and sp.centroid.shape == (192,)
        np.testing.assert_allclose(sp.centroid, expected_centroid(first), atol=1e-6)
        # Adding material: centroid over all stored vectors, seconds as given (overlapping windows).
        more = vecs(2, 2) * 3.0  # un-normalised input is normalised before storing
        sp2 = store.add_embeddings("anna", more, ["b.wav"] * 2, [1.5, 1.5], speech_seconds=2.25)
        assert sp2.name == "Anna" and sp2.n_embeddings == 5
        assert sp2.speech_seconds == pytest.approx(6.05)
        np.testing.assert_allclose(sp2.centroid, expected_centroid(np.concatenate([first, more])), atol=1e-6)
        add(store, "Bob", seed=3)
        records = store.list()
        assert [r.name for r in records] == ["Anna", "Bob"]
        assert isinstance(records[0], SpeakerRecord) and records[0].n_embeddings == 5
        assert records[0].model_id == MODEL[0] and records[0].model_hash == MODEL[1]
        assert store.get("ANNA").name == "Anna" and "anna" in store and "Carl" not in store
        known = store.known_speakers()
        assert [k.name for k in known] == ["Anna", "Bob"]
        np.testing.assert_allclose(np.linalg.norm(known[0].centroid), 1.0, atol=1e-6)
        v, sources, durations = store.embeddings("Anna")
        assert v.shape == (5, 192) and sources == ["a.wav"] * 3 + ["b.wav"] * 2
        assert durations == [1.5, 1.5, 0.8, 1.5, 1.5]
    with pytest.raises(FrozenInstanceError):
        known[0].name = "x"


def test_bad_vectors_are_programming_errors(tmp_path):
    with open_store(tmp_path / "p.sqlite3") as store:
        with pytest.raises(ValueError):
            store.add_embeddings("Anna", vecs(2)[:, :100], ["a"] * 2, [1.0] * 2)
        with pytest.raises(ValueError):
            store.add_embeddings("Anna", vecs(2), ["a"], [1.0] * 2)
        bad = vecs(2)
        bad[1, 0] = np.nan
        with pytest.raises(ValueError):
            store.add_embeddings("Anna", bad, ["a"] * 2, [1.0] * 2)
        assert store.list() == []


def test_rename_delete_and_unknown_names(tmp_path):
    path = tmp_path / "p.sqlite3"
    with open_store(path) as store:
        add(store, "Anna")
        add(store, "Bob", seed=1)
        store.rename("Anna", "Beatrix")
        assert [r.name for r in store.list()] == ["Beatrix", "Bob"]
        store.rename("beatrix", "BEATRIX")  # a change of case only
        with pytest.raises(ProfileError, match="already enrolled"):
            store.rename("Bob", "beatrix")
        for call in (lambda: store.get("Anna"), lambda: store.delete("Anna"),
                     lambda: store.rename("Anna", "Zoe"), lambda: store.embeddings("Anna")):
            with pytest.raises(ProfileError, match="no enrolled speaker named 'Anna'"):
                call()
        store.delete("bob")
        assert [r.name for r in store.list()] == ["BEATRIX"]
    with sqlite3.connect(path) as conn:  # the embeddings went with the speaker (cascade)
        assert conn.execute("SELECT count(*) FROM embeddings").fetchone()[0] == 3


@pytest.mark.parametrize("bad", ["", "   ", "x" * 65, "Ann\na", "esc\x1bape", "tab\tname", "speaker 2",
                                 "Speaker 12", None, "An\u200bna", "Anna\u202e", "\u2066Bob", "Li\u2028ne",
                                 "Pa\u2029ra", "Soft\u00adhyphen", "\u200d", "Zoe\ufeff"])
def test_bad_names_are_refused(tmp_path, bad):
    with pytest.raises(ProfileError) as err:
        validate_name(bad)
    assert "\n" not in str(err.value)
    with open_store(tmp_path / "p.sqlite3") as store:
        with pytest.raises(ProfileError):
            add(store, bad)
        assert store.list() == []


def test_good_names():
    assert validate_name("  Anna Lena ") == "Anna Lena"
    assert validate_name("x" * 64) == "x" * 64
    assert validate_name("Zoë O'Brien-Łukasz 李") == "Zoë O'Brien-Łukasz 李"
    assert validate_name("speaker two") == "speaker two"


def test_file_is_owner_only_and_new_folders_0700(tmp_path):
    path = tmp_path / "a" / "b" / "p.sqlite3"
    with open_store(path) as store:
        add(store, "Anna")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        for side in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if side.exists():
                assert stat.S_IMODE(side.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o700
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_other_model_refused(tmp_path):
    path = tmp_path / "p.sqlite3"
    with open_store(path) as store:
        add(store, "Anna")
    with pytest.raises(ProfileError) as err:
        open_store(path, OTHER)
    msg = str(err.value)
    assert str(path) in msg and "re-enroll or use --profiles" in msg and "test/model" in msg
    assert "\n" not in msg
    # Opened without the check, it can be listed, renamed, exported; never matched or added to.
    with open_store(path, OTHER, check_model=False) as store:
        assert [r.name for r in store.list()] == ["Anna"]
        with pytest.raises(ProfileError, match="re-enroll"):
            store.known_speakers()
        with pytest.raises(ProfileError, match="re-enroll"):
            add(store, "Bob")
        assert store.store_model == MODEL


def test_empty_store_is_adopted_by_another_model(tmp_path):
    path = tmp_path / "p.sqlite3"
    _created(path)
    with open_store(path, OTHER) as store:
        add(store, "Anna")
        assert store.store_model == OTHER


def test_create_false_does_not_make_a_file(tmp_path):
    with pytest.raises(ProfileError, match="no profile store"):
        open_store(tmp_path / "missing.sqlite3", create=False)
    assert not (tmp_path / "missing.sqlite3").exists()


def _snapshot(path: Path) -> tuple[bytes, int, list[str]]:
    return path.read_bytes(), path.stat().st_mtime_ns, sorted(os.listdir(path.parent))


def _foreign_sqlite(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE recipes (id INTEGER PRIMARY KEY, title TEXT)")
        conn.execute("INSERT INTO recipes (title) VALUES ('soup')")
    conn.close()


def _corrupt_sqlite(path: Path) -> None:
    with open_store(path) as store:
        add(store, "Anna")
    data = bytearray(path.read_bytes())
    data[100:] = os.urandom(len(data) - 100)  # keep the header, destroy the pages
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("make", [
    lambda p: p.write_text("these are my notes, not a database\n" * 50),
    lambda p: p.write_bytes(os.urandom(4096)),
    _foreign_sqlite,
    _corrupt_sqlite,
], ids=["text", "random", "foreign-sqlite", "corrupt-sqlite"])
def test_foreign_or_corrupt_file_refused_and_untouched(tmp_path, make):
    path = tmp_path / "p.sqlite3"
    make(path)
    for side in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        side.unlink(missing_ok=True)
    before = _snapshot(path)
    time.sleep(0.01)
    with pytest.raises(ProfileError) as err:
        store = open_store(path)
        store.list()  # a corrupt page may only show on reading
        store.known_speakers()
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert _snapshot(path) == before


def test_folder_refused(tmp_path):
    with pytest.raises(ProfileError, match="folder"):
        open_store(tmp_path)


def test_export_import_round_trip(tmp_path):
    src, dst, out = tmp_path / "a.sqlite3", tmp_path / "b.sqlite3", tmp_path / "export.json"
    with open_store(src) as store:
        a = add(store, "Anna", 4, seed=1)
        add(store, "Bob", 2, seed=2)
        assert store.export_json(out) == 2
        assert store.export_json(tmp_path / "one.json", names=["anna"]) == 1
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    doc = json.loads(out.read_text())
    assert doc["format"] == "stream-spk-profiles" and doc["version"] == 1
    assert doc["model_hash"] == MODEL[1] and [s["name"] for s in doc["speakers"]] == ["Anna", "Bob"]
    assert len(doc["speakers"][0]["embeddings"][0]) == 192 and doc["speakers"][0]["sources"] == ["Anna.wav"] * 4
    assert "audio" not in json.dumps(doc).lower()
    with open_store(dst) as store:
        assert store.import_json(out) == ["Anna", "Bob"]
        v, sources, durations = store.embeddings("Anna")
        np.testing.assert_array_equal(v, vecs(4, seed=1))  # float32 survives JSON exactly
        assert sources == ["Anna.wav"] * 4 and durations == [1.5] * 4
        np.testing.assert_array_equal(store.known_speakers()[0].centroid, a.centroid)
        with pytest.raises(ProfileError, match="already enrolled: Anna, Bob"):
            store.import_json(out)
        add(store, "Anna", 5, seed=9)  # more material, then replaced by the file's
        assert store.import_json(out, replace=True) == ["Anna", "Bob"]
        assert store.get("Anna").n_embeddings == 4
        assert [r.name for r in store.list()] == ["Anna", "Bob"]


def test_import_refuses_other_model_and_bad_files(tmp_path):
    out = tmp_path / "export.json"
    with open_store(tmp_path / "a.sqlite3", OTHER) as store:
        add(store, "Anna")
        store.export_json(out)
    with open_store(tmp_path / "b.sqlite3") as store:
        with pytest.raises(ProfileError, match="made with model test/other"):
            store.import_json(out)
        bad = tmp_path / "bad.json"
        for text in ("{not json", json.dumps({"format": "other"}), json.dumps([1, 2])):
            bad.write_text(text)
            with pytest.raises(ProfileError, match="not a stream-spk profile export"):
                store.import_json(bad)
        doc = json.loads(out.read_text())
        doc["model_hash"] = MODEL[1]
        doc["speakers"][0]["embeddings"][0] = doc["speakers"][0]["embeddings"][0][:10]
        bad.write_text(json.dumps(doc))
        with pytest.raises(ProfileError, match="speaker 1 is malformed"):
            store.import_json(bad)
        with pytest.raises(ProfileError, match="no such file"):
            store.import_json(tmp_path / "missing.json")
        assert store.list() == []


def _bad_export(tmp_path, change) -> Path:
    with open_store(tmp_path / "src.sqlite3") as store:
        if "Anna" not in store:
            add(store, "Anna")
        store.export_json(tmp_path / "good.json")
    doc = json.loads((tmp_path / "good.json").read_text())
    change(doc["speakers"][0])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    return bad


@pytest.mark.parametrize("change, why", [
    (lambda sp: sp.update(speech_seconds=-5.0), "speech_seconds"),
    (lambda sp: sp.update(speech_seconds=1e300), "speech_seconds"),
    (lambda sp: sp["embeddings"][0].__setitem__(0, 3e38), "moderate length"),  # float32 norm overflows
    (lambda sp: sp["embeddings"][0].__setitem__(0, 1e39), "moderate length"),  # inf as float32
    (lambda sp: sp["embeddings"][1].__setitem__(3, float("nan")), "finite"),
    (lambda sp: sp.update(created="x" * 100_000), "'created'"),
    (lambda sp: sp.update(created="yesterday"), "'created'"),
    (lambda sp: sp.update(created=12), "'created'"),
    (lambda sp: sp.update(name="An\u200bna"), "invisible"),
], ids=["negative-seconds", "huge-seconds", "huge-vector", "overflowing-vector", "nan", "created-100kB",
        "created-text", "created-number", "zero-width-name"])
def test_import_refuses_values_that_would_damage_the_store(tmp_path, change, why):
    bad = _bad_export(tmp_path, change)
    with open_store(tmp_path / "b.sqlite3") as store:
        with pytest.raises(ProfileError, match="speaker 1 is malformed") as err:
            store.import_json(bad)
        assert why in str(err.value) and "\n" not in str(err.value) and len(str(err.value)) < 400
        assert store.list() == []
    assert not (tmp_path / "b.sqlite3").exists()  # a failed import creates no store


def test_large_but_sane_vectors_give_finite_centroids(tmp_path):
    with open_store(tmp_path / "p.sqlite3") as store:
        sp = store.add_embeddings("Anna", vecs(2) * 1e30, ["a.wav"] * 2, [1.0] * 2)
        assert np.isfinite(sp.centroid).all() and abs(np.linalg.norm(sp.centroid) - 1) < 1e-5


def _make_v1(path: Path) -> np.ndarray:
    """A hand-made v1 store: no speech_seconds and no durations."""
    v = vecs(3, 5)
    conn = sqlite3.connect(path)
    conn.executescript(f"""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE speakers (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE COLLATE NOCASE,
            created TEXT NOT NULL, updated TEXT NOT NULL, model_id TEXT NOT NULL,
            model_hash TEXT NOT NULL, centroid BLOB NOT NULL, n_embeddings INTEGER NOT NULL);
        CREATE TABLE embeddings (id INTEGER PRIMARY KEY,
            speaker_id INTEGER NOT NULL REFERENCES speakers(id) ON DELETE CASCADE,
            vector BLOB NOT NULL, source TEXT NOT NULL, created TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1'), ('model_id', '{MODEL[0]}'),
                                ('model_hash', '{MODEL[1]}');
        PRAGMA user_version = 1;
    """)
    conn.execute("INSERT INTO speakers VALUES (1, 'Anna', '2024-01-01', '2024-01-01', ?, ?, ?, 3)",
                 (*MODEL, expected_centroid(v).astype("<f4").tobytes()))
    conn.executemany("INSERT INTO embeddings (speaker_id, vector, source, created) VALUES (1, ?, 'old', 'x')",
                     [(row.astype("<f4").tobytes(),) for row in v])
    conn.commit()
    conn.close()
    return v


def test_migration_v1_to_v2(tmp_path):
    path = tmp_path / "v1.sqlite3"
    v = _make_v1(path)
    with open_store(path) as store:
        [rec] = store.list()
        assert rec.name == "Anna" and rec.n_embeddings == 3 and rec.speech_seconds == 0.0
        np.testing.assert_allclose(store.known_speakers()[0].centroid, expected_centroid(v), atol=1e-6)
        assert store.embeddings("Anna")[2] == [0.0, 0.0, 0.0]  # unknown durations
        sp = add(store, "Anna", 2, seed=6)
        assert sp.n_embeddings == 5 and sp.speech_seconds == pytest.approx(3.0)
        assert store.integrity_ok()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "2"
        cols = {r[1] for r in conn.execute("PRAGMA table_info(embeddings)")}
        assert "duration" in cols


def test_newer_schema_refused(tmp_path):
    path = tmp_path / "p.sqlite3"
    _created(path)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 7")
    conn.close()
    with pytest.raises(ProfileError, match="newer than this"):
        open_store(path)


def test_opening_waits_while_another_process_holds_a_new_file(tmp_path):
    """Switching a new file to WAL while another connection writes: SQLite says "locked" at once,
    without its busy timeout, so the store must wait by itself (two processes enrolling into a new
    store at once hit this)."""
    path = tmp_path / "p.sqlite3"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE unrelated_scratch (x)")
    other.execute("DROP TABLE unrelated_scratch")  # a real, empty, rollback-journal database
    other.execute("BEGIN IMMEDIATE")  # a writer: the WAL switch gets "locked" without waiting
    releaser = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    releaser.start()
    try:
        with open_store(path, timeout=10) as store:
            assert store.list() == []
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()
    finally:
        releaser.join()
        other.close()


def test_opening_still_fails_cleanly_when_the_file_stays_held(tmp_path):
    path = tmp_path / "p.sqlite3"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("CREATE TABLE unrelated_scratch (x)")
    other.execute("DROP TABLE unrelated_scratch")
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(ProfileError, match="database is busy") as err:
            open_store(path, timeout=0.2)
        assert "\n" not in str(err.value)
    finally:
        other.execute("COMMIT")
        other.close()


def test_busy_store_gives_clear_error(tmp_path):
    path = tmp_path / "p.sqlite3"
    _created(path)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process is in the middle of a write
    try:
        with open_store(path, timeout=0.2) as store:
            assert store.list() == []  # WAL: readers are not blocked
            with pytest.raises(ProfileError, match="database is busy") as err:
                add(store, "Anna")
            assert "\n" not in str(err.value)
    finally:
        other.execute("ROLLBACK")
        other.close()


# ---- several processes -------------------------------------------------------------------------


def _writer(path: str, prefix: str, start, count: int) -> None:
    start.wait(10)
    with ProfileStore(path, model_id=MODEL[0], model_hash=MODEL[1], timeout=30) as store:
        for i in range(count):
            add(store, f"{prefix}{i}", 2, seed=i)
            add(store, "Shared", 1, seed=100 + i)


def test_two_processes_writing_at_once(tmp_path):
    path = tmp_path / "p.sqlite3"
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_writer, args=(str(path), p, start, 25)) for p in ("a", "b")]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with open_store(path) as store:
        names = {r.name for r in store.list()}
        assert names == {f"{p}{i}" for p in "ab" for i in range(25)} | {"Shared"}
        assert store.get("Shared").n_embeddings == 50
        assert store.integrity_ok()


def _opener(folder: str, rounds: int, barrier, results) -> None:
    for r in range(rounds):
        barrier.wait(60)  # all processes open the same new store at the same moment
        try:
            with ProfileStore(f"{folder}/p{r}.sqlite3", model_id=MODEL[0], model_hash=MODEL[1],
                              timeout=30) as store:
                add(store, f"Process {os.getpid()}")  # the first write creates the file
            results.put("ok")
        except ProfileError as exc:
            results.put(str(exc))


def test_processes_opening_a_new_store_together(tmp_path):
    # Before the WAL switch waited, about one round in five failed here with "database is busy".
    ctx = mp.get_context("spawn")
    rounds, barrier, results = 25, ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_opener, args=(str(tmp_path), rounds, barrier, results)) for _ in range(3)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in range(3 * rounds)]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert [o for o in outcomes if o != "ok"] == []
    for r in range(rounds):
        with open_store(tmp_path / f"p{r}.sqlite3") as store:
            assert len(store.list()) == 3


def _killed_writer(path: str, inserted) -> None:
    import stream_spk.profiles as profiles

    original = profiles.ProfileStore._insert

    def insert_then_hang(self, *args, **kwargs):
        result = original(self, *args, **kwargs)  # rows written, transaction not committed
        inserted.set()
        time.sleep(120)
        return result

    profiles.ProfileStore._insert = insert_then_hang
    with ProfileStore(path, model_id=MODEL[0], model_hash=MODEL[1]) as store:
        store.add_embeddings("Half", vecs(2000, 7), ["big"] * 2000, [1.5] * 2000)


def test_kill_9_mid_enrollment_leaves_store_intact(tmp_path):
    path = tmp_path / "p.sqlite3"
    with open_store(path) as store:
        anna = add(store, "Anna", 5, seed=1)
        add(store, "Bob", 3, seed=2)
    ctx = mp.get_context("spawn")
    inserted = ctx.Event()
    child = ctx.Process(target=_killed_writer, args=(str(path), inserted))
    child.start()
    try:
        assert inserted.wait(60), "the child never reached the middle of its transaction"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.join(30)
    assert child.exitcode == -signal.SIGKILL
    with open_store(path, timeout=2) as store:
        assert store.integrity_ok()
        assert [r.name for r in store.list()] == ["Anna", "Bob"]
        assert "Half" not in store
        np.testing.assert_array_equal(store.known_speakers()[0].centroid, anna.centroid)
        assert store.get("Anna").n_embeddings == 5
        add(store, "Carl")  # the dead writer left no lock behind
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM embeddings").fetchone()[0] == 11


def test_a_name_enrolled_before_the_invisible_character_rule_can_still_be_managed(tmp_path):
    path = tmp_path / "p.sqlite3"
    with open_store(path) as store:
        add(store, "Zed")
    with sqlite3.connect(path) as conn:  # as an older stream-spk could have stored it
        conn.execute("UPDATE speakers SET name = 'Ze\u200bd'")
    conn.close()
    with open_store(path) as store:
        assert store.get("Ze\u200bd").n_embeddings == 3
        store.rename("Ze\u200bd", "Zed")
        assert [r.name for r in store.list()] == ["Zed"]
        with pytest.raises(ProfileError, match="invisible"):
            store.rename("Zed", "Ze\u200bd")
