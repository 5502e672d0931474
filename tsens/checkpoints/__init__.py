"""Reading checkpoints into a :class:`~tsens.network.Network`, whatever wrote them.

Every format (:data:`FORMATS`) turns a path into :class:`~tsens.checkpoints.base.Weights`:
tensors under PyTorch's names plus metadata. :mod:`.layout` then groups, orders and chains
them into layers, the same way for every format. The formats:

* ``.safetensors``; ``torch.save`` files (``.pt``, ``.pth``, ``.bin``, ``.ckpt``, Lightning
  checkpoints included), only ever through ``weights_only=True`` (:mod:`.torchfiles`);
* Hugging Face directories: ``model.safetensors``, sharded safetensors with
  ``model.safetensors.index.json``, or ``pytorch_model.bin`` (sharded too), with a
  ``config.json`` that may name the activation (:mod:`.huggingface`);

and those registered by the optional readers below.

Every refusal is a one-line :class:`~tsens.errors.TsensError` that starts with the path; a file
that cannot be parsed is reported as truncated or corrupt, without the parser's internals.
:func:`read_metadata` gives a checkpoint's metadata without reading its weights where the
format allows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ..errors import TsensError
from ..network import Network
from . import flax as flaxfiles
from . import huggingface, torchfiles
from . import keras as kerasfiles
from . import onnx as onnxfiles
from .base import Format, Weights, check_file, files_sha256, has_suffix
from .layout import build_network, checked_weights

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")

FORMATS: tuple[Format, ...] = (
    Format(
        "safetensors",
        has_suffix(".safetensors"),
        torchfiles.read_safetensors,
        torchfiles.safetensors_metadata,
    ),
    Format("torch.save", has_suffix(*TORCH_SUFFIXES), torchfiles.read_torch, torchfiles.torch_metadata),
    Format("Hugging Face directory", huggingface.claims, huggingface.read, huggingface.metadata),
    Format("Flax msgpack", flaxfiles.claims, flaxfiles.read, flaxfiles.metadata, extra="flax"),
    Format("ONNX", has_suffix(".onnx"), onnxfiles.read, onnxfiles.metadata, extra="onnx"),
    Format(
        "Keras HDF5", has_suffix(".h5", ".hdf5"), kerasfiles.read_h5, kerasfiles.h5_metadata, extra="keras"
    ),
    Format(
        "Keras archive",
        has_suffix(".keras"),
        kerasfiles.read_archive,
        kerasfiles.archive_metadata,
        extra="keras",
    ),
    Format(
        "PGDL directory",
        kerasfiles.pgdl_claims,
        kerasfiles.read_pgdl,
        kerasfiles.pgdl_metadata,
        extra="keras",
    ),
)
SUFFIXES = (".safetensors", *TORCH_SUFFIXES, ".msgpack", ".onnx", *kerasfiles.SUFFIXES)
FORMAT_NAMES = ", ".join(SUFFIXES) + " or a Hugging Face or PGDL model directory"


def find_format(path: str | Path) -> Format:
    """The format that reads ``path``, or a one-line refusal."""
    path = Path(path)
    if not path.exists():
        raise TsensError(f"{path}: no such file")
    found = next((f for f in FORMATS if f.claims(path)), None)
    if found is not None:
        return found
    if path.is_dir():
        raise TsensError(
            f"{path}: is a directory but holds no checkpoint tsens reads; expected {FORMAT_NAMES}"
        )
    check_file(path)
    suffix = path.suffix or path.name
    raise TsensError(f"{path}: unknown checkpoint suffix {suffix!r}; expected one of {FORMAT_NAMES}")


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    return files_sha256([Path(path)])


def read_weights(path: str | Path) -> Weights:
    """A checkpoint's :class:`Weights`: its floating-point tensors under torch names (prefixes
    stripped, all finite, ``num_batches_tracked`` dropped), metadata, and the files read."""
    path = Path(path)
    weights = find_format(path).read(path)
    return Weights(checked_weights(path, weights.tensors), weights.metadata, weights.files or (path,))


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The checked tensors and the metadata of a checkpoint (see :func:`read_weights`)."""
    weights = read_weights(path)
    return weights.tensors, weights.metadata


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a checkpoint, as :func:`load_network` gives it in ``Network.metadata``,
    without reading the weights where the format allows (a ``.safetensors`` header; a
    memory-mapped load of a zip ``torch.save`` file). Missing, corrupt and code-carrying files
    are refused as by :func:`load_network`."""
    path = Path(path)
    return find_format(path).metadata(path)


def load_network(
    path: str | Path, *, activation: str | None = None, layers: Sequence[str] | None = None
) -> Network:
    """The float64 CPU network stored in ``path``.

    One rule for settings the checkpoint records (the same as for preprocessing in
    :mod:`tsens.stream`): a given ``activation`` wins over the metadata entry
    ``tsens.activation``, with a warning when they differ; without one the record applies, else
    relu. ``layers`` (key prefixes in order) overrides ``tsens.layers`` and the order inferred
    from the keys.
    """
    path = Path(path)
    weights = read_weights(path)
    return build_network(
        path,
        weights.tensors,
        weights.metadata,
        activation=activation,
        layers=layers,
        sha256=files_sha256(weights.files),
    )


__all__ = [
    "FORMATS",
    "Format",
    "Weights",
    "file_sha256",
    "find_format",
    "load_network",
    "read_checkpoint",
    "read_metadata",
    "read_weights",
]
