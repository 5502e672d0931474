"""Where per-checkpoint work runs: in this process (:class:`LocalExecutor`) or as tasks on a Ray
cluster (:class:`RayExecutor`, the optional extra ``tsens[ray]``). tsens schedules nothing
itself: Ray places, retries and returns the tasks.

A job is a module-level function ``job(item, progress=None, **shared)``: ``item`` is one
checkpoint (or one chunk of work for it) and ``shared`` what every task reads (the data set,
the settings). :meth:`Executor.map` yields the results **in the order of the items**, whatever
order the tasks finish in, so tables come out identical under either executor.

On Ray the shared values are put into the object store once (each task gets references, not
copies); each task asks for one GPU when the work runs on CUDA; a task whose worker dies
(killed, out of memory, a lost node) is retried up to ``max_retries`` times, while a task that
fails for a user error (:class:`~tsens.errors.TsensError`, e.g. a bad checkpoint) is not
retried and its one-line message is raised again on the driver. Warnings a task emits are
replayed on the driver.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar

from .choices import EXECUTORS
from .errors import TsensError, first_line
from .extras import require

T = TypeVar("T")
R = TypeVar("R")

ItemProgress = Callable[[Any], AbstractContextManager[Any]]
"""For the local executor: a context manager giving the progress callback of one item's job."""
TaskProgress = Callable[[int], AbstractContextManager[Callable[[int], None] | None]]
"""For a cluster: given the task count, a context manager giving a callback advanced once per
finished task (None: no progress shown)."""


@dataclass(frozen=True)
class Work:
    """One :meth:`Executor.map` call: ``job(item, progress=..., **shared)`` for every item, and
    the progress of one item here (``item_progress``) or of the tasks on a cluster."""

    job: Callable[..., Any]
    items: Sequence[Any]
    shared: Mapping[str, Any]
    item_progress: ItemProgress | None = None
    task_progress: TaskProgress | None = None


class Executor(ABC):
    """Runs ``job(item, progress=..., **shared)`` for every item; :meth:`map` yields the results
    in item order. ``item_progress(item)`` (used here, not on a cluster) gives one item's
    progress callback; ``task_progress(count)`` (on a cluster) one advanced per finished task."""

    name = "?"

    def map(
        self,
        job: Callable[..., R],
        items: Sequence[T],
        shared: Mapping[str, Any],
        *,
        item_progress: ItemProgress | None = None,
        task_progress: TaskProgress | None = None,
    ) -> Iterator[R]:
        return self._run(Work(job, items, shared, item_progress, task_progress))

    @abstractmethod
    def _run(self, work: Work) -> Iterator[Any]:
        """The results of the work's job over its items, in item order (each executor's own way)."""


class LocalExecutor(Executor):
    """Runs each job here, one after another, with its own progress bar."""

    name = "local"

    def _run(self, work: Work) -> Iterator[Any]:
        for item in work.items:
            with work.item_progress(item) if work.item_progress else nullcontext() as progress:
                yield work.job(item, progress=progress, **work.shared)


def _run_task(job: Callable[..., Any], item: Any, **shared: Any) -> tuple[Any, list[tuple[str, type]]]:
    """A task's body on a worker: the job's result and the warnings it emitted."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = job(item, progress=None, **shared)
    return result, [(str(w.message), w.category) for w in caught]


class RayExecutor(Executor):
    """Runs one task per item on a Ray cluster: ``address`` (else ``RAY_ADDRESS``, else a local
    cluster started for this process, or the one already started in it)."""

    name = "ray"

    def __init__(self, address: str | None = None, *, gpus_per_task: float = 0, max_retries: int = 3) -> None:
        self.ray = require("ray", "ray", "--executor ray")
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.gpus_per_task = gpus_per_task
        self.max_retries = max_retries
        if not self.ray.is_initialized():
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # Ray's notes on its own setup
                    self.ray.init(
                        address=self.address,
                        include_dashboard=False,
                        log_to_driver=False,
                        logging_level="ERROR",
                        configure_logging=False,
                        **({} if self.address else local_cluster_options()),
                    )
            except (ConnectionError, RuntimeError, ValueError) as e:
                where = repr(self.address) if self.address else "(a local cluster)"
                raise TsensError(f"`ray_address` {where}: cannot connect to Ray ({first_line(e)})") from None

    def _run(self, work: Work) -> Iterator[Any]:
        ray = self.ray
        refs = {key: ray.put(value) for key, value in work.shared.items()}  # once, not per task
        task = ray.remote(_run_task).options(
            num_gpus=self.gpus_per_task, max_retries=self.max_retries, retry_exceptions=False
        )
        pending = [task.remote(work.job, item, **refs) for item in work.items]
        order = {ref.hex(): i for i, ref in enumerate(pending)}
        done: dict[int, Any] = {}
        waiting = list(pending)
        with work.task_progress(len(pending)) if work.task_progress else nullcontext() as advance:
            for i in range(len(pending)):
                while i not in done:
                    ready, waiting = ray.wait(waiting, num_returns=1)
                    for ref in ready:
                        done[order[ref.hex()]] = ref
                        if advance is not None:
                            advance(1)
                result, caught = self._get(done.pop(i))
                for message, category in caught:
                    warnings.warn(message, category, stacklevel=2)
                yield result

    def _get(self, ref: Any) -> Any:
        """A finished task's value; a user error inside it is raised here as the same TsensError."""
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, TsensError):
                raise type(cause)(str(cause)) from None
            raise


SOCKET_ROOM = 40
"""Ray keeps a local cluster's Unix sockets under the temp directory, ~70 characters deep, and a
socket path holds at most 107 bytes: a temp directory longer than this gets a short one."""


def local_cluster_options() -> dict[str, Any]:
    """``ray.init`` options for a local cluster: under a long ``TMPDIR`` (a CI runner's, a
    cluster job's), its files go to ``/tmp/ray-<uid>`` instead, where its sockets fit."""
    if len(tempfile.gettempdir()) <= SOCKET_ROOM or not os.path.isdir("/tmp"):
        return {}
    user = os.getuid() if hasattr(os, "getuid") else os.getpid()
    return {"_temp_dir": f"/tmp/ray-{user}"}


def make_executor(
    name: str, *, address: str | None = None, gpus_per_task: float = 0
) -> LocalExecutor | RayExecutor:
    """The executor called ``name`` (``local`` or ``ray``)."""
    if name == "local":
        if address:
            raise TsensError("`ray_address` applies to the ray executor only")
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address, gpus_per_task=gpus_per_task)
    raise TsensError(f"`executor` must be one of {', '.join(EXECUTORS)}, got {name!r}")
