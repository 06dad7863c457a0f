"""Inference backends (torch / ONNX Runtime / OpenVINO): parity with torch fp32, exact masks and
frame weights, the export cache (reuse, sha keying, corrupt files), fallback and clear errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from stream_spk.models import backends
from stream_spk.models.backends import BackendError, resolve_backend
from stream_spk.models.ecapa import EcapaConfig, EcapaTdnn
from stream_spk.models.embedder import Embedder

from conftest import cosine, count_calls

TINY = EcapaConfig(channels=(32, 32, 32, 32, 96), attention_channels=8, se_channels=8, lin_neurons=16)
EXPORTED = [b for b in ("onnx", "openvino") if backends.installed(b)]
needs_exported = pytest.mark.skipif(not EXPORTED, reason="neither onnxruntime nor openvino (+ onnx) installed")


def _tiny_model(seed: int = 0) -> EcapaTdnn:
    torch.manual_seed(seed)
    model = EcapaTdnn(TINY)
    for module in model.modules():  # non-trivial batch-norm statistics, as in test_ecapa
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _wavs(seed: int, lengths=(8000, 14400, 40000, 20000)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n).astype(np.float32) * 0.1 for n in lengths]


def _weights(wavs: list[np.ndarray], seed: int) -> list[np.ndarray]:
    """Per-sample weights: a random stretch of each waveform is another speaker's (0), the rest
    ramps between 0.3 and 1."""
    rng = np.random.default_rng(seed)
    out = []
    for w in wavs:
        v = np.linspace(0.3, 1.0, w.size, dtype=np.float32)
        a = int(rng.integers(0, w.size // 2))
        v[a : a + w.size // 4] = 0.0
        out.append(v)
    return out


@pytest.fixture
def export_count(monkeypatch):
    """Counts calls of the exporter."""
    return count_calls(monkeypatch, backends, "export_onnx")


# ---- errors and the auto choice ---------------------------------------------------------------


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(BackendError, match="unknown inference backend 'tensorrt'"):
        Embedder(_tiny_model(), device="cpu", backend="tensorrt")


def test_uninstalled_backend_is_a_clear_error_and_auto_skips_it(monkeypatch):
    monkeypatch.setitem(backends._REQUIRES, "onnx", ("no_such_module_onnxruntime", "onnx"))
    monkeypatch.setitem(backends._REQUIRES, "openvino", ("no_such_module_openvino", "onnx"))
    with pytest.raises(BackendError) as err:
        Embedder(_tiny_model(), device="cpu", backend="onnx")
    msg = str(err.value)
    assert "\n" not in msg and "no_such_module_onnxruntime" in msg and "stream-spk[onnx]" in msg
    with pytest.raises(BackendError, match="no_such_module_openvino"):
        Embedder.from_checkpoint("/nonexistent/ckpt", device="cpu", backend="openvino")  # before any load
    assert Embedder(_tiny_model(), device="cpu", precision="fp32", backend="auto").backend == "torch"
    assert backends.available_backends() == ["torch"]


def test_device_and_precision_limits_of_the_exported_backends(monkeypatch):
    monkeypatch.setattr(backends, "installed", lambda name: True)
    cuda = torch.device("cuda")
    with pytest.raises(BackendError, match="CPU only"):
        resolve_backend("onnx", cuda, "auto")
    with pytest.raises(BackendError, match="fp32 only"):
        resolve_backend("onnx", torch.device("cpu"), "bf16")
    assert resolve_backend("auto", cuda, "auto") == "torch"  # CUDA keeps torch
    assert resolve_backend("auto", torch.device("cpu"), "auto") == "openvino"
    assert resolve_backend("openvino", torch.device("cpu"), "fp16") == "openvino"
    monkeypatch.setattr(backends, "installed", lambda name: name != "openvino")
    assert resolve_backend("auto", torch.device("cpu"), "fp32") == "onnx"


def test_nothing_is_imported_or_exported_before_the_first_embedding(tmp_path):
    code = (
        "import sys\n"
        "from stream_spk.models.embedder import Embedder\n"
        "from stream_spk.models.ecapa import EcapaConfig, EcapaTdnn\n"
        "from stream_spk.session import SessionOptions\n"
        "cfg = EcapaConfig(channels=(32, 32, 32, 32, 96), attention_channels=8, se_channels=8, lin_neurons=16)\n"
        "Embedder(EcapaTdnn(cfg), device='cpu', backend='auto')\n"
        "bad = [m for m in ('onnx', 'onnxruntime', 'openvino') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    env = {"STREAM_SPK_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin", "OMP_WAIT_POLICY": "PASSIVE"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
    assert not (tmp_path / "cache").exists()


# ---- tiny-model parity and the cache ------------------------------------------------------------


@needs_exported
@pytest.mark.parametrize("backend", EXPORTED)
def test_tiny_model_parity_exact_masks_and_frame_weights(backend, cache):
    model = _tiny_model(1)
    ref = Embedder(model, device="cpu", precision="fp32")
    emb = Embedder(model, device="cpu", precision="fp32", backend=backend)
    wavs = _wavs(2)
    weights = _weights(wavs, 3)
    batched = emb.embed(wavs)
    assert emb.backend == backend  # verified, no fallback
    for w, b, r in zip(wavs, batched, ref.embed(wavs)):
        assert cosine(b, r) >= 0.9999
        assert cosine(emb.embed([w])[0], b) >= 0.99999  # alone == padded in a batch
    weighted = emb.embed(wavs, weights)
    for i, (b, r) in enumerate(zip(weighted, ref.embed(wavs, weights))):
        assert cosine(b, r) >= 0.9999
        assert cosine(emb.embed([wavs[i]], [weights[i]])[0], b) >= 0.99999
    assert min(cosine(a, b) for a, b in zip(weighted, batched)) < 0.999  # the weights matter


@pytest.mark.skipif(not backends.installed("openvino"), reason="openvino (+ onnx) not installed")
def test_openvino_runs_short_windows_on_fixed_shape_compilations(cache):
    model = _tiny_model(4)
    path, _ = backends.ensure_export(model, backends.weights_digest(model))
    runner = backends.FixedShapeEcapaRunner(path, 1, "fp32")
    rng = np.random.default_rng(5)
    lengths = np.array([150, 60, 151, 90, 120, 151, 70], np.int64)  # 7 = 4 + 1 + 1 + 1
    feats = np.zeros((7, 151, TINY.input_size), np.float32)
    weights = np.zeros((7, 151), np.float32)
    for i, n in enumerate(lengths):
        feats[i, :n] = rng.standard_normal((n, TINY.input_size))
        weights[i, :n] = rng.uniform(0.0, 1.0, n)
    out = runner(feats, lengths, weights)
    assert sorted(runner._fixed) == [1, 4] and runner._dynamic is None
    with torch.inference_mode():
        ref = model(torch.from_numpy(feats), torch.from_numpy(lengths), torch.from_numpy(weights)).numpy()
    for o, r in zip(out, ref):
        assert cosine(o, r) >= 0.99999  # padded to 160 frames (weight 0), as torch on the batch
    long = np.concatenate([feats, np.zeros((7, 40, TINY.input_size), np.float32)], axis=1)  # 191 frames
    long_w = np.concatenate([weights, np.zeros((7, 40), np.float32)], axis=1)
    assert runner._dynamic is None
    again = runner(long, lengths, long_w)
    assert runner._dynamic is not None and sorted(runner._fixed) == [1, 4]  # over 160 frames: dynamic axes
    for o, r in zip(again, ref):
        assert cosine(o, r) >= 0.99999


@needs_exported
def test_export_is_cached_keyed_by_sha_and_reused(cache, export_count):
    backend = EXPORTED[0]
    model = _tiny_model(4)
    wavs = _wavs(5, (9000, 12000))
    Embedder(model, device="cpu", precision="fp32", backend=backend)
    assert export_count == [] and not (cache / "exports").exists()  # construction exports nothing
    first = Embedder(model, device="cpu", precision="fp32", backend=backend).embed(wavs)
    assert len(export_count) == 1
    files = sorted(p.name for p in (cache / "exports").iterdir() if p.is_file())
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".onnx")  # no temporary left
    again = Embedder(model, device="cpu", precision="fp32", backend=backend)
    np.testing.assert_allclose(again.embed(wavs), first, atol=1e-6)
    assert len(export_count) == 1 and again.backend == backend  # reused
    Embedder(_tiny_model(6), device="cpu", precision="fp32", backend=backend).embed(wavs)
    assert len(export_count) == 2  # other weights, another file
    assert len(list((cache / "exports").glob("*.onnx"))) == 2
    named = Embedder(model, device="cpu", precision="fp32", backend=backend, weights_sha256="ab" * 32)
    named.embed(wavs)
    assert (cache / "exports" / f"ecapa-{'ab' * 8}-x{backends.EXPORT_VERSION}-op{backends.OPSET}.onnx").is_file()


@needs_exported
def test_corrupt_cached_export_is_exported_again(cache, export_count):
    backend = EXPORTED[0]
    model = _tiny_model(7)
    wavs = _wavs(8, (9000, 15000))
    ref = Embedder(model, device="cpu", precision="fp32").embed(wavs)
    Embedder(model, device="cpu", precision="fp32", backend=backend).embed(wavs)
    (onnx_file,) = (cache / "exports").glob("*.onnx")
    data = bytearray(onnx_file.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\x00" * 64  # flipped weights, same size
    onnx_file.write_bytes(bytes(data))
    emb = Embedder(model, device="cpu", precision="fp32", backend=backend)
    out = emb.embed(wavs)
    assert len(export_count) == 2 and emb.backend == backend
    assert min(cosine(a, b) for a, b in zip(out, ref)) >= 0.9999
    onnx_file.write_bytes(b"truncated")
    Embedder(model, device="cpu", precision="fp32", backend=backend).embed(wavs)
    assert len(export_count) == 3


@needs_exported
def test_a_backend_failing_verification_falls_back_to_torch_with_one_warning(cache, monkeypatch, capsys):
    backend = EXPORTED[0]
    real = backends.make_runner

    def skewed(*args):
        runner = real(*args)
        return lambda f, n, w: runner(f, n, w) + np.float32(0.5)  # a wrong network

    monkeypatch.setattr(backends, "make_runner", skewed)
    model = _tiny_model(9)
    wavs = _wavs(10, (9000, 15000))
    emb = Embedder(model, device="cpu", precision="auto", backend=backend)
    out = emb.embed(wavs)
    assert emb.backend == "torch" and emb._runner is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "warning" in err[0] and "refused" in err[0] and "using torch" in err[0]
    ref = Embedder(model, device="cpu", precision=emb.precision).embed(wavs)
    np.testing.assert_allclose(out, ref, atol=1e-6)


# ---- the real model ---------------------------------------------------------------------------------


REAL_CASES = [(b, "fp32") for b in EXPORTED] + [("openvino", "bf16")] * ("openvino" in EXPORTED)


@pytest.fixture(scope="module")
def real_model(checkpoint_path):
    from stream_spk.models.embedder import load_ecapa

    return load_ecapa(checkpoint_path)


@pytest.mark.real_model
@pytest.mark.slow
@needs_exported
@pytest.mark.parametrize(("backend", "precision"), REAL_CASES)
def test_real_model_parity_exact_masks_and_frame_weights(backend, precision, real_model, real_cache, clips):
    from stream_spk.models.registry import ECAPA_VOXCELEB

    ref = Embedder(real_model, device="cpu", precision="fp32")
    emb = Embedder(real_model, device="cpu", precision=precision, backend=backend,
                   weights_sha256=ECAPA_VOXCELEB.sha256)
    batched = emb.embed(clips)
    assert (emb.backend, emb.precision) == (backend, precision)
    # a clip alone == padded among longer ones; at bf16 the two runs may take different OpenVINO
    # compilations (fixed shape alone, dynamic among clips over 1.6 s), which round differently
    same = 0.99999 if precision == "fp32" else 0.99995
    for clip, b, r in zip(clips, batched, ref.embed(clips)):
        assert cosine(b, r) >= 0.9999
        assert cosine(emb.embed([clip])[0], b) >= same
    weights = _weights(clips, 11)
    weighted = emb.embed(clips, weights)
    for i, (b, r) in enumerate(zip(weighted, ref.embed(clips, weights))):
        assert cosine(b, r) >= 0.9999
        assert cosine(emb.embed([clips[i]], [weights[i]])[0], b) >= same


def test_small_batches_run_on_the_one_thread_instance(monkeypatch, tmp_path):
    made = []

    class FakeRunner:
        name = "onnx"

        def __init__(self, path, threads):
            self.threads, self.calls = threads, []
            made.append(self)

        def run(self, feeds):
            self.calls.append(next(iter(feeds.values())).shape[0])
            return np.zeros(1, np.float32)

    monkeypatch.setattr(backends, "OnnxRuntimeRunner", FakeRunner)
    runner = backends.make_runner("onnx", tmp_path / "m.onnx", "fp32", 4)
    for batch in (1, 2, 3, 8, 1):
        runner(np.zeros((batch, 80, 10), np.float32), np.full(batch, 10), np.ones((batch, 10), np.float32))
    small, large = sorted(made, key=lambda r: r.threads)
    assert (small.threads, large.threads) == (1, 4) and runner.name == "onnx"
    assert small.calls == [1, 2, 1] and large.calls == [3, 8]
    made.clear()
    single = backends.make_runner("onnx", tmp_path / "m.onnx", "fp32", 1)
    assert len(made) == 1 and single is made[0]  # one thread anyway: one instance
