"""Flax checkpoints: files written by ``flax.serialization.to_bytes`` (``.msgpack``, ``.flax``),
read with the ``msgpack`` package alone (``tsens[flax]``); flax itself is not needed.

The format (``flax/serialization.py``): one msgpack map, the state dict of what was saved
(dicts as maps, lists as maps keyed ``"0"``, ``"1"``, ...). An array is msgpack ExtType 1 (a
NumPy scalar: ExtType 3) whose data is itself msgpack of ``(shape, dtype name, C-order bytes)``
in native (little-endian) byte order; an array over 2**30 bytes is a map
``{"__msgpack_chunked_array__": true, "shape": {"0": ...}, "chunks": {"0": <1-D array>, ...}}``.
ExtType 2 (a complex scalar) and complex arrays are refused. Every array header is checked
against the bytes it holds before anything is allocated; dtypes come from a fixed list.

What was saved may be the variables (``{"params": ..., "batch_stats": ...}``), the params
alone, or a train state (``{"step": ..., "params": ..., "opt_state": ...}``, ``params`` possibly
holding the variables); only ``params`` and ``batch_stats`` are read. A module's path becomes
its prefix, joined by dots (``params/MLP_0/Dense_3`` → ``MLP_0.Dense_3``), and its entries
take PyTorch's names: ``kernel`` (in × out) → ``weight`` transposed to out × in, ``bias`` →
``bias``; a BatchNorm's ``scale``/``bias`` → ``weight``/``bias`` and its batch_stats
``mean``/``var`` → ``running_mean``/``running_var``. flax's BatchNorm computes
``(x - mean) * rsqrt(var + epsilon) * scale + bias`` with ``epsilon`` 1e-5 by default, as torch
does: tsens's default; another one is given by a top-level ``tsens.bn_eps`` entry. (flax keeps
batch statistics in float32 and takes the rsqrt in their precision; tsens works in float64, so
the two differ by about 1e-8 relative.)

Order: compact modules number Dense and BatchNorm separately (``Dense_0``, ``Dense_1``,
``BatchNorm_0``, ...), so where both occur the order is taken from the file (flax keeps the
order in which the modules were created, but a ``jax.tree.map``, e.g. an optimiser step, sorts
the keys) or else, when exactly one placement of the BatchNorms after Dense layers fits their
sizes, from the shapes, and recorded as ``tsens.layers``; otherwise :mod:`.layout` orders by the
numbers in the names (with a warning when several placements fit: give ``layers``).
``nn.Sequential``'s ``layers_0``, ``layers_1``, ... count every layer and need nothing more.
The format records no activation: it is given by the user, or by a top-level
``tsens.activation`` entry. Top-level scalars (``step``, ...) are the metadata.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import TsensError
from ..extras import require
from .base import Weights, check_file

SUFFIXES = (".msgpack", ".flax")
DTYPES: dict[str, torch.dtype] = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
    "int8": torch.int8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
RENAMES = {
    "params": {"kernel": "weight", "scale": "weight", "bias": "bias"},
    "batch_stats": {"mean": "running_mean", "var": "running_var"},
}
MAX_DEPTH = 64
MAX_NDIM = 32
CHUNKED = "__msgpack_chunked_array__"
_AUTO_NAME = re.compile(r"(.*?)(Dense|BatchNorm)_(\d+)")
_MAX_PLACEMENTS = 1_000_000  # Dense × BatchNorm counts beyond this are left to the numbers


@dataclass(frozen=True)
class _Ext:
    """A msgpack extension value, kept undecoded until it is needed."""

    code: int
    data: bytes


class _Malformed(Exception):
    """What is wrong with the file; becomes "<path>: not a readable Flax msgpack checkpoint (...)"."""


def _unpack(path: Path) -> Any:
    """The file's one msgpack object, extension values undecoded, within the file's size."""
    try:
        msgpack = require("msgpack", "flax", "reading Flax checkpoints")
    except TsensError as e:
        raise TsensError(f"{path}: {e}") from None
    check_file(path)
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            unpacker = msgpack.Unpacker(
                f, max_buffer_size=size, raw=False, strict_map_key=True, ext_hook=_Ext
            )
            obj = unpacker.unpack()
            end = unpacker.tell()
    except msgpack.OutOfData:
        raise _Malformed("truncated") from None
    except msgpack.StackError:
        raise _Malformed("nested too deeply") from None
    except ValueError as e:
        if "exceeds max" in str(e):  # a length beyond the file's size
            raise _Malformed("truncated or corrupt: a length exceeds the file's size") from None
        raise _Malformed(f"not msgpack data: {type(e).__name__}") from None
    except Exception as e:  # anything else the unpacker raises on garbage
        raise _Malformed(f"not msgpack data: {type(e).__name__}") from None
    if end != size:
        raise _Malformed(f"{size - end} bytes after the end of the msgpack data")
    return obj


def _header(where: str, ext: Any) -> tuple[tuple[int, ...], str, bytes]:
    """The shape, dtype name and bytes of one array, checked: the bytes match the shape."""
    if not isinstance(ext, _Ext) or ext.code not in (1, 3):
        if isinstance(ext, _Ext) and ext.code == 2:
            raise _Malformed(f"{where} holds a complex number; expected real weights")
        raise _Malformed(f"{where} is not an array")
    import msgpack  # present: _unpack imported it

    try:
        item = msgpack.unpackb(ext.data, raw=True, strict_map_key=True)
    except Exception:
        raise _Malformed(f"{where}: array header is not msgpack") from None
    if not (isinstance(item, list) and len(item) == 3):
        raise _Malformed(f"{where}: array header is not (shape, dtype, bytes)")
    shape, name, buffer = item
    if not (isinstance(shape, list) and len(shape) <= MAX_NDIM):
        raise _Malformed(f"{where}: array shape is not a list of at most {MAX_NDIM} sizes")
    if not all(type(n) is int and n >= 0 for n in shape):
        raise _Malformed(f"{where}: array shape {shape!r} is not made of sizes")
    if not isinstance(name, bytes) or not isinstance(buffer, bytes):
        raise _Malformed(f"{where}: array header is not (shape, dtype, bytes)")
    dtype = name.decode("ascii", "replace")
    if dtype.startswith("complex"):
        raise _Malformed(f"{where} holds {dtype} numbers; expected real weights")
    if dtype not in DTYPES:
        raise _Malformed(f"{where} has dtype {dtype[:40]!r}; expected one of {', '.join(DTYPES)}")
    need = math.prod(shape) * DTYPES[dtype].itemsize
    if need != len(buffer):
        raise _Malformed(
            f"{where}: shape {tuple(shape)} of {dtype} needs {need} bytes but {len(buffer)} are stored"
        )
    return tuple(shape), dtype, buffer


def _tensor(shape: tuple[int, ...], dtype: str, buffer: bytes) -> torch.Tensor:
    if not buffer:
        return torch.empty(shape, dtype=DTYPES[dtype])
    return torch.frombuffer(bytearray(buffer), dtype=DTYPES[dtype]).reshape(shape)


def _indexed(where: str, value: Any) -> list[Any]:
    """The values of a flax tuple-as-map ``{"0": a, "1": b, ...}``, in order."""
    if not isinstance(value, dict) or set(value) != {str(i) for i in range(len(value))}:
        raise _Malformed(f"{where} is not a map keyed 0, 1, ...")
    return [value[str(i)] for i in range(len(value))]


def _array(where: str, value: Any) -> torch.Tensor:
    """One array leaf: an extension value, or a chunked array's map."""
    if not isinstance(value, dict):
        return _tensor(*_header(where, value))
    shape = _indexed(f"{where}/shape", value.get("shape"))
    if len(shape) > MAX_NDIM or not all(type(n) is int and n >= 0 for n in shape):
        raise _Malformed(f"{where}: chunked array shape {shape!r} is not made of sizes")
    chunks = [
        _header(f"{where}/chunks/{i}", c)
        for i, c in enumerate(_indexed(f"{where}/chunks", value.get("chunks")))
    ]
    dtypes = {dtype for _, dtype, _ in chunks}
    if len(dtypes) != 1 or any(len(s) != 1 for s, _, _ in chunks):
        raise _Malformed(f"{where}: chunks are not 1-D arrays of one dtype")
    dtype = dtypes.pop()
    need, held = math.prod(shape) * DTYPES[dtype].itemsize, sum(len(b) for _, _, b in chunks)
    if need != held:
        raise _Malformed(f"{where}: shape {tuple(shape)} of {dtype} needs {need} bytes but {held} are stored")
    return torch.cat([_tensor(*chunk) for chunk in chunks]).reshape(tuple(shape))


