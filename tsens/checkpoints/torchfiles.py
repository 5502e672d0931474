"""PyTorch's own files: ``.safetensors``, and ``torch.save`` files (``.pt``, ``.pth``, ``.bin``,
``.ckpt``, zip or legacy) read only through ``torch.load(..., weights_only=True)``. Shapes
alone (``*_shapes``) come from a safetensors header, or a memory-mapped load of a zip file,
without reading tensor data.

A state dict may be wrapped (``state_dict``, ``model_state_dict``, ``model``, ``module``;
Lightning checkpoints keep scalar entries and ``hyper_parameters`` beside it, which become
metadata). Pickled objects other than tensors and plain containers are never constructed:

* classes on an allowlist of harmless containers (Lightning's and argparse's attribute
  dictionaries, which old Lightning checkpoints pickle for their hyper-parameters) are read as
  plain dicts;
* other classes (a callback's class as a dict key, a path in the hyper-parameters) become inert
  placeholders: the unpickler gets a stand-in that stores its arguments and state and does
  nothing else, so the original class is never imported nor called. Weights inside a
  placeholder (a whole pickled ``nn.Module``) are refused;
* functions, and classes of modules that run code (``os``, ``subprocess``, ``builtins``, ...),
  are refused naming what the file would have called.
"""

from __future__ import annotations

import json
import mmap
import pickle
import pickletools
import re
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from ..errors import TsensError, first_line
from .base import Weights, check_file

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module")
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format starts with a local file header
_DEFLATE_RATIO = 1032  # the most one byte of a deflate stream can inflate to


# --- safetensors ---------------------------------------------------------------------------


def _corrupt_safetensors(path: Path, e: BaseException) -> TsensError:
    return TsensError(f"{path}: the file is truncated or not a valid safetensors file ({first_line(e)})")


def read_safetensors(path: Path) -> Weights:
    """The tensors and metadata of a ``.safetensors`` file."""
    check_file(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118  (safe_open is no dict)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise _corrupt_safetensors(path, e) from None
    return Weights(tensors, metadata, (path,))


# safetensors' dtype names and torch's: a header names its tensors' dtypes in these
_SAFETENSORS_DTYPES = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "U16": "uint16",
    "I16": "int16",
    "U32": "uint32",
    "I32": "int32",
    "U64": "uint64",
    "I64": "int64",
    "F16": "float16",
    "BF16": "bfloat16",
    "F32": "float32",
    "F64": "float64",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
}


