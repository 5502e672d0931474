"""Keras checkpoints: the committed samples written by real Keras 3 and in the PGDL layout
(``scripts/checkpoint_formats/make_keras.py``) give Keras's own float64 outputs; configs give
the activation, layer order and BatchNorm epsilon; files built here with h5py and zipfile
alone cover what Keras would not write, and every refusal is one line."""

from __future__ import annotations

import json
import shutil
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from clitools import one_line_error, run
from nets import refused

from tsens.checkpoints import find_format, load_network, read_metadata, read_weights
from tsens.errors import TsensError

DATA = Path(__file__).parent / "data" / "formats" / "keras"
MLP = "dense,dense_1,dense_2"
BN = "dense,batch_normalization,dense_1,batch_normalization_1,dense_2"
# sample: (outputs, activation, BatchNorm epsilon, layer order)
SAMPLES = {
    "mlp.weights.h5": ("mlp", "relu", None, MLP),
    "mlp.keras": ("mlp", "relu", None, MLP),
    "mlp.h5": ("mlp", "relu", None, MLP),
    "bn.keras": ("bn", "relu", 0.01, BN),
    "nobias.keras": ("nobias", "relu", 1e-3, "dense,batch_normalization,dense_1"),
    "leaky.keras": ("leaky", "leaky_relu:0.1", None, "hidden_a,hidden_b,logits"),
    "softmax.keras": ("softmax", "relu6", None, MLP),
    "pgdl/model_3": ("pgdl", "relu", 1e-3, "dense,batch_normalization,dense_1,dense_2"),
}
NOT_H5 = "not a readable Keras HDF5 file"


