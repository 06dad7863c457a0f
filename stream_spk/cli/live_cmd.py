"""``stream-spk live``: label who is speaking into the microphone, as it happens."""

from __future__ import annotations

import argparse
import sys

from .common import add_stream_args, session_options
from .replay_cmd import add_output_args, make_sinks, parse_save_speaker, print_summary, save_speakers


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("live", help="label speakers from the microphone in real time",
                            description="Capture the microphone and print speaker turns as they are "
                                        "finalised; Ctrl-C stops (outputs are still written). Needs "
                                        "PortAudio (Debian/Ubuntu: apt install libportaudio2).")
    parser.add_argument("--device", metavar="D", help="input device index or name substring (stream-spk devices)")
    parser.add_argument("--seconds", type=float, metavar="S", help="stop after S seconds")
    add_output_args(parser)
    parser.add_argument("--save-speaker", action="append", default=[], metavar='"speaker N=NAME"',
                        help="when stopping, save session speaker N as enrolled speaker NAME")
    add_stream_args(parser)
    parser.set_defaults(func=run)


def make_mic(device: str | None):
    """The microphone source (a seam for tests)."""
    from stream_spk.sources import MicSource

    dev: int | str | None = int(device) if device is not None and device.isdigit() else device
    return MicSource(dev)


def run(args: argparse.Namespace) -> int:
    import threading

    from stream_spk.runner import StreamRunner
    from stream_spk.session import build_pipeline

    pairs = parse_save_speaker(args.save_speaker)
    options = session_options(args)
    options.create_profiles = bool(pairs)
    source = make_mic(args.device)  # device problems show before the model loads
    pipeline = build_pipeline(options, quiet=False)
    runner = StreamRunner(source, pipeline, make_sinks(args, "live"))
    timer = None
    if args.seconds:
        timer = threading.Timer(args.seconds, runner.stop)
        timer.start()
    print("listening… (Ctrl-C to stop)", file=sys.stderr)
    try:
        summary = runner.run()
    finally:
        if timer is not None:
            timer.cancel()
    print_summary(summary)
    save_speakers(pipeline, pairs, options)
    return 0
