"""Streaming a data set through one trace per batch, and the per-sample tables built on it.

Each dataset-level function here traces every batch once (:class:`tsens.trace.Tracer`) and
asks the measures it needs of that one trace; memory beyond the raw data is bounded by the
batch. Results come back as NumPy columns, ready for :func:`tsens.tables.make_table`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .active_units import active_counts, piece_counts, unit_piece_totals
from .datasets import Dataset, Preprocess, resolve_preprocess
from .errors import TsensError
from .jacobian import jacobian_norms, loss_relation
from .network import Network
from .regions import boundary_distance, log_membership, path_scores, region_ids
from .tangent import tangent_norms
from .trace import Trace, Tracer

DTYPES = {"float32": torch.float32, "float64": torch.float64}


class OverflowWarning(UserWarning):
    """A measure overflowed the working dtype (use float64)."""


@dataclass(frozen=True)
class Compute:
    """Where and how to compute: device (cpu, cuda, auto), dtype, batch size, seed."""

    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int = 1024
    seed: int = 0

    @property
    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise TsensError(f"--device {self.device}: CUDA is not available here; use cpu or auto")
        try:
            return torch.device(self.device)
        except RuntimeError:
            raise TsensError(f"--device {self.device!r}: expected cpu, cuda, cuda:N or auto") from None

    @property
    def torch_dtype(self) -> torch.dtype:
        if self.dtype not in DTYPES:
            raise TsensError(f"--dtype {self.dtype!r}: expected float32 or float64")
        return DTYPES[self.dtype]


Progress = Callable[[int], None]


def prepared_for(network: Network, dataset: Dataset) -> Dataset:
    """``dataset`` with the preprocessing recorded in the checkpoint's ``tsens.preprocess``
    metadata, which wins over the dataset's own (with a warning when that was not the default)."""
    chosen = resolve_preprocess(dataset.preprocess, network.metadata)
    if chosen != dataset.preprocess and dataset.preprocess != Preprocess():
        warnings.warn(
            f"{network.path}: using the checkpoint's recorded preprocessing {chosen.to_json()}", stacklevel=3
        )
    return dataset.with_preprocess(chosen)


def traced_batches(
    network: Network, dataset: Dataset, compute: Compute, progress: Progress | None = None
) -> Iterator[tuple[Trace, torch.Tensor | None]]:
    """One :class:`Trace` per batch of ``dataset`` (and the batch's labels, if any), with the
    preprocessing the checkpoint records (:func:`prepared_for`)."""
    dataset = prepared_for(network, dataset)
    dataset.check_input_dim(network.input_dim, f"checkpoint {network.path or 'network'}")
    if dataset.y is not None and network.output_dim < (dataset.num_classes or 0):
        raise TsensError(
            f"data set {dataset.spec!r} has labels up to {dataset.num_classes - 1} but the network "
            f"has only {network.output_dim} outputs"
        )
    device = compute.torch_device
    tracer = Tracer(network, device, compute.torch_dtype)
    for x, y in dataset.batches(compute.batch_size, device, compute.torch_dtype):
        yield tracer(x), y
        if progress is not None:
            progress(len(x))


