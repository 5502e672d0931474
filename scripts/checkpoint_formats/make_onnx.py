"""ONNX models of small MLPs, for ``tests/test_onnx.py`` (dev-only).

Run once in a separate environment; the outputs are committed under
``tests/data/formats/onnx/``:

    python3 -m venv /tmp/genonnx
    /tmp/genonnx/bin/pip install torch==2.13.0 onnx onnxscript onnxruntime
    /tmp/genonnx/bin/python scripts/checkpoint_formats/make_onnx.py

Exports ``nn.Sequential`` MLPs with ``torch.onnx.export``, both with the classic TorchScript
exporter (``dynamo=False``, ``*_classic_*``) and the torch.export-based one that is the default
since torch 2.9 (``dynamo=True``, needs onnxscript; ``*_dynamo_*``): relu (with Flatten and
Dropout), leaky_relu(0.1) (a bias-free output layer: MatMul alone, or Gemm without C), relu6
(Clip with constant bounds), hardtanh (opset 10: Clip with attribute bounds), hardsigmoid with a
Softmax head, and BatchNorm1d in eval mode with random statistics (the classic exporter keeps a
BatchNormalization node, the dynamo one folds it into the Gemm). Two graphs are built by hand
with ``onnx.helper``: ``handmade_batchnorm_f64`` (Reshape to (0, -1), Gemm with transB=0 and
alpha/beta ≠ 1, BatchNormalization with epsilon 1e-3, Relu, Dropout, Identity) and
``handmade_matmul_add_logsoftmax_f32`` (MatMul+Add in both operand orders, weights in Constant nodes,
torch's HardSigmoid, a LogSoftmax head).

``<name>.npz`` holds float64 inputs ``x`` (in the model's input shape), ``y``: the float64
reference logits before any Softmax head (the torch module cast to float64, or numpy for the
hand-made graphs; float32 weights are exact in float64), and ``onnxruntime``: onnxruntime's
outputs on ``x`` cast to the model's dtype (head included), absent where onnxruntime has no
kernel for the dtype (LeakyRelu and HardSigmoid in float64).
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

OUT = Path(__file__).resolve().parents[2] / "tests" / "data" / "formats" / "onnx"
ROWS = 9


def _mlp(
    widths: tuple[int, ...], act: Callable[[], nn.Module], *, bn: bool = False, seed: int = 0
) -> list[nn.Module]:
    """Linear [BatchNorm1d] act ... Linear, with random BatchNorm statistics."""
    torch.manual_seed(seed)
    mods: list[nn.Module] = []
    for i in range(len(widths) - 1):
        mods.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            if bn:
                norm = nn.BatchNorm1d(widths[i + 1], eps=1e-3)
                with torch.no_grad():
                    norm.running_mean.copy_(0.3 * torch.randn(widths[i + 1]))
                    norm.running_var.copy_(0.5 + torch.rand(widths[i + 1]))
                    norm.weight.copy_(0.5 + torch.rand(widths[i + 1]))
                    norm.bias.copy_(0.2 * torch.randn(widths[i + 1]))
                mods.append(norm)
            mods.append(act())
    return mods


def _inputs(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=2.0, size=(ROWS, *shape))


def _onnxruntime(path: Path, x: np.ndarray, dtype: type) -> np.ndarray | None:
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # no kernel for this dtype (LeakyRelu, HardSigmoid in float64)
        print(f"  {path.name}: onnxruntime cannot run it ({str(e).splitlines()[0][:90]})")
        return None
    name = session.get_inputs()[0].name
    return np.asarray(session.run(None, {name: x.astype(dtype)})[0])


def _save(name: str, x: np.ndarray, y: np.ndarray, dtype: type) -> None:
    path = OUT / f"{name}.onnx"
    arrays = {"x": x, "y": y}
    ran = _onnxruntime(path, x, dtype)
    if ran is not None:
        arrays["onnxruntime"] = ran
    np.savez(OUT / f"{name}.npz", **arrays)
    print(f"  {name}: {path.stat().st_size} bytes, onnxruntime {'yes' if ran is not None else 'no'}")


def export(
    name: str,
    mods: list[nn.Module],
    input_shape: tuple[int, ...],
    *,
    dtype: torch.dtype,
    dynamo: bool,
    opset: int | None = None,
    head: nn.Module | None = None,
) -> None:
    """Export ``Sequential(*mods, head)`` in ``dtype`` and save the float64 reference logits."""
    body = nn.Sequential(*mods).eval()
    module = nn.Sequential(*mods, *([head] if head is not None else [])).to(dtype).eval()
    x = _inputs(input_shape, zlib.crc32(name.encode()))
    sample = torch.zeros(2, *input_shape, dtype=dtype)
    path = OUT / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            batch = torch.export.Dim("batch")
            program = torch.onnx.export(
                module,
                (sample,),
                dynamo=True,
                input_names=["x"],
                output_names=["y"],
                dynamic_shapes=({0: batch},),
                opset_version=opset,
                verbose=False,
            )
            program.save(str(path))
        else:
            torch.onnx.export(
                module,
                (sample,),
                str(path),
                dynamo=False,
                input_names=["x"],
                output_names=["y"],
                dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
                opset_version=opset,
            )
    with torch.no_grad():
        y = body.to(torch.float64)(torch.from_numpy(x)).numpy()
    _save(name, x, y, np.float32 if dtype == torch.float32 else np.float64)


def _model(graph: onnx.GraphProto, opset: int) -> onnx.ModelProto:
    model = helper.make_model(
        graph, producer_name="tsens make_onnx.py", opset_imports=[helper.make_opsetid("", opset)]
    )
    model.ir_version = 8
    helper.set_model_props(model, {"author": "tsens tests", "trained_on": "nothing"})
    onnx.checker.check_model(model, full_check=True)
    return model


def handmade_batchnorm() -> None:
    """Reshape(0,-1) → Gemm(transB=0, alpha 0.5, beta 2) → BatchNormalization(eps 1e-3) → Relu →
    Dropout → Gemm → Identity, in float64."""
    rng = np.random.default_rng(1)
    w1, b1 = rng.normal(size=(6, 7)), rng.normal(size=7)  # in × out: transB=0
    mean, var = 0.3 * rng.normal(size=7), 0.5 + rng.random(7)
    gamma, beta = 0.5 + rng.random(7), 0.2 * rng.normal(size=7)
    w2, b2 = rng.normal(size=(3, 7)), rng.normal(size=(1, 3))  # out × in: transB=1
    init = [
        numpy_helper.from_array(a, n)
        for a, n in [(w1, "w1"), (b1, "b1"), (gamma, "gamma"), (beta, "beta"), (mean, "mean"), (var, "var")]
        + [(w2, "w2"), (b2, "b2"), (np.array([0, -1], dtype=np.int64), "shape")]
    ]
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "w1", "b1"], ["h1"], name="fc1", alpha=0.5, beta=2.0, transB=0),
        helper.make_node(
            "BatchNormalization", ["h1", "gamma", "beta", "mean", "var"], ["n1"], name="bn1", epsilon=1e-3
        ),
        helper.make_node("Relu", ["n1"], ["a1"], name="relu1"),
        helper.make_node("Dropout", ["a1"], ["d1"], name="dropout1"),
        helper.make_node("Gemm", ["d1", "w2", "b2"], ["z"], name="fc2", transB=1),
        helper.make_node("Identity", ["z"], ["y"], name="out"),
    ]
    graph = helper.make_graph(
        nodes,
        "handmade_batchnorm",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["batch", 2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["batch", 3])],
        init,
    )
    name = "handmade_batchnorm_f64"
    onnx.save(_model(graph, 15), OUT / f"{name}.onnx")
    x = _inputs((2, 3), 11)
    h = 0.5 * x.reshape(ROWS, -1) @ w1 + 2.0 * b1
    h = gamma * (h - mean) / np.sqrt(var + 1e-3) + beta
    y = np.maximum(h, 0) @ w2.T + b2
    _save(name, x, y, np.float64)


def handmade_matmul_add() -> None:
    """MatMul+Add (bias first, then bias second) with weights in Constant nodes, HardSigmoid with
    torch's alpha/beta, and a LogSoftmax head, in float32."""
    rng = np.random.default_rng(2)
    w1, b1 = rng.normal(size=(5, 6)).astype(np.float32), rng.normal(size=6).astype(np.float32)
    w2, b2 = rng.normal(size=(6, 4)).astype(np.float32), rng.normal(size=(1, 4)).astype(np.float32)

    def const(a: np.ndarray, n: str) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [n], name=f"const_{n}", value=numpy_helper.from_array(a, n))

    nodes = [
        const(w1, "w1"),
        const(b1, "b1"),
        const(w2, "w2"),
        const(b2, "b2"),
        helper.make_node("MatMul", ["x", "w1"], ["m1"], name="matmul1"),
        helper.make_node("Add", ["b1", "m1"], ["h1"], name="add1"),
        helper.make_node("HardSigmoid", ["h1"], ["a1"], name="hardsigmoid1", alpha=1 / 6, beta=0.5),
        helper.make_node("MatMul", ["a1", "w2"], ["m2"], name="matmul2"),
        helper.make_node("Add", ["m2", "b2"], ["z"], name="add2"),
        helper.make_node("LogSoftmax", ["z"], ["y"], name="log_softmax", axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "handmade_matmul_add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    name = "handmade_matmul_add_logsoftmax_f32"
    onnx.save(_model(graph, 13), OUT / f"{name}.onnx")
    x = _inputs((5,), 12)
    h = x @ w1.astype(np.float64) + b1
    a = np.clip(h / 6 + 0.5, 0, 1)
    y = a @ w2.astype(np.float64) + b2
    _save(name, x, y, np.float32)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*"):
        old.unlink()
    f32, f64 = torch.float32, torch.float64

    def relu_net() -> list[nn.Module]:
        torch.manual_seed(3)
        return [
            nn.Flatten(),
            nn.Linear(6, 8),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(8, 8),
            nn.ReLU(),
            nn.Linear(8, 3),
        ]

    export("relu_classic_f64", relu_net(), (2, 3), dtype=f64, dynamo=False)
    export("relu_dynamo_f64", relu_net(), (2, 3), dtype=f64, dynamo=True)
    leaky = _mlp((5, 8, 7, 3), lambda: nn.LeakyReLU(0.1), seed=4)
    leaky[-1] = nn.Linear(7, 3, bias=False)
    export("leaky_relu_classic_f32", leaky, (5,), dtype=f32, dynamo=False)
    export("leaky_relu_dynamo_f32", leaky, (5,), dtype=f32, dynamo=True)
    export("relu6_classic_f32", _mlp((5, 8, 3), nn.ReLU6, seed=5), (5,), dtype=f32, dynamo=False)
    export("relu6_dynamo_f32", _mlp((5, 8, 3), nn.ReLU6, seed=5), (5,), dtype=f32, dynamo=True)
    export(
        "hardtanh_classic_opset10_f32",
        _mlp((5, 8, 3), nn.Hardtanh, seed=6),
        (5,),
        dtype=f32,
        dynamo=False,
        opset=10,
    )
    export(
        "hardsigmoid_softmax_dynamo_f32",
        _mlp((5, 8, 3), nn.Hardsigmoid, seed=7),
        (5,),
        dtype=f32,
        dynamo=True,
        head=nn.Softmax(dim=-1),
    )
    export(
        "batchnorm_classic_f32", _mlp((5, 8, 6, 3), nn.ReLU, bn=True, seed=8), (5,), dtype=f32, dynamo=False
    )
    export("batchnorm_dynamo_f32", _mlp((5, 8, 6, 3), nn.ReLU, bn=True, seed=8), (5,), dtype=f32, dynamo=True)
    handmade_batchnorm()
    handmade_matmul_add()


if __name__ == "__main__":
    main()
