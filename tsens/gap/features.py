"""What one checkpoint's passes over the training and the test inputs give the estimators.

A pass of each set (:func:`tsens.stream.measure_sets`) yields per-sample columns; this module
reduces them to one row of numbers per checkpoint, the *features*: the training loss and
accuracy (the only labels an estimator may read), and label-free levels and train-to-test
shifts of the measures. The test set's labels, when it has them, give the *truth* (test loss and
accuracy), which is kept apart and never enters a feature.

Features (``_train``/``_test`` are means over the set unless said otherwise):

* ``train_loss``, ``train_acc``;
* ``conf_train``, ``conf_test`` (max softmax), ``conf_shift`` = train − test;
  ``entropy_train``, ``entropy_test`` (predictive entropy, nats), ``entropy_shift`` = test − train;
* ``atc_acc``: Garg et al. (2022)'s average thresholded confidence: the threshold t with
  share(conf_train > t) = train accuracy, applied to the test inputs; ``atc_loss``: the same idea
  for the loss, the training set's mean loss per confidence bin (20 equal-count bins) averaged
  over the test inputs' confidences;
* with ``jacobian``: ``log_jac_prob_{train,test}``, ``log_jac_logit_{train,test}`` (natural log of
  the mean ‖J‖_F, [N] §3) and their ``_ratio`` = test − train;
* with ``tangent``: ``log_tangent_{train,test,ratio}`` (‖T‖_F, [T] Def. 3.1);
* with ``active``: ``active_frac_{train,test}`` (mean share of active hidden units),
  ``log_active_ratio``, and ``log10_kummer_{train,test}``: log10 of the author's Gaussian bound
  B ([T] eq. 2, ``gauss_paper``) with μ, σ (ddof = 0) of the set's total active count;
* with ``path_score``: ``path_score_{train,test}`` (mean P(x), [T] eq. 3, 7; −inf when a sample
  has a layer without active unit);
* with ``membership``: ``log_membership_{train,test,shift}`` ([T] eq. 4, shift = test − train);
* with ``boundary``: ``log_boundary_{train,test,ratio}`` (log of the median distance to the
  region boundary);
* with ``region``: ``shared_region_share``, the share of test inputs in a region that holds a
  training input;
* from the weights: ``log10_w`` (log10 Π_l max|W_l|, [T] eq. 5), ``log10_fro_product`` and
  ``log10_spectral_product`` (Σ_l log10 of each layer's norm), ``log10_parameters``;
* with ``logits`` (:mod:`tsens.gap.scores`; both sets scored label-free):
  ``nuclear_norm_{train,test}`` (Deng et al. 2023), ``mano_{train,test}`` (Xie et al. 2024),
  ``energy_{train,test}`` (mean free energy) and ``mde_{train,test}`` (meta-distribution
  energy; Peng et al. 2024); and, with the training labels' class shares as the label
  marginal, ``cot_acc`` and ``cott_acc`` (Lu et al. 2023: COT's test accuracy, and COTT's with
  its threshold fitted on the training set and its error);
* with ``logits`` and ``penultimate``: ``dispersion_{train,test}`` (features grouped by
  predicted class; Xie et al. 2023), ``gdscore_{train,test}`` (pseudo-labels; Xie et al. 2025)
  and ``tic_gap`` (Takeuchi's tr(H⁻¹C)/n of the last layer with the true training labels,
  :mod:`tsens.gap.tic`);
* with ``logits`` or ``margin`` (Jiang et al. 2019): ``margin_q{25,50,75}_{train,test}``,
  quartiles of the logit margin (train: of the true class, f_y − max_{j≠y} f_j; test: of the
  predicted class, top − runner-up); with ``margin`` also
  ``log_boundary_margin_q{25,50,75}_{train,test}``, the natural log of the quartiles of the
  input-space distance to the decision boundary (``boundary_true``,
  ``boundary_pred``; −inf where a quartile is ≤ 0); quartiles of the finite values;
* from the weights, always (:mod:`tsens.gap.spectra`): ``ww_alpha_mean``,
  ``ww_alpha_weighted_mean`` (WeightWatcher's heavy-tail exponent α and α·log10 λ_max, mean
  over the layers with a fit), ``stable_rank_mean`` and ``weight_{mean,std,q25,q50,q75}``
  (means over the layers).

The per-sample logits and penultimate features are reduced to numbers here and never kept.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..bounds import log10_gauss_paper, log10_w, weight_statistics
from ..network import Network
from ..stream import SetResult
from . import scores
from .spectra import spectra_features
from .tic import tic_gap

ATC_LOSS_BINS = 20


@dataclass
class CheckpointFeatures:
    """One checkpoint's features, its truth when the test set has labels, and what sibling
    comparisons need (the test predictions and log-probabilities, kept only when asked)."""

    features: dict[str, float]
    truth: dict[str, float] | None = None
    test_log_probs: np.ndarray | None = field(default=None, repr=False)
    train_predicted: np.ndarray | None = field(default=None, repr=False)
    network: Network | None = field(default=None, repr=False)  # path, sha256, activation: no weights
    applied: dict[str, str] = field(default_factory=dict)  # the preprocessing each set got


def true_gap(features: Mapping[str, Any], truth: Mapping[str, Any]) -> tuple[float, float]:
    """The generalization gap, the one quantity every estimator predicts: test − train loss
    (nats) and test − train accuracy, from a checkpoint's features (or row) and its truth."""
    return truth["test_loss"] - features["train_loss"], truth["test_acc"] - features["train_acc"]


