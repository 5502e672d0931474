"""Activation regions: identities, membership, exact boundary distance ([T] §3.1).

* A region id is the 64-bit BLAKE2b hash of the bit-packed activation pattern (every hidden
  unit's piece code, ceil(log2 pieces) bits each). Two different patterns share an id with
  probability 2⁻⁶⁴ per pair: at a million samples the chance of any collision is below 1e-7.
* Membership [T eq. 4]: ``log p(x) = Σ_units log σ(δ_j(x)/τ)``, δ_j the distance of the
  pre-activation to the nearest breakpoint (|z_j| for ReLU); the ``indicator`` variant uses the
  0/1 active indicator instead of δ_j, as the author's published code did.
* Boundary distance: the region is the polytope where every unit stays on its piece; each
  unit's pre-activation is affine there with gradient ∂z_j/∂x, so the distance from x to the
  boundary is ``min_j δ_j / ||∂z_j/∂x||₂`` (units whose gradient vanishes never leave).
* Path score [T eq. 3, 7]: ``P(x) = Σ_l log N_l(x) + log p(x)`` (−inf when a layer has no
  active unit: no active path).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch

from .active_units import active_counts
from .choices import MEMBERSHIP_MODES
from .errors import TsensError
from .trace import Trace


def patterns(trace: Trace) -> torch.Tensor:
    """The activation pattern: all hidden units' piece codes, B × Σ h_l (uint8)."""
    if not trace.codes:
        return torch.zeros(trace.batch_size, 0, dtype=torch.uint8, device=trace.x.device)
    return torch.cat(trace.codes, 1)


def region_ids(trace: Trace) -> np.ndarray:
    """uint64 region id per sample: BLAKE2b-64 of the bit-packed pattern."""
    codes = patterns(trace).cpu().numpy()
    bits_per_unit = max(1, math.ceil(math.log2(trace.tracer.activation.num_pieces)))
    bits = np.unpackbits(codes[:, :, None], axis=2, bitorder="little")[:, :, :bits_per_unit]
    packed = np.packbits(bits.reshape(len(codes), -1), axis=1)
    ids = [hashlib.blake2b(row.tobytes(), digest_size=8).digest() for row in packed]
    return np.frombuffer(b"".join(ids), dtype="<u8").copy()


def log_membership(trace: Trace, mode: str = "preact", temperature: float = 1.0) -> torch.Tensor:
    """``log p(x)`` per sample ([T] eq. 4)."""
    if mode not in MEMBERSHIP_MODES:
        raise TsensError(f"`membership` {mode!r}: expected one of {', '.join(MEMBERSHIP_MODES)}")
    act = trace.tracer.activation
    total = torch.zeros(trace.batch_size, dtype=trace.logits.dtype, device=trace.logits.device)
    for z, code in zip(trace.preacts, trace.codes, strict=True):
        margin = act.breakpoint_distance(z) if mode == "preact" else (code == act.active_code).to(z.dtype)
        total += torch.nn.functional.logsigmoid(margin / temperature).sum(1)
    return total


def boundary_distance(trace: Trace) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact distance to the region's boundary and the (1-based) hidden layer of the nearest
    face, per sample; inf and layer 0 when no unit can ever change its piece."""
    hidden = len(trace.codes)
    dist = torch.full((trace.batch_size,), math.inf, dtype=trace.logits.dtype, device=trace.logits.device)
    layer = torch.zeros(trace.batch_size, dtype=torch.int64, device=trace.logits.device)
    if hidden == 0:
        return dist, layer
    act = trace.tracer.activation
    for l, r in enumerate(trace.input_sqnorms(hidden), 1):
        scale = trace.tracer.scales[l - 1]
        grad_sq = r if scale is None else r * scale.square()
        ratio = act.breakpoint_distance(trace.preacts[l - 1]) / grad_sq.sqrt()
        ratio = torch.where(grad_sq > 0, ratio, math.inf)
        best = ratio.min(1).values
        closer = best < dist
        dist = torch.where(closer, best, dist)
        layer = torch.where(closer, l, layer)
    return dist, layer


def path_scores(trace: Trace, log_p: torch.Tensor) -> torch.Tensor:
    """``P(x) = Σ_l log N_l(x) + log p(x)`` ([T] eq. 3, 7 as the author's code builds it)."""
    counts = active_counts(trace).to(log_p.dtype)
    return torch.log(counts).sum(1) + log_p


def region_statistics(ids: np.ndarray) -> dict[str, float]:
    """Distinct regions, samples per region (max, mean), share of samples alone in their
    region, and the entropy (nats) of the empirical region distribution."""
    _, sizes = np.unique(ids, return_counts=True)
    share = sizes / sizes.sum()
    return {
        "regions": int(len(sizes)),
        "max_per_region": int(sizes.max()),
        "mean_per_region": float(sizes.mean()),
        "alone_share": float((sizes == 1).sum() / sizes.sum()),
        "entropy": float(-(share * np.log(share)).sum()),
    }


def shared_region_share(data_ids: np.ndarray, test_ids: np.ndarray) -> float:
    """Share of the test set's samples whose region also holds a sample of the data set (the
    command's ``--data``, typically the training set)."""
    return float(np.isin(test_ids, data_ids).mean())


def membership_weighted_mean(log_p: np.ndarray, values: np.ndarray) -> float:
    """``S_emp = Σ p(x) v(x) / Σ p(x)`` with weights from ``log p`` (computed stably)."""
    log_p = np.asarray(log_p, dtype=np.float64)
    weights = np.exp(log_p - log_p.max())
    return float((weights * values).sum() / weights.sum())
