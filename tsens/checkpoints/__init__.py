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
:func:`read_metadata` gives a checkpoint's metadata, and :func:`read_widths` its layer widths,
without reading its weights where the format allows; :func:`checkpoints_in` lists the
checkpoints in a plain directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ..errors import TsensError, first_line
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
        shapes=torchfiles.safetensors_shapes,
    ),
    Format(
        "torch.save",
        has_suffix(*TORCH_SUFFIXES),
        torchfiles.read_torch,
        torchfiles.torch_metadata,
        shapes=torchfiles.torch_shapes,
    ),
    Format(
        "Hugging Face directory",
        huggingface.claims,
        huggingface.read,
        huggingface.metadata,
        shapes=huggingface.shapes,
    ),
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


def claiming_format(path: str | Path) -> Format | None:
    """The format that claims ``path`` (by its suffix, or the files in a directory), or None."""
    path = Path(path)
    return next((f for f in FORMATS if f.claims(path)), None)


def find_format(path: str | Path) -> Format:
    """The format that reads ``path``, or a one-line refusal."""
    path = Path(path)
    if not path.exists():
        raise TsensError(f"{path}: no such file")
    found = claiming_format(path)
    if found is not None:
        return found
    if path.is_dir():
        raise TsensError(
            f"{path}: is a directory but holds no checkpoint tsens reads; expected {FORMAT_NAMES}"
        )
    check_file(path)
    suffix = path.suffix or path.name
    raise TsensError(f"{path}: unknown checkpoint suffix {suffix!r}; expected one of {FORMAT_NAMES}")


def checkpoints_in(directory: str | Path) -> list[Path]:
    """The checkpoints directly inside a directory that is no checkpoint itself: its files and
    model subdirectories that a format claims, sorted by name (hidden entries skipped, other
    files ignored, no deeper look). A directory with none is refused in one line."""
    directory = Path(directory)
    try:
        entries = sorted(p for p in directory.iterdir() if not p.name.startswith("."))
    except OSError as e:
        raise TsensError(f"{directory}: cannot list the directory ({first_line(e)})") from None
    found = [p for p in entries if claiming_format(p) is not None]
    if not found:
        pattern = "*/*.safetensors" if any(p.is_dir() for p in entries) else "*.safetensors"
        raise TsensError(
            f"{directory}: holds no checkpoint (expected {', '.join(SUFFIXES)} files or Hugging Face "
            f"or PGDL model directories); give the files, e.g. {directory / pattern}"
        )
    return found


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    return files_sha256([Path(path)])


def _checked(path: Path, *, shape_only: bool) -> Weights:
    """:func:`read_weights`; with ``shape_only``, through the format's ``shapes`` where it has one."""
    found = find_format(path)
    read = found.shapes if shape_only and found.shapes is not None else found.read
    weights = read(path)
    return Weights(checked_weights(path, weights.tensors), weights.metadata, weights.files or (path,))


def read_weights(path: str | Path) -> Weights:
    """A checkpoint's :class:`Weights`: its floating-point tensors under torch names (prefixes
    stripped, all finite, ``num_batches_tracked`` dropped), metadata, and the files read."""
    return _checked(Path(path), shape_only=False)


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


def read_widths(path: str | Path, *, layers: Sequence[str] | None = None) -> tuple[int, ...]:
    """The layer widths of the checkpoint in ``path`` (input size, hidden widths, outputs): the
    ``widths`` of :func:`load_network` with the same ``layers``, through the same layout rules,
    without reading the weight data where the format allows: a ``.safetensors`` header (Hugging
    Face directories of them too), a memory-mapped load of a zip ``torch.save`` file. Other
    formats (legacy torch pickles, Flax, Keras, ONNX, PGDL) are read in full. Values that are
    not read are not checked (a NaN weight is then found by loading); everything else is
    refused as by :func:`load_network`, with the same one-line error."""
    path = Path(path)
    weights = _checked(path, shape_only=True)
    network = build_network(
        path, weights.tensors, weights.metadata, activation=None, layers=layers, sha256=""
    )
    return network.widths


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
    "checkpoints_in",
    "claiming_format",
    "file_sha256",
    "find_format",
    "load_network",
    "read_checkpoint",
    "read_metadata",
    "read_weights",
    "read_widths",
]
