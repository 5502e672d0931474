"""Estimators of a checkpoint's test loss (nats) and test accuracy (fraction) without test
labels, as a registry: each entry declares what it estimates, what it needs and which measures
the passes must compute for it, so adding one is one entry in :data:`ESTIMATORS`.

Each is a pure function of one checkpoint's :class:`Inputs`: its features
(:mod:`tsens.gap.features`) and, for some, its previous checkpoint, its sibling runs at the same
step or a calibration fitted elsewhere. Where an estimate is undefined it falls back to
``naive`` and says why in its ``status``; a quantity an estimator does not estimate is NaN.
Estimates stay in range: accuracies within [0, 1], losses at least 0.

* ``naive``: test = train.
* ``calibrated-train``, ``calibrated``, ``mean-gap``: train + a gap learnt on calibration
  checkpoints (:mod:`tsens.gap.calibration`; with intervals for the first two).
* ``confidence`` (average confidence, AC; Hendrycks & Gimpel 2017): accuracy = mean test
  max-softmax; loss = mean test predictive entropy.
* ``doc`` (difference of confidences, Guillory et al. 2021): accuracy = train accuracy − (mean
  train confidence − mean test confidence); loss = train loss + the entropy's shift.
* ``atc`` (average thresholded confidence, Garg et al. 2022).
* ``cot``, ``cott`` (Lu et al. 2023): accuracy from the optimal transport of the test softmax
  outputs to the training label marginal, and its thresholded variant.
* ``tic`` (Takeuchi's information criterion; Naganuma et al. 2026): loss = train loss +
  tr(H⁻¹C)/n of the last layer.
* ``disagreement`` (Jiang et al. 2022): error = the rate at which sibling runs (same
  configuration, another seed) at the same step disagree with this one on the test inputs;
  loss = this checkpoint's cross-entropy against the siblings' predicted classes.
* ``agreement`` (agreement-on-the-line, Baek et al. 2022, ALine-S): over the pairs of three or
  more sibling runs, the line probit(test agreement) = a · probit(train agreement) + b, applied
  to this checkpoint's train accuracy (the training set stands in for the paper's held-out
  in-distribution set, which a checkpoint's user does not have).
* ``jacobian`` ([N] §4.3, Novak et al. 2018): train × mean_test ‖J_prob‖_F / mean_train ‖J_prob‖_F.
* [T] §4 (Daróczy 2020), as the author's code computes them, the same form for loss and
  accuracy: ``layer-norm`` (eq. 5, log w(t−1) / log w(t), w = Π_l max|W_l|), ``kummer``
  (eq. 6, log B(test) / log B(train), B the Gaussian bound) and ``membership`` (eq. 7, mean test
  path score / mean train path score); a ratio of logs that differ in sign is meaningless:
  status ``log-crosses-zero``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtr, ndtri

from .. import choices

Features = dict[str, float]
NAN = math.nan

NEEDS = {
    "previous": "the run's previous checkpoint",
    "sibling": "a sibling run (same configuration, another seed) at the same step",
    "siblings-2": "two sibling runs at the same step",
    "calibration": "a calibration (calibration checkpoints, a calibration file, or test labels of 2+ runs)",
    "hidden": "a hidden layer",
}
"""What an estimator may need beyond the training set and the test inputs."""


@dataclass(frozen=True)
class Estimate:
    """An estimated test loss (nats) and accuracy (fraction), why it may be a fallback, and for
    the calibrated estimators the interval of each."""

    loss: float
    acc: float
    status: str = "ok"
    loss_interval: tuple[float, float] = (NAN, NAN)
    acc_interval: tuple[float, float] = (NAN, NAN)


@dataclass(frozen=True)
class Sibling:
    """What a sibling run's checkpoint at the same step lends: its predicted classes on the
    training inputs and its test log-probabilities."""

    train_predicted: np.ndarray | None
    test_log_probs: np.ndarray


@dataclass(frozen=True)
class Inputs:
    """Everything an estimator may read about one checkpoint."""

    features: Features
    previous: Features | None = None
    test_log_probs: np.ndarray | None = None
    train_predicted: np.ndarray | None = None
    siblings: Sequence[Sibling] = ()
    calibrated: Mapping[str, Estimate] = field(default_factory=dict)


@dataclass(frozen=True)
class Estimator:
    """One registered estimator: its function, what it estimates (``targets``), what it needs
    (keys of :data:`NEEDS`), the per-sample measures the passes must compute for it and the
    features it reads from them, whether it gives intervals, and where it comes from."""

    name: str
    estimate: Callable[[Inputs], Estimate]
    cites: str
    targets: tuple[str, ...] = ("loss", "acc")
    needs: frozenset[str] = frozenset()
    measures: frozenset[str] = frozenset()
    reads: tuple[str, ...] = ("train_loss", "train_acc")
    interval: bool = False


def _fallback(f: Features, status: str) -> Estimate:
    return Estimate(f["train_loss"], f["train_acc"], status)


def _clip(acc: float) -> float:
    return float(min(1.0, max(0.0, acc)))


def _nonnegative(loss: float) -> float:
    return max(0.0, loss)


def _scaled(f: Features, ratio: float) -> Estimate:
    return Estimate(f["train_loss"] * ratio, _clip(f["train_acc"] * ratio))


def log_ratio(numerator: float, denominator: float, infinite: str = "path-score-inf") -> tuple[float, str]:
    """numerator / denominator for two logs, with ``log-crosses-zero`` when they differ in sign
    (or the denominator is 0) and the status ``infinite`` when either is not finite."""
    if not (math.isfinite(numerator) and math.isfinite(denominator)):
        return NAN, infinite
    if denominator == 0 or (numerator < 0) != (denominator < 0):
        return NAN, "log-crosses-zero"
    return numerator / denominator, "ok"


def naive(f: Features) -> Estimate:
    return Estimate(f["train_loss"], f["train_acc"])


def layer_norm(f: Features, previous: Features | None) -> Estimate:
    if previous is None:
        return _fallback(f, "no-previous-checkpoint")
    ratio, status = log_ratio(previous["log10_w"], f["log10_w"])
    return _scaled(f, ratio) if status == "ok" else _fallback(f, "log-crosses-zero")


def kummer(f: Features) -> Estimate:
    ratio, status = log_ratio(f["log10_kummer_test"], f["log10_kummer_train"], infinite="bound-undefined")
    return _scaled(f, ratio) if status == "ok" else _fallback(f, status)


def membership(f: Features) -> Estimate:
    ratio, status = log_ratio(f["path_score_test"], f["path_score_train"])
    return _scaled(f, ratio) if status == "ok" else _fallback(f, status)


def jacobian(f: Features) -> Estimate:
    ratio = math.exp(f["log_jac_prob_ratio"]) if math.isfinite(f["log_jac_prob_ratio"]) else NAN
    return _scaled(f, ratio) if math.isfinite(ratio) else _fallback(f, "jacobian-zero")


def confidence(f: Features) -> Estimate:
    return Estimate(f["entropy_test"], f["conf_test"])


def doc(f: Features) -> Estimate:
    return Estimate(
        _nonnegative(f["train_loss"] + f["entropy_shift"]), _clip(f["train_acc"] - f["conf_shift"])
    )


def atc(f: Features) -> Estimate:
    return Estimate(f["atc_loss"], f["atc_acc"])


def _accuracy_only(key: str) -> Callable[[Features], Estimate]:
    def estimate(f: Features) -> Estimate:
        value = f.get(key, NAN)
        return Estimate(NAN, _clip(value)) if math.isfinite(value) else _fallback(f, "undefined")

    return estimate


def tic(f: Features) -> Estimate:
    gap = f.get("tic_gap", NAN)
    return Estimate(f["train_loss"] + gap, NAN) if math.isfinite(gap) else _fallback(f, "undefined")


def disagreement(log_probs: np.ndarray, siblings: Sequence[np.ndarray], f: Features) -> Estimate:
    """From this checkpoint's test log-probabilities and those of its siblings at the same step."""
    if not siblings:
        return _fallback(f, "no-sibling")
    mine = log_probs.argmax(1)
    agree, loss = [], []
    for other in siblings:
        theirs = other.argmax(1)
        agree.append(float(np.mean(mine == theirs)))
        loss.append(float(-np.mean(log_probs[np.arange(len(theirs)), theirs])))
    return Estimate(float(np.mean(loss)), float(np.mean(agree)))


