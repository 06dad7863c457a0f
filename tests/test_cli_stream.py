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
                         (["replay", str(tmp_path / "a.wav"), "--vad", "silero", "--no-second-look"],
                          "--no-second-look"),
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


# ---------------------------------------------------------------- fast CLI tests with a fake model


@pytest.fixture
def fake_pipeline(monkeypatch):
    """build_pipeline -> a real Pipeline with the tone embedder and the energy VAD (no torch)."""
    from fakes import EnergyScorer, ToneEmbedder

    from stream_spk.pipeline import Pipeline
    from stream_spk.vad import VadSegmenter

    built = []

    def build(options=None, *, quiet=True, embedder=None):
        config = options.pipeline_config()
        built.append(options)
        return Pipeline(ToneEmbedder(), config, vad=VadSegmenter(config.vad, EnergyScorer()))

    monkeypatch.setattr("stream_spk.session.build_pipeline", build)
    return built


def _tones(path, fmt=None, subtype=None, seconds=6.0):
    from fakes import meeting

    audio, _ = meeting([(None, 0.5), (300.0, seconds / 2), (None, 0.3), (900.0, seconds / 2)])
    sf.write(path, audio, 16000, **({"format": fmt, "subtype": subtype} if fmt else {}))
    return path


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_diarize_inputs_with_the_same_stem_get_distinct_outputs(tmp_path, fake_pipeline, capsys):
    (tmp_path / "d1").mkdir()
    (tmp_path / "d2").mkdir()
    files = [_tones(tmp_path / "a.flac"), _tones(tmp_path / "a.ogg", "OGG", "VORBIS"),
             _tones(tmp_path / "d1" / "b.wav"), _tones(tmp_path / "d2" / "b.wav"), _tones(tmp_path / "c.wav")]
    out = tmp_path / "out"
    assert main(["diarize", *map(str, files), "--out-dir", str(out), "--no-profiles", "--jsonl"]) == 0
    assert _listing(out) == ["a.flac.jsonl", "a.flac.rttm", "a.ogg.jsonl", "a.ogg.rttm", "c.jsonl", "c.rttm",
                             "d1_b.wav.jsonl", "d1_b.wav.rttm", "d2_b.wav.jsonl", "d2_b.wav.rttm"]
    for name in ("a.flac", "a.ogg", "d1_b.wav", "d2_b.wav", "c"):
        assert read_rttm(out / f"{name}.rttm").keys() == {name}  # uri = the output name
    notes = [ln for ln in capsys.readouterr().err.splitlines() if "note:" in ln]
    assert notes == [f"stream-spk: note: 2 inputs share the name 'a'; their outputs are named "
                     f"{files[0]} -> a.flac.rttm, {files[1]} -> a.ogg.rttm",
                     f"stream-spk: note: 2 inputs share the name 'b'; their outputs are named "
                     f"{files[2]} -> d1_b.wav.rttm, {files[3]} -> d2_b.wav.rttm"]


def test_no_second_look_reaches_the_session_options(tmp_path, fake_pipeline):
    wav = _tones(tmp_path / "a.wav")
    assert main(["diarize", str(wav), "--out-dir", str(tmp_path / "o1"), "--no-profiles"]) == 0
    assert main(["diarize", str(wav), "--out-dir", str(tmp_path / "o2"), "--no-profiles", "--no-second-look"]) == 0
    assert [o.second_look for o in fake_pipeline] == [True, False]


def test_output_names_last_resort_counter():
    from stream_spk.cli.diarize_cmd import output_names

    names, notes = output_names(["x/a.wav", "x/a.wav", "A.flac", "b.wav"])
    assert names == ["x_a.wav", "x_a.wav-2", "A.flac", "b"] and len(notes) == 1


