"""The segmentation-driven (overlap-aware) pipeline with a fake segmenter and embedder (tones as speakers)."""

import numpy as np
import pytest
from fakes import SR, ToneEmbedder, silence, tone

from stream_spk.clustering import ClusterConfig
from stream_spk.segmented import POWERSET, SegmentationConfig, SegmentedConfig, SegmentedPipeline, marginals
from stream_spk.sinks import session_record
from stream_spk.types import AudioChunk, SpeakerTurn


class ToneSegmenter:
    """Local speakers = tones present in a frame; slots numbered by first appearance in the chunk."""

    def __init__(self, seconds: float = 5.0, hop: int = 270) -> None:
        self.chunk_samples = int(seconds * SR)
        self.frame_centres = np.arange(self.chunk_samples // hop) * hop + hop / 2
        self.calls = 0

    def _bands(self, frame: np.ndarray) -> set[int]:
        spec = np.abs(np.fft.rfft(frame * np.hanning(frame.size)))
        freqs = np.fft.rfftfreq(frame.size, 1 / SR)
        if spec.max() < 1.0:
            return set()
        peaks = [i for i in range(1, len(spec) - 1)
                 if spec[i] >= spec[i - 1] and spec[i] >= spec[i + 1] and spec[i] > 0.3 * spec.max()]
        return {int(freqs[i] // 100) for i in peaks}

    def segment(self, chunks: np.ndarray) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(chunks), len(self.frame_centres), 7), np.float32)
        for b, chunk in enumerate(chunks):
            slots: dict[int, int] = {}
            for f, c in enumerate(self.frame_centres):
                lo = int(max(0, c - 256))
                bands = sorted(self._bands(chunk[lo : lo + 512]))[:2] if lo + 512 <= chunk.size else []
                active = []
                for band in bands:
                    if band not in slots and len(slots) < 3:
                        slots[band] = len(slots)
                    if band in slots:
                        active.append(slots[band])
                out[b, f, POWERSET.index(tuple(sorted(active)))] = 1.0
        return out


class WeightedToneEmbedder(ToneEmbedder):
    """The fake embedder, looking only at samples with weight > 0.5."""

    def embed(self, wavs, weights=None):
        if weights is None:
            return super().embed(wavs)
        kept = []
        for w, wt in zip(wavs, weights):
            kept.append(w if wt is None else w[np.asarray(wt) > 0.5])
        return super().embed(kept)


def _pipeline(**cfg) -> SegmentedPipeline:
    config = SegmentedConfig(**cfg)
    return SegmentedPipeline(WeightedToneEmbedder(), ToneSegmenter(), config)


def _feed(pipe, audio, chunk):
    n = max(1, int(chunk * SR))
    events = []
    for i in range(0, audio.size, n):
        events += pipe.process(AudioChunk(audio[i : i + n], i / SR))
    return events + pipe.flush()


def _finals(events):
    latest: dict[int, SpeakerTurn] = {}
    for ev in events:
        if isinstance(ev, SpeakerTurn) and ev.status == "final":
            latest[ev.turn_id] = ev
    return sorted(latest.values(), key=lambda t: (t.start, t.label))


def _two_voice_mix():
    """A speaks 0.5-4.5 s, B 3.5-8 s (1 s overlap), A again 9-11 s."""
    a1, b, a2 = tone(350, 4.0, seed=1), tone(750, 4.5, seed=2), tone(350, 2.0, seed=3)
    audio = silence(11.5)
    audio[int(0.5 * SR) : int(4.5 * SR)] += a1
    audio[int(3.5 * SR) : int(8.0 * SR)] += b
    audio[int(9.0 * SR) : int(11.0 * SR)] += a2
    return audio


def _labels_at(turns, t):
    return {x.label for x in turns if x.start <= t < x.end}


def test_marginals_of_powerset():
    probs = np.eye(7, dtype=np.float32)
    m = marginals(probs)
    assert m.tolist() == [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]]


