"""Corrupt Keras files that fuzzing (``scripts/fuzz.py``) found to hang, crash or exhaust the
HDF5 library, JSON nested too deeply, and archive members claiming gigabytes: each is refused in
one line, quickly. Every input is built here from the committed samples, byte-patched at
places the test locates and checks, so the tests are deterministic."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import struct
import time
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from nets import refused
from test_keras import DATA, NOT_H5, archive, keras3_file, legacy_file, outputs

from tsens.checkpoints import load_network, read_metadata
from tsens.checkpoints.keras import hdf5, isolated, read_h5
from tsens.errors import TsensError

pytestmark = pytest.mark.skipif(
    not hasattr(os, "fork"), reason="the HDF5 reads are isolated where there is fork"
)


@pytest.fixture(autouse=True)
def fresh_isolation(monkeypatch):
    """No failure remembered from another test, and a short time limit."""
    monkeypatch.setattr(isolated, "_failed", {})
    monkeypatch.setattr(isolated, "SECONDS", 2.0)


@pytest.fixture
def forks(monkeypatch):
    """The pids of the children forked during the test."""
    pids: list[int] = []
    fork = os.fork

    def recording() -> int:
        pid = fork()
        if pid:
            pids.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", recording)
    return pids


def gone(pid: int) -> bool:
    """Whether the process has exited and been reaped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def patched(data: bytes, at: int, old: bytes, new: bytes) -> bytes:
    assert data[at : at + len(old)] == old, (at, data[at : at + len(old)])
    return data[:at] + new + data[at + len(old) :]


def hanging_weights() -> bytes:
    """mlp.weights.h5 with the size of the global-heap object holding the string "dense_1" (a
    vars group's name attribute) set to 2**64 - 1: reading the attribute never finishes (fuzz
    case 4072 of seed 0)."""
    data = (DATA / "mlp.weights.h5").read_bytes()
    at = data.index(struct.pack("<Q", 7) + b"dense_1")
    return patched(data, at, struct.pack("<Q", 7), struct.pack("<Q", 2**64 - 1))


def crashing_pgdl(tmp_path: Path) -> Path:
    """The PGDL sample with the variable-length class bits of the root's keras_version attribute
    set from 1 to 3: the HDF5 library segfaults (fuzz case 6145 of seed 0)."""
    directory = tmp_path / "model_3"
    shutil.copytree(DATA / "pgdl" / "model_3", directory)
    data = (directory / "weights.hdf5").read_bytes()
    at = data.index(b"keras_version\0") + 17
    (directory / "weights.hdf5").write_bytes(patched(data, at, b"\x01", b"\x03"))
    return directory


def greedy_h5() -> bytes:
    """mlp.h5 with the length of the root object header's continuation block (256 bytes) set to
    4 GiB: the HDF5 library allocates it ("memory allocation failed for on disk image buffer")."""
    data = (DATA / "mlp.h5").read_bytes()
    assert data[112:114] == b"\x10\x00"  # a continuation message: address (8 bytes), length (8)
    return patched(data, 128, struct.pack("<Q", 256), struct.pack("<Q", 2**32 - 1))


# --- the HDF5 library, isolated -------------------------------------------------------------


def test_a_file_that_hangs_the_library_is_refused_at_the_time_limit(tmp_path, forks):
    path = tmp_path / "hang.weights.h5"
    path.write_bytes(hanging_weights())
    start = time.monotonic()
    message = refused(path, NOT_H5, "the HDF5 library did not finish in 2 s")
    assert 1.9 < time.monotonic() - start < 10
    assert len(forks) == 1 and gone(forks[0])
    # the same bytes are refused at once afterwards, without a child: read_metadata after load_network
    start = time.monotonic()
    with pytest.raises(TsensError) as caught:
        read_metadata(path)
    assert str(caught.value) == message and time.monotonic() - start < 1 and len(forks) == 1
    copy = tmp_path / "copy.weights.h5"
    shutil.copy(path, copy)
    refused(copy, "did not finish")
    assert len(forks) == 1


