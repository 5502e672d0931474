"""Data file readers: each turns one file into raw inputs and labels (or None).

:func:`read_file` picks the reader from :data:`READERS` by the file's suffix; a file without a
known suffix is recognised by its content (a pickle is read as a CIFAR batch file, the IDX or
gzip magic as an MNIST IDX file). Every reader raises :class:`~tsens.errors.TsensError` naming
the file, never the underlying library's exception.
"""

from __future__ import annotations

import gzip
import io
import math
import pickle
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..errors import TsensError

try:  # numpy >= 2 (and 1.26, which has the alias)
    from numpy._core import multiarray as _np_multiarray
    from numpy._core import numeric as _np_numeric
except ImportError:  # pragma: no cover - older numpy
    from numpy.core import multiarray as _np_multiarray
    from numpy.core import numeric as _np_numeric

Arrays = tuple[np.ndarray, np.ndarray | None]
Reader = Callable[[Path], Arrays]

FILE_FORMATS = (
    ".npz, .npy, .parquet, .arrow, .feather, .safetensors, a CIFAR batch file (pickle) "
    "or an MNIST IDX file (*-images-idx3-ubyte[.gz])"
)
INPUT_KEYS = ("x", "X", "data")
LABEL_KEYS = ("y", "Y", "labels", "targets")
LABEL_COLUMNS = ("label", "labels", "y", "target", "fine_label")

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header, or an empty archive
_NPY_MAGIC = b"\x93NUMPY"
_GZIP_MAGIC = b"\x1f\x8b"
_PICKLE_MAGIC = b"\x80"  # the PROTO opcode every pickle of protocol 2 or later starts with


def _head(path: Path, size: int = 8) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(size)
    except OSError as exc:
        raise TsensError(f"{path}: cannot read ({exc.strerror or exc})") from None


# --------------------------------------------------------------------------- NumPy


def _expect(path: Path, magic: bytes, kind: str, what: str, other: bytes, hint: str) -> None:
    """Refuse a file that does not start with ``magic`` in plain words (with ``hint`` when it
    starts with the ``other`` format's magic) before NumPy gives its own advice."""
    head = _head(path)
    if not head.startswith(magic):
        extra = f" ({hint})" if head.startswith(other) else ""
        raise TsensError(f"{path}: not a valid {kind} file (expected {what}){extra}")


def expect_npz(path: Path) -> None:
    """Refuse, in plain words, a file that is not a NumPy zip archive (a .npy, a text file)."""
    _expect(path, _ZIP_MAGIC, ".npz", "a NumPy zip archive", _NPY_MAGIC, "it is a .npy file: name it .npy")


def read_npz(path: Path) -> Arrays:
    """Inputs ``x``/``X``/``data`` and labels ``y``/``Y``/``labels``/``targets`` of a .npz file."""
    expect_npz(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.keys())
            xkey = next((k for k in INPUT_KEYS if k in keys), None)
            if xkey is None:
                raise TsensError(
                    f"{path}: no inputs array; expected one of {', '.join(INPUT_KEYS)} (found {keys})"
                )
            ykey = next((k for k in LABEL_KEYS if k in keys), None)
            return npz[xkey], None if ykey is None else npz[ykey]
    except TsensError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise TsensError(f"{path}: cannot read .npz ({exc})") from None


def read_npy(path: Path) -> Arrays:
    """The inputs of a .npy file, memory-mapped (no labels)."""
    _expect(path, _NPY_MAGIC, ".npy", "a NumPy array file", _ZIP_MAGIC, "it is a zip archive: a .npz file?")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False), None
    except (OSError, ValueError, EOFError) as exc:
        raise TsensError(
            f"{path}: cannot read .npy (tsens loads it with allow_pickle=False): {exc}"
        ) from None


# --------------------------------------------------------------------------- safetensors


def read_safetensors(path: Path) -> Arrays:
    """Tensors ``x`` (inputs) and optional ``y`` (labels) of a .safetensors file."""
    from safetensors import safe_open

    def to_numpy(t: torch.Tensor) -> np.ndarray:
        return (t.float() if t.dtype == torch.bfloat16 else t).numpy()

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            if "x" not in keys:
                raise TsensError(f"{path}: no tensor 'x' (inputs); found {keys}")
            return to_numpy(f.get_tensor("x")), to_numpy(f.get_tensor("y")) if "y" in keys else None
    except TsensError:
        raise
    except Exception as exc:  # safetensors raises its own (non-exported) error type
        raise TsensError(f"{path}: cannot read .safetensors ({exc})") from None


# --------------------------------------------------------------------------- Arrow tables


