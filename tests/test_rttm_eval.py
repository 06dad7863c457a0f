"""RTTM reading/writing, DER with pyannote.metrics, and the ``stream-spk eval`` command."""

from __future__ import annotations

import io
import json

import pytest

from stream_spk.cli.main import main
from stream_spk.errors import StreamSpkError
from stream_spk.evaluation import der_report, format_report
from stream_spk.rttm import read_rttm, write_rttm

REF = {"a": [(0.0, 10.0, "A"), (10.0, 20.0, "B")]}
# S1 covers A and 4 s of B (confusion 4), S2 stops 2 s early (miss 2): DER 6/20 at collar 0.
HYP = {"a": [(0.0, 14.0, "S1"), (14.0, 18.0, "S2")]}


def test_rttm_round_trip(tmp_path):
    turns = [(0.0, 1.5, "speaker 1"), (1.25, 3.0, "Alice"), (4.0, 4.0016, "x"), (5.0, 5.0004, "y")]
    path = tmp_path / "r.rttm"
    write_rttm(path, "meet 1", turns)
    text = path.read_text()
    assert text.splitlines()[0] == "SPEAKER meet_1 1 0.000 1.500 <NA> <NA> speaker_1 <NA> <NA>"
    assert read_rttm(path) == {"meet_1": [(0.0, 1.5, "speaker_1"), (1.25, 3.0, "Alice"),
                                          (4.0, 4.002, "x")]}
    buf = io.StringIO()
    write_rttm(buf, "meet_1", [(0.0, 1.5, "speaker_1"), (1.25, 3.0, "Alice"), (4.0, 4.002, "x")])
    assert buf.getvalue() == text


def test_read_rttm_skips_comments_and_other_records(tmp_path):
    path = tmp_path / "r.rttm"
    path.write_text("# comment\n\nSPKR-INFO a 1 <NA> <NA> <NA> unknown A <NA>\n"
                    "SPEAKER b 1 2.0 1.0 <NA> <NA> B <NA> <NA>\n"
                    "SPEAKER a 1 0.5 1.0 <NA> <NA> A <NA> <NA> <NA>\n"
                    "SPEAKER b 1 0.0 1.0 <NA> <NA> C <NA> <NA>\n")
    assert read_rttm(path) == {"b": [(0.0, 1.0, "C"), (2.0, 3.0, "B")], "a": [(0.5, 1.5, "A")]}


@pytest.mark.parametrize("line, why", [
    ("SPEAKER a 1 0.0 1.0 <NA> <NA>", "7 fields"),
    ("SPEAKER a 1 zero 1.0 <NA> <NA> A <NA> <NA>", "not numbers"),
    ("SPEAKER a 1 0.0 -1.0 <NA> <NA> A <NA> <NA>", "must be finite"),
    ("SPEAKER a 1 nan 1.0 <NA> <NA> A <NA> <NA>", "must be finite"),
])
def test_read_rttm_malformed_line(tmp_path, line, why):
    path = tmp_path / "bad.rttm"
    path.write_text(f"SPEAKER a 1 0.0 1.0 <NA> <NA> A <NA> <NA>\n{line}\n")
    with pytest.raises(StreamSpkError, match=r"bad\.rttm:2: malformed RTTM line") as info:
        read_rttm(path)
    assert why in str(info.value) and "\n" not in str(info.value)


def test_read_rttm_missing_file(tmp_path):
    with pytest.raises(StreamSpkError, match="nope.rttm: no such file"):
        read_rttm(tmp_path / "nope.rttm")


def test_der_of_reference_itself_is_zero():
    report = der_report(REF, {"a": [(s, e, f"x{spk}") for s, e, spk in REF["a"]]}, collar=0.0)
    assert report.total.der == 0.0 and report.files[0].der == 0.0
    assert report.total.speech == 20.0 and report.notes == []


def test_der_swap_and_miss_by_hand():
    r0 = der_report(REF, HYP, collar=0.0)
    f = r0.files[0]
    assert (f.uri, f.speech) == ("a", 20.0)
    assert f.confusion == pytest.approx(4 / 20)
    assert f.missed == pytest.approx(2 / 20)
    assert f.false_alarm == 0.0
    assert f.der == pytest.approx(6 / 20)
    # collar 0.25: 0.125 s removed each side of the reference boundaries at 0, 10 and 20.
    r = der_report(REF, HYP, collar=0.25)
    assert r.total.speech == pytest.approx(19.5)
    assert r.total.confusion == pytest.approx(3.875 / 19.5)
    assert r.total.missed == pytest.approx(1.875 / 19.5)
    assert r.total.der == pytest.approx(5.75 / 19.5)


