"""ONNX models: the committed exports (``scripts/checkpoint_formats/make_onnx.py``, both torch
exporters and hand-built graphs) load and compute what torch and onnxruntime computed; graphs
that are not MLPs, corrupt files and a missing ``onnx`` package are refused in one line."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from clitools import one_line_error, run

from tsens.checkpoints import load_network, read_metadata
from tsens.errors import TsensError

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

DATA = Path(__file__).parent / "data" / "formats" / "onnx"
SAMPLES = sorted(DATA.glob("*.onnx"))
# The dynamo exporter folds BatchNorm into the Gemm in float32: the graph's weights are not the
# torch module's, so only onnxruntime's outputs on the graph are the reference.
FOLDED = {"batchnorm_dynamo_f32"}
SPECS = {  # sample → the activation it records
    "relu_classic_f64": "relu",
    "relu_dynamo_f64": "relu",
    "leaky_relu_classic_f32": "leaky_relu:0.1",
    "leaky_relu_dynamo_f32": "leaky_relu:0.1",
    "relu6_classic_f32": "relu6",
    "relu6_dynamo_f32": "relu6",
    "hardtanh_classic_opset10_f32": "hardtanh",
    "hardsigmoid_softmax_dynamo_f32": "hardsigmoid",
    "batchnorm_classic_f32": "relu",
    "batchnorm_dynamo_f32": "relu",
    "handmade_batchnorm_f64": "relu",
    "handmade_matmul_add_logsoftmax_f32": "hardsigmoid",
}


def _expected(sample: Path) -> dict[str, np.ndarray]:
    with np.load(sample.with_suffix(".npz")) as data:
        return dict(data)


def test_every_sample_is_committed_with_its_reference():
    assert sorted(p.stem for p in SAMPLES) == sorted(SPECS)
    for sample in SAMPLES:
        assert sample.with_suffix(".npz").is_file(), sample
        assert sample.stat().st_size < 16_000, sample


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.stem)
def test_samples_compute_what_torch_and_onnxruntime_computed(sample):
    network = load_network(sample)
    expected = _expected(sample)
    x = torch.from_numpy(expected["x"].reshape(len(expected["x"]), -1))
    logits = network.forward(x)
    assert logits.dtype == torch.float64
    if sample.stem not in FOLDED:
        torch.testing.assert_close(logits, torch.from_numpy(expected["y"]), rtol=1e-10, atol=1e-10)
    dropped = network.metadata.get("onnx.dropped", "")
    head = "(LogSoftmax)" if "(LogSoftmax)" in dropped else "(Softmax)" if "(Softmax)" in dropped else ""
    out = {"(LogSoftmax)": torch.log_softmax, "(Softmax)": torch.softmax}.get(head, lambda z, dim: z)(
        logits, -1
    )
    assert ("softmax" in sample.stem) == bool(head)
    ran = torch.from_numpy(expected["onnxruntime"]).double()
    tol = 1e-9 if sample.stem.endswith("f64") else 1e-5
    torch.testing.assert_close(out, ran, rtol=tol, atol=tol)
    assert network.activation.spec == SPECS[sample.stem]


def test_metadata_names_the_layers_activation_epsilon_and_producer():
    meta = read_metadata(DATA / "batchnorm_classic_f32.onnx")
    assert meta == load_network(DATA / "batchnorm_classic_f32.onnx").metadata
    assert meta["tsens.layers"] == "fc0,bn0,fc1,bn1,fc2"
    assert meta["tsens.activation"] == "relu" and meta["tsens.bn_eps"] == "0.001"
    assert meta["onnx.producer_name"] == "pytorch" and meta["onnx.opset"] == "20"
    hand = read_metadata(DATA / "handmade_batchnorm_f64.onnx")
    assert hand["author"] == "tsens tests" and hand["onnx.producer_name"] == "tsens make_onnx.py"
    head = read_metadata(DATA / "hardsigmoid_softmax_dynamo_f32.onnx")
    assert "(Softmax) at the output; tsens works on the logits" in head["onnx.dropped"]


def test_gemm_alpha_and_beta_are_folded_into_the_weights():
    network = load_network(DATA / "handmade_batchnorm_f64.onnx")
    graph = onnx.load(str(DATA / "handmade_batchnorm_f64.onnx")).graph
    tensors = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    first = network.layers[0]
    np.testing.assert_array_equal(first.weight.numpy(), 0.5 * tensors["w1"].T)
    np.testing.assert_array_equal(first.bias.numpy(), 2.0 * tensors["b1"])
    assert first.norm is not None and first.norm.eps == 1e-3


# --- refusals of graphs that are not MLPs -----------------------------------------------------


def _init(name: str, shape: tuple[int, ...], seed: int = 0) -> TensorProto:
    return numpy_helper.from_array(np.random.default_rng(seed).normal(size=shape).astype(np.float32), name)


def _save(path: Path, nodes, inits, *, inputs=("x",), width: int = 4, opset: int = 17) -> Path:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(i, TensorProto.FLOAT, ["batch", width]) for i in inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _two_layers(act: list) -> tuple[list, list]:
    """Gemm → act nodes → Gemm: input x (4) → h (3) → y (2)."""
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1)]
    nodes += act
    last = act[-1].output[0] if act else "h"
    nodes.append(helper.make_node("Gemm", [last, "w2", "b2"], ["y"], name="fc2", transB=1))
    inits = [_init("w1", (3, 4)), _init("b1", (3,)), _init("w2", (2, 3)), _init("b2", (2,))]
    return nodes, inits


def _refused(path: Path, *fragments: str) -> str:
    with pytest.raises(TsensError) as e:
        load_network(path)
    text = str(e.value)
    assert text.startswith(f"{path}: ") and "\n" not in text, text
    for fragment in fragments:
        assert fragment in text, (fragment, text)
    return text


def test_a_graph_with_each_supported_activation_loads(tmp_path):
    cases = {
        "relu": helper.make_node("Relu", ["h"], ["a"]),
        "leaky_relu:0.25": helper.make_node("LeakyRelu", ["h"], ["a"], alpha=0.25),
        "hardsigmoid": helper.make_node("HardSigmoid", ["h"], ["a"], alpha=1 / 6, beta=0.5),
    }
    for spec, node in cases.items():
        nodes, inits = _two_layers([node])
        assert load_network(_save(tmp_path / "a.onnx", nodes, inits)).activation.spec == spec
    clip_nodes, inits = _two_layers([helper.make_node("Clip", ["h", "lo", "hi"], ["a"])])
    for low, high, spec in ((0, 6, "relu6"), (-1, 1, "hardtanh")):
        bounds = [numpy_helper.from_array(np.float32(v), n) for v, n in ((low, "lo"), (high, "hi"))]
        path = _save(tmp_path / "clip.onnx", clip_nodes, inits + bounds)
        assert load_network(path).activation.spec == spec
    old, inits = _two_layers([helper.make_node("Clip", ["h"], ["a"], min=0.0, max=6.0)])
    assert load_network(_save(tmp_path / "old.onnx", old, inits, opset=10)).activation.spec == "relu6"


def test_a_conv_node_is_refused_by_name(tmp_path):
    nodes, inits = _two_layers([helper.make_node("Relu", ["h"], ["a"])])
    nodes.insert(0, helper.make_node("Conv", ["x0", "k"], ["x"], name="Conv_0"))
    path = tmp_path / "conv.onnx"
    _save(path, nodes, [*inits, _init("k", (4, 4, 1))], inputs=("x0",))
    _refused(path, "node 'Conv_0' (Conv) is not part of an MLP; tsens reads Gemm, MatMul+Add")


def test_hardsigmoid_with_onnx_default_alpha_is_refused(tmp_path):
    nodes, inits = _two_layers([helper.make_node("HardSigmoid", ["h"], ["a"], name="hs")])
    path = _save(tmp_path / "hs.onnx", nodes, inits)
    _refused(path, "node 'hs' (HardSigmoid) has alpha 0.2, beta 0.5", "torch's Hardsigmoid (alpha 1/6")


def test_mixed_activations_are_refused(tmp_path):
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h1"], name="fc1", transB=1),
        helper.make_node("Relu", ["h1"], ["a1"], name="r1"),
        helper.make_node("Gemm", ["a1", "w2", "b2"], ["h2"], name="fc2", transB=1),
        helper.make_node("LeakyRelu", ["h2"], ["a2"], name="l2", alpha=0.1),
        helper.make_node("Gemm", ["a2", "w3", "b3"], ["y"], name="fc3", transB=1),
    ]
    inits = [_init("w1", (3, 4)), _init("b1", (3,)), _init("w2", (3, 3)), _init("b2", (3,))]
    inits += [_init("w3", (2, 3)), _init("b3", (2,))]
    path = _save(tmp_path / "mixed.onnx", nodes, inits)
    _refused(path, "node 'l2' (LeakyRelu) applies leaky_relu:0.1 but node 'r1' (Relu) applies relu")


def test_two_inputs_are_refused(tmp_path):
    nodes = [
        helper.make_node("Add", ["x", "x2"], ["s"], name="sum"),
        helper.make_node("Gemm", ["s", "w", "b"], ["y"], name="fc", transB=1),
    ]
    path = _save(tmp_path / "two.onnx", nodes, [_init("w", (2, 4)), _init("b", (2,))], inputs=("x", "x2"))
    _refused(path, "the graph has 2 inputs ('x', 'x2') and 1 outputs ('y')", "one input to one output")


@pytest.mark.parametrize(
    ("act", "extra", "fragments"),
    [
        (
            [helper.make_node("Clip", ["h"], ["a"], name="c", min=0.0, max=2.0)],
            [],
            ("node 'c' (Clip) clips to [0, 2]; tsens reads Clip only as relu6",),
        ),
        ([], [], ("node 'fc2' (Gemm) follows node 'fc1' (Gemm) with no activation between",)),
        (
            [
                helper.make_node("Relu", ["h"], ["r"], name="r"),
                helper.make_node("Relu", ["r"], ["a"], name="r2"),
            ],
            [],
            ("node 'r2' (Relu) follows the activation node 'r' (Relu)",),
        ),
        (
            [helper.make_node("Relu", ["h"], ["r"], name="r")]
            + [helper.make_node("BatchNormalization", ["r", "s", "b", "m", "v"], ["a"], name="bn")],
            [_init(n, (3,)) for n in "sbm"] + [numpy_helper.from_array(np.ones(3, np.float32), "v")],
            ("node 'bn' (BatchNormalization) does not directly follow a Linear layer",),
        ),
        (
            [helper.make_node("Add", ["h", "h"], ["a"], name="double")],
            [],
            ("node 'double' (Add) is not a bias added to a MatMul's output",),
        ),
    ],
)
def test_graphs_that_are_no_mlp_are_refused_naming_the_node(tmp_path, act, extra, fragments):
    nodes, inits = _two_layers(act)
    _refused(_save(tmp_path / "bad.onnx", nodes, inits + extra), *fragments)


def _batchnorm_net(path: Path, eps2: float) -> Path:
    """Gemm → BatchNormalization (default eps) → Relu → Gemm → BatchNormalization (eps2) → Relu → Gemm."""
    nodes, inits = [], []
    for i, (width_in, width_out) in enumerate(((4, 3), (3, 3)), start=1):
        src = "x" if i == 1 else f"a{i - 1}"
        nodes.append(helper.make_node("Gemm", [src, f"w{i}", f"b{i}"], [f"h{i}"], name=f"fc{i}", transB=1))
        stats = [f"gamma{i}", f"beta{i}", f"mean{i}", f"var{i}"]
        eps = {} if i == 1 else {"epsilon": eps2}
        nodes.append(
            helper.make_node("BatchNormalization", [f"h{i}", *stats], [f"n{i}"], name=f"bn{i}", **eps)
        )
        nodes.append(helper.make_node("Relu", [f"n{i}"], [f"a{i}"], name=f"relu{i}"))
        inits += [_init(f"w{i}", (width_out, width_in), i), _init(f"b{i}", (width_out,), i)]
        inits += [_init(name, (width_out,), i + k) for k, name in enumerate(stats[:3])]
        inits.append(numpy_helper.from_array(np.full(width_out, 0.5, np.float32), stats[3]))
    nodes.append(helper.make_node("Gemm", ["a2", "w3", "b3"], ["y"], name="fc3", transB=1))
    inits += [_init("w3", (2, 3)), _init("b3", (2,))]
    return _save(path, nodes, inits)


def test_batchnorm_epsilons_must_agree(tmp_path):
    path = _batchnorm_net(tmp_path / "eps.onnx", 1e-3)
    _refused(
        path,
        "node 'bn2' (BatchNormalization) has epsilon 0.001 but node 'bn1' (BatchNormalization) has 1e-05",
    )
    network = load_network(_batchnorm_net(tmp_path / "eps.onnx", 1e-5))
    assert (
        network.metadata["tsens.bn_eps"] == "1e-05"
        and network.metadata["tsens.layers"] == "fc0,bn0,fc1,bn1,fc2"
    )
    assert [layer.norm is not None for layer in network.layers] == [True, True, False]


def test_an_activation_at_the_output_is_refused(tmp_path):
    nodes, inits = _two_layers([helper.make_node("Relu", ["h"], ["a"])])
    nodes[-1].output[0] = "z"
    nodes.append(helper.make_node("Relu", ["z"], ["y"], name="out_relu"))
    _refused(_save(tmp_path / "out.onnx", nodes, inits), "followed by node 'out_relu' (Relu)", "raw logits")


def test_external_data_is_refused(tmp_path):
    nodes, inits = _two_layers([helper.make_node("Relu", ["h"], ["a"])])
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "ext.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="ext.data", size_threshold=0)
    _refused(path, "tensor 'w1' is stored as external data outside the file", "self-contained")


def test_a_tensor_declaring_more_values_than_it_stores_is_refused(tmp_path):
    nodes, inits = _two_layers([helper.make_node("Relu", ["h"], ["a"])])
    del inits[0].dims[:]
    inits[0].dims.extend([3_000_000_000, 4_000_000_000])
    _refused(
        _save(tmp_path / "dims.onnx", nodes, inits), "tensor 'w1' declares shape (3000000000, 4000000000)"
    )


# --- unreadable files and a missing package -----------------------------------------------------


def test_truncated_and_random_files_are_refused_in_one_line(tmp_path):
    good = (DATA / "relu_classic_f64.onnx").read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(good[: len(good) // 2])
    _refused(cut, "not a readable ONNX model (")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(bytes(random.Random(7).randrange(256) for _ in range(4096)))
    _refused(junk, "not a readable ONNX model (")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    _refused(empty, "the file is empty")


def test_every_prefix_and_mutation_loads_or_is_refused_in_one_line(tmp_path):
    """Cut at every byte, and 300 random byte changes: a network or a one-line TsensError."""
    good = (DATA / "hardtanh_classic_opset10_f32.onnx").read_bytes()
    rng = random.Random(0)
    variants = [good[:n] for n in range(1, len(good))]
    for _ in range(300):
        data = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        variants.append(bytes(data))
    path = tmp_path / "fuzz.onnx"
    loaded = 0
    for data in variants:
        path.write_bytes(data)
        try:
            load_network(path)
            loaded += 1
        except TsensError as e:
            assert str(e).startswith(f"{path}: ") and "\n" not in str(e), str(e)
    assert 0 < loaded < len(variants)


def test_without_the_onnx_package_the_message_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    path = DATA / "relu_classic_f64.onnx"
    text = _refused(path, "needs the onnx package: pip install 'tsens[onnx]'")
    assert text == f"{path}: reading ONNX models needs the onnx package: pip install 'tsens[onnx]'"


# --- command line -----------------------------------------------------------------------------


def test_cli_info_reads_an_onnx_model_and_refuses_a_corrupt_one(tmp_path):
    out = tmp_path / "info.parquet"
    run("info", DATA / "batchnorm_classic_f32.onnx", "-o", out)
    table = pq.read_table(out)
    assert table.column("in_features").to_pylist() == [5, 8, 6]
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07\x12\x03abc\x3a\xff\xff\xff\x0f")
    one_line_error(run("info", bad, code=2), str(bad), "not a readable ONNX model")
