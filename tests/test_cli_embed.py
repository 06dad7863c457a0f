"""``stream-spk embed`` and ``models`` commands, including bad input."""

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from stream_spk.audio import read_audio
from stream_spk.cli.main import main

from conftest import cosine


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream_spk", *args], capture_output=True, text=True)


@pytest.mark.real_model
def test_embed_441k_stereo_equals_16k_mono(tmp_path, clips, checkpoint_path):
    from scipy.signal import butter, resample_poly, sosfiltfilt

    # The 16 kHz mono version, band-limited below 7 kHz so that resamplers with different
    # transition bands (soxr in the app, scipy here) agree, and a 44.1 kHz stereo file made from it.
    mono16 = sosfiltfilt(butter(12, 7000, fs=16000, output="sos"), clips[1]).astype(np.float32)
    up = resample_poly(mono16, 441, 160).astype(np.float32)
    stereo = np.stack([up * 0.8, up * 1.2], axis=1)
    sf.write(tmp_path / "stereo44.wav", stereo, 44100, subtype="FLOAT")
    sf.write(tmp_path / "mono16.wav", mono16, 16000, subtype="FLOAT")
    out = tmp_path / "emb.npy"
    assert main(["embed", str(tmp_path / "stereo44.wav"), str(tmp_path / "mono16.wav"),
                 "--out", str(out), "--model-file", str(checkpoint_path), "--precision", "fp32"]) == 0
    emb = np.load(out)
    assert emb.shape == (2, 192) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert cosine(emb[0], emb[1]) > 0.999


@pytest.mark.real_model
def test_embed_keeps_argument_order(tmp_path, clips, checkpoint_path, embedder_fp32):
    paths = []
    for k in (2, 0, 1):
        paths.append(str(tmp_path / f"c{k}.wav"))
        sf.write(paths[-1], clips[k], 16000)
    out = tmp_path / "e.npy"
    assert main(["embed", *paths, "--out", str(out), "--model-file", str(checkpoint_path),
                 "--precision", "fp32"]) == 0
    expected = embedder_fp32.embed([clips[2], clips[0], clips[1]])
    for a, b in zip(np.load(out), expected):
        assert cosine(a, b) > 0.99999


def test_bad_files_give_one_line_error(tmp_path):
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    truncated = tmp_path / "truncated.wav"
    sf.write(truncated, np.zeros(16000, np.float32), 16000)
    truncated.write_bytes(truncated.read_bytes()[:30])
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.full(16000, np.nan, np.float32), 16000, subtype="FLOAT")
    for bad, reason in ((tmp_path / "missing.wav", "no such file"), (text, "not a readable audio"),
                        (empty, "no audio samples"), (truncated, "not a readable audio"),
                        (nan, "NaN")):
        proc = _run("embed", str(bad), "--out", str(tmp_path / "o.npy"))
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and str(bad) in lines[0] and reason in lines[0], proc.stderr


def test_read_audio_downmixes_and_resamples(tmp_path):
    t = np.arange(48000) / 48000
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    sf.write(tmp_path / "st.wav", np.stack([tone, tone], 1), 48000)
    out = read_audio(tmp_path / "st.wav")
    assert out.dtype == np.float32 and out.shape == (16000,)
    assert abs(np.abs(out).max() - 0.5) < 0.02


def test_models_path_and_verify_on_a_wrong_file(tmp_path):
    wrong = tmp_path / "embedding_model.ckpt"
    wrong.write_bytes(b"junk")
    proc = _run("models", "verify", "--model-file", str(wrong))
    assert proc.returncode == 2 and "does not match" in proc.stderr


@pytest.mark.real_model
def test_models_verify_real(checkpoint_path):
    proc = _run("models", "verify", "--model-file", str(checkpoint_path))
    assert proc.returncode == 0 and "loaded strictly" in proc.stdout


def test_help_explains_commands():
    proc = _run("--help")
    assert proc.returncode == 0 and "embed" in proc.stdout and "models" in proc.stdout
