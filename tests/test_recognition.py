"""Known speakers end to end: enroll, recognise by name in the stream and the RTTM, save a session
speaker with ``replay --save-speaker``, refuse another model's store, ``--no-profiles``, a missing
``--profiles`` store; enrolled profiles never drift (and adapt only on confident windows when asked).

Real-model tests use ``tests/data/dev_libri03`` (40 s, 5 LibriSpeech speakers): ``libri_150``
speaks at 0.49-4.33, 10.04-13.88 and 22.32-25.16 s, alone each time.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stream_spk.cli.main import main
from stream_spk.clustering import ClusterConfig, OnlineClusterer
from stream_spk.enrollment import enroll_audio
from stream_spk.pipeline import Pipeline, PipelineConfig
from stream_spk.profiles import KnownSpeaker, ProfileStore
from stream_spk.rttm import read_rttm
from stream_spk.session import open_store
from stream_spk.sinks import read_jsonl
from stream_spk.types import AudioChunk, SpeakerTurn

DATA = Path(__file__).parent / "data"
LIBRI = DATA / "dev_libri03.wav"
SR = 16000
ANON = re.compile(r"speaker \d+")


@pytest.fixture(autouse=True)
def _no_user_store(tmp_path, monkeypatch):
    """Never read or write the user's own store (subprocesses inherit this too)."""
    monkeypatch.setenv("STREAM_SPK_PROFILES", str(tmp_path / "env-default.sqlite3"))


@pytest.fixture(scope="module")
def libri() -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    audio, sr = sf.read(LIBRI, dtype="float32")
    assert sr == SR
    return audio, read_rttm(DATA / "dev_libri03.rttm")["dev_libri03"]


@pytest.fixture(scope="module")
def embedder(checkpoint_path):
    from stream_spk.models.embedder import Embedder

    return Embedder.from_checkpoint(checkpoint_path, device="cpu", precision="auto", quiet=True)


@pytest.fixture
def short_wav(tmp_path, libri) -> Path:
    """The first 14.2 s of dev_libri03: libri_150 (speaker 1), libri_1447, libri_1355, libri_150."""
    path = tmp_path / "short.wav"
    sf.write(path, libri[0][: int(14.2 * SR)], SR)
    return path


def turns_of(ref, who: str) -> list[tuple[float, float]]:
    return [(s, e) for s, e, lab in ref if lab == who]


def cut(audio: np.ndarray, spans) -> list[tuple[str, np.ndarray]]:
    return [(f"{s:.2f}-{e:.2f}", audio[int(s * SR) : int(e * SR)]) for s, e in spans]


def overlap(a: tuple[float, float], spans) -> float:
    return sum(max(0.0, min(a[1], e) - max(a[0], s)) for s, e in spans)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream_spk", *args], capture_output=True, text=True,
                          env=dict(os.environ))


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def foreign_store(path: Path) -> Path:
    """A store whose vectors were made by another embedding model."""
    with ProfileStore(path, model_id="other/model", model_hash="b" * 64) as store:
        vec = np.random.default_rng(0).standard_normal((3, 192)).astype(np.float32)
        store.add_embeddings("Zed", vec, ["x"] * 3, [1.5] * 3)
    return path


class CachedEmbedder:
    """Serves a window embedded before (same samples) from a cache: two passes cost one."""

    def __init__(self, inner) -> None:
        self.inner, self.min_samples, self.cache = inner, inner.min_samples, {}

    def embed(self, wavs):
        keys = [np.asarray(w, np.float32).tobytes() for w in wavs]
        todo = [k for k in dict.fromkeys(keys) if k not in self.cache]
        if todo:
            for k, e in zip(todo, self.inner.embed([np.frombuffer(k, np.float32) for k in todo]), strict=True):
                self.cache[k] = e
        return np.stack([self.cache[k] for k in keys])


def stream(pipe: Pipeline, audio: np.ndarray) -> list[SpeakerTurn]:
    finals: dict[int, SpeakerTurn] = {}
    events = []
    for i in range(0, audio.size, 2 * SR):
        events += pipe.process(AudioChunk(audio[i : i + 2 * SR], i / SR))
    events += pipe.flush()
    for ev in events:
        if isinstance(ev, SpeakerTurn) and ev.status == "final":
            finals[ev.turn_id] = ev
    return sorted(finals.values(), key=lambda t: t.start)