def test_overlap_gets_two_labels():
    turns = _finals(_feed(_pipeline(), _two_voice_mix(), 0.5))
    a, b = _labels_at(turns, 2.0), _labels_at(turns, 6.0)
    assert len(a) == 1 and len(b) == 1 and a != b
    assert _labels_at(turns, 4.0) == a | b  # the overlapped second holds both speakers
    assert _labels_at(turns, 10.0) == a  # A again, recognised
    assert _labels_at(turns, 8.6) == set()  # the pause is not speech
    # the turn boundaries follow the audio, within 0.15 s (B's first half second, heard only
    # under A before B was ever heard alone, cannot be named within the latency)
    a_label, b_label = next(iter(a)), next(iter(b))
    a_turns = [t for t in turns if t.label == a_label]
    b_turns = [t for t in turns if t.label == b_label]
    assert abs(a_turns[0].start - 0.5) < 0.15 and abs(a_turns[0].end - 4.5) < 0.15
    assert 3.35 < b_turns[0].start < 4.05 and abs(b_turns[-1].end - 8.0) < 0.15


def test_overlap_of_known_speakers_is_labelled_throughout():
    audio = silence(10.0)
    audio[int(0.5 * SR) : int(3.0 * SR)] += tone(750, 2.5, seed=6)  # B alone
    audio[int(3.5 * SR) : int(7.0 * SR)] += tone(350, 3.5, seed=7)  # A alone, then with B
    audio[int(6.0 * SR) : int(9.0 * SR)] += tone(750, 3.0, seed=8)
    turns = _finals(_feed(_pipeline(), audio, 0.5))
    b, a = _labels_at(turns, 1.5), _labels_at(turns, 4.5)
    assert len(a | b) == 2
    for t in np.arange(6.1, 6.95, 0.1):
        assert _labels_at(turns, t) == a | b, t
    assert _labels_at(turns, 8.0) == b


@pytest.mark.parametrize("chunk", [0.1, 0.37, 2.0, 7.5])
def test_events_do_not_depend_on_chunking(chunk):
    audio = _two_voice_mix()

    def key(events):
        return [(type(e).__name__, getattr(e, "label", None), getattr(e, "start", None), getattr(e, "end", None),
                 getattr(e, "status", None)) for e in events if type(e).__name__ != "Stats"]

    assert key(_feed(_pipeline(), audio, chunk)) == key(_feed(_pipeline(), audio, 0.5))


def test_final_labels_within_latency():
    pipe = _pipeline(latency=1.0)
    events = _feed(pipe, _two_voice_mix(), 0.25)
    finals = [e for e in events if isinstance(e, SpeakerTurn) and e.status == "final"]
    assert finals and max(pipe.latencies) <= 1.0 + 1e-6
    assert any(isinstance(e, SpeakerTurn) and e.status == "provisional" for e in events)


def test_spurious_candidate_is_not_finalised_under_its_own_label():
    # a 0.4 s blip of another tone inside A's speech: too little to become a speaker
    audio = tone(350, 8.0, seed=4)
    audio[int(4.0 * SR) : int(4.4 * SR)] = tone(1550, 0.4, seed=5)
    pipe = SegmentedPipeline(WeightedToneEmbedder(), ToneSegmenter(),
                             SegmentedConfig(cluster=ClusterConfig(candidate_margin=float("inf"))))
    turns = _finals(_feed(pipe, audio, 0.5))
    assert {t.label for t in turns} == {"speaker 1"}


class CountingEmbedder(WeightedToneEmbedder):
    def __init__(self) -> None:
        super().__init__()
        self.windows = 0

    def embed(self, wavs, weights=None):
        self.windows += len(wavs)
        return super().embed(wavs, weights)


