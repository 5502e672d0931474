#!/usr/bin/env python3
"""Fuzzing tsens's file readers: valid files of every format, mutated, through the library and
the command line.

Run (from the repository root)::

    python scripts/fuzz.py --cases 10000             # what `make fuzz` runs
    python scripts/fuzz.py --cases 300 --formats npy,safetensors --seed 3
    python scripts/fuzz.py --seed 3 --replay 1234    # one case again, here, with its traceback
    python scripts/fuzz.py --list-formats

**Seeds.** (a) Small valid files this script writes itself: networks as ``.safetensors``, zip and
legacy ``torch.save`` files, Lightning-style ``.ckpt`` dicts and Hugging Face directories; data
as ``.npz``, ``.npy``, Parquet, Arrow, Feather, CIFAR batch pickles, IDX (plain and gzip) and
``.safetensors``; a gzip bomb (an IDX file whose header promises 144 bytes and whose stream
inflates to 1 GiB, twice the memory a case may use); and *payload* files, pickles that would
create a marker file if anything ran them (``io.open``, ``os.system``, ``builtins.exec``/``eval``,
``subprocess.call``,
``torch.save``, ``numpy.save``, ``logging.FileHandler``, ``zipfile.ZipFile``, a chained
``operator.methodcaller``), inside zip and legacy ``.pt`` files, ``.ckpt`` dicts, Hugging Face
``pytorch_model.bin``, CIFAR batch files and object-dtype ``.npy``/``.npz``. (b) Every file under
``tests/data/formats/`` (a directory that a checkpoint format claims, e.g. a Hugging Face
directory, is one seed; ``.npz`` files named like a checkpoint beside it are reference outputs
and skipped; other non-checkpoint files are copied beside the seed unchanged), so new formats
join automatically. The first cases run every seed unchanged.

**Mutations.** Bit flips, random byte runs, interesting bytes and integer fields (sizes set to
2**32-1, 10**12, 2**63-1, ...), truncation at random and at structure boundaries, insertion,
deletion, duplication of ranges; and per structure: safetensors header edits (shapes, offsets,
dtypes, sizes of 10**12, the header length), zip records (local/central/end-of-directory size,
count and offset fields set huge, methods, CRCs; members duplicated, dropped, renamed, or
mutated themselves and re-zipped), pickle opcodes (length and memo fields huge, integers
huge, opcodes dropped or repeated, globals swapped), ``.npy`` headers (shape 10**12, dtype,
order, header length), IDX dims/dtype/rank, gzip (inner mutation, ISIZE, flags, extra
members), msgpack (length fields huge, ext codes, Flax array headers: shape/dtype/buffer, deep
nesting), HDF5 (the first KiB, dataspace dims found through h5py set huge, data addresses),
ONNX (initializer dims/dtype/raw data/external data, nodes, opsets), Parquet/Arrow footers and
metadata lengths, PNG dimensions inside image columns, JSON values and nesting.

**Cases.** A pool of long-lived worker processes (forked after tsens, torch, numpy, pyarrow,
h5py, onnx and msgpack are imported) runs each case: checkpoints through
``tsens.checkpoints.load_network`` and ``read_metadata``, data through
``tsens.datasets.load_dataset``; every ``--cli-every``-th case also through ``tsens info FILE``
or ``tsens bound FILE`` (data: ``tsens bound NET --data FILE``) under click's CliRunner. A
worker's address space is capped (``RLIMIT_AS`` = its size after the imports plus
``--memory-mb``, 512 MiB by default: the seeds are a few KiB, so any claim-driven allocation
shows) and its RSS polled; a case has ``--timeout`` seconds. Outcomes:

* ``ok``: loaded; ``refused``: a :class:`tsens.errors.TsensError` of one line that starts with
  the file's path (CLI: exit 2, one ``tsens: error:`` line, no traceback);
* bad: ``traceback`` (any other exception, or a CLI exit code other than 0 and 2), ``badmsg``
  (a TsensError of several lines or not naming the file first), ``memory`` (a MemoryError or
  failed allocation anywhere in the exception chain, the address-space cap hit, or RSS over
  the limit: the worker is killed), ``hang`` (over the time limit: killed), ``crash`` (the
  worker died, e.g. a segfault), ``payload`` (a file appeared in the worker's empty working
  directory: pickled code ran).

A worker that was killed or died is replaced. Every bad case is saved (its input files, the
mutation, the message and traceback) under ``--save-dir`` (default ``build/fuzz/``, with
``report.txt``); ``--replay N`` regenerates case N (same ``--seed`` and ``--formats``) and runs
it in this process. Everything is deterministic given ``--seed``. The script prints a table
per format and exits 1 if any case was bad.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import functools
import gzip
import hashlib
import io
import json
import multiprocessing
import os
import pickle
import pickletools
import random
import re
import resource
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import numpy as np
import torch

import tsens.checkpoints
import tsens.cli
import tsens.datasets
from tsens.errors import TsensError

REPO = Path(__file__).resolve().parents[1]
EXTERNAL = REPO / "tests" / "data" / "formats"
DEFAULT_SAVE_DIR = REPO / "build" / "fuzz"

OUTCOMES = ("ok", "refused", "traceback", "badmsg", "memory", "hang", "crash", "payload")
BAD = frozenset(OUTCOMES[2:])
_RANK = {o: i for i, o in enumerate(OUTCOMES)}
CHECKPOINT, DATA = "checkpoint", "data"
MARKER = "pwned"  # what payloads create, relative to the worker's (empty) working directory
FEATURES = 36  # inputs of the generated data sets (CIFAR: 3072)

for _name in ("msgpack", "h5py", "onnx", "pyarrow.parquet", "pyarrow.feather", "PIL.Image", "psutil"):
    with contextlib.suppress(ImportError):  # imported before the workers fork, so cases are fast
        __import__(_name)


# ============================================================================ seeds


@dataclass(frozen=True)
class SeedFile:
    """One file of a seed: its name, bytes, and the structure its mutators understand
    ("" = copied unchanged)."""

    name: str
    data: bytes
    structure: str


@dataclass(frozen=True)
class Seed:
    """A valid input: the files written side by side into a case directory, the one given to
    the entry point (``"."``: the directory itself), and the summary row it counts in."""

    fmt: str
    name: str
    kind: str
    files: tuple[SeedFile, ...]
    target: str
    features: int = FEATURES

    @property
    def mutable(self) -> list[SeedFile]:
        return [f for f in self.files if f.structure]


def _net_state(inputs: int = FEATURES, hidden: int = 5, outputs: int = 3, bn: bool = False) -> dict:
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


def _one_storage(state: dict) -> dict:
    """The float tensors of ``state`` as views of one storage (at offsets)."""
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    flat = torch.cat([v.flatten() for v in tensors.values()])
    out, at = dict(state), 0
    for k, v in tensors.items():
        out[k] = flat[at : at + v.numel()].view(v.shape)
        at += v.numel()
    return out


def _torch_bytes(obj: object, legacy: bool = False) -> bytes:
    """``torch.save`` bytes. A legacy file names its storages by address and writes them in
    address order, so its tensors must share one storage (``_one_storage``), whose key is
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


