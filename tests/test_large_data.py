"""Data larger than memory (tsens.datasets.lazy): every lazy reader gives exactly what reading
the whole file gives, by ranges and by index arrays; a subsample reads only its rows; standard
statistics are taken in chunks; the input cache keeps to its cap. Small files only."""

from __future__ import annotations

import gzip
import pickle
import struct
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
import torch
from nets import random_network

import tsens.datasets.formats as formats
import tsens.datasets.formats.numpyfiles as numpyfiles
import tsens.datasets.preprocess as preprocess
from tsens.datasets import Dataset, Preprocess, load_dataset, read_file
from tsens.datasets.formats.columns import table_arrays
from tsens.datasets.lazy import ArraySource, LazyArray, MappedSource, Source
from tsens.datasets.named import load_named
from tsens.datasets.preprocess import chunked_moments
from tsens.errors import TsensError
from tsens.stream import InputCache, default_cache_bytes, measure

RNG = np.random.default_rng(7)
N = 53  # rows: not a multiple of any block, piece or batch size used below


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TSENS_DATA", raising=False)


# --------------------------------------------------------------------------- writers
# Each writes N samples and returns (spec to load, the inputs a whole-file read gives, labels).

Written = tuple[str, np.ndarray, np.ndarray | None]


def floats(shape: tuple[int, ...] = (3, 4, 5)) -> np.ndarray:
    return RNG.normal(size=(N, *shape)).astype(np.float32)


def labels() -> np.ndarray:
    return np.arange(N) % 7


def list_column(x: np.ndarray) -> pa.Array:
    flat = x.reshape(len(x), -1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1])


def write_npy(tmp: Path) -> Written:
    x = floats()
    np.save(tmp / "d.npy", x)
    return str(tmp / "d.npy"), np.load(tmp / "d.npy"), None


def write_npy_big_endian(tmp: Path) -> Written:
    np.save(tmp / "d.npy", floats().astype(">f4"))
    return str(tmp / "d.npy"), np.load(tmp / "d.npy"), None


def write_npz_stored(tmp: Path) -> Written:
    x, y = floats(), labels()
    np.savez(tmp / "d.npz", x=x, y=y)
    return str(tmp / "d.npz"), x, y


def write_npz_deflated(tmp: Path) -> Written:
    x, y = floats(), labels()
    np.savez_compressed(tmp / "d.npz", data=x, labels=y)
    return str(tmp / "d.npz"), x, y


def write_safetensors(tmp: Path) -> Written:
    from safetensors.numpy import save_file

    x, y = floats(), labels()
    save_file({"x": x, "y": y}, str(tmp / "d.safetensors"))
    return str(tmp / "d.safetensors"), x, y


def write_safetensors_bf16(tmp: Path) -> Written:
    from safetensors.torch import save_file

    x = torch.from_numpy(floats()).to(torch.bfloat16)
    save_file({"x": x}, str(tmp / "d.safetensors"))
    return str(tmp / "d.safetensors"), x.float().numpy(), None


def write_parquet_list(tmp: Path) -> Written:
    x, y = floats(), labels()
    pq.write_table(pa.table({"x": list_column(x), "label": y}), tmp / "d.parquet", row_group_size=7)
    return str(tmp / "d.parquet"), x.reshape(N, -1), y


def write_parquet_nested(tmp: Path) -> Written:
    x, y = floats((2, 3)).astype(np.float64), labels()
    pq.write_table(pa.table({"v": x.tolist(), "y": y}), tmp / "d.parquet", row_group_size=9)
    return str(tmp / "d.parquet"), x, y


def write_parquet_columns(tmp: Path) -> Written:
    x, y = floats((3,)), labels()
    table = pa.table({"a": x[:, 0], "b": x[:, 1].astype(np.float64), "c": np.arange(N), "target": y})
    pq.write_table(table, tmp / "d.parquet", row_group_size=10)
    want = np.column_stack([x[:, 0], x[:, 1].astype(np.float64), np.arange(N)])
    return str(tmp / "d.parquet"), want, y


