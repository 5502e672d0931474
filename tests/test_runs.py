"""Runs of checkpoints (tsens.runs): grouping by metadata, pattern or directory; ordering by
metadata step or file-name numbers; metadata parsed to numbers; weights never read."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from nets import random_network
from safetensors.torch import save_file

import tsens.checkpoints
from tsens.errors import TsensError
from tsens.runs import CheckpointRef, group_runs, name_numbers, parse_value, plan_runs, previous


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    module = random_network((3, 4, 2), seed=seed).torch_module()
    return {k: v.detach().contiguous() for k, v in module.state_dict().items()}


def save(path: Path, metadata: dict[str, str] | None = None, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file(_state(seed), str(path), metadata=metadata)
    else:
        torch.save({**_state(seed), **(metadata or {})}, path)
    return path


def names(refs: list[CheckpointRef]) -> list[str]:
    return [Path(r.path).name for r in refs]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("12", 12),
        (" 7 ", 7),
        ("-3", -3),
        ("0.5", 0.5),
        ("1e-3", 0.001),
        (".25", 0.25),
        ("2.", 2.0),
        ("true", "true"),
        ("nan", "nan"),
        ("inf", "inf"),
        ("-inf", "-inf"),
        ("1e999", "1e999"),
        ("0x10", "0x10"),
        ("1_000", "1_000"),
        ("[4, 6, 3]", "[4, 6, 3]"),
        ("", ""),
    ],
)
def test_parse_value(text, value):
    parsed = parse_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_name_numbers():
    files = ["epoch=10.pt", "a.pt", "epoch=2.pt", "epoch=1.pt"]
    assert sorted(files, key=name_numbers) == ["a.pt", "epoch=1.pt", "epoch=2.pt", "epoch=10.pt"]
    assert name_numbers("epoch=3-step=1200.ckpt") == (3, 1200)


def test_glob_order_is_reordered_by_file_name_numbers(tmp_path):
    run = tmp_path / "digits-64-32-10"
    paths = [save(run / f"epoch={e}.safetensors") for e in (1, 10, 2, 20, 3)]  # a shell glob's order
    refs = plan_runs(paths)
    assert names(refs) == [f"epoch={e}.safetensors" for e in (1, 2, 3, 10, 20)]
    assert [r.step for r in refs] == [1, 2, 3, 10, 20]
    assert {r.run for r in refs} == {str(run)}
    assert all(r.metadata == {} for r in refs)


def test_file_name_step_rules(tmp_path):
    cases = {
        "epoch=3-step=120.safetensors": 120,  # Lightning's default name: step wins over epoch
        "ckpt_step-7.safetensors": 7,
        "epoch_4_loss0.3.safetensors": 4,  # the number after epoch_, not the last one
        "model-v12.safetensors": 12,  # the last number in the stem
        "final.safetensors": None,
    }
    refs = plan_runs([save(tmp_path / name) for name in cases])
    assert {Path(r.path).name: r.step for r in refs} == cases
    assert names(refs) == [
        "epoch_4_loss0.3.safetensors",
        "ckpt_step-7.safetensors",
        "model-v12.safetensors",
        "epoch=3-step=120.safetensors",
        "final.safetensors",  # no step: after every numbered checkpoint
    ]


def test_metadata_step_beats_file_name_and_fallbacks(tmp_path):
    a = save(tmp_path / "step=100.safetensors", {"step": "5", "global_step": "900", "epoch": "9"})
    b = save(tmp_path / "step=1.safetensors", {"global_step": "50", "epoch": "8"})
    c = save(tmp_path / "step=2.safetensors", {"epoch": "7.5"})
    d = save(tmp_path / "step=3.safetensors", {"step": "last", "epoch": "nan"})  # neither numeric
    refs = plan_runs([a, b, c, d])
    assert [(Path(r.path).name, r.step) for r in refs] == [
        ("step=3.safetensors", 3),
        ("step=100.safetensors", 5),
        ("step=2.safetensors", 7.5),
        ("step=1.safetensors", 50),
    ]
    assert refs[1].metadata == {"step": 5, "global_step": 900, "epoch": 9}
    assert refs[0].metadata == {"step": "last", "epoch": "nan"}


def test_lightning_checkpoint_with_global_step(tmp_path):
    state = {f"model.{k}": v for k, v in _state().items()}
    ckpt = {
        "epoch": 3,
        "global_step": 120,
        "state_dict": state,
        "hyper_parameters": {"lr": 0.1, "run": "lightning-a"},
    }
    path = tmp_path / "last.ckpt"
    torch.save(ckpt, path)
    (ref,) = plan_runs([path])
    assert ref.step == 120 and ref.run == "lightning-a"
    assert ref.metadata == {"epoch": 3, "global_step": 120, "lr": 0.1, "run": "lightning-a"}
    assert ref.load().widths == (3, 4, 2)


def test_run_from_metadata_pattern_and_directory(tmp_path):
    a1 = save(tmp_path / "sweep" / "alpha-epoch=1.safetensors")
    b1 = save(tmp_path / "sweep" / "beta-epoch=1.safetensors")
    a2 = save(tmp_path / "sweep" / "alpha-epoch=2.safetensors")
    tagged = save(tmp_path / "sweep" / "beta-epoch=9.safetensors", {"run": "gamma"})
    odd = save(tmp_path / "sweep" / "unmatched.safetensors")
    refs = plan_runs([a1, b1, a2, tagged, odd], run_pattern=r"^(\w+)-epoch")
    grouped = group_runs(refs)
    assert list(grouped) == ["alpha", "beta", "gamma", str(tmp_path / "sweep")]
    assert [names(v) for v in grouped.values()] == [
        ["alpha-epoch=1.safetensors", "alpha-epoch=2.safetensors"],
        ["beta-epoch=1.safetensors"],
        ["beta-epoch=9.safetensors"],  # metadata `run` beats the pattern
        ["unmatched.safetensors"],  # no match: the parent directory's run
    ]
    by_dir = group_runs(plan_runs([a1, b1, a2, tagged, odd]))
    assert list(by_dir) == [str(tmp_path / "sweep"), "gamma"]
    assert names(by_dir[str(tmp_path / "sweep")]) == [
        "alpha-epoch=1.safetensors",
        "beta-epoch=1.safetensors",
        "alpha-epoch=2.safetensors",
        "unmatched.safetensors",
    ]


def test_run_is_the_directory_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save(Path("sample_checkpoints/digits-64-32-10/epoch=1.safetensors"))
    save(Path("bare-3.safetensors"))
    refs = plan_runs(["sample_checkpoints/digits-64-32-10/epoch=1.safetensors", "bare-3.safetensors"])
    assert [(r.path, r.run, r.step) for r in refs] == [
        ("sample_checkpoints/digits-64-32-10/epoch=1.safetensors", "sample_checkpoints/digits-64-32-10", 1),
        ("bare-3.safetensors", ".", 3),
    ]


def test_runs_keep_order_of_first_appearance(tmp_path):
    b = [save(tmp_path / "b" / f"{i}.safetensors") for i in (2, 1)]
    a = [save(tmp_path / "a" / f"{i}.safetensors") for i in (2, 1)]
    refs = plan_runs([b[0], a[0], b[1], a[1]])
    assert [(Path(r.run).name, r.step) for r in refs] == [("b", 1), ("b", 2), ("a", 1), ("a", 2)]


@pytest.mark.parametrize(
    ("pattern", "match"),
    [
        ("(unclosed", r"^`run_pattern` '\(unclosed' is not a valid regular expression"),
        (r"epoch=\d+", r"^`run_pattern` 'epoch=\\\\d\+' has no group"),
    ],
)
def test_bad_run_pattern(tmp_path, pattern, match):
    path = save(tmp_path / "epoch=1.safetensors")
    with pytest.raises(TsensError, match=match):
        plan_runs([path], run_pattern=pattern)


def test_duplicates_kept_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = save(tmp_path / "r" / "epoch=1.safetensors")
    second = save(tmp_path / "r" / "epoch=2.safetensors")
    refs = plan_runs([second, first, "r/epoch=2.safetensors", "r/../r/epoch=1.safetensors", first])
    assert [r.path for r in refs] == [str(first), str(second)]


def test_previous(tmp_path):
    a = [save(tmp_path / "a" / f"epoch={i}.safetensors") for i in (3, 1, 2)]
    b = [save(tmp_path / "b" / f"epoch={i}.safetensors") for i in (1, 2)]
    refs = plan_runs([*a, *b])
    runs = group_runs(refs)
    ra, rb = runs[str(tmp_path / "a")], runs[str(tmp_path / "b")]
    assert [previous(refs, r) for r in ra] == [None, ra[0], ra[1]]
    assert [previous(refs, r) for r in rb] == [None, rb[0]]  # not a's last checkpoint
    stranger = CheckpointRef(str(tmp_path / "x.pt"), ra[0].run, 0, {})
    with pytest.raises(ValueError, match="not among"):
        previous(refs, stranger)


def test_plan_runs_never_loads_weights(tmp_path, monkeypatch):
    zipped = save(tmp_path / "epoch=2.pt", {"epoch": 2})
    legacy = tmp_path / "epoch=3.pt"
    torch.save({**_state(), "epoch": 3}, legacy, _use_new_zipfile_serialization=False)
    safe = save(tmp_path / "epoch=1.safetensors", {"epoch": "1"})

    def fail(*args, **kwargs):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(tsens.checkpoints, "load_network", fail)
    monkeypatch.setattr(tsens.checkpoints, "read_checkpoint", fail)
    loads: list[tuple[str, bool]] = []
    real_load = torch.load

    def spy(f, *args, **kwargs):
        loads.append((Path(f).name, kwargs.get("mmap", False)))
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    refs = plan_runs([legacy, zipped, safe])
    assert [(Path(r.path).name, r.step) for r in refs] == [
        ("epoch=1.safetensors", 1),
        ("epoch=2.pt", 2),
        ("epoch=3.pt", 3),
    ]
    assert sorted(loads) == [("epoch=2.pt", True), ("epoch=3.pt", False)]  # zip: memory-mapped
    with pytest.raises(AssertionError, match="weights were loaded"):  # load() does go through it
        refs[0].load()


def test_ref_load_and_missing_file(tmp_path):
    path = save(tmp_path / "step=4.safetensors", {"tsens.activation": "relu6"}, seed=3)
    (ref,) = plan_runs([path])
    net = ref.load()
    assert net.path == str(path) and net.activation.name == "relu6"
    with pytest.warns(UserWarning, match="differs from the one the checkpoint records"):
        assert ref.load(activation="relu").activation.name == "relu"
    x = torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(
        net.forward(x), random_network((3, 4, 2), seed=3, activation="relu6").forward(x)
    )
    with pytest.raises(TsensError, match=r"missing\.pt: no such file"):
        plan_runs([path, tmp_path / "missing.pt"])


def test_step_is_finite_number_or_none(tmp_path):
    refs = plan_runs([save(tmp_path / "x.safetensors", {"step": "inf", "epoch": "2.5"})])
    assert refs[0].step == 2.5  # a non-finite `step` is no number: `epoch` is used
    assert refs[0].metadata == {"step": "inf", "epoch": 2.5}


# --- a plain directory stands for the checkpoints in it ---------------------------------------


def test_directory_stands_for_its_checkpoints_in_step_order(tmp_path):
    run = tmp_path / "zoo" / "digits"
    for e in (10, 2, 30, 1):
        save(run / f"epoch={e}.safetensors")
    save(run / "last.pt", {"epoch": 40})
    save(run / ".hidden.safetensors")  # hidden: skipped
    (run / "README.md").write_text("notes")  # no format claims it: ignored
    (run / "metrics.json").write_text("{}")
    save(run / "nested" / "epoch=99.safetensors")  # not a model directory: not looked into
    refs = plan_runs([run])
    assert names(refs) == [f"epoch={e}.safetensors" for e in (1, 2, 10, 30)] + ["last.pt"]
    assert [r.step for r in refs] == [1, 2, 10, 30, 40]
    assert {r.run for r in refs} == {str(run)}
    assert refs[0].path == str(run / "epoch=1.safetensors")
    given_with_slash = plan_runs([f"{run}/"])
    assert [(r.path, r.run) for r in given_with_slash] == [(r.path, r.run) for r in refs]


def test_directory_and_files_mixed(tmp_path):
    a = tmp_path / "a"
    for e in (2, 1):
        save(a / f"epoch={e}.safetensors")
    save(a / "epoch=3.safetensors", {"run": "tagged"})
    b = [save(tmp_path / "b" / f"epoch={e}.safetensors") for e in (5, 4)]
    refs = plan_runs([b[0], a, a / "epoch=1.safetensors", b[1]])  # a file of `a` again: kept once
    assert [(Path(r.run).name, names([r])[0]) for r in refs] == [
        ("b", "epoch=4.safetensors"),
        ("b", "epoch=5.safetensors"),
        ("a", "epoch=1.safetensors"),
        ("a", "epoch=2.safetensors"),
        ("tagged", "epoch=3.safetensors"),  # metadata `run` still wins
    ]
    by_pattern = plan_runs([a], run_pattern=r"(epoch)=")
    assert {r.run for r in by_pattern} == {"epoch", "tagged"}


def test_directory_of_hugging_face_checkpoints(tmp_path):
    run = tmp_path / "run"
    for step in (1000, 500, 1500):
        directory = run / f"checkpoint-{step}"
        save(directory / "model.safetensors", seed=step)
        (directory / "config.json").write_text('{"hidden_act": "relu"}')
    (run / "checkpoint-2000").mkdir()  # an unfinished save: no weights, no model directory
    (run / "trainer_state.json").write_text("{}")
    refs = plan_runs([run])
    assert names(refs) == ["checkpoint-500", "checkpoint-1000", "checkpoint-1500"]
    assert [r.step for r in refs] == [500, 1000, 1500]
    assert {r.run for r in refs} == {str(run)}
    assert refs[0].metadata["hidden_act"] == "relu"
    assert refs[0].load().widths == (3, 4, 2)
    (model,) = plan_runs([run / "checkpoint-500"])  # a model directory is one checkpoint
    assert model.path == str(run / "checkpoint-500")


def test_directory_without_checkpoints(tmp_path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("x")
    save(empty / ".hidden.safetensors")
    with pytest.raises(TsensError) as info:
        plan_runs([empty])
    message = str(info.value)
    assert message.startswith(f"{empty}: holds no checkpoint (expected .safetensors, .pt, ")
    assert "\n" not in message and "model directories" in message
    assert message.endswith(f"give the files, e.g. {empty}/*/*.safetensors")
    flat = tmp_path / "flat"
    flat.mkdir()
    with pytest.raises(TsensError, match=r"flat: holds no checkpoint .*e\.g\. \S+flat/\*\.safetensors$"):
        plan_runs([save(tmp_path / "x.safetensors"), flat])
    with pytest.raises(TsensError, match="is a directory but holds no checkpoint tsens reads"):
        tsens.checkpoints.load_network(flat)  # only planning expands a directory