def test_a_keras_archive_whose_weights_hang_the_library(tmp_path):
    """The weights of a .keras archive are read from memory in the child (fuzz case 1243)."""
    path = archive(tmp_path / "hang.keras", **{"model.weights.h5": hanging_weights()})
    start = time.monotonic()
    refused(path, NOT_H5, "model.weights.h5: the HDF5 library did not finish in 2 s")
    assert time.monotonic() - start < 10
    assert read_metadata(path)["tsens.layers"] == "dense,dense_1,dense_2"  # the weights are not read


def test_a_file_that_crashes_the_library(tmp_path):
    directory = crashing_pgdl(tmp_path)
    message = refused(directory / "weights.hdf5", NOT_H5, "the HDF5 library crashed on it (SIGSEGV)")
    with pytest.raises(TsensError) as caught:
        load_network(directory)
    assert str(caught.value) == message
    with pytest.raises(TsensError, match="crashed on it"):
        read_metadata(directory)


def test_a_file_that_makes_the_library_allocate_gigabytes(tmp_path):
    path = tmp_path / "greedy.h5"
    path.write_bytes(greedy_h5())
    message = refused(path, NOT_H5, "the HDF5 library needed more than the 256 MiB of memory it may use")
    assert "allocat" not in message and "out of memory" not in message  # the child's limit, not ours


def test_a_child_that_segfaults_or_sleeps_gives_one_line_quickly(tmp_path, monkeypatch, forks):
    path, contents = DATA / "mlp.weights.h5", hdf5.contents

    def segfault(*args):
        os.kill(os.getpid(), signal.SIGSEGV)

    monkeypatch.setattr(hdf5, "contents", segfault)
    start = time.monotonic()
    refused(path, NOT_H5, "crashed on it (SIGSEGV)")
    assert time.monotonic() - start < 2 and gone(forks[-1])

    def sleeps(*args):
        time.sleep(60)

    monkeypatch.setattr(isolated, "_failed", {})
    monkeypatch.setattr(isolated, "SECONDS", 0.5)
    monkeypatch.setattr(hdf5, "contents", sleeps)
    start = time.monotonic()
    refused(path, NOT_H5, "did not finish in 0.5 s")
    assert time.monotonic() - start < 3 and gone(forks[-1])
    monkeypatch.setattr(isolated, "_failed", {})
    monkeypatch.setattr(hdf5, "contents", contents)
    assert load_network(path).depth == 3


def test_the_memory_limit_binds_in_the_child(tmp_path, monkeypatch):
    """torch and h5py are imported before the fork: the cap is relative to the child's size."""
    path = tmp_path / "mlp.weights.h5"
    shutil.copy(DATA / "mlp.weights.h5", path)
    contents = hdf5.contents

    def allocating(megabytes):
        def body(*args):
            np.ones(megabytes << 17)  # touched, 8 bytes each
            return contents(*args)

        return body

    monkeypatch.setattr(hdf5, "contents", allocating(100))
    assert load_network(path).depth == 3
    monkeypatch.setattr(hdf5, "contents", allocating(400))
    refused(path, "needed more than the 256 MiB of memory")


def test_child_replies_that_are_not_ours_are_refused(monkeypatch):
    monkeypatch.setattr(isolated, "_reply", lambda header, arrays=None: b"\x80\x04junk")
    refused(DATA / "mlp.weights.h5", NOT_H5, "the reading process gave no readable reply")
    monkeypatch.setattr(
        isolated,
        "_reply",
        lambda header, arrays=None: isolated._HEAD.pack(17, 4) + b'{"outcome": "ok"}' + b"\0" * 4,
    )
    refused(DATA / "mlp.weights.h5", NOT_H5, "gave no readable reply")