def _probit(share: np.ndarray, n: int) -> np.ndarray:
    """Φ⁻¹ of shares kept within [1/(2n), 1 − 1/(2n)], so that 0 and 1 stay finite."""
    eps = 0.5 / n
    return ndtri(np.clip(share, eps, 1 - eps))


def agreement_on_the_line(
    train_predicted: Sequence[np.ndarray], test_predicted: Sequence[np.ndarray], train_acc: float
) -> tuple[float, str]:
    """ALine-S (Baek et al. 2022): the line through (probit train agreement, probit test
    agreement) of every pair of the models (this one first), least squares, applied to
    probit(train accuracy). ``fewer-than-3-runs`` or ``agreement-constant`` when undefined."""
    k = len(train_predicted)
    if k < 3:
        return NAN, "fewer-than-3-runs"
    pairs = [(a, b) for a in range(k) for b in range(a + 1, k)]
    n_train, n_test = len(train_predicted[0]), len(test_predicted[0])
    x = _probit(np.array([np.mean(train_predicted[a] == train_predicted[b]) for a, b in pairs]), n_train)
    y = _probit(np.array([np.mean(test_predicted[a] == test_predicted[b]) for a, b in pairs]), n_test)
    if np.ptp(x) < 1e-9:
        return NAN, "agreement-constant"
    slope, intercept = np.polyfit(x, y, 1)
    return float(ndtr(slope * _probit(np.array([train_acc]), n_train)[0] + intercept)), "ok"


