"""Set-level statistics: one flat row per checkpoint and data set, as each command shows them.

Every number a command's summary shows comes from here, computed from the
:class:`~tsens.stream.SetResult` of one pass, so a notebook gets exactly what ``--summary``
writes. Statistics of a column ignore NaN (counted apart) and keep infinities: a mean or
quantile that is infinite is reported as inf.

* :func:`describe`: mean and the 5/25/50/75/95 % quantiles (linear interpolation).
* :func:`jacobian_summary`: those of ‖J_prob‖_F, ‖J_logit‖_F, ‖T‖_F; with labels the loss,
  accuracy, Spearman's ρ of each measure with the per-sample loss, and [N] App. A.3: the median
  of ‖J_prob‖_F over eq. 7's prediction and the share of samples whose ‖J_y‖₂ lies inside
  eq. 5's bracket.
* :func:`activations_summary`: per hidden layer and in total, the moments and normality test of
  the active count ([T] Thm 3.2) and the dead and always-active units.
* :func:`regions_summary`: region counts and occupancy entropy, the median boundary distance,
  the membership-weighted S_emp ([T] eq. 3, 7), and for further sets the share of their samples
  in a region that holds a sample of the first set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .active_units import count_statistics
from .regions import membership_weighted_mean, region_statistics, shared_region_share
from .stream import SetResult

QUANTILES = {"q05": 0.05, "q25": 0.25, "median": 0.5, "q75": 0.75, "q95": 0.95}
DESCRIBED = ("mean", *QUANTILES)
SENSITIVITY_COLUMNS = ("jac_prob_fro", "jac_logit_fro", "tangent_fro", "tangent_fro_estimate")

Row = dict[str, Any]


def quantile(sorted_values: np.ndarray, q: float) -> float:
    """The q-quantile of ascending values by linear interpolation, where an infinite neighbour
    gives an infinite quantile (NumPy would give NaN between two infinities)."""
    n = len(sorted_values)
    if n == 0:
        return math.nan
    pos = (n - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    a, b = float(sorted_values[lo]), float(sorted_values[hi])
    if a == b or pos == lo:
        return a
    if math.isinf(a) or math.isinf(b):
        return b if math.isinf(b) else a
    return a + (b - a) * (pos - lo)


def describe(values: np.ndarray) -> Row:
    """``mean``, ``q05``, ``q25``, ``median``, ``q75``, ``q95`` of the non-NaN values (NaN when
    there are none; inf when infinite values dominate)."""
    v = np.asarray(values, dtype=np.float64)
    v = np.sort(v[~np.isnan(v)])
    if len(v) == 0:
        return dict.fromkeys(DESCRIBED, math.nan)
    with np.errstate(invalid="ignore", over="ignore"):
        mean = float(v.mean()) if np.isfinite(v).all() else _infinite_mean(v)
    return {"mean": mean, **{k: quantile(v, q) for k, q in QUANTILES.items()}}


def _infinite_mean(v: np.ndarray) -> float:
    pos, neg = bool(np.isposinf(v).any()), bool(np.isneginf(v).any())
    if pos and neg:
        return math.nan
    return math.inf if pos else -math.inf


def rank_correlation(a: np.ndarray, b: np.ndarray, kind: str = "spearman") -> float:
    """Spearman's ρ or Kendall's τ-b (``kind``) over the pairs where both are finite; NaN when
    fewer than three pairs remain or either side is constant (no correlation is defined)."""
    from scipy import stats  # deferred: scipy.stats costs ~1 s of every CLI start

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if len(a) < 3 or np.all(a == a[0]) or np.all(b == b[0]):
        return math.nan
    test = stats.spearmanr if kind == "spearman" else stats.kendalltau
    return float(test(a, b).statistic)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's ρ of the finite pairs (:func:`rank_correlation`)."""
    return rank_correlation(a, b, "spearman")


def columns_of(result: SetResult) -> dict[str, np.ndarray]:
    """A pass's per-sample columns as they are (the rows of most tables)."""
    return result.columns


def _head(result: SetResult) -> Row:
    return {"checkpoint": result.network.path, "set": result.name, "samples": result.samples}


