"""Keras checkpoints: Keras 3 ``.weights.h5`` files and ``.keras`` archives, legacy (Keras 2)
HDF5 files, and the model directories of the PGDL competition. Needs h5py (``tsens[keras]``);
Keras itself is never imported.

Layouts:

* ``.weights.h5`` (Keras 3 ``model.save_weights``): ``layers/<key>/vars/0``, ``1``, ... where
  ``<key>`` is the layer's class in snake case, numbered per class in model order (``dense``,
  ``dense_1``, ``batch_normalization``) and the ``vars`` group's ``name`` attribute is the
  layer's name. Variables are numbered, not named: a Dense holds kernel[, bias], a
  BatchNormalization [gamma][, beta], moving_mean, moving_variance (three of them is ambiguous,
  and refused). There is no config: the layer order is where the variables lie in the file (Keras
  writes them in model order; failing that, the keys' numbers when all layers are Dense), no
  activation is recorded (relu unless one is given) and the BatchNorm epsilon is taken to be
  Keras's default, 1e-3. Legacy files without ``model_config`` are read the same way, in the
  order of their ``layer_names``.
* ``.keras`` (Keras 3 ``model.save``): a zip of ``config.json``, ``metadata.json`` and
  ``model.weights.h5`` (the layout above). Members are read in memory, never extracted, and
  refused when they declare more than a size cap.
* legacy HDF5 ``.h5``/``.hdf5`` (Keras 2 ``model.save``/``save_weights``; Keras 3
  ``model.save("x.h5")``): the root, or its ``model_weights`` group, lists ``layer_names`` in
  model order; each layer's group lists ``weight_names`` (``dense/kernel:0``,
  ``sequential/dense/kernel``). A root ``model_config`` attribute holds the model's config.
* PGDL (Predicting Generalization in Deep Learning, NeurIPS 2020): a directory holding
  ``config.json``, ``{"model_config": [{"layer_name": "Dense", "units": 64, "activation":
  "relu"}, ...], "input_shape": [...]}`` (each entry a ``tf.keras.layers`` class and its keyword
  arguments), and ``weights.hdf5`` (Keras 2 ``save_weights``), matched layer by layer. The
  task's ``../model_configs.json`` gives the model's hyper-parameters and metrics as ``pgdl.*``
  metadata.

Mapping: a Dense ``<name>``'s kernel (in × out) becomes ``<name>.weight`` transposed, its bias
``<name>.bias``; a BatchNormalization's gamma, beta, moving_mean, moving_variance become
``.weight``, ``.bias``, ``.running_mean``, ``.running_var`` (with only one of gamma and beta,
the other is filled in as ones or zeros: torch's affine BatchNorm has both). A config (``.keras``, legacy
``model_config``, PGDL) must describe one chain of Dense layers, each optionally followed by a
BatchNormalization and then its activation (the Dense's ``activation`` or an
``Activation``/``ReLU``/``LeakyReLU`` layer); ``InputLayer``, ``Dropout``, ``Flatten`` and other
inference no-ops are skipped, any other layer is refused by name. Hidden layers share one
activation: relu, leaky_relu (slope 0.2 as a function, 0.3 as a layer by default), relu6,
hard_tanh, or hard_sigmoid as Keras 3 defines it (clip(x/6 + 0.5), torch's Hardsigmoid; Keras 2's
clip(0.2·x + 0.5) is refused). The output layer is linear or softmax: tsens reads the logits,
and ``keras.output_activation`` records the softmax. The config gives ``tsens.layers``,
``tsens.activation`` and ``tsens.bn_eps`` (one epsilon for the network; Keras's default 1e-3
where a layer does not set it).

Safety: a variable declaring more bytes than its file could hold (or than 8 GiB), and an archive
member declaring more than 64 MiB at over 100 times its compressed size, are refused before
they are read; anything h5py or zipfile cannot parse is one line, ``<path>: not a readable Keras
HDF5 file (...)`` or ``<path>: not a readable .keras archive (...)``.
"""