def _mean(values: np.ndarray) -> float:
    return float(np.mean(np.asarray(values, dtype=np.float64))) if len(values) else math.nan


def _log(value: float) -> float:
    return math.log(value) if value > 0 else -math.inf


def atc_threshold(train_conf: np.ndarray, train_acc: float) -> float:
    """The confidence t with share(conf_train > t) = train accuracy (Garg et al. 2022)."""
    return float(np.quantile(np.asarray(train_conf, dtype=np.float64), 1.0 - train_acc))


def atc_accuracy(train_conf: np.ndarray, train_acc: float, test_conf: np.ndarray) -> float:
    """ATC's test accuracy: the share of test inputs above the training threshold."""
    return float(np.mean(np.asarray(test_conf) > atc_threshold(train_conf, train_acc)))


def binned_loss(train_conf: np.ndarray, train_loss: np.ndarray, test_conf: np.ndarray) -> float:
    """The training loss as a function of confidence (mean per equal-count bin), averaged over
    the test inputs' confidences: ATC's transfer from train to test, for the loss."""
    conf = np.asarray(train_conf, dtype=np.float64)
    loss = np.asarray(train_loss, dtype=np.float64)
    order = np.argsort(conf, kind="stable")
    bins = np.array_split(order, min(ATC_LOSS_BINS, len(order)))
    upper = np.array([conf[b[-1]] for b in bins])
    means = np.array([loss[b].mean() for b in bins])
    which = np.minimum(np.searchsorted(upper, np.asarray(test_conf, dtype=np.float64)), len(bins) - 1)
    return float(means[which].mean())


def weight_features(network: Network, norms: bool = True) -> dict[str, float]:
    """``log10_w`` and, with ``norms``, the products of the layers' Frobenius and spectral norms
    and the parameter count (logs)."""
    if not norms:
        return {"log10_w": log10_w(network)}
    stats = weight_statistics(network)
    return {
        "log10_w": log10_w(network),
        "log10_fro_product": float(sum(math.log10(v) for v in stats["fro"] if v and v > 0)),
        "log10_spectral_product": float(sum(math.log10(v) for v in stats["spectral"] if v and v > 0)),
        "log10_parameters": math.log10(network.num_parameters),
    }