def _agreement(i: Inputs) -> Estimate:
    f = i.features
    if i.train_predicted is None or i.test_log_probs is None:
        return _fallback(f, "fewer-than-3-runs")
    others = [s for s in i.siblings if s.train_predicted is not None]
    acc, status = agreement_on_the_line(
        [i.train_predicted, *(s.train_predicted for s in others)],  # type: ignore[misc]
        [i.test_log_probs.argmax(1), *(s.test_log_probs.argmax(1) for s in others)],
        f["train_acc"],
    )
    return Estimate(NAN, acc) if status == "ok" else _fallback(f, status)


def _disagreement(i: Inputs) -> Estimate:
    if i.test_log_probs is None:
        return _fallback(i.features, "no-sibling")
    return disagreement(i.test_log_probs, [s.test_log_probs for s in i.siblings], i.features)


def from_gaps(f: Features, loss_gap: float, acc_gap: float) -> Estimate:
    """train + gaps (``mean-gap``), within the quantities' ranges."""
    return Estimate(_nonnegative(f["train_loss"] + loss_gap), _clip(f["train_acc"] + acc_gap))


def _of_features(fn: Callable[[Features], Estimate]) -> Callable[[Inputs], Estimate]:
    return lambda i: fn(i.features)


def _calibrated(name: str) -> Callable[[Inputs], Estimate]:
    return lambda i: i.calibrated[name]


