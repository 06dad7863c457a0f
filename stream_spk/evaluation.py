"""Diarization error rate per file and overall, with pyannote.metrics."""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field

from stream_spk.rttm import Turn


@dataclass(frozen=True)
class FileScore:
    """DER and its parts for one file (or the total), as fractions of reference speech."""

    uri: str
    der: float
    false_alarm: float
    missed: float
    confusion: float
    speech: float  # reference speech seconds scored (after the collar)
    note: str | None = None


@dataclass(frozen=True)
class Report:
    """Per-file scores, the total over all files, the settings, and notes on mismatched uris."""

    files: list[FileScore]
    total: FileScore
    collar: float
    skip_overlap: bool
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready dict (non-finite rates become None)."""
        def clean(d: dict) -> dict:
            return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}

        return {"collar": self.collar, "skip_overlap": self.skip_overlap,
                "files": [clean(asdict(f)) for f in self.files], "total": clean(asdict(self.total)),
                "notes": list(self.notes)}


def _annotation(uri: str, turns: list[Turn]):
    from pyannote.core import Annotation, Segment

    ann = Annotation(uri=uri)
    for k, (start, end, speaker) in enumerate(turns):
        if end > start:
            ann[Segment(start, end), k] = speaker
    return ann


def _score(uri: str, parts: dict[str, float], note: str | None = None) -> FileScore:
    total = parts["total"]
    fa, miss, conf = parts["false alarm"], parts["missed detection"], parts["confusion"]

    def rate(x: float) -> float:
        if total > 0:
            return x / total
        return 0.0 if x == 0 else math.inf

    return FileScore(uri, rate(fa + miss + conf), rate(fa), rate(miss), rate(conf), total, note)


def der_report(ref: dict[str, list[Turn]], hyp: dict[str, list[Turn]], collar: float = 0.25,
               skip_overlap: bool = False) -> Report:
    """Score ``hyp`` against ``ref`` (both ``{uri: [(start, end, speaker)]}``).

    ``collar`` is pyannote's: the total width removed around each reference boundary (half each
    side). A uri of ``ref`` missing from ``hyp`` is scored against an empty hypothesis (all
    missed); a uri only in ``hyp`` is not scored. Both are listed in ``notes``.
    """
    from pyannote.metrics.diarization import DiarizationErrorRate

    metric = DiarizationErrorRate(collar=collar, skip_overlap=skip_overlap)
    files: list[FileScore] = []
    notes: list[str] = []
    sums = {"total": 0.0, "false alarm": 0.0, "missed detection": 0.0, "confusion": 0.0}
    for uri in sorted(ref):
        note = None
        if uri not in hyp:
            note = "no hypothesis (scored as all missed)"
            notes.append(f"{uri}: {note}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "uem was approximated": the union of both extents
            parts = metric(_annotation(uri, ref[uri]), _annotation(uri, hyp.get(uri, [])), detailed=True)
        for key in sums:
            sums[key] += float(parts[key])
        files.append(_score(uri, parts, note))
    for uri in sorted(set(hyp) - set(ref)):
        notes.append(f"{uri}: in the hypothesis only (not scored)")
    return Report(files, _score("TOTAL", sums), collar, skip_overlap, notes)


def _pct(x: float) -> str:
    return f"{100 * x:6.1f}%" if math.isfinite(x) else f"{'inf':>7}"


def format_report(report: Report) -> str:
    """A text table: one row per file and a TOTAL row, rates in percent, then any notes."""
    width = max([len("file")] + [len(f.uri) for f in report.files] + [len("TOTAL")])
    head = f"{'file':<{width}}  {'DER':>7}  {'FA':>7}  {'miss':>7}  {'conf':>7}  {'speech s':>9}"
    rows = [head, "-" * len(head)]
    for f in [*report.files, None, report.total]:
        if f is None:
            rows.append("-" * len(head))
            continue
        rows.append(f"{f.uri:<{width}}  {_pct(f.der)}  {_pct(f.false_alarm)}  {_pct(f.missed)}  "
                    f"{_pct(f.confusion)}  {f.speech:9.1f}")
    overlap = ", overlap skipped" if report.skip_overlap else ""
    rows.append(f"(collar {report.collar:g} s{overlap}; {len(report.files)} file(s))")
    rows.extend(f"note: {n}" for n in report.notes)
    return "\n".join(rows)
