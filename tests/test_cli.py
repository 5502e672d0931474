"""The CLI end to end (CliRunner): info, datasets, jacobian, activations, regions; tables,
summaries, runs, exit codes, and the edges that used to mislead or end in a traceback."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from clitools import one_line_error, read_stream, run
from nets import autograd_jacobian, random_network
from safetensors.torch import save_file

import tsens
from tsens.cli import main
from tsens.errors import TsensError
from tsens.tables import table_provenance


def save_checkpoint(path, widths=(6, 8, 5, 3), seed=0, batchnorm=False, metadata=None, scale=1.0):
    net = random_network(widths, seed=seed, batchnorm=batchnorm, scale=scale)
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


def test_version():
    assert run("--version").output.strip() == f"tsens, version {tsens.__version__}"


def test_info_table_and_provenance(files):
    out = files["dir"] / "info.parquet"
    run("info", files["ckpt"], "-o", out)
    table = pq.read_table(out)
    assert table.column("layer").to_pylist() == [1, 2, 3]
    assert table.column("in_features").to_pylist() == [6, 8, 5]
    assert table.column("run").to_pylist() == [str(files["dir"])] * 3
    w = files["net"].layers[1].weight.float().double()
    assert np.isclose(table.column("fro").to_pylist()[1], float(w.norm()), rtol=1e-6)
    meta = table_provenance(table)
    assert meta["command"] == "info" and len(meta["checkpoints"][0]["sha256"]) == 64


@pytest.mark.parametrize("fmt", ["parquet", "arrow", "csv", "json", "jsonl"])
def test_every_output_format_holds_the_same_rows(files, fmt):
    reference = read_stream(
        run("jacobian", files["ckpt"], "--data", files["data"], "--dtype", "float64", "-o", "-", "-q")
    )
    out = files["dir"] / f"j.{fmt}"
    run("jacobian", files["ckpt"], "--data", files["data"], "-o", out, "--dtype", "float64", "-q")
    if fmt == "parquet":
        back = pq.read_table(out).to_pylist()
    elif fmt == "arrow":
        back = feather.read_table(out).to_pylist()
    elif fmt == "csv":
        back = list(csv.DictReader(io.StringIO(out.read_text())))
    elif fmt == "json":
        back = json.loads(out.read_text())["rows"]
    else:
        back = [json.loads(line) for line in out.read_text().splitlines()]
    expected = reference.to_pylist()
    assert len(back) == len(expected) == 40
    for got, want in zip(back, expected, strict=True):
        assert int(got["sample"]) == want["sample"]
        assert float(got["jac_prob_fro"]) == pytest.approx(want["jac_prob_fro"], rel=1e-12)


def test_jacobian_stdout_values_match_autograd(files):
    result = run("jacobian", files["ckpt"], "--data", files["data"], "--dtype", "float64", "-o", "-", "-q")
    table = read_stream(result)
    assert table.num_rows == 40
    x = torch.from_numpy(files["x"]).double()
    net = files["net"].to(dtype=torch.float32).to(dtype=torch.float64)  # the file holds float32 weights
    j = autograd_jacobian(net, x)
    assert np.allclose(table.column("jac_logit_fro").to_numpy(), j.flatten(1).norm(dim=1).numpy(), rtol=1e-9)
    for name in (
        "loss",
        "correct",
        "jac_true_class",
        "tangent_fro",
        "jac_prob_eq7",
        "entropy",
        "run",
        "step",
    ):
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
    one_line_error(
        run("jacobian", files["ckpt"], "--data", files["data"], "--measures", "bogus", code=2), "--measures"
    )


def test_checkpoints_are_grouped_into_runs_and_ordered_by_step(tmp_path):
    data = tmp_path / "d.npz"
    save_data(data)
    for run_dir in ("a", "b"):
        (tmp_path / run_dir).mkdir()
        for epoch in (10, 2):
            save_checkpoint(tmp_path / run_dir / f"epoch={epoch}.safetensors", seed=epoch)
    given = [tmp_path / "b" / "epoch=10.safetensors", tmp_path / "a" / "epoch=10.safetensors",
             tmp_path / "b" / "epoch=2.safetensors", tmp_path / "a" / "epoch=2.safetensors"]  # fmt: skip
    t = read_stream(run("activations", *given, "--data", data, "-o", "-", "-q"))
    rows = t.select(["run", "step"]).to_pylist()[::40]
    assert rows == [
        {"run": str(tmp_path / "b"), "step": 2},
        {"run": str(tmp_path / "b"), "step": 10},
        {"run": str(tmp_path / "a"), "step": 2},
        {"run": str(tmp_path / "a"), "step": 10},
    ]
    assert len(table_provenance(t)["checkpoints"]) == 4
    t = read_stream(run("info", *given, "--run-pattern", r"(epoch)=", "-o", "-", "-q"))
    assert set(t.column("run").to_pylist()) == {"epoch"}


def test_summary_tables_are_the_library_rows(files):
    test = files["dir"] / "test.npz"
    save_data(test, n=10, seed=1, labels=False)
    for command, extra, function in (
        ("jacobian", (), "jacobian_summary"),
        ("activations", (), "activations_summary"),
        ("regions", ("--test", test), "regions_summary"),
    ):
        out = files["dir"] / f"{command}-summary.parquet"
        run(
            command,
            files["ckpt"],
            "--data",
            files["data"],
            *extra,
            "--summary",
            out,
            "--dtype",
            "float64",
            "-q",
        )
        got = pq.read_table(out)
        assert table_provenance(got)["command"] == command
        net = tsens.load_network(files["ckpt"])
        sets = {"data": tsens.load_dataset(files["data"])}
        if extra:
            sets["test"] = tsens.load_dataset(str(test))
        names = {
            "jacobian_summary": ["predictions", "jacobian", "tangent"],
            "activations_summary": ["active"],
        }
        names = names.get(function, ["region", "membership", "boundary", "path_score", "tangent"])
        results = tsens.measure_sets(net, sets, names, compute=tsens.Compute(dtype="float64"))
        want = getattr(tsens, function)(results) if extra else [getattr(tsens, function)(results["data"])]
        rows = got.to_pylist()
        assert len(rows) == len(want)
        for row, expected in zip(rows, want, strict=True):
            assert row["run"] == str(files["dir"]) and row["set"] == expected["set"]
            for key, value in expected.items():
                if isinstance(value, float):
                    assert row[key] == pytest.approx(value, rel=1e-12, nan_ok=True), key
                elif key != "checkpoint":
                    assert row[key] == value, key


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


def test_datasets_listing_is_a_table(tmp_path):
    out = tmp_path / "sets.csv"
    result = run("datasets", "-o", out, "-q")
    assert result.stderr == ""
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    shipped = {r["name"]: r["available"] for r in rows}
    assert shipped["digits"] == "true" and "cifar10" in shipped


@pytest.mark.parametrize("device", ["mps", "meta", "xla", "foo", "cuda:7", "cuda:x"])
def test_unsupported_devices_exit_2(files, device):
    result = run("jacobian", files["ckpt"], "--data", files["data"], "--device", device, code=2)
    one_line_error(result, "--device", device)


@pytest.mark.parametrize("seed", ["-1", str(2**70)])
def test_out_of_range_seeds_exit_2(files, seed):
    one_line_error(run("jacobian", files["ckpt"], "--data", files["data"], "--seed", seed, code=2), "--seed")


def test_nan_temperature_is_refused_without_overflow_warning(files):
    result = run("regions", files["ckpt"], "--data", files["data"], "--temperature", "nan", code=2)
    one_line_error(result, "--temperature", "nan")


def test_output_targets_are_refused_before_any_work(files, monkeypatch):
    missing = files["dir"] / "missing_dir" / "x.parquet"
    one_line_error(
        run("jacobian", files["ckpt"], "--data", files["data"], "-o", missing, code=2), "missing_dir"
    )
    assert not missing.parent.exists()
    monkeypatch.setattr("tsens.cli.outputs.stdout_is_terminal", lambda: True)
    one_line_error(
        run("jacobian", files["ckpt"], "--data", files["data"], "-o", "-", code=2), "terminal", "--format"
    )
    # text formats are fine on a terminal
    run("activations", files["ckpt"], "--data", files["data"], "-o", "-", "--format", "jsonl", "-q")
    one_line_error(
        run("jacobian", files["ckpt"], "--data", files["data"], "-o", "-", "--summary", "-", code=2), "stdout"
    )
    result = run(
        "jacobian", files["ckpt"], "--data", files["data"], "--summary", files["dir"] / "s.xyz", code=2
    )
    one_line_error(result, "--summary", "unknown suffix")


def test_output_piped_into_head_ends_quietly(tmp_path):
    ckpt = tmp_path / "net.safetensors"
    save_checkpoint(ckpt)
    data = tmp_path / "big.npz"
    save_data(data, n=3000)
    args = f"jacobian {ckpt} --data {data} -o - --format jsonl -q".split()
    command = [sys.executable, "-m", "tsens", *args]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    code = proc.wait(timeout=120)
    assert json.loads(first)["sample"] == 0
    assert code == 141 and stderr == ""


def test_debug_anywhere_and_never_from_the_runner_argv(files, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest", "--debug"])
    one_line_error(
        run("jacobian", "missing.safetensors", "--data", files["data"], code=2), "missing.safetensors"
    )
    for args in (
        ["--debug", "jacobian", "missing.safetensors", "--data", files["data"]],
        ["jacobian", "missing.safetensors", "--data", files["data"], "--debug"],
    ):
        result = CliRunner().invoke(main, args)
        assert isinstance(result.exception, TsensError) and "missing.safetensors" in str(result.exception)


def test_bad_inputs_exit_2_naming_the_problem(files):
    cases = [
        (("jacobian", "missing.safetensors", "--data", files["data"]), "missing.safetensors"),
        (("jacobian", files["ckpt"], "--data", files["dir"] / "nope.npz"), "nope.npz"),
        (("info", files["ckpt"], "--activation", "gelu"), "gelu"),
        (("info", files["ckpt"], "--activation", "leaky_relu:-3"), "[0, 1)"),
        (("jacobian", files["ckpt"], "--data", files["data"], "--batch-size", "0"), "--batch-size"),
        (("jacobian", files["ckpt"], "--data", files["data"], "--crop", "0"), "--crop"),
        (("jacobian", files["ckpt"], "--data", files["data"], "--limit", "0"), "--limit"),
        (("jacobian", files["ckpt"], "--data", files["data"], "--mean", "0.5"), "--mean"),
        (("jacobian", files["ckpt"], "--data", files["data"], "--probes", "0"), "--probes"),
        (("jacobian", files["ckpt"], "--data", files["data"], "--bogus"), "--bogus"),
        (("info", files["ckpt"], "--run-pattern", "("), "--run-pattern"),
    ]
    for args, fragment in cases:
        one_line_error(run(*args, code=2), fragment)


def test_unreadable_files_get_plain_messages(tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("not an archive")
    ckpt = tmp_path / "net.safetensors"
    save_checkpoint(ckpt)
    result = run("jacobian", ckpt, "--data", text, code=2)
    one_line_error(result, "notes.npz")
    assert "allow_pickle" not in result.stderr
    junk = tmp_path / "junk.pt"
    junk.write_bytes(np.random.default_rng(0).bytes(256))  # fixed bytes: a repeatable test
    result = run("info", junk, code=2)
    one_line_error(result, "junk.pt")
    assert "pop from empty list" not in result.stderr


def test_dimension_mismatch_names_both(files):
    wrong = files["dir"] / "wide.npz"
    save_data(wrong, d=9)
    one_line_error(run("jacobian", files["ckpt"], "--data", wrong, code=2), "9", "6")


def test_labels_out_of_range(files):
    bad = files["dir"] / "labels.npz"
    np.savez(bad, x=np.zeros((4, 6), np.float32), y=np.array([0, 1, 2, 7]))
    one_line_error(run("jacobian", files["ckpt"], "--data", bad, code=2), "outputs")


def test_refuses_overwrite(files):
    out = files["dir"] / "keep.csv"
    out.write_text("mine")
    one_line_error(run("activations", files["ckpt"], "--data", files["data"], "-o", out, code=2), "--force")
    assert out.read_text() == "mine"
    run("activations", files["ckpt"], "--data", files["data"], "-o", out, "--force")
    assert len(list(csv.DictReader(io.StringIO(out.read_text())))) == 40


def test_overflow_warns_per_checkpoint_and_column(tmp_path):
    ckpt = tmp_path / "huge.safetensors"
    save_checkpoint(ckpt, widths=(6, 8, 8, 3), scale=1e13)
    data = tmp_path / "d.npz"
    save_data(data)
    result = run("jacobian", ckpt, "--data", data, "-o", "-")
    warned = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert warned and all(str(ckpt) in line and "--dtype float64" in line for line in warned)
    columns = [line.split(": ")[2].split(" is inf")[0] for line in warned]
    assert len(columns) == len(set(columns))
    assert {"jac_prob_eq7", "jac_true_lower", "tangent_fro"} <= set(columns)
    (jac_row,) = [line for line in result.stderr.splitlines() if line.startswith("│ jac_logit_fro")]
    assert jac_row.split("│")[2].strip() == "inf"  # the summary shows inf as inf


def test_network_without_hidden_layer(tmp_path):
    ckpt = tmp_path / "linear.safetensors"
    save_checkpoint(ckpt, widths=(6, 3))
    data = tmp_path / "d.npz"
    save_data(data)
    for command in ("activations", "regions"):
        one_line_error(run(command, ckpt, "--data", data, code=2), "no hidden layer", "do not apply")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = run("bound", ckpt, "--data", data, "-o", "-")
    row = read_stream(result).to_pylist()[0]
    assert row["log10_tangent_gauss_paper"] is None and row["active_mean"] is None
    assert "warning" not in result.stderr and "nan" not in result.stderr
    result = run("jacobian", ckpt, "--data", data)
    assert "warning" not in result.stderr


def test_dead_layer_gives_no_empty_slice_and_no_infinite_gap(tmp_path):
    ckpt = tmp_path / "dead.safetensors"
    net = random_network((6, 4, 3), seed=0)
    state = {k: v.float().contiguous() for k, v in net.torch_module().state_dict().items()}
    state["0.weight"].zero_()
    state["0.bias"].fill_(-1.0)
    save_file(state, str(ckpt))
    data = tmp_path / "d.npz"
    save_data(data)
    for command in ("jacobian", "bound", "activations", "regions"):
        result = run(command, ckpt, "--data", data)
        assert "Mean of empty slice" not in result.stderr and "warning" not in result.stderr
    result = run("bound", ckpt, "--data", data)
    assert " inf" not in result.stderr


def test_given_settings_win_over_the_record_with_a_warning(tmp_path):
    ckpt = tmp_path / "net.safetensors"
    save_checkpoint(
        ckpt,
        metadata={
            "tsens.activation": "relu",
            "tsens.preprocess": '{"normalize": "standard", "mean": [1.0], "std": [2.0]}',
        },
    )
    data = tmp_path / "d.npz"
    save_data(data)
    recorded = read_stream(run("activations", ckpt, "--data", data, "-o", "-"))
    record = table_provenance(recorded)["checkpoints"][0]
    assert json.loads(record["preprocess"])["mean"] == [1.0] and record["activation"] == "relu"
    result = run(
        "activations", ckpt, "--data", data, "--normalize", "none", "--activation", "relu6", "-o", "-"
    )
    assert "differs from the one the checkpoint records" in result.stderr
    assert "tsens.activation" in result.stderr  # the activation rule warns the same way
    record = table_provenance(read_stream(result))["checkpoints"][0]
    assert json.loads(record["preprocess"])["normalize"] == "none" and record["activation"] == "relu6"
    assert "normalize" not in table_provenance(read_stream(result))["options"]


def test_limit_keeps_original_indices_and_notes_a_short_set(files):
    t = read_stream(
        run(
            "activations",
            files["ckpt"],
            "--data",
            files["data"],
            "--limit",
            "5",
            "--seed",
            "3",
            "-o",
            "-",
            "-q",
        )
    )
    chosen = np.sort(np.random.default_rng(3).choice(40, size=5, replace=False))
    assert t.column("sample").to_pylist() == chosen.tolist()
    result = run("activations", files["ckpt"], "--data", files["data"], "--limit", "100", "-o", "-")
    assert "note: " in result.stderr and "--limit" in result.stderr and read_stream(result).num_rows == 40


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
    one_line_error(run("jacobian", plain, "--data", data, "--crop", "24", code=2), "1728", "3072")


def test_refused_checkpoints_exit_2_naming_the_problem(tmp_path):
    conv = tmp_path / "conv.safetensors"
    save_file({"features.0.weight": torch.zeros(4, 3, 3, 3), "fc.weight": torch.zeros(10, 4)}, str(conv))
    one_line_error(run("info", conv, code=2), "features.0.weight")

    nan = tmp_path / "nan.safetensors"
    save_file({"0.weight": torch.full((3, 2), float("nan")), "0.bias": torch.zeros(3)}, str(nan))
    one_line_error(run("info", nan, code=2), "0.weight")

    truncated = tmp_path / "cut.safetensors"
    save_checkpoint(truncated)
    truncated.write_bytes(truncated.read_bytes()[:-20])
    one_line_error(run("info", truncated, code=2), "cut.safetensors")

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):

            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {"0.weight": torch.zeros(2, 2)}, "payload": Evil()}, evil)
    one_line_error(run("info", evil, code=2), "evil.pt")
    assert not marker.exists()


def test_standard_statistics_come_from_the_first_set_and_apply_to_the_test_set(tmp_path):
    ckpt = tmp_path / "net.safetensors"
    save_checkpoint(ckpt)
    rng = np.random.default_rng(0)
    train = rng.normal(size=(50, 6))
    np.savez(tmp_path / "train.npz", x=train, y=rng.integers(0, 3, 50))
    np.savez(tmp_path / "test.npz", x=3 + 2 * rng.normal(size=(20, 6)))
    t = read_stream(
        run(
            "regions",
            ckpt,
            "--data",
            tmp_path / "train.npz",
            "--test",
            tmp_path / "test.npz",
            "--normalize",
            "standard",
            "-o",
            "-",
            "-q",
        )  # fmt: skip
    )
    record = table_provenance(t)["checkpoints"][0]
    used = [json.loads(record[f"preprocess_{name}"]) for name in ("data", "test")]
    assert used[0] == used[1]  # the test set is transformed like the training set
    assert used[0]["mean"] == [pytest.approx(train.mean())] and used[0]["std"] == [pytest.approx(train.std())]
