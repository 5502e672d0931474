"""The calibrated estimators: a regularised linear model from label-free features to the gap,
chosen by nested grouped cross-validation, with split-conformal intervals.

Targets (:class:`Target`): the accuracy as the difference test − train accuracy, and the loss
in the space where it was closer to linear on the development zoo: the difference test − train
loss (nats), against the log ratio ln(test / train loss), which lost there (README). Features
are standardised; a ridge regression (intercept not penalised) is fitted to calibration
checkpoints whose test labels are known.

Selection. The candidates are the nested feature sets of :data:`FEATURE_SETS` (``train`` ⊂
``shift`` ⊂ ``field`` ⊂ ``sensitivity`` ⊂ ``all``; a feature with a non-finite value in a
calibration row is left out of its set, and a scored row that lacks one gets the calibration
mean and is flagged) times the ridge strengths :data:`ALPHAS`. Each is scored by
grouped cross-validation, whole runs held out together (leave-one-run-out up to
:data:`MAX_FOLDS` runs), by its mean absolute error in the quantity's own units (nats, or a
fraction). The one-standard-error rule (Hastie, Tibshirani & Friedman 2009,
§7.10) then takes the *simplest* set, and within it the *strongest* α, whose mean absolute error
is within one standard error (across folds) of the best: a richer set must win by more than the
noise of the cross-validation. ``calibrated-train`` is the same model on the ``train`` set only
(ln train loss and train accuracy), so every table shows whether test inputs add anything.

Extrapolation. A linear model extrapolates without limit, and one held-out run whose features
lie outside the calibration range can dominate the error: each feature is clipped to the
calibration checkpoints' range before predicting, and the prediction to the calibration gaps'
range widened by half its width on each side (:data:`EXTRAPOLATION`).

Intervals. The absolute held-out residuals of the chosen candidate (each calibration checkpoint
predicted by a model that did not see its run) give split-conformal intervals (Vovk et al.
2005; Lei et al. 2018): prediction ± the ⌈(n + 1)·level⌉-th smallest residual, in the target's
space, then mapped back and kept in range (a loss at least 0, an accuracy within [0, 1]).

:func:`cross_fit` scores every checkpoint with a model chosen and fitted on the *other* runs only
(selection and residuals included), for when all checkpoints have test labels. A fitted
:class:`Calibration` is saved as JSON (no pickle) with its provenance.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import choices
from ..errors import TsensError
from ..files import atomic_output
from .features import true_gap

FORMAT = 2
"""Version of the calibration file (1: before intervals and the log-ratio loss target)."""

FEATURE_SETS: dict[str, tuple[str, ...]] = {}
FEATURE_SETS["train"] = ("log_train_loss", "train_acc")
FEATURE_SETS["shift"] = (
    *FEATURE_SETS["train"],
    "conf_train",
    "conf_shift",
    "entropy_train",
    "entropy_shift",
    "train_acc_minus_atc",
)
FEATURE_SETS["field"] = (
    *FEATURE_SETS["shift"],
    "nuclear_norm_shift",
    "energy_shift",
    "dispersion_shift",
    "train_acc_minus_cot",
    "log_tic_gap",
    "margin_q50_train",
    "margin_q50_shift",
)
FEATURE_SETS["sensitivity"] = (
    *FEATURE_SETS["field"],
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
assert tuple(FEATURE_SETS) == choices.FEATURE_SETS, "choices.FEATURE_SETS names these, in order"


def sets_up_to(richest: str) -> tuple[str, ...]:
    """The feature sets from ``train`` up to ``richest``, simplest first."""
    names = tuple(FEATURE_SETS)
    if richest not in names:
        raise TsensError(f"`features` {richest!r}: expected one of {', '.join(names)}")
    return names[: names.index(richest) + 1]


ALPHAS = tuple(10.0**k for k in range(3, -3, -1))
"""Ridge strengths, strongest first (the order ties are broken in)."""
EXTRAPOLATION = 0.5
"""How far beyond the calibration gaps' range a prediction may go, as a share of that range."""
MAX_FOLDS = 10
MIN_RUNS = 5
"""Fewer calibration runs than this are too few to choose features and α honestly."""
LEVEL = 0.9
"""The default coverage of the intervals."""
_TINY_LOSS = 1e-12


