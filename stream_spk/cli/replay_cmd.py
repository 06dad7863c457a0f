"""``stream-spk replay FILE``: a recording through the live pipeline, paced like live audio."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stream_spk.errors import StreamSpkError

from .common import add_stream_args, session_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "replay", help="replay a recording in real time through the streaming pipeline",
        description="Replay a recording as if it were live (same pipeline as `live`): speaker turns are "
                    "printed as they are finalised. Any soundfile-readable format, rate and channel count.")
    parser.add_argument("file", metavar="FILE", help="audio file")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=float, default=1.0, metavar="X",
                      help="replay X times faster than real time (default: %(default)s)")
    pace.add_argument("--fast", action="store_true", help="as fast as possible (no waiting)")
    add_output_args(parser)
    parser.add_argument("--save-speaker", action="append", default=[], metavar='"speaker N=NAME"',
                        help="after the replay, save session speaker N as enrolled speaker NAME (repeatable)")
    add_stream_args(parser)
    parser.set_defaults(func=run)


def add_output_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rttm", metavar="OUT",
                        help="write the session record as RTTM: every final turn under the label its "
                             "speaker has at the end (merges and renames applied)")
    parser.add_argument("--jsonl", metavar="OUT",
                        help="write every event, as emitted, as JSON lines (docs/events.md)")
    parser.add_argument("--quiet", action="store_true", help="no console view")


def parse_save_speaker(specs: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for spec in specs:
        label, sep, name = spec.partition("=")
        if not sep or not label.strip() or not name.strip():
            raise StreamSpkError(f'--save-speaker expects "speaker N=NAME", got {spec!r}')
        pairs.append((label.strip(), name.strip()))
    return pairs


def make_sinks(args: argparse.Namespace, uri: str) -> list:
    from stream_spk.sinks import ConsoleView, JsonlWriter, RttmWriter

    from .common import check_output_file

    sinks: list = []
    for option in ("rttm", "jsonl"):
        if getattr(args, option):
            check_output_file(getattr(args, option), f"--{option}")
    if args.rttm:
        sinks.append(RttmWriter(args.rttm, uri))
    if args.jsonl:
        sinks.append(JsonlWriter(args.jsonl))
    if not args.quiet:
        sinks.append(ConsoleView())
    return sinks


def save_speakers(pipeline, pairs: list[tuple[str, str]], options) -> None:
    from stream_spk.enrollment import save_session_speaker
    from stream_spk.session import open_store

    if not pairs:
        return
    store = open_store(options.profiles)
    try:
        for label, name in pairs:
            try:
                embs, durations = pipeline.speaker_embeddings(label)
            except KeyError:
                known = ", ".join(s.label for s in pipeline.speakers()) or "none"
                raise StreamSpkError(f"no session speaker {label!r} to save (this session had: {known})") from None
            cluster = pipeline.clusterer.get(label)
            save_session_speaker(store, name, embs, durations,
                                 speech_seconds=cluster.speech if cluster is not None else None)
            print(f"saved {label} as enrolled speaker {name!r} ({len(embs)} windows)", file=sys.stderr)
    finally:
        store.close()


def print_summary(summary, stream=None) -> None:
    stream = sys.stderr if stream is None else stream
    speakers = ", ".join(f"{s.label} {s.talk_time:.1f}s" for s in summary.speakers if s.talk_time > 0)
    stats = summary.last_stats
    lat = f", label latency median {stats.latency_median:.2f}s p95 {stats.latency_p95:.2f}s" if stats else ""
    print(f"{summary.audio_seconds:.1f}s of audio in {summary.wall_seconds:.1f}s ({summary.speed:.1f}x real time)"
          f"{lat}; overruns {summary.overruns}; speakers: {speakers or 'none'}", file=stream)


def run(args: argparse.Namespace) -> int:
    from stream_spk.audio import QuietSource, probe_audio, warn
    from stream_spk.runner import StreamRunner
    from stream_spk.session import build_pipeline
    from stream_spk.sinks import ConsoleView, OnSuccess
    from stream_spk.sources import FileSource

    if not args.fast and not args.speed > 0:
        raise StreamSpkError(f"--speed must be > 0 (got {args.speed})")
    pairs = parse_save_speaker(args.save_speaker)
    options = session_options(args)  # also checks --rttm/--jsonl before any work
    options.create_profiles = bool(pairs)
    probe = probe_audio(args.file)  # missing, non-audio, empty and header-only files: an error
    source = FileSource(args.file, speed=None if args.fast else args.speed)
    pipeline = build_pipeline(options, quiet=False)
    sinks = make_sinks(args, Path(args.file).stem)
    # the files replace earlier ones only when the whole recording was read (a Ctrl-C keeps them)
    held = OnSuccess([s for s in sinks if not isinstance(s, ConsoleView)])
    runner = StreamRunner(QuietSource(source, probe.mpeg), pipeline,
                          [held] + [s for s in sinks if isinstance(s, ConsoleView)])
    try:
        summary = runner.run()
    except BaseException:
        held.abort()
        raise
    held.commit()
    print_summary(summary)
    decoded = None if summary.stopped else summary.audio_seconds  # stopped early: not a truncation
    for note in probe.notes(decoded, source.nonfinite_samples):
        warn(note)
    save_speakers(pipeline, pairs, options)
    return 0