def _is_array(value: Any) -> bool:
    return isinstance(value, _Ext) or (isinstance(value, dict) and CHUNKED in value)


def _collect(path: Path, collection: str, tree: Any, trail: list[str], out: dict[str, torch.Tensor]) -> None:
    """The arrays of ``tree`` (one collection) under torch names, into ``out``, in file order."""
    where = "/".join([collection, *trail])
    if not isinstance(tree, dict):
        raise _Malformed(f"{where} holds a {type(tree).__name__}; expected a map of modules")
    if len(trail) >= MAX_DEPTH:
        raise _Malformed(f"{where}: modules nested deeper than {MAX_DEPTH} levels")
    for key, value in tree.items():
        if not isinstance(key, str):
            raise _Malformed(f"{where} has a {type(key).__name__} key; expected module names")
        if not _is_array(value):
            _collect(path, collection, value, [*trail, key], out)
            continue
        t = _array(f"{where}/{key}", value)
        if key == "kernel":
            if t.ndim != 2:
                raise TsensError(
                    f"{path}: {where}/{key} is a {t.ndim}-D kernel {tuple(t.shape)} (a convolution?); "
                    "tsens supports fully connected networks only (2-D Dense kernels)"
                )
            t = t.T.contiguous()
        name = ".".join([*trail, RENAMES[collection].get(key, key)])
        if name in out:
            raise TsensError(f"{path}: {where}/{key} and another entry both give {name!r}; expected one")
        out[name] = t


