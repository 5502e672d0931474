"""ONNX models (``.onnx``) of MLPs, as ``torch.onnx.export`` (either exporter) and most other
tools write them; read with the ``onnx`` package (``tsens[onnx]``), never run.

The graph must be a chain from its one input to its one output, each node taking the previous
node's output (its other inputs are initializers or ``Constant`` nodes) and made of:

* Linear layers: ``Gemm`` (``transA=0``, ``transB`` 0 or 1; ``alpha`` is folded into the
  weight and ``beta`` into the bias), or ``MatMul`` with a constant in × out right operand,
  optionally followed by an ``Add`` of a constant bias (either operand order);
* ``BatchNormalization`` (inference mode) directly after a Linear; one epsilon for the net;
* one activation after every hidden layer, the same everywhere: ``Relu``, ``LeakyRelu``,
  ``Clip`` to [0, 6] (relu6), [-1, 1] (hardtanh) or [0, ∞) (relu), with bounds as attributes
  (opset < 11) or constant inputs, and ``HardSigmoid`` with torch's alpha = 1/6, beta = 0.5
  (ONNX's default alpha = 0.2 is another function and refused);
* ``Flatten`` (axis 1) and ``Reshape`` to (batch, -1) or (-1, inputs) before the first Linear,
  ``Identity`` and ``Dropout`` anywhere, and a final ``Softmax``/``LogSoftmax``, which is dropped
  (tsens works on the logits) with a note in the metadata entry ``onnx.dropped``.

Weights come from initializers, ``Constant`` nodes and ``Identity`` copies of either (the
classic exporter shares equal initializers that way). Anything else is refused naming the node.
The tensors get torch names: Linears ``fc0``, ``fc1``, ..., a BatchNorm after ``fcK`` is
``bnK``; ``tsens.layers``, ``tsens.activation`` and ``tsens.bn_eps`` record the graph's order,
activation and epsilon. Tensors stored as external data (outside the ``.onnx`` file) are
refused: tsens reads self-contained files only. The metadata are the model's
``metadata_props`` plus ``onnx.producer_name``, ``onnx.producer_version`` and ``onnx.opset``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import TsensError, first_line
from ..extras import require
from .base import Weights, check_file

_MAX_BYTES = 2 << 30  # protobuf's limit: a larger .onnx file keeps its weights as external data
_KNOWN = (
    "Gemm, MatMul+Add, BatchNormalization, Relu, LeakyRelu, Clip, HardSigmoid, Flatten, Reshape, "
    "Identity, Dropout and a final Softmax/LogSoftmax"
)
_HARDSIGMOID = (1 / 6, 0.5)  # torch's Hardsigmoid as ONNX's HardSigmoid(alpha, beta)
_ACTIVATIONS = ("Relu", "LeakyRelu", "Clip", "HardSigmoid")
_HEADS = ("Softmax", "LogSoftmax")
_OPS = ("Gemm", "MatMul", "Add", "BatchNormalization", "Flatten", "Reshape", "Identity", "Dropout")
_OPS += _ACTIVATIONS + _HEADS
# TensorProto data types read, with their numpy item size and the typed field holding them.
_DTYPES = {1: (4, "float_data"), 11: (8, "double_data"), 10: (2, "int32_data")}
_INT_DTYPES = {7: (8, "int64_data"), 6: (4, "int32_data"), 9: (1, "int32_data")}


def _onnx() -> Any:
    return require("onnx", "onnx", "reading ONNX models")


def _load(path: Path) -> Any:
    """The ModelProto in ``path`` (external data not loaded), or a one-line refusal."""
    check_file(path)
    if path.stat().st_size > _MAX_BYTES:
        raise TsensError(f"{path}: is larger than 2 GiB, which no self-contained ONNX model is")
    try:
        onnx = _onnx()
    except TsensError as e:
        raise TsensError(f"{path}: {e}") from None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError, RecursionError, ... on anything not a model
        raise TsensError(f"{path}: not a readable ONNX model ({first_line(e)})") from None
    if not model.ir_version or not model.HasField("graph") or not model.graph.node:
        raise TsensError(f"{path}: not a readable ONNX model (no IR version or no graph nodes)")
    return model


def metadata(path: Path) -> dict[str, str]:
    """The metadata :func:`read` gives: the weights live inside the graph, so the whole model is
    parsed and checked as by :func:`read`."""
    return read(path).metadata


def _props(model: Any) -> dict[str, str]:
    meta = {_str(p.key): _str(p.value) for p in model.metadata_props}
    meta["onnx.producer_name"] = _str(model.producer_name)
    meta["onnx.producer_version"] = _str(model.producer_version)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None:
        meta["onnx.opset"] = str(opset)
    return meta


def _str(text: str | bytes) -> str:
    """A string field: protobuf gives bytes where a corrupt file holds invalid UTF-8."""
    return text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)


def _quote(text: str | bytes) -> str:
    """A name from the graph, quoted with escapes (one line) and shortened."""
    quoted = repr(_str(text))
    return quoted if len(quoted) <= 80 else quoted[:76] + "...'"


def _what(node: Any) -> str:
    name = node.name or (node.output[0] if node.output else "")
    op = _str(node.op_type) if node.domain in ("", "ai.onnx") else f"{_str(node.domain)}.{_str(node.op_type)}"
    return f"node {_quote(name)} ({op if op.isidentifier() else _quote(op)})"


def _f32(x: float) -> str:
    """A float attribute (stored as float32) as its shortest float32 text: 0.1, not 0.100000001."""
    return str(np.float32(x))


@dataclass
class _Linear:
    weight: np.ndarray  # out × in
    bias: np.ndarray | None
    node: Any
    norm: dict[str, np.ndarray] | None = None
    activation: tuple[str, Any] | None = None  # (spec, node)
    matmul_open: bool = False  # a MatMul whose Add may still follow


@dataclass
class _Chain:
    path: Path
    constants: dict[str, Any]  # value name -> TensorProto (initializers, Constant, Identity of one)
    layers: list[_Linear] = field(default_factory=list)
    eps: tuple[float, Any] | None = None  # (epsilon, node)
    flat_width: tuple[int, Any] | None = None  # Reshape(-1, d): the first Linear must take d
    head: Any = None  # the dropped Softmax/LogSoftmax node


def _array(path: Path, t: Any, *, ints: bool = False) -> np.ndarray:
    """A TensorProto as an array, after checking that its declared size is what it stores."""
    onnx = _onnx()
    name = t.name or "<unnamed>"
    if t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data):
        raise TsensError(
            f"{path}: tensor {name!r} is stored as external data outside the file; tsens reads "
            "self-contained .onnx files only (onnx.save(model, path, save_as_external_data=False))"
        )
    kinds = _INT_DTYPES if ints else _DTYPES
    if t.data_type not in kinds:
        try:
            dtype = onnx.TensorProto.DataType.Name(t.data_type)
        except ValueError:
            dtype = f"type {t.data_type}"
        expected = "int64 or int32 values" if ints else "float32, float64 or float16 weights"
        raise TsensError(f"{path}: tensor {name!r} holds {dtype} values; expected {expected}")
    itemsize, typed = kinds[t.data_type]
    dims = list(t.dims)
    count = math.prod(dims) if all(d >= 0 for d in dims) else -1
    raw = len(t.raw_data)
    stored = raw // itemsize if raw else len(getattr(t, typed))
    if count != stored or raw % itemsize:
        raise TsensError(
            f"{path}: tensor {name!r} declares shape {tuple(dims)} but stores "
            f"{raw} bytes / {stored} values; the file is corrupt"
        )
    try:
        return np.array(onnx.numpy_helper.to_array(t), copy=True)
    except Exception as e:  # a tensor whose fields contradict each other
        raise TsensError(
            f"{path}: tensor {name!r} cannot be read ({first_line(e)}); the file is corrupt"
        ) from None


def _constant_tensor(path: Path, node: Any) -> Any:
    """The TensorProto a Constant node holds (value, value_float(s), value_int(s))."""
    onnx = _onnx()
    attrs = {a.name: a for a in node.attribute}
    if "value" in attrs:
        return attrs["value"].t
    helper = onnx.helper
    for key, dtype in (("value_float", 1), ("value_floats", 1), ("value_int", 7), ("value_ints", 7)):
        if key in attrs:
            try:
                value = helper.get_attribute_value(attrs[key])
                dims = [] if key in ("value_float", "value_int") else [len(value)]
                return helper.make_tensor(node.output[0], dtype, dims, list(value) if dims else [value])
            except Exception as e:  # an attribute of another type than its name says
                why = first_line(e)
                raise TsensError(f"{path}: {_what(node)} holds an unreadable {key} ({why})") from None
    raise TsensError(f"{path}: {_what(node)} holds no numeric tensor; tsens reads Constant values only")


def _attr(path: Path, node: Any, name: str, default: float) -> float:
    """Attribute ``name`` of ``node`` (an int where ``default`` is one), ``default`` when absent."""
    a = next((a for a in node.attribute if a.name == name), None)
    if a is None:
        return default
    try:
        value = _onnx().helper.get_attribute_value(a)
    except Exception:  # an attribute without a valid type
        value = None
    wanted = int if isinstance(default, int) else (int, float)
    if not isinstance(value, wanted) or isinstance(value, bool):
        raise TsensError(f"{path}: {_what(node)} has attribute {name!r} = {value!r}; expected a number")
    return value


def _const(chain: _Chain, node: Any, index: int, *, ints: bool = False) -> np.ndarray | None:
    """Input ``index`` of ``node`` as a constant array, None when absent; refused when computed."""
    if index >= len(node.input) or not node.input[index]:
        return None
    name = node.input[index]
    if name not in chain.constants:
        raise TsensError(
            f"{chain.path}: {_what(node)} takes {name!r} from the graph where tsens expects a "
            "constant (an initializer); tsens reads a chain of layers from one input"
        )
    return _array(chain.path, chain.constants[name], ints=ints)


def _scalar(chain: _Chain, node: Any, index: int) -> float | None:
    value = _const(chain, node, index)
    if value is None:
        return None
    if value.size != 1:
        raise TsensError(f"{chain.path}: {_what(node)} has a bound of shape {value.shape}; expected a scalar")
    return float(value.reshape(()))


def _vector(chain: _Chain, node: Any, value: np.ndarray, width: int, what: str) -> np.ndarray:
    """A bias-like constant of ``width`` entries: shape (width,), (1, width) or a scalar."""
    if value.size == 1:
        return np.broadcast_to(value.reshape(()), (width,)).copy()
    if value.size == width and value.ndim <= 2 and value.shape[-1] == width:
        return value.reshape(width)
    raise TsensError(f"{chain.path}: {_what(node)} has a {what} of shape {value.shape}; expected ({width},)")


def _weight_matrix(chain: _Chain, node: Any, value: np.ndarray | None) -> np.ndarray:
    if value is None or value.ndim != 2:
        shape = None if value is None else value.shape
        raise TsensError(f"{chain.path}: {_what(node)} has a weight of shape {shape}; expected a matrix")
    return value


def _open_linear(chain: _Chain, node: Any, weight: np.ndarray, bias: np.ndarray | None) -> None:
    if chain.layers:
        last = chain.layers[-1]
        if last.activation is None:
            raise TsensError(
                f"{chain.path}: {_what(node)} follows {_what(last.node)} with no activation between; "
                "tsens needs one activation after every hidden layer"
            )
        if last.weight.shape[0] != weight.shape[1]:
            raise TsensError(
                f"{chain.path}: {_what(node)} takes {weight.shape[1]} inputs but {_what(last.node)} "
                f"gives {last.weight.shape[0]}"
            )
    elif chain.flat_width is not None and chain.flat_width[0] != weight.shape[1]:
        width, reshape = chain.flat_width
        raise TsensError(
            f"{chain.path}: {_what(reshape)} reshapes to (-1, {width}) but the first Linear "
            f"{_what(node)} takes {weight.shape[1]} inputs"
        )
    chain.layers.append(_Linear(weight, bias, node, matmul_open=node.op_type == "MatMul"))


def _gemm(chain: _Chain, node: Any) -> None:
    if _attr(chain.path, node, "transA", 0):
        raise TsensError(f"{chain.path}: {_what(node)} has transA=1; tsens reads Gemm with transA=0")
    b = _weight_matrix(chain, node, _const(chain, node, 1))
    weight = b if _attr(chain.path, node, "transB", 0) else b.T
    alpha, beta = float(_attr(chain.path, node, "alpha", 1.0)), float(_attr(chain.path, node, "beta", 1.0))
    if alpha != 1.0:
        weight = weight.astype(np.float64) * alpha
    c = _const(chain, node, 2)
    bias = None
    if c is not None:
        bias = _vector(chain, node, c, weight.shape[0], "bias C")
        bias = bias.astype(np.float64) * beta if beta != 1.0 else bias
    _open_linear(chain, node, weight, bias)


def _matmul(chain: _Chain, node: Any, cur: str) -> None:
    if node.input[0] != cur:
        raise TsensError(
            f"{chain.path}: {_what(node)} multiplies a constant by the data (W @ x); tsens reads "
            "MatMul as x @ W with the weight second"
        )
    weight = _weight_matrix(chain, node, _const(chain, node, 1))
    _open_linear(chain, node, weight.T, None)


def _add(chain: _Chain, node: Any, cur: str) -> None:
    last = chain.layers[-1] if chain.layers else None
    if last is None or not last.matmul_open or list(node.input).count(cur) != 1 or len(node.input) != 2:
        raise TsensError(
            f"{chain.path}: {_what(node)} is not a bias added to a MatMul's output; tsens reads Add "
            "only directly after a MatMul"
        )
    value = _const(chain, node, 1 if node.input[0] == cur else 0)
    assert value is not None
    last.bias = _vector(chain, node, value, last.weight.shape[0], "bias")


def _batchnorm(chain: _Chain, node: Any) -> None:
    last = chain.layers[-1] if chain.layers else None
    if last is None or last.norm is not None or last.activation is not None:
        raise TsensError(
            f"{chain.path}: {_what(node)} does not directly follow a Linear layer; tsens supports "
            "BatchNorm only directly after a Linear"
        )
    if _attr(chain.path, node, "training_mode", 0) or len([o for o in node.output if o]) > 1:
        raise TsensError(f"{chain.path}: {_what(node)} is in training mode; expected an inference graph")
    width = last.weight.shape[0]
    names = ("weight", "bias", "running_mean", "running_var")
    norm = {}
    for index, name in enumerate(names, start=1):
        value = _const(chain, node, index)
        if value is None:
            raise TsensError(f"{chain.path}: {_what(node)} has no input {index}; expected 5 inputs")
        norm[name] = _vector(chain, node, value, width, name.replace("_", " "))
    eps = float(_attr(chain.path, node, "epsilon", 1e-5))
    if not 0 < eps < math.inf:
        raise TsensError(f"{chain.path}: {_what(node)} has epsilon {eps}; expected a positive number")
    if chain.eps is not None and _f32(chain.eps[0]) != _f32(eps):
        raise TsensError(
            f"{chain.path}: {_what(node)} has epsilon {_f32(eps)} but {_what(chain.eps[1])} has "
            f"{_f32(chain.eps[0])}; tsens needs one BatchNorm epsilon for the whole network"
        )
    chain.eps = (eps, node)
    last.norm = norm


def _activation_spec(chain: _Chain, node: Any) -> str:
    op = node.op_type
    if op == "Relu":
        return "relu"
    if op == "LeakyRelu":
        alpha = float(_attr(chain.path, node, "alpha", 0.01))
        if not 0 <= alpha < 1:
            raise TsensError(f"{chain.path}: {_what(node)} has alpha {_f32(alpha)}; expected 0 <= alpha < 1")
        return f"leaky_relu:{_f32(alpha)}"
    if op == "HardSigmoid":
        alpha, beta = (
            float(_attr(chain.path, node, "alpha", 0.2)),
            float(_attr(chain.path, node, "beta", 0.5)),
        )
        if not np.allclose((alpha, beta), _HARDSIGMOID, rtol=1e-6, atol=0):
            raise TsensError(
                f"{chain.path}: {_what(node)} has alpha {_f32(alpha)}, beta {_f32(beta)}; tsens reads "
                "HardSigmoid only as torch's Hardsigmoid (alpha 1/6, beta 0.5)"
            )
        return "hardsigmoid"
    low = _scalar(chain, node, 1) if len(node.input) > 1 else None
    high = _scalar(chain, node, 2) if len(node.input) > 2 else None
    low = float(_attr(chain.path, node, "min", -math.inf)) if low is None else low
    high = float(_attr(chain.path, node, "max", math.inf)) if high is None else high
    specs = {(0.0, 6.0): "relu6", (-1.0, 1.0): "hardtanh", (0.0, math.inf): "relu"}
    if (low, high) not in specs:
        raise TsensError(
            f"{chain.path}: {_what(node)} clips to [{low:g}, {high:g}]; tsens reads Clip only as "
            "relu6 [0, 6], hardtanh [-1, 1] or relu [0, inf)"
        )
    return specs[(low, high)]


def _activation(chain: _Chain, node: Any) -> None:
    last = chain.layers[-1] if chain.layers else None
    if last is None:
        raise TsensError(f"{chain.path}: {_what(node)} comes before any Linear layer (Gemm or MatMul)")
    if last.activation is not None:
        raise TsensError(
            f"{chain.path}: {_what(node)} follows the activation {_what(last.activation[1])}; tsens "
            "needs exactly one activation between Linear layers"
        )
    spec = _activation_spec(chain, node)
    first = next((layer.activation for layer in chain.layers if layer.activation), None)
    if first is not None and first[0] != spec:
        raise TsensError(
            f"{chain.path}: {_what(node)} applies {spec} but {_what(first[1])} applies {first[0]}; "
            "tsens needs the same activation after every hidden layer"
        )
    last.activation = (spec, node)


def _shape_node(chain: _Chain, node: Any) -> None:
    if chain.layers:
        raise TsensError(
            f"{chain.path}: {_what(node)} comes after the first Linear layer; tsens reads shape "
            "nodes only before it"
        )
    if node.op_type == "Flatten":
        axis = _attr(chain.path, node, "axis", 1)
        if axis != 1:
            raise TsensError(f"{chain.path}: {_what(node)} flattens from axis {axis}; expected axis 1")
        return
    shape = _const(chain, node, 1, ints=True)
    dims = [] if shape is None else [int(d) for d in shape.reshape(-1)]
    keeps_batch = dims[:1] == [0] and not _attr(chain.path, node, "allowzero", 0)  # 0 copies the batch size
    if len(dims) == 2 and dims[1] == -1 and (dims[0] > 0 or keeps_batch):
        return
    if len(dims) == 2 and dims[0] == -1 and dims[1] > 0:
        chain.flat_width = (dims[1], node)
        return
    raise TsensError(
        f"{chain.path}: {_what(node)} reshapes to {tuple(dims)}; tsens reads Reshape only to "
        "(batch, -1) or (-1, inputs) before the first Linear"
    )


def _dropout(chain: _Chain, node: Any) -> None:
    training = _const(chain, node, 2, ints=True)
    if len([o for o in node.output if o]) > 1 or (training is not None and training.any()):
        raise TsensError(f"{chain.path}: {_what(node)} is in training mode; expected an inference graph")


def _constants(path: Path, graph: Any) -> dict[str, Any]:
    """Initializers, Constant outputs and Identity copies of either, by value name."""
    constants = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output:
            constants[node.output[0]] = _constant_tensor(path, node)
        elif node.op_type == "Identity" and node.input and node.input[0] in constants:
            constants[node.output[0]] = constants[node.input[0]]
    return constants


def _walk(path: Path, model: Any) -> _Chain:
    graph = model.graph
    chain = _Chain(path, _constants(path, graph))
    inputs = [i.name for i in graph.input if i.name not in chain.constants]
    outputs = [o.name for o in graph.output]
    if len(inputs) != 1 or len(outputs) != 1:
        raise TsensError(
            f"{path}: the graph has {len(inputs)} inputs ({', '.join(map(_quote, inputs[:4])) or 'none'}) "
            f"and {len(outputs)} outputs ({', '.join(map(_quote, outputs[:4])) or 'none'}); tsens reads "
            "a chain from one input to one output"
        )
    cur = inputs[0]
    for node in graph.node:
        if node.output and node.output[0] in chain.constants and node.op_type in ("Constant", "Identity"):
            continue
        op = node.op_type if node.domain in ("", "ai.onnx") else None
        if op is None or op not in _OPS:
            raise TsensError(f"{path}: {_what(node)} is not part of an MLP; tsens reads {_KNOWN}")
        if not node.output or not node.output[0]:
            raise TsensError(f"{path}: {_what(node)} has no output; the graph is corrupt")
        if chain.head is not None:
            raise TsensError(f"{path}: {_what(node)} follows {_what(chain.head)}, which must come last")
        if cur not in node.input:
            raise TsensError(
                f"{path}: {_what(node)} does not take the output of the node before it ({cur!r}); "
                "tsens reads a chain from one input to one output"
            )
        if op != "Add" and node.input[0] != cur and op != "MatMul":
            raise TsensError(f"{path}: {_what(node)} takes {cur!r} as a parameter, not as its data input")
        for other in node.input:
            if other and other != cur and other not in chain.constants:
                raise TsensError(
                    f"{path}: {_what(node)} takes {other!r} from the graph where tsens expects a "
                    "constant (an initializer); tsens reads a chain of layers from one input"
                )
        if op == "Gemm":
            _gemm(chain, node)
        elif op == "MatMul":
            _matmul(chain, node, cur)
        elif op == "Add":
            _add(chain, node, cur)
        elif op == "BatchNormalization":
            _batchnorm(chain, node)
        elif op in _ACTIVATIONS:
            _activation(chain, node)
        elif op in ("Flatten", "Reshape"):
            _shape_node(chain, node)
        elif op in _HEADS:
            chain.head = node
        elif op == "Dropout":
            _dropout(chain, node)
        if op not in ("Identity", "Dropout", "MatMul"):
            for layer in chain.layers[-1:]:
                layer.matmul_open = False  # an Add after anything else is no MatMul bias
        cur = node.output[0]
    if cur != outputs[0]:
        raise TsensError(f"{path}: the graph output {outputs[0]!r} is not the end of the chain ({cur!r})")
    if not chain.layers:
        raise TsensError(f"{path}: the graph has no Gemm or MatMul; expected an MLP")
    last = chain.layers[-1]
    if last.activation is not None:
        raise TsensError(
            f"{path}: the output layer is followed by {_what(last.activation[1])}; tsens needs the "
            "raw logits at the output (no activation after the last Linear)"
        )
    return chain


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def read(path: Path) -> Weights:
    """The Linear and BatchNorm tensors of an ONNX MLP under torch names, and its metadata."""
    model = _load(path)
    chain = _walk(path, model)
    tensors: dict[str, torch.Tensor] = {}
    order: list[str] = []
    for k, layer in enumerate(chain.layers):
        order.append(f"fc{k}")
        tensors[f"fc{k}.weight"] = _tensor(layer.weight)
        if layer.bias is not None:
            tensors[f"fc{k}.bias"] = _tensor(layer.bias)
        if layer.norm is not None:
            order.append(f"bn{k}")
            tensors.update({f"bn{k}.{name}": _tensor(v) for name, v in layer.norm.items()})
    meta = _props(model)
    meta["tsens.layers"] = ",".join(order)
    first = next((layer.activation for layer in chain.layers if layer.activation), None)
    if first is not None:
        meta["tsens.activation"] = first[0]
    if chain.eps is not None:
        meta["tsens.bn_eps"] = _f32(chain.eps[0])
    if chain.head is not None:
        meta["onnx.dropped"] = f"{_what(chain.head)} at the output; tsens works on the logits before it"
    return Weights(tensors, meta, (path,))
