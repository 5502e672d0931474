"""The :class:`Dataset` (raw samples, labels, original indices and the preprocessing that turns
samples into network inputs) and :func:`load_dataset`, which finds, reads, checks and
subsamples a named set or a data file.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..errors import Note, TsensError
from .formats import FILE_FORMATS, Samples, read_file
from .lazy import LazyArray
from .named import NAMED, canonical_name, flat_image_shape, load_named
from .preprocess import Preprocess, chunk_rows


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass(frozen=True, eq=False)
class Dataset:
    """Raw samples and labels plus the preprocessing that turns them into network inputs.

    ``x`` holds the samples in their stored dtype and shape (``len × sample_shape``): a NumPy
    array, or a :class:`~tsens.datasets.lazy.LazyArray` whose rows stay in their file until
    indexed (data sets from files that can be read in pieces, see :mod:`.formats`); ``y`` one
    int64 class per sample or None, and ``indices`` the index of each sample in the original data
    set (``arange(len)`` unless it was subsampled; None when constructing means exactly that), so
    per-sample results can be joined back to the full data. ``preprocess`` None means none was
    chosen: a checkpoint's recorded preprocessing then applies (:func:`tsens.stream.prepared_for`),
    and on its own the data set is used as stored (flattened, uint8 scaled into [0, 1]).
    """

    x: Samples = field(repr=False)
    y: np.ndarray | None = field(repr=False)
    spec: str
    sample_shape: tuple[int, ...]
    preprocess: Preprocess | None = None
    classes: int | None = None  # known class count of a named set; else taken from the labels
    indices: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.indices is None:
            indices = np.arange(len(self.x), dtype=np.int64)
        else:
            indices = np.asarray(self.indices)
            if indices.shape != (len(self.x),) or indices.dtype.kind not in "iu":
                raise TsensError(
                    f"`indices` must hold one integer index per sample ({len(self.x)}), got "
                    f"{indices.dtype} of shape {indices.shape}"
                )
            indices = indices.astype(np.int64)
        object.__setattr__(self, "indices", indices)

    def __len__(self) -> int:
        return len(self.x)

    @property
    def dim(self) -> int:
        """Flattened input dimension after preprocessing."""
        return math.prod(self._chosen.cropped_shape(self.sample_shape, self._what))

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        """(C, H, W) of the samples when they are images: stored as C × H × W, or a named set of
        images stored flat (:data:`~tsens.datasets.named.FLAT_IMAGES`, e.g. ``digits``); None
        when the samples are not images (as stored, before any preprocessing)."""
        if len(self.sample_shape) == 3:
            return self.sample_shape  # type: ignore[return-value]
        return flat_image_shape(self.spec, self.sample_shape)

    @property
    def num_classes(self) -> int | None:
        """Class count: known for named sets, else largest label + 1; None without labels."""
        if self.y is None:
            return None
        return self.classes if self.classes is not None else int(self.y.max()) + 1

    @property
    def _chosen(self) -> Preprocess:
        return self.preprocess if self.preprocess is not None else Preprocess()

    @property
    def _what(self) -> str:
        return f"data set {self.spec!r}"

    def with_preprocess(self, p: Preprocess) -> Dataset:
        """This data set with preprocessing ``p``, checked against the samples; ``standard``
        without mean/std gets this data set's scalar mean and std filled in."""
        return replace(self, preprocess=p.resolved(self.x, self.sample_shape, self._what))

    def _resolved(self) -> Preprocess:
        """The preprocessing with ``standard`` statistics filled in (computed now if need be)."""
        p = self._chosen
        return p.resolved(self.x, self.sample_shape, self._what) if p.needs_statistics else p

    def _position(self, i: int) -> int:
        if not (_is_int(i) and 0 <= i < len(self)):
            raise TsensError(f"`i` must be a sample position 0..{len(self) - 1} of {self._what}, got {i!r}")
        return int(i)

    def raw(self, i: int) -> np.ndarray:
        """The ``i``-th sample of this data set (position 0..len-1; its original index is
        ``indices[i]``), as stored: shape ``sample_shape``, stored dtype (a copy)."""
        return np.array(self.x[self._position(i)])

    def input(
        self, i: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """The ``i``-th sample preprocessed: shape ``(dim,)``, exactly as :meth:`batches` yields it."""
        start = self._position(i)
        one = self.x[start : start + 1]
        return self._resolved().apply(one, self.sample_shape, dtype=dtype, device=device)[0]

    def transform(
        self, raw: np.ndarray, *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """Raw samples made by the caller, ``(B, *sample_shape)``, preprocessed as this data set's
        own samples are (:meth:`Preprocess.apply` with this set's resolved preprocessing).

        ``raw`` must be uint8 exactly when the stored samples are: uint8 values are divided by
        255 and others are not, so a mismatch would silently change the scale.
        """
        raw = np.asarray(raw)
        if (raw.dtype == np.uint8) != (self.x.dtype == np.uint8):
            raise TsensError(
                f"`raw` has dtype {raw.dtype} but {self._what} stores {self.x.dtype}; uint8 values are "
                f"divided by 255 and others are not, so give `raw` as {self.x.dtype}"
            )
        return self._resolved().apply(raw, self.sample_shape, dtype=dtype, device=device)

    def batches(
        self,
        batch_size: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Yield ``(inputs, labels)``: preprocessed ``B × dim`` inputs and int64 labels (or None).

        Each batch is read and converted on its own (:meth:`Preprocess.apply`), so memory beyond
        the raw array (none for a lazy one) is one batch.
        """
        if not (_is_int(batch_size) and batch_size >= 1):
            raise TsensError(f"`batch_size` must be at least 1, got {batch_size!r}")
        p = self._resolved()
        for start in range(0, len(self.x), batch_size):
            xb = p.apply(self.x[start : start + batch_size], self.sample_shape, dtype=dtype, device=device)
            yb = None if self.y is None else torch.tensor(self.y[start : start + batch_size], device=device)
            yield xb, yb

    def check_input_dim(self, expected: int, what: str) -> None:
        """Raise TsensError unless samples have ``expected`` features after preprocessing."""
        if self.dim == expected:
            return
        hint = ""
        if len(self.sample_shape) == 3 and self._chosen.crop is None:
            c, h, w = self.sample_shape
            k = math.isqrt(expected // c) if expected % c == 0 else 0
            if 0 < k < min(h, w) and c * k * k == expected:
                hint = f" (`crop` {k} would give {expected})"
        raise TsensError(
            f"{self._what} has {self.dim} features per sample (shape "
            f"{self.sample_shape}) but {what} expects {expected}{hint}"
        )


# --------------------------------------------------------------------------- loading


def _sample_view(x: Samples, where: str) -> tuple[Samples, tuple[int, ...]]:
    """``x`` with N × H × W arrays given a channel axis, and the sample shape."""
    if x.dtype.kind not in "biuf":
        raise TsensError(f"{where}: inputs must be numeric, got dtype {x.dtype}")
    if x.ndim < 2:
        raise TsensError(f"{where}: inputs must have one row per sample (2-D or more), got shape {x.shape}")
    if x.ndim == 3:
        x = x.reshaped((1, *x.shape[1:])) if isinstance(x, LazyArray) else x[:, None]
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
    if n and y.max() >= 2**63:  # would wrap around to a negative int64
        raise TsensError(f"{where}: labels must be class indices, found {y.max()}")
    return y.astype(np.int64)


def _check_finite(x: Samples, where: str) -> None:
    """Refuse NaN or Inf inputs, a chunk at a time. A lazy array whose source checks what it
    decodes is read through even when it holds integers, so that a bad piece is refused now."""
    checked = isinstance(x, LazyArray) and x.source.checked_on_read
    if x.dtype.kind != "f" and not checked:
        return
    step = chunk_rows(x.shape[1:])
    for start in range(0, len(x), step):
        chunk = x[start : start + step]
        if chunk.dtype.kind == "f" and not np.isfinite(chunk).all():
            bad = start + int(np.nonzero(~np.isfinite(chunk.reshape(len(chunk), -1)).all(axis=1))[0][0])
            raise TsensError(f"{where}: inputs contain NaN or Inf (first in sample {bad})")


def load_dataset(
    spec: str,
    *,
    data_root: str | Path | None = None,
    preprocess: Preprocess | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> Dataset:
    """Load a named data set or a data file, optionally subsampled to ``limit`` samples.

    ``preprocess`` None (the default) leaves the choice to each checkpoint's recorded
    preprocessing (:class:`Dataset`); a given one wins over the record, with a warning.

    The subsample is drawn without replacement with ``numpy.random.default_rng(seed)`` and keeps
    the original order of the chosen samples; ``Dataset.indices`` says which they are. A
    ``limit`` of at least the set's size uses every sample (with a :class:`~tsens.errors.Note`
    when it is larger).
    """
    if limit is not None and not (_is_int(limit) and limit >= 1):
        raise TsensError(f"`limit` must be a positive number of samples, got {limit!r}")
    name = canonical_name(spec)
    classes = None
    if name is not None:
        x, y, classes = load_named(name, spec, data_root)
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
        x, y = read_file(path)
    x, sample_shape = _sample_view(x if isinstance(x, LazyArray) else np.asarray(x), where)
    if len(x) == 0:
        raise TsensError(f"{where}: the data set is empty")
    y = _labels(y, len(x), where)
    indices = np.arange(len(x), dtype=np.int64)
    if limit is not None and limit < len(x):
        indices = np.sort(np.random.default_rng(seed).choice(len(x), size=int(limit), replace=False))
        x = x.subset(indices) if isinstance(x, LazyArray) else x[indices]
        y = None if y is None else y[indices]
    elif limit is not None and limit > len(x):
        warnings.warn(
            f"{where} has only {len(x)} samples, fewer than `limit` {limit}: all {len(x)} are used",
            Note,
            stacklevel=2,
        )
    _check_finite(x, where)
    dataset = Dataset(x, y, spec, sample_shape, None, classes, indices.astype(np.int64))
    return dataset if preprocess is None else dataset.with_preprocess(preprocess)
