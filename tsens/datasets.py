"""Data sets: finding, loading, subsampling and preprocessing inputs (SPEC §3).

A data set spec is either a name or a path.

Names (case-insensitive, ``_`` = ``-``): ``digits``, ``digits-test``, ``mnist1d``,
``mnist1d-test`` ship inside the package (``tsens/data/``, see ``scripts/make_datasets.py``);
``cifar``/``cifar10``, ``cifar-test``/``cifar10-test``, ``cifar100``, ``cifar100-test``,
``mnist``, ``mnist-test``, ``fashion-mnist``, ``fashion-mnist-test`` are looked up under the
``data_root`` argument, then ``$TSENS_DATA``, then ``~/.cache/tsens``, in torchvision's layouts
(``cifar-10-batches-py/``, ``cifar-100-python/``, ``MNIST/raw/``, ``FashionMNIST/raw/``, IDX
files with or without ``.gz``) or with the files directly in the root. Nothing is ever
downloaded. A file that happens to be called like a name is read as ``./mnist``.

Files: ``.npz`` (inputs ``x``/``X``/``data``, labels ``y``/``Y``/``labels``/``targets``),
``.npy`` (inputs only, memory-mapped, ``allow_pickle=False``), ``.parquet``/``.arrow``/
``.feather`` (numeric feature columns, or one list column, or one Hugging Face image column
``{bytes, path}`` decoded with Pillow; labels from a column ``label``/``labels``/``y``/
``target``/``fine_label``), ``.safetensors`` (tensors ``x`` and optional ``y``), CIFAR python
batch files (pickles read by an unpickler that refuses every global except numpy's array
reconstruction) and MNIST IDX files (``*-images-idx3-ubyte[.gz]``, labels from the sibling
``*-labels-idx1-ubyte[.gz]``).

Samples keep their stored dtype and shape (images channels-first, ``C × H × W``; an ``N × H × W``
array is read as one channel); the shipped digits (pixel values 0..16) are scaled by 1/16 into
[0, 1] on loading. :meth:`Dataset.batches` preprocesses batch by batch, in this order:

1. centre crop to ``crop × crop`` (images only; the offsets of torchvision's ``CenterCrop``);
2. flatten (``C, H, W`` order);
3. uint8 values are divided by 255 into [0, 1] (other dtypes are used as stored);
4. normalize: ``cifar10`` = per-channel mean (0.4914, 0.4822, 0.4465), std (0.2470, 0.2435,
   0.2616); ``mnist`` = 0.1307 / 0.3081; explicit ``mean``/``std`` (one value, or one per channel
   of channels-first images) are applied whatever ``normalize`` says; ``standard`` without them
   z-scores with the scalar mean and std of the whole (limited) data set, computed once. Those
   statistics differ between a training and a test set, so the test set is then not
   transformed like the training set: a checkpoint's ``tsens.preprocess`` metadata should carry
   the training mean/std explicitly (and wins over the command line, see
   :func:`resolve_preprocess`). The statistics used are stored in ``Dataset.preprocess``.

No normalization is ever guessed: the default is none.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import pickle
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .errors import TsensError

try:  # numpy >= 2 (and 1.26, which has the alias)
    from numpy._core import multiarray as _np_multiarray
    from numpy._core import numeric as _np_numeric
except ImportError:  # pragma: no cover - older numpy
    from numpy.core import multiarray as _np_multiarray
    from numpy.core import numeric as _np_numeric

PREPROCESS_KEY = "tsens.preprocess"
NORMALIZATIONS = ("none", "standard", "cifar10", "mnist")
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)

SHIPPED = ("digits", "digits-test", "mnist1d", "mnist1d-test")
NAMED = (
    *SHIPPED,
    "cifar10",
    "cifar10-test",
    "cifar100",
    "cifar100-test",
    "mnist",
    "mnist-test",
    "fashion-mnist",
    "fashion-mnist-test",
)
_ALIASES = {
    "cifar": "cifar10",
    "cifar-test": "cifar10-test",
    "fashionmnist": "fashion-mnist",
    "fashionmnist-test": "fashion-mnist-test",
}
FILE_FORMATS = (
    ".npz, .npy, .parquet, .arrow, .feather, .safetensors, a CIFAR batch file (pickle) "
    "or an MNIST IDX file (*-images-idx3-ubyte[.gz])"
)
_DATA_DIR = Path(__file__).resolve().parent / "data"
_INPUT_KEYS = ("x", "X", "data")
_LABEL_KEYS = ("y", "Y", "labels", "targets")
_LABEL_COLUMNS = ("label", "labels", "y", "target", "fine_label")
_CHUNK = 4096


# --------------------------------------------------------------------------- preprocessing


def _floats(value: object, what: str) -> tuple[float, ...] | None:
    """A number or a sequence of numbers as a tuple of floats (None stays None)."""
    if value is None:
        return None
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise TsensError(f"{what} must be a number or a list of numbers, got {value!r}")
    return tuple(float(v) for v in values)


@dataclass(frozen=True)
class Preprocess:
    """How raw samples become network inputs: optional centre crop, then normalization."""

    normalize: str = "none"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    crop: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", _floats(self.mean, "--mean"))
        object.__setattr__(self, "std", _floats(self.std, "--std"))
        if self.normalize not in NORMALIZATIONS:
            raise TsensError(f"--normalize {self.normalize!r}: expected one of {', '.join(NORMALIZATIONS)}")
        if (self.mean is None) != (self.std is None):
            raise TsensError("--mean and --std must be given together")
        if self.mean is not None and self.std is not None:
            if self.normalize in ("cifar10", "mnist"):
                raise TsensError(
                    f"--normalize {self.normalize} fixes the mean and std; do not also give --mean/--std"
                )
            if len(self.mean) != len(self.std):
                raise TsensError(
                    f"--mean has {len(self.mean)} values but --std has {len(self.std)}; "
                    "give one value, or one per channel, to both"
                )
            if not all(math.isfinite(m) for m in self.mean):
                raise TsensError(f"--mean must be finite numbers, got {self.mean}")
            if not all(math.isfinite(s) and s > 0 for s in self.std):
                raise TsensError(f"--std must be positive finite numbers, got {self.std}")
        if self.crop is not None and (
            not isinstance(self.crop, int) or isinstance(self.crop, bool) or self.crop < 1
        ):
            raise TsensError(f"--crop must be a positive integer (pixels), got {self.crop!r}")

    @property
    def channel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """The (mean, std) applied, or None for no normalization or unresolved ``standard``."""
        if self.mean is not None and self.std is not None:
            return self.mean, self.std
        if self.normalize == "cifar10":
            return CIFAR10_MEAN, CIFAR10_STD
        if self.normalize == "mnist":
            return MNIST_MEAN, MNIST_STD
        return None

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> Preprocess | None:
        """The preprocessing recorded under ``tsens.preprocess`` in checkpoint metadata, or None."""
        raw = metadata.get(PREPROCESS_KEY)
        if raw is None:
            return None
        where = f"checkpoint metadata {PREPROCESS_KEY!r}"
        try:
            obj = json.loads(raw)
        except (TypeError, ValueError) as exc:
            raise TsensError(f"{where} is not valid JSON ({exc}): {raw!r}") from None
        if not isinstance(obj, dict):
            raise TsensError(f"{where} must be a JSON object with keys normalize/mean/std/crop, got {raw!r}")
        unknown = sorted(set(obj) - {"normalize", "mean", "std", "crop"})
        if unknown:
            raise TsensError(f"{where} has unknown keys {unknown}; expected normalize, mean, std, crop")
        try:
            return cls(
                normalize=obj.get("normalize", "none"),
                mean=obj.get("mean"),
                std=obj.get("std"),
                crop=obj.get("crop"),
            )
        except TsensError as exc:
            raise TsensError(f"{where}: {exc}") from None

    def to_json(self) -> str:
        """The JSON object stored as ``tsens.preprocess`` (inverse of :meth:`from_metadata`)."""
        return json.dumps(
            {
                "normalize": self.normalize,
                "mean": None if self.mean is None else list(self.mean),
                "std": None if self.std is None else list(self.std),
                "crop": self.crop,
            }
        )


def resolve_preprocess(cli: Preprocess, metadata: dict[str, str]) -> Preprocess:
    """The checkpoint's recorded preprocessing when it has one, else the command line's."""
    recorded = Preprocess.from_metadata(metadata)
    return cli if recorded is None else recorded


def _cropped_shape(sample_shape: tuple[int, ...], crop: int | None, spec: str) -> tuple[int, ...]:
    if crop is None:
        return sample_shape
    if len(sample_shape) != 3:
        raise TsensError(
            f"--crop {crop} needs image samples (C×H×W); data set {spec!r} has samples of shape "
            f"{sample_shape}"
        )
    c, h, w = sample_shape
    if crop > h or crop > w:
        raise TsensError(f"--crop {crop} is larger than the {h}×{w} images of data set {spec!r}")
    return (c, crop, crop)


def _looks_channels_last(sample_shape: tuple[int, ...]) -> bool:
    return len(sample_shape) == 3 and sample_shape[0] > 4 and sample_shape[-1] in (1, 3, 4)


def _check_preprocess(p: Preprocess, sample_shape: tuple[int, ...], spec: str) -> None:
    """Raise TsensError when ``p`` cannot apply to samples of ``sample_shape``."""
    if p.crop is not None and _looks_channels_last(sample_shape):
        raise TsensError(
            f"--crop needs channels-first images (C×H×W); data set {spec!r} has samples of shape "
            f"{sample_shape}, which looks channels-last: transpose the array"
        )
    _cropped_shape(sample_shape, p.crop, spec)
    stats = p.channel_stats
    if stats is None or len(stats[0]) == 1:
        return
    option = "--normalize cifar10" if p.normalize == "cifar10" else "a per-channel --mean/--std"
    n = len(stats[0])
    if len(sample_shape) != 3 or sample_shape[0] != n:
        hint = " (it looks channels-last: transpose the array)" if _looks_channels_last(sample_shape) else ""
        raise TsensError(
            f"{option} needs channels-first images with {n} channels (C×H×W); data set {spec!r} has "
            f"samples of shape {sample_shape}{hint}"
        )


def _scaled_chunks(x: np.ndarray, sample_shape: tuple[int, ...], crop: int | None) -> Iterator[np.ndarray]:
    """Cropped, flattened, [0, 1]-scaled (uint8) float64 rows, a chunk at a time."""
    for start in range(0, len(x), _CHUNK):
        raw = _crop(x[start : start + _CHUNK], sample_shape, crop)
        rows = raw.reshape(len(raw), -1).astype(np.float64)
        yield rows / 255.0 if x.dtype == np.uint8 else rows


def _crop(raw: np.ndarray, sample_shape: tuple[int, ...], crop: int | None) -> np.ndarray:
    """Centre crop of a batch of C×H×W samples (torchvision's CenterCrop offsets)."""
    if crop is None:
        return raw
    _, h, w = sample_shape
    top = int(round((h - crop) / 2.0))
    left = int(round((w - crop) / 2.0))
    return raw[:, :, top : top + crop, left : left + crop]


# --------------------------------------------------------------------------- data set


@dataclass(frozen=True, eq=False)
class Dataset:
    """Raw samples and labels plus the preprocessing that turns them into network inputs."""

    x: np.ndarray = field(repr=False)
    y: np.ndarray | None = field(repr=False)
    spec: str
    sample_shape: tuple[int, ...]
    preprocess: Preprocess = Preprocess()
    classes: int | None = None  # known class count of a named set; else taken from the labels

    def __len__(self) -> int:
        return len(self.x)

    @property
    def dim(self) -> int:
        """Flattened input dimension after preprocessing."""
        return math.prod(_cropped_shape(self.sample_shape, self.preprocess.crop, self.spec))

    @property
    def num_classes(self) -> int | None:
        """Class count: known for named sets, else largest label + 1; None without labels."""
        if self.y is None:
            return None
        return self.classes if self.classes is not None else int(self.y.max()) + 1

    def with_preprocess(self, p: Preprocess) -> Dataset:
        """This data set with preprocessing ``p``, checked against the samples; ``standard``
        without mean/std gets this data set's scalar mean and std filled in."""
        _check_preprocess(p, self.sample_shape, self.spec)
        if p.normalize == "standard" and p.mean is None:
            total = sum(float(rows.sum()) for rows in _scaled_chunks(self.x, self.sample_shape, p.crop))
            count = len(self.x) * math.prod(_cropped_shape(self.sample_shape, p.crop, self.spec))
            mean = total / count
            sq = sum(
                float(((rows - mean) ** 2).sum())
                for rows in _scaled_chunks(self.x, self.sample_shape, p.crop)
            )
            std = math.sqrt(sq / count)
            if not std > 0:
                raise TsensError(f"--normalize standard: data set {self.spec!r} is constant (std 0)")
            p = replace(p, mean=(mean,), std=(std,))
        return replace(self, preprocess=p)

    def batches(
        self,
        batch_size: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Yield ``(inputs, labels)``: preprocessed ``B × dim`` inputs and int64 labels (or None).

        Each batch is converted on its own, so memory beyond the raw array is one batch.
        """
        if batch_size < 1:
            raise TsensError(f"--batch-size must be at least 1, got {batch_size}")
        p = self.preprocess
        if p.normalize == "standard" and p.mean is None:
            p = self.with_preprocess(p).preprocess
        shape = _cropped_shape(self.sample_shape, p.crop, self.spec)
        shift = scale = None
        stats = p.channel_stats
        if stats is not None:
            per_channel = math.prod(shape[1:]) if len(stats[0]) > 1 else 1
            shift = torch.tensor(stats[0], dtype=dtype, device=device).repeat_interleave(per_channel)
            scale = torch.tensor(stats[1], dtype=dtype, device=device).repeat_interleave(per_channel)
        np_dtype = np.float64 if dtype == torch.float64 else np.float32
        for start in range(0, len(self.x), batch_size):
            raw = _crop(self.x[start : start + batch_size], self.sample_shape, p.crop)
            raw = raw.reshape(len(raw), -1)
            if raw.dtype == np.uint8:
                xb = torch.tensor(raw, device=device).to(dtype) / 255.0
            else:
                xb = torch.from_numpy(raw.astype(np_dtype)).to(device=device, dtype=dtype)
            if shift is not None and scale is not None:
                xb = (xb - shift) / scale
            yb = None if self.y is None else torch.from_numpy(self.y[start : start + batch_size]).to(device)
            yield xb, yb

    def check_input_dim(self, expected: int, what: str) -> None:
        """Raise TsensError unless samples have ``expected`` features after preprocessing."""
        if self.dim == expected:
            return
        hint = ""
        if len(self.sample_shape) == 3 and self.preprocess.crop is None:
            c, h, w = self.sample_shape
            k = math.isqrt(expected // c) if expected % c == 0 else 0
            if 0 < k < min(h, w) and c * k * k == expected:
                hint = f" (--crop {k} would give {expected})"
        raise TsensError(
            f"data set {self.spec!r} has {self.dim} features per sample (shape "
            f"{self.sample_shape}) but {what} expects {expected}{hint}"
        )


# --------------------------------------------------------------------------- checks


def _sample_view(x: np.ndarray, where: str) -> tuple[np.ndarray, tuple[int, ...]]:
    """``x`` with N × H × W arrays given a channel axis, and the sample shape."""
    if x.dtype.kind not in "biuf":
        raise TsensError(f"{where}: inputs must be numeric, got dtype {x.dtype}")
    if x.ndim < 2:
        raise TsensError(f"{where}: inputs must have one row per sample (2-D or more), got shape {x.shape}")
    if x.ndim == 3:
        x = x[:, None]
    return x, tuple(int(s) for s in x.shape[1:])


def _labels(y: np.ndarray | None, n: int, where: str) -> np.ndarray | None:
    """Labels as a 1-D int64 array, checked: one non-negative integer class per sample."""
    if y is None:
        return None
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise TsensError(
            f"{where}: labels must be one integer class index per sample, got shape {y.shape} "
            "(one-hot labels are not accepted)"
        )
    if len(y) != n:
        raise TsensError(f"{where}: {n} samples but {len(y)} labels")
    if y.dtype.kind == "f":
        if not (np.isfinite(y).all() and (y == np.round(y)).all()):
            raise TsensError(f"{where}: labels must be integer class indices, got non-integer values")
    elif y.dtype.kind not in "biu":
        raise TsensError(f"{where}: labels must be integer class indices, got dtype {y.dtype}")
    if n and y.min() < 0:
        raise TsensError(f"{where}: labels must be non-negative class indices, found {y.min()}")
    return y.astype(np.int64)


def _check_finite(x: np.ndarray, where: str) -> None:
    if x.dtype.kind != "f":
        return
    for start in range(0, len(x), _CHUNK):
        chunk = x[start : start + _CHUNK]
        if not np.isfinite(chunk).all():
            bad = start + int(np.nonzero(~np.isfinite(chunk.reshape(len(chunk), -1)).all(axis=1))[0][0])
            raise TsensError(f"{where}: inputs contain NaN or Inf (first in sample {bad})")


# --------------------------------------------------------------------------- file formats


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


def _read_cifar(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
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


_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format), plain or gzip-compressed."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
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


def _read_idx_pair(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    labels = _idx_labels_for(path)
    return _read_idx(path), None if labels is None else _read_idx(labels)


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.keys())
            xkey = next((k for k in _INPUT_KEYS if k in keys), None)
            if xkey is None:
                raise TsensError(
                    f"{path}: no inputs array; expected one of {', '.join(_INPUT_KEYS)} (found {keys})"
                )
            ykey = next((k for k in _LABEL_KEYS if k in keys), None)
            return npz[xkey], None if ykey is None else npz[ykey]
    except TsensError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise TsensError(f"{path}: cannot read .npz ({exc})") from None


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise TsensError(
            f"{path}: cannot read .npy (tsens loads it with allow_pickle=False): {exc}"
        ) from None


def _read_safetensors(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
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


def _read_table(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    import pyarrow as pa
    import pyarrow.feather as feather
    import pyarrow.parquet as pq

    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            table = pq.read_table(path)
        elif suffix == ".feather":
            table = feather.read_table(path)
        else:
            try:
                with pa.ipc.open_file(path) as reader:
                    table = reader.read_all()
            except pa.ArrowInvalid:  # Hugging Face datasets writes the IPC stream format
                with pa.ipc.open_stream(path) as reader:
                    table = reader.read_all()
    except (OSError, pa.ArrowException) as exc:
        raise TsensError(f"{path}: cannot read {suffix} table ({exc})") from None
    return _table_arrays(table, path)


def _table_arrays(table: object, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Inputs and labels from an Arrow table (feature columns, a list column or an image column)."""
    import pyarrow as pa

    assert isinstance(table, pa.Table)
    label = next((c for c in _LABEL_COLUMNS if c in table.column_names), None)
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
            f"or one image column, plus an optional label column ({'/'.join(_LABEL_COLUMNS)})"
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


def _read_file(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Inputs and labels (or None) from a data file, by suffix, name or content."""
    name = path.name.lower()
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _read_npz(path)
    if suffix == ".npy":
        return _read_npy(path), None
    if suffix in (".parquet", ".arrow", ".feather"):
        return _read_table(path)
    if suffix == ".safetensors":
        return _read_safetensors(path)
    if "idx" in name and "-ubyte" in name:
        return _read_idx_pair(path)
    if suffix in (".pkl", ".pickle"):
        return _read_cifar(path)
    with path.open("rb") as f:
        head = f.read(4)
    if head[:1] == b"\x80":
        return _read_cifar(path)
    if head[:2] in (b"\0\0", b"\x1f\x8b"):
        return _read_idx_pair(path)
    raise TsensError(f"{path}: unknown data file format; expected {FILE_FORMATS}")


# --------------------------------------------------------------------------- named data sets


@dataclass(frozen=True)
class _Layout:
    subdirs: tuple[str, ...]
    files: tuple[str, ...]
    idx: bool  # IDX files, found with or without .gz
    classes: int


def _layout(name: str) -> _Layout:
    test = name.endswith("-test")
    base = name.removesuffix("-test")
    if base == "cifar10":
        files = ("test_batch",) if test else tuple(f"data_batch_{i}" for i in range(1, 6))
        return _Layout(("cifar-10-batches-py", "."), files, False, 10)
    if base == "cifar100":
        return _Layout(("cifar-100-python", "."), ("test" if test else "train",), False, 100)
    prefix = "t10k" if test else "train"
    sub = "MNIST/raw" if base == "mnist" else "FashionMNIST/raw"
    return _Layout((sub, "."), (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"), True, 10)


def _search_roots(data_root: str | Path | None) -> list[Path]:
    roots = []
    if data_root is not None:
        roots.append(Path(data_root).expanduser())
    if os.environ.get("TSENS_DATA"):
        roots.append(Path(os.environ["TSENS_DATA"]).expanduser())
    roots.append(Path("~/.cache/tsens").expanduser())
    return list(dict.fromkeys(roots))


def _find_file(directory: Path, filename: str, idx: bool) -> Path | None:
    for candidate in (filename, filename + ".gz") if idx else (filename,):
        if (directory / candidate).is_file():
            return directory / candidate
    return None


def _locate(name: str, data_root: str | Path | None) -> tuple[Path, list[Path]] | list[Path]:
    """The directory holding a named set's files and the files, or the directories searched."""
    layout = _layout(name)
    searched = []
    for root in _search_roots(data_root):
        for sub in layout.subdirs:
            directory = root if sub == "." else root / sub
            searched.append(directory)
            found = [_find_file(directory, f, layout.idx) for f in layout.files]
            if all(found):
                return directory, [f for f in found if f is not None]
            if any(found) and not layout.idx:
                missing = [f for f, p in zip(layout.files, found, strict=True) if p is None]
                raise TsensError(
                    f"data set {name!r} in {directory} is incomplete: missing {', '.join(missing)}"
                )
    return searched


def _expected_files(name: str) -> str:
    layout = _layout(name)
    files = list(layout.files)
    if name == "cifar10":
        files = ["data_batch_1..5"]
    shown = ", ".join(f + ("[.gz]" if layout.idx else "") for f in files)
    return f"{layout.subdirs[0]}/{{{shown}}} (or the files directly in the directory)"


def _load_named(
    name: str, spec: str, data_root: str | Path | None
) -> tuple[np.ndarray, np.ndarray | None, int]:
    if name in SHIPPED:
        base, split = (name.removesuffix("-test"), "test") if name.endswith("-test") else (name, "train")
        with np.load(_DATA_DIR / f"{base}.npz", allow_pickle=False) as npz:
            x, y = npz[f"x_{split}"], npz[f"y_{split}"]
        if base == "digits":
            x = x.astype(np.float32) / 16.0  # pixel values 0..16 -> [0, 1]
        return x, y, 10
    located = _locate(name, data_root)
    if isinstance(located, list):
        raise TsensError(
            f"data set {spec!r} not found: looked in {', '.join(map(str, located))} for "
            f"{_expected_files(name)}; tsens never downloads: put the files there (torchvision's "
            "layout works), set $TSENS_DATA or pass --data-root"
        )
    _, files = located
    layout = _layout(name)
    if layout.idx:
        images, labels = files
        return _read_idx(images), _read_idx(labels), layout.classes
    parts = [_read_cifar(f) for f in files]
    if any(y is None for _, y in parts):
        raise TsensError(f"data set {name!r}: a batch file in {files[0].parent} has no labels")
    x = np.concatenate([x for x, _ in parts])
    y = np.concatenate([np.asarray(y) for _, y in parts])
    return x, y, layout.classes


def _canonical_name(spec: str) -> str | None:
    key = spec.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    return key if key in NAMED else None


def available_datasets(data_root: str | Path | None = None) -> list[tuple[str, str]]:
    """``(name, where)`` for every named data set: its directory, or "not found"."""
    rows = []
    for name in NAMED:
        if name in SHIPPED:
            rows.append((name, f"shipped with tsens ({_DATA_DIR})"))
            continue
        located = _locate(name, data_root)
        rows.append((name, "not found" if isinstance(located, list) else str(located[0])))
    return rows


def load_dataset(
    spec: str,
    *,
    data_root: str | Path | None = None,
    preprocess: Preprocess = Preprocess(),
    limit: int | None = None,
    seed: int = 0,
) -> Dataset:
    """Load a named data set or a data file, optionally subsampled to ``limit`` samples.

    The subsample is drawn without replacement with ``numpy.random.default_rng(seed)`` and keeps
    the original order of the chosen samples.
    """
    if limit is not None and limit < 1:
        raise TsensError(f"--limit must be a positive number of samples, got {limit}")
    name = _canonical_name(spec)
    classes = None
    if name is not None:
        x, y, classes = _load_named(name, spec, data_root)
        where = f"data set {spec!r}"
    else:
        path = Path(spec).expanduser()
        where = str(path)
        if not path.exists():
            if path.suffix or os.sep in spec:
                raise TsensError(f"data file {spec!r} not found")
            raise TsensError(
                f"unknown data set {spec!r}: expected one of {', '.join(NAMED)} (or cifar, cifar-test), "
                f"or a path to {FILE_FORMATS}"
            )
        if path.is_dir():
            raise TsensError(
                f"{path} is a directory; give a data file or a data set name (see `tsens datasets`)"
            )
        x, y = _read_file(path)
    x, sample_shape = _sample_view(np.asarray(x), where)
    if len(x) == 0:
        raise TsensError(f"{where}: the data set is empty")
    y = _labels(y, len(x), where)
    if limit is not None and limit < len(x):
        keep = np.sort(np.random.default_rng(seed).choice(len(x), size=limit, replace=False))
        x = x[keep]
        y = None if y is None else y[keep]
    _check_finite(x, where)
    return Dataset(x, y, spec, sample_shape, Preprocess(), classes).with_preprocess(preprocess)
