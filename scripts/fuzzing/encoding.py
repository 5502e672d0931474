"""Byte-exact writers and small parsers of the formats the fuzzer handles (torch.save,
safetensors, zip, .npy/.npz, IDX, gzip), shared by the seeds and the mutators. Every writer
gives the same bytes on every run."""

from __future__ import annotations

import gzip
import io
import json
import re
import struct
import warnings
import zipfile
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

FEATURES = 36  # inputs of the generated networks and data sets (CIFAR: 3072)


def put_int(data: bytes, pos: int, size: int, value: int, order: str = "<") -> bytes:
    """``data`` with the ``size``-byte unsigned integer at ``pos`` set to ``value`` (wrapped)."""
    fmt = order + {1: "B", 2: "H", 4: "I", 8: "Q"}[size]
    return data[:pos] + struct.pack(fmt, value % (1 << (8 * size))) + data[pos + size :]


# --- torch --------------------------------------------------------------------------------


def net_state(inputs: int = FEATURES, hidden: int = 5, outputs: int = 3, bn: bool = False) -> dict:
    """The state dict of a small MLP (Linear, [BatchNorm,] ReLU, Linear), seeded by its shape."""
    g = torch.Generator().manual_seed(inputs * 100 + hidden + bn)
    state = {"0.weight": torch.randn(hidden, inputs, generator=g), "0.bias": torch.randn(hidden, generator=g)}
    if bn:
        state.update(
            {
                "1.weight": torch.rand(hidden, generator=g) + 0.5,
                "1.bias": torch.randn(hidden, generator=g),
                "1.running_mean": torch.randn(hidden, generator=g),
                "1.running_var": torch.rand(hidden, generator=g) + 0.5,
                "1.num_batches_tracked": torch.tensor(7),
            }
        )
    state.update(
        {"3.weight": torch.randn(outputs, hidden, generator=g), "3.bias": torch.randn(outputs, generator=g)}
    )
    return state


def data_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The generated data set: 8 float32 rows of FEATURES inputs and their labels (3 classes)."""
    rng = np.random.default_rng(0)
    return rng.standard_normal((8, FEATURES)).astype(np.float32), rng.integers(0, 3, 8)


def one_storage(state: dict) -> dict:
    """The float tensors of ``state`` as views of one storage (at offsets)."""
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    flat = torch.cat([v.flatten() for v in tensors.values()])
    out, at = dict(state), 0
    for k, v in tensors.items():
        out[k] = flat[at : at + v.numel()].view(v.shape)
        at += v.numel()
    return out


def torch_bytes(obj: object, legacy: bool = False) -> bytes:
    """``torch.save`` bytes. A legacy file names its storages by address and writes them in
    address order, so its tensors must share one storage (``one_storage``), whose key is
    then renumbered: the same bytes every run."""
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    data = buf.getvalue()
    if legacy:
        keys = list(dict.fromkeys(re.findall(rb"X.\x00\x00\x00(\d{6,})", data)))
        assert len(keys) <= 1, "legacy seeds keep their tensors in one storage"
        for key in keys:
            data = data.replace(key, b"1".zfill(len(key)))
    return data


# --- safetensors --------------------------------------------------------------------------

_ST_DTYPE_NAMES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.int64: "I64"}


def st_parse(data: bytes) -> tuple[dict, int] | None:
    """The JSON header of a .safetensors file and its length, or None."""
    if len(data) < 8:
        return None
    n = struct.unpack("<Q", data[:8])[0]
    if n > len(data) - 8:
        return None
    try:
        header = json.loads(data[8 : 8 + n])
    except (ValueError, UnicodeDecodeError):
        return None
    return (header, n) if isinstance(header, dict) else None


def st_build(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + body


def safetensors_bytes(state: dict, metadata: dict[str, str] | None = None) -> bytes:
    """A .safetensors file written here (safetensors' own writer orders the metadata
    differently from run to run)."""
    header: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))} if metadata else {}
    body = b""
    for name in sorted(state):
        t = state[name].contiguous()
        raw = t.numpy().tobytes()
        header[name] = {
            "dtype": _ST_DTYPE_NAMES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [len(body), len(body) + len(raw)],
        }
        body += raw
    return st_build(header, body)


# --- zip, npy, IDX, gzip ------------------------------------------------------------------


def zip_bytes(members: Sequence[tuple[str, bytes, int]]) -> bytes:
    """A zip archive of (name, bytes, method) members with fixed timestamps; duplicates allowed."""
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w") as zf:
        warnings.simplefilter("ignore")  # "Duplicate name"
        for name, data, method in members:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = method
            zf.writestr(info, data)
    return buf.getvalue()


def zip_members(data: bytes, limit: int | None = 64 << 20) -> list[tuple[str, bytes, int]] | None:
    """The (name, bytes, method) members of a zip archive, or None if it does not open or
    inflates to more than ``limit`` bytes."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = [i for i in zf.infolist() if not i.filename.endswith("/")]
            if limit is not None and sum(i.file_size for i in infos) > limit:
                return None
            return [(i.filename, zf.read(i), i.compress_type) for i in infos]
    except Exception:
        return None


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=False)
    return buf.getvalue()


def npz_bytes(arrays: dict[str, np.ndarray], compressed: bool = False) -> bytes:
    method = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
    return zip_bytes([(f"{k}.npy", npy_bytes(v), method) for k, v in arrays.items()])


def idx_bytes(array: np.ndarray) -> bytes:
    code = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype(">f4"): 0x0D}[array.dtype]
    head = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return head + array.tobytes()


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def gunzip_small(data: bytes, limit: int = 16 << 20) -> bytes | None:
    """The inflated bytes of a gzip stream of at most ``limit`` bytes, or None."""
    try:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out = d.decompress(data, limit)
        return out if d.eof and not d.unconsumed_tail else None
    except zlib.error:
        return None
