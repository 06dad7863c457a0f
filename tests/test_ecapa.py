"""ECAPA-TDNN: exact checkpoint structure, SpeechBrain parity, exact length masks, precision."""

import numpy as np
import pytest
import torch

from stream_spk.models.ecapa import EcapaConfig, EcapaTdnn
from stream_spk.models.embedder import Embedder

from conftest import cosine

TINY = EcapaConfig(channels=(32, 32, 32, 32, 96), attention_channels=8, se_channels=8, lin_neurons=16)


def _tiny_embedder(seed: int = 0) -> Embedder:
    torch.manual_seed(seed)
    model = EcapaTdnn(TINY)
    # Non-trivial batch-norm statistics so masking mistakes show up in the outputs.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return Embedder(model, device="cpu", precision="fp32")


def test_module_tree_produces_the_checkpoint_keys():
    keys = list(EcapaTdnn().state_dict())
    assert len(keys) == 231
    for key in ("blocks.0.conv.conv.weight", "blocks.1.tdnn1.conv.conv.weight",
                "blocks.3.res2net_block.blocks.6.norm.norm.running_var", "blocks.2.se_block.conv2.conv.bias",
                "mfa.conv.conv.weight", "asp.tdnn.conv.conv.weight", "asp.conv.conv.weight",
                "asp_bn.norm.weight", "fc.conv.weight", "fc.conv.bias"):
        assert key in keys


def test_tiny_model_batched_equals_alone_and_masks_are_real():
    emb = _tiny_embedder()
    rng = np.random.default_rng(1)
    wavs = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (8000, 14400, 40000, 20000)]
    batched = emb.embed(wavs)
    for w, b in zip(wavs, batched):
        assert cosine(emb.embed([w])[0], b) >= 0.99999
    # Changing padded samples (even to NaN) must not change any output.
    n = torch.tensor([w.size for w in wavs])
    pad_a = torch.zeros(4, 40000)
    for i, w in enumerate(wavs):
        pad_a[i, : w.size] = torch.from_numpy(w)
    pad_b = pad_a.clone()
    garbage = torch.randn(4, 40000) * 10
    mask = torch.arange(40000)[None] >= n[:, None]
    pad_b[mask] = garbage[mask]
    pad_b[0, -1] = float("nan")
    out_a, out_b = emb.embed_padded(pad_a, n), emb.embed_padded(pad_b, n)
    assert torch.isfinite(out_b).all()
    torch.testing.assert_close(out_a, out_b, atol=1e-5, rtol=1e-5)


def test_naive_reflect_padding_would_leak():
    """Guard the test above: without per-item reflection a short item does change."""
    emb = _tiny_embedder()
    rng = np.random.default_rng(2)
    short, long_ = (rng.standard_normal(n).astype(np.float32) for n in (8000, 40000))
    n = torch.tensor([8000, 40000])
    batch = torch.zeros(2, 40000)
    batch[0, :8000], batch[1] = torch.from_numpy(short), torch.from_numpy(long_)
    wrong = EcapaTdnn.forward.__globals__["_reflect_index"]
    try:
        EcapaTdnn.forward.__globals__["_reflect_index"] = lambda lengths, t, pad: wrong(
            torch.full_like(lengths, t), t, pad)
        leaked = emb.embed_padded(batch, n)[0]
    finally:
        EcapaTdnn.forward.__globals__["_reflect_index"] = wrong
    alone = emb.embed_padded(torch.from_numpy(short)[None], n[:1])[0]
    assert cosine(leaked.numpy(), alone.numpy()) < 0.99999


def test_too_short_and_nan_windows_are_refused():
    emb = _tiny_embedder()
    with pytest.raises(ValueError, match="samples"):
        emb.embed([np.zeros(100, np.float32)])
    with pytest.raises(ValueError, match="NaN"):
        emb.embed([np.full(8000, np.nan, np.float32)])
    assert emb.embed([]).shape == (0, 16)


def test_bucketed_call_keeps_input_order():
    emb = _tiny_embedder()
    emb.max_batch = 3
    rng = np.random.default_rng(3)
    wavs = [rng.standard_normal(int(n)).astype(np.float32) for n in rng.integers(4000, 30000, 8)]
    out = emb.embed(wavs)
    for w, o in zip(wavs, out):
        assert cosine(emb.embed([w])[0], o) >= 0.99999


