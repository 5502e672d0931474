"""The one streaming pass: a data set through one trace per batch, measures by name.

:func:`measure_sets` prepares a network once (folded weights, the first layer's SVD: a
:class:`~tsens.trace.Tracer`), streams each data set through it a batch at a time, asks the
registry of :mod:`tsens.measures` for exactly the measures requested, and returns per data set
a :class:`SetResult`: the per-sample columns (with ``sample``, the index in the original data
set) and the set-level aggregates that per-sample columns cannot give back (per-unit piece
totals). Set-level statistics (means, moments, quantiles, region counts, correlations) are
functions of a :class:`SetResult` in :mod:`tsens.summaries`. Memory beyond the raw data and the
per-sample columns is one batch.

Preprocessing and activation follow one rule (also in :func:`tsens.checkpoints.load_network`):
a value the caller gives explicitly wins over the one the checkpoint records, with a warning
when they differ; without one, the checkpoint's record applies; without either, the default
(no preprocessing, ReLU).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .active_units import unit_piece_totals
from .compute import Compute
from .datasets import Dataset, Preprocess
from .errors import OverflowWarning, TsensError
from .jacobian import loss_relation
from .measures import HIDDEN_LAYER_MEASURES, Batch, Options, check_measures
from .network import Network
from .trace import Trace, Tracer

Progress = Callable[[int], None]

_LEGITIMATELY_INFINITE = {"boundary_distance", "path_score", "log_probs", "boundary_true", "boundary_pred"}
"""Columns where inf is a value, not an overflow: no face can be reached; no active path; a
probability that underflowed to 0."""


CACHE_BYTES = 1 << 30
"""The most an :class:`InputCache` holds by default (less when memory is short)."""


def default_cache_bytes() -> int:
    """:data:`CACHE_BYTES`, or a quarter of the memory available now when that is less (psutil's
    ``available`` when psutil is installed, else the free pages ``os.sysconf`` reports, which
    leaves out the reclaimable page cache; without either, :data:`CACHE_BYTES`)."""
    available = None
    try:
        import psutil

        available = int(psutil.virtual_memory().available)
    except ImportError:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            available = None
    return CACHE_BYTES if available is None else max(0, min(CACHE_BYTES, available // 4))


class InputCache:
    """Preprocessed batches kept in memory, so that a data set passed through many checkpoints
    is read and preprocessed once. Sets are kept whole while they fit in ``max_bytes`` in all
    (default :func:`default_cache_bytes`: at most 1 GiB); a set that does not fit is streamed
    from its source on every pass, a batch at a time, and nothing of it is kept."""

    def __init__(self, max_bytes: int | None = None) -> None:
        self.max_bytes = default_cache_bytes() if max_bytes is None else int(max_bytes)
        self.used = 0
        self._store: dict[tuple, tuple[tuple, list[tuple[torch.Tensor, torch.Tensor | None]]]] = {}

    def batches(
        self, dataset: Dataset, batch_size: int, device: torch.device, dtype: torch.dtype
    ) -> Iterable[tuple[torch.Tensor, torch.Tensor | None]]:
        p = dataset.preprocess.to_json() if dataset.preprocess is not None else None
        key = (id(dataset.x), id(dataset.y), p, batch_size, str(device), str(dtype))
        if key in self._store:
            return self._store[key][1]
        size = len(dataset) * dataset.dim * torch.finfo(dtype).bits // 8
        if self.used + size > self.max_bytes:
            return dataset.batches(batch_size, device, dtype)
        batches = list(dataset.batches(batch_size, device, dtype))
        self._store[key] = ((dataset.x, dataset.y), batches)  # holding x and y keeps their ids unique
        self.used += size
        return batches


@dataclass
class SetResult:
    """One data set through one network: per-sample ``columns`` (NumPy, ``sample`` first) and,
    when ``active`` was measured, ``unit_totals``: per hidden layer an h_l × pieces array of how
    many samples put each unit on each piece."""

    network: Network
    dataset: Dataset
    name: str
    measures: tuple[str, ...]
    options: Options
    columns: dict[str, np.ndarray]
    unit_totals: list[np.ndarray] | None = field(default=None, repr=False)

    @property
    def samples(self) -> int:
        return len(self.columns["sample"])

    def __repr__(self) -> str:
        return (
            f"<SetResult {self.name!r} of {self.network.path or 'a network'}: {self.samples:,} samples, "
            f"columns {', '.join(self.columns)}>"
        )

    @property
    def labelled(self) -> bool:
        return "loss" in self.columns


def chosen_preprocess(network: Network, dataset: Dataset, *, warn: bool = False) -> Preprocess:
    """The preprocessing the rule picks for ``network`` (module docstring), before any
    ``standard`` statistics are filled in; ``warn`` says so when the given one overrides a
    different record."""
    return recorded_or_given(network.metadata, network.path, dataset, warn=warn)


def recorded_or_given(
    metadata: Mapping[str, object], path: str, dataset: Dataset, *, warn: bool = False
) -> Preprocess:
    """:func:`chosen_preprocess` from a checkpoint's metadata and path alone (what planning
    knows before any checkpoint is loaded)."""
    recorded = Preprocess.from_metadata({k: str(v) for k, v in metadata.items()}, path or "checkpoint")
    given = dataset.preprocess
    if given is None:
        return recorded or Preprocess()
    if warn and recorded is not None and recorded != given:
        warnings.warn(
            f"{path}: the given preprocessing {given.to_json()} differs from the one the "
            f"checkpoint records ({recorded.to_json()}); using the given one",
            stacklevel=5,
        )
    return given


def prepared_for(network: Network, dataset: Dataset) -> Dataset:
    """``dataset`` with the preprocessing that applies to ``network`` (module docstring)."""
    return dataset.with_preprocess(chosen_preprocess(network, dataset, warn=True))


def _prepared_sets(network: Network, datasets: Mapping[str, Dataset]) -> dict[str, Dataset]:
    """Each set with its preprocessing; ``standard`` without a mean and std is resolved on the
    first set (the training set) and applied to the others as it is, so a test set is
    transformed exactly like the training set rather than by its own statistics."""
    out: dict[str, Dataset] = {}
    resolved: dict[str, Preprocess] = {}
    for name, ds in datasets.items():
        chosen = chosen_preprocess(network, ds, warn=True)
        key = chosen.to_json()
        out[name] = ds.with_preprocess(resolved.get(key, chosen))
        resolved.setdefault(key, out[name].preprocess)
    return out


def _check_fits(network: Network, dataset: Dataset) -> None:
    dataset.check_input_dim(network.input_dim, f"checkpoint {network.path or 'network'}")
    if dataset.y is not None and network.output_dim < (dataset.num_classes or 0):
        raise TsensError(
            f"data set {dataset.spec!r} has labels up to {dataset.num_classes - 1} but "
            f"{network.path or 'the network'} has only {network.output_dim} outputs"
        )


def traced_batches(
    tracer: Tracer,
    dataset: Dataset,
    compute: Compute,
    progress: Progress | None = None,
    cache: InputCache | None = None,
) -> Iterator[tuple[Trace, torch.Tensor | None]]:
    """One :class:`Trace` per batch of an already prepared ``dataset``, with the batch's labels."""
    if cache is None:
        batches: Iterable = dataset.batches(compute.batch_size, tracer.device, tracer.dtype)
    else:
        batches = cache.batches(dataset, compute.batch_size, tracer.device, tracer.dtype)
    for x, y in batches:
        yield tracer(x), y
        if progress is not None:
            progress(len(x))
        _trim.now()


