"""Mutations that know nothing of the format: bit flips, interesting bytes, random runs,
integers set huge at random places, truncation, insertion, deletion and duplication; plus the
helpers the structural mutators share (huge values, truncation at boundaries, value slots)."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from ..encoding import put_int

Mutated = tuple[bytes, str]  # the new bytes and what was done
Mutator = Callable[[random.Random, bytes], Mutated | None]  # None: not applicable to these bytes

HUGE = {
    1: (0xFF, 0x7F, 0x80),
    2: (0xFFFF, 0x7FFF, 0x8000),
    4: (0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 10**9),
    8: (10**12, 2**63 - 1, 2**64 - 1, 2**62, 2**40),
}
_INTERESTING_BYTES = (0x00, 0xFF, 0x7F, 0x80, 0x01, 0x20, 0x0A)


def huge(rng: random.Random, size: int) -> int:
    """A value of a ``size``-byte field that a reader might trust as a size."""
    return rng.choice(HUGE[size])


def _flip(rng: random.Random, data: bytes, where: list[int]) -> bytes:
    out = bytearray(data)
    for p in where:
        out[p] ^= 1 << rng.randrange(8)
    return bytes(out)


def flip_bits(rng: random.Random, data: bytes) -> Mutated | None:
    if not data:
        return None
    n = rng.choice((1, 1, 2, 3, 4, 8, 16))
    where = [rng.randrange(len(data)) for _ in range(n)]
    return _flip(rng, data, where), f"flip_bits({n} at {where[:4]})"


def flip_head(rng: random.Random, data: bytes) -> Mutated | None:
    """Bit flips in the first KiB, where headers and superblocks live."""
    if not data:
        return None
    where = [rng.randrange(min(len(data), 1024)) for _ in range(rng.choice((1, 2, 4)))]
    return _flip(rng, data, where), f"flip_head({where})"


def set_bytes(rng: random.Random, data: bytes) -> Mutated | None:
    if not data:
        return None
    out = bytearray(data)
    where = [rng.randrange(len(out)) for _ in range(rng.choice((1, 2, 4)))]
    for p in where:
        out[p] = rng.choice(_INTERESTING_BYTES)
    return bytes(out), f"set_bytes({where})"


def random_run(rng: random.Random, data: bytes) -> Mutated | None:
    if not data:
        return None
    p, n = rng.randrange(len(data)), rng.choice((2, 8, 32, 256))
    return data[:p] + rng.randbytes(n) + data[p + n :], f"random_run({n} at {p})"


def int_field(rng: random.Random, data: bytes) -> Mutated | None:
    """An integer at a random place set huge, as a size field would be."""
    size = rng.choice((2, 4, 4, 8, 8))
    if len(data) < size:
        return None
    p, value, order = rng.randrange(len(data) - size + 1), huge(rng, size), rng.choice("<>")
    return put_int(data, p, size, value, order), f"int_field(u{8 * size}{order} {value} at {p})"


def truncate(rng: random.Random, data: bytes) -> Mutated | None:
    if not data:
        return None
    n = rng.choice((0, 1, rng.randrange(len(data)), len(data) - rng.randrange(1, min(len(data), 64) + 1)))
    return data[: max(n, 0)], f"truncate({max(n, 0)} of {len(data)})"


def insert(rng: random.Random, data: bytes) -> Mutated | None:
    p, n = rng.randrange(len(data) + 1), rng.choice((1, 4, 16, 64))
    return data[:p] + rng.randbytes(n) + data[p:], f"insert({n} at {p})"


def delete(rng: random.Random, data: bytes) -> Mutated | None:
    if not data:
        return None
    p, n = rng.randrange(len(data)), rng.choice((1, 4, 16, 64))
    return data[:p] + data[p + n :], f"delete({n} at {p})"


def duplicate(rng: random.Random, data: bytes) -> Mutated | None:
    if not data:
        return None
    p = rng.randrange(len(data))
    n = rng.choice((8, 64, 512))
    q = rng.randrange(len(data) + 1)
    return data[:q] + data[p : p + n] + data[q:], f"duplicate({n} from {p} to {q})"


GENERIC: tuple[Mutator, ...] = (
    flip_bits,
    flip_bits,
    flip_head,
    set_bytes,
    random_run,
    int_field,
    int_field,
    truncate,
    truncate,
    insert,
    delete,
    duplicate,
)


def truncate_at(boundaries: Callable[[bytes], list[int]]) -> Mutator:
    """Truncation at a structure boundary (one byte either side, too)."""

    def mutator(rng: random.Random, data: bytes) -> Mutated | None:
        try:
            cuts = sorted({b for b in boundaries(data) if 0 <= b < len(data)})
        except Exception:
            return None
        if not cuts:
            return None
        cut = min(max(rng.choice(cuts) + rng.choice((0, 0, -1, 1)), 0), len(data))
        return data[:cut], f"truncate_at_boundary({cut} of {len(data)})"

    mutator.__name__ = f"truncate_at_{boundaries.__name__}"
    return mutator


def value_slots(obj: Any, max_depth: int) -> list[tuple[Any, Any]]:
    """(container, key) of every value in nested dicts and lists, down to ``max_depth``, in
    the order a depth-first walk meets them."""
    slots: list[tuple[Any, Any]] = []

    def visit(o: Any, depth: int) -> None:
        if depth > max_depth:
            return
        items = o.items() if isinstance(o, dict) else enumerate(o) if isinstance(o, list) else ()
        for k, v in list(items):
            slots.append((o, k))
            visit(v, depth + 1)

    visit(obj, 0)
    return slots
