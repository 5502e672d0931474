"""Test loss and accuracy without test labels, for many checkpoints, evaluated honestly.

:func:`estimate_gap` passes the training set (with labels) and the test inputs through every
checkpoint once (the inputs preprocessed once and reused), reduces each pass to features
(:mod:`.features`), applies every estimator (:mod:`.estimators`), fits or applies the calibrated
one (:mod:`.calibration`) and, whenever the test set has labels, says how good each estimator
is (:mod:`.evaluation`). Test labels are used for the truth and for fitting calibrations only:
no estimator that scores a checkpoint reads that checkpoint's test labels, and a calibration
that uses the scored checkpoints' own labels is cross-fitted leave-one-run-out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..compute import Compute
from ..datasets import Dataset
from ..errors import TsensError
from ..executors import Executor, LocalExecutor
from ..jobs import Loader
from ..network import Network
from ..runs import CheckpointRef
from ..stream import InputCache, Progress, chosen_preprocess, measure_sets
from . import estimators as est
from .calibration import MIN_RUNS, Calibration, calibrate, cross_fit, derived
from .evaluation import evaluate, rank_measures
from .features import CheckpointFeatures, checkpoint_features

__all__ = ["Calibration", "GapResult", "estimate_gap", "features_job", "measure_checkpoint"]

Row = dict[str, Any]


@dataclass
class GapResult:
    """Per-checkpoint rows (truth when known, every estimate and status, the features), the
    evaluation and the measures' ranking when test labels are known, the calibration used, and
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


def check_estimators(names: Sequence[str]) -> tuple[str, ...]:
    unknown = [n for n in names if n not in est.NAMES]
    if unknown:
        raise TsensError(f"`estimators`: unknown {unknown}; expected some of {', '.join(est.NAMES)}")
    return tuple(n for n in est.NAMES if n in names or n == "naive")


def measure_checkpoint(
    network: Network,
    train: Dataset,
    test: Dataset,
    measures: set[str],
    *,
    compute: Compute,
    keep_log_probs: bool = False,
    cache: InputCache | None = None,
    progress: Callable[[str], Progress | None] | None = None,
) -> CheckpointFeatures:
    """One checkpoint's features from one pass of each set."""
    results = measure_sets(
        network,
        {"train": train, "test": test},
        sorted(measures),
        compute=compute,
        cache=cache,
        progress=progress,
    )
    return checkpoint_features(network, results["train"], results["test"], keep_log_probs=keep_log_probs)


def features_job(
    ref: CheckpointRef,
    progress: Callable[[str], Progress | None] | None = None,
    *,
    train: Dataset,
    test: Dataset,
    measures: set[str],
    compute: Compute,
    load: Callable[[CheckpointRef], Network],
    keep_runs: frozenset[str] = frozenset(),
    cache: InputCache | None = None,
) -> CheckpointFeatures:
    """One checkpoint's features (an executor's job): loaded, measured on both sets, with the
    test log-probabilities kept when its run has siblings (``keep_runs``), and a weightless copy
    of its network and the preprocessing applied, for provenance."""
    net = load(ref)
    cf = measure_checkpoint(
        net,
        train,
        test,
        measures,
        compute=compute,
        keep_log_probs=ref.run in keep_runs,
        cache=cache,
        progress=progress,
    )
    cf.network = replace(net, layers=())
    cf.applied = {
        f"preprocess_{name}": chosen_preprocess(net, data).to_json()
        for name, data in (("train", train), ("test", test))
    }
    return cf


def _siblings(refs: Sequence[CheckpointRef], key: str) -> dict[str, list[str]]:
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


def _datasets_of(refs: Sequence[CheckpointRef]) -> set[str]:
    return {str(ref.metadata["dataset"]) for ref in refs if "dataset" in ref.metadata}


def _truth_from_metadata(ref: CheckpointRef) -> dict[str, float] | None:
    loss, acc = ref.metadata.get("test_loss"), ref.metadata.get("test_acc")
    if isinstance(loss, int | float) and isinstance(acc, int | float):
        return {"test_loss": float(loss), "test_acc": float(acc)}
    return None


