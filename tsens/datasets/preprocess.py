"""How raw samples become network inputs: the :class:`Preprocess` settings, the one code path
that applies them (centre crop, flatten, uint8 scaling, normalization) and
:func:`resolve_preprocess` (a checkpoint's recorded preprocessing wins over the caller's).

Everything that turns raw samples into numbers goes through :func:`_scaled_rows` (crop, flatten,
scale) and :meth:`Preprocess.apply` (then normalize): a data set's batches, a single sample, an
image made by the caller, and the scalar statistics of ``standard`` normalization (taken a chunk
at a time, :func:`chunked_moments`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..choices import NORMALIZATIONS
from ..errors import TsensError

PREPROCESS_KEY = "tsens.preprocess"
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)

CHUNK = 4096  # most samples per step when a whole data set is scanned (statistics, checks)
CHUNK_BYTES = 32 << 20  # and at most about this many bytes of float64 values per step


def chunk_rows(sample_shape: Sequence[int]) -> int:
    """Samples per step of a scan over samples of ``sample_shape``: :data:`CHUNK`, fewer for wide
    samples so that a step's float64 values stay within :data:`CHUNK_BYTES`."""
    return max(1, min(CHUNK, CHUNK_BYTES // (8 * max(1, math.prod(sample_shape)))))


_KEYS = ("normalize", "mean", "std", "crop")


def _floats(value: object, name: str) -> tuple[float, ...] | None:
    """A number or a sequence of numbers as a tuple of floats (None stays None)."""
    if value is None:
        return None
    values = value if isinstance(value, (list, tuple)) else [value]
    numbers = (int, float, np.integer, np.floating)
    if not values or not all(isinstance(v, numbers) and not isinstance(v, (bool, np.bool_)) for v in values):
        raise TsensError(f"`{name}` must be a number or a list of numbers, got {value!r}")
    return tuple(float(v) for v in values)


def _looks_channels_last(sample_shape: tuple[int, ...]) -> bool:
    return len(sample_shape) == 3 and sample_shape[0] > 4 and sample_shape[-1] in (1, 3, 4)


def _scaled_rows(
    raw: np.ndarray,
    sample_shape: tuple[int, ...],
    crop: int | None,
    dtype: torch.dtype,
    device: torch.device | str,
) -> torch.Tensor:
    """Samples ``raw`` (B × ``sample_shape``) centre-cropped to ``crop × crop`` (the offsets of
    torchvision's ``CenterCrop``), flattened in C, H, W order, as ``dtype`` on ``device``; uint8
    values are divided by 255 into [0, 1], other dtypes are used as stored."""
    if crop is not None:
        _, h, w = sample_shape
        top = int(round((h - crop) / 2.0))
        left = int(round((w - crop) / 2.0))
        raw = raw[:, :, top : top + crop, left : left + crop]
    rows = raw.reshape(len(raw), -1)
    if rows.dtype == np.uint8:  # moved as bytes, converted on the device
        return torch.tensor(rows, device=device).to(dtype) / 255.0
    work = np.float64 if dtype == torch.float64 else np.float32
    return torch.from_numpy(rows.astype(work)).to(device=device, dtype=dtype)


def chunked_moments(chunks: Iterable[torch.Tensor]) -> tuple[int, float, float]:
    """Count, mean and sum of squared deviations from the mean (M2) of every value of
    ``chunks``, in one pass: each chunk's own mean and M2 (two passes over the chunk, in
    float64) combined with the running ones by Chan et al.'s pairwise update
    (``δ = mean_b − mean_a``; ``M2 = M2_a + M2_b + δ² n_a n_b / n``), so no value is squared
    far from its chunk's mean and the result matches a two-pass computation over the whole
    array to rounding. The variance is ``M2 / count``."""
    n, mean, m2 = 0, 0.0, 0.0
    for chunk in chunks:
        values = chunk.reshape(-1).to(torch.float64)
        nb = values.numel()
        if nb == 0:
            continue
        mean_b = float(values.sum()) / nb
        deviations = values - mean_b
        m2_b = float(deviations.square_().sum())
        total = n + nb
        delta = mean_b - mean
        mean += delta * nb / total
        m2 += m2_b + delta * delta * n * nb / total
        n = total
    return n, mean, m2


@dataclass(frozen=True)
class Preprocess:
    """How raw samples become network inputs: optional centre crop, then normalization.

    ``normalize`` is one of :data:`NORMALIZATIONS`; explicit ``mean``/``std`` (one value, or one
    per channel of channels-first images) apply whatever ``normalize`` says, and ``standard``
    without them is resolved from a data set by :meth:`resolved`.
    """

    normalize: str = "none"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    crop: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", _floats(self.mean, "mean"))
        object.__setattr__(self, "std", _floats(self.std, "std"))
        if self.normalize not in NORMALIZATIONS:
            raise TsensError(f"`normalize` {self.normalize!r}: expected one of {', '.join(NORMALIZATIONS)}")
        if (self.mean is None) != (self.std is None):
            raise TsensError("`mean` and `std` must be given together")
        if self.mean is not None and self.std is not None:
            if self.normalize in ("cifar10", "mnist"):
                raise TsensError(
                    f"`normalize` {self.normalize!r} fixes the mean and std; do not also give `mean`/`std`"
                )
            if len(self.mean) != len(self.std):
                raise TsensError(
                    f"`mean` has {len(self.mean)} values but `std` has {len(self.std)}; "
                    "give one value, or one per channel, to both"
                )
            if not all(math.isfinite(m) for m in self.mean):
                raise TsensError(f"`mean` must be finite numbers, got {self.mean}")
            if not all(math.isfinite(s) and s > 0 for s in self.std):
                raise TsensError(f"`std` must be positive finite numbers, got {self.std}")
        if self.crop is not None and (
            not isinstance(self.crop, (int, np.integer)) or isinstance(self.crop, bool) or self.crop < 1
        ):
            raise TsensError(f"`crop` must be a positive integer (pixels), got {self.crop!r}")
        if self.crop is not None:
            object.__setattr__(self, "crop", int(self.crop))

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

    @property
    def needs_statistics(self) -> bool:
        """True for ``standard`` without mean/std: the data set's statistics must be filled in."""
        return self.normalize == "standard" and self.mean is None

    def cropped_shape(self, sample_shape: Sequence[int], what: str = "the input") -> tuple[int, ...]:
        """The sample shape after the centre crop; ``what`` names the samples in errors."""
        shape = tuple(int(s) for s in sample_shape)
        if self.crop is None:
            return shape
        if len(shape) != 3:
            raise TsensError(
                f"`crop` {self.crop} needs image samples (C×H×W); {what} has samples of shape {shape}"
            )
        c, h, w = shape
        if self.crop > h or self.crop > w:
            raise TsensError(f"`crop` {self.crop} is larger than the {h}×{w} images of {what}")
        return (c, self.crop, self.crop)

    def check(self, sample_shape: Sequence[int], what: str = "the input") -> None:
        """Raise TsensError when this preprocessing cannot apply to samples of ``sample_shape``
        (``what`` names the samples in the message, e.g. ``data set 'digits'``)."""
        shape = tuple(int(s) for s in sample_shape)
        if self.crop is not None and _looks_channels_last(shape):
            raise TsensError(
                f"`crop` needs channels-first images (C×H×W); {what} has samples of shape {shape}, "
                "which looks channels-last: transpose the array"
            )
        self.cropped_shape(shape, what)
        stats = self.channel_stats
        if stats is None or len(stats[0]) == 1:
            return
        n = len(stats[0])
        if len(shape) != 3 or shape[0] != n:
            option = "`normalize` 'cifar10'" if self.normalize == "cifar10" else "a per-channel `mean`/`std`"
            hint = " (it looks channels-last: transpose the array)" if _looks_channels_last(shape) else ""
            raise TsensError(
                f"{option} needs channels-first images with {n} channels (C×H×W); {what} has samples "
                f"of shape {shape}{hint}"
            )

    def apply(
        self,
        raw: np.ndarray,
        sample_shape: tuple[int, ...],
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """The ``B × dim`` network inputs for raw samples ``raw`` of shape ``(B, *sample_shape)``.

        In order: centre crop (images), flatten (C, H, W order), uint8 values divided by 255
        (decided by ``raw``'s dtype; other dtypes are used as stored), then normalization. This is
        exactly how a data set's own samples are turned into inputs, so ``raw`` may be anything
        the caller made (a translated image, a perturbed sample). ``standard`` normalization must
        be resolved first (see :meth:`resolved`).
        """
        raw = np.asarray(raw)
        shape = tuple(int(s) for s in sample_shape)
        if raw.shape[1:] != shape or raw.ndim != len(shape) + 1:
            raise TsensError(
                f"`raw` must be a batch of samples of shape {shape}, i.e. of shape (B, "
                f"{', '.join(map(str, shape))}); got {raw.shape}"
            )
        if raw.dtype.kind not in "biuf":
            raise TsensError(f"`raw` must hold numbers, got dtype {raw.dtype}")
        if self.needs_statistics:
            raise TsensError(
                "`normalize` 'standard' without `mean`/`std` needs a data set's statistics: resolve "
                "it with Preprocess.resolved or Dataset.with_preprocess, or give `mean` and `std`"
            )
        self.check(shape)
        rows = _scaled_rows(raw, shape, self.crop, dtype, device)
        stats = self.channel_stats
        if stats is None:
            return rows
        cropped = self.cropped_shape(shape)
        per_channel = math.prod(cropped[1:]) if len(stats[0]) > 1 else 1
        shift = torch.tensor(stats[0], dtype=dtype, device=device).repeat_interleave(per_channel)
        scale = torch.tensor(stats[1], dtype=dtype, device=device).repeat_interleave(per_channel)
        return (rows - shift) / scale

    def resolved(
        self, x: np.ndarray, sample_shape: tuple[int, ...], what: str = "the data set"
    ) -> Preprocess:
        """This preprocessing checked against samples of ``sample_shape``; ``standard`` without
        mean/std gets the scalar mean and std of all of ``x`` (cropped and scaled as
        :meth:`apply` does, in float64) filled in. ``what`` names the samples in errors.

        ``x`` (an array or a lazy one) is read :func:`chunk_rows` samples at a time, in one pass
        (:func:`chunked_moments`)."""
        self.check(sample_shape, what)
        if not self.needs_statistics:
            return self
        count = len(x) * math.prod(self.cropped_shape(sample_shape, what))
        if count == 0:
            raise TsensError(f"`normalize` 'standard': {what} has no samples to take statistics from")
        step = chunk_rows(sample_shape)
        chunks = (
            _scaled_rows(x[start : start + step], sample_shape, self.crop, torch.float64, "cpu")
            for start in range(0, len(x), step)
        )
        _, mean, m2 = chunked_moments(chunks)
        std = math.sqrt(m2 / count)
        if not std > 0:
            raise TsensError(f"`normalize` 'standard': {what} is constant (std 0)")
        return replace(self, mean=(mean,), std=(std,))

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str], where: str = "checkpoint") -> Preprocess | None:
        """The preprocessing recorded under ``tsens.preprocess`` in checkpoint metadata, or None.

        ``where`` (the checkpoint's path) starts every error message.
        """
        raw = metadata.get(PREPROCESS_KEY)
        if raw is None:
            return None
        head = f"{where}: metadata {PREPROCESS_KEY!r}"
        try:
            obj = json.loads(raw)
        except (TypeError, ValueError) as exc:
            raise TsensError(f"{head} is not valid JSON ({exc}): {raw!r}") from None
        if not isinstance(obj, dict):
            raise TsensError(f"{head} must be a JSON object with keys {'/'.join(_KEYS)}, got {raw!r}")
        unknown = sorted(set(obj) - set(_KEYS))
        if unknown:
            raise TsensError(f"{head} has unknown keys {unknown}; expected {', '.join(_KEYS)}")
        try:
            return cls(
                normalize=obj.get("normalize", "none"),
                mean=obj.get("mean"),
                std=obj.get("std"),
                crop=obj.get("crop"),
            )
        except TsensError as exc:
            # the names are JSON keys here, not the caller's parameters: drop the backticks
            raise TsensError(f"{head}: {exc.for_options({})}") from None

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


def resolve_preprocess(cli: Preprocess, metadata: Mapping[str, str], where: str = "checkpoint") -> Preprocess:
    """The checkpoint's recorded preprocessing when it has one, else the command line's
    (``where`` names the checkpoint in errors about its metadata)."""
    recorded = Preprocess.from_metadata(metadata, where)
    return cli if recorded is None else recorded
