"""``diarize --ray``: same RTTMs as the serial run, resume, a killed worker, a bad file (local Ray, 2 CPUs)."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf

from stream_spk.cli.diarize_cmd import output_names
from stream_spk.cli.main import main
from stream_spk.distributed import CRASH_HOOK_ENV, input_lister, plan_names

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def pieces(tmp_path_factory) -> list[Path]:
    """Three 10 s pieces of real speech (two speakers in each)."""
    folder = tmp_path_factory.mktemp("pieces")
    out = []
    for i, (name, start) in enumerate([("dev_libri03.wav", 0), ("dev_libri03.wav", 20), ("pyannote_sample.wav", 5)]):
        audio, sr = sf.read(DATA / name, dtype="float32")
        path = folder / f"piece{i}.wav"
        sf.write(path, audio[start * sr:(start + 10) * sr], sr)
        out.append(path)
    return out


def _opts(checkpoint_path) -> list[str]:
    return ["--no-profiles", "--model-file", str(checkpoint_path)]


@pytest.fixture(scope="module")
def serial(pieces, checkpoint_path, tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("serial")
    assert main(["diarize", *map(str, pieces), "--out-dir", str(out), *_opts(checkpoint_path)]) == 0
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.rttm"))}


def _rttms(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.rttm"))}



@pytest.mark.slow
@pytest.mark.real_model
def test_ray_equals_serial_byte_for_byte(ray_local, pieces, serial, checkpoint_path, tmp_path, monkeypatch):
    monkeypatch.chdir(pieces[0].parent)  # relative inputs: resolved before they reach a worker
    listing = tmp_path / "list.txt"
    listing.write_text("# inputs\n\n" + "\n".join(p.name for p in pieces[1:]) + "\n")
    out = tmp_path / "ray"
    assert main(["diarize", pieces[0].name, "--files-from", str(listing), "--out-dir", str(out),
                 *_opts(checkpoint_path), "--ray", "--workers", "2"]) == 0
    assert len(serial) == 3
    assert _rttms(out) == serial
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left


@pytest.mark.slow
@pytest.mark.real_model
def test_skip_existing_resumes(ray_local, pieces, serial, checkpoint_path, tmp_path, capsys):
    out = tmp_path / "ray"
    out.mkdir()
    (out / "piece0.rttm").write_bytes(b"finished earlier\n")
    (out / "piece1.rttm").write_bytes(serial["piece1.rttm"])
    assert main(["diarize", *map(str, pieces), "--out-dir", str(out), *_opts(checkpoint_path),
                 "--skip-existing", "--ray", "--workers", "2"]) == 0
    err = capsys.readouterr().err
    assert "skipped 2 file(s)" in err and "diarized 1 file(s)" in err
    assert (out / "piece0.rttm").read_bytes() == b"finished earlier\n"  # not redone
    assert (out / "piece2.rttm").read_bytes() == serial["piece2.rttm"]


@pytest.mark.slow
@pytest.mark.real_model
def test_a_worker_killed_mid_file_is_retried(ray_local, pieces, serial, checkpoint_path, tmp_path, monkeypatch):
    flag = tmp_path / "crashed"
    monkeypatch.setenv(CRASH_HOOK_ENV, str(flag))  # the first worker to pass a chunk os._exit()s
    out = tmp_path / "ray"
    assert main(["diarize", *map(str, pieces), "--out-dir", str(out), *_opts(checkpoint_path),
                 "--ray", "--workers", "2"]) == 0
    assert flag.exists()  # a worker did die mid-file...
    assert _rttms(out) == serial  # ...and its file was done again, the same
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
@pytest.mark.real_model
def test_a_bad_file_is_reported_and_the_others_written(ray_local, pieces, serial, checkpoint_path, tmp_path,
                                                       capsys):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not really a wave file")
    out = tmp_path / "ray"
    files = [str(pieces[0]), str(bad), str(pieces[2])]
    assert main(["diarize", *files, "--out-dir", str(out), *_opts(checkpoint_path),
                 "--ray", "--workers", "2"]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and "broken.wav" in errors[0]
    assert _rttms(out) == {k: serial[k] for k in ("piece0.rttm", "piece2.rttm")}


def test_ray_options_are_checked_first(tmp_path, capsys):
    wav = tmp_path / "a.wav"
    for argv, word in ((["diarize", "--ray", str(wav), "--out-dir", str(tmp_path)], "not a Ray address"),
                       (["diarize", str(wav), "--out-dir", str(tmp_path), "--workers", "2"], "--ray"),
                       (["diarize", "--out-dir", str(tmp_path)], "no input files"),
                       (["diarize", "--files-from", str(tmp_path / "nope"), "--out-dir", str(tmp_path)], "nope")):
        assert main(argv) == 2
        assert word in capsys.readouterr().err


@pytest.mark.parametrize("files", [
    ["a.wav", "b.wav", "c.wav"],
    ["d1/a.wav", "d2/a.wav", "a.flac", "b.ogg", "A.mp3"],
    ["a.flac", "a.ogg", "a.flac.wav", "x/a.flac.wav", "a.flac-2.wav", "b.wav"],
    ["d/x.wav", "d/x.wav", "x.wav", "x.wav-2.flac", "d_x.wav.ogg"],
])
def test_streamed_names_equal_output_names(tmp_path, files):
    listing = tmp_path / "list"
    listing.write_text("\n".join(files[1:]) + "\n")
    total, notes, named = plan_names(input_lister(files[:1], str(listing)))
    names, expected_notes = output_names(files)
    assert total == len(files)
    assert list(named()) == list(zip(files, names))
    assert notes == expected_notes
