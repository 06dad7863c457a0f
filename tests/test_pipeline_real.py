"""End-to-end truth: the real model on a real (simulated) meeting, DER below a bound."""

from pathlib import Path

import pytest
import soundfile as sf

from stream_spk.evaluation import der_report
from stream_spk.rttm import read_rttm
from stream_spk.session import SessionOptions, build_pipeline
from stream_spk.sinks import session_record
from stream_spk.types import AudioChunk, SpeakerTurn

DATA = Path(__file__).parent / "data"


@pytest.mark.real_model
def test_streaming_der_on_a_real_meeting(checkpoint_path):
    audio, sr = sf.read(DATA / "dev_libri03.wav", dtype="float32")
    assert sr == 16000
    pipe = build_pipeline(SessionOptions(model_file=str(checkpoint_path), use_profiles=False))
    events = []
    for i in range(0, audio.size, 8000):
        for ev in pipe.process(AudioChunk(audio[i : i + 8000], i / sr)):
            if isinstance(ev, SpeakerTurn) and ev.status == "final":
                assert ev.emitted_at - ev.end <= 1.0 + 1e-6  # declared latency
            events.append(ev)
    events += pipe.flush()
    record = session_record(events)  # what the RTTM holds: merges applied
    hyp = {"dev_libri03": record}
    report = der_report(read_rttm(DATA / "dev_libri03.rttm"), hyp, collar=0.25)
    # measured 0.4-2% at the defaults; 10% leaves room for bf16/fp32 differences, not for a broken pipeline
    assert report.total.der < 0.10, report.total
    assert 4 <= len({label for _, _, label in record}) <= 7