def outputs(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    expected = np.load(DATA / f"{name}.npz")
    return torch.from_numpy(expected["x"]), torch.from_numpy(expected["y"])


def archive(path: Path, config: dict | None = None, source: str = "mlp.keras", **members: bytes) -> Path:
    """A copy of a sample .keras archive, with its config (and any member) replaced."""
    with zipfile.ZipFile(DATA / source) as z:
        contents = {info.filename: z.read(info) for info in z.infolist()}
    if config is not None:
        contents["config.json"] = json.dumps(config).encode()
    contents.update(members)
    with zipfile.ZipFile(path, "w") as z:
        for name, data in contents.items():
            z.writestr(name, data)
    return path


def sample_config(source: str = "mlp.keras") -> dict:
    with zipfile.ZipFile(DATA / source) as z:
        return json.loads(z.read("config.json"))


def keras3_file(path: Path, layers: dict[str, list[np.ndarray]]) -> Path:
    """A Keras 3 weights file: ``layers/<key>/vars/<i>`` in the given order."""
    with h5py.File(path, "w") as f:
        for key, arrays in layers.items():
            group = f.create_group(f"layers/{key}/vars")
            for i, a in enumerate(arrays):
                group.create_dataset(str(i), data=a)
    return path


def pgdl_dir(tmp_path: Path, edit: dict[int, dict | None]) -> Path:
    """A copy of the PGDL sample (Flatten, Dense 7, BatchNormalization, Activation relu,
    Dropout, Dense 6 relu, Dense 3) with the entries ``edit`` names replaced (None: removed)."""
    directory = tmp_path / "model_3"
    shutil.copytree(DATA / "pgdl" / "model_3", directory)
    config = json.loads((directory / "config.json").read_text())
    layers = dict(enumerate(config["model_config"])) | edit
    config["model_config"] = [layer for _, layer in sorted(layers.items()) if layer is not None]
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def legacy_file(path: Path, layers: dict[str, dict[str, np.ndarray]], config: dict | None = None) -> Path:
    """A Keras 2 HDF5 file: ``model_weights`` lists ``layer_names``, each group its
    ``weight_names`` (``<layer>/<variable>:0``); ``config`` goes into ``model_config``."""
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.11.0"
        if config is not None:
            f.attrs["model_config"] = json.dumps(config).encode()
        root = f.create_group("model_weights")
        root.attrs["layer_names"] = np.array([name.encode() for name in layers])
        for name, variables in layers.items():
            group = root.create_group(name)
            group.attrs["weight_names"] = np.array([f"{name}/{v}:0".encode() for v in variables])
            for v, a in variables.items():
                group.create_dataset(f"{name}/{v}:0", data=a)
    return path


def rng_dense(rng: np.random.Generator, n_in: int, n_out: int) -> dict[str, np.ndarray]:
    return {"kernel": rng.normal(size=(n_in, n_out)), "bias": rng.normal(size=n_out)}


# --- the samples ---------------------------------------------------------------------------


@pytest.mark.parametrize("sample", SAMPLES)
def test_sample_gives_keras_outputs(sample):
    name, activation, eps, order = SAMPLES[sample]
    network = load_network(DATA / sample)
    x, y = outputs(name)
    torch.testing.assert_close(network.forward(x), y, rtol=0, atol=1e-10)
    assert network.activation.spec == activation
    assert network.metadata["tsens.layers"] == order
    assert {layer.norm.eps for layer in network.layers if layer.norm} == ({eps} if eps else set())
    recorded = None if sample.endswith(".weights.h5") else activation  # no config, no record
    assert network.metadata.get("tsens.activation") == recorded
    assert read_metadata(DATA / sample) == network.metadata


def test_softmax_output_is_recorded_and_read_as_logits():
    network = load_network(DATA / "softmax.keras")
    assert network.metadata["keras.output_activation"] == "softmax"
    x, _ = outputs("softmax")
    probs = torch.from_numpy(np.load(DATA / "softmax.npz")["probs"])
    torch.testing.assert_close(torch.softmax(network.forward(x), dim=1), probs, rtol=0, atol=1e-12)


def test_weights_only_file_matches_the_archive():
    """``bn.weights.h5`` has the archive's tensors and order but not its epsilon: Keras's 1e-3."""
    alone, full = read_weights(DATA / "bn.weights.h5"), read_weights(DATA / "bn.keras")
    assert alone.tensors.keys() == full.tensors.keys()
    for key, t in full.tensors.items():
        assert torch.equal(alone.tensors[key], t), key
    assert alone.metadata == {"tsens.layers": BN, "tsens.bn_eps": "0.001"}
    assert full.metadata["tsens.bn_eps"] == "0.01"


def test_batchnorm_without_center_gets_zero_beta():
    layer = load_network(DATA / "nobias.keras").layers[0]
    assert layer.bias is None and layer.norm is not None
    assert layer.norm.weight is not None and not torch.equal(
        layer.norm.weight, torch.ones(7, dtype=torch.float64)
    )
    assert torch.equal(layer.norm.bias, torch.zeros(7, dtype=torch.float64))


def test_pgdl_metadata_and_weights_alone():
    directory = DATA / "pgdl" / "model_3"
    meta = read_metadata(directory)
    assert meta["keras_version"] == "2.4.0" and meta["pgdl.input_shape"] == "[5]"
    assert (meta["pgdl.num_units"], meta["pgdl.dropout"], meta["pgdl.batchnorm"]) == ("7", "0.1", "true")
    assert (meta["pgdl.train_acc"], meta["pgdl.test_acc"]) == ("0.91", "0.87")
    assert find_format(directory).name == "PGDL directory"
    assert find_format(DATA / "mlp.weights.h5").name == "Keras HDF5"
    # weights.hdf5 alone is a Keras 2 save_weights file: its order, no activation record
    network = load_network(directory / "weights.hdf5")
    x, y = outputs("pgdl")
    torch.testing.assert_close(network.forward(x), y, rtol=0, atol=1e-10)
    assert "tsens.activation" not in network.metadata


def test_pgdl_claims_only_a_directory_with_both_files(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(TsensError, match="holds no checkpoint"):
        find_format(tmp_path)
    shutil.copy(DATA / "pgdl" / "model_3" / "weights.hdf5", tmp_path)
    assert find_format(tmp_path).name == "PGDL directory"


def test_activations_from_configs(tmp_path):
    config = sample_config()
    hidden = [layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense"][:-1]
    for act, spec in (
        ("hard_sigmoid", "hardsigmoid"),
        ("hard_tanh", "hardtanh"),
        ("leaky_relu", "leaky_relu:0.2"),
    ):
        for layer in hidden:
            layer["config"]["activation"] = act
        assert load_network(archive(tmp_path / f"{act}.keras", config)).activation.spec == spec
    relu6 = {
        3: {"layer_name": "ReLU", "max_value": 6.0},
        5: {"layer_name": "Dense", "units": 6, "activation": "relu6"},
    }
    assert load_network(pgdl_dir(tmp_path / "relu6", relu6)).activation.spec == "relu6"


def test_keras2_legacy_functional_config(tmp_path):
    """A Keras 2 ``model.save`` file: Functional config with Keras 2 inbound nodes, LeakyReLU
    layers with ``alpha``, weights under ``model_weights``."""
    rng = np.random.default_rng(0)

    def layer(cls: str, name: str, source: str | None, **config) -> dict:
        inbound = [[[source, 0, 0, {}]]] if source else []
        return {"class_name": cls, "name": name, "config": {"name": name, **config}, "inbound_nodes": inbound}

    layers = [
        layer("InputLayer", "input_1", None),
        layer("Dense", "fc1", "input_1", units=4),
        layer("LeakyReLU", "act1", "fc1", alpha=0.25),
        layer("Dense", "fc2", "act1", units=2, use_bias=False),
    ]
    config = {"class_name": "Functional", "config": {"layers": layers, "output_layers": [["fc2", 0, 0]]}}
    weights = {
        "input_1": {},
        "fc1": rng_dense(rng, 3, 4),
        "act1": {},
        "fc2": {"kernel": rng.normal(size=(4, 2))},
    }
    path = legacy_file(tmp_path / "model.h5", weights, config)
    network = load_network(path)
    assert network.activation.spec == "leaky_relu:0.25" and network.metadata["keras_version"] == "2.11.0"
    x = torch.from_numpy(rng.normal(size=(6, 3)))
    h = torch.nn.functional.leaky_relu(
        x @ torch.from_numpy(weights["fc1"]["kernel"]) + torch.from_numpy(weights["fc1"]["bias"]), 0.25
    )
    torch.testing.assert_close(
        network.forward(x), h @ torch.from_numpy(weights["fc2"]["kernel"]), rtol=0, atol=1e-12
    )
    # a branch is no chain
    layers[3]["inbound_nodes"] = [[["fc1", 0, 0, {}], ["act1", 0, 0, {}]]]
    refused(legacy_file(tmp_path / "branch.h5", weights, config), "'fc2'", "fc1, act1", "single chain")


def test_order_without_offsets(tmp_path):
    """Chunked variables have no file offset: one class is ordered by its keys' numbers (dense_10
    after dense_2); Dense and BatchNormalization together need `layers`."""
    rng = np.random.default_rng(1)
    path = tmp_path / "chunked.weights.h5"
    with h5py.File(path, "w") as f:
        for key, (n_in, n_out) in {"dense_10": (3, 2), "dense": (5, 4), "dense_2": (4, 3)}.items():
            group = f.create_group(f"layers/{key}/vars")
            group.create_dataset("0", data=rng.normal(size=(n_in, n_out)), chunks=True)
            group.create_dataset("1", data=rng.normal(size=n_out), chunks=True)
    assert load_network(path).metadata["tsens.layers"] == "dense,dense_2,dense_10"
    with h5py.File(path, "a") as f:
        group = f.create_group("layers/batch_normalization/vars")
        for i in range(4):
            group.create_dataset(str(i), data=rng.uniform(0.5, 1.5, size=4), chunks=True)
    refused(path, "cannot order layers")
    assert load_network(path, layers=["dense", "batch_normalization", "dense_2", "dense_10"]).depth == 3


# --- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        (
            {3: {"layer_name": "Activation", "activation": "tanh"}},
            ("model_config[3]", "'tanh'", "piecewise-linear"),
        ),
        ({0: {"layer_name": "Conv2D", "filters": 4, "kernel_size": [3, 3]}}, ("model_config[0]", "Conv2D")),
        (
            {
                3: {"layer_name": "Activation", "activation": "hard_sigmoid"},
                5: {"layer_name": "Dense", "units": 6, "activation": "hard_sigmoid"},
            },
            ("hard_sigmoid", "0.2*x"),
        ),
        (
            {1: {"layer_name": "Dense", "units": 7, "activation": "relu"}, 3: None},
            ("'model_config[2]'", "BatchNormalization", "follows the activation (relu) of 'model_config[1]'"),
        ),
        ({3: None}, ("'model_config[1]'", "no activation")),
        (
            {6: {"layer_name": "Dense", "units": 3, "activation": "relu"}},
            ("output layer", "'model_config[6]'", "linear or softmax"),
        ),
        (
            {4: {"layer_name": "Dense", "units": 5, "activation": "relu"}},
            ("config.json lists 5 layers with weights", "holds 4"),
        ),
    ],
)
def test_pgdl_config_refusals(tmp_path, edit, fragments):
    refused(pgdl_dir(tmp_path, edit), *fragments)


