"""``transitions`` as one library call: activation-pattern changes along curves through the data,
counted exactly or sampled ([N] §3; :mod:`tsens.transitions`), for every checkpoint.

Each checkpoint's job loads it once, makes the curves it sees (through its preprocessing of the
data; a file's curves are read once, here) and counts. On a cluster a checkpoint's curves are
split into groups of :data:`CURVES_PER_TASK`, one task each, and the groups' results are joined
in order, as if counted at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..checkpoints import read_widths
from ..choices import DEFAULT_POINTS, TRAJECTORY_KINDS, TRANSITION_METHODS
from ..datasets import Dataset
from ..errors import TsensError
from ..executors import LocalExecutor
from ..runs import CheckpointRef
from ..stream import recorded_or_given
from ..transitions import TransitionResult, check_count, check_points, curves_file, transitions_summary
from .jobs import transitions_job
from .result import Collector, CommandResult
from .runner import Progress, Runner
from .setup import Checkpoints, DataSpec, Setup

NEEDS_DATA = ("ellipse", "translations")
"""Curve kinds made from the data set."""
CURVES_PER_TASK = 32
"""On a cluster, each task counts this many curves of one checkpoint."""


def transitions(
    checkpoints: Checkpoints,
    data: DataSpec | None = None,
    *,
    trajectory: str = "ellipse",
    count: int = 100,
    method: str = "exact",
    points: int = DEFAULT_POINTS,
    jacobian: bool = False,
    regions: bool = False,
    same_curves: bool = False,
    setup: Setup | None = None,
    progress: Progress | None = None,
) -> CommandResult:
    """One row per curve and checkpoint: transitions in total and per layer, arc length,
    transitions per unit length, the data indices the curve goes through, and with ``jacobian``
    ‖J_prob‖_F along it (mean and max over its regions); a summary row per checkpoint.

    ``trajectory``: ``ellipse`` (through three samples of ``data``), ``random-ellipse``,
    ``translations`` (of one image of ``data``) or an ``.npz`` file of curves; ``count`` curves
    (seeded by ``setup.compute.seed``); ``method`` ``exact`` or ``sampled`` at ``points``
    points. ``regions`` keeps, in ``extra["results"]``, the linear regions along each curve
    with ‖J_prob‖_F in each (what the plot draws) without adding columns; ``same_curves``
    refuses, before any work, checkpoints that would see different curves, and gives the one
    family in ``extra["trajectories"]``."""
    if trajectory in TRAJECTORY_KINDS:
        check_count(count)
    check_points(points)
    if method not in TRANSITION_METHODS:
        raise TsensError(f"`method` {method!r}: expected one of {', '.join(TRANSITION_METHODS)}")
    if trajectory in NEEDS_DATA and data is None:
        raise TsensError(f"`trajectory` {trajectory} needs `data` (the data set its curves go through)")
    setup = setup or Setup()
    dataset = setup.dataset(data) if data is not None else None
    curves = curves_file(trajectory)
    refs = setup.checkpoints(checkpoints, {"data": dataset} if dataset is not None else None)
    if same_curves:
        _check_same_curves(refs, dataset if trajectory in NEEDS_DATA else None, setup, curves is not None)
    executor = setup.executor_for()
    n = curves.count if curves is not None else count
    group = None if isinstance(executor, LocalExecutor) else CURVES_PER_TASK
    parts = 1 if group is None else math.ceil(n / group)
    items = [(ref, part) for ref in refs for part in range(parts)]
    shared = dict(
        data=dataset,
        kind=trajectory,
        curves=curves,
        count=count,
        seed=setup.compute.seed,
        group=group,
        method=method,
        points=points,
        jacobian=jacobian or regions,
        compute=setup.compute,
        load=setup.loader(),
    )
    recorded = {
        "trajectory": trajectory,
        "count": count,
        "method": method,
        "points": points,
        "jacobian": jacobian,
        "regions": regions,
    }
    collector = Collector(
        "transitions", {"data": dataset.spec if dataset is not None else None}, {**setup.record(), **recorded}
    )
    runner = Runner(executor, progress)
    done = runner.map(
        transitions_job, items, shared, label=lambda item: item[0].path, size=lambda _: min(n, group or n)
    )
    results = []
    for ref in refs:
        pieces = [next(done) for _ in range(parts)]
        result = TransitionResult.concat([p[0] for p in pieces], pieces[0][1])
        if not jacobian:
            result.columns.pop("jac_prob_mean", None)
            result.columns.pop("jac_prob_max", None)
        row = transitions_summary(result)
        collector.add(ref, result.network, result.columns, [row], pieces[0][2])
        runner.progress.checkpoint(result.network, [row], result.columns)
        results.append(result)
    same = results[0].trajectories if same_curves and results else None
    return collector.result({"results": results, "trajectories": same})


def _check_same_curves(
    refs: Sequence[CheckpointRef], dataset: Dataset | None, setup: Setup, from_file: bool
) -> None:
    """Refuse checkpoints that see different curves: their inputs differ in size, or (for curves
    through the data) their preprocessing of it differs."""
    if from_file:
        return
    seen: dict[tuple[int, str | None], str] = {}
    for ref in refs:
        key = (
            read_widths(ref.path, layers=list(setup.layers) if setup.layers else None)[0],
            recorded_or_given(ref.metadata, ref.path, dataset).to_json() if dataset is not None else None,
        )
        seen.setdefault(key, ref.path)
    if len(seen) > 1:
        first, second = list(seen.values())[:2]
        raise TsensError(
            f"`same_curves`: {first} and {second} see different curves (their inputs are preprocessed "
            "differently or differ in size); save them one checkpoint at a time"
        )
