"""Hugging Face model directories: the directory is the checkpoint.

Weights come from ``model.safetensors``; or shards listed by ``model.safetensors.index.json``
(its ``weight_map`` names, for every tensor, the shard file that holds it); or
``pytorch_model.bin`` and its index likewise, read weights-only. A ``config.json`` beside them
may name the activation (``hidden_act``, ``activation_function``, ``activation`` or
``hidden_activation``), which becomes ``tsens.activation``; its other scalar entries become
metadata. Shard names must be plain file names inside the directory. :func:`shapes` gives the
tensors' shapes from the files' headers (memory-mapped zip ``.bin`` files), without their data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..errors import TsensError
from .base import Weights
from .torchfiles import (
    read_safetensors,
    read_torch,
    safetensors_metadata,
    safetensors_shapes,
    torch_metadata,
    torch_shapes,
)

SINGLE = ("model.safetensors", "pytorch_model.bin")
INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
ACTIVATION_KEYS = ("hidden_act", "activation_function", "activation", "hidden_activation")
_MAX_JSON = 64 << 20  # an index or config larger than this is no index or config


def claims(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in (*INDEXES, *SINGLE))


def _json(path: Path) -> dict[str, Any]:
    try:
        if path.stat().st_size > _MAX_JSON:
            raise TsensError(f"{path}: is larger than {_MAX_JSON >> 20} MiB; expected a small JSON file")
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON, UTF-8, huge ints
        raise TsensError(f"{path}: not readable JSON ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise TsensError(f"{path}: holds a JSON {type(obj).__name__}; expected an object")
    return obj


def _config_metadata(directory: Path) -> tuple[dict[str, str], list[Path]]:
    config = directory / "config.json"
    if not config.is_file():
        return {}, []
    metadata: dict[str, str] = {}
    for key, value in _json(config).items():
        if isinstance(value, str | bool | int | float):
            metadata[str(key)] = str(value)
    act = next((metadata[k] for k in ACTIVATION_KEYS if k in metadata), None)
    if act is not None:
        metadata.setdefault("tsens.activation", act)
    return metadata, [config]


def _shards(directory: Path, index: Path) -> list[tuple[Path, list[str]]]:
    """Each shard named by the index, in order of first mention, with the tensors it holds."""
    weight_map = _json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise TsensError(
            f"{index}: key 'weight_map' is missing or empty; expected tensor names → shard files"
        )
    shards: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or Path(shard).name != shard or shard in ("", ".", ".."):
            raise TsensError(
                f"{index}: weight_map[{name!r}] = {shard!r}; expected a file name in {directory}"
            )
        shards.setdefault(shard, []).append(str(name))
    for shard in shards:
        try:
            found = (directory / shard).is_file()
        except OSError:  # a name too long for the file system
            found = False
        if not found:
            shown = shard if len(shard) <= 120 else shard[:117] + "..."
            raise TsensError(f"{index}: names shard {shown!r}, which is not in {directory}")
    return [(directory / shard, names) for shard, names in shards.items()]


def _gather(directory: Path, shape_only: bool) -> Weights:
    """The weights of the directory (shape-only tensors with ``shape_only``: see :func:`shapes`)."""
    read_safe, read_pt = (safetensors_shapes, torch_shapes) if shape_only else (read_safetensors, read_torch)

    def read_file(path: Path) -> Weights:
        return read_safe(path) if path.suffix == ".safetensors" else read_pt(path)

    metadata, files = _config_metadata(directory)
    index = next((directory / n for n in INDEXES if (directory / n).is_file()), None)
    if index is None:
        single = next(directory / n for n in SINGLE if (directory / n).is_file())
        weights = read_file(single)
        return Weights(weights.tensors, {**weights.metadata, **metadata}, (single, *files))
    tensors: dict[str, torch.Tensor] = {}
    shard_files: list[Path] = []
    for shard, names in _shards(directory, index):
        weights = read_file(shard)
        missing = [n for n in names if n not in weights.tensors]
        if missing:
            raise TsensError(f"{shard}: has no tensor {missing[0]!r}, which {index.name} places there")
        tensors.update({n: weights.tensors[n] for n in names})
        metadata = {**weights.metadata, **metadata}
        shard_files.append(shard)
    return Weights(tensors, metadata, (index, *shard_files, *files))


def read(directory: Path) -> Weights:
    """The weights of a model directory, merged across shards, with ``config.json``'s metadata."""
    return _gather(directory, shape_only=False)


def shapes(directory: Path) -> Weights:
    """:func:`read` with shape-only tensors: safetensors headers, memory-mapped zip ``.bin`` files."""
    return _gather(directory, shape_only=True)


def metadata(directory: Path) -> dict[str, str]:
    config, _ = _config_metadata(directory)
    index = next((directory / n for n in INDEXES if (directory / n).is_file()), None)
    first = (
        next(directory / n for n in SINGLE if (directory / n).is_file())
        if index is None
        else _shards(directory, index)[0][0]
    )
    own = safetensors_metadata(first) if first.suffix == ".safetensors" else torch_metadata(first)
    return {**own, **config}
