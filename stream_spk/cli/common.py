"""Options shared by the commands that embed audio, and the embedder they build."""

from __future__ import annotations

import argparse
import sys

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """``--model-file``, ``--precision`` and ``--compute-device``."""
    group = parser.add_argument_group("model")
    group.add_argument("--model-file", metavar="PATH",
                       help="ECAPA checkpoint (embedding_model.ckpt, or a folder holding it); "
                            "default: $STREAM_SPK_ECAPA_CKPT, else the cached download")
    group.add_argument("--precision", choices=PRECISIONS, default="auto",
                       help="inference precision; auto = bf16 on CUDA and on CPUs with native "
                            "bf16, fp32 elsewhere (default: %(default)s)")
    group.add_argument("--compute-device", default="auto", metavar="DEV",
                       help="torch device: auto, cpu, cuda, cuda:1 ... (default: %(default)s)")


def make_embedder(args: argparse.Namespace, quiet: bool = False):
    """Build an :class:`Embedder` from parsed model options (imports torch lazily)."""
    from stream_spk.models.embedder import Embedder

    return Embedder.from_checkpoint(args.model_file, device=args.compute_device,
                                    precision=args.precision, quiet=quiet)


def eprint(*parts: object) -> None:
    """Print to stderr."""
    print(*parts, file=sys.stderr)


def add_stream_args(parser: argparse.ArgumentParser) -> None:
    """Options of every streaming command: latency, VAD and enrolled profiles."""
    group = parser.add_argument_group("streaming")
    group.add_argument("--latency", type=float, default=1.0, metavar="S",
                       help="final speaker labels at most S seconds after the audio (default: %(default)s)")
    group.add_argument("--vad", choices=("silero", "webrtc"), default="silero",
                       help="voice activity detector (default: %(default)s; webrtc is cheaper, "
                            "with more false alarms)")
    group.add_argument("--vad-threshold", type=float, metavar="P",
                       help="speech threshold of the VAD score (silero default 0.5)")
    group.add_argument("--profiles", metavar="PATH",
                       help="enrolled-speaker store (default: $STREAM_SPK_PROFILES, else the user data dir)")
    group.add_argument("--no-profiles", action="store_true", help="do not recognise enrolled speakers")
    add_model_args(parser)


def session_options(args: argparse.Namespace):
    """:class:`SessionOptions` from parsed streaming options."""
    from stream_spk.errors import StreamSpkError
    from stream_spk.session import SessionOptions

    if not 0.2 <= args.latency <= 30:
        raise StreamSpkError(f"--latency must be between 0.2 and 30 seconds (got {args.latency})")
    return SessionOptions(model_file=args.model_file, precision=args.precision,
                          compute_device=args.compute_device, latency=args.latency, vad=args.vad,
                          vad_threshold=args.vad_threshold, profiles=args.profiles,
                          use_profiles=not args.no_profiles)
