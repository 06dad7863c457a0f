"""The segmentation model (segmentation-3.0) on the exported backends (ONNX Runtime / OpenVINO):
parity with torch fp32, the export cache (reuse, sha keying, corrupt files), fallback to torch
with one warning line, the ``auto`` choice, and ``build_pipeline`` passing the session's backend."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from stream_spk.models import backends
from stream_spk.models import segmentation as seg
from stream_spk.models.backends import BackendError, resolve_segmentation_backend

from conftest import count_calls

EXPORTED = [b for b in ("onnx", "openvino") if backends.installed(b)]
#: every exported way to run the model here, the two-engine split included when both are installed
RUNNABLE = EXPORTED + ([backends.SPLIT_BACKEND] if len(EXPORTED) == 2 else [])
needs_exported = pytest.mark.skipif(not EXPORTED, reason="neither onnxruntime nor openvino (+ onnx) installed")
CHUNK = 5 * seg.SAMPLE_RATE


def _model(seed: int = 0) -> seg.SegmentationModel:
    """The real architecture with seeded random weights (no checkpoint needed)."""
    torch.manual_seed(seed)
    return seg.SegmentationModel().eval()


def _chunks(seed: int, batch: int = 3, n: int = CHUNK) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, n)).astype(np.float32) * 0.1
    x[:, : n // 3] *= 0.05  # quieter stretches, as real chunks have
    return x


@pytest.fixture
def export_count(monkeypatch):
    """Counts calls of the exporter."""
    return count_calls(monkeypatch, backends, "export_segmentation_onnx")


# ---- the auto choice and errors ------------------------------------------------------------------


def test_auto_choice_for_segmentation(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(backends, "installed", lambda name: True)
    # the fastest at fp32: OpenVINO's convolutions, ONNX Runtime's LSTM
    assert resolve_segmentation_backend("auto", cpu, "fp32") == backends.SPLIT_BACKEND
    assert resolve_segmentation_backend("auto", cpu, "auto") == backends.SPLIT_BACKEND
    assert resolve_segmentation_backend(backends.SPLIT_BACKEND, cpu, "auto") == backends.SPLIT_BACKEND
    with pytest.raises(BackendError, match="CPU only"):
        resolve_segmentation_backend(backends.SPLIT_BACKEND, cuda, "fp32")
    assert resolve_segmentation_backend("auto", cpu, "bf16") == "torch"  # bf16 changes too many frame classes
    assert resolve_segmentation_backend("auto", cuda, "fp32") == "torch"
    assert backends.segmentation_backend_precision("openvino", "auto") == "fp32"
    with pytest.raises(BackendError, match="CPU only"):
        resolve_segmentation_backend("openvino", cuda, "fp32")
    with pytest.raises(BackendError, match="fp32 only"):
        resolve_segmentation_backend("onnx", cpu, "bf16")
    monkeypatch.setattr(backends, "installed", lambda name: name != "openvino")
    assert resolve_segmentation_backend("auto", cpu, "fp32") == "onnx"
    with pytest.raises(BackendError, match="backend 'openvino' needs"):
        resolve_segmentation_backend(backends.SPLIT_BACKEND, cpu, "fp32")
    monkeypatch.setattr(backends, "installed", lambda name: name != "onnx")
    assert resolve_segmentation_backend("auto", cpu, "fp32") == "openvino"
    monkeypatch.setattr(backends, "installed", lambda name: name == "torch")
    assert resolve_segmentation_backend("auto", cpu, "fp32") == "torch"
    with pytest.raises(BackendError, match="stream-spk\\[openvino\\]"):
        seg.Segmenter(_model(), device="cpu", backend="openvino")
    with pytest.raises(BackendError, match="stream-spk\\[onnx\\]"):  # before the checkpoint is looked for
        seg.Segmenter.from_checkpoint("/nonexistent/ckpt", device="cpu", backend="onnx")
    with pytest.raises(BackendError, match="unknown inference backend"):
        seg.Segmenter(_model(), device="cpu", backend="tensorrt")


def test_nothing_is_imported_or_exported_before_the_first_call(tmp_path):
    code = (
        "import sys\n"
        "from stream_spk.models.segmentation import SegmentationModel, Segmenter\n"
        "s = Segmenter(SegmentationModel(), device='cpu', backend='auto')\n"
        "bad = [m for m in ('onnx', 'onnxruntime', 'openvino') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    env = {"STREAM_SPK_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin", "OMP_WAIT_POLICY": "PASSIVE"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
    assert not (tmp_path / "cache").exists()


def test_build_pipeline_passes_the_session_backend_to_the_segmenter(monkeypatch):
    from stream_spk import segmented, session

    seen = {}

    def fake_from_checkpoint(path=None, device="auto", precision="fp32", *, backend="torch", quiet=False):
        seen.update(device=device, precision=precision, backend=backend)
        return seg.Segmenter(_model(), device="cpu")

    monkeypatch.setattr(seg.Segmenter, "from_checkpoint", staticmethod(fake_from_checkpoint))
    monkeypatch.setattr(segmented, "SegmentedPipeline",
                        lambda embedder, segmenter, config, profiles, context_segmenter: (segmenter, context_segmenter))
    warmed = []
    monkeypatch.setattr(session, "_warm_up", lambda embedder, *segmenters: warmed.extend(segmenters))
    opts = session.SessionOptions(backend="onnx", compute_device="cpu", use_profiles=False)
    chunk_segmenter, context_segmenter = session.build_pipeline(opts, embedder=object())
    assert seen == {"device": "cpu", "precision": "fp32", "backend": "onnx"}  # precision stays the default fp32
    assert chunk_segmenter.chunk_samples == CHUNK
    # the longer look: the same model (loaded once) on the context chunk
    assert context_segmenter.chunk_samples == round(opts.segmented_config().context_chunk * seg.SAMPLE_RATE) > CHUNK
    assert context_segmenter.segmenter is chunk_segmenter.segmenter
    assert warmed == [chunk_segmenter, context_segmenter]  # first-use work happens while the session is set up


def test_without_the_second_look_only_the_5_s_look_is_built(monkeypatch):
    from stream_spk import segmented, session

    monkeypatch.setattr(seg.Segmenter, "from_checkpoint",
                        staticmethod(lambda *a, **k: seg.Segmenter(_model(), device="cpu")))
    built = {}

    def fake_pipeline(embedder, segmenter, config, profiles, context_segmenter):
        built.update(config=config, context=context_segmenter)
        return segmenter

    monkeypatch.setattr(segmented, "SegmentedPipeline", fake_pipeline)
    warmed = []
    monkeypatch.setattr(session, "_warm_up", lambda embedder, *segmenters: warmed.extend(segmenters))
    chunk_segmenter = session.build_pipeline(session.SessionOptions(second_look=False, use_profiles=False),
                                             embedder=object())
    assert built["context"] is None and warmed == [chunk_segmenter]
    # speech and overlap from the 5 s look alone, at the speech threshold the CV chose for it
    assert built["config"].context_weight == 0.0
    assert built["config"].segmentation.speech_threshold == 0.55
    with_look = session.SessionOptions().segmented_config()
    assert (with_look.context_weight, with_look.segmentation.speech_threshold) == (0.5, 0.5)
    # a threshold the user gives wins either way
    mine = session.SessionOptions(second_look=False, vad_threshold=0.7).segmented_config()
    assert mine.segmentation.speech_threshold == 0.7


# ---- parity, cache and fallback with seeded weights ----------------------------------------------------


@needs_exported
@pytest.mark.parametrize("backend", RUNNABLE)
def test_parity_with_torch_fp32_any_batch_and_length(backend, cache):
    model = _model(1)
    ref = seg.Segmenter(model, device="cpu", precision="fp32")
    s = seg.Segmenter(model, device="cpu", precision="auto", backend=backend)
    chunks = _chunks(2)
    out = s(chunks)
    assert (s.backend, s.precision) == (backend, "fp32")  # verified, no fallback; auto = fp32
    assert s._runner is not None
    np.testing.assert_allclose(out.probs, ref(chunks).probs, atol=backends.SEG_MAX_PROB_DIFF)
    np.testing.assert_allclose(out.log_probs, ref(chunks).log_probs, atol=1e-2)
    np.testing.assert_allclose(s(chunks[1]).log_probs[0], out.log_probs[1], atol=1e-4)  # alone == in a batch
    longer = _chunks(3, 2, 2 * CHUNK + 1234)  # dynamic length
    got = s(longer)
    assert got.log_probs.shape == (2, seg.num_frames(2 * CHUNK + 1234), seg.NUM_CLASSES)
    np.testing.assert_allclose(got.probs, ref(longer).probs, atol=backends.SEG_MAX_PROB_DIFF)
    assert s(np.zeros((0, CHUNK), np.float32)).log_probs.shape == (0, seg.num_frames(CHUNK), 7)
    assert not model.training  # exporting (a part of) it left the caller's model in eval mode


@needs_exported
def test_export_is_cached_keyed_by_sha_and_reused(cache, export_count):
    backend = EXPORTED[0]
    model = _model(4)
    chunks = _chunks(5, 2)
    seg.Segmenter(model, device="cpu", backend=backend)
    assert export_count == [] and not (cache / "exports").exists()  # construction exports nothing
    first = seg.Segmenter(model, device="cpu", backend=backend)(chunks).log_probs
    assert len(export_count) == 1
    files = sorted(p.name for p in (cache / "exports").iterdir() if p.is_file())
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".onnx")  # no temporary left
    assert files[1].startswith("segmentation-")
    again = seg.Segmenter(model, device="cpu", backend=backend)
    np.testing.assert_allclose(again(chunks).log_probs, first, atol=1e-6)
    assert len(export_count) == 1 and again.backend == backend  # reused
    seg.Segmenter(_model(6), device="cpu", backend=backend)(chunks)
    assert len(export_count) == 2  # other weights, another file
    assert len(list((cache / "exports").glob("segmentation-*.onnx"))) == 2
    seg.Segmenter(model, device="cpu", backend=backend, weights_sha256="cd" * 32)(chunks)
    name = f"segmentation-{'cd' * 8}-x{backends.SEG_EXPORT_VERSION}-op{backends.OPSET}.onnx"
    assert (cache / "exports" / name).is_file()
    # the ECAPA export with the same sha is another file: the two never collide
    assert backends.export_path("cd" * 32, cache / "exports") != cache / "exports" / name


@needs_exported
def test_corrupt_cached_export_is_exported_again(cache, export_count):
    backend = EXPORTED[0]
    model = _model(7)
    chunks = _chunks(8, 2)
    ref = seg.Segmenter(model, device="cpu")(chunks).log_probs
    seg.Segmenter(model, device="cpu", backend=backend)(chunks)
    (onnx_file,) = (cache / "exports").glob("*.onnx")
    data = bytearray(onnx_file.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\x00" * 64  # flipped weights, same size
    onnx_file.write_bytes(bytes(data))
    s = seg.Segmenter(model, device="cpu", backend=backend)
    out = s(chunks).log_probs
    assert len(export_count) == 2 and s.backend == backend
    np.testing.assert_allclose(np.exp(out), np.exp(ref), atol=backends.SEG_MAX_PROB_DIFF)
    onnx_file.write_bytes(b"truncated")
    seg.Segmenter(model, device="cpu", backend=backend)(chunks)
    assert len(export_count) == 3


@needs_exported
def test_a_backend_failing_verification_falls_back_to_torch_with_one_warning(cache, monkeypatch, capsys):
    backend = EXPORTED[0]
    real = backends.make_segmentation_runner

    def skewed(*args):
        runner = real(*args)
        return lambda w: runner(w) + np.float32(0.01)  # a slightly wrong network: probabilities 1% off

    monkeypatch.setattr(backends, "make_segmentation_runner", skewed)
    model = _model(9)
    chunks = _chunks(10, 2)
    s = seg.Segmenter(model, device="cpu", precision="fp32", backend=backend)
    out = s(chunks).log_probs
    assert (s.backend, s.precision) == ("torch", "fp32") and s._runner is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "warning" in err[0] and "refused" in err[0] and "using torch" in err[0]
    assert "segmentation" in err[0] and "probability difference" in err[0]
    np.testing.assert_array_equal(out, seg.Segmenter(model, device="cpu")(chunks).log_probs)
    s(chunks)
    assert capsys.readouterr().err == ""  # decided once


@needs_exported
def test_a_failing_backend_falls_back_to_torch_with_one_warning(cache, monkeypatch, capsys):
    def broken(*args):
        raise RuntimeError("no CPU plugin\nsecond line")

    monkeypatch.setattr(backends, "make_segmentation_runner", broken)
    s = seg.Segmenter(_model(11), device="cpu", backend=EXPORTED[0])
    s(_chunks(12, 1))
    assert s.backend == "torch"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not usable (no CPU plugin)" in err[0] and "using torch" in err[0]


def test_the_check_also_runs_a_batch_of_three_or_more():
    # a runner that is right for small batches only (a broken big-batch instance) is refused
    model = _model(13)

    def small_only(waveforms):
        with torch.inference_mode():
            out = model(torch.from_numpy(np.ascontiguousarray(waveforms))).float().numpy()
        return out if len(waveforms) <= backends.SMALL_BATCH else out + np.float32(0.5)

    chunks = _chunks(14, 1)
    assert not backends.verify_segmentation(model, small_only, chunks, "fp32").ok
    def item_by_item(waveforms):
        return np.concatenate([small_only(w[None]) for w in waveforms])

    assert backends.verify_segmentation(model, item_by_item, chunks, "fp32").ok


def test_reduced_precision_is_judged_by_the_most_likely_class():
    v = backends.SegmentationVerification
    assert v("fp32", 5e-4, 0.01, 0.9, 100).ok and not v("fp32", 2e-3, 2e-3, 1.0, 100).ok
    assert v("bf16", 0.1, 0.9, 0.996, 1000).ok and not v("bf16", 0.01, 0.01, 0.994, 1000).ok
    assert not v("fp32", float("nan"), 0.0, 1.0, 10).ok
    assert "98.00% of 50 frames" in v("bf16", 0.1, 1.0, 0.98, 50).describe()


# ---- the real checkpoint ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_segmentation_model():
    from stream_spk.models.registry import SEGMENTATION_3_0, resolve_checkpoint

    return seg.load_segmentation(resolve_checkpoint(None, SEGMENTATION_3_0, quiet=True))


@pytest.fixture(scope="module")
def real_chunks(data_dir) -> np.ndarray:
    import soundfile as sf

    wav, sr = sf.read(data_dir / "dev_libri03.wav", dtype="float32")
    assert sr == seg.SAMPLE_RATE
    return np.stack([wav[s : s + CHUNK] for s in range(0, len(wav) - CHUNK + 1, 2 * CHUNK)])


@pytest.mark.real_model
@pytest.mark.slow
@needs_exported
@pytest.mark.parametrize("backend", RUNNABLE)
def test_real_model_parity_on_real_speech(backend, real_segmentation_model, real_chunks, real_cache):
    from stream_spk.models.registry import SEGMENTATION_3_0

    ref = seg.Segmenter(real_segmentation_model, device="cpu", precision="fp32")(real_chunks).log_probs
    s = seg.Segmenter(real_segmentation_model, device="cpu", precision="fp32", backend=backend,
                      weights_sha256=SEGMENTATION_3_0.sha256)
    out = s(real_chunks).log_probs
    assert (s.backend, s.precision) == (backend, "fp32")
    assert len(np.unique(ref.argmax(-1))) >= 3  # silence and at least two local speakers
    np.testing.assert_allclose(np.exp(out), np.exp(ref), atol=backends.SEG_MAX_PROB_DIFF)
    np.testing.assert_allclose(out, ref, atol=1e-3)  # whole speech chunks are well conditioned (measured 4e-5)
    assert (out.argmax(-1) == ref.argmax(-1)).mean() >= 0.999
    np.testing.assert_allclose(s(real_chunks[1]).log_probs[0], out[1], atol=1e-4)  # alone == in a batch


@pytest.mark.real_model
@pytest.mark.slow
@needs_exported
@pytest.mark.parametrize("backend", RUNNABLE)
def test_real_model_accepted_on_the_zero_padded_chunks_a_stream_starts_with(backend, real_segmentation_model,
                                                                            data_dir, real_cache):
    """The first call of a stream gets chunks that are mostly zero padding: their instance norms
    amplify rounding (log-probs differ by up to ~1e-2) but the probabilities agree, and the
    backend is kept."""
    import soundfile as sf

    from stream_spk.models.registry import SEGMENTATION_3_0

    wav = sf.read(data_dir / "pyannote_sample.wav", dtype="float32")[0]
    chunks = np.zeros((8, CHUNK), np.float32)
    for k in range(8):
        n = 8000 * (k + 1) - 500
        chunks[k, -n:] = wav[:n]
    s = seg.Segmenter(real_segmentation_model, device="cpu", backend=backend, weights_sha256=SEGMENTATION_3_0.sha256)
    out = s(chunks).probs
    assert s.backend == backend
    ref = seg.Segmenter(real_segmentation_model, device="cpu")(chunks).probs
    np.testing.assert_allclose(out, ref, atol=backends.SEG_MAX_PROB_DIFF)


def test_warm_up_runs_each_network_once():
    from stream_spk import session

    calls = []

    class Emb:
        def embed(self, wavs):
            calls.append(("embed", [w.shape for w in wavs]))

    class Seg:
        chunk_samples = CHUNK

        def segment(self, chunks):
            calls.append(("segment", chunks.shape))

    session._warm_up(Emb(), Seg())
    session._warm_up(Emb())
    assert calls == [("embed", [(32000,)]), ("segment", (1, CHUNK)), ("embed", [(32000,)])]
