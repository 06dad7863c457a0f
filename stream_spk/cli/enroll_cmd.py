"""``stream-spk enroll NAME FILE...`` or ``enroll NAME --mic``: enroll a known speaker."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable

import numpy as np

from stream_spk.errors import StreamSpkError

from .common import add_model_args, make_embedder
from .speakers_cmd import add_profiles_arg, open_store

SAMPLE_RATE = 16000
MAX_MIC_SECONDS = 600.0


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "enroll", help="enroll a known speaker from recordings or the microphone",
        description="Enroll NAME from audio files (any format soundfile reads) or from the microphone. "
                    "Only speech is used: at least 3 s are needed, 8 s or more recommended. Enrolling "
                    "a name that exists adds material to it. Exit status 0: enrolled (perhaps with "
                    "warnings); 2: refused or an error.")
    parser.add_argument("name", metavar="NAME", help="the speaker's name (at most 64 characters)")
    parser.add_argument("files", nargs="*", metavar="AUDIO", help="recordings of NAME alone")
    mic = parser.add_argument_group("microphone")
    mic.add_argument("--mic", action="store_true", help="record from the microphone instead of files")
    mic.add_argument("--seconds", type=float, default=15.0, metavar="S",
                     help="seconds to record (default: %(default)g)")
    mic.add_argument("--device", metavar="D",
                     help="input device index or name substring (see `stream-spk devices`)")
    parser.add_argument("--vad", choices=("silero", "webrtc"), default="silero",
                        help="voice activity detector that finds the speech (default: %(default)s)")
    add_profiles_arg(parser)
    add_model_args(parser)
    parser.set_defaults(func=run)


def make_mic(device: str | None):
    """The microphone source (a seam for tests): an iterable of AudioChunk with ``stop()``."""
    from stream_spk.sources import MicSource

    dev: int | str | None = int(device) if device is not None and device.isdigit() else device
    return MicSource(dev)


def open_mic(device: str | None):
    """:func:`make_mic`, with its device resolved and opened now when the source can do that."""
    source = make_mic(device)
    opener = getattr(source, "open", None)
    if callable(opener):
        opener()
    return source


def make_speech_fn(backend: str) -> Callable[[np.ndarray], list[tuple[int, int]]]:
    """The speech finder of the chosen VAD backend (a seam for tests)."""

    def find(samples: np.ndarray) -> list[tuple[int, int]]:
        from stream_spk.vad import speech_segments

        return speech_segments(samples, backend=backend)

    return find


def level_meter(samples: np.ndarray, width: int = 20) -> str:
    """``-23 dBFS |#########      |``: the RMS level of a chunk, -60..0 dBFS."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0
    db = 20 * np.log10(max(rms, 1e-10))
    filled = int(round(width * min(max((db + 60) / 60, 0.0), 1.0)))
    return f"{max(db, -99):4.0f} dBFS |{'#' * filled}{' ' * (width - filled)}|"


def record(source: Iterable, seconds: float, show: bool = True, announce: str | None = None) -> tuple[np.ndarray, int]:
    """Up to ``seconds`` of 16 kHz audio from a source of AudioChunks; returns (samples, overruns).

    The seconds are counted in captured samples, from the first audio the device delivers (not
    from when it was asked to open: that can take a second or two). ``announce`` is printed to
    stderr at that moment. Shows a progress bar over the seconds recorded with the live level;
    stops the source after.
    """
    from tqdm import tqdm

    target = round(seconds * SAMPLE_RATE)
    parts: list[np.ndarray] = []
    got = overruns = 0
    it = iter(source)
    bar = None
    try:
        for chunk in it:
            if bar is None:
                if announce:
                    print(announce, file=sys.stderr, flush=True)
                bar = tqdm(total=round(seconds, 1), desc="recording", unit="s", file=sys.stderr,
                           disable=not show, bar_format="{desc}: {bar:20} {n:4.1f}/{total:.1f} s  {postfix}")
            take = np.asarray(chunk.samples, np.float32)[: target - got]
            parts.append(take)
            got += take.size
            overruns += int(getattr(chunk, "overruns", 0))
            bar.set_postfix_str(level_meter(take), refresh=False)
            bar.update(round(min(got / SAMPLE_RATE, seconds), 1) - bar.n)
            if got >= target:
                break
    finally:
        if bar is not None:
            bar.close()
        stop = getattr(source, "stop", None)
        if stop is not None:
            stop()
        close = getattr(it, "close", None)
        if close is not None:
            close()
    return (np.concatenate(parts) if parts else np.zeros(0, np.float32)), overruns


def run(args: argparse.Namespace) -> int:
    from stream_spk.audio import read_audio
    from stream_spk.enrollment import enroll_audio
    from stream_spk.profiles import validate_name

    name = validate_name(args.name)
    if args.mic and args.files:
        raise StreamSpkError("give audio files or --mic, not both")
    if not args.mic and not args.files:
        raise StreamSpkError("give audio files to enroll from, or --mic to record")
    if args.mic and not 1.0 <= args.seconds <= MAX_MIC_SECONDS:
        raise StreamSpkError(f"--seconds must be between 1 and {MAX_MIC_SECONDS:g} (got {args.seconds:g})")
    source = open_mic(args.device) if args.mic else None  # device problems show before the store and model
    with open_store(args) as store:  # a foreign or other-model store fails before anything loads
        recordings = [(str(f), read_audio(f)) for f in args.files]  # bad files fail before the model
        embedder = make_embedder(args)  # loaded before recording: no wait after the user spoke
        if args.mic:
            samples, overruns = record(source, args.seconds, show=sys.stderr.isatty(),
                                       announce=f"recording {args.seconds:g} s: {name}, please speak now")
            if overruns:
                print(f"warning: {overruns} input overrun(s): some audio was lost", file=sys.stderr)
            recordings = [("microphone", samples)]
        result = enroll_audio(name, recordings, embedder, store, speech_fn=make_speech_fn(args.vad))
        path = store.path
    print(f"speech: {result.speech_seconds:.1f} s from {len(recordings)} recording(s)")
    refusal = None
    for fb in result.feedback:
        if fb.level == "refused":
            refusal = fb
        else:
            print(f"{'note' if fb.level == 'info' else 'warning'}: {fb.message}")
    if not result.accepted:
        reason = refusal.message if refusal else "no usable speech"
        print(f"stream-spk: error: {name!r} not enrolled: {reason}", file=sys.stderr)
        return 2
    sp = result.speaker
    print(f"enrolled {sp.name!r}: {sp.n_embeddings} windows, {sp.speech_seconds:.1f} s of speech in total "
          f"({path})")
    return 0