def gap_arrays(
    rows: Sequence[Mapping[str, float]], truths: Sequence[Mapping[str, float]]
) -> tuple[np.ndarray, np.ndarray]:
    """The loss gaps and the accuracy gaps (:func:`~.features.true_gap`) of calibration rows."""
    gaps = np.array([true_gap(r, t) for r, t in zip(rows, truths, strict=True)], dtype=np.float64)
    return gaps[:, 0], gaps[:, 1]


@dataclass(frozen=True)
class Target:
    """A quantity the calibrated estimators predict (``loss`` or ``acc``) and the space it is
    modelled in: ``log-ratio`` (ln(test / train)) or ``difference`` (test − train)."""

    name: str
    space: str

    @property
    def train_key(self) -> str:
        return f"train_{self.name}"

    def base(self, rows: Sequence[Mapping[str, float]]) -> np.ndarray:
        return np.array([r[self.train_key] for r in rows], dtype=np.float64)

    def encode(
        self, rows: Sequence[Mapping[str, float]], truths: Sequence[Mapping[str, float]]
    ) -> np.ndarray:
        """The modelled value of each calibration row."""
        train = self.base(rows)
        test = np.array([t[f"test_{self.name}"] for t in truths], dtype=np.float64)
        if self.space == "log-ratio":
            return np.log(np.maximum(test, _TINY_LOSS) / np.maximum(train, _TINY_LOSS))
        return test - train

    def decode(self, base: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Modelled values back to the quantity (nats, or a fraction), within its range."""
        log = self.space == "log-ratio"
        out = np.maximum(base, _TINY_LOSS) * np.exp(values) if log else base + values
        return np.clip(out, 0.0, 1.0 if self.name == "acc" else math.inf)


LOSS_SPACE = "difference"
"""The space the loss is modelled in, chosen on the development zoo (README): the log ratio
lost there (on digits, MAE 0.218 nats for calibrated-train against 0.023 with the difference),
as a ridge shrunk towards the mean ratio multiplies an under-fit checkpoint's large train loss
by the large ratios of memorizing ones."""
TARGETS = {"loss": Target("loss", LOSS_SPACE), "acc": Target("acc", "difference")}


def targets(
    rows: Sequence[Mapping[str, float]], truths: Sequence[Mapping[str, float]]
) -> dict[str, np.ndarray]:
    """Both targets of calibration rows in the space they are modelled in (:data:`TARGETS`)."""
    return {name: t.encode(rows, truths) for name, t in TARGETS.items()}


def _shift(f: Mapping[str, float], name: str) -> float:
    return f[f"{name}_test"] - f[f"{name}_train"]


def derived(features: Mapping[str, float]) -> dict[str, float]:
    """The features with the derived ones the models use: ``log_train_loss``,
    ``train_acc_minus_atc`` and, where their parts exist, train → test shifts of the field's
    scores, ``train_acc_minus_cot`` and ``log_tic_gap``."""
    out = dict(features)
    out["log_train_loss"] = math.log(max(features["train_loss"], _TINY_LOSS))
    out["train_acc_minus_atc"] = features["train_acc"] - features["atc_acc"]
    for name in ("nuclear_norm", "mano", "energy", "dispersion", "gdscore", "margin_q50"):
        if f"{name}_train" in features and f"{name}_test" in features:
            out[f"{name}_shift"] = _shift(features, name)
    if "cot_acc" in features:
        out["train_acc_minus_cot"] = features["train_acc"] - features["cot_acc"]
    if "tic_gap" in features:
        out["log_tic_gap"] = math.log(max(features["tic_gap"], _TINY_LOSS))
    return out


def conformal_quantile(residuals: Sequence[float], level: float) -> float:
    """The ⌈(n + 1)·level⌉-th smallest absolute residual (inf when n is too small for the level)."""
    r = np.sort(np.abs(np.asarray(residuals, dtype=np.float64)))
    k = math.ceil((len(r) + 1) * level)
    return float(r[k - 1]) if 1 <= k <= len(r) else math.inf


@dataclass(frozen=True)
class Prediction:
    """Predicted quantities (nats, or fractions) for each row, their conformal interval, and
    whether a feature of the row lay outside the calibration range."""

    value: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    outside: np.ndarray


@dataclass
class LinearModel:
    """Ridge regression ``y = intercept + Σ coef_i (clip(x_i) − mean_i)/scale_i`` on named
    features, for ``target`` modelled in ``space`` (:class:`Target`), with the calibration range
    of each feature and of y, and the held-out residuals (in ``space``) of the cross-validation
    that chose it."""

    target: str
    space: str
    features: list[str]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    alpha: float
    feature_set: str
    cv_mae: float
    target_range: list[float]
    feature_range: list[list[float]]
    residuals: list[float]

    def predict(self, rows: Sequence[Mapping[str, float]]) -> np.ndarray:
        """The modelled values (in :attr:`space`)."""
        return self.predict_with_range(rows)[0]

    def predict_with_range(self, rows: Sequence[Mapping[str, float]]) -> tuple[np.ndarray, np.ndarray]:
        """Modelled values, and per row whether a feature lay outside the calibration range."""
        x = _matrix(rows, self.features)
        lo, hi = np.array(self.feature_range, dtype=np.float64).reshape(2, -1)
        missing = ~np.isfinite(x)  # a feature the row lacks takes the calibration mean
        outside = ((x < lo) | (x > hi) | missing).any(1)
        x = np.where(missing, np.array(self.mean), x)
        z = (np.clip(x, lo, hi) - np.array(self.mean)) / np.array(self.scale)
        return _bounded(self.intercept + z @ np.array(self.coef), self.target_range), outside

    def half_width(self, level: float) -> float:
        """The conformal half-width (in :attr:`space`) of this model's intervals at ``level``."""
        return conformal_quantile(self.residuals, level)

    def prediction(self, rows: Sequence[Mapping[str, float]], level: float = LEVEL) -> Prediction:
        """The predicted quantity of each row with its interval at ``level``."""
        value, outside = self.predict_with_range(rows)
        target = Target(self.target, self.space)
        base, q = target.base(rows), self.half_width(level)
        return Prediction(
            target.decode(base, value),
            target.decode(base, value - q),
            target.decode(base, value + q),
            outside,
        )


def _bounded(values: np.ndarray, target_range: Sequence[float]) -> np.ndarray:
    lo, hi = target_range
    margin = EXTRAPOLATION * (hi - lo)
    return np.clip(values, lo - margin, hi + margin)


def _matrix(rows: Sequence[Mapping[str, float]], names: Sequence[str]) -> np.ndarray:
    full = [derived(r) for r in rows]
    return np.array([[float(f[n]) if n in f else math.nan for n in names] for f in full], dtype=np.float64)


def _ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    mean = x.mean(0)
    scale = x.std(0)
    scale[scale == 0] = 1.0
    z = (x - mean) / scale
    coef = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (y - y.mean()))
    return mean, scale, coef, float(y.mean())


