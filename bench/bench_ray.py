"""The Ray executor against the local one, in one run: 50 checkpoints on a local two-worker
cluster (``ray.init(num_cpus=2)``, started once and timed apart).

Setup: 50 checkpoints of 3072-100-100-100-100-10 (He init, as in ``bench_gap.py``); per
checkpoint ``jacobian``'s job (Jacobian norms and the exact tangent, one pass; the same
:func:`tsens.commands.jobs.pass_job` the command runs) over N CIFAR-size uint8 inputs, for several N,
float32, CPU. Reported per N: the local executor's wall time for all 50 jobs with torch's
default thread count and with one thread, Ray's (each worker runs one thread, Ray's default),
the speed-up against the faster local run, and the Ray overhead per task measured with a job
that does nothing. Run it on an idle machine: with other processes on the cores, torch's
multi-threaded kernels slow down several-fold and the local times mean little.

Usage: python bench/bench_ray.py [--checkpoints 50] [--sizes 10,100,1000,5000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gap import write_checkpoints  # noqa: E402

import tsens  # noqa: E402
from tsens.commands.jobs import Loader, pass_job  # noqa: E402
from tsens.commands.per_sample import jacobian_rows, only_rows  # noqa: E402
from tsens.datasets import Dataset  # noqa: E402
from tsens.executors import LocalExecutor, RayExecutor  # noqa: E402
from tsens.runs import plan_runs  # noqa: E402


def nothing(item: object, progress: object = None, **shared: object) -> None:
    """A job that does no work: what remains is the executor's cost per task."""
    return None


def timed(executor: object, job: object, refs: list, shared: dict) -> float:
    start = time.perf_counter()
    for _ in executor.map(job, refs, shared):  # type: ignore[attr-defined]
        pass
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, default=50)
    parser.add_argument("--sizes", default="10,100,1000,5000")
    args = parser.parse_args()
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        refs = plan_runs(write_checkpoints(Path(tmp), args.checkpoints))
        start = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        startup = time.perf_counter() - start
        on_ray = RayExecutor()
        timed(on_ray, nothing, refs, {})  # warm the worker pool
        overhead = min(timed(on_ray, nothing, refs, {}) for _ in range(3)) / len(refs)
        print(f"{len(refs)} checkpoints 3072-100-100-100-100-10; local cluster of 2 workers")
        print(f"cluster start: {startup:.1f} s (once per command with a local cluster)")
        print(f"Ray overhead per task (a job that does nothing): {overhead * 1e3:.1f} ms")
        threads = torch.get_num_threads()
        print(f"{'inputs':>8} {f'local {threads}T s':>11} {'local 1T s':>11} {'ray s':>9} {'speed-up':>9}")
        rng = np.random.default_rng(0)
        for size in (int(s) for s in args.sizes.split(",")):
            x = rng.integers(0, 256, size=(size, 3, 32, 32), dtype=np.uint8)
            data = Dataset(x, None, "bench", (3, 32, 32))
            shared = dict(
                sets={"data": data},
                measures=["predictions", "jacobian", "tangent"],
                options=None,
                compute=tsens.Compute(),
                load=Loader(),
                summarize=jacobian_rows,
                rows=only_rows,
            )
            local = timed(LocalExecutor(), pass_job, refs, shared)
            torch.set_num_threads(1)
            single = timed(LocalExecutor(), pass_job, refs, shared)
            torch.set_num_threads(threads)
            remote = timed(on_ray, pass_job, refs, shared)
            best = min(local, single)
            print(f"{size:>8,} {local:>11.2f} {single:>11.2f} {remote:>9.2f} {best / remote:>8.2f}×")
        ray.shutdown()


if __name__ == "__main__":
    main()