_ST_DTYPE_NAMES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.int64: "I64"}


def _safetensors_bytes(state: dict, metadata: dict[str, str] | None = None) -> bytes:
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
    return _st_build(header, body)


def _zip_bytes(members: Sequence[tuple[str, bytes, int]]) -> bytes:
    """A zip archive of (name, bytes, method) members with fixed timestamps; duplicates allowed."""
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w") as zf:
        warnings.simplefilter("ignore")  # "Duplicate name"
        for name, data, method in members:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = method
            zf.writestr(info, data)
    return buf.getvalue()


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=False)
    return buf.getvalue()


def _npz_bytes(arrays: dict[str, np.ndarray], compressed: bool = False) -> bytes:
    method = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
    return _zip_bytes([(f"{k}.npy", _npy_bytes(v), method) for k, v in arrays.items()])


def _idx_bytes(array: np.ndarray) -> bytes:
    code = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype(">f4"): 0x0D}[array.dtype]
    head = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return head + array.tobytes()


def _gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def _bomb_bytes(head: bytes, total: int = 1 << 30) -> bytes:
    """A multi-member gzip stream: ``head`` then zeros, ``total`` bytes once inflated (~1/1000)."""
    block = 64 << 20
    zeros = gzip.compress(bytes(block), compresslevel=9, mtime=0)
    return gzip.compress(head, mtime=0) + zeros * (total // block)


def _data_arrays() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((8, FEATURES)).astype(np.float32), rng.integers(0, 3, 8)


# --- payloads: pickled calls that would create MARKER in the working directory ---------------


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
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        members = [
            (i.filename, zf.read(i), i.compress_type) for i in zf.infolist() if not i.filename.endswith("/")
        ]
    return _zip_bytes([(n, _with_payload(d, payload) if n.endswith(".pkl") else d, m) for n, d, m in members])


@functools.cache
def _generated_seeds() -> tuple[Seed, ...]:
    """The seeds this script writes itself (deterministic bytes)."""
    torch.manual_seed(0)
    seeds: list[Seed] = []

    def add(
        fmt: str, name: str, kind: str, files: Sequence[tuple[str, bytes, str]], target: str = ""
    ) -> None:
        fs = tuple(SeedFile(n, d, s) for n, d, s in files)
        seeds.append(Seed(fmt, name, kind, fs, target or fs[0].name))

    state = _net_state()
    meta = {"tsens.activation": "relu", "run": "fuzz", "epoch": "3"}
    add(
        "safetensors",
        "mlp",
        CHECKPOINT,
        [("mlp.safetensors", _safetensors_bytes(state, meta), "safetensors")],
    )
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in _net_state(bn=True).items()}
    add("safetensors", "bn-f16", CHECKPOINT, [("bn.safetensors", _safetensors_bytes(half), "safetensors")])
    add("pt", "zip", CHECKPOINT, [("mlp.pt", _torch_bytes(state), "zip")])
    add("pt", "zip-bn", CHECKPOINT, [("bn.pth", _torch_bytes(_net_state(bn=True)), "zip")])
    legacy_state = _one_storage(state)
    add("pt-legacy", "legacy", CHECKPOINT, [("legacy.pt", _torch_bytes(legacy_state, legacy=True), "pickle")])
    lightning = {
        "epoch": 3,
        "global_step": 30,
        "pytorch-lightning_version": "2.1.0",
        "state_dict": {f"model.{k}": v for k, v in state.items()},
        "hyper_parameters": {"lr": 0.01, "activation": "relu", "widths": [FEATURES, 5, 3]},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.01, "params": [0, 1, 2, 3]}]}],
    }
    add("ckpt", "lightning", CHECKPOINT, [("run.ckpt", _torch_bytes(lightning), "zip")])
    old = dict(lightning, hyper_parameters=argparse.Namespace(lr=0.1, activation="relu"))
    old["state_dict"] = _one_storage(old["state_dict"])
    add("ckpt", "lightning-legacy", CHECKPOINT, [("old.ckpt", _torch_bytes(old, legacy=True), "pickle")])
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[:2], "model-00002-of-00002.safetensors": names[2:]}
    index = {"metadata": {"total_size": 0}, "weight_map": {k: s for s, ks in shards.items() for k in ks}}
    config = {"model_type": "mlp", "hidden_act": "relu", "hidden_size": 5}
    add(
        "hf",
        "sharded",
        CHECKPOINT,
        [
            ("config.json", json.dumps(config).encode(), "json"),
            ("model.safetensors.index.json", json.dumps(index).encode(), "json"),
            *((s, _safetensors_bytes({k: state[k] for k in ks}), "safetensors") for s, ks in shards.items()),
        ],
        target=".",
    )
    add(
        "hf",
        "bin",
        CHECKPOINT,
        [
            ("config.json", json.dumps(config).encode(), "json"),
            ("pytorch_model.bin", _torch_bytes(state), "zip"),
        ],
        target=".",
    )

    # payloads
    evil_state = {"0.weight": state["0.weight"], "0.bias": state["0.bias"], "evil": _SLOT}
    evil_ckpt = dict(lightning, hyper_parameters={"callback": _SLOT, "lr": 0.1})
    x, y = _data_arrays()
    for how, payload in PAYLOADS.items():
        zipped = _zip_with_payload(_torch_bytes(evil_state), payload)
        add("payload.pt", how, CHECKPOINT, [("evil.pt", zipped, "zip")])
        legacy = _with_payload(_torch_bytes(_one_storage(evil_state), legacy=True), payload)
        add("payload.pt-legacy", how, CHECKPOINT, [("evil.pt", legacy, "pickle")])
        add(
            "payload.ckpt",
            how,
            CHECKPOINT,
            [("evil.ckpt", _zip_with_payload(_torch_bytes(evil_ckpt), payload), "zip")],
        )
        add("payload.hf", how, CHECKPOINT, [("pytorch_model.bin", zipped, "zip")], target=".")
        cifar = {b"batch_label": b"evil", b"labels": _SLOT, b"data": np.zeros((2, 3072), np.uint8)}
        add(
            "payload.cifar",
            how,
            DATA,
            [("data_batch_1", _with_payload(pickle.dumps(cifar, 2), payload), "pickle")],
        )
        header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
        header += " " * (63 - (10 + len(header)) % 64) + "\n"
        npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode()
        npy += b"\x80\x02" + payload + b"."
        add("payload.npy", how, DATA, [("evil.npy", npy, "npy")])
        add(
            "payload.npz",
            how,
            DATA,
            [("evil.npz", _zip_bytes([("x.npy", npy, 0), ("y.npy", _npy_bytes(y), 0)]), "zip")],
        )

    # data
    add("npz", "stored", DATA, [("data.npz", _npz_bytes({"x": x, "y": y}), "zip")])
    add("npz", "deflated", DATA, [("data.npz", _npz_bytes({"X": x, "labels": y}, compressed=True), "zip")])
    add("npy", "float32", DATA, [("x.npy", _npy_bytes(x), "npy")])
    add(
        "npy",
        "uint8-images",
        DATA,
        [("images.npy", _npy_bytes((x[:, :36] * 40).astype(np.uint8).reshape(8, 6, 6)), "npy")],
    )
    add(
        "data.safetensors",
        "x-y",
        DATA,
        [
            (
                "data.safetensors",
                _safetensors_bytes({"x": torch.from_numpy(x), "y": torch.from_numpy(y)}),
                "safetensors",
            )
        ],
    )
    seeds.extend(_arrow_seeds(x, y))
    images = (np.arange(4 * 36) % 256).astype(np.uint8).reshape(4, 6, 6)
    labels = np.array([0, 1, 2, 1], np.uint8)
    idx = [
        ("t10k-images-idx3-ubyte", _idx_bytes(images), "idx"),
        ("t10k-labels-idx1-ubyte", _idx_bytes(labels), "idx"),
    ]
    add("idx", "plain", DATA, idx)
    add("idx.gz", "gzip", DATA, [(n + ".gz", _gzip_bytes(d), "gzip") for n, d, _ in idx])
    bomb = _bomb_bytes(_idx_bytes(images))
    add("idx.gz", "bomb", DATA, [("train-images-idx3-ubyte.gz", bomb, "gzip"), (idx[1][0], idx[1][1], "")])
    cifar = {
        b"batch_label": b"training batch 1 of 5",
        b"labels": [0, 1, 2, 1],
        b"data": (np.arange(4 * 3072) % 256).astype(np.uint8).reshape(4, 3072),
        b"filenames": [b"a.png", b"b.png", b"c.png", b"d.png"],
    }
    add("cifar", "protocol2", DATA, [("data_batch_1", pickle.dumps(cifar, 2), "pickle")])
    cifar5 = {"data": cifar[b"data"], "fine_labels": [2, 1, 0, 1], "coarse_labels": [0, 0, 1, 1]}
    add("cifar", "protocol5", DATA, [("train.pkl", pickle.dumps(cifar5, 5), "pickle")])
    # CIFAR batches hold 3 × 32 × 32 images: `tsens bound` checks them against a 3072-input net
    return tuple(
        Seed(s.fmt, s.name, s.kind, s.files, s.target, 3072) if "cifar" in s.fmt else s for s in seeds
    )


