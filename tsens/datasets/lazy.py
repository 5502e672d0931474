"""Samples read from their file when they are needed: :class:`LazyArray` and its sources.

A :class:`LazyArray` looks like the N × ``sample_shape`` array of a data set (``shape``,
``dtype``, ``ndim``, ``len``) but holds none of it: indexing it reads the rows asked for from
its :class:`Source` and returns a fresh, writable NumPy array. Rows are asked for by an integer,
a range (a slice; any step), or an array of integers (any order, repeats allowed) or booleans;
a tuple indexes the rows first and applies the rest to the result (``x[:, 0]``).
:meth:`LazyArray.subset` and :meth:`LazyArray.reshaped` give lazy views (a seeded subsample, a
channel axis added) that read nothing either. ``np.asarray(x)`` reads everything: that is what
it means, and nothing in tsens calls it on a data set.

Sources, one per way a file can be read (the readers in :mod:`.formats` pick them):

* :class:`MappedSource`: rows at a byte offset of an uncompressed file (``.npy``, plain IDX,
  uncompressed ``.npz`` members), memory-mapped. Each read copies its rows out (converting a
  big-endian dtype when asked) and hands the mapped pages back to the kernel
  (``madvise(MADV_DONTNEED)`` where the platform has it), so a pass over the file never makes
  it resident in the process.
* :class:`StreamSource`: rows of a compressed stream (gzipped IDX, compressed ``.npz``
  members), decompressed in order. Reading forward skips ahead; reading backward restarts the
  decompression from the start of the file (``restarts`` counts them), so sequential passes
  (batches, a sorted subsample) cost one decompression each and random access is slow.
* :class:`BlockSource`: rows in blocks that are decoded whole (Parquet row groups, Arrow record
  batches, CIFAR batch files), keeping the last ``keep`` decoded blocks (default one).
* :class:`SafetensorsSource`: a tensor of a ``.safetensors`` file, read by slices.
* :class:`ArraySource`: any array already at hand (tests, arrays made by the caller).

Memory beyond the caller's result is one read's rows, plus one decoded block for a
:class:`BlockSource`.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import TsensError

BLOCK_BYTES = 8 << 20
"""Most bytes of rows decoded at once from a block format: a Parquet row group or Arrow record
batch larger than this is read in pieces of about this size (decoding a Parquet list column
takes about three times its decoded size while it runs, so whole 10,000-row groups of
3072-float rows would take some 400 MB)."""

SPAN_GAP = 64
"""Sorted rows at most this far apart are read as one range by :meth:`Source.take`."""

_SKIP = 1 << 20  # bytes decompressed and dropped at a time when a stream skips ahead


class Source(ABC):
    """Where a :class:`LazyArray`'s rows come from: ``length`` rows of ``sample_shape`` and
    ``dtype``. ``read`` and ``take`` return fresh arrays of shape ``(rows, *sample_shape)``."""

    length: int
    sample_shape: tuple[int, ...]
    dtype: np.dtype
    checked_on_read = False
    """True when reading a block also checks it (missing values, ragged rows, undecodable
    images): :func:`~tsens.datasets.load_dataset` then reads every row it keeps once."""

    @abstractmethod
    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start`` to ``stop`` (0 ≤ start ≤ stop ≤ length)."""

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The rows at sorted positions ``rows`` (ascending, repeats allowed), read as ranges of
        rows at most :data:`SPAN_GAP` apart."""
        if len(rows) == 0:
            return np.empty((0, *self.sample_shape), self.dtype)
        parts = []
        for span in _spans(rows, SPAN_GAP):
            first = int(span[0])
            parts.append(self.read(first, int(span[-1]) + 1)[span - first])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    @property
    def row_bytes(self) -> int:
        return self.dtype.itemsize * math.prod(self.sample_shape)


def _spans(rows: np.ndarray, gap: int) -> list[np.ndarray]:
    """Sorted ``rows`` split where two neighbours are more than ``gap`` apart."""
    cuts = np.nonzero(np.diff(rows) > gap)[0] + 1
    return np.split(rows, cuts)


class LazyArray:
    """An N × ``sample_shape`` array whose rows stay in their file until indexed (module
    docstring). ``rows`` (sorted source positions) makes it a subsample of its source and
    ``sample_shape`` a reshaped view of each row (same number of values)."""

    def __init__(
        self,
        source: Source,
        rows: np.ndarray | None = None,
        sample_shape: Sequence[int] | None = None,
    ) -> None:
        self.source = source
        if rows is not None:
            rows = np.asarray(rows, dtype=np.int64)
            if rows.ndim != 1 or (len(rows) and (rows.min() < 0 or rows.max() >= source.length)):
                raise IndexError(f"subset rows must be positions 0..{source.length - 1} of the source")
            if len(rows) > 1 and not (np.diff(rows) >= 0).all():
                raise ValueError("subset rows must be sorted")
        self._rows = rows
        shape = tuple(int(s) for s in (source.sample_shape if sample_shape is None else sample_shape))
        if math.prod(shape) != math.prod(source.sample_shape):
            raise ValueError(f"cannot view samples of shape {source.sample_shape} as {shape}")
        self._sample_shape = shape

    # ------------------------------------------------------------------ array attributes

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self._sample_shape)

    @property
    def dtype(self) -> np.dtype:
        return self.source.dtype

    @property
    def ndim(self) -> int:
        return 1 + len(self._sample_shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.source.length if self._rows is None else len(self._rows)

    def __repr__(self) -> str:
        kind = type(self.source).__name__
        sub = "" if self._rows is None else f" (a subset of {self.source.length})"
        return f"LazyArray(shape={self.shape}, dtype={self.dtype}, source={kind}{sub})"

    # ------------------------------------------------------------------ views

    def subset(self, rows: np.ndarray) -> LazyArray:
        """The rows at positions ``rows`` (sorted ascending) as a lazy array: nothing is read."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim != 1 or (len(rows) and (rows.min() < 0 or rows.max() >= len(self))):
            raise IndexError(f"subset positions must be 0..{len(self) - 1}")
        if len(rows) > 1 and not (np.diff(rows) >= 0).all():
            raise ValueError("subset positions must be sorted")
        mapped = rows if self._rows is None else self._rows[rows]
        return LazyArray(self.source, mapped, self._sample_shape)

    def reshaped(self, sample_shape: Sequence[int]) -> LazyArray:
        """The same rows with each sample viewed as ``sample_shape`` (e.g. a channel axis added)."""
        return LazyArray(self.source, self._rows, sample_shape)

    def chunks(self, size: int) -> Iterator[np.ndarray]:
        """All rows, ``size`` at a time, in order."""
        for start in range(0, len(self), size):
            yield self[start : start + size]

    # ------------------------------------------------------------------ reading

    def _shaped(self, out: np.ndarray) -> np.ndarray:
        return out.reshape(len(out), *self._sample_shape)

    def _range(self, start: int, stop: int) -> np.ndarray:
        if stop <= start:
            return np.empty((0, *self._sample_shape), self.dtype)
        if self._rows is None:
            return self._shaped(self.source.read(start, stop))
        return self._shaped(self.source.take(self._rows[start:stop]))

    def _sorted(self, positions: np.ndarray) -> np.ndarray:
        """Rows at sorted positions of this array."""
        rows = positions if self._rows is None else self._rows[positions]
        return self._shaped(self.source.take(rows))

    def _positions(self, key: object) -> np.ndarray:
        idx = np.asarray(key)
        n = len(self)
        if idx.dtype == bool:
            if idx.shape != (n,):
                raise IndexError(f"boolean index of shape {idx.shape} does not match {n} rows")
            return np.nonzero(idx)[0]
        if idx.dtype.kind not in "iu":
            if idx.size == 0:  # [] is an empty integer index
                return np.empty(idx.shape, np.int64)
            raise IndexError(f"rows must be integers, slices or booleans, got dtype {idx.dtype}")
        idx = idx.astype(np.int64)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"row index out of range for {n} rows")
        return np.where(idx < 0, idx + n, idx)

    def _rows_at(self, idx: np.ndarray) -> np.ndarray:
        flat = idx.reshape(-1)
        if len(flat) < 2 or (np.diff(flat) >= 0).all():
            out = self._sorted(flat)
        else:
            unique, inverse = np.unique(flat, return_inverse=True)
            out = self._sorted(unique)[inverse]
        return out.reshape(*idx.shape, *self._sample_shape)

    def __getitem__(self, key: object) -> np.ndarray:
        if isinstance(key, tuple):
            if not key:
                return self[:]
            first, rest = key[0], key[1:]
            if first is Ellipsis or first is None:
                return self[:][key]
            if isinstance(first, (int, np.integer)) and not isinstance(first, (bool, np.bool_)):
                return self[first][rest]
            if isinstance(first, slice):
                return self[first][(slice(None), *rest)]
            # an index array: read its rows once, then index them as NumPy would the whole array
            positions = self._positions(first)
            unique, inverse = np.unique(positions.reshape(-1), return_inverse=True)
            return self._sorted(unique)[(inverse.reshape(positions.shape), *rest)]
        if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
            n = len(self)
            i = int(key)
            if not -n <= i < n:
                raise IndexError(f"row {i} out of range for {n} rows")
            i %= n
            return self._range(i, i + 1)[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                return self._range(start, stop)
            return self._rows_at(np.arange(start, stop, step, dtype=np.int64))
        if key is None or key is Ellipsis:
            return self[:][key]
        return self._rows_at(self._positions(key))

    def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:
        """Every row, read now (the whole data set in memory)."""
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)


