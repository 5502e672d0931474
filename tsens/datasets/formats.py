"""Data file readers: each turns one file into raw inputs and labels (or None).

:func:`read_file` picks the reader from :data:`READERS` by the file's suffix; a file without a
known suffix is recognised by its content (a pickle is read as a CIFAR batch file, the IDX or
gzip magic as an MNIST IDX file). Every reader raises :class:`~tsens.errors.TsensError` naming
the file, never the underlying library's exception.

Inputs stay in their file wherever the format allows (a :class:`~.lazy.LazyArray`; labels are
always read whole, they are small):

* ``.npy`` and plain IDX files are memory-mapped (:class:`~.lazy.MappedSource`);
* gzipped IDX files are decompressed in order (:class:`~.lazy.StreamSource`: a read before the
  current position restarts the decompression; batches and sorted subsamples read in order);
* Parquet is read by row group (``ParquetFile.read_row_group``); a row group larger than
  :data:`~.lazy.BLOCK_BYTES` (8 MiB) decoded is read in pieces of about that size, in order,
  through ``iter_batches`` (a piece before the current one restarts its row group). Arrow IPC
  files (and Feather v2) are memory-mapped and read by record batch, in pieces the same way
  (a compressed batch is decompressed once and held while its pieces are read); Arrow streams
  are read in order (a batch before the current one restarts the stream). One decoded piece is
  kept; every piece is checked when it is decoded (missing values, ragged lists, undecodable
  images), and :func:`~.dataset.load_dataset` decodes every piece it uses once to check it;
* ``.safetensors`` inputs are read by slices (``safe_open``);
* a named CIFAR set spanning several batch files reads one batch file at a time (a single
  batch file is one pickle, read whole);
* ``.npz`` members larger than :data:`NPZ_LAZY_BYTES` are memory-mapped inside the archive when
  stored uncompressed (``np.savez``) and decompressed in order when compressed
  (``np.savez_compressed``); smaller ones are read whole (``.npz`` is meant for small sets).
"""

from __future__ import annotations

import gzip
import io
import math
import os
import pickle
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from ..errors import TsensError, first_line
from . import lazy
from .lazy import BlockSource, LazyArray, MappedSource, SafetensorsSource, StreamSource

try:  # numpy >= 2 (and 1.26, which has the alias)
    from numpy._core import multiarray as _np_multiarray
    from numpy._core import numeric as _np_numeric
except ImportError:  # pragma: no cover - older numpy
    from numpy.core import multiarray as _np_multiarray
    from numpy.core import numeric as _np_numeric

Samples = np.ndarray | LazyArray
Arrays = tuple[Samples, np.ndarray | None]
Reader = Callable[[Path], Arrays]

NPZ_LAZY_BYTES = 64 << 20
"""``.npz`` inputs larger than this (bytes) stay in the archive; smaller ones are read whole."""
_NPZ_LAZY_COMPRESSION = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)

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


class _Gzip:
    """Opens the gzip file ``path`` (picklable, for :class:`StreamSource`)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self) -> io.BufferedIOBase:
        return gzip.open(self.path, "rb")  # type: ignore[return-value]


def read_npy(path: Path) -> Arrays:
    """The inputs of a .npy file, memory-mapped (no labels)."""
    _expect(path, _NPY_MAGIC, ".npy", "a NumPy array file", _ZIP_MAGIC, "it is a zip archive: a .npz file?")
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


# --------------------------------------------------------------------------- safetensors


def read_safetensors(path: Path) -> Arrays:
    """Tensors ``x`` (inputs, read by slices) and optional ``y`` (labels) of a .safetensors file."""
    from safetensors import safe_open

    def to_numpy(t: torch.Tensor) -> np.ndarray:
        return (t.float() if t.dtype == torch.bfloat16 else t).numpy()

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            if "x" not in keys:
                raise TsensError(f"{path}: no tensor 'x' (inputs); found {keys}")
            y = to_numpy(f.get_tensor("y")) if "y" in keys else None
            if not f.get_slice("x").get_shape():
                return to_numpy(f.get_tensor("x")), y
        return LazyArray(SafetensorsSource(path, "x")), y
    except TsensError:
        raise
    except Exception as exc:  # safetensors raises its own (non-exported) error type
        raise TsensError(f"{path}: cannot read .safetensors ({exc})") from None


# --------------------------------------------------------------------------- Arrow tables


def _arrow_table(path: Path, open_table: Callable[[Path], object]) -> Arrays:
    """The whole table read at once (empty tables, Feather v1 files)."""
    import pyarrow as pa

    try:
        table = open_table(path)
    except (OSError, ValueError, pa.ArrowException) as exc:  # ValueError: bad UTF-8 names
        raise _cannot_read(path, exc) from None
    return _table_arrays(table, path)


def _cannot_read(path: Path, exc: BaseException) -> TsensError:
    return TsensError(f"{path}: cannot read {path.suffix.lower()} table ({first_line(exc)})")


def read_parquet(path: Path) -> Arrays:
    """Inputs (read by row group, :class:`_ParquetPieces`) and labels of a Parquet table (see
    :func:`_table_arrays` for the columns)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False)
        columns = _Columns(pf.schema_arrow, path)
        if pf.metadata.num_rows == 0:
            return _table_arrays(pf.read(), path)
        y = None if columns.label is None else columns.labels(pf.read(columns=[columns.label]))
        first = next(pf.iter_batches(batch_size=1, columns=columns.features, use_threads=False))
        columns.decode(pa.Table.from_batches([first]))  # the sample shape and dtype
        units = [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)]
        pieces = _ParquetPieces(pf, columns, units)
    except (OSError, ValueError, pa.ArrowException) as exc:  # ValueError: bad UTF-8 names
        raise _cannot_read(path, exc) from None
    return LazyArray(pieces.source()), y