def _arrow_seeds(x: np.ndarray, y: np.ndarray) -> list[Seed]:
    import pyarrow as pa
    import pyarrow.feather as feather
    import pyarrow.parquet as pq

    columns = pa.table({**{f"f{i}": x[:, i] for i in range(x.shape[1])}, "label": y})
    lists = pa.table({"pixels": pa.array(list(x), pa.list_(pa.float32())), "label": y})
    tables = {"columns": columns, "list": lists}
    try:
        from PIL import Image

        pngs = []
        for i in range(4):
            buf = io.BytesIO()
            Image.fromarray(((x[i].reshape(6, 6) + 3) * 40).clip(0, 255).astype(np.uint8)).save(buf, "PNG")
            pngs.append({"bytes": buf.getvalue(), "path": None})
        tables["image"] = pa.table({"image": pngs, "label": y[:4]})
    except ImportError:  # pragma: no cover - Pillow is in the test extra
        pass
    seeds = []
    for name, table in tables.items():
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="none")
        seeds.append(
            Seed(
                "parquet",
                name,
                DATA,
                (SeedFile(f"{name}.parquet", buf.getvalue(), "parquet"),),
                f"{name}.parquet",
            )
        )
    for name, table in {"columns": columns, "list": lists}.items():
        sink = io.BytesIO()
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        seeds.append(
            Seed(
                "arrow",
                f"file-{name}",
                DATA,
                (SeedFile("data.arrow", sink.getvalue(), "arrow"),),
                "data.arrow",
            )
        )
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, columns.schema) as writer:
        writer.write_table(columns)
    seeds.append(
        Seed("arrow", "stream", DATA, (SeedFile("stream.arrow", sink.getvalue(), "arrow"),), "stream.arrow")
    )
    sink = io.BytesIO()
    feather.write_feather(columns, sink, compression="uncompressed")
    seeds.append(
        Seed("feather", "v2", DATA, (SeedFile("data.feather", sink.getvalue(), "arrow"),), "data.feather")
    )
    return seeds


# --- seeds from tests/data/formats ---------------------------------------------------------

_SIDE_SUFFIXES = (".npz", ".json", ".md", ".txt", ".py", ".sh", ".cfg", ".yaml", ".yml")
_DATA_SUFFIXES = (".npz", ".npy", ".parquet", ".arrow", ".feather", ".pkl", ".pickle")


def _suffix(name: str) -> str:
    """``.weights.h5`` for ``mlp.weights.h5``; the last suffix otherwise."""
    lowered = name.lower()
    for compound in (".weights.h5", ".safetensors.index.json", ".bin.index.json", ".tar.gz"):
        if lowered.endswith(compound):
            return compound
    return Path(lowered).suffix


def _stem(name: str) -> str:
    return name[: len(name) - len(_suffix(name))] if _suffix(name) else name


def structure_of(name: str, data: bytes) -> str:
    """The structure the mutators use for a file, from its name and first bytes."""
    suffix = _suffix(name)
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if data[:2] == b"\x1f\x8b":
        return "gzip"
    if data[:6] == b"\x93NUMPY":
        return "npy"
    if data[:8] == b"\x89HDF\r\n\x1a\n" or suffix in (".h5", ".hdf5", ".weights.h5"):
        return "h5"
    if data[:4] == b"PAR1":
        return "parquet"
    if data[:6] == b"ARROW1" or data[:4] == b"\xff\xff\xff\xff":
        return "arrow"
    by_suffix = {
        ".safetensors": "safetensors",
        ".msgpack": "msgpack",
        ".flax": "msgpack",
        ".onnx": "onnx",
        ".json": "json",
        ".pkl": "pickle",
        ".pickle": "pickle",
    }
    if suffix in by_suffix:
        return by_suffix[suffix]
    if data[:1] == b"\x80" and suffix in (".pt", ".pth", ".bin", ".ckpt", ""):
        return "pickle"
    if "idx" in name and "ubyte" in name:
        return "idx"
    return "raw"


