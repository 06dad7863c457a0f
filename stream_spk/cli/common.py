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