@pytest.mark.real_model
def test_checkpoint_loads_strictly(checkpoint_path):
    from stream_spk.models.embedder import load_ecapa

    model = load_ecapa(checkpoint_path)
    state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    assert set(state) == set(model.state_dict())
    assert sum(t.numel() for t in state.values()) == 20_805_983


@pytest.mark.real_model
@pytest.mark.parametrize("k", range(4))
def test_unbatched_embedding_matches_speechbrain(k, embedder_fp32, clips, reference):
    assert cosine(embedder_fp32.embed([clips[k]])[0], reference[f"emb{k}"]) > 0.9999


@pytest.mark.real_model
def test_short_window_batched_with_long_one_equals_alone(embedder_fp32, clips):
    short = clips[2][: int(0.9 * 16000)]
    long_ = clips[2][:64000] if clips[2].size >= 64000 else np.tile(clips[2], 2)[:64000]
    together = embedder_fp32.embed([short, long_])
    assert cosine(together[0], embedder_fp32.embed([short])[0]) >= 0.99999
    assert cosine(together[1], embedder_fp32.embed([long_])[0]) >= 0.99999


@pytest.mark.real_model
def test_random_length_mixes_batched_equal_alone(embedder_fp32, clips):
    speech = np.concatenate(clips)
    rng = np.random.default_rng(7)
    for _ in range(2):
        wavs = []
        for n in rng.uniform(0.5, 6.0, size=6):
            length = int(n * 16000)
            start = int(rng.integers(0, speech.size - length))
            wavs.append(speech[start : start + length])
        batched = embedder_fp32.embed(wavs)
        for w, b in zip(wavs, batched):
            assert cosine(embedder_fp32.embed([w])[0], b) >= 0.99999


@pytest.mark.real_model
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_parity(precision, embedder_fp32, clips):
    low = Embedder(embedder_fp32.model, device="cpu", precision=precision)
    ref = embedder_fp32.embed(clips)
    out = low.embed(clips)
    for a, b in zip(ref, out):
        assert cosine(a, b) >= 0.999


def test_flush_denormals_zeroes_only_subnormals():
    from stream_spk.models.ecapa import flush_denormals_

    model = EcapaTdnn(TINY)
    w = model.asp.tdnn.conv.conv.weight
    with torch.no_grad():
        w[0, :5, 0] = torch.tensor([1e-40, -3e-42, 1e-30, 0.5, 0.0])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert flush_denormals_(model) == 2
    assert w[0, :5, 0].tolist() == [0.0, 0.0, pytest.approx(1e-30), 0.5, 0.0]
    for k, v in model.state_dict().items():
        changed = v != before[k]
        assert int(changed.sum()) == (2 if k == "asp.tdnn.conv.conv.weight" else 0)


def test_split_global_context_conv_equals_concatenation():
    """The pooling's attention logits equal tdnn(cat[x, mean, std]) computed the plain way."""
    from stream_spk.models.ecapa import AttentiveStatisticsPooling

    torch.manual_seed(4)
    asp = AttentiveStatisticsPooling(24, 8).eval()
    asp.tdnn.norm.norm.running_mean.uniform_(-0.5, 0.5)
    x = torch.randn(3, 24, 40)
    mean, std = torch.randn(3, 24), torch.rand(3, 24) + 0.1
    context = torch.cat([x, mean[:, :, None].expand(-1, -1, 40), std[:, :, None].expand(-1, -1, 40)], 1)
    with torch.no_grad():
        torch.testing.assert_close(asp._logits(x, mean, std), asp.conv(asp.tanh(asp.tdnn(context))))


@pytest.mark.real_model
def test_loaded_checkpoint_has_no_subnormal_weights(checkpoint_path):
    """The checkpoint's 73,476 subnormal weights made the fp32 CPU path ~4.5x slower."""
    from stream_spk.models.embedder import load_ecapa

    state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    tiny = torch.finfo(torch.float32).tiny
    raw = sum(int(((v != 0) & (v.abs() < tiny)).sum()) for v in state.values() if v.is_floating_point())
    assert raw > 0  # the guard below tests something
    model = load_ecapa(checkpoint_path)
    for t in model.state_dict().values():
        if t.is_floating_point():
            assert not bool(((t != 0) & (t.abs() < tiny)).any())
