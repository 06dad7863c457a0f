"""Helpers of bench/tune_segmented.py: oracle labels (the pipeline's voice counts, the reference's
names) and how often the provisional label is confirmed."""

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("soundfile")


def _module():
    path = Path(__file__).resolve().parents[1] / "bench" / "tune_segmented.py"
    spec = importlib.util.spec_from_file_location("tune_segmented", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _at(turns, t):
    return sorted(lab for s, e, lab in turns if s <= t < e)


def test_oracle_labels_take_the_reference_speakers_up_to_the_decided_count():
    oracle_labels = _module().oracle_labels
    reference = [(0.0, 2.0, "ann"), (1.0, 3.0, "bob")]
    counts = [(0.0, 0.5, 0), (0.5, 1.5, 1), (1.5, 2.5, 2), (2.5, 3.5, 1)]
    turns = oracle_labels(counts, reference)
    assert _at(turns, 0.2) == []  # decided silent: nothing, though ann spoke (a miss)
    assert _at(turns, 0.7) == ["ann"]
    assert _at(turns, 1.2) == ["ann"]  # overlap heard as one voice: one of the two (a miss)
    assert _at(turns, 1.7) == ["ann", "bob"]
    assert _at(turns, 2.2) == ["<extra 1>", "bob"]  # a second voice the reference lacks (a false alarm)
    assert _at(turns, 3.2) == ["<extra 1>"]  # speech where the reference has none
    assert _at(turns, 3.6) == []


def test_provisional_agreement_counts_only_stretches_that_got_a_final_label():
    from stream_spk.types import SpeakerTurn

    def turn(tid, start, end, label, status):
        return SpeakerTurn(tid, start, end, label, 1.0, status, end, None)

    events = [
        turn(-1, 0.0, 1.0, "a", "provisional"),
        turn(-1, 1.0, 2.0, "a", "provisional"),  # b's turn shown as a for a second
        turn(1, 0.0, 1.0, "a", "final"),
        turn(2, 1.0, 1.5, "b", "final"),
        turn(2, 1.0, 2.0, "b", "final"),  # the newest version of turn 2 counts
        turn(-1, 2.0, 3.0, "b", "provisional"),  # never finalised (e.g. not speech): not counted
    ]
    agree, total = _module().provisional_agreement(events)
    assert abs(agree - 1.0) < 1e-9 and abs(total - 2.0) < 1e-9


def test_two_folders_with_a_file_of_the_same_name_is_a_one_line_error(tmp_path, monkeypatch):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "meeting.wav").write_bytes(b"")
    monkeypatch.setattr(sys, "argv", ["tune_segmented.py", "--folder", str(tmp_path / "a"),
                                      "--folder", str(tmp_path / "b")])
    with pytest.raises(SystemExit) as exc:
        _module().main()
    assert str(exc.value) == "error: two --folder files share a name; names are the scoring keys"
