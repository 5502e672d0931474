"""Payload seeds: pickles that would create the file MARKER in the worker's (empty) working
directory if anything ran them, inside every container that holds pickles (zip and legacy
torch files, ``.ckpt`` dicts, Hugging Face ``pytorch_model.bin``, CIFAR batches, object-dtype
``.npy``/``.npz``), and the check for that file after each case."""

from __future__ import annotations

import os
import pickle
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .encoding import data_arrays, npy_bytes, one_storage, torch_bytes, zip_bytes, zip_members
from .outcomes import Result
from .seeds import CHECKPOINT, DATA, Seed

MARKER = "pwned"  # what payloads create, relative to the worker's (empty) working directory


def _op_str(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _op_call(module: str, name: str, *args: str | bytes) -> bytes:
    """Protocol-2 opcodes that call ``module.name(*args)`` (bytes arguments are opcodes)."""
    ops = b"".join(a if isinstance(a, bytes) else _op_str(a) for a in args)
    return b"c" + f"{module}\n{name}\n".encode() + b"(" + ops + b"tR"


PAYLOADS: dict[str, bytes] = {
    "io.open": _op_call("io", "open", MARKER, "w"),
    "builtins.open": _op_call("builtins", "open", MARKER, "w"),
    "os.system": _op_call("os", "system", f"touch {MARKER}"),
    "posix.system": _op_call("posix", "system", f"touch {MARKER}"),
    "builtins.exec": _op_call("builtins", "exec", f"open({MARKER!r}, 'w').close()"),
    "builtins.eval": _op_call("builtins", "eval", f"open({MARKER!r}, 'w')"),
    "subprocess.call": _op_call("subprocess", "call", b"(" + _op_str("touch") + _op_str(MARKER) + b"l"),
    "torch.save": _op_call("torch", "save", "x", MARKER),
    "numpy.save": _op_call("numpy", "save", MARKER, "x"),
    "logging.FileHandler": _op_call("logging", "FileHandler", MARKER),
    "zipfile.ZipFile": _op_call("zipfile", "ZipFile", MARKER, "w"),
    "operator.methodcaller": (
        _op_call("operator", "methodcaller", "touch")
        + b"("
        + _op_call("pathlib", "PosixPath", MARKER)
        + b"tR"
    ),
}
_SLOT = "FUZZ_PAYLOAD_SLOT"


def _with_payload(data: bytes, payload: bytes) -> bytes:
    """``data`` (pickles holding the string _SLOT) with that string replaced by the call."""
    slot = _op_str(_SLOT)
    assert slot in data, "the payload slot is not pickled as BINUNICODE"
    return data.replace(slot, payload)


def _zip_with_payload(data: bytes, payload: bytes) -> bytes:
    members = zip_members(data, limit=None) or []
    return zip_bytes([(n, _with_payload(d, payload) if n.endswith(".pkl") else d, m) for n, d, m in members])


def _object_npy(payload: bytes) -> bytes:
    """An object-dtype .npy file whose one element is the payload."""
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode()
    return npy + b"\x80\x02" + payload + b"."


def payload_seeds(state: dict, lightning: dict) -> Iterator[Seed]:
    """Every payload in every container: a network ``state`` and a Lightning checkpoint dict
    carry the call in place of a value."""
    evil_state = {"0.weight": state["0.weight"], "0.bias": state["0.bias"], "evil": _SLOT}
    evil_ckpt = dict(lightning, hyper_parameters={"callback": _SLOT, "lr": 0.1})
    _, y = data_arrays()
    for how, payload in PAYLOADS.items():
        zipped = _zip_with_payload(torch_bytes(evil_state), payload)
        yield Seed.of("payload.pt", how, CHECKPOINT, [("evil.pt", zipped, "zip")])
        legacy = _with_payload(torch_bytes(one_storage(evil_state), legacy=True), payload)
        yield Seed.of("payload.pt-legacy", how, CHECKPOINT, [("evil.pt", legacy, "pickle")])
        ckpt = _zip_with_payload(torch_bytes(evil_ckpt), payload)
        yield Seed.of("payload.ckpt", how, CHECKPOINT, [("evil.ckpt", ckpt, "zip")])
        yield Seed.of("payload.hf", how, CHECKPOINT, [("pytorch_model.bin", zipped, "zip")], target=".")
        cifar = {b"batch_label": b"evil", b"labels": _SLOT, b"data": np.zeros((2, 3072), np.uint8)}
        batch = _with_payload(pickle.dumps(cifar, 2), payload)
        yield Seed.of("payload.cifar", how, DATA, [("data_batch_1", batch, "pickle")])
        npy = _object_npy(payload)
        yield Seed.of("payload.npy", how, DATA, [("evil.npy", npy, "npy")])
        npz = zip_bytes([("x.npy", npy, 0), ("y.npy", npy_bytes(y), 0)])
        yield Seed.of("payload.npz", how, DATA, [("evil.npz", npz, "zip")])


def take_markers(cwd: Path) -> list[str]:
    """Files a case left in the (otherwise empty) working directory ``cwd``; removed."""
    found = sorted(os.listdir(cwd))
    for name in found:
        p = cwd / name
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    return found


def payload_result(result: Result, found: list[str]) -> Result:
    """``result`` turned into a ``payload`` outcome if the case left files behind."""
    if not found:
        return result
    message = f"created {found}; outcome was {result.outcome}: {result.message}"
    return Result("payload", result.step, message, result.trace)
