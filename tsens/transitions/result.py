"""One network along a set of curves: per-curve counts, lengths and the Jacobian along the curve,
and the per-checkpoint summary — what ``tsens transitions`` writes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from ..choices import DEFAULT_POINTS, TRANSITION_METHODS
from ..compute import Compute
from ..errors import TsensError
from ..jacobian import jacobian_norms
from ..network import Network
from ..trace import Tracer
from .exact import Regions, concat_regions, exact_transitions
from .sampled import check_points, sampled_transitions
from .trajectories import Trajectories, evaluate


@dataclass
class TransitionResult:
    """Per-curve ``columns`` (NumPy arrays or lists, one entry per curve) and, when the Jacobian
    was asked for, the ``regions`` along every curve with ``region_jacobian`` (‖J_prob‖_F at each
    region's midpoint)."""

    network: Network
    trajectories: Trajectories
    method: str
    points: int | None
    columns: dict[str, Any]
    regions: Regions | None = field(default=None, repr=False)
    region_jacobian: np.ndarray | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        traj = self.trajectories
        return (
            f"<TransitionResult {self.network.path or 'a network'}: {traj.count:,} {traj.kind} curves, "
            f"{self.method}>"
        )

    @property
    def layers(self) -> int:
        return len(self.network.layers) - 1

    @classmethod
    def concat(cls, parts: list[TransitionResult], trajectories: Trajectories) -> TransitionResult:
        """One result from the results of consecutive chunks of ``trajectories``
        (:meth:`Trajectories.chunks`), as if all curves had been counted at once."""
        first = parts[0]
        if len(parts) == 1:
            return replace(first, trajectories=trajectories)
        columns: dict[str, Any] = {}
        for key, value in first.columns.items():
            if isinstance(value, list):
                columns[key] = [v for p in parts for v in p.columns[key]]
            else:
                columns[key] = np.concatenate([p.columns[key] for p in parts])
        columns["trajectory"] = np.arange(trajectories.count, dtype=np.int64)
        regions = region_jacobian = None
        if first.regions is not None:
            regions = concat_regions([p.regions for p in parts], [p.trajectories.count for p in parts])
        if first.region_jacobian is not None:
            region_jacobian = np.concatenate([p.region_jacobian for p in parts])
        return cls(first.network, trajectories, first.method, first.points, columns, regions, region_jacobian)


def count_transitions(
    network: Network,
    trajectories: Trajectories,
    *,
    method: str = "exact",
    points: int = DEFAULT_POINTS,
    jacobian: bool = False,
    compute: Compute | None = None,
    progress: Callable[[int], None] | None = None,
) -> TransitionResult:
    """Transitions of ``network`` along every curve of ``trajectories`` (in its input space).

    Columns per curve: ``trajectory`` (its index), ``trajectory_kind``, ``indices`` (the data
    indices it was built from, or None), ``method``, ``transitions`` and ``transitions_l{l}`` per
    hidden layer, ``length`` (Euclidean arc length, positive: a curve that is a single point is
    refused when the curves are made, as its transitions per length would be 0/0) and
    ``transitions_per_length`` (``transitions / length``); with ``jacobian`` also
    ``jac_prob_mean`` and ``jac_prob_max``: ‖J_prob‖_F (the softmax's input Jacobian, [N]
    Fig. 2) at the midpoint of every linear region along the curve, averaged with each region's
    share of the curve parameter as weight (zero-length polyline segments hold no region and
    no weight), and its largest value. No column holds NaN. ``method``
    ``exact`` counts every crossing (:mod:`.exact`), ``sampled`` is [N]'s sum over ``points``
    equidistant points (:mod:`.sampled`). Counting is done in float64 whatever ``compute.dtype``.
    """
    if method not in TRANSITION_METHODS:
        raise TsensError(f"`method` {method!r}: expected exact or sampled")
    check_points(points)
    compute = compute or Compute()
    if network.depth < 2:
        raise TsensError(f"{network.path or 'network'} has no hidden layer: transitions do not apply")
    if trajectories.dim != network.input_dim:
        raise TsensError(
            f"{trajectories.source}: the curves have {trajectories.dim} inputs per point but "
            f"{network.path or 'the network'} expects {network.input_dim}"
        )
    device = compute.torch_device
    regions = None
    if method == "exact" or jacobian:
        exact = exact_transitions(network, trajectories, device=device, keep_regions=jacobian)
        regions = exact.regions
    if method == "exact":
        per_layer = exact.per_layer
        if progress is not None:
            progress(trajectories.count)
    else:
        per_layer = sampled_transitions(network, trajectories, points, device=device, progress=progress)
    n = trajectories.count
    total = per_layer.sum(1)
    length = trajectories.lengths()  # > 0 for every curve (Trajectories refuses points)
    density = total / length
    indices = trajectories.indices
    columns: dict[str, Any] = {
        "trajectory": np.arange(n, dtype=np.int64),
        "trajectory_kind": np.full(n, trajectories.kind, dtype=object),
        "indices": [None] * n if indices is None else [list(map(int, r)) for r in indices],
        "method": np.full(n, method, dtype=object),
        "transitions": total,
        **{f"transitions_l{l + 1}": per_layer[:, l] for l in range(per_layer.shape[1])},
        "length": length,
        "transitions_per_length": density,
    }
    region_jacobian = None
    if jacobian:
        region_jacobian = _region_jacobians(network, trajectories, regions, compute)
        mean, peak = _along(regions, region_jacobian, n)
        columns["jac_prob_mean"], columns["jac_prob_max"] = mean, peak
    return TransitionResult(
        network,
        trajectories,
        method,
        points if method == "sampled" else None,
        columns,
        regions,
        region_jacobian,
    )


def _region_jacobians(
    network: Network, trajectories: Trajectories, regions: Regions, compute: Compute
) -> np.ndarray:
    """‖J_prob‖_F at the parameter midpoint of every region (float64)."""
    device = compute.torch_device
    tracer = Tracer(network, device, torch.float64)
    pieces = trajectories.pieces(device)
    mid = torch.from_numpy((regions.lo + regions.hi) / 2)
    which = torch.from_numpy(regions.trajectory)
    out = []
    for start in range(0, len(mid), compute.batch_size):
        rows = slice(start, start + compute.batch_size)
        x = evaluate(pieces, trajectories.is_ellipse, trajectories.segments, which[rows], mid[rows])
        out.append(jacobian_norms(tracer(x))["jac_prob_fro"].cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


def _along(regions: Regions, values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per curve the parameter-weighted mean and the max of per-region values (every curve has
    regions of positive total width, :class:`~.exact.Regions`)."""
    weight = regions.hi - regions.lo
    total = np.bincount(regions.trajectory, weights=weight, minlength=n)
    mean = np.bincount(regions.trajectory, weights=weight * values, minlength=n) / total
    peak = np.full(n, -np.inf)
    np.maximum.at(peak, regions.trajectory, values)
    return mean, peak


def transitions_summary(result: TransitionResult) -> dict[str, Any]:
    """One row per checkpoint: the curves (count, kind, method), and of ``transitions``, each
    ``transitions_l{l}`` and ``transitions_per_length`` the mean, standard deviation (the sample
    one, ddof = 1: None, "n/a", for a single curve, where it is undefined) and the
    5/25/50/75/95 % quantiles (:func:`tsens.summaries.describe`); with the Jacobian, the mean of
    ``jac_prob_mean`` and of ``jac_prob_max``. There is always at least one curve
    (:class:`~.trajectories.Trajectories` refuses none), and no value is NaN."""
    from ..summaries import describe

    cols = result.columns
    traj = result.trajectories
    row: dict[str, Any] = {
        "checkpoint": result.network.path,
        "trajectories": traj.count,
        "trajectory_kind": traj.kind,
        "method": result.method,
        "points": result.points,
    }
    names = [
        "transitions",
        *(f"transitions_l{l + 1}" for l in range(result.layers)),
        "transitions_per_length",
    ]
    for name in names:
        values = np.asarray(cols[name], dtype=np.float64)
        stats = describe(values)
        row[f"{name}_mean"] = stats.pop("mean")
        row[f"{name}_std"] = float(values.std(ddof=1)) if len(values) > 1 else None
        row.update({f"{name}_{k}": v for k, v in stats.items()})
    for name in ("jac_prob_mean", "jac_prob_max"):
        if name in cols:
            row[f"{name}_mean"] = describe(cols[name])["mean"]
    return row
