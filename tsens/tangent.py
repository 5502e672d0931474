"""Tangent sample sensitivity ``||T(x)||_F`` in closed form ([T] Def. 3.1).

``T(x) = ∂/∂x ∇_θ f(x)``. Inside an activation region, for Linear l with BatchNorm scale
``s_l = γ/sqrt(σ² + eps)`` (1 without BN), ``∂f_c/∂W_l = (G_l diag(s_l))_cᵀ a_{l-1}ᵀ`` with
``a_{l-1} = A_{l-1} x + const``, bias and β gradients are constant, and
``∂f_c/∂γ_j = G_{cj} (u_j + b_j − μ_j)/σ_j``. Hence, for the ``all`` reading,

    ||T||_F² = Σ_l ||G_l diag(s_l)||_F² ||A_{l-1}||_F²  +  Σ_{l with γ} Σ_j ||G_{:,j}||² r_l[j] / σ_j²

(``G_L = I_n``, ``||A_0||_F² = d``, ``r_l`` from :meth:`tsens.trace.Trace.input_sqnorms`), and for
the ``sum`` reading (T of ``Σ_c f_c``) every ``G_l`` is replaced by the row vector ``1ᵀ G_l``.
"""

from __future__ import annotations

import torch

from .choices import READINGS
from .errors import TsensError
from .trace import Trace


def tangent_sqnorms(
    trace: Trace,
    reading: str = "sum",
    probes: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``||T(x)||_F²`` per sample (B,); ``probes`` switches to the Hutchinson estimate."""
    if reading not in READINGS:
        raise TsensError(f"`reading` {reading!r}: expected one of {', '.join(READINGS)}")
    tr = trace.tracer
    depth = len(tr.weights)
    layers = tr.network.layers
    gammas = [l for l, layer in enumerate(layers, 1) if layer.norm and layer.norm.weight is not None]
    r = trace.input_sqnorms(max([depth - 1, *gammas]), probes, generator)

    # Squared columns of G_l (∂f/∂z_l), summed over outputs (all) or of 1ᵀG_l (sum): B × h_l.
    if reading == "all":
        columns = [g.square().sum(1) for g in trace.output_gradients]
    else:
        columns = [g.square() for g in trace.summed_output_gradients]
    n = tr.weights[-1].shape[0]
    columns.append(torch.ones(trace.batch_size, n, dtype=tr.dtype, device=tr.device))

    total = torch.zeros(trace.batch_size, dtype=tr.dtype, device=tr.device)
    a_sq = torch.full_like(total, float(tr.weights[0].shape[1]))  # ||A_0||_F² = d
    for l in range(1, depth + 1):
        scale = tr.scales[l - 1]
        col = columns[l - 1]
        g_sq = col.sum(1) if scale is None else (col * scale.square()).sum(1)
        total += g_sq * a_sq
        if l in gammas:
            total += (col * r[l - 1] / tr.network.layers[l - 1].norm.std.square()).sum(1)
        if l < depth:
            a_sq = (trace.effective_slopes(l).square() * r[l - 1]).sum(1)
    return total


def tangent_norms(
    trace: Trace,
    reading: str = "sum",
    probes: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``||T(x)||_F`` per sample (B,)."""
    return tangent_sqnorms(trace, reading, probes, generator).clamp_min(0).sqrt()
