"""Layer widths without the weights (tsens.checkpoints.read_widths): the same widths and the same
refusals as load_network for every committed checkpoint and every layout written here; the
safetensors and zip torch.save paths never read tensor data (NaN written over it goes unseen)."""

from __future__ import annotations

import json
import pickle
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from tsens.checkpoints import claiming_format, find_format, load_network, read_widths
from tsens.errors import TsensError

ROOT = Path(__file__).parent.parent
COMMITTED = sorted(
    p
    for base in (ROOT / "tests" / "data" / "formats", ROOT / "sample_checkpoints")
    for p in base.rglob("*")
    if claiming_format(p) is not None
)
EXTRA_MODULES = {"flax": "msgpack", "keras": "h5py", "onnx": "onnx"}
NAN32 = struct.pack("<f", float("nan"))


def outcome(call: Callable[[], object]) -> object:
    """What ``call`` returns, or the message of the TsensError it raises."""
    try:
        return call()
    except TsensError as e:
        return f"TsensError: {e}"


def agree(path: Path, layers: list[str] | None = None) -> tuple[int, ...]:
    """read_widths and load_network agree on ``path``: the widths, or the same refusal."""
    widths = outcome(lambda: read_widths(path, layers=layers))
    assert widths == outcome(lambda: load_network(path, layers=layers).widths)
    return widths  # type: ignore[return-value]


def mlp(widths: tuple[int, ...], *, bn: str = "none", seed: int = 0) -> nn.Sequential:
    """Linear [BatchNorm1d] ReLU ... Linear in float32 with random BatchNorm statistics."""
    torch.manual_seed(seed)
    mods: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths, widths[1:], strict=False)):
        mods.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            if bn != "none":
                mods.append(nn.BatchNorm1d(b, affine=bn == "affine"))
                mods[-1].running_mean.normal_()
                mods[-1].running_var.uniform_(0.5, 1.5)
            mods.append(nn.ReLU())
    return nn.Sequential(*mods).eval()


def state(module: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    return {f"{prefix}{k}": v.detach().contiguous() for k, v in module.state_dict().items()}


def save(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    if path.suffix == ".safetensors":
        save_file(tensors, str(path), metadata=metadata)
    else:
        torch.save({**tensors, **(metadata or {})}, path)
    return path


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_checkpoints(path):
    extra = find_format(path).extra
    if extra is not None:
        pytest.importorskip(EXTRA_MODULES[extra])
    widths = agree(path)
    assert isinstance(widths, tuple) and all(isinstance(w, int) for w in widths)


def test_every_committed_format_is_covered():
    names = {claiming_format(p).name for p in COMMITTED}  # type: ignore[union-attr]
    assert names >= {"safetensors", "torch.save", "Flax msgpack", "ONNX", "Keras archive", "PGDL directory"}


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".pth"])
@pytest.mark.parametrize("bn", ["none", "affine", "plain"])
def test_batchnorm_nets(tmp_path, suffix, bn):
    path = save(tmp_path / f"net{suffix}", state(mlp((5, 7, 6, 3), bn=bn), prefix="module."))
    assert agree(path) == (5, 7, 6, 3)


def test_legacy_pickle_is_read_and_checked_in_full(tmp_path):
    path = tmp_path / "legacy.pt"
    torch.save(state(mlp((4, 6, 2), bn="affine")), path, _use_new_zipfile_serialization=False)
    assert agree(path) == (4, 6, 2)
    torch.save({"0.weight": torch.full((3, 2), float("nan"))}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(TsensError, match=r"legacy\.pt: key '0\.weight' contains NaN"):
        read_widths(path)


def _unordered(widths: tuple[int, ...] = (4, 5, 3, 2)) -> dict[str, torch.Tensor]:
    """Linears named so that no order can be inferred: ``b`` then ``a`` then ``c``."""
    names = ("b", "a", "c")
    torch.manual_seed(3)
    return {
        f"{name}.{param}": t
        for name, (d, n) in zip(names, zip(widths, widths[1:], strict=False), strict=True)
        for param, t in (("weight", torch.randn(n, d)), ("bias", torch.randn(n)))
    }


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_layers_given_or_recorded(tmp_path, suffix):
    path = save(tmp_path / f"u{suffix}", _unordered())
    assert "cannot order layers" in agree(path)  # type: ignore[operator]
    assert agree(path, layers=["b", "a", "c"]) == (4, 5, 3, 2)
    assert "has shape" in agree(path, layers=["a", "b", "c"])  # type: ignore[operator]
    assert "names no Linear" in agree(path, layers=["b", "a", "z"])  # type: ignore[operator]
    recorded = save(tmp_path / f"r{suffix}", _unordered(), {"tsens.layers": "b,a,c"})
    assert agree(recorded) == (4, 5, 3, 2)
    assert agree(recorded, layers=["model.b", "a", "c"]) == (4, 5, 3, 2)


def test_lightning_checkpoint(tmp_path):
    path = tmp_path / "epoch=3-step=120.ckpt"
    torch.save(
        {
            "epoch": 3,
            "global_step": 120,
            "state_dict": state(mlp((4, 6, 3), bn="affine"), prefix="model."),
            "hyper_parameters": {"lr": 0.1, "widths": [4, 6, 3]},
            "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(6, 4)}}}],
        },
        path,
    )
    assert agree(path) == (4, 6, 3)


def _hugging_face(directory: Path, tensors: dict[str, torch.Tensor], how: str) -> Path:
    """A Hugging Face model directory: one file, or two shards and an index."""
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps({"hidden_act": "relu"}))
    suffix, stem = (".safetensors", "model") if how.endswith("safetensors") else (".bin", "pytorch_model")
    if not how.startswith("sharded"):
        save(directory / f"{stem}{suffix}", tensors)
        return directory
    keys = sorted(tensors)
    shards = {f"{stem}-0000{i + 1}-of-00002{suffix}": keys[i::2] for i in range(2)}
    for name, names in shards.items():
        save(directory / name, {k: tensors[k] for k in names})
    index = {"weight_map": {k: name for name, names in shards.items() for k in names}}
    (directory / f"{stem}{suffix}.index.json").write_text(json.dumps(index))
    return directory


