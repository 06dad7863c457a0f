"""``stream-spk diarize FILE... --out-dir DIR``: batch diarization through the streaming pipeline."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from stream_spk.errors import StreamSpkError

from .common import add_stream_args, session_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "diarize", help="diarize files (as fast as possible) into one RTTM each",
        description="Replay each file as fast as possible through the same streaming pipeline as `live` "
                    "and write DIR/<stem>.rttm (uri = stem): the session record, every final turn under "
                    "the label its speaker has at the end of the file (merges and renames applied). "
                    "Inputs that share a stem (a.flac, a.ogg; d1/a.wav, d2/a.wav) are written under "
                    "their file name (a.flac.rttm, a.ogg.rttm) or, when that is shared too, their "
                    "folder and file name (d1_a.wav.rttm). Outputs replace earlier ones only when "
                    "complete. A bad file is reported and the others are still processed (exit status 1).")
    parser.add_argument("files", nargs="*", metavar="FILE", help="audio files")
    parser.add_argument("--files-from", metavar="LIST",
                        help="also the files listed in LIST, one path a line (# comments; streamed with --ray)")
    parser.add_argument("--skip-existing", action="store_true",
                        help="skip files whose outputs all exist (resume an interrupted run)")
    parser.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                        help="run the files on Ray: no ADDRESS starts a local Ray, auto joins a running "
                             "cluster (ray start --head), or ray://HOST:PORT / HOST:PORT; pip install "
                             "'stream-spk[ray]'. Put it after the files or write --ray=auto")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="with --ray: worker actors, one model each (default: one per GPU, else one "
                             "per CPU of the cluster)")
    parser.add_argument("--out-dir", required=True, metavar="DIR", help="output folder (created if missing)")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="files processed in parallel, one model per process (default: %(default)s)")
    parser.add_argument("--jsonl", action="store_true",
                        help="also write DIR/<stem>.jsonl with every event, as emitted")
    parser.add_argument("--refine", action="store_true",
                        help="also write DIR/refined/<stem>.rttm: an offline re-clustering of the whole "
                             "file after the stream ends (reuses the stream's embeddings; the streamed "
                             "DIR/<stem>.rttm is unchanged). Score it with eval --hyp DIR/refined")
    add_stream_args(parser)
    parser.set_defaults(func=run)


def diarize_file(path: str, out_dir: str, options, write_jsonl: bool = False, pipeline=None,
                 progress=None, refine: bool = False, name: str | None = None) -> dict:
    """Diarize one file; returns a summary dict (raises StreamSpkError for a bad file).

    Outputs are DIR/<name>.rttm (and .jsonl, refined/<name>.rttm), ``name`` defaulting to the
    file's stem; they replace earlier files only once the whole file was processed: a file that
    fails part-way leaves earlier outputs as they were and no temporary file. With ``refine``,
    DIR/refined/<name>.rttm also holds the offline second pass
    (:func:`stream_spk.refine.refine_turns`) and the summary its wall time.
    """
    from stream_spk.audio import QuietSource, probe_audio
    from stream_spk.runner import StreamRunner
    from stream_spk.session import build_pipeline
    from stream_spk.sinks import JsonlWriter, OnSuccess, RttmWriter
    from stream_spk.sources import FileSource

    probe = probe_audio(path)  # missing, non-audio, empty and header-only files: an error
    source = FileSource(path, chunk_seconds=4.0, speed=None)
    name = name or Path(path).stem
    pipeline = pipeline or build_pipeline(options)
    pipeline.keep_windows = refine
    pipeline.reset()
    rttm = RttmWriter(Path(out_dir) / f"{name}.rttm", name)
    files: list = [rttm]
    if write_jsonl:
        files.append(JsonlWriter(Path(out_dir) / f"{name}.jsonl"))
    held = OnSuccess(files)
    on_chunk = (lambda chunk, _s: progress(chunk.duration)) if progress else None
    refine_seconds = None
    try:
        summary = StreamRunner(QuietSource(source, probe.mpeg), pipeline, [held], on_chunk=on_chunk).run()
        if summary.stopped:  # Ctrl-C part-way: this file's outputs would look complete
            raise KeyboardInterrupt
        refined = None
        if refine:
            from stream_spk.refine import refine_turns
            from stream_spk.rttm import format_rttm

            t0 = time.perf_counter()
            refined = format_rttm(name, refine_turns(rttm.turns(), pipeline.window_log))
            refine_seconds = time.perf_counter() - t0
            pipeline.window_log.clear()
    except BaseException:
        held.abort()
        raise
    held.commit()
    if refined is not None:
        from stream_spk.rttm import atomic_write_text

        folder = Path(out_dir) / "refined"
        try:
            folder.mkdir(exist_ok=True)
        except OSError as exc:
            raise StreamSpkError(f"{folder}: cannot create output folder ({exc.strerror})") from None
        atomic_write_text(folder / f"{name}.rttm", refined)
    stats = summary.last_stats
    return {"file": path, "audio": summary.audio_seconds, "wall": summary.wall_seconds,
            "speakers": sum(1 for s in summary.speakers if s.talk_time > 0),
            "latencies": list(pipeline.latencies),
            "latency_median": stats.latency_median if stats else None,
            "latency_p95": stats.latency_p95 if stats else None,
            "warnings": probe.notes(summary.audio_seconds, source.nonfinite_samples),
            "refine_seconds": refine_seconds, "name": name}


def output_names(files: list[str]) -> tuple[list[str], list[str]]:
    """A unique output name per input (``<name>.rttm``), and one note per group that was renamed.

    The name is the file's stem; inputs whose stems are equal (ignoring case: a.flac, a.ogg) use
    their file name (a.flac, a.ogg); equal file names in different folders use the folder's name
    as a prefix (d1_a.wav); anything still equal gets -2, -3... in argument order.
    """
    names = [Path(f).stem for f in files]
    groups: dict[str, list[int]] = {}
    for i, stem in enumerate(names):
        groups.setdefault(stem.casefold(), []).append(i)
    notes = []
    for idxs in groups.values():
        if len(idxs) < 2:
            continue
        cands = [Path(files[i]).name for i in idxs]
        counts = Counter(c.casefold() for c in cands)
        for i, cand in zip(idxs, cands):
            if counts[cand.casefold()] > 1:  # the same file name in several folders
                cand = f"{Path(files[i]).absolute().parent.name}_{cand}".lstrip("_")
            names[i] = cand
    seen: set[str] = set()
    for i, name in enumerate(names):  # the last resort: a counter
        unique, k = name, 1
        while unique.casefold() in seen:
            k += 1
            unique = f"{name}-{k}"
        names[i] = unique
        seen.add(unique.casefold())
    for idxs in groups.values():
        if len(idxs) > 1:
            stem = Path(files[idxs[0]]).stem
            notes.append(f"{len(idxs)} inputs share the name {stem!r}; their outputs are named "
                         + ", ".join(f"{files[i]} -> {names[i]}.rttm" for i in idxs))
    return names, notes


_WORKER: dict = {}


def _worker_init(jobs: int) -> None:
    import os

    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // jobs))  # jobs x threads <= cores


def _worker_run(path: str, out_dir: str, options, write_jsonl: bool, refine: bool, name: str) -> dict:
    from stream_spk.session import build_pipeline

    if "pipeline" not in _WORKER:
        _WORKER["pipeline"] = build_pipeline(options)
    return diarize_file(path, out_dir, options, write_jsonl, _WORKER["pipeline"], refine=refine, name=name)


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

    from stream_spk.audio import warn
    from stream_spk.session import build_pipeline

    from .common import check_writable_folder

    if args.jobs < 1:
        raise StreamSpkError(f"--jobs must be >= 1 (got {args.jobs})")
    from stream_spk import distributed

    distributed.check_args(args)
    options = session_options(args)
    out_dir = Path(args.out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StreamSpkError(f"{out_dir}: cannot create output folder ({exc.strerror})") from None
    check_writable_folder(out_dir)  # before the model loads
    if args.ray:
        return distributed.run(args, options)
    if args.files_from:
        args.files = list(distributed.input_lister(args.files, args.files_from)())
    names, notes = output_names(args.files)
    if args.skip_existing:
        args.files, names = distributed.drop_finished(args.files, names, args)
    for note in notes:
        print(f"stream-spk: note: {note}", file=sys.stderr)
    durations = _durations(args.files)
    failed: list[tuple[str, str]] = []
    results: list[dict] = []
    started = time.perf_counter()
    quiet = not sys.stderr.isatty()  # progress bars only on a terminal
    files_bar = tqdm(total=len(args.files), desc="files", unit="file", position=0, file=sys.stderr,
                     disable=quiet)
    audio_bar = tqdm(total=round(sum(durations.values()), 1), desc="audio", unit="s", position=1,
                     file=sys.stderr, disable=quiet,
                     bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}]")
    try:
        if args.jobs == 1:
            pipeline = build_pipeline(options, quiet=False)
            for f, name in zip(args.files, names):
                try:
                    results.append(diarize_file(f, str(out_dir), options, args.jsonl, pipeline,
                                                progress=lambda s: _advance(audio_bar, s), refine=args.refine,
                                                name=name))
                except StreamSpkError as exc:
                    failed.append((f, str(exc)))
                    _advance(audio_bar, durations[f])
                files_bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=args.jobs, initializer=_worker_init, initargs=(args.jobs,)) as pool:
                futures = {pool.submit(_worker_run, f, str(out_dir), options, args.jsonl, args.refine, name): f
                           for f, name in zip(args.files, names)}
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
            warn(note)
    for _file, reason in failed:
        print(f"stream-spk: error: {reason}", file=sys.stderr)  # the reason names the file
    return 1 if failed else 0
