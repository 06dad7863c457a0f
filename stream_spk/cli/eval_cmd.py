"""``stream-spk eval --ref REF --hyp HYP``: DER of hypothesis RTTMs against reference RTTMs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stream_spk.errors import StreamSpkError


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "eval", help="diarization error rate of RTTM hypotheses against references",
        description="Score every *.rttm of HYP against every *.rttm of REF (files or folders), "
                    "matched by uri, with pyannote.metrics; print one row per file and a TOTAL row.")
    parser.add_argument("--ref", required=True, metavar="REF", help="reference RTTM file or folder")
    parser.add_argument("--hyp", required=True, metavar="HYP", help="hypothesis RTTM file or folder")
    parser.add_argument("--collar", type=float, default=0.25,
                        help="seconds removed around reference boundaries, half each side "
                             "(default: %(default)s)")
    parser.add_argument("--skip-overlap", action="store_true", help="do not score overlapped speech")
    parser.add_argument("--json", metavar="OUT", help="also write the report as JSON")
    parser.set_defaults(func=run)


def load_rttms(path: str | Path, what: str) -> dict[str, list[tuple[float, float, str]]]:
    """All turns of an RTTM file, or of every *.rttm in a folder, by uri.

    A file without turns stands for its stem's uri with no speech.
    """
    from stream_spk.rttm import read_rttm

    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.rttm"))
        if not files:
            raise StreamSpkError(f"{p}: no .rttm files in the {what} folder")
    elif p.is_file():
        files = [p]
    else:
        raise StreamSpkError(f"{p}: no such {what} file or folder")
    out: dict[str, list[tuple[float, float, str]]] = {}
    for f in files:
        turns = read_rttm(f)
        if not turns:
            out.setdefault(f.stem, [])
        for uri, items in turns.items():
            out.setdefault(uri, []).extend(items)
    return out


def run(args: argparse.Namespace) -> int:
    from stream_spk.evaluation import der_report, format_report
    from stream_spk.rttm import atomic_write_text

    from .common import check_output_file

    if not args.collar >= 0:
        raise StreamSpkError(f"--collar must be >= 0 (got {args.collar})")
    out = check_output_file(args.json, "--json") if args.json else None  # before the scoring
    ref = load_rttms(args.ref, "reference")
    if not any(ref.values()):
        raise StreamSpkError(f"{args.ref}: the reference holds no SPEAKER turns")
    hyp = load_rttms(args.hyp, "hypothesis")
    report = der_report(ref, hyp, collar=args.collar, skip_overlap=args.skip_overlap)
    if not report.total.speech > 0:
        speech = sum(end - start for turns in ref.values() for start, end, _ in turns)
        what = f"the collar of {args.collar:g} s" + (" and --skip-overlap" if args.skip_overlap else "")
        raise StreamSpkError(f"nothing was scored: {what} removes all {speech:.1f} s of reference speech")
    print(format_report(report))
    if out is not None:
        atomic_write_text(out, json.dumps(report.to_dict(), indent=2) + "\n")
    return 0
