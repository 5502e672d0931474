"""Upper bounds on tangent sensitivity ``||T(x)||_F`` and on ``||J_logit(x)||_F``, all in log10
([T] Thm 3.1–3.2).

Every bound works on the *folded* weights ``F_l = diag(s_l) W_l`` (``s_l = γ/sqrt(σ² + eps)``,
1 without BatchNorm) that the forward pass uses, and bounds the ``||T||`` of
:mod:`tsens.tangent`, i.e. with respect to the checkpoint's own W, b, γ, β. Inside a
region (``G_k = ∂f/∂z_k``, ``A_{k−1} = ∂a_{k−1}/∂x``, ``R_k = diag(1/σ_k) W_k A_{k−1}``)

    ||T||_F² = Σ_k ||G_k diag(s_k)||_F² ||A_{k−1}||_F²  +  Σ_{k with γ} Σ_j ||G_k e_j||² ||e_jᵀ R_k||²

(``all`` reading): the W term because ``∂f/∂W_raw = (G diag(s))ᵀ aᵀ``, the γ term because
``∂f_c/∂γ_j = G_cj (u_j + b_j − μ_j)/σ_j`` whose x-derivative is ``G_cj row_j(W_k A_{k−1})/σ_j``.
Biases and β have constant gradients inside a region and contribute nothing. ``G_k`` and
``A_{k−1}`` are products of folded weights and slope matrices ``|D| <= I``, so every bound holds
for any slopes |φ'| <= 1. Three bounds of each term:

* ``paper`` ([T] Thm 3.1): every entry of T for an edge of layer k is at most
  ``N_k · S_k · Π_{l≠k} m_l`` with ``m_l = max|F_l|``, ``S_k = max|s_k|`` and ``N_k`` the paths
  through one edge; ``Q_k = n·d·h_{k−1}·h_k`` entries can be non-zero (``h_0 = h_L = 1``). The
  γ entries of layer k are at most ``P_k · ρ_k · Π_{l≠k} m_l`` with ``ρ_k = max_ja |W_ja|/σ_j``
  and ``P_k = Π_{hidden j≠k} h_j`` paths through one unit, on ``n·d·h_k`` entries.
* ``path``: ``|G_k| <= U_k = |F_L|···|F_{k+1}|`` and ``|A_{k−1}| <= V_k =
  |F_{k−1}|···|F_1|`` entrywise, so the W term is at most ``||U_k diag|s_k| ||_F² ||V_k||_F²`` and
  the γ term ``Σ_j ||U_k e_j||² ||e_jᵀ |W_k| V_k||²/σ_j²``.
* ``spectral``: ``||M_1···M_r||_F <= ||M_i||_F Π_{j≠i} ||M_j||_2`` for any i; each
  Frobenius norm above is bounded by the smallest such placement over its chain of factors,
  counting the identities ``I_n`` and ``I_d`` at the ends (so ``sqrt(n) Π ||·||_2`` is one of the
  options). The γ term is ``<= min(||G_k||_2² ||R_k||_F², ||G_k||_F² ||R_k||_2²)``, one placement
  over the joint chain.

``sum`` reading: every tangent bound is the ``all`` bound times sqrt(n). The same
three ideas bound ``||J_logit||_F``: ``sqrt(n d) Π_hidden h_j Π_l m_l`` (paths from i to o times
the largest path weight, per entry), ``|| |F_L|···|F_1| ||_F``, and the chain placement over
``I_n, F_L, ..., F_1, I_d``.

Gaussian bounds, from μ, σ of the total active count N(x) on data: ``gauss`` is
``paper`` with every path count (``N_k`` and ``P_k``) replaced by ``E|N|^{L−1}/(L−1)^{L−1}``;
``gauss_paper`` is the author's ``H · w^{k−1} · E|N|^{k−1}/(sqrt(π) k^k)`` (k hidden layers,
H the widest, ``w = Π_l max|W_l|`` of the raw weights), not scaled by the reading.

Everything is evaluated in float64 on the CPU, in log10: products of norms are sums of logs,
sums of terms are log-sum-exps, and matrix products carry a separate log10 scale, so deep
networks neither overflow nor underflow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .choices import BOUNDS, READINGS
from .compute import Compute
from .datasets import Dataset
from .errors import TsensError
from .kummer import P_MAX, log10_gaussian_abs_moment
from .measures import Options
from .network import Layer, Network
from .stream import Progress, SetResult, measure

Scaled = tuple[torch.Tensor, float]
"""A matrix as (M, log10 c) standing for c·M, with max|M| = 1 (or M = 0 and log10 c = −inf)."""


def _finite_or_none(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _log10(x: float) -> float:
    return math.log10(x) if x > 0 else -math.inf


def _log10_sum(logs: Sequence[float]) -> float:
    """log10 Σ 10^v, exact for −inf entries (the empty sum is −inf)."""
    top = max(logs, default=-math.inf)
    if top == -math.inf:
        return -math.inf
    return top + math.log10(sum(10.0 ** (v - top) for v in logs))


def _scaled(m: torch.Tensor, log_scale: float = 0.0) -> Scaled:
    peak = float(m.abs().max()) if m.numel() else 0.0
    if peak == 0.0 or log_scale == -math.inf:
        return torch.zeros_like(m), -math.inf
    return m / peak, log_scale + math.log10(peak)


def _matmul(a: Scaled, b: Scaled) -> Scaled:
    return _scaled(a[0] @ b[0], a[1] + b[1])


def _log10_sqnorm(m: Scaled) -> float:
    """log10 ||c·M||_F²."""
    return 2 * m[1] + _log10(float(m[0].square().sum()))


def _norms(m: torch.Tensor) -> tuple[float, float]:
    """(log10 ||m||_F, log10 ||m||_2), computed on m / max|m| so neither overflows."""
    mat, log_scale = _scaled(m)
    if log_scale == -math.inf:
        return -math.inf, -math.inf
    fro = float(torch.linalg.matrix_norm(mat, "fro"))
    spectral = float(torch.linalg.matrix_norm(mat, 2))
    return log_scale + math.log10(fro), log_scale + math.log10(spectral)


def _chain(factors: Sequence[tuple[float, float]]) -> float:
    """log10 bound on ``||M_1 D M_2 D ... M_r||_F`` (|D| <= I) from each factor's (log10 ||·||_F,
    log10 ||·||_2): the Frobenius norm on the best factor, spectral norms on the rest."""
    spectral = [s for _, s in factors]
    if any(s == -math.inf for s in spectral):
        return -math.inf
    return sum(spectral) + min(f - s for f, s in factors)


def _identity(k: int) -> tuple[float, float]:
    return 0.5 * math.log10(k), 0.0


def _check_finite(network: Network) -> None:
    for i, layer in enumerate(network.layers, 1):
        tensors = dict(layer.parameters())
        if layer.norm is not None:
            tensors["bn.running_mean"] = layer.norm.running_mean
            tensors["bn.std"] = layer.norm.std
        for key, t in tensors.items():
            if not bool(torch.isfinite(t).all()):
                raise TsensError(
                    f"{network.path or 'network'}: layer {layer.name or i} {key} holds NaN or inf "
                    "(or a negative running_var); bounds need finite parameters"
                )


def _gamma_std(layer: Layer) -> torch.Tensor | None:
    """σ_j = sqrt(running_var + eps) of a BatchNorm with γ, else None (no γ term)."""
    norm = layer.norm
    return norm.std if norm is not None and norm.weight is not None else None


@dataclass(frozen=True)
class _Prepared:
    """A network on the CPU in float64 with the per-layer quantities every bound reads."""

    network: Network
    raw: list[torch.Tensor]
    folded: list[torch.Tensor]
    scales: list[torch.Tensor | None]
    stds: list[torch.Tensor | None]

    @classmethod
    def of(cls, network: Network) -> _Prepared:
        _check_finite(network)
        net = network.to("cpu", torch.float64)
        return cls(
            net,
            [layer.weight for layer in net.layers],
            [layer.folded_weight for layer in net.layers],
            [layer.scale for layer in net.layers],
            [_gamma_std(layer) for layer in net.layers],
        )

    @property
    def depth(self) -> int:
        return len(self.raw)

    @property
    def d(self) -> int:
        return self.raw[0].shape[1]

    @property
    def n(self) -> int:
        return self.raw[-1].shape[0]

    @property
    def hidden(self) -> tuple[int, ...]:
        return tuple(w.shape[0] for w in self.raw[:-1])


def weight_statistics(network: Network) -> dict[str, list[float | None]]:
    """Per Linear layer: max-abs, Frobenius and spectral norms of the raw weight and of the
    folded one (what the bounds read), and ``bn_scale_max = max|γ/sqrt(σ²+eps)|``
    (None without BatchNorm)."""
    prep = _Prepared.of(network)
    out: dict[str, list[float | None]] = {
        k: []
        for k in (
            "max_abs",
            "fro",
            "spectral",
            "folded_max_abs",
            "folded_fro",
            "folded_spectral",
            "bn_scale_max",
        )
    }
    for raw, folded, scale in zip(prep.raw, prep.folded, prep.scales, strict=True):
        for prefix, w in (("", raw), ("folded_", folded)):
            out[prefix + "max_abs"].append(float(w.abs().max()))
            out[prefix + "fro"].append(float(torch.linalg.matrix_norm(w, "fro")))
            out[prefix + "spectral"].append(float(torch.linalg.matrix_norm(w, 2)))
        out["bn_scale_max"].append(None if scale is None else float(scale.abs().max()))
    return out


def log10_w(network: Network) -> float:
    """log10 of ``w = Π_l max|W_l|`` over the raw weight matrices ([T] eq. 5)."""
    return sum(_log10(float(layer.weight.detach().abs().max())) for layer in network.layers)


@dataclass(frozen=True)
class Bounds:
    """Data-free bounds of one network, log10.

    ``tangent``/``jacobian`` map each of :data:`BOUNDS` to log10 of the bound on ``||T||_F`` (in
    ``reading``) and ``||J_logit||_F``; ``tangent_terms`` gives per Linear layer k the log10 of
    t_k with ``Σ_k t_k² = B²`` (layer k's W and γ contributions).
    """

    reading: str
    tangent: dict[str, float]
    jacobian: dict[str, float]
    tangent_terms: dict[str, list[float]]

    @property
    def tightest_tangent(self) -> str:
        return _tightest(self.tangent)

    @property
    def tightest_jacobian(self) -> str:
        return _tightest(self.jacobian)


def _tightest(values: dict[str, float]) -> str:
    """The smallest bound; ties (within 1e-9 decades, e.g. path and spectral of a one-hidden-layer
    net) go to the first of :data:`BOUNDS`."""
    best = min(values.values())
    return next(b for b in BOUNDS if values[b] <= best + 1e-9)


def _paper_sq_terms(prep: _Prepared, edge_paths: list[float], node_paths: list[float]) -> list[float]:
    """log10 of layer k's part of ``B_paper²`` given log10 path counts through one edge (W) and
    through one unit (γ) of each layer k (module docstring)."""
    n, d, depth = prep.n, prep.d, prep.depth
    widths = (1, *prep.hidden, 1)  # h_0 = h_L = 1 for the entry counts
    log_m = [_log10(float(f.abs().max())) for f in prep.folded]
    terms = []
    for k in range(1, depth + 1):
        others = sum(v for l, v in enumerate(log_m, 1) if l != k)
        scale = prep.scales[k - 1]
        log_s = 0.0 if scale is None else _log10(float(scale.abs().max()))
        q = math.log10(n * d * widths[k - 1] * widths[k])
        parts = [q + 2 * (edge_paths[k - 1] + log_s + others)]
        std = prep.stds[k - 1]
        if std is not None:
            rho = _log10(float((prep.raw[k - 1].abs() / std[:, None]).max()))
            parts.append(math.log10(n * d * widths[k]) + 2 * (node_paths[k - 1] + rho + others))
        terms.append(_log10_sum(parts))
    return terms


def _paper_counts(prep: _Prepared) -> tuple[list[float], list[float]]:
    """log10 of N_k (paths through an edge of layer k) and P_k (through a unit of layer k)."""
    log_h = [math.log10(h) for h in prep.hidden]  # hidden layer j = index j−1
    edge = [sum(v for j, v in enumerate(log_h, 1) if j not in (k - 1, k)) for k in range(1, prep.depth + 1)]
    node = [sum(v for j, v in enumerate(log_h, 1) if j != k) for k in range(1, prep.depth + 1)]
    return edge, node


def _path_sq_terms(prep: _Prepared) -> tuple[list[float], float]:
    """log10 of layer k's part of ``B_path²``, and log10 ``|| |F_L|···|F_1| ||_F``."""
    depth = prep.depth
    # U_k = |F_L| ... |F_{k+1}| (n × h_k), U_L = I_n.
    ups: list[Scaled] = [(torch.eye(prep.n, dtype=torch.float64), 0.0)]
    for k in range(depth, 0, -1):
        ups.append(_matmul(ups[-1], _scaled(prep.folded[k - 1].abs())))
    ups.reverse()  # ups[k] = U_k, k = 0..L
    terms = []
    v: Scaled | None = None  # V_k = |F_{k−1}| ... |F_1| (h_{k−1} × d); None = I_d
    for k in range(1, depth + 1):
        u_mat, u_log = ups[k]
        scale, std = prep.scales[k - 1], prep.stds[k - 1]
        u_s = u_mat if scale is None else u_mat * scale.abs()
        v_sq = math.log10(prep.d) if v is None else _log10_sqnorm(v)
        parts = [_log10_sqnorm((u_s, u_log)) + v_sq]
        w_abs = _scaled(prep.raw[k - 1].abs())
        y = w_abs if v is None else _matmul(w_abs, v)  # |W_k| V_k
        if std is not None:
            weighted = (u_mat.square().sum(0) * y[0].square().sum(1) / std.square()).sum()
            parts.append(2 * (u_log + y[1]) + _log10(float(weighted)))
        terms.append(_log10_sum(parts))
        v = y if scale is None else _scaled(scale.abs()[:, None] * y[0], y[1])
    return terms, 0.5 * _log10_sqnorm(ups[0])


def _spectral_sq_terms(prep: _Prepared) -> tuple[list[float], float]:
    """log10 of layer k's part of ``B_spectral²``, and the chain bound on ``||J_logit||_F``."""
    depth = prep.depth
    norms = [_norms(f) for f in prep.folded]
    top, bottom = _identity(prep.n), _identity(prep.d)
    terms = []
    for k in range(1, depth + 1):
        above = [top, *norms[k:][::-1]]  # I_n, F_L, ..., F_{k+1}
        below = [*norms[: k - 1][::-1], bottom]  # F_{k−1}, ..., F_1, I_d
        scale, std = prep.scales[k - 1], prep.stds[k - 1]
        g_chain = above if scale is None else [*above, _norms(torch.diag(scale.abs()))]
        parts = [2 * (_chain(g_chain) + _chain(below))]
        if std is not None:
            r_first = _norms(prep.raw[k - 1] / std[:, None])
            parts.append(2 * _chain([*above, r_first, *below]))
        terms.append(_log10_sum(parts))
    return terms, _chain([top, *norms[::-1], bottom])


def _combine(sq_terms: list[float], log_factor: float) -> tuple[float, list[float]]:
    """(log10 sqrt(Σ terms)·factor, per-term log10 sqrt(term)·factor)."""
    return (
        0.5 * _log10_sum(sq_terms) + log_factor,
        [0.5 * t + log_factor for t in sq_terms],
    )


def _reading_factor(reading: str, n: int) -> float:
    """log10 of the factor from the ``all`` to the requested reading: sqrt(n) for ``sum``."""
    if reading not in READINGS:
        raise TsensError(f"`reading` {reading!r}: expected one of {', '.join(READINGS)}")
    return 0.5 * math.log10(n) if reading == "sum" else 0.0


def data_free_bounds(network: Network, reading: str = "sum") -> Bounds:
    """``paper``, ``path`` and ``spectral`` bounds on ``sup_x ||T(x)||_F`` (in ``reading``) and
    ``sup_x ||J_logit(x)||_F``, log10 ([T] Thm 3.1; module docstring)."""
    prep = _Prepared.of(network)
    factor = _reading_factor(reading, prep.n)
    edge, node = _paper_counts(prep)
    path_terms, jac_path = _path_sq_terms(prep)
    spectral_terms, jac_spectral = _spectral_sq_terms(prep)
    tangent, terms = {}, {}
    for name, sq in (
        ("paper", _paper_sq_terms(prep, edge, node)),
        ("path", path_terms),
        ("spectral", spectral_terms),
    ):
        tangent[name], terms[name] = _combine(sq, factor)
    log_m = sum(_log10(float(f.abs().max())) for f in prep.folded)
    jac_paper = 0.5 * math.log10(prep.n * prep.d) + sum(math.log10(h) for h in prep.hidden) + log_m
    jacobian = {"paper": jac_paper, "path": jac_path, "spectral": jac_spectral}
    return Bounds(reading, tangent, jacobian, terms)


def _log10_moment(p: int, mu: float, sigma: float, network: Network) -> float:
    if p > P_MAX:
        raise TsensError(
            f"{network.path or 'network'}: the Gaussian bounds need E|N|^{p}; orders above {P_MAX:g} "
            "(that many hidden layers) are not supported"
        )
    return log10_gaussian_abs_moment(p, mu, sigma)


def gaussian_bounds(
    network: Network, mu: float, sigma: float, reading: str = "sum"
) -> tuple[dict[str, float], list[float]]:
    """``gauss`` and ``gauss_paper`` (log10) for a total active count N ~ Normal(μ, σ²),
    and the per-layer log10 terms of ``gauss`` (as in :class:`Bounds`).

    ``gauss_paper`` is NaN for a network without hidden layers (k = 0: no H, and k^k/w^{k−1}
    are not the author's case).
    """
    prep = _Prepared.of(network)
    factor = _reading_factor(reading, prep.n)
    k = prep.depth - 1  # hidden layers
    log_k_k = k * math.log10(k) if k else 0.0  # k^k, with 0^0 = 1
    log_paths = _log10_moment(k, mu, sigma, network) - log_k_k  # E|N|^k / k^k
    gauss, terms = _combine(_paper_sq_terms(prep, [log_paths] * prep.depth, [log_paths] * prep.depth), factor)
    return {"gauss": gauss, "gauss_paper": log10_gauss_paper(network, mu, sigma)}, terms


def log10_gauss_paper(network: Network, mu: float, sigma: float) -> float:
    """The author's Gaussian bound ``H · w^{k−1} · E|N|^{k−1} / (sqrt(π) k^k)`` in log10 ([T]
    eq. 2; k hidden layers, H the widest, ``w = Π_l max|W_l|`` of the raw weights), for a total
    active count N ~ Normal(μ, σ²); NaN without hidden layers (not the author's case)."""
    k = network.depth - 1
    if k == 0:
        return math.nan
    return (
        math.log10(max(network.hidden_widths))
        + ((k - 1) * log10_w(network) if k > 1 else 0.0)
        + _log10_moment(k - 1, mu, sigma, network)
        - 0.5 * math.log10(math.pi)
        - k * math.log10(k)
    )


@dataclass(frozen=True)
class Measured:
    """What one pass over a data set gives the bounds to compare with ([T] Def. 3.1, Thm 3.2).

    ``active_mean``/``active_std`` fit N(x) = Σ_l N_l(x) with the population standard deviation
    (ddof = 0, ``np.std``), as the author's code does for ``gauss_paper``; both are None for a
    network without hidden layers (no active counts)."""

    samples: int
    tangent_mean: float
    tangent_max: float
    jacobian_mean: float
    jacobian_max: float
    active_mean: float | None
    active_std: float | None
    layer_active_mean: tuple[float, ...]
    preprocess: str = ""
    """The preprocessing applied to the data (JSON, as recorded in provenance)."""


def measured(result: SetResult) -> Measured:
    """The means and maxima of ``tangent_fro`` and ``jac_logit_fro`` and the Gaussian fit of the
    total active count, from a pass that measured ``tangent``, ``jacobian`` (and ``active``)."""
    cols = result.columns
    tangent = cols["tangent_fro"].astype(np.float64)
    jac = cols["jac_logit_fro"].astype(np.float64)
    active = "active_total" in cols
    total = cols["active_total"].astype(np.float64) if active else None
    layers = sorted(k for k in cols if k.startswith("active_l"))
    return Measured(
        samples=result.samples,
        tangent_mean=float(tangent.mean()),
        tangent_max=float(tangent.max()),
        jacobian_mean=float(jac.mean()),
        jacobian_max=float(jac.max()),
        active_mean=float(total.mean()) if total is not None else None,
        active_std=float(total.std()) if total is not None else None,
        layer_active_mean=tuple(float(cols[k].mean()) for k in sorted(layers, key=lambda k: int(k[8:]))),
        preprocess=result.dataset.preprocess.to_json(),
    )


def measure_for_bounds(
    network: Network,
    dataset: Dataset,
    *,
    reading: str = "sum",
    compute: Compute | None = None,
    progress: Progress | None = None,
) -> Measured:
    """One pass of ``dataset`` measuring ``tangent`` (in ``reading``), ``jacobian`` and, with
    hidden layers, ``active``; see :func:`measured`."""
    names = ["tangent", "jacobian", *(["active"] if network.depth > 1 else [])]
    result = measure(
        network, dataset, names, options=Options(reading=reading), compute=compute, progress=progress
    )
    return measured(result)


@dataclass(frozen=True)
class Report:
    """Everything ``tsens bound`` shows for one checkpoint."""

    network: Network
    bounds: Bounds
    measured: Measured | None = None
    gauss: dict[str, float] | None = None
    gauss_terms: list[float] | None = None

    def row(self) -> dict[str, Any]:
        """The checkpoint's table row: weight statistics (per-layer lists), log10 bounds,
        tightest, and with data the Gaussian fit, bounds and measured values (log10)."""
        net, b = self.network, self.bounds
        row: dict[str, Any] = {
            "checkpoint": net.path,
            "architecture": "-".join(str(w) for w in net.widths),
            "activation": net.activation.spec,
            "batchnorm": net.has_batchnorm,
            "reading": b.reading,
        }
        stats = weight_statistics(net)
        row.update({k: v for k, v in stats.items() if k != "bn_scale_max"})
        row["log10_w"] = log10_w(net)
        row.update({f"log10_tangent_{k}": b.tangent[k] for k in BOUNDS})
        row["tightest_tangent"] = b.tightest_tangent
        row.update({f"log10_jacobian_{k}": b.jacobian[k] for k in BOUNDS})
        row["tightest_jacobian"] = b.tightest_jacobian
        if self.measured is not None:
            m, g = self.measured, self.gauss or {}
            row.update(
                {
                    "samples": m.samples,
                    "active_mean": m.active_mean,
                    "active_std": m.active_std,
                    "log10_tangent_gauss": g.get("gauss"),
                    "log10_tangent_gauss_paper": g.get("gauss_paper"),
                    "log10_tangent_measured_mean": _log10(m.tangent_mean),
                    "log10_tangent_measured_max": _log10(m.tangent_max),
                    "log10_jacobian_measured_mean": _log10(m.jacobian_mean),
                    "log10_jacobian_measured_max": _log10(m.jacobian_max),
                }
            )
        return row

    def summary(self) -> dict[str, Any]:
        """What ``tsens bound``'s summary shows: the log10 tangent bounds and the tightest, the
        tightest Jacobian bound, and with data the Gaussian bounds, the largest measured ‖T‖ and
        ``looseness`` = tightest − measured max in decades (None where the measured max is 0, as
        with a dead layer, or a Gaussian bound does not apply)."""
        net, b = self.network, self.bounds
        row: dict[str, Any] = {
            "checkpoint": net.path,
            "architecture": "-".join(str(w) for w in net.widths),
            "reading": b.reading,
            **{f"log10_tangent_{k}": b.tangent[k] for k in BOUNDS},
            "tightest_tangent": b.tightest_tangent,
            "log10_jacobian_tightest": b.jacobian[b.tightest_jacobian],
        }
        if self.measured is not None:
            g = self.gauss or {}
            t_max = _log10(self.measured.tangent_max)
            row.update(
                {
                    "log10_tangent_gauss": _finite_or_none(g.get("gauss")),
                    "log10_tangent_gauss_paper": _finite_or_none(g.get("gauss_paper")),
                    "log10_tangent_measured_max": t_max,
                    "looseness": _finite_or_none(b.tangent[b.tightest_tangent] - t_max),
                }
            )
        return row

    def layer_rows(self) -> dict[str, list[Any]]:
        """One row per Linear layer: shape, raw and folded weight statistics, the BN scale and
        each tangent bound's layer term (log10 t_k, Σ_k t_k² = B²); with data the layer's mean
        active count (None for the output layer) and its ``gauss`` term."""
        net = self.network
        depth = net.depth
        rows: dict[str, list[Any]] = {
            "checkpoint": [net.path] * depth,
            "layer": list(range(1, depth + 1)),
            "name": [layer.name for layer in net.layers],
            "in_features": [layer.in_features for layer in net.layers],
            "out_features": [layer.out_features for layer in net.layers],
            "batchnorm": [layer.norm is not None for layer in net.layers],
        }
        rows.update(weight_statistics(net))
        rows.update({f"log10_tangent_{k}_term": self.bounds.tangent_terms[k] for k in BOUNDS})
        if self.measured is not None and self.gauss_terms is not None:
            rows["log10_tangent_gauss_term"] = list(self.gauss_terms)
            rows["active_mean"] = [*self.measured.layer_active_mean, None]
        return rows


def report(
    network: Network,
    *,
    reading: str = "sum",
    dataset: Dataset | None = None,
    compute: Compute | None = None,
    progress: Progress | None = None,
) -> Report:
    """Bounds of one network and, given data, the Gaussian bounds and the measured values."""
    bounds = data_free_bounds(network, reading)
    if dataset is None:
        return Report(network, bounds)
    fit = measure_for_bounds(network, dataset, reading=reading, compute=compute, progress=progress)
    if fit.active_mean is None or fit.active_std is None:  # no hidden layer: no active counts
        return Report(network, bounds, fit)
    gauss, terms = gaussian_bounds(network, fit.active_mean, fit.active_std, reading)
    return Report(network, bounds, fit, gauss, terms)
