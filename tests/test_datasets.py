"""Data set loading and preprocessing (tsens.datasets); every file is written into tmp_path."""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import struct
import sys
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.numpy import save_file

from tsens.datasets import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    READERS,
    Dataset,
    Preprocess,
    available_datasets,
    load_dataset,
    resolve_preprocess,
)
from tsens.errors import Note, TsensError

RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep ~/.cache/tsens and $TSENS_DATA out of the tests."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TSENS_DATA", raising=False)


def flat(ds: Dataset, dtype: torch.dtype = torch.float64, batch_size: int = 7) -> np.ndarray:
    """All preprocessed inputs of ``ds`` as one array (through small batches)."""
    return torch.cat([xb for xb, _ in ds.batches(batch_size, dtype=dtype)]).numpy()


def labels(ds: Dataset) -> np.ndarray:
    return torch.cat([yb for _, yb in ds.batches(5)]).numpy()


def images(n: int, c: int = 3, h: int = 32, w: int = 32) -> np.ndarray:
    return RNG.integers(0, 256, size=(n, c, h, w), dtype=np.uint8)


# --------------------------------------------------------------------------- writers


def write_cifar(
    path: Path, x: np.ndarray, y: np.ndarray, *, key: bytes = b"labels", protocol: int = 2
) -> None:
    batch = {b"batch_label": b"test", b"data": x.reshape(len(x), -1), key: [int(v) for v in y]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(batch, protocol=protocol))


def idx_bytes(arr: np.ndarray) -> bytes:
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.float32): 0x0D}[arr.dtype]
    header = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(directory: Path, prefix: str, x: np.ndarray, y: np.ndarray, *, gz: bool) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    pack = gzip.compress if gz else (lambda b: b)
    images_path = directory / f"{prefix}-images-idx3-ubyte{suffix}"
    images_path.write_bytes(pack(idx_bytes(x)))
    (directory / f"{prefix}-labels-idx1-ubyte{suffix}").write_bytes(pack(idx_bytes(y.astype(np.uint8))))
    return images_path


# --------------------------------------------------------------------------- Preprocess


def test_preprocess_json_roundtrip_and_metadata() -> None:
    p = Preprocess("standard", mean=[0.5], std=(0.25,), crop=24)
    assert p.mean == (0.5,) and p.std == (0.25,)
    back = Preprocess.from_metadata({"tsens.preprocess": p.to_json()})
    assert back == p
    assert Preprocess.from_metadata({"epoch": "3"}) is None
    assert Preprocess.from_metadata({"tsens.preprocess": '{"normalize": "mnist"}'}) == Preprocess("mnist")
    scalar = Preprocess.from_metadata({"tsens.preprocess": '{"mean": 0.1, "std": 0.2}'})
    assert scalar == Preprocess(mean=(0.1,), std=(0.2,))


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"normalise": "none"}', "unknown keys"),
        ('{"normalize": "zca"}', "normalize 'zca': expected one of"),
        ('{"mean": "a", "std": 1}', "mean must be a number"),
        ('{"crop": 0}', "crop must be a positive integer"),
    ],
)
def test_preprocess_bad_metadata(raw: str, fragment: str) -> None:
    with pytest.raises(TsensError) as err:
        Preprocess.from_metadata({"tsens.preprocess": raw})
    message = str(err.value)
    assert message.startswith("checkpoint: metadata 'tsens.preprocess'")  # the default `where`
    assert fragment in message
    # the names are metadata keys, not the caller's parameters: no backticks for the CLI to rewrite
    assert "`" not in message and "--" not in message
    with pytest.raises(TsensError) as err:
        Preprocess.from_metadata({"tsens.preprocess": raw}, "run/ckpt.safetensors")
    assert str(err.value).startswith("run/ckpt.safetensors: metadata 'tsens.preprocess'")
    assert fragment in str(err.value)
    with pytest.raises(TsensError, match=r"^b\.pt: metadata 'tsens\.preprocess'"):
        resolve_preprocess(Preprocess(), {"tsens.preprocess": raw}, "b.pt")


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"normalize": "zca"}, "`normalize` 'zca': expected one of none, standard, cifar10, mnist"),
        ({"mean": (0.5,)}, "`mean` and `std` must be given together"),
        (
            {"normalize": "cifar10", "mean": (0.5,), "std": (0.2,)},
            "fixes the mean and std; do not also give `mean`/`std`",
        ),
        ({"mean": (0.5, 0.5), "std": (0.2,)}, "`mean` has 2 values but `std` has 1"),
        ({"mean": (0.5,), "std": (0.0,)}, "`std` must be positive finite numbers"),
        ({"mean": (float("nan"),), "std": (1.0,)}, "`mean` must be finite numbers"),
        ({"mean": "a", "std": 1.0}, "`mean` must be a number or a list of numbers, got 'a'"),
        ({"crop": 0}, "`crop` must be a positive integer (pixels), got 0"),
        ({"crop": True}, "`crop` must be a positive integer (pixels), got True"),
    ],
)
def test_preprocess_validation(kwargs: dict, fragment: str) -> None:
    with pytest.raises(TsensError) as err:
        Preprocess(**kwargs)
    assert fragment in str(err.value)
    assert "--" not in str(err.value)  # library messages name parameters, not CLI options