def test_diarize_file_failing_part_way_keeps_earlier_outputs(tmp_path, fake_pipeline, capsys):
    good = _tones(tmp_path / "m.flac", seconds=12.0)
    out = tmp_path / "out"
    assert main(["diarize", str(good), "--out-dir", str(out), "--no-profiles", "--jsonl", "--refine"]) == 0
    before = {p: (out / p).read_bytes() for p in ("m.rttm", "m.jsonl", "refined/m.rttm")}
    assert before["m.rttm"].strip() and before["m.jsonl"].strip()
    raw = good.read_bytes()
    good.write_bytes(raw[: len(raw) // 2])  # the header is intact: decoding fails part-way
    other = _tones(tmp_path / "ok.wav")
    assert main(["diarize", str(good), str(other), "--out-dir", str(out), "--no-profiles", "--jsonl",
                 "--refine"]) == 1
    err = capsys.readouterr().err
    assert "m.flac: cannot decode audio at" in err and "Traceback" not in err
    assert {p: (out / p).read_bytes() for p in before} == before  # untouched
    assert _listing(out) == ["m.jsonl", "m.rttm", "ok.jsonl", "ok.rttm", "refined", "refined/m.rttm",
                             "refined/ok.rttm"]  # the other file was done; no temporary file left


@pytest.mark.parametrize("cmd", ["replay", "diarize"])
def test_outputs_and_options_checked_before_the_model_loads(tmp_path, monkeypatch, capsys, cmd):
    def no_model(*a, **k):
        raise AssertionError("the model must not load")

    monkeypatch.setattr("stream_spk.session.build_pipeline", no_model)
    wav = _tones(tmp_path / "a.wav")
    (tmp_path / "folder.rttm").mkdir()
    (tmp_path / "file").write_text("x")
    if cmd == "replay":
        cases = [(["--rttm", str(tmp_path / "no" / "x.rttm")], "does not exist"),
                 (["--rttm", str(tmp_path / "folder.rttm")], "is a folder"),
                 (["--jsonl", "/proc/x.jsonl"], "cannot write"),
                 (["--jsonl", str(tmp_path / "file" / "x.jsonl")], "not a folder")]
        base = ["replay", str(wav), "--fast"]
    else:
        cases = [(["--out-dir", "/proc/stream-spk-out"], "cannot create"),
                 (["--out-dir", str(tmp_path / "file")], "cannot create")]
        base = ["diarize", str(wav)]
    cases += [(["--vad-threshold", "1.5"] + (["--out-dir", str(tmp_path)] if cmd == "diarize" else []),
               "--vad-threshold"),
              (["--vad-threshold", "-0.1"] + (["--out-dir", str(tmp_path)] if cmd == "diarize" else []),
               "--vad-threshold"),
              (["--compute-device", "meta"] + (["--out-dir", str(tmp_path)] if cmd == "diarize" else []),
               "'meta'")]
    for extra, needle in cases:
        assert main([*base, *extra, "--no-profiles"]) == 2, extra
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err, (extra, err)


def test_diarize_shows_no_progress_bars_when_stderr_is_not_a_terminal(tmp_path, fake_pipeline, capsys):
    assert main(["diarize", str(_tones(tmp_path / "a.wav")), "--out-dir", str(tmp_path / "o"),
                 "--no-profiles"]) == 0
    err = capsys.readouterr().err
    assert "files:" not in err and "audio:" not in err and "\r" not in err
    assert err.startswith("diarized 1 file(s)")


def _faulty_inputs(tmp: Path) -> dict[str, Path]:
    full = _tones(tmp / "full.wav", seconds=6.0)
    (tmp / "cut.wav").write_bytes(full.read_bytes()[: 44 + 2 * 16000 * 3])
    data, _ = sf.read(full, dtype="float32")
    data[2000:2010] = np.nan
    sf.write(tmp / "nan.wav", data, 16000, subtype="FLOAT")
    (tmp / "header.wav").write_bytes(full.read_bytes()[:44])
    sf.write(tmp / "empty.wav", np.zeros(0, np.float32), 16000)
    mp3 = _tones(tmp / "full.mp3", "MP3", "MPEG_LAYER_III", seconds=10.0)
    raw = mp3.read_bytes()
    (tmp / "cut.mp3").write_bytes(raw[: len(raw) // 2])
    return {name: tmp / name for name in ("cut.wav", "nan.wav", "header.wav", "empty.wav", "cut.mp3", "full.mp3")}


def test_one_rule_for_faulty_files_in_every_command(tmp_path, fake_pipeline, monkeypatch, capfd):
    """replay, diarize and embed treat a cut WAV/MP3 and NaN samples the same (used, one warning
    naming the file) and a header-only or empty file the same (an error); no decoder noise."""
    from test_cli_embed import CountingEmbedder

    from stream_spk.cli import embed_cmd

    monkeypatch.setattr(embed_cmd, "make_embedder", lambda args: CountingEmbedder())
    files = _faulty_inputs(tmp_path)
    for name, path in files.items():
        outcomes = {}
        for cmd in ("replay", "diarize", "embed"):
            argv = {"replay": ["replay", str(path), "--fast", "--quiet", "--no-profiles"],
                    "diarize": ["diarize", str(path), "--out-dir", str(tmp_path / "o"), "--no-profiles"],
                    "embed": ["embed", str(path), "--out", str(tmp_path / "e.npy")]}[cmd]
            code = main(argv)
            err = capfd.readouterr().err
            lines = [ln for ln in err.splitlines() if ln.startswith("stream-spk: ")]
            assert all(str(path) in ln for ln in lines), (cmd, err)
            other = [ln for ln in err.splitlines() if not ln.startswith("stream-spk: ")]
            assert all("s of audio in" in ln or ln.startswith("diarized ") for ln in other), (cmd, err)  # summaries
            outcomes[cmd] = ("error" if code else "ok", [ln.split(": ", 2)[1:] for ln in lines])
        assert outcomes["replay"] == outcomes["embed"], (name, outcomes)
        diarize_code, diarize_lines = outcomes["diarize"]
        assert diarize_lines == outcomes["embed"][1], (name, outcomes)
        expected = {"cut.wav": "truncated", "nan.wav": "NaN", "cut.mp3": "truncated", "header.wav": "no audio",
                    "empty.wav": "no audio", "full.mp3": None}[name]
        if expected is None:
            assert outcomes["embed"] == ("ok", []), outcomes
        else:
            (line,) = outcomes["embed"][1]
            assert expected in line[1], outcomes


def test_diarize_interrupted_part_way_keeps_earlier_outputs(tmp_path, monkeypatch, capsys):
    from fakes import EnergyScorer, ToneEmbedder

    from stream_spk.pipeline import Pipeline
    from stream_spk.vad import VadSegmenter

    interrupt = {"after": None}

    class Interrupted(Pipeline):
        def process(self, chunk):
            if interrupt["after"] is not None and chunk.t0 >= interrupt["after"]:
                raise KeyboardInterrupt
            return super().process(chunk)

    def build(options=None, *, quiet=True, embedder=None):
        config = options.pipeline_config()
        return Interrupted(ToneEmbedder(), config, vad=VadSegmenter(config.vad, EnergyScorer()))

    monkeypatch.setattr("stream_spk.session.build_pipeline", build)
    wav = _tones(tmp_path / "m.wav", seconds=12.0)
    out = tmp_path / "out"
    assert main(["diarize", str(wav), "--out-dir", str(out), "--no-profiles", "--jsonl"]) == 0
    before = {p: (out / p).read_bytes() for p in ("m.rttm", "m.jsonl")}
    interrupt["after"] = 4.0  # Ctrl-C while the second chunk is processed
    assert main(["diarize", str(wav), "--out-dir", str(out), "--no-profiles", "--jsonl"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert {p: (out / p).read_bytes() for p in before} == before
    assert _listing(out) == ["m.jsonl", "m.rttm"]
