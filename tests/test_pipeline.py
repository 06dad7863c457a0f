"""The streaming pipeline with a fake VAD model and a fake embedder (tones as speakers)."""

import numpy as np
import pytest
from fakes import EnergyScorer, ToneEmbedder, meeting, silence

from stream_spk.pipeline import Pipeline, PipelineConfig
from stream_spk.types import AudioChunk, Relabel, SpeakerTurn, SpeechEnd, SpeechStart, Stats
from stream_spk.vad import VadConfig, VadSegmenter

# tone frequencies sit mid-band of the fake embedder's 100 Hz bands
PARTS = [(None, 0.7), (350, 4.0), (None, 0.6), (750, 3.5), (None, 0.5), (350, 2.5), (None, 0.8),
         (1150, 3.0), (None, 1.0)]


def _pipeline(**cfg) -> Pipeline:
    config = PipelineConfig(**cfg)
    return Pipeline(ToneEmbedder(), config, vad=VadSegmenter(config.vad, EnergyScorer()))


def _feed(pipe: Pipeline, audio: np.ndarray, chunk: float) -> list:
    n = max(1, int(chunk * 16000))
    events = []
    for i in range(0, audio.size, n):
        events += pipe.process(AudioChunk(audio[i : i + n], i / 16000))
    return events + pipe.flush()


def _finals(events) -> list[SpeakerTurn]:
    latest: dict[int, SpeakerTurn] = {}
    for ev in events:
        if isinstance(ev, SpeakerTurn) and ev.status == "final":
            latest[ev.turn_id] = ev
    return sorted(latest.values(), key=lambda t: t.start)


def _label_at(turns, t):
    return next((x.label for x in turns if x.start <= t < x.end), None)


def test_speakers_and_turns_are_recovered():
    audio, truth = meeting(PARTS)
    turns = _finals(_feed(_pipeline(), audio, 0.5))
    labels = [_label_at(turns, (s + e) / 2) for s, e, _ in truth]
    assert labels[0] == labels[2] and len({labels[0], labels[1], labels[3]}) == 3
    speech = sum(e - s for s, e, _ in truth)
    covered = sum(t.end - t.start for t in turns)
    assert abs(covered - speech) < 0.6
    correct = sum(min(t.end, e) - max(t.start, s) for s, e, f in truth for t in turns
                  if t.label == labels[truth.index((s, e, f))] and min(t.end, e) > max(t.start, s))
    assert correct / speech > 0.85


@pytest.mark.parametrize("chunk", [0.1, 0.37, 2.0, 7.5])
def test_events_do_not_depend_on_chunking(chunk):
    audio, _ = meeting(PARTS)

    def key(events):
        return [(type(e).__name__, getattr(e, "label", None), getattr(e, "start", None), getattr(e, "end", None),
                 getattr(e, "status", None), getattr(e, "emitted_at", None))
                for e in events if not isinstance(e, Stats)]

    assert key(_feed(_pipeline(), audio, chunk)) == key(_feed(_pipeline(), audio, 0.5))


@pytest.mark.parametrize("latency", [1.0, 2.0])
def test_final_labels_respect_the_declared_latency(latency):
    audio, _ = meeting(PARTS)
    pipe = _pipeline(latency=latency)
    n = 8000
    for i in range(0, audio.size, n):
        heard = (i + n) / 16000
        for ev in pipe.process(AudioChunk(audio[i : i + n], i / 16000)):
            if isinstance(ev, SpeakerTurn) and ev.status == "final":
                assert ev.emitted_at <= heard + 1e-9
                # every sample of the newly finalised stretch is at most `latency` old
                assert ev.emitted_at - ev.end <= latency + 1e-6
    assert max(pipe.latencies) <= latency + 1e-6


def test_provisional_labels_come_sooner_than_final_ones():
    audio, _ = meeting(PARTS)
    events = _feed(_pipeline(latency=2.0), audio, 0.5)
    prov = [e for e in events if isinstance(e, SpeakerTurn) and e.status == "provisional"]
    assert prov and all(e.end <= e.emitted_at + 1e-9 for e in prov)
    assert min(e.emitted_at - e.end for e in prov) < 0.1