def test_resolve_preprocess_prefers_checkpoint_metadata() -> None:
    cli = Preprocess("mnist")
    recorded = Preprocess("standard", mean=(0.3,), std=(0.4,))
    assert resolve_preprocess(cli, {"tsens.preprocess": recorded.to_json()}) == recorded
    assert resolve_preprocess(cli, {}) == cli


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize(("xkey", "ykey"), [("x", "y"), ("X", "Y"), ("data", "labels"), ("data", "targets")])
def test_npz_key_variants(tmp_path: Path, xkey: str, ykey: str) -> None:
    x = RNG.normal(size=(10, 5)).astype(np.float32)
    y = np.arange(10) % 3
    np.savez(tmp_path / "d.npz", **{xkey: x, ykey: y})
    ds = load_dataset(str(tmp_path / "d.npz"))
    assert ds.sample_shape == (5,) and ds.dim == 5 and ds.num_classes == 3
    np.testing.assert_array_equal(flat(ds), x.astype(np.float64))
    np.testing.assert_array_equal(labels(ds), y)
    assert labels(ds).dtype == np.int64


def test_npz_without_inputs_key(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", features=np.zeros((3, 2)))
    with pytest.raises(TsensError, match=r"d\.npz: no inputs array; expected one of x, X, data"):
        load_dataset(str(tmp_path / "d.npz"))


def test_npy_inputs_only(tmp_path: Path) -> None:
    x = RNG.integers(0, 256, size=(6, 1, 4, 4), dtype=np.uint8)
    np.save(tmp_path / "d.npy", x)
    ds = load_dataset(str(tmp_path / "d.npy"))
    assert ds.y is None and ds.num_classes is None and ds.sample_shape == (1, 4, 4)
    np.testing.assert_allclose(flat(ds), x.reshape(6, -1) / 255.0)
    assert all(yb is None for _, yb in ds.batches(4))


def test_npy_object_array_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "d.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(TsensError, match="allow_pickle=False"):
        load_dataset(str(tmp_path / "d.npy"))


def test_three_dimensional_arrays_get_a_channel_axis(tmp_path: Path) -> None:
    np.save(tmp_path / "d.npy", np.zeros((2, 28, 28), np.float32))
    assert load_dataset(str(tmp_path / "d.npy")).sample_shape == (1, 28, 28)


def test_safetensors_x_and_y(tmp_path: Path) -> None:
    x = RNG.normal(size=(8, 3)).astype(np.float32)
    y = np.arange(8, dtype=np.int64) % 2
    save_file({"x": x, "y": y}, str(tmp_path / "d.safetensors"))
    ds = load_dataset(str(tmp_path / "d.safetensors"))
    np.testing.assert_array_equal(flat(ds), x.astype(np.float64))
    np.testing.assert_array_equal(labels(ds), y)
    save_file({"x": x}, str(tmp_path / "u.safetensors"))
    assert load_dataset(str(tmp_path / "u.safetensors")).y is None
    save_file({"inputs": x}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(TsensError, match=r"bad\.safetensors: no tensor 'x'"):
        load_dataset(str(tmp_path / "bad.safetensors"))


def test_parquet_feature_columns(tmp_path: Path) -> None:
    x = RNG.normal(size=(9, 3))
    table = pa.table({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "label": np.arange(9) % 4})
    pq.write_table(table, tmp_path / "d.parquet")
    ds = load_dataset(str(tmp_path / "d.parquet"))
    np.testing.assert_array_equal(flat(ds), x)
    np.testing.assert_array_equal(labels(ds), np.arange(9) % 4)


def test_parquet_list_column_nested(tmp_path: Path) -> None:
    x = RNG.integers(0, 256, size=(5, 1, 3, 3), dtype=np.uint8)
    table = pa.table({"pixels": x[:, 0].tolist(), "y": [0, 1, 2, 3, 4]})
    pq.write_table(table, tmp_path / "d.parquet")
    ds = load_dataset(str(tmp_path / "d.parquet"))
    assert ds.dim == 9
    np.testing.assert_array_equal(labels(ds), np.arange(5))
    np.testing.assert_allclose(flat(ds), x.reshape(5, -1).astype(np.float64), rtol=0)


def test_parquet_ragged_list_and_text_columns_refused(tmp_path: Path) -> None:
    pq.write_table(pa.table({"v": [[1.0, 2.0], [3.0]]}), tmp_path / "ragged.parquet")
    with pytest.raises(TsensError, match="different lengths"):
        load_dataset(str(tmp_path / "ragged.parquet"))
    pq.write_table(pa.table({"a": [1.0, 2.0], "name": ["p", "q"]}), tmp_path / "text.parquet")
    with pytest.raises(TsensError, match=r"columns \['name'\] are not numeric"):
        load_dataset(str(tmp_path / "text.parquet"))


@pytest.mark.parametrize("kind", ["arrow-file", "arrow-stream", "feather"])
def test_arrow_and_feather(tmp_path: Path, kind: str) -> None:
    x = RNG.normal(size=(4, 2))
    table = pa.table({"f0": x[:, 0], "f1": x[:, 1], "target": [1, 0, 1, 0]})
    if kind == "feather":
        path = tmp_path / "d.feather"
        feather.write_feather(table, path)
    else:
        path = tmp_path / "d.arrow"
        opener = pa.ipc.new_file if kind == "arrow-file" else pa.ipc.new_stream
        with pa.OSFile(str(path), "wb") as sink, opener(sink, table.schema) as writer:
            writer.write_table(table)
    ds = load_dataset(str(path))
    np.testing.assert_array_equal(flat(ds), x)
    np.testing.assert_array_equal(labels(ds), [1, 0, 1, 0])


def png_table(x: np.ndarray, y: np.ndarray) -> pa.Table:
    from PIL import Image

    encoded = []
    for img in x:
        buf = io.BytesIO()
        pixels = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
        Image.fromarray(pixels).save(buf, format="PNG")
        encoded.append({"bytes": buf.getvalue(), "path": None})
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    return pa.table({"image": pa.array(encoded, type=image_type), "label": y})


@pytest.mark.parametrize("channels", [1, 3])
def test_parquet_hf_image_column(tmp_path: Path, channels: int) -> None:
    pytest.importorskip("PIL")
    x = images(4, c=channels, h=6, w=5)
    pq.write_table(png_table(x, np.array([3, 1, 4, 1])), tmp_path / "d.parquet")
    ds = load_dataset(str(tmp_path / "d.parquet"))
    assert ds.sample_shape == (channels, 6, 5)
    np.testing.assert_array_equal(ds.x, x)
    np.testing.assert_array_equal(labels(ds), [3, 1, 4, 1])


def test_image_column_without_pillow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("PIL")
    pq.write_table(png_table(images(2, c=1, h=4, w=4), np.array([0, 1])), tmp_path / "d.parquet")
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(TsensError, match="column 'image' holds encoded images.*pip install pillow"):
        load_dataset(str(tmp_path / "d.parquet"))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batch_file(tmp_path: Path, protocol: int) -> None:
    x = images(5)
    y = np.array([0, 9, 3, 3, 1])
    write_cifar(tmp_path / "data_batch_1", x, y, protocol=protocol)
    ds = load_dataset(str(tmp_path / "data_batch_1"))
    assert ds.sample_shape == (3, 32, 32) and ds.dim == 3072 and ds.x.dtype == np.uint8
    np.testing.assert_array_equal(ds.x, x)
    np.testing.assert_array_equal(labels(ds), y)


def test_cifar_batch_with_numpy1_global_names(tmp_path: Path) -> None:
    """The real CIFAR files name ``numpy.core.multiarray._reconstruct`` (numpy 1.x)."""
    x = images(2)
    write_cifar(tmp_path / "test_batch", x, np.array([4, 2]))
    payload = (tmp_path / "test_batch").read_bytes()
    assert b"numpy._core.multiarray" in payload
    (tmp_path / "test_batch").write_bytes(
        payload.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    )
    np.testing.assert_array_equal(load_dataset(str(tmp_path / "test_batch")).x, x)


def test_cifar100_fine_labels(tmp_path: Path) -> None:
    write_cifar(tmp_path / "train", images(3), np.array([99, 0, 42]), key=b"fine_labels")
    np.testing.assert_array_equal(labels(load_dataset(str(tmp_path / "train"))), [99, 0, 42])


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


class _EvalEvil:
    def __reduce__(self) -> tuple:
        return (eval, ("__import__('os').getcwd()",))


def test_malicious_pickle_refused_and_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": _Evil(marker), b"labels": [0]}, protocol=2))
    with pytest.raises(TsensError, match=r"data_batch_1: refused to unpickle global (posix|os|nt)\.system"):
        load_dataset(str(path))
    assert not marker.exists()
    (tmp_path / "b.pkl").write_bytes(pickle.dumps({b"data": _EvalEvil()}))
    with pytest.raises(TsensError, match=r"b\.pkl: refused to unpickle global builtins\.eval"):
        load_dataset(str(tmp_path / "b.pkl"))


def test_pickle_codecs_only_latin1(tmp_path: Path) -> None:
    # protocol 0/2 GLOBAL '_codecs encode' with another codec is refused
    payload = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R."
    (tmp_path / "c.pkl").write_bytes(payload)
    with pytest.raises(TsensError, match="refused to unpickle _codecs.encode"):
        load_dataset(str(tmp_path / "c.pkl"))


@pytest.mark.parametrize("gz", [False, True])
def test_idx_files_with_sibling_labels(tmp_path: Path, gz: bool) -> None:
    x = RNG.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    y = RNG.integers(0, 10, size=7)
    path = write_idx(tmp_path, "train", x, y, gz=gz)
    ds = load_dataset(str(path))
    assert ds.sample_shape == (1, 28, 28) and ds.dim == 784
    np.testing.assert_array_equal(ds.x[:, 0], x)
    np.testing.assert_array_equal(labels(ds), y)


def test_idx_without_labels_and_truncated(tmp_path: Path) -> None:
    x = RNG.integers(0, 256, size=(3, 4, 4), dtype=np.uint8)
    (tmp_path / "foo-images-idx3-ubyte").write_bytes(idx_bytes(x))
    assert load_dataset(str(tmp_path / "foo-images-idx3-ubyte")).y is None
    (tmp_path / "bad-images-idx3-ubyte").write_bytes(idx_bytes(x)[:-5])
    with pytest.raises(TsensError, match=r"bad-images-idx3-ubyte: IDX header promises \(3, 4, 4\)"):
        load_dataset(str(tmp_path / "bad-images-idx3-ubyte"))


# --------------------------------------------------------------------------- file errors


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(TsensError, match=r"data file '.*nope\.npz' not found"):
        load_dataset(str(tmp_path / "nope.npz"))
    with pytest.raises(TsensError, match="unknown data set 'imagenet'.*digits.*a path to"):
        load_dataset("imagenet")
    (tmp_path / "d.txt").write_text("1,2,3\n")
    with pytest.raises(TsensError, match=r"d\.txt: unknown data file format; expected \.npz"):
        load_dataset(str(tmp_path / "d.txt"))
    with pytest.raises(TsensError, match="is a directory"):
        load_dataset(str(tmp_path))


@pytest.mark.parametrize(
    ("x", "y", "fragment"),
    [
        (np.zeros((0, 3)), None, "the data set is empty"),
        (np.array([[0.0, np.nan], [1.0, 2.0]]), None, "NaN or Inf (first in sample 0)"),
        (np.array([[0.0, 1.0], [np.inf, 2.0]]), None, "NaN or Inf (first in sample 1)"),
        (np.zeros((3, 2)), np.array([0, -1, 2]), "non-negative"),
        (np.zeros((3, 2)), np.array([0.0, 1.5, 2.0]), "non-integer"),
        (np.zeros((3, 2)), np.array([0, 1]), "3 samples but 2 labels"),
        (np.zeros((3, 2)), np.eye(3), "one-hot"),
        (np.zeros(3), None, "one row per sample"),
    ],
)
def test_bad_contents(tmp_path: Path, x: np.ndarray, y: np.ndarray | None, fragment: str) -> None:
    arrays = {"x": x} if y is None else {"x": x, "y": y}
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(TsensError, match=r"bad\.npz") as err:
        load_dataset(str(tmp_path / "bad.npz"))
    assert fragment in str(err.value)


def test_integral_float_labels_accepted(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 2)), y=np.array([0.0, 2.0, 1.0]))
    assert load_dataset(str(tmp_path / "d.npz")).y.tolist() == [0, 2, 1]


