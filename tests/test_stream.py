"""The one streaming pass: measures by name, nothing unrequested, several sets, set-level totals."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from nets import ACTIVATIONS, random_network

import tsens.measures as measures_module
import tsens.stream as stream_module
from tsens.active_units import active_counts
from tsens.compute import Compute
from tsens.datasets import Dataset, Preprocess
from tsens.errors import OverflowWarning, TsensError
from tsens.jacobian import jacobian_norms, loss_relation
from tsens.measures import MEASURES, Options
from tsens.regions import boundary_distance, log_membership, path_scores, region_ids
from tsens.stream import measure, measure_sets
from tsens.tangent import tangent_norms
from tsens.trace import Tracer


def data(n: int = 30, d: int = 6, classes: int | None = 3, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = None if classes is None else rng.integers(0, classes, n)
    return Dataset(x, y, "memory", (d,), Preprocess())


F64 = Compute(dtype="float64", batch_size=7)


@settings(max_examples=20, deadline=None)
@given(
    widths=st.lists(st.integers(1, 6), min_size=3, max_size=5),
    act=st.sampled_from(ACTIVATIONS),
    bn=st.booleans(),
    seed=st.integers(0, 1000),
    batch=st.integers(1, 40),
)
def test_every_measure_equals_the_whole_set_traced_at_once(widths, act, bn, seed, batch):
    net = random_network((6, *widths[1:-1], 3), activation=act, batchnorm=bn, seed=seed, scale=1.5)
    ds = data(seed=seed)
    result = measure(net, ds, list(MEASURES), compute=Compute(dtype="float64", batch_size=batch))
    x = torch.from_numpy(ds.x)
    y = torch.from_numpy(ds.y)
    trace = Tracer(net, dtype=torch.float64)(x)
    cols = result.columns
    assert np.array_equal(cols["sample"], np.arange(30))
    expected = {
        **{k: v.numpy() for k, v in jacobian_norms(trace, y).items()},
        "tangent_fro": tangent_norms(trace, "sum").numpy(),
        "log_membership": log_membership(trace).numpy(),
        "boundary_distance": boundary_distance(trace)[0].numpy(),
        "path_score": path_scores(trace, log_membership(trace)).numpy(),
    }
    for name, values in expected.items():
        # Batching changes BLAS kernels, so a value with cancellation (a pre-activation near 0)
        # differs by a few ulp of its terms: relative 1e-9 with an absolute floor.
        assert np.allclose(cols[name], values, rtol=1e-9, atol=1e-12, equal_nan=True), name
    assert np.array_equal(cols["region"], region_ids(trace))
    counts = active_counts(trace).numpy()
    assert np.array_equal(cols["active_total"], counts.sum(1))
    log_probs = torch.log_softmax(trace.logits, 1)
    assert np.allclose(cols["loss"], -log_probs[torch.arange(30), y].numpy(), rtol=1e-9, atol=1e-12)
    assert np.allclose(cols["entropy"], -(log_probs.exp() * log_probs).sum(1).numpy(), rtol=1e-9, atol=1e-12)
    relation = loss_relation(torch.from_numpy(cols["loss"]), torch.from_numpy(cols["jac_logit_fro"]), 3)
    assert np.allclose(cols["jac_prob_eq7"], relation["jac_prob_eq7"].numpy(), rtol=1e-9, atol=1e-12)
    # The per-unit totals count, over samples, the units on each piece.
    for code, totals in zip(trace.codes, result.unit_totals, strict=True):
        pieces = net.activation.num_pieces
        assert np.array_equal(totals, torch.nn.functional.one_hot(code.long(), pieces).sum(0).numpy())


def _refuse(name):
    def fail(*args, **kwargs):
        raise AssertionError(f"{name} was computed but not requested")

    return fail


def test_nothing_unrequested_is_computed(monkeypatch):
    net = random_network((6, 5, 4, 3), seed=1)
    monkeypatch.setattr(measures_module, "tangent_norms", _refuse("tangent"))
    monkeypatch.setattr(measures_module, "boundary_distance", _refuse("boundary distance"))
    monkeypatch.setattr(measures_module, "jacobian_norms", _refuse("jacobian"))
    monkeypatch.setattr(measures_module, "region_ids", _refuse("region ids"))
    monkeypatch.setitem(measures_module.MEASURES, "predictions", _refuse("predictions"))
    monkeypatch.setattr(stream_module, "unit_piece_totals", _refuse("unit totals"))
    result = measure(net, data(), ["path_score"], compute=F64)
    assert set(result.columns) == {"sample", "path_score"}  # membership computed, not returned
    assert result.unit_totals is None


def test_several_sets_share_one_prepared_network(monkeypatch):
    built = []
    original = stream_module.Tracer

    def counting(*args, **kwargs):
        built.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(stream_module, "Tracer", counting)
    net = random_network((6, 5, 3), seed=2)
    results = measure_sets(
        net, {"train": data(seed=1), "test": data(n=11, classes=None, seed=2)}, ["predictions"]
    )
    assert len(built) == 1
    assert results["train"].labelled and not results["test"].labelled
    assert len(results["test"].columns["predicted"]) == 11


def test_sample_column_holds_the_original_indices():
    ds = data(n=50)
    ds = Dataset(ds.x[[3, 7, 9]], ds.y[[3, 7, 9]], "memory", (6,), Preprocess(), indices=np.array([3, 7, 9]))
    result = measure(random_network((6, 4, 3), seed=0), ds, ["predictions"], compute=F64)
    assert result.columns["sample"].tolist() == [3, 7, 9]


def test_measure_names_and_options_are_checked():
    net = random_network((6, 4, 3), seed=0)
    with pytest.raises(TsensError, match="`measures`: unknown \\['bogus'\\]"):
        measure(net, data(), ["bogus"])
    with pytest.raises(TsensError, match="`reading` 'most'"):
        Options(reading="most")
    with pytest.raises(TsensError, match="`temperature` must be a positive finite number, got nan"):
        Options(temperature=math.nan)
    with pytest.raises(TsensError, match="`membership` 'soft'"):
        Options(membership="soft")


def test_a_network_without_hidden_layers_refuses_hidden_unit_measures():
    linear = random_network((6, 3), seed=0)
    with pytest.raises(TsensError, match="no hidden layer: active, region do not apply"):
        measure(linear, data(), ["active", "region", "jacobian"])
    result = measure(linear, data(), ["jacobian", "tangent"], compute=F64)  # these apply
    assert np.all(np.isfinite(result.columns["tangent_fro"]))


def test_overflow_warns_once_per_column_naming_the_checkpoint():
    net = random_network((6, 8, 8, 3), seed=0, scale=1e13).to(dtype=torch.float32)
    net = type(net)(net.layers, net.activation, path="huge.safetensors")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        measure(net, data(), ["predictions", "jacobian", "tangent"], compute=Compute(dtype="float32"))
    texts = [str(w.message) for w in caught if issubclass(w.category, OverflowWarning)]
    assert texts and all(t.startswith("huge.safetensors (data): ") for t in texts)
    columns = [t.split(": ")[1].split(" is inf")[0] for t in texts]
    assert len(columns) == len(set(columns))  # one per column
    assert {"jac_logit_fro", "tangent_fro", "jac_prob_eq7", "jac_true_lower"} <= set(columns)
