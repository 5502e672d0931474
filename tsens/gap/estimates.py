"""Every estimator applied to the scored checkpoints' features: one row per checkpoint.

Given each checkpoint's features (:mod:`.features`) in run order, this module applies the
estimators of :mod:`.estimators` (with the run's previous checkpoint, the sibling runs at the
same step, and the mean gap or the calibrated model of :mod:`.calibration`) and lays out each
checkpoint's row: the truth when known, every ``est_*`` and ``status_*``, then the features.
Nothing here reads data or runs a model; the passes are the command's
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
from .calibration import MIN_RUNS, Calibration, calibrate, cross_fit, derived, gap_arrays
from .features import CheckpointFeatures

Row = dict[str, Any]
Gaps = dict[str, list[tuple[float, float]]]

NEEDS_HIDDEN = {"kummer": "log10_kummer_test", "membership": "path_score_test"}
"""Estimators that read hidden units, and a feature they need (absent without hidden layers)."""


@dataclass
class GapResult:
    """Per-checkpoint rows (truth when known, every estimate and status, the features), the
    evaluation and the features' ranking when test labels are known, the calibration used, and
    notes on what fell back and why."""

    rows: list[Row]
    features: list[CheckpointFeatures] = field(default_factory=list, repr=False)
    evaluation: list[Row] | None = None
    ranking: list[Row] | None = None
    calibration: Calibration | None = None
    notes: list[str] = field(default_factory=list)

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


def datasets_of(refs: Sequence[CheckpointRef]) -> set[str]:
    """The training sets the checkpoints' metadata names (``dataset``)."""
    return {str(ref.metadata["dataset"]) for ref in refs if "dataset" in ref.metadata}


def estimate_rows(
    refs: Sequence[CheckpointRef],
    scored: Sequence[CheckpointFeatures],
    names: Sequence[str],
    siblings: dict[str, list[str]],
    gaps: Gaps,
    status: dict[str, str],
) -> list[Row]:
    """Every estimator of ``names`` for every checkpoint (module docstring); ``gaps`` and
    ``status`` are those of ``mean-gap`` and ``calibrated`` (:func:`calibrated_gaps`)."""
    position = {ref: i for i, ref in enumerate(refs)}
    rows = []
    for i, (ref, cf) in enumerate(zip(refs, scored, strict=True)):
        f = cf.features
        estimates: dict[str, est.Estimate] = {}
        for name in names:
            if name in NEEDS_HIDDEN and NEEDS_HIDDEN[name] not in f:
                estimates[name] = est.Estimate(f["train_loss"], f["train_acc"], "no-hidden-layer")
            elif name == "layer-norm":
                before = previous(refs, ref)
                estimates[name] = est.layer_norm(
                    f, None if before is None else scored[position[before]].features
                )
            elif name == "disagreement":
                others = [
                    scored[j].test_log_probs
                    for j, other in enumerate(refs)
                    if other.run in siblings.get(ref.run, []) and other.step == ref.step
                ]
                estimates[name] = est.disagreement(cf.test_log_probs, [o for o in others if o is not None], f)
            elif name in gaps:
                pair = gaps[name][i]
                estimates[name] = (
                    est.from_gaps(f, *pair)
                    if status[name] == "ok"
                    else est.Estimate(*_fallback_values(f, pair), status[name])
                )
            else:
                estimates[name] = getattr(est, name.replace("-", "_"))(f)
        rows.append(_row(ref, cf, estimates))
    return rows


def _fallback_values(f: dict[str, float], gaps: tuple[float, float]) -> tuple[float, float]:
    """A calibration that is not usable: mean-gap's values when given, else naive."""
    if all(math.isfinite(g) for g in gaps):
        e = est.from_gaps(f, *gaps)
        return e.loss, e.acc
    return f["train_loss"], f["train_acc"]


def _row(ref: CheckpointRef, cf: CheckpointFeatures, estimates: dict[str, est.Estimate]) -> Row:
    f = cf.features
    row: Row = {"checkpoint": ref.path, "run": ref.run, "step": ref.step}
    row.update({"train_loss": f["train_loss"], "train_acc": f["train_acc"]})
    if cf.truth is not None:
        row.update(cf.truth)
    for name, e in estimates.items():
        key = name.replace("-", "_")
        row.update({f"est_{key}_loss": e.loss, f"est_{key}_acc": e.acc, f"status_{key}": e.status})
    row.update({k: v for k, v in f.items() if k not in row})
    return row


