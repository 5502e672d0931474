"""Estimators of a checkpoint's test loss (nats) and test accuracy (fraction) without test labels.

Each is a pure function of the checkpoint's features (:mod:`tsens.gap.features`) and, for some,
of its previous checkpoint, its sibling runs or a calibration fitted elsewhere. Where an
estimate is undefined it falls back to ``naive`` and says why in its ``status``. Estimates stay
in range: accuracies within [0, 1], the additive losses (doc, mean-gap, calibrated) at least 0.

* ``naive``: test = train.
* [T] §4 (Daróczy 2020), as the author's code computes them, the same form for loss and
  accuracy (accuracy clipped to [0, 1]):

  - ``layer-norm`` (eq. 5): train × log w(t−1) / log w(t), w = Π_l max|W_l|, t−1 the previous
    checkpoint of the run (status ``no-previous-checkpoint`` for a run's first);
  - ``kummer`` (eq. 6): train × log B(test) / log B(train), B the Gaussian bound ``gauss_paper``
    with μ, σ of each set's active count;
  - ``membership`` (eq. 7): train × mean_test P / mean_train P, P the path score (the text's
    direction; the published notebook swapped train and test); ``path-score-inf`` when a sample
    has a layer without active unit;
  - a ratio of logs is meaningless when the two logs differ in sign, and it happens on real
    runs because log w crosses 0: status ``log-crosses-zero``.

* ``jacobian`` ([N] §4.3, Novak et al. 2018): train × mean_test ‖J_prob‖_F / mean_train ‖J_prob‖_F.
* ``confidence`` (average confidence, AC): accuracy = mean test max-softmax; loss = mean test
  predictive entropy (the expected loss of a calibrated model).
* ``doc`` (difference of confidences, Guillory et al. 2021): accuracy = train accuracy − (mean
  train confidence − mean test confidence); loss = train loss + (mean test entropy − mean
  train entropy).
* ``atc`` (average thresholded confidence, Garg et al. 2022): accuracy = share of test inputs
  above the confidence threshold that the training set's accuracy sets; loss = the training
  loss per confidence bin averaged over the test confidences.
* ``disagreement`` (Jiang et al. 2022): error = the rate at which sibling runs (same
  architecture and data, another seed) at the same step disagree with this one on the test
  inputs; loss = this checkpoint's cross-entropy against the siblings' predicted classes.
  ``no-sibling`` where there is none.
* ``mean-gap``: train + the mean gap (test − train) of the calibration checkpoints.
* ``calibrated``: train + the gap a regularised linear model predicts from the features
  (:mod:`tsens.gap.calibration`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BASELINES = ("naive", "confidence", "doc", "atc")
"""What every estimator is compared with: test = train, and the literature's label-free ones."""

Features = dict[str, float]


@dataclass(frozen=True)
class Estimate:
    """An estimated test loss (nats) and accuracy (fraction), and why it may be a fallback."""

    loss: float
    acc: float
    status: str = "ok"


def naive(f: Features) -> Estimate:
    return Estimate(f["train_loss"], f["train_acc"])


def _fallback(f: Features, status: str) -> Estimate:
    return Estimate(f["train_loss"], f["train_acc"], status)


def _clip(acc: float) -> float:
    return min(1.0, max(0.0, acc))


def _nonnegative(loss: float) -> float:
    return max(0.0, loss)


def _scaled(f: Features, ratio: float) -> Estimate:
    return Estimate(f["train_loss"] * ratio, _clip(f["train_acc"] * ratio))


def log_ratio(numerator: float, denominator: float, infinite: str = "path-score-inf") -> tuple[float, str]:
    """numerator / denominator for two logs, with ``log-crosses-zero`` when they differ in sign
    (or the denominator is 0) and the status ``infinite`` when either is not finite."""
    if not (math.isfinite(numerator) and math.isfinite(denominator)):
        return math.nan, infinite
    if denominator == 0 or (numerator < 0) != (denominator < 0):
        return math.nan, "log-crosses-zero"
    return numerator / denominator, "ok"


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
    ratio = math.exp(f["log_jac_prob_ratio"]) if math.isfinite(f["log_jac_prob_ratio"]) else math.nan
    return _scaled(f, ratio) if math.isfinite(ratio) else _fallback(f, "jacobian-zero")


def confidence(f: Features) -> Estimate:
    return Estimate(f["entropy_test"], f["conf_test"])


def doc(f: Features) -> Estimate:
    return Estimate(
        _nonnegative(f["train_loss"] + f["entropy_shift"]), _clip(f["train_acc"] - f["conf_shift"])
    )


def atc(f: Features) -> Estimate:
    return Estimate(f["atc_loss"], f["atc_acc"])


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


def from_gaps(f: Features, loss_gap: float, acc_gap: float) -> Estimate:
    """train + gaps (``mean-gap`` and ``calibrated``), within the quantities' ranges."""
    return Estimate(_nonnegative(f["train_loss"] + loss_gap), _clip(f["train_acc"] + acc_gap))


def required_measures(names: Sequence[str]) -> set[str]:
    """The per-sample measures both passes need for these estimators."""
    needs = {"predictions"}
    table = {
        "kummer": {"active"},
        "membership": {"path_score"},
        "jacobian": {"jacobian"},
        "disagreement": {"log_probs"},
        "calibrated": {"jacobian", "tangent", "active", "membership", "boundary", "region"},
    }
    for name in names:
        needs |= table.get(name, set())
    return needs
