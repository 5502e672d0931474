"""Keras model configs → the chain of layers tsens builds, and its activation.

Two kinds of config, each a JSON document:

* a Keras model config (``config.json`` of a ``.keras`` archive, the ``model_config`` attribute
  of a legacy ``.h5``): ``{"class_name": "Sequential" | "Functional", "config": {"layers":
  [{"class_name": ..., "config": {"name": ..., ...}, "inbound_nodes": ...}, ...]}}`` (Keras 2's
  early Sequential form puts the list of layers directly under ``config``). A Functional
  model's layers must form one chain (each takes the previous one's output; the last is the
  only output), read from Keras 2's ``[name, node, tensor, kwargs]`` inbound lists or Keras 3's
  ``keras_history``.
* a PGDL ``config.json``: ``{"model_config": [{"layer_name": "Dense", "units": 64,
  "activation": "relu"}, ...], "input_shape": [...]}``, each entry a ``tf.keras.layers`` class
  and its keyword arguments; its layers are named ``model_config[i]`` until matched to the
  weights file.

:func:`plan` turns the layers into the Dense and BatchNormalization layers that hold weights (in
order, with the variables each stores) and the metadata the config gives: ``tsens.layers``,
``tsens.activation``, ``tsens.bn_eps`` (one epsilon for the network; Keras's default 1e-3 where
a layer does not set it) and ``keras.output_activation`` (a softmax on the output, which tsens
reads as logits). The chain is Dense layers, each optionally followed by a BatchNormalization
and then its activation (the Dense's ``activation``, or an ``Activation``/``ReLU``/
``LeakyReLU``/``Softmax`` layer); ``InputLayer``, ``Dropout``, ``Flatten`` and the other
inference no-ops in :data:`SKIPPED` are skipped, any other layer is refused by name. Hidden
layers share one activation: relu, leaky_relu (slope 0.2 as a function, 0.3 as a layer by
default), relu6, hard_tanh, or hard_sigmoid as Keras 3 defines it (clip(x/6 + 0.5), torch's
Hardsigmoid; Keras 2's clip(0.2·x + 0.5) is refused); the output layer is linear or softmax.

JSON is parsed by :func:`parse_json`, which refuses (in one line) anything ``json`` cannot decode
(bad UTF-8, syntax, integers of more than 4300 digits, nesting deep enough to exhaust Python's
recursion) and documents nested more than :data:`MAX_DEPTH` deep, so that nothing that walks a
config recursively can run out of stack.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import TsensError, first_line
from ...piecewise import parse_activation

KERAS_BN_EPS = 1e-3
MAX_JSON = 64 << 20  # the largest JSON document (config, metadata) read
MAX_DEPTH = 100  # Keras configs nest about 10 deep
SKIPPED = frozenset(  # identities at inference
    ("InputLayer", "Dropout", "Flatten", "GaussianNoise", "GaussianDropout", "AlphaDropout")
    + ("SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "ActivityRegularization")
)
ACTIVATION_LAYERS = ("Activation", "ReLU", "LeakyReLU", "Softmax")
WEIGHTED = ("Dense", "BatchNormalization")
READS = "Dense, BatchNormalization and activation layers (and InputLayer, Dropout, Flatten)"
DENSE_VARS = ("kernel", "bias")
BN_VARS = ("gamma", "beta", "moving_mean", "moving_variance")
_FUNCTIONS = {"relu": "relu", "relu6": "relu6", "hard_tanh": "hardtanh", "leaky_relu": "leaky_relu:0.2"}
_FUNCTIONS["softmax"] = "softmax"  # only on the output layer


def snake(name: str) -> str:
    """Keras's ``to_snake_case``, which names a Keras 3 layer's group after its class."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


SKIPPED_KEYS = frozenset(snake(c) for c in SKIPPED)


