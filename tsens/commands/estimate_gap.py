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

from ..choices import DEFAULT_FEATURES, ESTIMATORS, FEATURE_SETS, HOLD_OUT
from ..compute import Compute
from ..datasets import Dataset
from ..errors import TsensError
from ..gap.answer import agreement_columns, recorded_mismatches, same_inputs
from ..gap.calibration import LEVEL, Calibration, calibrate, derived, sets_up_to
from ..gap.estimates import (
    GapResult,
    calibrated_estimates,
    calibration_from,
    datasets_of,
    estimate_rows,
    held_out_groups,
    siblings_of,
)
from ..gap.estimators import CALIBRATED, NEEDS, costly, required_measures
from ..gap.estimators import ESTIMATORS as REGISTRY
from ..gap.evaluation import evaluate, hyperparameters, rank_features
from ..runs import CheckpointRef
from ..stream import InputCache
from .jobs import Loader, features_job
from .result import Collector, CommandResult
from .runner import Progress, Runner
from .setup import Checkpoints, DataSpec, Setup, check_inputs, plan


def estimate_gap(
    checkpoints: Checkpoints,
    train: DataSpec | None = None,
    test: DataSpec | None = None,
    *,
    estimators: Sequence[str] | None = None,
    features: str = DEFAULT_FEATURES,
    interval: float = LEVEL,
    calibrate: Checkpoints = (),
    calibration: Calibration | str | None = None,
    sibling_key: str = "config",
    hold_out: str = "run",
    fit_calibration: bool = False,
    setup: Setup | None = None,
    progress: Progress | None = None,
) -> CommandResult:
    """Every estimator of ``estimators`` for every checkpoint (module docstring): one row per
    checkpoint (truth when known, each ``est_*``/``status_*``, the features) and, when ``test``
    has labels, the evaluation and the features' ranking as summary rows; ``extra["gap"]`` is
    the :class:`~tsens.gap.estimates.GapResult`.

    ``train`` or ``test`` None: each checkpoint's metadata names its sets (``dataset``,
    ``test_dataset``), and checkpoints of different sets are scored, calibrated and evaluated
    apart, one group per pair of sets (``extra["gaps"]``: (train, test, GapResult) per group;
    the rows and summary rows then say their sets in ``train_set``/``test_set``).

    ``estimators`` None (the default) runs every estimator that can run on what is given and
    needs no costly measure (:func:`~tsens.gap.estimators.costly`: ``jacobian``, ``kummer``,
    ``membership``), and leaves the others out (saying why in the notes for those that cannot
    run); named ones are all shown, with fallback statuses where they cannot run. ``features``
    is the richest feature set the calibrated estimator considers (``train`` ⊂ ``shift`` ⊂
    ``field`` ⊂ ``sensitivity`` ⊂ ``all``; the last two need the costly measures) and
    ``interval`` the intervals' coverage.

    ``calibrate`` (checkpoints of other runs whose test loss and accuracy are known) or
    ``calibration`` (a saved :class:`~tsens.gap.calibration.Calibration`, or its file) feed
    ``mean-gap`` and ``calibrated``; without either they are cross-fitted leave-one-run-out when
    ``test`` has labels. ``sibling_key`` names the metadata shared by sibling runs
    (``disagreement``, ``agreement``); ``hold_out`` the unit the calibrated estimators'
    cross-validation holds out: ``run`` (leave-one-run-out) or ``siblings`` (a run with its
    siblings, stricter when seeds are near-duplicates); ``fit_calibration`` also fits one
    calibration on every scored run, to save (``extra["gap"].calibration``)."""
    if calibrate and calibration is not None:
        raise TsensError("give `calibrate` checkpoints or a `calibration`, not both")
    if fit_calibration and calibration is not None:
        raise TsensError("`fit_calibration` fits a calibration here; `calibration` gives one already")
    setup = setup or Setup()
    check_options(estimators, features, interval)
    grouped = train is None or test is None
    if grouped:
        groups = sets_from_metadata(setup.checkpoints(checkpoints), train, test)
        if len(groups) > 1 and (calibrate or calibration is not None or fit_calibration):
            raise TsensError(
                f"the checkpoints name {len(groups)} pairs of data sets in their metadata; `calibrate`, "
                "`calibration` and `fit_calibration` apply to one: score each data set apart"
            )
    else:
        groups = {(train, test): checkpoints}  # type: ignore[dict-item]
    planned = []
    for (train_spec, test_spec), members in groups.items():
        train_set, test_set = setup.dataset(train_spec), setup.dataset(test_spec)
        sets = {"train": train_set, "test": test_set}
        planned.append((train_set, test_set, setup.checkpoints(members, sets)))  # checked before any work
    calibration_refs = plan(calibrate, what="calibrate") if calibrate else []
    if calibration_refs:
        check_inputs(calibration_refs, {"train": planned[0][0], "test": planned[0][1]}, setup.layers)
    if isinstance(calibration, str):
        calibration = Calibration.load(calibration)
    if calibration is not None:
        check_richness(calibration, features)
    train_set, test_set, refs = planned[0]
    can_fit = bool(calibration_refs) or (test_set.y is not None and len({r.run for r in refs}) >= 2)
    if fit_calibration and not can_fit:
        raise TsensError(
            "`fit_calibration` needs `calibrate` checkpoints, or a labelled `test` set and checkpoints of "
            "at least 2 runs"
        )
    runner = Runner(setup.executor_for(), progress)
    results = []
    for train_set, test_set, refs in planned:
        result = gap_estimates(
            refs,
            train_set,
            test_set,
            names=estimators,
            features=features,
            interval=interval,
            calibration=calibration,
            calibration_refs=calibration_refs,
            sibling_key=sibling_key,
            hold_out=hold_out,
            compute=setup.compute,
            load=setup.loader(),
            fit_calibration=fit_calibration,
            runner=runner,
        )
        if len(planned) > 1:
            result.notes[:] = [f"{train_set.spec} → {test_set.spec}: {n}" for n in result.notes]
        results.append((train_set, test_set, refs, result))
    names = [n for n in ESTIMATORS if any(n in r.names for *_, r in results)]
    options = {
        **setup.record(),
        "estimators": ",".join(names),
        "features": features,
        "interval": interval,
        "sibling_key": sibling_key,
        "hold_out": hold_out,
    }
    options["calibrate"] = [r.path for r in calibration_refs]
    data = (
        {"train": "checkpoint metadata `dataset`", "test": "checkpoint metadata `test_dataset`"}
        if grouped
        else {"train": planned[0][0].spec, "test": planned[0][1].spec}
    )
    collector = Collector("estimate-gap", data, options)
    for train_set, test_set, refs, result in results:
        where = {"train_set": train_set.spec, "test_set": test_set.spec} if grouped else {}
        for ref, row, cf in zip(refs, result.rows, result.features, strict=True):
            columns = {k: [v] for k, v in {**where, **row}.items() if k not in ("checkpoint", "run", "step")}
            collector.add(ref, cf.network, columns, applied=cf.applied)
        collector.add_summary([{**where, **r} for r in [*(result.evaluation or []), *(result.ranking or [])]])
    first = results[0][3]
    if first.calibration is not None and fit_calibration:
        first.calibration.provenance = collector.meta()
    notes = [n for *_, r in results for n in r.notes]
    gaps = [(tr.spec, te.spec, r) for tr, te, _, r in results]
    return collector.result({"gap": first, "gaps": gaps}, notes)