def _variables(top: dict[str, Any]) -> tuple[Any, Any]:
    """``params`` and ``batch_stats`` (or None) of a variables dict, params dict or train state."""
    params = top.get("params")
    if not isinstance(params, dict):
        skip = ("batch_stats", "opt_state")
        rest = {k: v for k, v in top.items() if k not in skip and (isinstance(v, dict) or _is_array(v))}
        return rest, top.get("batch_stats")
    stats = top.get("batch_stats")
    if isinstance(params.get("params"), dict):  # a train state whose params are the variables
        return params["params"], params.get("batch_stats", stats)
    return params, stats


def _complete_batchnorms(tensors: dict[str, torch.Tensor]) -> None:
    """A BatchNorm with only a scale or only a bias (``use_bias=False``/``use_scale=False``)
    gets the missing one (zeros, ones), so that it is an affine BatchNorm1d."""
    for key in [k for k in tensors if k.endswith("running_mean")]:
        stem = key[: -len("running_mean")]
        weight, bias = tensors.get(stem + "weight"), tensors.get(stem + "bias")
        if weight is not None and bias is None and weight.ndim == 1:
            tensors[stem + "bias"] = torch.zeros_like(weight)
        elif bias is not None and weight is None and bias.ndim == 1:
            tensors[stem + "weight"] = torch.ones_like(bias)


def _order(path: Path, tensors: dict[str, torch.Tensor], in_params: list[str]) -> list[str] | None:
    """The order of compact-named Dense and BatchNorm modules under one parent when both occur
    (see the module docstring), or None to leave it to the numbers in the names. ``in_params``:
    the module prefixes in the order of the file's params."""
    seen = list(dict.fromkeys(k.rpartition(".")[0] for k in tensors))
    names = [_AUTO_NAME.fullmatch(p) for p in seen]
    if not all(names) or len({m.group(1) for m in names if m}) != 1:
        return None
    dense: list[tuple[int, str, int]] = []  # (number, prefix, size)
    norms: list[tuple[int, str, int]] = []
    for prefix, m in zip(seen, names, strict=True):
        assert m is not None
        w, mean = tensors.get(f"{prefix}.weight"), tensors.get(f"{prefix}.running_mean")
        if m.group(2) == "Dense" and w is not None and w.ndim == 2:
            dense.append((int(m.group(3)), prefix, w.shape[0]))
        elif m.group(2) == "BatchNorm" and mean is not None and mean.ndim == 1:
            norms.append((int(m.group(3)), prefix, mean.shape[0]))
        else:
            return None
    dense.sort()
    norms.sort()
    if not norms or len({n for n, _, _ in dense}) < len(dense) or len({n for n, _, _ in norms}) < len(norms):
        return None
    if seen == in_params and _fits(seen, dense, norms):  # every module has params: file order
        return seen
    order, placements = _only_placement(dense, norms)
    if placements > 1:
        warnings.warn(
            f"{path}: the file does not record after which Dense layers the BatchNorm layers sit and "
            "several placements fit their sizes; unless `layers` is given, they are ordered by the "
            "numbers in the names (BatchNorm_k after Dense_k)",
            stacklevel=4,
        )
    return order


