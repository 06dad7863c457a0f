"""VAD segmenter: hysteresis, minimum durations, declared look-ahead, chunking invariance."""

import numpy as np
import pytest

from stream_spk.vad import SileroScorer, VadConfig, VadSegmenter, WebRtcScorer, speech_segments


class ScriptedScorer:
    """Returns pre-set probabilities, one per frame, in order."""

    frame_samples = 512

    def __init__(self, probs):
        self.probs = list(probs)
        self.i = 0

    def score(self, frames):
        out = np.array(self.probs[self.i : self.i + len(frames)], np.float32)
        self.i += len(frames)
        return out

    def reset(self):
        self.i = 0


def _merge(spans):
    out = []
    for s, e, sp in spans:
        if out and out[-1][2] == sp and out[-1][1] == s:
            out[-1] = (out[-1][0], e, sp)
        else:
            out.append((s, e, sp))
    return out


def _run(probs, cfg=None, chunk=512):
    seg = VadSegmenter(cfg or VadConfig(min_speech=0.1, min_silence=0.2), ScriptedScorer(probs))
    audio = np.zeros(len(probs) * 512, np.float32)
    spans = []
    for i in range(0, audio.size, chunk):
        spans += seg.process(audio[i : i + chunk])
    spans += seg.flush()
    return _merge(spans)


def _speech(spans):
    return [(s // 512, e // 512) for s, e, sp in spans if sp]


def test_spans_tile_the_stream_in_order():
    probs = [0] * 10 + [1] * 20 + [0] * 15 + [1] * 10 + [0] * 5
    spans = _run(probs)
    assert spans[0][0] == 0 and spans[-1][1] == len(probs) * 512
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert _speech(spans) == [(10, 30), (45, 55)]


def test_short_blip_is_not_speech_and_short_pause_is_bridged():
    # min_speech 0.1 s = 3 frames: a 2-frame blip is dropped; min_silence 0.2 s = 6 frames: a 4-frame pause stays
    probs = [0] * 10 + [1] * 2 + [0] * 10 + [1] * 10 + [0] * 4 + [1] * 10 + [0] * 20
    assert _speech(_run(probs)) == [(22, 46)]


def test_hysteresis_keeps_speech_above_the_lower_threshold():
    cfg = VadConfig(threshold=0.6, neg_threshold=0.3, min_speech=0.1, min_silence=0.2)
    probs = [0.0] * 5 + [0.7] * 5 + [0.4] * 20 + [0.1] * 20
    assert _speech(_run(probs, cfg)) == [(5, 30)]
    probs = [0.0] * 5 + [0.5] * 25 + [0.1] * 20  # never reaches the onset
    assert _speech(_run(probs, cfg)) == []


@pytest.mark.parametrize("chunk", [100, 512, 3000, 16000])
def test_chunking_does_not_change_decisions(chunk):
    rng = np.random.default_rng(3)
    probs = (rng.random(400) > 0.4).astype(float)
    assert _run(probs, chunk=chunk) == _run(probs, chunk=512)


def test_decisions_never_lag_more_than_the_declared_lookahead():
    cfg = VadConfig(min_speech=0.25, min_silence=0.3)
    rng = np.random.default_rng(4)
    probs = np.repeat(rng.random(60) > 0.5, 7).astype(float)
    seg = VadSegmenter(cfg, ScriptedScorer(probs))
    for i in range(len(probs)):
        seg.process(np.zeros(512, np.float32))
        heard = (i + 1) * 512
        assert heard - seg.decided_until <= cfg.lookahead * 16000


def test_webrtc_backend_on_tone_and_silence():
    from fakes import silence, tone

    audio = np.concatenate([silence(1.0), tone(220, 1.0) + 0.05 * np.random.default_rng(0).standard_normal(16000)
                            .astype(np.float32), silence(1.0)])
    seg = VadSegmenter(VadConfig(backend="webrtc"))
    assert isinstance(seg.scorer, WebRtcScorer)
    spans = seg.process(audio) + seg.flush()
    speech = [(s, e) for s, e, sp in spans if sp]
    assert all(s >= 0.8 * 16000 and e <= 2.4 * 16000 for s, e in speech)
    assert VadSegmenter(VadConfig(backend="webrtc")).process(np.zeros(16000, np.float32)) == [(0, 15840, False)]


def test_silero_finds_real_speech_and_not_silence(clips):
    segs = speech_segments(np.concatenate([np.zeros(16000, np.float32), clips[2], np.zeros(16000, np.float32)]))
    assert segs, "no speech found in a real speech clip"
    speech = sum(e - s for s, e in segs) / 16000
    assert 1.5 < speech <= clips[2].size / 16000 + 0.1
    assert segs[0][0] >= 0.9 * 16000
    assert speech_segments(np.zeros(48000, np.float32)) == []


def test_silero_batched_scorer_is_chunk_invariant(clips):
    audio = clips[1][: 512 * 60]
    a, b = SileroScorer(), SileroScorer()
    whole = a.score(audio.reshape(-1, 512))
    parts = np.concatenate([b.score(audio[i * 512 : (i + n) * 512].reshape(-1, 512))
                            for i, n in ((0, 7), (7, 1), (8, 52))])
    np.testing.assert_allclose(whole, parts, atol=1e-5)
    assert whole.max() > 0.5


def test_bad_backend_settings_are_clear_errors():
    from stream_spk.errors import StreamSpkError

    with pytest.raises(StreamSpkError, match="frame size"):
        WebRtcScorer(frame_ms=25)
    with pytest.raises(StreamSpkError, match="unknown VAD backend"):
        VadSegmenter(VadConfig(backend="nope"))  # type: ignore[arg-type]
