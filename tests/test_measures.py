"""Closed forms of SPEC §2.1–2.2 against torch.func oracles (float64, relative error <= 1e-9)."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from nets import autograd_jacobian, autograd_tangent_sqnorm, network_strategy, random_network

from tsens.jacobian import jacobian_norms, loss_relation
from tsens.tangent import tangent_sqnorms
from tsens.trace import Tracer

RTOL = 1e-9

networks = network_strategy(6)


def inputs(network, n: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 2 * torch.randn(n, network.input_dim, generator=g, dtype=torch.float64)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = b.abs().clamp_min(1e-12)
    return float(((a - b).abs() / scale).max())


@settings(max_examples=40, deadline=None)
@given(networks)
def test_jacobian_norms_match_autograd(network):
    x = inputs(network)
    labels = torch.randint(0, network.output_dim, (len(x),), generator=torch.Generator().manual_seed(1))
    trace = Tracer(network, dtype=torch.float64)(x)
    got = jacobian_norms(trace, labels)
    j = autograd_jacobian(network, x)  # B × n × d
    s = torch.softmax(network.torch_module()(x), 1).detach()
    j_prob = (torch.diag_embed(s) - s[:, :, None] * s[:, None, :]) @ j
    assert rel_err(got["jac_logit_fro"], j.flatten(1).norm(dim=1)) < RTOL
    assert rel_err(got["jac_prob_fro"], j_prob.flatten(1).norm(dim=1)) < RTOL
    # The true-class row's norm comes from a Gram matrix: its square is exact to RTOL of the
    # whole ‖J_prob‖_F² (a tiny row loses relative digits to cancellation, not to a wrong formula).
    row = j_prob[torch.arange(len(x)), labels].norm(dim=1)
    scale = j_prob.flatten(1).norm(dim=1).square().clamp_min(1e-300)
    assert float(((got["jac_true_class"].square() - row.square()).abs() / scale).max()) < RTOL


@settings(max_examples=30, deadline=None)
@given(networks, st.sampled_from(["sum", "all"]))
def test_tangent_matches_jacrev_of_parameter_gradient(network, reading):
    x = inputs(network, n=3)
    trace = Tracer(network, dtype=torch.float64)(x)
    assert rel_err(tangent_sqnorms(trace, reading), autograd_tangent_sqnorm(network, x, reading)) < RTOL


def test_wide_first_layer_and_narrow_input_routes_agree():
    # r = min(h_1, d) switches between the two shapes of the first-layer factor.
    for widths in [(40, 3, 5, 4), (3, 40, 5, 4)]:
        net = random_network(widths, batchnorm=True, seed=3)
        x = inputs(net)
        trace = Tracer(net, dtype=torch.float64)(x)
        assert rel_err(tangent_sqnorms(trace, "all"), autograd_tangent_sqnorm(net, x, "all")) < RTOL
        j = autograd_jacobian(net, x)
        assert rel_err(jacobian_norms(trace)["jac_logit_fro"], j.flatten(1).norm(dim=1)) < RTOL


def test_hutchinson_estimate_is_unbiased():
    net = random_network((12, 9, 7, 3), seed=5)
    x = inputs(net, n=2)
    trace = Tracer(net, dtype=torch.float64)(x)
    exact = tangent_sqnorms(trace, "sum")
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([tangent_sqnorms(trace, "sum", probes=4, generator=g) for _ in range(400)])
    standard_error = draws.std(0) / len(draws) ** 0.5
    assert torch.all((draws.mean(0) - exact).abs() < 5 * standard_error)
    assert not torch.allclose(draws[0], exact)  # it really is an estimate


def test_float32_trace_close_to_float64():
    net = random_network((20, 16, 16, 5), seed=2)
    x = inputs(net, n=8)
    t64 = tangent_sqnorms(Tracer(net, dtype=torch.float64)(x), "all")
    t32 = tangent_sqnorms(Tracer(net, dtype=torch.float32)(x.float()), "all")
    assert rel_err(t32.double(), t64) < 1e-4


def test_loss_relation_matches_novak_eq5_and_eq7():
    # Independent evaluation of [N] App. A.3 with plain Python floats.
    loss = torch.tensor([0.1, 1.0, 3.0], dtype=torch.float64)
    jl = torch.tensor([2.0, 3.0, 4.0], dtype=torch.float64)
    n = 10
    got = loss_relation(loss, jl, n)
    m = (4 + 9 + 16) / 3 / n
    for i, l in enumerate([0.1, 1.0, 3.0]):
        p = 2.718281828459045 ** (-l)
        assert abs(float(got["jac_true_lower"][i]) - (n * m / (n - 1)) ** 0.5 * p * (1 - p)) < 1e-12
        assert abs(float(got["jac_true_upper"][i]) - (2 * m) ** 0.5 * p * (1 - p)) < 1e-12
        eq7 = m**0.5 / (n - 1) * (1 - p) * (n * n * p * p + n - 2) ** 0.5
        assert abs(float(got["jac_prob_eq7"][i]) - eq7) < 1e-12


def test_blocked_input_gradient_recursion_matches_autograd(monkeypatch):
    # The E_l recursion runs over blocks of samples; force many small blocks (and a ragged last
    # one) and compare ‖T‖ with autograd, for both routes of the first-layer factor.
    import tsens.trace as trace_module

    monkeypatch.setattr(trace_module, "_BLOCK_ELEMENTS", 60)
    for widths in [(7, 5, 6, 4, 3), (4, 9, 6, 3)]:
        net = random_network(widths, batchnorm=True, seed=11)
        x = inputs(net, n=7)
        tracer = Tracer(net, dtype=torch.float64)
        r = min(widths[0], widths[1])
        block = 60 // (max(widths[2:-1]) * r)
        assert block == 2 and len(x) % block  # several blocks, the last one ragged
        got = tangent_sqnorms(tracer(x), "all")
        assert rel_err(got, autograd_tangent_sqnorm(net, x, "all")) < RTOL
