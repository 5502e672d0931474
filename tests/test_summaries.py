"""Set-level statistics against independent computations: describe, Spearman, each command's row."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from nets import random_network
from scipy import stats

from tsens.compute import Compute
from tsens.datasets import Dataset, Preprocess
from tsens.regions import membership_weighted_mean
from tsens.stream import measure, measure_sets
from tsens.summaries import (
    activations_summary,
    describe,
    jacobian_summary,
    quantile,
    regions_summary,
    spearman,
    unit_frequencies,
)

F64 = Compute(dtype="float64", batch_size=16)


def data(n=60, d=5, classes=3, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return Dataset(scale * rng.normal(size=(n, d)), rng.integers(0, classes, n), "memory", (d,), Preprocess())


def test_describe_matches_numpy_on_finite_values():
    v = np.random.default_rng(0).normal(size=101)
    d = describe(v)
    assert d["mean"] == pytest.approx(v.mean())
    for key, q in (("q05", 0.05), ("q25", 0.25), ("median", 0.5), ("q75", 0.75), ("q95", 0.95)):
        assert d[key] == pytest.approx(np.quantile(v, q))


def test_describe_keeps_infinity_and_drops_nan():
    v = np.array([1.0, 2.0, np.inf, np.inf, np.nan])
    d = describe(v)
    assert d["mean"] == math.inf  # shown as inf, never hidden
    assert d["q05"] == pytest.approx(1.0 + 0.05 * 3 * 1.0)  # 4 values: position 0.15 between 1 and 2
    assert d["q95"] == math.inf and d["median"] == math.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert all(math.isnan(x) for x in describe(np.array([np.nan])).values())
        assert math.isnan(quantile(np.array([]), 0.5))


def test_spearman_is_nan_without_warning_for_constant_input():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(spearman(np.zeros(10), np.arange(10.0)))
        assert math.isnan(spearman(np.arange(2.0), np.arange(2.0)))
    a, b = np.random.default_rng(1).normal(size=(2, 40))
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic)


def test_jacobian_summary_from_the_columns():
    net = random_network((5, 7, 6, 3), seed=3)
    result = measure(net, data(), ["predictions", "jacobian", "tangent"], compute=F64)
    row = jacobian_summary(result)
    cols = result.columns
    assert row["samples"] == 60 and row["set"] == "data"
    assert row["jac_prob_fro_median"] == pytest.approx(np.median(cols["jac_prob_fro"]))
    assert row["tangent_fro_mean"] == pytest.approx(cols["tangent_fro"].mean())
    assert row["loss_mean"] == pytest.approx(cols["loss"].mean())
    assert row["accuracy"] == pytest.approx(cols["correct"].mean())
    rho = stats.spearmanr(cols["jac_logit_fro"], cols["loss"]).statistic
    assert row["spearman_jac_logit_fro_loss"] == pytest.approx(rho)
    ratio = cols["jac_prob_fro"] / cols["jac_prob_eq7"]
    assert row["eq7_median_ratio"] == pytest.approx(np.median(ratio[cols["jac_prob_eq7"] > 0]))
    assert 0 <= row["eq5_inside_share"] <= 1


def test_dead_network_summary_has_no_warnings_and_no_infinite_gap():
    net = random_network((5, 4, 3), seed=0)
    layers = (net.layers[0].__class__(net.layers[0].weight * 0, net.layers[0].bias * 0 - 1), net.layers[1])
    dead = type(net)(layers, net.activation)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = measure(dead, data(), ["predictions", "jacobian", "tangent", "active"], compute=F64)
        row = jacobian_summary(result)
        act = activations_summary(result)
    assert row["jac_prob_fro_mean"] == 0 and math.isnan(row["spearman_jac_prob_fro_loss"])
    assert act["dead_l1"] == 4 and act["always_on_l1"] == 0


def test_activations_summary_and_unit_frequencies():
    net = random_network((5, 6, 4, 3), seed=4, activation="hardtanh", scale=3.0)
    result = measure(net, data(), ["active"], compute=F64)
    row = activations_summary(result)
    cols = result.columns
    x = cols["active_l2"].astype(float)
    assert row["active_l2_mean"] == pytest.approx(x.mean())
    assert row["active_l2_variance"] == pytest.approx(x.var(ddof=1))
    freq = unit_frequencies(result)
    assert len(freq["layer"]) == 6 + 4
    per_layer = [freq["active_frequency"][freq["layer"] == l] for l in (1, 2)]
    for l, f in enumerate(per_layer, 1):
        # The mean count of a layer is the sum of its units' active frequencies.
        assert cols[f"active_l{l}"].mean() == pytest.approx(f.sum())
        assert row[f"dead_l{l}"] == int((f == 0).sum()) and row[f"always_on_l{l}"] == int((f == 1).sum())
    assert {"piece0_frequency", "piece2_frequency"} <= set(freq)


def test_regions_summary_shares_and_s_emp():
    net = random_network((5, 3, 3), seed=5)
    train, test = data(seed=1), data(n=20, seed=2)
    results = measure_sets(
        net, {"train": train, "test": test}, ["region", "membership", "boundary", "tangent"]
    )
    rows = regions_summary(results)
    assert [r["set"] for r in rows] == ["train", "test"] and "shared_region_share" not in rows[0]
    train_ids = set(results["train"].columns["region"].tolist())
    share = np.mean([i in train_ids for i in results["test"].columns["region"].tolist()])
    assert rows[1]["shared_region_share"] == pytest.approx(share)
    cols = results["train"].columns
    assert rows[0]["s_emp"] == pytest.approx(
        membership_weighted_mean(cols["log_membership"], cols["tangent_fro"])
    )
    assert rows[0]["regions"] == len(train_ids)
