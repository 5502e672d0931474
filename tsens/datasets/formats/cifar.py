"""CIFAR python batch files (``data_batch_1``, ``test``, ...; ``.pkl``/``.pickle``, or any file
that starts like a pickle): a dict with ``b"data"`` (rows of 3 × 32 × 32 become images) and
``b"labels"``/``b"fine_labels"``.

A batch file is one pickle, read whole by :class:`_ArrayOnlyUnpickler`, which refuses every
global except numpy's array reconstruction and every array larger than the file. A named CIFAR
set spanning several batch files (:func:`open_cifar_files`) reads one batch file at a time.
"""

from __future__ import annotations

import io
import math
import pickle
import struct
from pathlib import Path

import numpy as np

from ...errors import TsensError, first_line
from ..lazy import BlockSource, LazyArray
from .common import Arrays

try:  # numpy >= 2 (and 1.26, which has the alias)
    from numpy._core import multiarray as _np_multiarray
    from numpy._core import numeric as _np_numeric
except ImportError:  # pragma: no cover - older numpy
    from numpy.core import multiarray as _np_multiarray
    from numpy.core import numeric as _np_numeric

PICKLE_MAGIC = b"\x80"  # the PROTO opcode every pickle of protocol 2 or later starts with


def sniff(path: Path, start: bytes) -> bool:
    """Whether a file without a known suffix is a CIFAR batch file: it starts like a pickle."""
    return start.startswith(PICKLE_MAGIC)


class _ArrayOnlyUnpickler(pickle._Unpickler):
    """Unpickles dicts, lists, numbers, bytes and numpy arrays of numbers; refuses every other
    global. The pure-Python unpickler, so that every step that builds an object is checked:
    a ``dtype``'s state must be that of a plain numeric dtype (its flags and sizes could
    otherwise make numpy treat bytes as object pointers), arrays are created empty and then
    filled with bytes the file holds, and no class is ever instantiated by ``NEWOBJ``/``OBJ``/
    ``INST`` or called by ``REDUCE`` other than through the functions allowed here. Read from
    memory, lengths and memo indices in the file allocate no more than the file holds."""

    _ALLOWED: dict[tuple[str, str], object] = {
        ("numpy.core.multiarray", "_reconstruct"): _np_multiarray._reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _np_multiarray._reconstruct,
        ("numpy.core.numeric", "_frombuffer"): _np_numeric._frombuffer,  # pickle protocol 5
        ("numpy._core.numeric", "_frombuffer"): _np_numeric._frombuffer,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: io.BufferedIOBase, where: str, limit: int) -> None:
        super().__init__(file, encoding="bytes")
        self._where = where
        self._limit = limit  # no array may hold more bytes than this (the file's size)

    def _refuse(self, what: str) -> TsensError:
        return TsensError(
            f"{self._where}: refused to unpickle {what}; a CIFAR batch file may only hold numpy arrays, "
            "lists and dicts"
        )

    def find_class(self, module: str, name: str) -> object:
        if (module, name) == ("_codecs", "encode"):  # bytes in protocol-2 pickles written by Python 3
            return self._latin1_encode
        if (module, name) in (
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
        ):
            return self._reconstruct
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        raise self._refuse(f"global {module}.{name}")

    def _latin1_encode(self, text: str, encoding: str = "utf-8") -> bytes:
        if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
            raise TsensError(f"{self._where}: refused to unpickle _codecs.encode(..., {encoding!r})")
        return text.encode("latin1")

    def _reconstruct(self, subtype: object, shape: object, dtype: object) -> np.ndarray:
        """numpy's ``_reconstruct`` (an empty array that ``BUILD`` then fills), for a plain
        ndarray of at most the file's size."""
        kind = np.dtype(dtype) if isinstance(dtype, bytes | str) else dtype
        if subtype is not np.ndarray or not isinstance(kind, np.dtype) or kind.hasobject:
            raise self._refuse(f"an array of {subtype!r} with dtype {dtype!r}")
        dims = shape if isinstance(shape, tuple) else (shape,)
        if (
            not all(isinstance(n, int) and n >= 0 for n in dims)
            or math.prod(dims) * kind.itemsize > self._limit
        ):
            raise TsensError(f"{self._where}: an array of shape {shape!r} does not fit in the file")
        return _np_multiarray._reconstruct(subtype, shape, dtype)

    def _load_build(self) -> None:
        state, inst = self.stack[-1], self.stack[-2]
        if isinstance(inst, np.dtype):
            plain = (
                isinstance(state, tuple)
                and len(state) in (8, 9)
                and state[1] in ("<", ">", "|", "=")
                and state[2:8] == (None, None, None, -1, -1, 0)
                and inst.kind in "biufc"
            )
            if not plain:
                raise self._refuse(f"a dtype with state {str(state)[:100]}")
        elif isinstance(inst, np.ndarray):
            ok = (
                isinstance(state, tuple)
                and len(state) == 5
                and isinstance(state[2], np.dtype)
                and not state[2].hasobject
                and isinstance(state[4], bytes | bytearray)
            )
            if not ok:
                raise self._refuse("an array whose state is not numbers in bytes")
        else:
            raise self._refuse(f"the state of a {type(inst).__name__}")
        pickle._Unpickler.load_build(self)

    def _load_reduce(self) -> None:
        if self.stack[-2] is np.ndarray:
            raise self._refuse("a call of numpy.ndarray")
        pickle._Unpickler.load_reduce(self)

    def _load_instance(self) -> None:
        raise self._refuse("an object built from its class (NEWOBJ/OBJ/INST)")

    def _load_bytearray8(self) -> None:  # pickle's own allocates the length before reading
        (size,) = struct.unpack("<Q", self.read(8))
        if size > self._limit:
            raise TsensError(f"{self._where}: a bytearray claims {size} bytes, more than the file holds")
        data = bytearray(size)
        self.readinto(data)
        self.append(data)

    dispatch[pickle.BYTEARRAY8[0]] = _load_bytearray8
    dispatch[pickle.BUILD[0]] = _load_build
    dispatch[pickle.REDUCE[0]] = _load_reduce
    for _op in (pickle.NEWOBJ, pickle.NEWOBJ_EX, pickle.OBJ, pickle.INST):
        dispatch[_op[0]] = _load_instance
    del _op


