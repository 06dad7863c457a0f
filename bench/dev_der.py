"""Streaming DER, label latency and throughput on the dev set (or any folder of WAV + RTTM).

    python bench/dev_der.py [FOLDER] [--precision auto|fp32|bf16] [--backend auto|torch|onnx|openvino]
                            [--vad pyannote|silero|webrtc]
                            [--latency 1.0] [--no-second-look] [--refine] [--shifts 0.3,0.6,1.09]
    python bench/dev_der.py [FOLDER] --matrix

Runs every FOLDER/*.wav through the same path as `stream-spk diarize` (the streaming pipeline,
fed as fast as possible), then prints DER at collar 0.25 and 0 (overlap scored) per file, per
subset and overall with false alarm / miss / confusion, for the session record (what the RTTM
holds: final labels with the stream's later merges applied) and for the labels exactly as
emitted (from the JSON lines), the emitted-label latency (median, p95) and throughput (audio s
per wall s). With ``--refine`` the offline second pass of ``diarize --refine`` is scored too,
separately. ``--shifts`` re-runs every file with that much silence in front (reference shifted
to match) and prints the overall DER change: labels should not depend on where the audio falls
on the pipeline's step grid. ``--matrix`` prints, instead, one line per backend x precision
(what the embedder actually ran, throughput and session-record DER): a backend that cannot run
a precision here says why.
"""

from __future__ import annotations

from stream_spk.runtime import configure_threads

configure_threads()  # before torch loads

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from stream_spk.cli.diarize_cmd import diarize_file
from stream_spk.evaluation import der_report, format_report
from stream_spk.rttm import read_rttm
from stream_spk.session import SessionOptions, build_pipeline
from stream_spk.sinks import emitted_record, read_jsonl

DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dev"


def subset(uri: str) -> str:
    return re.sub(r"\d+$", "", uri).rstrip("_") or uri


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", default=str(DEFAULT))
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--backend", default="auto", choices=("auto", "torch", "onnx", "openvino"),
                        help="inference backend of both networks (as `diarize --backend`)")
    parser.add_argument("--vad", default="pyannote")
    parser.add_argument("--vad-threshold", type=float)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--no-second-look", dest="second_look", action="store_false",
                        help="the segmented pipeline without its 10 s second look (faster, less accurate)")
    parser.add_argument("--shifts", default="", help="comma-separated leading silences (s) to test too")
    parser.add_argument("--refine", action="store_true",
                        help="also score the offline second pass (`diarize --refine`), reported separately")
    parser.add_argument("--matrix", action="store_true",
                        help="instead: throughput and session-record DER for every backend x precision")
    args = parser.parse_args()
    folder = Path(args.folder)
    wavs = sorted(folder.glob("*.wav"))
    if not wavs:
        print(f"no .wav files in {folder}", file=sys.stderr)
        return 2
    if args.matrix:
        return matrix(wavs, args)
    options = SessionOptions(precision=args.precision, backend=args.backend, vad=args.vad,
                             vad_threshold=args.vad_threshold, latency=args.latency, use_profiles=False,
                             second_look=args.second_look)
    pipeline = build_pipeline(options)
    print(f"precision {pipeline.embedder.precision}, device {pipeline.embedder.device}, backend {args.backend}, "
          f"vad {args.vad}{'' if args.second_look or args.vad != 'pyannote' else ' (no second look)'}, "
          f"latency {args.latency}s, {len(wavs)} files", flush=True)
    lat: list[float] = []
    audio = wall = refine_wall = 0.0
    with tempfile.TemporaryDirectory() as out:
        for wav in wavs:
            t0 = time.perf_counter()
            res = diarize_file(str(wav), out, options, pipeline=pipeline, refine=args.refine, write_jsonl=True)
            wall += time.perf_counter() - t0 - (res["refine_seconds"] or 0.0)
            refine_wall += res["refine_seconds"] or 0.0
            audio += res["audio"]
            lat += res["latencies"]
        hyp: dict = {}
        emitted: dict = {}
        refined: dict = {}
        ref: dict = {}
        for wav in wavs:
            hyp.update(read_rttm(Path(out) / f"{wav.stem}.rttm") or {wav.stem: []})
            emitted[wav.stem] = emitted_record(read_jsonl(Path(out) / f"{wav.stem}.jsonl"))
            if args.refine:
                refined.update(read_rttm(Path(out) / "refined" / f"{wav.stem}.rttm") or {wav.stem: []})
            rttm = wav.with_suffix(".rttm")
            if rttm.exists():
                ref.update(read_rttm(rttm))
    print_reports("streaming, session record (RTTM: final labels, merges applied)", ref, hyp)
    print_reports("streaming, final labels as emitted (JSON lines)", ref, emitted, per_file=False)
    if args.refine:
        print_reports("offline second pass (--refine)", ref, refined)
        print(f"\nsecond pass: {refine_wall:.2f} s for {audio:.0f} s of audio (not in the throughput below)")
    arr = np.asarray(lat) if lat else np.zeros(1)
    print(f"\nemitted-label latency (stream s from a piece's first sample to its final label): "
          f"median {np.median(arr):.2f} s, p95 {np.percentile(arr, 95):.2f} s, max {arr.max():.2f} s")
    print(f"throughput: {audio:.0f} s of audio in {wall:.1f} s = {audio / wall:.1f}x real time")
    shifts = [float(x) for x in args.shifts.split(",") if x]
    if shifts:
        base = der_report(ref, {k: v for k, v in hyp.items() if k in ref}).total.der
        print(f"\nshift robustness (overall DER, collar 0.25; unshifted {base:.2%}):")
        for shift in shifts:
            shifted = shifted_run(wavs, options, pipeline, shift)
            der = der_report(ref, {k: v for k, v in shifted.items() if k in ref}).total.der
            print(f"  {shift:.2f} s of silence in front: {der:.2%} ({100 * (der - base):+.2f} points)")
    return 0


