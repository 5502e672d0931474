"""The calibrated estimator: a regularised linear model from label-free features to the gap.

For each target (the loss gap, test − train loss in nats, and the accuracy gap, test − train
accuracy) a ridge regression on standardised features is fitted to calibration checkpoints
whose test labels are known. The feature set (nested: ``train`` ⊂ ``shift`` ⊂ ``sensitivity`` ⊂
``all``, see :data:`FEATURE_SETS`) and the ridge strength α are chosen by cross-validation
*inside* the calibration checkpoints, holding whole runs out together (leave-one-run-out up to
:data:`MAX_FOLDS` runs, else that many folds of whole runs), so that checkpoints of one run
never sit on both sides of a split. A feature set with a non-finite value in the calibration
rows is skipped. The intercept is not penalised.

:func:`cross_fit` scores every checkpoint with a model fitted on the *other* runs only (the
selection, too, happens inside those), for when all checkpoints have test labels and no
separate calibration is given.

A linear model extrapolates without limit, and a checkpoint unlike every calibration one can
get an absurd gap; predictions are therefore kept within the calibration gaps' range widened by
half its width on each side (:data:`EXTRAPOLATION`).

A fitted :class:`Calibration` is saved as JSON (no pickle) with its provenance.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TsensError
from ..files import atomic_output
from .features import true_gap

TARGETS = ("loss", "acc")
FEATURE_SETS: dict[str, tuple[str, ...]] = {}
FEATURE_SETS["train"] = ("train_loss", "train_acc")
FEATURE_SETS["shift"] = (
    *FEATURE_SETS["train"],
    "conf_train",
    "conf_shift",
    "entropy_train",
    "entropy_shift",
    "train_acc_minus_atc",
)
FEATURE_SETS["sensitivity"] = (
    *FEATURE_SETS["shift"],
    "log_jac_prob_train",
    "log_jac_prob_ratio",
    "log_jac_logit_train",
    "log_jac_logit_ratio",
    "log_tangent_train",
    "log_tangent_ratio",
)
FEATURE_SETS["all"] = (
    *FEATURE_SETS["sensitivity"],
    "active_frac_train",
    "log_active_ratio",
    "log_membership_train",
    "log_membership_shift",
    "log_boundary_train",
    "log_boundary_ratio",
    "shared_region_share",
    "log10_w",
    "log10_fro_product",
    "log10_spectral_product",
)
ALPHAS = tuple(10.0**k for k in range(-3, 4))
EXTRAPOLATION = 0.5
"""How far beyond the calibration gaps' range a prediction may go, as a share of that range."""
MAX_FOLDS = 10
MIN_RUNS = 5
"""Fewer calibration runs than this are too few to choose features and α honestly."""


def gap_arrays(
    rows: Sequence[Mapping[str, float]], truths: Sequence[Mapping[str, float]]
) -> tuple[np.ndarray, np.ndarray]:
    """The loss gaps and the accuracy gaps (:func:`~.features.true_gap`) of calibration rows."""
    gaps = np.array([true_gap(r, t) for r, t in zip(rows, truths, strict=True)], dtype=np.float64)
    return gaps[:, 0], gaps[:, 1]


def derived(features: Mapping[str, float]) -> dict[str, float]:
    """The features with the derived ones the models use (``train_acc_minus_atc``)."""
    out = dict(features)
    out["train_acc_minus_atc"] = features["train_acc"] - features["atc_acc"]
    return out


@dataclass
class LinearModel:
    """Ridge regression ``y = intercept + Σ coef_i (x_i − mean_i)/scale_i`` on named features."""

    features: list[str]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    alpha: float
    feature_set: str
    cv_mae: float
    target_range: list[float]

    def predict(self, rows: Sequence[Mapping[str, float]]) -> np.ndarray:
        x = _matrix(rows, self.features)
        raw = self.intercept + ((x - np.array(self.mean)) / np.array(self.scale)) @ np.array(self.coef)
        return _bounded(raw, self.target_range)


def _bounded(values: np.ndarray, target_range: Sequence[float]) -> np.ndarray:
    lo, hi = target_range
    margin = EXTRAPOLATION * (hi - lo)
    return np.clip(values, lo - margin, hi + margin)


def _matrix(rows: Sequence[Mapping[str, float]], names: Sequence[str]) -> np.ndarray:
    return np.array([[float(derived(r)[n]) if n in derived(r) else math.nan for n in names] for r in rows])


def _ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    mean = x.mean(0)
    scale = x.std(0)
    scale[scale == 0] = 1.0
    z = (x - mean) / scale
    coef = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (y - y.mean()))
    return mean, scale, coef, float(y.mean())


