"""Enrollment: speech windows, feedback (too short, quiet, clipped, two voices, similar speaker),
adding material; a fake embedder and VAD, plus one real-model test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stream_spk.enrollment import (
    Feedback,
    covered_seconds,
    enroll_audio,
    save_session_speaker,
    speech_windows,
)
from stream_spk.errors import AudioError, ProfileError
from stream_spk.profiles import ProfileStore

SR = 16000
MODEL = ("test/model", "a" * 64)


@pytest.fixture(autouse=True)
def _no_user_store(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAM_SPK_PROFILES", str(tmp_path / "env-default.sqlite3"))


@pytest.fixture
def store(tmp_path):
    with ProfileStore(tmp_path / "p.sqlite3", model_id=MODEL[0], model_hash=MODEL[1]) as s:
        yield s


def unit(v) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return (v / np.linalg.norm(v)).astype(np.float32)


def voice_vector(hz: int) -> np.ndarray:
    return unit(np.random.default_rng(hz).standard_normal(192))


class FakeEmbedder:
    """A window's "voice" is its dominant frequency; each frequency has its own vector."""

    def __init__(self, table: dict[int, np.ndarray] | None = None) -> None:
        self.table = table or {}
        self.calls: list[list[int]] = []

    def embed(self, wavs):
        self.calls.append([len(w) for w in wavs])
        out = []
        for w in wavs:
            spec = np.abs(np.fft.rfft(w))
            hz = int(round(np.argmax(spec) * SR / len(w) / 50.0) * 50)
            out.append(self.table.get(hz, voice_vector(hz)))
        return np.stack(out).astype(np.float32)


def fake_speech(samples: np.ndarray) -> list[tuple[int, int]]:
    """Speech = runs of 10 ms frames with any energy (the test signals have exact silences)."""
    frames = samples[: samples.size // 160 * 160].reshape(-1, 160)
    active = np.concatenate([[False], np.abs(frames).max(axis=1) > 1e-6, [False]])
    edges = np.flatnonzero(np.diff(active.astype(int)))
    return [(int(s) * 160, int(e) * 160) for s, e in zip(edges[::2], edges[1::2], strict=True)]


def tone(seconds: float, hz: int = 200, amp: float = 0.3) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * SR), np.float32)


def recording(*parts: np.ndarray) -> np.ndarray:
    """Speech parts separated by 0.5 s of silence."""
    out = [silence(0.5)]
    for p in parts:
        out += [p, silence(0.5)]
    return np.concatenate(out)


def enroll(store, name, audio, embedder=None, **kw):
    embedder = embedder or FakeEmbedder()
    samples = audio if isinstance(audio, list) else [("rec.wav", audio)]
    return enroll_audio(name, samples, embedder, store, speech_fn=fake_speech, **kw)


def test_speech_windows():
    assert speech_windows([(0, 41600), (50000, 60000), (70000, 72000)]) == [
        (0, 24000), (12000, 36000), (17600, 41600), (50000, 60000)]
    assert speech_windows([(100, 100 + 24000)]) == [(100, 24100)]
    assert speech_windows([(0, 7999)]) == [] and speech_windows([(0, 8000)]) == [(0, 8000)]
    assert speech_windows([(0, 36000 + 1601)]) == [(0, 24000), (12000, 36000), (13601, 37601)]
    assert speech_windows([(0, 36000 + 1600)]) == [(0, 24000), (12000, 36000)]  # <= 0.1 s left over


def test_too_short_is_refused_and_writes_nothing(store):
    emb = FakeEmbedder()
    result = enroll(store, "Anna", recording(tone(1.5), tone(1.0)), emb)
    assert not result.accepted and result.codes == ["too_short"]
    assert result.feedback[0].level == "refused" and "2.5 s of speech" in result.feedback[0].message
    assert result.speech_seconds == pytest.approx(2.5, abs=0.02) and result.speaker is None
    assert store.list() == [] and emb.calls == []


def test_no_speech_at_all_is_refused(store):
    result = enroll(store, "Anna", silence(5.0))
    assert not result.accepted and result.codes == ["too_short", "silent"] and result.speech_seconds == 0.0


