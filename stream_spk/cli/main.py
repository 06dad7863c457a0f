"""``stream-spk`` entry point: one sub-command per job; user errors print one line, exit 2."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Sequence

from stream_spk import __version__
from stream_spk.errors import StreamSpkError
from stream_spk.runtime import configure_threads

from . import (
    devices_cmd,
    diarize_cmd,
    embed_cmd,
    enroll_cmd,
    eval_cmd,
    gui_cmd,
    live_cmd,
    models_cmd,
    replay_cmd,
    speakers_cmd,
)

COMMANDS = (models_cmd, embed_cmd, replay_cmd, live_cmd, diarize_cmd, enroll_cmd, speakers_cmd, eval_cmd,
            devices_cmd, gui_cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stream-spk",
        description="Real-time speaker diarization and recognition: who is speaking, right now.",
    )
    parser.add_argument("--version", action="version", version=f"stream-spk {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    configure_threads()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except StreamSpkError as exc:
        print(f"stream-spk: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stream-spk: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """Console-script entry: :func:`main`, then exit without the interpreter's teardown.

    Tearing down an interpreter that imported torch takes about 0.35 s, a sixth of a one-off
    ``stream-spk enroll``. Every file, database and audio stream is closed by the time main()
    returns, so only the buffered output is left to flush. A thread still at work (non-daemon)
    gets the ordinary exit, which waits for it, except the idle workers of a library's thread
    pool: OpenVINO's import starts one (telemetry), and the ordinary exit would then also run
    PortAudio's exit handler, which blocks forever on a frozen sound server.
    """
    code = main()
    if any(t.is_alive() and not t.daemon and not t.name.startswith("ThreadPoolExecutor")
           for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    try:
        if "logging" in sys.modules:
            sys.modules["logging"].shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, OSError):
        pass  # a reader that went away (`stream-spk ... | head`) is not our error
    os._exit(code)


if __name__ == "__main__":
    run()
