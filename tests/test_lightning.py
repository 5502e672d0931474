"""Lightning checkpoints written by the real packages (``scripts/checkpoint_formats/
make_lightning.py``: lightning 2.6 and pytorch_lightning 1.9, plus the older layout that pickles
``AttributeDict`` hyper-parameters and keys callback states by class, in zip and legacy
serialization), and the inert placeholders that stand in for pickled classes tsens does not
know: they load when they sit outside the weights, and are never imported nor called."""

from __future__ import annotations

import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from clitools import one_line_error, run
from torch import nn

from tsens.checkpoints import load_network, read_metadata
from tsens.errors import TsensError

SAMPLES = Path(__file__).parent / "data" / "formats" / "lightning"
FILES = sorted(SAMPLES.glob("*.ckpt"))


def test_every_generation_is_committed():
    names = {p.stem for p in FILES}
    assert {"lightning2", "pl1", "pl1-attributedict", "pl1-attributedict-legacy"} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_real_lightning_checkpoints_load_exactly(path):
    reference = np.load(path.with_suffix(".npz"))
    net = load_network(path)
    assert [layer.name for layer in net.layers] == ["0", "3", "6"]
    assert net.layers[0].norm is not None and net.layers[1].norm is not None
    out = net.forward(torch.from_numpy(reference["x"]))
    np.testing.assert_allclose(out.numpy(), reference["y"], rtol=1e-12, atol=1e-12)
    meta = net.metadata
    assert meta["epoch"] == "1" and meta["global_step"] == "8"
    assert meta["widths"] == "[5, 8, 7, 3]"
    # the Namespace hyper-parameter (and AttributeDict ones) are read as plain dicts
    assert meta["hparams_ns"] == '{"lr": 0.05, "width": 8, "activation": "relu"}'
    assert read_metadata(path) == meta


def test_old_layout_really_pickles_lightning_classes():
    """The committed old-layout files do hold the classes the placeholders stand in for."""
    path = SAMPLES / "pl1-attributedict.ckpt"
    names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    assert "pytorch_lightning.utilities.parsing.AttributeDict" in names
    assert any(n.startswith("pytorch_lightning.callbacks.") for n in names)
    assert b"pytorch_lightning" in (SAMPLES / "pl1-attributedict-legacy.ckpt").read_bytes()


MARKER = Path(os.environ.get("TMPDIR", "/tmp")) / "tsens-placeholder-called"


class Loud:
    """Creates MARKER when constructed, unpickled or given state: a stand-in must never call it."""

    def __init__(self, value: int = 0) -> None:
        MARKER.write_text("init")
        self.value = value

    def __reduce__(self):
        return (Loud, (self.value,), {"value": self.value})

    def __setstate__(self, state: dict) -> None:
        MARKER.write_text("setstate")


def _state(seed: int = 0) -> tuple[nn.Sequential, dict]:
    torch.manual_seed(seed)
    module = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2)).double().eval()
    return module, {f"model.{k}": v for k, v in module.state_dict().items()}


@pytest.mark.parametrize("zip_format", [True, False])
def test_unknown_classes_outside_the_weights_are_never_called(tmp_path, zip_format):
    module, state = _state()
    ckpt = {
        "state_dict": state,
        "epoch": 4,
        "callbacks": {Loud: {"best": torch.tensor(0.5)}},  # a class as a key, as old Lightning did
        "hyper_parameters": {"thing": Loud(3)},
    }
    path = tmp_path / "loud.ckpt"
    torch.save(ckpt, path, _use_new_zipfile_serialization=zip_format)
    MARKER.unlink()  # Loud(3) above created it
    net = load_network(path)
    x = torch.randn(6, 4, dtype=torch.float64)
    torch.testing.assert_close(net.forward(x), module(x).detach(), rtol=1e-12, atol=1e-12)
    assert net.metadata["epoch"] == "4"
    assert net.metadata["thing"] == '"<test_lightning.Loud>"'  # the placeholder, by name
    assert not MARKER.exists()


def test_a_whole_pickled_module_is_refused_by_name(tmp_path):
    module, _ = _state()
    whole = tmp_path / "whole.pt"
    torch.save(module, whole)
    with pytest.raises(TsensError, match=r"pickles a whole torch\.nn\.modules\.container\.Sequential object"):
        load_network(whole)
    under_key = tmp_path / "under_key.ckpt"
    torch.save({"model": module, "epoch": 1}, under_key)
    with pytest.raises(TsensError, match=r"key 'model' holds a whole torch\.nn\.modules\.container"):
        load_network(under_key)
    one_line_error(run("info", whole, code=2), str(whole), "state_dict()")


@pytest.mark.parametrize(
    ("payload", "name"),
    [
        (subprocess.Popen, "commands.Popen"),  # a class of a module that runs code
        (os.system, "posix.system"),  # a function
        (pickle.loads, "pickle.loads"),
    ],
)
def test_code_is_refused_not_stood_in_for(tmp_path, payload, name):
    _, state = _state()
    path = tmp_path / "code.ckpt"
    torch.save({"state_dict": state, "hook": payload}, path)
    with pytest.raises(TsensError, match=rf"objects other than tensors \({name}\)"):
        load_network(path)
    with pytest.raises(TsensError, match=rf"\({name}\)"):
        read_metadata(path)
