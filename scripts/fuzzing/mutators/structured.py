"""Mutations of the structured formats through their own parsers: msgpack (lengths, Flax
array headers, nesting), HDF5 (dataspace dims and data addresses that h5py found in the seeds,
the superblock), ONNX protobufs, Parquet and Arrow footers and lengths, PNG dimensions inside
image columns, and JSON values."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import random
import re
import struct
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..encoding import put_int, zip_members
from ..seeds import Seed
from .binary import member_structure
from .generic import HUGE, Mutated, huge, value_slots

# --- msgpack ------------------------------------------------------------------------------


def _msgpack_headers(data: bytes, limit: int = 50_000) -> list[tuple[int, int, int]]:
    """(type byte offset, length field offset, length field size; 0 = in the type byte) of the
    msgpack values in ``data``, walked in order (ext payloads too, when they are msgpack)."""
    found: list[tuple[int, int, int]] = []
    pos, todo, n = 0, 1, len(data)
    while todo and pos < n and len(found) < limit:
        b = data[pos]
        todo -= 1
        head, payload, children, lenpos, lensize = 1, 0, 0, pos, 0
        if b <= 0x7F or b >= 0xE0 or b in (0xC0, 0xC2, 0xC3):
            pass
        elif 0x80 <= b <= 0x8F:
            children = 2 * (b & 0x0F)
        elif 0x90 <= b <= 0x9F:
            children = b & 0x0F
        elif 0xA0 <= b <= 0xBF:
            payload = b & 0x1F
        elif b in (0xC4, 0xC5, 0xC6, 0xD9, 0xDA, 0xDB):
            lensize = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4}[b]
            lenpos, head = pos + 1, 1 + lensize
            if lenpos + lensize > n:
                break
            payload = int.from_bytes(data[lenpos : lenpos + lensize], "big")
        elif b in (0xC7, 0xC8, 0xC9):
            lensize = {0xC7: 1, 0xC8: 2, 0xC9: 4}[b]
            lenpos, head = pos + 1, 2 + lensize
            if lenpos + lensize > n:
                break
            payload = int.from_bytes(data[lenpos : lenpos + lensize], "big")
            for inner in _msgpack_headers(data[pos + head : pos + head + payload], limit // 4):
                found.append((inner[0] + pos + head, inner[1] + pos + head, inner[2]))
        elif 0xD4 <= b <= 0xD8:
            head, payload = 2, {0xD4: 1, 0xD5: 2, 0xD6: 4, 0xD7: 8, 0xD8: 16}[b]
        elif b in (0xCA, 0xCB, 0xCC, 0xCD, 0xCE, 0xCF, 0xD0, 0xD1, 0xD2, 0xD3):
            payload = {
                0xCA: 4,
                0xCB: 8,
                0xCC: 1,
                0xCD: 2,
                0xCE: 4,
                0xCF: 8,
                0xD0: 1,
                0xD1: 2,
                0xD2: 4,
                0xD3: 8,
            }[b]
        elif b in (0xDC, 0xDD, 0xDE, 0xDF):
            lensize = 2 if b in (0xDC, 0xDE) else 4
            lenpos, head = pos + 1, 1 + lensize
            if lenpos + lensize > n:
                break
            count = int.from_bytes(data[lenpos : lenpos + lensize], "big")
            children = count * (2 if b in (0xDE, 0xDF) else 1)
        else:
            break
        found.append((pos, lenpos, lensize))
        pos += head + payload
        todo += children
    return found


def msgpack_length(rng: random.Random, data: bytes) -> Mutated | None:
    """A str/bin/ext/array/map length set huge (fix types: their maximum)."""
    cands = [h for h in _msgpack_headers(data) if h[2] or 0x80 <= data[h[0]] <= 0xBF]
    if not cands:
        return None
    at, lenpos, size = rng.choice(cands)
    if size == 0:
        b = data[at]
        top = 0xBF if b >= 0xA0 else (0x9F if b >= 0x90 else 0x8F)
        return data[:at] + bytes([top]) + data[at + 1 :], f"msgpack_length(fix@{at} = {top:#x})"
    value = huge(rng, size) if size in HUGE else 0xFF
    return put_int(data, lenpos, size, value, ">"), f"msgpack_length(@{at} = {value})"


def msgpack_value(rng: random.Random, data: bytes) -> Mutated | None:
    """Structural edits through the msgpack package: Flax array headers (shape 10**12, dtype,
    buffer), ext codes, values of other types, deep nesting."""
    try:
        import msgpack
    except ImportError:
        return None
    edit = rng.choice(("array", "array", "array", "ext-code", "value", "nest"))
    if edit == "nest":
        depth = rng.choice((65, 1000, 100_000))
        return b"\x91" * depth + data, f"msgpack_value(nest {depth})"
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=msgpack.ExtType)
    except Exception:
        return None
    slots = value_slots(obj, 50)
    if not slots:
        return None
    exts = [(c, k) for c, k in slots if isinstance(c[k], msgpack.ExtType)]
    if edit in ("array", "ext-code") and exts:
        c, k = rng.choice(exts)
        ext = c[k]
        if edit == "ext-code":
            c[k] = msgpack.ExtType(rng.choice((0, 2, 3, 4, 99, 127)), ext.data)
            what = f"ext code {c[k].code}"
        else:
            try:
                shape, dtype, buf = msgpack.unpackb(ext.data, raw=False)
            except Exception:
                return None
            part = rng.choice(("shape", "shape", "dtype", "buffer"))
            if part == "shape":
                shape = rng.choice(([10**12], [10**6, 10**6], [-1], [], [2**64 - 1], "ab", [1] * 40, [0]))
            elif part == "dtype":
                dtype = rng.choice(
                    ("object", "float128", "complex64", "V8", "<U8", "xyz", 7, "float8_e4m3fn")
                )
            else:
                buf = rng.choice((buf[: len(buf) // 2], buf + buf, b"", "text"))
            c[k] = msgpack.ExtType(ext.code, msgpack.packb([shape, dtype, buf], use_bin_type=True))
            what = f"array {part}"
    else:
        c, k = rng.choice(slots)
        c[k] = rng.choice((None, 10**18, -1, "x" * 1000, [1, 2], {"a": {"b": 1}}, 1.5, True, b"\0" * 8))
        what = f"value {k!r}"
    try:
        return msgpack.packb(obj, use_bin_type=True), f"msgpack_value({what})"
    except Exception:
        return None


def msgpack_boundaries(data: bytes) -> list[int]:
    return [h[0] for h in _msgpack_headers(data)]


# --- HDF5 ---------------------------------------------------------------------------------


H5Facts = tuple[list[tuple[int, ...]], list[int]]
_H5_SEEDS: dict[bytes, H5Facts] = {}  # the facts of each seed's HDF5 file, by its digest


def learn_h5(seeds: Sequence[Seed]) -> None:
    """Read the HDF5 files among the seeds (and inside their zip archives) with h5py, once.
    Mutated files are never parsed in this process: HDF5 can hang or crash on them."""
    for seed in seeds:
        for f in seed.files:
            datas = [f.data] if f.structure == "h5" else []
            if f.structure == "zip":
                datas = [d for n, d, _ in zip_members(f.data) or [] if member_structure(n, d) == "h5"]
            for data in datas:
                digest = hashlib.sha1(data).digest()
                if digest not in _H5_SEEDS:
                    with contextlib.suppress(Exception):
                        _H5_SEEDS[digest] = _h5_facts(data)


def _h5_facts(data: bytes) -> H5Facts:
    """Shapes of the datasets and attributes, and the data addresses of the datasets."""
    import h5py

    shapes: list[tuple[int, ...]] = []
    addresses: list[int] = []
    with h5py.File(io.BytesIO(data), "r") as f:

        def visit(_name: str, obj: Any) -> None:
            for a in obj.attrs.values():
                if isinstance(a, np.ndarray) and a.ndim:
                    shapes.append(a.shape)
            if isinstance(obj, h5py.Dataset):
                if obj.shape:
                    shapes.append(obj.shape)
                offset = obj.id.get_offset()
                if offset is not None:
                    addresses.append(offset)

        f.visititems(visit)
    return shapes, addresses


def h5_field(rng: random.Random, data: bytes) -> Mutated | None:
    """A dataspace dimension (found by the dataset shapes h5py reports for the seeds) set huge,
    or a data address moved."""
    facts = _H5_SEEDS.get(hashlib.sha1(data).digest())
    if facts is None:  # already mutated: the patterns of every seed are searched for
        facts = ([s for f in _H5_SEEDS.values() for s in f[0]], [a for f in _H5_SEEDS.values() for a in f[1]])
    shapes, addresses = sorted(set(facts[0])), sorted(set(facts[1]))
    if addresses and rng.random() < 0.3:
        address = rng.choice(addresses)
        hits = [m.start() for m in re.finditer(re.escape(struct.pack("<Q", address)), data)]
        if hits:
            at = rng.choice(hits)
            value = rng.choice((2**63 - 1, len(data) - 4, 0, 2**64 - 1))
            return put_int(data, at, 8, value), f"h5_field(address {address}@{at} = {value})"
    if not shapes:
        return None
    shape = rng.choice(shapes)
    pattern = b"".join(struct.pack("<Q", d) for d in shape)
    hits = [m.start() for m in re.finditer(re.escape(pattern), data)]
    if not hits:
        return None
    at, i = rng.choice(hits), rng.randrange(len(shape))
    value = rng.choice((10**12, 2**63 - 1, 2**64 - 1, 0, 2**32))
    return put_int(data, at + 8 * i, 8, value), f"h5_field(dims {shape}@{at}[{i}] = {value})"


def h5_head(rng: random.Random, data: bytes) -> Mutated | None:
    """An 8-byte field of the superblock (addresses, end of file) set huge."""
    if len(data) < 64:
        return None
    at = 8 * rng.randrange(1, 12)
    value = rng.choice((2**64 - 1, 2**63 - 1, 10**12, 0))
    return put_int(data, at, 8, value), f"h5_head(u64@{at} = {value})"


# --- ONNX ---------------------------------------------------------------------------------


def onnx_model(rng: random.Random, data: bytes) -> Mutated | None:
    """Structural edits of the protobuf: initializer dims (10**12), dtypes, raw data, external
    data (outside paths), node types, attributes and inputs, opsets."""
    try:
        import onnx
    except ImportError:
        return None
    try:
        model = onnx.ModelProto()
        model.ParseFromString(data)
    except Exception:
        return None
    graph = model.graph
    inits = list(graph.initializer)
    edit = rng.choice(("dims", "dims", "dtype", "raw", "external", "op", "attr", "input", "opset", "props"))
    what = edit
    if edit in ("dims", "dtype", "raw", "external") and inits:
        t = rng.choice(inits)
        what += f" {t.name}"
        if edit == "dims":
            if t.dims and rng.random() < 0.7:
                t.dims[rng.randrange(len(t.dims))] = rng.choice((10**12, 2**62, -1, 0, 2**31))
            else:
                t.dims.append(rng.choice((10**6, 1, 0)))
        elif edit == "dtype":
            t.data_type = rng.choice((0, 2, 3, 7, 8, 9, 10, 11, 14, 16, 99))
        elif edit == "raw":
            if t.raw_data:
                t.raw_data = rng.choice((t.raw_data[: len(t.raw_data) // 2], t.raw_data * 2, b""))
            else:
                t.raw_data = rng.randbytes(rng.choice((1, 7, 64)))
        else:
            t.data_location = onnx.TensorProto.EXTERNAL
            del t.external_data[:]
            location = rng.choice(("../outside.bin", "/etc/passwd", "missing.bin", "model.onnx", "."))
            for key, value in (("location", location), ("offset", rng.choice(("0", "99999999999"))),
                               ("length", rng.choice(("16", str(10**12), "-1")))):  # fmt: skip
                entry = t.external_data.add()
                entry.key, entry.value = key, value
            what += f" -> {location}"
    elif edit == "op" and graph.node:
        node = rng.choice(graph.node)
        node.op_type = rng.choice(
            ("Conv", "Attention", "Gemm", "MatMul", "Relu", "Custom", "", "LeakyRelu", "If")
        )
        if rng.random() < 0.3:
            node.domain = "com.example.fuzz"
        what += f" {node.op_type}"
    elif edit == "attr" and graph.node:
        node = rng.choice(graph.node)
        if node.attribute:
            a = rng.choice(node.attribute)
            a.type = rng.choice(
                (onnx.AttributeProto.INT, onnx.AttributeProto.FLOAT, onnx.AttributeProto.STRING)
            )
            a.i, a.f = rng.choice((2, -1, 2**62)), rng.choice((float("nan"), 1e30, -1.0))
        else:
            a = node.attribute.add()
            a.name, a.type, a.i = (
                rng.choice(("transA", "transB", "axis", "alpha")),
                onnx.AttributeProto.INT,
                1,
            )
    elif edit == "input" and graph.node:
        node = rng.choice(graph.node)
        if node.input:
            node.input[rng.randrange(len(node.input))] = rng.choice(
                ("nonexistent", node.output[0] if node.output else "", "")
            )
        else:
            node.input.append("nonexistent")
    elif edit == "opset":
        if model.opset_import:
            model.opset_import[0].version = rng.choice((0, 1, 10**6))
        model.ir_version = rng.choice((model.ir_version, 0, 10**6))
    else:
        prop = model.metadata_props.add()
        prop.key, prop.value = rng.choice(
            (("tsens.activation", "gelu"), ("tsens.bn_eps", "-1"), ("x" * 10000, "y"))
        )
    try:
        return model.SerializeToString(), f"onnx_model({what})"
    except Exception:
        return None


# --- Parquet / Arrow / PNG ----------------------------------------------------------------


def parquet_footer(rng: random.Random, data: bytes) -> Mutated | None:
    """The footer length set huge (or off), or flips in the footer's thrift metadata."""
    if len(data) < 12:
        return None
    if rng.random() < 0.5:
        n = struct.unpack("<I", data[-8:-4])[0]
        value = rng.choice((0xFFFFFFFF, 0x7FFFFFFF, n + 1, n - 1, 0, len(data)))
        return put_int(data, len(data) - 8, 4, value), f"parquet_footer(length = {value})"
    n = struct.unpack("<I", data[-8:-4])[0]
    start = max(len(data) - 8 - n, 0)
    out = bytearray(data)
    where = [rng.randrange(start, len(data) - 8) for _ in range(rng.choice((1, 2, 4)))]
    for p in where:
        out[p] = rng.choice((0x00, 0xFF, 0x7F, out[p] ^ (1 << rng.randrange(8))))
    return bytes(out), f"parquet_footer(bytes {where})"


