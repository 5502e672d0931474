"""Checkpoint loading: formats, wrappers, prefixes, layouts (forward equals the saved torch
module in float64), and every refusal (named key, one-line TsensError, no code unpickled)."""

from __future__ import annotations

import hashlib
import io
import pickle
import random
import tempfile
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from torch import nn

from tsens.checkpoints import file_sha256, load_network, read_checkpoint, read_metadata
from tsens.errors import TsensError
from tsens.piecewise import parse_activation

F64 = torch.float64
UNREADABLE_PT = "not a readable PyTorch checkpoint (truncated or corrupt)"


def _randomize_bn(bn: nn.BatchNorm1d, g: torch.Generator) -> None:
    with torch.no_grad():
        bn.running_mean.copy_(0.3 * torch.randn(bn.num_features, generator=g, dtype=F64))
        bn.running_var.copy_(0.5 + torch.rand(bn.num_features, generator=g, dtype=F64))
        if bn.affine:
            bn.weight.copy_(0.5 + torch.rand(bn.num_features, generator=g, dtype=F64))
            bn.bias.copy_(0.2 * torch.randn(bn.num_features, generator=g, dtype=F64))


def mlp(
    widths: tuple[int, ...],
    *,
    bias: bool = True,
    bn: str = "none",
    act: nn.Module | None = None,
    dropout: bool = False,
    eps: float = 1e-5,
    seed: int = 0,
) -> nn.Sequential:
    """Linear [BatchNorm1d] act [Dropout] ... Linear in float64, eval mode, random BN stats."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    mods: list[nn.Module] = []
    for i in range(len(widths) - 1):
        mods.append(nn.Linear(widths[i], widths[i + 1], bias=bias, dtype=F64))
        if i < len(widths) - 2:
            if bn != "none":
                mods.append(nn.BatchNorm1d(widths[i + 1], eps=eps, affine=bn == "affine", dtype=F64))
                _randomize_bn(mods[-1], g)
            mods.append(act if act is not None else nn.ReLU())
            if dropout:
                mods.append(nn.Dropout(0.5))
    return nn.Sequential(*mods).eval()


def assert_same(network, module: nn.Module, d: int | None = None) -> None:
    """Forward, and the network's own torch module, equal ``module`` in float64 to 1e-12."""
    d = network.input_dim if d is None else d
    x = torch.randn(17, d, generator=torch.Generator().manual_seed(1), dtype=F64)
    with torch.no_grad():
        expected = module.eval()(x)
        torch.testing.assert_close(network.forward(x), expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(network.torch_module()(x), expected, rtol=1e-12, atol=1e-12)
    assert network.dtype == F64 and network.device.type == "cpu"


def refused(path: Path, match: str, **kwargs) -> str:
    """The one-line TsensError message of ``load_network(path)``, which names the file."""
    with pytest.raises(TsensError, match=match) as info:
        load_network(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


# --- round trips --------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    widths=st.lists(st.integers(1, 7), min_size=2, max_size=5),
    bias=st.booleans(),
    bn=st.sampled_from(["none", "affine", "plain"]),
    dropout=st.booleans(),
    suffix=st.sampled_from([".safetensors", ".pt"]),
    seed=st.integers(0, 2**16),
)
def test_sequential_round_trip(widths, bias, bn, dropout, suffix, seed):
    module = mlp(tuple(widths), bias=bias, bn=bn, dropout=dropout, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"net{suffix}"
        if suffix == ".safetensors":
            save_file(module.state_dict(), str(path))
        else:
            torch.save(module.state_dict(), path)
        net = load_network(path)
        assert net.widths == tuple(widths) and net.depth == len(widths) - 1
        assert net.has_bias == bias and net.has_batchnorm == (bn != "none" and len(widths) > 2)
        assert_same(net, module)
        again = Path(tmp) / "again.safetensors"  # torch_module() saves and loads back to the same net
        save_file(net.torch_module().state_dict(), str(again))
        assert_same(load_network(again), module)


def test_safetensors_metadata_sha_and_activation(tmp_path):
    module = mlp((5, 6, 4, 3), act=nn.LeakyReLU(0.1))
    path = tmp_path / "leaky.safetensors"
    save_file(module.state_dict(), str(path), metadata={"tsens.activation": "leaky_relu:0.1", "epoch": "7"})
    net = load_network(path)
    assert net.activation.spec == "leaky_relu:0.1"
    assert net.metadata == {"tsens.activation": "leaky_relu:0.1", "epoch": "7"}
    assert net.path == str(path)
    assert net.sha256 == file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [layer.name for layer in net.layers] == ["0", "2", "4"]
    assert_same(net, module)
    with pytest.warns(
        UserWarning, match="the given activation relu differs from the one the checkpoint records"
    ):
        override = load_network(path, activation="relu")  # the explicit argument wins
    assert override.activation.name == "relu"
    assert_same(override, mlp((5, 6, 4, 3)))


def test_default_activation_is_relu_and_bad_metadata_named(tmp_path):
    path = tmp_path / "n.safetensors"
    save_file(mlp((3, 4, 2)).state_dict(), str(path))
    assert load_network(path).activation.name == "relu"
    save_file(mlp((3, 4, 2)).state_dict(), str(path), metadata={"tsens.activation": "gelu"})
    refused(path, "tsens.activation")
    with pytest.warns(UserWarning, match="tsens.activation = gelu"):
        assert load_network(path, activation="relu6").activation.name == "relu6"


@pytest.mark.parametrize("bn", ["affine", "plain"])
@pytest.mark.parametrize("bias", [True, False])
def test_batchnorm_folding(tmp_path, bn, bias):
    module = mlp((6, 8, 5, 3), bn=bn, bias=bias, seed=3)
    path = tmp_path / "bn.pt"
    torch.save(module.state_dict(), path)
    net = load_network(path)
    assert all(layer.norm is not None for layer in net.layers[:-1])
    assert (net.layers[0].norm.weight is None) == (bn == "plain")
    assert_same(net, module)


def test_bn_eps_from_metadata(tmp_path):
    module = mlp((4, 5, 2), bn="affine", eps=1e-1, seed=2)
    path = tmp_path / "eps.safetensors"
    save_file(module.state_dict(), str(path), metadata={"tsens.bn_eps": "0.1"})
    assert load_network(path).layers[0].norm.eps == 0.1
    assert_same(load_network(path), module)
    save_file(module.state_dict(), str(path), metadata={"tsens.bn_eps": "tiny"})
    refused(path, "tsens.bn_eps")


def test_lightning_checkpoint(tmp_path):
    module = mlp((4, 6, 3), bn="affine", seed=5)
    state = {f"model.{k}": v for k, v in module.state_dict().items()}
    exp_avg = torch.zeros(6, 4, dtype=F64)
    ckpt = {
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": "2.1.0",
        "state_dict": state,
        "hyper_parameters": {"lr": 0.1, "widths": [4, 6, 3], "tsens.activation": "relu"},
        "optimizer_states": [{"state": {0: {"step": torch.tensor(3), "exp_avg": exp_avg}}}],
        "callbacks": {"ModelCheckpoint{}": {"best_model_score": torch.tensor(0.5)}},
    }
    path = tmp_path / "epoch=3.ckpt"
    torch.save(ckpt, path)
    net = load_network(path)
    assert net.metadata["epoch"] == "3" and net.metadata["global_step"] == "120"
    assert net.metadata["lr"] == "0.1" and net.metadata["widths"] == "[4, 6, 3]"
    assert net.metadata["pytorch-lightning_version"] == "2.1.0"
    assert [layer.name for layer in net.layers] == ["0", "3"]
    assert_same(net, module)
    tensors, _ = read_checkpoint(path)
    assert "0.weight" in tensors and "1.num_batches_tracked" not in tensors


@pytest.mark.parametrize(
    ("suffix", "wrap"),
    [
        (".pth", lambda sd: {"model_state_dict": sd, "optimizer_state_dict": {}, "epoch": 9}),
        (".bin", lambda sd: {"model": sd}),
        (".pt", lambda sd: {"module": {"state_dict": sd}}),
        (".pt", lambda sd: {f"_orig_mod.{k}": v for k, v in sd.items()}),  # torch.compile
        (".pt", lambda sd: {f"module.{k}": v for k, v in sd.items()}),  # DataParallel
        (".pt", lambda sd: {f"module._orig_mod.model.{k}": v for k, v in sd.items()}),
    ],
)
def test_wrappers_and_prefixes(tmp_path, suffix, wrap):
    module = mlp((3, 5, 4, 2), bn="affine", seed=7)
    path = tmp_path / f"w{suffix}"
    torch.save(wrap(module.state_dict()), path)
    net = load_network(path)
    assert [layer.name for layer in net.layers] == ["0", "3", "6"]
    assert_same(net, module)


def test_data_parallel_state_dict(tmp_path):
    module = mlp((3, 4, 2), seed=1)
    path = tmp_path / "dp.pt"
    torch.save(nn.DataParallel(module).state_dict(), path)
    assert_same(load_network(path), module)


class NamedMLP(nn.Module):
    """fc1 bn1 fc2 bn2 fc3 (no bias on fc2)."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(4)
        self.fc1 = nn.Linear(5, 7, dtype=F64)
        self.bn1 = nn.BatchNorm1d(7, dtype=F64)
        self.fc2 = nn.Linear(7, 6, bias=False, dtype=F64)
        self.bn2 = nn.BatchNorm1d(6, affine=False, dtype=F64)
        self.fc3 = nn.Linear(6, 3, dtype=F64)
        _randomize_bn(self.bn1, g)
        _randomize_bn(self.bn2, g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.fc1(x)))
        return self.fc3(torch.relu(self.bn2(self.fc2(x))))


class ListMLP(nn.Module):
    """layers.N (ModuleList) with norms.N, hidden widths chained, then ``out``."""

    def __init__(self, widths: tuple[int, ...] = (4, 6, 6, 5), head: str = "out") -> None:
        super().__init__()
        g = torch.Generator().manual_seed(8)
        self.layers = nn.ModuleList(
            nn.Linear(a, b, dtype=F64) for a, b in zip(widths, widths[1:], strict=False)
        )
        self.norms = nn.ModuleList(nn.BatchNorm1d(b, dtype=F64) for b in widths[1:])
        for bn in self.norms:
            _randomize_bn(bn, g)
        self.head_name = head
        setattr(self, head, nn.Linear(widths[-1], 2, dtype=F64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for lin, bn in zip(self.layers, self.norms, strict=True):
            x = torch.relu(bn(lin(x)))
        return getattr(self, self.head_name)(x)


@pytest.mark.parametrize(
    ("module", "names"),
    [
        (NamedMLP(), ["fc1", "fc2", "fc3"]),
        (ListMLP(), ["layers.0", "layers.1", "layers.2", "out"]),
        (ListMLP(head="classifier"), ["layers.0", "layers.1", "layers.2", "classifier"]),
        (ListMLP((3, 8), head="head"), ["layers.0", "head"]),
    ],
)
def test_named_layouts(tmp_path, module, names):
    path = tmp_path / "named.safetensors"
    save_file(module.eval().state_dict(), str(path))
    net = load_network(path)
    assert [layer.name for layer in net.layers] == names
    assert_same(net, module)


def test_numeric_sort_of_long_sequential(tmp_path):
    module = mlp((3, 4, 5, 4, 5, 4, 5, 3), seed=9)
    path = tmp_path / "deep.pt"
    torch.save({f"net.{k}": v for k, v in module.state_dict().items()} | {"epoch": 1}, path)
    net = load_network(path)
    assert [layer.name for layer in net.layers] == [f"net.{i}" for i in range(0, 13, 2)]
    assert net.metadata == {"epoch": "1"}
    assert_same(net, module)


def test_nested_sequential_with_dropout(tmp_path):
    inner = nn.Sequential(
        nn.Sequential(nn.Linear(3, 6, dtype=F64), nn.BatchNorm1d(6, dtype=F64)),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Sequential(nn.Linear(6, 2, dtype=F64)),
    ).eval()
    _randomize_bn(inner[0][1], torch.Generator().manual_seed(2))
    path = tmp_path / "nested.safetensors"
    save_file({f"net.{k}": v for k, v in inner.state_dict().items()}, str(path))
    net = load_network(path)
    assert [layer.name for layer in net.layers] == ["net.0.0", "net.3.0"]
    assert_same(net, inner)


# --- layer order: ambiguity and explicit order --------------------------------------------


def _unordered_state(widths=(4, 5, 3, 2)):
    names = ("first", "second", "third")
    module = mlp(widths, seed=11)
    lins = [m for m in module if isinstance(m, nn.Linear)]
    state = {}
    for name, lin in zip(names, lins, strict=True):
        state[f"{name}.weight"], state[f"{name}.bias"] = lin.weight.detach(), lin.bias.detach()
    return module, state


def test_ambiguous_order_asks_for_layers(tmp_path):
    module, state = _unordered_state()
    path = tmp_path / "amb.safetensors"
    save_file(state, str(path))
    message = refused(path, "cannot order layers")
    assert "give `layers`" in message and "tsens.layers" in message
    net = load_network(path, layers=["first", "second", "third"])
    assert [layer.name for layer in net.layers] == ["first", "second", "third"]
    assert_same(net, module)
    save_file(state, str(path), metadata={"tsens.layers": "first, second,third"})
    assert_same(load_network(path), module)
    refused(path, "`layers`: layer 'fourth' names no Linear", layers=["first", "second", "fourth"])
    refused(path, "`layers`: key 'third.weight' is not used", layers=["first", "second"])
    refused(path, "`layers`: layer 'first' appears twice", layers=["first", "first", "second", "third"])


def test_two_numbered_groups_are_ambiguous(tmp_path):
    module = mlp((4, 4, 4), seed=1)
    state = {f"encoder.0.{k}": v for k, v in module[0].state_dict().items()}
    state |= {f"decoder.0.{k}": v for k, v in module[2].state_dict().items()}
    path = tmp_path / "ed.pt"
    torch.save(state, path)
    refused(path, "cannot order layers 'encoder.0' and 'decoder.0'.*`layers`")
    net = load_network(path, layers=["model.encoder.0", "decoder.0"])  # pre-strip spelling accepted
    assert_same(net, nn.Sequential(module[0], nn.ReLU(), module[2]))


def test_shapes_not_chaining_in_sorted_order(tmp_path):
    a, b = nn.Linear(4, 5, dtype=F64), nn.Linear(3, 4, dtype=F64)
    path = tmp_path / "swap.safetensors"
    state = {"a1": a, "a2": b}
    save_file({f"{n}.{k}": v for n, m in state.items() for k, v in m.state_dict().items()}, str(path))
    message = refused(path, r"'a2.weight' has shape \(4, 3\) but the previous layer 'a1' has 5 outputs")
    assert "`layers`" in message
    net = load_network(path, layers=["a2", "a1"])
    assert_same(net, nn.Sequential(b, nn.ReLU(), a))


# --- refusals -------------------------------------------------------------------------------


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(4, 2, dtype=F64)
        self.fc = nn.Linear(4, 2, dtype=F64)


class LayerNormed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 5, dtype=F64)
        self.ln1 = nn.LayerNorm(5, dtype=F64)
        self.fc2 = nn.Linear(5, 2, dtype=F64)


def _with(sd: dict, **extra: torch.Tensor) -> dict:
    return {**sd, **extra}


REFUSALS = {
    "conv2d": (
        lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2)).state_dict(),
        r"'0.weight'.*4-D",
    ),
    "conv1d": (
        lambda: nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2)).state_dict(),
        r"'0.weight'.*3-D",
    ),
    "embedding": (
        lambda: {"embed.weight": torch.randn(10, 4), "fc.weight": torch.randn(2, 4)},
        r"'embed.weight'.*embedding",
    ),
    "attention": (lambda: Attention().state_dict(), r"'attn\.\w+'.*attention"),
    "layernorm": (lambda: LayerNormed().state_dict(), r"'ln1.weight'.*LayerNorm"),
    "layernorm-seq": (
        lambda: nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2)).state_dict(),
        r"'1.weight'.*without running statistics",
    ),
    "nan": (
        lambda: _with(mlp((3, 2)).state_dict(), **{"0.weight": torch.tensor([[1.0, float("nan"), 0.0]] * 2)}),
        r"'0.weight'.*NaN or Inf",
    ),
    "inf": (
        lambda: _with(mlp((3, 2)).state_dict(), **{"0.bias": torch.tensor([1.0, float("inf")])}),
        r"'0.bias'.*NaN or Inf",
    ),
    "shape": (
        lambda: {"0.weight": torch.randn(4, 3), "1.weight": torch.randn(2, 5)},
        r"'1.weight' has shape \(2, 5\)",
    ),
    "bias-shape": (
        lambda: {"0.weight": torch.randn(4, 3), "0.bias": torch.randn(3)},
        r"'0.bias' has shape \(3,\)",
    ),
    "bn-size": (
        lambda: _with(
            mlp((3, 4, 2)).state_dict(), **{"1.running_mean": torch.zeros(5), "1.running_var": torch.ones(5)}
        ),
        r"'1.running_mean' has 5 features",
    ),
    "bn-after-relu": (
        lambda: nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.BatchNorm1d(4), nn.Linear(4, 2)).state_dict(),
        r"BatchNorm1d '2' is not directly after Linear '0'",
    ),
    "bn-first": (
        lambda: nn.Sequential(nn.BatchNorm1d(3), nn.Linear(3, 2)).state_dict(),
        r"'0' does not directly follow",
    ),
    "int-tensor": (
        lambda: _with(mlp((3, 2)).state_dict(), **{"0.mask": torch.ones(2, 3, dtype=torch.int64)}),
        r"'0.mask'.*torch.int64",
    ),
    "bool-tensor": (
        lambda: _with(mlp((3, 2)).state_dict(), **{"flag": torch.tensor(True)}),
        r"'flag'.*torch.bool",
    ),
    "leftover": (
        lambda: _with(mlp((3, 2)).state_dict(), temperature=torch.tensor(2.0)),
        r"'temperature' is not understood",
    ),
    "bias-only": (
        lambda: _with(mlp((3, 2)).state_dict(), **{"extra.bias": torch.zeros(2)}),
        r"'extra.bias' has no weight",
    ),
}


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals_name_the_key(tmp_path, case, suffix):
    make, match = REFUSALS[case]
    state = {k: v.detach().contiguous() for k, v in make().items()}
    path = tmp_path / f"bad{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    refused(path, match)


def test_truncated_and_corrupt_files(tmp_path):
    good = tmp_path / "good.safetensors"
    save_file(mlp((6, 8, 3)).state_dict(), str(good))
    data = good.read_bytes()
    for cut in (len(data) - 7, len(data) // 2, 20, 5):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(data[:cut])
        refused(bad, "truncated or not a valid safetensors file")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all" * 4)
    refused(garbage, "not a valid safetensors file")
    pt = tmp_path / "good.pt"
    torch.save(mlp((6, 8, 3)).state_dict(), pt)
    data = pt.read_bytes()
    for cut in (len(data) - 30, len(data) // 2, 10):
        bad = tmp_path / f"cut{cut}.pt"
        bad.write_bytes(data[:cut])
        assert refused(bad, "truncated or corrupt") == f"{bad}: {UNREADABLE_PT}"


def test_empty_and_missing_files(tmp_path):
    for suffix in (".safetensors", ".pt"):
        empty = tmp_path / f"empty{suffix}"
        empty.write_bytes(b"")
        refused(empty, r"empty \(0 bytes\)")
    no_tensors = tmp_path / "none.safetensors"
    save_file({}, str(no_tensors), metadata={"epoch": "1"})
    refused(no_tensors, "no weight tensors")
    only_counter = tmp_path / "counter.pt"
    torch.save({"0.num_batches_tracked": torch.tensor(5)}, only_counter)
    refused(only_counter, "no weight tensors")
    no_dict = tmp_path / "list.pt"
    torch.save([torch.randn(2, 2)], no_dict)
    refused(no_dict, "holds a list; expected a state dict")
    wrapped_nothing = tmp_path / "meta.pt"
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, wrapped_nothing)
    refused(wrapped_nothing, r"no tensors found \(top-level keys: 'epoch', 'optimizer'\)")
    refused(tmp_path / "missing.safetensors", "no such file")
    (tmp_path / "dir.pt").mkdir()
    refused(tmp_path / "dir.pt", "is a directory but holds no checkpoint tsens reads")
    other = tmp_path / "net.caffemodel"
    other.write_bytes(b"x")
    refused(other, "unknown checkpoint suffix '.caffemodel'")


class Malicious:
    """Unpickling this creates ``marker`` (through io.open)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("how", ["torch.save", "torch.save-legacy", "pickle"])
def test_malicious_pickle_is_not_executed(tmp_path, how):
    marker = tmp_path / "pwned"
    payload = {"0.weight": torch.randn(2, 3), "evil": Malicious(marker)}
    path = tmp_path / "evil.pt"
    if how == "pickle":
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=how == "torch.save")
    message = refused(path, "objects other than tensors")
    assert "(io.open)" in message  # the class or function it would have called
    assert "refuses to unpickle code" in message and "safetensors" in message
    assert not marker.exists()
    with pytest.raises(TsensError, match=r"objects other than tensors \(io\.open\)"):
        read_metadata(path)
    with pytest.raises(TsensError):
        read_checkpoint(path)
    assert not marker.exists()


def test_read_checkpoint_strips_and_keeps_dtype(tmp_path):
    state = {"model.0.weight": torch.randn(3, 2, dtype=torch.float32), "model.0.bias": torch.randn(3).half()}
    path = tmp_path / "raw.safetensors"
    save_file(state, str(path), metadata={"note": "x"})
    tensors, metadata = read_checkpoint(path)
    assert set(tensors) == {"0.weight", "0.bias"} and metadata == {"note": "x"}
    assert tensors["0.bias"].dtype == torch.float16
    net = load_network(path)
    assert net.dtype == F64 and net.depth == 1 and net.widths == (2, 3)


# --- unreadable torch files -------------------------------------------------------------------


def _zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buffer.getvalue()


def _saved(legacy: bool) -> bytes:
    buffer = io.BytesIO()
    torch.save(mlp((6, 8, 3)).state_dict(), buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


CORRUPT_PT = {
    "random-bytes": lambda: random.Random(0).randbytes(600),
    "random-bytes-2": lambda: random.Random(5).randbytes(64),
    "truncated-zip": lambda: _saved(False)[: len(_saved(False)) // 2],
    "zip-without-end": lambda: _saved(False)[:-22],
    "truncated-legacy": lambda: _saved(True)[:-40],
    "legacy-header-only": lambda: _saved(True)[:12],
    "text": lambda: b"epoch,loss\n1,0.5\n",
    "json": lambda: b'{"0.weight": [[1.0]]}',
    "empty-zip": lambda: _zip_bytes({}),
    "foreign-zip": lambda: _zip_bytes({"readme.txt": b"hello"}),
    "plain-pickle": lambda: pickle.dumps({"epoch": 3}),
}


@pytest.mark.parametrize("case", list(CORRUPT_PT))
def test_unreadable_torch_files_get_a_plain_message(tmp_path, case):
    path = tmp_path / f"{case}.pt"
    path.write_bytes(CORRUPT_PT[case]())
    with pytest.raises(TsensError) as loading:
        load_network(path)
    assert str(loading.value) == f"{path}: {UNREADABLE_PT}"
    with pytest.raises(TsensError) as reading:
        read_metadata(path)
    assert str(reading.value) == f"{path}: {UNREADABLE_PT}"


# --- metadata without the weights -------------------------------------------------------------


def test_read_metadata_equals_load_network_metadata(tmp_path):
    module = mlp((4, 6, 3), bn="affine", seed=5)
    safe = tmp_path / "a.safetensors"
    save_file(
        module.state_dict(), str(safe), metadata={"epoch": "7", "run": "r1", "tsens.activation": "relu"}
    )
    lightning = tmp_path / "epoch=3.ckpt"
    torch.save(
        {
            "epoch": 3,
            "global_step": 120,
            "state_dict": {f"model.{k}": v for k, v in module.state_dict().items()},
            "hyper_parameters": {"lr": 0.1, "widths": [4, 6, 3]},
            "optimizer_states": [{"state": {}}],
        },
        lightning,
    )
    plain = tmp_path / "plain.pt"
    torch.save(module.state_dict(), plain)
    legacy = tmp_path / "legacy.pth"
    torch.save(
        {"model_state_dict": module.state_dict(), "step": 11}, legacy, _use_new_zipfile_serialization=False
    )
    expected = {
        safe: {"epoch": "7", "run": "r1", "tsens.activation": "relu"},
        lightning: {"epoch": "3", "global_step": "120", "lr": "0.1", "widths": "[4, 6, 3]"},
        plain: {},
        legacy: {"step": "11"},
    }
    for path, metadata in expected.items():
        assert read_metadata(path) == load_network(path).metadata == metadata


def test_read_metadata_refuses_like_load_network(tmp_path):
    good = tmp_path / "good.safetensors"
    save_file(mlp((6, 8, 3)).state_dict(), str(good))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:5])
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    listed = tmp_path / "list.pt"
    torch.save([torch.randn(2, 2)], listed)
    for path in (tmp_path / "missing.pt", cut, empty, listed, tmp_path / "net.onnx"):
        if path.suffix == ".onnx":
            path.write_bytes(b"x")
        with pytest.raises(TsensError) as loading:
            load_network(path)
        with pytest.raises(TsensError) as reading:
            read_metadata(path)
        assert str(reading.value) == str(loading.value) and str(reading.value).startswith(f"{path}: ")


# --- metadata errors name the file ------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        (
            {"tsens.activation": "gelu"},
            "metadata 'tsens.activation' 'gelu' is not supported; expected one of",
        ),
        (
            {"tsens.activation": "leaky_relu:-3"},
            "metadata 'tsens.activation' 'leaky_relu:-3': the negative slope must lie in [0, 1), got -3",
        ),
        ({"tsens.activation": "relu:2"}, "metadata 'tsens.activation' 'relu:2': relu takes no parameter"),
        ({"tsens.bn_eps": "tiny"}, "metadata 'tsens.bn_eps' is 'tiny'; expected a positive number"),
        ({"tsens.bn_eps": "0"}, "metadata 'tsens.bn_eps' is '0'; expected a positive number"),
        ({"tsens.bn_eps": "nan"}, "metadata 'tsens.bn_eps' is 'nan'; expected a positive number"),
        ({"tsens.layers": "0,1,9"}, "metadata 'tsens.layers': layer '9' names no Linear or BatchNorm1d"),
        (
            {"tsens.layers": "0,1"},
            "metadata 'tsens.layers': key '3.weight' is not used by the layer order 0,1",
        ),
        ({"tsens.layers": "0,1,1,3"}, "metadata 'tsens.layers': layer '1' appears twice"),
    ],
)
def test_metadata_errors_start_with_the_path(tmp_path, metadata, message):
    path = tmp_path / "meta.safetensors"
    save_file(mlp((4, 5, 3), bn="affine").state_dict(), str(path), metadata=metadata)
    with pytest.raises(TsensError) as info:
        load_network(path)
    assert str(info.value).startswith(f"{path}: {message}")