def _arrow_table(path: Path, open_table: Callable[[Path], object]) -> Arrays:
    import pyarrow as pa

    try:
        table = open_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise TsensError(f"{path}: cannot read {path.suffix.lower()} table ({exc})") from None
    return _table_arrays(table, path)


def read_parquet(path: Path) -> Arrays:
    """Inputs and labels of a Parquet table (see :func:`_table_arrays`)."""
    import pyarrow.parquet as pq

    return _arrow_table(path, pq.read_table)


def read_feather(path: Path) -> Arrays:
    """Inputs and labels of a Feather table (see :func:`_table_arrays`)."""
    import pyarrow.feather as feather

    return _arrow_table(path, feather.read_table)


def read_arrow(path: Path) -> Arrays:
    """Inputs and labels of an Arrow IPC file or stream (Hugging Face datasets writes streams)."""
    import pyarrow as pa

    def open_ipc(p: Path) -> object:
        try:
            with pa.ipc.open_file(p) as reader:
                return reader.read_all()
        except pa.ArrowInvalid:
            with pa.ipc.open_stream(p) as reader:
                return reader.read_all()

    return _arrow_table(path, open_ipc)


def _table_arrays(table: object, path: Path) -> Arrays:
    """Inputs and labels from an Arrow table (feature columns, a list column or an image column)."""
    import pyarrow as pa

    assert isinstance(table, pa.Table)
    label = next((c for c in LABEL_COLUMNS if c in table.column_names), None)
    features = [c for c in table.column_names if c != label]
    if not features:
        raise TsensError(f"{path}: no feature columns besides the label column {label!r}")
    for name in [*features, *([label] if label else [])]:
        if table.column(name).null_count:
            raise TsensError(f"{path}: column {name!r} has missing values")
    y = None if label is None else table.column(label).to_numpy()
    first = table.column(features[0]).combine_chunks()
    kind = first.type
    if len(features) == 1 and _is_list(kind):
        return _list_column(first, features[0], path), y
    if len(features) == 1 and pa.types.is_struct(kind) and {"bytes", "path"} <= {f.name for f in kind}:
        return _image_column(first, features[0], path), y
    bad = [c for c in features if not _numeric_arrow(table.column(c).type)]
    if bad:
        raise TsensError(
            f"{path}: columns {bad} are not numeric; expected numeric feature columns, one list column "
            f"or one image column, plus an optional label column ({'/'.join(LABEL_COLUMNS)})"
        )
    return np.column_stack([table.column(c).to_numpy() for c in features]), y


def _numeric_arrow(kind: object) -> bool:
    import pyarrow as pa

    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)


def _is_list(kind: object) -> bool:
    import pyarrow as pa

    return pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)


def _list_column(arr: object, name: str, path: Path) -> np.ndarray:
    """A (possibly nested) list column of equal-length rows as an N × ... array."""
    import pyarrow.compute as pc

    n = len(arr)
    shape: list[int] = []
    while _is_list(arr.type):
        lengths = np.unique(pc.list_value_length(arr).to_numpy(zero_copy_only=False))
        if len(lengths) != 1:
            raise TsensError(
                f"{path}: list column {name!r} has rows of different lengths {lengths[:5].tolist()}"
            )
        shape.append(int(lengths[0]))
        arr = arr.flatten()
    if not _numeric_arrow(arr.type) or arr.null_count:
        raise TsensError(
            f"{path}: list column {name!r} must hold numbers without missing values, got {arr.type}"
        )
    return arr.to_numpy(zero_copy_only=False).reshape(n, *shape)


def _image_column(arr: object, name: str, path: Path) -> np.ndarray:
    """Decode a Hugging Face image column ({bytes, path} structs) into N × C × H × W uint8."""
    try:
        from PIL import Image
    except ImportError:
        raise TsensError(
            f"{path}: column {name!r} holds encoded images; decoding them needs Pillow: pip install pillow"
        ) from None
    images = []
    for i, (data, ref) in enumerate(
        zip(arr.field("bytes").to_pylist(), arr.field("path").to_pylist(), strict=True)
    ):
        try:
            if data is not None:
                img = Image.open(io.BytesIO(data))
            elif ref is not None:
                img = Image.open(Path(ref) if Path(ref).is_absolute() else path.parent / ref)
            else:
                raise TsensError(f"{path}: image {i} in column {name!r} has neither bytes nor path")
            img.load()
        except TsensError:
            raise
        except Exception as exc:  # PIL raises many types for bad images
            raise TsensError(f"{path}: cannot decode image {i} in column {name!r} ({exc})") from None
        if img.mode not in ("L", "RGB"):
            img = img.convert("L" if img.mode in ("1", "LA") else "RGB")
        pixels = np.asarray(img)
        images.append(pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1))
        if images[-1].shape != images[0].shape:
            raise TsensError(
                f"{path}: images in column {name!r} differ in size ({images[0].shape} vs {images[-1].shape})"
            )
    return np.stack(images)


