"""PGDL model directories (Predicting Generalization in Deep Learning, NeurIPS 2020).

A model directory (``model_<n>``) holds ``config.json``, ``{"model_config": [{"layer_name":
"Dense", "units": 64, "activation": "relu"}, ...], "input_shape": [...]}`` (each entry a
``tf.keras.layers`` class and its keyword arguments, :mod:`.config`), and ``weights.hdf5``
(Keras 2 ``save_weights``, the legacy layout of :mod:`.hdf5`), matched layer by layer: the
config's layers with weights, in order, take the names of the file's layers, in its
``layer_names`` order. ``input_shape`` becomes ``pgdl.input_shape``; the task's
``../model_configs.json``, keyed by ``<n>``, gives the model's hyper-parameters and metrics as
``pgdl.*`` metadata (an unreadable one is ignored: it is only metadata).

JSON files over 64 MiB are refused unread; ``weights.hdf5`` is read in an isolated child
process (:mod:`.isolated`).
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from ...errors import TsensError, first_line
from ..base import Weights, check_file
from .config import MAX_JSON, WEIGHTED, parse_json, pgdl_specs, plan
from .hdf5 import Read, contents, isolated_read, layer_arrays, variable_limit


def claims(path: Path) -> bool:
    """A PGDL model directory holds ``config.json`` and ``weights.hdf5``."""
    return path.is_dir() and (path / "config.json").is_file() and (path / "weights.hdf5").is_file()


def _json_file(path: Path) -> Any:
    try:
        if path.stat().st_size > MAX_JSON:
            raise TsensError(f"{path}: is larger than {MAX_JSON >> 20} MiB; expected a small JSON file")
        return parse_json(path, path.read_bytes(), "the file")
    except OSError as e:
        raise TsensError(f"{path}: not readable ({first_line(e)})") from None


def _metadata(directory: Path, config: dict[str, Any]) -> dict[str, str]:
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


def read(directory: Path, *, read: bool) -> Weights:
    """A PGDL directory's tensors (when ``read``) and metadata."""
    config_path, weights_path = directory / "config.json", directory / "weights.hdf5"
    config = _json_file(config_path)
    if not isinstance(config, dict):
        raise TsensError(f"{config_path}: holds a JSON {type(config).__name__}; expected an object")
    specs = pgdl_specs(config_path, config)
    metadata = _metadata(directory, config)
    check_file(weights_path)
    most = variable_limit(weights_path.stat().st_size)

    def body(f: Any) -> Read:
        stored, _, file_metadata, ordered = contents(weights_path, f)
        version = file_metadata.get("keras_version", "2")  # the PGDL models come from TF 2's Keras
        plan(config_path, specs, version)  # refuses layers tsens cannot read, by their index
        weighted = [i for i, s in enumerate(specs) if s.cls in WEIGHTED]
        held = [s for s in stored if s.datasets]
        if len(weighted) != len(held) or not ordered:
            raise TsensError(
                f"{directory}: config.json lists {len(weighted)} layers with weights but weights.hdf5 "
                f"holds {len(held)} (in {'model' if ordered else 'unknown'} order)"
            )
        named = list(specs)
        for i, s in zip(weighted, held, strict=True):
            named[i] = replace(named[i], name=s.name)
        found = (stored, named, {**file_metadata, **metadata}, True)
        return layer_arrays(weights_path, found, version, read=read, limit=most)

    tensors, derived = isolated_read(weights_path, weights_path, body)
    return Weights(tensors, derived, (weights_path, config_path))
