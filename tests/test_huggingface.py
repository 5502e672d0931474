"""Hugging Face model directories as checkpoints: single and sharded safetensors, pytorch_model.bin
(sharded too), the activation from config.json, and refusals of broken indexes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from clitools import one_line_error, run
from safetensors.torch import save_file
from torch import nn

from tsens.checkpoints import load_network, read_metadata
from tsens.errors import TsensError
from tsens.runs import plan_runs


def _module(seed: int = 0, act: nn.Module | None = None) -> nn.Sequential:
    torch.manual_seed(seed)
    act = act or nn.ReLU()
    return nn.Sequential(nn.Linear(6, 8), act, nn.Linear(8, 7), act, nn.Linear(7, 3)).double().eval()


def _write(directory: Path, module: nn.Module, how: str, config: dict | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    state = {f"model.{k}": v.contiguous() for k, v in module.state_dict().items()}
    if config is not None:
        (directory / "config.json").write_text(json.dumps(config))
    if how == "safetensors":
        save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    elif how == "bin":
        torch.save(state, directory / "pytorch_model.bin")
    else:  # sharded: two shards, tensors split between them
        suffix = ".safetensors" if how == "sharded-safetensors" else ".bin"
        stem = "model" if suffix == ".safetensors" else "pytorch_model"
        keys = sorted(state)
        shards = {f"{stem}-0000{i + 1}-of-00002{suffix}": keys[i::2] for i in range(2)}
        for name, names in shards.items():
            part = {k: state[k] for k in names}
            if suffix == ".safetensors":
                save_file(part, str(directory / name), metadata={"format": "pt"})
            else:
                torch.save(part, directory / name)
        index = {"metadata": {"total_size": 0}, "weight_map": {k: n for n, ks in shards.items() for k in ks}}
        (directory / f"{stem}{suffix}.index.json").write_text(json.dumps(index))
    return directory


@pytest.mark.parametrize("how", ["safetensors", "bin", "sharded-safetensors", "sharded-bin"])
def test_every_layout_loads_exactly(tmp_path, how):
    module = _module(1, nn.LeakyReLU(0.2))
    directory = _write(
        tmp_path / "checkpoint-500", module, how, {"hidden_act": "leaky_relu:0.2", "n_layer": 3}
    )
    net = load_network(directory)
    x = torch.randn(9, 6, dtype=torch.float64)
    torch.testing.assert_close(net.forward(x), module(x).detach(), rtol=1e-12, atol=1e-12)
    assert net.activation.spec == "leaky_relu:0.2" and net.metadata["n_layer"] == "3"
    assert [layer.name for layer in net.layers] == ["0", "2", "4"]
    assert read_metadata(directory) == net.metadata
    assert net.path == str(directory) and len(net.sha256) == 64


def test_config_activation_yields_to_a_given_one_and_hash_follows_the_bytes(tmp_path):
    directory = _write(tmp_path / "m", _module(), "sharded-safetensors", {"activation_function": "relu6"})
    assert load_network(directory).activation.spec == "relu6"
    with pytest.warns(UserWarning, match="differs from the one the checkpoint records"):
        assert load_network(directory, activation="relu").activation.spec == "relu"
    before = load_network(directory).sha256
    other = _module(seed=7)
    state = {f"model.{k}": v.contiguous() for k, v in other.state_dict().items()}
    shard = directory / "model-00002-of-00002.safetensors"
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    save_file({k: state[k] for k, n in index["weight_map"].items() if n == shard.name}, str(shard))
    assert load_network(directory).sha256 != before


def test_a_non_piecewise_activation_in_config_is_refused(tmp_path):
    directory = _write(tmp_path / "gelu", _module(), "safetensors", {"hidden_act": "gelu"})
    with pytest.raises(TsensError, match=r"gelu"):
        load_network(directory)


def test_broken_indexes_are_refused_naming_the_file(tmp_path):
    directory = _write(tmp_path / "m", _module(), "sharded-safetensors")
    index = directory / "model.safetensors.index.json"
    good = json.loads(index.read_text())
    cases = [
        (
            {"weight_map": {**good["weight_map"], "model.0.weight": "../evil.safetensors"}},
            "expected a file name",
        ),
        ({"weight_map": {**good["weight_map"], "model.0.weight": "gone.safetensors"}}, "which is not in"),
        (
            {"weight_map": {**good["weight_map"], "model.9.weight": "model-00001-of-00002.safetensors"}},
            "has no tensor 'model.9.weight'",
        ),
        ({"weight_map": {}}, "'weight_map' is missing or empty"),
        ([1, 2], "expected an object"),
    ]
    for content, message in cases:
        index.write_text(json.dumps(content))
        with pytest.raises(TsensError, match=message) as info:
            load_network(directory)
        assert "\n" not in str(info.value)
    index.write_text("{not json")
    with pytest.raises(TsensError, match="not readable JSON"):
        load_network(directory)


def test_directories_are_checkpoints_on_the_command_line(tmp_path):
    run_dir = tmp_path / "run"
    for step in (1000, 500):
        _write(run_dir / f"checkpoint-{step}", _module(step), "safetensors", {"hidden_act": "relu"})
    refs = plan_runs([run_dir / "checkpoint-1000", run_dir / "checkpoint-500"])
    assert [ref.step for ref in refs] == [500, 1000]
    assert {ref.run for ref in refs} == {str(run_dir)}
    result = run("info", run_dir / "checkpoint-500")
    assert "checkpoint-500" in result.stderr + result.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(run("info", empty, code=2), str(empty), "holds no checkpoint")
