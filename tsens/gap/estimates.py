"""Every estimator applied to the scored checkpoints' features: one row per checkpoint.

Given each checkpoint's features (:mod:`.features`) in run order, this module gathers each
checkpoint's :class:`~.estimators.Inputs` (the run's previous checkpoint, the sibling runs at
the same step, the calibrated predictions of :mod:`.calibration`), applies the registered
estimators (:data:`.estimators.ESTIMATORS`) and lays out each checkpoint's row: the truth when
known, every ``est_*`` (with ``_lo``/``_hi`` for the intervals) and ``status_*``, then the
features. Nothing here reads data or runs a model; the passes are the command's
(:mod:`tsens.commands.estimate_gap`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import TsensError
from ..runs import CheckpointRef, previous
from . import estimators as est
from .calibration import (
    LEVEL,
    MIN_RUNS,
    Calibration,
    Prediction,
    calibrate,
    cross_fit,
    derived,
    gap_arrays,
    sets_up_to,
    targets,
)
from .features import CheckpointFeatures

Row = dict[str, Any]
Calibrated = dict[str, list[est.Estimate]]

HIDDEN_FEATURE = "log10_kummer_test"
"""A feature every network with a hidden layer has and one without has not."""


@dataclass
class GapResult:
    """Per-checkpoint rows (truth when known, every estimate and status, the features), the
    evaluation and the features' ranking when test labels are known, the calibration used, the
    recommended estimator, and notes on what fell back and why."""

    rows: list[Row]
    features: list[CheckpointFeatures] = field(default_factory=list, repr=False)
    evaluation: list[Row] | None = None
    ranking: list[Row] | None = None
    calibration: Calibration | None = None
    notes: list[str] = field(default_factory=list)
    names: tuple[str, ...] = ()
    recommended: str = "naive"
    level: float = LEVEL

    @property
    def labelled(self) -> bool:
        return self.evaluation is not None

    def __repr__(self) -> str:
        what = "evaluated" if self.labelled else "no test labels"
        return f"<GapResult: {len(self.rows)} checkpoints, {what}, {len(self.notes)} notes>"


def siblings_of(refs: Sequence[CheckpointRef], key: str) -> dict[str, list[str]]:
    """Run → the other runs with the same metadata ``key`` (e.g. the same ``config``)."""
    by_value: dict[Any, list[str]] = {}
    for ref in refs:
        value = ref.metadata.get(key)
        if value is not None and ref.run not in by_value.setdefault(value, []):
            by_value[value].append(ref.run)
    out: dict[str, list[str]] = {}
    for runs in by_value.values():
        for run in runs:
            out[run] = [r for r in runs if r != run]
    return out


def held_out_groups(refs: Sequence[CheckpointRef], sibling_key: str | None) -> list[str]:
    """The unit each checkpoint is held out with when the calibrated estimators are validated:
    its run together with its sibling runs (the same metadata ``sibling_key``: another seed of
    the same configuration would otherwise vouch for it), else its run alone."""
    out = []
    for ref in refs:
        value = ref.metadata.get(sibling_key) if sibling_key else None
        out.append(f"{sibling_key}={value}" if value is not None else f"run={ref.run}")
    return out


def datasets_of(refs: Sequence[CheckpointRef]) -> set[str]:
    """The training sets the checkpoints' metadata names (``dataset``)."""
    return {str(ref.metadata["dataset"]) for ref in refs if "dataset" in ref.metadata}


def estimate_rows(
    refs: Sequence[CheckpointRef],
    scored: Sequence[CheckpointFeatures],
    names: Sequence[str],
    siblings: dict[str, list[str]],
    calibrated: Calibrated,
) -> list[Row]:
    """Every estimator of ``names`` for every checkpoint (module docstring); ``calibrated``
    holds the estimates of the calibrated ones (:func:`calibrated_estimates`)."""
    position = {ref: i for i, ref in enumerate(refs)}
    rows = []
    for i, (ref, cf) in enumerate(zip(refs, scored, strict=True)):
        before = previous(refs, ref)
        mates = [
            est.Sibling(scored[j].train_predicted, scored[j].test_log_probs)  # type: ignore[arg-type]
            for j, other in enumerate(refs)
            if other.run in siblings.get(ref.run, [])
            and other.step == ref.step
            and scored[j].test_log_probs is not None
        ]
        inputs = est.Inputs(
            cf.features,
            previous=None if before is None else scored[position[before]].features,
            test_log_probs=cf.test_log_probs,
            train_predicted=cf.train_predicted,
            siblings=mates,
            calibrated={name: values[i] for name, values in calibrated.items()},
        )
        estimates = {name: _apply(est.ESTIMATORS[name], inputs) for name in names}
        rows.append(_row(ref, cf, estimates))
    return rows


