"""NumPy files: ``.npz`` archives (inputs ``x``/``X``/``data``, labels ``y``/``Y``/``labels``/
``targets``) and ``.npy`` arrays (inputs only), always loaded with ``allow_pickle=False``.

* ``.npy`` files are memory-mapped (:class:`~..lazy.MappedSource`);
* ``.npz`` members larger than :data:`NPZ_LAZY_BYTES` are memory-mapped inside the archive when
  stored uncompressed (``np.savez``) and decompressed in order when compressed
  (``np.savez_compressed``, :class:`~..lazy.StreamSource`); smaller ones are read whole
  (``.npz`` is meant for small sets).

A file that is not what its suffix says is refused in plain words before NumPy gives its own
advice (a ``.npy`` named ``.npz``, a text file).
"""

from __future__ import annotations

import io
import math
import struct
import zipfile
from pathlib import Path

import numpy as np

from ...errors import TsensError, first_line
from ..lazy import LazyArray, MappedSource, StreamSource
from .common import Arrays, first_bytes

NPZ_LAZY_BYTES = 64 << 20
"""``.npz`` inputs larger than this (bytes) stay in the archive; smaller ones are read whole."""
_NPZ_LAZY_COMPRESSION = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)

INPUT_KEYS = ("x", "X", "data")
LABEL_KEYS = ("y", "Y", "labels", "targets")

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header, or an empty archive
NPY_MAGIC = b"\x93NUMPY"


def _expect(
    path: Path,
    magic: bytes | tuple[bytes, ...],
    kind: str,
    what: str,
    other: bytes | tuple[bytes, ...],
    hint: str,
) -> None:
    """Refuse a file that does not start with ``magic`` in plain words (with ``hint`` when it
    starts with the ``other`` format's magic) before NumPy gives its own advice."""
    start = first_bytes(path)
    if not start.startswith(magic):
        extra = f" ({hint})" if start.startswith(other) else ""
        raise TsensError(f"{path}: not a valid {kind} file (expected {what}){extra}")


def expect_npz(path: Path) -> None:
    """Refuse, in plain words, a file that is not a NumPy zip archive (a .npy, a text file)."""
    _expect(path, ZIP_MAGIC, ".npz", "a NumPy zip archive", NPY_MAGIC, "it is a .npy file: name it .npy")


def read_npz(path: Path) -> Arrays:
    """Inputs ``x``/``X``/``data`` and labels ``y``/``Y``/``labels``/``targets`` of a .npz file;
    inputs larger than :data:`NPZ_LAZY_BYTES` stay in the archive (:func:`_npz_member`)."""
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
            x = _npz_member(path, npz.zip, xkey)
            if x is None:
                _npz_member_fits(path, npz.zip, xkey)
            if ykey is not None:
                _npz_member_fits(path, npz.zip, ykey)
            return npz[xkey] if x is None else x, None if ykey is None else npz[ykey]
    except TsensError:
        raise
    except Exception as exc:  # zipfile, zlib and numpy's header parser raise many types
        raise TsensError(f"{path}: cannot read .npz ({first_line(exc)})") from None


def _npz_member_fits(path: Path, archive: zipfile.ZipFile, key: str) -> None:
    """Refuse member ``key`` when its .npy header claims more bytes than the member holds, or
    the zip directory more than its compressed bytes can inflate to: numpy allocates the
    claimed array before it reads any of it."""
    info = archive.getinfo(key + ".npy")
    most = info.compress_size if info.compress_type == zipfile.ZIP_STORED else info.compress_size * 1032 + 64
    with archive.open(info) as f:
        header = _npy_header(f)
        if header is None:
            return  # numpy names the unsupported version
        offset = f.tell()
    shape, _, dtype = header
    claimed = math.prod(shape) * dtype.itemsize
    if info.file_size > most or (not dtype.hasobject and offset + claimed > info.file_size):
        raise TsensError(
            f"{path}: member {key}.npy claims {claimed} bytes of {dtype} {shape} but holds "
            f"{max(min(info.file_size, most) - offset, 0)}; the archive is truncated or corrupt"
        )


def _npy_header(f: io.BufferedIOBase) -> tuple[tuple[int, ...], bool, np.dtype] | None:
    """Shape, Fortran order and dtype from a .npy header (format 1.0 or 2.0), or None."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(f)
    return None


def _npz_member(path: Path, archive: zipfile.ZipFile, key: str) -> LazyArray | None:
    """Member ``key`` of a .npz archive as a lazy array when it is larger than
    :data:`NPZ_LAZY_BYTES`: memory-mapped at its offset when stored, decompressed in order when
    compressed; None (read it whole) when it is small, not C-ordered or not plain numbers."""
    name = key + ".npy"
    try:
        info = archive.getinfo(name)
    except KeyError:
        return None
    if info.file_size < NPZ_LAZY_BYTES or info.compress_type not in _NPZ_LAZY_COMPRESSION:
        return None
    if info.compress_type == zipfile.ZIP_STORED:
        with path.open("rb") as f:
            f.seek(info.header_offset)
            local = f.read(30)
            if local[:4] != b"PK\x03\x04":
                return None
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            f.seek(info.header_offset + 30 + name_len + extra_len)
            header = _npy_header(f)
            offset = f.tell()
        if header is None or header[1] or header[2].kind not in "biuf" or not header[0]:
            return None
        return LazyArray(MappedSource(path, offset, header[2], header[0]))

    open_member = _ZipMember(path, name)
    with open_member() as f:
        header = _npy_header(f)
        offset = f.tell()
    if header is None or header[1] or header[2].kind not in "biuf" or not header[0]:
        return None
    return LazyArray(StreamSource(open_member, offset, header[2], header[0], what=f"{path}:{name}"))


class _ZipMember:
    """Opens member ``name`` of the zip archive ``path`` (picklable, for :class:`StreamSource`)."""

    def __init__(self, path: Path, name: str) -> None:
        self.path, self.name = path, name

    def __call__(self) -> io.BufferedIOBase:
        return zipfile.ZipFile(self.path).open(self.name)  # type: ignore[return-value]


def read_npy(path: Path) -> Arrays:
    """The inputs of a .npy file, memory-mapped (no labels)."""
    _expect(path, NPY_MAGIC, ".npy", "a NumPy array file", ZIP_MAGIC, "it is a zip archive: a .npz file?")
    try:
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # numpy's header parser raises ValueError, SyntaxError, OverflowError, ...
        raise TsensError(
            f"{path}: cannot read .npy (tsens loads it with allow_pickle=False): {first_line(exc)}"
        ) from None
    plain = mapped.dtype.kind in "biuf" and mapped.dtype.itemsize > 0
    if mapped.ndim == 0 or not mapped.flags.c_contiguous or not isinstance(mapped, np.memmap) or not plain:
        return mapped, None  # a scalar, Fortran order (rows not contiguous in the file), no numbers
    return LazyArray(MappedSource(path, mapped.offset, mapped.dtype, mapped.shape)), None