def arrow_lengths(rng: random.Random, data: bytes) -> Mutated | None:
    """The metadata length after an IPC continuation marker set huge."""
    hits = [m.start() for m in re.finditer(b"\xff\xff\xff\xff", data)]
    if not hits:
        return None
    at = rng.choice(hits) + 4
    if at + 4 > len(data):
        return None
    value = rng.choice((0x7FFFFFFF, 0xFFFFFFFF, 0x10000000, 0))
    return put_int(data, at, 4, value), f"arrow_lengths(@{at} = {value})"


def arrow_boundaries(data: bytes) -> list[int]:
    return [m.start() for m in re.finditer(b"\xff\xff\xff\xff", data)] + [6, 8, len(data) - 10]


def png_dims(rng: random.Random, data: bytes) -> Mutated | None:
    """A PNG's width or height (in an image column) set huge, with its CRC fixed."""
    hits = [m.start() for m in re.finditer(b"IHDR", data)]
    if not hits:
        return None
    at = rng.choice(hits)
    if at + 4 + 13 + 4 > len(data):
        return None
    field_ = rng.choice((0, 4))
    value = rng.choice((0x7FFFFFFF, 50_000, 12_000, 0, 1))
    chunk = bytearray(data[at : at + 17])
    chunk[4 + field_ : 8 + field_] = struct.pack(">I", value)
    crc = struct.pack(">I", zlib.crc32(bytes(chunk)) & 0xFFFFFFFF)
    new = data[:at] + bytes(chunk) + crc + data[at + 21 :]
    return new, f"png_dims({'width' if field_ == 0 else 'height'}@{at} = {value})"


# --- JSON ---------------------------------------------------------------------------------


def json_value(rng: random.Random, data: bytes) -> Mutated | None:
    """A value replaced (other type, path traversal, huge), a key dropped, or deep nesting."""
    edit = rng.choice(("value", "value", "drop", "nest", "text"))
    if edit == "nest":
        depth = rng.choice((100, 10_000, 1_000_000))
        return b"[" * depth + b"]" * depth, f"json_value(nest {depth})"
    if edit == "text":
        return rng.choice((b"", b"null", b"[]", b"\xff\xfe", b"{" + data)), "json_value(text)"
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    slots = value_slots(obj, 30)
    if not slots:
        return None
    c, k = rng.choice(slots)
    if edit == "drop":
        del c[k]
    else:
        c[k] = rng.choice(
            (None, 10**30, -1, 1.5, "../" * 6 + "etc/passwd", "/etc/passwd", "", "x" * 10_000, [], {}, True,
             "model-00001-of-00002.safetensors", "config.json")
        )  # fmt: skip
    return json.dumps(obj).encode(), f"json_value({edit} {k!r})"