def estimate_gap(
    refs: Sequence[CheckpointRef],
    train: Dataset,
    test: Dataset,
    *,
    estimators: Sequence[str] = est.NAMES,
    calibration: Calibration | None = None,
    calibration_refs: Sequence[CheckpointRef] = (),
    sibling_key: str = "config",
    compute: Compute | None = None,
    load: Callable[[CheckpointRef], Network] | None = None,
    progress: Callable[[CheckpointRef], AbstractContextManager[Any]] | None = None,
    fit_calibration: bool = False,
    executor: Executor | None = None,
) -> GapResult:
    """Every estimator for every checkpoint of ``refs`` (module docstring).

    ``calibration`` (a saved :class:`Calibration`) or ``calibration_refs`` (checkpoints of other
    runs whose test loss and accuracy are known, from ``test``'s labels or their metadata
    ``test_loss``/``test_acc``) feed ``mean-gap`` and ``calibrated``; without either, and when
    ``test`` has labels, both are cross-fitted leave-one-run-out over ``refs``. Calibration
    checkpoints of a run that is also scored are left out (their labels would reach their own
    run's estimates). ``fit_calibration`` also fits one calibration on every scored run (to save
    it); ``load`` turns a reference into a network (default :meth:`CheckpointRef.load`; it must
    pickle for a cluster). ``executor`` runs the per-checkpoint passes (default here, one after
    another; :class:`~tsens.executors.RayExecutor` for a cluster), ``progress`` gives each local
    pass its progress callback; the calibration and the evaluation run here."""
    names = check_estimators(list(estimators))
    compute = compute or Compute()
    load = load or Loader()
    executor = executor or LocalExecutor()
    if train.y is None:
        raise TsensError(
            f"`train` {train.spec!r} has no labels; the training set's loss and accuracy need them"
        )
    if not refs:
        raise TsensError("no checkpoints to score")
    notes: list[str] = []
    scored_runs = {ref.run for ref in refs}
    overlapping = [r for r in calibration_refs if r.run in scored_runs]
    if overlapping:
        calibration_refs = [r for r in calibration_refs if r.run not in scored_runs]
        notes.append(
            f"{len(overlapping)} calibration checkpoint(s) belong to runs that are also scored and are left "
            "out: a run's own test labels must not reach its estimates"
        )
    labelled = test.y is not None
    calibrating = {"mean-gap", "calibrated"} & set(names)
    source = (
        "file" if calibration else "checkpoints" if calibration_refs else "cross-fit" if labelled else None
    )
    if calibrating and source is None:
        notes.append(
            "mean-gap and calibrated need a calibration (--calibrate, --calibration) or test labels: "
            "they fall back to naive"
        )
    siblings = _siblings(refs, sibling_key) if "disagreement" in names else {}
    if "disagreement" in names and not any(siblings.values()):
        notes.append(
            f"no two runs share the metadata {sibling_key!r} (see --sibling-key): "
            "disagreement falls back to naive"
        )
    # Nothing for an estimator that cannot run: calibrated without a calibration source (or
    # with a single run to cross-fit), disagreement without sibling runs.
    can_calibrate = source is not None and (source != "cross-fit" or len(scored_runs) >= 2)
    runnable = [
        n
        for n in names
        if (n != "calibrated" or can_calibrate) and (n != "disagreement" or any(siblings.values()))
    ]
    measures = est.required_measures(runnable)
    shared = dict(train=train, test=test, measures=measures, compute=compute, load=load, cache=InputCache())
    keep = frozenset(run for run, others in siblings.items() if others)
    scored = list(executor.map(features_job, refs, {**shared, "keep_runs": keep}, item_progress=progress))
    if source == "checkpoints":
        fitted = list(executor.map(features_job, calibration_refs, shared, item_progress=progress))
        calibration = _fit_calibration(calibration_refs, fitted, train)
    calibrated, status = _calibrated_gaps(refs, scored, calibration, source, train, notes)
    rows = []
    for i, (ref, cf) in enumerate(zip(refs, scored, strict=True)):
        f = cf.features
        previous = next((scored[j].features for j in range(i - 1, -1, -1) if refs[j].run == ref.run), None)
        estimates: dict[str, est.Estimate] = {}
        for name in names:
            if name == "layer-norm":
                estimates[name] = est.layer_norm(f, previous)
            elif name == "disagreement":
                others = [
                    scored[j].test_log_probs
                    for j, other in enumerate(refs)
                    if other.run in siblings.get(ref.run, []) and other.step == ref.step
                ]
                estimates[name] = est.disagreement(cf.test_log_probs, [o for o in others if o is not None], f)
            elif name in ("mean-gap", "calibrated"):
                gaps = calibrated[name][i]
                estimates[name] = (
                    est.from_gaps(f, *gaps)
                    if status[name] == "ok"
                    else est.Estimate(*_fallback_values(f, gaps), status[name])
                )
            else:
                estimates[name] = getattr(est, name.replace("-", "_"))(f)
        rows.append(_row(ref, cf, estimates))
    if fit_calibration and source == "cross-fit" and len(scored_runs) >= 2:
        # For --save-calibration: one model on every scored run (the estimates above never
        # used it; each was cross-fitted without its own run).
        calibration = calibrate(
            [derived(cf.features) for cf in scored],
            [cf.truth for cf in scored],
            [ref.run for ref in refs],
            dataset=",".join(sorted(_datasets_of(refs))) or train.spec,
        )
    result = GapResult(rows, scored, calibration=calibration, notes=notes)
    if labelled:
        result.evaluation = evaluate(rows, names)
        result.ranking = rank_measures(rows)
    return result


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


