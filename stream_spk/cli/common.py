"""Options shared by the commands that embed audio, and the embedder they build."""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
BACKENDS = ("auto", "torch", "onnx", "openvino")  # = stream_spk.models.backends.BACKEND_CHOICES (no torch import here)


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """``--model-file``, ``--precision``, ``--compute-device`` and ``--backend``."""
    group = parser.add_argument_group("model")
    group.add_argument("--model-file", metavar="PATH",
                       help="ECAPA checkpoint (embedding_model.ckpt, or a folder holding it); "
                            "default: $STREAM_SPK_ECAPA_CKPT, else the cached download")
    group.add_argument("--precision", choices=PRECISIONS, default="auto",
                       help="inference precision; auto = bf16 on CUDA and on CPUs with native "
                            "bf16, fp32 elsewhere (default: %(default)s)")
    group.add_argument("--compute-device", default="auto", metavar="DEV",
                       help="torch device: auto, cpu, cuda, cuda:1 ... (default: %(default)s)")
    group.add_argument("--backend", choices=BACKENDS, default="auto",
                       help="what runs the speaker-embedding network and (default pipeline) the segmentation "
                            "model: torch, onnx (ONNX Runtime, CPU, fp32) or openvino (CPU); auto = the fastest "
                            "installed one for each (on the CPU: OpenVINO for the embeddings, ONNX Runtime fp32 "
                            "for the segmentation model; torch on CUDA) (default: %(default)s)")


def make_embedder(args: argparse.Namespace, quiet: bool = False):
    """Build an :class:`Embedder` from parsed model options (imports torch lazily)."""
    from stream_spk.models.embedder import Embedder

    check_compute_device(args.compute_device)
    return Embedder.from_checkpoint(args.model_file, device=args.compute_device,
                                    precision=args.precision, backend=args.backend, quiet=quiet)


def eprint(*parts: object) -> None:
    """Print to stderr."""
    print(*parts, file=sys.stderr)


def add_stream_args(parser: argparse.ArgumentParser) -> None:
    """Options of every streaming command: latency, VAD and enrolled profiles."""
    group = parser.add_argument_group("streaming")
    group.add_argument("--latency", type=float, default=1.0, metavar="S",
                       help="final speaker labels at most S seconds after the audio (default: %(default)s)")
    group.add_argument("--vad", choices=("pyannote", "silero", "webrtc"), default="pyannote",
                       help="what finds the speech: pyannote = the segmentation-3.0 model, which also "
                            "finds speaker changes and overlapped speech (two labels at once); silero "
                            "or webrtc = a voice activity detector with sliding windows, one label at "
                            "a time (webrtc is the cheapest, with more false alarms) (default: %(default)s)")
    group.add_argument("--vad-threshold", type=float, metavar="P",
                       help="speech threshold between 0 and 1 (defaults: pyannote 0.5, or 0.55 with "
                            "--no-second-look; silero 0.35)")
    group.add_argument("--no-second-look", dest="second_look", action="store_false",
                       help="with --vad pyannote: the segmentation model reads only the last 5 s at "
                            "each step, not also the last 10 s: about 1.5x faster, less accurate (dev DER 9.0%% "
                            "-> 9.7%%, AMI excerpts 25%% -> 28%%; README: Faster, less accurate)")
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
    if not args.second_look and args.vad != "pyannote":
        raise StreamSpkError(f"--no-second-look applies to --vad pyannote only (got --vad {args.vad})")
    if args.vad_threshold is not None and not 0.0 <= args.vad_threshold <= 1.0:
        raise StreamSpkError(f"--vad-threshold must be between 0 and 1 (got {args.vad_threshold:g})")
    check_compute_device(args.compute_device)
    for option in ("rttm", "jsonl"):  # replay and live: their outputs are checked before any work
        value = getattr(args, option, None)
        if isinstance(value, str) and value:
            check_output_file(value, f"--{option}")
    return SessionOptions(model_file=args.model_file, precision=args.precision,
                          compute_device=args.compute_device, backend=args.backend, latency=args.latency, vad=args.vad,
                          vad_threshold=args.vad_threshold, second_look=args.second_look,
                          profiles=args.profiles, use_profiles=not args.no_profiles)


_CUDA = re.compile(r"cuda(?::(\d+))?")


def check_compute_device(device: str) -> None:
    """A :class:`DeviceError` for a ``--compute-device`` that cannot be used here (before the
    model loads): only auto, cpu, cuda and cuda:N are supported, CUDA only when present."""
    from stream_spk.errors import DeviceError

    name = str(device).strip().lower()
    if name in ("auto", "cpu"):
        return
    match = _CUDA.fullmatch(name)
    if match is None:
        raise DeviceError(f"unknown or unsupported compute device {device!r} (use auto, cpu, cuda or cuda:N)")
    import torch

    if not torch.cuda.is_available():
        raise DeviceError(f"compute device {device!r} requested but CUDA is not available")
    count = torch.cuda.device_count()
    if match.group(1) is not None and int(match.group(1)) >= count:
        raise DeviceError(f"compute device {device!r}: no such GPU (this machine has {count})")


def check_output_file(path: str | os.PathLike, what: str = "output") -> Path:
    """Make sure ``path`` can be written (its folder exists and takes a new file) before any work;
    a :class:`StreamSpkError` naming it otherwise. Returns it as a Path."""
    from stream_spk.errors import StreamSpkError

    p = Path(path)
    if p.is_dir():
        raise StreamSpkError(f"{p}: {what} is a folder, not a file name")
    folder = p.parent
    if not folder.exists():
        raise StreamSpkError(f"{p}: output folder {folder} does not exist")
    if not folder.is_dir():
        raise StreamSpkError(f"{p}: {folder} is not a folder")
    check_writable_folder(folder, p)
    return p


def check_writable_folder(folder: str | os.PathLike, name: str | os.PathLike | None = None) -> None:
    """A :class:`StreamSpkError` when no file can be created in ``folder`` (tried for real: a
    permission test alone misses read-only file systems and is always yes for root)."""
    from stream_spk.errors import StreamSpkError

    folder = Path(folder)
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".stream-spk-", suffix=".check")
    except OSError as exc:
        raise StreamSpkError(f"{name or folder}: cannot write in {folder} "
                             f"({exc.strerror or type(exc).__name__})") from None
    os.close(fd)
    os.unlink(tmp)
