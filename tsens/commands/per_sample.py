"""The per-sample commands, each one library call over many checkpoints: ``jacobian``
(‖J_prob‖_F, ‖J_logit‖_F [N] §3, ‖T(x)‖_F [T] Def. 3.1), ``activations`` (active units,
[T] Thm 3.2) and ``regions`` (region ids, membership [T] eq. 4, exact boundary distance, path
scores [T] eq. 3, 7).

Each makes one streaming pass of its data set(s) through every checkpoint
(:func:`tsens.stream.measure_sets`, one :func:`.jobs.pass_job` per checkpoint on the setup's
executor) and returns the per-sample rows (``table``) and the summaries of
:mod:`tsens.summaries` (``summary``), exactly what the command line writes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..choices import SENSITIVITIES
from ..errors import TsensError
from ..measures import Options
from ..summaries import activations_summary, jacobian_summary, regions_summary, unit_frequencies
from .jobs import Results, Row, pass_job
from .result import Collector, CommandResult
from .runner import Progress, Runner
from .setup import Checkpoints, DataSpec, Setup

REGION_MEASURES = ("region", "membership", "boundary", "path_score", "tangent")
"""What ``regions`` measures per sample."""


def jacobian(
    checkpoints: Checkpoints,
    data: DataSpec,
    *,
    sensitivities: Sequence[str] = SENSITIVITIES,
    reading: str = "sum",
    probes: int | None = None,
    setup: Setup | None = None,
    progress: Progress | None = None,
) -> CommandResult:
    """Per-sample Jacobian norms and tangent sensitivity of every checkpoint on ``data``
    (``sensitivities``: ``jacobian``, ``tangent`` or both; ``reading`` of the tangent, ``sum``
    or ``all``; ``probes``: a Hutchinson estimate of ‖T‖ instead of the exact value), with the
    predictions, and with labels the loss and [N] App. A.3's predictions from it."""
    chosen = tuple(dict.fromkeys(sensitivities))
    if not chosen or any(s not in SENSITIVITIES for s in chosen):
        raise TsensError(
            f"`sensitivities` {list(sensitivities)}: expected some of {', '.join(SENSITIVITIES)}"
        )
    if probes is not None and "tangent" not in chosen:
        raise TsensError("`probes` only applies to the tangent sensitivity; add tangent to `sensitivities`")
    options = Options(reading=reading, probes=probes)
    recorded = {"sensitivities": ",".join(chosen), "reading": reading, "probes": probes}
    return _per_sample(
        "jacobian",
        checkpoints,
        {"data": data},
        ["predictions", *chosen],
        options,
        recorded,
        rows=only_rows,
        summarize=jacobian_rows,
        setup=setup,
        progress=progress,
    )


def activations(
    checkpoints: Checkpoints,
    data: DataSpec,
    *,
    per_unit: bool = False,
    setup: Setup | None = None,
    progress: Progress | None = None,
) -> CommandResult:
    """Active units per hidden layer and in total for every sample (``per_unit``: instead, each
    hidden unit's activation frequency), and per checkpoint their moments, normality test,
    dead and always-active units."""
    return _per_sample(
        "activations",
        checkpoints,
        {"data": data},
        ["active"],
        None,
        {"per_unit": per_unit},
        rows=unit_rows if per_unit else only_rows,
        summarize=activation_rows,
        setup=setup,
        progress=progress,
    )


def regions(
    checkpoints: Checkpoints,
    data: DataSpec,
    test: DataSpec | None = None,
    *,
    membership: str = "preact",
    temperature: float = 1.0,
    reading: str = "sum",
    setup: Setup | None = None,
    progress: Progress | None = None,
) -> CommandResult:
    """Region id, log membership (``membership`` mode, ``temperature`` τ), exact boundary
    distance, path score and ‖T(x)‖_F (``reading``) of every sample of ``data`` and, given, of
    ``test`` (rows of both, with a ``set`` column); the summary also gives the share of
    ``test``'s samples in a region that holds a sample of ``data``."""
    options = Options(reading=reading, membership=membership, temperature=temperature)
    specs = {"data": data, **({"test": test} if test is not None else {})}
    recorded = {"membership": membership, "temperature": temperature, "reading": reading}
    return _per_sample(
        "regions",
        checkpoints,
        specs,
        REGION_MEASURES,
        options,
        recorded,
        rows=stacked_rows,
        summarize=regions_summary,
        setup=setup,
        progress=progress,
    )


def _per_sample(
    command: str,
    checkpoints: Checkpoints,
    specs: dict[str, DataSpec],
    measures: Sequence[str],
    options: Options | None,
    recorded: dict[str, Any],
    *,
    rows: Callable[[Results], Mapping[str, Any]],
    summarize: Callable[[Results], list[Row]],
    setup: Setup | None,
    progress: Progress | None,
) -> CommandResult:
    setup = setup or Setup()
    sets = {name: setup.dataset(spec) for name, spec in specs.items()}
    refs = setup.checkpoints(checkpoints, sets)
    collector = Collector(
        command, {name: data.spec for name, data in sets.items()}, {**setup.record(), **recorded}
    )
    runner = Runner(setup.executor_for(), progress)
    shared = dict(
        sets=sets,
        measures=list(measures),
        options=options,
        compute=setup.compute,
        load=setup.loader(),
        rows=rows,
        summarize=summarize,
    )
    samples = sum(len(d) for d in sets.values())
    label = f" ({', '.join(sets)})" if len(sets) > 1 else ""
    outcomes = runner.map(pass_job, refs, shared, label=lambda ref: ref.path + label, size=lambda _: samples)
    for ref, out in zip(refs, outcomes, strict=True):
        collector.add(ref, out.network, out.columns, out.summary, out.applied)
        runner.progress.checkpoint(out.network, out.summary, out.columns)
    return collector.result()


# Rows and summaries of one pass, as module-level functions (a cluster's tasks pickle them).


def only_rows(results: Results) -> dict[str, np.ndarray]:
    """The per-sample columns of a one-set pass."""
    return next(iter(results.values())).columns


def unit_rows(results: Results) -> dict[str, np.ndarray]:
    """One row per hidden unit: its activation frequency on the set."""
    return unit_frequencies(next(iter(results.values())))


def jacobian_rows(results: Results) -> list[Row]:
    return [jacobian_summary(next(iter(results.values())))]


def activation_rows(results: Results) -> list[Row]:
    return [activations_summary(next(iter(results.values())))]


def stacked_rows(results: Results) -> dict[str, np.ndarray]:
    """The sets' columns one under the other, with a ``set`` column in front."""
    per_set = {name: r.columns for name, r in results.items()}
    names = list(per_set)
    out = {"set": np.concatenate([np.full(len(per_set[n]["sample"]), n, dtype=object) for n in names])}
    for key in per_set[names[0]]:
        out[key] = np.concatenate([per_set[n][key] for n in names])
    return out
