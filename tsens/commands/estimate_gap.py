"""``estimate-gap`` as one library call: test loss and accuracy without test labels, for many
checkpoints, evaluated honestly.

The training set (with labels) and the test inputs pass through every checkpoint once (the
inputs preprocessed once and reused; one :func:`.jobs.features_job` per checkpoint on the
setup's executor); each pass is reduced to features (:mod:`tsens.gap.features`), every
estimator is applied (:mod:`tsens.gap.estimates`), the calibrated one fitted or applied
(:mod:`tsens.gap.calibration`) and, whenever the test set has labels, each estimator is judged
(:mod:`tsens.gap.evaluation`). Test labels are used for the truth and for fitting calibrations
only: no estimator that scores a checkpoint reads that checkpoint's test labels, and a
calibration that uses the scored checkpoints' own labels is cross-fitted leave-one-run-out.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..choices import ESTIMATORS
from ..compute import Compute
from ..datasets import Dataset
from ..errors import TsensError
from ..gap.calibration import Calibration, calibrate, derived
from ..gap.estimates import (
    GapResult,
    calibrated_gaps,
    calibration_from,
    datasets_of,
    estimate_rows,
    siblings_of,
)
from ..gap.estimators import required_measures
from ..gap.evaluation import evaluate, rank_features
from ..runs import CheckpointRef
from ..stream import InputCache
from .jobs import Loader, features_job
from .result import Collector, CommandResult
from .runner import Progress, Runner
from .setup import Checkpoints, DataSpec, Setup, check_inputs, plan


def estimate_gap(
    checkpoints: Checkpoints,
    train: DataSpec,
    test: DataSpec,
    *,
    estimators: Sequence[str] = ESTIMATORS,
    calibrate: Checkpoints = (),
    calibration: Calibration | str | None = None,
    sibling_key: str = "config",
    fit_calibration: bool = False,
    setup: Setup | None = None,
    progress: Progress | None = None,
) -> CommandResult:
    """Every estimator of ``estimators`` for every checkpoint (module docstring): one row per
    checkpoint (truth when known, each ``est_*``/``status_*``, the features) and, when ``test``
    has labels, the evaluation and the features' ranking as summary rows; ``extra["gap"]`` is
    the :class:`~tsens.gap.estimates.GapResult`.

    ``calibrate`` (checkpoints of other runs whose test loss and accuracy are known) or
    ``calibration`` (a saved :class:`~tsens.gap.calibration.Calibration`, or its file) feed
    ``mean-gap`` and ``calibrated``; without either they are cross-fitted leave-one-run-out when
    ``test`` has labels. ``sibling_key`` names the metadata shared by sibling runs
    (``disagreement``); ``fit_calibration`` also fits one calibration on every scored run, to
    save (``extra["gap"].calibration``)."""
    if calibrate and calibration is not None:
        raise TsensError("give `calibrate` checkpoints or a `calibration`, not both")
    if fit_calibration and calibration is not None:
        raise TsensError("`fit_calibration` fits a calibration here; `calibration` gives one already")
    setup = setup or Setup()
    names = check_estimators(estimators)
    train_set, test_set = setup.dataset(train), setup.dataset(test)
    sets = {"train": train_set, "test": test_set}
    refs = setup.checkpoints(checkpoints, sets)
    calibration_refs = plan(calibrate, what="calibrate") if calibrate else []
    if calibration_refs:
        check_inputs(calibration_refs, sets, setup.layers)
    if isinstance(calibration, str):
        calibration = Calibration.load(calibration)
    can_fit = bool(calibration_refs) or (test_set.y is not None and len({r.run for r in refs}) >= 2)
    if fit_calibration and not can_fit:
        raise TsensError(
            "`fit_calibration` needs `calibrate` checkpoints, or a labelled `test` set and checkpoints of "
            "at least 2 runs"
        )
    result = gap_estimates(
        refs,
        train_set,
        test_set,
        names=names,
        calibration=calibration,
        calibration_refs=calibration_refs,
        sibling_key=sibling_key,
        compute=setup.compute,
        load=setup.loader(),
        fit_calibration=fit_calibration,
        runner=Runner(setup.executor_for(), progress),
    )
    options = {**setup.record(), "estimators": ",".join(names), "sibling_key": sibling_key}
    options["calibrate"] = [r.path for r in calibration_refs]
    collector = Collector("estimate-gap", {"train": train_set.spec, "test": test_set.spec}, options)
    for ref, row, cf in zip(refs, result.rows, result.features, strict=True):
        columns = {k: [v] for k, v in row.items() if k not in ("checkpoint", "run", "step")}
        collector.add(ref, cf.network, columns, applied=cf.applied)
    collector.add_summary([*(result.evaluation or []), *(result.ranking or [])])
    if result.calibration is not None and fit_calibration:
        result.calibration.provenance = collector.meta()
    return collector.result({"gap": result}, result.notes)


def check_estimators(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` in table order, ``naive`` always among them; unknown names are refused."""
    unknown = [n for n in names if n not in ESTIMATORS]
    if unknown:
        raise TsensError(f"`estimators`: unknown {unknown}; expected some of {', '.join(ESTIMATORS)}")
    return tuple(n for n in ESTIMATORS if n in names or n == "naive")