def test_a_voice_that_stopped_is_not_embedded_again():
    # A speaks 0.5-3 s, then silence: its last second is still inside the next windows, but with
    # min_fresh those windows (nothing new heard) are not embedded; the labels stay the same
    from stream_spk.segmented import SegmentationConfig

    audio = silence(6.0)
    audio[int(0.5 * SR) : int(3.0 * SR)] += tone(350, 2.5, seed=9)
    runs = {}
    for min_fresh in (0.0, 0.2):
        embedder = CountingEmbedder()
        config = SegmentedConfig(segmentation=SegmentationConfig(min_fresh=min_fresh))
        turns = _finals(_feed(SegmentedPipeline(embedder, ToneSegmenter(), config), audio, 0.5))
        runs[min_fresh] = embedder.windows, [(round(t.start, 2), round(t.end, 2), t.label) for t in turns]
    (every, turns_every), (fresh_only, turns_fresh) = runs[0.0], runs[0.2]
    assert turns_fresh == turns_every and {t[2] for t in turns_fresh} == {"speaker 1"}
    assert 5 <= fresh_only < every  # one window per step while A speaks (1.0-3.0 s), none after


@pytest.mark.parametrize("chunk", [0.1, 7.5])
def test_the_windows_embedded_do_not_depend_on_chunking(chunk):
    # a big chunk brings several grid points at once, all planned before any is executed: a
    # track's windows so far must count from the plans, or min_fresh would be skipped there
    audio = silence(6.0)
    audio[int(0.5 * SR) : int(3.0 * SR)] += tone(350, 2.5, seed=9)
    config = SegmentedConfig(segmentation=SegmentationConfig(min_fresh=0.2))
    counts = []
    for size in (0.5, chunk):
        embedder = CountingEmbedder()
        _feed(SegmentedPipeline(embedder, ToneSegmenter(), config), audio, size)
        counts.append(embedder.windows)
    assert counts[1] == counts[0]


def test_a_small_speaker_joins_a_bigger_one_in_the_session_record_at_the_end():
    # A talks 7 s, B 2.5 s: B becomes a speaker of its own while the stream runs; at the end,
    # with absorb_speech 4 s and any similarity allowed, the session record gives B's turns to A
    # (the labels as emitted keep B)
    from stream_spk.sinks import emitted_record, session_record

    audio = silence(12.0)
    audio[int(0.5 * SR) : int(7.5 * SR)] += tone(350, 7.0, seed=10)
    audio[int(8.0 * SR) : int(10.5 * SR)] += tone(1250, 2.5, seed=11)
    records = {}
    for absorb in (0.0, 4.0):
        cluster = ClusterConfig(absorb_speech=absorb, absorb_threshold=-1.0)
        events = _feed(SegmentedPipeline(WeightedToneEmbedder(), ToneSegmenter(), SegmentedConfig(cluster=cluster)),
                       audio, 0.5)
        records[absorb] = {lab for _, _, lab in session_record(events)}, {lab for _, _, lab in emitted_record(events)}
    assert records[0.0] == ({"speaker 1", "speaker 2"}, {"speaker 1", "speaker 2"})
    assert records[4.0] == ({"speaker 1"}, {"speaker 1", "speaker 2"})


def test_count_log_holds_the_voices_decided_per_stretch():
    pipe = SegmentedPipeline(WeightedToneEmbedder(), ToneSegmenter(), SegmentedConfig(), keep_counts=True)
    _feed(pipe, _two_voice_mix(), 0.5)
    log = pipe.count_log
    assert log[0][0] == 0.0 and abs(log[-1][1] - 11.5) < 1e-6
    assert all(abs(a[1] - b[0]) < 1e-6 for a, b in zip(log, log[1:]))  # contiguous, in order

    def voices(t):
        return next(n for s, e, n in log if s <= t < e)

    assert (voices(0.2), voices(2.0), voices(4.0), voices(6.0), voices(8.6), voices(10.0)) == (0, 1, 2, 1, 0, 1)
    assert SegmentedPipeline(WeightedToneEmbedder(), ToneSegmenter()).count_log == []  # off by default


class OneSlotSegmenter(ToneSegmenter):
    """Hears speech but never tells voices apart: every tone is local speaker 0 (one track)."""

    def segment(self, chunks):
        out = super().segment(chunks)
        speech = out[..., 0] < 0.5
        res = np.zeros_like(out)
        res[..., 0], res[..., 1] = ~speech, speech
        return res


