"""``stream-spk diarize --ray [ADDRESS]``: the batch ``diarize`` over a Ray cluster.

Files become calls on a set of Ray actors, one loaded pipeline (model) per actor, each running
the very function the serial path runs (:func:`stream_spk.cli.diarize_cmd.diarize_file`), so the
outputs are byte for byte those of the serial ``diarize`` with the same options (on the same
kind of device). The driver

* streams the input list (``--files-from``): it is read once to count stems (an 8-byte hash
  per distinct stem), again to name the few files whose stems are shared exactly as
  :func:`~stream_spk.cli.diarize_cmd.output_names` does, and once more while submitting;
  at most one file per worker is in flight;
* resolves paths to absolute ones before submitting them (workers on other nodes have other
  working folders; inputs and the output folder must be on storage every node sees);
* skips files whose outputs all exist with ``--skip-existing`` (a resumed run);
* reports a bad file in one line and goes on (exit status 1);
* restarts a worker that died (killed, out of memory, a crash in a decoder) and retries its
  file on it (Ray's ``max_restarts`` / ``max_task_retries``); a file that kills its worker
  :data:`MAX_ATTEMPTS` times is reported as bad.

Outputs are written by ``diarize_file`` under temporary names and renamed once complete, so
an interrupted run never leaves a partial RTTM under its final name.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from stream_spk.errors import StreamSpkError

MAX_ATTEMPTS = 3  # tries per file when its worker process dies under it
CRASH_HOOK_ENV = "STREAM_SPK_TEST_CRASH_ONCE"  # tests: a flag-file path; the worker dies mid-file once


# --------------------------------------------------------------------------------------------
# Inputs: a (possibly long) list, streamed


def read_list(path: str | os.PathLike) -> Iterator[str]:
    """Paths in a ``--files-from`` list, one a line (blank lines and ``#`` comments skipped)."""
    try:
        fh = open(path, encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
    except OSError as exc:
        raise StreamSpkError(f"{path}: cannot read the file list ({exc.strerror})") from None
    with fh:
        for line in fh:
            line = line.rstrip("\r\n")
            if line.strip() and not line.lstrip().startswith("#"):
                yield line


def input_lister(files: Iterable[str], files_from: str | None) -> Callable[[], Iterator[str]]:
    """A function that yields the inputs afresh on each call: ``files``, then the list's lines."""
    files = list(files)

    def lister() -> Iterator[str]:
        yield from files
        if files_from:
            yield from read_list(files_from)

    return lister


def _key(stem: str) -> bytes:
    return hashlib.blake2b(stem.casefold().encode("utf-8", "surrogatepass"), digest_size=8).digest()


def plan_names(lister: Callable[[], Iterator[str]]) -> tuple[int, list[str], Callable[[], Iterator[tuple[str, str]]]]:
    """``(count, notes, named)``: the number of inputs, the notes of
    :func:`~stream_spk.cli.diarize_cmd.output_names`, and a function yielding ``(path, name)``
    in input order with the names ``output_names`` gives over the whole list.

    Only the files whose stem is shared (or equals a name given to such a file) can be
    renamed; those few are named together by ``output_names`` itself, the others keep their
    stem. Memory: one 8-byte hash per distinct stem, and the renamed files.
    """
    from stream_spk.cli.diarize_cmd import output_names

    counts: dict[bytes, int] = {}
    total = 0
    for path in lister():
        k = _key(Path(path).stem)
        counts[k] = counts.get(k, 0) + 1
        total += 1
    special = {k for k, c in counts.items() if c > 1}
    del counts
    renamed: dict[int, str] = {}
    notes: list[str] = []
    while special:  # a fixed point: files whose stem equals a name given to a renamed file join in
        subset = [(i, p) for i, p in enumerate(lister()) if _key(Path(p).stem) in special]
        names, notes = output_names([p for _, p in subset])
        renamed = {i: name for (i, _), name in zip(subset, names)}
        grown = special | {_key(name) for name in names}
        if grown == special:
            break
        special = grown

    def named() -> Iterator[tuple[str, str]]:
        for i, path in enumerate(lister()):
            yield path, renamed.get(i, Path(path).stem)

    return total, notes, named


def output_paths(out_dir: str | os.PathLike, name: str, jsonl: bool = False, refine: bool = False) -> list[Path]:
    """Every output ``diarize`` writes for the input named ``name``."""
    out = Path(out_dir)
    paths = [out / f"{name}.rttm"]
    if jsonl:
        paths.append(out / f"{name}.jsonl")
    if refine:
        paths.append(out / "refined" / f"{name}.rttm")
    return paths


def outputs_exist(out_dir: str | os.PathLike, name: str, jsonl: bool = False, refine: bool = False) -> bool:
    """True when every output of ``name`` is there (each is only ever renamed in complete)."""
    return all(p.is_file() for p in output_paths(out_dir, name, jsonl, refine))


def drop_finished(files: list[str], names: list[str], args) -> tuple[list[str], list[str]]:
    """``--skip-existing`` in the serial path: the files (and names) whose outputs are missing."""
    kept = [(f, n) for f, n in zip(files, names) if not outputs_exist(args.out_dir, n, args.jsonl, args.refine)]
    if len(kept) < len(files):
        print(f"skipped {len(files) - len(kept)} file(s) whose outputs exist (--skip-existing)", file=sys.stderr)
    return [f for f, _ in kept], [n for _, n in kept]


_ADDRESS = re.compile(r"(auto|local|ray://\S+|\[?[\w.:-]+\]?:\d+)")


def check_args(args) -> None:
    """Option errors of ``diarize`` (inputs, ``--ray``, ``--workers``), before anything loads."""
    if args.ray and not _ADDRESS.fullmatch(args.ray):  # `--ray a.wav`: the file was taken for an address
        raise StreamSpkError(f"--ray {args.ray!r} is not a Ray address (auto, ray://HOST:PORT or HOST:PORT); "
                             "put --ray after the files or write --ray=ADDRESS")
    if args.workers is not None and not args.ray:
        raise StreamSpkError("--workers goes with --ray (for processes on this machine use --jobs)")
    if args.workers is not None and args.workers < 1:
        raise StreamSpkError(f"--workers must be >= 1 (got {args.workers})")
    if not args.files and not args.files_from:
        raise StreamSpkError("no input files (give FILE... or --files-from LIST)")
    if args.files_from and not os.path.isfile(args.files_from):
        raise StreamSpkError(f"{args.files_from}: --files-from list not found")
    if args.ray:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise StreamSpkError("--ray needs Ray: pip install 'stream-spk[ray]'") from None


# --------------------------------------------------------------------------------------------
# The worker


class DiarizeWorker:
    """One Ray actor: a loaded pipeline, and ``diarize_file`` per call."""

    def __init__(self, options, out_dir: str, jsonl: bool, refine: bool, threads: int,
                 crash_flag: str | None = None) -> None:
        from stream_spk.runtime import configure_threads

        configure_threads()
        self.out_dir, self.jsonl, self.refine, self.crash_flag = out_dir, jsonl, refine, crash_flag
        self.error: str | None = None
        self.pipeline = None
        try:
            import torch

            torch.set_num_threads(max(1, int(threads)))
            from stream_spk.session import build_pipeline

            self.pipeline = build_pipeline(options, quiet=True)
        except StreamSpkError as exc:
            self.error = str(exc)
        self.options = options

    def ready(self) -> str | None:
        """None once the pipeline is loaded; the one-line reason otherwise."""
        return self.error

    def run(self, path: str, name: str) -> dict:
        """``diarize_file`` on one input; a bad file comes back as ``{"error": ...}``."""
        from stream_spk.cli.diarize_cmd import diarize_file

        progress = self._crash_once if self.crash_flag else None
        try:
            summary = diarize_file(path, self.out_dir, self.options, self.jsonl, self.pipeline,
                                   progress=progress, refine=self.refine, name=name)
        except StreamSpkError as exc:
            return {"file": path, "name": name, "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - one file's bug must not end the whole run
            return {"file": path, "name": name, "error": f"{path}: {type(exc).__name__}: {exc}"}
        summary.pop("latencies", None)  # not needed by the driver; keeps results small
        summary["node"] = os.uname().nodename
        return summary

    def _crash_once(self, _seconds: float) -> None:
        """Test hook: the first worker to reach here dies at once (mid-file), later ones go on."""
        try:
            fd = os.open(self.crash_flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os._exit(1)


# --------------------------------------------------------------------------------------------
# The driver


def _connect(address: str | None, workers: int | None) -> bool:
    """Join or start Ray; True when this call started it (and so must shut it down)."""
    import ray

    if ray.is_initialized():  # a caller (a test, a notebook) already connected
        return False
    quiet = {"include_dashboard": False, "log_to_driver": False, "configure_logging": True,
             "logging_level": "ERROR"}
    if address:
        ray.init(address=address, **quiet)
    else:
        cpus = os.cpu_count() or 1
        ray.init(num_cpus=max(cpus, workers or 0), **quiet)
    return True


def _actor_shape(workers: int | None) -> tuple[int, dict, int]:
    """``(workers, resource options, torch threads)`` from what the cluster has."""
    import ray

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    cpus = float(resources.get("CPU", 1)) or 1.0
    if gpus:
        n = workers or gpus
        return n, {"num_gpus": 1, "num_cpus": 1}, max(1, int(cpus // max(n, 1)))
    n = workers or max(1, int(cpus))
    share = cpus / n
    per = float(int(share)) if share >= 1 else share  # a fractional share when workers > CPUs
    return n, {"num_cpus": per}, max(1, int(share))


def run(args, options) -> int:
    """``diarize --ray``: the same outputs and messages as the serial ``diarize``."""
    try:
        import ray
    except ImportError:
        raise StreamSpkError("--ray needs Ray: pip install 'stream-spk[ray]'") from None
    from tqdm import tqdm

    from stream_spk.audio import warn

    out_dir = Path(args.out_dir).absolute()
    lister = input_lister(args.files, args.files_from)
    total, notes, named = plan_names(lister)
    if total == 0:
        raise StreamSpkError(f"{args.files_from}: no input files in the list")
    for note in notes:
        print(f"stream-spk: note: {note}", file=sys.stderr)

    started = time.perf_counter()
    own = _connect(args.ray if args.ray != "local" else None, args.workers)
    results: list[dict] = []  # small summaries only (no paths' worth of data beyond the file name)
    failed: list[str] = []
    skipped = 0
    quiet = not sys.stderr.isatty()
    files_bar = tqdm(total=total, desc="files", unit="file", position=0, file=sys.stderr, disable=quiet)
    audio_bar = tqdm(desc="audio", unit="h", position=1, file=sys.stderr, disable=quiet,
                     bar_format="{desc}: {n:.2f} h [{elapsed}, {rate_fmt}]")
    try:
        n, resources, threads = _actor_shape(args.workers)
        crash_flag = os.environ.get(CRASH_HOOK_ENV) or None
        Worker = ray.remote(DiarizeWorker).options(max_restarts=-1, max_task_retries=MAX_ATTEMPTS - 1,
                                                   **resources)

        def new_actor():
            return Worker.remote(options, str(out_dir), args.jsonl, args.refine, threads, crash_flag)

        actors = [new_actor() for _ in range(n)]
        for reason in ray.get([a.ready.remote() for a in actors]):
            if reason:
                raise StreamSpkError(reason)
        # One call per actor at a time: at most `n` files in flight, and a worker's restart
        # (with its retry) only ever concerns the file it died on.
        idle = list(range(n))
        in_flight: dict = {}  # ObjectRef -> (actor index, path)
        pending = ((str(Path(p).absolute()), name) for p, name in named())

        def finish(result: dict) -> None:
            if "error" in result:
                failed.append(result["error"])
            else:
                results.append(result)
                audio_bar.update(result["audio"] / 3600)
            files_bar.update(1)

        while True:
            while idle:
                item = next(pending, None)
                if item is None:
                    break
                path, name = item
                if args.skip_existing and outputs_exist(out_dir, name, args.jsonl, args.refine):
                    skipped += 1
                    files_bar.update(1)
                    continue
                i = idle.pop()
                in_flight[actors[i].run.remote(path, name)] = (i, path)
            if not in_flight:
                break
            done, _ = ray.wait(list(in_flight), num_returns=1)
            i, path = in_flight.pop(done[0])
            try:
                finish(ray.get(done[0]))
            except ray.exceptions.RayActorError:  # died MAX_ATTEMPTS times on this file
                finish({"error": f"{path}: the worker process died {MAX_ATTEMPTS} times on this file"})
                ray.kill(actors[i])  # it has no other call: a fresh one takes its place
                actors[i] = new_actor()
            idle.append(i)
    finally:
        audio_bar.close()
        files_bar.close()
        if own:
            ray.shutdown()
    audio = sum(r["audio"] for r in results)
    wall = time.perf_counter() - started  # Ray start and model loading included
    if skipped:
        print(f"skipped {skipped} file(s) whose outputs exist (--skip-existing)", file=sys.stderr)
    print(f"diarized {len(results)} file(s), {audio:.1f} s of audio at {audio / wall if wall else 0:.1f}x real time "
          f"-> {out_dir} (Ray, {n} worker(s))", file=sys.stderr)
    if args.refine and results:
        spent = sum(r["refine_seconds"] or 0.0 for r in results)
        print(f"offline second pass (--refine) -> {out_dir / 'refined'}: {spent:.2f} s in all", file=sys.stderr)
    for r in results:
        for note in r["warnings"]:
            warn(note)
    for reason in failed:
        print(f"stream-spk: error: {reason}", file=sys.stderr)  # the reason names the file
    return 1 if failed else 0
