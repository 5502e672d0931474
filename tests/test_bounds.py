"""Bounds of SPEC §2.3–2.4 against the exact ‖T(x)‖_F and ‖J_logit(x)‖_F (tsens.tangent,
tsens.jacobian, and the torch.func oracles of tests/nets.py), float64."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from nets import ACTIVATIONS, autograd_jacobian, autograd_tangent_sqnorm, random_network
from scipy import stats

from tsens.bounds import (
    data_free_bounds,
    gaussian_bounds,
    log10_w,
    measure_for_bounds,
    report,
    weight_statistics,
)
from tsens.choices import BOUNDS
from tsens.cli.thresholds import bound_columns
from tsens.compute import Compute
from tsens.datasets import Dataset
from tsens.errors import TsensError
from tsens.jacobian import reduced_jacobian
from tsens.measures import Options
from tsens.network import BatchNorm, Layer, Network
from tsens.stream import measure
from tsens.tangent import tangent_norms
from tsens.trace import Trace, Tracer

TOL = math.log10(1 + 1e-9)  # 1e-9 relative, in decades
BN_MODES = [False, True, "affine-false", "all"]

networks = st.builds(
    lambda widths, bias, bn, act, seed, scale: random_network(
        tuple(widths), bias=bias, batchnorm=bn, activation=act, seed=seed, scale=scale
    ),
    widths=st.lists(st.integers(1, 8), min_size=2, max_size=6),
    bias=st.booleans(),
    bn=st.sampled_from(BN_MODES),
    act=st.sampled_from(ACTIVATIONS),
    seed=st.integers(0, 10_000),
    scale=st.sampled_from([0.3, 1.0, 2.5]),
)


def log10_max(values: torch.Tensor) -> float:
    top = float(values.max())
    return math.log10(top) if top > 0 else -math.inf


def exact(trace: Trace, reading: str) -> tuple[float, float]:
    """log10 of the largest ‖T‖_F and ‖J_logit‖_F over the batch."""
    jac = reduced_jacobian(trace).square().sum((1, 2)).sqrt()
    return log10_max(tangent_norms(trace, reading)), log10_max(jac)


def with_slopes(tracer: Tracer, x: torch.Tensor, slopes: list[torch.Tensor]) -> Trace:
    """A fresh trace of x whose slope matrices D_l are replaced (any |φ'| <= 1 must be bounded)."""
    trace = tracer(x)
    trace.slopes = slopes  # overrides the cached property: any slopes in [-1, 1]
    return trace


def assert_bounded(network: Network, traces: list[Trace], reading: str) -> None:
    b = data_free_bounds(network, reading)
    for trace in traces:
        t, j = exact(trace, reading)
        for name in BOUNDS:
            assert t <= b.tangent[name] + TOL, (name, t, b.tangent)
            assert j <= b.jacobian[name] + TOL, (name, j, b.jacobian)
    assert b.tangent["path"] <= b.tangent["paper"] + TOL
    assert b.jacobian["path"] <= b.jacobian["paper"] + TOL


def map_layers(network: Network, fn) -> Network:
    return dataclasses.replace(network, layers=tuple(fn(i, layer) for i, layer in enumerate(network.layers)))


@settings(max_examples=60, deadline=None)
@given(networks, st.sampled_from(["sum", "all"]), st.integers(0, 1000))
def test_bounds_hold_at_random_inputs_and_every_slope_pattern(network, reading, seed):
    g = torch.Generator().manual_seed(seed)
    tracer = Tracer(network, dtype=torch.float64)
    x = 3 * torch.randn(32, network.input_dim, generator=g, dtype=torch.float64)
    shapes = [(32, w) for w in network.hidden_widths]
    patterns = [
        [torch.ones(s, dtype=torch.float64) for s in shapes],  # every unit active with slope 1
        [torch.randint(0, 2, s, generator=g).double() for s in shapes],
        [2 * torch.rand(s, generator=g, dtype=torch.float64) - 1 for s in shapes],
    ]
    traces = [tracer(x), tracer(40 * x), *(with_slopes(tracer, x, p) for p in patterns)]
    assert_bounded(network, traces, reading)


@settings(max_examples=6, deadline=None)
@given(
    st.lists(st.integers(1, 4), min_size=2, max_size=4),
    st.sampled_from(BN_MODES),
    st.sampled_from(ACTIVATIONS),
    st.integers(0, 1000),
)
def test_bounds_hold_against_autograd_oracles(widths, bn, act, seed):
    net = random_network(tuple(widths), batchnorm=bn, activation=act, seed=seed, scale=2.0)
    x = 2 * torch.randn(3, net.input_dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    for reading in ("sum", "all"):
        b = data_free_bounds(net, reading)
        t = log10_max(autograd_tangent_sqnorm(net, x, reading).sqrt())
        assert all(t <= b.tangent[k] + TOL for k in BOUNDS)
    j = log10_max(autograd_jacobian(net, x).flatten(1).norm(dim=1))
    assert all(j <= b.jacobian[k] + TOL for k in BOUNDS)


def all_active(network: Network, c: float = 0.01) -> Network:
    """Non-negative weights and biases, γ > 0, μ <= 0, β >= 0, all scaled small: every unit of
    every activation sits on its largest-slope piece for small positive inputs."""

    def fix(i: int, layer: Layer) -> Layer:
        norm = layer.norm
        if norm is not None:
            norm = dataclasses.replace(
                norm,
                running_mean=-c * norm.running_mean.abs(),
                weight=None if norm.weight is None else norm.weight.abs(),
                bias=None if norm.bias is None else c * norm.bias.abs(),
            )
        bias = None if layer.bias is None else c * layer.bias.abs()
        return dataclasses.replace(layer, weight=c * layer.weight.abs(), bias=bias, norm=norm)

    return map_layers(network, fix)


@settings(max_examples=40, deadline=None)
@given(networks, st.integers(0, 1000))
def test_all_active_inputs_bounded_and_path_bound_exact(network, seed):
    net = all_active(network)
    x = 0.01 * torch.rand(
        16, net.input_dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    trace = Tracer(net, dtype=torch.float64)(x)
    active = net.activation.active_code
    assert all(bool((code == active).all()) for code in trace.codes)  # really every unit active
    for reading in ("sum", "all"):
        assert_bounded(net, [trace], reading)
    if max(net.activation.slopes) == 1.0:  # non-negative chain, all slopes 1: |G| = U, |A| = V
        b = data_free_bounds(net, "all")
        t, j = exact(trace, "all")
        assert abs(b.tangent["path"] - t) < 1e-9
        assert abs(b.jacobian["path"] - j) < 1e-9


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.integers(1, 6), min_size=2, max_size=6),
    st.floats(0.1, 3.0),
    st.booleans(),
    st.sampled_from(["sum", "all"]),
)
def test_every_bound_is_tight_for_constant_weights(widths, c, bias, reading):
    # W_l = c·1: every path carries c^{L−1} (Thm 3.1's equality case) and rank-1 matrices have
    # equal Frobenius and spectral norms, so paper = path = spectral = exact. The sum reading's
    # sqrt(n) is tight only for one output (the last layer's T_c are orthogonal).
    if reading == "sum":
        widths = [*widths[:-1], 1]
    layers = tuple(
        Layer(
            torch.full((o, i), c, dtype=torch.float64),
            torch.full((o,), 0.5, dtype=torch.float64) if bias else None,
        )
        for i, o in zip(widths, widths[1:], strict=False)
    )
    net = Network(layers)
    trace = Tracer(net, dtype=torch.float64)(torch.rand(4, widths[0], dtype=torch.float64) + 0.1)
    b = data_free_bounds(net, reading)
    t, j = exact(trace, reading)
    for name in BOUNDS:
        assert abs(b.tangent[name] - t) < 1e-9
        assert abs(b.jacobian[name] - j) < 1e-9


@settings(max_examples=40, deadline=None)
@given(networks.filter(lambda n: not n.has_batchnorm), st.floats(0.05, 20.0))
def test_bounds_are_homogeneous_in_the_weights(network, c):
    scaled = map_layers(network, lambda i, layer: dataclasses.replace(layer, weight=c * layer.weight))
    depth = network.depth
    for reading in ("sum", "all"):
        before, after = data_free_bounds(network, reading), data_free_bounds(scaled, reading)
        for name in BOUNDS:
            assert after.tangent[name] == pytest.approx(before.tangent[name] + (depth - 1) * math.log10(c))
            assert after.jacobian[name] == pytest.approx(before.jacobian[name] + depth * math.log10(c))


def permute_hidden(network: Network, seed: int) -> Network:
    """Permute every hidden layer's units: rows of W_l, b_l and BN parameters, columns of W_{l+1}."""
    g = torch.Generator().manual_seed(seed)
    perms = [torch.randperm(h, generator=g) for h in network.hidden_widths]

    def fix(i: int, layer: Layer) -> Layer:
        rows = perms[i] if i < len(perms) else slice(None)
        cols = perms[i - 1] if i > 0 else slice(None)
        norm = layer.norm
        if norm is not None:
            norm = BatchNorm(
                norm.running_mean[rows],
                norm.running_var[rows],
                norm.eps,
                None if norm.weight is None else norm.weight[rows],
                None if norm.bias is None else norm.bias[rows],
            )
        bias = None if layer.bias is None else layer.bias[rows]
        return Layer(layer.weight[rows][:, cols], bias, norm, layer.name)

    return map_layers(network, fix)


@settings(max_examples=40, deadline=None)
@given(networks, st.integers(0, 1000))
def test_bounds_are_invariant_to_permuting_hidden_units(network, seed):
    permuted = permute_hidden(network, seed)
    x = torch.randn(8, network.input_dim, dtype=torch.float64)
    assert torch.allclose(network(x), permuted(x))  # the same function
    for reading in ("sum", "all"):
        a, b = data_free_bounds(network, reading), data_free_bounds(permuted, reading)
        for name in BOUNDS:
            assert b.tangent[name] == pytest.approx(a.tangent[name], abs=1e-9)
            assert b.jacobian[name] == pytest.approx(a.jacobian[name], abs=1e-9)
        ga, gb = (
            gaussian_bounds(network, 5.0, 2.0, reading)[0],
            gaussian_bounds(permuted, 5.0, 2.0, reading)[0],
        )
        assert gb["gauss"] == pytest.approx(ga["gauss"], abs=1e-9)
        assert gb["gauss_paper"] == pytest.approx(ga["gauss_paper"], abs=1e-9, nan_ok=True)


def test_one_hidden_layer_by_hand():
    w1 = [[1.0, -2.0], [0.5, 3.0], [-1.0, 1.0]]  # h = 3, d = 2, m_1 = 3
    w2 = [[2.0, -1.0, 0.5], [0.0, 1.0, -2.5]]  # n = 2, m_2 = 2.5
    net = Network(tuple(Layer(torch.tensor(w, dtype=torch.float64)) for w in (w1, w2)))
    n, d, h = 2, 2, 3
    # paper: Q_1 = n·d·1·h with entries <= m_2, Q_2 = n·d·h·1 with entries <= m_1, N_k = 1.
    paper = math.sqrt(n * d * h * 2.5**2 + n * d * h * 3.0**2)
    # path: ||U_1||_F² ||V_1||_F² + ||U_2||_F² ||V_2||_F² = ||W_2||_F² d + n ||W_1||_F².
    fro1, fro2 = (1 + 4 + 0.25 + 9 + 1 + 1) ** 0.5, (4 + 1 + 0.25 + 1 + 6.25) ** 0.5
    path = math.sqrt(fro2**2 * d + n * fro1**2)
    s1, s2 = np.linalg.norm(np.array(w1), 2), np.linalg.norm(np.array(w2), 2)
    spectral = math.sqrt(d * min(fro2, math.sqrt(n) * s2) ** 2 + n * min(fro1, math.sqrt(d) * s1) ** 2)
    # |W_2||W_1| = [[3, 7.5], [3, 5.5]]; J paper = sqrt(nd) · h · m_1 m_2.
    jac = {
        "paper": math.sqrt(n * d) * h * 3.0 * 2.5,
        "path": math.sqrt(9 + 56.25 + 9 + 30.25),
        "spectral": min(fro2 * s1, s2 * fro1, math.sqrt(n) * s2 * s1, math.sqrt(d) * s2 * s1),
    }
    for reading, factor in (("all", 1.0), ("sum", math.sqrt(n))):
        b = data_free_bounds(net, reading)
        assert b.tangent["paper"] == pytest.approx(math.log10(factor * paper), abs=1e-12)
        assert b.tangent["path"] == pytest.approx(math.log10(factor * path), abs=1e-12)
        assert b.tangent["spectral"] == pytest.approx(math.log10(factor * spectral), abs=1e-12)
        for name, value in jac.items():
            assert b.jacobian[name] == pytest.approx(math.log10(value), abs=1e-12)
        assert b.tightest_tangent in ("path", "spectral")


def test_raw_weights_of_batchnorm_nets_fall_below_the_measured_value():
    # BN with a tiny running variance multiplies by ~100: bounds of the raw Linear weights
    # (BN dropped) fall far below ‖T‖, the folded bounds stay above (SPEC §2.3).
    net = random_network((3, 4, 4, 2), batchnorm=True, seed=1)
    net = map_layers(
        net,
        lambda i, layer: (
            layer
            if layer.norm is None
            else dataclasses.replace(
                layer, norm=dataclasses.replace(layer.norm, running_var=1e-4 + 0 * layer.norm.running_var)
            )
        ),
    )
    raw = map_layers(net, lambda i, layer: dataclasses.replace(layer, norm=None))
    tracer = Tracer(net, dtype=torch.float64)
    x = torch.randn(16, 3, dtype=torch.float64)
    trace = with_slopes(tracer, x, [torch.ones(16, h, dtype=torch.float64) for h in net.hidden_widths])
    t, _ = exact(trace, "sum")
    assert data_free_bounds(raw, "sum").tangent["path"] < t - 2
    assert_bounded(net, [trace, tracer(x)], "sum")


def test_gaussian_bounds():
    net = random_network((5, 4, 3, 2), seed=3)  # L = 3, k = 2 hidden layers
    paper = data_free_bounds(net, "all").tangent["paper"]
    # N = 7 always (every unit active): (N/(L−1))^{L−1} = 12.25 >= 4·3 >= N_k, so gauss >= paper.
    assert gaussian_bounds(net, 7.0, 0.0, "all")[0]["gauss"] >= paper
    # gauss_paper = H · w^{k−1} · E|N|^{k−1} / (sqrt(π) k^k) with E|N| in closed form.
    mu, sigma = 4.0, 1.5
    abs_mean = sigma * math.sqrt(2 / math.pi) * math.exp(-(mu**2) / (2 * sigma**2)) + mu * (
        1 - 2 * stats.norm.cdf(-mu / sigma)
    )
    w = math.prod(float(layer.weight.abs().max()) for layer in net.layers)
    expected = 4 * w * abs_mean / (math.sqrt(math.pi) * 4)
    gauss, terms = gaussian_bounds(net, mu, sigma, "sum")
    assert gauss["gauss_paper"] == pytest.approx(math.log10(expected), abs=1e-12)
    assert gaussian_bounds(net, mu, sigma, "all")[0]["gauss_paper"] == gauss["gauss_paper"]
    # gauss = paper with the path counts replaced: per-layer terms combine to the total.
    assert 0.5 * math.log10(sum(100.0**t for t in terms)) == pytest.approx(gauss["gauss"])
    # No hidden layer: no path counts to replace, and the author's form is undefined.
    linear = random_network((4, 3), seed=0)
    g, _ = gaussian_bounds(linear, 0.0, 0.0)
    assert g["gauss"] == pytest.approx(data_free_bounds(linear).tangent["paper"])
    assert math.isnan(g["gauss_paper"])


def test_deep_networks_stay_finite_in_log_space():
    for scale, sign in ((30.0, 1), (1e-3, -1)):
        net = random_network((6, *[5] * 199, 3), seed=0, scale=scale)
        b = data_free_bounds(net)
        values = [*b.tangent.values(), *b.jacobian.values()]
        assert all(math.isfinite(v) and sign * v > 308 for v in values)
    with pytest.raises(TsensError, match="E\\|N\\|"):
        gaussian_bounds(random_network((2, *[2] * 300, 2)), 10.0, 1.0)


def test_zero_layer_gives_minus_infinity():
    net = random_network((3, 4, 2), seed=0)
    net = map_layers(
        net, lambda i, layer: dataclasses.replace(layer, weight=0 * layer.weight) if i == 1 else layer
    )
    b = data_free_bounds(net)
    assert b.jacobian == {k: -math.inf for k in BOUNDS}
    assert all(math.isfinite(v) for v in b.tangent.values())  # W_2's own gradient still moves


def test_nan_weights_are_a_user_error():
    net = random_network((3, 4, 2), seed=0)
    bad = map_layers(net, lambda i, layer: dataclasses.replace(layer, weight=layer.weight * math.nan))
    with pytest.raises(TsensError, match="NaN"):
        data_free_bounds(bad)


def test_weight_statistics_and_w():
    net = random_network((3, 4, 2), batchnorm=True, seed=0)
    s = weight_statistics(net)
    w1 = net.layers[0].weight
    assert s["max_abs"][0] == pytest.approx(float(w1.abs().max()))
    assert s["spectral"][0] == pytest.approx(float(torch.linalg.matrix_norm(w1, 2)))
    assert s["folded_fro"][0] == pytest.approx(float(net.layers[0].folded_weight.norm()))
    assert s["bn_scale_max"] == [pytest.approx(float(net.layers[0].scale.abs().max())), None]
    assert log10_w(net) == pytest.approx(math.log10(math.prod(s["max_abs"])))


def test_measure_is_one_pass_of_the_per_sample_measures():
    net = random_network((6, 5, 4, 3), batchnorm=True, activation="relu6", seed=2)
    x = np.random.default_rng(0).normal(size=(50, 6))
    ds = Dataset(x, None, "memory", (6,))
    compute = Compute(dtype="float64", batch_size=7)
    m = measure_for_bounds(net, ds, reading="all", compute=compute)
    cols = measure(
        net, ds, ["jacobian", "tangent", "active"], options=Options(reading="all"), compute=compute
    ).columns
    trace = Tracer(net, dtype=torch.float64)(torch.from_numpy(x))
    assert m.samples == 50
    assert m.tangent_max == pytest.approx(float(tangent_norms(trace, "all").max()), rel=1e-12)
    # ‖J_logit‖_F by autograd, independently of the closed form.
    jac = autograd_jacobian(net, torch.from_numpy(x))
    assert m.jacobian_mean == pytest.approx(float(jac.flatten(1).norm(dim=1).mean()), rel=1e-9)
    total = cols["active_total"].astype(float)
    assert m.active_mean == pytest.approx(total.mean())
    assert m.active_std == pytest.approx(np.sqrt(((total - total.mean()) ** 2).mean()))  # ddof = 0
    assert m.layer_active_mean == pytest.approx((cols["active_l1"].mean(), cols["active_l2"].mean()))
    rep = report(net, reading="all", dataset=ds, compute=compute)
    row = rep.row()
    assert row["log10_tangent_gauss"] == gaussian_bounds(net, m.active_mean, m.active_std, "all")[0]["gauss"]
    assert row["log10_tangent_measured_max"] <= row["log10_tangent_path"]
    assert set(bound_columns(True)) <= set(row)
    layers = rep.layer_rows()
    assert layers["active_mean"][-1] is None and len(layers["layer"]) == 3
    total = 0.5 * math.log10(sum(100.0**t for t in layers["log10_tangent_path_term"]))
    assert total == pytest.approx(row["log10_tangent_path"])
