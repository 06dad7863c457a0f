"""Sinks: RTTM writer, JSON lines, console view."""

from __future__ import annotations

import io
import json
import os
import stat

import pytest

from stream_spk.errors import StreamSpkError
from stream_spk.sinks import (
    ConsoleView,
    JsonlWriter,
    OnSuccess,
    RttmWriter,
    emitted_record,
    label_color,
    merge_turns,
    read_jsonl,
    session_record,
)
from stream_spk.types import Relabel, SpeakerTurn, SpeechEnd, SpeechStart, Stats


def turn(turn_id, start, end, label, status="final", score=0.8, emitted_at=None, name=None):
    return SpeakerTurn(turn_id, start, end, label, score, status,
                       end + 1.0 if emitted_at is None else emitted_at, name)


# ---------------------------------------------------------------- RTTM


def test_rttm_writer_exact_text(tmp_path):
    out = tmp_path / "meeting.rttm"
    sink = RttmWriter(out, "meeting 1")
    sink.handle([SpeechStart(0.5), turn(0, 0.5, 2.0, "speaker 1", "provisional")])
    sink.handle([turn(0, 0.5, 2.0, "speaker 1"), turn(1, 2.5, 3.0, "speaker 2", "provisional")])
    sink.handle([turn(1, 2.5, 4.25, "speaker 2"), turn(0, 0.5, 2.25, "speaker 1")])  # turn 0 grows
    sink.handle([Relabel("speaker 2", "Alice", 5.0, "rename"), turn(2, 4.27, 5.0, "Alice")])
    sink.handle([turn(3, 0.1, 0.3, "Bob", name="Bob"), turn(4, 6.0, 7.0, "speaker 1", "provisional")])
    assert not out.exists()  # written on close only
    sink.close()
    assert out.read_text() == (
        "SPEAKER meeting_1 1 0.100 0.200 <NA> <NA> Bob <NA> <NA>\n"
        "SPEAKER meeting_1 1 0.500 1.750 <NA> <NA> speaker_1 <NA> <NA>\n"
        "SPEAKER meeting_1 1 2.500 2.500 <NA> <NA> Alice <NA> <NA>\n"  # renamed; 2.5-4.25 + 4.27-5.0 joined
    )
    sink.close()  # idempotent


def test_rttm_writer_empty_stream_writes_empty_file(tmp_path):
    out = tmp_path / "e.rttm"
    with RttmWriter(out, "e") as sink:
        sink.handle([SpeechStart(0.0), SpeechEnd(1.0)])
    assert out.read_text() == ""


def test_merge_turns_keeps_other_labels_and_gaps():
    turns = [(0.0, 1.0, "a"), (1.04, 2.0, "a"), (1.5, 2.5, "b"), (2.06, 3.0, "a"), (2.9, 3.5, "a")]
    assert merge_turns(turns) == [(0.0, 2.0, "a"), (1.5, 2.5, "b"), (2.06, 3.5, "a")]


