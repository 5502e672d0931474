"""Takeuchi's information criterion (TIC) of the last layer: an estimate of the loss gap.

For a model fitted by minimizing the mean loss over n samples, TIC estimates the expected
test-minus-train loss as tr(H⁻¹ C) / n, with H = (1/n) Σ_i ∇²ℓ_i the Hessian of the mean loss
and C = (1/n) Σ_i g_i g_iᵀ the second moment of the per-sample gradients g_i = ∇ℓ_i, both at
the fitted parameters (Takeuchi 1976; for deep networks, Naganuma, Ahuja, Takagi, Motokawa,
Yokota, Ishikawa, Sato, Mitliagkas, *Takeuchi's information criteria as generalization measures
for DNNs close to NTK regime*, 2026 version, who study it for whole networks).

Here the parameters are the last layer's: θ = (W_L, b_L), K × m̃ with h̃ = (h, 1) the
penultimate features and their bias column (m̃ = m + 1; m without a bias), and ℓ the
cross-entropy with the true training label y. The logits are linear in θ, so the Gauss–Newton
matrix is the Hessian exactly:

    g_i = (p_i − e_{y_i}) ⊗ h̃_i,        H = (1/n) Σ_i (diag(p_i) − p_i p_iᵀ) ⊗ h̃_i h̃_iᵀ.

H is singular: adding the same vector to every class's row of θ changes no probability. That
null space is removed exactly by fixing the last class's row at 0 (the logits only depend on
differences; every g_i is orthogonal to the null space, so g_iᵀ H⁺ g_i is unchanged, and TIC is
invariant under reparametrization). What remains of H is inverted on its range: the
eigendecomposition of the reduced (K − 1)·m̃ matrix with eigenvalues at most
:data:`PINV_RTOL` × the largest treated as zero (dead units and a few samples leave it
singular). The training set stands in for the population: H and C are means over a fixed,
seeded subset of at most ``max_samples`` (default 1024) training samples, and the divisor is
the full training set's size n.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from .scores import softmax

PINV_RTOL = 1e-10
"""Eigenvalues of H at most this times the largest are treated as 0 (H⁺ on H's range)."""
TIC_MAX_SAMPLES = 1024
"""The training samples H and C are averaged over, at most (a fixed seeded subset)."""
TIC_MAX_DIM = 3000
"""The most reduced parameters, (K − 1)·m̃, TIC is computed for: the eigendecomposition grows
as their cube (a 10-class head on up to 332 features); beyond it :func:`tic_gap` is NaN."""


def _kron_rows(a: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Row-wise Kronecker products a_i ⊗ h_i (s × (K'·m))."""
    return (a[:, :, None] * h[:, None, :]).reshape(len(a), -1)


def _hessian_and_gradients(
    penultimate: np.ndarray, logits: np.ndarray, labels: np.ndarray, bias: bool
) -> tuple[np.ndarray, np.ndarray]:
    """H (reduced, ((K − 1)·m̃)²) and the per-sample gradients g_i as rows (s × (K − 1)·m̃)."""
    h = np.asarray(penultimate, dtype=np.float64)
    if bias:
        h = np.hstack([h, np.ones((len(h), 1))])
    p = softmax(logits)
    s, k = p.shape
    residual = p.copy()
    residual[np.arange(s), np.asarray(labels, dtype=np.int64)] -= 1.0
    q = _kron_rows(p[:, :-1], h)
    m = h.shape[1]
    hess = -_product(q.T, q)
    for c in range(k - 1):  # the block diagonal Σ_i p_ic h̃_i h̃_iᵀ
        hess[c * m : (c + 1) * m, c * m : (c + 1) * m] += _product((h * p[:, c : c + 1]).T, h)
    return hess / s, _kron_rows(residual[:, :-1], h)


@contextmanager
def _one_thread() -> Iterator[None]:
    """Torch's linear algebra on one thread: a sum's order, and so its last bits, would otherwise
    follow the thread count, which differs between a local run and a cluster's workers."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b in float64, the same to the last bit on any machine's thread count."""
    with _one_thread():
        # Copies into torch's own (aligned) memory: some BLAS kernels' last bits follow alignment.
        return (torch.tensor(a) @ torch.tensor(b)).numpy()


def tic_matrices(
    penultimate: np.ndarray, logits: np.ndarray, labels: np.ndarray, *, bias: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """H and C (module docstring) over all the given samples, in the reduced parameters:
    the first K − 1 classes' rows of (W_L, b_L), flattened class-major ((K − 1)·m̃ square)."""
    hess, g = _hessian_and_gradients(penultimate, logits, labels, bias)
    return hess, _product(g.T, g) / len(g)


def _range_basis(hess: np.ndarray, rtol: float) -> tuple[np.ndarray, np.ndarray]:
    """The eigenvalues of the symmetric ``hess`` above ``rtol`` × the largest, and their vectors."""
    if not hess.size:
        return np.zeros(0), np.zeros((0, 0))
    with _one_thread():
        values, vectors = (t.numpy() for t in torch.linalg.eigh(torch.tensor((hess + hess.T) / 2)))
    keep = values > rtol * max(values.max(), 0.0) if values.max() > 0 else np.zeros(len(values), bool)
    return values[keep], vectors[:, keep]


def tic_trace(hess: np.ndarray, second_moment: np.ndarray, rtol: float = PINV_RTOL) -> float:
    """tr(H⁺ C) with H⁺ the pseudo-inverse on H's range (eigenvalues ≤ ``rtol`` · the largest
    treated as 0)."""
    values, vectors = _range_basis(hess, rtol)
    return float(np.sum(np.einsum("ij,ij->j", vectors, _product(second_moment, vectors)) / values))


def tic_gap(
    penultimate: np.ndarray,
    logits: np.ndarray,
    labels: np.ndarray,
    *,
    max_samples: int | None = TIC_MAX_SAMPLES,
    seed: int = 0,
    bias: bool = True,
    max_dim: int = TIC_MAX_DIM,
) -> float:
    """TIC's loss gap tr(H⁺C)/n of the last layer (module docstring) from the training set's
    penultimate features (n × m), logits (n × K) and true labels; H and C over a seeded subset
    of at most ``max_samples`` samples (None: all), n the full count. ``bias``: the last layer
    has a bias (its column joins the features). 0 with one class; NaN when the features
    that are not 0 throughout give more than ``max_dim`` reduced parameters.
    """
    h = np.asarray(penultimate, dtype=np.float64)
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    n = len(z)
    if not (len(h) == n == len(y)):
        raise ValueError(f"tic_gap: {len(h)} feature rows, {n} logit rows, {len(y)} labels")
    if n == 0:
        return math.nan
    if z.shape[1] < 2:
        return 0.0
    if max_samples is not None and n > max_samples:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=max_samples, replace=False))
        h, z, y = h[rows], z[rows], y[rows]
    live = np.any(h != 0, axis=0)  # a feature that is 0 throughout (a dead unit) adds only null directions
    if (z.shape[1] - 1) * (int(live.sum()) + bias) > max_dim:
        return math.nan
    hess, g = _hessian_and_gradients(h[:, live], z, y, bias)
    values, vectors = _range_basis(hess, PINV_RTOL)
    # tr(H⁺C) = Σ_j v_jᵀ C v_j / λ_j with C = GᵀG / s, without forming C.
    return float(np.sum(np.square(_product(g, vectors)).sum(0) / values) / len(g)) / n
