"""Per-checkpoint jobs: the unit of work a command hands its executor (:mod:`tsens.executors`),
run here or as one Ray task each, registered by name in :data:`JOBS`.

A job loads one checkpoint, does its work on the shared data and returns what the command's
tables need (the network for provenance, its rows, its summary rows, the settings applied),
never the data itself. Jobs are module-level functions of picklable arguments
(``job(item, progress=None, **shared)``), so a cluster's workers can run them; the same
functions run locally, which is what makes the two executors' tables identical.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..bounds import report
from ..compute import Compute
from ..datasets import Dataset
from ..gap.features import CheckpointFeatures, checkpoint_features
from ..measures import HIDDEN_LAYER_MEASURES, Options
from ..network import Network, weight_norms
from ..runs import CheckpointRef, parse_value
from ..stream import InputCache, SetResult, chosen_preprocess, measure_sets, prepared_for
from ..transitions import Trajectories, TransitionResult, count_transitions, make_trajectories

Row = dict[str, Any]
Results = Mapping[str, SetResult]


@dataclass(frozen=True)
class Loader:
    """How a job loads its checkpoint: with the given ``activation`` and ``layers``, if any."""

    activation: str | None = None
    layers: tuple[str, ...] | None = None

    def __call__(self, ref: CheckpointRef) -> Network:
        return ref.load(activation=self.activation, layers=list(self.layers) if self.layers else None)


@dataclass
class Outcome:
    """What one checkpoint's job returns: its network, its rows (``columns``), its summary rows,
    the settings applied to it (provenance), and a command's own ``detail``."""

    network: Network
    columns: Mapping[str, Any] | None
    summary: list[Row]
    applied: dict[str, Any]
    detail: Any = None


def applied_preprocessing(results: Results) -> dict[str, Any]:
    """The preprocessing each set got: ``preprocess`` for one set, ``preprocess_<set>`` for several."""
    if len(results) == 1:
        return {"preprocess": next(iter(results.values())).dataset.preprocess.to_json()}
    return {f"preprocess_{name}": r.dataset.preprocess.to_json() for name, r in results.items()}


def metadata_columns(network: Network) -> Row:
    """The checkpoint's metadata as columns ``meta.<key>``, numbers parsed (to join on)."""
    return {f"meta.{key}": parse_value(value) for key, value in sorted(network.metadata.items())}


def info_job(ref: CheckpointRef, progress: Any = None, *, load: Loader) -> Outcome:
    """One checkpoint described: a row per Linear layer (shape, bias, BatchNorm, parameters and
    the raw weight's Frobenius, spectral and max-abs norms) and a summary row, both with the
    checkpoint's metadata."""
    net = load(ref)
    meta = metadata_columns(net)
    columns: dict[str, list[Any]] = {"activation": [net.activation.spec] * net.depth}
    for i, layer in enumerate(net.layers, 1):
        for key, value in (
            ("layer", i),
            ("name", layer.name),
            ("in_features", layer.in_features),
            ("out_features", layer.out_features),
            ("bias", layer.bias is not None),
            ("batchnorm", layer.norm is not None),
            ("parameters", sum(t.numel() for t in layer.parameters().values())),
            *weight_norms(layer).items(),
        ):
            columns.setdefault(key, []).append(value)
    columns.update({key: [value] * net.depth for key, value in meta.items()})
    summary = {
        "checkpoint": net.path,
        "architecture": "-".join(str(w) for w in net.widths),
        "activation": net.activation.spec,
        "parameters": net.num_parameters,
        "batchnorm": net.has_batchnorm,
        "bias": net.has_bias,
        "sha256": net.sha256,
        **meta,
    }
    return Outcome(net, columns, [summary], {})


def bound_job(
    ref: CheckpointRef,
    progress: Callable[[int], None] | None = None,
    *,
    data: Dataset | None,
    reading: str,
    compute: Compute,
    load: Loader,
) -> Outcome:
    """The bounds of one checkpoint (:func:`tsens.bounds.report`) and its summary row;
    ``detail`` is the :class:`~tsens.bounds.Report`, whose rows the command lays out where it
    runs (the weight norms in them are computed there, with its own threads, as they always
    were, so a cluster's tables equal the local ones)."""
    net = load(ref)
    rep = report(
        net, reading=reading, dataset=data, compute=compute if data is not None else None, progress=progress
    )
    applied = {"preprocess": rep.measured.preprocess} if rep.measured is not None else {}
    return Outcome(net, None, [rep.summary()], applied, rep)