def _claimed_dir(path: Path) -> bool:
    return any(f.claims(path) for f in tsens.checkpoints.FORMATS if f.claims is not None)


def external_seeds(root: Path = EXTERNAL) -> list[Seed]:
    """A seed per checkpoint or data file (or claimed directory) under ``root``; the summary
    row is the top directory and the suffix (``keras.weights.h5``)."""
    if not root.is_dir():
        return []
    seeds: list[Seed] = []

    def walk(directory: Path, top: str) -> None:
        entries = sorted(directory.iterdir())
        files = [p for p in entries if p.is_file() and not p.name.startswith(".")]
        stems = {_stem(p.name) for p in entries if p.suffix.lower() not in _SIDE_SUFFIXES}
        side = [p for p in files if p.suffix.lower() in _SIDE_SUFFIXES]
        # an .npz named like a checkpoint (or a directory) beside it holds reference outputs
        siblings = [p for p in side if not (p.suffix.lower() == ".npz" and _stem(p.name) in stems)]
        originals = [p for p in files if p not in side]
        originals += [p for p in side if p.suffix.lower() == ".npz" and _stem(p.name) not in stems]
        for p in originals:
            data = p.read_bytes()
            suffix = _suffix(p.name)
            kind = DATA if suffix in _DATA_SUFFIXES or ("idx" in p.name and "ubyte" in p.name) else CHECKPOINT
            files_ = (SeedFile(p.name, data, structure_of(p.name, data)),) + tuple(
                SeedFile(s.name, s.read_bytes(), "") for s in siblings
            )
            seeds.append(
                Seed(f"{top}{suffix or '.' + p.name}", str(p.relative_to(root)), kind, files_, p.name)
            )
        for d in (p for p in entries if p.is_dir() and not p.name.startswith(".")):
            if _claimed_dir(d):
                members = sorted(q for q in d.rglob("*") if q.is_file())
                fs = tuple(
                    SeedFile(str(q.relative_to(d)), q.read_bytes(), structure_of(q.name, q.read_bytes()))
                    for q in members
                )
                seeds.append(Seed(f"{top}/dir", str(d.relative_to(root)), CHECKPOINT, fs, "."))
            else:
                walk(d, top)

    for top in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        walk(top, top.name)
    return seeds


def all_seeds(external: Path | None = EXTERNAL) -> list[Seed]:
    return [*_generated_seeds(), *(external_seeds(external) if external is not None else [])]


# ============================================================================ mutators

Mutated = tuple[bytes, str]
Mutator = Callable[[random.Random, bytes], Mutated | None]

_HUGE = {
    1: (0xFF, 0x7F, 0x80),
    2: (0xFFFF, 0x7FFF, 0x8000),
    4: (0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 10**9),
    8: (10**12, 2**63 - 1, 2**64 - 1, 2**62, 2**40),
}
_INTERESTING_BYTES = (0x00, 0xFF, 0x7F, 0x80, 0x01, 0x20, 0x0A)


def _huge(rng: random.Random, size: int) -> int:
    return rng.choice(_HUGE[size])


def _put_int(data: bytes, pos: int, size: int, value: int, order: str = "<") -> bytes:
    fmt = order + {1: "B", 2: "H", 4: "I", 8: "Q"}[size]
    return data[:pos] + struct.pack(fmt, value % (1 << (8 * size))) + data[pos + size :]


def _pos(rng: random.Random, data: bytes, head: int | None = None) -> int:
    n = len(data) if head is None else min(len(data), head)
    return rng.randrange(max(n, 1))


# --- generic ------------------------------------------------------------------------------


def flip_bits(rng: random.Random, data: bytes) -> Mutated | None:
    if not data:
        return None
    out = bytearray(data)
    n = rng.choice((1, 1, 2, 3, 4, 8, 16))
    where = [rng.randrange(len(out)) for _ in range(n)]
    for p in where:
        out[p] ^= 1 << rng.randrange(8)
    return bytes(out), f"flip_bits({n} at {where[:4]})"


def flip_head(rng: random.Random, data: bytes) -> Mutated | None:
    """Bit flips in the first KiB, where headers and superblocks live."""
    if not data:
        return None
    out = bytearray(data)
    where = [rng.randrange(min(len(out), 1024)) for _ in range(rng.choice((1, 2, 4)))]
    for p in where:
        out[p] ^= 1 << rng.randrange(8)
    return bytes(out), f"flip_head({where})"


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
    p, value, order = rng.randrange(len(data) - size + 1), _huge(rng, size), rng.choice("<>")
    return _put_int(data, p, size, value, order), f"int_field(u{8 * size}{order} {value} at {p})"


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


def _truncate_at(boundaries: Callable[[bytes], list[int]]) -> Mutator:
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


# --- safetensors --------------------------------------------------------------------------


def _st_parse(data: bytes) -> tuple[dict, int] | None:
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