def _apply(estimator: est.Estimator, inputs: est.Inputs) -> est.Estimate:
    f = inputs.features
    if "hidden" in estimator.needs and HIDDEN_FEATURE not in f:
        return est.Estimate(f["train_loss"], f["train_acc"], "no-hidden-layer")
    e = estimator.estimate(inputs)
    # A quantity the estimator does not estimate is NaN, even where it fell back to naive.
    loss = e.loss if "loss" in estimator.targets else math.nan
    acc = e.acc if "acc" in estimator.targets else math.nan
    return est.Estimate(loss, acc, e.status, e.loss_interval, e.acc_interval)


def _row(ref: CheckpointRef, cf: CheckpointFeatures, estimates: dict[str, est.Estimate]) -> Row:
    f = cf.features
    row: Row = {"checkpoint": ref.path, "run": ref.run, "step": ref.step}
    row.update({"train_loss": f["train_loss"], "train_acc": f["train_acc"]})
    if cf.truth is not None:
        row.update(cf.truth)
    for name, e in estimates.items():
        key = name.replace("-", "_")
        row.update({f"est_{key}_loss": e.loss, f"est_{key}_acc": e.acc, f"status_{key}": e.status})
        if est.ESTIMATORS[name].interval:
            row.update(
                {
                    f"est_{key}_loss_lo": e.loss_interval[0],
                    f"est_{key}_loss_hi": e.loss_interval[1],
                    f"est_{key}_acc_lo": e.acc_interval[0],
                    f"est_{key}_acc_hi": e.acc_interval[1],
                }
            )
    row.update({k: v for k, v in f.items() if k not in row})
    return row


def truth_from_metadata(ref: CheckpointRef) -> dict[str, float] | None:
    """A calibration checkpoint's test loss and accuracy as its metadata records them."""
    loss, acc = ref.metadata.get("test_loss"), ref.metadata.get("test_acc")
    if isinstance(loss, int | float) and isinstance(acc, int | float):
        return {"test_loss": float(loss), "test_acc": float(acc)}
    return None


def calibration_from(
    refs: Sequence[CheckpointRef],
    features: Sequence[CheckpointFeatures],
    dataset: str,
    sets: Sequence[str] = ("train", "shift", "field"),
    sibling_key: str | None = None,
) -> Calibration:
    """A calibration fitted on checkpoints whose test loss and accuracy are known (from the test
    labels, else their metadata), of at least two runs; ``dataset`` names the training set
    when their metadata does not."""
    truths = []
    for ref, cf in zip(refs, features, strict=True):
        truth = cf.truth or truth_from_metadata(ref)
        if truth is None:
            raise TsensError(
                f"calibration checkpoint {ref.path}: its test loss and accuracy are unknown; give a labelled "
                "`test` set or checkpoints whose metadata records test_loss and test_acc"
            )
        truths.append(truth)
    if len({ref.run for ref in refs}) < 2:
        raise TsensError("`calibrate`: the calibration checkpoints come from one run; give at least two runs")
    trained_on = datasets_of(refs)
    return calibrate(
        [derived(cf.features) for cf in features],
        truths,
        held_out_groups(refs, sibling_key),
        dataset=",".join(sorted(trained_on)) if trained_on else dataset,
        sets=sets,
    )


def _estimates(loss: Prediction, acc: Prediction) -> list[est.Estimate]:
    return [
        est.Estimate(
            float(loss.value[i]),
            float(acc.value[i]),
            "ok",
            (float(loss.lo[i]), float(loss.hi[i])),
            (float(acc.lo[i]), float(acc.hi[i])),
        )
        for i in range(len(loss.value))
    ]


def _fallbacks(
    f: list[dict[str, float]], gaps: Sequence[tuple[float, float]] | None, status: str
) -> list[est.Estimate]:
    """A calibration that is not usable: mean-gap's values when given, else naive."""
    out = []
    for i, r in enumerate(f):
        e = est.from_gaps(r, *gaps[i]) if gaps is not None else est.naive(r)
        out.append(est.Estimate(e.loss, e.acc, status))
    return out


