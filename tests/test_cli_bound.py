"""``tsens bound`` end to end (CliRunner): tables, formats, thresholds, exit codes."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner, Result
from nets import random_network
from safetensors.torch import save_file

from tsens.bounds import data_free_bounds
from tsens.checkpoints import load_network
from tsens.choices import BOUNDS
from tsens.cli import main
from tsens.cli.thresholds import crossings, resolve_bound
from tsens.errors import TsensError
from tsens.tables import table_provenance


def save_checkpoint(path, widths=(6, 8, 5, 3), seed=0, batchnorm=False, scale=1.0):
    net = random_network(widths, seed=seed, batchnorm=batchnorm, scale=scale)
    state = {k: v.contiguous() for k, v in net.torch_module().state_dict().items()}
    save_file(state, str(path), metadata={"tsens.activation": "relu"})
    return str(path)


@pytest.fixture
def files(tmp_path):
    data = tmp_path / "data.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.normal(size=(60, 6)), y=rng.integers(0, 3, 60))
    return {
        "plain": save_checkpoint(tmp_path / "plain.safetensors"),
        "bn": save_checkpoint(tmp_path / "bn.safetensors", batchnorm=True, seed=1),
        "data": str(data),
        "dir": tmp_path,
    }


def run(*args, code=0) -> Result:
    result = CliRunner().invoke(main, ["bound", *(str(a) for a in args)])
    assert result.exit_code == code, result.output + repr(result.exception)
    return result


def read_stream(result: Result):
    return ipc.open_stream(io.BytesIO(result.stdout_bytes)).read_all()


def test_table_columns_values_and_provenance(files):
    out = files["dir"] / "b.parquet"
    result = run(files["plain"], files["bn"], "-o", out)
    assert "tsens bound" in result.stderr and "need --data" in result.stderr
    table = pq.read_table(out)
    assert table.column("checkpoint").to_pylist() == [files["plain"], files["bn"]]
    for name in ("log10_w", "tightest_tangent", "tightest_jacobian", "max_abs", "folded_spectral"):
        assert name in table.column_names
    assert "log10_tangent_gauss" not in table.column_names  # needs --data
    for i, path in enumerate((files["plain"], files["bn"])):
        b = data_free_bounds(load_network(path))
        for name in BOUNDS:
            assert table.column(f"log10_tangent_{name}")[i].as_py() == pytest.approx(b.tangent[name])
            assert table.column(f"log10_jacobian_{name}")[i].as_py() == pytest.approx(b.jacobian[name])
    assert table.column("max_abs")[1].as_py()[0] != table.column("folded_max_abs")[1].as_py()[0]  # BN
    meta = table_provenance(table)
    assert meta["command"] == "bound" and meta["options"]["reading"] == "sum"


def test_arrow_stream_on_stdout_and_reading(files):
    sums = read_stream(run(files["plain"], "-o", "-", "-q"))
    alls = read_stream(run(files["plain"], "--tangent", "all", "-o", "-", "-q"))
    diff = sums.column("log10_tangent_path")[0].as_py() - alls.column("log10_tangent_path")[0].as_py()
    assert diff == pytest.approx(0.5 * math.log10(3))  # sum = sqrt(n) × all
    assert sums.column("log10_jacobian_path") == alls.column("log10_jacobian_path")


def test_json_with_data_bounds_the_measured_values(files):
    result = run(files["bn"], "--data", files["data"], "--dtype", "float64", "-o", "-", "--format", "json")
    doc = json.loads(result.stdout)
    (row,) = doc["rows"]
    assert doc["tsens"]["data"] == {"data": files["data"]}
    assert row["samples"] == 60 and row["active_mean"] > 0
    assert row["log10_tangent_gauss"] is not None and row["log10_tangent_gauss_paper"] is not None
    for kind in ("tangent", "jacobian"):
        assert row[f"log10_{kind}_measured_mean"] <= row[f"log10_{kind}_measured_max"]
        for name in BOUNDS:
            assert row[f"log10_{kind}_measured_max"] <= row[f"log10_{kind}_{name}"]
    assert "loose" in result.stderr and "gauss" in result.stderr


def test_bounds_cover_what_tsens_jacobian_reports(files):
    out = files["dir"] / "j.parquet"
    args = ["jacobian", files["bn"], "--data", files["data"], "--dtype", "float64", "-o", out]
    assert CliRunner().invoke(main, args).exit_code == 0
    measured = max(pq.read_table(out).column("tangent_fro").to_pylist())
    row = read_stream(run(files["bn"], "-o", "-", "-q")).to_pylist()[0]
    assert math.log10(measured) <= min(row[f"log10_tangent_{b}"] for b in BOUNDS)


def test_per_layer_rows(files):
    table = read_stream(
        run(files["bn"], files["plain"], "--per-layer", "--data", files["data"], "-o", "-", "-q")
    )
    assert table.column("layer").to_pylist() == [1, 2, 3, 1, 2, 3]
    assert table.column("active_mean").to_pylist()[2] is None
    terms = table.column("log10_tangent_path_term").to_pylist()[:3]
    total = read_stream(run(files["bn"], "-o", "-", "-q")).column("log10_tangent_path")[0].as_py()
    assert 0.5 * math.log10(sum(100.0**t for t in terms)) == pytest.approx(total)


def test_fail_above_exits_1_naming_checkpoint_and_bound(files):
    out = files["dir"] / "b.csv"
    result = run(files["plain"], files["bn"], "--fail-above", "path=-5", "-o", out, code=1)
    assert files["plain"] in result.stderr and files["bn"] in result.stderr
    assert "log10_tangent_path" in result.stderr
    assert out.exists()  # the table is written before the gate fails
    result = run(files["plain"], "--fail-above", "log10_jacobian_spectral=-5", "-q", code=1)
    assert "log10_jacobian_spectral" in result.stderr


def test_thresholds_not_crossed_exit_0(files):
    run(files["plain"], "--fail-above", "tangent_paper=50", "--fail-below", "jacobian-path=-50", "-q")
    run(files["plain"], "--data", files["data"], "--fail-above", "gauss-paper=50", "-q")
    run(files["plain"], "--fail-below", "paper=50", "-q", code=1)


@pytest.mark.parametrize(
    "option",
    [
        ["--fail-above", "nope=3"],
        ["--fail-above", "path"],
        ["--fail-below", "path=high"],
        ["--fail-above", "gauss=3"],  # needs --data
    ],
)
def test_bad_threshold_exits_2(files, option):
    result = run(files["plain"], *option, code=2)
    assert option[0] in result.stderr and option[1].split("=")[0] in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_nan_weights_exit_2_without_traceback(files):
    path = files["dir"] / "nan.safetensors"
    net = random_network((4, 3, 2), seed=0)
    state = {k: v.contiguous() for k, v in net.torch_module().state_dict().items()}
    state["0.weight"][0, 0] = float("nan")
    save_file(state, str(path))
    result = run(path, code=2)
    assert "nan" in result.stderr.lower() and str(path) in result.stderr
    assert result.stderr.startswith("tsens: error: ") and len(result.stderr.strip().splitlines()) == 1


def test_deep_checkpoint_bounds_beyond_float64(files):
    path = save_checkpoint(files["dir"] / "deep.safetensors", widths=(4, *[6] * 120, 2), scale=300.0)
    row = read_stream(run(path, "-o", "-", "-q")).to_pylist()[0]
    assert all(math.isfinite(row[f"log10_tangent_{b}"]) and row[f"log10_tangent_{b}"] > 308 for b in BOUNDS)
    assert torch.isinf(torch.tensor(10.0) ** row["log10_tangent_path"])


def test_bound_names_and_crossings():
    assert resolve_bound("path", False) == "log10_tangent_path"
    assert resolve_bound("jacobian-spectral", False) == "log10_jacobian_spectral"
    assert resolve_bound("log10_tangent_paper", False) == "log10_tangent_paper"
    assert resolve_bound("tangent_paper", False) == "log10_tangent_paper"
    assert resolve_bound("gauss-paper", True) == "log10_tangent_gauss_paper"
    assert resolve_bound("w", False) == "log10_w"
    with pytest.raises(TsensError, match="needs `data`"):
        resolve_bound("gauss", False)
    with pytest.raises(TsensError, match="unknown bound 'nope'"):
        resolve_bound("nope", True)
    row = {"checkpoint": "a.safetensors", "log10_tangent_path": 12.5, "log10_w": math.nan}
    assert crossings(row, [("log10_tangent_path", 12.0), ("log10_w", 0.0)], []) == [
        "a.safetensors: log10_tangent_path = 12.5 > 12"
    ]
    assert crossings(row, [], [("log10_tangent_path", 13.0)]) == [
        "a.safetensors: log10_tangent_path = 12.5 < 13"
    ]
    assert crossings(row, [("log10_tangent_path", 13.0)], [("log10_tangent_path", 12.0)]) == []