# --------------------------------------------------------------------------- named data sets


def make_cifar10_tree(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for i in range(1, 6):
        x, y = images(2), RNG.integers(0, 10, size=2)
        write_cifar(directory / f"data_batch_{i}", x, y)
        xs.append(x)
        ys.append(y)
    write_cifar(directory / "test_batch", images(3), np.array([1, 2, 3]))
    return np.concatenate(xs), np.concatenate(ys)


def test_named_cifar10_torchvision_layout(tmp_path: Path) -> None:
    x, y = make_cifar10_tree(tmp_path / "root" / "cifar-10-batches-py")
    for spec in ("cifar", "CIFAR10"):
        ds = load_dataset(spec, data_root=tmp_path / "root")
        assert len(ds) == 10 and ds.num_classes == 10 and ds.spec == spec
        np.testing.assert_array_equal(ds.x, x)
        np.testing.assert_array_equal(ds.y, y)
    test = load_dataset("cifar-test", data_root=tmp_path / "root")
    assert test.y.tolist() == [1, 2, 3]


def test_named_cifar100_and_files_directly_in_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "env"
    write_cifar(root / "cifar-100-python" / "train", images(2), np.array([5, 7]), key=b"fine_labels")
    write_cifar(root / "cifar-100-python" / "test", images(1), np.array([3]), key=b"fine_labels")
    monkeypatch.setenv("TSENS_DATA", str(root))
    assert load_dataset("cifar100").y.tolist() == [5, 7]
    assert load_dataset("cifar100-test").num_classes == 100
    flat_root = tmp_path / "flat"
    make_cifar10_tree(flat_root)
    assert len(load_dataset("cifar10-test", data_root=flat_root)) == 3


@pytest.mark.parametrize(
    ("name", "sub", "gz"), [("mnist", "MNIST/raw", True), ("fashion-mnist", "FashionMNIST/raw", False)]
)
def test_named_mnist_layouts(tmp_path: Path, name: str, sub: str, gz: bool) -> None:
    x = RNG.integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / sub, "train", x, np.array([1, 2, 3, 4]), gz=gz)
    write_idx(tmp_path / sub, "t10k", x[:2], np.array([5, 6]), gz=gz)
    train = load_dataset(name, data_root=tmp_path)
    assert train.sample_shape == (1, 28, 28) and train.y.tolist() == [1, 2, 3, 4]
    assert load_dataset(f"{name}-test", data_root=tmp_path).y.tolist() == [5, 6]
    found = dict(available_datasets(tmp_path))
    assert found[name] == str(tmp_path / sub) and found["cifar10"] == "not found"
    assert found["digits"].startswith("shipped")