_M = frozenset
ESTIMATORS: dict[str, Estimator] = {
    e.name: e
    for e in (
        Estimator("naive", _of_features(naive), "test = train"),
        Estimator(
            "calibrated-train",
            _calibrated("calibrated-train"),
            "ridge on ln(train loss) and train accuracy, leave-one-run-out",
            needs=_M({"calibration"}),
            interval=True,
        ),
        Estimator(
            "calibrated",
            _calibrated("calibrated"),
            "ridge on label-free features, nested one-standard-error selection, split-conformal intervals",
            needs=_M({"calibration"}),
            interval=True,
        ),
        Estimator(
            "mean-gap",
            _calibrated("mean-gap"),
            "train + the calibration runs' mean gap",
            needs=_M({"calibration"}),
        ),
        Estimator(
            "confidence",
            _of_features(confidence),
            "Hendrycks & Gimpel 2017",
            reads=("entropy_test", "conf_test"),
        ),
        Estimator(
            "doc",
            _of_features(doc),
            "Guillory et al. 2021",
            reads=("train_loss", "train_acc", "entropy_shift", "conf_shift"),
        ),
        Estimator("atc", _of_features(atc), "Garg et al. 2022", reads=("atc_loss", "atc_acc")),
        Estimator(
            "cot",
            _of_features(_accuracy_only("cot_acc")),
            "Lu et al. 2023",
            ("acc",),
            measures=_M({"logits"}),
            reads=("cot_acc",),
        ),
        Estimator(
            "cott",
            _of_features(_accuracy_only("cott_acc")),
            "Lu et al. 2023",
            ("acc",),
            measures=_M({"logits"}),
            reads=("cott_acc",),
        ),
        Estimator(
            "tic",
            _of_features(tic),
            "Takeuchi 1976; Naganuma et al. 2026",
            ("loss",),
            measures=_M({"logits", "penultimate"}),
            reads=("train_loss", "tic_gap"),
        ),
        Estimator(
            "disagreement",
            _disagreement,
            "Jiang et al. 2022",
            needs=_M({"sibling"}),
            measures=_M({"log_probs"}),
        ),
        Estimator(
            "agreement",
            _agreement,
            "Baek et al. 2022",
            ("acc",),
            needs=_M({"siblings-2"}),
            measures=_M({"log_probs"}),
        ),
        Estimator(
            "jacobian",
            _of_features(jacobian),
            "Novak et al. 2018 [N]",
            measures=_M({"jacobian"}),
            reads=("train_loss", "train_acc", "log_jac_prob_ratio"),
        ),
        Estimator(
            "layer-norm",
            lambda i: layer_norm(i.features, i.previous),
            "Daróczy 2020 [T] eq. 5",
            needs=_M({"previous"}),
            reads=("train_loss", "train_acc", "log10_w"),
        ),
        Estimator(
            "kummer",
            _of_features(kummer),
            "Daróczy 2020 [T] eq. 6",
            needs=_M({"hidden"}),
            measures=_M({"active"}),
            reads=("train_loss", "train_acc", "log10_kummer_train", "log10_kummer_test"),
        ),
        Estimator(
            "membership",
            _of_features(membership),
            "Daróczy 2020 [T] eq. 7",
            needs=_M({"hidden"}),
            measures=_M({"path_score"}),
            reads=("train_loss", "train_acc", "path_score_train", "path_score_test"),
        ),
    )
}
"""Every estimator by name (module docstring), in table order."""
assert tuple(ESTIMATORS) == choices.ESTIMATORS, "choices.ESTIMATORS lists the registry's names in order"

BASELINES = ("naive", "confidence", "doc", "atc")
"""What every estimator is compared with: test = train, and the literature's label-free ones."""
CALIBRATED = ("calibrated-train", "calibrated", "mean-gap")
"""The estimators whose gap is learnt on calibration checkpoints."""

CHEAP_MEASURES = _M({"predictions", "logits", "penultimate", "log_probs"})
"""Measures that cost about a forward pass: what the default run computes. An estimator that
needs another (the Jacobian, active units, path scores) runs when named: on the development zoo
none of them beat naive (README)."""


def costly(name: str) -> bool:
    """Whether estimator ``name`` needs a measure beyond :data:`CHEAP_MEASURES`."""
    return not ESTIMATORS[name].measures <= CHEAP_MEASURES


FEATURE_MEASURES: dict[str, frozenset[str]] = {
    "train": _M({"predictions"}),
    "shift": _M({"predictions"}),
    "field": _M({"predictions", "logits", "penultimate"}),
    "sensitivity": _M({"predictions", "logits", "penultimate", "jacobian", "tangent"}),
    "all": _M(
        {
            "predictions",
            "logits",
            "penultimate",
            "jacobian",
            "tangent",
            "active",
            "membership",
            "boundary",
            "region",
            "margin",
        }
    ),
}
"""The measures the calibrated estimator's richest feature set needs (:mod:`.calibration`)."""


def required_measures(names: Sequence[str], features: str = "field") -> set[str]:
    """The per-sample measures both passes need for the estimators ``names``, the calibrated one
    considering feature sets up to ``features``."""
    needs = {"predictions"}
    for name in names:
        needs |= ESTIMATORS[name].measures
        if name == "calibrated":
            needs |= FEATURE_MEASURES[features]
    return needs
