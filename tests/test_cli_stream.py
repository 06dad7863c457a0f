"""replay / diarize / live commands: pacing, output formats, bad input (real model where noted)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stream_spk.cli.main import main
from stream_spk.rttm import read_rttm
from stream_spk.runner import StreamRunner
from stream_spk.sources import FileSource

DATA = Path(__file__).parent / "data"


def _cli(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "stream_spk", *args], capture_output=True, text=True, env=env)


class FakeClock:
    def __init__(self):
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


class NullPipeline:
    """Accepts chunks and records when (by the fake clock) each arrived."""

    def __init__(self, clock):
        self.clock = clock
        self.arrivals: list[tuple[float, float]] = []

    def process(self, chunk):
        self.arrivals.append((chunk.t0, self.clock.now))
        return []

    def flush(self):
        return []

    def speakers(self):
        return []


@pytest.mark.parametrize("speed", [1.0, 2.0])
def test_realtime_replay_paces_chunks_by_the_clock(tmp_path, speed):
    sf.write(tmp_path / "a.wav", np.zeros(16000 * 3, np.float32), 16000)
    clk = FakeClock()
    src = FileSource(tmp_path / "a.wav", chunk_seconds=0.5, speed=speed, clock=clk.clock, sleep=clk.sleep)
    pipe = NullPipeline(clk)
    StreamRunner(src, pipe, clock=clk.clock).run()
    # chunk k (0.5 s of audio) is handed over once its last sample would have been captured
    for t0, arrived in pipe.arrivals:
        assert arrived - 100.0 == pytest.approx((t0 + 0.5) / speed, abs=1e-6)


def test_fast_replay_never_waits(tmp_path):
    sf.write(tmp_path / "a.wav", np.zeros(16000 * 3, np.float32), 16000)

    def boom(*_):
        raise AssertionError("fast mode must not wait")

    src = FileSource(tmp_path / "a.wav", chunk_seconds=0.5, speed=None, clock=boom, sleep=boom)
    assert len(list(src)) == 6


@pytest.mark.real_model
def test_replay_writes_rttm_and_jsonl(tmp_path, checkpoint_path):
    rttm, jsonl = tmp_path / "out.rttm", tmp_path / "out.jsonl"
    proc = _cli("replay", str(DATA / "dev_libri03.wav"), "--fast", "--rttm", str(rttm), "--jsonl", str(jsonl),
                "--no-profiles", "--model-file", str(checkpoint_path))
    assert proc.returncode == 0, proc.stderr
    lines = rttm.read_text().splitlines()
    assert lines and all(len(line.split()) == 10 and line.startswith("SPEAKER dev_libri03 1 ") for line in lines)
    events = [json.loads(line) for line in jsonl.read_text().splitlines()]
    kinds = {e["kind"] for e in events}
    assert {"turn", "speech_start", "speech_end", "stats"} <= kinds
    finals = [e for e in events if e["kind"] == "turn" and e["status"] == "final"]
    assert all(e["emitted_at"] - e["end"] <= 1.0 + 1e-3 for e in finals)
    assert "speaker 1" in proc.stdout  # the console view
    assert "x real time" in proc.stderr


def _bad_inputs(tmp: Path) -> dict[str, Path]:
    sr = 16000
    rng = np.random.default_rng(0)
    files = {}
    (tmp / "text.wav").write_text("not audio at all")
    files["non-audio"] = tmp / "text.wav"
    sf.write(tmp / "empty.wav", np.zeros(0, np.float32), sr)
    files["empty"] = tmp / "empty.wav"
    sf.write(tmp / "trunc.flac", rng.standard_normal(sr * 4).astype(np.float32) * 0.1, sr)
    data = (tmp / "trunc.flac").read_bytes()
    (tmp / "trunc.flac").write_bytes(data[: len(data) // 3])
    files["truncated"] = tmp / "trunc.flac"
    sf.write(tmp / "trunc.wav", rng.standard_normal(sr * 4).astype(np.float32) * 0.1, sr, subtype="PCM_16")
    (tmp / "trunc.wav").write_bytes((tmp / "trunc.wav").read_bytes()[: 44 + 2 * sr * 2])
    files["truncated-wav"] = tmp / "trunc.wav"
    files["missing"] = tmp / "nope.wav"
    return files


def _speechlike(sr: int, seconds: float = 3.0) -> np.ndarray:
    clip = sf.read(DATA / "clip2_vctk_p227.wav", dtype="float32")[0]
    from scipy.signal import resample_poly

    return resample_poly(clip, sr, 16000).astype(np.float32)[: int(seconds * sr)]


@pytest.mark.real_model
def test_replay_bad_input_gives_one_line_error_or_empty_result(tmp_path, checkpoint_path):
    for what, path in _bad_inputs(tmp_path).items():
        proc = _cli("replay", str(path), "--fast", "--no-profiles", "--model-file", str(checkpoint_path))
        lines = proc.stderr.strip().splitlines()
        if what == "empty":
            assert proc.returncode == 0, proc.stderr  # a correct empty result
            assert "speakers: none" in proc.stderr
            continue
        if what == "truncated" and proc.returncode == 0:
            continue  # libsndfile may decode what is there: a shorter but valid result
        if what == "truncated-wav":  # what is there is used, and the cut is said in one line
            assert proc.returncode == 0, proc.stderr
            warnings = [ln for ln in lines if "warning" in ln]
            assert len(warnings) == 1 and str(path) in warnings[0], proc.stderr
            assert "promises 4.00 s, the file holds 2.00 s" in warnings[0]
            continue
        assert proc.returncode == 2, (what, proc.stderr)
        assert len(lines) == 1 and str(path) in lines[0] and "Traceback" not in proc.stderr, (what, proc.stderr)


@pytest.mark.real_model
def test_diarize_odd_formats_and_a_bad_file_in_a_batch(tmp_path, checkpoint_path):
    sr_files = []
    speech8k = _speechlike(8000)
    sf.write(tmp_path / "s8k.wav", speech8k, 8000)
    s48 = _speechlike(48000)
    sf.write(tmp_path / "s48k_stereo.wav", np.stack([s48, 0.5 * s48], 1), 48000)
    sf.write(tmp_path / "silence.wav", np.zeros(16000 * 3, np.float32), 16000)
    clipped = np.clip(_speechlike(16000) * 40, -1, 1)
    sf.write(tmp_path / "clipped.wav", clipped, 16000)
    nan = _speechlike(16000)
    nan[1000:1400] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT")
    sr_files = ["s8k.wav", "s48k_stereo.wav", "silence.wav", "clipped.wav", "nan.wav"]
    (tmp_path / "bad.wav").write_text("garbage")
    out = tmp_path / "rttm"
    args = [str(tmp_path / f) for f in sr_files] + [str(tmp_path / "bad.wav")]
    proc = _cli("diarize", *args, "--out-dir", str(out), "--no-profiles", "--model-file", str(checkpoint_path))
    assert proc.returncode == 1, proc.stderr
    assert "bad.wav" in proc.stderr and "Traceback" not in proc.stderr
    for f in sr_files:
        assert (out / f"{Path(f).stem}.rttm").exists(), f
    assert (out / "silence.rttm").read_text() == ""
    for f in ("s8k", "s48k_stereo", "clipped", "nan"):
        assert (out / f"{f}.rttm").read_text().strip(), f"{f}: no speech found"
    warnings = [ln for ln in proc.stderr.splitlines() if "warning" in ln]
    assert warnings == [f"stream-spk: warning: {tmp_path / 'nan.wav'}: 400 NaN or infinite sample value(s) "
                        "replaced by silence"], proc.stderr


@pytest.mark.real_model
def test_diarize_then_eval(tmp_path, checkpoint_path):
    out = tmp_path / "hyp"
    assert main(["diarize", str(DATA / "dev_libri03.wav"), "--out-dir", str(out), "--no-profiles",
                 "--model-file", str(checkpoint_path)]) == 0
    assert not (out / "refined").exists()
    ref = tmp_path / "ref"
    ref.mkdir()
    (ref / "dev_libri03.rttm").write_text((DATA / "dev_libri03.rttm").read_text())
    proc = _cli("eval", "--ref", str(ref), "--hyp", str(out))
    assert proc.returncode == 0 and "TOTAL" in proc.stdout
    # --refine adds the second pass in its own folder and leaves the streamed RTTM as it was
    out2 = tmp_path / "hyp2"
    proc = _cli("diarize", str(DATA / "dev_libri03.wav"), "--out-dir", str(out2), "--no-profiles", "--refine",
                "--model-file", str(checkpoint_path))
    assert proc.returncode == 0, proc.stderr
    assert "offline second pass" in proc.stderr
    assert (out2 / "dev_libri03.rttm").read_text() == (out / "dev_libri03.rttm").read_text()
    refined = read_rttm(out2 / "refined" / "dev_libri03.rttm")["dev_libri03"]
    streamed = read_rttm(out / "dev_libri03.rttm")["dev_libri03"]
    speech = sum(b - a for a, b, _ in streamed)
    assert sum(b - a for a, b, _ in refined) == pytest.approx(speech, abs=0.5)
    proc = _cli("eval", "--ref", str(ref), "--hyp", str(out2 / "refined"))
    assert proc.returncode == 0 and "dev_libri03" in proc.stdout


def test_streaming_commands_reject_bad_options(tmp_path):
    sf.write(tmp_path / "a.wav", np.zeros(16000, np.float32), 16000)
    for args, needle in ((["replay", str(tmp_path / "a.wav"), "--speed", "0"], "--speed"),
                         (["replay", str(tmp_path / "a.wav"), "--latency", "0.01"], "--latency"),
                         (["replay", str(tmp_path / "a.wav"), "--save-speaker", "nonsense"], "--save-speaker"),
                         (["replay", str(tmp_path / "a.wav"), "--rttm", str(tmp_path / "no/dir/x.rttm")], "folder"),
                         (["diarize", str(tmp_path / "a.wav"), "--out-dir", str(tmp_path), "--jobs", "0"], "--jobs")):
        proc = _cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert needle in proc.stderr and "Traceback" not in proc.stderr


def test_live_without_portaudio_or_device_is_a_clear_error(monkeypatch, capsys):
    from stream_spk.cli import live_cmd
    from stream_spk.errors import DeviceError

    def no_mic(device):
        raise DeviceError("PortAudio library not found: install it (Debian/Ubuntu: apt install libportaudio2)")

    monkeypatch.setattr(live_cmd, "make_mic", no_mic)
    monkeypatch.setattr("stream_spk.session.build_pipeline", lambda *a, **k: object())
    assert main(["live", "--no-profiles"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "libportaudio2" in err[0]