def test_short_enrollment_warns(store):
    emb = FakeEmbedder()
    result = enroll(store, "Anna", recording(tone(5.0)), emb)
    assert result.accepted and result.codes == ["short"]
    assert "5.0 s of speech" in result.feedback[0].message
    assert result.speech_seconds == pytest.approx(5.0, abs=0.02)
    assert len(emb.calls) == 1 and all(n <= 1.5 * SR for n in emb.calls[0])
    rec = store.get("Anna")
    assert rec.n_embeddings == result.n_windows == len(emb.calls[0]) == 6
    assert rec.speech_seconds == pytest.approx(result.speech_seconds)
    np.testing.assert_allclose(result.speaker.centroid, voice_vector(200), atol=1e-6)


def test_enough_clean_speech_has_no_remarks(store):
    progress = []
    result = enroll(store, "Anna", [("a.wav", recording(tone(6.0))), ("b.wav", recording(tone(4.0)))],
                    progress=lambda f, msg: progress.append((f, msg)))
    assert result.accepted and result.feedback == ()
    assert result.speech_seconds == pytest.approx(10.0, abs=0.02)
    assert set(store.embeddings("Anna")[1]) == {"a.wav", "b.wav"}
    fractions = [f for f, _ in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and 0.0 <= fractions[0]


def test_quiet_speech_warns(store):
    result = enroll(store, "Anna", recording(tone(9.0, amp=0.003)))
    assert result.accepted and result.codes == ["quiet"] and "dBFS" in result.feedback[0].message


def test_clipped_speech_warns(store):
    result = enroll(store, "Anna", recording(np.clip(tone(9.0, amp=1.5), -1, 1)))
    assert result.accepted and result.codes == ["clipped"]


def test_quiet_feedback_also_on_refusal(store):
    result = enroll(store, "Anna", recording(tone(2.0, amp=0.003)))
    assert not result.accepted and result.codes == ["too_short", "quiet"]


def test_two_voices_warn_and_keep_the_main_one(store):
    result = enroll(store, "Anna", recording(tone(7.0, 200), tone(4.0, 400)))
    assert result.accepted and result.codes == ["short", "multiple_voices"]
    assert "more than one voice" in result.feedback[1].message and "36%" in result.feedback[1].message
    assert result.speech_seconds == pytest.approx(7.0, abs=0.02)
    np.testing.assert_allclose(result.speaker.centroid, voice_vector(200), atol=1e-6)
    assert store.get("Anna").n_embeddings == result.n_windows


def test_a_little_of_another_voice_is_dropped_quietly(store):
    result = enroll(store, "Anna", recording(tone(10.0, 200), tone(1.5, 400)))
    assert result.accepted and result.codes == ["other_voice_dropped"]
    assert result.feedback[0].level == "info"
    np.testing.assert_allclose(result.speaker.centroid, voice_vector(200), atol=1e-6)


def test_other_voice_leaving_too_little_is_refused(store):
    result = enroll(store, "Anna", recording(tone(2.5, 200), tone(2.0, 400)))
    assert not result.accepted and result.codes[0] == "too_short" and "multiple_voices" in result.codes
    assert store.list() == []


def test_close_voices_are_one_voice(store):
    a = voice_vector(200)
    b = unit(a + 0.5 * voice_vector(999))  # cosine ~0.9 to a
    result = enroll(store, "Anna", recording(tone(6.0, 200), tone(4.0, 400)), FakeEmbedder({400: b}))
    assert result.accepted and result.feedback == () and result.speech_seconds == pytest.approx(10.0, abs=0.02)


def test_similar_to_an_enrolled_speaker_warns(store):
    bob = voice_vector(300)
    other = voice_vector(999)
    robert = unit(0.8 * bob + 0.6 * unit(other - (other @ bob) * bob))  # cosine 0.8 to Bob
    emb = FakeEmbedder({300: bob, 500: robert})
    assert enroll(store, "Bob", recording(tone(9.0, 300)), emb).accepted
    assert enroll(store, "Carl", recording(tone(9.0, 700)), emb).feedback == ()
    result = enroll(store, "Robert", recording(tone(9.0, 500)), emb)
    assert result.accepted and result.codes == ["similar_speaker"]
    assert "'Bob'" in result.feedback[0].message and "0.80" in result.feedback[0].message


def test_enrolling_an_existing_name_adds_material(store):
    first = enroll(store, "Anna", [("a.wav", recording(tone(9.0)))])
    second = enroll(store, "anna", [("b.wav", recording(tone(9.0)))])
    assert second.accepted and second.feedback == ()  # no "similar to Anna" about herself
    assert second.speaker.name == "Anna"
    assert second.speaker.n_embeddings == first.n_windows + second.n_windows
    assert store.get("Anna").speech_seconds == pytest.approx(18.0, abs=0.05)
    assert len(store.list()) == 1


def test_material_unlike_the_existing_speaker_warns(store):
    enroll(store, "Anna", recording(tone(9.0, 200)))
    result = enroll(store, "Anna", recording(tone(9.0, 600)))
    assert result.accepted and result.codes == ["different_from_existing"]
    assert "does not sound like the 'Anna'" in result.feedback[0].message


def test_bad_input(store):
    with pytest.raises(ProfileError, match="empty"):
        enroll(store, "  ", recording(tone(9.0)))
    bad = recording(tone(9.0))
    bad[100] = np.nan
    with pytest.raises(AudioError, match="rec.wav"):
        enroll(store, "Anna", bad)
    assert store.list() == []


def test_covered_seconds_counts_overlap_once():
    from stream_spk.enrollment import _Window

    ws = [_Window("a", 0, 24000), _Window("a", 12000, 36000), _Window("b", 0, 8000)]
    assert covered_seconds(ws) == pytest.approx(36000 / SR + 0.5)


def test_save_session_speaker(store):
    v = np.stack([voice_vector(1), voice_vector(2), np.full(192, np.nan, np.float32), np.zeros(192)])
    sp = save_session_speaker(store, "Anna", v, [1.5, 1.5, 1.5, 1.5], speech_seconds=2.25)
    assert sp.name == "Anna" and sp.n_embeddings == 2 and sp.speech_seconds == pytest.approx(2.25)
    assert store.embeddings("Anna")[1] == ["session", "session"]
    with pytest.raises(ProfileError, match="no usable speech"):
        save_session_speaker(store, "Bob", np.zeros((2, 192)), [1.0, 1.0])
    with pytest.raises(ProfileError):
        save_session_speaker(store, "speaker 2", v[:2], [1.0, 1.0])


def test_feedback_is_a_value():
    assert Feedback("short", "x") == Feedback("short", "x", "warning")


@pytest.mark.real_model
def test_real_model_enrolls_a_short_vctk_clip(tmp_path, data_dir: Path):
    import soundfile as sf

    from stream_spk.models.embedder import Embedder
    from stream_spk.profiles import default_model

    emb = Embedder.from_checkpoint(device="cpu", precision="auto", quiet=True)
    clips = {p.stem.split("_")[-1]: sf.read(p, dtype="float32")[0]
             for p in sorted(data_dir.glob("clip*_vctk_*.wav"))}
    with ProfileStore(tmp_path / "p.sqlite3") as store:
        assert (store.model_id, store.model_hash) == default_model()
        result = enroll_audio("p227", [("clip2_vctk_p227.wav", clips["p227"])], emb, store)
        assert result.accepted and result.codes == ["short"], result.feedback
        assert 3.0 <= result.speech_seconds <= 4.0
        assert result.speaker.n_embeddings == result.n_windows >= 4
        # The enrolled centroid is the p227 clip's voice: the other speakers' clips are far from it.
        others = emb.embed([clips[k] for k in ("p225", "p226", "p228")])
        own = emb.embed([clips["p227"]])[0]
        assert float(own @ result.speaker.centroid) > 0.8
        assert float((others @ result.speaker.centroid).max()) < 0.5
        # Too little speech from the real VAD: the 0.9 s clip is refused.
        refused = enroll_audio("p225", [("clip0_vctk_p225.wav", clips["p225"])], emb, store)
        assert not refused.accepted and refused.codes == ["too_short"]
        assert [r.name for r in store.list()] == ["p227"]
