"""``stream-spk diarize FILE... --out-dir DIR``: batch diarization through the streaming pipeline."""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from stream_spk.errors import StreamSpkError

from .common import add_stream_args, session_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "diarize", help="diarize files (as fast as possible) into one RTTM each",
        description="Replay each file as fast as possible through the same streaming pipeline as `live` "
                    "and write DIR/<stem>.rttm (uri = stem) with exactly the labels the stream finalised. "
                    "A bad file is reported and the others are still processed (exit status 1).")
    parser.add_argument("files", nargs="+", metavar="FILE", help="audio files")
    parser.add_argument("--out-dir", required=True, metavar="DIR", help="output folder (created if missing)")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="files processed in parallel, one model per process (default: %(default)s)")
    parser.add_argument("--jsonl", action="store_true", help="also write DIR/<stem>.jsonl with every event")
    parser.add_argument("--refine", action="store_true",
                        help="also write DIR/refined/<stem>.rttm: an offline re-clustering of the whole "
                             "file after the stream ends (reuses the stream's embeddings; the streamed "
                             "DIR/<stem>.rttm is unchanged). Score it with eval --hyp DIR/refined")
    add_stream_args(parser)
    parser.set_defaults(func=run)


def diarize_file(path: str, out_dir: str, options, write_jsonl: bool = False, pipeline=None,
                 progress=None, refine: bool = False) -> dict:
    """Diarize one file; returns a summary dict (raises StreamSpkError for a bad file).

    With ``refine``, DIR/refined/<stem>.rttm also holds the offline second pass
    (:func:`stream_spk.refine.refine_turns`) and the summary its wall time.
    """
    from stream_spk.runner import StreamRunner
    from stream_spk.session import build_pipeline
    from stream_spk.sinks import JsonlWriter, RttmWriter
    from stream_spk.sources import FileSource

    source = FileSource(path, chunk_seconds=4.0, speed=None)
    stem = Path(path).stem
    pipeline = pipeline or build_pipeline(options)
    pipeline.keep_windows = refine
    pipeline.reset()
    rttm = RttmWriter(Path(out_dir) / f"{stem}.rttm", stem)
    sinks: list = [rttm]
    if write_jsonl:
        sinks.append(JsonlWriter(Path(out_dir) / f"{stem}.jsonl"))
    on_chunk = (lambda chunk, _s: progress(chunk.duration)) if progress else None
    summary = StreamRunner(source, pipeline, sinks, on_chunk=on_chunk).run()
    refine_seconds = None
    if refine:
        from stream_spk.refine import refine_turns
        from stream_spk.rttm import atomic_write_text, format_rttm

        t0 = time.perf_counter()
        refined = refine_turns(rttm.turns(), pipeline.window_log)
        (Path(out_dir) / "refined").mkdir(exist_ok=True)
        atomic_write_text(Path(out_dir) / "refined" / f"{stem}.rttm", format_rttm(stem, refined))
        refine_seconds = time.perf_counter() - t0
        pipeline.window_log.clear()
    stats = summary.last_stats
    return {"file": path, "audio": summary.audio_seconds, "wall": summary.wall_seconds,
            "speakers": sum(1 for s in summary.speakers if s.talk_time > 0),
            "latencies": list(pipeline.latencies),
            "latency_median": stats.latency_median if stats else None,
            "latency_p95": stats.latency_p95 if stats else None, "warnings": source.warnings(),
            "refine_seconds": refine_seconds}


_WORKER: dict = {}


def _worker_init(jobs: int) -> None:
    import os

    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // jobs))  # jobs x threads <= cores


def _worker_run(path: str, out_dir: str, options, write_jsonl: bool, refine: bool) -> dict:
    from stream_spk.session import build_pipeline

    if "pipeline" not in _WORKER:
        _WORKER["pipeline"] = build_pipeline(options)
    return diarize_file(path, out_dir, options, write_jsonl, _WORKER["pipeline"], refine=refine)


def _durations(files: list[str]) -> dict[str, float]:
    from stream_spk.audio import audio_info

    out = {}
    for f in files:
        try:
            info = audio_info(f)
            out[f] = info.frames / info.samplerate if info.samplerate else 0.0
        except StreamSpkError:
            out[f] = 0.0
    return out


def _advance(bar, seconds: float) -> None:
    """Move the audio bar on, never past its total (resampled chunks may round a little over)."""
    bar.update(max(0.0, min(seconds, bar.total - bar.n)))


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from stream_spk.session import build_pipeline

    if args.jobs < 1:
        raise StreamSpkError(f"--jobs must be >= 1 (got {args.jobs})")
    out_dir = Path(args.out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StreamSpkError(f"{out_dir}: cannot create output folder ({exc.strerror})") from None
    options = session_options(args)
    durations = _durations(args.files)
    failed: list[tuple[str, str]] = []
    results: list[dict] = []
    started = time.perf_counter()
    files_bar = tqdm(total=len(args.files), desc="files", unit="file", position=0, file=sys.stderr)
    audio_bar = tqdm(total=round(sum(durations.values()), 1), desc="audio", unit="s", position=1,
                     file=sys.stderr, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}]")
    try:
        if args.jobs == 1:
            pipeline = build_pipeline(options, quiet=False)
            for f in args.files:
                try:
                    results.append(diarize_file(f, str(out_dir), options, args.jsonl, pipeline,
                                                progress=lambda s: _advance(audio_bar, s), refine=args.refine))
                except StreamSpkError as exc:
                    failed.append((f, str(exc)))
                    _advance(audio_bar, durations[f])
                files_bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=args.jobs, initializer=_worker_init, initargs=(args.jobs,)) as pool:
                futures = {pool.submit(_worker_run, f, str(out_dir), options, args.jsonl, args.refine): f
                           for f in args.files}
                for fut in as_completed(futures):
                    f = futures[fut]
                    try:
                        results.append(fut.result())
                    except StreamSpkError as exc:
                        failed.append((f, str(exc)))
                    _advance(audio_bar, durations[f])
                    files_bar.update(1)
    finally:
        audio_bar.close()
        files_bar.close()
    audio = sum(r["audio"] for r in results)
    wall = time.perf_counter() - started  # model loading included
    print(f"diarized {len(results)} file(s), {audio:.1f} s of audio at {audio / wall if wall else 0:.1f}x real time "
          f"-> {out_dir}", file=sys.stderr)
    if args.refine and results:
        spent = sum(r["refine_seconds"] for r in results)
        print(f"offline second pass (--refine) -> {out_dir / 'refined'}: {spent:.2f} s in all", file=sys.stderr)
    for r in results:
        for note in r["warnings"]:
            print(f"stream-spk: warning: {note}", file=sys.stderr)
    for _file, reason in failed:
        print(f"stream-spk: error: {reason}", file=sys.stderr)  # the reason names the file
    return 1 if failed else 0