def test_layers_parameter_errors_name_the_parameter(tmp_path):
    path = tmp_path / "n.safetensors"
    save_file(mlp((4, 5, 3)).state_dict(), str(path), metadata={"tsens.layers": "0,9"})
    with pytest.raises(TsensError) as info:
        load_network(path, layers=["0", "7"])  # the parameter wins over the metadata entry
    assert str(info.value).startswith(f"{path}: `layers`: layer '7' names no Linear")
    assert load_network(path, layers=["0", "2"]).widths == (4, 5, 3)


# --- activation specs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("leaky_relu:-3", "`activation` 'leaky_relu:-3': the negative slope must lie in [0, 1), got -3"),
        ("leaky_relu:1", "`activation` 'leaky_relu:1': the negative slope must lie in [0, 1), got 1"),
        ("leaky_relu:nan", "`activation` 'leaky_relu:nan': the negative slope must lie in [0, 1), got nan"),
        (
            "leaky_relu:abc",
            "`activation` 'leaky_relu:abc': the negative slope after ':' must be a number, got 'abc'",
        ),
        ("leaky_relu:", "`activation` 'leaky_relu:': the negative slope after ':' must be a number, got ''"),
        (
            "relu:2",
            "`activation` 'relu:2': relu takes no parameter (only leaky_relu does, e.g. leaky_relu:0.01)",
        ),
        (
            "gelu",
            "`activation` 'gelu' is not supported; expected one of relu, leaky_relu[:alpha], relu6, "
            "hardtanh, hardsigmoid (piecewise linear only)",
        ),
    ],
)
def test_activation_messages(spec, message):
    with pytest.raises(TsensError) as info:
        parse_activation(spec)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("spec", "name", "alpha"),
    [
        ("Leaky-ReLU:0.2", "leaky_relu", 0.2),
        (" leaky_relu : 0.05 ", "leaky_relu", 0.05),
        ("leaky_relu", "leaky_relu", 0.01),
        ("leaky_relu:0", "leaky_relu", 0.0),
        ("RELU6", "relu6", None),
        ("HardTanh", "hardtanh", None),
    ],
)
def test_activation_names_are_normalised(spec, name, alpha):
    act = parse_activation(spec)
    assert (act.name, act.alpha) == (name, alpha)
    assert parse_activation(act.spec) == act