@pytest.mark.parametrize("how", ["safetensors", "bin", "sharded-safetensors", "sharded-bin"])
def test_hugging_face_directories(tmp_path, how):
    tensors = state(mlp((6, 8, 7, 3), bn="affine"), prefix="model.")
    directory = _hugging_face(tmp_path / "checkpoint-500", tensors, how)
    assert agree(directory) == (6, 8, 7, 3)
    if how.startswith("sharded"):
        index = next(directory.glob("*.index.json"))
        weight_map = json.loads(index.read_text())["weight_map"]
        index.write_text(json.dumps({"weight_map": {**weight_map, "model.9.weight": "gone.bin"}}))
        assert "which is not in" in agree(directory)  # type: ignore[operator]


def _overwrite_safetensors_data(path: Path) -> None:
    """NaN over every byte after the header (float32 tensors: every value becomes NaN)."""
    data = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")
    data[start:] = NAN32 * ((len(data) - start) // 4)
    path.write_bytes(bytes(data))


def _overwrite_zip_data(path: Path) -> None:
    """NaN over the records of a zip torch.save file's tensor storages (``<archive>/data/<n>``)."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        storages = [i for i in archive.infolist() if i.filename.split("/")[-2:-1] == ["data"]]
    assert storages
    for info in storages:
        assert info.compress_type == zipfile.ZIP_STORED
        name_length, extra_length = struct.unpack(
            "<HH", data[info.header_offset + 26 : info.header_offset + 30]
        )
        start = info.header_offset + 30 + name_length + extra_length
        data[start : start + info.file_size] = NAN32 * (info.file_size // 4)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("name", "overwrite"),
    [("net.safetensors", _overwrite_safetensors_data), ("net.pt", _overwrite_zip_data)],
)
def test_cheap_path_never_reads_the_data(tmp_path, name, overwrite):
    path = save(tmp_path / name, state(mlp((5, 7, 6, 3), bn="affine")))
    assert read_widths(path) == load_network(path).widths == (5, 7, 6, 3)
    overwrite(path)
    with pytest.raises(TsensError, match="contains NaN or Inf values"):
        load_network(path)
    assert read_widths(path) == (5, 7, 6, 3)
    directory = tmp_path / "hf"
    directory.mkdir()
    path.rename(directory / ("model.safetensors" if name.endswith(".safetensors") else "pytorch_model.bin"))
    with pytest.raises(TsensError, match="contains NaN or Inf values"):
        load_network(directory)
    assert read_widths(directory) == (5, 7, 6, 3)


class Malicious:
    """Unpickling this would create ``marker`` (through io.open)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_refusals_are_those_of_load_network(tmp_path):
    good = save(tmp_path / "good.safetensors", state(mlp((6, 8, 3))))
    data = good.read_bytes()
    cases: list[Path] = [tmp_path / "missing.safetensors", tmp_path]
    for cut in (len(data) - 7, len(data) // 2, 20, 5, 0):
        cases.append(tmp_path / f"cut{cut}.safetensors")
        cases[-1].write_bytes(data[:cut])
    header = tmp_path / "header.safetensors"
    header.write_bytes(data[:8] + b"[" + data[9:])
    pt = save(tmp_path / "good.pt", state(mlp((6, 8, 3))))
    for cut in (len(pt.read_bytes()) - 30, len(pt.read_bytes()) // 2, 10):
        cases.append(tmp_path / f"cut{cut}.pt")
        cases[-1].write_bytes(pt.read_bytes()[:cut])
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"0.weight": torch.randn(2, 3), "evil": Malicious(marker)}, evil)
    plain_pickle = tmp_path / "plain.pt"
    plain_pickle.write_bytes(pickle.dumps({"0.weight": [[1.0]]}))
    whole = tmp_path / "whole.pt"
    torch.save(mlp((3, 2)), whole)
    cases += [header, evil, plain_pickle, whole]
    cases.append(save(tmp_path / "int.safetensors", {"0.weight": torch.ones(2, 3, dtype=torch.int64)}))
    cases.append(save(tmp_path / "conv.pt", {"0.weight": torch.randn(4, 3, 3)}))
    cases.append(save(tmp_path / "attn.safetensors", {"attn.q_proj.weight": torch.randn(4, 4)}))
    cases.append(save(tmp_path / "ln.pt", {"0.weight": torch.randn(3, 2), "ln.weight": torch.randn(3)}))
    cases.append(save(tmp_path / "none.safetensors", {}, {"epoch": "1"}))
    cases.append(save(tmp_path / "act.safetensors", state(mlp((3, 2))), {"tsens.activation": "gelu"}))
    cases.append(save(tmp_path / "eps.pt", state(mlp((3, 4, 2), bn="affine")), {"tsens.bn_eps": "0"}))
    bn_first = {
        "0.running_mean": torch.zeros(3),
        "0.running_var": torch.ones(3),
        "1.weight": torch.randn(2, 3),
    }
    cases.append(save(tmp_path / "bnfirst.safetensors", bn_first))
    for path in cases:
        message = agree(path)
        assert isinstance(message, str) and message.startswith(f"TsensError: {path}: "), message
        assert "\n" not in message
    assert not marker.exists()