def gather(chunks: list[dict[str, torch.Tensor | np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate per-batch columns (tensors or arrays) into NumPy arrays."""
    if not chunks:
        return {}
    out = {}
    for name in chunks[0]:
        parts = [c[name].detach().cpu().numpy() if torch.is_tensor(c[name]) else c[name] for c in chunks]
        out[name] = np.concatenate(parts)
    return out


def warn_overflow(columns: dict[str, np.ndarray], dtype: str, names: tuple[str, ...]) -> None:
    """Warn (never silently) when a measure came out inf/NaN in the working dtype."""
    for name in names:
        values = columns.get(name)
        if values is not None and values.dtype.kind == "f" and not np.all(np.isfinite(values)):
            bad = int((~np.isfinite(values)).sum())
            hint = " rerun with --dtype float64" if dtype == "float32" else ""
            warnings.warn(
                f"{name}: {bad} sample(s) overflowed to inf/NaN in {dtype};{hint}",
                OverflowWarning,
                stacklevel=2,
            )


def predictions(trace: Trace, labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Predicted class and its probability; with labels the cross-entropy (nats) and correctness."""
    log_probs = torch.log_softmax(trace.logits, 1)
    top, cls = log_probs.max(1)
    out = {"predicted": cls, "confidence": top.exp()}
    if labels is not None:
        out["label"] = labels
        out["loss"] = -log_probs.gather(1, labels[:, None])[:, 0]
        out["correct"] = cls == labels
    return out


def sensitivity_per_sample(
    network: Network,
    dataset: Dataset,
    *,
    jacobian: bool = True,
    tangent: str | None = "sum",
    probes: int | None = None,
    compute: Compute = Compute(),
    progress: Progress | None = None,
) -> dict[str, np.ndarray]:
    """Per-sample Jacobian norms ([N] §3, SPEC §2.1) and tangent sensitivity ``tangent_fro``
    (SPEC §2.2; reading ``sum`` or ``all``; ``probes`` = Hutchinson estimate), with
    predictions and, when labelled, loss, correctness and ``jac_true_class``."""
    generator = torch.Generator().manual_seed(compute.seed)
    chunks = []
    for trace, y in traced_batches(network, dataset, compute, progress):
        cols = predictions(trace, y)
        if jacobian:
            cols.update(jacobian_norms(trace, y))
        if tangent is not None:
            cols["tangent_fro"] = tangent_norms(trace, tangent, probes, generator)
        chunks.append(cols)
    columns = gather(chunks)
    warn_overflow(columns, compute.dtype, ("jac_prob_fro", "jac_logit_fro", "jac_true_class", "tangent_fro"))
    if jacobian and "loss" in columns and network.output_dim > 1:
        relation = loss_relation(
            torch.from_numpy(columns["loss"]), torch.from_numpy(columns["jac_logit_fro"]), network.output_dim
        )
        columns.update({k: v.numpy() for k, v in relation.items()})
    return columns


def activations_per_sample(
    network: Network, dataset: Dataset, *, compute: Compute = Compute(), progress: Progress | None = None
) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """Per-sample active counts ``active_l{l}`` and ``active_total`` (plus ``piece{k}_l{l}`` for
    three-piece activations), and per hidden layer the h_l × pieces table of how many samples
    put each unit on each piece (SPEC §2.4)."""
    pieces = network.activation.num_pieces
    chunks, totals = [], None
    for trace, _ in traced_batches(network, dataset, compute, progress):
        counts = active_counts(trace)
        cols = {f"active_l{l}": counts[:, l - 1] for l in range(1, counts.shape[1] + 1)}
        cols["active_total"] = counts.sum(1)
        if pieces > 2:
            for l, pc in enumerate(piece_counts(trace), 1):
                cols.update({f"piece{k}_l{l}": pc[:, k] for k in range(pieces)})
        chunks.append(cols)
        batch_totals = unit_piece_totals(trace)
        totals = (
            batch_totals if totals is None else [a + b for a, b in zip(totals, batch_totals, strict=True)]
        )
    return gather(chunks), [t.cpu().numpy() for t in totals or []]


def regions_per_sample(
    network: Network,
    dataset: Dataset,
    *,
    membership: str = "preact",
    temperature: float = 1.0,
    tangent: str = "sum",
    compute: Compute = Compute(),
    progress: Progress | None = None,
) -> dict[str, np.ndarray]:
    """Per-sample region id, ``log_membership``, exact ``boundary_distance`` and its layer,
    ``path_score`` and ``tangent_fro`` (for the membership-weighted S_emp), SPEC §2.5."""
    chunks = []
    for trace, _ in traced_batches(network, dataset, compute, progress):
        log_p = log_membership(trace, membership, temperature)
        dist, layer = boundary_distance(trace)
        chunks.append(
            {
                "region": region_ids(trace),
                "log_membership": log_p,
                "boundary_distance": dist,
                "boundary_layer": layer,
                "path_score": path_scores(trace, log_p),
                "tangent_fro": tangent_norms(trace, tangent),
            }
        )
    columns = gather(chunks)
    warn_overflow(columns, compute.dtype, ("log_membership", "tangent_fro"))
    return columns