def jacobian_summary(result: SetResult) -> Row:
    """The ``tsens jacobian`` summary of one pass (module docstring)."""
    cols = result.columns
    row = _head(result)
    measured = [c for c in SENSITIVITY_COLUMNS if c in cols]
    for name in measured:
        row.update({f"{name}_{k}": v for k, v in describe(cols[name]).items()})
    if "loss" in cols:
        row["loss_mean"] = describe(cols["loss"])["mean"]
        row["accuracy"] = float(np.mean(cols["correct"])) if len(cols["correct"]) else math.nan
        for name in measured:
            row[f"spearman_{name}_loss"] = spearman(cols[name], cols["loss"])
    if "jac_prob_eq7" in cols:
        predicted = cols["jac_prob_eq7"] > 0  # eq. 7 is 0 where the loss rounds to 0
        ratios = cols["jac_prob_fro"][predicted] / cols["jac_prob_eq7"][predicted]
        row["eq7_median_ratio"] = describe(ratios)["median"]
        inside = (cols["jac_true_class"] >= 0.999 * cols["jac_true_lower"]) & (
            cols["jac_true_class"] <= 1.001 * cols["jac_true_upper"]
        )
        row["eq5_inside_share"] = float(inside.mean()) if len(inside) else math.nan
    return row


def activations_summary(result: SetResult) -> Row:
    """The ``tsens activations`` summary: per layer ``l`` (and ``total``) the keys
    ``active_{l}_{mean,variance,skewness,excess_kurtosis,normality_p}``, ``width_{l}``,
    ``dead_{l}`` (never active on this data) and ``always_on_{l}`` (always active)."""
    if result.unit_totals is None:
        raise ValueError("activations_summary needs a pass that measured `active`")
    cols = result.columns
    active = result.network.activation.active_code
    n = result.samples
    row = _head(result)
    dead_total = always_total = 0
    for l, totals in enumerate(result.unit_totals, 1):
        on = totals[:, active]
        dead, always = int((on == 0).sum()), int((on == n).sum())
        dead_total, always_total = dead_total + dead, always_total + always
        row.update({f"active_l{l}_{k}": v for k, v in count_statistics(cols[f"active_l{l}"]).items()})
        row.update({f"width_l{l}": len(totals), f"dead_l{l}": dead, f"always_on_l{l}": always})
    row.update({f"active_total_{k}": v for k, v in count_statistics(cols["active_total"]).items()})
    row.update(
        {
            "width_total": sum(len(t) for t in result.unit_totals),
            "dead_total": dead_total,
            "always_on_total": always_total,
        }
    )
    return row


def unit_frequencies(result: SetResult) -> dict[str, np.ndarray]:
    """One row per hidden unit: ``layer``, ``unit``, ``active_frequency`` (share of samples on
    the active piece) and, for three-piece activations, ``piece{k}_frequency``."""
    if result.unit_totals is None:
        raise ValueError("unit_frequencies needs a pass that measured `active`")
    totals = result.unit_totals
    n = max(result.samples, 1)
    freq = np.concatenate([t / n for t in totals])
    cols = {
        "layer": np.concatenate([np.full(len(t), l) for l, t in enumerate(totals, 1)]),
        "unit": np.concatenate([np.arange(len(t)) for t in totals]),
        "active_frequency": freq[:, result.network.activation.active_code],
    }
    if freq.shape[1] > 2:
        cols.update({f"piece{k}_frequency": freq[:, k] for k in range(freq.shape[1])})
    return cols


def regions_summary(results: Mapping[str, SetResult]) -> list[Row]:
    """The ``tsens regions`` summary, one row per set; the sets after the first also get
    ``shared_region_share``: the share of their samples whose region holds a sample of the
    first set (``data``, typically the training set)."""
    rows = []
    first = next(iter(results.values()))
    for result in results.values():
        cols = result.columns
        row = _head(result)
        row.update(region_statistics(cols["region"]))
        row["boundary_distance_median"] = describe(cols["boundary_distance"])["median"]
        row["s_emp"] = membership_weighted_mean(cols["log_membership"], cols["tangent_fro"])
        if result is not first:
            row["shared_region_share"] = shared_region_share(first.columns["region"], cols["region"])
        rows.append(row)
    return rows
