"""Arrow tables: Parquet, Arrow IPC files and streams (``.arrow``) and Feather; the inputs are
read a piece at a time (:class:`~..lazy.BlockSource`), the labels whole. Which columns hold
what, and their decoding: :mod:`.columns`.

* Parquet is read by row group (``ParquetFile.read_row_group``); a row group larger than
  :data:`~..lazy.BLOCK_BYTES` (8 MiB) decoded is read in pieces of about that size, in order,
  through ``iter_batches`` (a piece before the current one restarts its row group).
* Arrow IPC files (and Feather v2) are memory-mapped and read by record batch, in pieces the
  same way (a compressed batch is decompressed once and held while its pieces are read); Arrow
  streams (Hugging Face datasets writes them) are read in order (a batch before the current one
  restarts the stream). Feather v1 files and empty tables are read whole.

One decoded piece is kept; every piece is checked when it is decoded (missing values, ragged
lists, undecodable images), and :func:`~..dataset.load_dataset` decodes every piece it uses
once to check it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from ...errors import TsensError, first_line
from .. import lazy
from ..lazy import BlockSource, LazyArray
from .columns import Columns, table_arrays
from .common import Arrays

_FAILURES = (OSError, ValueError, pa.ArrowException)  # ValueError: bad UTF-8 names


def _cannot_read(path: Path, exc: BaseException) -> TsensError:
    return TsensError(f"{path}: cannot read {path.suffix.lower()} table ({first_line(exc)})")


def _arrow_table(path: Path, open_table: Callable[[Path], pa.Table]) -> Arrays:
    """The whole table read at once (empty tables, Feather v1 files)."""
    try:
        table = open_table(path)
    except _FAILURES as exc:
        raise _cannot_read(path, exc) from None
    return table_arrays(table, path)


def read_parquet(path: Path) -> Arrays:
    """Inputs (read by row group, :class:`_ParquetPieces`) and labels of a Parquet table."""
    try:
        pf = _open_parquet(path)
        columns = Columns(pf.schema_arrow, path)
        if pf.metadata.num_rows == 0:
            return table_arrays(pf.read(), path)
        y = None if columns.label is None else columns.labels(pf.read(columns=[columns.label]))
        first = next(pf.iter_batches(batch_size=1, columns=columns.features, use_threads=False))
        columns.decode(pa.Table.from_batches([first]))  # the sample shape and dtype
        units = [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)]
        pieces = _ParquetPieces(pf, columns, units)
    except _FAILURES as exc:
        raise _cannot_read(path, exc) from None
    return LazyArray(pieces.source()), y


def read_feather(path: Path) -> Arrays:
    """Inputs and labels of a Feather table: a Feather v2 file is an Arrow IPC file (read as
    :func:`read_arrow` reads one); a Feather v1 file is read whole."""
    try:
        return _IpcPieces.read(path, stream=False)
    except pa.ArrowInvalid:
        return _arrow_table(path, feather.read_table)
    except _FAILURES as exc:
        raise _cannot_read(path, exc) from None


def read_arrow(path: Path) -> Arrays:
    """Inputs and labels of an Arrow IPC file (memory-mapped, read by record batch) or stream
    (read in order, :class:`_IpcPieces`)."""
    try:
        try:
            return _IpcPieces.read(path, stream=False)
        except pa.ArrowInvalid:
            return _IpcPieces.read(path, stream=True)
    except _FAILURES as exc:
        raise _cannot_read(path, exc) from None


def _open_parquet(path: Path) -> pq.ParquetFile:
    return pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False)


def _pieces(unit_rows: list[int], row_bytes: int) -> list[tuple[int, int, int]]:
    """``(unit, first row in it, rows)`` of every piece: each unit (row group, record batch)
    cut into pieces of at most :data:`~..lazy.BLOCK_BYTES` of decoded rows."""
    step = max(1, lazy.BLOCK_BYTES // max(1, row_bytes))
    return [(u, first, min(step, n - first)) for u, n in enumerate(unit_rows) for first in range(0, n, step)]


def _block_source(
    pieces: list[tuple[int, int, int]], load: Callable[[int], np.ndarray], c: Columns
) -> BlockSource:
    """The inputs as a source of ``pieces``, piece ``b`` read by ``load(b)``."""
    bounds = np.cumsum([0] + [rows for _, _, rows in pieces])
    assert c.dtype is not None and c.sample_shape is not None
    return BlockSource(bounds, load, c.dtype, c.sample_shape, checked_on_read=True)


class _ParquetPieces:
    """A Parquet file's inputs by piece: a row group that fits in one piece is read with
    ``read_row_group`` (random access); a larger one through ``iter_batches``, in order (a
    piece before the current position restarts the row group, ``restarts`` counts it)."""

    def __init__(self, pf: pq.ParquetFile, columns: Columns, units: list[int]) -> None:
        self._pf: pq.ParquetFile | None = pf
        self.columns = columns
        self.units = units
        self.pieces = _pieces(units, columns.row_bytes())
        self.restarts = 0
        self._cursor: tuple[int, int, Iterator, list] | None = None  # unit, row, batches, unused

    @property
    def pf(self) -> pq.ParquetFile:
        """The open file (opened again after unpickling)."""
        if self._pf is None:
            self._pf = _open_parquet(self.columns.path)
        return self._pf

    def __getstate__(self) -> dict:
        return dict(self.__dict__, _pf=None, _cursor=None)

    def source(self) -> BlockSource:
        return _block_source(self.pieces, self.load, self.columns)

    def load(self, b: int) -> np.ndarray:
        u, first, rows = self.pieces[b]
        try:
            if rows == self.units[u]:
                table = self.pf.read_row_group(u, columns=self.columns.features, use_threads=False)
            else:
                table = self._in_order(u, first, rows)
        except _FAILURES as exc:
            raise _cannot_read(self.columns.path, exc) from None
        return self.columns.decode(table)

    def _in_order(self, u: int, first: int, rows: int) -> pa.Table:
        cursor = self._cursor
        if cursor is None or cursor[0] != u or cursor[1] > first:
            if cursor is not None and cursor[0] == u:
                self.restarts += 1
            batches = self.pf.iter_batches(
                batch_size=rows, row_groups=[u], columns=self.columns.features, use_threads=False
            )
            cursor = (u, 0, batches, [])
        _, pos, batches, parts = cursor
        have = sum(p.num_rows for p in parts)
        while pos + have < first + rows:
            part = pa.Table.from_batches([next(batches)])
            parts.append(part)
            have += part.num_rows
            while parts and pos + parts[0].num_rows <= first:  # wholly before the piece: drop it
                pos += parts[0].num_rows
                have -= parts.pop(0).num_rows
        table = pa.concat_tables(parts).slice(first - pos)
        rest = table.slice(rows)
        self._cursor = (u, first + rows, batches, [rest] if rest.num_rows else [])
        return table.slice(0, rows)


def _mapped(batch: pa.RecordBatch, source: pa.MemoryMappedFile) -> bool:
    """Whether ``batch``'s data lie in the memory map ``source`` (an uncompressed IPC file)
    rather than in memory (decompressed)."""
    source.seek(0)
    base, size = source.read_buffer(1).address, source.size()
    for column in batch.columns:
        for buffer in column.buffers():
            if buffer is not None and buffer.size:
                return base <= buffer.address < base + size
    return True


class _IpcPieces:
    """An Arrow IPC file's or stream's inputs by piece of record batch. A file is memory-mapped
    anew for each piece (read by ``get_batch``, copied out, unmapped), so its pages never stay
    resident; a compressed file's batch is decompressed into memory once and held while its
    pieces are read. A stream is read in order with one record batch held (a piece of an earlier
    batch restarts the stream, ``restarts`` counts it)."""

    def __init__(self, path: Path, columns: Columns, *, stream: bool) -> None:
        self.path = path
        self.columns = columns
        self.stream = stream
        self.restarts = 0
        self.units: list[int] = []
        self.pieces: list[tuple[int, int, int]] = []
        self._cursor: tuple[ipc.RecordBatchStreamReader, int, pa.RecordBatch | None] | None = None
        self._held: tuple[int, pa.RecordBatch] | None = None  # a file's decompressed batch and its index

    @classmethod
    def read(cls, path: Path, *, stream: bool) -> Arrays:
        """Inputs and labels of the IPC file or stream ``path`` (the schema read first: a
        file's footer, a stream's first message; reads are slices of the memory map, so no
        claimed size is allocated)."""
        opener = ipc.open_stream if stream else ipc.open_file
        with pa.memory_map(str(path)) as source:
            schema = opener(source).schema
        return cls(path, Columns(schema, path), stream=stream).open()

    def __getstate__(self) -> dict:
        """Pickled without the open stream and the held batch."""
        return dict(self.__dict__, _cursor=None, _held=None)

    def _batches(self, fields: list[int]) -> Iterator[pa.RecordBatch]:
        options = ipc.IpcReadOptions(included_fields=fields)
        with pa.memory_map(str(self.path)) as f:
            if self.stream:
                yield from ipc.open_stream(f, options=options)
                return
            reader = ipc.open_file(f, options=options)
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i)

    def open(self) -> Arrays:
        """Rows per batch and the labels (one pass over the label column, or the first
        feature's when there is none), the sample shape from the first row, and the inputs."""
        c = self.columns
        counted = [c.label_index if c.label_index is not None else c.indices[0]]
        labels = []
        for batch in self._batches(counted):
            self.units.append(batch.num_rows)
            if c.label is not None:
                labels.append(c.labels(pa.Table.from_batches([batch])))
        y = None if c.label is None else (np.concatenate(labels) if labels else np.zeros(0, np.int64))
        if sum(self.units) == 0:
            opener = ipc.open_stream if self.stream else ipc.open_file
            return _arrow_table(self.path, lambda p: opener(pa.memory_map(str(p))).read_all())
        u = next(i for i, n in enumerate(self.units) if n)
        self.pieces = [(u, 0, 1)]
        self._piece(0)  # decoding it sets the sample shape and dtype
        self._cursor = None
        self.pieces = _pieces(self.units, c.row_bytes())
        return LazyArray(_block_source(self.pieces, self.load, c)), y

    def _piece(self, b: int) -> np.ndarray:
        """Piece ``b``'s inputs, decoded and copied out of the memory map (or the held batch)."""
        u, first, rows = self.pieces[b]
        options = ipc.IpcReadOptions(included_fields=self.columns.indices)
        if not self.stream:
            if self._held is not None and self._held[0] == u:  # decompressed already
                return self._decode(self._held[1], first, rows)
            self._held = None
            with pa.memory_map(str(self.path)) as f:
                batch = ipc.open_file(f, options=options).get_batch(u)
                if not _mapped(batch, f):  # a compressed batch, decompressed into memory: keep it
                    self._held = (u, batch)
                return self._decode(batch, first, rows)
        cursor = self._cursor
        if cursor is None or cursor[1] > u:
            if cursor is not None:
                self.restarts += 1
            cursor = (ipc.open_stream(pa.memory_map(str(self.path)), options=options), -1, None)
        reader, at, batch = cursor
        while at < u:
            batch = reader.read_next_batch()
            at += 1
        self._cursor = (reader, at, batch)
        assert batch is not None
        return self._decode(batch, first, rows)

    def _decode(self, batch: pa.RecordBatch, first: int, rows: int) -> np.ndarray:
        table = pa.Table.from_batches([batch.slice(first, rows)])
        return np.array(self.columns.decode(table))

    def load(self, b: int) -> np.ndarray:
        try:
            return self._piece(b)
        except _FAILURES as exc:
            raise _cannot_read(self.path, exc) from None