def gap_estimates(
    refs: Sequence[CheckpointRef],
    train: Dataset,
    test: Dataset,
    *,
    names: Sequence[str] = ESTIMATORS,
    calibration: Calibration | None = None,
    calibration_refs: Sequence[CheckpointRef] = (),
    sibling_key: str = "config",
    compute: Compute | None = None,
    load: Loader | None = None,
    fit_calibration: bool = False,
    runner: Runner | None = None,
) -> GapResult:
    """The work of :func:`estimate_gap` on planned checkpoints and loaded data sets: the passes
    through ``runner`` (default: here, one after another), the calibration and the evaluation
    here. Calibration checkpoints of a run that is also scored are left out (their labels would
    reach their own run's estimates)."""
    names = check_estimators(names)
    compute = compute or Compute()
    runner = runner or Runner()
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
    source = (
        "file" if calibration else "checkpoints" if calibration_refs else "cross-fit" if labelled else None
    )
    if {"mean-gap", "calibrated"} & set(names) and source is None:
        notes.append(
            "mean-gap and calibrated need a calibration (`calibrate`, `calibration`) or test labels: "
            "they fall back to naive"
        )
    siblings = siblings_of(refs, sibling_key) if "disagreement" in names else {}
    if "disagreement" in names and not any(siblings.values()):
        notes.append(
            f"no two runs share the metadata {sibling_key!r} (see `sibling_key`): "
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
    shared = dict(
        train=train,
        test=test,
        measures=required_measures(runnable),
        compute=compute,
        load=load or Loader(),
        cache=InputCache(),
    )
    samples = len(train) + len(test)
    keep = frozenset(run for run, others in siblings.items() if others)
    scored = list(runner.map(features_job, refs, {**shared, "keep_runs": keep}, size=lambda _: samples))
    if source == "checkpoints":
        fitted = list(runner.map(features_job, calibration_refs, shared, size=lambda _: samples))
        calibration = calibration_from(calibration_refs, fitted, train.spec)
    gaps, status = calibrated_gaps(refs, scored, calibration, source, train.spec, notes)
    rows = estimate_rows(refs, scored, names, siblings, gaps, status)
    if fit_calibration and source == "cross-fit" and len(scored_runs) >= 2:
        # One model on every scored run, to save (the estimates above never used it: each was
        # cross-fitted without its own run).
        calibration = calibrate(
            [derived(cf.features) for cf in scored],
            [cf.truth for cf in scored],
            [ref.run for ref in refs],
            dataset=",".join(sorted(datasets_of(refs))) or train.spec,
        )
    result = GapResult(rows, scored, calibration=calibration, notes=notes)
    if labelled:
        result.evaluation = evaluate(rows, names)
        result.ranking = rank_features(rows)
    return result