# --- JSON ----------------------------------------------------------------------------------


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists and objects more than ``limit`` deep (no recursion)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def parse_json(path: Path, text: str | bytes, what: str) -> Any:
    """``text`` decoded as JSON, or a one-line refusal naming ``path`` and ``what`` it is."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise TsensError(f"{path}: {what} is not readable JSON (nested too deeply)") from None
    except ValueError as e:  # syntax, UTF-8, integers beyond Python's digit limit
        raise TsensError(f"{path}: {what} is not readable JSON ({first_line(e)})") from None
    if _depth_exceeds(value, MAX_DEPTH):
        raise TsensError(f"{path}: {what} nests more than {MAX_DEPTH} levels deep; expected a Keras config")
    return value


# --- layers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One layer of a config: its class, name and keyword arguments."""

    cls: str
    name: str
    config: dict[str, Any]


@dataclass(frozen=True)
class Planned:
    """A Dense or BatchNormalization layer of the chain and the variables it stores, in order."""

    name: str
    kind: str  # "dense" or "bn"
    variables: tuple[str, ...]
    units: int | None = None


@dataclass
class _Unit:
    """A Dense layer with what follows it: a BatchNormalization, an activation."""

    dense: str
    norm: str | None = None
    act: str | None = None  # a tsens activation spec, "softmax", or None (linear)


def _number(where: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TsensError(f"{where}: {key} is {value!r}; expected a number")
    return float(value)


def _major(version: str) -> int:
    found = re.match(r"\s*(\d+)", version)
    return int(found.group(1)) if found else 0


# --- activations ---------------------------------------------------------------------------


def _activation(where: str, value: Any, keras3: bool) -> str | None:
    """The tsens spec of a Keras activation (``"softmax"`` kept as is; None for linear)."""
    name = value
    if isinstance(value, dict):  # a serialised function: {"class_name": "function", "config": "relu"}
        name = value.get("config") if isinstance(value.get("config"), str) else value.get("class_name")
    if name is None:
        return None
    if not isinstance(name, str):
        raise TsensError(f"{where} has activation {value!r}; expected the name of one")
    key = name.strip().lower()
    if key in ("", "linear"):
        return None
    if key in _FUNCTIONS:
        return _FUNCTIONS[key]
    if key == "hard_sigmoid":
        if keras3:
            return "hardsigmoid"
        raise TsensError(
            f"{where} has activation hard_sigmoid, which Keras 2 defines as clip(0.2*x + 0.5, 0, 1); "
            "tsens's hardsigmoid is clip(x/6 + 0.5, 0, 1) (torch's and Keras 3's), a different function"
        )
    raise TsensError(
        f"{where} has activation {name!r}; tsens supports piecewise-linear activations only "
        "(relu, leaky_relu, relu6, hard_tanh, Keras 3's hard_sigmoid), and linear or softmax on the output"
    )


def _leaky(where: str, slope: Any) -> str:
    spec = f"leaky_relu:{_number(where, 'negative_slope', slope):g}"
    parse_activation(spec, what=f"{where}: activation")  # refuses slopes outside [0, 1)
    return spec


def _layer_activation(where: str, spec: Spec, keras3: bool) -> str | None:
    """The activation of an Activation/ReLU/LeakyReLU/Softmax layer."""
    c = spec.config
    if spec.cls == "Activation":
        return _activation(where, c.get("activation"), keras3)
    if spec.cls == "Softmax":
        return "softmax"
    if spec.cls == "LeakyReLU":  # Keras 3 calls the slope negative_slope, Keras 2 alpha
        return _leaky(where, c.get("negative_slope", c.get("alpha", 0.3)))
    max_value, slope = c.get("max_value"), c.get("negative_slope") or 0.0
    if _number(where, "threshold", c.get("threshold") or 0.0) != 0:
        raise TsensError(f"{where} is a ReLU with threshold {c.get('threshold')}; tsens supports threshold 0")
    if max_value is None:
        return _leaky(where, slope) if slope else "relu"
    if _number(where, "max_value", max_value) == 6 and not slope:
        return "relu6"
    raise TsensError(
        f"{where} is a ReLU with max_value={max_value}, negative_slope={slope}; tsens supports relu, "
        "leaky relu and relu6 (max_value=6)"
    )


# --- configs -------------------------------------------------------------------------------


def _sources(node: Any) -> list[str]:
    """The layers an ``inbound_nodes`` (or ``output_layers``) entry names: Keras 2's
    ``[name, node, tensor, ...]`` lists and Keras 3's ``keras_history``, wherever they sit."""
    if isinstance(node, dict):
        return [s for v in node.values() for s in _sources(v)]
    if isinstance(node, list):
        if len(node) >= 3 and isinstance(node[0], str) and isinstance(node[1], int):
            return [node[0]]
        return [s for v in node for s in _sources(v)]
    return []


def _check_chain(path: Path, layers: list[dict[str, Any]], outputs: Any) -> None:
    """A Functional model's layers must each take the previous one's output, the last one's
    being the model's only output."""
    previous: str | None = None
    for layer in layers:
        name = str(layer["config"].get("name", layer.get("name")))
        sources = _sources(layer.get("inbound_nodes", []))
        if sources != ([] if previous is None else [previous]):
            got = ", ".join(sources) or "nothing"
            raise TsensError(
                f"{path}: layer {name!r} takes its input from {got}; tsens reads models whose layers form "
                "a single chain"
            )
        previous = name
    given = _sources(outputs)
    if given and given != [previous]:
        raise TsensError(f"{path}: the model's outputs are {', '.join(given)}; expected its last layer alone")


def keras_specs(path: Path, config: Any) -> list[Spec]:
    """The layers of a Keras model config (``config.json`` of a ``.keras`` archive or a legacy
    ``model_config``): Sequential (Keras 2's early list form too) or a chain-shaped Functional."""
    inner = config.get("config") if isinstance(config, dict) else None
    layers = inner if isinstance(inner, list) else inner.get("layers") if isinstance(inner, dict) else None
    if not isinstance(layers, list) or not layers:
        what = config.get("class_name") if isinstance(config, dict) else type(config).__name__
        raise TsensError(
            f"{path}: the model config ({what}) lists no layers; expected a Sequential or Functional "
            "model (a subclassed model's config does not say how its layers connect)"
        )
    specs = []
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict) or not isinstance(layer.get("config"), dict):
            raise TsensError(f"{path}: layer {i} of the model config is not a {{class_name, config}} object")
        name = layer["config"].get("name", layer.get("name", f"layer {i}"))
        specs.append(Spec(str(layer.get("class_name")), str(name), layer["config"]))
    if any("inbound_nodes" in layer for layer in layers):
        _check_chain(path, layers, inner.get("output_layers") if isinstance(inner, dict) else None)
    return specs


