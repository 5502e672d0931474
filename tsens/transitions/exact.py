"""Every transition along a curve, counted exactly, by subdividing the curve one layer at a time.

Along a smooth piece of a curve — an ellipse ``c + u cos t + v sin t`` or a segment
``p + s (q − p)`` — the first layer's pre-activations are, over the whole piece,
``z₁(t) = α + β cos t + γ sin t`` (or ``α + β s``): coefficients ``W₁ [c, u, v] + [b₁, 0, 0]``.
Their breakpoint crossings come in closed form (``R cos(t − ψ) = b − α`` with
``R = hypot(β, γ)``: two roots ``ψ ± acos((b − α)/R)`` iff ``|b − α| < R``; equality is a
tangency, not a crossing; a segment crosses at ``s = (b − α)/β``). Sorting them splits the piece
into intervals on which layer 1's pattern is constant, so there ``a₁ = slope ⊙ z₁ + offset`` (per
unit, its piece's slope and constant: ReLU6's flat top, HardTanh's ±1) is again in the span of
the same basis, and ``z₂ = W₂ a₁ + b₂`` is one batched matrix product on the coefficient vectors.
Layer 2's crossings inside each interval split it further, and so on: after layer l the
intervals are exactly the pieces of the curve where layers 1..l keep their pattern. Nothing is
sampled and no step size exists, so no region is too thin to be found.

**What is counted** ([N] eq. 1, its continuum limit): the curve's transitions in layer l are
``Σ ‖c_l(before) − c_l(after)‖₁`` over consecutive open stretches of constant pattern, ``c_l`` the
layer's piece codes (0, 1, 2 for ReLU6, HardTanh, HardSigmoid). Since a pre-activation is
continuous along the curve it passes one breakpoint at a time, so this is the number of
(unit, breakpoint) crossings: each unit counts once per breakpoint it crosses (a ReLU6 unit going
from below 0 to above 6 counts 2, as the sampled sum does between two points that far apart);
units crossing at the same point count once each; touching a breakpoint without changing piece
counts 0. A closed curve wraps around (t = 2π, or the last point back to the first); an open one
does not.

**Degenerate curves** (:mod:`.trajectories`: a curve that is one point is refused before it gets
here). A polyline segment of zero length (a point repeated) is no part of the path: it gets no
interval, so the codes are compared across it as across a vertex, and the counts and regions are
those of the polyline without the repeat — even where the repeated point lies on a breakpoint,
which a stretch of parameter standing on it would otherwise turn into a piece of its own. A flat
ellipse (u ∥ v) needs nothing special. A unit constant along a piece (``R = 0``, or ``β = 0`` on a
segment) has no crossing there and its piece is that of its constant value, also when the value
is the breakpoint itself (the piece below, as :meth:`~tsens.piecewise.Activation.codes` says).

**Exactness in float64.** Within an interval, a unit's piece on every sub-interval is derived
from the computed roots themselves (no re-evaluation near them), so the count there is exactly
the number of roots. Between intervals the piece codes on both sides are compared, so a crossing
that falls on an interval's end (another layer's crossing, a polyline vertex, t = 0) is counted
once, from whichever side finds it. A root within its own rounding uncertainty of an interval's end
(64 ulp of the pre-activation's scale, over its slope there) is taken to lie on that end, so a
unit that touches a breakpoint exactly where another layer's unit crosses (every unit of a
bias-free net at the origin) counts once if it changes piece and not at all if it does not.
Crossings closer than 64 ulp of the parameter range are one point: the
slivers between them are dropped before the next layer, which then compares its pieces across
that point. What float64 cannot resolve stays unresolved: regions thinner than these tolerances
(~1e-14 of the parameter range; ~1e-8 rad at a tangency), which no float64 computation sees.
A quick bound prunes the work: on an interval of half-width h around t_m, ``|z(t) − z(t_m)| ≤ R h``,
so a unit whose breakpoint is farther than that (plus a rounding margin) cannot cross there, and
only the others get the closed-form roots.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..network import Network
from ..piecewise import Activation
from .trajectories import Trajectories

TWO_PI = 2 * math.pi
_MARGIN = 64 * torch.finfo(torch.float64).eps
"""Relative rounding margin of the pruning bound (generous: pruning too little only costs time)."""

_ROOT_TOL = 64 * torch.finfo(torch.float64).eps
"""A root computed within ``_ROOT_TOL · (|α| + R + |b|) / |z'(root)|`` of an interval's end (its
rounding uncertainty) is taken to lie on that end: the code comparison across the end then
counts it once, whichever side's coefficients put it inside."""

