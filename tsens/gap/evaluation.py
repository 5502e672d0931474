"""How good each estimator really is, whenever test labels are known.

Per estimator, across checkpoints: the mean absolute error of the test loss (nats) and of the
test accuracy (in points, 100 × fraction); Kendall's τ between predicted and true test loss, and
between the predicted gap (estimate − train) and the true gap; Jiang et al. (2020)'s granulated
τ over the hyper-parameter axes the metadata names; the measured coverage of the intervals; how
many estimates fell back; and whether it beats (a strictly lower MAE) ``naive``,
``calibrated-train``, ``doc`` and the best of the baselines
(:data:`tsens.gap.estimators.BASELINES`), for loss and for accuracy. The winner of each is
marked. Nothing is hidden: an estimator that loses is listed with its numbers.

Per label-free feature: Kendall's τ with the true loss gap and with the true accuracy gap across
checkpoints, the ranking protocol of Jiang et al. (2020) and [N] §4.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..summaries import rank_correlation
from .calibration import derived
from .estimators import BASELINES
from .features import true_gap

Row = dict[str, Any]

LABEL_FREE = (
    "conf_shift",
    "entropy_shift",
    "conf_test",
    "entropy_test",
    "log_jac_prob_test",
    "log_jac_prob_ratio",
    "log_jac_logit_test",
    "log_jac_logit_ratio",
    "log_tangent_test",
    "log_tangent_ratio",
    "active_frac_test",
    "log_active_ratio",
    "log10_kummer_test",
    "path_score_test",
    "log_membership_test",
    "log_membership_shift",
    "log_boundary_test",
    "log_boundary_ratio",
    "shared_region_share",
    "log10_w",
    "log10_fro_product",
    "log10_spectral_product",
    "nuclear_norm_test",
    "nuclear_norm_shift",
    "mano_test",
    "mano_shift",
    "energy_test",
    "energy_shift",
    "mde_test",
    "dispersion_test",
    "dispersion_shift",
    "gdscore_test",
    "gdscore_shift",
    "train_acc_minus_cot",
    "tic_gap",
    "margin_q50_test",
    "margin_q50_shift",
    "log_boundary_margin_q50_test",
    "ww_alpha_mean",
    "ww_alpha_weighted_mean",
    "stable_rank_mean",
    "weight_std",
)


def kendall(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's τ-b of the finite pairs (:func:`tsens.summaries.rank_correlation`)."""
    return rank_correlation(np.asarray(a), np.asarray(b), "kendall")


AXES = (
    "width",
    "depth",
    "lr",
    "batch_size",
    "weight_decay",
    "label_noise",
    "train_fraction",
    "optimizer",
    "momentum",
    "batchnorm",
    "epoch",
)
"""Hyper-parameter axes a checkpoint's metadata may name, for the granulated τ."""
GROUPED_BY = ("dataset", "seed")
"""Metadata that every compared pair of the granulated τ shares as well (not axes)."""


def hyperparameters(metadata: Mapping[str, Any]) -> dict[str, str]:
    """The axes and grouping values a checkpoint's metadata names, as strings."""
    return {k: str(metadata[k]) for k in (*AXES, *GROUPED_BY) if k in metadata}