def _predict(x: np.ndarray, keep: np.ndarray, y: np.ndarray, held: np.ndarray, alpha: float) -> np.ndarray:
    """Fit on rows ``keep``, predict rows ``held`` as :meth:`LinearModel.predict` would."""
    mean, scale, coef, intercept = _ridge(x[keep], y[keep], alpha)
    clipped = np.clip(x[held], x[keep].min(0), x[keep].max(0))
    return _bounded(
        intercept + ((clipped - mean) / scale) @ coef, [float(y[keep].min()), float(y[keep].max())]
    )


def _folds(groups: Sequence[str]) -> list[np.ndarray]:
    """Index sets of the held-out part of each fold: whole runs, never split."""
    names = sorted(set(groups))
    k = min(len(names), MAX_FOLDS)
    fold_of = {name: i % k for i, name in enumerate(names)}
    labels = np.array([fold_of[g] for g in groups])
    return [np.flatnonzero(labels == i) for i in range(k)]


@dataclass(frozen=True)
class _Score:
    feature_set: str
    alpha: float
    mae: float
    se: float
    residuals: np.ndarray


def _score(
    x: np.ndarray, y: np.ndarray, folds: list[np.ndarray], name: str, alpha: float, natural: Any
) -> _Score:
    """Grouped cross-validation of one candidate: the mean absolute error and its standard
    error across folds in the quantity's own units (``natural`` maps modelled values to it),
    and the held-out residuals in the modelled space."""
    residuals = np.empty(len(y))
    errors = np.empty(len(y))
    everything = np.arange(len(y))
    for held in folds:
        keep = np.setdiff1d(everything, held)
        predicted = _predict(x, keep, y, held, alpha)
        residuals[held] = predicted - y[held]
        errors[held] = np.abs(natural(predicted, held) - natural(y[held], held))
    fold_mae = [float(np.mean(errors[held])) for held in folds]
    se = float(np.std(fold_mae, ddof=1) / math.sqrt(len(folds))) if len(folds) > 1 else 0.0
    return _Score(name, alpha, float(np.mean(errors)), se, residuals)