def test_named_mnist_files_in_root_via_home_cache(tmp_path: Path) -> None:
    cache = tmp_path / "home" / ".cache" / "tsens"
    write_idx(
        cache, "t10k", RNG.integers(0, 256, size=(2, 28, 28), dtype=np.uint8), np.array([0, 9]), gz=True
    )
    assert load_dataset("mnist-test").y.tolist() == [0, 9]


def test_missing_named_set_lists_searched_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TSENS_DATA", str(tmp_path / "env"))
    with pytest.raises(TsensError) as err:
        load_dataset("cifar", data_root=tmp_path / "root")
    message = str(err.value)
    assert message.startswith("data set 'cifar' not found")
    for directory in (
        tmp_path / "root" / "cifar-10-batches-py",
        tmp_path / "root",
        tmp_path / "env" / "cifar-10-batches-py",
        tmp_path / "env",
        tmp_path / "home" / ".cache" / "tsens",
    ):
        assert str(directory) in message
    assert "data_batch_1..5" in message and "never downloads" in message
    with pytest.raises(TsensError, match=r"t10k-images-idx3-ubyte\[\.gz\]"):
        load_dataset("fashion-mnist-test", data_root=tmp_path)


def test_incomplete_cifar_directory(tmp_path: Path) -> None:
    directory = tmp_path / "cifar-10-batches-py"
    make_cifar10_tree(directory)
    (directory / "data_batch_3").unlink()
    with pytest.raises(TsensError, match="incomplete: missing data_batch_3"):
        load_dataset("cifar10", data_root=tmp_path)


def test_shipped_data_sets() -> None:
    sizes = {
        "digits": (1297, 64),
        "digits-test": (500, 64),
        "mnist1d": (4000, 40),
        "mnist1d-test": (1000, 40),
    }
    for name, (n, dim) in sizes.items():
        ds = load_dataset(name)
        assert (len(ds), ds.dim, ds.num_classes) == (n, dim, 10)
        assert set(np.unique(ds.y)) == set(range(10))
    digits = load_dataset("digits").x
    assert digits.min() == 0.0 and digits.max() == 1.0
    np.testing.assert_array_equal(digits * 16, np.round(digits * 16))