def granulated_kendall(
    predicted: Sequence[float], truth: Sequence[float], hyper: Sequence[Mapping[str, str]]
) -> tuple[float, int]:
    """Jiang et al. (2020)'s granulated Kendall τ and the number of axes it averages: for each
    axis of :data:`AXES` that the metadata names, the checkpoints are grouped by every other
    axis and :data:`GROUPED_BY` (so a group's members differ along that axis only); within each
    group of two or more, τ = the mean of sign(Δ predicted) · sign(Δ truth) over its pairs;
    ψ(axis) is the mean over groups, and the result the mean of ψ over axes."""
    p, t = np.asarray(predicted, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    named = [a for a in AXES if any(a in h for h in hyper)]
    psis = []
    for axis in named:
        groups: dict[tuple[str | None, ...], list[int]] = {}
        for i, h in enumerate(hyper):
            if axis in h and math.isfinite(p[i]) and math.isfinite(t[i]):
                key = tuple(h.get(k) for k in (*AXES, *GROUPED_BY) if k != axis)
                groups.setdefault(key, []).append(i)
        taus = []
        for members in groups.values():
            if len({hyper[i][axis] for i in members}) < 2:
                continue
            pairs = [(a, b) for j, a in enumerate(members) for b in members[j + 1 :]]
            taus.append(float(np.mean([np.sign(p[a] - p[b]) * np.sign(t[a] - t[b]) for a, b in pairs])))
        if taus:
            psis.append(float(np.mean(taus)))
    return (float(np.mean(psis)) if psis else math.nan), len(psis)


def _mae(a: np.ndarray, b: np.ndarray) -> float:
    keep = np.isfinite(a)
    return float(np.mean(np.abs(a[keep] - b[keep]))) if keep.all() else math.nan


def evaluate(
    rows: Sequence[Mapping[str, Any]],
    estimators: Sequence[str],
    hyper: Sequence[Mapping[str, str]] | None = None,
    level: float | None = None,
) -> list[Row]:
    """One row per estimator from per-checkpoint rows holding ``train_loss``, ``train_acc``,
    ``test_loss``, ``test_acc`` and ``est_{name}_loss``, ``est_{name}_acc``, ``status_{name}``
    (and ``_lo``/``_hi`` for the intervals, whose coverage is measured; ``level`` is their
    nominal one); ``hyper`` holds each checkpoint's :func:`hyperparameters` for the granulated τ.
    A quantity an estimator does not estimate (NaN in any row) gets NaN scores."""
    truth_loss = np.array([r["test_loss"] for r in rows], dtype=np.float64)
    truth_acc = np.array([r["test_acc"] for r in rows], dtype=np.float64)
    train_loss = np.array([r["train_loss"] for r in rows], dtype=np.float64)
    train_acc = np.array([r["train_acc"] for r in rows], dtype=np.float64)
    loss_gap, acc_gap = (
        np.array(g, dtype=np.float64) for g in zip(*(true_gap(r, r) for r in rows), strict=True)
    )
    hyper = hyper or [{} for _ in rows]
    out: list[Row] = []
    for name in estimators:
        key = name.replace("-", "_")
        loss = np.array([r[f"est_{key}_loss"] for r in rows], dtype=np.float64)
        acc = np.array([r[f"est_{key}_acc"] for r in rows], dtype=np.float64)
        tau_loss, axes = granulated_kendall(loss - train_loss, loss_gap, hyper)
        tau_acc, _ = granulated_kendall(acc - train_acc, acc_gap, hyper)
        row: Row = {
            "kind": "estimator",
            "name": name,
            "checkpoints": len(rows),
            "mae_loss": _mae(loss, truth_loss),
            "mae_acc_points": 100 * _mae(acc, truth_acc),
            "kendall_loss": kendall(loss, truth_loss),
            "kendall_loss_gap": kendall(loss - train_loss, loss_gap),
            "kendall_acc_gap": kendall(acc - train_acc, acc_gap),
            "granulated_kendall_loss_gap": tau_loss,
            "granulated_kendall_acc_gap": tau_acc,
            "granulated_axes": axes,
            "fallbacks": sum(1 for r in rows if r.get(f"status_{key}", "ok") != "ok"),
            "interval_level": math.nan,
            "coverage_loss": math.nan,
            "coverage_acc": math.nan,
        }
        if f"est_{key}_loss_lo" in rows[0]:
            row["interval_level"] = math.nan if level is None else level
            for target, truth in (("loss", truth_loss), ("acc", truth_acc)):
                lo = np.array([r[f"est_{key}_{target}_lo"] for r in rows], dtype=np.float64)
                hi = np.array([r[f"est_{key}_{target}_hi"] for r in rows], dtype=np.float64)
                known = np.isfinite(lo) & np.isfinite(hi)  # a fallback has no interval
                inside = (lo <= truth) & (truth <= hi)
                row[f"coverage_{target}"] = float(np.mean(inside[known])) if known.any() else math.nan
        out.append(row)
    _compare(out)
    return out


def _compare(out: list[Row]) -> None:
    """Mark, for loss and accuracy, whether each estimator beats (a strictly lower MAE) naive,
    calibrated-train, doc and the best baseline, and which estimator wins."""
    by_name = {r["name"]: r for r in out}
    for metric, suffix in (("mae_loss", "loss"), ("mae_acc_points", "acc")):
        baselines = [
            by_name[b][metric] for b in BASELINES if b in by_name and math.isfinite(by_name[b][metric])
        ]
        best_baseline = min(baselines) if baselines else math.nan
        finite = [r for r in out if math.isfinite(r[metric])]
        winner = min(finite, key=lambda r: r[metric])["name"] if finite else None
        for r in out:
            for other, value in (
                ("naive", by_name["naive"][metric] if "naive" in by_name else math.nan),
                (
                    "calibrated_train",
                    by_name["calibrated-train"][metric] if "calibrated-train" in by_name else math.nan,
                ),
                ("doc", by_name["doc"][metric] if "doc" in by_name else math.nan),
                ("best_baseline", best_baseline),
            ):
                r[f"beats_{other}_{suffix}"] = (
                    bool(r[metric] < value - 1e-12)
                    if math.isfinite(value) and math.isfinite(r[metric])
                    else None
                )
            r[f"winner_{suffix}"] = r["name"] == winner


def rank_features(rows: Sequence[Mapping[str, Any]]) -> list[Row]:
    """Kendall's τ of every label-free feature with the true loss and accuracy gaps."""
    loss_gap, acc_gap = (list(g) for g in zip(*(true_gap(r, r) for r in rows), strict=True))
    rows = [derived(r) for r in rows]
    out = []
    for name in LABEL_FREE:
        if not all(name in r for r in rows):
            continue
        values = [r[name] for r in rows]
        out.append(
            {
                "kind": "feature",
                "name": name,
                "checkpoints": len(rows),
                "kendall_loss_gap": kendall(values, loss_gap),
                "kendall_acc_gap": kendall(values, acc_gap),
            }
        )
    return out
