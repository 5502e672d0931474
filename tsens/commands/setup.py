"""What every command shares: how it reads checkpoints and data sets, and where it computes.

A :class:`Setup` is decided once (the command line decodes its options into one) and turned
into a command's inputs before any work:

* :meth:`Setup.checkpoints`: paths, glob patterns, directories of checkpoints (a run) or
  :class:`~tsens.runs.CheckpointRef` s, planned into runs ordered by step
  (:func:`tsens.runs.plan_runs`, metadata only). With data sets, each checkpoint's input size
  (:func:`tsens.checkpoints.read_widths`, from the file's header where the format allows) is
  checked against the data as that checkpoint's preprocessing shapes it, so a checkpoint that
  cannot take the data is refused before any is measured;
* :meth:`Setup.dataset`: a data set spec (a name or a file) or a loaded
  :class:`~tsens.datasets.Dataset`, with the given preprocessing (None: each checkpoint's record);
* :meth:`Setup.executor_for`: where the per-checkpoint jobs run (here, or on Ray).
"""

from __future__ import annotations

import glob
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..checkpoints import read_widths
from ..compute import Compute
from ..datasets import Dataset, Preprocess, load_dataset
from ..errors import TsensError
from ..executors import Executor, make_executor
from ..runs import CheckpointRef, plan_runs
from ..stream import recorded_or_given
from .jobs import Loader

Checkpoints = str | Path | CheckpointRef | Sequence[str | Path | CheckpointRef]
"""One checkpoint or several: paths, glob patterns, run directories or planned references."""
DataSpec = str | Dataset
"""A data set: a name (``digits-test``), a file, or one already loaded."""


@dataclass(frozen=True)
class Setup:
    """How a command reads its inputs and where it runs (module docstring).

    ``activation`` and ``layers`` override what checkpoints record (a warning says where they
    differ); ``run_pattern`` groups checkpoints into runs by file name; ``preprocess`` (None:
    each checkpoint's recorded preprocessing), ``data_root`` and ``limit`` (a seeded subsample,
    ``compute.seed``) shape the data sets named by spec; ``compute`` is the device, dtype, batch
    size and seed; ``executor`` is ``local`` or ``ray`` (``ray_address``: the cluster), or an
    :class:`~tsens.executors.Executor`."""

    activation: str | None = None
    layers: tuple[str, ...] | None = None
    run_pattern: str | None = None
    preprocess: Preprocess | None = None
    data_root: str | None = None
    limit: int | None = None
    compute: Compute = field(default_factory=Compute)
    executor: str | Executor = "local"
    ray_address: str | None = None

    def loader(self) -> Loader:
        """How jobs load a checkpoint: with ``activation`` and ``layers``."""
        return Loader(self.activation, tuple(self.layers) if self.layers else None)

    def executor_for(self) -> Executor:
        """The executor; on a cluster each task asks for one GPU when the work runs on CUDA."""
        if not isinstance(self.executor, str):
            return self.executor
        gpus = 1 if self.compute.torch_device.type == "cuda" else 0
        return make_executor(self.executor, address=self.ray_address, gpus_per_task=gpus)

    def dataset(self, given: DataSpec) -> Dataset:
        """The data set ``given`` (a spec is loaded with ``data_root``, ``limit`` and the seed),
        with the given preprocessing, left unresolved: ``standard`` statistics are computed by
        the pass on its first set and applied to the others (:func:`tsens.stream.measure_sets`)."""
        if isinstance(given, Dataset):
            data = given
        else:
            data = load_dataset(given, data_root=self.data_root, limit=self.limit, seed=self.compute.seed)
        if self.preprocess is None:
            return data
        self.preprocess.check(data.sample_shape, f"data set {data.spec!r}")
        return replace(data, preprocess=self.preprocess)

    def checkpoints(
        self, given: Checkpoints, sets: Mapping[str, Dataset] | None = None
    ) -> list[CheckpointRef]:
        """The checkpoints of ``given`` in run order (module docstring), each checked against
        every data set of ``sets`` before any work."""
        refs = plan(given, self.run_pattern)
        if sets:
            check_inputs(refs, sets, self.layers)
        return refs

    def record(self, *, computes: bool = True) -> dict[str, Any]:
        """The settings a table's provenance records (the preprocessing and the activation
        applied are recorded per checkpoint); a command that reads no data and computes nothing
        but the weights' norms (``computes=False``: ``info``) records how it loaded them."""
        executor = self.executor if isinstance(self.executor, str) else self.executor.name
        loading = {
            "layers": ",".join(self.layers) if self.layers else None,
            "run_pattern": self.run_pattern,
            "executor": executor,
            "ray_address": self.ray_address,
        }
        if not computes:
            return loading
        return {
            **loading,
            "data_root": self.data_root,
            "limit": self.limit,
            "device": self.compute.device,
            "dtype": self.compute.dtype,
            "batch_size": self.compute.batch_size,
            "seed": self.compute.seed,
        }


def plan(
    given: Checkpoints, run_pattern: str | None = None, what: str = "checkpoints"
) -> list[CheckpointRef]:
    """``given`` as planned references: paths and directories through :func:`plan_runs`, glob
    patterns expanded (sorted) where no file has that name, references kept as they are;
    ``what`` names the parameter in messages."""
    items = [given] if isinstance(given, str | Path | CheckpointRef) else list(given)
    if not items:
        raise TsensError(f"`{what}`: none given")
    refs = [i for i in items if isinstance(i, CheckpointRef)]
    if len(refs) == len(items):
        return refs
    paths: list[str | Path] = []
    for item in items:
        if isinstance(item, CheckpointRef):
            paths.append(item.path)
        elif not Path(item).exists() and glob.has_magic(str(item)):
            found = sorted(glob.glob(str(item)))
            if not found:
                raise TsensError(f"`{what}` {str(item)!r} matches no file")
            paths.extend(found)
        else:
            paths.append(item)
    return plan_runs(paths, run_pattern=run_pattern)


def check_inputs(
    refs: Sequence[CheckpointRef], sets: Mapping[str, Dataset], layers: Sequence[str] | None = None
) -> None:
    """Refuse, before any work, a checkpoint whose input size differs from what a data set
    gives it (after that checkpoint's preprocessing), naming a checkpoint that does fit."""
    sizes = {ref.path: read_widths(ref.path, layers=list(layers) if layers else None)[0] for ref in refs}
    for data in sets.values():
        fits: str | None = None
        misfit: tuple[CheckpointRef, int, Dataset] | None = None
        for ref in refs:
            inputs = sizes[ref.path]
            chosen = recorded_or_given(ref.metadata, ref.path, data)
            prepared = replace(data, preprocess=chosen)  # its shape, without computing statistics
            if prepared.dim == inputs:
                fits = fits or ref.path
            elif misfit is None:
                misfit = (ref, inputs, prepared)
        if misfit is None:
            continue
        ref, inputs, prepared = misfit
        if fits is not None:
            raise TsensError(
                f"{ref.path} takes {inputs} inputs but {fits} takes the {prepared.dim} features of "
                f"data set {data.spec!r}: checkpoints of different input sizes need separate commands"
            )
        prepared.check_input_dim(inputs, f"checkpoint {ref.path}")