def test_speech_start_and_end_events_bracket_each_region():
    audio, truth = meeting(PARTS)
    events = _feed(_pipeline(), audio, 0.5)
    starts = [e.time for e in events if isinstance(e, SpeechStart)]
    ends = [e.time for e in events if isinstance(e, SpeechEnd)]
    assert len(starts) == len(truth) == len(ends)
    for (s, e, _), st, en in zip(truth, starts, ends):
        assert abs(st - s) < 0.1 and abs(en - e) < 0.1


def test_silence_nan_and_empty_input_give_correct_empty_results():
    pipe = _pipeline()
    events = _feed(pipe, silence(5.0), 0.5)
    assert not [e for e in events if isinstance(e, SpeakerTurn)]
    assert isinstance(events[-1], Stats)
    pipe = _pipeline()
    audio, _ = meeting([(None, 0.5), (350, 3.0), (None, 0.5)])
    audio[8000:8100] = np.nan
    events = _feed(pipe, audio, 0.5)
    assert pipe.nonfinite_samples == 100 and _finals(events)
    assert _feed(_pipeline(), np.zeros(0, np.float32), 0.5)[-1].speakers == 0


def test_reset_forgets_the_session():
    audio, _ = meeting(PARTS)
    pipe = _pipeline()
    first = _finals(_feed(pipe, audio, 0.5))
    pipe.reset()
    assert not pipe.speakers()
    assert [(t.label, t.start) for t in _finals(_feed(pipe, audio, 0.5))] == [(t.label, t.start) for t in first]


def test_windows_are_batched_per_chunk():
    audio, _ = meeting(PARTS)
    pipe = _pipeline()
    _feed(pipe, audio, 4.0)
    assert max(pipe.embedder.calls) >= 6  # one embed call per chunk, several windows each


def test_merge_rename_and_session_embeddings():
    audio, _ = meeting(PARTS)
    pipe = _pipeline()
    _feed(pipe, audio, 0.5)
    labels = [s.label for s in pipe.speakers() if s.talk_time > 0]
    assert len(labels) == 3
    ev = pipe.merge_speakers(labels[0], labels[1])
    assert isinstance(ev, Relabel) and len([s for s in pipe.speakers() if s.talk_time > 0]) == 2
    pipe.rename_speaker(labels[0], "Alice")
    embs, durations = pipe.speaker_embeddings("Alice")
    assert embs.shape[1] == 192 and len(durations) == len(embs)
    with pytest.raises(KeyError):
        pipe.speaker_embeddings("nobody")


def test_invalid_latency_is_refused():
    with pytest.raises(ValueError, match="latency"):
        _pipeline(latency=0.5, step=0.5, vad=VadConfig(min_silence=0.3))


def test_window_log_for_the_second_pass():
    audio, truth = meeting(PARTS)
    plain = _pipeline()
    events = _feed(plain, audio, 0.5)
    assert plain.window_log == []  # off by default: nothing grows on a long stream
    logged = _pipeline()
    logged.keep_windows = True
    assert [(type(e), getattr(e, "label", None), getattr(e, "start", None)) for e in _feed(logged, audio, 0.5)
            if not isinstance(e, Stats)] == [(type(e), getattr(e, "label", None), getattr(e, "start", None))
                                             for e in events if not isinstance(e, Stats)]
    log = logged.window_log
    assert len(log) > 10
    assert all(0 <= a < b <= audio.size / 16000 + 1e-9 and b - a <= 1.5 + 1e-9 for a, b, _ in log)
    assert all(abs(np.linalg.norm(e) - 1) < 1e-4 for *_, e in log)
    speech = [(s, e) for s, e, f in truth if f is not None]
    assert all(any(a < e and b > s for s, e in speech) for a, b, _ in log)  # windows lie on speech
    logged.reset()
    assert logged.window_log == []


def test_end_of_stream_absorb_applies_to_the_session_record():
    # the two speakers with under 5 s of speech join the 6.5 s one when any similarity is allowed
    from stream_spk.clustering import ClusterConfig
    from stream_spk.sinks import emitted_record, session_record

    audio, _ = meeting(PARTS)
    events = _feed(_pipeline(cluster=ClusterConfig(absorb_speech=5.0, absorb_threshold=-1.0)), audio, 0.5)
    assert len({lab for _, _, lab in emitted_record(events)}) == 3
    assert len({lab for _, _, lab in session_record(events)}) == 1
    assert len({lab for _, _, lab in session_record(_feed(_pipeline(), audio, 0.5))}) == 3
