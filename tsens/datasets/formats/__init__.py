"""Data file formats: each reader turns one file into raw inputs and labels (or None).

:func:`read_file` picks the format from :data:`FORMATS` by the file's suffix; a file without a
known suffix is recognised by its content (a pickle is read as a CIFAR batch file, the IDX or
gzip magic as an MNIST IDX file). Every reader raises :class:`~tsens.errors.TsensError` naming
the file, never the underlying library's exception.

Inputs stay in their file wherever the format allows (a :class:`~..lazy.LazyArray`; labels are
always read whole, they are small); each module says how:

* :mod:`.numpyfiles`: ``.npz`` and ``.npy``;
* :mod:`.tables`: Parquet, Arrow IPC files and streams, Feather (columns: :mod:`.columns`);
* :mod:`.safetensors`: ``.safetensors``;
* :mod:`.cifar`: CIFAR python batch files, through an unpickler that only builds arrays;
* :mod:`.idx`: MNIST IDX files, plain or gzipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ...errors import TsensError
from . import cifar, idx
from .cifar import open_cifar_files, read_cifar
from .common import Arrays, Reader, Samples, first_bytes
from .idx import open_idx, read_idx, read_idx_pair
from .numpyfiles import expect_npz, read_npy, read_npz
from .safetensors import read_safetensors
from .tables import read_arrow, read_feather, read_parquet


@dataclass(frozen=True)
class DataFormat:
    """A data file format: ``suffixes`` (lower case) it is chosen by, ``read`` giving a file's
    inputs and labels, and ``sniff(path, first_bytes)``, which says whether a file without a
    known suffix is one (None: only chosen by suffix)."""

    name: str
    suffixes: tuple[str, ...]
    read: Reader
    sniff: Callable[[Path, bytes], bool] | None = None


FORMATS: tuple[DataFormat, ...] = (
    DataFormat("NumPy archive", (".npz",), read_npz),
    DataFormat("NumPy array", (".npy",), read_npy),
    DataFormat("Parquet", (".parquet",), read_parquet),
    DataFormat("Arrow IPC", (".arrow",), read_arrow),
    DataFormat("Feather", (".feather",), read_feather),
    DataFormat("safetensors", (".safetensors",), read_safetensors),
    DataFormat("CIFAR batch file", (".pkl", ".pickle"), read_cifar, cifar.sniff),
    DataFormat("MNIST IDX file", (), read_idx_pair, idx.sniff),  # after CIFAR: a pickle is not IDX
)
READERS: dict[str, Reader] = {suffix: f.read for f in FORMATS for suffix in f.suffixes}
"""The reader of every known suffix."""

FILE_FORMATS = (
    ".npz, .npy, .parquet, .arrow, .feather, .safetensors, a CIFAR batch file (pickle) "
    "or an MNIST IDX file (*-images-idx3-ubyte[.gz])"
)

_SNIFF_BYTES = 4


def find_format(path: Path) -> DataFormat | None:
    """The format of ``path``: by its suffix, else the first whose ``sniff`` recognises the
    file's first bytes (or its name); None when no format does."""
    suffix = path.suffix.lower()
    found = next((f for f in FORMATS if suffix in f.suffixes), None)
    if found is not None:
        return found
    start = first_bytes(path, _SNIFF_BYTES)
    return next((f for f in FORMATS if f.sniff is not None and f.sniff(path, start)), None)


def read_file(path: Path) -> Arrays:
    """Inputs and labels (or None) of a data file: by suffix, else by content (:data:`FORMATS`)."""
    found = find_format(path)
    if found is None:
        raise TsensError(f"{path}: unknown data file format; expected {FILE_FORMATS}")
    return found.read(path)


__all__ = [
    "FILE_FORMATS",
    "FORMATS",
    "READERS",
    "Arrays",
    "DataFormat",
    "Reader",
    "Samples",
    "expect_npz",
    "find_format",
    "open_cifar_files",
    "open_idx",
    "read_cifar",
    "read_file",
    "read_idx",
]
