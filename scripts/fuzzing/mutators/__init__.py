"""The mutators by structure, and ``mutate``: one mutation of a file's bytes, structural (for
the structure its seed gives it) 60% of the time, else generic. The mutators of containers
(zip members, gzip contents) mutate what they hold through ``mutate`` again."""

from __future__ import annotations

import random
import zipfile

from ..encoding import gunzip_small, gzip_bytes, put_int, zip_bytes, zip_members
from .binary import (
    gzip_boundaries,
    idx_boundaries,
    idx_header,
    member_structure,
    npy_boundaries,
    npy_header,
    pickle_boundaries,
    pickle_legacy_storage,
    pickle_op,
    st_boundaries,
    st_header,
    st_length,
    st_raw_json,
    zip_boundaries,
    zip_field,
)
from .generic import GENERIC, Mutated, Mutator, flip_head, insert, truncate_at
from .structured import (
    arrow_boundaries,
    arrow_lengths,
    h5_field,
    h5_head,
    json_value,
    learn_h5,
    msgpack_boundaries,
    msgpack_length,
    msgpack_value,
    onnx_model,
    parquet_footer,
    png_dims,
)

__all__ = ["GENERIC", "STRUCTURAL", "Mutated", "Mutator", "learn_h5", "mutate"]


def _draw_member(rng: random.Random, data: bytes) -> tuple[list[tuple[str, bytes, int]], int] | None:
    """The (name, bytes, method) members of a zip archive and the index of one drawn at random."""
    members = zip_members(data)
    return (members, rng.randrange(len(members))) if members else None


def _mutate_member(rng: random.Random, name: str, content: bytes) -> Mutated:
    return mutate(rng, content, member_structure(name, content), depth=1)


def zip_member(rng: random.Random, data: bytes) -> Mutated | None:
    """One member mutated (by its own structure) and the archive written again."""
    if (drawn := _draw_member(rng, data)) is None:
        return None
    members, i = drawn
    name, content, method = members[i]
    new, what = _mutate_member(rng, name, content)
    members[i] = (name, new, method)
    return zip_bytes(members), f"zip_member({name}: {what})"


def zip_layout(rng: random.Random, data: bytes) -> Mutated | None:
    """Members duplicated (same or other bytes), dropped, renamed, reordered, recompressed."""
    if (drawn := _draw_member(rng, data)) is None:
        return None
    members, i = drawn
    name, content, method = members[i]
    edit = rng.choice(
        ("dup-same", "dup-other", "dup-first", "drop", "rename", "traversal", "reorder", "method", "empty")
    )
    if edit == "dup-same":
        members.append(members[i])
    elif edit == "dup-other":
        members.append((name, _mutate_member(rng, name, content)[0], method))
    elif edit == "dup-first":
        members.insert(0, (name, rng.randbytes(len(content) % 97 + 1), method))
    elif edit == "drop":
        del members[i]
    elif edit == "rename":
        members[i] = (name + rng.choice(("x", "/", "/../a", "\0")), content, method)
    elif edit == "traversal":
        members[i] = ("../" * 8 + "tmp/" + name.rsplit("/", 1)[-1], content, method)
    elif edit == "reorder":
        rng.shuffle(members)
    elif edit == "method":
        members[i] = (
            name,
            content,
            zipfile.ZIP_DEFLATED if method == zipfile.ZIP_STORED else zipfile.ZIP_STORED,
        )
    else:
        members = []
    return zip_bytes(members), f"zip_layout({edit} {name})"


def gzip_member(rng: random.Random, data: bytes) -> Mutated | None:
    """The inflated content mutated (as IDX) and compressed again; ISIZE, flags, extra members."""
    edit = rng.choice(("inner", "inner", "inner", "isize", "flags", "append", "append-junk"))
    if edit == "inner":
        inner = gunzip_small(data)
        if inner is None:
            return None
        new, what = mutate(rng, inner, "idx", depth=1)
        return gzip_bytes(new), f"gzip_member(inner: {what})"
    if edit == "isize" and len(data) >= 8:
        value = rng.choice((0xFFFFFFFF, 0, 0x7FFFFFFF))
        return put_int(data, len(data) - 4, 4, value), f"gzip_member(isize = {value})"
    if edit == "flags" and len(data) > 3:
        value = rng.choice((0x04, 0x08, 0x10, 0x02, 0xE0, 0xFF))
        return data[:3] + bytes([value]) + data[4:], f"gzip_member(flags = {value:#x})"
    if edit == "append":
        return data + data[: min(len(data), 1 << 20)], "gzip_member(append a copy)"
    return data + b"\x1f\x8b" + rng.randbytes(16), "gzip_member(append junk member)"


STRUCTURAL: dict[str, tuple[Mutator, ...]] = {
    "safetensors": (st_header, st_header, st_header, st_length, st_raw_json, truncate_at(st_boundaries)),
    "zip": (
        zip_field,
        zip_field,
        zip_member,
        zip_member,
        zip_member,
        zip_layout,
        truncate_at(zip_boundaries),
    ),
    "pickle": (pickle_op, pickle_op, pickle_op, pickle_legacy_storage, truncate_at(pickle_boundaries)),
    "npy": (npy_header, npy_header, npy_header, truncate_at(npy_boundaries)),
    "idx": (idx_header, idx_header, truncate_at(idx_boundaries)),
    "gzip": (gzip_member, gzip_member, truncate_at(gzip_boundaries)),
    "msgpack": (
        msgpack_length,
        msgpack_length,
        msgpack_value,
        msgpack_value,
        truncate_at(msgpack_boundaries),
    ),
    "h5": (h5_field, h5_field, h5_field, h5_head, flip_head),
    "onnx": (onnx_model, onnx_model, onnx_model, flip_head),
    "parquet": (parquet_footer, parquet_footer, png_dims),
    "arrow": (arrow_lengths, arrow_lengths, truncate_at(arrow_boundaries)),
    "json": (json_value,),
}


def mutate(rng: random.Random, data: bytes, structure: str, depth: int = 0) -> Mutated:
    """One mutation of ``data``: structural (for its structure) 60% of the time, else generic."""
    structural = STRUCTURAL.get(structure, ())
    if depth > 1:
        structural = tuple(m for m in structural if m not in (zip_member, gzip_member))
    for _ in range(8):
        pool = structural if structural and rng.random() < 0.6 else GENERIC
        try:
            result = rng.choice(pool)(rng, data)
        except Exception:  # a structural mutator that cannot handle this input: try another
            result = None
        if result is not None:
            return result
    return insert(rng, data) or (data, "none")