def one_standard_error(scores: Sequence[_Score]) -> _Score:
    """The first of ``scores`` (ordered simplest set first, strongest α first) whose MAE is
    within one standard error of the best one's."""
    best = min(scores, key=lambda s: s.mae)
    return next(s for s in scores if s.mae <= best.mae + best.se + 1e-12)


def fit(
    rows: Sequence[Mapping[str, float]],
    y: np.ndarray,
    groups: Sequence[str],
    *,
    target: Target | str = "loss",
    sets: Sequence[str] = tuple(FEATURE_SETS),
) -> LinearModel:
    """Choose the feature set among ``sets`` and α by grouped cross-validation and the
    one-standard-error rule, scored in the quantity's own units (module docstring), then fit on
    all ``rows``; ``y`` holds the modelled values of ``target`` (:meth:`Target.encode`)."""
    if len(set(groups)) < 2:
        raise TsensError("the calibrated estimator needs calibration checkpoints of at least 2 runs")
    target = TARGETS[target] if isinstance(target, str) else target
    y = np.asarray(y, dtype=np.float64)
    base = target.base(rows)

    def natural(values: np.ndarray, where: np.ndarray) -> np.ndarray:
        return target.decode(base[where], values)

    folds = _folds(groups)
    scores, matrices, used = [], {}, []
    for name in sets:
        # A feature not finite in every calibration row is left out of the set; a set that adds
        # nothing usable to the one before is no candidate of its own.
        full = _matrix(rows, FEATURE_SETS[name])
        keep = np.isfinite(full).all(0)
        names = [n for n, k in zip(FEATURE_SETS[name], keep, strict=True) if k]
        if not names or (used and names == used[-1][1]):
            continue
        used.append((name, names))
        matrices[name] = (names, full[:, keep])
        scores += [_score(full[:, keep], y, folds, name, alpha, natural) for alpha in ALPHAS]
    if not scores:
        raise TsensError("the calibration checkpoints have no finite feature set")
    chosen = one_standard_error(scores)
    names, x = matrices[chosen.feature_set]
    mean, scale, coef, intercept = _ridge(x, y, chosen.alpha)
    return LinearModel(
        target.name,
        target.space,
        names,
        mean.tolist(),
        scale.tolist(),
        coef.tolist(),
        intercept,
        chosen.alpha,
        chosen.feature_set,
        chosen.mae,
        [float(y.min()), float(y.max())],
        [x.min(0).tolist(), x.max(0).tolist()],
        chosen.residuals.tolist(),
    )


