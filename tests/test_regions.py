"""Regions, membership, boundary distance and active counts against independent oracles."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from nets import ACTIVATIONS, random_network, reference_preacts

from tsens.active_units import active_counts, count_statistics, piece_counts
from tsens.piecewise import parse_activation
from tsens.regions import (
    boundary_distance,
    log_membership,
    membership_weighted_mean,
    path_scores,
    patterns,
    region_ids,
    region_statistics,
    shared_region_share,
)
from tsens.trace import Tracer

networks = st.builds(
    lambda widths, bias, bn, act, seed: random_network(
        tuple(widths), bias=bias, batchnorm=bn, activation=act, seed=seed, scale=1.5
    ),
    widths=st.lists(st.integers(1, 6), min_size=3, max_size=5),
    bias=st.booleans(),
    bn=st.sampled_from([False, True, "affine-false"]),
    act=st.sampled_from(ACTIVATIONS),
    seed=st.integers(0, 10_000),
)


def trace_of(network, x):
    return Tracer(network, dtype=torch.float64)(x)


def reference_codes(network, x) -> torch.Tensor:
    """Piece index from the torch module's own pre-activations: breakpoints counted by hand."""
    bps = {
        "relu": [0.0],
        "leaky_relu": [0.0],
        "relu6": [0.0, 6.0],
        "hardtanh": [-1.0, 1.0],
        "hardsigmoid": [-3.0, 3.0],
    }[network.activation.name]
    zs = torch.cat(reference_preacts(network, x), 1)
    return sum((zs > b).to(torch.uint8) for b in bps)


@settings(max_examples=30, deadline=None)
@given(networks, st.integers(0, 1000))
def test_patterns_and_region_ids(network, seed):
    g = torch.Generator().manual_seed(seed)
    # Few distinct points, each repeated, plus tiny perturbations: regions repeat.
    base = torch.randn(6, network.input_dim, generator=g, dtype=torch.float64)
    x = torch.cat([base, base + 1e-9 * torch.randn(base.shape, generator=g, dtype=torch.float64), base[:3]])
    trace = trace_of(network, x)
    codes = patterns(trace)
    assert torch.equal(codes, reference_codes(network, x))
    ids = region_ids(trace)
    same_id = ids[:, None] == ids[None, :]
    same_pattern = (codes[:, None, :] == codes[None, :, :]).all(-1).numpy()
    assert np.array_equal(same_id, same_pattern)


@settings(max_examples=40, deadline=None)
@given(networks, st.integers(0, 1000))
def test_boundary_distance_by_stepping(network, seed):
    g = torch.Generator().manual_seed(seed)
    x = 2 * torch.randn(3, network.input_dim, generator=g, dtype=torch.float64)
    trace = trace_of(network, x)
    dist, layer = boundary_distance(trace)
    codes = patterns(trace)
    bps = torch.tensor(network.activation.breakpoints, dtype=torch.float64)
    for i in range(len(x)):
        r = float(dist[i])
        if math.isinf(r):
            assert layer[i] == 0
            continue
        # Inside: 0.999 r along many random unit directions keeps the pattern.
        u = torch.randn(64, network.input_dim, generator=g, dtype=torch.float64)
        u = u / u.norm(dim=1, keepdim=True)
        inside = patterns(trace_of(network, x[i] + 0.999 * r * u))
        assert torch.equal(inside, codes[i].expand_as(inside))
        # Outside: 1.001 r towards the nearest face changes it. Find that face independently.
        xi = x[i].clone().requires_grad_(True)
        zs = torch.cat(reference_preacts(network, xi[None]), 1)[0]
        best, direction = math.inf, None
        for j in range(len(zs)):
            (grad,) = torch.autograd.grad(zs[j], xi, retain_graph=True)
            if grad.norm() == 0:
                continue
            gap = (zs[j].detach() - bps).abs()
            k = int(gap.argmin())
            d = float(gap[k] / grad.norm())
            if d < best:
                sign = -1.0 if zs[j] > bps[k] else 1.0
                best, direction = d, sign * grad / grad.norm()
        assert math.isclose(best, r, rel_tol=1e-9)
        outside = patterns(trace_of(network, (x[i] + 1.001 * r * direction)[None]))
        assert not torch.equal(outside[0], codes[i])