def test_a_track_that_passes_to_another_voice_is_labelled_by_the_windows_covering_each_stretch():
    audio = silence(18.0)
    audio[int(0.5 * SR) : int(3.5 * SR)] += tone(350, 3.0, seed=1)
    audio[int(6.0 * SR) : int(9.0 * SR)] += tone(750, 3.0, seed=2)
    audio[int(11.5 * SR) : int(14.5 * SR)] += tone(350, 3.0, seed=3)  # A, then B with no pause:
    audio[int(14.5 * SR) : int(17.5 * SR)] += tone(750, 3.0, seed=4)  # one track for both

    def change(label_context):
        config = SegmentedConfig(segmentation=SegmentationConfig(label_context=label_context))
        turns = _finals(_feed(SegmentedPipeline(WeightedToneEmbedder(), OneSlotSegmenter(), config), audio, 0.5))
        a, b = turns[0].label, turns[1].label
        assert a != b and [t.label for t in turns[2:]] == [a, b]
        return turns[3].start

    assert abs(change(SegmentationConfig().label_context) - 14.5) < 0.15  # the default
    assert change(0.5) > 14.8  # windows up to 0.5 s away carry A's label into B's turn


def test_the_provisional_label_follows_a_track_that_passes_to_another_voice():
    audio = silence(18.0)
    for start, freq, seed in ((0.5, 350, 1), (6.0, 750, 2), (11.5, 350, 3), (14.5, 750, 4)):
        audio[int(start * SR) : int((start + 3.0) * SR)] += tone(freq, 3.0, seed=seed)
    events = _feed(SegmentedPipeline(WeightedToneEmbedder(), OneSlotSegmenter()), audio, 0.5)
    finals = _finals(events)
    a, b = finals[0].label, finals[1].label
    now = {round(e.emitted_at, 2): e.label for e in events
           if isinstance(e, SpeakerTurn) and e.status == "provisional"}
    assert now[13.0] == now[14.5] == a
    # "who is speaking now" turns to B within a second of B's first word, not at the next pause
    assert [now[t] for t in (15.5, 16.0, 16.5, 17.0, 17.5)] == [b] * 5