def read_feather(path: Path) -> Arrays:
    """Inputs and labels of a Feather table: a Feather v2 file is an Arrow IPC file (read as
    :func:`read_arrow` reads one); a Feather v1 file is read whole."""
    import pyarrow as pa
    import pyarrow.feather as feather

    try:
        return _read_ipc_file(path)
    except pa.ArrowInvalid:
        return _arrow_table(path, feather.read_table)
    except (OSError, ValueError, pa.ArrowException) as exc:  # ValueError: bad UTF-8 names
        raise _cannot_read(path, exc) from None


def read_arrow(path: Path) -> Arrays:
    """Inputs and labels of an Arrow IPC file (memory-mapped, read by record batch) or stream
    (Hugging Face datasets writes streams; read in order, :class:`_IpcPieces`)."""
    import pyarrow as pa

    try:
        try:
            return _read_ipc_file(path)
        except pa.ArrowInvalid:
            return _read_ipc_stream(path)
    except (OSError, ValueError, pa.ArrowException) as exc:  # ValueError: bad UTF-8 names
        raise _cannot_read(path, exc) from None


def _read_ipc_file(path: Path) -> Arrays:
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        schema = pa.ipc.open_file(source).schema
    columns = _Columns(schema, path)
    pieces = _IpcPieces(path, columns, stream=False)
    return pieces.open()


def _read_ipc_stream(path: Path) -> Arrays:
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:  # reads are slices: no claimed size is allocated
        schema = pa.ipc.open_stream(source).schema
    columns = _Columns(schema, path)
    return _IpcPieces(path, columns, stream=True).open()


class _Columns:
    """Which columns of an Arrow table hold the inputs and the labels (:func:`_table_arrays`'s
    rules, checked on the schema), and the decoding of the inputs of one piece of the table,
    checked there (missing values, ragged lists, images) and against the first piece's sample
    shape."""

    def __init__(self, schema: object, path: Path) -> None:
        import pyarrow as pa

        assert isinstance(schema, pa.Schema)
        self.path = path
        names = schema.names
        self.label = next((c for c in LABEL_COLUMNS if c in names), None)
        self.features = [c for c in names if c != self.label]
        if not self.features:
            raise TsensError(f"{path}: no feature columns besides the label column {self.label!r}")
        kind = schema.field(self.features[0]).type
        if len(self.features) == 1 and _is_list(kind):
            self.kind = "list"
        elif len(self.features) == 1 and _is_image(kind):
            self.kind = "image"
        else:
            self.kind = "columns"
            bad = [c for c in self.features if not _numeric_arrow(schema.field(c).type)]
            if bad:
                raise TsensError(
                    f"{path}: columns {bad} are not numeric; expected numeric feature columns, one list "
                    f"column or one image column, plus an optional label column ({'/'.join(LABEL_COLUMNS)})"
                )
        self.indices = [names.index(c) for c in self.features]
        self.label_index = None if self.label is None else names.index(self.label)
        self.sample_shape: tuple[int, ...] | None = None
        self.dtype: np.dtype | None = None

    def labels(self, table: object) -> np.ndarray:
        """The label column of ``table`` (checked for missing values) as a NumPy array."""
        column = table.column(self.label)  # type: ignore[attr-defined]
        if column.null_count:
            raise TsensError(f"{self.path}: column {self.label!r} has missing values")
        return column.to_numpy()

    def decode(self, table: object) -> np.ndarray:
        """The inputs of ``table`` (a piece holding the feature columns) as an array."""
        path, name = self.path, self.features[0]
        for c in self.features:
            if table.column(c).null_count:  # type: ignore[attr-defined]
                raise TsensError(f"{path}: column {c!r} has missing values")
        if self.kind == "list":
            x = _list_column(table.column(name).combine_chunks(), name, path)  # type: ignore[attr-defined]
        elif self.kind == "image":
            x = _image_column(table.column(name).combine_chunks(), name, path)  # type: ignore[attr-defined]
        else:
            x = np.column_stack([table.column(c).to_numpy() for c in self.features])  # type: ignore[attr-defined]
        shape = tuple(int(s) for s in x.shape[1:])
        if self.sample_shape is None:
            self.sample_shape, self.dtype = shape, x.dtype
        elif shape != self.sample_shape:
            if self.kind == "image":
                raise TsensError(
                    f"{path}: images in column {name!r} differ in size ({self.sample_shape} vs {shape})"
                )
            level = next(i for i, (a, b) in enumerate(zip(self.sample_shape, shape, strict=False)) if a != b)
            lengths = sorted({self.sample_shape[level], shape[level]})
            raise TsensError(f"{path}: list column {name!r} has rows of different lengths {lengths}")
        return x if x.dtype == self.dtype else x.astype(self.dtype)

    def row_bytes(self) -> int:
        assert self.sample_shape is not None and self.dtype is not None
        return self.dtype.itemsize * math.prod(self.sample_shape)


