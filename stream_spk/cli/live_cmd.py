"""``stream-spk live``: label who is speaking into the microphone, as it happens."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import IO

from stream_spk.errors import DeviceError, StreamSpkError
from stream_spk.sinks import ConsoleView
from stream_spk.types import Event, Relabel, SpeakerTurn, SpeechEnd, SpeechStart

from .common import add_stream_args, session_options
from .replay_cmd import add_output_args, make_sinks, parse_save_speaker, print_summary, save_speakers

_CLEAR = "\r\033[K"  # carriage return + erase to the end of the line


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("live", help="label speakers from the microphone in real time",
                            description="Capture the microphone and print speaker turns as they are "
                                        "finalised (on a terminal, a status line shows who is speaking "
                                        "now); Ctrl-C stops (what was heard is analysed and the outputs "
                                        "are written). Needs PortAudio (Debian/Ubuntu: apt install "
                                        "libportaudio2) and a microphone or sound server.")
    parser.add_argument("--device", metavar="D", help="input device index or name substring (stream-spk devices)")
    parser.add_argument("--seconds", type=float, metavar="S", help="stop after S seconds of captured audio")
    add_output_args(parser)
    parser.add_argument("--save-speaker", action="append", default=[], metavar='"speaker N=NAME"',
                        help="when stopping, save session speaker N as enrolled speaker NAME")
    add_stream_args(parser)
    parser.set_defaults(func=run)


class LiveConsoleView(ConsoleView):
    """The console of a live session.

    On a terminal (``live``): a status line, rewritten in place, shows who is speaking now (the
    provisional label, updated with every step), and each final turn is printed as a line of its
    own as soon as it is complete (the speech region it belongs to ended, or the next turn
    began). Anywhere else it is a plain :class:`ConsoleView` (one line per turn, nothing
    rewritten).
    """

    def __init__(self, stream: IO[str] | None = None, color: bool | None = None,
                 live: bool | None = None) -> None:
        super().__init__(stream, color)
        if live is None:
            isatty = getattr(self.stream, "isatty", None)
            live = bool(isatty and isatty())
        self.live = live
        self._status = ""
        self._provisional: SpeakerTurn | None = None
        self._in_speech = False
        self._speech_end: float | None = None
        self._now = 0.0  # stream time of the newest event

    def handle(self, events: list[Event]) -> None:
        if not self.live:
            super().handle(events)
            return
        provisional = None
        for ev in events:
            self._now = max(self._now, getattr(ev, "end", None) or getattr(ev, "time", None) or 0.0)
            if isinstance(ev, SpeakerTurn):
                if ev.status == "provisional":
                    provisional = ev
                elif ev.turn_id not in self._printed:
                    if ev.turn_id not in self._open:
                        self._flush()
                    self._open[ev.turn_id] = ev
            elif isinstance(ev, SpeechStart):
                self._in_speech, self._speech_end = True, None
            elif isinstance(ev, SpeechEnd):
                self._in_speech, self._speech_end = False, ev.time
            elif isinstance(ev, Relabel):
                self._write(f"  ~ {self._paint(ev.old)} -> {self._paint(ev.new)} ({ev.reason})")
        if events:
            self._provisional = provisional  # each step replaces the previous provisional label
        if self._speech_end is not None and any(t.end >= self._speech_end - 1e-6 for t in self._open.values()):
            self._flush()  # the speech region ended and its last turn is final: print it now
        self._show_status()
        self.stream.flush()

    def close(self) -> None:
        if self.live:
            self._provisional = None
            self._in_speech = False
        self._flush()
        if self.live and self._status:
            self.stream.write(_CLEAR)
            self._status = ""
        self.stream.flush()

    def status_text(self) -> str:
        """The status line: who is speaking now."""
        prov = self._provisional
        current = max(self._open.values(), key=lambda t: t.end, default=None)
        if prov is not None:
            since = prov.start  # the turn it continues, when the speaker is the same
            if current is not None and current.label == prov.label and current.end >= prov.start - 1e-6:
                since = current.start
            return f"{self._now:7.2f}  now: {self._paint(prov.label)} (speaking since {since:.2f} s, provisional)"
        if self._in_speech and current is not None:
            return f"{self._now:7.2f}  now: {self._paint(current.label)} (speaking since {current.start:.2f} s)"
        return f"{self._now:7.2f}  now: silence" if self._printed or self._open else "  listening…"

    def _show_status(self) -> None:
        text = self.status_text()
        if text != self._status:
            self.stream.write(_CLEAR + text)
            self._status = text

    def _write(self, line: str) -> None:
        if self.live and self._status:
            self.stream.write(_CLEAR)
            self._status = ""
        super()._write(line)


def make_mic(device: str | None):
    """The microphone source (a seam for tests)."""
    from stream_spk.sources import MicSource

    dev: int | str | None = int(device) if device is not None and device.isdigit() else device
    return MicSource(dev)


def _close_source(source) -> None:
    closer = getattr(source, "close", None)
    if callable(closer):
        closer()


class _Interrupts:
    """SIGINT while the session runs: 1st = stop (drain what was captured, flush, write outputs),
    2nd = stop draining, 3rd = the ordinary KeyboardInterrupt. The handler only starts a thread
    or assigns an attribute: it never takes a lock the interrupted main thread may hold."""

    def __init__(self, runner) -> None:
        self.runner = runner
        self.count = 0
        self.previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)

    def _handle(self, signum, frame) -> None:
        self.count += 1
        if self.count == 1:
            threading.Thread(target=self.runner.stop, name="stream-spk-stop", daemon=True).start()
        elif self.count == 2:
            self.runner.drain_seconds = 0.0
        else:
            raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    pairs = parse_save_speaker(args.save_speaker)
    options = session_options(args)
    options.create_profiles = bool(pairs)
    if args.seconds is not None and not args.seconds > 0:
        raise StreamSpkError(f"--seconds must be > 0 (got {args.seconds:g})")
    source = make_mic(args.device)
    from stream_spk.sources import quiet_native_output

    isatty = getattr(sys.stdout, "isatty", None)
    tty = bool(isatty and isatty())  # asked before the output goes through the noise filter
    with quiet_native_output(bool(getattr(source, "native", False))):
        return _run(args, source, pairs, options, tty)


def _run(args: argparse.Namespace, source, pairs, options, tty: bool) -> int:
    from stream_spk.runner import StreamRunner
    from stream_spk.session import build_pipeline

    try:
        opener = getattr(source, "open", None)
        if callable(opener):
            opener()  # device problems show before the model loads
        pipeline = build_pipeline(options, quiet=False)
        color = tty and "NO_COLOR" not in os.environ
        sinks = [LiveConsoleView(color=color, live=tty) if type(s) is ConsoleView else s
                 for s in make_sinks(args, "live")]
    except BaseException:
        _close_source(source)
        raise

    def on_chunk(chunk, summary) -> None:
        if args.seconds and chunk.t1 >= args.seconds and not runner.stopping:
            runner.stop()

    runner = StreamRunner(source, pipeline, sinks, on_chunk=on_chunk)
    print("listening… (Ctrl-C to stop)", file=sys.stderr)
    try:
        with _Interrupts(runner):
            summary = runner.run()
    except DeviceError as exc:
        done = runner.summary
        print_summary(done)
        outputs = [p for p in (args.rttm, args.jsonl) if p]
        written = f" and written to {', '.join(outputs)}" if outputs else ""
        save_speakers(pipeline, pairs, options)
        raise DeviceError(f"{exc}; the {done.audio_seconds:.1f} s heard until then were analysed{written}") \
            from None
    print_summary(summary)
    save_speakers(pipeline, pairs, options)
    return 0