_SLIVER = 64 * torch.finfo(torch.float64).eps
"""Intervals narrower than this (relative to the piece's parameter range) lie between crossings
at the same point up to rounding; they are dropped before the next layer."""

_BUDGET = 1 << 24
"""Coefficient elements (intervals × basis × width) held at once; trajectories are chunked to fit."""


def piece_tables(activation: Activation, device: torch.device, dtype: torch.dtype = torch.float64):
    """Per piece k the slope and the constant of ``φ(z) = slope_k z + offset_k`` (continuous
    piecewise-linear, so the offsets follow from the breakpoints), as tensors."""
    bps = activation.breakpoints
    offsets = []
    for k, slope in enumerate(activation.slopes):
        anchor = bps[k - 1] if k > 0 else bps[0]
        value = float(activation(torch.tensor([anchor], dtype=torch.float64))[0])
        offsets.append(value - slope * anchor)
    return (
        torch.tensor(activation.slopes, dtype=dtype, device=device),
        torch.tensor(offsets, dtype=dtype, device=device),
    )


@dataclass
class Regions:
    """The curves cut into linear regions (intervals of constant pattern in every hidden layer)
    and the transitions between them, in curve parameter (ellipse: t ∈ [0, 2π); polyline:
    segment index + position in it). Intervals also end at polyline vertices, which are no
    transitions; zero-length polyline segments hold none (their parameter range is a gap).
    ``events_*``: one entry per (unit, breakpoint) crossing (1-based ``layer``); crossings that
    fall exactly on an interval's end are counted but not listed. Every curve has at least one
    region (a curve that is a point is refused), of positive total width."""

    trajectory: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    events_trajectory: np.ndarray
    events_t: np.ndarray
    events_layer: np.ndarray

    def of(self, i: int) -> Regions:
        """The regions and events of curve ``i`` only."""
        keep, ev = self.trajectory == i, self.events_trajectory == i
        return Regions(
            self.trajectory[keep],
            self.lo[keep],
            self.hi[keep],
            self.events_trajectory[ev],
            self.events_t[ev],
            self.events_layer[ev],
        )


def concat_regions(parts: list[Regions], counts: list[int]) -> Regions:
    """The regions of consecutive groups of curves (``counts`` curves each) as one, curve numbers
    shifted to follow on."""
    offsets = np.cumsum([0, *counts[:-1]])
    return Regions(
        np.concatenate([p.trajectory + o for p, o in zip(parts, offsets, strict=True)]),
        np.concatenate([p.lo for p in parts]),
        np.concatenate([p.hi for p in parts]),
        np.concatenate([p.events_trajectory + o for p, o in zip(parts, offsets, strict=True)]),
        np.concatenate([p.events_t for p in parts]),
        np.concatenate([p.events_layer for p in parts]),
    )


@dataclass
class ExactCounts:
    """``per_layer``: T × (L − 1) transition counts; ``regions`` when asked for."""

    per_layer: np.ndarray
    regions: Regions | None = None


@dataclass
class _Intervals:
    """Intervals [lo, hi) of piece-local parameter, sorted by (piece, lo), with the coefficients
    (N × K × h) of the current layer's pre-activations on each."""

    lo: torch.Tensor
    hi: torch.Tensor
    piece: torch.Tensor
    coef: torch.Tensor


