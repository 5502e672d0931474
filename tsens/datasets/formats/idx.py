"""MNIST IDX files (``*-images-idx3-ubyte``, plain or gzipped; any file that starts with the IDX
or gzip magic, or is named like one): the images, with labels from the sibling
``*-labels-idx1-ubyte[.gz]`` file when there is one.

The images stay in their file: a plain file is memory-mapped at the header's end
(:class:`~..lazy.MappedSource`); a gzipped one is decompressed in order
(:class:`~..lazy.StreamSource`: a read before the current position restarts the decompression;
batches and sorted subsamples read in order), after one pass that checks its length. Values
come out in native byte order. Labels are read whole (:func:`read_idx`).
"""

from __future__ import annotations

import gzip
import io
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ...errors import TsensError
from ..lazy import LazyArray, MappedSource, StreamSource
from .common import Arrays, first_bytes

GZIP_MAGIC = b"\x1f\x8b"
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_HEAD = 4 + 4 * 255  # the longest IDX header


def sniff(path: Path, start: bytes) -> bool:
    """Whether a file without a known suffix is read as an IDX file: it starts with the gzip or
    an IDX magic number, or is named like one (then the reader says what is wrong with it)."""
    if start.startswith(GZIP_MAGIC) or (start[:2] == b"\0\0" and start[2:3] and start[2] in _IDX_DTYPES):
        return True
    name = path.name.lower()
    return "idx" in name and "-ubyte" in name


class _Gzip:
    """Opens the gzip file ``path`` (picklable, for :class:`StreamSource`)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self) -> io.BufferedIOBase:
        return gzip.open(self.path, "rb")  # type: ignore[return-value]


def _idx_header(head: bytes, path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """Dimensions, (big-endian) dtype and header length from the first bytes of an IDX file."""
    if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in _IDX_DTYPES:
        raise TsensError(f"{path}: not an IDX file (bad magic number)")
    ndim = head[3]
    if ndim == 0 or len(head) < 4 + 4 * ndim:
        raise TsensError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", head[4 : 4 + 4 * ndim])
    return dims, np.dtype(_IDX_DTYPES[head[2]]), 4 + 4 * ndim


def _idx_body_check(path: Path, dims: tuple[int, ...], dtype: np.dtype, body: int) -> None:
    expected = math.prod(dims) * dtype.itemsize
    if body != expected:
        raise TsensError(f"{path}: IDX header promises {dims} ({expected} bytes) but {body} bytes follow")


def _inflate_idx(
    f: io.BufferedIOBase, path: Path, keep: bool
) -> tuple[tuple[int, ...], np.dtype, int, bytes]:
    """Dimensions, dtype, header length and (``keep``) the bytes of a decompressed IDX stream,
    read in pieces and never past what the header promises: a longer stream (a gzip bomb) is
    refused one byte after the promised end, a shorter one as truncated."""
    head = f.read(_IDX_HEAD)
    dims, dtype, offset = _idx_header(head, path)
    end = offset + math.prod(dims) * dtype.itemsize
    parts, size = [head] if keep else [], len(head)
    while size <= end and (chunk := f.read(min(1 << 20, end + 1 - size))):
        size += len(chunk)
        if keep:
            parts.append(chunk)
    if size > end:
        raise TsensError(f"{path}: IDX header promises {dims} ({end - offset} bytes) but more bytes follow")
    _idx_body_check(path, dims, dtype, size - offset)
    return dims, dtype, offset, b"".join(parts)


def read_idx(path: Path) -> np.ndarray:
    """One array from an IDX file (MNIST's format), plain or gzip-compressed, read whole."""
    try:
        if first_bytes(path, 2) == GZIP_MAGIC:
            with gzip.open(path, "rb") as f:
                dims, dtype, offset, raw = _inflate_idx(f, path, keep=True)  # type: ignore[arg-type]
        else:
            raw = path.read_bytes()
            dims, dtype, offset = _idx_header(raw[:_IDX_HEAD], path)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise TsensError(f"{path}: cannot read IDX file ({exc})") from None
    _idx_body_check(path, dims, dtype, len(raw) - offset)
    return np.frombuffer(raw, dtype=dtype, offset=offset).reshape(dims).astype(dtype.newbyteorder("="))


def open_idx(path: Path) -> LazyArray:
    """The array of an IDX file left in the file: a plain file memory-mapped at the header's end,
    a gzipped one decompressed in order (checked whole once now: its length); values come out
    in native byte order, as :func:`read_idx` gives them."""
    try:
        if first_bytes(path, 2) == GZIP_MAGIC:
            with gzip.open(path, "rb") as f:
                dims, dtype, offset, _ = _inflate_idx(f, path, keep=False)  # type: ignore[arg-type]

            return LazyArray(StreamSource(_Gzip(path), offset, dtype, dims, native=True, what=str(path)))
        with path.open("rb") as f:
            head = f.read(_IDX_HEAD)
            size = os.fstat(f.fileno()).st_size
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise TsensError(f"{path}: cannot read IDX file ({exc})") from None
    dims, dtype, offset = _idx_header(head, path)
    _idx_body_check(path, dims, dtype, size - offset)
    return LazyArray(MappedSource(path, offset, dtype, dims, native=True))


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
    return open_idx(path), None if labels is None else read_idx(labels)
