"""Turning parsed options into library inputs: checkpoints (as runs), data sets, compute."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from ..compute import Compute
from ..datasets import Dataset, Preprocess, load_dataset
from ..executors import Executor, make_executor
from ..jobs import Loader
from ..network import Network
from ..runs import CheckpointRef, plan_runs

PREPROCESS_OPTIONS = ("normalize", "mean", "std", "crop")


def compute(params: dict[str, Any]) -> Compute:
    """The compute settings, validated before any work."""
    return Compute(params["device"], params["dtype"], params["batch_size"], params["seed"])


def checkpoints(params: dict[str, Any]) -> list[CheckpointRef]:
    """The checkpoints named on the command line, grouped into runs and ordered by step; their
    weights are loaded later, one at a time (:func:`load`)."""
    return plan_runs(params["checkpoints"], run_pattern=params.get("run_pattern"))


def networks(params: dict[str, Any]) -> Iterator[tuple[CheckpointRef, Network]]:
    """Each checkpoint of the command line in run order, loaded only when its turn comes (memory
    holds one network at a time); every checkpoint's metadata is read, and checked, first."""
    refs = checkpoints(params)  # now: a bad file is refused before any data is read
    return ((ref, load(ref, params)) for ref in refs)


def loader(params: dict[str, Any]) -> Loader:
    """How jobs load checkpoints: with the command line's ``--activation``/``--layers``."""
    order = tuple(p.strip() for p in params["layers"].split(",")) if params.get("layers") else None
    return Loader(params.get("activation"), order)


def load(ref: CheckpointRef, params: dict[str, Any]) -> Network:
    """One checkpoint's network with the command line's ``--activation``/``--layers``."""
    return loader(params)(ref)


def executor(params: dict[str, Any], compute: Compute) -> Executor:
    """Where the per-checkpoint jobs run (``--executor``); on a cluster each task asks for one
    GPU when the work runs on CUDA."""
    gpus = 1 if compute.torch_device.type == "cuda" else 0
    return make_executor(
        params.get("executor", "local"), address=params.get("ray_address"), gpus_per_task=gpus
    )


def given_preprocess(params: dict[str, Any]) -> Preprocess | None:
    """The preprocessing typed on the command line, or None when no option was given (then
    each checkpoint's recorded preprocessing applies)."""
    if all(params.get(k) is None for k in PREPROCESS_OPTIONS):
        return None
    return Preprocess(params["normalize"] or "none", params["mean"], params["std"], params["crop"])


def dataset(spec: str, params: dict[str, Any]) -> Dataset:
    """The raw data set named by ``spec`` with the preprocessing typed on the command line,
    left unresolved: ``standard`` statistics are computed by the pass, on its first set (the
    training set), and applied to the others (:func:`tsens.stream.measure_sets`)."""
    data = load_dataset(
        spec, data_root=params.get("data_root"), limit=params.get("limit"), seed=params["seed"]
    )
    given = given_preprocess(params)
    if given is None:
        return data
    given.check(data.sample_shape, f"data set {spec!r}")
    return replace(data, preprocess=given)


def quiet(params: dict[str, Any]) -> bool:
    return bool(params.get("quiet"))