def _shape_only(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """A tensor of that shape and dtype on the ``meta`` device: it has no data to read."""
    return torch.empty(tuple(shape), dtype=dtype, device="meta")


def safetensors_shapes(path: Path) -> Weights:
    """The tensors of a ``.safetensors`` file as shape-only (meta) tensors, and its metadata,
    from the header alone; a tensor of a dtype torch names otherwise is read as it is."""
    check_file(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors: dict[str, torch.Tensor] = {}
            for key in f.keys():  # noqa: SIM118  (safe_open is no dict)
                part = f.get_slice(key)
                dtype = getattr(torch, _SAFETENSORS_DTYPES.get(part.get_dtype(), ""), None)
                known = isinstance(dtype, torch.dtype)
                tensors[key] = _shape_only(part.get_shape(), dtype) if known else f.get_tensor(key)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise _corrupt_safetensors(path, e) from None
    return Weights(tensors, metadata, (path,))


def safetensors_metadata(path: Path) -> dict[str, str]:
    """The metadata in a ``.safetensors`` header; no tensor is read."""
    check_file(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise _corrupt_safetensors(path, e) from None


# --- torch.save files ----------------------------------------------------------------------

# Harmless containers old checkpoints pickle for their hyper-parameters: Lightning's attribute
# dictionaries (dict subclasses, read as OrderedDict) and argparse's Namespace (read as a dict).
ATTRIBUTE_DICTS = (
    "pytorch_lightning.utilities.parsing.AttributeDict",
    "lightning.pytorch.utilities.parsing.AttributeDict",
    "lightning_fabric.utilities.data.AttributeDict",
    "lightning.fabric.utilities.data.AttributeDict",
)
NAMESPACES = ("argparse.Namespace",)
# Modules whose classes exist to run code or touch the system: refused, never stood in for.
CODE_MODULES = frozenset(
    ("builtins", "__builtin__", "os", "posix", "nt", "subprocess", "sys", "shutil", "socket")
    + ("importlib", "runpy", "pickle", "marshal", "types", "ctypes", "code", "codeop", "pty")
    + ("webbrowser", "functools", "operator", "io", "codecs", "signal", "threading", "multiprocessing")
    + ("tempfile", "pdb", "bdb", "timeit", "asyncio", "ssl", "urllib", "http", "ftplib", "smtplib")
    + ("commands", "popen2")  # Python 2 names that protocol-2 pickles use for subprocess and os
)
_SAFE_PREFIXES = ("torch.", "collections.OrderedDict", "_codecs.encode")


class _Namespace(dict):  # type: ignore[type-arg]
    """Stand-in for an ``argparse.Namespace``: its attributes as a plain dict."""

    def __setstate__(self, state: object) -> None:
        if isinstance(state, Mapping):
            self.update(state)


class Placeholder:
    """Inert stand-in for a pickled class tsens does not know: it keeps the arguments and state
    it is given and does nothing with them. ``original`` names the class it stands in for."""

    original = "?"

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.args, self.kwargs, self.state = args, kwargs, None

    def __setstate__(self, state: object) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<{self.original}>"


def _refuse_code(path: Path, name: str | None) -> TsensError:
    what = f" ({name})" if name else ""
    return TsensError(
        f"{path}: the file contains objects other than tensors{what} and tsens refuses to unpickle "
        "code; save the state dict as .safetensors (safetensors.torch.save_file(model.state_dict(), ...))"
    )


def _runs_code(name: str) -> bool:
    """Whether a pickled global is a function, or a class of a module that runs code: anything
    but a class (CapWords) from elsewhere."""
    module, _, leaf = name.rpartition(".")
    return not module or module.split(".")[0] in CODE_MODULES or not leaf[:1].isupper()


_MARK = object()
_REBUILD = ("torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor")


class _Storage(int):
    """A storage's element count, as its persistent id claims it."""


def _tensor_fits(args: object, numel: int) -> bool:
    """Whether ``_rebuild_tensor_v2(storage, offset, size, stride, ...)`` stays inside ``numel``
    elements (arguments that are not plain integers are left to torch)."""
    if not (isinstance(args, tuple) and len(args) >= 4):
        return True
    storage, offset, size, stride = args[:4]
    if isinstance(storage, _Storage):
        numel = storage
    if not (isinstance(offset, int) and isinstance(size, tuple) and isinstance(stride, tuple)):
        return True
    if not all(isinstance(n, int) for n in (*size, *stride)) or len(size) != len(stride):
        return True
    if offset < 0 or any(n < 0 for n in (*size, *stride)):
        return False
    if any(n == 0 for n in size):
        return offset <= numel
    return offset + sum((n - 1) * st for n, st in zip(size, stride, strict=True)) < numel


def _scan_pickles(path: Path, pickles: int = 5) -> tuple[list[str], bool]:
    """The globals the file's leading pickles import (a legacy torch file holds five pickles in
    a row, then its storages; a plain pickle one), e.g. ``io.open``, and whether the file is
    intact enough to hand to torch. Opcodes are only scanned (pickletools, over a memory map so
    that no length field makes a read allocate more than the file holds) and their effect on
    the stack followed for names, integers and tuples; nothing is ever called. Not intact: a
    pickle breaks off or does not parse, or it claims more than the file can hold: a storage
    of more elements than the file has bytes, or a tensor reaching past its storage (the legacy
    loader allocates storages at their claimed size and grows them to fit their tensors before
    it reads any data)."""
    names: list[str] = []
    size = path.stat().st_size
    try:
        with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            for _ in range(pickles):
                if data.tell() >= size:
                    break  # a plain pickle: one, then the end of the file
                stack: list[Any] = []
                memo: dict[int, Any] = {}
                for op, arg, _pos in pickletools.genops(data):
                    before = op.stack_before
                    if pickletools.markobject in before:
                        mark = max(i for i, v in enumerate(stack) if v is _MARK)
                        popped = stack[mark + 1 :]
                        fixed = before.index(pickletools.markobject)
                        del stack[mark - fixed :]
                    else:
                        popped = stack[len(stack) - len(before) :] if before else []
                        if len(popped) < len(before):
                            return names, False
                        del stack[len(stack) - len(before) :]
                    name = op.name
                    if name in ("GLOBAL", "INST"):
                        names.append(str(arg).replace(" ", "."))
                        pushed: list[Any] = [names[-1]]
                    elif name == "STACK_GLOBAL":
                        module, leaf = popped
                        both = isinstance(module, str) and isinstance(leaf, str)
                        names.append(f"{module}.{leaf}" if both else "an unnamed global")
                        pushed = [names[-1]]
                    elif name == "MARK":
                        pushed = [_MARK]
                    elif name in ("MEMOIZE", "DUP"):
                        pushed = popped * len(op.stack_after)
                        if name == "MEMOIZE":
                            memo[len(memo)] = popped[0]
                    elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                        memo[int(arg)] = stack[-1] if stack else None
                        pushed = []
                    elif name in ("GET", "BINGET", "LONG_BINGET"):
                        pushed = [memo.get(int(arg))]
                    elif name in ("TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_TUPLE"):
                        pushed = [tuple(popped)]
                    elif name in ("BINPERSID", "PERSID"):
                        pid = popped[0] if popped else arg
                        numel = pid[4] if isinstance(pid, tuple) and len(pid) >= 5 else None
                        if isinstance(numel, int) and not 0 <= numel <= size:
                            return names, False
                        pushed = [_Storage(numel) if isinstance(numel, int) else None]
                    elif name == "REDUCE":
                        if popped[0] in _REBUILD and not _tensor_fits(popped[1], size):
                            return names, False
                        pushed = [None]
                    elif isinstance(arg, int | str) and not isinstance(arg, bool) and op.stack_after:
                        pushed = [arg]
                    else:
                        pushed = [None] * len(op.stack_after)
                    stack.extend(pushed)
    except Exception:  # pickletools raises ValueError and friends on anything that is not a pickle
        return names, False
    return names, True


def _zip_intact(path: Path) -> bool:
    """Whether every member of a zip ``torch.save`` file lies inside the file and holds no more
    than its bytes can (torch allocates a record at the size the central directory gives
    before it reads it). Python's zipfile reads only the directory here."""
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                stored = info.compress_type == zipfile.ZIP_STORED
                most = info.compress_size if stored else info.compress_size * _DEFLATE_RATIO + 64
                if info.header_offset + info.compress_size > size or info.file_size > most:
                    return False
    except Exception:  # zipfile raises BadZipFile, ValueError, ... on a broken directory
        return False
    return True


def _foreign_globals(path: Path, names: list[str] | None) -> list[str]:
    """The globals in the file that a weights-only load does not know, without running any:
    from torch's scan of a zip file (``names`` None), or the given scan of a legacy file."""
    if names is None:
        try:
            return list(dict.fromkeys(torch.serialization.get_unsafe_globals_in_checkpoint(str(path))))
        except Exception:  # a corrupt zip: the load below says so
            return []
    return list(dict.fromkeys(n for n in names if not n.startswith(_SAFE_PREFIXES)))


def _stand_ins(path: Path, names: list[str]) -> list[tuple[type, str]]:
    """A stand-in class for each foreign global; refuses functions and code-running modules."""
    stand_ins: list[tuple[type, str]] = []
    for name in names:
        if name in ATTRIBUTE_DICTS:
            stand_ins.append((OrderedDict, name))
        elif name in NAMESPACES:
            stand_ins.append((_Namespace, name))
        elif _runs_code(name):
            raise _refuse_code(path, name)
        else:
            stand_ins.append((type(name.rpartition(".")[2], (Placeholder,), {"original": name}), name))
    return stand_ins


def _corrupt_torch(path: Path) -> TsensError:
    return TsensError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt)")


def _is_zip(path: Path) -> bool:
    """Whether a ``torch.save`` file is in the zip format (else legacy or no torch file)."""
    with path.open("rb") as f:
        return f.read(len(_ZIP_MAGIC)) == _ZIP_MAGIC


def _torch_load(path: Path, *, mmap: bool = False) -> Mapping[Any, Any]:
    """``torch.load(weights_only=True)`` of ``path`` as a mapping, every failure a one-line
    TsensError: functions and code-running classes are refused naming them, other classes are
    loaded as inert placeholders, anything torch cannot parse (random bytes, a truncated or
    foreign zip, text) is called corrupt."""
    check_file(path)
    is_zip = _is_zip(path)
    if is_zip and not _zip_intact(path):  # before torch's own scan reads a record
        raise _corrupt_torch(path)
    names, intact = (None, True) if is_zip else _scan_pickles(path)
    stand_ins = _stand_ins(path, _foreign_globals(path, names))
    if not intact:  # refused before torch reads (and allocates) what the broken pickles claim
        raise _corrupt_torch(path)
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(stand_ins):
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and is_zip)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported (?:global|class): (?:GLOBAL )?([\w.]+)", str(e))
        if found:
            raise _refuse_code(path, found.group(1)) from None
        raise _corrupt_torch(path) from None
    except TsensError:
        raise
    except Exception:  # torch raises RuntimeError, EOFError, KeyError, ... on corrupt files
        raise _corrupt_torch(path) from None
    if isinstance(obj, Placeholder):
        raise TsensError(
            f"{path}: pickles a whole {obj.original} object, not a state dict; save "
            "model.state_dict() (as .safetensors: safetensors.torch.save_file(model.state_dict(), ...))"
        )
    if not isinstance(obj, Mapping):
        raise TsensError(
            f"{path}: holds a {type(obj).__name__}; expected a state dict (a mapping of names to tensors)"
        )
    return obj


def _scalar_text(value: Any) -> str | None:
    """A metadata string for a str/bool/int/float entry (None for anything else)."""
    if isinstance(value, str):
        return value
    return str(value) if isinstance(value, bool | int | float) else None


def _unwrap_metadata(obj: Mapping[Any, Any]) -> tuple[Mapping[Any, Any], dict[str, str]]:
    """The innermost mapping of ``obj`` (following wrapper keys) and, as metadata strings, the
    scalar entries and ``hyper_parameters`` met on the way (outer entries win)."""
    metadata: dict[str, str] = {}
    while True:
        wrapper = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        for key, value in obj.items():
            if key == "hyper_parameters" and isinstance(value, Mapping):
                for name, hp in value.items():
                    text = hp if isinstance(hp, str) else json.dumps(hp, default=repr)
                    metadata.setdefault(str(name), text)
            elif (text := _scalar_text(value)) is not None:
                metadata.setdefault(str(key), text)
        if wrapper is None:
            break
        obj = obj[wrapper]
    return obj, metadata


def _state_dict(path: Path, loaded: Mapping[Any, Any]) -> Weights:
    """The state dict inside a loaded ``torch.save`` file (following wrapper keys) and the
    scalar entries and hyper-parameters beside it, as metadata."""
    obj, metadata = _unwrap_metadata(loaded)
    whole = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), Placeholder)), None)
    if whole is not None:
        raise TsensError(
            f"{path}: key {whole!r} holds a whole {obj[whole].original} object, not a state dict; "
            "save model.state_dict() instead"
        )
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        keys = ", ".join(repr(str(k)) for k in list(obj)[:8]) or "none"
        raise TsensError(
            f"{path}: no tensors found (top-level keys: {keys}); expected a state dict, "
            f"possibly under {', '.join(WRAPPER_KEYS)}"
        )
    return Weights(tensors, metadata, (path,))


def read_torch(path: Path) -> Weights:
    """The state dict inside a ``torch.save`` file (following wrapper keys) and the scalar
    entries and hyper-parameters beside it, as metadata."""
    return _state_dict(path, _torch_load(path))


def torch_shapes(path: Path) -> Weights:
    """:func:`read_torch` with shape-only (meta) tensors from a memory-mapped load of a zip file,
    whose tensor data is never read; a legacy file is read in full (its tensors as they are)."""
    weights = _state_dict(path, _torch_load(path, mmap=True))
    if not _is_zip(path):
        return weights
    tensors = {k: _shape_only(t.shape, t.dtype) for k, t in weights.tensors.items()}
    return Weights(tensors, weights.metadata, weights.files)


def torch_metadata(path: Path) -> dict[str, str]:
    """The metadata of a ``torch.save`` file: a memory-mapped load of a zip file, whose tensor
    data is never read; a full weights-only load of a legacy file."""
    return _unwrap_metadata(_torch_load(path, mmap=True))[1]