def _pieces(unit_rows: list[int], row_bytes: int) -> list[tuple[int, int, int]]:
    """``(unit, first row in it, rows)`` of every piece: each unit (row group, record batch)
    cut into pieces of at most :data:`~.lazy.BLOCK_BYTES` of decoded rows."""
    step = max(1, lazy.BLOCK_BYTES // max(1, row_bytes))
    return [(u, first, min(step, n - first)) for u, n in enumerate(unit_rows) for first in range(0, n, step)]


class _ParquetPieces:
    """A Parquet file's inputs by piece: a row group that fits in one piece is read with
    ``read_row_group`` (random access); a larger one through ``iter_batches``, in order (a
    piece before the current position restarts the row group, ``restarts`` counts it)."""

    def __init__(self, pf: object, columns: _Columns, units: list[int]) -> None:
        self._pf: object | None = pf
        self.columns = columns
        self.units = units
        self.pieces = _pieces(units, columns.row_bytes())
        self.restarts = 0
        self._cursor: tuple[int, int, Iterator, list] | None = None  # unit, row, batches, unused

    @property
    def pf(self) -> object:
        """The open file (opened again after unpickling)."""
        if self._pf is None:
            import pyarrow.parquet as pq

            self._pf = pq.ParquetFile(self.columns.path, buffer_size=1 << 20, pre_buffer=False)
        return self._pf

    def __getstate__(self) -> dict:
        return dict(self.__dict__, _pf=None, _cursor=None)

    def source(self) -> BlockSource:
        bounds = np.cumsum([0] + [rows for _, _, rows in self.pieces])
        assert self.columns.dtype is not None and self.columns.sample_shape is not None
        c = self.columns
        return BlockSource(bounds, self.load, c.dtype, c.sample_shape, checked_on_read=True)

    def load(self, b: int) -> np.ndarray:
        import pyarrow as pa

        u, first, rows = self.pieces[b]
        try:
            if rows == self.units[u]:
                table = self.pf.read_row_group(u, columns=self.columns.features, use_threads=False)  # type: ignore[attr-defined]
            else:
                table = self._in_order(u, first, rows)
        except (OSError, ValueError, pa.ArrowException) as exc:  # ValueError: bad UTF-8 names
            raise _cannot_read(self.columns.path, exc) from None
        return self.columns.decode(table)

    def _in_order(self, u: int, first: int, rows: int) -> object:
        import pyarrow as pa

        cursor = self._cursor
        if cursor is None or cursor[0] != u or cursor[1] > first:
            if cursor is not None and cursor[0] == u:
                self.restarts += 1
            batches = self.pf.iter_batches(  # type: ignore[attr-defined]
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


def _mapped(batch: object, source: object) -> bool:
    """Whether ``batch``'s data lie in the memory map ``source`` (an uncompressed IPC file)
    rather than in memory (decompressed)."""
    source.seek(0)  # type: ignore[attr-defined]
    base, size = source.read_buffer(1).address, source.size()  # type: ignore[attr-defined]
    for column in batch.columns:  # type: ignore[attr-defined]
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

    def __init__(self, path: Path, columns: _Columns, *, stream: bool) -> None:
        self.path = path
        self.columns = columns
        self.stream = stream
        self.restarts = 0
        self.units: list[int] = []
        self.pieces: list[tuple[int, int, int]] = []
        self._cursor: tuple[object, int, object] | None = None  # reader, batch index, batch
        self._held: tuple[int, object] | None = None  # a file's decompressed batch and its index

    def __getstate__(self) -> dict:
        """Pickled without the open stream and the held batch."""
        return dict(self.__dict__, _cursor=None, _held=None)

    def _options(self, fields: list[int]) -> object:
        import pyarrow as pa

        return pa.ipc.IpcReadOptions(included_fields=fields)

    def _batches(self, fields: list[int]) -> Iterator[object]:
        import pyarrow as pa

        if self.stream:
            with pa.memory_map(str(self.path)) as f:
                yield from pa.ipc.open_stream(f, options=self._options(fields))
            return
        with pa.memory_map(str(self.path)) as f:
            reader = pa.ipc.open_file(f, options=self._options(fields))
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i)

    def open(self) -> Arrays:
        """Rows per batch and the labels (one pass over the label column, or the first
        feature's when there is none), the sample shape from the first row, and the inputs."""
        import pyarrow as pa

        c = self.columns
        counted = [c.label_index if c.label_index is not None else c.indices[0]]
        labels = []
        for batch in self._batches(counted):
            self.units.append(batch.num_rows)
            if c.label is not None:
                labels.append(c.labels(pa.Table.from_batches([batch])))
        y = None if c.label is None else (np.concatenate(labels) if labels else np.zeros(0, np.int64))
        if sum(self.units) == 0:
            import pyarrow.ipc as ipc

            opener = ipc.open_stream if self.stream else ipc.open_file
            return _arrow_table(self.path, lambda p: opener(pa.memory_map(str(p))).read_all())
        u = next(i for i, n in enumerate(self.units) if n)
        self.pieces = [(u, 0, 1)]
        self._piece(0)  # decoding it sets the sample shape and dtype
        self._cursor = None
        self.pieces = _pieces(self.units, c.row_bytes())
        bounds = np.cumsum([0] + [rows for _, _, rows in self.pieces])
        assert c.dtype is not None and c.sample_shape is not None
        source = BlockSource(bounds, self.load, c.dtype, c.sample_shape, checked_on_read=True)
        return LazyArray(source), y

    def _piece(self, b: int) -> np.ndarray:
        """Piece ``b``'s inputs, decoded and copied out of the memory map (or the held batch)."""
        import pyarrow as pa

        u, first, rows = self.pieces[b]
        options = self._options(self.columns.indices)
        if not self.stream:
            if self._held is not None and self._held[0] == u:  # decompressed already
                return self._decode(self._held[1], first, rows)
            self._held = None
            with pa.memory_map(str(self.path)) as f:
                batch = pa.ipc.open_file(f, options=options).get_batch(u)
                if not _mapped(batch, f):  # a compressed batch, decompressed into memory: keep it
                    self._held = (u, batch)
                return self._decode(batch, first, rows)
        cursor = self._cursor
        if cursor is None or cursor[1] > u:
            if cursor is not None:
                self.restarts += 1
            cursor = (pa.ipc.open_stream(pa.memory_map(str(self.path)), options=options), -1, None)
        reader, at, batch = cursor
        while at < u:
            batch = reader.read_next_batch()  # type: ignore[attr-defined]
            at += 1
        self._cursor = (reader, at, batch)
        return self._decode(batch, first, rows)

    def _decode(self, batch: object, first: int, rows: int) -> np.ndarray:
        import pyarrow as pa

        table = pa.Table.from_batches([batch.slice(first, rows)])  # type: ignore[attr-defined]
        return np.array(self.columns.decode(table))

    def load(self, b: int) -> np.ndarray:
        import pyarrow as pa

        try:
            return self._piece(b)
        except (OSError, ValueError, pa.ArrowException) as exc:  # ValueError: bad UTF-8 names
            raise _cannot_read(self.path, exc) from None


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


def _is_image(kind: object) -> bool:
    """A Hugging Face image column: structs of ``bytes`` and ``path``."""
    import pyarrow as pa

    return pa.types.is_struct(kind) and {"bytes", "path"} <= {f.name for f in kind}


def _is_list(kind: object) -> bool:
    import pyarrow as pa

    return pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)


def _list_column(arr: object, name: str, path: Path) -> np.ndarray:
    """A (possibly nested) list column of equal-length rows as an N × ... array."""
    import pyarrow.compute as pc

    n = len(arr)
    inner = arr.type
    while _is_list(inner):  # checked on the type first: pyarrow cannot flatten to every value type
        inner = inner.value_type
    if not _numeric_arrow(inner):
        raise TsensError(
            f"{path}: list column {name!r} must hold numbers without missing values, got {inner}"
        )
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
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
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


# --------------------------------------------------------------------------- MNIST IDX files

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_HEAD = 4 + 4 * 255  # the longest IDX header


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
        if _head(path, 2) == _GZIP_MAGIC:
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
        if _head(path, 2) == _GZIP_MAGIC:
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