def matrix(wavs: list[Path], args) -> int:
    """One line per backend x precision: what ran, throughput, session-record DER (collar 0.25)."""
    from stream_spk.errors import StreamSpkError

    ref: dict = {}
    for wav in wavs:
        if wav.with_suffix(".rttm").exists():
            ref.update(read_rttm(wav.with_suffix(".rttm")))
    print(f"{len(wavs)} files; vad {args.vad}, latency {args.latency}s; model loading and first use not timed")
    print(f"{'backend':9s} {'precision':9s} {'embedder ran':22s} {'x real time':>11s} {'DER':>7s}")
    for backend in ("torch", "onnx", "openvino"):
        for precision in ("fp32", "bf16"):
            options = SessionOptions(precision=precision, backend=backend, vad=args.vad,
                                     vad_threshold=args.vad_threshold, latency=args.latency, use_profiles=False,
                                     second_look=args.second_look)
            try:
                pipeline = build_pipeline(options)
            except StreamSpkError as exc:
                print(f"{backend:9s} {precision:9s} not available: {exc}")
                continue
            ran = f"{pipeline.embedder.backend} {pipeline.embedder.precision}"
            audio = wall = 0.0
            hyp: dict = {}
            with tempfile.TemporaryDirectory() as out:
                for wav in wavs:
                    t0 = time.perf_counter()
                    res = diarize_file(str(wav), out, options, pipeline=pipeline)
                    wall += time.perf_counter() - t0
                    audio += res["audio"]
                    hyp.update(read_rttm(Path(out) / f"{wav.stem}.rttm") or {wav.stem: []})
            der = der_report(ref, {k: v for k, v in hyp.items() if k in ref}).total.der if ref else float("nan")
            print(f"{backend:9s} {precision:9s} {ran:22s} {audio / wall:10.1f}x {der:7.1%}", flush=True)
    return 0


def shifted_run(wavs: list[Path], options, pipeline, shift: float) -> dict:
    """Session records of every file with ``shift`` s of silence in front, shifted back."""
    import soundfile as sf

    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for wav in wavs:
            audio, rate = sf.read(wav, dtype="float32")
            padded = Path(tmp) / wav.name
            sf.write(padded, np.concatenate([np.zeros(int(round(shift * rate)), np.float32), audio]), rate)
            diarize_file(str(padded), tmp, options, pipeline=pipeline)
            turns = (read_rttm(Path(tmp) / f"{wav.stem}.rttm") or {wav.stem: []})[wav.stem]
            out[wav.stem] = [(a - shift, b - shift, label) for a, b, label in turns]
    return out


def print_reports(title: str, ref: dict, hyp: dict, per_file: bool = True) -> None:
    """DER tables at collar 0.25 and 0, per file (optional) and per subset."""
    for collar in (0.25, 0.0):
        report = der_report(ref, {k: v for k, v in hyp.items() if k in ref}, collar=collar)
        print(f"\n== {title}: DER, collar {collar} (overlap scored) ==")
        if per_file:
            print(format_report(report))
        else:
            t = report.total
            print(f"TOTAL {t.der:.1%} (FA {t.false_alarm:.1%}, miss {t.missed:.1%}, conf {t.confusion:.1%})")
        by_subset: dict[str, list] = {}
        for f in report.files:
            by_subset.setdefault(subset(f.uri), []).append(f)
        print("per subset (speech-weighted):")
        for name, files in sorted(by_subset.items()):
            sp = sum(f.speech for f in files)
            der = sum(f.der * f.speech for f in files) / sp if sp else float("nan")
            fa = sum(f.false_alarm * f.speech for f in files) / sp if sp else float("nan")
            miss = sum(f.missed * f.speech for f in files) / sp if sp else float("nan")
            conf = sum(f.confusion * f.speech for f in files) / sp if sp else float("nan")
            print(f"  {name:16s} DER {der:6.1%}  FA {fa:6.1%}  miss {miss:6.1%}  conf {conf:6.1%}  ({sp:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
