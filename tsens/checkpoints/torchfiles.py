"""PyTorch's own files: ``.safetensors``, and ``torch.save`` files (``.pt``, ``.pth``, ``.bin``,
``.ckpt``, zip or legacy) read only through ``torch.load(..., weights_only=True)``.

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
import pickle
import pickletools
import re
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from ..errors import TsensError
from .base import Weights, brief, check_file

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module")
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format starts with a local file header


# --- safetensors ---------------------------------------------------------------------------


def _corrupt_safetensors(path: Path, e: BaseException) -> TsensError:
    return TsensError(f"{path}: the file is truncated or not a valid safetensors file ({brief(e)})")


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


def _scan_globals(path: Path, pickles: int = 5) -> list[str]:
    """The globals the file's leading pickles import (a legacy torch file holds several pickles
    in a row; a plain pickle one), e.g. ``io.open``. Opcodes are only scanned (pickletools),
    never executed; scanning stops at the first thing that is not a pickle."""
    names: list[str] = []
    try:
        with path.open("rb") as f:
            for _ in range(pickles):
                pushed: list[str | None] = []  # what each pushing opcode put on the stack (strings)
                memo: dict[int, str | None] = {}
                for op, arg, _pos in pickletools.genops(f):
                    if op.name in ("GLOBAL", "INST"):
                        names.append(str(arg).replace(" ", "."))
                    elif op.name == "STACK_GLOBAL":
                        module, name = pushed[-2:] if len(pushed) >= 2 else [None, None]
                        names.append(f"{module}.{name}" if module and name else "an unnamed global")
                    elif op.name == "MEMOIZE":
                        memo[len(memo)] = pushed[-1] if pushed else None
                    elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                        memo[int(arg)] = pushed[-1] if pushed else None
                    elif op.name in ("GET", "BINGET", "LONG_BINGET"):
                        pushed.append(memo.get(int(arg)))
                    elif op.name != "FRAME":
                        pushed.append(arg if isinstance(arg, str) else None)
    except Exception:  # pickletools raises ValueError and friends on anything not a pickle
        pass
    return names


def _foreign_globals(path: Path, is_zip: bool) -> list[str]:
    """The globals in the file that a weights-only load does not know, without running any."""
    if is_zip:
        try:
            return list(dict.fromkeys(torch.serialization.get_unsafe_globals_in_checkpoint(str(path))))
        except Exception:  # a corrupt zip: the load below says so
            return []
    return list(dict.fromkeys(n for n in _scan_globals(path) if not n.startswith(_SAFE_PREFIXES)))


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


def _torch_load(path: Path, *, mmap: bool = False) -> Mapping[Any, Any]:
    """``torch.load(weights_only=True)`` of ``path`` as a mapping, every failure a one-line
    TsensError: functions and code-running classes are refused naming them, other classes are
    loaded as inert placeholders, anything torch cannot parse (random bytes, a truncated or
    foreign zip, text) is called corrupt."""
    check_file(path)
    with path.open("rb") as f:
        is_zip = f.read(len(_ZIP_MAGIC)) == _ZIP_MAGIC
    stand_ins = _stand_ins(path, _foreign_globals(path, is_zip))
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


def read_torch(path: Path) -> Weights:
    """The state dict inside a ``torch.save`` file (following wrapper keys) and the scalar
    entries and hyper-parameters beside it, as metadata."""
    obj, metadata = _unwrap_metadata(_torch_load(path))
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


def torch_metadata(path: Path) -> dict[str, str]:
    """The metadata of a ``torch.save`` file: a memory-mapped load of a zip file, whose tensor
    data is never read; a full weights-only load of a legacy file."""
    return _unwrap_metadata(_torch_load(path, mmap=True))[1]