# ---------------------------------------------------------------------- sources


class ArraySource(Source):
    """Rows of an array already at hand (tests, arrays made by the caller)."""

    def __init__(self, array: np.ndarray) -> None:
        self._array = array
        self.length = len(array)
        self.sample_shape = tuple(int(s) for s in array.shape[1:])
        self.dtype = np.dtype(array.dtype)

    def read(self, start: int, stop: int) -> np.ndarray:
        return np.array(self._array[start:stop])

    def take(self, rows: np.ndarray) -> np.ndarray:
        return np.array(self._array[rows])


class MappedSource(Source):
    """``shape`` values of ``dtype`` stored C-ordered at byte ``offset`` of ``path``, memory-
    mapped; rows come out as ``dtype`` (``native``: in the machine's byte order) and their
    pages are released after each read."""

    def __init__(
        self, path: Path, offset: int, dtype: np.dtype, shape: Sequence[int], *, native: bool = False
    ) -> None:
        self.path = Path(path)
        self._stored = np.dtype(dtype)
        self._native = native
        self._shape = tuple(int(s) for s in shape)
        self.dtype = self._stored.newbyteorder("=") if native else self._stored
        self.length = self._shape[0]
        self.sample_shape = self._shape[1:]
        self._offset = int(offset)
        self._map: mmap.mmap | None = None
        count = math.prod(self._shape)
        with self.path.open("rb") as f:
            if os.fstat(f.fileno()).st_size == 0 or count == 0:
                self._array = np.empty(self._shape, self._stored)
                return
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self._array = np.frombuffer(self._map, self._stored, count, self._offset).reshape(self._shape)

    def __reduce__(self) -> tuple:
        """Pickled as the file's path and layout (a worker maps the file again)."""
        return (_mapped_source, (self.path, self._offset, self._stored, self._shape, self._native))

    def _release(self, first: int, stop: int) -> None:
        """Hand the pages of rows ``first``..``stop`` back to the kernel (they stay in the page
        cache; the next read of them maps them again)."""
        if self._map is None or not hasattr(self._map, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
            return
        page = mmap.PAGESIZE
        begin = self._offset + first * self.row_bytes
        end = min(self._offset + stop * self.row_bytes, len(self._map))
        begin -= begin % page
        if end > begin:
            with contextlib.suppress(OSError):  # a platform that refuses it keeps the pages
                self._map.madvise(mmap.MADV_DONTNEED, begin, end - begin)

    def _out(self, rows: np.ndarray) -> np.ndarray:
        return np.array(rows, dtype=self.dtype)  # a copy, byte order converted when asked

    def read(self, start: int, stop: int) -> np.ndarray:
        out = self._out(self._array[start:stop])
        self._release(start, stop)
        return out

    def take(self, rows: np.ndarray) -> np.ndarray:
        if len(rows) == 0:
            return np.empty((0, *self.sample_shape), self.dtype)
        out = self._out(self._array[rows])
        self._release(int(rows[0]), int(rows[-1]) + 1)
        return out


def _mapped_source(
    path: Path, offset: int, dtype: np.dtype, shape: tuple[int, ...], native: bool
) -> MappedSource:
    return MappedSource(path, offset, dtype, shape, native=native)


class StreamSource(Source):
    """``shape`` values of ``dtype`` starting at byte ``offset`` of the stream ``open_stream()``
    returns (a gzip or zip member, decompressed in order). A read before the current position
    reopens the stream (``restarts`` counts it); ``what`` names the stream in errors."""

    def __init__(
        self,
        open_stream: Callable[[], BinaryIO],
        offset: int,
        dtype: np.dtype,
        shape: Sequence[int],
        *,
        native: bool = False,
        what: str = "stream",
    ) -> None:
        self._open = open_stream
        self._offset = int(offset)
        self._stored = np.dtype(dtype)
        self.dtype = self._stored.newbyteorder("=") if native else self._stored
        self.length = int(shape[0])
        self.sample_shape = tuple(int(s) for s in shape[1:])
        self.what = what
        self.restarts = 0
        self._file: BinaryIO | None = None
        self._pos = 0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __getstate__(self) -> dict:
        """Pickled without the open stream (``open_stream`` must pickle: a module-level class)."""
        state = dict(self.__dict__, _file=None, _pos=0)
        return state

    def _seek(self, target: int) -> None:
        if self._file is None or target < self._pos:
            if self._file is not None:
                self.restarts += 1
            self.close()
            self._file = self._open()
            self._pos = 0
        while self._pos < target:
            got = len(self._file.read(min(_SKIP, target - self._pos)))
            if got == 0:
                raise TsensError(f"{self.what}: ends after {self._pos} bytes (truncated?)")
            self._pos += got

    def read(self, start: int, stop: int) -> np.ndarray:
        count = stop - start
        self._seek(self._offset + start * self.row_bytes)
        buf = np.empty(count * self.row_bytes, np.uint8)
        view = memoryview(buf)
        filled = 0
        while filled < len(buf):
            got = self._file.readinto(view[filled:])  # type: ignore[union-attr]
            if not got:
                raise TsensError(f"{self.what}: ends after {self._pos + filled} bytes (truncated?)")
            filled += got
        self._pos += filled
        rows = buf.view(self._stored).reshape(count, *self.sample_shape)
        return rows if rows.dtype == self.dtype else rows.astype(self.dtype)


class BlockSource(Source):
    """Rows in consecutive blocks decoded whole by ``load(b)``; block ``b`` holds rows
    ``bounds[b]`` to ``bounds[b + 1]``. The last ``keep`` decoded blocks are kept."""

    def __init__(
        self,
        bounds: Sequence[int],
        load: Callable[[int], np.ndarray],
        dtype: np.dtype,
        sample_shape: Sequence[int],
        *,
        keep: int = 1,
        checked_on_read: bool = False,
    ) -> None:
        self.bounds = np.asarray(bounds, dtype=np.int64)
        self.length = int(self.bounds[-1])
        self.dtype = np.dtype(dtype)
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.checked_on_read = checked_on_read
        self.loads = 0  # blocks decoded so far
        self._load = load
        self._keep = max(1, int(keep))
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def __getstate__(self) -> dict:
        """Pickled without its decoded blocks (``load`` must pickle)."""
        return dict(self.__dict__, _cache=OrderedDict())

    def seed(self, b: int, block: np.ndarray) -> None:
        """Keep an already decoded block (read while opening the file)."""
        self._remember(b, block)

    def _remember(self, b: int, block: np.ndarray) -> None:
        self._cache[b] = block
        self._cache.move_to_end(b)
        while len(self._cache) > self._keep:
            self._cache.popitem(last=False)

    def block(self, b: int) -> np.ndarray:
        if b in self._cache:
            self._cache.move_to_end(b)
            return self._cache[b]
        while len(self._cache) >= self._keep:  # free the oldest block before decoding the next
            self._cache.popitem(last=False)
        block = self._load(b)
        self.loads += 1
        want = (int(self.bounds[b + 1] - self.bounds[b]), *self.sample_shape)
        if block.shape != want or block.dtype != self.dtype:  # pragma: no cover - a reader's bug
            raise AssertionError(f"block {b}: got {block.shape} {block.dtype}, expected {want} {self.dtype}")
        self._remember(b, block)
        return block

    def read(self, start: int, stop: int) -> np.ndarray:
        if stop <= start:
            return np.empty((0, *self.sample_shape), self.dtype)
        first = int(np.searchsorted(self.bounds, start, side="right")) - 1
        last = int(np.searchsorted(self.bounds, stop - 1, side="right")) - 1
        parts = []
        for b in range(first, last + 1):
            lo, hi = max(start, int(self.bounds[b])), min(stop, int(self.bounds[b + 1]))
            base = int(self.bounds[b])
            parts.append(np.array(self.block(b)[lo - base : hi - base]))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def take(self, rows: np.ndarray) -> np.ndarray:
        if len(rows) == 0:
            return np.empty((0, *self.sample_shape), self.dtype)
        blocks = np.searchsorted(self.bounds, rows, side="right") - 1
        cuts = np.nonzero(np.diff(blocks))[0] + 1
        parts = []
        for group in np.split(np.arange(len(rows)), cuts):
            b = int(blocks[group[0]])
            parts.append(self.block(b)[rows[group] - self.bounds[b]])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


class SafetensorsSource(Source):
    """Tensor ``name`` of a ``.safetensors`` file, read by slices (the file is opened for each
    read, so its memory map never stays resident); bfloat16 comes out as float32."""

    def __init__(self, path: Path, name: str) -> None:
        self.path = Path(path)
        self.name = name
        with self._open() as f:
            piece = f.get_slice(name)
            shape = [int(s) for s in piece.get_shape()]
            if not shape:
                raise ValueError("a 0-d tensor has no rows")
            first = self._numpy(piece[0:0])
        self.length = shape[0]
        self.sample_shape = tuple(shape[1:])
        self.dtype = first.dtype

    def _open(self):  # noqa: ANN202 - safetensors' handle type is not exported
        from safetensors import safe_open

        return safe_open(str(self.path), framework="pt")

    @staticmethod
    def _numpy(t: object) -> np.ndarray:
        import torch

        assert isinstance(t, torch.Tensor)
        return (t.float() if t.dtype == torch.bfloat16 else t).numpy()

    def read(self, start: int, stop: int) -> np.ndarray:
        with self._open() as f:
            out = self._numpy(f.get_slice(self.name)[start:stop])
        return np.ascontiguousarray(out.reshape(stop - start, *self.sample_shape))