# --------------------------------------------------------------------------- limit, crop, normalize


def npz_dataset(tmp_path: Path, x: np.ndarray, y: np.ndarray | None = None, **kwargs) -> Dataset:
    arrays = {"x": x} if y is None else {"x": x, "y": y}
    np.savez(tmp_path / "d.npz", **arrays)
    return load_dataset(str(tmp_path / "d.npz"), **kwargs)


def test_limit_and_seed(tmp_path: Path) -> None:
    x = np.arange(100, dtype=np.float32)[:, None]
    a = npz_dataset(tmp_path, x, np.arange(100) % 10, limit=10, seed=3)
    b = load_dataset(str(tmp_path / "d.npz"), limit=10, seed=3)
    c = load_dataset(str(tmp_path / "d.npz"), limit=10, seed=4)
    chosen = a.x[:, 0].astype(int)
    assert len(a) == 10 and np.array_equal(a.x, b.x) and not np.array_equal(a.x, c.x)
    assert np.all(np.diff(chosen) > 0)  # original order, no repeats
    expected = np.sort(np.random.default_rng(3).choice(100, size=10, replace=False))
    np.testing.assert_array_equal(chosen, expected)
    np.testing.assert_array_equal(a.y, expected % 10)
    with pytest.raises(TsensError, match="`limit` must be a positive number of samples, got 0"):
        load_dataset(str(tmp_path / "d.npz"), limit=0)


@pytest.mark.parametrize(("size", "crop"), [(32, 24), (9, 4), (8, 5)])
def test_centre_crop(tmp_path: Path, size: int, crop: int) -> None:
    x = images(3, h=size, w=size)
    ds = npz_dataset(tmp_path, x, preprocess=Preprocess(crop=crop))
    assert ds.dim == 3 * crop * crop
    top = int(round((size - crop) / 2))  # torchvision CenterCrop
    expected = x[:, :, top : top + crop, top : top + crop].reshape(3, -1) / 255.0
    np.testing.assert_allclose(flat(ds, batch_size=2), expected, rtol=0, atol=1e-15)


def test_crop_errors(tmp_path: Path) -> None:
    ds = npz_dataset(tmp_path, images(2, h=8, w=8))
    with pytest.raises(TsensError, match="`crop` 9 is larger than the 8×8 images of data set '.*d.npz'"):
        ds.with_preprocess(Preprocess(crop=9))
    with pytest.raises(TsensError, match=r"`crop` 4 needs image samples.*data set 'digits'.*\(64,\)"):
        load_dataset("digits", preprocess=Preprocess(crop=4))
    channels_last = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(TsensError, match="channels-last"):
        npz_dataset(tmp_path, channels_last, preprocess=Preprocess(crop=4))


def test_normalize_cifar10_per_channel(tmp_path: Path) -> None:
    x = images(4, h=6, w=6)
    ds = npz_dataset(tmp_path, x, preprocess=Preprocess("cifar10", crop=4))
    scaled = x[:, :, 1:5, 1:5].astype(np.float64) / 255.0
    mean = np.array(CIFAR10_MEAN)[None, :, None, None]
    std = np.array(CIFAR10_STD)[None, :, None, None]
    np.testing.assert_allclose(flat(ds), ((scaled - mean) / std).reshape(4, -1), rtol=1e-12)
    np.testing.assert_allclose(flat(ds, torch.float32), ((scaled - mean) / std).reshape(4, -1), atol=1e-5)


def test_normalize_mnist(tmp_path: Path) -> None:
    x = RNG.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    ds = npz_dataset(tmp_path, x, preprocess=Preprocess("mnist"))
    expected = (x.reshape(5, -1) / 255.0 - 0.1307) / 0.3081
    np.testing.assert_allclose(flat(ds), expected, rtol=1e-12)


def test_normalize_standard_computed_once(tmp_path: Path) -> None:
    x = RNG.normal(3.0, 2.0, size=(50, 6)).astype(np.float32)
    ds = npz_dataset(tmp_path, x, preprocess=Preprocess("standard"), limit=40, seed=1)
    sub = ds.x.astype(np.float64)
    assert ds.preprocess.mean == pytest.approx((sub.mean(),)) and ds.preprocess.std == pytest.approx(
        (sub.std(),)
    )
    np.testing.assert_allclose(flat(ds, batch_size=3), (sub - sub.mean()) / sub.std(), rtol=1e-10)
    recorded = Preprocess.from_metadata({"tsens.preprocess": ds.preprocess.to_json()})
    assert recorded == ds.preprocess


def test_standard_on_constant_data_refused(tmp_path: Path) -> None:
    with pytest.raises(TsensError, match="constant"):
        npz_dataset(tmp_path, np.ones((4, 2)), preprocess=Preprocess("standard"))


@pytest.mark.parametrize("normalize", ["none", "standard"])
def test_explicit_mean_std(tmp_path: Path, normalize: str) -> None:
    x = images(3, h=4, w=4)
    scalar = npz_dataset(tmp_path, x, preprocess=Preprocess(normalize, mean=(0.5,), std=(0.25,)))
    np.testing.assert_allclose(flat(scalar), (x.reshape(3, -1) / 255.0 - 0.5) / 0.25, rtol=1e-12)
    per_channel = scalar.with_preprocess(Preprocess(normalize, mean=(0.1, 0.2, 0.3), std=(1.0, 2.0, 4.0)))
    m = np.array([0.1, 0.2, 0.3])[None, :, None, None]
    s = np.array([1.0, 2.0, 4.0])[None, :, None, None]
    np.testing.assert_allclose(flat(per_channel), ((x / 255.0 - m) / s).reshape(3, -1), rtol=1e-12)