def test_a_bug_in_the_child_is_an_exception_with_its_traceback(monkeypatch):
    def broken(*args):
        raise ZeroDivisionError("weights")

    monkeypatch.setattr(hdf5, "keras3_stored", broken)
    with pytest.raises(
        RuntimeError, match=r"mlp.weights.h5: reading failed in the child process: ZeroDivisionError"
    ):
        load_network(DATA / "mlp.weights.h5")


def test_every_sample_reads_the_same_in_the_child_and_in_process(monkeypatch):
    samples = ("mlp.weights.h5", "bn.weights.h5", "mlp.h5", "bn.keras", "nobias.keras", "pgdl/model_3")
    isolated_reads = {s: (load_network(DATA / s), read_metadata(DATA / s)) for s in samples}
    monkeypatch.delattr(os, "fork")  # Windows: the read runs in process
    for sample, (network, metadata) in isolated_reads.items():
        again = load_network(DATA / sample)
        assert again.metadata == network.metadata and read_metadata(DATA / sample) == metadata
        x = torch.randn(4, network.layers[0].weight.shape[1], dtype=torch.float64)
        assert torch.equal(again.forward(x), network.forward(x)), sample
    x, y = outputs("mlp")
    torch.testing.assert_close(load_network(DATA / "mlp.keras").forward(x), y, rtol=0, atol=1e-10)


def test_float16_big_endian_and_empty_variables_cross_the_pipe(tmp_path):
    rng = np.random.default_rng(3)
    kernel = rng.normal(size=(3, 2)).astype(">f4")
    layers = {"dense": [kernel, np.arange(2, dtype=np.float16)], "dense_1": [np.zeros((2, 0)), np.zeros(0)]}
    weights = read_h5(keras3_file(tmp_path / "odd.weights.h5", layers))
    assert list(weights.tensors) == ["dense.weight", "dense.bias", "dense_1.weight", "dense_1.bias"]
    assert torch.equal(weights.tensors["dense.weight"], torch.from_numpy(kernel.astype("<f4").T.copy()))
    assert torch.equal(weights.tensors["dense.bias"], torch.tensor([0.0, 1.0], dtype=torch.float16))
    assert weights.tensors["dense_1.weight"].shape == (0, 2) and weights.tensors["dense_1.bias"].shape == (0,)


# --- JSON and archives ------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [10_000, 1_000_000])
def test_json_nested_deeply(tmp_path, depth):
    """json.loads raised RecursionError (24 cases in 10,000)."""
    nested = "[" * depth + "]" * depth
    directory = tmp_path / "model_3"
    shutil.copytree(DATA / "pgdl" / "model_3", directory)
    (directory / "config.json").write_text(nested)
    refused(directory, "config.json", "the file is not readable JSON (nested too deeply)")
    with pytest.raises(TsensError, match="nested too deeply"):
        read_metadata(directory)
    refused(
        archive(tmp_path / "config.keras", **{"config.json": nested.encode()}),
        "config.json is not readable JSON",
    )
    bad_metadata = archive(tmp_path / "metadata.keras", **{"metadata.json": nested.encode()})
    with pytest.raises(
        TsensError, match=r"metadata.keras: metadata.json is not readable JSON \(nested too deeply\)$"
    ):
        read_metadata(bad_metadata)


def test_json_nested_within_the_decoder_limit_but_beyond_keras(tmp_path):
    """500 levels decode, but walking them recursively could exhaust the stack: refused."""
    config = json.loads(json.dumps({"class_name": "Sequential", "config": {"layers": []}}))
    config["config"]["layers"] = [{"class_name": "Dense", "config": {"name": "d", "units": 2}}]
    config["config"]["layers"][0]["inbound_nodes"] = json.loads("[" * 500 + "]" * 500)
    refused(archive(tmp_path / "deep.keras", config), "config.json nests more than 100 levels deep")
    path = legacy_file(tmp_path / "deep.h5", {"d": {"kernel": np.ones((3, 2))}}, config)
    refused(path, "model_config nests more than 100 levels deep")
    refused(
        archive(tmp_path / "digits.keras", **{"config.json": b'{"a": ' + b"1" * 5000 + b"}"}),
        "not readable JSON",
    )


