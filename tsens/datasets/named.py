"""Named data sets: the ones shipped inside the package (``digits``, ``mnist1d`` and their
``-test`` splits) and the torchvision-layout ones (CIFAR-10/100, MNIST, Fashion-MNIST) found
under a data root, ``$TSENS_DATA`` or ``~/.cache/tsens``; :func:`available_datasets` lists them.
Nothing is ever downloaded.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import TsensError
from .formats import Samples, open_cifar_files, open_idx, read_cifar, read_idx

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
SHIPPED = ("digits", "digits-test", "mnist1d", "mnist1d-test")
FLAT_IMAGES: dict[str, tuple[int, int, int]] = {"digits": (1, 8, 8), "digits-test": (1, 8, 8)}
"""The named sets whose samples are images stored flat (C·H·W features per sample), with their
(C, H, W). The other named image sets (CIFAR, MNIST, Fashion-MNIST) are stored as images;
``mnist1d`` holds one-dimensional signals, not images."""


@dataclass(frozen=True)
class _Layout:
    """Where a named set's files live: sub-directories tried under each root ("." = the root
    itself), the files needed, whether they are IDX files (found with or without ``.gz``), the
    class count, and how the files are shown in a "not found" message."""

    subdirs: tuple[str, ...]
    files: tuple[str, ...]
    idx: bool
    classes: int
    shown: str


def _cifar(subdir: str, files: tuple[str, ...], classes: int, shown: str | None = None) -> _Layout:
    return _Layout((subdir, "."), files, False, classes, shown or ", ".join(files))


def _idx(subdir: str, prefix: str) -> _Layout:
    files = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    return _Layout((subdir, "."), files, True, 10, ", ".join(f + "[.gz]" for f in files))


_LAYOUTS: dict[str, _Layout] = {
    "cifar10": _cifar(
        "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), 10, "data_batch_1..5"
    ),
    "cifar10-test": _cifar("cifar-10-batches-py", ("test_batch",), 10),
    "cifar100": _cifar("cifar-100-python", ("train",), 100),
    "cifar100-test": _cifar("cifar-100-python", ("test",), 100),
    "mnist": _idx("MNIST/raw", "train"),
    "mnist-test": _idx("MNIST/raw", "t10k"),
    "fashion-mnist": _idx("FashionMNIST/raw", "train"),
    "fashion-mnist-test": _idx("FashionMNIST/raw", "t10k"),
}
NAMED = (*SHIPPED, *_LAYOUTS)
_ALIASES = {
    "cifar": "cifar10",
    "cifar-test": "cifar10-test",
    "fashionmnist": "fashion-mnist",
    "fashionmnist-test": "fashion-mnist-test",
}


def canonical_name(spec: str) -> str | None:
    """The named set ``spec`` means (case-insensitive, ``_`` = ``-``, aliases), or None."""
    key = spec.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    return key if key in NAMED else None


def flat_image_shape(spec: str, sample_shape: tuple[int, ...]) -> tuple[int, int, int] | None:
    """(C, H, W) of the images of the named set ``spec`` when they are stored flat
    (:data:`FLAT_IMAGES`) and ``sample_shape`` is that flat shape; otherwise None."""
    shape = FLAT_IMAGES.get(canonical_name(spec) or "")
    if shape is not None and tuple(sample_shape) == (math.prod(shape),):
        return shape
    return None


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
    layout = _LAYOUTS[name]
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


def load_named(name: str, spec: str, data_root: str | Path | None) -> tuple[Samples, np.ndarray | None, int]:
    """Inputs, labels and class count of the named set ``name`` (canonical; ``spec`` is what
    the caller wrote, for messages). The shipped sets are read whole; the inputs of the others
    stay in their files (IDX images memory-mapped or decompressed in order, CIFAR read one batch
    file at a time), labels are read whole."""
    if name in SHIPPED:
        base, split = (name.removesuffix("-test"), "test") if name.endswith("-test") else (name, "train")
        with np.load(DATA_DIR / f"{base}.npz", allow_pickle=False) as npz:
            x, y = npz[f"x_{split}"], npz[f"y_{split}"]
        if base == "digits":
            x = x.astype(np.float32) / 16.0  # pixel values 0..16 -> [0, 1]
        return x, y, 10
    layout = _LAYOUTS[name]
    located = _locate(name, data_root)
    if isinstance(located, list):
        raise TsensError(
            f"data set {spec!r} not found: looked in {', '.join(map(str, located))} for "
            f"{layout.subdirs[0]}/{{{layout.shown}}} (or the files directly in the directory); "
            "tsens never downloads: put the files there (torchvision's layout works), set "
            "$TSENS_DATA or pass `data_root`"
        )
    _, files = located
    if layout.idx:
        images, labels = files
        return open_idx(images), read_idx(labels), layout.classes
    if len(files) == 1:  # one pickle: read whole
        x, y = read_cifar(files[0])
        if y is None:
            raise TsensError(f"data set {name!r}: a batch file in {files[0].parent} has no labels")
        return x, np.asarray(y), layout.classes
    x, y = open_cifar_files(files, name)
    return x, y, layout.classes


def available_datasets(data_root: str | Path | None = None) -> list[tuple[str, str]]:
    """``(name, where)`` for every named data set: its directory, or "not found"."""
    rows = []
    for name in NAMED:
        if name in SHIPPED:
            rows.append((name, f"shipped with tsens ({DATA_DIR})"))
            continue
        located = _locate(name, data_root)
        rows.append((name, "not found" if isinstance(located, list) else str(located[0])))
    return rows
