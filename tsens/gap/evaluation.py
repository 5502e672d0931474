"""How good each estimator really is, whenever test labels are known.

Per estimator, across checkpoints: the mean absolute error of the test loss (nats) and of the
test accuracy (in points, 100 × fraction); Kendall's τ between predicted and true test loss, and
between the predicted gap (estimate − train) and the true gap; how many estimates fell back;
and whether it beats (a strictly lower MAE) ``naive``, ``doc`` and the best of the baselines
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
)


def kendall(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's τ-b of the finite pairs (:func:`tsens.summaries.rank_correlation`)."""
    return rank_correlation(np.asarray(a), np.asarray(b), "kendall")


def evaluate(rows: Sequence[Mapping[str, Any]], estimators: Sequence[str]) -> list[Row]:
    """One row per estimator from per-checkpoint rows holding ``train_loss``, ``train_acc``,
    ``test_loss``, ``test_acc`` and ``est_{name}_loss``, ``est_{name}_acc``, ``status_{name}``."""
    truth_loss = np.array([r["test_loss"] for r in rows], dtype=np.float64)
    truth_acc = np.array([r["test_acc"] for r in rows], dtype=np.float64)
    train_loss = np.array([r["train_loss"] for r in rows], dtype=np.float64)
    train_acc = np.array([r["train_acc"] for r in rows], dtype=np.float64)
    loss_gap, acc_gap = (
        np.array(g, dtype=np.float64) for g in zip(*(true_gap(r, r) for r in rows), strict=True)
    )
    out: list[Row] = []
    for name in estimators:
        key = name.replace("-", "_")
        loss = np.array([r[f"est_{key}_loss"] for r in rows], dtype=np.float64)
        acc = np.array([r[f"est_{key}_acc"] for r in rows], dtype=np.float64)
        out.append(
            {
                "kind": "estimator",
                "name": name,
                "checkpoints": len(rows),
                "mae_loss": float(np.mean(np.abs(loss - truth_loss))),
                "mae_acc_points": float(100 * np.mean(np.abs(acc - truth_acc))),
                "kendall_loss": kendall(loss, truth_loss),
                "kendall_loss_gap": kendall(loss - train_loss, loss_gap),
                "kendall_acc_gap": kendall(acc - train_acc, acc_gap),
                "fallbacks": sum(1 for r in rows if r.get(f"status_{key}", "ok") != "ok"),
            }
        )
    _compare(out)
    return out


def _compare(out: list[Row]) -> None:
    """Mark, for loss and accuracy, whether each estimator beats naive, doc and the best
    baseline, and which estimator wins."""
    by_name = {r["name"]: r for r in out}
    for metric, suffix in (("mae_loss", "loss"), ("mae_acc_points", "acc")):
        baselines = [by_name[b][metric] for b in BASELINES if b in by_name]
        best_baseline = min(baselines) if baselines else math.nan
        winner = min(out, key=lambda r: r[metric])["name"]
        for r in out:
            for other, value in (
                ("naive", by_name["naive"][metric] if "naive" in by_name else math.nan),
                ("doc", by_name["doc"][metric] if "doc" in by_name else math.nan),
                ("best_baseline", best_baseline),
            ):
                r[f"beats_{other}_{suffix}"] = (
                    bool(r[metric] < value - 1e-12) if math.isfinite(value) else None
                )
            r[f"winner_{suffix}"] = r["name"] == winner


def rank_features(rows: Sequence[Mapping[str, Any]]) -> list[Row]:
    """Kendall's τ of every label-free feature with the true loss and accuracy gaps."""
    loss_gap, acc_gap = (list(g) for g in zip(*(true_gap(r, r) for r in rows), strict=True))
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