def test_per_channel_needs_matching_channels(tmp_path: Path) -> None:
    with pytest.raises(
        TsensError, match=r"`normalize` 'cifar10' needs channels-first images with 3 channels"
    ):
        load_dataset("digits", preprocess=Preprocess("cifar10"))
    ds = npz_dataset(tmp_path, images(2, c=1, h=4, w=4))
    with pytest.raises(TsensError, match="per-channel `mean`/`std` needs .* 2 channels"):
        ds.with_preprocess(Preprocess(mean=(0.1, 0.2), std=(1.0, 1.0)))


def test_check_input_dim_message() -> None:
    digits = load_dataset("digits")
    digits.check_input_dim(64, "checkpoint a.safetensors")
    with pytest.raises(TsensError) as err:
        digits.check_input_dim(784, "checkpoint a.safetensors")
    message = str(err.value)
    assert "data set 'digits' has 64 features per sample" in message
    assert "checkpoint a.safetensors expects 784" in message


def test_check_input_dim_suggests_crop(tmp_path: Path) -> None:
    ds = npz_dataset(tmp_path, images(1))
    with pytest.raises(TsensError, match=r"has 3072 features.*expects 1728 \(`crop` 24 would give 1728\)"):
        ds.check_input_dim(1728, "the network")


def test_batches_shapes_and_labels(tmp_path: Path) -> None:
    ds = npz_dataset(tmp_path, RNG.normal(size=(10, 3)), np.arange(10) % 2)
    sizes = [(len(xb), xb.dtype, yb.dtype) for xb, yb in ds.batches(4, dtype=torch.float32)]
    assert sizes == [
        (4, torch.float32, torch.int64),
        (4, torch.float32, torch.int64),
        (2, torch.float32, torch.int64),
    ]
    with pytest.raises(TsensError, match="`batch_size` must be at least 1, got 0"):
        next(ds.batches(0))


def test_unresolved_standard_is_resolved_in_batches(tmp_path: Path) -> None:
    x = RNG.normal(size=(8, 2))
    ds = Dataset(x, None, "raw", (2,), Preprocess("standard"))
    np.testing.assert_allclose(flat(ds), (x - x.mean()) / x.std(), rtol=1e-12)


def test_metadata_json_is_plain() -> None:
    obj = json.loads(Preprocess("cifar10", crop=24).to_json())
    assert obj == {"normalize": "cifar10", "mean": None, "std": None, "crop": 24}


# --------------------------------------------------------------------------- indices, limit notes


def test_indices_join_back_to_the_full_set(tmp_path: Path) -> None:
    x = RNG.normal(size=(60, 4))
    full = npz_dataset(tmp_path, x, np.arange(60) % 7)
    assert full.indices.dtype == np.int64
    np.testing.assert_array_equal(full.indices, np.arange(60))
    sub = load_dataset(str(tmp_path / "d.npz"), limit=9, seed=5)
    assert sub.indices.dtype == np.int64 and len(sub.indices) == 9
    np.testing.assert_array_equal(
        sub.indices, np.sort(np.random.default_rng(5).choice(60, size=9, replace=False))
    )
    np.testing.assert_array_equal(sub.x, x[sub.indices])
    np.testing.assert_array_equal(sub.y, sub.indices % 7)
    # with_preprocess keeps them
    np.testing.assert_array_equal(sub.with_preprocess(Preprocess("standard")).indices, sub.indices)


def test_dataset_indices_default_and_validation() -> None:
    x = np.zeros((3, 2))
    np.testing.assert_array_equal(Dataset(x, None, "m", (2,)).indices, [0, 1, 2])
    given = Dataset(x, None, "m", (2,), indices=np.array([4, 8, 9], dtype=np.int32))
    assert given.indices.dtype == np.int64 and given.indices.tolist() == [4, 8, 9]
    with pytest.raises(TsensError, match="`indices` must hold one integer index per sample"):
        Dataset(x, None, "m", (2,), indices=np.array([0, 1]))
    with pytest.raises(TsensError, match="`indices`"):
        Dataset(x, None, "m", (2,), indices=np.array([0.0, 1.0, 2.0]))


def test_limit_larger_than_the_set_is_noted(tmp_path: Path) -> None:
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    np.savez(tmp_path / "d.npz", x=x)
    with pytest.warns(Note) as record:
        ds = load_dataset(str(tmp_path / "d.npz"), limit=50)
    assert len(record) == 1
    message = str(record[0].message)
    assert "has only 6 samples" in message and "`limit` 50" in message and "all 6 are used" in message
    assert record[0].filename == __file__  # attributed to the caller of load_dataset
    np.testing.assert_array_equal(ds.x, x)
    np.testing.assert_array_equal(ds.indices, np.arange(6))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_dataset(str(tmp_path / "d.npz"), limit=6)) == 6  # exactly the size: silent


@pytest.mark.parametrize("limit", [0, -3, 2.5, True])
def test_limit_must_be_a_positive_integer(tmp_path: Path, limit: object) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 2)))
    with pytest.raises(TsensError, match="^`limit` must be a positive number of samples, got"):
        load_dataset(str(tmp_path / "d.npz"), limit=limit)


# --------------------------------------------------------------------------- raw, input, transform