def read_cifar(path: Path) -> Arrays:
    """Inputs and labels of a CIFAR python batch file (``data_batch_1``, ``test``, ...)."""
    try:
        raw = path.read_bytes()
        obj = _ArrayOnlyUnpickler(io.BytesIO(raw), str(path), len(raw)).load()
    except TsensError:
        raise
    except Exception as exc:  # any unpickling failure is bad input
        text = first_line(exc, 200) if str(exc).strip() else ""
        raise TsensError(f"{path}: not a readable CIFAR batch file ({type(exc).__name__}: {text})") from None
    if not isinstance(obj, dict):
        raise TsensError(f"{path}: a CIFAR batch file must hold a dict, got {type(obj).__name__}")
    obj = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    if "data" not in obj:
        raise TsensError(f"{path}: CIFAR batch file has no b'data' entry (keys: {sorted(map(str, obj))})")
    x = np.asarray(obj["data"])
    if x.ndim == 2 and x.shape[1] == 3 * 32 * 32:
        x = x.reshape(len(x), 3, 32, 32)
    label_key = next((k for k in ("fine_labels", "labels") if k in obj), None)
    y = None if label_key is None else np.asarray(obj[label_key])
    return x, y


class _CifarBatches:
    """Reads the inputs of batch file ``b`` of ``files`` (picklable, for :class:`BlockSource`)."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files

    def __call__(self, b: int) -> np.ndarray:
        return np.asarray(read_cifar(self.files[b])[0])


def open_cifar_files(files: list[Path], name: str) -> tuple[LazyArray, np.ndarray]:
    """Inputs and labels of a named CIFAR set spanning several batch files: every file is read
    once now (its labels and length), then the inputs one batch file at a time when rows of it
    are needed (the first file's are kept from now)."""
    bounds, labels = [0], []
    first: np.ndarray | None = None
    for f in files:
        x, y = read_cifar(f)
        if y is None:
            raise TsensError(f"data set {name!r}: a batch file in {files[0].parent} has no labels")
        x = np.asarray(x)
        if first is None:
            first = x
        elif x.shape[1:] != first.shape[1:] or x.dtype != first.dtype:
            raise TsensError(
                f"data set {name!r}: batch file {f.name} holds {x.dtype} samples of shape {x.shape[1:]}, "
                f"{files[0].name} {first.dtype} of shape {first.shape[1:]}"
            )
        bounds.append(bounds[-1] + len(x))
        labels.append(np.asarray(y))
    assert first is not None

    source = BlockSource(bounds, _CifarBatches(files), first.dtype, first.shape[1:])
    source.seed(0, first)
    return LazyArray(source), np.concatenate(labels)
