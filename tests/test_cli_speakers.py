"""``stream-spk enroll`` and ``stream-spk speakers``: files, microphone, management, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from stream_spk.cli import enroll_cmd
from stream_spk.cli.main import main
from stream_spk.profiles import ProfileStore
from stream_spk.types import AudioChunk

SR = 16000


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No test reaches the user's real profile store, even through the default path."""
    monkeypatch.setenv("STREAM_SPK_PROFILES", str(tmp_path / "env-default.sqlite3"))


@pytest.fixture
def profiles(tmp_path):
    return str(tmp_path / "profiles.sqlite3")


class FakeEmbedder:
    """One fixed vector per tone frequency (the "voice" of the synthetic recordings)."""

    min_samples = 400

    def embed(self, wavs):
        out = []
        for w in wavs:
            hz = int(round(np.argmax(np.abs(np.fft.rfft(w))) * SR / len(w) / 50.0) * 50)
            v = np.random.default_rng(hz).standard_normal(192)
            out.append(v / np.linalg.norm(v))
        return np.array(out, np.float32)


def energy_speech(samples):
    frames = samples[: samples.size // 160 * 160].reshape(-1, 160)
    active = np.concatenate([[False], np.abs(frames).max(axis=1) > 1e-6, [False]])
    edges = np.flatnonzero(np.diff(active.astype(int)))
    return [(int(s) * 160, int(e) * 160) for s, e in zip(edges[::2], edges[1::2], strict=True)]


@pytest.fixture
def fake_model(monkeypatch):
    monkeypatch.setattr(enroll_cmd, "make_embedder", lambda args: FakeEmbedder())
    monkeypatch.setattr(enroll_cmd, "make_speech_fn", lambda backend: energy_speech)


def voice(tmp_path, name: str, seconds: float, hz: int = 200, rate: int = SR) -> str:
    t = np.arange(round(seconds * rate)) / rate
    x = np.concatenate([np.zeros(rate // 2), 0.3 * np.sin(2 * np.pi * hz * t), np.zeros(rate // 2)])
    path = tmp_path / name
    sf.write(path, x.astype(np.float32), rate)
    return str(path)


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("stream-spk: error: ")
    return lines[0]


def test_enroll_files_then_manage(tmp_path, profiles, fake_model, capsys):
    a = voice(tmp_path, "anna1.wav", 6.0)
    b = voice(tmp_path, "anna2.flac", 4.0, rate=44100)
    assert main(["enroll", "Anna", a, b, "--profiles", profiles]) == 0
    out = capsys.readouterr().out
    assert "speech: 10.0 s from 2 recording(s)" in out and "enrolled 'Anna'" in out
    assert "warning" not in out
    assert main(["enroll", "Bob", voice(tmp_path, "bob.wav", 5.0, hz=300), "--profiles", profiles]) == 0
    out = capsys.readouterr().out
    assert "warning: only 5.0 s of speech" in out

    assert main(["speakers", "list", "--profiles", profiles]) == 0
    out = capsys.readouterr().out
    assert "Anna" in out and "Bob" in out and "2 speaker(s)" in out and "10.0s" in out

    assert main(["speakers", "rename", "Bob", "Robert", "--profiles", profiles]) == 0
    assert "renamed 'Bob' to 'Robert'" in capsys.readouterr().out

    export = tmp_path / "speakers.json"
    assert main(["speakers", "export", str(export), "--profiles", profiles]) == 0
    assert json.loads(export.read_text())["speakers"][1]["name"] == "Robert"
    assert main(["speakers", "delete", "Robert", "--yes", "--profiles", profiles]) == 0
    assert "deleted 'Robert'" in capsys.readouterr().out
    assert main(["speakers", "import", str(export), "--profiles", profiles]) == 2
    assert "already enrolled: Anna (use --replace" in one_error_line(capsys.readouterr().err)
    assert main(["speakers", "import", str(export), "--replace", "--profiles", profiles]) == 0
    other = str(tmp_path / "other.sqlite3")
    assert main(["speakers", "import", str(export), "--profiles", other]) == 0
    assert "imported 2 speaker(s)" in capsys.readouterr().out
    with ProfileStore(other) as store:
        assert [r.name for r in store.list()] == ["Anna", "Robert"]


def test_enroll_refused_exits_2(tmp_path, profiles, fake_model, capsys):
    assert main(["enroll", "Anna", voice(tmp_path, "short.wav", 2.0), "--profiles", profiles]) == 2
    captured = capsys.readouterr()
    assert "speech: 2.0 s" in captured.out
    assert "'Anna' not enrolled: only 2.0 s of speech found" in one_error_line(captured.err)
    assert not os.path.exists(profiles)  # a refused enrollment creates no empty store


def test_failed_enroll_or_import_creates_no_store(tmp_path, profiles, fake_model, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    for argv in (["enroll", "Anna", str(tmp_path / "missing.wav")],
                 ["enroll", "Anna\u200b", voice(tmp_path, "a.wav", 9.0)],
                 ["speakers", "import", str(bad)], ["speakers", "import", str(tmp_path / "missing.json")]):
        assert main([*argv, "--profiles", profiles]) == 2
        one_error_line(capsys.readouterr().err)
        assert not os.path.exists(profiles), argv
    assert not [f for f in os.listdir(tmp_path) if "sqlite" in f]


def test_enroll_names_equal_under_case_folding_are_one_speaker(tmp_path, profiles, fake_model, capsys):
    assert main(["enroll", "Émile", voice(tmp_path, "a.wav", 9.0), "--profiles", profiles]) == 0
    assert main(["enroll", "E\u0301MILE", voice(tmp_path, "b.wav", 9.0), "--profiles", profiles]) == 0
    assert main(["speakers", "list", "--profiles", profiles]) == 0
    out = capsys.readouterr().out
    assert "1 speaker(s)" in out and "18.0s" in out
    export = tmp_path / "x.json"
    assert main(["speakers", "export", str(export), "--profiles", profiles]) == 0
    assert main(["speakers", "import", str(export), "--profiles", str(tmp_path / "other.sqlite3")]) == 0
    assert main(["speakers", "delete", "émile", "--yes", "--profiles", profiles]) == 0


def test_enroll_warns_about_two_voices(tmp_path, profiles, fake_model, capsys):
    t = np.arange(6 * SR) / SR
    mix = np.concatenate([0.3 * np.sin(2 * np.pi * 200 * t), np.zeros(SR), 0.3 * np.sin(2 * np.pi * 450 * t[:4 * SR])])
    sf.write(tmp_path / "mix.wav", mix.astype(np.float32), SR)
    assert main(["enroll", "Anna", str(tmp_path / "mix.wav"), "--profiles", profiles]) == 0
    out = capsys.readouterr().out
    assert "warning: more than one voice" in out and "speech: 6.0 s" in out


class FakeMic:
    """Chunks of a tone at a steady level, as a MicSource would deliver them."""

    def __init__(self, seconds: float = 60.0) -> None:
        self.seconds, self.stopped, self.delivered = seconds, False, 0

    def __iter__(self):
        t0 = 0.0
        while t0 < self.seconds and not self.stopped:
            t = np.arange(SR // 2) / SR + t0
            self.delivered += 1
            yield AudioChunk((0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), t0, overruns=0)
            t0 += 0.5

    def stop(self) -> None:
        self.stopped = True


def test_enroll_from_microphone(profiles, fake_model, monkeypatch, capsys):
    mic = FakeMic()
    opened = []
    monkeypatch.setattr(enroll_cmd, "make_mic", lambda device: opened.append(device) or mic)
    assert main(["enroll", "Anna", "--mic", "--seconds", "9", "--device", "2", "--profiles", profiles]) == 0
    captured = capsys.readouterr()
    assert opened == ["2"] and mic.stopped and mic.delivered == 18
    assert "please speak now" in captured.err
    assert "speech: 9.0 s from 1 recording(s)" in captured.out
    with ProfileStore(profiles) as store:
        assert store.embeddings("Anna")[1][0] == "microphone"


def test_record_shows_progress_and_level(capsys):
    samples, overruns = enroll_cmd.record(FakeMic(), 2.2, show=True)
    assert samples.size == round(2.2 * SR) and overruns == 0
    err = capsys.readouterr().err
    assert "recording" in err and "dBFS" in err and "2.2/2.2 s" in err
    assert enroll_cmd.level_meter(np.zeros(100, np.float32)).startswith(" -99 dBFS |")
    assert enroll_cmd.level_meter(np.ones(100, np.float32)) == "   0 dBFS |" + "#" * 20 + "|"


def test_microphone_that_ends_early(profiles, fake_model, monkeypatch, capsys):
    monkeypatch.setattr(enroll_cmd, "make_mic", lambda device: FakeMic(seconds=1.0))
    assert main(["enroll", "Anna", "--mic", "--seconds", "10", "--profiles", profiles]) == 2
    err = capsys.readouterr().err
    assert err.startswith("recording 10 s: Anna, please speak now\n")
    assert "not enrolled: only 1.0 s of speech" in one_error_line(err.split("\n", 1)[1])


@pytest.mark.parametrize("argv, message", [
    (["enroll", "   ", "x.wav"], "speaker name is empty"),
    (["enroll", "x" * 65, "x.wav"], "at most 64"),
    (["enroll", "Ann\x07a", "x.wav"], "control characters"),
    (["enroll", "Anna"], "give audio files"),
    (["enroll", "Anna", "a.wav", "--mic"], "not both"),
    (["enroll", "Anna", "--mic", "--seconds", "0"], "--seconds must be"),
    (["enroll", "Anna", "missing.wav"], "missing.wav: no such file"),
    (["speakers", "rename", "Anna", ""], "speaker name is empty"),
    (["speakers", "rename", "Nobody", "Anna"], "no enrolled speaker named 'Nobody'"),
    (["speakers", "delete", "Nobody", "--yes"], "no enrolled speaker named 'Nobody'"),
    (["speakers", "delete", "Anna"], "without --yes"),
    (["speakers", "export", "/nonexistent-dir/x.json"], "does not exist"),
    (["speakers", "import", "missing.json"], "missing.json: no such file"),
])
def test_bad_input_one_line_exit_2(tmp_path, profiles, fake_model, capsys, monkeypatch, argv, message):
    with ProfileStore(profiles) as store:
        store.add_embeddings("Anna", np.eye(192, dtype=np.float32)[:2], ["a", "a"], [1.5, 1.5])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.stdin", open(os.devnull))
    assert main([*argv, "--profiles", profiles]) == 2
    assert message in one_error_line(capsys.readouterr().err)
    with ProfileStore(profiles) as store:
        assert [r.name for r in store.list()] == ["Anna"]


def test_commands_on_a_store_that_does_not_exist(tmp_path, capsys):
    missing = str(tmp_path / "none.sqlite3")
    assert main(["speakers", "list", "--profiles", missing]) == 0
    assert "no enrolled speakers" in capsys.readouterr().out
    assert main(["speakers", "delete", "Anna", "--yes", "--profiles", missing]) == 2
    assert "no profile store there yet" in one_error_line(capsys.readouterr().err)
    assert not os.path.exists(missing)


def test_foreign_store_refused_untouched(tmp_path, fake_model, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("my shopping list\n")
    for argv in (["speakers", "list"], ["enroll", "Anna", voice(tmp_path, "a.wav", 9.0)]):
        assert main([*argv, "--profiles", str(notes)]) == 2
        assert "not a stream-spk profile store" in one_error_line(capsys.readouterr().err)
    assert notes.read_text() == "my shopping list\n"


def test_default_store_comes_from_env(tmp_path, fake_model, capsys):
    assert main(["enroll", "Anna", voice(tmp_path, "a.wav", 9.0)]) == 0
    assert main(["speakers", "list"]) == 0
    assert "Anna" in capsys.readouterr().out
    assert (tmp_path / "env-default.sqlite3").is_file()


def test_subprocess_bad_name_is_one_line(tmp_path):
    env = {**os.environ, "STREAM_SPK_PROFILES": str(tmp_path / "p.sqlite3")}
    proc = subprocess.run([sys.executable, "-m", "stream_spk", "speakers", "rename", "A", "speaker 3"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert "reserved for anonymous speakers" in one_error_line(proc.stderr)


@pytest.mark.real_model
def test_enroll_real_clip(tmp_path, data_dir, profiles, capsys):
    clip = str(data_dir / "clip2_vctk_p227.wav")
    assert main(["enroll", "p227", clip, "--profiles", profiles, "--compute-device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "enrolled 'p227'" in out and "warning: only 3.8 s of speech" in out


def test_console_entry_flushes_everything_before_its_fast_exit():
    # run() skips the interpreter teardown with os._exit: buffered output must still arrive whole
    code = ("import sys\n"
            "from stream_spk.cli import main as m\n"
            "def fake():\n"
            "    for i in range(5000):\n"
            "        print(i)\n"
            "    sys.stderr.write('last words without a newline')\n"
            "    return 3\n"
            "m.main = fake\n"
            "m.run()\n"
            "print('never reached')\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered, as for users
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 3
    assert proc.stdout.splitlines() == [str(i) for i in range(5000)]
    assert proc.stderr == "last words without a newline"


def test_console_entry_waits_for_a_thread_still_at_work(tmp_path):
    marker = tmp_path / "written"
    code = ("import threading, time\n"
            "from stream_spk.cli import main as m\n"
            "def late():\n"
            "    time.sleep(0.5)\n"
            f"    open({str(marker)!r}, 'w').write('saved')\n"
            "def fake():\n"
            "    threading.Thread(target=late).start()\n"
            "    return 0\n"
            "m.main = fake\n"
            "m.run()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert marker.read_text() == "saved"