from __future__ import annotations

import io
import json
import math
import re
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import TsensError
from ..extras import require
from ..piecewise import parse_activation
from .base import Weights, brief, check_file

SUFFIXES = (".weights.h5", ".h5", ".hdf5", ".keras")
KERAS_BN_EPS = 1e-3
MAX_BYTES = 8 << 30  # no variable nor archive member is read beyond this
_MAX_JSON = 64 << 20
_SKIPPED = frozenset(  # identities at inference
    ("InputLayer", "Dropout", "Flatten", "GaussianNoise", "GaussianDropout", "AlphaDropout")
    + ("SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "ActivityRegularization")
)
_ACTIVATION_LAYERS = ("Activation", "ReLU", "LeakyReLU", "Softmax")
_WEIGHTED = ("Dense", "BatchNormalization")
_READS = "Dense, BatchNormalization and activation layers (and InputLayer, Dropout, Flatten)"
_DENSE_VARS = ("kernel", "bias")
_BN_VARS = ("gamma", "beta", "moving_mean", "moving_variance")
_TORCH_NAMES = {"kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias"}
_TORCH_NAMES.update(moving_mean="running_mean", moving_variance="running_var")
_FUNCTIONS = {"relu": "relu", "relu6": "relu6", "hard_tanh": "hardtanh", "leaky_relu": "leaky_relu:0.2"}
_FUNCTIONS["softmax"] = "softmax"  # only on the output layer


def _snake(name: str) -> str:
    """Keras's ``to_snake_case``, which names a Keras 3 layer's group after its class."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


_SKIPPED_KEYS = frozenset(_snake(c) for c in _SKIPPED)


def _h5py(path: Path) -> Any:
    try:
        return require("h5py", "keras", "reading Keras checkpoints")
    except TsensError as e:
        raise TsensError(f"{path}: {e}") from None


# --- what the file holds and what the config says ----------------------------------------


@dataclass(frozen=True)
class _Stored:
    """One layer's variables in the file: ``names`` are the variable names (legacy files) or
    None each (Keras 3 numbers them); ``key`` is its group, ``cls`` the snake-case class a
    Keras 3 group key gives (None in legacy files), ``offset`` where its variables start."""

    name: str
    key: str
    cls: str | None
    names: tuple[str | None, ...]
    datasets: tuple[Any, ...]
    offset: int | None = None


@dataclass(frozen=True)
class _Spec:
    """One layer of a config: its class, name and keyword arguments."""

    cls: str
    name: str
    config: dict[str, Any]


@dataclass(frozen=True)
class _Planned:
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


def _texts(value: Any) -> list[str]:
    """An HDF5 string-array attribute (bytes or str items; an empty float array) as strings."""
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in np.asarray(value).ravel()]


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


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


def _layer_activation(where: str, spec: _Spec, keras3: bool) -> str | None:
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


def _keras_specs(path: Path, config: Any) -> list[_Spec]:
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
        specs.append(_Spec(str(layer.get("class_name")), str(name), layer["config"]))
    if any("inbound_nodes" in layer for layer in layers):
        _check_chain(path, layers, inner.get("output_layers") if isinstance(inner, dict) else None)
    return specs


def _pgdl_specs(path: Path, config: dict[str, Any]) -> list[_Spec]:
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
        specs.append(_Spec(entry["layer_name"], f"model_config[{i}]", kwargs))
    return specs


def _plan(path: Path, specs: list[_Spec], version: str) -> tuple[list[_Planned], dict[str, str]]:
    """The Dense and BatchNormalization layers a config describes, and the metadata it gives
    (``tsens.layers``, ``tsens.activation``, ``tsens.bn_eps``, ``keras.output_activation``)."""
    keras3 = _major(version) >= 3
    units: list[_Unit] = []
    planned: list[_Planned] = []
    eps: tuple[str, float] | None = None
    for spec in specs:
        where, c = f"{path}: layer {spec.name!r}", spec.config
        if spec.cls in _SKIPPED:
            continue
        if spec.cls == "Dense":
            if c.get("lora_rank"):
                raise TsensError(
                    f"{where} is a Dense layer with LoRA (lora_rank={c['lora_rank']}); merge it first"
                )
            units.append(_Unit(spec.name, act=_activation(where, c.get("activation"), keras3)))
            variables = _DENSE_VARS if c.get("use_bias", True) is not False else _DENSE_VARS[:1]
            size = c.get("units")  # PGDL configs may write 64.0
            units_ = int(size) if isinstance(size, int | float) and float(size).is_integer() else None
            planned.append(_Planned(spec.name, "dense", variables, units_))
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
                _Planned(spec.name, "bn", tuple(v for v, k in zip(_BN_VARS, keep, strict=True) if k))
            )
        elif spec.cls in _ACTIVATION_LAYERS:
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
            raise TsensError(f"{where} is a {spec.cls}; tsens reads {_READS}")
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


def _inferred(path: Path, stored: _Stored) -> _Planned:
    """What a layer is, from its variables alone (a file without config)."""
    where, names, n = f"{path}: layer {stored.name!r}", stored.names, len(stored.datasets)
    if all(v is not None for v in names):  # legacy files name the variables
        kind, known = ("dense", _DENSE_VARS) if "kernel" in names else ("bn", _BN_VARS)
        if (kind == "bn" and not {"moving_mean", "moving_variance"} & set(names)) or set(names) - set(known):
            raise TsensError(
                f"{where} holds {', '.join(map(str, names))}; tsens reads Dense (kernel, bias) and "
                "BatchNormalization (gamma, beta, moving_mean, moving_variance) layers"
            )
        return _Planned(stored.name, kind, tuple(v for v in known if v in names))
    if stored.cls == "dense" and n in (1, 2):
        return _Planned(stored.name, "dense", _DENSE_VARS[:n])
    if stored.cls == "batch_normalization" and n in (2, 4):
        return _Planned(stored.name, "bn", _BN_VARS[4 - n :])
    if stored.cls == "batch_normalization" and n == 3:
        raise TsensError(
            f"{where} is a BatchNormalization with 3 variables: gamma (scale) or beta (center) is missing "
            "and a weights-only file does not say which; load the .keras file, which has the config"
        )
    raise TsensError(f"{where} is a {stored.cls} layer with {n} variables; tsens reads {_READS}")


# --- HDF5 ----------------------------------------------------------------------------------


@contextmanager
def _h5_file(path: Path, source: Path | io.BytesIO, what: str = "") -> Iterator[Any]:
    """The open HDF5 file; whatever h5py raises while it is used becomes one line."""
    h5py = _h5py(path)
    try:
        with h5py.File(source, "r") as f:
            yield f
    except TsensError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError, IndexError, AttributeError) as e:
        raise TsensError(f"{path}: not a readable Keras HDF5 file ({what}{brief(e)})") from None


def _keras3_stored(path: Path, f: Any) -> tuple[list[_Stored], bool]:
    """The layers of a Keras 3 weights file and whether they are in model order: the order of
    their variables in the file, or (where some have no offset) their keys' numbers if all are
    of one class."""
    h5py = _h5py(path)
    group = f["layers"]
    if not isinstance(group, h5py.Group):
        raise TsensError(f"{path}: 'layers' is not a group; expected layers/<layer>/vars")
    stored: list[_Stored] = []
    for key in group:
        layer, cls = group[key], re.sub(r"_\d+$", "", key)
        if cls in _SKIPPED_KEYS:
            continue
        if not isinstance(layer, h5py.Group) or any(k != "vars" for k in layer):
            inner = next((k for k in layer if k != "vars"), "") if isinstance(layer, h5py.Group) else ""
            raise TsensError(
                f"{path}: layers/{key} holds {inner or 'no group'} beside its variables (a nested model or "
                "a layer with sublayers); tsens reads a flat chain of Dense and BatchNormalization layers"
            )
        variables = layer.get("vars")
        if variables is None or not len(variables):
            continue
        if not isinstance(variables, h5py.Group) or not all(k.isdigit() for k in variables):
            raise TsensError(f"{path}: layers/{key}/vars is not a group of numbered variables")
        datasets = tuple(variables[k] for k in sorted(variables, key=int))
        offsets = [d.id.get_offset() if isinstance(d, h5py.Dataset) else None for d in datasets]
        name = _text(variables.attrs.get("name", key))
        offset = None if None in offsets else min(o for o in offsets if o is not None)
        stored.append(_Stored(name, key, cls, (None,) * len(datasets), datasets, offset))
    if all(s.offset is not None for s in stored):
        return sorted(stored, key=lambda s: s.offset or 0), True
    if len({s.cls for s in stored}) == 1:
        return sorted(stored, key=lambda s: int(s.key.rpartition("_")[2] if s.key != s.cls else 0)), True
    return stored, False


def _legacy_stored(path: Path, root: Any) -> list[_Stored]:
    """The layers of a legacy file, in the order of its ``layer_names``."""
    h5py = _h5py(path)
    stored = []
    for name in _texts(root.attrs["layer_names"]):
        group = root.get(name)
        if not isinstance(group, h5py.Group):
            raise TsensError(f"{path}: layer {name!r} is in layer_names but the file has no group for it")
        weight_names = _texts(group.attrs.get("weight_names", []))
        datasets = tuple(group.get(w) for w in weight_names)
        missing = next((w for w, d in zip(weight_names, datasets, strict=True) if d is None), None)
        if missing is not None:
            raise TsensError(f"{path}: layer {name!r} lists weight {missing!r}, which the file does not hold")
        variables = tuple(w.rsplit("/", 1)[-1].split(":", 1)[0] for w in weight_names)
        stored.append(_Stored(name, name, None, variables, datasets))
    return stored


def _contents(path: Path, f: Any) -> tuple[list[_Stored], Any, dict[str, str], bool]:
    """A Keras HDF5 file's layers, its model config (None without), its scalar attributes as
    metadata, and whether the layers are in model order."""
    root = f.get("model_weights", f)
    if "layer_names" in root.attrs:
        metadata = {k: _text(v) for k, v in f.attrs.items() if k in ("keras_version", "backend")}
        config = f.attrs.get("model_config")
        config = None if config is None else _json(path, _text(config), "model_config")
        return _legacy_stored(path, root), config, metadata, True
    if "layers" in f:
        stored, ordered = _keras3_stored(path, f)
        return stored, None, {}, ordered
    raise TsensError(
        f"{path}: holds no Keras weights; expected a Keras 3 'layers' group (.weights.h5) or a Keras 2 "
        "'layer_names' attribute (.h5)"
    )


def _read(path: Path, label: str, dataset: Any, limit: int) -> torch.Tensor:
    """One variable, after checking its type and that its declared size is plausible."""
    h5py = _h5py(path)
    if not isinstance(dataset, h5py.Dataset) or dataset.shape is None:
        raise TsensError(f"{path}: variable {label!r} is not an array")
    dtype = dataset.dtype
    if dtype.kind != "f" or dtype.itemsize not in (2, 4, 8):
        raise TsensError(f"{path}: variable {label!r} has dtype {dtype}; expected floating-point weights")
    size = math.prod(dataset.shape) * dtype.itemsize
    if size > limit:
        raise TsensError(
            f"{path}: variable {label!r} declares shape {tuple(dataset.shape)} ({size:,} bytes), more "
            "than the file can hold; the file is corrupt"
        )
    array = np.asarray(dataset[()])
    return torch.from_numpy(np.ascontiguousarray(array.astype(array.dtype.newbyteorder("="), copy=False)))


def _tensors(
    path: Path, planned: list[_Planned], stored: list[_Stored], limit: int
) -> dict[str, torch.Tensor]:
    """The torch-named tensors of the planned layers, read from the file's layers."""
    by_name = {s.name: s for s in stored}
    tensors: dict[str, torch.Tensor] = {}
    for p in planned:
        s = by_name.get(p.name)
        if s is None:
            raise TsensError(
                f"{path}: layer {p.name!r} is in the model config but its weights are not in the file"
            )
        if all(v is not None for v in s.names):
            if sorted(map(str, s.names)) != sorted(p.variables):
                raise TsensError(
                    f"{path}: layer {p.name!r} holds {', '.join(map(str, s.names)) or 'no weights'}; "
                    f"expected {', '.join(p.variables)}"
                )
            bound = {str(v): d for v, d in zip(s.names, s.datasets, strict=True)}
        elif len(s.datasets) != len(p.variables):
            raise TsensError(
                f"{path}: layer {p.name!r} holds {len(s.datasets)} variables; expected "
                f"{len(p.variables)} ({', '.join(p.variables)})"
            )
        else:
            bound = dict(zip(p.variables, s.datasets, strict=True))
        for variable in p.variables:
            t = _read(path, f"{p.name}/{variable}", bound[variable], limit)
            if variable == "kernel":
                if t.ndim != 2:
                    raise TsensError(
                        f"{path}: layer {p.name!r} has a {t.ndim}-D kernel {tuple(t.shape)}; a convolution?"
                        " tsens reads Dense layers (2-D kernels)"
                    )
                if p.units is not None and t.shape[1] != p.units:
                    raise TsensError(
                        f"{path}: layer {p.name!r} has a kernel of shape {tuple(t.shape)}; expected "
                        f"{p.units} units as its config says"
                    )
                t = t.T.contiguous()
            tensors[f"{p.name}.{_TORCH_NAMES[variable]}"] = t
        if p.kind == "bn" and len({"gamma", "beta"} & set(p.variables)) == 1:
            # torch's affine BatchNorm has both: without scale γ is 1, without center β is 0
            mean = tensors[f"{p.name}.running_mean"]
            key, fill = (
                ("bias", torch.zeros_like(mean))
                if "gamma" in p.variables
                else ("weight", torch.ones_like(mean))
            )
            tensors[f"{p.name}.{key}"] = fill
    used = {p.name for p in planned}
    extra = next((s.name for s in stored if s.datasets and s.name not in used), None)
    if extra is not None:
        raise TsensError(
            f"{path}: the file holds weights of layer {extra!r}, which the model config does not list"
        )
    return tensors


def _weights(
    path: Path,
    contents: tuple[list[_Stored], list[_Spec] | None, dict[str, str], bool],
    version: str,
    *,
    read: bool,
    limit: int,
    files: tuple[Path, ...],
) -> Weights:
    """Weights (tensors only when ``read``) from a file's layers and, where there is one, its config."""
    stored, specs, metadata, ordered = contents
    if specs is None:
        planned = [_inferred(path, s) for s in stored if s.datasets]
        derived = {"tsens.layers": ",".join(p.name for p in planned)} if ordered else {}
        if any(p.kind == "bn" for p in planned):
            derived["tsens.bn_eps"] = repr(KERAS_BN_EPS)
    else:
        planned, derived = _plan(path, specs, version)
    tensors = _tensors(path, planned, stored, limit) if read else {}
    return Weights(tensors, {**metadata, **derived}, files)


def _limit(size: int) -> int:
    """The most bytes a variable of a ``size``-byte file may declare."""
    return min(MAX_BYTES, 4 * size + (1 << 20))


def _h5(path: Path, *, read: bool) -> Weights:
    check_file(path)
    with _h5_file(path, path) as f:
        stored, config, metadata, ordered = _contents(path, f)
        specs = None if config is None else _keras_specs(path, config)
        contents = (stored, specs, metadata, ordered)
        return _weights(
            path,
            contents,
            metadata.get("keras_version", ""),
            read=read,
            limit=_limit(path.stat().st_size),
            files=(path,),
        )


def read_h5(path: Path) -> Weights:
    """A Keras 3 ``.weights.h5`` or a legacy Keras ``.h5``/``.hdf5`` file."""
    return _h5(path, read=True)


def h5_metadata(path: Path) -> dict[str, str]:
    """The metadata of a Keras HDF5 file: its attributes and what its config (or, without one,
    its layers) says; no variable is read."""
    return _h5(path, read=False).metadata


# --- .keras archives -----------------------------------------------------------------------


def _json(path: Path, text: str | bytes, what: str) -> Any:
    try:
        return json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TsensError(f"{path}: {what} is not readable JSON ({brief(e)})") from None


def _member(path: Path, archive: zipfile.ZipFile, name: str, cap: int) -> bytes | None:
    """One archive member's bytes (None if absent), refused when it declares more than ``cap``,
    or more than 64 MiB at over 100 times its compressed size (a zip bomb)."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        return None
    if info.file_size > min(cap, max(_MAX_JSON, 100 * info.compress_size)):
        raise TsensError(
            f"{path}: archive member {name} declares {info.file_size:,} bytes ({info.compress_size:,} "
            "compressed), more than tsens reads; expected a small network"
        )
    with archive.open(info) as f:  # reads no more than the declared size, and checks the CRC
        return f.read()


def _archive(path: Path, *, read: bool) -> Weights:
    check_file(path)
    try:
        with zipfile.ZipFile(path) as archive:
            raw_config = _member(path, archive, "config.json", _MAX_JSON)
            raw_metadata = _member(path, archive, "metadata.json", _MAX_JSON)
            raw_weights = _member(path, archive, "model.weights.h5", MAX_BYTES) if read else b""
    except TsensError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, RuntimeError, NotImplementedError) as e:
        raise TsensError(f"{path}: not a readable .keras archive ({brief(e)})") from None
    if raw_config is None or raw_weights is None:
        missing = "config.json" if raw_config is None else "model.weights.h5"
        raise TsensError(
            f"{path}: the archive has no {missing}; expected a .keras file (config.json, model.weights.h5)"
        )
    info = _json(path, raw_metadata, "metadata.json") if raw_metadata else {}
    metadata = (
        {str(k): str(v) for k, v in info.items() if isinstance(v, str | int | float)}
        if isinstance(info, dict)
        else {}
    )
    specs = _keras_specs(path, _json(path, raw_config, "config.json"))
    version = metadata.get("keras_version", "")
    if not read:
        return _weights(path, ([], specs, metadata, True), version, read=False, limit=0, files=(path,))
    with _h5_file(path, io.BytesIO(raw_weights), "model.weights.h5: ") as f:
        if "layers" not in f:
            raise TsensError(f"{path}: model.weights.h5 has no 'layers' group; expected Keras 3 weights")
        stored, _ = _keras3_stored(path, f)  # the config gives the order
        names = {s.name for s in stored}
        if any(s.cls in _WEIGHTED and s.name not in names for s in specs):
            keys = _keys(specs)  # files without the 'name' attribute: match by group key
            stored = [replace(s, name=keys.get(s.key, s.name)) for s in stored]
        contents = (stored, specs, metadata, True)
        return _weights(path, contents, version, read=True, limit=_limit(len(raw_weights)), files=(path,))


def _keys(specs: list[_Spec]) -> dict[str, str]:
    """Keras 3's group key of every layer in a config (class in snake case, numbered per class)
    → the layer's name."""
    used: dict[str, int] = {}
    keys = {}
    for spec in specs:
        base = _snake(spec.cls)
        used[base] = used.get(base, -1) + 1
        keys[base if used[base] == 0 else f"{base}_{used[base]}"] = spec.name
    return keys


def read_archive(path: Path) -> Weights:
    """A Keras ``.keras`` archive."""
    return _archive(path, read=True)


def archive_metadata(path: Path) -> dict[str, str]:
    """The metadata of a ``.keras`` archive, from its ``metadata.json`` and config; the weights
    are not read."""
    return _archive(path, read=False).metadata


# --- PGDL model directories ----------------------------------------------------------------


def pgdl_claims(path: Path) -> bool:
    """A PGDL model directory holds ``config.json`` and ``weights.hdf5``."""
    return path.is_dir() and (path / "config.json").is_file() and (path / "weights.hdf5").is_file()


def _json_file(path: Path) -> Any:
    try:
        if path.stat().st_size > _MAX_JSON:
            raise TsensError(f"{path}: is larger than {_MAX_JSON >> 20} MiB; expected a small JSON file")
        return _json(path, path.read_bytes(), "the file")
    except OSError as e:
        raise TsensError(f"{path}: not readable ({brief(e)})") from None


def _pgdl_metadata(directory: Path, config: dict[str, Any]) -> dict[str, str]:
    """``pgdl.input_shape`` and the model's hyper-parameters and metrics from the task's
    ``model_configs.json`` (keyed by the number in ``model_<n>``), where there is one."""
    metadata = {}
    if "input_shape" in config:
        metadata["pgdl.input_shape"] = json.dumps(config["input_shape"])
    found = re.fullmatch(r"model_(\w+)", directory.resolve().name)
    task = directory.resolve().parent / "model_configs.json"
    if found and task.is_file():
        try:
            entry = _json_file(task).get(found.group(1))
        except (TsensError, AttributeError):  # unreadable or not an object: it is only metadata
            entry = None
        for group in ("hparams", "metrics") if isinstance(entry, dict) else ():
            values = entry.get(group)
            for key, value in values.items() if isinstance(values, dict) else ():
                if isinstance(value, dict) and "current_value" in value:
                    value = value["current_value"]
                metadata[f"pgdl.{key}"] = value if isinstance(value, str) else json.dumps(value)
    return metadata


def _pgdl(directory: Path, *, read: bool) -> Weights:
    config_path, weights_path = directory / "config.json", directory / "weights.hdf5"
    config = _json_file(config_path)
    if not isinstance(config, dict):
        raise TsensError(f"{config_path}: holds a JSON {type(config).__name__}; expected an object")
    specs = _pgdl_specs(config_path, config)
    metadata = _pgdl_metadata(directory, config)
    check_file(weights_path)
    with _h5_file(weights_path, weights_path) as f:
        stored, _, file_metadata, ordered = _contents(weights_path, f)
        version = file_metadata.get("keras_version", "2")  # the PGDL models come from TF 2's Keras
        _plan(config_path, specs, version)  # refuses layers tsens cannot read, by their index
        weighted = [i for i, s in enumerate(specs) if s.cls in _WEIGHTED]
        held = [s for s in stored if s.datasets]
        if len(weighted) != len(held) or not ordered:
            raise TsensError(
                f"{directory}: config.json lists {len(weighted)} layers with weights but weights.hdf5 "
                f"holds {len(held)} (in {'model' if ordered else 'unknown'} order)"
            )
        for i, s in zip(weighted, held, strict=True):
            specs[i] = replace(specs[i], name=s.name)
        contents = (stored, specs, {**file_metadata, **metadata}, True)
        limit = _limit(weights_path.stat().st_size)
        return _weights(
            weights_path, contents, version, read=read, limit=limit, files=(weights_path, config_path)
        )


def read_pgdl(directory: Path) -> Weights:
    """A PGDL model directory (``config.json`` and ``weights.hdf5``)."""
    return _pgdl(directory, read=True)


def pgdl_metadata(directory: Path) -> dict[str, str]:
    """The metadata of a PGDL model directory; no variable is read."""
    return _pgdl(directory, read=False).metadata