def _per_set(progress: Callable[[int], None] | None) -> Callable[[str], Any] | None:
    """One progress callback for every set of a pass (a pass asks for one per set by name)."""
    return None if progress is None else (lambda _name: progress)


def pass_job(
    ref: CheckpointRef,
    progress: Callable[[int], None] | None = None,
    *,
    sets: Mapping[str, Dataset],
    measures: Sequence[str],
    options: Options | None,
    compute: Compute,
    load: Loader,
    rows: Callable[[Results], Mapping[str, Any]],
    summarize: Callable[[Results], list[Row]],
) -> Outcome:
    """One pass of ``sets`` through the checkpoint (:func:`tsens.stream.measure_sets`), its rows
    and summary rows chosen by ``rows`` and ``summarize`` (module-level functions)."""
    net = load(ref)
    results = measure_sets(net, sets, measures, options=options, compute=compute, progress=_per_set(progress))
    return Outcome(net, rows(results), summarize(results), applied_preprocessing(results))


def transitions_job(
    item: tuple[CheckpointRef, int],
    progress: Callable[[int], None] | None = None,
    *,
    data: Dataset | None,
    kind: str,
    curves: Trajectories | None,
    count: int,
    seed: int,
    group: int | None,
    method: str,
    points: int,
    jacobian: bool,
    compute: Compute,
    load: Loader,
) -> tuple[TransitionResult, Trajectories | None, dict[str, Any]]:
    """Transitions of one checkpoint along group ``item[1]`` of its curves (groups of ``group``
    curves; None: all), the curves it sees (its preprocessing of ``data``, or the given
    ``curves``; returned whole by the first group only, None by the others) and the
    preprocessing applied."""
    ref, part = item
    net = load(ref)
    prepared = None
    if data is not None:
        prepared = prepared_for(net, data)
        prepared.check_input_dim(net.input_dim, f"checkpoint {net.path or 'network'}")
    traj = make_trajectories(kind, prepared, net.input_dim, count, seed, curves=curves)
    chunk = traj if group is None else traj.chunks(group)[part]
    result = count_transitions(
        net, chunk, method=method, points=points, jacobian=jacobian, compute=compute, progress=progress
    )
    applied = {"preprocess": prepared.preprocess.to_json()} if prepared is not None else {}
    return result, traj if part == 0 else None, applied


def features_job(
    ref: CheckpointRef,
    progress: Callable[[int], None] | None = None,
    *,
    train: Dataset,
    test: Dataset,
    measures: set[str],
    compute: Compute,
    load: Callable[[CheckpointRef], Network],
    keep_runs: frozenset[str] = frozenset(),
    cache: InputCache | None = None,
) -> CheckpointFeatures:
    """One checkpoint's ``estimate-gap`` features (:mod:`tsens.gap.features`) from one pass of
    each set, with the test log-probabilities and the train predictions kept when its run has
    siblings (``keep_runs``),
    and a weightless copy of its network and the preprocessing applied, for provenance."""
    net = load(ref)
    if net.depth < 2:  # no hidden units: the estimators that need them say so
        measures = measures - HIDDEN_LAYER_MEASURES
    sets = {"train": train, "test": test}
    results = measure_sets(
        net, sets, sorted(measures), compute=compute, cache=cache, progress=_per_set(progress)
    )
    cf = checkpoint_features(net, results["train"], results["test"], keep_log_probs=ref.run in keep_runs)
    if ref.run in keep_runs:
        cf.train_predicted = np.asarray(results["train"].columns["predicted"])
    cf.network = replace(net, layers=())
    cf.applied = {
        f"preprocess_{name}": chosen_preprocess(net, data).to_json()
        for name, data in (("train", train), ("test", test))
    }
    return cf


JOBS: Mapping[str, Callable[..., Any]] = {
    "info": info_job,
    "bound": bound_job,
    "pass": pass_job,
    "transitions": transitions_job,
    "features": features_job,
}
"""Every per-checkpoint job by name (module docstring)."""
