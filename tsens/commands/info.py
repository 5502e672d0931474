"""``info`` as one library call: what is in each checkpoint (architecture, parameters, per-layer
weight norms, metadata), a row per Linear layer and a summary row per checkpoint, both with the
checkpoint's metadata as ``meta.<key>`` columns to join on."""

from __future__ import annotations

from .jobs import info_job
from .result import Collector, CommandResult
from .runner import Progress, Runner
from .setup import Checkpoints, Setup


def info(
    checkpoints: Checkpoints, *, setup: Setup | None = None, progress: Progress | None = None
) -> CommandResult:
    """Every checkpoint described (module docstring); nothing but the weights is read."""
    setup = setup or Setup()
    refs = setup.checkpoints(checkpoints)
    collector = Collector("info", {}, setup.record(computes=False))
    runner = Runner(setup.executor_for(), progress)
    for ref, out in zip(refs, runner.map(info_job, refs, {"load": setup.loader()}), strict=True):
        collector.add(ref, out.network, out.columns, out.summary)
        runner.progress.checkpoint(out.network, out.summary, out.columns)
    return collector.result()