@settings(max_examples=30, deadline=None)
@given(networks, st.floats(0.1, 10), st.integers(0, 1000))
def test_membership_and_path_score(network, temperature, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(5, network.input_dim, generator=g, dtype=torch.float64)
    trace = trace_of(network, x)
    zs = reference_preacts(network, x)
    act = network.activation
    bps = torch.tensor(act.breakpoints, dtype=torch.float64)
    margin = torch.cat([(z[..., None] - bps).abs().min(-1).values for z in zs], 1)
    expected = torch.log(1 / (1 + torch.exp(-margin / temperature))).sum(1)
    got = log_membership(trace, "preact", temperature)
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12)
    active = (reference_codes(network, x) == act.active_code).double()
    expected_ind = torch.log(1 / (1 + torch.exp(-active / temperature))).sum(1)
    assert torch.allclose(log_membership(trace, "indicator", temperature), expected_ind, rtol=1e-12)
    counts = torch.stack(
        [(z_codes == act.active_code).sum(1) for z_codes in _split(reference_codes(network, x), zs)], 1
    )
    assert torch.equal(active_counts(trace), counts)
    assert torch.allclose(path_scores(trace, got), torch.log(counts.double()).sum(1) + got)


def _split(codes, zs):
    return torch.split(codes, [z.shape[1] for z in zs], 1)


def test_piece_counts_three_pieces():
    net = random_network((4, 7, 5, 3), activation="hardtanh", seed=1, scale=3.0)
    x = 3 * torch.randn(50, 4, dtype=torch.float64)
    trace = trace_of(net, x)
    for code, pc in zip(trace.codes, piece_counts(trace), strict=True):
        for k in range(3):
            assert torch.equal(pc[:, k], (code == k).sum(1))
        assert torch.equal(pc.sum(1), torch.full((50,), code.shape[1]))


def test_region_statistics_by_hand():
    ids = np.array([5, 5, 5, 7, 9, 9], dtype=np.uint64)
    s = region_statistics(ids)
    p = np.array([3, 1, 2]) / 6
    assert s == {
        "regions": 3,
        "max_per_region": 3,
        "mean_per_region": 2.0,
        "alone_share": 1 / 6,
        "entropy": float(-(p * np.log(p)).sum()),
    }
    assert shared_region_share(ids, np.array([5, 8, 9, 1], dtype=np.uint64)) == 0.5


def test_membership_weighted_mean_is_stable():
    log_p = np.array([-2000.0, -2000.0 + math.log(3.0)])
    assert math.isclose(membership_weighted_mean(log_p, np.array([1.0, 5.0])), (1 + 3 * 5) / 4)


def test_count_statistics_match_scipy_definitions():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 50, 200)
    s = count_statistics(x)
    m = x.mean()
    assert math.isclose(s["mean"], m)
    assert math.isclose(s["variance"], ((x - m) ** 2).sum() / 199)
    m2, m3, m4 = (((x - m) ** k).mean() for k in (2, 3, 4))
    assert math.isclose(s["skewness"], m3 / m2**1.5)
    assert math.isclose(s["excess_kurtosis"], m4 / m2**2 - 3)
    assert 0 <= s["normality_p"] <= 1
    assert math.isnan(count_statistics(np.full(30, 4))["skewness"])


def test_activation_codes_and_slopes():
    z = torch.tensor([-7.0, -3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0, 6.0, 7.0], dtype=torch.float64)
    for spec in ACTIVATIONS:
        act = parse_activation(spec)
        zz = z.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(act.module()(zz).sum(), zz)
        interior = torch.tensor([all(abs(float(v) - b) > 1e-9 for b in act.breakpoints) for v in z])
        slopes = act.slopes_of(act.codes(z), torch.float64)
        assert torch.allclose(slopes[interior], grad[interior], rtol=1e-6)
