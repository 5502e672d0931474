"""Mutations of the binary containers by their structure: safetensors headers, zip records,
pickle opcodes (legacy torch storages too), .npy headers, IDX headers and the boundaries at
which each of them (and gzip) is worth truncating."""

from __future__ import annotations

import io
import pickletools
import random
import re
import struct

from ..encoding import put_int, st_build, st_parse
from ..seeds import structure_of
from .generic import Mutated, huge

# --- safetensors --------------------------------------------------------------------------

_ST_DTYPES = ("F64", "F32", "F16", "BF16", "I64", "I32", "I8", "U8", "BOOL", "F8_E4M3", "C64", "XX", "", 7)


def st_header(rng: random.Random, data: bytes) -> Mutated | None:
    """An edit of the JSON header: shapes, offsets, dtypes, sizes of 10**12, entries."""
    parsed = st_parse(data)
    if parsed is None:
        return None
    header, n = parsed
    body = data[8 + n :]
    tensors = [k for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    if not tensors:
        return None
    key = rng.choice(tensors)
    entry = header[key]
    edit = rng.choice(
        ("shape-huge", "shape-square", "shape-neg", "shape-junk", "shape-extra", "offsets-huge",
         "offsets-swap", "offsets-past", "offsets-overlap", "dtype", "drop", "not-dict", "metadata",
         "metadata-junk", "many")
    )  # fmt: skip
    shape = list(entry.get("shape", []))
    if edit == "shape-huge":
        entry["shape"] = [10**12] + shape[1:] if shape else [10**12]
    elif edit == "shape-square":
        entry["shape"] = [10**6, 10**6]
    elif edit == "shape-neg":
        entry["shape"] = [-1] + shape[1:]
    elif edit == "shape-junk":
        entry["shape"] = rng.choice(("3", [1.5], [None], {"a": 1}, [2**64], []))
    elif edit == "shape-extra":
        entry["shape"] = shape + [1] * rng.choice((1, 5, 100))
    elif edit == "offsets-huge":
        begin = entry.get("data_offsets", [0, 0])[0]
        entry["data_offsets"] = [begin, rng.choice((10**12, 2**63 - 1, 2**64 - 1))]
    elif edit == "offsets-swap":
        entry["data_offsets"] = list(reversed(entry.get("data_offsets", [0, 0])))
    elif edit == "offsets-past":
        begin, end = entry.get("data_offsets", [0, 0])
        entry["data_offsets"] = [begin + len(body), end + len(body)]
    elif edit == "offsets-overlap":
        other = header[rng.choice(tensors)]
        entry["data_offsets"] = list(other.get("data_offsets", [0, 0]))
    elif edit == "dtype":
        entry["dtype"] = rng.choice(_ST_DTYPES)
    elif edit == "drop":
        entry.pop(rng.choice(("dtype", "shape", "data_offsets")), None)
    elif edit == "not-dict":
        header[key] = rng.choice(([1, 2], 3, "x", None))
    elif edit == "metadata":
        header["__metadata__"] = rng.choice(({"a": 1}, {"tsens.layers": "nope"}, [1], "x", {"x": {"y": "z"}}))
    elif edit == "metadata-junk":
        header["__metadata__"] = {
            "tsens.bn_eps": rng.choice(("-1", "nan", "1e400")),
            "tsens.activation": "gelu",
        }
    else:
        for i in range(rng.choice((2, 50))):
            header[f"{key}.copy{i}"] = dict(entry)
    return st_build(header, body), f"st_header({edit} {key})"


def st_length(rng: random.Random, data: bytes) -> Mutated | None:
    """The 8-byte header length set huge, or off by a little."""
    if len(data) < 8:
        return None
    n = struct.unpack("<Q", data[:8])[0]
    value = rng.choice((10**12, 2**63 - 1, 2**64 - 1, n + 1, n - 1, 0, len(data), len(data) - 7))
    return put_int(data, 0, 8, value), f"st_length({value})"


def st_raw_json(rng: random.Random, data: bytes) -> Mutated | None:
    """Text edits of the header: duplicate keys, deep nesting, a broken brace."""
    parsed = st_parse(data)
    if parsed is None:
        return None
    _, n = parsed
    text = data[8 : 8 + n].decode("utf-8", "replace").rstrip()
    edit = rng.choice(("dup-key", "nest", "brace", "nul", "big-number"))
    if edit == "dup-key":
        first = text.index(":")
        key_start = text.index('"')
        text = (
            text[:-1]
            + ", "
            + text[key_start:first]
            + ': {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}'
        )
    elif edit == "nest":
        depth = rng.choice((100, 10_000, 200_000))
        text = text[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}"
    elif edit == "brace":
        text = text[:-1]
    elif edit == "nul":
        text = text[:1] + "\0" + text[1:]
    else:
        text = text.replace("[", "[1" + "0" * 400 + ",", 1)
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw + data[8 + n :], f"st_raw_json({edit})"


def st_boundaries(data: bytes) -> list[int]:
    parsed = st_parse(data)
    if parsed is None:
        return [8]
    header, n = parsed
    cuts = [8, 8 + n]
    for v in header.values():
        if isinstance(v, dict) and isinstance(v.get("data_offsets"), list):
            cuts += [8 + n + int(o) for o in v["data_offsets"] if isinstance(o, int)]
    return cuts


# --- zip ----------------------------------------------------------------------------------

_ZIP_SIGS = {b"PK\x03\x04": "local", b"PK\x01\x02": "central", b"PK\x05\x06": "eocd", b"PK\x06\x06": "eocd64"}
# (offset in the record, size) of the fields worth setting huge
_ZIP_FIELDS = {
    "local": ((8, 2), (14, 4), (18, 4), (22, 4), (26, 2), (28, 2)),
    "central": ((10, 2), (16, 4), (20, 4), (24, 4), (28, 2), (30, 2), (32, 2), (42, 4)),
    "eocd": ((8, 2), (10, 2), (12, 4), (16, 4), (20, 2)),
    "eocd64": ((24, 8), (32, 8), (40, 8), (48, 8)),
}
_ZIP_NAMES = {
    "local": {8: "method", 14: "crc", 18: "csize", 22: "usize", 26: "name_len", 28: "extra_len"},
    "central": {10: "method", 16: "crc", 20: "csize", 24: "usize", 28: "name_len", 30: "extra_len",
                32: "comment_len", 42: "local_offset"},
    "eocd": {8: "disk_entries", 10: "entries", 12: "cd_size", 16: "cd_offset", 20: "comment_len"},
    "eocd64": {24: "disk_entries", 32: "entries", 40: "cd_size", 48: "cd_offset"},
}  # fmt: skip


def _zip_records(data: bytes) -> list[tuple[str, int]]:
    found = []
    for sig, kind in _ZIP_SIGS.items():
        start = data.find(sig)
        while start != -1:
            found.append((kind, start))
            start = data.find(sig, start + 1)
    return sorted(found, key=lambda r: r[1])


def zip_field(rng: random.Random, data: bytes) -> Mutated | None:
    """A size, count, offset, method or CRC field of a local/central/end record set huge."""
    records = _zip_records(data)
    if not records:
        return None
    kind, at = rng.choice(records)
    offset, size = rng.choice(_ZIP_FIELDS[kind])
    if at + offset + size > len(data):
        return None
    name = _ZIP_NAMES[kind][offset]
    if name == "method":
        value = rng.choice((8, 12, 14, 93, 99, 0xFFFF))
    elif name in ("crc",):
        value = rng.getrandbits(32)
    else:
        value = rng.choice((huge(rng, size), 0, 1))
    return put_int(data, at + offset, size, value), f"zip_field({kind}@{at}.{name} = {value})"


def member_structure(name: str, data: bytes) -> str:
    if name.endswith(".pkl"):
        return "pickle"
    if (
        name.endswith((".json", ".h5", ".npy", ".safetensors", ".msgpack", ".onnx"))
        or data[:6] == b"\x93NUMPY"
    ):
        return structure_of(name, data)
    return "raw"


def zip_boundaries(data: bytes) -> list[int]:
    cuts = []
    for kind, at in _zip_records(data):
        cuts.append(at)
        if kind == "local" and at + 30 <= len(data):
            name_len, extra_len = struct.unpack("<HH", data[at + 26 : at + 30])
            cuts.append(at + 30 + name_len + extra_len)
    return cuts


# --- pickle -------------------------------------------------------------------------------

_LENGTH_OPS = {
    "BINBYTES": 4, "SHORT_BINBYTES": 1, "BINBYTES8": 8, "BINUNICODE": 4, "SHORT_BINUNICODE": 1,
    "BINUNICODE8": 8, "BYTEARRAY8": 8, "FRAME": 8, "LONG1": 1, "LONG4": 4, "BINSTRING": 4,
    "SHORT_BINSTRING": 1,
}  # fmt: skip
_MEMO_OPS = {"BINPUT": 1, "LONG_BINPUT": 4, "BINGET": 1, "LONG_BINGET": 4}
_INT_OPS = {"BININT": 4, "BININT1": 1, "BININT2": 2}
_GLOBALS = (
    "os\nsystem", "builtins\neval", "torch._utils\n_rebuild_tensor_v2", "torch\nFloatStorage", "numpy\ndtype",
    "collections\nOrderedDict", "torch\nTensor", "__main__\nNet", "_codecs\nencode", "numpy\nndarray",
)  # fmt: skip


def _pickle_ops(data: bytes) -> list[tuple[int, int, str]]:
    """(start, end, opcode name) of every opcode of the leading pickles (legacy torch files
    hold five in a row), as far as they parse."""
    ops: list[list] = []
    f = io.BytesIO(data)
    for _ in range(6):
        if f.tell() >= len(data):
            break
        try:
            for op, _arg, pos in pickletools.genops(f):
                ops.append([pos, pos, op.name])
        except Exception:
            break
    for i, op in enumerate(ops):
        nxt = ops[i + 1][0] if i + 1 < len(ops) and ops[i + 1][0] > op[0] else None
        op[1] = nxt if nxt is not None else (op[0] + 1 if op[2] == "STOP" else len(data))
    return [tuple(op) for op in ops]  # type: ignore[misc]


def pickle_op(rng: random.Random, data: bytes) -> Mutated | None:
    """An opcode's length, memo index or integer set huge; an opcode dropped, repeated, or a
    global swapped for another."""
    ops = _pickle_ops(data)
    if not ops:
        return None
    edit = rng.choice(("length", "length", "memo", "int", "int", "drop", "repeat", "global"))
    if edit == "length":
        cands = [o for o in ops if o[2] in _LENGTH_OPS]
        if not cands:
            return None
        start, _, name = rng.choice(cands)
        size = _LENGTH_OPS[name]
        value = huge(rng, size)
        return put_int(data, start + 1, size, value), f"pickle_op(length {name}@{start} = {value})"
    if edit == "memo":
        cands = [o for o in ops if o[2] in _MEMO_OPS]
        if not cands:
            return None
        start, end, name = rng.choice(cands)
        if rng.random() < 0.5 or _MEMO_OPS[name] == 4:
            value = rng.choice((0xFFFFFFFF, 1 << 28, 1 << 31, 123456))
            code = b"j" if "PUT" in name else b"r"
            return data[:start] + code + struct.pack("<I", value) + data[
                end:
            ], f"pickle_op(memo {name}@{start} = {value})"
        return put_int(data, start + 1, 1, 0xFF), f"pickle_op(memo {name}@{start} = 255)"
    if edit == "int":
        cands = [o for o in ops if o[2] in _INT_OPS]
        if not cands:
            return None
        start, end, name = rng.choice(cands)
        value = rng.choice((10**12, -1, 0, 2**31 - 1, -(2**31), 2**63, 10**6))
        if -(2**31) <= value < 2**31:
            repl = b"J" + struct.pack("<i", value)
        else:
            raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
            repl = b"\x8a" + bytes([len(raw)]) + raw
        return data[:start] + repl + data[end:], f"pickle_op(int {name}@{start} = {value})"
    if edit in ("drop", "repeat"):
        start, end, name = rng.choice(ops)
        if edit == "drop":
            return data[:start] + data[end:], f"pickle_op(drop {name}@{start})"
        return data[:end] + data[start:end] * rng.choice((1, 2, 50)) + data[
            end:
        ], f"pickle_op(repeat {name}@{start})"
    cands = [o for o in ops if o[2] == "GLOBAL"]
    if not cands:
        return None
    start, end, _ = rng.choice(cands)
    target = rng.choice(_GLOBALS)
    return data[:start] + b"c" + target.encode() + b"\n" + data[
        end:
    ], f"pickle_op(global@{start} = {target!r})"


def pickle_legacy_storage(rng: random.Random, data: bytes) -> Mutated | None:
    """The 8-byte element count before a legacy torch file's first storage set huge."""
    ops = _pickle_ops(data)
    stops = [o for o in ops if o[2] == "STOP"]
    if len(stops) < 5:
        return None
    at = stops[4][1]
    if at + 8 > len(data):
        return None
    value = rng.choice((10**12, 2**62, 2**63 - 1, 10**9, 0))
    return put_int(data, at, 8, value), f"pickle_legacy_storage(@{at} = {value})"


def pickle_boundaries(data: bytes) -> list[int]:
    return [o[0] for o in _pickle_ops(data)]


# --- npy ----------------------------------------------------------------------------------


def _npy_parse(data: bytes) -> tuple[int, int, str] | None:
    """(header start, header end, header text) of a .npy file."""
    if data[:6] != b"\x93NUMPY" or len(data) < 10:
        return None
    major = data[6]
    if major == 1:
        n, start = struct.unpack("<H", data[8:10])[0], 10
    elif major in (2, 3) and len(data) >= 12:
        n, start = struct.unpack("<I", data[8:12])[0], 12
    else:
        return None
    return start, start + n, data[start : start + n].decode("latin1")


_NPY_SHAPES = (
    "(1000000000000,)", "(1000000, 1000000)", "(9223372036854775807,)", "(-1, 36)", "()", "(0, 36)",
    "(8, 36" + ", 1" * 40 + ")", "(2**40,)", "[8, 36]", "(8.0, 36)",
)  # fmt: skip
_NPY_DTYPES = (
    "'|O'", "'<U8'", "'|V16'", "'>f4'", "'<c16'", "'|b1'", "'<M8[s]'", "[('a', '<f4')]", "'xyz'", "'<f16'",
    "'|S0'", "'<f8'", "[('a', '<f4', (1000000, 1000000))]",
)  # fmt: skip


def npy_header(rng: random.Random, data: bytes) -> Mutated | None:
    """Shape (10**12 elements ...), dtype, fortran_order or the header length edited."""
    parsed = _npy_parse(data)
    if parsed is None:
        return None
    start, end, text = parsed
    edit = rng.choice(("shape", "shape", "dtype", "order", "length", "garble"))
    if edit == "length":
        size = start - 8
        value = huge(rng, size)
        return put_int(data, 8, size, value), f"npy_header(length = {value})"
    if edit == "shape":
        new = re.sub(r"'shape': \([^)]*\)", f"'shape': {rng.choice(_NPY_SHAPES)}", text)
    elif edit == "dtype":
        new = re.sub(r"'descr': ('[^']*'|\[.*?\])", f"'descr': {rng.choice(_NPY_DTYPES)}", text)
    elif edit == "order":
        new = text.replace("False", "True") if "False" in text else text.replace("True", "False")
    else:
        p = rng.randrange(max(len(text) - 1, 1))
        new = text[:p] + rng.choice("{}()[]:,'\"x0") + text[p + 1 :]
    new = new.rstrip("\n ")
    pad = -(start + len(new) + 1) % 64
    new += " " * pad + "\n"
    size = start - 8
    if size == 2 and len(new) > 0xFFFF:
        return None
    head = data[:8] + (struct.pack("<H", len(new)) if size == 2 else struct.pack("<I", len(new)))
    return head + new.encode("latin1") + data[end:], f"npy_header({edit}: {new.strip()[:80]})"


def npy_boundaries(data: bytes) -> list[int]:
    parsed = _npy_parse(data)
    return [6, 8, 10] + ([parsed[1]] if parsed else [])


# --- idx / gzip ---------------------------------------------------------------------------


def idx_header(rng: random.Random, data: bytes) -> Mutated | None:
    """A dimension set huge (or 0), the rank or the dtype code changed."""
    if len(data) < 4:
        return None
    ndim = data[3]
    edit = rng.choice(("dim", "dim", "dim", "ndim", "dtype"))
    if edit == "dim" and ndim and len(data) >= 4 + 4 * ndim:
        i = rng.randrange(ndim)
        value = rng.choice((0xFFFFFFFF, 10**9, 0x7FFFFFFF, 0, 1, 65536))
        return put_int(data, 4 + 4 * i, 4, value, ">"), f"idx_header(dim {i} = {value})"
    if edit == "ndim":
        value = rng.choice((0, 1, 2, 4, 255))
        return data[:3] + bytes([value]) + data[4:], f"idx_header(ndim = {value})"
    value = rng.choice((0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0xFF))
    return data[:2] + bytes([value]) + data[3:], f"idx_header(dtype = {value:#x})"


def idx_boundaries(data: bytes) -> list[int]:
    return [2, 3, 4] + ([4 + 4 * data[3]] if len(data) > 3 else [])


def gzip_boundaries(data: bytes) -> list[int]:
    return [2, 3, 10, len(data) - 8, len(data) - 4]