def test_archive_member_claiming_gigabytes_compressed(tmp_path, monkeypatch):
    """A central-directory compressed size of 2-4 GiB made zipfile read (allocate) that much:
    the member is refused before it is opened."""
    opened = []
    open_member = zipfile.ZipFile.open

    def recording(self, name, *args, **kwargs):
        opened.append(getattr(name, "filename", name))
        return open_member(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", recording)
    for claimed in (2 << 30, 3 << 30, 2**32 - 1):
        path = archive(tmp_path / "claims.keras")
        data = bytearray(path.read_bytes())
        entry = data.rindex(b"model.weights.h5") - 46  # its central directory entry
        assert data[entry : entry + 4] == b"PK\x01\x02"
        data[entry + 20 : entry + 24] = claimed.to_bytes(4, "little")
        path.write_bytes(bytes(data))
        opened.clear()
        refused(path, "not a readable .keras archive", f"{claimed:,} compressed bytes", "past the end")
        assert "model.weights.h5" not in opened and "config.json" in opened
        assert read_metadata(path)["tsens.layers"] == "dense,dense_1,dense_2"  # the weights are not read


def test_archive_members_are_read_in_blocks(tmp_path, monkeypatch):
    """No single read asks for more than a block, whatever the member declares."""
    big = io.BytesIO()
    with h5py.File(big, "w") as f:  # a 3 MiB weights file: several blocks
        f.create_dataset("layers/dense/vars/0", data=np.ones((400, 1000)))
        f.create_dataset("layers/dense/vars/1", data=np.ones(1000))
    config = {
        "class_name": "Sequential",
        "config": {"layers": [{"class_name": "Dense", "config": {"name": "dense", "units": 1000}}]},
    }
    path = archive(tmp_path / "big.keras", config, **{"model.weights.h5": big.getvalue()})
    sizes = []
    read = zipfile.ZipExtFile.read

    def recorded(self, n=-1):
        sizes.append(n)
        return read(self, n)

    monkeypatch.setattr(zipfile.ZipExtFile, "read", recorded)
    assert load_network(path).depth == 1
    assert sizes and all(0 < n <= 1 << 20 for n in sizes)


def test_an_in_memory_weights_file_with_an_address_past_2_to_the_63(tmp_path):
    """h5py's driver for file objects raised OverflowError reading a .keras archive's weights
    whose superblock's driver-information address (undefined: all ones) lost a bit (fuzz case
    2490 of seed 0, after the isolation)."""
    with zipfile.ZipFile(DATA / "bn.keras") as z:
        weights = z.read("model.weights.h5")
    broken = patched(weights, 49, b"\xff", b"\xbf")
    path = archive(tmp_path / "overflow.keras", source="bn.keras", **{"model.weights.h5": broken})
    refused(path, NOT_H5, "model.weights.h5: Python int too large")


def test_layer_names_that_are_not_utf8_cross_the_pipe(tmp_path, monkeypatch):
    """h5py decodes a vars group's name with surrogate escapes; safetensors refused such keys
    (fuzz case 1951 of seed 2, after the isolation): the file reads as it does in process."""
    data = (DATA / "bn.weights.h5").read_bytes()
    at = data.index(struct.pack("<Q", 5) + b"dense\0") + 8  # the name "dense" in the global heap
    path = tmp_path / "names.weights.h5"
    path.write_bytes(patched(data, at, b"dense", b"de\xff\xff\xff"))
    weights = read_h5(path)
    assert weights.metadata["tsens.layers"].startswith("de\udcff\udcff\udcff,batch_normalization,")
    assert "de\udcff\udcff\udcff.weight" in weights.tensors
    monkeypatch.delattr(os, "fork")
    again = read_h5(path)
    assert again.metadata == weights.metadata and list(again.tensors) == list(weights.tensors)
    assert all(torch.equal(again.tensors[k], t) for k, t in weights.tensors.items())