def _folds(groups: Sequence[str]) -> list[np.ndarray]:
    """Index sets of the held-out part of each fold: whole runs, never split."""
    names = sorted(set(groups))
    k = min(len(names), MAX_FOLDS)
    fold_of = {name: i % k for i, name in enumerate(names)}
    labels = np.array([fold_of[g] for g in groups])
    return [np.flatnonzero(labels == i) for i in range(k)]


def _cv_mae(x: np.ndarray, y: np.ndarray, groups: Sequence[str], alpha: float) -> float:
    errors = np.empty(len(y))
    for held in _folds(groups):
        keep = np.setdiff1d(np.arange(len(y)), held)
        mean, scale, coef, intercept = _ridge(x[keep], y[keep], alpha)
        predicted = intercept + ((x[held] - mean) / scale) @ coef
        errors[held] = _bounded(predicted, [float(y[keep].min()), float(y[keep].max())]) - y[held]
    return float(np.mean(np.abs(errors)))


def fit(rows: Sequence[Mapping[str, float]], y: np.ndarray, groups: Sequence[str]) -> LinearModel:
    """Choose the feature set and α by grouped cross-validation, then fit on all ``rows``."""
    if len(set(groups)) < 2:
        raise TsensError("the calibrated estimator needs calibration checkpoints of at least 2 runs")
    y = np.asarray(y, dtype=np.float64)
    best: tuple[float, str, float] | None = None
    for name, names in FEATURE_SETS.items():
        x = _matrix(rows, names)
        if not np.isfinite(x).all():
            continue
        for alpha in ALPHAS:
            score = _cv_mae(x, y, groups, alpha)
            if best is None or score < best[0] - 1e-12:
                best = (score, name, alpha)
    if best is None:
        raise TsensError("the calibration checkpoints have no finite feature set")
    score, name, alpha = best
    names = list(FEATURE_SETS[name])
    mean, scale, coef, intercept = _ridge(_matrix(rows, names), y, alpha)
    return LinearModel(
        names,
        mean.tolist(),
        scale.tolist(),
        coef.tolist(),
        intercept,
        alpha,
        name,
        score,
        [float(y.min()), float(y.max())],
    )


def cross_fit(rows: Sequence[Mapping[str, float]], y: np.ndarray, groups: Sequence[str]) -> np.ndarray:
    """Leave-one-run-out predictions: each run's checkpoints scored by a model that was chosen
    and fitted on the other runs only."""
    y = np.asarray(y, dtype=np.float64)
    out = np.full(len(y), math.nan)
    for run in dict.fromkeys(groups):
        held = np.array([g == run for g in groups])
        train_rows = [r for r, h in zip(rows, held, strict=True) if not h]
        model = fit(train_rows, y[~held], [g for g, h in zip(groups, held, strict=True) if not h])
        out[held] = model.predict([r for r, h in zip(rows, held, strict=True) if h])
    return out


@dataclass
class Calibration:
    """Models of the loss and accuracy gaps, the mean gaps, and where they came from."""

    loss: LinearModel
    acc: LinearModel
    mean_loss_gap: float
    mean_acc_gap: float
    runs: list[str]
    checkpoints: int
    dataset: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | Path, *, force: bool = False) -> None:
        """Write this calibration as JSON (refuses to overwrite unless ``force``)."""
        text = json.dumps({"tsens_calibration": 1, **asdict(self)}, indent=1, default=str)
        with atomic_output(path, what="calibration file", force=force) as stream:
            stream.write((text + "\n").encode())

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        """Read a calibration written by :meth:`save` (plain JSON; nothing is executed)."""
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise TsensError(f"calibration file {str(path)!r}: cannot read JSON ({exc})") from None
        if not isinstance(doc, dict) or doc.get("tsens_calibration") != 1:
            raise TsensError(
                f"calibration file {str(path)!r}: not a tsens calibration (no tsens_calibration: 1)"
            )
        try:
            models = {t: LinearModel(**doc[t]) for t in TARGETS}
            return cls(
                models["loss"],
                models["acc"],
                float(doc["mean_loss_gap"]),
                float(doc["mean_acc_gap"]),
                list(doc["runs"]),
                int(doc["checkpoints"]),
                doc.get("dataset"),
                dict(doc.get("provenance", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TsensError(f"calibration file {str(path)!r}: missing or malformed entry ({exc})") from None


def calibrate(
    rows: Sequence[Mapping[str, float]],
    truths: Sequence[Mapping[str, float]],
    groups: Sequence[str],
    *,
    dataset: str | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> Calibration:
    """Fit both gap models and the mean gaps on calibration checkpoints."""
    loss_gap, acc_gap = gap_arrays(rows, truths)
    return Calibration(
        fit(rows, loss_gap, groups),
        fit(rows, acc_gap, groups),
        float(loss_gap.mean()),
        float(acc_gap.mean()),
        sorted(set(groups)),
        len(rows),
        dataset,
        dict(provenance or {}),
    )
