"""Running the HDF5 library where a corrupt file cannot hurt: in a forked child process, with a
time limit and a memory limit.

The HDF5 C library is not safe on corrupt files. Fuzzing (``scripts/fuzz.py``) found files on
which it loops for ever (the length of a string in the global heap set to 2**64 - 1 or to 0),
inside C code that neither SIGINT nor a Python signal handler interrupts; files on which it
segfaults (one flipped bit in an attribute's datatype); and headers that make it allocate what
they claim ("memory allocation failed for on disk image buffer"). So :func:`run` reads in a
child forked from this process (nothing is imported again; an in-memory file, the weights of a
``.keras`` archive, is simply there in the child):

* the child's address space is capped with ``RLIMIT_AS`` at its size at the fork plus
  :data:`MEMORY` and four times the file's size (never above a cap it inherited); its standard
  streams go to ``/dev/null`` (a crash prints nothing), and ``SIGALRM`` ends it a little after
  the time limit even if this process has died meanwhile;
* it sends its result back over a pipe in formats that cannot run code here: a JSON header
  (the outcome, the metadata or the refusal, the names of the arrays in order) and the arrays
  as safetensors bytes, keyed by position; never a pickle. This process accepts no more bytes than the child's
  memory cap, and kills the child at the time limit: :data:`SECONDS` plus one second per
  :data:`BYTES_PER_SECOND` of the file (under the 10 s a fuzzing case has);
* one read forks at a time per process, holding h5py's lock across the fork (a lock another
  thread held then would never be released in the child).

A child that dies of a signal, does not finish in time, or fails to allocate under its cap
gives a one-line :class:`~tsens.errors.TsensError`, ``<path>: not a readable Keras HDF5 file
(the HDF5 library crashed on it (SIGSEGV) | did not finish in 5 s | needed more than the 256
MiB of memory it may use)``; a refusal the reader made in the child is raised here with its
message unchanged, any other exception as a RuntimeError carrying the child's traceback. A file
the library crashed, hung or exhausted its memory on is remembered (by size and SHA-256) and
refused at once for the rest of the process, so that ``load_network`` and then
``read_metadata`` of such a file wait for the time limit once.

Cost: about 20 ms a file more than reading it in process, measured (median of 40, 2 CPU cores)
in a process that has imported torch (270 MB resident): ``mlp.weights.h5`` 24-29 ms instead of
4 ms, ``pgdl/model_3`` 24-28 ms instead of 5-8 ms, the metadata of either 20-25 ms instead of
2-4 ms (a ``.keras`` archive's metadata opens no HDF5 file). Of that, the fork takes about 7 ms
and waiting for the child's exit 7 ms; both grow with the parent's memory (its page tables are
copied), and the arrays are copied twice on their way.

Windows has no ``fork``: there (and wherever ``os.fork`` is missing) the read runs in this
process, without these protections.
"""

from __future__ import annotations

import contextlib
import faulthandler
import hashlib
import json
import math
import os
import selectors
import signal
import struct
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy
import torch
from safetensors.torch import load as tensors_from_bytes

from ...errors import TsensError
from ..base import files_sha256

try:
    import resource
except ImportError:  # Windows
    resource = None  # type: ignore[assignment]

SECONDS = 5.0  # the time limit for a small file...
BYTES_PER_SECOND = 16 << 20  # ... plus a second per 16 MiB of it
MEMORY = 256 << 20  # the child's memory beyond its size at the fork, plus four times the file's
_HEAD = struct.Struct("<QQ")  # the reply: the JSON header's length, the safetensors bytes' length
_MAX_HEADER = 64 << 20
_REMEMBERED = 256  # failed files remembered
_failed: dict[tuple[int, str], str] = {}  # (size, SHA-256) → why the library failed on it
_NO_REPLY = "the reading process gave no readable reply"
_ONE_AT_A_TIME = threading.Lock()  # no child inherits the pipe of another thread's child

Arrays = dict[str, np.ndarray]
Job = Callable[[], tuple[Arrays, dict[str, str]]]


