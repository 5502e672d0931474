"""The room that runs every command over many checkpoints (``tsens.commands``): each command's
one library call gives exactly the tables the command line writes; checkpoints that cannot take
the data are refused before any work; progress and results come in checkpoint order; what a
notebook shows is short; and the edges the command line met as a new user would."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from clitools import assert_same_table, one_line_error, run
from nets import random_network
from safetensors.torch import save_file

import tsens
from tsens import commands
from tsens.errors import TsensError
from tsens.gap.estimators import ESTIMATORS as REGISTRY

SAMPLES = Path(__file__).resolve().parents[1] / "sample_checkpoints"
RUN = sorted((SAMPLES / "digits-64-32-10").glob("*.safetensors"))[:3]
F64 = tsens.Setup(compute=tsens.Compute(dtype="float64"), limit=120)

F64_ARGS = ("--dtype", "float64", "--limit", "120")
GAP_RUNS = sorted(SAMPLES.glob("digits-64-64-64-10*/*.safetensors"))

# command → (its library arguments after the checkpoints, its command-line options): the same
# work both ways, on RUN (GAP_RUNS for estimate-gap), with F64 / F64_ARGS
SAME = {
    "info": ((), {}, ()),
    "bound": (("digits-test",), {"per_layer": True}, ("--data", "digits-test", "--per-layer")),
    "jacobian": (("digits-test",), {"reading": "all"}, ("--data", "digits-test", "--tangent", "all")),
    "activations": (("digits-test",), {"per_unit": True}, ("--data", "digits-test", "--per-unit")),
    "regions": (("digits",), {"test": "digits-test"}, ("--data", "digits", "--test", "digits-test")),
    "transitions": (
        ("digits-test",),
        {"count": 12, "jacobian": True},
        ("--data", "digits-test", "--count", "12", "--jacobian"),
    ),
    "estimate-gap": (("digits", "digits-test"), {}, ("--train", "digits", "--test", "digits-test")),
}


@pytest.mark.parametrize("name", SAME)
def test_one_library_call_gives_the_command_line_tables(tmp_path, name):
    args, kwargs, options = SAME[name]
    checkpoints = GAP_RUNS if name == "estimate-gap" else RUN
    setup, extra = (tsens.Setup(), ()) if name == "info" else (F64, F64_ARGS)
    result = commands.COMMANDS[name](checkpoints, *args, **kwargs, setup=setup)
    out, summary = tmp_path / "rows.parquet", tmp_path / "summary.parquet"
    run(name, *checkpoints, *options, *extra, "-o", out, "--summary", summary, "-q")
    assert_same_table(result.table, pq.read_table(out))
    assert_same_table(result.summary, pq.read_table(summary))
    assert result.table.num_rows > 0 and result.summary.num_rows > 0
    assert result.checkpoints == [
        c["path"] for c in tsens.table_provenance(pq.read_table(out))["checkpoints"]
    ]
    assert repr(result).startswith(f"<{name}: ") and "\n" not in repr(result)


def test_results_come_in_checkpoint_order_with_one_progress_report_each():
    class Recorder(tsens.Progress):
        def __init__(self):
            self.calls = []

        def overall(self, total, unit):
            self.calls.append(("overall", total, unit))
            return super().overall(total, unit)

        def item(self, label, size):
            self.calls.append(("item", label, size))
            return super().item(label, size)

        def checkpoint(self, network, summary, columns):
            self.calls.append(("checkpoint", network.path, len(next(iter(columns.values())))))

    shuffled = [RUN[2], RUN[0], RUN[1]]
    recorder = Recorder()
    result = commands.jacobian(shuffled, "digits-test", setup=tsens.Setup(limit=30), progress=recorder)
    ordered = [str(p) for p in RUN]  # ordered by step, whatever order they were given in
    assert result.checkpoints == ordered
    assert result.table.column("checkpoint").to_pylist() == [p for p in ordered for _ in range(30)]
    assert recorder.calls[0] == ("overall", 3, "checkpoints")
    assert [c for c in recorder.calls if c[0] == "item"] == [("item", p, 30) for p in ordered]
    assert [c for c in recorder.calls if c[0] == "checkpoint"] == [("checkpoint", p, 30) for p in ordered]


def test_checkpoints_by_glob_and_by_run_directory():
    by_glob = commands.info(str(SAMPLES / "digits-64-32-10" / "*.safetensors"))
    by_directory = commands.info(SAMPLES / "digits-64-32-10")
    files = sorted(
        str(p) for p in (SAMPLES / "digits-64-32-10").iterdir() if p.suffix in (".safetensors", ".pt")
    )
    assert sorted(by_directory.checkpoints) == files and len(by_glob.checkpoints) == 4
    assert set(by_glob.checkpoints) <= set(by_directory.checkpoints)
    with pytest.raises(TsensError, match="matches no file"):
        commands.info(str(SAMPLES / "nothing-*.safetensors"))


def _net(path: Path, widths, seed=0, metadata=None):
    net = random_network(widths, seed=seed)
    state = {k: v.float().contiguous() for k, v in net.torch_module().state_dict().items()}
    save_file(state, str(path), metadata=metadata or {})


def test_checkpoints_of_other_input_sizes_are_refused_before_any_work(tmp_path, monkeypatch):
    wide, narrow = tmp_path / "a-64.safetensors", tmp_path / "b-40.safetensors"
    _net(wide, (64, 8, 10))
    _net(narrow, (40, 8, 10))

    def no_work(*args, **kwargs):
        raise AssertionError("a pass ran before the refusal")

    monkeypatch.setattr("tsens.commands.per_sample.pass_job", no_work)
    with pytest.raises(TsensError) as caught:
        commands.jacobian([wide, narrow], "digits-test")
    message = str(caught.value)
    assert str(narrow) in message and str(wide) in message and "40" in message and "64" in message
    # without data, different sizes are no problem
    assert set(commands.info([wide, narrow]).summary.column("architecture").to_pylist()) == {
        "64-8-10",
        "40-8-10",
    }
    one_line_error(run("jacobian", wide, narrow, "--data", "digits-test", code=2), str(narrow), str(wide))


def test_estimate_gap_without_hidden_layers_estimates_what_applies(tmp_path):
    paths = []
    for run_name in ("r1", "r2"):
        for step in (1, 2):
            path = tmp_path / run_name / f"step={step}.safetensors"
            path.parent.mkdir(exist_ok=True)
            _net(path, (64, 10), seed=step + 10 * len(paths))
            paths.append(path)
    result = commands.estimate_gap(
        paths, "digits", "digits-test", estimators=list(REGISTRY), setup=tsens.Setup(limit=100)
    )
    rows = result.extra["gap"].rows
    assert {r["status_kummer"] for r in rows} == {"no-hidden-layer"}
    assert {r["status_membership"] for r in rows} == {"no-hidden-layer"}
    assert {r["status_doc"] for r in rows} == {"ok"}
    for row in rows:  # every estimate of what each estimator estimates
        for name in result.extra["gap"].names:
            key = name.replace("-", "_")
            assert all(np.isfinite(row[f"est_{key}_{t}"]) for t in REGISTRY[name].targets), name
    args = ("--train", "digits", "--test", "digits-test", "--limit", "100", "--detail", "--estimators", "all")
    text = run("estimate-gap", *paths, *args).stderr
    assert "n/a" in text


def test_notebook_reprs_are_short():
    net = tsens.load_network(RUN[0])
    data = tsens.load_dataset("digits-test", limit=10)
    shown = [net, net.layers[0], tsens.measure(net, data, ["jacobian"]), commands.info(RUN[0])]
    shown.append(commands.transitions(RUN[0], data, count=3).extra["results"][0])
    for thing in shown:
        text = repr(thing)
        short = text.replace(str(RUN[0]), "")  # however long the checkout's path is
        assert "\n" not in text and len(short) < 250 and "tensor(" not in text, text


def test_a_written_result_reads_back(tmp_path):
    result = commands.activations(RUN[:1], "digits-test", setup=tsens.Setup(limit=20))
    written = result.write(str(tmp_path / "rows.csv"), str(tmp_path / "summary.parquet"))
    assert [(rows, what) for _, rows, what in written] == [(20, "rows"), (1, "summary rows")]
    back = pacsv.read_csv(tmp_path / "rows.csv")
    assert back.column("active_total").to_pylist() == result.table.column("active_total").to_pylist()
    with pytest.raises(TsensError, match="exists"):
        result.write(str(tmp_path / "rows.csv"))


def test_info_tables_carry_the_metadata_to_join_on(tmp_path):
    out, summary = tmp_path / "layers.csv", tmp_path / "checkpoints.csv"
    run("info", *RUN, "-o", out, "--summary", summary, "-q")
    layers, checkpoints = pacsv.read_csv(out), pacsv.read_csv(summary)
    for table in (layers, checkpoints):
        assert {"meta.lr", "meta.weight_decay", "meta.epoch", "meta.dataset"} <= set(table.column_names)
    epochs = [int(tsens.read_metadata(p)["epoch"]) for p in RUN]
    assert checkpoints.column("meta.epoch").to_pylist() == epochs  # numbers, not text
    # metadata that is a number in one checkpoint and text in another becomes text
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    _net(a, (4, 3, 2), metadata={"note": "12"})
    _net(b, (4, 3, 2), metadata={"note": "twelve"})
    assert commands.info([a, b]).summary.column("meta.note").to_pylist() == ["12", "twelve"]
    # an integer in one checkpoint and a decimal in another is a number (the zoo's label_noise)
    _net(a, (4, 3, 2), metadata={"label_noise": "0"})
    _net(b, (4, 3, 2), metadata={"label_noise": "0.2"})
    for table in (commands.info([a, b]).table, commands.info([a, b]).summary):
        assert table.column("meta.label_noise").to_pylist() in ([0, 0.2], [0, 0, 0.2, 0.2])


def test_new_user_slips_are_one_line(tmp_path):
    ckpt = str(RUN[0])
    one_line_error(run("jacobian", ckpt, code=2), "Missing option '--data'")
    bare = tmp_path / "bare.safetensors"  # no metadata naming its data sets
    _net(bare, (64, 8, 10))
    one_line_error(run("estimate-gap", bare, "--test", "digits-test", code=2), "'dataset'", "--train")
    one_line_error(run("estimate-gap", bare, "--train", "digits", code=2), "'test_dataset'", "--test")
    one_line_error(run("info", ckpt, "-o", tmp_path, code=2), "-o", "is a directory")
    same = str(tmp_path / "x.csv")
    one_line_error(run("bound", ckpt, "-o", same, "--summary", same, code=2), "-o", "--summary", "x.csv")
    assert not (tmp_path / "x.csv").exists()
    unlabelled = tmp_path / "inputs.npz"
    np.savez(unlabelled, x=tsens.load_dataset("digits-test").x[:50])
    args = ("estimate-gap", ckpt, "--train", "digits", "--test", unlabelled, "--summary", tmp_path / "s.csv")
    one_line_error(run(*args, code=2), "--summary", "test labels")
    one_line_error(run("info", tmp_path / "empty", code=2), "no such file")
    (tmp_path / "empty").mkdir()
    one_line_error(run("info", tmp_path / "empty", code=2), "holds no checkpoint", "*.safetensors")


def test_a_warning_for_every_checkpoint_is_one_line_with_the_count():
    result = run(
        "jacobian", *RUN, "--data", "digits-test", "--limit", "20", "--activation", "leaky_relu", "-q"
    )
    lines = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(lines) == 1, result.stderr
    assert str(RUN[0]) in lines[0] and "differs" in lines[0] and "(and 2 more like it)" in lines[0]


def test_progress_on_a_terminal_has_one_overall_line(monkeypatch):
    import io

    from rich.console import Console

    from tsens.cli import render

    screen = io.StringIO()
    monkeypatch.setattr(render, "console", Console(file=screen, force_terminal=True, width=100))
    monkeypatch.setattr(render, "progress_enabled", lambda quiet: True)
    progress = render.TerminalProgress(quiet=False)
    commands.jacobian(RUN, "digits-test", setup=tsens.Setup(limit=30), progress=progress)
    drawn = screen.getvalue()
    assert "checkpoints" in drawn and "3/3" in drawn


def test_rows_with_mixed_value_types_make_a_valid_table():
    from tsens.commands.result import columns_of

    columns = columns_of([{"a": 1, "b": "x"}, {"a": "one"}, {}])
    assert columns == {"a": ["1", "one", None], "b": ["x", None, None]}
    assert pa.table(columns).num_rows == 3


def test_every_job_is_a_module_level_function_a_cluster_can_run():
    import inspect
    import pickle

    from tsens.commands.jobs import JOBS

    for name, job in JOBS.items():
        assert pickle.loads(pickle.dumps(job)) is job, name  # pickled by reference: a worker imports it
        first, progress, *shared = inspect.signature(job).parameters.values()
        assert progress.name == "progress" and progress.default is None, name
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in shared), name