# ---- (a) enroll from part of a meeting, recognise the rest -----------------------------------------

@pytest.mark.real_model
def test_enrolled_speaker_is_named_in_later_turns_and_in_the_rttm(tmp_path, checkpoint_path, libri):
    audio, ref = libri
    anna = turns_of(ref, "libri_150")
    first, later = anna[: (len(anna) + 1) // 2], anna[(len(anna) + 1) // 2 :]
    files = []
    for label, samples in cut(audio, first):
        files.append(str(tmp_path / f"anna_{label}.wav"))
        sf.write(files[-1], samples, SR)
    store = tmp_path / "profiles.sqlite3"
    ck = str(checkpoint_path)
    assert main(["enroll", "Anna Maria", *files, "--profiles", str(store), "--model-file", ck]) == 0
    with open_store(store) as s:
        before = s.known_speakers()
    assert [k.name for k in before] == ["Anna Maria"]

    rttm, jsonl = tmp_path / "out.rttm", tmp_path / "out.jsonl"
    assert main(["replay", str(LIBRI), "--fast", "--quiet", "--profiles", str(store), "--rttm", str(rttm),
                 "--jsonl", str(jsonl), "--model-file", ck]) == 0

    finals: dict[int, SpeakerTurn] = {}
    for ev in read_jsonl(jsonl):
        if isinstance(ev, SpeakerTurn) and ev.status == "final":
            finals[ev.turn_id] = ev
    named = [(t.start, t.end) for t in finals.values() if t.label == "Anna Maria"]
    for t in finals.values():
        if t.label == "Anna Maria":
            assert t.name == "Anna Maria"
        else:  # everyone else stays anonymous
            assert ANON.fullmatch(t.label) and t.name is None, t
    # her later turn (not used to enroll) carries her name
    for turn in later:
        assert overlap(turn, named) >= 0.8 * (turn[1] - turn[0]), (turn, named)
    # and nobody else gets it
    named_time = sum(e - s for s, e in named)
    assert sum(overlap(span, anna) for span in named) >= 0.9 * named_time
    assert len({t.label for t in finals.values()} - {"Anna Maria"}) >= 3

    # RTTM: the name with spaces as "_"; anonymous speakers as speaker_N
    speakers = {line.split()[7] for line in rttm.read_text().splitlines()}
    assert "Anna_Maria" in speakers
    assert all(s == "Anna_Maria" or re.fullmatch(r"speaker_\d+", s) for s in speakers), speakers
    # the session did not move the stored profile
    with open_store(store) as s:
        after = s.known_speakers()
    assert np.array_equal(after[0].centroid, before[0].centroid)
    assert after[0].n_embeddings == before[0].n_embeddings


# ---- profiles never drift ---------------------------------------------------------------------------

def _unit(v) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return (v / np.linalg.norm(v)).astype(np.float32)


def _at_cosine(base: np.ndarray, cos: float, seed: int) -> np.ndarray:
    """A unit vector with cosine ``cos`` to the unit vector ``base``."""
    r = np.random.default_rng(seed).standard_normal(base.size)
    r = _unit(r - (r @ base) * base)
    return _unit(cos * base + np.sqrt(1 - cos**2) * r)


def test_profile_centroid_moves_only_with_adaptation_and_only_on_confident_windows():
    anna = _unit(np.random.default_rng(1).standard_normal(192))
    profile = KnownSpeaker("Anna", anna, 10, 12.0)
    for adapt in (False, True):
        cfg = ClusterConfig(adapt_profiles=adapt)
        c = OnlineClusterer(cfg, [profile])
        mid = (cfg.profile_threshold + cfg.adapt_threshold) / 2  # recognised, not confident
        for k in range(6):
            a = c.observe(_at_cosine(anna, mid, k), 1.5, 1.5 + k)
            assert (a.label, a.updated) == ("Anna", False)
        assert np.allclose(c.get("Anna").centroid, anna, atol=1e-6)
        a = c.observe(_at_cosine(anna, 0.9, 99), 1.5, 10.0)
        assert a.label == "Anna" and a.updated is adapt
        moved = float(c.get("Anna").centroid @ anna)
        if adapt:
            assert 0.9 < moved < 1 - 1e-4
        else:
            assert moved == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("adapt", [False, True])
def test_an_anonymous_speaker_recognised_as_a_profile_does_not_move_it(adapt):
    rng = np.random.default_rng(2)
    anna = _unit(rng.standard_normal(192))
    other = _at_cosine(anna, 0.0, 7)
    c = OnlineClusterer(ClusterConfig(adapt_profiles=adapt), [KnownSpeaker("Anna", anna, 10, 12.0)])
    # windows at cosine 0.35 to her profile (below the 0.4 threshold) that share a common part:
    # each starts or joins an anonymous speaker, whose centroid soon reaches the threshold
    events, first = [], None
    for k in range(8):
        noise = _at_cosine(anna, 0.0, 100 + k)
        noise = _unit(noise - (noise @ other) * other)
        w = _unit(0.35 * anna + 0.6 * other + 0.72 * noise)
        assert float(w @ anna) < c.config.profile_threshold
        a = c.observe(w, 1.5, 1.5 * (k + 1))
        first = first or a.label
        events += a.events
    assert ANON.fullmatch(first)
    recognised = [(ev.old, ev.new) for ev in events if ev.reason == "recognised"]
    assert recognised[0] == (first, "Anna") and all(new == "Anna" for _, new in recognised)
    assert c.resolve(first) == "Anna"
    assert np.allclose(c.get("Anna").centroid, anna, atol=1e-6)


@pytest.mark.real_model
def test_real_session_leaves_profiles_alone_unless_adapting(tmp_path, embedder, libri):
    audio, ref = libri
    anna = turns_of(ref, "libri_150")
    with open_store(tmp_path / "p.sqlite3") as store:
        res = enroll_audio("Anna Maria", cut(audio, anna[:2]), embedder, store)
        assert res.accepted, res
        known = store.known_speakers()
    stored = known[0].centroid.copy()
    part = audio[: int(26 * SR)]  # through her third turn
    cached = CachedEmbedder(embedder)

    pipe = Pipeline(cached, PipelineConfig(), profiles=known)
    turns = stream(pipe, part)
    assert any(t.name == "Anna Maria" for t in turns)
    cluster = pipe.clusterer.get("Anna Maria")
    weight = known[0].n_embeddings  # a profile weighs as much as its enrollment windows
    assert np.allclose(cluster.centroid, stored / np.linalg.norm(stored), atol=1e-6) and cluster.count == weight

    cfg = ClusterConfig(adapt_profiles=True)
    pipe = Pipeline(cached, PipelineConfig(cluster=cfg), profiles=known)
    seen = []
    observe = pipe.clusterer.observe

    def spy(*args, **kwargs):
        a = observe(*args, **kwargs)
        seen.append(a)
        return a

    pipe.clusterer.observe = spy
    stream(pipe, part)
    hers = [a for a in seen if a.label == "Anna Maria"]
    assert hers
    assert all(a.score >= cfg.adapt_threshold for a in hers if a.updated)
    assert all(not a.updated for a in hers if a.score < cfg.adapt_threshold)
    cluster = pipe.clusterer.get("Anna Maria")
    assert cluster.count == weight + sum(a.updated for a in hers)
    if cluster.count > weight:
        assert float(cluster.centroid @ stored) > 0.8  # moved, towards the same voice
    with open_store(tmp_path / "p.sqlite3") as store:  # adaptation lives in the session only
        assert np.array_equal(store.known_speakers()[0].centroid, stored)


# ---- (b) replay --save-speaker, then recognised by name -----------------------------------------------

@pytest.mark.real_model
def test_replay_save_speaker_then_second_replay_names_that_voice(tmp_path, checkpoint_path, short_wav, libri):
    store = tmp_path / "profiles.sqlite3"
    ck = str(checkpoint_path)
    proc = cli("replay", str(short_wav), "--fast", "--quiet", "--save-speaker", "speaker 1=Bob",
               "--profiles", str(store), "--model-file", ck)
    assert proc.returncode == 0, proc.stderr
    assert "saved speaker 1 as enrolled speaker 'Bob'" in proc.stderr
    rttm = tmp_path / "again.rttm"
    proc = cli("replay", str(short_wav), "--fast", "--quiet", "--profiles", str(store), "--rttm", str(rttm),
               "--model-file", ck)
    assert proc.returncode == 0, proc.stderr
    turns = read_rttm(rttm)["short"]
    bob = [(s, e) for s, e, lab in turns if lab == "Bob"]
    spoken = [(s, e) for s, e in turns_of(libri[1], "libri_150") if e <= 14.2]
    assert sum(overlap(t, bob) for t in spoken) >= 0.8 * sum(e - s for s, e in spoken)
    assert sum(overlap(b, spoken) for b in bob) >= 0.9 * sum(e - s for s, e in bob)
    assert all(lab == "Bob" or re.fullmatch(r"speaker_\d+", lab) for _, _, lab in turns)


@pytest.mark.real_model
def test_replay_save_speaker_into_a_new_store(tmp_path, checkpoint_path, short_wav):
    store = tmp_path / "new.sqlite3"
    assert main(["replay", str(short_wav), "--fast", "--quiet", "--save-speaker", "speaker 1=Bob",
                 "--profiles", str(store), "--model-file", str(checkpoint_path)]) == 0
    with open_store(store) as s:
        assert [k.name for k in s.known_speakers()] == ["Bob"]


# ---- (c) another model's store, (d) --no-profiles, (e) a missing store ------------------------------------

@pytest.mark.real_model
def test_store_of_another_model_is_refused_with_one_line(tmp_path, checkpoint_path, short_wav, capsys,
                                                         monkeypatch):
    store = foreign_store(tmp_path / "foreign.sqlite3")
    proc = cli("replay", str(short_wav), "--fast", "--quiet", "--profiles", str(store),
               "--model-file", str(checkpoint_path))
    assert proc.returncode == 2
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("stream-spk: error:"), proc.stderr
    assert "other/model" in lines[0] and str(store) in lines[0]
    # the same store named by $STREAM_SPK_PROFILES (no --profiles)
    monkeypatch.setenv("STREAM_SPK_PROFILES", str(store))
    assert main(["replay", str(short_wav), "--fast", "--quiet", "--model-file", str(checkpoint_path)]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "other/model" in lines[0]


@pytest.mark.real_model
def test_no_profiles_ignores_the_store(tmp_path, checkpoint_path, embedder, short_wav, libri, monkeypatch):
    audio, ref = libri
    store = tmp_path / "bob.sqlite3"
    with open_store(store) as s:
        assert enroll_audio("Bob", cut(audio, turns_of(ref, "libri_150")[:2]), embedder, s).accepted
    ck = str(checkpoint_path)
    out = tmp_path / "out.rttm"
    assert main(["replay", str(short_wav), "--fast", "--quiet", "--no-profiles", "--profiles", str(store),
                 "--rttm", str(out), "--model-file", ck]) == 0
    labels = {lab for _, _, lab in read_rttm(out)["short"]}
    assert labels and all(re.fullmatch(r"speaker_\d+", lab) for lab in labels), labels
    # not even opened: a store of another model in $STREAM_SPK_PROFILES is no error either
    monkeypatch.setenv("STREAM_SPK_PROFILES", str(foreign_store(tmp_path / "foreign.sqlite3")))
    assert main(["replay", str(short_wav), "--fast", "--quiet", "--no-profiles", "--model-file", ck]) == 0


@pytest.mark.real_model
def test_missing_profiles_path_is_a_one_line_error(tmp_path, checkpoint_path, short_wav, capsys):
    missing = tmp_path / "nowhere" / "profiles.sqlite3"
    assert main(["replay", str(short_wav), "--fast", "--quiet", "--profiles", str(missing),
                 "--model-file", str(checkpoint_path)]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("stream-spk: error:") and str(missing) in lines[0], lines
    assert "does not exist" in lines[0]
    assert not missing.exists() and not missing.parent.exists()  # nothing created