class _Trim:
    """Hands memory freed by the batches so far back to the operating system, at most every
    ``every`` seconds, where the C library can (glibc's ``malloc_trim``; elsewhere nothing).

    With several threads allocating (torch's), glibc keeps freed blocks in per-thread arenas,
    and the more the threads contend (a busy machine) the more arenas it makes: without this,
    the resident memory of a long pass creeps up by hundreds of MB, by more than a GB on a
    loaded machine (``bench/bench_memory.py``). A trim takes a few ms."""

    def __init__(self, every: float = 0.5) -> None:
        self.every = every
        self._last = 0.0
        self._fn: Callable[[int], int] | None | bool = False  # False: not looked up yet

    def _lookup(self) -> Callable[[int], int] | None:
        if self._fn is False:
            try:
                import ctypes

                self._fn = getattr(ctypes.CDLL(None), "malloc_trim", None)
            except (OSError, AttributeError, TypeError):
                self._fn = None
        return self._fn  # type: ignore[return-value]

    def now(self) -> None:
        clock = time.monotonic()
        if clock - self._last < self.every:
            return
        self._last = clock
        fn = self._lookup()
        if fn is not None:
            fn(0)


_trim = _Trim()


def measure_sets(
    network: Network,
    datasets: Mapping[str, Dataset],
    measures: Sequence[str],
    *,
    options: Options | None = None,
    compute: Compute | None = None,
    progress: Callable[[str], Progress | None] | None = None,
    cache: InputCache | None = None,
) -> dict[str, SetResult]:
    """Every data set of ``datasets`` (name → set) through ``network``, computing exactly
    ``measures`` (names of :data:`tsens.measures.MEASURES`) in one pass per set. The network is
    prepared once for all sets. ``progress(name)`` may return a callback advanced by the
    number of samples of each batch; a ``cache`` keeps preprocessed inputs for the next call."""
    names = check_measures(list(measures))
    options = options or Options()
    compute = compute or Compute()
    if network.depth < 2 and HIDDEN_LAYER_MEASURES & set(names):
        raise TsensError(
            f"{network.path or 'network'} has no hidden layer: "
            f"{', '.join(sorted(HIDDEN_LAYER_MEASURES & set(names)))} do not apply"
        )
    prepared = _prepared_sets(network, datasets)
    for ds in prepared.values():
        _check_fits(network, ds)
    tracer = Tracer(network, compute.torch_device, compute.torch_dtype)
    generator = torch.Generator().manual_seed(compute.seed)
    results = {}
    for name, ds in prepared.items():
        callback = progress(name) if progress is not None else None
        results[name] = _one_set(tracer, ds, name, names, options, compute, generator, callback, cache)
    return results