def sets_from_metadata(
    refs: Sequence[CheckpointRef], train: DataSpec | None, test: DataSpec | None
) -> dict[tuple[DataSpec, DataSpec], list[CheckpointRef]]:
    """The checkpoints grouped by the training and test sets their metadata names (``dataset``,
    ``test_dataset``; a given ``train`` or ``test`` holds for all), in first-seen order;
    refused when a checkpoint names none."""
    groups: dict[tuple[DataSpec, DataSpec], list[CheckpointRef]] = {}
    for ref in refs:
        pair = []
        for given, key, option in ((train, "dataset", "train"), (test, "test_dataset", "test")):
            value = given if given is not None else ref.metadata.get(key)
            if value is None or value == "":
                raise TsensError(f"checkpoint {ref.path}: its metadata names no {key!r}; give `{option}`")
            pair.append(value if not isinstance(value, int | float) else str(value))
        groups.setdefault((pair[0], pair[1]), []).append(ref)
    return groups


def check_estimators(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` in table order, ``naive`` always among them; unknown names are refused."""
    unknown = [n for n in names if n not in ESTIMATORS]
    if unknown:
        raise TsensError(f"`estimators`: unknown {unknown}; expected some of {', '.join(ESTIMATORS)}")
    return tuple(n for n in ESTIMATORS if n in names or n == "naive")


def check_richness(calibration: Calibration, features: str) -> None:
    """Refuse, before any work, a calibration whose models read a richer feature set than the
    passes for ``features`` compute."""
    needed = max(FEATURE_SETS.index(m.feature_set) for m in (calibration.loss, calibration.acc))
    if needed > FEATURE_SETS.index(features):
        raise TsensError(
            f"`calibration` was fitted on the feature set {FEATURE_SETS[needed]!r}; score with `features` "
            f"{FEATURE_SETS[needed]!r} or richer (now {features!r})"
        )


def check_options(estimators: Sequence[str] | None, features: str, interval: float) -> None:
    """Refuse unknown estimators or feature sets and an interval level outside (0, 1)."""
    if estimators is not None:
        check_estimators(estimators)
    if features not in FEATURE_SETS:
        raise TsensError(f"`features` {features!r}: expected one of {', '.join(FEATURE_SETS)}")
    if isinstance(interval, bool) or not isinstance(interval, int | float) or not 0 < interval < 1:
        raise TsensError(f"`interval` must be a coverage level strictly between 0 and 1, got {interval!r}")


def gap_estimates(
    refs: Sequence[CheckpointRef],
    train: Dataset,
    test: Dataset,
    *,
    names: Sequence[str] | None = None,
    features: str = DEFAULT_FEATURES,
    interval: float = LEVEL,
    calibration: Calibration | None = None,
    calibration_refs: Sequence[CheckpointRef] = (),
    sibling_key: str = "config",
    hold_out: str = "run",
    compute: Compute | None = None,
    load: Loader | None = None,
    fit_calibration: bool = False,
    runner: Runner | None = None,
) -> GapResult:
    """The work of :func:`estimate_gap` on planned checkpoints and loaded data sets: the passes
    through ``runner`` (default: here, one after another), the calibration and the evaluation
    here. Calibration checkpoints of a run that is also scored are left out (their labels would
    reach their own run's estimates)."""
    check_options(names, features, interval)
    if hold_out not in HOLD_OUT:
        raise TsensError(f"`hold_out` {hold_out!r}: expected one of {', '.join(HOLD_OUT)}")
    group_key = sibling_key if hold_out == "siblings" else None
    compute = compute or Compute()
    runner = runner or Runner()
    if train.y is None:
        raise TsensError(
            f"`train` {train.spec!r} has no labels; the training set's loss and accuracy need them"
        )
    if not refs:
        raise TsensError("no checkpoints to score")
    notes: list[str] = same_inputs(train, test)
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
    siblings = siblings_of(refs, sibling_key)
    available = _available(source, len(scored_runs), siblings)
    if names is None:  # every cheap estimator that can run here; the others are left out, and said why
        chosen = [n for n in ESTIMATORS if not (est_needs(n) - available) and not costly(n)]
        by_need: dict[str, list[str]] = {}
        for n in ESTIMATORS:
            if n not in chosen and (est_needs(n) - available):
                need = " and ".join(NEEDS[k] for k in sorted(est_needs(n) - available))
                by_need.setdefault(need, []).append(n)
        if by_need:
            notes.append(
                "left out, as they cannot run on what was given: "
                + "; ".join(f"{', '.join(ns)} (need {need})" for need, ns in by_need.items())
            )
    else:
        chosen = list(check_estimators(names))
        for needs, text in (
            (
                "calibration",
                "the calibrated estimators need a calibration (`calibrate`, `calibration`) or test labels: "
                "they fall back to naive",
            ),
            (
                "sibling",
                f"no two runs share the metadata {sibling_key!r} (see `sibling_key`): disagreement and "
                "agreement fall back to naive",
            ),
        ):
            if needs not in available and any(needs in est_needs(n) for n in chosen):
                notes.append(text)
    names = tuple(chosen)
    # Nothing for an estimator that cannot run: its measures are not computed.
    runnable = [n for n in names if not (est_needs(n) - available - {"hidden", "previous"})]
    shared = dict(
        train=train,
        test=test,
        measures=required_measures(runnable, features),
        compute=compute,
        load=load or Loader(),
        cache=InputCache(),
    )
    samples = len(train) + len(test)
    keep = (
        frozenset(run for run, others in siblings.items() if others)
        if {"disagreement", "agreement"} & set(runnable)
        else frozenset()
    )
    scored = list(runner.map(features_job, refs, {**shared, "keep_runs": keep}, size=lambda _: samples))
    if source == "checkpoints":
        fitted = list(runner.map(features_job, calibration_refs, shared, size=lambda _: samples))
        calibration = calibration_from(calibration_refs, fitted, train.spec, sets_up_to(features), group_key)
    calibrated, outside = (
        calibrated_estimates(
            refs,
            scored,
            calibration,
            source,
            train.spec,
            notes,
            level=interval,
            features=features,
            sibling_key=group_key,
        )
        if set(CALIBRATED) & set(names)
        else ({}, [False] * len(refs))
    )
    rows = estimate_rows(refs, scored, names, siblings, calibrated)
    notes[:0] = recorded_mismatches(refs, rows, train.spec)
    if "calibrated" in names:
        for row, out in zip(rows, outside, strict=True):
            row["calibrated_outside_range"] = out
        if any(outside):
            notes.append(
                f"{sum(outside)} checkpoint(s) have a feature outside the calibration checkpoints' range: "
                "calibrated clips it to that range (see calibrated_outside_range)"
            )
    if fit_calibration and source == "cross-fit" and len(scored_runs) >= 2:
        # One model on every scored run, to save (the estimates above never used it: each was
        # cross-fitted without its own run).
        calibration = calibrate(
            [derived(cf.features) for cf in scored],
            [cf.truth for cf in scored],
            held_out_groups(refs, group_key),
            dataset=",".join(sorted(datasets_of(refs))) or train.spec,
            sets=sets_up_to(features),
        )
    result = GapResult(rows, scored, calibration=calibration, notes=notes, names=names, level=interval)
    result.recommended = recommended(rows, names)
    agreement_columns(rows, names, result.recommended)
    if labelled:
        hyper = [hyperparameters(ref.metadata) for ref in refs]
        result.evaluation = evaluate(rows, names, hyper, interval)
        result.ranking = rank_features(rows)
    return result


def est_needs(name: str) -> frozenset[str]:
    """What estimator ``name`` needs beyond the training set and the test inputs."""
    return REGISTRY[name].needs


def _available(source: str | None, runs: int, siblings: dict[str, list[str]]) -> set[str]:
    """The needs (:data:`tsens.gap.estimators.NEEDS`) that the given checkpoints and data meet:
    a run's previous checkpoint and hidden layers are per checkpoint, so counted as met."""
    met = {"previous", "hidden"}
    if source is not None and (source != "cross-fit" or runs >= 2):
        met.add("calibration")
    if any(siblings.values()):
        met.add("sibling")
    if any(len(others) >= 2 for others in siblings.values()):
        met.add("siblings-2")
    return met


def recommended(rows: Sequence[dict], names: Sequence[str]) -> str:
    """The estimator the summary leads with: ``calibrated`` when it ran, else
    ``calibrated-train``, else ``naive``."""
    for name in ("calibrated", "calibrated-train"):
        if name in names and all(r[f"status_{name.replace('-', '_')}"] == "ok" for r in rows):
            return name
    return "naive"