def _predicted(cols: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.asarray(cols["predicted"]) if "predicted" in cols else np.asarray(cols["logits"]).argmax(1)


def score_features(
    network: Network, tr: Mapping[str, np.ndarray], te: Mapping[str, np.ndarray]
) -> dict[str, float]:
    """The label-free scores of both sets and COT, COTT, TIC and the margin quartiles (module
    docstring) from the columns the passes computed; only the training set's labels are read."""
    f: dict[str, float] = {}
    sets = (("train", tr), ("test", te))
    if "logits" in tr and "logits" in te:
        probs = {}
        for name, cols in sets:
            logits = np.asarray(cols["logits"], dtype=np.float64)
            probs[name] = scores.softmax(logits)
            f[f"nuclear_norm_{name}"] = scores.nuclear_norm(probs[name])
            f[f"mano_{name}"] = scores.mano(logits)
            f[f"energy_{name}"] = scores.energy(logits)
            f[f"mde_{name}"] = scores.mde(logits)
            if "penultimate" in cols:
                features = cols["penultimate"]
                f[f"dispersion_{name}"] = scores.dispersion(features, _predicted(cols), network.output_dim)
                f[f"gdscore_{name}"] = scores.gdscore(logits, features)
        if "label" in tr and "correct" in tr:
            marginal = scores.class_shares(tr["label"], network.output_dim)
            f["cot_acc"], f["cott_acc"] = scores.cot_and_cott(
                probs["test"], marginal, probs["train"], 1.0 - _mean(tr["correct"])
            )
            if "penultimate" in tr:
                last = network.layers[-1]
                bias = last.bias is not None or last.norm is not None
                f["tic_gap"] = tic_gap(tr["penultimate"], tr["logits"], tr["label"], bias=bias)
    for set_name, cols, reading in (("train", tr, "true"), ("test", te, "pred")):
        if f"margin_{reading}" not in cols and "logits" in cols and (reading == "pred" or "label" in cols):
            logit_margin = scores.logit_margin(cols["logits"], cols["label"] if reading == "true" else None)
            for q, value in zip((25, 50, 75), scores.quartiles(logit_margin), strict=True):
                f[f"margin_q{q}_{set_name}"] = value
    for column, name in (("margin", "margin"), ("boundary", "log_boundary_margin")):
        for set_name, cols, reading in (("train", tr, "true"), ("test", te, "pred")):
            if f"{column}_{reading}" in cols:
                quartiles = scores.quartiles(cols[f"{column}_{reading}"])
                for q, value in zip((25, 50, 75), quartiles, strict=True):
                    if column == "boundary":
                        value = _log(value) if math.isfinite(value) else value
                    f[f"{name}_q{q}_{set_name}"] = value
    return f


def checkpoint_features(
    network: Network, train: SetResult, test: SetResult, *, keep_log_probs: bool = False
) -> CheckpointFeatures:
    """The features of one checkpoint from its training and test passes (module docstring)."""
    tr, te = train.columns, test.columns
    f: dict[str, float] = {"train_loss": _mean(tr["loss"]), "train_acc": _mean(tr["correct"])}
    f["conf_train"], f["conf_test"] = _mean(tr["confidence"]), _mean(te["confidence"])
    f["conf_shift"] = f["conf_train"] - f["conf_test"]
    f["entropy_train"], f["entropy_test"] = _mean(tr["entropy"]), _mean(te["entropy"])
    f["entropy_shift"] = f["entropy_test"] - f["entropy_train"]
    f["atc_acc"] = atc_accuracy(tr["confidence"], f["train_acc"], te["confidence"])
    f["atc_loss"] = binned_loss(tr["confidence"], tr["loss"], te["confidence"])
    for column, name in (
        ("jac_prob_fro", "jac_prob"),
        ("jac_logit_fro", "jac_logit"),
        ("tangent_fro", "tangent"),
    ):
        if column in tr:
            a, b = _log(_mean(tr[column])), _log(_mean(te[column]))
            f.update({f"log_{name}_train": a, f"log_{name}_test": b, f"log_{name}_ratio": b - a})
    if "active_total" in tr:
        width = sum(network.hidden_widths)
        a, b = _mean(tr["active_total"]) / width, _mean(te["active_total"]) / width
        f.update({"active_frac_train": a, "active_frac_test": b, "log_active_ratio": _log(b) - _log(a)})
        for name, cols in (("train", tr), ("test", te)):
            total = np.asarray(cols["active_total"], dtype=np.float64)
            f[f"log10_kummer_{name}"] = log10_gauss_paper(network, float(total.mean()), float(total.std()))
    if "path_score" in tr:
        f["path_score_train"], f["path_score_test"] = _mean(tr["path_score"]), _mean(te["path_score"])
    if "log_membership" in tr:
        a, b = _mean(tr["log_membership"]), _mean(te["log_membership"])
        f.update({"log_membership_train": a, "log_membership_test": b, "log_membership_shift": b - a})
    if "boundary_distance" in tr:
        a, b = (
            _log(float(np.median(tr["boundary_distance"]))),
            _log(float(np.median(te["boundary_distance"]))),
        )
        f.update({"log_boundary_train": a, "log_boundary_test": b, "log_boundary_ratio": b - a})
    if "region" in tr:
        f["shared_region_share"] = float(np.isin(te["region"], tr["region"]).mean())
    f.update(weight_features(network, norms="tangent_fro" in tr))  # the norms serve the calibration
    f.update(score_features(network, tr, te))
    f.update(spectra_features(network))
    truth = None
    if "loss" in te:
        truth = {"test_loss": _mean(te["loss"]), "test_acc": _mean(te["correct"])}
    log_probs = np.asarray(te["log_probs"], dtype=np.float32) if keep_log_probs else None
    return CheckpointFeatures(f, truth, log_probs)
