"""What every checkpoint format gives: :class:`Weights`, and the file checks and messages the
readers share."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import TsensError


@dataclass(frozen=True)
class Weights:
    """One checkpoint's tensors under PyTorch's names (``<prefix>.weight`` out × in, ``.bias``,
    BatchNorm's ``.running_mean``/``.running_var``/``.weight``/``.bias``), its metadata as
    strings (a format's own record of the activation, layer order or BatchNorm epsilon goes into
    ``tsens.activation``, ``tsens.layers``, ``tsens.bn_eps``), and the files it was read from."""

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]
    files: tuple[Path, ...] = field(default=())


@dataclass(frozen=True)
class Format:
    """A checkpoint format: ``claims(path)`` says whether the path is one (by suffix or, for a
    directory, by the files in it), ``read`` gives its :class:`Weights`, and ``metadata`` its
    metadata alone, cheaply where the format allows. ``shapes``, where the format can give them
    without reading the weight data, gives :class:`Weights` whose tensors are shape-only (on
    the ``meta`` device, with the stored dtype); None: only ``read`` gives shapes. ``extra``
    names the optional extra whose package it needs (None: the core install reads it)."""

    name: str
    claims: Callable[[Path], bool]
    read: Callable[[Path], Weights]
    metadata: Callable[[Path], dict[str, str]]
    extra: str | None = None
    shapes: Callable[[Path], Weights] | None = None


def check_file(path: Path) -> None:
    """A checkpoint file must exist, be a file and hold at least one byte."""
    if not path.exists():
        raise TsensError(f"{path}: no such file")
    if not path.is_file():
        raise TsensError(f"{path}: is not a file; expected a checkpoint file")
    if path.stat().st_size == 0:
        raise TsensError(f"{path}: the file is empty (0 bytes)")


def files_sha256(files: Sequence[Path]) -> str:
    """Hex SHA-256 of one file's bytes; for several (a checkpoint directory), of their names and
    bytes in the given order."""
    digest = hashlib.sha256()
    for path in files:
        if len(files) > 1:
            digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def has_suffix(*suffixes: str) -> Callable[[Path], bool]:
    """``claims`` for files whose name ends with one of ``suffixes`` (case-insensitive)."""
    lowered = tuple(s.lower() for s in suffixes)
    return lambda path: path.name.lower().endswith(lowered) and not path.is_dir()