def test_raw_is_the_stored_sample(tmp_path: Path) -> None:
    x = images(5, h=6, w=6)
    ds = npz_dataset(tmp_path, x, preprocess=Preprocess("cifar10", crop=4), limit=3, seed=2)
    for i in range(3):
        r = ds.raw(i)
        assert r.shape == (3, 6, 6) and r.dtype == np.uint8
        np.testing.assert_array_equal(r, x[ds.indices[i]])
    r = ds.raw(np.int64(0))
    r[...] = 0  # a copy: the data set is untouched
    np.testing.assert_array_equal(ds.x[0], x[ds.indices[0]])
    for bad in (3, -1, 1.0, True):
        with pytest.raises(TsensError, match="`i` must be a sample position 0..2"):
            ds.raw(bad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_input_equals_what_batches_yields(tmp_path: Path, dtype: torch.dtype) -> None:
    x = images(7, h=9, w=9)
    ds = npz_dataset(tmp_path, x, preprocess=Preprocess("cifar10", crop=5))
    batched = torch.cat([xb for xb, _ in ds.batches(3, dtype=dtype)])
    for i in range(len(ds)):
        one = ds.input(i, dtype=dtype)
        assert one.shape == (ds.dim,) and one.dtype == dtype
        assert torch.equal(one, batched[i])
    # and both are the formula, computed independently in numpy
    scaled = x[:, :, 2:7, 2:7] / 255.0
    m = np.array(CIFAR10_MEAN)[None, :, None, None]
    s = np.array(CIFAR10_STD)[None, :, None, None]
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    np.testing.assert_allclose(ds.input(4, dtype=dtype).numpy(), ((scaled - m) / s)[4].ravel(), atol=tol)


def shift_right(x: np.ndarray, pixels: int) -> np.ndarray:
    """Images translated ``pixels`` to the right, the uncovered columns filled with zeros."""
    out = np.zeros_like(x)
    out[..., pixels:] = x[..., :-pixels]
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_transform_of_translated_cifar_images_equals_their_batches(
    tmp_path: Path, dtype: torch.dtype
) -> None:
    x = images(6)
    moved = shift_right(x, 3)
    write_cifar(tmp_path / "orig" / "data_batch_1", x, np.arange(6))
    write_cifar(tmp_path / "moved" / "data_batch_1", moved, np.arange(6))
    p = Preprocess("cifar10", crop=24)
    ds = load_dataset(str(tmp_path / "orig" / "data_batch_1"), preprocess=p)
    as_set = load_dataset(str(tmp_path / "moved" / "data_batch_1"), preprocess=p)
    expected = flat(as_set, dtype=dtype, batch_size=4)
    got = ds.transform(moved, dtype=dtype)
    assert got.shape == (6, 3 * 24 * 24) and got.dtype == dtype
    np.testing.assert_array_equal(got.numpy(), expected)
    # a single translated sample, built from raw(i)
    one = ds.transform(shift_right(ds.raw(2), 3)[None], dtype=dtype)
    np.testing.assert_array_equal(one.numpy()[0], expected[2])
    # not vacuous: the translation changes the inputs, and the values follow the formula
    assert not np.array_equal(expected, flat(ds, dtype=dtype))
    scaled = moved[:, :, 4:28, 4:28] / 255.0
    m = np.array(CIFAR10_MEAN)[None, :, None, None]
    s = np.array(CIFAR10_STD)[None, :, None, None]
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    np.testing.assert_allclose(got.numpy(), ((scaled - m) / s).reshape(6, -1), atol=tol)


def test_transform_of_translated_float_data_with_standard_normalization(tmp_path: Path) -> None:
    x = RNG.normal(0.5, 2.0, size=(8, 1, 5, 5)).astype(np.float32)
    moved = shift_right(x, 1)
    np.save(tmp_path / "orig.npy", x)
    np.save(tmp_path / "moved.npy", moved)
    ds = load_dataset(str(tmp_path / "orig.npy"), preprocess=Preprocess("standard"))
    mean, std = x.astype(np.float64).mean(), x.astype(np.float64).std()
    assert ds.preprocess.mean == pytest.approx((mean,), rel=1e-12)
    assert ds.preprocess.std == pytest.approx((std,), rel=1e-12)
    # the translated set, normalized with the original set's statistics (as a checkpoint records them)
    as_set = load_dataset(str(tmp_path / "moved.npy"), preprocess=ds.preprocess)
    for dtype in (torch.float32, torch.float64):
        expected = flat(as_set, dtype=dtype, batch_size=3)
        np.testing.assert_array_equal(ds.transform(moved, dtype=dtype).numpy(), expected)
    np.testing.assert_allclose(
        ds.transform(moved, dtype=torch.float64).numpy(), ((moved - mean) / std).reshape(8, -1), rtol=1e-6
    )
    # its own statistics would differ: the translated set's would not reproduce transform
    own = load_dataset(str(tmp_path / "moved.npy"), preprocess=Preprocess("standard"))
    assert own.preprocess.mean != ds.preprocess.mean


def test_transform_resolves_standard_of_a_hand_built_dataset() -> None:
    x = RNG.normal(size=(10, 3))
    ds = Dataset(x, None, "raw", (3,), Preprocess("standard"))
    got = ds.transform(x[:4], dtype=torch.float64).numpy()
    np.testing.assert_allclose(got, (x[:4] - x.mean()) / x.std(), rtol=1e-12)
    np.testing.assert_array_equal(ds.input(9, dtype=torch.float64).numpy(), flat(ds)[9])


def test_transform_and_apply_refuse_what_they_cannot_transform(tmp_path: Path) -> None:
    ds = npz_dataset(tmp_path, images(2, h=4, w=4), preprocess=Preprocess("cifar10"))
    with pytest.raises(TsensError, match="`raw` has dtype float64 but data set .* stores uint8"):
        ds.transform(ds.x.astype(np.float64))
    with pytest.raises(TsensError, match=r"`raw` must be a batch of samples of shape \(3, 4, 4\)"):
        ds.transform(ds.raw(0))  # one sample, no batch axis
    with pytest.raises(TsensError, match="`normalize` 'standard' without `mean`/`std`"):
        Preprocess("standard").apply(np.zeros((2, 3)), (3,))
    with pytest.raises(TsensError, match="`raw` must hold numbers"):
        Preprocess().apply(np.array([["a"]]), (1,))
    with pytest.raises(TsensError, match="`crop` 5 is larger than the 4×4 images of the input"):
        Preprocess(crop=5).apply(images(1, h=4, w=4), (3, 4, 4))


def test_apply_on_any_raw_array() -> None:
    """Preprocess.apply alone: uint8 scaled, other dtypes as stored, per-channel stats."""
    p = Preprocess(mean=(0.5, 1.0), std=(2.0, 4.0), crop=2)
    raw = np.arange(2 * 2 * 3 * 3, dtype=np.uint8).reshape(2, 2, 3, 3)
    got = p.apply(raw, (2, 3, 3), dtype=torch.float64).numpy()
    # torchvision offsets for 3 -> 2: top = left = round(0.5) = 0
    cropped = raw[:, :, :2, :2] / 255.0
    want = (cropped - np.array([0.5, 1.0])[None, :, None, None]) / np.array([2.0, 4.0])[None, :, None, None]
    np.testing.assert_allclose(got, want.reshape(2, -1), rtol=1e-15)
    as_int = p.apply(raw.astype(np.int16), (2, 3, 3), dtype=torch.float64).numpy()
    want_int = (raw[:, :, :2, :2] - np.array([0.5, 1.0])[None, :, None, None]) / np.array([2.0, 4.0])[
        None, :, None, None
    ]
    np.testing.assert_allclose(as_int, want_int.reshape(2, -1), rtol=1e-15)


def test_standard_statistics_see_the_crop_and_uint8_scaling(tmp_path: Path) -> None:
    x = images(5, h=8, w=8)
    ds = npz_dataset(tmp_path, x, preprocess=Preprocess("standard", crop=4))
    seen = x[:, :, 2:6, 2:6].astype(np.float64) / 255.0
    assert ds.preprocess.mean == pytest.approx((seen.mean(),), rel=1e-12)
    assert ds.preprocess.std == pytest.approx((seen.std(),), rel=1e-12)
    np.testing.assert_allclose(flat(ds), ((seen - seen.mean()) / seen.std()).reshape(5, -1), rtol=1e-10)


# --------------------------------------------------------------------------- readers


def test_text_file_named_npz_or_npy(tmp_path: Path) -> None:
    (tmp_path / "x.npz").write_text("1,2,3\n4,5,6\n")
    with pytest.raises(TsensError) as err:
        load_dataset(str(tmp_path / "x.npz"))
    assert str(err.value) == f"{tmp_path / 'x.npz'}: not a valid .npz file (expected a NumPy zip archive)"
    (tmp_path / "x.npy").write_text("1,2,3\n")
    with pytest.raises(TsensError) as err:
        load_dataset(str(tmp_path / "x.npy"))
    assert str(err.value) == f"{tmp_path / 'x.npy'}: not a valid .npy file (expected a NumPy array file)"
    assert "allow_pickle" not in str(err.value)


def test_npy_and_npz_swapped_say_so(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros((2, 2)))
    (tmp_path / "a.npy").rename(tmp_path / "a.npz")
    with pytest.raises(TsensError, match=r"a\.npz: not a valid \.npz file .*it is a \.npy file"):
        load_dataset(str(tmp_path / "a.npz"))
    np.savez(tmp_path / "b.npz", x=np.zeros((2, 2)))
    (tmp_path / "b.npz").rename(tmp_path / "b.npy")
    with pytest.raises(TsensError, match=r"b\.npy: not a valid \.npy file .*zip archive"):
        load_dataset(str(tmp_path / "b.npy"))


def test_reader_table_by_suffix_then_content(tmp_path: Path) -> None:
    assert READERS[".npz"] is not READERS[".npy"]
    assert {".npz", ".npy", ".parquet", ".arrow", ".feather", ".safetensors"} <= set(READERS)
    # the suffix decides (case-insensitive) ...
    with (tmp_path / "UPPER.NPZ").open("wb") as f:  # a path would get ".npz" appended
        np.savez(f, x=np.ones((2, 3)))
    assert load_dataset(str(tmp_path / "UPPER.NPZ")).sample_shape == (3,)
    write_cifar(tmp_path / "pickle.npy", images(1), np.array([0]))
    with pytest.raises(TsensError, match=r"pickle\.npy: not a valid \.npy file"):
        load_dataset(str(tmp_path / "pickle.npy"))
    # ... and the content, for unknown suffixes
    write_cifar(tmp_path / "batch.bin", images(2), np.array([3, 4]))
    assert load_dataset(str(tmp_path / "batch.bin")).y.tolist() == [3, 4]
    digits = RNG.integers(0, 256, size=(3, 5, 5), dtype=np.uint8)
    (tmp_path / "pixels.dat").write_bytes(idx_bytes(digits))
    np.testing.assert_array_equal(load_dataset(str(tmp_path / "pixels.dat")).x[:, 0], digits)
    (tmp_path / "pixels.dat.gz").write_bytes(gzip.compress(idx_bytes(digits)))
    np.testing.assert_array_equal(load_dataset(str(tmp_path / "pixels.dat.gz")).x[:, 0], digits)
    (tmp_path / "junk-images-idx3-ubyte").write_bytes(b"hello")
    with pytest.raises(TsensError, match="not an IDX file"):
        load_dataset(str(tmp_path / "junk-images-idx3-ubyte"))


def test_missing_named_set_names_the_data_root_parameter(tmp_path: Path) -> None:
    with pytest.raises(TsensError) as err:
        load_dataset("mnist", data_root=tmp_path)
    assert "pass `data_root`" in str(err.value) and "--" not in str(err.value)