def test_rttm_writer_is_atomic(tmp_path, monkeypatch):
    out = tmp_path / "x.rttm"
    out.write_text("old contents\n")
    sink = RttmWriter(out, "x")
    sink.handle([turn(0, 0.0, 1.0, "speaker 1")])

    def crash(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(StreamSpkError, match="x.rttm: cannot write"):
        sink.close()
    assert out.read_text() == "old contents\n"  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.rttm"]  # no temp file left


def test_session_record_applies_merges_and_renames_in_stream_order():
    events = [
        turn(1, 0.0, 2.0, "speaker 1"),
        turn(2, 2.0, 3.0, "speaker 2"),  # later merged into speaker 1: touches turn 1 -> joined
        turn(3, 4.0, 5.0, "speaker 3"),
        Relabel("speaker 2", "speaker 1", 3.5, "merge"),
        turn(4, 5.0, 6.0, "speaker 4"),
        Relabel("speaker 3", "speaker 4", 6.5, "merge"),  # chain: speaker 3 -> 4 -> Anna
        Relabel("speaker 4", "Anna", 7.0, "recognised"),
        turn(5, 8.0, 9.0, "Anna", name="Anna"),
        turn(6, 9.5, 10.0, "speaker 5", "provisional"),  # never final: not in the record
    ]
    assert session_record(events) == [(0.0, 3.0, "speaker 1"), (4.0, 6.0, "Anna"), (8.0, 9.0, "Anna")]
    # the labels as emitted are still there for who wants them (the JSON lines keep them)
    assert emitted_record(events) == [(0.0, 2.0, "speaker 1"), (2.0, 3.0, "speaker 2"), (4.0, 5.0, "speaker 3"),
                                      (5.0, 6.0, "speaker 4"), (8.0, 9.0, "Anna")]


def test_session_record_label_reused_after_a_relabel_is_a_new_speaker():
    events = [turn(1, 0.0, 1.0, "A"), Relabel("A", "B", 1.5, "rename"), turn(2, 2.0, 3.0, "A"),
              turn(1, 0.0, 1.2, "B")]  # a later version of turn 1 replaces the earlier one
    assert session_record(events) == [(0.0, 1.2, "B"), (2.0, 3.0, "A")]


def test_rttm_overlapping_speakers_are_separate_lines(tmp_path):
    out = tmp_path / "o.rttm"
    with RttmWriter(out, "o") as sink:
        sink.handle([turn(1, 1.0, 4.0, "speaker 1"), turn(2, 2.0, 3.0, "speaker 2"),
                     turn(3, 3.5, 5.0, "speaker 3"), Relabel("speaker 3", "speaker 2", 6.0)])
    assert out.read_text() == (
        "SPEAKER o 1 1.000 3.000 <NA> <NA> speaker_1 <NA> <NA>\n"
        "SPEAKER o 1 2.000 1.000 <NA> <NA> speaker_2 <NA> <NA>\n"
        "SPEAKER o 1 3.500 1.500 <NA> <NA> speaker_2 <NA> <NA>\n"
    )


def test_jsonl_is_written_under_a_temporary_name_owner_only(tmp_path):
    out = tmp_path / "e.jsonl"
    out.write_text("good earlier run\n")
    sink = JsonlWriter(out)
    sink.handle([SpeechStart(0.0)])
    assert out.read_text() == "good earlier run\n"  # replaced only when complete
    sink.close()
    assert json.loads(out.read_text()) == {"kind": "speech_start", "time": 0.0}
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.jsonl"]


def test_rttm_is_owner_only(tmp_path):
    with RttmWriter(tmp_path / "r.rttm", "r"):
        pass
    assert stat.S_IMODE((tmp_path / "r.rttm").stat().st_mode) == 0o600


def test_failed_run_keeps_earlier_outputs_and_leaves_no_temp_file(tmp_path):
    rttm, jsonl = tmp_path / "a.rttm", tmp_path / "a.jsonl"
    rttm.write_text("good rttm\n")
    jsonl.write_text("good jsonl\n")
    held = OnSuccess([RttmWriter(rttm, "a"), JsonlWriter(jsonl)])
    held.handle([turn(1, 0.0, 1.0, "speaker 1")])
    held.close()  # what the runner does, also when the input fails: nothing is written yet
    held.abort()  # the input failed
    assert rttm.read_text() == "good rttm\n" and jsonl.read_text() == "good jsonl\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "a.rttm"]
    held = OnSuccess([RttmWriter(rttm, "a"), JsonlWriter(jsonl)])
    held.handle([turn(1, 0.0, 1.0, "speaker 1")])
    held.close()
    held.commit()
    assert rttm.read_text().startswith("SPEAKER a 1 0.000 1.000")
    assert '"turn"' in jsonl.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "a.rttm"]


def test_rttm_writer_missing_folder(tmp_path):
    with pytest.raises(StreamSpkError, match="does not exist"):
        RttmWriter(tmp_path / "no" / "x.rttm", "x")


# ---------------------------------------------------------------- JSON lines