def exact_transitions(
    network: Network,
    trajectories: Trajectories,
    *,
    device: torch.device | str = "cpu",
    keep_regions: bool = False,
) -> ExactCounts:
    """Exact per-layer transition counts of every curve of ``trajectories`` (module docstring),
    computed in float64 on ``device``; ``keep_regions`` also returns the regions and crossings."""
    net = network.to(device, torch.float64)
    weights = [layer.folded_weight for layer in net.layers[:-1]]
    biases = [layer.folded_bias for layer in net.layers[:-1]]
    hidden = len(weights)
    traj = trajectories
    counts = np.zeros((traj.count, hidden), dtype=np.int64)
    if hidden == 0:
        return ExactCounts(counts, _empty_regions() if keep_regions else None)
    device = torch.device(device)
    tables = piece_tables(net.activation, device)
    pieces = traj.pieces(device)
    moving = torch.from_numpy(traj.moving()).to(device)
    m, k_basis = traj.segments, pieces.shape[1]
    widest = max(w.shape[0] for w in weights)
    per_curve = 256 if traj.is_ellipse else 16 * m  # intervals per curve, first guess
    parts: list[Regions] = []
    start = 0
    while start < traj.count:
        size = max(1, min(traj.count - start, _BUDGET // (per_curve * k_basis * widest)))
        rows = slice(start * m, (start + size) * m)
        layer_counts, regions, finals = _count_chunk(
            pieces[rows],
            moving[rows],
            traj.is_ellipse,
            traj.closed,
            m,
            weights,
            biases,
            net.activation,
            tables,
            keep_regions,
        )
        counts[start : start + size] = layer_counts.cpu().numpy()
        per_curve = max(per_curve, int(finals * 1.5 / size) + 1)
        if regions is not None:
            regions.trajectory += start
            regions.events_trajectory += start
            parts.append(regions)
        start += size
    return ExactCounts(counts, _concat_regions(parts) if keep_regions else None)


def _count_chunk(
    pieces: torch.Tensor,
    moving: torch.Tensor,
    ellipse: bool,
    closed: bool,
    m: int,
    weights: list[torch.Tensor],
    biases: list[torch.Tensor],
    activation: Activation,
    tables: tuple[torch.Tensor, torch.Tensor],
    keep_regions: bool,
) -> tuple[torch.Tensor, Regions | None, int]:
    device = pieces.device
    n_pieces = pieces.shape[0]
    n_curves = n_pieces // m
    coef = pieces @ weights[0].T  # P × K × h_1
    coef[:, 0] += biases[0]
    span = TWO_PI if ellipse else 1.0
    iv = _Intervals(
        torch.zeros(n_pieces, dtype=torch.float64, device=device),
        torch.full((n_pieces,), span, dtype=torch.float64, device=device),
        torch.arange(n_pieces, device=device),
        coef,
    )
    if not bool(moving.all()):  # zero-length segments are no part of the path (module docstring)
        iv = _Intervals(iv.lo[moving], iv.hi[moving], iv.piece[moving], iv.coef[moving])
    slopes, offsets = tables
    with_offsets = bool((offsets != 0).any())
    hidden = len(weights)
    counts = torch.zeros(n_curves, hidden, dtype=torch.int64, device=device)
    events: list[tuple[torch.Tensor, torch.Tensor, int]] = []
    for l in range(hidden):
        start_codes, ev_iv, ev_unit, ev_t, ev_delta = _crossings(iv, activation.breakpoints, ellipse)
        counts[:, l] = _layer_counts(iv, start_codes, ev_iv, ev_unit, ev_delta, m, n_curves, closed)
        if keep_regions:
            events.append((iv.piece[ev_iv], ev_t, l + 1))
        last = l == hidden - 1
        if last and not keep_regions:
            break
        parent, codes, iv_lo, iv_hi = _split(iv, start_codes, ev_iv, ev_unit, ev_t, ev_delta)
        # Crossings closer than float64 resolves in t are one point: the slivers between them are
        # dropped, so later layers compare their pieces across the point, not inside it.
        wide = (iv_hi - iv_lo) > _SLIVER * span
        if not bool(wide.all()):
            parent, codes, iv_lo, iv_hi = parent[wide], codes[wide], iv_lo[wide], iv_hi[wide]
        if last:
            iv = _Intervals(iv_lo, iv_hi, iv.piece[parent], iv.coef[:0])
            break
        a = iv.coef[parent] * slopes[codes.long()][:, None, :]
        if with_offsets:
            a[:, 0] += offsets[codes.long()]
        nxt = (a.reshape(-1, a.shape[2]) @ weights[l + 1].T).view(a.shape[0], a.shape[1], -1)
        nxt[:, 0] += biases[l + 1]
        iv = _Intervals(iv_lo, iv_hi, iv.piece[parent], nxt)
    regions = None
    if keep_regions:
        regions = _regions(iv, events, m)
    return counts, regions, int(iv.lo.shape[0])


def _crossings(iv: _Intervals, breakpoints: tuple[float, ...], ellipse: bool):
    """Piece codes just after each interval's start (N × h, int32) and the crossings strictly
    inside intervals: interval, unit, local parameter and code change (+1 up, −1 down)."""
    coef, lo, hi = iv.coef, iv.lo, iv.hi
    alpha, beta = coef[:, 0], coef[:, 1]
    mid = (lo + hi) / 2
    # Pruning: |z(t) − z(mid)| <= R·half on the interval, R = hypot(β, γ) (or |β|) <= L = |β| + |γ|,
    # and z(mid) carries a rounding error below _MARGIN·(|z(mid)| + 2L). A unit with
    # |z(mid) − b|·(1 − M) > L·(half + 2M) + 2M|b| cannot reach breakpoint b inside the interval.
    if ellipse:
        gamma = coef[:, 2]
        z_mid = torch.addcmul(alpha, beta, torch.cos(mid)[:, None])
        z_mid.addcmul_(gamma, torch.sin(mid)[:, None])
        lip = beta.abs().add_(gamma.abs())
    else:
        gamma = None
        z_mid = torch.addcmul(alpha, beta, mid[:, None])
        lip = beta.abs()
    lip.mul_(((hi - lo) / 2 + 2 * _MARGIN)[:, None] / (1 - _MARGIN))
    codes = torch.zeros(alpha.shape, dtype=torch.int32, device=alpha.device)
    found: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for b in breakpoints:
        gap = z_mid - b if b else z_mid
        codes += gap > 0
        near = gap.abs() <= (lip + 2 * _MARGIN * abs(b) / (1 - _MARGIN) if b else lip)
        idx = near.nonzero()
        if idx.shape[0] == 0:
            continue
        i, j = idx[:, 0], idx[:, 1]
        a, l0, h0 = alpha[i, j], lo[i], hi[i]
        if ellipse:
            above, roots = _ellipse_roots(a, beta[i, j], gamma[i, j], b, l0, h0)
        else:
            above, roots = _segment_roots(a, beta[i, j], b, l0, h0)
        codes[i, j] += above.to(torch.int32) - (gap[i, j] > 0).to(torch.int32)
        for r, inside, delta in roots:
            found.append((i[inside], j[inside], r[inside], delta[inside]))
    if found:
        ev_iv, ev_unit, ev_t, ev_delta = (torch.cat(parts) for parts in zip(*found, strict=True))
    else:
        empty = torch.zeros(0, dtype=torch.long, device=alpha.device)
        ev_iv, ev_unit, ev_t, ev_delta = empty, empty, empty.double(), empty.int()
    return codes, ev_iv, ev_unit, ev_t, ev_delta.to(torch.int32)


def _segment_roots(a, beta, b, lo, hi):
    """z = a + β s against breakpoint b: above just after lo, and the crossing in (lo, hi). A root
    within its rounding uncertainty of an end is taken to be at that end (see :func:`_snap`)."""
    r = (b - a) / beta
    up, down = beta > 0, beta < 0
    tol = _ROOT_TOL * (a.abs() + beta.abs() + abs(b)) / beta.abs()
    start = lo + tol
    above = torch.where(up, r <= start, torch.where(down, r > start, a > b))
    inside = (up | down) & (r > start) & (r < hi - tol)
    return above, [(r, inside, torch.sign(beta).to(torch.int32))]


def _ellipse_roots(a, beta, gamma, b, lo, hi):
    """z = a + R cos(t − ψ) against b: above just after lo, and the crossings ψ ∓ θ in (lo, hi)
    (up at ψ − θ, down at ψ + θ, both taken into [0, 2π)); roots within their rounding
    uncertainty of an end are taken to be at that end."""
    radius = torch.hypot(beta, gamma)
    q = (b - a) / radius
    cross = q.abs() < 1  # NaN (R = 0, a = b) and ±inf compare False
    qc = q.clamp(-1.0, 1.0)
    psi = torch.atan2(gamma, beta)
    theta = torch.acos(qc)
    r_up = torch.remainder(psi - theta, TWO_PI)
    r_down = torch.remainder(psi + theta, TWO_PI)
    # |z'| = R sin θ at both roots
    tol = _ROOT_TOL * (a.abs() + radius + abs(b)) / (radius * torch.sqrt((1 - qc) * (1 + qc)))
    tol = torch.where(cross, tol, torch.zeros_like(tol))
    start, stop = lo + tol, hi - tol
    on_arc = torch.where(
        r_up < r_down, (r_up <= start) & (start < r_down), (start >= r_up) | (start < r_down)
    )
    above = torch.where(cross, on_arc, a > b)
    ones = torch.ones_like(a, dtype=torch.int32)
    return above, [
        (r_up, cross & (r_up > start) & (r_up < stop), ones),
        (r_down, cross & (r_down > start) & (r_down < stop), -ones),
    ]


def _layer_counts(iv, start_codes, ev_iv, ev_unit, ev_delta, m, n_curves, closed):
    """Per curve: crossings inside intervals plus code changes across interval ends (every
    curve has at least one interval: a curve that is a point is refused when it is made)."""
    n = start_codes.shape[0]
    curve = iv.piece // m
    counts = torch.bincount(curve[ev_iv], minlength=n_curves)
    end_codes = start_codes.clone()
    end_codes.index_put_((ev_iv, ev_unit), ev_delta, accumulate=True)
    if n > 1:
        same = curve[1:] == curve[:-1]
        jumps = (end_codes[:-1] - start_codes[1:]).abs().sum(1) * same
        counts += torch.bincount(curve[:-1], weights=jumps.double(), minlength=n_curves).long()
    if closed:
        sizes = torch.bincount(curve, minlength=n_curves)
        last = torch.cumsum(sizes, 0) - 1
        first = last - sizes + 1
        counts += (end_codes[last] - start_codes[first]).abs().sum(1)
    return counts


def _split(iv, start_codes, ev_iv, ev_unit, ev_t, ev_delta):
    """Cut every interval at its crossings: the parent of each new interval, the piece codes on
    it (from the start codes and the crossings before it), and its bounds."""
    n, device = iv.lo.shape[0], iv.lo.device
    order = torch.argsort(ev_t, stable=True)
    order = order[torch.argsort(ev_iv[order], stable=True)]
    ev_iv, ev_unit, ev_t, ev_delta = ev_iv[order], ev_unit[order], ev_t[order], ev_delta[order]
    per = torch.bincount(ev_iv, minlength=n)
    sizes = per + 1
    first = torch.cumsum(sizes, 0) - sizes
    total = int(sizes.sum())
    parent = torch.repeat_interleave(torch.arange(n, device=device), sizes, output_size=total)
    rank = torch.arange(ev_iv.shape[0], device=device) - (torch.cumsum(per, 0) - per)[ev_iv]
    after = first[ev_iv] + rank + 1  # the new interval that starts at each crossing
    lo = torch.empty(total, dtype=torch.float64, device=device)
    hi = torch.empty_like(lo)
    lo[first] = iv.lo
    hi[first + sizes - 1] = iv.hi
    lo[after] = ev_t
    hi[after - 1] = ev_t
    steps = torch.zeros(total, start_codes.shape[1], dtype=torch.int32, device=device)
    steps.index_put_((after, ev_unit), ev_delta, accumulate=True)
    steps = torch.cumsum(steps, 0, dtype=torch.int32)
    codes = start_codes[parent] + steps - steps[first[parent]]
    return parent, codes, lo, hi


def _regions(iv: _Intervals, events: list[tuple[torch.Tensor, torch.Tensor, int]], m: int) -> Regions:
    offset = (iv.piece % m).double()
    ev_piece = torch.cat([e[0] for e in events])
    ev_t = torch.cat([e[1] for e in events]) + (ev_piece % m).double()
    layer = torch.cat([torch.full_like(e[0], e[2]) for e in events])
    order = torch.argsort(ev_t)
    curve_ev = (ev_piece // m)[order]
    order = order[torch.argsort(curve_ev, stable=True)]
    return Regions(
        (iv.piece // m).cpu().numpy(),
        (iv.lo + offset).cpu().numpy(),
        (iv.hi + offset).cpu().numpy(),
        (ev_piece // m)[order].cpu().numpy(),
        ev_t[order].cpu().numpy(),
        layer[order].cpu().numpy(),
    )


def _empty_regions() -> Regions:
    e = np.zeros(0)
    return Regions(e.astype(np.int64), e, e, e.astype(np.int64), e, e.astype(np.int64))


def _concat_regions(parts: list[Regions]) -> Regions:
    if not parts:
        return _empty_regions()
    return Regions(*(np.concatenate([getattr(p, f) for p in parts]) for f in Regions.__dataclass_fields__))
