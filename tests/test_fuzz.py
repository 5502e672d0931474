"""The fuzz harness (``scripts/fuzz.py``, ``make fuzz``): a few hundred mutated files of every
format through the readers and the CLI without a bad outcome, and proof that the harness itself
catches what it looks for: a reader that raises a foreign exception, allocates, hangs, crashes,
writes a bad message or runs a pickled payload is reported as such."""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import io
import json
import mmap
import os
import pickle
import signal
import struct
import subprocess
import sys
import time
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

import tsens.checkpoints
import tsens.datasets
from tsens.errors import TsensError

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="module")
def fuzz():
    """The harness: the package scripts/fuzzing, which scripts/fuzz.py runs."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        import fuzzing
    finally:
        sys.path.remove(str(SCRIPTS))
    yield fuzzing
    for name in [m for m in sys.modules if m == "fuzzing" or m.startswith("fuzzing.")]:
        del sys.modules[name]


def test_few_hundred_cases_of_every_format_have_no_bad_outcome(fuzz, tmp_path):
    options = fuzz.Options(seed=0, cases=400, workers=2, save_dir=tmp_path, quiet=True, cli_every=8)
    summary = fuzz.fuzz(options)
    report = (tmp_path / "report.txt").read_text() if summary.failures else ""
    assert summary.bad == 0, summary.table() + "\n" + report[:20_000]
    assert sum(summary.total.values()) == 400
    seeds = fuzz.all_seeds()
    assert set(summary.counts) == {s.fmt for s in seeds}  # every seed ran once unchanged, at least
    assert all(sum(c.values()) >= 2 for c in summary.counts.values()), summary.table()
    # the payload seeds are refused, never loaded with their payload
    for fmt, counts in summary.counts.items():
        if fmt.startswith("payload"):
            assert counts["refused"] > 0, fmt


def test_formats_of_the_other_readers_join_automatically(fuzz):
    external = fuzz.external_seeds()
    found = {s.fmt.split(".")[0].split("/")[0] for s in external}
    for directory in ("flax", "keras", "onnx"):
        if (fuzz.EXTERNAL / directory).is_dir():
            assert directory in found
    # reference outputs beside the checkpoints are not seeds
    assert not any(s.target.endswith(".npz") and s.kind == fuzz.DATA for s in external)


def test_cases_are_deterministic(fuzz):
    seeds = fuzz.select(fuzz.all_seeds(external=None), ["npy", "safetensors", "pt-legacy"])
    a, b = fuzz.Plan(seeds, seed=5), fuzz.Plan(seeds, seed=5)
    other = fuzz.Plan(seeds, seed=6)
    for i in range(len(seeds), len(seeds) + 30):
        assert a.case(i) == b.case(i)
    assert [a.case(i).files for i in range(40, 60)] != [other.case(i).files for i in range(40, 60)]


def test_the_command_replays_a_case():
    """``python scripts/fuzz.py --replay N`` (what report.txt tells to run) in a process of its own."""
    command = [sys.executable, str(SCRIPTS / "fuzz.py"), "--seed", "3", "--formats", "npy", "--replay", "7"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    case, outcome = done.stdout.splitlines()[:2]
    assert case.startswith("case 7 [npy] seed "), done.stdout
    assert outcome.startswith(("ok in ", "refused in ")), done.stdout


def test_payload_seeds_would_run_under_an_unsafe_load(fuzz, tmp_path, monkeypatch):
    """Every payload of the torch families creates its marker when loaded the unsafe way."""
    monkeypatch.chdir(tmp_path)
    for seed in fuzz.select(fuzz.all_seeds(external=None), ["payload.pt"]):
        path = tmp_path / "evil.pt"
        path.write_bytes(seed.files[0].data)
        with contextlib.suppress(Exception):  # the payload runs before anything fails
            torch.load(path, weights_only=False)
        made = [p for p in os.listdir(tmp_path) if p != "evil.pt"]
        assert made, seed.name
        for name in made:
            (tmp_path / name).unlink()


# --- the harness fails when it should --------------------------------------------------------


def _with_reader(monkeypatch, suffix, read):
    """FORMATS with the reader claiming ``suffix`` replaced by ``read``."""
    formats = tuple(
        dataclasses.replace(f, read=read, metadata=read) if f.claims(Path("x" + suffix)) else f
        for f in tsens.checkpoints.FORMATS
    )
    monkeypatch.setattr(tsens.checkpoints, "FORMATS", formats)


def _outcomes(fuzz, tmp_path, formats, cases, **options) -> Counter:
    options = fuzz.Options(
        formats=formats,
        cases=cases,
        workers=1,
        external=None,
        cli_every=0,
        save_dir=tmp_path,
        quiet=True,
        **options,
    )
    return fuzz.fuzz(options).total


def test_a_foreign_exception_is_a_traceback_and_saved(fuzz, tmp_path, monkeypatch):
    def broken(path):
        raise KeyError("weight")

    _with_reader(monkeypatch, ".safetensors", broken)
    assert _outcomes(fuzz, tmp_path, ("safetensors",), 2) == Counter(traceback=2)
    report = (tmp_path / "report.txt").read_text()
    assert "KeyError: 'weight'" in report and "replay: python scripts/fuzz.py --seed 0" in report
    saved = sorted((tmp_path / "failures").iterdir())
    assert len(saved) == 2 and (saved[0] / "mlp.safetensors").is_file()


def test_a_bad_message_is_reported(fuzz, tmp_path, monkeypatch):
    def vague(path):
        raise TsensError("something is wrong\nwith some file")

    _with_reader(monkeypatch, ".safetensors", vague)
    assert _outcomes(fuzz, tmp_path, ("safetensors",), 2) == Counter(badmsg=2)


def test_allocation_is_a_memory_failure(fuzz, tmp_path, monkeypatch):
    def greedy(path):
        np.ones(10**11)  # 800 GB: over the address-space cap

    _with_reader(monkeypatch, ".safetensors", greedy)
    assert _outcomes(fuzz, tmp_path, ("safetensors",), 1) == Counter(memory=1)

    def hidden(path):  # a reader that turns the failed allocation into a refusal still counts
        try:
            torch.empty(10**11)
        except RuntimeError:
            raise TsensError(f"{path}: corrupt") from None

    _with_reader(monkeypatch, ".safetensors", hidden)
    assert _outcomes(fuzz, tmp_path, ("safetensors",), 1) == Counter(memory=1)


@contextlib.contextmanager
def _unshared_memory(size):
    """``size`` bytes resident in this process but not in the processes it forks (as the
    memory that other tests leave in the pytest process may be): a limit computed from this
    process's RSS would leave its workers ``size`` bytes more."""
    block = mmap.mmap(-1, size)
    try:
        if hasattr(mmap, "MADV_DONTFORK"):
            block.madvise(mmap.MADV_DONTFORK)
        block[:: mmap.PAGESIZE] = b"\1" * (size // mmap.PAGESIZE)  # resident
        yield
    finally:
        block.close()


def test_rss_over_the_limit_is_killed(fuzz, tmp_path, monkeypatch):
    def touches(path):
        np.ones(40_000_000)  # 320 MB, touched
        time.sleep(20)

    _with_reader(monkeypatch, ".safetensors", touches)
    with _unshared_memory(512 << 20):  # the limit is the worker's size + 100 MiB, not the parent's
        got = _outcomes(fuzz, tmp_path, ("safetensors",), 1, rlimit=False, memory_mb=100)
    assert got == Counter(memory=1)


def test_hang_and_crash_kill_and_replace_the_worker(fuzz, tmp_path, monkeypatch):
    def sleeps(path):
        time.sleep(60)

    _with_reader(monkeypatch, ".safetensors", sleeps)
    start = time.monotonic()
    assert _outcomes(fuzz, tmp_path, ("safetensors",), 2, timeout=1) == Counter(hang=2)
    assert time.monotonic() - start < 30

    def segfault(path):
        os.kill(os.getpid(), signal.SIGSEGV)

    _with_reader(monkeypatch, ".safetensors", segfault)
    assert _outcomes(fuzz, tmp_path, ("safetensors",), 2) == Counter(crash=2)


def test_a_payload_that_runs_is_detected(fuzz, tmp_path, monkeypatch):
    def trusting(path):  # what tsens must never do
        torch.load(path, weights_only=False)
        raise TsensError(f"{path}: refused after loading")

    _with_reader(monkeypatch, ".pt", trusting)
    payloads = len(fuzz.select(fuzz.all_seeds(external=None), ["payload.pt"]))
    got = _outcomes(fuzz, tmp_path, ("payload.pt",), payloads)
    assert got == Counter(payload=payloads)
    assert "created ['pwned" in (tmp_path / "report.txt").read_text()


def test_the_cli_check(fuzz, tmp_path, monkeypatch):
    path = tmp_path / "net.safetensors"
    from safetensors.torch import save_file

    save_file({"0.weight": torch.randn(3, 4)}, str(path))
    assert fuzz.cli_outcome(["info", str(path)]).outcome == "ok"
    assert fuzz.cli_outcome(["info", str(tmp_path / "missing.pt")]).outcome == "refused"

    def broken(p):
        raise KeyError("weight")

    _with_reader(monkeypatch, ".safetensors", broken)
    result = fuzz.cli_outcome(["bound", str(path)])
    assert result.outcome == "traceback" and "KeyError" in result.message


# --- what the fuzzing found: each refused in one line, before anything is allocated ------------


def _legacy(state=None) -> bytes:
    buf = io.BytesIO()
    torch.save(state or {"0.weight": torch.zeros(3, 4)}, buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


@pytest.fixture
def torch_never_loads(monkeypatch):
    """Fails the test if torch is asked to read the file: the refusal must come first (torch
    would allocate what the file claims)."""
    calls = []

    def boom(*args, **kwargs):
        calls.append(args)
        raise RuntimeError("stand-in")

    monkeypatch.setattr(torch, "load", boom)
    monkeypatch.setattr(torch.serialization, "get_unsafe_globals_in_checkpoint", boom)
    yield
    assert not calls, "torch read a file that should have been refused before"


@pytest.mark.parametrize(
    "old, new",
    [
        (b"X\x07\x00\x00\x00storage", b"X\xff\xff\xff\x7fstorage"),  # a string longer than the file
        (b"K\x0cNtq", b"\x8a\x06\x00\x10\xa5\xd4\xe8\x00Ntq"),  # a storage of 10**12 elements
        (b"K\x03K\x04\x86", b"\x8a\x06\x00\x10\xa5\xd4\xe8\x00K\x04\x86"),  # a tensor far past its storage
        (b"K\x03K\x04\x86", b"J\xff\xff\xff\xffK\x04\x86"),  # a negative size
    ],
)
def test_legacy_files_claiming_more_than_they_hold(tmp_path, torch_never_loads, old, new):
    data = _legacy()
    assert data.count(old) == 1
    path = tmp_path / "claims.pt"
    path.write_bytes(data.replace(old, new))
    with pytest.raises(
        TsensError, match=r"^\S+claims\.pt: not a readable PyTorch checkpoint \(truncated or corrupt\)$"
    ):
        tsens.checkpoints.load_network(path)
    with pytest.raises(TsensError, match="truncated or corrupt"):
        tsens.checkpoints.read_metadata(path)


def test_zip_records_claiming_more_than_the_file(tmp_path, torch_never_loads):
    buf = io.BytesIO()
    torch.save({"0.weight": torch.zeros(3, 4)}, buf)
    data = bytearray(buf.getvalue())
    at = data.rfind(b"PK\x01\x02", 0, data.find(b"PK\x05\x06"))  # the last central entry
    data[at + 24 : at + 28] = b"\xff\xff\xff\xff"  # its uncompressed size: 4 GiB
    path = tmp_path / "huge.pt"
    path.write_bytes(bytes(data))
    with pytest.raises(TsensError, match="huge.pt: not a readable PyTorch checkpoint"):
        tsens.checkpoints.load_network(path)


def test_a_tensor_of_more_than_64_dims(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "deep.safetensors"
    save_file({"0.weight": torch.zeros([3, 4] + [1] * 70)}, str(path))
    with pytest.raises(TsensError, match=r"key '0.weight' is a 72-D tensor"):
        tsens.checkpoints.load_network(path)


def test_hugging_face_json_nested_deeply_and_shard_names_too_long(tmp_path):
    from safetensors.torch import save_file

    save_file({"0.weight": torch.zeros(3, 4)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(TsensError, match=r"config.json: not readable JSON"):
        tsens.checkpoints.load_network(tmp_path)
    (tmp_path / "config.json").unlink()
    index = {"weight_map": {"0.weight": "x" * 5000}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(TsensError, match=r"names shard 'xxx+\.\.\.', which is not in"):
        tsens.checkpoints.load_network(tmp_path)


def _cifar(tmp_path, data: bytes) -> Path:
    path = tmp_path / "data_batch_1"
    path.write_bytes(data)
    return path


def test_cifar_dtypes_with_object_flags_are_refused(tmp_path):
    """A uint8 dtype whose pickled state carries numpy's object flags made numpy treat bytes as
    object pointers (found as a "get_clear_loop not set" error from a later, unrelated case)."""
    data = pickle.dumps({b"data": np.zeros((2, 3), np.uint8), b"labels": [0, 1]}, 2)
    assert data.count(b"K\x00tq") == 1
    path = _cifar(tmp_path, data.replace(b"K\x00tq", b"K?tq"))  # flags 63
    with pytest.raises(TsensError, match=r"data_batch_1: refused to unpickle a dtype with state \(3, '\|'"):
        tsens.datasets.load_dataset(str(path))


def test_cifar_arrays_and_buffers_larger_than_the_file(tmp_path):
    data = pickle.dumps({"data": bytearray(b"\0" * 16)}, 5)
    at = data.index(b"\x96")  # BYTEARRAY8
    huge = data[:at] + b"\x96" + struct.pack("<Q", 10**12) + data[at + 9 :]
    with pytest.raises(TsensError, match="a bytearray claims 1000000000000 bytes"):
        tsens.datasets.load_dataset(str(_cifar(tmp_path, huge)))
    data = pickle.dumps({b"data": np.zeros((2, 3), np.uint8)}, 2)
    assert data.count(b"K\x00\x85") == 1  # the shape (0,) _reconstruct starts from
    big = data.replace(b"K\x00\x85", b"J\xff\xff\xff\x7f\x85")
    with pytest.raises(TsensError, match=r"an array of shape \(2147483647,\) does not fit in the file"):
        tsens.datasets.load_dataset(str(_cifar(tmp_path, big)))


def test_gzip_bomb_idx_is_refused_by_its_header(tmp_path):
    head = struct.pack(">BBBB", 0, 0, 8, 3) + struct.pack(">3I", 2, 2, 2)
    bomb = gzip.compress(head + bytes(8) + bytes(64 << 20), mtime=0)  # 64 MiB inflated
    (tmp_path / "t-images-idx3-ubyte.gz").write_bytes(bomb)
    with pytest.raises(TsensError, match=r"promises \(2, 2, 2\) \(8 bytes\) but more bytes follow"):
        tsens.datasets.load_dataset(str(tmp_path / "t-images-idx3-ubyte.gz"))
    images = gzip.compress(head + bytes(8), mtime=0)
    (tmp_path / "t-images-idx3-ubyte.gz").write_bytes(images)
    labels = struct.pack(">BBBB", 0, 0, 8, 1) + struct.pack(">I", 2)
    (tmp_path / "t-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(labels + bytes(2) + bytes(64 << 20), mtime=0)
    )
    with pytest.raises(
        TsensError, match=r"t-labels-idx1-ubyte.gz: IDX header promises \(2,\) \(2 bytes\) but more"
    ):
        tsens.datasets.load_dataset(str(tmp_path / "t-images-idx3-ubyte.gz"))


def test_npz_member_claiming_more_than_it_holds(tmp_path):
    """numpy allocates the array an .npz member's header claims before reading it."""
    x, y = io.BytesIO(), io.BytesIO()
    np.lib.format.write_array(x, np.zeros((2, 3), np.float32))
    header = {"descr": "<i8", "fortran_order": False, "shape": (10**12,)}
    np.lib.format.write_array_header_1_0(y, header)
    path = tmp_path / "claims.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", x.getvalue())
        archive.writestr("y.npy", y.getvalue() + bytes(16))
    with pytest.raises(TsensError, match=r"claims.npz: member y.npy claims 8000000000000 bytes of int64"):
        tsens.datasets.load_dataset(str(path))


def test_npy_headers_numpy_cannot_parse(tmp_path):
    path = tmp_path / "bad.npy"
    np.save(path, np.zeros((2, 3), np.float32))
    data = path.read_bytes()
    path.write_bytes(data.replace(b"'shape': (2, 3)", b"'shape': (2, 3 "))  # tokenize's TokenError
    with pytest.raises(TsensError, match=r"bad.npy: cannot read .npy"):
        tsens.datasets.load_dataset(str(path))


def test_labels_beyond_int64(tmp_path):
    path = tmp_path / "labels.npz"
    np.savez(path, x=np.zeros((2, 3), np.float32), y=np.array([1, 2**63], np.uint64))
    with pytest.raises(TsensError, match=r"labels must be class indices, found 9223372036854775808"):
        tsens.datasets.load_dataset(str(path))
