"""[N]'s sampled transition count: ``Σ_i ‖c(x_i) − c(x_{i+1})‖₁`` over k equidistant points.

The points are equidistant in the curve parameter (ellipse: t = 2πi/k; polyline: k points
spread evenly over its segments, one unit of parameter per segment), and a closed curve wraps
around (the last point is compared with the first). Zero-length segments of a polyline (a point
repeated) are no part of its path and get no points: the k points are spread over the other
segments, so the count is the one of the polyline without the repeats (:mod:`.trajectories`).

The sum counts, per layer, how many (unit, breakpoint) pairs lie between consecutive points, so
it can only miss transitions (two crossings of one unit between neighbours cancel; a thin region
between them is skipped): it never exceeds the exact count and reaches it when k is large enough.

Only the first layer sees the input dimension: its pre-activations along a piece are
``α + β cos t + γ sin t`` (or ``α + β s``), folded once from 2–3 vectors, so each sample costs
the hidden layers' matrix products only. Computed in float64, points in chunks.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..errors import TsensError
from ..network import Network
from .trajectories import Trajectories, evaluate

CHUNK = 1 << 15
"""Points per chunk (per curve)."""


def check_points(points: int) -> None:
    """Refuse a point count the sampled sum cannot use."""
    if isinstance(points, bool) or not isinstance(points, int | np.integer) or points < 2:
        raise TsensError(f"`points` must be an integer of at least 2, got {points!r}")


def sample_parameters(trajectories: Trajectories, points: int, segments: int | None = None) -> torch.Tensor:
    """The k curve parameters the sampled count visits (float64); for a polyline, ``segments``
    (default: all of them) is how many segments they are spread over."""
    period = trajectories.period if segments is None else float(segments)
    i = torch.arange(points, dtype=torch.float64)
    if trajectories.is_ellipse or trajectories.closed:
        return i * (period / points)
    return i * (period / (points - 1))


def sampled_transitions(
    network: Network,
    trajectories: Trajectories,
    points: int,
    *,
    device: torch.device | str = "cpu",
    chunk: int = CHUNK,
    dtype: torch.dtype = torch.float64,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """T × (L − 1) sampled transition counts with ``points`` points per curve (module docstring).
    ``dtype`` float32 is for timing comparisons only: a point within float32 rounding of a
    breakpoint may get the wrong piece, and the count can then exceed the exact one."""
    check_points(points)
    net = network.to(device, dtype)
    layers = net.layers[:-1]
    traj = trajectories
    counts = np.zeros((traj.count, len(layers)), dtype=np.int64)
    if not layers:
        return counts
    first = traj.pieces(device).to(dtype) @ layers[0].folded_weight.T  # P × K × h_1
    first[:, 0] += layers[0].folded_bias
    t_all = sample_parameters(traj, points).to(device)
    wrap = traj.is_ellipse or traj.closed
    m = traj.segments
    moving = torch.from_numpy(traj.moving().reshape(traj.count, m)).to(device)
    zero = torch.zeros(1, dtype=torch.long, device=device)
    for c in range(traj.count):
        curve_first, curve_m, curve_t = first[c * m : (c + 1) * m], m, t_all
        if not bool(moving[c].all()):  # zero-length segments get no points (module docstring)
            curve_first = curve_first[moving[c]]
            curve_m = len(curve_first)
            curve_t = sample_parameters(traj, points, curve_m).to(device)
        total = torch.zeros(len(layers), dtype=torch.int64, device=device)
        head: list[torch.Tensor] | None = None
        prev: list[torch.Tensor] | None = None
        for start in range(0, points, chunk):
            t = curve_t[start : start + chunk]
            if traj.is_ellipse:  # one product with the basis (1, cos t, sin t)
                basis = torch.stack([torch.ones_like(t), torch.cos(t), torch.sin(t)], 1).to(dtype)
                z = basis @ curve_first[0]
            else:
                z = evaluate(curve_first, False, curve_m, zero.expand(len(t)), t).to(dtype)
            codes = []
            for i in range(len(layers)):
                if i:
                    z = torch.addmm(layers[i].folded_bias, net.activation(z), layers[i].folded_weight.T)
                codes.append(net.activation.codes(z).to(torch.int16))
            for i, code in enumerate(codes):
                total[i] += (code[1:] - code[:-1]).abs().sum()
                if prev is not None:
                    total[i] += (code[0] - prev[i]).abs().sum()
            prev = [code[-1] for code in codes]
            if head is None:
                head = [code[0] for code in codes]
        if wrap:
            for i in range(len(layers)):
                total[i] += (head[i] - prev[i]).abs().sum()
        counts[c] = total.cpu().numpy()
        if progress is not None:
            progress(1)
    return counts