def test_keras_config_refusals(tmp_path):
    config = sample_config()
    config["config"]["layers"][2]["config"]["activation"] = "relu6"
    refused(archive(tmp_path / "mixed.keras", config), "'dense'", "(relu)", "'dense_1'", "(relu6)")
    config = sample_config("bn.keras")
    bn = [layer for layer in config["config"]["layers"] if layer["class_name"] == "BatchNormalization"]
    bn[1]["config"]["epsilon"] = 0.001
    refused(
        archive(tmp_path / "eps.keras", config, "bn.keras"),
        "'batch_normalization_1'",
        "epsilon 0.001",
        "0.01",
    )
    config = sample_config()
    config["config"]["layers"].insert(1, {"class_name": "Conv2D", "config": {"name": "conv"}})
    refused(archive(tmp_path / "conv.keras", config), "'conv'", "Conv2D")
    refused(
        archive(tmp_path / "sub.keras", {"class_name": "MyModel", "config": {}}), "(MyModel)", "no layers"
    )
    config = sample_config("leaky.keras")
    logits = config["config"]["layers"][-1]
    logits["inbound_nodes"][0]["args"][0]["config"]["keras_history"] = ["input_layer", 0, 0]
    refused(
        archive(tmp_path / "skip.keras", config, "leaky.keras"), "'logits'", "input_layer", "single chain"
    )
    config = sample_config()
    config["config"]["layers"][1]["config"]["units"] = 8
    refused(archive(tmp_path / "units.keras", config), "'dense'", "(5, 7)", "8 units")


