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
    header_only = tmp_path / "header_only.wav"
    header_only.write_bytes(_wav_header_only(tmp_path))
    for bad, reason in ((tmp_path / "missing.wav", "no such file"), (text, "not a readable audio"),
                        (empty, "no audio samples"), (truncated, "not a readable audio"),
                        (header_only, "no audio samples")):
        proc = _run("embed", str(bad), "--out", str(tmp_path / "o.npy"))
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and str(bad) in lines[0] and reason in lines[0], proc.stderr
    assert not (tmp_path / "o.npy").exists()


def _wav_header_only(tmp_path) -> bytes:
    sf.write(tmp_path / "full.wav", np.zeros(16000, np.float32), 16000, subtype="PCM_16")
    return (tmp_path / "full.wav").read_bytes()[:44]


class CountingEmbedder:
    """Embeds by a fixed projection of simple statistics; records the samples of every call."""

    min_samples = 640
    dim = 192

    def __init__(self):
        self.calls: list[list[int]] = []

    def embed(self, wavs):
        self.calls.append([len(w) for w in wavs])
        out = []
        for w in wavs:
            v = np.zeros(self.dim, np.float32)
            v[0], v[1], v[2] = 1.0, float(np.mean(np.abs(w))), len(w) / 16000 / 1000
            out.append(v / np.linalg.norm(v))
        return np.asarray(out, np.float32)


@pytest.fixture
def fake_embedder(monkeypatch):
    from stream_spk.cli import embed_cmd

    fake = CountingEmbedder()
    monkeypatch.setattr(embed_cmd, "make_embedder", lambda args: fake)
    return fake


def test_embed_long_file_in_bounded_pieces(tmp_path, fake_embedder):
    rng = np.random.default_rng(0)
    long = (0.1 * rng.standard_normal(16000 * 95)).astype(np.float32)
    short = long[: 16000 * 20]
    sf.write(tmp_path / "long.wav", long, 16000, subtype="FLOAT")
    sf.write(tmp_path / "short.wav", short, 16000, subtype="FLOAT")
    out = tmp_path / "e.npy"
    assert main(["embed", str(tmp_path / "short.wav"), str(tmp_path / "long.wav"), "--out", str(out)]) == 0
    sizes = [n for call in fake_embedder.calls for n in call]
    assert fake_embedder.calls[0] == [16000 * 20]  # up to 30 s: one window, as before
    assert max(sizes) <= 16000 * 30 and all(len(c) == 1 for c in fake_embedder.calls)
    assert sizes[1:] == [16000 * 95 // 4] * 4 and sum(sizes[1:]) == long.size  # 4 equal pieces, all used
    emb = np.load(out)
    assert emb.shape == (2, 192)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)
    pieces = CountingEmbedder().embed(np.split(long, 4))
    mean = pieces.mean(0)
    np.testing.assert_allclose(emb[1], mean / np.linalg.norm(mean), atol=1e-6)


def test_embed_uses_cut_and_nan_files_with_a_warning_like_replay(tmp_path, fake_embedder, capsys):
    data = (0.1 * np.random.default_rng(1).standard_normal(16000 * 4)).astype(np.float32)
    sf.write(tmp_path / "full.wav", data, 16000, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes((tmp_path / "full.wav").read_bytes()[: 44 + 2 * 16000 * 2])
    nan = data.copy()
    nan[100:110] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT")
    assert main(["embed", str(cut), str(tmp_path / "nan.wav"), "--out", str(tmp_path / "e.npy")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [f"stream-spk: warning: {cut}: truncated: the header promises 4.00 s, the file holds "
                   "2.00 s; used what is there",
                   f"stream-spk: warning: {tmp_path / 'nan.wav'}: 10 NaN or infinite sample value(s) "
                   "replaced by silence"]
    assert np.isfinite(np.load(tmp_path / "e.npy")).all()


def test_embed_out_without_npy_reports_the_file_written(tmp_path, fake_embedder, capsys):
    sf.write(tmp_path / "a.wav", np.zeros(16000, np.float32) + 0.01, 16000)
    assert main(["embed", str(tmp_path / "a.wav"), "--out", str(tmp_path / "emb")]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'emb.npy'}:" in out
    assert np.load(tmp_path / "emb.npy").shape == (1, 192)
    assert not (tmp_path / "emb").exists()


def test_embed_output_checked_before_the_model_loads(tmp_path, monkeypatch, capsys):
    from stream_spk.cli import embed_cmd

    def no_model(args):
        raise AssertionError("the model must not load before the output is known to be writable")

    monkeypatch.setattr(embed_cmd, "make_embedder", no_model)
    sf.write(tmp_path / "a.wav", np.zeros(16000, np.float32), 16000)
    (tmp_path / "folder.npy").mkdir()
    (tmp_path / "file").write_text("x")
    for out, why in ((tmp_path / "no" / "e.npy", "does not exist"), (tmp_path / "folder.npy", "is a folder"),
                     (tmp_path / "file" / "e.npy", "not a folder"), ("/proc/e.npy", "cannot write")):
        assert main(["embed", str(tmp_path / "a.wav"), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and why in err and str(out) in err, err


@pytest.mark.parametrize("device", ["meta", "mps", "xpu", "tpu", "cuda:99"])
def test_unusable_compute_device_is_one_line(tmp_path, monkeypatch, capsys, device):
    from stream_spk.models import embedder

    monkeypatch.setattr(embedder.Embedder, "from_checkpoint",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("model loaded")))
    sf.write(tmp_path / "a.wav", np.zeros(16000, np.float32), 16000)
    assert main(["embed", str(tmp_path / "a.wav"), "--out", str(tmp_path / "e.npy"),
                 "--compute-device", device]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and repr(device) in err, err


def test_embed_failure_keeps_the_earlier_output(tmp_path, fake_embedder, capsys):
    out = tmp_path / "e.npy"
    out.write_bytes(b"a good earlier result")
    sf.write(tmp_path / "good.wav", np.zeros(16000 * 3, np.float32) + 0.01, 16000)
    sf.write(tmp_path / "full.flac", (0.1 * np.random.default_rng(0).standard_normal(16000 * 3)), 16000)
    raw = (tmp_path / "full.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(raw[: len(raw) // 2])
    assert main(["embed", str(tmp_path / "good.wav"), str(tmp_path / "cut.flac"), "--out", str(out)]) == 2
    assert "cut.flac: cannot decode audio at" in capsys.readouterr().err
    assert out.read_bytes() == b"a good earlier result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.flac", "e.npy", "full.flac", "good.wav"]


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


@pytest.mark.parametrize("where", ["file", "proc"])
def test_unusable_cache_dir_is_one_line(tmp_path, monkeypatch, capsys, where):
    if where == "file":
        cache = tmp_path / "cache"
        cache.write_text("a file where the cache folder should be")
    else:
        cache = "/proc/stream-spk-cache"  # nobody, root included, can create anything there
    monkeypatch.setenv("STREAM_SPK_CACHE_DIR", str(cache))
    monkeypatch.delenv("STREAM_SPK_ECAPA_CKPT", raising=False)
    from stream_spk.models import registry

    def no_download(*a, **k):
        raise AssertionError("nothing may be downloaded into an unusable cache")

    monkeypatch.setattr(registry, "SOURCES", (("nowhere", no_download),))
    sf.write(tmp_path / "a.wav", np.zeros(16000, np.float32) + 0.01, 16000)
    assert main(["embed", str(tmp_path / "a.wav"), "--out", str(tmp_path / "e.npy")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(cache) in err and "STREAM_SPK_CACHE_DIR" in err, err
