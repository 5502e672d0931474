"""Per-checkpoint jobs: the unit of work an executor (:mod:`tsens.executors`) runs, locally or
as one Ray task each. A job loads one checkpoint, makes its pass over the shared data and
returns what the tables need — the network, its rows, its summary rows and the settings
applied — never the data itself. Jobs are module-level functions of picklable arguments, so a
cluster's workers can run them; the same functions run locally, which is what makes the two
executors' tables identical.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .bounds import Report, report
from .compute import Compute
from .datasets import Dataset
from .measures import Options
from .network import Network
from .runs import CheckpointRef
from .stream import SetResult, measure_sets
from .transitions import Trajectories, TransitionResult, count_transitions


@dataclass(frozen=True)
class Loader:
    """How a job loads its checkpoint: the command line's ``--activation`` and ``--layers``."""

    activation: str | None = None
    layers: tuple[str, ...] | None = None

    def __call__(self, ref: CheckpointRef) -> Network:
        return ref.load(activation=self.activation, layers=list(self.layers) if self.layers else None)


@dataclass
class Outcome:
    """What one checkpoint's job returns: its network, its per-sample rows (``columns``), its
    summary rows, the settings applied to it (provenance), and a command's own ``detail``."""

    network: Network
    columns: Mapping[str, Any] | None
    summary: list[dict[str, Any]]
    applied: dict[str, Any]
    detail: Any = None


Results = Mapping[str, SetResult]


def applied_preprocessing(results: Results) -> dict[str, Any]:
    """The preprocessing each set got: ``preprocess`` for one set, ``preprocess_<set>`` for several."""
    if len(results) == 1:
        return {"preprocess": next(iter(results.values())).dataset.preprocess.to_json()}
    return {f"preprocess_{name}": r.dataset.preprocess.to_json() for name, r in results.items()}


@dataclass(frozen=True)
class OnlySet:
    """Adapts a function of one :class:`SetResult` to the results of a one-set pass; with
    ``listed`` its value is wrapped in a list (a summary row)."""

    fn: Callable[[SetResult], Any]
    listed: bool = False

    def __call__(self, results: Results) -> Any:
        value = self.fn(next(iter(results.values())))
        return [value] if self.listed else value


def measure_job(
    ref: CheckpointRef,
    progress: Callable[[str], Any] | None = None,
    *,
    sets: Mapping[str, Dataset],
    measures: Sequence[str],
    options: Options | None,
    compute: Compute,
    load: Loader,
    summarize: Callable[[Results], list[dict[str, Any]]],
    columns: Callable[[Results], Mapping[str, Any]],
) -> Outcome:
    """One pass of ``sets`` through the checkpoint (:func:`tsens.stream.measure_sets`), its rows
    and summary rows chosen by ``columns`` and ``summarize``."""
    net = load(ref)
    results = measure_sets(net, sets, measures, options=options, compute=compute, progress=progress)
    return Outcome(net, columns(results), summarize(results), applied_preprocessing(results))


def bound_job(
    ref: CheckpointRef,
    progress: Callable[[int], None] | None = None,
    *,
    data: Dataset | None,
    reading: str,
    compute: Compute,
    load: Loader,
) -> Outcome:
    """The bounds of one checkpoint (:func:`tsens.bounds.report`); ``detail`` is the Report."""
    net = load(ref)
    rep: Report = report(
        net, reading=reading, dataset=data, compute=compute if data is not None else None, progress=progress
    )
    applied = {"preprocess": rep.measured.preprocess} if rep.measured is not None else {}
    return Outcome(net, None, [rep.summary()], applied, rep)


def transitions_job(
    item: tuple[CheckpointRef, Trajectories],
    progress: Callable[[int], None] | None = None,
    *,
    method: str,
    points: int,
    jacobian: bool,
    compute: Compute,
    load: Loader,
) -> TransitionResult:
    """Transitions of one checkpoint along one group of curves (:func:`count_transitions`);
    a checkpoint's groups, concatenated in order, give its whole result."""
    ref, curves = item
    return count_transitions(
        load(ref), curves, method=method, points=points, jacobian=jacobian, compute=compute, progress=progress
    )
