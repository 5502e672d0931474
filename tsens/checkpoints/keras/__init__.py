"""Keras checkpoints: Keras 3 ``.weights.h5`` files and ``.keras`` archives, legacy (Keras 2)
HDF5 files, and the model directories of the PGDL competition. Needs h5py (``tsens[keras]``);
Keras itself is never imported.

The formats, each in its module:

* ``.weights.h5`` (Keras 3 ``model.save_weights``) and legacy ``.h5``/``.hdf5`` (Keras 2
  ``model.save``/``save_weights``, Keras 3 ``model.save("x.h5")``): :mod:`.hdf5`, which also
  says what a file without a config gives (the file's layer order, no activation, Keras's
  BatchNorm epsilon);
* ``.keras`` (Keras 3 ``model.save``): a zip of ``config.json``, ``metadata.json`` and
  ``model.weights.h5``, :mod:`.archive`;
* PGDL directories (``config.json`` with a ``model_config`` layer list, ``weights.hdf5``):
  :mod:`.pgdl`.

A config (``.keras``, a legacy ``model_config``, PGDL) must describe one chain of Dense layers,
each optionally followed by a BatchNormalization and then its activation; it gives
``tsens.layers``, ``tsens.activation``, ``tsens.bn_eps`` and ``keras.output_activation``
(:mod:`.config`). Kernels become torch's ``<name>.weight`` (transposed), BatchNormalization's
variables ``.weight``, ``.bias``, ``.running_mean``, ``.running_var``.

Safety: the HDF5 library hangs, crashes and allocates what corrupt headers claim, so every read
of HDF5 content runs in a forked child process with a time and a memory limit, which sends back
JSON and safetensors bytes, never a pickle (:mod:`.isolated`; on Windows, which has no fork, in
process). Variables declaring more bytes than their file could hold, archive members declaring
more than a cap or more than their archive holds, and JSON nested too deeply are refused before
they are read. Every refusal is one line starting with the path: ``<path>: not a readable Keras
HDF5 file (...)``, ``<path>: not a readable .keras archive (...)``, ``<path>: config.json is not
readable JSON (...)``, or what the config or file does that tsens does not read.
"""

from __future__ import annotations

from pathlib import Path

from ..base import Weights
from . import archive, hdf5, pgdl
from .config import KERAS_BN_EPS
from .hdf5 import MAX_BYTES

SUFFIXES = (".weights.h5", ".h5", ".hdf5", ".keras")


def read_h5(path: Path) -> Weights:
    """A Keras 3 ``.weights.h5`` or a legacy Keras ``.h5``/``.hdf5`` file."""
    return hdf5.read_file(path, read=True)


def h5_metadata(path: Path) -> dict[str, str]:
    """The metadata of a Keras HDF5 file: its attributes and what its config (or, without one,
    its layers) says; no variable is read."""
    return hdf5.read_file(path, read=False).metadata


def read_archive(path: Path) -> Weights:
    """A Keras ``.keras`` archive."""
    return archive.read(path, read=True)


def archive_metadata(path: Path) -> dict[str, str]:
    """The metadata of a ``.keras`` archive, from its ``metadata.json`` and config; the weights
    are not read."""
    return archive.read(path, read=False).metadata


def pgdl_claims(path: Path) -> bool:
    """A PGDL model directory holds ``config.json`` and ``weights.hdf5``."""
    return pgdl.claims(path)


def read_pgdl(directory: Path) -> Weights:
    """A PGDL model directory (``config.json`` and ``weights.hdf5``)."""
    return pgdl.read(directory, read=True)


def pgdl_metadata(directory: Path) -> dict[str, str]:
    """The metadata of a PGDL model directory; no variable is read."""
    return pgdl.read(directory, read=False).metadata


__all__ = [
    "KERAS_BN_EPS",
    "MAX_BYTES",
    "SUFFIXES",
    "archive_metadata",
    "h5_metadata",
    "pgdl_claims",
    "pgdl_metadata",
    "read_archive",
    "read_h5",
    "read_pgdl",
]
