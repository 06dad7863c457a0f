"""Read tensors out of a torch zip checkpoint without running its pickle's code.

``torch.save`` writes a zip archive: ``<root>/data.pkl`` (a pickle of the saved object) and one
raw little-endian file per storage under ``<root>/data/<key>``. A PyTorch-Lightning checkpoint's
pickle also names the training library's own classes (pyannote's ``Specifications``, ``Problem``
and so on), which a plain ``torch.load(weights_only=True)`` refuses and ``weights_only=False``
would import and run. :func:`load_tensor_checkpoint` uses its own restricted unpickler instead:

* tensors are rebuilt by our own code from the raw storage bytes (no torch unpickling code runs);
* plain containers and primitives (dict, list, tuple, set, OrderedDict, str, int, float, bool,
  None, bytes) are built by the pickle machine itself or by an allow-list of harmless constructors;
* globals under the namespaces in :data:`INERT_NAMESPACES` (the training library's metadata
  classes) become :class:`Inert` placeholders that record their arguments and do nothing;
* any other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``, ...) is refused with
  :class:`UnsafeCheckpointError` before anything is called.

Nothing is imported by name from the pickle, so a crafted file cannot execute code through it.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import sys
import zipfile
from typing import Any

import torch

from stream_spk.errors import ModelError

#: Modules whose classes may appear in a checkpoint's metadata; they become inert placeholders.
INERT_NAMESPACES = ("pyannote.", "pytorch_lightning.", "lightning.", "lightning_fabric.", "torch.torch_version")

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class UnsafeCheckpointError(ModelError):
    """The checkpoint's pickle names something we will not rebuild (possible code execution)."""


class Inert:
    """Stand-in for a class of the training library: keeps its arguments, runs nothing."""

    qualname = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<inert {self.qualname}>"


class _StorageType:
    """What a ``torch.XxxStorage`` global unpickles to: only its dtype is kept."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: tuple, stride: tuple, *_ignored: Any) -> torch.Tensor:
    # storage: a flat tensor of the storage's dtype; requires_grad, hooks and metadata are dropped
    if not (isinstance(offset, int) and isinstance(size, tuple) and isinstance(stride, tuple)):
        raise UnsafeCheckpointError("malformed tensor record in checkpoint")
    return torch.as_strided(storage, tuple(size), tuple(stride), offset).clone()


def _rebuild_parameter(data: torch.Tensor, *_ignored: Any) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise UnsafeCheckpointError("malformed parameter record in checkpoint")
    return data


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    # protocol 2 stores bytes as _codecs.encode(str, "latin1"); only that is accepted
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafeCheckpointError("unexpected _codecs.encode call in checkpoint")
    return text.encode("latin1")


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    # what protocol-2 pickles (torch.save's default) use for these plain values
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "complex"): complex,
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    ("__builtin__", "bytearray"): bytearray,
    ("__builtin__", "complex"): complex,
    ("_codecs", "encode"): _latin1_bytes,
}


def _inert_class(module: str, name: str) -> type:
    return type(name, (Inert,), {"qualname": f"{module}.{name}", "__module__": __name__})


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, archive: zipfile.ZipFile, root: str) -> None:
        super().__init__(file)
        self._archive = archive
        self._root = root
        self._storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 (pickle API)
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if any(module == ns.rstrip(".") or module.startswith(ns) for ns in INERT_NAMESPACES):
            return _inert_class(module, name)
        raise UnsafeCheckpointError(f"checkpoint refers to {module}.{name}, which is not allowed in a weights file")

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)):
            raise UnsafeCheckpointError(f"unexpected persistent record in checkpoint: {pid!r:.80}")
        dtype, key = pid[1].dtype, pid[2]
        if key not in self._storages:
            try:
                raw = self._archive.read(f"{self._root}/data/{key}")
            except KeyError:
                raise ModelError(f"checkpoint is missing storage {key}") from None
            flat = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
            self._storages[key] = flat.view(dtype)
        return self._storages[key]


def load_tensor_checkpoint(path: str | os.PathLike) -> Any:
    """The object saved in a torch zip checkpoint, rebuilt without executing its pickle.

    Raises :class:`UnsafeCheckpointError` when the pickle names a global outside the allow-list
    and :class:`~stream_spk.errors.ModelError` when the file is not a torch zip checkpoint.
    """
    if sys.byteorder != "little":  # pragma: no cover - every supported platform is little-endian
        raise ModelError("reading checkpoints needs a little-endian machine")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelError(f"{path}: not a torch zip checkpoint ({exc})") from None
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise ModelError(f"{path}: not a torch zip checkpoint (no single data.pkl)")
        root = pickles[0].split("/", 1)[0]
        order = archive.read(f"{root}/byteorder").decode() if f"{root}/byteorder" in archive.namelist() else "little"
        if order != "little":
            raise ModelError(f"{path}: big-endian checkpoints are not supported")
        unpickler = _RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), archive, root)
        try:
            return unpickler.load()
        except UnsafeCheckpointError:
            raise
        except (pickle.UnpicklingError, EOFError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            raise ModelError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from None


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a (Lightning) checkpoint, or the checkpoint itself when it is one."""
    obj = load_tensor_checkpoint(path)
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path}: no state_dict of tensors in checkpoint")
    return dict(state)
