"""The shipped zoo: tsens reproduces the loss and accuracy the training script recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

import tsens

ZOO = sorted(
    p
    for p in (Path(__file__).parents[1] / "sample_checkpoints").glob("*/*")
    if p.suffix in {".safetensors", ".pt"}
)


def test_zoo_is_there():
    assert len(ZOO) == 36


@pytest.mark.parametrize("path", ZOO[::3], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recorded_test_metrics_are_reproduced(path):
    # The training script measured these with its own nn.Module; tsens must apply the
    # checkpoint's recorded preprocessing by itself to agree.
    net = tsens.load_network(path)
    data = tsens.load_dataset(net.metadata["test_dataset"])
    cols = tsens.measure(net, data, ["predictions"], compute=tsens.Compute(dtype="float64")).columns
    assert cols["loss"].mean() == pytest.approx(float(net.metadata["test_loss"]), abs=5e-6)
    assert cols["correct"].mean() == pytest.approx(float(net.metadata["test_acc"]), abs=5e-6)