def pgdl_specs(path: Path, config: dict[str, Any]) -> list[Spec]:
    """The layers of a PGDL ``config.json``, named ``model_config[i]`` until matched to the file."""
    model_config = config.get("model_config")
    if not isinstance(model_config, list) or not model_config:
        raise TsensError(f"{path}: key 'model_config' is missing or empty; expected the PGDL layer list")
    specs = []
    for i, entry in enumerate(model_config):
        if not isinstance(entry, dict) or not isinstance(entry.get("layer_name"), str):
            raise TsensError(
                f'{path}: model_config[{i}] has no "layer_name"; expected {{"layer_name": "Dense", ...}}'
            )
        kwargs = {k: v for k, v in entry.items() if k != "layer_name"}
        specs.append(Spec(entry["layer_name"], f"model_config[{i}]", kwargs))
    return specs


def group_keys(specs: list[Spec]) -> dict[str, str]:
    """Keras 3's group key of every layer in a config (class in snake case, numbered per class)
    → the layer's name."""
    used: dict[str, int] = {}
    keys = {}
    for spec in specs:
        base = snake(spec.cls)
        used[base] = used.get(base, -1) + 1
        keys[base if used[base] == 0 else f"{base}_{used[base]}"] = spec.name
    return keys


def plan(path: Path, specs: list[Spec], version: str) -> tuple[list[Planned], dict[str, str]]:
    """The Dense and BatchNormalization layers a config describes, and the metadata it gives
    (``tsens.layers``, ``tsens.activation``, ``tsens.bn_eps``, ``keras.output_activation``)."""
    keras3 = _major(version) >= 3
    units: list[_Unit] = []
    planned: list[Planned] = []
    eps: tuple[str, float] | None = None
    for spec in specs:
        where, c = f"{path}: layer {spec.name!r}", spec.config
        if spec.cls in SKIPPED:
            continue
        if spec.cls == "Dense":
            if c.get("lora_rank"):
                raise TsensError(
                    f"{where} is a Dense layer with LoRA (lora_rank={c['lora_rank']}); merge it first"
                )
            units.append(_Unit(spec.name, act=_activation(where, c.get("activation"), keras3)))
            variables = DENSE_VARS if c.get("use_bias", True) is not False else DENSE_VARS[:1]
            size = c.get("units")  # PGDL configs may write 64.0
            units_ = int(size) if isinstance(size, int | float) and float(size).is_integer() else None
            planned.append(Planned(spec.name, "dense", variables, units_))
        elif spec.cls == "BatchNormalization":
            if not units or units[-1].norm is not None or units[-1].act is not None:
                after = (
                    "no Dense layer"
                    if not units
                    else f"the activation ({units[-1].act}) of {units[-1].dense!r}"
                    if units[-1].act
                    else f"BatchNormalization {units[-1].norm!r}"
                )
                raise TsensError(
                    f"{where} (BatchNormalization) follows {after}; tsens supports BatchNormalization "
                    "only between a Dense layer and its activation"
                )
            if c.get("axis", -1) not in (-1, 1, [-1], [1]):
                raise TsensError(f"{where} normalises axis {c.get('axis')}; expected the features (-1)")
            value = _number(where, "epsilon", c.get("epsilon", KERAS_BN_EPS))
            if eps is not None and value != eps[1]:
                raise TsensError(
                    f"{where} has epsilon {value:g} but {eps[0]!r} has {eps[1]:g}; tsens uses one "
                    "BatchNorm epsilon for the whole network"
                )
            eps = eps or (spec.name, value)
            keep = (c.get("scale", True) is not False, c.get("center", True) is not False, True, True)
            units[-1].norm = spec.name
            planned.append(
                Planned(spec.name, "bn", tuple(v for v, k in zip(BN_VARS, keep, strict=True) if k))
            )
        elif spec.cls in ACTIVATION_LAYERS:
            act = _layer_activation(where, spec, keras3)
            if act is None:
                continue
            if not units:
                raise TsensError(
                    f"{where} ({spec.cls}) comes before the first Dense layer; expected it after one"
                )
            if units[-1].act is not None:
                raise TsensError(
                    f"{where} ({spec.cls}) follows another activation ({units[-1].act}) of "
                    f"{units[-1].dense!r}; expected one activation after each Dense layer"
                )
            units[-1].act = act
        else:
            raise TsensError(f"{where} is a {spec.cls}; tsens reads {READS}")
    if not units:
        raise TsensError(f"{path}: the model has no Dense layer; expected an MLP")
    for u in units[:-1]:
        if u.act is None:
            raise TsensError(
                f"{path}: hidden Dense layer {u.dense!r} has no activation (linear); tsens needs a "
                "piecewise-linear activation after every hidden layer"
            )
        if u.act == "softmax":
            raise TsensError(
                f"{path}: hidden Dense layer {u.dense!r} has a softmax; expected it on the output only"
            )
        if u.act != units[0].act:
            raise TsensError(
                f"{path}: Dense layers {units[0].dense!r} ({units[0].act}) and {u.dense!r} ({u.act}) have "
                "different activations; tsens uses one activation for the whole network"
            )
    last = units[-1]
    if last.act not in (None, "softmax"):
        raise TsensError(
            f"{path}: the output layer {last.dense!r} has activation {last.act}; expected linear or "
            "softmax (tsens reads the logits)"
        )
    metadata = {"tsens.layers": ",".join(p.name for p in planned)}
    if len(units) > 1 and units[0].act is not None:
        metadata["tsens.activation"] = units[0].act
    if eps is not None:
        metadata["tsens.bn_eps"] = repr(eps[1])
    if last.act == "softmax":
        metadata["keras.output_activation"] = "softmax"
    return planned, metadata