@pytest.mark.parametrize("suffix", [".h5", ".weights.h5", ".keras", ".hdf5"])
def test_truncated_random_and_empty_files(tmp_path, suffix):
    source = DATA / ("mlp.keras" if suffix == ".keras" else "mlp.h5")
    what = "not a readable .keras archive" if suffix == ".keras" else NOT_H5
    truncated = tmp_path / f"truncated{suffix}"
    truncated.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    refused(truncated, what)
    junk = tmp_path / f"junk{suffix}"
    junk.write_bytes(np.random.default_rng(7).bytes(4096))
    refused(junk, what)
    empty = tmp_path / f"empty{suffix}"
    empty.write_bytes(b"")
    refused(empty, "empty")


def test_archive_refusals(tmp_path):
    path = tmp_path / "nowts.keras"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", json.dumps(sample_config()))
    refused(path, "no model.weights.h5")
    refused(
        archive(tmp_path / "junk.keras", **{"model.weights.h5": b"\0" * 1024}), NOT_H5, "model.weights.h5"
    )
    refused(
        archive(tmp_path / "json.keras", **{"config.json": b"{not json"}), "config.json is not readable JSON"
    )
    # a member declaring 3 GiB (the central directory patched): refused before it is read
    bomb = archive(tmp_path / "bomb.keras")
    data = bytearray(bomb.read_bytes())
    entry = data.rindex(b"model.weights.h5") - 46  # its central directory entry
    assert data[entry : entry + 4] == b"PK\x01\x02"
    data[entry + 24 : entry + 28] = (3 << 30).to_bytes(4, "little")
    bomb.write_bytes(bytes(data))
    refused(bomb, "model.weights.h5", "3,221,225,472 bytes")


