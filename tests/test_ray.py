"""The Ray executor on a local two-CPU cluster started here: every multi-checkpoint command
writes the same table as the local executor (rows, order, values, provenance plus the
executor); a worker killed mid-task is retried without lost or duplicated rows; a user error in
a task ends the command with the same one-line message and exit code 2; without Ray, one line."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from clitools import assert_same_table, one_line_error, run
from safetensors.torch import save_file

from tsens.commands.jobs import Loader, pass_job
from tsens.commands.per_sample import jacobian_rows, only_rows
from tsens.datasets import load_dataset
from tsens.executors import LocalExecutor, RayExecutor, local_cluster_options
from tsens.runs import plan_runs

ray = pytest.importorskip("ray")  # in the test extra: CI runs these

SAMPLES = Path(__file__).resolve().parents[1] / "sample_checkpoints"
DIGITS = sorted(SAMPLES.glob("digits-64-*/epoch=*.safetensors"))[:6]
BN = sorted((SAMPLES / "mnist1d-40-100-100-10-bn").glob("*.safetensors"))[:2]


@pytest.fixture(scope="module", autouse=True)
def cluster():
    options = local_cluster_options()  # a short home for Ray's sockets under a long TMPDIR
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False, **options)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # this module's jobs, by value
    yield
    ray.shutdown()


COMMANDS = {
    "bound": ["bound", *DIGITS, "--data", "digits-test", "--limit", "100"],
    "jacobian": ["jacobian", *DIGITS, *BN[:0], "--data", "digits-test", "--limit", "100"],
    "activations": ["activations", *BN, "--data", "mnist1d-test", "--limit", "100", "--per-unit"],
    "regions": ["regions", *BN, "--data", "mnist1d", "--test", "mnist1d-test", "--limit", "80"],
    # 70 curves: three tasks per checkpoint (32 + 32 + 6), concatenated in order
    "transitions": ["transitions", *DIGITS[:2], "--data", "digits-test", "--count", "70", "--jacobian"],
    "estimate-gap": ["estimate-gap", *DIGITS, "--train", "digits", "--test", "digits-test", "--limit", "150"],
}


def _written(tmp_path: Path, args: list, executor: str) -> tuple[pa.Table, pa.Table, dict]:
    out, summary = tmp_path / f"{executor}.arrow", tmp_path / f"{executor}-summary.arrow"
    run(*args, "--executor", executor, "-o", out, "--summary", summary, "--quiet")
    tables = []
    for path in (out, summary):
        with pa.memory_map(str(path)) as source:
            tables.append(pa.ipc.open_file(source).read_all())
    return tables[0], tables[1], json.loads(tables[0].schema.metadata[b"tsens"])


@pytest.mark.parametrize("name", COMMANDS)
def test_ray_tables_equal_local_tables(tmp_path, name):
    rows_local, summary_local, meta_local = _written(tmp_path, COMMANDS[name], "local")
    rows_ray, summary_ray, meta_ray = _written(tmp_path, COMMANDS[name], "ray")
    assert rows_ray.num_rows == rows_local.num_rows > 0
    assert_same_table(rows_ray, rows_local)  # same rows, order and values
    assert_same_table(summary_ray, summary_local)
    assert meta_ray["options"].pop("executor") == "ray" and meta_local["options"].pop("executor") == "local"
    for meta in (meta_ray, meta_local):
        meta.pop("created", None), meta.pop("elapsed_s", None)
    assert meta_ray == meta_local


# --- faults ----------------------------------------------------------------------------------


def dies_once(ref, progress=None, *, marker: str, victim: str, **shared):
    """pass_job, except that the first attempt on ``victim`` kills its own worker mid-task."""
    if ref.path == victim and not os.path.exists(marker):
        Path(marker).write_text("killed")
        os.kill(os.getpid(), signal.SIGKILL)
    return pass_job(ref, progress, **shared)


def test_a_killed_worker_is_retried_without_lost_or_duplicated_rows(tmp_path):
    refs = plan_runs(DIGITS[:4])
    data = load_dataset("digits-test", limit=60, seed=0)
    shared = dict(
        sets={"data": data},
        measures=["predictions", "jacobian"],
        options=None,
        compute=__import__("tsens").Compute(),
        load=Loader(),
        summarize=jacobian_rows,
        rows=only_rows,
    )
    marker = tmp_path / "killed"
    faulty = {**shared, "marker": str(marker), "victim": refs[2].path}
    on_ray = list(RayExecutor().map(dies_once, refs, faulty))
    assert marker.read_text() == "killed"  # the worker did die, and the task ran again
    here = list(LocalExecutor().map(pass_job, refs, shared))
    assert [o.network.path for o in on_ray] == [r.path for r in refs]
    for a, b in zip(on_ray, here, strict=True):
        assert a.summary == b.summary
        for key in b.columns:
            np.testing.assert_array_equal(np.asarray(a.columns[key]), np.asarray(b.columns[key]))


def test_a_bad_checkpoint_in_a_task_is_the_same_one_line_error(tmp_path):
    torch.manual_seed(0)
    good = tmp_path / "good.safetensors"
    bad = tmp_path / "bad.safetensors"
    w = {"0.weight": torch.randn(8, 64), "0.bias": torch.zeros(8), "1.weight": torch.randn(10, 8)}
    save_file(w, str(good))
    save_file({**w, "0.bias": torch.full((8,), float("nan"))}, str(bad))  # metadata reads fine
    for executor in ("local", "ray"):
        result = run("jacobian", good, bad, "--data", "digits-test", "--executor", executor, "-q", code=2)
        one_line_error(result, str(bad), "NaN or Inf")


def test_without_ray_one_line_and_address_only_with_ray(monkeypatch):
    import tsens.extras

    real = tsens.extras.importlib.import_module

    def no_ray(name, *args):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real(name, *args)

    monkeypatch.setattr(tsens.extras.importlib, "import_module", no_ray)
    result = run("bound", DIGITS[0], "--executor", "ray", code=2)
    one_line_error(result, "--executor ray needs the ray package", "tsens[ray]")
    monkeypatch.undo()
    result = run("bound", DIGITS[0], "--ray-address", "10.0.0.1:6379", code=2)
    one_line_error(result, "--ray-address applies to the ray executor only")


def test_each_task_asks_for_one_gpu_when_the_work_runs_on_cuda(monkeypatch):
    from types import SimpleNamespace

    import tsens.commands.setup as setup

    asked = {}
    monkeypatch.setattr(setup, "make_executor", lambda name, **kw: asked.setdefault(name, kw))
    for device, gpus in (("cuda", 1), ("cpu", 0)):
        asked.clear()
        setup.Setup(executor="ray", compute=SimpleNamespace(torch_device=torch.device(device))).executor_for()
        assert asked["ray"]["gpus_per_task"] == gpus
    executor = RayExecutor(gpus_per_task=1)
    options = {}
    real_remote = ray.remote

    def spy(fn):
        remote = real_remote(fn)
        original = remote.options

        def record(**kw):
            options.update(kw)
            return original(**{**kw, "num_gpus": 0})  # this cluster has no GPU: run anyway

        remote.options = record
        return remote

    monkeypatch.setattr(executor.ray, "remote", spy)
    assert list(executor.map(nothing_job, [1, 2], {})) == [1, 2]
    assert options["num_gpus"] == 1 and options["max_retries"] == 3 and options["retry_exceptions"] is False


def nothing_job(item, progress=None, **shared):
    return item
