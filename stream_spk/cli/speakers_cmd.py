"""``stream-spk speakers list|rename|delete|export|import``: manage enrolled speakers."""

from __future__ import annotations

import argparse
import sys

from stream_spk.errors import ProfileError


def add_profiles_arg(parser: argparse.ArgumentParser) -> None:
    """``--profiles PATH`` (default: $STREAM_SPK_PROFILES, else the user data dir)."""
    parser.add_argument("--profiles", metavar="PATH",
                        help="enrolled-speaker store (default: $STREAM_SPK_PROFILES, else "
                             "profiles.sqlite3 in the user data dir)")


def open_store(args: argparse.Namespace, *, check_model: bool = True, create: bool = True):
    """The :class:`ProfileStore` named by ``--profiles`` for the app's ECAPA model."""
    from stream_spk.profiles import ProfileStore

    return ProfileStore(args.profiles, check_model=check_model, create=create)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("speakers", help="list, rename, delete, export or import enrolled speakers",
                            description="Manage the enrolled (known) speakers; enroll new ones with "
                                        "`stream-spk enroll`.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    common = argparse.ArgumentParser(add_help=False)
    add_profiles_arg(common)

    p = actions.add_parser("list", parents=[common], help="list enrolled speakers")
    p.set_defaults(func=_list)
    p = actions.add_parser("rename", parents=[common], help="rename a speaker")
    p.add_argument("old", metavar="OLD")
    p.add_argument("new", metavar="NEW")
    p.set_defaults(func=_rename)
    p = actions.add_parser("delete", parents=[common], help="delete a speaker and their voice data")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=_delete)
    p = actions.add_parser("export", parents=[common], help="write speakers to a portable JSON file",
                           description="Write enrolled speakers (embeddings, sources, durations; no "
                                       "audio) to a JSON file readable by `speakers import`.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--name", action="append", metavar="NAME", help="only this speaker (repeatable)")
    p.set_defaults(func=_export)
    p = actions.add_parser("import", parents=[common], help="add speakers from an exported JSON file")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--replace", action="store_true",
                   help="replace speakers that are already enrolled under the same name")
    p.set_defaults(func=_import)


def _list(args: argparse.Namespace) -> int:
    from pathlib import Path

    from stream_spk.profiles import default_profiles_path

    path = Path(args.profiles).expanduser() if args.profiles else default_profiles_path()
    if not path.exists():
        print(f"no enrolled speakers ({path} does not exist yet)")
        return 0
    with open_store(args, check_model=False, create=False) as store:
        records = store.list()
        if not records:
            print(f"no enrolled speakers in {store.path}")
            return 0
        width = max(len("name"), *(len(r.name) for r in records))
        print(f"{'name':<{width}}  {'speech':>8}  {'windows':>7}  updated")
        for r in records:
            print(f"{r.name:<{width}}  {r.speech_seconds:>7.1f}s  {r.n_embeddings:>7}  {r.updated}")
        print(f"{len(records)} speaker(s) in {store.path}")
        store_id, store_hash = store.store_model
        if store_hash != store.model_hash:
            print(f"note: made with model {store_id} ({store_hash[:12]}), not the running one; "
                  "they will not be recognised: re-enroll them", file=sys.stderr)
    return 0


def _rename(args: argparse.Namespace) -> int:
    from stream_spk.profiles import validate_name

    validate_name(args.old, lookup=True)  # name errors first, store errors second
    validate_name(args.new)
    with open_store(args, check_model=False, create=False) as store:
        old = store.get(args.old).name
        store.rename(args.old, args.new)
        print(f"renamed {old!r} to {store.get(args.new).name!r}")
    return 0


def _delete(args: argparse.Namespace) -> int:
    from stream_spk.profiles import validate_name

    validate_name(args.name, lookup=True)
    with open_store(args, check_model=False, create=False) as store:
        rec = store.get(args.name)
        if not args.yes:
            if not sys.stdin.isatty():
                raise ProfileError(f"not deleting {rec.name!r} without --yes (no terminal to ask)")
            answer = input(f"delete {rec.name!r} ({rec.speech_seconds:.1f} s of speech, "
                           f"{rec.n_embeddings} windows)? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("not deleted")
                return 1
        store.delete(rec.name)
        print(f"deleted {rec.name!r}")
    return 0


def _export(args: argparse.Namespace) -> int:
    with open_store(args, check_model=False, create=False) as store:
        n = store.export_json(args.file, names=args.name)
    print(f"wrote {n} speaker(s) to {args.file}")
    return 0


def _import(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        names = store.import_json(args.file, replace=args.replace)
        print(f"imported {len(names)} speaker(s) into {store.path}: {', '.join(names) or 'none'}")
    return 0