def _st_build(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + body


_ST_DTYPES = ("F64", "F32", "F16", "BF16", "I64", "I32", "I8", "U8", "BOOL", "F8_E4M3", "C64", "XX", "", 7)


def st_header(rng: random.Random, data: bytes) -> Mutated | None:
    """An edit of the JSON header: shapes, offsets, dtypes, sizes of 10**12, entries."""
    parsed = _st_parse(data)
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
    return _st_build(header, body), f"st_header({edit} {key})"


def st_length(rng: random.Random, data: bytes) -> Mutated | None:
    """The 8-byte header length set huge, or off by a little."""
    if len(data) < 8:
        return None
    n = struct.unpack("<Q", data[:8])[0]
    value = rng.choice((10**12, 2**63 - 1, 2**64 - 1, n + 1, n - 1, 0, len(data), len(data) - 7))
    return _put_int(data, 0, 8, value), f"st_length({value})"


def st_raw_json(rng: random.Random, data: bytes) -> Mutated | None:
    """Text edits of the header: duplicate keys, deep nesting, a broken brace."""
    parsed = _st_parse(data)
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
    parsed = _st_parse(data)
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
        value = rng.choice((_huge(rng, size), 0, 1))
    return _put_int(data, at + offset, size, value), f"zip_field({kind}@{at}.{name} = {value})"


def _zip_members(data: bytes) -> list[tuple[str, bytes, int]] | None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = [i for i in zf.infolist() if not i.filename.endswith("/")]
            if sum(i.file_size for i in infos) > 64 << 20:
                return None
            return [(i.filename, zf.read(i), i.compress_type) for i in infos]
    except Exception:
        return None


def member_structure(name: str, data: bytes) -> str:
    if name.endswith(".pkl"):
        return "pickle"
    if (
        name.endswith((".json", ".h5", ".npy", ".safetensors", ".msgpack", ".onnx"))
        or data[:6] == b"\x93NUMPY"
    ):
        return structure_of(name, data)
    return "raw"


def zip_member(rng: random.Random, data: bytes) -> Mutated | None:
    """One member mutated (by its own structure) and the archive written again."""
    members = _zip_members(data)
    if not members:
        return None
    i = rng.randrange(len(members))
    name, content, method = members[i]
    new, what = mutate(rng, content, member_structure(name, content), depth=1)
    members[i] = (name, new, method)
    return _zip_bytes(members), f"zip_member({name}: {what})"


def zip_layout(rng: random.Random, data: bytes) -> Mutated | None:
    """Members duplicated (same or other bytes), dropped, renamed, reordered, recompressed."""
    members = _zip_members(data)
    if not members:
        return None
    i = rng.randrange(len(members))
    name, content, method = members[i]
    edit = rng.choice(
        ("dup-same", "dup-other", "dup-first", "drop", "rename", "traversal", "reorder", "method", "empty")
    )
    if edit == "dup-same":
        members.append(members[i])
    elif edit == "dup-other":
        members.append((name, mutate(rng, content, member_structure(name, content), depth=1)[0], method))
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
    return _zip_bytes(members), f"zip_layout({edit} {name})"


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
        value = _huge(rng, size)
        return _put_int(data, start + 1, size, value), f"pickle_op(length {name}@{start} = {value})"
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
        return _put_int(data, start + 1, 1, 0xFF), f"pickle_op(memo {name}@{start} = 255)"
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
    return _put_int(data, at, 8, value), f"pickle_legacy_storage(@{at} = {value})"


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
        value = _huge(rng, size)
        return _put_int(data, 8, size, value), f"npy_header(length = {value})"
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
        return _put_int(data, 4 + 4 * i, 4, value, ">"), f"idx_header(dim {i} = {value})"
    if edit == "ndim":
        value = rng.choice((0, 1, 2, 4, 255))
        return data[:3] + bytes([value]) + data[4:], f"idx_header(ndim = {value})"
    value = rng.choice((0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0xFF))
    return data[:2] + bytes([value]) + data[3:], f"idx_header(dtype = {value:#x})"


def idx_boundaries(data: bytes) -> list[int]:
    return [2, 3, 4] + ([4 + 4 * data[3]] if len(data) > 3 else [])


def _gunzip_small(data: bytes, limit: int = 16 << 20) -> bytes | None:
    try:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out = d.decompress(data, limit)
        return out if d.eof and not d.unconsumed_tail else None
    except zlib.error:
        return None


def gzip_member(rng: random.Random, data: bytes) -> Mutated | None:
    """The inflated content mutated (as IDX) and compressed again; ISIZE, flags, extra members."""
    edit = rng.choice(("inner", "inner", "inner", "isize", "flags", "append", "append-junk"))
    if edit == "inner":
        inner = _gunzip_small(data)
        if inner is None:
            return None
        new, what = mutate(rng, inner, "idx", depth=1)
        return _gzip_bytes(new), f"gzip_member(inner: {what})"
    if edit == "isize" and len(data) >= 8:
        value = rng.choice((0xFFFFFFFF, 0, 0x7FFFFFFF))
        return _put_int(data, len(data) - 4, 4, value), f"gzip_member(isize = {value})"
    if edit == "flags" and len(data) > 3:
        value = rng.choice((0x04, 0x08, 0x10, 0x02, 0xE0, 0xFF))
        return data[:3] + bytes([value]) + data[4:], f"gzip_member(flags = {value:#x})"
    if edit == "append":
        return data + data[: min(len(data), 1 << 20)], "gzip_member(append a copy)"
    return data + b"\x1f\x8b" + rng.randbytes(16), "gzip_member(append junk member)"


def gzip_boundaries(data: bytes) -> list[int]:
    return [2, 3, 10, len(data) - 8, len(data) - 4]


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
    value = _huge(rng, size) if size in _HUGE else 0xFF
    return _put_int(data, lenpos, size, value, ">"), f"msgpack_length(@{at} = {value})"


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
    slots: list[tuple[Any, Any]] = []  # (container, key) of every value

    def visit(o: Any, depth: int = 0) -> None:
        if depth > 50:
            return
        items = o.items() if isinstance(o, dict) else enumerate(o) if isinstance(o, list) else ()
        for k, v in list(items):
            slots.append((o, k))
            visit(v, depth + 1)

    visit(obj)
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
                datas = [d for n, d, _ in _zip_members(f.data) or [] if member_structure(n, d) == "h5"]
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
            return _put_int(data, at, 8, value), f"h5_field(address {address}@{at} = {value})"
    if not shapes:
        return None
    shape = rng.choice(shapes)
    pattern = b"".join(struct.pack("<Q", d) for d in shape)
    hits = [m.start() for m in re.finditer(re.escape(pattern), data)]
    if not hits:
        return None
    at, i = rng.choice(hits), rng.randrange(len(shape))
    value = rng.choice((10**12, 2**63 - 1, 2**64 - 1, 0, 2**32))
    return _put_int(data, at + 8 * i, 8, value), f"h5_field(dims {shape}@{at}[{i}] = {value})"


def h5_head(rng: random.Random, data: bytes) -> Mutated | None:
    """An 8-byte field of the superblock (addresses, end of file) set huge."""
    if len(data) < 64:
        return None
    at = 8 * rng.randrange(1, 12)
    value = rng.choice((2**64 - 1, 2**63 - 1, 10**12, 0))
    return _put_int(data, at, 8, value), f"h5_head(u64@{at} = {value})"


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
        return _put_int(data, len(data) - 8, 4, value), f"parquet_footer(length = {value})"
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
    return _put_int(data, at, 4, value), f"arrow_lengths(@{at} = {value})"


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
    slots: list[tuple[Any, Any]] = []

    def visit(o: Any, depth: int = 0) -> None:
        if depth > 30:
            return
        items = o.items() if isinstance(o, dict) else enumerate(o) if isinstance(o, list) else ()
        for k, v in list(items):
            slots.append((o, k))
            visit(v, depth + 1)

    visit(obj)
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


# --- registry -----------------------------------------------------------------------------

STRUCTURAL: dict[str, tuple[Mutator, ...]] = {
    "safetensors": (st_header, st_header, st_header, st_length, st_raw_json, _truncate_at(st_boundaries)),
    "zip": (
        zip_field,
        zip_field,
        zip_member,
        zip_member,
        zip_member,
        zip_layout,
        _truncate_at(zip_boundaries),
    ),
    "pickle": (pickle_op, pickle_op, pickle_op, pickle_legacy_storage, _truncate_at(pickle_boundaries)),
    "npy": (npy_header, npy_header, npy_header, _truncate_at(npy_boundaries)),
    "idx": (idx_header, idx_header, _truncate_at(idx_boundaries)),
    "gzip": (gzip_member, gzip_member, _truncate_at(gzip_boundaries)),
    "msgpack": (
        msgpack_length,
        msgpack_length,
        msgpack_value,
        msgpack_value,
        _truncate_at(msgpack_boundaries),
    ),
    "h5": (h5_field, h5_field, h5_field, h5_head, flip_head),
    "onnx": (onnx_model, onnx_model, onnx_model, flip_head),
    "parquet": (parquet_footer, parquet_footer, png_dims),
    "arrow": (arrow_lengths, arrow_lengths, _truncate_at(arrow_boundaries)),
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


# ============================================================================ cases


@dataclass(frozen=True)
class Case:
    """One input: a seed with (unless it is a seed case) one to three mutations."""

    index: int
    seed: Seed
    files: tuple[tuple[str, bytes], ...]
    mutation: str
    cli: bool


@dataclass
class Plan:
    """The case for each index: the first ``len(seeds)`` cases are the seeds unchanged, the
    rest cycle through the formats, each drawing a seed and mutations from ``Random(f"{seed}:{index}")``."""

    seeds: list[Seed]
    seed: int = 0
    cli_every: int = 10
    formats: list[str] = field(init=False)

    def __post_init__(self) -> None:
        learn_h5(self.seeds)
        self.formats = sorted({s.fmt for s in self.seeds})
        self.by_format = {f: [s for s in self.seeds if s.fmt == f] for f in self.formats}

    def case(self, index: int) -> Case:
        cli = self.cli_every > 0 and index % self.cli_every == 0
        if index < len(self.seeds):
            seed = self.seeds[index]
            return Case(index, seed, tuple((f.name, f.data) for f in seed.files), "none (the seed)", cli)
        rng = random.Random(f"{self.seed}:{index}")
        fmt = self.formats[(index - len(self.seeds)) % len(self.formats)]
        seed = rng.choice(self.by_format[fmt])
        files = {f.name: f.data for f in seed.files}
        mutable = seed.mutable
        steps = []
        for _ in range(rng.choices((1, 2, 3), (70, 20, 10))[0]):
            target = rng.choice(mutable)
            files[target.name], what = mutate(rng, files[target.name], target.structure)
            steps.append(f"{target.name}: {what}")
        return Case(index, seed, tuple(files.items()), " + ".join(steps), cli)


def select(seeds: list[Seed], formats: Sequence[str]) -> list[Seed]:
    """The seeds whose format is named, or starts with a name followed by ``.``/``/``
    (``keras`` selects ``keras.keras`` and ``keras.weights.h5``)."""
    if not formats:
        return seeds
    unknown = [f for f in formats if not any(_matches(s.fmt, f) for s in seeds)]
    if unknown:
        raise SystemExit(f"fuzz.py: unknown formats {unknown}; see --list-formats")
    return [s for s in seeds if any(_matches(s.fmt, f) for f in formats)]


def _matches(fmt: str, name: str) -> bool:
    return fmt == name or fmt.startswith((name + ".", name + "/"))


# ============================================================================ running one case

_ALLOC_WORDS = (
    "can't allocate memory", "unable to allocate", "bad_alloc", "out of memory", "not enough memory",
    "memoryerror", "cannot allocate memory", "allocation failed", "failed to allocate",
)  # fmt: skip


def _memory_error(exc: BaseException | None) -> BaseException | None:
    """The first MemoryError or failed allocation in ``exc``'s chain (a reader that turned one
    into a TsensError still counts)."""
    chain: list[BaseException] = []
    while exc is not None and all(exc is not e for e in chain):
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    found = [e for e in chain if isinstance(e, MemoryError)]
    found += [e for e in chain if any(w in str(e).lower() for w in _ALLOC_WORDS)]
    return found[0] if found else None


@dataclass
class Result:
    outcome: str
    step: str = ""
    message: str = ""
    trace: str = ""

    def as_tuple(self) -> tuple[str, str, str, str]:
        return self.outcome, self.step, self.message, self.trace


def _attempt(step: str, call: Callable[[], object], prefix: str) -> Result:
    try:
        call()
    except TsensError as e:
        message = str(e)
        memory = _memory_error(e)
        if memory is not None:
            if memory is not e:  # the reader turned a failed allocation into a refusal
                message += f" [after {type(memory).__name__}: {str(memory)[:300]}]"
            return Result("memory", step, message, "".join(traceback.format_exception(memory)))
        if "\n" in message.strip() or not message.startswith(prefix):
            return Result("badmsg", step, message)
        return Result("refused", step, message)
    except BaseException as e:  # noqa: BLE001 - every other exception is what we look for
        if isinstance(e, KeyboardInterrupt):
            raise
        outcome = "memory" if _memory_error(e) is not None else "traceback"
        return Result(
            outcome, step, f"{type(e).__name__}: {e}"[:2000], "".join(traceback.format_exception(e))
        )
    return Result("ok", step)


def _cli(args: list[str]) -> Result:
    from click.testing import CliRunner

    step = "tsens " + " ".join(a if "/" not in a else Path(a).name for a in args)
    result = CliRunner().invoke(tsens.cli.main, args)
    err, out = result.stderr, result.stdout
    exc = result.exception
    if exc is not None and not isinstance(exc, SystemExit):
        trace = "".join(traceback.format_exception(*result.exc_info)) if result.exc_info else repr(exc)
        outcome = "memory" if _memory_error(exc) is not None else "traceback"
        return Result(outcome, step, f"{type(exc).__name__}: {exc}"[:2000], trace)
    if result.exit_code not in (0, 2) or "Traceback" in err or "Traceback" in out:
        return Result("traceback", step, f"exit {result.exit_code}: {err.strip()[-2000:]}", err + out)
    if result.exit_code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("tsens: error: ")]
        if any(w in err.lower() for w in _ALLOC_WORDS):
            return Result("memory", step, err.strip()[-2000:])
        if len(errors) != 1 or lines[-1] != errors[0]:
            return Result("badmsg", step, err.strip()[-2000:])
        return Result("refused", step, errors[0])
    return Result("ok", step)


def run_case(kind: str, target: str, case_dir: str, cli: list[str] | None) -> Result:
    """The entry points on one case's files: the worst outcome, and where it happened."""
    path = Path(target)
    prefix = case_dir
    if kind == CHECKPOINT:
        steps = [
            ("load_network", lambda: tsens.checkpoints.load_network(path)),
            ("read_metadata", lambda: tsens.checkpoints.read_metadata(path)),
        ]
    else:

        def load_and_read() -> None:
            data = tsens.datasets.load_dataset(str(path))
            for _ in data.batches(3):  # lazy readers decode as the batches come
                pass

        steps = [("load_dataset", load_and_read)]
    worst = Result("ok", steps[0][0])
    for step, call in steps:
        result = _attempt(step, call, prefix)
        if _RANK[result.outcome] > _RANK[worst.outcome]:
            worst = result
        if result.outcome in BAD:
            return worst
    if cli:
        result = _cli(cli)
        if _RANK[result.outcome] > _RANK[worst.outcome] or result.outcome in BAD:
            worst = result
    return worst


# ============================================================================ workers


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        try:
            import psutil

            return int(psutil.Process(pid).memory_info().rss)
        except Exception:
            return 0


def _vms() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        import psutil

        return int(psutil.Process().memory_info().vms)


def cap_address_space(memory: int) -> None:
    """RLIMIT_AS: this process's current size plus ``memory`` bytes (torch, numpy and pyarrow
    are imported before, so their reservations are in the base)."""
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    soft = _vms() + memory
    resource.setrlimit(
        resource.RLIMIT_AS, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard)
    )


