"""Shared fixtures: real-model embedders (checkpoint fetched once through the registry)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the entry points do (stream_spk.runtime)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def checkpoint_path() -> Path:
    from stream_spk.models.registry import resolve_checkpoint

    return resolve_checkpoint(quiet=True)


@pytest.fixture(scope="session")
def embedder_fp32(checkpoint_path):
    from stream_spk.models.embedder import Embedder

    return Embedder.from_checkpoint(checkpoint_path, device="cpu", precision="fp32", quiet=True)


@pytest.fixture(scope="session")
def clips() -> list[np.ndarray]:
    import soundfile as sf

    return [sf.read(p, dtype="float32")[0] for p in sorted(DATA.glob("clip*_vctk_*.wav"))]


@pytest.fixture(scope="session")
def reference() -> dict[str, np.ndarray]:
    with np.load(DATA / "reference.npz") as ref:
        return {k: ref[k] for k in ref.files}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private model cache (exports land in ``cache/exports``)."""
    monkeypatch.setenv("STREAM_SPK_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory):
    """A private model cache shared by one test module's real-model tests (exports once per module)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STREAM_SPK_CACHE_DIR", str(tmp_path_factory.mktemp("real-cache")))
        yield


def count_calls(monkeypatch, owner, name: str) -> list:
    """Replace ``owner.name`` by a wrapper that records its first argument's path, then calls it."""
    calls: list = []
    real = getattr(owner, name)

    def counting(model, path, *args):
        calls.append(path)
        real(model, path, *args)

    monkeypatch.setattr(owner, name, counting)
    return calls


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