def measure(
    network: Network,
    dataset: Dataset,
    measures: Sequence[str],
    *,
    options: Options | None = None,
    compute: Compute | None = None,
    progress: Progress | None = None,
) -> SetResult:
    """One data set through ``network``: :func:`measure_sets` for a single set."""
    results = measure_sets(
        network, {"data": dataset}, measures, options=options, compute=compute, progress=lambda _: progress
    )
    return results["data"]


def _one_set(
    tracer: Tracer,
    dataset: Dataset,
    name: str,
    measures: tuple[str, ...],
    options: Options,
    compute: Compute,
    generator: torch.Generator,
    progress: Progress | None,
    cache: InputCache | None = None,
) -> SetResult:
    network = tracer.network
    relation = "jacobian" in measures and dataset.y is not None and network.output_dim > 1
    chunks: list[dict[str, torch.Tensor | np.ndarray]] = []
    totals: list[torch.Tensor] | None = None
    for trace, labels in traced_batches(tracer, dataset, compute, progress, cache):
        batch = Batch(trace, labels, options, generator)
        cols: dict[str, torch.Tensor | np.ndarray] = {}
        for m in measures:
            cols.update(batch.get(m))
        if relation and "loss" not in cols:
            cols["loss"] = batch.get("predictions")["loss"]
        chunks.append(cols)
        if "active" in measures:
            batch_totals = unit_piece_totals(trace)
            totals = (
                batch_totals if totals is None else [a + b for a, b in zip(totals, batch_totals, strict=True)]
            )
    columns = {"sample": np.asarray(_indices(dataset), dtype=np.int64), **_gather(chunks)}
    if relation:
        derived = loss_relation(
            torch.from_numpy(columns["loss"]).double(),
            torch.from_numpy(columns["jac_logit_fro"]).double(),
            network.output_dim,
        )
        columns.update({k: v.numpy() for k, v in derived.items()})
        if "predictions" not in measures:
            del columns["loss"]
    warn_nonfinite(columns, compute.dtype, f"{network.path or 'network'} ({name})")
    unit_totals = None if totals is None else [t.cpu().numpy() for t in totals]
    return SetResult(network, dataset, name, measures, options, columns, unit_totals)


def _indices(dataset: Dataset) -> np.ndarray:
    indices = getattr(dataset, "indices", None)
    return np.arange(len(dataset)) if indices is None else indices


def _gather(chunks: list[dict[str, torch.Tensor | np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate per-batch columns (tensors or arrays) into NumPy arrays."""
    if not chunks:
        return {}
    out = {}
    for name in chunks[0]:
        parts = [c[name].detach().cpu().numpy() if torch.is_tensor(c[name]) else c[name] for c in chunks]
        out[name] = np.concatenate(parts)
    return out


def warn_nonfinite(columns: Mapping[str, np.ndarray], dtype: str, where: str) -> None:
    """One warning per column that came out inf or NaN where that means an overflow."""
    for name, values in columns.items():
        if name in _LEGITIMATELY_INFINITE or values.dtype.kind != "f":
            continue
        bad = int((~np.isfinite(values)).sum())
        if bad:
            hint = "; `dtype` float64 may help" if dtype == "float32" else ""
            warnings.warn(
                f"{where}: {name} is inf or NaN for {bad} of {len(values)} samples in {dtype}{hint}",
                OverflowWarning,
                stacklevel=3,
            )