def calibrated_estimates(
    refs: Sequence[CheckpointRef],
    scored: Sequence[CheckpointFeatures],
    calibration: Calibration | None,
    source: str | None,
    dataset: str,
    notes: list[str],
    *,
    level: float = LEVEL,
    features: str = "field",
    sibling_key: str | None = None,
) -> tuple[Calibrated, list[bool]]:
    """Per checkpoint the estimates of ``mean-gap``, ``calibrated-train`` and ``calibrated``,
    and whether a feature of ``calibrated`` lay outside the calibration range. ``source`` says
    where the calibration comes from: ``file`` or ``checkpoints`` (``calibration``),
    ``cross-fit`` (over the scored checkpoints' own labels, each run held out alone or, with a
    ``sibling_key``, with its siblings: :func:`held_out_groups`) or None; ``dataset`` is the
    scored training set; ``features`` the richest feature set considered and ``level`` the
    intervals' coverage."""
    rows = [derived(cf.features) for cf in scored]
    n = len(rows)
    fitted = ("calibrated-train", "calibrated")
    outside = [False] * n
    if source is None:
        status = "no-calibration"
        return {name: _fallbacks(rows, None, status) for name in ("mean-gap", *fitted)}, outside
    if source == "cross-fit":
        runs = held_out_groups(refs, sibling_key)
        truths = [cf.truth for cf in scored]
        loss_gap, acc_gap = gap_arrays(rows, truths)  # type: ignore[arg-type]
        distinct = len(set(runs))
        if distinct < 2:
            notes.append(
                "one run only: the calibrated estimators cannot be cross-fitted and fall back to naive"
            )
            status = "too-few-calibration-runs"
            return {name: _fallbacks(rows, None, status) for name in ("mean-gap", *fitted)}, outside
        others = [np.array([r != run for r in runs]) for run in runs]
        mean = [(float(loss_gap[o].mean()), float(acc_gap[o].mean())) for o in others]
        out = {"mean-gap": _fallbacks(rows, mean, "ok")}
        if distinct - 1 < MIN_RUNS:
            notes.append(
                f"cross-fitting leaves {distinct - 1} calibration runs"
                + (" or sibling groups" if sibling_key else "")
                + f" (fewer than {MIN_RUNS}): calibrated and calibrated-train use mean-gap instead"
            )
            out.update({name: _fallbacks(rows, mean, "too-few-calibration-runs") for name in fitted})
            return out, outside
        y = targets(rows, truths)  # type: ignore[arg-type]
        for name, sets in (("calibrated-train", ("train",)), ("calibrated", sets_up_to(features))):
            loss = cross_fit(rows, y["loss"], runs, target="loss", sets=sets, level=level)
            acc = cross_fit(rows, y["acc"], runs, target="acc", sets=sets, level=level)
            out[name] = _estimates(loss, acc)
            if name == "calibrated":
                outside = [bool(a or b) for a, b in zip(loss.outside, acc.outside, strict=True)]
        return out, outside
    assert calibration is not None
    mean = [(calibration.mean_loss_gap, calibration.mean_acc_gap)] * n
    scored_sets = datasets_of(refs) or {dataset}
    trained_on = set(calibration.dataset.split(",")) if calibration.dataset else set()
    if trained_on and not trained_on & scored_sets:
        notes.append(
            f"the calibration runs were trained on {calibration.dataset}, the scored checkpoints on "
            f"{', '.join(sorted(scored_sets))}: the calibrated estimators fall back to naive"
        )
        status = "calibration-from-another-dataset"
        return {name: _fallbacks(rows, None, status) for name in ("mean-gap", *fitted)}, outside
    out = {"mean-gap": _fallbacks(rows, mean, "ok")}
    if len(calibration.runs) < MIN_RUNS:
        notes.append(
            f"{len(calibration.runs)} calibration runs (fewer than {MIN_RUNS}): "
            "calibrated and calibrated-train use mean-gap instead"
        )
        out.update({name: _fallbacks(rows, mean, "too-few-calibration-runs") for name in fitted})
        return out, outside
    missing = sorted(
        {f for f in calibration.loss.features + calibration.acc.features if any(f not in r for r in rows)}
    )
    if missing:
        raise TsensError(
            f"the calibration uses features these passes did not compute ({', '.join(missing)}); "
            f"score with `features` = {calibration.loss.feature_set!r} or richer"
        )
    for name in fitted:
        loss = calibration.model(name, "loss").prediction(rows, level)
        acc = calibration.model(name, "acc").prediction(rows, level)
        out[name] = _estimates(loss, acc)
        if name == "calibrated":
            outside = [bool(a or b) for a, b in zip(loss.outside, acc.outside, strict=True)]
    return out, outside
