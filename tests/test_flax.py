"""Flax msgpack checkpoints (``flax.serialization.to_bytes``): the committed samples written by
real flax (``scripts/checkpoint_formats/make_flax.py``) give flax's own outputs; layouts built
here with msgpack alone (chunked arrays, key orders); malformed files are refused in one line
without allocating what their headers claim."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import msgpack
import numpy as np
import pytest
import torch
from clitools import one_line_error, run
from hypothesis import given, settings
from hypothesis import strategies as st
from nets import refused

from tsens.checkpoints import find_format, load_network, read_metadata
from tsens.errors import TsensError

DATA = Path(__file__).parent / "data" / "formats" / "flax"
NESTED = [f"MLP_0.Dense_{i}" for i in range(11)]
BN_ORDER = "Dense_0,Dense_1,BatchNorm_0,Dense_2,Dense_3"
# name: (activation, layer names, widths, metadata)
SAMPLES = {
    "relu": ("relu", ["Dense_0", "Dense_1", "Dense_2"], (5, 7, 6, 3), {}),
    "batchnorm": (
        "relu",
        ["Dense_0", "Dense_1", "Dense_2", "Dense_3"],
        (5, 7, 6, 4, 3),
        {"tsens.layers": BN_ORDER},
    ),
    "batchnorm-trained": (
        "relu",
        ["Dense_0", "Dense_1", "Dense_2", "Dense_3"],
        (5, 7, 6, 4, 3),
        {"step": "120", "tsens.layers": BN_ORDER},
    ),
    "nobias": ("relu", ["Dense_0", "Dense_1", "Dense_2"], (5, 7, 6, 3), {}),
    "leaky": ("leaky_relu", ["layers_0", "layers_3", "layers_6"], (5, 7, 6, 3), {"step": "0"}),
    "nested": ("relu", NESTED, (5, *[6] * 10, 3), {}),
}
NOT_READABLE = "not a readable Flax msgpack checkpoint"


def array(
    a: np.ndarray, *, dtype: str | None = None, shape: tuple[int, ...] | None = None
) -> msgpack.ExtType:
    """An array as flax packs it (ExtType 1 of msgpack (shape, dtype name, bytes)); ``dtype`` and
    ``shape`` override the header."""
    header = (shape or a.shape, dtype or a.dtype.name, a.tobytes("C"))
    return msgpack.ExtType(1, msgpack.packb(header, use_bin_type=True))


def dense(rng: np.random.Generator, n_in: int, n_out: int) -> dict[str, msgpack.ExtType]:
    return {"kernel": array(rng.normal(size=(n_in, n_out))), "bias": array(rng.normal(size=n_out))}


def batchnorm(
    rng: np.random.Generator, n: int
) -> tuple[dict[str, msgpack.ExtType], dict[str, msgpack.ExtType]]:
    params = {"scale": array(rng.uniform(0.5, 1.5, n)), "bias": array(rng.normal(size=n))}
    return params, {"mean": array(rng.normal(size=n)), "var": array(rng.uniform(0.5, 2, n))}


def write(path: Path, obj: object) -> Path:
    path.write_bytes(msgpack.packb(obj, use_bin_type=True))
    return path


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sample_gives_flax_outputs(name):
    activation, names, widths, metadata = SAMPLES[name]
    path = DATA / f"{name}.msgpack"
    expected = np.load(DATA / f"{name}.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net = load_network(path, activation=activation)
    out = net.forward(torch.from_numpy(expected["x"])).numpy()
    np.testing.assert_allclose(out, expected["y"], rtol=1e-10, atol=1e-10)
    assert [layer.name for layer in net.layers] == names
    assert tuple(net.widths) == widths
    assert read_metadata(path) == metadata == net.metadata
    assert find_format(path).name == "Flax msgpack" and find_format(path).extra == "flax"


def test_batchnorm_and_bias_flags():
    bn = load_network(DATA / "batchnorm.msgpack")
    assert [layer.norm is not None for layer in bn.layers] == [False, True, False, False]
    assert all(layer.bias is None for layer in load_network(DATA / "nobias.msgpack").layers)
    leaky = load_network(DATA / "leaky.msgpack", activation="leaky_relu")
    assert [layer.norm is not None for layer in leaky.layers] == [True, True, False]


def test_params_alone_variables_and_nested_train_state_agree(tmp_path):
    rng = np.random.default_rng(0)
    params = {"Dense_0": dense(rng, 4, 3), "Dense_1": dense(rng, 3, 2)}
    x = torch.randn(5, 4, dtype=torch.float64)
    outs = []
    for i, obj in enumerate(
        [
            params,
            {"params": params},
            {"step": 3, "params": {"params": params}, "opt_state": {"0": {"mu": params}}},
        ]
    ):
        outs.append(load_network(write(tmp_path / f"{i}.msgpack", obj)).forward(x))
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
    kernel = np.frombuffer(msgpack.unpackb(params["Dense_0"]["kernel"].data)[2])
    assert np.array_equal(
        load_network(tmp_path / "0.msgpack").layers[0].weight.numpy(), kernel.reshape(4, 3).T
    )


def test_scalar_metadata_and_recorded_settings(tmp_path):
    rng = np.random.default_rng(1)
    obj = {
        "step": array(np.array(7, dtype=np.int64)),
        "lr": 0.5,
        "tsens.activation": "hardtanh",
        "tsens.bn_eps": 1e-3,
        "params": {"Dense_0": dense(rng, 3, 2)},
    }
    path = write(tmp_path / "m.flax", obj)
    meta = read_metadata(path)
    assert meta == {"step": "7", "lr": "0.5", "tsens.activation": "hardtanh", "tsens.bn_eps": "0.001"}
    assert load_network(path).activation.spec == "hardtanh"


def test_order_from_the_shapes_when_the_keys_are_sorted(tmp_path):
    rng = np.random.default_rng(2)
    bn_p, bn_s = batchnorm(rng, 6)
    # compact: Dense_0 (4→5), Dense_1 (5→6), BatchNorm_0 (6), Dense_2 (6→2); keys sorted as after jax.tree.map
    params = {
        "BatchNorm_0": bn_p,
        "Dense_0": dense(rng, 4, 5),
        "Dense_1": dense(rng, 5, 6),
        "Dense_2": dense(rng, 6, 2),
    }
    net = load_network(
        write(tmp_path / "s.msgpack", {"params": params, "batch_stats": {"BatchNorm_0": bn_s}})
    )
    assert net.metadata["tsens.layers"] == "Dense_0,Dense_1,BatchNorm_0,Dense_2"
    assert [layer.norm is not None for layer in net.layers] == [False, True, False]


def test_file_order_wins_and_ambiguity_warns(tmp_path):
    rng = np.random.default_rng(3)
    bn_p, bn_s = batchnorm(rng, 6)
    d0, d1, d2 = dense(rng, 6, 6), dense(rng, 6, 6), dense(rng, 6, 2)
    created = {"Dense_0": d0, "Dense_1": d1, "BatchNorm_0": bn_p, "Dense_2": d2}
    net = load_network(
        write(tmp_path / "c.msgpack", {"params": created, "batch_stats": {"BatchNorm_0": bn_s}})
    )
    assert [layer.norm is not None for layer in net.layers] == [False, True, False]
    sorted_keys = {"BatchNorm_0": bn_p, "Dense_0": d0, "Dense_1": d1, "Dense_2": d2}
    path = write(tmp_path / "a.msgpack", {"params": sorted_keys, "batch_stats": {"BatchNorm_0": bn_s}})
    with pytest.warns(UserWarning, match="several placements fit"):
        net = load_network(path)
    assert [layer.norm is not None for layer in net.layers] == [True, False, False]
    with pytest.warns(UserWarning, match="unless `layers` is given"):
        net = load_network(path, layers=list(created))
    assert [layer.norm is not None for layer in net.layers] == [False, True, False]


def test_batchnorm_without_bias_or_scale(tmp_path):
    rng = np.random.default_rng(4)
    bn_p, bn_s = batchnorm(rng, 3)
    params = {
        "layers_0": dense(rng, 2, 3),
        "layers_1": {"scale": bn_p["scale"]},
        "layers_3": dense(rng, 3, 1),
    }
    net = load_network(write(tmp_path / "b.msgpack", {"params": params, "batch_stats": {"layers_1": bn_s}}))
    norm = net.layers[0].norm
    assert norm is not None and torch.equal(norm.bias, torch.zeros(3, dtype=torch.float64))
    params["layers_1"] = {}
    net = load_network(write(tmp_path / "c.msgpack", {"params": params, "batch_stats": {"layers_1": bn_s}}))
    assert net.layers[0].norm is not None


def test_chunked_array(tmp_path):
    rng = np.random.default_rng(5)
    kernel = rng.normal(size=(4, 3))
    flat = kernel.reshape(-1)
    chunked = {
        "__msgpack_chunked_array__": True,
        "shape": {"0": 4, "1": 3},
        "chunks": {"0": array(flat[:5]), "1": array(flat[5:10]), "2": array(flat[10:])},
    }
    net = load_network(write(tmp_path / "k.msgpack", {"params": {"Dense_0": {"kernel": chunked}}}))
    assert np.array_equal(net.layers[0].weight.numpy(), kernel.T)
    chunked["shape"] = {"0": 10**6, "1": 10**6}
    refused(
        write(tmp_path / "h.msgpack", {"params": {"Dense_0": {"kernel": chunked}}}), NOT_READABLE, "needs"
    )


def test_truncated_random_and_trailing_bytes(tmp_path):
    blob = (DATA / "batchnorm.msgpack").read_bytes()
    (tmp_path / "t.msgpack").write_bytes(blob[:-7])
    refused(tmp_path / "t.msgpack", NOT_READABLE, "truncated")
    (tmp_path / "r.msgpack").write_bytes(np.random.default_rng(0).bytes(500))
    refused(tmp_path / "r.msgpack", NOT_READABLE)
    (tmp_path / "x.msgpack").write_bytes(blob + b"\x00")
    refused(tmp_path / "x.msgpack", NOT_READABLE, "after the end")
    refused(write(tmp_path / "l.msgpack", [1, 2]), NOT_READABLE, "expected a map of variables")


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        ({"shape": (10**6, 10**6)}, "needs 4000000000000 bytes but 24 are stored"),
        ({"shape": (2**62, 2**62, 2**62)}, "needs"),
        ({"shape": (-1, 6)}, "is not made of sizes"),
        ({"dtype": "float8_e4m3fn"}, "has dtype 'float8_e4m3fn'; expected one of float16"),
        ({"dtype": "object"}, "has dtype 'object'"),
        ({"dtype": "complex64"}, "complex64 numbers"),
    ],
)
def test_bad_array_headers(tmp_path, header, fragment):
    kernel = array(np.zeros((2, 3), np.float32), **header)
    path = write(tmp_path / "a.msgpack", {"params": {"Dense_0": {"kernel": kernel}}})
    assert "params/Dense_0/kernel" in refused(path, NOT_READABLE, fragment)


def test_other_refusals(tmp_path):
    ok = array(np.zeros((2, 3)))
    conv = {"params": {"Conv_0": {"kernel": array(np.zeros((3, 3, 2, 4)))}}}
    refused(write(tmp_path / "c.msgpack", conv), "params/Conv_0/kernel is a 4-D kernel", "fully connected")
    complex_scalar = msgpack.ExtType(2, msgpack.packb((1.0, 2.0)))
    refused(write(tmp_path / "z.msgpack", {"params": {"Dense_0": {"kernel": complex_scalar}}}), "complex")
    refused(
        write(tmp_path / "s.msgpack", {"params": {"Dense_0": {"kernel": "w"}}}), NOT_READABLE, "holds a str"
    )
    refused(
        write(tmp_path / "e.msgpack", {"params": {"Dense_0": {"kernel": msgpack.ExtType(1, b"\xc1")}}}),
        "header",
    )
    deep: dict[str, object] = {"kernel": ok}
    for _ in range(100):
        deep = {"m": deep}
    refused(write(tmp_path / "d.msgpack", {"params": deep}), NOT_READABLE, "nested deeper")
    ln = {"params": {"Dense_0": {"kernel": ok}, "LayerNorm_0": {"scale": array(np.ones(3))}}}
    refused(write(tmp_path / "n.msgpack", ln), "LayerNorm")
    refused(
        write(tmp_path / "i.msgpack", {"params": {"Dense_0": {"kernel": array(np.zeros((2, 3), np.int32))}}}),
        "int32",
    )


def test_huge_header_is_refused_without_allocating(tmp_path):
    tracemalloc = pytest.importorskip("tracemalloc")
    kernel = array(np.zeros(3, np.float64), shape=(10**9, 10**3))
    path = write(tmp_path / "big.msgpack", {"params": {"Dense_0": {"kernel": kernel}}})
    tracemalloc.start()
    refused(path, NOT_READABLE, "needs 8000000000000 bytes")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 10 << 20


def test_missing_msgpack(monkeypatch):
    monkeypatch.setitem(sys.modules, "msgpack", None)
    path = DATA / "relu.msgpack"
    with pytest.raises(TsensError) as info:
        load_network(path)
    assert str(info.value) == (
        f"{path}: reading Flax checkpoints needs the msgpack package: pip install 'tsens[flax]'"
    )


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_corrupted_bytes_load_or_refuse(tmp_path_factory, data):
    blob = bytearray((DATA / "batchnorm-trained.msgpack").read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    path = tmp_path_factory.mktemp("fuzz") / "f.msgpack"
    path.write_bytes(bytes(blob[: data.draw(st.integers(1, len(blob)))]))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load_network(path)
    except TsensError as e:
        assert "\n" not in str(e) and str(e).startswith(str(path))


def test_cli_info():
    result = run("info", DATA / "leaky.msgpack", "--activation", "leaky_relu")
    assert "layers_3" in result.output


def test_cli_corrupt(tmp_path):
    path = tmp_path / "bad.msgpack"
    path.write_bytes((DATA / "relu.msgpack").read_bytes()[:100])
    one_line_error(run("info", path, code=2), str(path), NOT_READABLE)