def write_parquet_images(tmp: Path) -> Written:
    pytest.importorskip("PIL")
    import io

    from PIL import Image

    x = RNG.integers(0, 256, size=(N, 3, 4, 5), dtype=np.uint8)
    encoded = []
    for img in x:
        buf = io.BytesIO()
        Image.fromarray(img.transpose(1, 2, 0)).save(buf, format="PNG")
        encoded.append({"bytes": buf.getvalue(), "path": None})
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({"image": pa.array(encoded, type=image_type), "label": labels()})
    pq.write_table(table, tmp / "d.parquet", row_group_size=8)
    return str(tmp / "d.parquet"), x, labels()


def _ipc_table() -> tuple[pa.Table, np.ndarray, np.ndarray]:
    x, y = floats(), labels()
    return pa.table({"x": list_column(x), "labels": y}), x.reshape(N, -1), y


def write_arrow_file(tmp: Path) -> Written:
    table, x, y = _ipc_table()
    with pa.OSFile(str(tmp / "d.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=6)
    return str(tmp / "d.arrow"), x, y


def write_arrow_stream(tmp: Path) -> Written:
    table, x, y = _ipc_table()
    with pa.OSFile(str(tmp / "d.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=6)
    return str(tmp / "d.arrow"), x, y


def write_feather(tmp: Path) -> Written:  # Feather v2, lz4-compressed by default
    table, x, y = _ipc_table()
    feather.write_feather(table, tmp / "d.feather", chunksize=8)
    return str(tmp / "d.feather"), x, y


def idx_bytes(arr: np.ndarray) -> bytes:
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.float32): 0x0D}[arr.dtype]
    header = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def _write_idx(tmp: Path, gz: bool, dtype: type = np.uint8) -> Written:
    if dtype is np.uint8:
        x = RNG.integers(0, 256, size=(N, 6, 7), dtype=np.uint8)
    else:
        x = RNG.normal(size=(N, 6, 7)).astype(np.float32)
    y = labels().astype(np.uint8)
    pack = gzip.compress if gz else (lambda b: b)
    suffix = ".gz" if gz else ""
    (tmp / f"train-images-idx3-ubyte{suffix}").write_bytes(pack(idx_bytes(x)))
    (tmp / f"train-labels-idx1-ubyte{suffix}").write_bytes(pack(idx_bytes(y)))
    path = tmp / f"train-images-idx3-ubyte{suffix}"
    return str(path), formats.read_idx(path), y


def write_idx(tmp: Path) -> Written:
    return _write_idx(tmp, gz=False, dtype=np.float32)  # big-endian floats, converted per read


def write_idx_gz(tmp: Path) -> Written:
    return _write_idx(tmp, gz=True)


def write_cifar(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    batch = {b"batch_label": b"b", b"data": x.reshape(len(x), -1), b"labels": [int(v) for v in y]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(batch, protocol=2))


def write_cifar_named(tmp: Path) -> Written:
    x = RNG.integers(0, 256, size=(N, 3, 32, 32), dtype=np.uint8)
    y = labels()
    cuts = [0, 11, 22, 33, 44, N]  # five batch files
    for i in range(5):
        write_cifar(
            tmp / "cifar-10-batches-py" / f"data_batch_{i + 1}",
            x[cuts[i] : cuts[i + 1]],
            y[cuts[i] : cuts[i + 1]],
        )
    parts = [formats.read_cifar(tmp / "cifar-10-batches-py" / f"data_batch_{i}") for i in range(1, 6)]
    return "cifar10", np.concatenate([p[0] for p in parts]), y


WRITERS: dict[str, Callable[[Path], Written]] = {
    "npy": write_npy,
    "npy-big-endian": write_npy_big_endian,
    "npz-stored": write_npz_stored,
    "npz-deflated": write_npz_deflated,
    "safetensors": write_safetensors,
    "safetensors-bf16": write_safetensors_bf16,
    "parquet-list": write_parquet_list,
    "parquet-nested": write_parquet_nested,
    "parquet-columns": write_parquet_columns,
    "parquet-images": write_parquet_images,
    "arrow-file": write_arrow_file,
    "arrow-stream": write_arrow_stream,
    "feather": write_feather,
    "idx": write_idx,
    "idx-gz": write_idx_gz,
    "cifar-named": write_cifar_named,
}


def read_lazy(spec: str, tmp: Path) -> tuple[object, np.ndarray | None]:
    if spec == "cifar10":
        x, y, _ = load_named("cifar10", spec, tmp)
        return x, y
    return read_file(Path(spec))


def eager_tables(spec: str) -> np.ndarray:
    """The inputs as the whole-table reader gives them (the reader before tables were lazy)."""
    path = Path(spec)
    if path.suffix == ".parquet":
        table = pq.read_table(path)
    elif path.suffix == ".feather":
        table = feather.read_table(path)
    else:
        try:
            table = pa.ipc.open_file(path).read_all()
        except pa.ArrowInvalid:
            table = pa.ipc.open_stream(path).read_all()
    return table_arrays(table, path)[0]


@pytest.fixture
def small_npz_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(numpyfiles, "NPZ_LAZY_BYTES", 0)  # every .npz member stays in the archive


# --------------------------------------------------------------------------- what a read returns


def check_reads(x: LazyArray, ref: np.ndarray) -> None:
    """Every way of indexing ``x`` gives what indexing the whole array ``ref`` gives."""
    assert isinstance(x, LazyArray)
    assert x.shape == ref.shape and x.dtype == ref.dtype and len(x) == len(ref) and x.ndim == ref.ndim
    whole = np.asarray(x)
    assert whole.dtype == ref.dtype
    np.testing.assert_array_equal(whole, ref)
    n = len(ref)
    for a, b in [(0, n), (0, 1), (5, 20), (6, 8), (n - 3, n), (10, 10), (40, 200), (-5, -1)]:
        np.testing.assert_array_equal(x[a:b], ref[a:b])
    for key in [slice(None, None, 5), slice(None, None, -4), slice(3, 40, 7), slice(None, 4, -1)]:
        np.testing.assert_array_equal(x[key], ref[key])
    for i in [0, n - 1, -1, np.int64(17)]:
        np.testing.assert_array_equal(x[i], ref[i])
    keys = [
        np.array([0, 1, 2, 30, 31, n - 1]),  # sorted, across blocks
        np.array([3, 3, 4, 4, 4]),  # repeats
        np.array([40, 2, 2, 17, 0]),  # any order
        np.array([-1, 0, -n]),
        [5, 1],
        np.array([[1, 2], [50, 3]]),
        RNG.random(n) < 0.3,
        np.array([], dtype=np.int64),
        [],
    ]
    for key in keys:
        np.testing.assert_array_equal(x[key], ref[key])
    np.testing.assert_array_equal(x[:, 0], ref[:, 0])
    np.testing.assert_array_equal(x[3, 0], ref[3, 0])
    np.testing.assert_array_equal(x[[7, 2], ..., 0], ref[[7, 2], ..., 0])
    np.testing.assert_array_equal(x[..., 0], ref[..., 0])
    np.testing.assert_array_equal(x[[7, 2], [0, 1]], ref[[7, 2], [0, 1]])  # broadcast, as NumPy does
    np.testing.assert_array_equal(x[np.array([[4, 1], [1, 9]]), 0], ref[np.array([[4, 1], [1, 9]]), 0])
    np.testing.assert_array_equal(x[2:6, [1, 0]], ref[2:6, [1, 0]])
    np.testing.assert_array_equal(x[None, 3], ref[None, 3])
    rows = np.array([1, 9, 10, 11, 40, 52])
    sub = x.subset(rows)
    np.testing.assert_array_equal(np.asarray(sub), ref[rows])
    np.testing.assert_array_equal(sub[1:4], ref[rows][1:4])
    np.testing.assert_array_equal(sub.subset(np.array([0, 5]))[:], ref[rows[[0, 5]]])
    if ref.ndim > 2:
        view = x.reshaped((1, *ref.shape[1:]))
        np.testing.assert_array_equal(view[4:9], ref[4:9, None])
    got = x[0:3]
    got[...] = 0  # a fresh array: the source is untouched
    np.testing.assert_array_equal(x[0:3], ref[0:3])
    for bad in (n, -n - 1):
        with pytest.raises(IndexError):
            x[bad]
    with pytest.raises(IndexError):
        x[[0, n]]
    with pytest.raises(IndexError):
        x[np.array([0.5])]


@pytest.mark.parametrize("kind", WRITERS)
@pytest.mark.usefixtures("small_npz_threshold")
def test_lazy_reader_returns_what_a_whole_read_returns(tmp_path: Path, kind: str) -> None:
    spec, ref, y = WRITERS[kind](tmp_path)
    x, got_y = read_lazy(spec, tmp_path)
    check_reads(x, ref)  # type: ignore[arg-type]
    if y is None:
        assert got_y is None
    else:
        np.testing.assert_array_equal(got_y, y)
    if kind.startswith(("parquet", "arrow", "feather")):
        np.testing.assert_array_equal(np.asarray(x), eager_tables(spec))


@pytest.mark.parametrize("kind", WRITERS)
@pytest.mark.usefixtures("small_npz_threshold")
def test_lazy_arrays_pickle_as_a_reference_to_their_file(tmp_path: Path, kind: str) -> None:
    """A worker (a Ray task) gets the file's path and layout, not the data, and reads the same."""
    spec, ref, _ = WRITERS[kind](tmp_path)
    x, _ = read_lazy(spec, tmp_path)
    assert isinstance(x, LazyArray)
    x[N - 5 : N - 1]  # something read (a block decoded, a stream opened): none of it is pickled
    payload = pickle.dumps(x)
    assert len(payload) < 4096 and ref[N // 2].tobytes() not in payload  # no rows in it
    back = pickle.loads(payload)
    np.testing.assert_array_equal(np.asarray(back), ref)
    np.testing.assert_array_equal(back[[40, 3]], ref[[40, 3]])
    ds = load_dataset(spec, data_root=tmp_path, limit=7, seed=1)
    again = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(np.asarray(again.x), np.asarray(ds.x))
    np.testing.assert_array_equal(again.indices, ds.indices)


@pytest.mark.parametrize("kind", ["parquet-list", "parquet-nested", "arrow-file", "arrow-stream", "feather"])
def test_blocks_read_in_pieces(tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Row groups and record batches larger than BLOCK_BYTES are read in pieces of 3 rows."""
    spec, ref, _ = WRITERS[kind](tmp_path)
    row = ref[0].nbytes
    monkeypatch.setattr("tsens.datasets.lazy.BLOCK_BYTES", 3 * row)
    x, _ = read_lazy(spec, tmp_path)
    assert isinstance(x, LazyArray)
    assert np.diff(x.source.bounds).max() == 3  # type: ignore[attr-defined]
    check_reads(x, ref)


def test_parquet_pieces_read_in_order_restart_only_backwards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, ref, _ = write_parquet_list(tmp_path)
    monkeypatch.setattr("tsens.datasets.lazy.BLOCK_BYTES", 3 * ref[0].nbytes)
    x, _ = read_file(Path(spec))
    pieces = x.source._load.__self__  # type: ignore[attr-defined]
    for start in range(0, N, 4):  # a pass in order, as batches read
        np.testing.assert_array_equal(x[start : start + 4], ref[start : start + 4])
    assert pieces.restarts == 0
    np.testing.assert_array_equal(x[4], ref[4])  # the first row group's second piece: opens it
    assert pieces.restarts == 0
    np.testing.assert_array_equal(x[1], ref[1])  # its first piece: the row group starts again
    assert pieces.restarts == 1


def test_gzipped_idx_restarts_only_backwards(tmp_path: Path) -> None:
    spec, ref, _ = write_idx_gz(tmp_path)
    ds = load_dataset(spec)
    source = ds.x.source  # type: ignore[union-attr]
    batched = torch.cat([xb for xb, _ in ds.batches(10, dtype=torch.float64)])
    np.testing.assert_allclose(batched.numpy(), ref.reshape(N, -1) / 255.0, rtol=0)
    assert source.restarts == 0  # one decompression per pass
    list(ds.batches(10))
    assert source.restarts == 1  # the second pass starts again
    np.testing.assert_array_equal(ds.x[[50, 2]], ref[[50, 2], None])  # read sorted: one restart
    assert source.restarts == 2
    np.testing.assert_array_equal(ds.x[1], ref[1, None])  # backwards again
    assert source.restarts == 3


def test_plain_idx_is_memory_mapped_and_gz_checked_when_opened(tmp_path: Path) -> None:
    spec, _, _ = write_idx(tmp_path)
    assert isinstance(read_file(Path(spec))[0].source, MappedSource)  # type: ignore[union-attr]
    raw = gzip.decompress(Path(write_idx_gz(tmp_path)[0]).read_bytes())
    (tmp_path / "cut-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[:-5]))
    with pytest.raises(TsensError, match=r"cut-images-idx3-ubyte\.gz: IDX header promises \(53, 6, 7\)"):
        load_dataset(str(tmp_path / "cut-images-idx3-ubyte.gz"))


def test_small_npz_is_read_whole(tmp_path: Path) -> None:
    x = floats()
    np.savez(tmp_path / "d.npz", x=x)
    got, _ = read_file(tmp_path / "d.npz")
    assert type(got) is np.ndarray
    np.testing.assert_array_equal(got, x)


def test_fortran_ordered_npy_stays_a_memmap(tmp_path: Path) -> None:
    x = np.asfortranarray(floats((6,)))
    np.save(tmp_path / "f.npy", x)
    got = load_dataset(str(tmp_path / "f.npy"), limit=5, seed=1)
    np.testing.assert_array_equal(got.x, x[got.indices])


@pytest.mark.parametrize("where", ["first", "later"])
def test_table_pieces_are_checked_when_loading(tmp_path: Path, where: str) -> None:
    """A bad row group is refused by load_dataset whichever row group it is in."""
    rows = [[1.0, 2.0, 3.0]] * 12
    bad = 0 if where == "first" else 10
    ragged = [*rows[:bad], [1.0, 2.0, 3.0, 4.0], *rows[bad + 1 :]]
    pq.write_table(pa.table({"v": ragged}), tmp_path / "ragged.parquet", row_group_size=4)
    with pytest.raises(
        TsensError, match=r"ragged\.parquet: list column 'v' has rows of different lengths \[3, 4\]"
    ):
        load_dataset(str(tmp_path / "ragged.parquet"))
    missing = [*rows[:bad], None, *rows[bad + 1 :]]
    pq.write_table(pa.table({"v": missing}), tmp_path / "missing.parquet", row_group_size=4)
    with pytest.raises(TsensError, match=r"missing\.parquet: column 'v' has missing values"):
        load_dataset(str(tmp_path / "missing.parquet"))
    column = pa.array([*range(bad), None, *range(bad + 1, 12)], pa.float64())
    pq.write_table(pa.table({"a": column, "b": np.ones(12)}), tmp_path / "cols.parquet", row_group_size=4)
    with pytest.raises(TsensError, match=r"cols\.parquet: column 'a' has missing values"):
        load_dataset(str(tmp_path / "cols.parquet"))


def test_empty_tables_are_refused_as_before(tmp_path: Path) -> None:
    pq.write_table(
        pa.table({"a": pa.array([], pa.float32()), "label": pa.array([], pa.int64())}), tmp_path / "e.parquet"
    )
    with pytest.raises(TsensError, match=r"e\.parquet: the data set is empty"):
        load_dataset(str(tmp_path / "e.parquet"))


# --------------------------------------------------------------------------- limit, seed


@pytest.mark.parametrize("kind", WRITERS)
@pytest.mark.usefixtures("small_npz_threshold")
def test_limit_picks_the_same_samples(tmp_path: Path, kind: str) -> None:
    spec, ref, y = WRITERS[kind](tmp_path)
    ds = load_dataset(spec, data_root=tmp_path, limit=9, seed=4)
    # the implementation before inputs were lazy: sorted draw without replacement, then x[indices]
    chosen = np.sort(np.random.default_rng(4).choice(N, size=9, replace=False))
    np.testing.assert_array_equal(ds.indices, chosen)
    want = ref[chosen]
    np.testing.assert_array_equal(np.asarray(ds.x).reshape(want.shape), want)
    if y is not None:
        np.testing.assert_array_equal(ds.y, y[chosen])


@pytest.mark.parametrize("kind", ["npy", "parquet-list", "arrow-stream", "idx-gz", "cifar-named"])
@pytest.mark.parametrize("normalize", ["none", "standard"])
def test_lazy_sets_give_bit_identical_batches_and_measures(tmp_path: Path, kind: str, normalize: str) -> None:
    """The same samples through an in-memory set (a small .npz, read whole) and through the lazy
    reader: the same statistics, batches and per-sample measures, bit for bit."""
    spec, ref, y = WRITERS[kind](tmp_path)
    shape = ref.shape[1:]
    limit = 20
    lazy_set = load_dataset(spec, data_root=tmp_path, limit=limit, seed=2, preprocess=Preprocess(normalize))
    arrays = {"x": ref} if y is None else {"x": ref, "y": y}
    np.savez(tmp_path / "whole.npz", **arrays)
    whole = load_dataset(str(tmp_path / "whole.npz"), limit=limit, seed=2, preprocess=Preprocess(normalize))
    assert type(whole.x) is np.ndarray and isinstance(lazy_set.x, LazyArray)
    assert lazy_set.preprocess == whole.preprocess
    for (xa, ya), (xb, yb) in zip(lazy_set.batches(6), whole.batches(6), strict=True):
        assert torch.equal(xa, xb)
        assert (ya is None and yb is None) or torch.equal(ya, yb)
    net = random_network((int(np.prod(shape)), 7, 5, 10), seed=3).to(dtype=torch.float32)
    a = measure(
        net, lazy_set, ["jacobian", "active", "predictions"] if y is not None else ["jacobian", "active"]
    )
    b = measure(
        net, whole, ["jacobian", "active", "predictions"] if y is not None else ["jacobian", "active"]
    )
    assert a.columns.keys() == b.columns.keys()
    for name in a.columns:
        np.testing.assert_array_equal(a.columns[name], b.columns[name])


# --------------------------------------------------------------------------- nothing materialised


class CountingSource(Source):
    """A source that records every read and refuses one of more than ``most`` rows."""

    def __init__(self, array: np.ndarray, most: int) -> None:
        self.inner = ArraySource(array)
        self.length, self.sample_shape, self.dtype = (
            self.inner.length,
            self.inner.sample_shape,
            self.inner.dtype,
        )
        self.most = most
        self.rows: list[np.ndarray] = []

    def _record(self, rows: np.ndarray) -> None:
        assert len(rows) <= self.most, f"{len(rows)} rows read at once"
        self.rows.append(rows)

    def read(self, start: int, stop: int) -> np.ndarray:
        self._record(np.arange(start, stop))
        return self.inner.read(start, stop)

    def take(self, rows: np.ndarray) -> np.ndarray:
        self._record(rows)
        return self.inner.take(rows)


def test_a_dataset_over_a_lazy_source_never_reads_it_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preprocess, "CHUNK", 64)
    x = RNG.normal(size=(500, 6)).astype(np.float32)
    source = CountingSource(x, most=64)
    ds = Dataset(LazyArray(source), np.arange(500) % 10, "counted", (6,), Preprocess("standard"))
    ds = ds.with_preprocess(Preprocess("standard"))  # a chunked pass for the statistics
    assert ds.preprocess.mean == pytest.approx((x.astype(np.float64).mean(),), rel=1e-12)
    net = random_network((6, 8, 10), seed=0).to(dtype=torch.float32)
    result = measure(net, ds, ["jacobian", "active"], compute=tsens_compute(batch_size=32))
    assert len(result.columns["sample"]) == 500
    assert max(len(r) for r in source.rows) == 64  # chunks of 64 for statistics, 32 per batch
    np.testing.assert_array_equal(ds.raw(499), x[499])


def tsens_compute(**kwargs: object) -> object:
    from tsens.compute import Compute

    return Compute(**kwargs)  # type: ignore[arg-type]


def test_limit_reads_only_the_chosen_rows_of_a_memory_mapped_npy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = floats((10,))
    np.save(tmp_path / "d.npy", x)
    seen: list[np.ndarray] = []
    read, take = MappedSource.read, MappedSource.take
    monkeypatch.setattr(
        MappedSource, "read", lambda self, a, b: (seen.append(np.arange(a, b)), read(self, a, b))[1]
    )
    monkeypatch.setattr(
        MappedSource, "take", lambda self, rows: (seen.append(rows.copy()), take(self, rows))[1]
    )
    ds = load_dataset(str(tmp_path / "d.npy"), limit=6, seed=3, preprocess=Preprocess("standard"))
    list(ds.batches(4))
    read_rows = np.unique(np.concatenate(seen))
    np.testing.assert_array_equal(read_rows, ds.indices)  # exactly the chosen rows, nothing else


def test_limit_decodes_only_the_row_groups_holding_chosen_rows(tmp_path: Path) -> None:
    x = floats((4,))
    pq.write_table(pa.table({"x": list_column(x)}), tmp_path / "d.parquet", row_group_size=5)  # 11 groups
    ds = load_dataset(str(tmp_path / "d.parquet"), limit=2, seed=0)
    source = ds.x.source  # type: ignore[union-attr]
    groups = set((ds.indices // 5).tolist())
    list(ds.batches(8))
    assert source.loads <= 2 * len(groups)  # once to check them when loading, once for the batches
    np.testing.assert_array_equal(np.asarray(ds.x), x[ds.indices].reshape(2, -1))


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc/self/smaps")
def test_memory_mapped_pages_are_released_after_each_read(tmp_path: Path) -> None:
    x = np.ones((2048, 4096), np.float32)  # 32 MiB
    np.save(tmp_path / "big.npy", x)
    lazy, _ = read_file(tmp_path / "big.npy")
    for start in range(0, len(lazy), 256):
        assert lazy[start : start + 256].sum() == 256 * 4096

    def mapped_rss_kb() -> int:
        lines = Path("/proc/self/smaps").read_text().splitlines()
        total, inside = 0, False
        for line in lines:
            if line and not line[0].isupper():  # a mapping's header line
                inside = line.endswith(str(tmp_path / "big.npy"))
            elif inside and line.startswith("Rss:"):
                total += int(line.split()[1])
        return total

    assert mapped_rss_kb() < 1024  # not 32 MiB: every page was handed back after its read


# --------------------------------------------------------------------------- statistics


def test_chunked_moments_equal_the_whole_array_ones() -> None:
    values = 1e4 + RNG.normal(size=(1000, 37))  # a large mean: the naive sum of squares would lose digits
    for size in (1, 7, 64, 1000):
        chunks = (torch.from_numpy(values[i : i + size]) for i in range(0, len(values), size))
        n, mean, m2 = chunked_moments(chunks)
        assert n == values.size
        assert mean == pytest.approx(values.mean(), rel=1e-14)
        assert m2 / n == pytest.approx(values.var(), rel=1e-12)
    assert chunked_moments([]) == (0, 0.0, 0.0)


@pytest.mark.parametrize("chunk", [1, 5, 64, 4096])
def test_standard_statistics_in_chunks_equal_whole_array_ones(
    monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(preprocess, "CHUNK", chunk)
    raw = RNG.integers(0, 256, size=(41, 3, 8, 8), dtype=np.uint8)
    p = Preprocess("standard", crop=6).resolved(raw, (3, 8, 8))
    seen = raw[:, :, 1:7, 1:7].astype(np.float64) / 255.0
    assert p.mean[0] == pytest.approx(seen.mean(), rel=1e-12)
    assert p.std[0] == pytest.approx(seen.std(), rel=1e-12)
    floats32 = (5.0 + RNG.normal(size=(41, 13))).astype(np.float32)
    lazy = LazyArray(ArraySource(floats32))
    q = Preprocess("standard").resolved(lazy, (13,))  # type: ignore[arg-type]
    assert q.mean[0] == pytest.approx(floats32.astype(np.float64).mean(), rel=1e-12)
    assert q.std[0] == pytest.approx(floats32.astype(np.float64).std(), rel=1e-12)


def test_scans_of_wide_samples_take_fewer_rows() -> None:
    assert preprocess.chunk_rows((6,)) == preprocess.CHUNK
    wide = preprocess.chunk_rows((3, 32, 32))
    assert wide * 3072 * 8 <= preprocess.CHUNK_BYTES < (wide + 1) * 3072 * 8
    assert preprocess.chunk_rows((10**9,)) == 1


# --------------------------------------------------------------------------- the input cache


def counted_set(n: int = 40, d: int = 5) -> tuple[Dataset, CountingSource]:
    source = CountingSource(RNG.normal(size=(n, d)).astype(np.float32), most=n)
    return Dataset(LazyArray(source), None, "counted", (d,), Preprocess()), source


def test_input_cache_keeps_to_its_cap() -> None:
    ds, source = counted_set()
    size = 40 * 5 * 4  # float32 inputs
    small = InputCache(max_bytes=size - 1)
    first = small.batches(ds, 16, torch.device("cpu"), torch.float32)
    assert not isinstance(first, list)  # streamed
    assert sum(len(x) for x, _ in first) == 40 and small.used == 0
    reads = len(source.rows)
    list(small.batches(ds, 16, torch.device("cpu"), torch.float32))
    assert len(source.rows) > reads  # read again: nothing was kept
    fits = InputCache(max_bytes=size)
    kept = fits.batches(ds, 16, torch.device("cpu"), torch.float32)
    assert isinstance(kept, list) and fits.used == size
    reads = len(source.rows)
    assert fits.batches(ds, 16, torch.device("cpu"), torch.float32) is kept
    assert len(source.rows) == reads  # served from memory
    other, _ = counted_set()
    streamed = fits.batches(other, 16, torch.device("cpu"), torch.float32)
    assert not isinstance(streamed, list) and fits.used == size  # no room left: streamed


def test_default_cache_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    assert 0 < InputCache().max_bytes <= 1 << 30
    psutil = pytest.importorskip("psutil")

    class Short:
        available = 400 << 20

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Short())
    assert default_cache_bytes() == 100 << 20  # a quarter of what is available
    monkeypatch.setitem(sys.modules, "psutil", None)  # without psutil: os.sysconf's free pages
    assert 0 <= default_cache_bytes() <= 1 << 30