def test_der_missing_hypothesis_and_extra_uri():
    ref = {**REF, "b": [(0.0, 5.0, "C")]}
    hyp = {"a": REF["a"], "c": [(0.0, 1.0, "Z")], "b0": []}
    r = der_report(ref, {**hyp}, collar=0.0)
    by_uri = {f.uri: f for f in r.files}
    assert by_uri["b"].missed == 1.0 and by_uri["b"].der == 1.0 and "no hypothesis" in by_uri["b"].note
    assert r.total.speech == 25.0 and r.total.der == pytest.approx(5 / 25)
    assert any(n.startswith("c: in the hypothesis only") for n in r.notes)
    table = format_report(r)
    total = [line for line in table.splitlines() if line.startswith("TOTAL")]
    assert len(total) == 1 and total[0].split()[1] == "20.0%"
    assert "note: b: no hypothesis" in table


def _write_dir(root, name, data):
    root.mkdir(exist_ok=True)
    for uri, turns in data.items():
        write_rttm(root / f"{uri}.rttm", uri, turns)
    return root


def test_eval_cli(tmp_path, capsys):
    ref = _write_dir(tmp_path / "ref", "ref", {**REF, "b": [(0.0, 5.0, "C")]})
    hyp = _write_dir(tmp_path / "hyp", "hyp", HYP)
    (hyp / "b.rttm").write_text("")  # the system found no speech in b
    out = tmp_path / "report.json"
    assert main(["eval", "--ref", str(ref), "--hyp", str(hyp), "--collar", "0", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    total = [line for line in text.splitlines() if line.startswith("TOTAL")]
    assert len(total) == 1 and total[0].split()[1] == f"{100 * 11 / 25:.1f}%"
    data = json.loads(out.read_text())
    assert data["total"]["der"] == pytest.approx(11 / 25) and data["collar"] == 0.0
    assert [f["uri"] for f in data["files"]] == ["a", "b"]
    # single files work too
    assert main(["eval", "--ref", str(ref / "a.rttm"), "--hyp", str(hyp / "a.rttm")]) == 0


@pytest.mark.parametrize("case", ["missing_ref", "empty_ref_dir", "missing_hyp", "empty_hyp_dir",
                                  "malformed"])
def test_eval_cli_bad_input(tmp_path, capsys, case):
    ref = _write_dir(tmp_path / "ref", "ref", REF)
    hyp = _write_dir(tmp_path / "hyp", "hyp", HYP)
    empty = tmp_path / "empty"
    empty.mkdir()
    args = {"missing_ref": (tmp_path / "nope", hyp), "empty_ref_dir": (empty, hyp),
            "missing_hyp": (ref, tmp_path / "nope"), "empty_hyp_dir": (ref, empty),
            "malformed": (ref, hyp)}[case]
    if case == "malformed":
        (hyp / "a.rttm").write_text("SPEAKER a 1 x y\n")
    assert main(["eval", "--ref", str(args[0]), "--hyp", str(args[1])]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("stream-spk: error: ") and captured.err.count("\n") == 1


def test_eval_huge_collar_scores_nothing_and_says_so(tmp_path, capsys):
    ref = _write_dir(tmp_path / "ref", "ref", REF)
    hyp = _write_dir(tmp_path / "hyp", "hyp", HYP)
    assert main(["eval", "--ref", str(ref), "--hyp", str(hyp), "--collar", "1000",
                 "--json", str(tmp_path / "r.json")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert "nothing was scored" in captured.err and "20.0 s of reference speech" in captured.err
    assert not (tmp_path / "r.json").exists()


def test_eval_json_target_checked_before_scoring_and_written_atomically(tmp_path, capsys, monkeypatch):
    ref = _write_dir(tmp_path / "ref", "ref", REF)
    hyp = _write_dir(tmp_path / "hyp", "hyp", HYP)
    import stream_spk.evaluation as evaluation

    def no_scoring(*a, **k):
        raise AssertionError("scored before the output was checked")

    with monkeypatch.context() as m:
        m.setattr(evaluation, "der_report", no_scoring)
        for out, why in (("/proc/r.json", "cannot write"), (str(tmp_path / "no" / "r.json"), "does not exist"),
                         (str(tmp_path), "is a folder")):
            assert main(["eval", "--ref", str(ref), "--hyp", str(hyp), "--json", out]) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and why in err and out in err, err
    out = tmp_path / "r.json"
    out.write_text("earlier report\n")
    (hyp / "a.rttm").write_text("SPEAKER a 1 x y\n")  # a malformed hypothesis: no report
    assert main(["eval", "--ref", str(ref), "--hyp", str(hyp), "--json", str(out)]) == 2
    assert out.read_text() == "earlier report\n"
    write_rttm(hyp / "a.rttm", "a", HYP["a"])
    assert main(["eval", "--ref", str(ref), "--hyp", str(hyp), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["files"][0]["uri"] == "a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hyp", "r.json", "ref"]
