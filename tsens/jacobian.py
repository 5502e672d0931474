"""Input–output Jacobian norms per sample ([N] §3).

``J_logit = G_1 diag(s_1) W_1`` and, with the thin SVD ``W_1 = U S Vᵀ`` (see
:mod:`tsens.trace`), ``J_logit = J̃ Vᵀ`` with ``J̃ = G_1 diag(s_1) U S`` (n × r, r <= min(h_1, d)),
so the Gram matrix ``H = J Jᵀ = J̃ J̃ᵀ`` costs nothing of size d per sample. From H:

* ``||J_logit||_F² = tr H``;
* ``||J_prob||_F² = tr(P H P)`` with ``P = diag(s) − s sᵀ``, s = softmax(f(x)), since
  ``J_prob = P J_logit``;
* ``||J_y||_2² = (P H P)_yy``, the true class's row of J_prob ([N] App. A.3).
"""

from __future__ import annotations

import torch

from .trace import Trace


def reduced_jacobian(trace: Trace) -> torch.Tensor:
    """``J̃`` (B × n × r) with ``J̃ J̃ᵀ = J_logit J_logitᵀ`` for every sample."""
    tr = trace.tracer
    factor = tr.first_layer_factor
    scale = tr.scales[0]
    if scale is not None:
        factor = scale[:, None] * factor
    if not trace.slopes:  # a single Linear: the Jacobian is the (folded) weight itself
        return factor.expand(trace.batch_size, *factor.shape)
    return trace.output_gradients[0] @ factor


def jacobian_gram(trace: Trace) -> torch.Tensor:
    """``H = J_logit J_logitᵀ`` per sample (B × n × n)."""
    j = reduced_jacobian(trace)
    return j @ j.transpose(1, 2)


def jacobian_norms(trace: Trace, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per-sample ``jac_logit_fro``, ``jac_prob_fro`` and, with labels, ``jac_true_class``."""
    h = jacobian_gram(trace)
    s = torch.softmax(trace.logits, dim=1)
    p = torch.diag_embed(s) - s[:, :, None] * s[:, None, :]
    h_prob = p @ h @ p
    out = {
        "jac_prob_fro": h_prob.diagonal(dim1=1, dim2=2).sum(1).clamp_min(0).sqrt(),
        "jac_logit_fro": h.diagonal(dim1=1, dim2=2).sum(1).clamp_min(0).sqrt(),
    }
    if labels is not None:
        out["jac_true_class"] = (
            h_prob[torch.arange(len(labels), device=labels.device), labels, labels].clamp_min(0).sqrt()
        )
    return out


def loss_relation(loss: torch.Tensor, jac_logit_fro: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
    """[N] App. A.3: what the per-sample loss l predicts for the Jacobian norms.

    With ``M = mean ||J_logit||_F² / n`` over the data set and ``σ_y = e^{-l}``:
    eq. 5 brackets ``||J_y||_2`` between ``sqrt(nM/(n−1)) σ_y(1−σ_y)`` and ``sqrt(2M) σ_y(1−σ_y)``
    (the lower one also bounds ``||J_prob||_F``, eq. 6), and eq. 7 approximates
    ``||J_prob||_F ≈ sqrt(M)/(n−1) (1−σ_y) sqrt(n² σ_y² + n − 2)``.
    """
    m = jac_logit_fro.square().mean() / n
    p = torch.exp(-loss)
    core = p * (1 - p)
    return {
        "jac_true_lower": (n * m / (n - 1)).sqrt() * core,
        "jac_true_upper": (2 * m).sqrt() * core,
        "jac_prob_eq7": m.sqrt() / (n - 1) * (1 - p) * (n**2 * p**2 + n - 2).sqrt(),
    }