ALL_EVENTS = [
    SpeechStart(0.48),
    turn(0, 0.48, 2.0, "speaker 1", "provisional", score=0.0, emitted_at=2.0),
    turn(0, 0.48, 3.5, "Alice", "final", score=0.812, emitted_at=4.5, name="Alice"),
    SpeechEnd(3.5),
    Relabel("speaker 3", "speaker 1", 30.5),
    Relabel("speaker 1", "Bob", 31.0, "rename"),
    Stats(31.0, 0.21, 1.5, 2.5, 0, 2, extra={"windows": 12, "embed_ms": 3.25}),
]


def test_jsonl_round_trip_every_kind(tmp_path):
    path = tmp_path / "events.jsonl"
    with JsonlWriter(path) as sink:
        sink.handle(ALL_EVENTS[:3])
        sink.handle([])
        sink.handle(ALL_EVENTS[3:])
    lines = path.read_text().splitlines()
    assert len(lines) == len(ALL_EVENTS)
    for line in lines:
        assert next(iter(json.loads(line))) == "kind"  # kind first
    assert {json.loads(x)["kind"] for x in lines} == {"speech_start", "speech_end", "turn", "relabel",
                                                      "stats"}
    back = read_jsonl(path)
    assert back == ALL_EVENTS
    assert back[-1].extra == {"windows": 12, "embed_ms": 3.25}


def test_jsonl_rounds_floats_and_flushes_per_batch():
    buf = io.StringIO()
    sink = JsonlWriter(buf)
    sink.handle([turn(7, 1.23456, 2.0004999, "speaker 2", score=float("nan"), emitted_at=3.3333333)])
    row = json.loads(buf.getvalue())
    assert row == {"kind": "turn", "turn_id": 7, "start": 1.235, "end": 2.0, "label": "speaker 2",
                   "score": None, "status": "final", "emitted_at": 3.333, "name": None}
    sink.close()
    assert not buf.closed  # a caller's file stays open


# ---------------------------------------------------------------- console


def test_console_plain_lines():
    buf = io.StringIO()
    view = ConsoleView(buf)
    assert view.color is False  # StringIO is not a TTY
    view.handle([turn(0, 12.5, 14.0, "speaker 2", "provisional", score=0.5)])
    view.handle([turn(0, 12.5, 14.0, "speaker 2", score=0.7)])
    assert buf.getvalue() == ""  # provisional: nothing; final but still open: not yet
    view.handle([turn(0, 12.5, 15.75, "speaker 2", score=0.81), turn(1, 16.0, 17.0, "speaker 3")])
    view.handle([Relabel("speaker 3", "speaker 1", 17.5)])
    view.handle([turn(1, 16.0, 18.0, "speaker 1", score=0.9)])
    view.close()
    assert buf.getvalue().splitlines() == [
        "  12.50 -  15.75  speaker 2   (0.81)",
        "  ~ speaker 3 -> speaker 1 (merge)",
        "  16.00 -  18.00  speaker 1   (0.90)",
    ]


def test_console_colour_is_stable_per_label():
    buf = io.StringIO()
    view = ConsoleView(buf, color=True)
    view.handle([turn(0, 0.0, 1.0, "speaker 1"), turn(1, 1.0, 2.0, "Alice"), turn(2, 2.0, 3.0, "speaker 1")])
    view.close()
    lines = buf.getvalue().splitlines()
    red = label_color("speaker 1")
    assert lines[0] == f"   0.00 -   1.00  \033[{red}mspeaker 1\033[0m   (0.80)"
    assert lines[2] == f"   2.00 -   3.00  \033[{red}mspeaker 1\033[0m   (0.80)"
    assert f"\033[{label_color('Alice')}mAlice\033[0m" in lines[1]
    assert label_color("speaker 1") != label_color("speaker 2")
    assert label_color("Alice") == label_color("Alice")


def test_console_colour_on_tty():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert ConsoleView(Tty()).color is (os.environ.get("NO_COLOR") is None)
