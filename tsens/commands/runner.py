"""Running one job per item (a checkpoint, or a group of curves of one) on an executor, in item
order, and reporting progress as it goes.

A command's library call plans its checkpoints (:mod:`.setup`), then hands its per-checkpoint
job (:mod:`.jobs`) to :meth:`Runner.map`, which runs it on the setup's executor
(:mod:`tsens.executors`: here, or as Ray tasks) and yields the results in the order of the
items, whatever order they finish in. What a long run reports (an overall count of finished
jobs, the samples of the job at hand, each checkpoint's summary as it comes) goes to a
:class:`Progress`; the default reports nothing, the command line draws it on a terminal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TypeVar

from ..executors import Executor, LocalExecutor

T = TypeVar("T")
R = TypeVar("R")
Advance = Callable[[int], None]
Row = dict[str, Any]


class Progress:
    """What a command reports while it runs. Every method does nothing here; a subclass shows
    what it likes (the command line: one overall line with the count and the time left, a bar
    for the samples of the job at hand, and each checkpoint's summary as it comes)."""

    def overall(self, total: int, unit: str) -> AbstractContextManager[Advance | None]:
        """For the whole command: ``total`` jobs (``unit``: checkpoints, or tasks on a cluster);
        the callback it gives is advanced once per finished job."""
        return nullcontext()

    def item(self, label: str, size: int) -> AbstractContextManager[Advance | None]:
        """For one job run here: ``size`` samples (or curves); the callback it gives is advanced
        as they are done."""
        return nullcontext()

    def checkpoint(self, network: Any, summary: Sequence[Row], columns: Mapping[str, Any] | None) -> None:
        """One checkpoint is done: its network, its summary rows and its rows (``columns``)."""


QUIET = Progress()
"""Reports nothing: the default of every command."""


class Runner:
    """Maps jobs over items on ``executor`` with ``progress`` (module docstring)."""

    def __init__(self, executor: Executor | None = None, progress: Progress | None = None) -> None:
        self.executor = executor or LocalExecutor()
        self.progress = progress or QUIET

    def map(
        self,
        job: Callable[..., R],
        items: Sequence[T],
        shared: Mapping[str, Any],
        *,
        label: Callable[[T], str] = lambda item: str(getattr(item, "path", item)),
        size: Callable[[T], int] = lambda _item: 0,
        unit: str = "checkpoints",
    ) -> Iterator[R]:
        """``job(item, progress=..., **shared)`` for every item, results in item order; locally
        each job gets the progress callback of its item (labelled ``label(item)``, ``size(item)``
        long), on a cluster the overall count advances per finished task."""
        local = isinstance(self.executor, LocalExecutor)
        progress = self.progress
        with progress.overall(len(items), unit if local else "tasks") as tick:
            if local:
                results = self.executor.map(
                    job, items, shared, item_progress=lambda item: progress.item(label(item), size(item))
                )
                for result in results:
                    if tick is not None:
                        tick(1)
                    yield result
            else:
                yield from self.executor.map(
                    job, items, shared, task_progress=lambda _count: nullcontext(tick)
                )