def _worker_main(conn: Connection, cwd: str, log: str, memory: int, rlimit: bool) -> None:
    """A worker: runs the cases it receives until it receives None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    faulthandler.disable()  # a crash is the parent's to report (pytest enables it on its stderr)
    os.chdir(cwd)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ["TMPDIR"] = str(Path(log).parent / "tmp")
    tempfile.tempdir = None
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    if rlimit and memory:
        cap_address_space(memory)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        index, kind, target, case_dir, cli = message
        conn.send((index, *run_case(kind, target, case_dir, cli).as_tuple()))


@dataclass
class Options:
    """What one fuzzing run does (the command line's options)."""

    seed: int = 0
    cases: int = 1000
    formats: tuple[str, ...] = ()
    workers: int = max(os.cpu_count() or 1, 1)
    timeout: float = 10.0
    memory_mb: int = 512
    rlimit: bool = True
    cli_every: int = 10
    save_dir: Path = DEFAULT_SAVE_DIR
    external: Path | None = EXTERNAL
    quiet: bool = False


class _Worker:
    def __init__(self, slot: int, root: Path, options: Options) -> None:
        self.root = root / f"w{slot}"
        self.case_dir = self.root / "case"
        self.cwd = self.root / "cwd"
        for d in (self.case_dir, self.cwd, self.root / "tmp"):
            d.mkdir(parents=True, exist_ok=True)
        ctx = multiprocessing.get_context("fork")
        self.conn, child = ctx.Pipe()
        memory = options.memory_mb << 20
        args = (child, str(self.cwd), str(self.root / "worker.log"), memory, options.rlimit)
        self.proc = ctx.Process(target=_worker_main, args=args, daemon=True)
        self.proc.start()
        child.close()
        self.rss_limit = _rss(os.getpid()) + memory
        self.case: Case | None = None
        self.started = 0.0

    def submit(self, case: Case, net: dict[int, Path]) -> None:
        shutil.rmtree(self.case_dir, ignore_errors=True)
        self.case_dir.mkdir(parents=True)
        for name, data in case.files:
            (self.case_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (self.case_dir / name).write_bytes(data)
        target = str(self.case_dir if case.seed.target == "." else self.case_dir / case.seed.target)
        cli = None
        if case.cli:
            if case.seed.kind == DATA:
                cli = ["bound", str(net[case.seed.features]), "--data", target]
            else:
                cli = [("info", "bound")[(case.index // 2) % 2], target]
        self.case, self.started = case, time.monotonic()
        self.conn.send((case.index, case.seed.kind, target, str(self.case_dir), cli))

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.join(5)
        self.conn.close()

    def stop(self) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            self.conn.send(None)
        self.proc.join(2)
        if self.proc.is_alive():
            self.kill()

    def payload(self) -> list[str]:
        """Files the case left in the (otherwise empty) working directory; removed."""
        found = sorted(os.listdir(self.cwd))
        for name in found:
            p = self.cwd / name
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        return found


@dataclass
class Failure:
    case: Case
    result: Result


@dataclass
class Summary:
    """Counts per format and outcome, and the bad cases."""

    counts: dict[str, Counter] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, case: Case, result: Result) -> None:
        self.counts.setdefault(case.seed.fmt, Counter())[result.outcome] += 1
        if result.outcome in BAD:
            self.failures.append(Failure(case, result))

    @property
    def total(self) -> Counter:
        total: Counter = Counter()
        for c in self.counts.values():
            total.update(c)
        return total

    @property
    def bad(self) -> int:
        return sum(n for o, n in self.total.items() if o in BAD)

    def table(self) -> str:
        width = max([len("format"), *(len(f) for f in self.counts)]) + 2
        head = "format".ljust(width) + "".join(c.rjust(10) for c in ("cases", *OUTCOMES))
        rows = [head, "-" * len(head)]
        for fmt in sorted(self.counts):
            c = self.counts[fmt]
            rows.append(
                fmt.ljust(width)
                + "".join(str(n).rjust(10) for n in (sum(c.values()), *(c[o] for o in OUTCOMES)))
            )
        t = self.total
        rows += [
            "-" * len(head),
            "total".ljust(width)
            + "".join(str(n).rjust(10) for n in (sum(t.values()), *(t[o] for o in OUTCOMES))),
        ]
        return "\n".join(rows)


def _cli_nets(root: Path) -> dict[int, Path]:
    """Valid networks for `tsens bound NET --data FILE`, one per input width."""
    from safetensors.torch import save_file

    nets = {}
    for width in (FEATURES, 3072):
        path = root / f"net{width}.safetensors"
        save_file(_net_state(inputs=width), str(path))
        nets[width] = path
    return nets


def run_cases(plan: Plan, indices: Sequence[int], options: Options, root: Path) -> Summary:
    """The cases through a pool of workers, with the time, memory and payload checks."""
    summary = Summary()
    nets = _cli_nets(root)
    start = time.monotonic()
    torch.set_num_threads(1)
    workers = [_Worker(i, root, options) for i in range(max(options.workers, 1))]
    todo: Iterator[int] = iter(indices)
    done, last_report = 0, time.monotonic()

    def finish(w: _Worker, result: Result) -> None:
        nonlocal done
        assert w.case is not None
        found = w.payload()
        if found:
            result = Result(
                "payload",
                result.step,
                f"created {found}; outcome was {result.outcome}: {result.message}",
                result.trace,
            )
        summary.add(w.case, result)
        w.case = None
        done += 1

    try:
        while True:
            for w in workers:
                if w.case is None:
                    index = next(todo, None)
                    if index is not None:
                        w.submit(plan.case(index), nets)
            busy = [w for w in workers if w.case is not None]
            if not busy:
                break
            ready = wait([w.conn for w in busy], timeout=0.02)
            now = time.monotonic()
            for i, w in enumerate(workers):
                if w.case is None:
                    continue
                replace = None
                if w.conn in ready:
                    try:
                        _index, *fields = w.conn.recv()
                        finish(w, Result(*fields))
                    except (EOFError, OSError):
                        w.proc.join(5)
                        code = w.proc.exitcode
                        why = f"signal {-code}" if code is not None and code < 0 else f"exit {code}"
                        replace = Result("crash", "worker", f"the worker died ({why})")
                elif now - w.started > options.timeout:
                    replace = Result("hang", "worker", f"no result after {options.timeout:g} s; killed")
                elif _rss(w.proc.pid) > w.rss_limit:
                    replace = Result("memory", "worker", f"RSS over {options.memory_mb} MiB; killed")
                if replace is not None:
                    w.kill()
                    finish(w, replace)
                    workers[i] = _Worker(i, root, options)
            if not options.quiet and time.monotonic() - last_report > 30:
                last_report = time.monotonic()
                print(f"fuzz: {done} cases, {summary.bad} bad, {last_report - start:.0f} s", file=sys.stderr)
    finally:
        for w in workers:
            w.stop()
    summary.seconds = time.monotonic() - start
    return summary


# ============================================================================ reports


def _replay_command(options: Options, index: int) -> str:
    formats = f" --formats {','.join(options.formats)}" if options.formats else ""
    return f"python scripts/fuzz.py --seed {options.seed}{formats} --replay {index}"


def save_failures(summary: Summary, options: Options) -> Path:
    """Each bad case's files under save_dir/failures/<index>/ and a report.txt."""
    out = Path(options.save_dir)
    shutil.rmtree(out / "failures", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for f in summary.failures:
        c, r = f.case, f.result
        where = out / "failures" / f"{c.index:06d}-{c.seed.fmt.replace('/', '_')}"
        where.mkdir(parents=True, exist_ok=True)
        for name, data in c.files:
            (where / name).parent.mkdir(parents=True, exist_ok=True)
            (where / name).write_bytes(data)
        lines += [
            f"=== case {c.index} [{c.seed.fmt}] {r.outcome} in {r.step}",
            f"seed: {c.seed.name} (target {c.seed.target})",
            f"mutation: {c.mutation}",
            f"input: {where}",
            f"replay: {_replay_command(options, c.index)}",
            f"message: {r.message}",
            r.trace.rstrip(),
            "",
        ]
    report = out / "report.txt"
    report.write_text("\n".join(lines) if lines else "no bad cases\n")
    return report


def fuzz(options: Options) -> Summary:
    """Run ``options.cases`` cases; bad ones are saved under ``options.save_dir``."""
    plan = Plan(select(all_seeds(options.external), options.formats), options.seed, options.cli_every)
    with tempfile.TemporaryDirectory(prefix="tsens-fuzz-") as tmp:
        summary = run_cases(plan, range(options.cases), options, Path(tmp))
    if summary.failures:
        save_failures(summary, options)
    return summary


def replay(options: Options, index: int) -> Result:
    """Case ``index`` again, in this process (with the address-space cap, no time limit),
    printed in full."""
    plan = Plan(select(all_seeds(options.external), options.formats), options.seed, options.cli_every)
    case = plan.case(index)
    print(f"case {index} [{case.seed.fmt}] seed {case.seed.name}: {case.mutation}")
    with tempfile.TemporaryDirectory(prefix="tsens-replay-") as tmp:
        root = Path(tmp)
        case_dir, cwd = root / "case", root / "cwd"
        case_dir.mkdir()
        cwd.mkdir()
        for name, data in case.files:
            (case_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (case_dir / name).write_bytes(data)
        target = case_dir if case.seed.target == "." else case_dir / case.seed.target
        cli = None
        if case.cli:
            nets = _cli_nets(root)
            cli = (
                ["bound", str(nets[case.seed.features]), "--data", str(target)]
                if case.seed.kind == DATA
                else [("info", "bound")[(index // 2) % 2], str(target)]
            )
        old = os.getcwd()
        os.chdir(cwd)
        if options.rlimit and options.memory_mb:
            cap_address_space(options.memory_mb << 20)
        try:
            result = run_case(case.seed.kind, str(target), str(case_dir), cli)
        finally:
            os.chdir(old)
        if os.listdir(cwd):
            result = Result("payload", result.step, f"created {os.listdir(cwd)}", result.trace)
    print(f"{result.outcome} in {result.step}: {result.message}")
    if result.trace:
        print(result.trace)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=int, default=1000, help="number of cases (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    parser.add_argument(
        "--formats", default="", help="comma-separated formats (see --list-formats); default all"
    )
    parser.add_argument(
        "--workers", type=int, default=Options.workers, help="worker processes (default: CPUs)"
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per case (default 10)")
    parser.add_argument(
        "--memory-mb", type=int, default=512, help="memory per case beyond the imports, MiB (default 512)"
    )
    parser.add_argument("--no-rlimit", action="store_true", help="poll RSS only, no RLIMIT_AS cap")
    parser.add_argument(
        "--cli-every", type=int, default=10, help="every Nth case also through the CLI (0: never)"
    )
    parser.add_argument(
        "--save-dir", type=Path, default=DEFAULT_SAVE_DIR, help="where bad cases go (build/fuzz)"
    )
    parser.add_argument("--no-external", action="store_true", help="only the generated seeds")
    parser.add_argument("--replay", type=int, metavar="N", help="run case N again here, verbosely")
    parser.add_argument("--list-formats", action="store_true", help="list the formats and their seeds")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    options = Options(
        seed=args.seed,
        cases=args.cases,
        formats=tuple(f for f in args.formats.split(",") if f),
        workers=args.workers,
        timeout=args.timeout,
        memory_mb=args.memory_mb,
        rlimit=not args.no_rlimit,
        cli_every=args.cli_every,
        save_dir=args.save_dir,
        external=None if args.no_external else EXTERNAL,
        quiet=args.quiet,
    )
    if args.list_formats:
        seeds = select(all_seeds(options.external), options.formats)
        for fmt in sorted({s.fmt for s in seeds}):
            print(f"{fmt}: {', '.join(s.name for s in seeds if s.fmt == fmt)}")
        return 0
    if args.replay is not None:
        return int(replay(options, args.replay).outcome in BAD)
    summary = fuzz(options)
    print(summary.table())
    rate = sum(summary.total.values()) / max(summary.seconds, 1e-9)
    cases = sum(summary.total.values())
    print(f"{cases} cases in {summary.seconds:.0f} s ({rate:.0f}/s), seed {options.seed}: ", end="")
    if summary.failures:
        print(f"{summary.bad} bad; see {Path(options.save_dir) / 'report.txt'}")
        return 1
    print("no bad outcome")
    return 0


if __name__ == "__main__":
    sys.exit(main())
