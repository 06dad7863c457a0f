"""``stream-spk gui``: the Qt desktop app (also installed as ``stream-spk-gui``)."""

from __future__ import annotations

import argparse
import os
import sys

from stream_spk.cli.common import add_model_args
from stream_spk.errors import StreamSpkError


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 (got {text})")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (got {text})")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The app's options (shared by ``stream-spk gui`` and ``stream-spk-gui``)."""
    parser.add_argument("--replay", metavar="FILE", help="start replaying this recording at once")
    parser.add_argument("--mic", action="store_true", help="start listening to the microphone at once")
    parser.add_argument("--device", metavar="D",
                        help="with --mic: input device index or name substring (stream-spk devices)")
    parser.add_argument("--seconds", type=_positive, metavar="S",
                        help="with --mic: stop after S seconds of captured audio")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=_positive, default=1.0, metavar="X",
                      help="replay speed, e.g. 1, 2, 4 (default: %(default)s)")
    pace.add_argument("--fast", action="store_true", help="replay as fast as possible")
    parser.add_argument("--profiles", metavar="PATH",
                        help="profile store of enrolled speakers (default: $STREAM_SPK_PROFILES, else the "
                             "user store)")
    parser.add_argument("--latency", type=_positive, default=1.0, metavar="SECONDS",
                        help="final labels at most this long after the speech (default: %(default)s)")
    parser.add_argument("--no-second-look", dest="second_look", action="store_false",
                        help="the segmentation model reads only the last 5 s at each step, not also the "
                             "last 10 s: about 1.5x faster, less accurate (for a slow CPU)")
    parser.add_argument("--screenshot", metavar="PNG",
                        help="save a PNG of the window when the replay (or --mic session) ends")
    parser.add_argument("--screenshot-at", type=_non_negative, metavar="SECONDS",
                        help="... or once the replay reaches this stream time")
    parser.add_argument("--exit-when-done", action="store_true",
                        help="quit when the replay or --mic session ends (or right after --screenshot-at)")
    add_model_args(parser)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("gui", help="open the desktop app (live timeline of who is speaking)",
                            description="Open the Qt app: analyse a microphone or replay a file, watch the "
                                        "speakers on a live timeline, name and enroll them, export RTTM/JSON.")
    add_arguments(parser)
    parser.set_defaults(func=run)


def check_gui_available() -> None:
    """A :class:`StreamSpkError` when the Qt packages or a display are missing."""
    try:
        import pyqtgraph  # noqa: F401
        from PyQt5 import QtWidgets  # noqa: F401
    except ImportError as exc:
        raise StreamSpkError(f"the desktop app needs PyQt5 and pyqtgraph ({exc.name} is missing): "
                             "pip install 'stream-spk[ui]'") from None
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    if sys.platform.startswith("linux") and not platform and not (os.environ.get("DISPLAY")
                                                                   or os.environ.get("WAYLAND_DISPLAY")):
        raise StreamSpkError("no display found (DISPLAY is not set); run it in a desktop session, under "
                             "Xvfb, or with QT_QPA_PLATFORM=offscreen for --screenshot runs")


def run(args: argparse.Namespace) -> int:
    check_gui_available()
    from stream_spk.ui.app import run_gui

    return run_gui(args)
