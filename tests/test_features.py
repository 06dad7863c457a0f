import numpy as np
import pytest
import torch

from stream_spk.models.features import Fbank, mel_filterbank, num_frames, sentence_mean_norm


def _feats(wav: np.ndarray):
    n = torch.tensor([wav.size])
    raw = Fbank()(torch.from_numpy(wav)[None], n)
    return raw[0].numpy(), sentence_mean_norm(raw, num_frames(n))[0].numpy()


@pytest.mark.parametrize("k", range(4))
def test_fbank_matches_speechbrain(k, clips, reference):
    raw, norm = _feats(clips[k])
    assert raw.shape == reference[f"fbank{k}"].shape
    np.testing.assert_allclose(raw, reference[f"fbank{k}"], atol=5e-3, rtol=0)
    np.testing.assert_allclose(norm, reference[f"fbank_norm{k}"], atol=5e-3, rtol=0)


def test_frame_count_formula():
    for n in (640, 16000, 16159, 16160):
        assert Fbank()(torch.zeros(1, n) + 0.01, torch.tensor([n])).shape[1] == 1 + n // 160


def test_mel_filters_are_nonnegative_and_cover_every_band():
    fb = mel_filterbank()
    assert fb.shape == (201, 80)
    assert torch.all(fb >= 0) and torch.all(fb.max(dim=0).values <= 1.0)
    assert torch.all(fb.max(dim=0).values > 0.1)  # narrow low bands miss the bin peak


def test_batched_features_equal_features_alone(clips):
    short, long_ = clips[0], clips[2]
    batch = torch.zeros(2, long_.size)
    batch[0, : short.size] = torch.from_numpy(short)
    batch[1] = torch.from_numpy(long_)
    n = torch.tensor([short.size, long_.size])
    feats = sentence_mean_norm(Fbank()(batch, n), num_frames(n))
    alone, alone_norm = _feats(short)
    frames = alone.shape[0]
    np.testing.assert_allclose(feats[0, :frames].numpy(), alone_norm, atol=1e-4)
    assert torch.all(feats[0, frames:] == 0)


def test_db_floor_is_per_item():
    loud = torch.randn(16000)
    quiet = torch.randn(8000) * 1e-4
    batch = torch.zeros(2, 16000)
    batch[0], batch[1, :8000] = loud, quiet
    feats = Fbank()(batch, torch.tensor([16000, 8000]))
    alone = Fbank()(quiet[None], torch.tensor([8000]))
    torch.testing.assert_close(feats[1, :51], alone[0], atol=1e-4, rtol=0)