def _fit_calibration(
    refs: Sequence[CheckpointRef], features: Sequence[CheckpointFeatures], train: Dataset
) -> Calibration:
    truths = []
    for ref, cf in zip(refs, features, strict=True):
        truth = cf.truth or _truth_from_metadata(ref)
        if truth is None:
            raise TsensError(
                f"calibration checkpoint {ref.path}: its test loss and accuracy are unknown; give a labelled "
                "`test` set or checkpoints whose metadata records test_loss and test_acc"
            )
        truths.append(truth)
    runs = [ref.run for ref in refs]
    if len(set(runs)) < 2:
        raise TsensError("`calibrate`: the calibration checkpoints come from one run; give at least two runs")
    sets = _datasets_of(refs)
    return calibrate(
        [derived(cf.features) for cf in features],
        truths,
        runs,
        dataset=",".join(sorted(sets)) if sets else train.spec,
    )


def _calibrated_gaps(
    refs: Sequence[CheckpointRef],
    scored: Sequence[CheckpointFeatures],
    calibration: Calibration | None,
    source: str | None,
    train: Dataset,
    notes: list[str],
) -> tuple[dict[str, list[tuple[float, float]]], dict[str, str]]:
    """Per checkpoint the (loss gap, accuracy gap) of ``mean-gap`` and ``calibrated``, and the
    status of each (the same for every checkpoint)."""
    n = len(refs)
    nan = [(math.nan, math.nan)] * n
    if source is None:
        return {"mean-gap": nan, "calibrated": nan}, {
            "mean-gap": "no-calibration",
            "calibrated": "no-calibration",
        }
    rows = [derived(cf.features) for cf in scored]
    if source == "cross-fit":
        truths = [cf.truth for cf in scored]
        runs = [ref.run for ref in refs]
        loss_gap = np.array([t["test_loss"] - r["train_loss"] for r, t in zip(rows, truths, strict=True)])
        acc_gap = np.array([t["test_acc"] - r["train_acc"] for r, t in zip(rows, truths, strict=True)])
        distinct = len(set(runs))
        if distinct < 2:
            notes.append(
                "one run only: mean-gap and calibrated cannot be cross-fitted and fall back to naive"
            )
            status = "too-few-calibration-runs"
            return {"mean-gap": nan, "calibrated": nan}, {"mean-gap": status, "calibrated": status}
        held_mean = [
            (
                float(loss_gap[[r != run for r in runs]].mean()),
                float(acc_gap[[r != run for r in runs]].mean()),
            )
            for run in runs
        ]
        if distinct - 1 < MIN_RUNS:
            notes.append(
                f"leave-one-run-out leaves {distinct - 1} calibration runs (fewer than {MIN_RUNS}): "
                "calibrated uses mean-gap instead"
            )
            return {"mean-gap": held_mean, "calibrated": held_mean}, {
                "mean-gap": "ok",
                "calibrated": "too-few-calibration-runs",
            }
        fitted = list(zip(cross_fit(rows, loss_gap, runs), cross_fit(rows, acc_gap, runs), strict=True))
        return {"mean-gap": held_mean, "calibrated": fitted}, {"mean-gap": "ok", "calibrated": "ok"}
    assert calibration is not None
    mean = [(calibration.mean_loss_gap, calibration.mean_acc_gap)] * n
    scored_sets = _datasets_of(refs) or {train.spec}
    trained_on = set(calibration.dataset.split(",")) if calibration.dataset else set()
    if trained_on and not trained_on & scored_sets:
        notes.append(
            f"the calibration runs were trained on {calibration.dataset}, the scored checkpoints on "
            f"{', '.join(sorted(scored_sets))}: mean-gap and calibrated fall back to naive"
        )
        status = "calibration-from-another-dataset"
        return {"mean-gap": nan, "calibrated": nan}, {"mean-gap": status, "calibrated": status}
    if len(calibration.runs) < MIN_RUNS:
        notes.append(
            f"{len(calibration.runs)} calibration runs (fewer than {MIN_RUNS}): "
            "calibrated uses mean-gap instead"
        )
        return {"mean-gap": mean, "calibrated": mean}, {
            "mean-gap": "ok",
            "calibrated": "too-few-calibration-runs",
        }
    fitted = list(
        zip(calibration.loss.predict(rows).tolist(), calibration.acc.predict(rows).tolist(), strict=True)
    )
    return {"mean-gap": mean, "calibrated": fitted}, {"mean-gap": "ok", "calibrated": "ok"}
