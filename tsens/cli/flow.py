"""The flow of a one-data-set, per-sample command (``jacobian``, ``activations``): load the data,
then each checkpoint in run order, one pass, its summary row, render, write both tables."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..measures import Options
from ..stream import SetResult, measure
from . import inputs, render
from .outputs import Tables


def per_sample(
    command: str,
    params: dict[str, Any],
    measures: Sequence[str],
    summarize: Callable[[SetResult], dict[str, Any]],
    show: Callable[[dict[str, Any], str], None],
    *,
    options: Options | None = None,
    rows: Callable[[SetResult], Mapping[str, Any]] = lambda result: result.columns,
) -> None:
    """Run ``command``: ``measures`` on ``--data`` for every checkpoint; ``rows`` picks the ``-o``
    table from each pass, ``summarize`` its ``--summary`` row, ``show`` renders that row."""
    compute = inputs.compute(params)
    checkpoints = inputs.networks(params)
    data = inputs.dataset(params["data"], params)
    tables = Tables(command, params, {"data": params["data"]})
    for ref, net in checkpoints:
        with render.progress(params, net.path, len(data)) as progress:
            result = measure(net, data, measures, options=options, compute=compute, progress=progress)
        row = summarize(result)
        tables.add(ref, net, rows(result), [row], {"preprocess": result.dataset.preprocess.to_json()})
        if not inputs.quiet(params):
            show(row, net.describe())
    tables.write()