def truth_from_metadata(ref: CheckpointRef) -> dict[str, float] | None:
    """A calibration checkpoint's test loss and accuracy as its metadata records them."""
    loss, acc = ref.metadata.get("test_loss"), ref.metadata.get("test_acc")
    if isinstance(loss, int | float) and isinstance(acc, int | float):
        return {"test_loss": float(loss), "test_acc": float(acc)}
    return None


def calibration_from(
    refs: Sequence[CheckpointRef], features: Sequence[CheckpointFeatures], dataset: str
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
    runs = [ref.run for ref in refs]
    if len(set(runs)) < 2:
        raise TsensError("`calibrate`: the calibration checkpoints come from one run; give at least two runs")
    sets = datasets_of(refs)
    return calibrate(
        [derived(cf.features) for cf in features],
        truths,
        runs,
        dataset=",".join(sorted(sets)) if sets else dataset,
    )


def calibrated_gaps(
    refs: Sequence[CheckpointRef],
    scored: Sequence[CheckpointFeatures],
    calibration: Calibration | None,
    source: str | None,
    dataset: str,
    notes: list[str],
) -> tuple[Gaps, dict[str, str]]:
    """Per checkpoint the (loss gap, accuracy gap) of ``mean-gap`` and ``calibrated``, and the
    status of each (the same for every checkpoint). ``source`` says where the calibration
    comes from: ``file`` or ``checkpoints`` (``calibration``), ``cross-fit`` (leave-one-run-out
    over the scored checkpoints' own labels) or None; ``dataset`` is the scored training set."""
    n = len(refs)
    nan = [(math.nan, math.nan)] * n
    both = ("mean-gap", "calibrated")
    if source is None:
        return dict.fromkeys(both, nan), dict.fromkeys(both, "no-calibration")
    rows = [derived(cf.features) for cf in scored]
    if source == "cross-fit":
        runs = [ref.run for ref in refs]
        loss_gap, acc_gap = gap_arrays(rows, [cf.truth for cf in scored])
        distinct = len(set(runs))
        if distinct < 2:
            notes.append(
                "one run only: mean-gap and calibrated cannot be cross-fitted and fall back to naive"
            )
            return dict.fromkeys(both, nan), dict.fromkeys(both, "too-few-calibration-runs")
        others = [np.array([r != run for r in runs]) for run in runs]
        held_mean = [(float(loss_gap[o].mean()), float(acc_gap[o].mean())) for o in others]
        if distinct - 1 < MIN_RUNS:
            notes.append(
                f"leave-one-run-out leaves {distinct - 1} calibration runs (fewer than {MIN_RUNS}): "
                "calibrated uses mean-gap instead"
            )
            return dict.fromkeys(both, held_mean), {
                "mean-gap": "ok",
                "calibrated": "too-few-calibration-runs",
            }
        fitted = list(zip(cross_fit(rows, loss_gap, runs), cross_fit(rows, acc_gap, runs), strict=True))
        return {"mean-gap": held_mean, "calibrated": fitted}, dict.fromkeys(both, "ok")
    assert calibration is not None
    mean = [(calibration.mean_loss_gap, calibration.mean_acc_gap)] * n
    scored_sets = datasets_of(refs) or {dataset}
    trained_on = set(calibration.dataset.split(",")) if calibration.dataset else set()
    if trained_on and not trained_on & scored_sets:
        notes.append(
            f"the calibration runs were trained on {calibration.dataset}, the scored checkpoints on "
            f"{', '.join(sorted(scored_sets))}: mean-gap and calibrated fall back to naive"
        )
        return dict.fromkeys(both, nan), dict.fromkeys(both, "calibration-from-another-dataset")
    if len(calibration.runs) < MIN_RUNS:
        notes.append(
            f"{len(calibration.runs)} calibration runs (fewer than {MIN_RUNS}): "
            "calibrated uses mean-gap instead"
        )
        return dict.fromkeys(both, mean), {"mean-gap": "ok", "calibrated": "too-few-calibration-runs"}
    fitted = list(
        zip(calibration.loss.predict(rows).tolist(), calibration.acc.predict(rows).tolist(), strict=True)
    )
    return {"mean-gap": mean, "calibrated": fitted}, dict.fromkeys(both, "ok")
