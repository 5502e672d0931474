"""Data-free features of the weights: heavy-tail spectra, stable ranks and weight moments.

Per Linear layer, from its raw weight W (out × in, as the checkpoint stores it):

* the eigenvalues λ of WᵀW, the squared singular values of W (min(out, in) of them);
* their power-law tail exponent α as WeightWatcher fits it (Martin & Mahoney 2021, with
  Clauset, Shalizi & Newman 2009's method): over the eigenvalues above 1e-5, sorted, each one
  except the largest is a candidate x_min; for the tail λ ≥ x_min (n values) the continuous
  MLE α = 1 + n / Σ ln(λ_i / x_min) and the Kolmogorov–Smirnov distance
  D = max_j |1 − (λ_(j)/x_min)^{1−α} − j/n| (j = 0..n−1 over the sorted tail; D = 1 when α ≤ 1);
  the fit is the candidate of least D (the first on a tie). A layer with fewer than
  :data:`MIN_EVALS` such eigenvalues has no meaningful tail: its α is NaN;
* the weighted α̂ = α · log10 λ_max;
* the stable rank ‖W‖_F² / ‖W‖_2² = Σλ / λ_max;
* weight moments (Unterthiner et al. 2020): the mean, standard deviation (ddof = 0) and the
  25th, 50th and 75th percentiles of W's entries.

:func:`spectra_features` aggregates over layers: ``ww_alpha_mean`` and
``ww_alpha_weighted_mean`` are means over the layers with a fit (NaN when none has one);
``stable_rank_mean`` and ``weight_{mean,std,q25,q50,q75}`` are means over all Linear layers.

Martin, Peng, Mahoney (2021), *Predicting trends in the quality of state-of-the-art neural
networks without access to training or testing data*, Nature Communications. Clauset, Shalizi,
Newman (2009), *Power-law distributions in empirical data*, SIAM Review. Unterthiner, Keysers,
Gelly, Bousquet, Tolstikhin (2020), *Predicting neural network accuracy from weights*, arXiv.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..network import Network

EVALS_THRESHOLD = 1e-5
"""Eigenvalues at most this are left out of the fit (WeightWatcher's ``EVALS_THRESH``)."""
MIN_EVALS = 20
"""A layer needs at least this many eigenvalues above the threshold for an α (else NaN): a
10-class output layer has 10, where a tail fit means nothing."""


@dataclass(frozen=True)
class PowerLawFit:
    """A power-law tail fit: exponent ``alpha``, lower cut ``xmin``, KS distance ``ks`` and the
    number of eigenvalues in the tail."""

    alpha: float
    xmin: float
    ks: float
    tail: int


NO_FIT = PowerLawFit(math.nan, math.nan, math.nan, 0)


def eigenvalues(weight: torch.Tensor | np.ndarray) -> np.ndarray:
    """The eigenvalues of WᵀW that can be nonzero (the squared singular values of W), ascending:
    those of the smaller Gram matrix, W Wᵀ or WᵀW (min(h, d)² instead of an SVD of W), exact to
    ε·λ_max, far below the 1e-5 under which an eigenvalue is dropped."""
    w = weight.detach().cpu().double().numpy() if torch.is_tensor(weight) else np.asarray(weight, np.float64)
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    return np.sort(np.clip(np.linalg.eigvalsh(gram), 0.0, None))


def powerlaw_fit(evals: np.ndarray, min_evals: int = MIN_EVALS) -> PowerLawFit:
    """WeightWatcher's power-law fit of ``evals`` (module docstring); :data:`NO_FIT` with fewer
    than ``min_evals`` eigenvalues above :data:`EVALS_THRESHOLD`.

    Martin, Peng, Mahoney (2021), *Predicting trends in the quality of state-of-the-art neural
    networks without access to training or testing data*, Nature Communications; Clauset,
    Shalizi, Newman (2009), *Power-law distributions in empirical data*, SIAM Review.
    """
    x = np.sort(np.asarray(evals, dtype=np.float64))
    x = x[x > EVALS_THRESHOLD]
    n = len(x)
    if n < max(min_evals, 2):
        return NO_FIT
    logs = np.log(x)
    counts = n - np.arange(n - 1)  # tail sizes for the candidates x_0 .. x_{n-2}
    suffix = np.cumsum(logs[::-1])[::-1][: n - 1]  # Σ_{j ≥ i} ln x_j
    with np.errstate(divide="ignore"):
        alphas = 1.0 + counts / (suffix - counts * logs[: n - 1])
    ks = np.ones(n - 1)
    for i in np.flatnonzero(alphas > 1):
        tail = x[i:]
        empirical = np.arange(len(tail)) / len(tail)
        ks[i] = np.max(np.abs(1.0 - (tail / x[i]) ** (1.0 - alphas[i]) - empirical))
    best = int(np.argmin(ks))
    return PowerLawFit(float(alphas[best]), float(x[best]), float(ks[best]), int(counts[best]))


def stable_rank(evals: np.ndarray) -> float:
    """‖W‖_F² / ‖W‖_2² = Σ λ / max λ from the eigenvalues of WᵀW (NaN for a zero matrix)."""
    top = float(np.max(evals)) if len(evals) else 0.0
    return float(np.sum(evals) / top) if top > 0 else math.nan


def weight_moments(weight: torch.Tensor | np.ndarray) -> dict[str, float]:
    """Mean, standard deviation (ddof = 0) and the 25th, 50th, 75th percentiles (linear) of the
    entries (Unterthiner, Keysers, Gelly, Bousquet, Tolstikhin 2020, *Predicting neural network
    accuracy from weights*)."""
    w = weight.detach().cpu().double().numpy() if torch.is_tensor(weight) else np.asarray(weight, np.float64)
    w = w.ravel()
    q25, q50, q75 = np.quantile(w, [0.25, 0.5, 0.75])
    return {"mean": float(w.mean()), "std": float(w.std()), "q25": q25, "q50": q50, "q75": q75}


def layer_spectra(network: Network) -> list[dict[str, float]]:
    """Per Linear layer: ``alpha``, ``alpha_weighted``, ``xmin``, ``ks``, ``stable_rank`` and the
    weight moments (``weight_mean`` ...)."""
    rows = []
    for layer in network.layers:
        evals = eigenvalues(layer.weight)
        fit = powerlaw_fit(evals)
        top = float(evals.max()) if len(evals) else 0.0
        weighted = fit.alpha * math.log10(top) if top > 0 else math.nan
        row = {"alpha": fit.alpha, "alpha_weighted": weighted, "xmin": fit.xmin, "ks": fit.ks}
        row["stable_rank"] = stable_rank(evals)
        row.update({f"weight_{k}": float(v) for k, v in weight_moments(layer.weight).items()})
        rows.append(row)
    return rows


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def spectra_features(network: Network) -> dict[str, float]:
    """The per-network aggregates of :func:`layer_spectra` (module docstring)."""
    rows = layer_spectra(network)
    out = {
        "ww_alpha_mean": _mean([r["alpha"] for r in rows]),
        "ww_alpha_weighted_mean": _mean([r["alpha_weighted"] for r in rows]),
        "stable_rank_mean": float(np.mean([r["stable_rank"] for r in rows])),
    }
    for key in ("mean", "std", "q25", "q50", "q75"):
        out[f"weight_{key}"] = float(np.mean([r[f"weight_{key}"] for r in rows]))
    return out
