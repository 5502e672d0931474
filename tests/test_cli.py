"""The CLI end to end (CliRunner): info, jacobian, activations, regions, datasets; exit codes."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from nets import autograd_jacobian, random_network
from safetensors.torch import save_file

from tsens.cli import main
from tsens.tables import table_provenance


def save_checkpoint(path, widths=(6, 8, 5, 3), seed=0, batchnorm=False, metadata=None):
    net = random_network(widths, seed=seed, batchnorm=batchnorm)
    state = {k: v.float().contiguous() for k, v in net.torch_module().state_dict().items()}
    save_file(state, str(path), metadata=metadata or {"tsens.activation": "relu"})
    return net


def save_data(path, n=40, d=6, classes=3, seed=0, labels=True):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    if labels:
        np.savez(path, x=x, y=rng.integers(0, classes, n))
    else:
        np.savez(path, x=x)
    return x


@pytest.fixture
def files(tmp_path):
    ckpt = tmp_path / "net.safetensors"
    net = save_checkpoint(ckpt)
    data = tmp_path / "data.npz"
    x = save_data(data)
    return {"ckpt": str(ckpt), "net": net, "data": str(data), "x": x, "dir": tmp_path}


def run(*args, code=0):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == code, result.output + repr(result.exception)
    return result


def read_stream(result) -> pa.Table:  # noqa: F821
    return ipc.open_stream(io.BytesIO(result.stdout_bytes)).read_all()


def test_version():
    assert "tsens" in run("--version").output


def test_info_table_and_provenance(files):
    out = files["dir"] / "info.parquet"
    run("info", files["ckpt"], "-o", out)
    table = pq.read_table(out)
    assert table.column("layer").to_pylist() == [1, 2, 3]
    assert table.column("in_features").to_pylist() == [6, 8, 5]
    w = files["net"].layers[1].weight.float().double()
    assert np.isclose(table.column("fro").to_pylist()[1], float(w.norm()), rtol=1e-6)
    meta = table_provenance(table)
    assert meta["command"] == "info" and len(meta["checkpoints"][0]["sha256"]) == 64


@pytest.mark.parametrize("fmt", ["parquet", "arrow", "csv", "json", "jsonl"])
def test_jacobian_every_output_format(files, fmt):
    out = files["dir"] / f"j.{fmt}"
    run("jacobian", files["ckpt"], "--data", files["data"], "-o", out, "--dtype", "float64")
    assert out.stat().st_size > 0


def test_jacobian_stdout_values_match_autograd(files):
    result = run("jacobian", files["ckpt"], "--data", files["data"], "--dtype", "float64", "-o", "-", "-q")
    table = read_stream(result)
    assert table.num_rows == 40
    x = torch.from_numpy(files["x"]).double()
    net = files["net"].to(dtype=torch.float32).to(dtype=torch.float64)  # the file holds float32 weights
    j = autograd_jacobian(net, x)
    assert np.allclose(table.column("jac_logit_fro").to_numpy(), j.flatten(1).norm(dim=1).numpy(), rtol=1e-9)
    for name in ("loss", "correct", "jac_true_class", "tangent_fro", "jac_prob_eq7"):
        assert name in table.column_names
    meta = table_provenance(table)
    assert meta["options"]["dtype"] == "float64" and meta["data"]["data"] == files["data"]


def test_jacobian_measures_and_probes(files):
    t = read_stream(
        run("jacobian", files["ckpt"], "--data", files["data"], "--measures", "tangent", "-o", "-", "-q")
    )
    assert "tangent_fro" in t.column_names and "jac_prob_fro" not in t.column_names
    t = read_stream(run("jacobian", files["ckpt"], "--data", files["data"], "--probes", "8", "-o", "-", "-q"))
    assert "tangent_fro_estimate" in t.column_names and "tangent_fro" not in t.column_names
    run("jacobian", files["ckpt"], "--data", files["data"], "--measures", "bogus", code=2)


def test_several_checkpoints_one_table(files):
    other = files["dir"] / "other.safetensors"
    save_checkpoint(other, seed=1)
    t = read_stream(run("activations", files["ckpt"], other, "--data", files["data"], "-o", "-", "-q"))
    assert t.num_rows == 80
    assert set(t.column("checkpoint").to_pylist()) == {files["ckpt"], str(other)}
    assert len(table_provenance(t)["checkpoints"]) == 2


def test_activations_per_unit(files):
    t = read_stream(run("activations", files["ckpt"], "--data", files["data"], "--per-unit", "-o", "-", "-q"))
    assert t.num_rows == 8 + 5
    freq = np.array(t.column("active_frequency").to_pylist())
    assert np.all((freq >= 0) & (freq <= 1))


def test_regions_with_test_set(files):
    test = files["dir"] / "test.npz"
    save_data(test, n=10, seed=1, labels=False)
    result = run("regions", files["ckpt"], "--data", files["data"], "--test", test, "-o", "-")
    t = read_stream(result)
    assert t.column("set").to_pylist().count("test") == 10
    assert str(t.schema.field("region").type) == "uint64"
    assert "test samples in a region" in result.stderr


def test_summary_goes_to_stderr_not_stdout(files):
    result = run("activations", files["ckpt"], "--data", files["data"])
    assert result.stdout == "" and "active units" in result.stderr


def test_bad_inputs_exit_2_without_traceback(files):
    cases = [
        ("jacobian", "missing.safetensors", "--data", files["data"]),
        ("jacobian", files["ckpt"], "--data", files["dir"] / "nope.npz"),
        ("jacobian", files["ckpt"], "--data", files["data"], "--device", "cuda:7"),
        ("info", files["ckpt"], "--activation", "gelu"),
    ]
    for args in cases:
        result = run(*args, code=2)
        assert "Traceback" not in result.output
        assert "error" in result.stderr.lower()


def test_dimension_mismatch_names_both(files):
    wrong = files["dir"] / "wide.npz"
    save_data(wrong, d=9)
    result = run("jacobian", files["ckpt"], "--data", wrong, code=2)
    assert "9" in result.stderr and "6" in result.stderr


def test_labels_out_of_range(files):
    bad = files["dir"] / "labels.npz"
    np.savez(bad, x=np.zeros((4, 6), np.float32), y=np.array([0, 1, 2, 7]))
    result = run("jacobian", files["ckpt"], "--data", bad, code=2)
    assert "outputs" in result.stderr


def test_refuses_overwrite(files):
    out = files["dir"] / "keep.csv"
    out.write_text("mine")
    run("activations", files["ckpt"], "--data", files["data"], "-o", out, code=2)
    assert out.read_text() == "mine"
    run("activations", files["ckpt"], "--data", files["data"], "-o", out, "--force")


def test_float32_overflow_warns(tmp_path):
    ckpt = tmp_path / "huge.safetensors"
    net = random_network((6, 8, 8, 3), seed=0, scale=1.0)
    state = {
        k: (v * 1e12 if k.endswith("weight") else v).float().contiguous()
        for k, v in net.torch_module().state_dict().items()
    }
    save_file(state, str(ckpt))
    data = tmp_path / "d.npz"
    save_data(data)
    result = run("jacobian", ckpt, "--data", data)
    assert "--dtype float64" in result.stderr


def test_json_for_pipelines(files):
    result = run("activations", files["ckpt"], "--data", files["data"], "-o", "-", "--format", "json", "-q")
    doc = json.loads(result.stdout)
    assert len(doc["rows"]) == 40 and doc["tsens"]["command"] == "activations"


def test_every_command_on_a_cifar_batch_file(tmp_path):
    import pickle

    rng = np.random.default_rng(0)
    batch = {
        b"batch_label": b"testing batch 1 of 1",
        b"data": rng.integers(0, 256, (12, 3072), dtype=np.uint8),
        b"labels": [int(v) for v in rng.integers(0, 10, 12)],
    }
    data = tmp_path / "test_batch"
    data.write_bytes(pickle.dumps(batch))
    ckpt = tmp_path / "cifar.safetensors"
    save_checkpoint(ckpt, widths=(3072, 16, 8, 10), metadata={"tsens.preprocess": '{"normalize": "cifar10"}'})
    for command in ("jacobian", "activations", "regions"):
        t = read_stream(run(command, ckpt, "--data", data, "-o", "-", "-q"))
        assert t.num_rows == 12
        assert table_provenance(t)["command"] == command
    plain = tmp_path / "plain.safetensors"
    save_checkpoint(plain, widths=(3072, 16, 8, 10))
    result = run("jacobian", plain, "--data", data, "--crop", "24", code=2)
    assert "1728" in result.stderr and "3072" in result.stderr


def test_refused_checkpoints_exit_2_naming_the_problem(tmp_path):
    conv = tmp_path / "conv.safetensors"
    save_file({"features.0.weight": torch.zeros(4, 3, 3, 3), "fc.weight": torch.zeros(10, 4)}, str(conv))
    result = run("info", conv, code=2)
    assert "features.0.weight" in result.stderr and "Traceback" not in result.output

    nan = tmp_path / "nan.safetensors"
    save_file({"0.weight": torch.full((3, 2), float("nan")), "0.bias": torch.zeros(3)}, str(nan))
    assert "0.weight" in run("info", nan, code=2).stderr

    truncated = tmp_path / "cut.safetensors"
    save_checkpoint(truncated)
    truncated.write_bytes(truncated.read_bytes()[:-20])
    assert "cut.safetensors" in run("info", truncated, code=2).stderr

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {"0.weight": torch.zeros(2, 2)}, "payload": Evil()}, evil)
    result = run("info", evil, code=2)
    assert not marker.exists() and "evil.pt" in result.stderr