def test_weights_file_refusals(tmp_path):
    rng = np.random.default_rng(2)
    conv = {"conv2d": [rng.normal(size=(3, 3, 1, 4)), rng.normal(size=4)], "dense": [rng.normal(size=(4, 2))]}
    refused(
        keras3_file(tmp_path / "conv.weights.h5", conv),
        "'conv2d'",
        "conv2d layer",
        "Dense, BatchNormalization",
    )
    legacy_conv = {"conv2d": {"kernel": rng.normal(size=(3, 3, 1, 4))}, "dense": rng_dense(rng, 4, 2)}
    refused(legacy_file(tmp_path / "conv.h5", legacy_conv), "'conv2d'", "4-D kernel", "convolution")
    three = {"dense": [rng.normal(size=(5, 4))], "batch_normalization": [rng.normal(size=4)] * 3}
    refused(keras3_file(tmp_path / "bn3.weights.h5", three), "'batch_normalization'", "3 variables", ".keras")
    ints = {"dense": [np.ones((5, 4), dtype=np.int32)]}
    refused(keras3_file(tmp_path / "int.weights.h5", ints), "'dense/kernel'", "int32")
    path = tmp_path / "nested.weights.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("layers/sequential/layers/dense/vars/0", data=np.ones((2, 2)))
    refused(path, "layers/sequential", "nested model")
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f.create_dataset("x", data=np.ones(3))
    refused(tmp_path / "plain.h5", "holds no Keras weights")


def test_huge_declared_dataset_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.weights.h5"
    with h5py.File(path, "w") as f:  # 80 GB declared, nothing stored
        f.create_dataset("layers/dense/vars/0", shape=(100_000, 100_000), dtype="f8")
    assert path.stat().st_size < 10_000
    refused(path, "'dense/kernel'", "(100000, 100000)", "more than the file can hold")


def test_missing_h5py(monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)
    for sample in ("mlp.h5", "mlp.keras", "pgdl/model_3"):
        refused(DATA / sample, "h5py", "pip install 'tsens[keras]'")


def test_cli_info_and_corrupt_file(tmp_path):
    assert "dense_1" in run("info", DATA / "bn.keras").output
    run("info", DATA / "pgdl" / "model_3")
    path = tmp_path / "broken.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(200))
    one_line_error(run("info", path, code=2), str(path), NOT_H5)


@pytest.mark.parametrize("sample", ["mlp.h5", "mlp.weights.h5", "mlp.keras"])
def test_corrupted_bytes_load_or_refuse(tmp_path, sample):
    """Overwritten bytes anywhere: the file loads (they were padding) or is refused in one line."""
    data, rng = (DATA / sample).read_bytes(), np.random.default_rng(sum(map(ord, sample)))
    for i in range(12):
        corrupt = bytearray(data)
        for j in rng.integers(0, len(data), size=rng.integers(1, 8)):
            corrupt[j] = int(rng.integers(0, 256))
        path = tmp_path / f"{i}-{sample}"
        path.write_bytes(bytes(corrupt))
        try:
            load_network(path)
        except TsensError as e:
            assert "\n" not in str(e) and str(e).startswith(str(path))