def _fits(order: list[str], dense: list[tuple[int, str, int]], norms: list[tuple[int, str, int]]) -> bool:
    """Whether ``order`` lists the Dense layers and BatchNorms each by number, every BatchNorm
    directly after a Dense layer of its size."""
    size = {p: s for _, p, s in dense + norms}
    kinds = {p for _, p, _ in dense}
    if [p for p in order if p in kinds] != [p for _, p, _ in dense]:
        return False
    if [p for p in order if p not in kinds] != [p for _, p, _ in norms]:
        return False
    return all(
        p in kinds or (i > 0 and order[i - 1] in kinds and size[order[i - 1]] == size[p])
        for i, p in enumerate(order)
    )


def _only_placement(
    dense: list[tuple[int, str, int]], norms: list[tuple[int, str, int]]
) -> tuple[list[str] | None, int]:
    """The order given by the one placement of the BatchNorms (in turn) directly after Dense
    layers (in turn) of their sizes, or None when there are none or several."""
    n, m = len(dense), len(norms)
    if n * m > _MAX_PLACEMENTS:
        return None, 0
    # ways[j][i]: placements (capped at 2) of BatchNorms j.. after Dense layers i..
    ways = [[0] * (n + 1) for _ in range(m)] + [[1] * (n + 1)]
    for j in range(m - 1, -1, -1):
        for i in range(n - 1, -1, -1):
            fits = dense[i][2] == norms[j][2]
            ways[j][i] = min(2, ways[j][i + 1] + (ways[j + 1][i + 1] if fits else 0))
    if ways[0][0] != 1:
        return None, ways[0][0]
    order: list[str] = []
    j = 0
    for i, (_, prefix, size) in enumerate(dense):
        order.append(prefix)
        if j < m and size == norms[j][2] and ways[j + 1][i + 1] > 0:
            order.append(norms[j][1])
            j += 1
    return order, 1


def _scalar(key: str, value: Any) -> str | None:
    """A metadata string for a top-level scalar (a 0-d array included), else None."""
    if isinstance(value, str | bool | int | float):
        return str(value)
    if isinstance(value, _Ext) and value.code in (1, 3):
        shape, dtype, buffer = _header(key, value)
        return str(_tensor(shape, dtype, buffer).item()) if shape == () else None
    return None


def _read(path: Path) -> Weights:
    top = _unpack(path)
    if not isinstance(top, dict):
        raise _Malformed(f"holds a msgpack {type(top).__name__}; expected a map of variables")
    metadata = {str(k): text for k, v in top.items() if (text := _scalar(str(k), v)) is not None}
    params, stats = _variables(top)
    tensors: dict[str, torch.Tensor] = {}
    _collect(path, "params", params, [], tensors)
    in_params = list(dict.fromkeys(k.rpartition(".")[0] for k in tensors))
    if stats is not None:
        _collect(path, "batch_stats", stats, [], tensors)
    _complete_batchnorms(tensors)
    order = _order(path, tensors, in_params)
    if order is not None:
        metadata.setdefault("tsens.layers", ",".join(order))
    return Weights(tensors, metadata, (path,))


def claims(path: Path) -> bool:
    return path.name.lower().endswith(SUFFIXES) and not path.is_dir()


def read(path: Path) -> Weights:
    """The Dense and BatchNorm weights of a ``flax.serialization.to_bytes`` file under torch
    names, its top-level scalars as metadata (see the module docstring)."""
    try:
        return _read(path)
    except _Malformed as e:
        raise TsensError(f"{path}: not a readable Flax msgpack checkpoint ({e})") from None


def metadata(path: Path) -> dict[str, str]:
    """The top-level scalars (and ``tsens.layers`` where the reader infers it); the whole file
    is parsed and checked, as by :func:`read`."""
    return read(path).metadata
