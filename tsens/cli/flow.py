"""The flow of a per-checkpoint command: load the data, run one job per checkpoint on the chosen
executor (in run order, results in that order), add each outcome to the tables, render, write."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from ..compute import Compute
from ..jobs import Outcome, Results, measure_job
from ..measures import Options
from ..runs import CheckpointRef
from . import inputs, render
from .outputs import Tables


def run_jobs(
    params: dict[str, Any],
    compute: Compute,
    job: Callable[..., Any],
    items: Sequence[Any],
    shared: Mapping[str, Any],
    item_progress: Callable[[Any], AbstractContextManager[Any]],
) -> Iterator[Any]:
    """``job`` over ``items`` on ``--executor``, results in item order; progress per item here,
    per finished task on a cluster (on a terminal only, as everywhere)."""
    executor = inputs.executor(params, compute)

    def task_progress(count: int) -> AbstractContextManager[Any]:
        return render.progress(params, f"{count} tasks on {executor.name}", count)

    return executor.map(job, items, shared, item_progress=item_progress, task_progress=task_progress)


def per_sample(
    command: str,
    params: dict[str, Any],
    specs: Mapping[str, str],
    measures: Sequence[str],
    summarize: Callable[[Results], list[dict[str, Any]]],
    show: Callable[[list[dict[str, Any]], str], None],
    *,
    options: Options | None = None,
    columns: Callable[[Results], Mapping[str, Any]],
) -> None:
    """Run ``command``: ``measures`` on the data sets ``specs`` (name → ``--data``-style spec) for
    every checkpoint; ``columns`` picks the ``-o`` rows of each pass, ``summarize`` its
    ``--summary`` rows, ``show`` renders them."""
    compute = inputs.compute(params)
    refs = inputs.checkpoints(params)
    sets = {name: inputs.dataset(spec, params) for name, spec in specs.items()}
    sizes = {name: len(data) for name, data in sets.items()}
    tables = Tables(command, params, dict(specs))
    shared = dict(
        sets=sets,
        measures=list(measures),
        options=options,
        compute=compute,
        load=inputs.loader(params),
        summarize=summarize,
        columns=columns,
    )

    def item_progress(ref: CheckpointRef) -> AbstractContextManager[Any]:
        return render.progress_sets(params, ref.path, sizes)

    outcomes: Iterator[Outcome] = run_jobs(params, compute, measure_job, refs, shared, item_progress)
    for ref, out in zip(refs, outcomes, strict=True):
        tables.add(ref, out.network, out.columns, out.summary, out.applied)
        if not inputs.quiet(params):
            show(out.summary, out.network.describe())
    tables.write()