def cross_fit(
    rows: Sequence[Mapping[str, float]],
    y: np.ndarray,
    groups: Sequence[str],
    *,
    target: Target | str = "loss",
    sets: Sequence[str] = tuple(FEATURE_SETS),
    level: float = LEVEL,
) -> Prediction:
    """Leave-one-run-out predictions: each run's checkpoints scored by a model that was chosen
    and fitted on the other runs only, with that model's intervals."""
    y = np.asarray(y, dtype=np.float64)
    n = len(y)
    value, lo, hi = np.full(n, math.nan), np.full(n, math.nan), np.full(n, math.nan)
    outside = np.zeros(n, dtype=bool)
    for run in dict.fromkeys(groups):
        held = np.array([g == run for g in groups])
        train_rows = [r for r, h in zip(rows, held, strict=True) if not h]
        others = [g for g, h in zip(groups, held, strict=True) if not h]
        model = fit(train_rows, y[~held], others, target=target, sets=sets)
        p = model.prediction([r for r, h in zip(rows, held, strict=True) if h], level)
        value[held], lo[held], hi[held], outside[held] = p.value, p.lo, p.hi, p.outside
    return Prediction(value, lo, hi, outside)


@dataclass
class Calibration:
    """Models of the loss and accuracy targets (``calibrated`` and ``calibrated-train``), the
    mean gaps, and where they came from."""

    loss: LinearModel
    acc: LinearModel
    loss_train: LinearModel
    acc_train: LinearModel
    mean_loss_gap: float
    mean_acc_gap: float
    runs: list[str]
    checkpoints: int
    dataset: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def model(self, estimator: str, target: str) -> LinearModel:
        """The model of ``target`` for ``calibrated`` or ``calibrated-train``."""
        return getattr(self, target if estimator == "calibrated" else f"{target}_train")

    def save(self, path: str | Path, *, force: bool = False) -> None:
        """Write this calibration as JSON (refuses to overwrite unless ``force``)."""
        text = json.dumps({"tsens_calibration": FORMAT, **asdict(self)}, indent=1, default=str)
        with atomic_output(path, what="calibration file", force=force) as stream:
            stream.write((text + "\n").encode())

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        """Read a calibration written by :meth:`save` (plain JSON; nothing is executed)."""
        where = f"calibration file {str(path)!r}"
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise TsensError(f"{where}: cannot read JSON ({exc})") from None
        version = doc.get("tsens_calibration") if isinstance(doc, dict) else None
        if version == 1:
            raise TsensError(
                f"{where}: written by an older tsens (format 1); fit it again with --save-calibration"
            )
        if version != FORMAT:
            raise TsensError(f"{where}: not a tsens calibration (no tsens_calibration: {FORMAT})")
        try:
            models = {k: LinearModel(**doc[k]) for k in ("loss", "acc", "loss_train", "acc_train")}
            return cls(
                **models,
                mean_loss_gap=float(doc["mean_loss_gap"]),
                mean_acc_gap=float(doc["mean_acc_gap"]),
                runs=list(doc["runs"]),
                checkpoints=int(doc["checkpoints"]),
                dataset=doc.get("dataset"),
                provenance=dict(doc.get("provenance", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TsensError(f"{where}: missing or malformed entry ({exc})") from None


def calibrate(
    rows: Sequence[Mapping[str, float]],
    truths: Sequence[Mapping[str, float]],
    groups: Sequence[str],
    *,
    dataset: str | None = None,
    provenance: Mapping[str, Any] | None = None,
    sets: Sequence[str] = tuple(FEATURE_SETS),
) -> Calibration:
    """Fit the models of both targets (choosing among ``sets``, and on the ``train`` set alone)
    and the mean gaps on calibration checkpoints."""
    y = targets(rows, truths)
    loss_gap, acc_gap = gap_arrays(rows, truths)
    return Calibration(
        fit(rows, y["loss"], groups, target="loss", sets=sets),
        fit(rows, y["acc"], groups, target="acc", sets=sets),
        fit(rows, y["loss"], groups, target="loss", sets=("train",)),
        fit(rows, y["acc"], groups, target="acc", sets=("train",)),
        float(loss_gap.mean()),
        float(acc_gap.mean()),
        sorted(set(groups)),
        len(rows),
        dataset,
        dict(provenance or {}),
    )
