"""Keras 3 ``.keras`` archives (``model.save``).

A ``.keras`` file is a zip of ``config.json`` (the model config, :mod:`.config`),
``metadata.json`` (``keras_version``, ``date_saved``, ...: its scalar entries become metadata)
and ``model.weights.h5`` (the Keras 3 weights layout, :mod:`.hdf5`). The config gives the layer
order; weights files without the ``vars`` groups' ``name`` attribute are matched to it by group
key (class in snake case, numbered per class).

Members are read in memory, never extracted, and a member is refused before it is read when it
declares more than a size cap (64 MiB for the JSON members, 8 GiB for the weights), more than
64 MiB at over 100 times its compressed size (a zip bomb), or compressed bytes that run past the
end of the archive; it is then read in blocks, never allocating what the archive claims. The
weights are read by the HDF5 library in an isolated child process (:mod:`.isolated`). Anything
zipfile cannot parse is one line, ``<path>: not a readable .keras archive (...)``.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any

from ...errors import TsensError, first_line
from ..base import Weights, check_file
from .config import MAX_JSON, WEIGHTED, group_keys, keras_specs, parse_json
from .hdf5 import MAX_BYTES, Read, isolated_read, keras3_stored, layer_arrays, variable_limit

_BLOCK = 1 << 20


def _member(path: Path, archive: zipfile.ZipFile, name: str, cap: int, size: int) -> bytes | None:
    """One archive member's bytes (None if absent), refused when it declares more than ``cap``,
    more than 64 MiB at over 100 times its compressed size (a zip bomb), or more compressed bytes
    than the ``size``-byte archive holds after its header."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        return None
    if info.file_size > min(cap, max(MAX_JSON, 100 * info.compress_size)):
        raise TsensError(
            f"{path}: archive member {name} declares {info.file_size:,} bytes ({info.compress_size:,} "
            "compressed), more than tsens reads; expected a small network"
        )
    if info.header_offset + info.compress_size > size:
        raise TsensError(
            f"{path}: not a readable .keras archive (member {name} declares {info.compress_size:,} "
            f"compressed bytes at offset {info.header_offset:,}, past the end of the {size:,}-byte file)"
        )
    blocks, total = [], 0
    with archive.open(info) as f:  # reads no more than the declared size, and checks the CRC
        while block := f.read(_BLOCK):
            total += len(block)
            if total > info.file_size:
                raise TsensError(
                    f"{path}: not a readable .keras archive (member {name} is longer than declared)"
                )
            blocks.append(block)
    return b"".join(blocks)


def read(path: Path, *, read: bool) -> Weights:
    """A ``.keras`` archive's tensors (when ``read``; otherwise the weights are not opened) and
    metadata."""
    check_file(path)
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            raw_config = _member(path, archive, "config.json", MAX_JSON, size)
            raw_metadata = _member(path, archive, "metadata.json", MAX_JSON, size)
            raw_weights = _member(path, archive, "model.weights.h5", MAX_BYTES, size) if read else b""
    except TsensError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, RuntimeError, NotImplementedError) as e:
        raise TsensError(f"{path}: not a readable .keras archive ({first_line(e)})") from None
    if raw_config is None or raw_weights is None:
        missing = "config.json" if raw_config is None else "model.weights.h5"
        raise TsensError(
            f"{path}: the archive has no {missing}; expected a .keras file (config.json, model.weights.h5)"
        )
    info = parse_json(path, raw_metadata, "metadata.json") if raw_metadata else {}
    metadata = (
        {str(k): str(v) for k, v in info.items() if isinstance(v, str | int | float)}
        if isinstance(info, dict)
        else {}
    )
    specs = keras_specs(path, parse_json(path, raw_config, "config.json"))
    version = metadata.get("keras_version", "")
    if not read:
        _, derived = layer_arrays(path, ([], specs, metadata, True), version, read=False, limit=0)
        return Weights({}, derived, (path,))
    most = variable_limit(len(raw_weights))

    def body(f: Any) -> Read:
        if "layers" not in f:
            raise TsensError(f"{path}: model.weights.h5 has no 'layers' group; expected Keras 3 weights")
        stored, _ = keras3_stored(path, f)  # the config gives the order
        names = {s.name for s in stored}
        if any(s.cls in WEIGHTED and s.name not in names for s in specs):
            keys = group_keys(specs)  # files without the 'name' attribute: match by group key
            stored = [replace(s, name=keys.get(s.key, s.name)) for s in stored]
        return layer_arrays(path, (stored, specs, metadata, True), version, read=True, limit=most)

    tensors, derived = isolated_read(path, raw_weights, body, "model.weights.h5: ")
    return Weights(tensors, derived, (path,))
