"""Frame-weighted ECAPA embeddings: weights in the SE squeeze and the attentive statistics pooling."""

import numpy as np
import pytest
import torch

from stream_spk.models.ecapa import (
    AttentiveStatisticsPooling,
    EcapaConfig,
    EcapaTdnn,
    SEBlock,
    frame_weights,
)
from stream_spk.models.embedder import Embedder
from stream_spk.models.features import num_frames, sample_to_frame_weights

from conftest import cosine

TINY = EcapaConfig(channels=(32, 32, 32, 32, 96), attention_channels=8, se_channels=8, lin_neurons=16)


def _randomise_norms(model: torch.nn.Module) -> None:
    """Non-trivial batch-norm statistics so masking mistakes show up in the outputs."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)


def _tiny_model(seed: int = 0) -> EcapaTdnn:
    torch.manual_seed(seed)
    model = EcapaTdnn(TINY)
    _randomise_norms(model)
    return model.eval()


def _tiny_embedder(seed: int = 0) -> Embedder:
    return Embedder(_tiny_model(seed), device="cpu", precision="fp32")


def _asp(global_context: bool, seed: int = 0) -> AttentiveStatisticsPooling:
    torch.manual_seed(seed)
    asp = AttentiveStatisticsPooling(24, 8, global_context)
    _randomise_norms(asp)
    return asp.eval()


def _se(seed: int = 0) -> SEBlock:
    torch.manual_seed(seed)
    return SEBlock(24, 8).eval()


def _inputs(seed: int, batch: int = 5, time: int = 60):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 24, time, generator=gen) * 2 + 0.5
    lengths = torch.randint(10, time + 1, (batch,), generator=gen)
    lengths[0] = time
    keep = (torch.rand(batch, generator=gen) * lengths).long().clamp(min=3)  # 0/1 suffix split
    return x, lengths, keep


def _mask(lengths: torch.Tensor, time: int) -> torch.Tensor:
    return (torch.arange(time)[None, :] < lengths[:, None]).float()


# --- module level -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("global_context", [True, False])
def test_pooling_with_suffix_weights_equals_length_mask(seed, global_context):
    asp = _asp(global_context, seed)
    x, lengths, keep = _inputs(seed)
    w = frame_weights(_mask(keep, x.shape[-1]), lengths, x.shape[-1])
    with torch.no_grad():
        torch.testing.assert_close(asp(x, lengths, w), asp(x, keep), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_se_squeeze_with_suffix_weights_equals_length_mask(seed):
    se = _se(seed)
    x, lengths, keep = _inputs(seed)
    w = frame_weights(_mask(keep, x.shape[-1]), lengths, x.shape[-1])
    with torch.no_grad():
        torch.testing.assert_close(se(x, lengths, w), se(x, keep), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("global_context", [True, False])
def test_weights_all_ones_equal_no_weights(global_context):
    asp, se = _asp(global_context, 1), _se(1)
    x, lengths, _ = _inputs(11)
    ones = frame_weights(torch.ones(x.shape[0], x.shape[-1]), lengths, x.shape[-1])
    with torch.no_grad():
        torch.testing.assert_close(asp(x, lengths, ones), asp(x, lengths), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(se(x, lengths, ones), se(x, lengths), rtol=1e-6, atol=1e-6)
    model = _tiny_model(2)
    feats = torch.randn(3, 70, 80, generator=torch.Generator().manual_seed(5))
    frames = torch.tensor([70, 41, 25])
    with torch.no_grad():
        torch.testing.assert_close(model(feats, frames, torch.ones(3, 70)), model(feats, frames),
                                   rtol=1e-6, atol=1e-6)


def test_pooling_is_invariant_to_zero_weight_frames():
    """Whatever sits in frames of weight 0 (another speaker, noise, NaN-free garbage) is ignored."""
    asp, se = _asp(True, 3), _se(3)
    x, lengths, _ = _inputs(21)
    gen = torch.Generator().manual_seed(22)
    w = torch.rand(x.shape[0], x.shape[-1], generator=gen)
    w[torch.rand(w.shape, generator=gen) < 0.4] = 0.0  # zero-weight frames anywhere, not a suffix
    w[:, :3] = 0.5  # every item keeps some weight
    fw = frame_weights(w, lengths, x.shape[-1])
    other = torch.where(fw == 0, torch.randn(x.shape, generator=gen) * 50, x)
    assert not torch.equal(other, x)
    with torch.no_grad():
        torch.testing.assert_close(asp(other, lengths, fw), asp(x, lengths, fw), rtol=1e-5, atol=1e-5)
        kept = fw.expand_as(x) > 0
        torch.testing.assert_close(se(other, lengths, fw)[kept], se(x, lengths, fw)[kept],
                                   rtol=1e-5, atol=1e-5)
        # ... while the unweighted pooling does see them.
        assert not torch.allclose(asp(other, lengths), asp(x, lengths), atol=1e-3)


def test_pooling_depends_on_relative_weights_only():
    asp, se = _asp(True, 4), _se(4)
    x, lengths, _ = _inputs(31)
    w = torch.rand(x.shape[0], x.shape[-1], generator=torch.Generator().manual_seed(32)) + 0.05
    fw = frame_weights(w, lengths, x.shape[-1])
    with torch.no_grad():
        torch.testing.assert_close(asp(x, lengths, fw * 0.25), asp(x, lengths, fw), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(se(x, lengths, fw * 0.25), se(x, lengths, fw), rtol=1e-5, atol=1e-5)
        # fractional weights really change the result
        assert not torch.allclose(asp(x, lengths, fw), asp(x, lengths), atol=1e-3)


def test_weights_past_an_items_length_are_ignored():
    model = _tiny_model(6)
    gen = torch.Generator().manual_seed(7)
    feats = torch.randn(2, 60, 80, generator=gen)
    frames = torch.tensor([60, 33])
    w = torch.rand(2, 60, generator=gen) + 0.1
    w2 = w.clone()
    w2[1, 33:] = torch.rand(27, generator=gen)
    with torch.no_grad():
        torch.testing.assert_close(model(feats, frames, w), model(feats, frames, w2))


# --- sample weights -> frames, Embedder --------------------------------------------------------


def test_sample_to_frame_weights():
    for n in (640, 8000, 16159, 16160):
        assert sample_to_frame_weights(np.ones(n)).shape == (num_frames(n),)
        np.testing.assert_array_equal(sample_to_frame_weights(np.full(n, 0.25)), 0.25)
    w = np.zeros(16000, np.float32)
    w[8000:] = 1.0
    fw = sample_to_frame_weights(w)
    assert fw[:48].max() == 0.0 and fw[52:].min() == 1.0  # frame 50 is centred on sample 8000
    assert fw[50] == pytest.approx(0.5)
    spike = np.zeros(16000, np.float32)
    spike[1234] = 1.0  # a single weighted sample still reaches at least one frame
    assert sample_to_frame_weights(spike).max() == pytest.approx(1 / 400)


def _random_case(seed: int):
    rng = np.random.default_rng(seed)
    wavs = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (8000, 14400, 40000, 20000, 9000)]
    weights = []
    for k, w in enumerate(wavs):
        if k == 3:
            weights.append(None)
            continue
        sw = np.clip(rng.uniform(-0.5, 1.5, w.size // 800 + 1).repeat(800)[: w.size], 0, 1)
        weights.append(sw.astype(np.float32))
    return wavs, weights


def test_weighted_batched_equals_alone():
    emb = _tiny_embedder()
    wavs, weights = _random_case(1)
    batched = emb.embed(wavs, weights)
    for w, sw, b in zip(wavs, weights, batched):
        assert cosine(emb.embed([w], [sw])[0], b) >= 0.99999
    emb.max_batch = 2  # several sorted forward passes inside one call keep the input order
    for a, b in zip(emb.embed(wavs, weights), batched):
        assert cosine(a, b) >= 0.99999
    # An unweighted item in a weighted batch is its unweighted embedding.
    assert cosine(batched[3], emb.embed([wavs[3]])[0]) >= 0.99999


def test_embedder_ones_equal_none_and_weights_matter():
    emb = _tiny_embedder()
    wavs, weights = _random_case(2)
    plain = emb.embed(wavs)
    np.testing.assert_array_equal(emb.embed(wavs, [None] * len(wavs)), plain)
    np.testing.assert_allclose(emb.embed(wavs, [np.ones(w.size, np.float32) for w in wavs]), plain,
                               rtol=0, atol=1e-6)
    weighted = emb.embed(wavs, weights)
    assert min(cosine(a, b) for a, b, w in zip(weighted, plain, weights) if w is not None) < 0.999


def test_bad_weights_are_refused():
    emb = _tiny_embedder()
    wav = np.random.default_rng(0).standard_normal(8000).astype(np.float32)
    with pytest.raises(ValueError, match="all ~0"):
        emb.embed([wav, wav], [None, np.zeros(8000, np.float32)])
    with pytest.raises(ValueError, match="all ~0"):
        emb.embed([wav], [np.full(8000, 1e-9, np.float32)])
    with pytest.raises(ValueError, match="8000 samples"):
        emb.embed([wav], [np.ones(7999, np.float32)])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        emb.embed([wav], [np.full(8000, 1.5, np.float32)])
    with pytest.raises(ValueError, match="NaN"):
        emb.embed([wav], [np.full(8000, np.nan, np.float32)])
    with pytest.raises(ValueError, match="2 weight arrays for 1 waveforms"):
        emb.embed([wav], [None, None])


# --- real model --------------------------------------------------------------------------------


@pytest.mark.real_model
@pytest.mark.parametrize(("a", "b"), [(2, 1), (3, 1), (1, 3)])
def test_weighting_one_speaker_of_a_mix_moves_towards_that_speaker(a, b, embedder_fp32, clips):
    """B talks, then A (0.25 s overlapped): weighting A's frames recovers A's voice."""
    spk_a, spk_b = clips[a], clips[b]
    overlap = 4000
    mix = np.zeros(spk_b.size + spk_a.size - overlap, np.float32)
    mix[: spk_b.size] += spk_b
    mix[spk_b.size - overlap :] += spk_a
    only_a = np.zeros(mix.size, np.float32)
    only_a[spk_b.size :] = 1.0
    clean_a, clean_b = embedder_fp32.embed([spk_a, spk_b])
    plain, weighted = embedder_fp32.embed([mix, mix], [None, only_a])
    assert cosine(weighted, clean_a) > cosine(plain, clean_a) + 0.1
    assert cosine(weighted, clean_a) > 0.9
    assert cosine(weighted, clean_b) < cosine(plain, clean_b)
    # and the weighted mix is as exact in a batch as alone
    assert cosine(embedder_fp32.embed([mix], [only_a])[0], weighted) >= 0.99999