# --------------------------------------------------------------------------- CIFAR batch files


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, numbers, bytes and numpy arrays; refuses every other global."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _np_multiarray._reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _np_multiarray._reconstruct,
        ("numpy.core.numeric", "_frombuffer"): _np_numeric._frombuffer,  # pickle protocol 5
        ("numpy._core.numeric", "_frombuffer"): _np_numeric._frombuffer,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def __init__(self, file: io.BufferedIOBase, where: str) -> None:
        super().__init__(file, encoding="bytes")
        self._where = where

    def find_class(self, module: str, name: str) -> object:
        if (module, name) == ("_codecs", "encode"):  # bytes in protocol-2 pickles written by Python 3
            return self._latin1_encode
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        raise TsensError(
            f"{self._where}: refused to unpickle global {module}.{name}; a CIFAR batch file may only "
            "hold numpy arrays, lists and dicts"
        )

    def _latin1_encode(self, text: str, encoding: str = "utf-8") -> bytes:
        if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
            raise TsensError(f"{self._where}: refused to unpickle _codecs.encode(..., {encoding!r})")
        return text.encode("latin1")


def read_cifar(path: Path) -> Arrays:
    """Inputs and labels of a CIFAR python batch file (``data_batch_1``, ``test``, ...)."""
    try:
        with path.open("rb") as f:
            obj = _ArrayOnlyUnpickler(f, str(path)).load()
    except TsensError:
        raise
    except Exception as exc:  # any unpickling failure is bad input
        raise TsensError(f"{path}: not a readable CIFAR batch file ({type(exc).__name__}: {exc})") from None
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


# --------------------------------------------------------------------------- MNIST IDX files

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """One array from an IDX file (MNIST's format), plain or gzip-compressed."""
    try:
        raw = path.read_bytes()
        if raw[:2] == _GZIP_MAGIC:
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise TsensError(f"{path}: cannot read IDX file ({exc})") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES:
        raise TsensError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise TsensError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = math.prod(dims) * dtype.itemsize
    body = raw[4 + 4 * ndim :]
    if len(body) != expected:
        raise TsensError(
            f"{path}: IDX header promises {dims} ({expected} bytes) but {len(body)} bytes follow"
        )
    return np.frombuffer(body, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def _idx_labels_for(path: Path) -> Path | None:
    """The ``*-labels-idx1-ubyte[.gz]`` sibling of an ``*-images-idx3-ubyte[.gz]`` file."""
    name = path.name
    if "images-idx3-ubyte" not in name:
        return None
    base = name.replace("images-idx3-ubyte", "labels-idx1-ubyte").removesuffix(".gz")
    for candidate in (base, base + ".gz"):
        if (path.parent / candidate).is_file():
            return path.parent / candidate
    return None


def read_idx_pair(path: Path) -> Arrays:
    """An IDX images file and, when it has one, its sibling labels file."""
    labels = _idx_labels_for(path)
    return read_idx(path), None if labels is None else read_idx(labels)


# --------------------------------------------------------------------------- choosing a reader

READERS: dict[str, Reader] = {
    ".npz": read_npz,
    ".npy": read_npy,
    ".parquet": read_parquet,
    ".arrow": read_arrow,
    ".feather": read_feather,
    ".safetensors": read_safetensors,
    ".pkl": read_cifar,
    ".pickle": read_cifar,
}


def _sniff(path: Path) -> Reader | None:
    """The reader for a file without a known suffix, from its first bytes (or its IDX name)."""
    head = _head(path, 4)
    if head.startswith(_PICKLE_MAGIC):
        return read_cifar
    if head.startswith(_GZIP_MAGIC) or (head[:2] == b"\0\0" and head[2:3] and head[2] in _IDX_DTYPES):
        return read_idx_pair
    name = path.name.lower()
    if "idx" in name and "-ubyte" in name:  # named like one: say what is wrong with it
        return read_idx_pair
    return None


def read_file(path: Path) -> Arrays:
    """Inputs and labels (or None) of a data file: by suffix (:data:`READERS`), else by content."""
    reader = READERS.get(path.suffix.lower()) or _sniff(path)
    if reader is None:
        raise TsensError(f"{path}: unknown data file format; expected {FILE_FORMATS}")
    return reader(path)