def _designed_embedder(vectors: dict[int, np.ndarray]) -> WeightedToneEmbedder:
    """The fake embedder without noise, each tone's embedding a chosen vector."""
    embedder = WeightedToneEmbedder(noise=0.0)
    for hz, v in vectors.items():
        embedder.basis[hz // 100] = v / np.linalg.norm(v)
    return embedder


def test_the_second_voice_of_an_overlap_takes_the_next_speaker_its_own_windows_point_to():
    e = np.eye(192, dtype=np.float32)
    # A, B and D are three speakers; X's voice is nearest A, then B (0.37), then D (0.23), while
    # A's own windows rank D (0.15) before B (0)
    vectors = {350: e[0], 750: e[1], 550: 0.15 * e[0] + e[2], 950: e[0] + 0.4 * e[1] + 0.1 * e[2]}
    audio = silence(15.0)
    # B, D, A alone; then X, heard only over A (its windows include A's frames, but X is louder)
    for start, end, hz, amp in ((0.5, 3.0, 750, 0.3), (3.5, 6.0, 550, 0.3), (6.5, 9.0, 350, 0.3),
                                (10.5, 14.0, 350, 0.3), (11.5, 13.5, 950, 0.45)):
        audio[int(start * SR) : int(end * SR)] += tone(hz, end - start, amp=amp, seed=int(start * 10))
    turns = _finals(_feed(SegmentedPipeline(_designed_embedder(vectors), ToneSegmenter()), audio, 0.5))
    b, d, a = _labels_at(turns, 1.5), _labels_at(turns, 4.5), _labels_at(turns, 7.5)
    assert len(a | b | d) == 3
    # both voices of the overlap map to A: X takes the next speaker its own windows point to, B
    # (A's windows, the nearest in time, would give D)
    for t in np.arange(11.6, 13.45, 0.1):
        assert _labels_at(turns, t) == a | b, t
    assert _labels_at(turns, 13.8) == a


class DeafSegmenter(ToneSegmenter):
    """A longer look that hears no one (every frame: no speaker)."""

    def segment(self, chunks: np.ndarray) -> np.ndarray:
        out = np.zeros((len(chunks), len(self.frame_centres), 7), np.float32)
        out[..., 0] = 1.0
        return out


class LastSlotSegmenter(ToneSegmenter):
    """Hears what the tone segmenter hears, but puts every voice in local slot 2."""

    def segment(self, chunks: np.ndarray) -> np.ndarray:
        probs = super().segment(chunks)
        speech = 1.0 - probs[..., 0]
        out = np.zeros_like(probs)
        out[..., 0], out[..., POWERSET.index((2,))] = 1.0 - speech, speech
        return out


# the fakes give probabilities of 0 or 1: at the 0.5 default a frame that one look hears and the
# other does not (their frames are a few ms apart) would sit exactly on the threshold
_SPEECH_06 = SegmentationConfig(speech_threshold=0.6)


def _with_context(context, weight: float = 0.5, chunk: float = 0.5):
    config = SegmentedConfig(context_chunk=context.chunk_samples / SR, context_weight=weight, segmentation=_SPEECH_06)
    pipe = SegmentedPipeline(WeightedToneEmbedder(), ToneSegmenter(), config, context_segmenter=context)
    return _finals(_feed(pipe, _two_voice_mix(), chunk))


def test_speech_and_overlap_are_mixed_from_the_chunk_and_the_longer_look():
    # the chunk hears speech (P 1.0), the longer look none (P 0.0): at weight 0.5 the mix is 0.5,
    # under the 0.6 speech threshold; at weight 0.3 it is 0.7
    assert _with_context(DeafSegmenter(10.0), 0.5) == []
    alone = _finals(_feed(_pipeline(segmentation=_SPEECH_06), _two_voice_mix(), 0.5))
    light = _with_context(DeafSegmenter(10.0), 0.3)
    assert [(t.start, t.end, t.label) for t in light] == [(t.start, t.end, t.label) for t in alone]
    assert _labels_at(light, 4.0) == _labels_at(light, 2.0) | _labels_at(light, 6.0)  # the overlap: 0.7 of 1.0


def test_the_longer_look_is_aligned_on_the_end_of_the_chunk():
    # weight 1: the longer look alone decides speech; a 10 s chunk ends where the 5 s one does,
    # so the turns still follow the audio (misaligned by 5 s they would not)
    turns = _with_context(ToneSegmenter(10.0), 1.0)
    a, b = _labels_at(turns, 2.0), _labels_at(turns, 6.0)
    assert len(a) == 1 and len(b) == 1 and a != b and _labels_at(turns, 4.0) == a | b
    assert _labels_at(turns, 0.3) == _labels_at(turns, 8.6) == set()
    a_turns = [t for t in turns if t.label in a]
    assert abs(a_turns[0].start - 0.5) < 0.15 and abs(a_turns[0].end - 4.5) < 0.15


def test_tracks_come_from_the_chunk_not_the_longer_look():
    # A, then B with no pause: the chunk tells the voices apart (two tracks); the longer look puts
    # both in one slot. With windows up to 0.5 s away labelling a track, one track for both would
    # carry A's label 0.3 s or more into B's turn (as in the test above)
    audio = silence(18.0)
    for start, freq, seed in ((0.5, 350, 1), (6.0, 750, 2), (11.5, 350, 3), (14.5, 750, 4)):
        audio[int(start * SR) : int((start + 3.0) * SR)] += tone(freq, 3.0, seed=seed)
    config = SegmentedConfig(segmentation=SegmentationConfig(label_context=0.5, speech_threshold=0.6))
    pipe = SegmentedPipeline(WeightedToneEmbedder(), ToneSegmenter(), config, context_segmenter=LastSlotSegmenter(10.0))
    turns = _finals(_feed(pipe, audio, 0.5))
    a, b = turns[0].label, turns[1].label
    assert a != b and [t.label for t in turns[2:]] == [a, b]
    assert abs(turns[3].start - 14.5) < 0.15


@pytest.mark.parametrize("chunk", [0.1, 7.5])
def test_events_with_a_longer_look_do_not_depend_on_chunking(chunk):
    turns = _with_context(ToneSegmenter(10.0), 0.5, chunk)
    assert turns == _with_context(ToneSegmenter(10.0), 0.5, 0.5)


def test_a_longer_look_shorter_than_the_chunk_is_refused():
    with pytest.raises(ValueError, match="context chunk"):
        SegmentedConfig(context_chunk=4.0).validate()
    with pytest.raises(ValueError, match="context_weight"):
        SegmentedConfig(context_weight=1.5).validate()
    with pytest.raises(ValueError, match="context segmenter"):
        SegmentedPipeline(WeightedToneEmbedder(), ToneSegmenter(), SegmentedConfig(),
                          context_segmenter=ToneSegmenter(4.0))


class RecordingSegmenter(ToneSegmenter):
    """Keeps every chunk it is given."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seen: list[np.ndarray] = []

    def segment(self, chunks: np.ndarray) -> np.ndarray:
        self.seen += list(np.array(chunks))
        return np.tile(np.eye(7, dtype=np.float32)[0], (len(chunks), len(self.frame_centres), 1))


def test_the_longer_look_gets_the_audio_that_ends_at_each_step():
    # every context chunk is the stream's last 10 s at its grid point (zeros before the start):
    # the pipeline must keep that much audio, not only the chunk's 5 s
    audio = np.random.default_rng(3).normal(0, 0.1, int(14.0 * SR)).astype(np.float32)
    context = RecordingSegmenter(10.0)
    pipe = SegmentedPipeline(WeightedToneEmbedder(), ToneSegmenter(), SegmentedConfig(), context_segmenter=context)
    _feed(pipe, audio, 0.5)
    step, n = int(0.5 * SR), int(10.0 * SR)
    padded = np.concatenate([np.zeros(n, np.float32), audio])
    for k, chunk in enumerate(context.seen[: audio.size // step]):
        end = (k + 1) * step + n
        np.testing.assert_array_equal(chunk, padded[end - n : end])


def _turns_of(spans, total: float) -> np.ndarray:
    audio = silence(total)
    for start, end, hz in spans:
        voice = tone(hz, end - start, amp=0.3, seed=int(start * 10))
        audio[int(round(start * SR)) : int(round(start * SR)) + voice.size] += voice
    return audio


@pytest.mark.parametrize("gap", [0.2, 2.5])
def test_two_speakers_merge_at_the_apart_threshold_only_when_never_heard_at_once(gap):
    e = np.eye(192, dtype=np.float32)
    # two voices 0.5 apart: below the (test's) assign and merge thresholds, above the apart one
    vectors = {350: e[0], 750: 0.5 * e[0] + np.sqrt(0.75) * e[1]}
    cluster = ClusterConfig(assign_threshold=0.6, new_threshold=0.55, merge_threshold=0.9,
                            apart_merge_threshold=0.45, apart_after=3.0)
    spans, t = [], 0.5
    for hz in (350, 750, 350, 750):
        spans.append((t, t + 4.0, hz))
        t += 4.0 + gap
    pipe = SegmentedPipeline(_designed_embedder(vectors), ToneSegmenter(), SegmentedConfig(cluster=cluster))
    record = session_record(_feed(pipe, _turns_of(spans, t + 1.0), 0.5))
    labels = {lab for _, _, lab in record}
    if gap < 1.0:  # quick turns: both voices' windows in one step, heard at once: two speakers
        assert len(labels) == 2
    else:  # never heard at once, side by side long enough: one voice split in two, merged
        assert len(labels) == 1