def run(
    path: Path,
    job: Job,
    source: Path | bytes,
    *,
    what: str,
    problem: str,
    hold: AbstractContextManager[Any] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``job()`` (the arrays and metadata it reads from ``source``) run in a forked child, the
    arrays as tensors. Failures of the child are ``<path>: <problem> (<what><why>)``. ``hold``
    is held across the fork (a library's lock, so that no other thread holds it then: the
    child would wait for it for ever)."""
    if not hasattr(os, "fork"):  # Windows: no isolation
        arrays, metadata = job()
        return {k: torch.from_numpy(v) for k, v in arrays.items()}, metadata
    size = source.stat().st_size if isinstance(source, Path) else len(source)
    known = _known(source, size)
    if known is not None:
        raise TsensError(f"{path}: {problem} ({what}{known})")
    seconds = SECONDS + size / BYTES_PER_SECOND
    memory = MEMORY + 4 * size
    with _ONE_AT_A_TIME:
        header, data, why = _in_child(job, seconds, memory, hold or contextlib.nullcontext())
    if why is not None:
        if len(_failed) < _REMEMBERED:
            with contextlib.suppress(OSError):
                _failed[size, _digest(source)] = why
        raise TsensError(f"{path}: {problem} ({what}{why})")
    return _decode(path, header, data, problem, what)


def _digest(source: Path | bytes) -> str:
    return hashlib.sha256(source).hexdigest() if isinstance(source, bytes) else files_sha256([source])


def _known(source: Path | bytes, size: int) -> str | None:
    """Why the library failed on these bytes before, if it did."""
    if not any(s == size for s, _ in _failed):
        return None
    try:
        return _failed.get((size, _digest(source)))
    except OSError:
        return None


def _decode(
    path: Path, header: dict[str, Any], data: bytes, problem: str, what: str
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The child's reply: its refusal raised, or its arrays and metadata."""
    outcome = header.get("outcome")
    if outcome == "refused" and isinstance(header.get("message"), str):
        raise TsensError(header["message"])
    if outcome == "error":
        raise RuntimeError(
            f"{path}: reading failed in the child process: {header.get('error')}\n{header.get('trace')}"
        )
    keys, metadata = header.get("keys"), header.get("metadata")
    tensors = None
    if (
        outcome == "ok"
        and isinstance(keys, list)
        and isinstance(metadata, dict)
        and all(isinstance(v, str) for v in (*keys, *metadata, *metadata.values()))
    ):
        try:
            tensors = tensors_from_bytes(data)  # safetensors bytes: data only, never code
        except Exception:  # safetensors' own error type: bytes that are not safetensors
            tensors = None
    if tensors is None or set(tensors) != {str(i) for i in range(len(keys))}:
        raise TsensError(f"{path}: {problem} ({what}{_NO_REPLY})")
    return {k: tensors[str(i)] for i, k in enumerate(keys)}, metadata


# --- the child -----------------------------------------------------------------------------


def _in_child(
    job: Job, seconds: float, memory: int, hold: AbstractContextManager[Any]
) -> tuple[dict[str, Any], bytes, str | None]:
    """Fork, run ``job`` in the child, and collect its reply: (header, arrays' bytes, None), or
    why there is none."""
    read_end, write_end = os.pipe()
    with hold, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Python 3.12+: a fork with threads
        pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            os.close(read_end)
            _child(write_end, job, seconds, memory)
        finally:
            os._exit(0)
    os.close(write_end)
    reaped = False
    try:
        reply, why = _collect(read_end, seconds, memory + _MAX_HEADER)
        if why is not None:
            return {}, b"", why
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:  # reaped by someone else (SIGCHLD ignored): the reply tells
            status = 0
        reaped = True
        if os.WIFSIGNALED(status):
            return {}, b"", f"the HDF5 library crashed on it ({_signal_name(os.WTERMSIG(status))})"
        header, data = _split(reply)
        if header.get("outcome") == "memory":
            return {}, b"", f"the HDF5 library needed more than the {memory >> 20} MiB of memory it may use"
        if not header:
            return {}, b"", _NO_REPLY
        return header, data, None
    finally:
        os.close(read_end)
        if not reaped:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _collect(fd: int, seconds: float, cap: int) -> tuple[bytes, str | None]:
    """The child's reply: the bytes its head announces, or everything until it closes the pipe;
    or why not: ``seconds`` passed, or more than ``cap`` bytes came or were announced."""
    reply = bytearray()
    expected = cap
    deadline = time.monotonic() + seconds
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return b"", f"the HDF5 library did not finish in {round(seconds, 1):g} s"
            if not selector.select(left):
                continue
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return bytes(reply), None
            reply += chunk
            if expected == cap and len(reply) >= _HEAD.size:
                expected = _HEAD.size + sum(_HEAD.unpack_from(reply))
            if len(reply) > cap or expected > cap:
                return b"", f"the reading process sent more than {cap >> 20} MiB"
            if len(reply) >= expected:
                return bytes(reply), None


def _split(reply: bytes) -> tuple[dict[str, Any], bytes]:
    """The JSON header and the safetensors bytes of a complete reply ({} if it is not one)."""
    if len(reply) < _HEAD.size:
        return {}, b""
    size, data_size = _HEAD.unpack_from(reply)
    if size > _MAX_HEADER or _HEAD.size + size + data_size != len(reply):
        return {}, b""
    try:
        header = json.loads(reply[_HEAD.size : _HEAD.size + size])
    except (ValueError, RecursionError):
        return {}, b""
    return (header, reply[_HEAD.size + size :]) if isinstance(header, dict) else ({}, b"")


def _child(fd: int, job: Job, seconds: float, memory: int) -> None:
    """The child's work: limits, ``job``, and its reply written to ``fd``."""
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
        signal.signal(number, signal.SIG_DFL)  # no Python handler: the default ends the process
    signal.alarm(math.ceil(seconds) + 2)  # should the parent die before it kills the child
    faulthandler.disable()  # a crash is the parent's to report, in one line
    null = os.open(os.devnull, os.O_RDWR)
    for stream in (0, 1, 2):
        os.dup2(null, stream)
    _cap_memory(memory)
    try:
        arrays, metadata = job()
        reply = _reply({"outcome": "ok", "keys": list(arrays), "metadata": metadata}, arrays)
    except BaseException as e:  # noqa: BLE001 - every outcome goes to the parent
        if _allocation_failed(e):
            reply = _reply({"outcome": "memory"})
        elif isinstance(e, TsensError):
            reply = _reply({"outcome": "refused", "message": str(e)})
        else:
            error = f"{type(e).__name__}: {e}"
            reply = _reply({"outcome": "error", "error": error, "trace": traceback.format_exc()})
    view = memoryview(reply)
    while view:
        view = view[os.write(fd, view) :]


def _reply(header: dict[str, Any], arrays: Arrays | None = None) -> bytes:
    """The reply's bytes: the lengths, the JSON header, the arrays as safetensors keyed by their
    position (names read from a corrupt file may not be UTF-8; JSON carries them escaped)."""
    arrays = arrays or {}
    data = safetensors.numpy.save({str(i): np.ascontiguousarray(a) for i, a in enumerate(arrays.values())})
    head = json.dumps(header).encode()  # ASCII: lone surrogates are escaped
    return _HEAD.pack(len(head), len(data)) + head + data


_ALLOCATION = (
    "memory allocation failed", "allocation failed", "can't allocate", "cannot allocate",
    "unable to allocate", "failed to allocate", "out of memory",
)  # fmt: skip


def _allocation_failed(e: BaseException | None) -> bool:
    """Whether ``e`` or an exception it was raised from is a failed allocation: a MemoryError,
    HDF5's "memory allocation failed", numpy's "Unable to allocate" (the messages of tsens's
    own refusals are not looked at: they hold the file's name)."""
    seen: list[BaseException] = []
    while e is not None and all(e is not s for s in seen):
        if isinstance(e, MemoryError):
            return True
        if not isinstance(e, TsensError) and any(w in str(e).lower() for w in _ALLOCATION):
            return True
        seen.append(e)
        e = e.__cause__ or e.__context__
    return False


def _cap_memory(memory: int) -> None:
    """RLIMIT_AS: this process's size plus ``memory``, never above the cap it has (where the
    system has /proc and enforces it)."""
    if resource is None:
        return
    try:
        with open("/proc/self/statm") as f:
            size = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = size + memory
        for limit in (soft, hard):
            if limit != resource.RLIM_INFINITY:
                cap = min(cap, limit)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (OSError, ValueError):
        pass
