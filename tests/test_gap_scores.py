"""The label-free scores, COT/COTT, TIC, weight spectra and the logits/penultimate/margin
measures, each against an independent computation (autograd, scipy, brute force, plain
recomputation; float64, tight tolerances), and their wiring into the checkpoint features."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from nets import autograd_jacobian, network_strategy, random_network
from scipy.optimize import linear_sum_assignment

import tsens
from tsens.datasets import Dataset
from tsens.gap import scores, spectra
from tsens.gap.features import checkpoint_features
from tsens.gap.tic import tic_gap, tic_matrices, tic_trace
from tsens.measures import Batch, Options
from tsens.trace import Tracer

F64 = tsens.Compute(dtype="float64", batch_size=16)


def rng_logits(n: int, k: int, scale: float = 2.0, seed: int = 0) -> np.ndarray:
    return scale * np.random.default_rng(seed).normal(size=(n, k))


# ---------------------------------------------------------------- measures: logits, penultimate, margin

networks = network_strategy(5)


def batch_of(
    network, n: int = 6, seed: int = 0, labels: bool = True
) -> tuple[Batch, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = 2 * torch.randn(n, network.input_dim, generator=g, dtype=torch.float64)
    y = torch.randint(0, network.output_dim, (n,), generator=g)
    trace = Tracer(network, dtype=torch.float64)(x)
    return Batch(trace, y if labels else None, Options()), x, y


def expected_margins(f: np.ndarray, jac: np.ndarray, cls: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Margins and boundary distances by explicit loops over samples and classes."""
    margins, distances = [], []
    for i, c in enumerate(cls):
        m, d = math.inf, math.inf
        for j in range(f.shape[1]):
            if j == c:
                continue
            gap = f[i, c] - f[i, j]
            norm = float(np.sqrt(np.sum((jac[i, c] - jac[i, j]) ** 2)))
            m = min(m, gap)
            d = min(d, 0.0 if gap == 0 else (gap / norm if norm > 0 else math.copysign(math.inf, gap)))
        margins.append(m)
        distances.append(d)
    return np.array(margins), np.array(distances)


def assert_close(got, want, rtol: float = 1e-9) -> None:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape
    same_inf = np.isinf(got) & np.isinf(want) & (np.sign(got) == np.sign(want))
    assert np.all(same_inf | np.isclose(got, want, rtol=rtol, atol=1e-12)), (got, want)


@settings(max_examples=25, deadline=None)
@given(networks)
def test_margin_matches_autograd_jacobian(network):
    b, x, y = batch_of(network)
    got = b.get("margin")
    f = network.torch_module()(x).detach().numpy()
    jac = autograd_jacobian(network, x).numpy()  # B × n × d
    m, d = expected_margins(f, jac, f.argmax(1))
    assert_close(got["margin_pred"], m)
    assert_close(got["boundary_pred"], d)
    m, d = expected_margins(f, jac, y.numpy())
    assert_close(got["margin_true"], m)
    assert_close(got["boundary_true"], d)
    assert (got["boundary_pred"].numpy() >= 0).all()


def test_margin_on_batchnorm_and_depth_one_networks_and_without_labels():
    for net in (
        random_network((7, 5, 4, 3), batchnorm=True, seed=4),  # BN scale on layer 1
        random_network((9, 4), seed=2),  # no hidden layer: the rows of W_1 are the gradients
        random_network((3, 8, 6, 4), batchnorm="all", activation="leaky_relu:0.1", seed=6),
    ):
        b, x, _ = batch_of(net, n=9, labels=False)
        got = b.get("margin")
        assert set(got) == {"margin_pred", "boundary_pred"}
        f = net.torch_module()(x).detach().numpy()
        m, d = expected_margins(f, autograd_jacobian(net, x).numpy(), f.argmax(1))
        assert_close(got["margin_pred"], m)
        assert_close(got["boundary_pred"], d)


def test_margin_single_output_is_infinite():
    b, _, _ = batch_of(random_network((4, 3, 1), seed=1), n=3)
    got = b.get("margin")
    assert np.isposinf(got["margin_pred"].numpy()).all() and np.isposinf(got["boundary_true"].numpy()).all()


@settings(max_examples=25, deadline=None)
@given(networks)
def test_logits_and_penultimate_reproduce_the_network(network):
    b, x, _ = batch_of(network)
    logits = b.get("logits")["logits"]
    pen = b.get("penultimate")["penultimate"]
    torch.testing.assert_close(logits, network.torch_module()(x).detach(), rtol=1e-12, atol=1e-12)
    last = network.layers[-1]
    assert pen.shape == (len(x), last.in_features)
    torch.testing.assert_close(pen @ last.folded_weight.T + last.folded_bias, logits, rtol=1e-12, atol=1e-12)
    if network.depth == 1:
        torch.testing.assert_close(pen, x)
    else:  # the input of the last nn.Linear of the reference module
        module = network.torch_module()
        linears = [i for i, m in enumerate(module) if isinstance(m, torch.nn.Linear)]
        torch.testing.assert_close(pen, module[: linears[-1]](x).detach(), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- logit and feature scores

shapes = st.tuples(
    st.integers(1, 12), st.integers(1, 6), st.integers(0, 1000), st.sampled_from([0.1, 1.0, 5.0])
)


@settings(max_examples=40, deadline=None)
@given(shapes)
def test_nuclear_norm_energy_mde_match_torch(shape):
    n, k, seed, scale = shape
    z = rng_logits(n, k, scale, seed)
    t = torch.from_numpy(z)
    p = torch.softmax(t, 1)
    nuc = torch.linalg.matrix_norm(p, ord="nuc").item() / math.sqrt(n * min(n, k))
    assert scores.nuclear_norm(p.numpy()) == pytest.approx(nuc, rel=1e-12)
    assert 0 < scores.nuclear_norm(p.numpy()) <= 1 + 1e-12
    e = -torch.logsumexp(t, 1)
    assert scores.energy(z) == pytest.approx(e.mean().item(), rel=1e-12)
    mde = torch.log(-torch.log_softmax(e, 0).mean()).item() if n > 1 else -math.inf
    assert scores.mde(z) == pytest.approx(mde, rel=1e-12)


def test_nuclear_norm_edge_cases():
    assert scores.nuclear_norm(np.array([[0.2, 0.8]])) == pytest.approx(math.hypot(0.2, 0.8))
    uniform = np.full((50, 4), 0.25)  # constant logits: rank 1, ‖P‖_* = ‖P‖_F
    assert scores.nuclear_norm(uniform) == pytest.approx(math.sqrt(50 * 4 * 0.0625) / math.sqrt(50 * 4))
    one_hot = np.eye(4)[np.arange(40) % 4]  # perfectly confident, balanced: the maximum, 1
    assert scores.nuclear_norm(one_hot) == pytest.approx(1.0)


def mano_reference(z: np.ndarray, p: int = 4, eta: float = 5.0) -> float:
    """MaNo as its authors describe it, in torch: criterion, softrun, scaled p-norm."""
    t = torch.from_numpy(z)
    k = t.shape[1]
    criterion = torch.nn.functional.cross_entropy(t, torch.full_like(t, 1 / k)).item()
    if criterion > eta:
        q = torch.softmax(t, 1)
    else:
        q = 1 + t + t**2 / 2
        q = torch.nn.functional.normalize(q - q.min(1, keepdim=True).values, dim=1, p=1)
    return (torch.linalg.vector_norm(q, ord=p) / (q.numel() ** (1 / p))).item()


@settings(max_examples=40, deadline=None)
@given(shapes)
def test_mano_matches_the_authors_description_in_both_branches(shape):
    n, k, seed, scale = shape
    for s in (scale, 30.0):  # 30: confident enough for the softmax branch
        z = rng_logits(n, k, s, seed)
        assert scores.mano(z) == pytest.approx(mano_reference(z), rel=1e-12)
    assert scores.mano_criterion(rng_logits(200, 10, 30.0)) > scores.MANO_THRESHOLD
    assert scores.mano_criterion(rng_logits(200, 10, 0.5)) < scores.MANO_THRESHOLD


def test_mano_constant_logits_and_one_sample():
    assert scores.mano(np.zeros((5, 3))) == 0.0  # Taylor branch: every row equal → 0s, as the code
    z = np.array([[1.0, -2.0, 0.5]])
    assert scores.mano(z) == pytest.approx(mano_reference(z), rel=1e-12)


def dispersion_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Between-class scatter as total minus within-class scatter, over the classes present."""
    total = np.sum((x - x.mean(0)) ** 2)
    within = sum(np.sum((x[y == c] - x[y == c].mean(0)) ** 2) for c in np.unique(y))
    return math.log((total - within) / (len(np.unique(y)) - 1))


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 60), st.integers(1, 5), st.integers(2, 6), st.integers(0, 1000))
def test_dispersion_matches_scatter_identity(n, m, k, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, m))
    y = rng.integers(0, k, n)
    if len(np.unique(y)) < 2:
        assert math.isnan(scores.dispersion(x, y, k))
    else:
        assert scores.dispersion(x, y, k) == pytest.approx(dispersion_reference(x, y), rel=1e-9)


def test_dispersion_skips_empty_classes_and_edge_cases():
    x = np.array([[0.0], [2.0], [10.0], [12.0]])
    # classes 0 and 3 present (1, 2 empty): means 1 and 11 around 6, counts 2: 2·25 + 2·25 over K−1 = 1
    assert scores.dispersion(x, np.array([0, 0, 3, 3]), 4) == pytest.approx(math.log(100.0))
    assert math.isnan(scores.dispersion(x, np.zeros(4, int), 4))  # one class present
    assert math.isnan(scores.dispersion(x[:1], np.zeros(1, int)))  # one sample
    assert scores.dispersion(np.ones((4, 2)), np.array([0, 1, 0, 1])) == -math.inf  # equal means
    with pytest.raises(ValueError):
        scores.dispersion(x, np.array([0, 1, 2, 5]), 4)


def gdscore_reference(z, h, p=0.3, tau=0.5, batch=128, bias=False, seed=0) -> float:
    """Autograd of the mean cross-entropy through an nn.Linear with the documented pseudo-labels."""
    z, h = torch.from_numpy(z), torch.from_numpy(h)
    probs = torch.softmax(z, 1)
    conf, labels = probs.max(1)
    low = (conf < tau).numpy()
    labels = labels.numpy().copy()
    labels[low] = np.random.default_rng(seed).integers(0, z.shape[1], size=int(low.sum()))
    labels = torch.from_numpy(labels)
    lin = torch.nn.Linear(h.shape[1], z.shape[1], dtype=torch.float64)
    scores_ = []
    for start in range(0, len(z), batch or len(z)):
        rows = slice(start, start + (batch or len(z)))
        lin.zero_grad()
        out = lin(h[rows])
        out = out + (z[rows] - out).detach()  # the logits z, with the layer's parameter gradients
        torch.nn.functional.cross_entropy(out, labels[rows]).backward()
        g = lin.weight.grad if not bias else torch.cat([lin.weight.grad, lin.bias.grad[:, None]], 1)
        scores_.append(torch.sum(g.abs() ** p) ** (1 / p))
    return float(torch.stack(scores_).mean())


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 300), st.integers(1, 5), st.integers(1, 6), st.integers(0, 1000), st.booleans())
def test_gdscore_matches_autograd(n, m, k, seed, bias):
    z = rng_logits(n, k, 1.5, seed)
    h = np.random.default_rng(seed + 1).normal(size=(n, m))
    for batch in (128, None, 7):
        got = scores.gdscore(z, h, batch_size=batch, bias=bias, seed=seed)
        assert got == pytest.approx(gdscore_reference(z, h, batch=batch, bias=bias, seed=seed), rel=1e-10)


def test_gdscore_pseudo_labels_are_seeded_and_constant_logits():
    z, h = rng_logits(500, 10, 0.5), np.random.default_rng(3).normal(size=(500, 4))
    assert scores.gdscore(z, h, seed=1) == scores.gdscore(z, h, seed=1) != scores.gdscore(z, h, seed=2)
    assert (
        scores.pseudo_labels(scores.softmax(rng_logits(50, 3, 50.0)), 0.5)
        == rng_logits(50, 3, 50.0).argmax(1)
    ).all()
    assert math.isfinite(scores.gdscore(np.zeros((10, 3)), h[:10]))  # all random labels


def test_quartiles_of_finite_values():
    v = np.array([3.0, np.inf, 1.0, -np.inf, np.nan, 2.0, 4.0])
    q = scores.quartiles(v)  # of 1, 2, 3, 4: linear interpolation at positions 0.75, 1.5, 2.25
    assert q == pytest.approx((1.75, 2.5, 3.25))
    assert scores.quartiles(np.array([5.0])) == (5.0, 5.0, 5.0)
    assert all(math.isnan(x) for x in scores.quartiles(np.array([np.inf, np.nan])))


# ---------------------------------------------------------------- COT and COTT


def assignment_oracle(p: np.ndarray, counts: np.ndarray) -> tuple[float, np.ndarray]:
    """N × N assignment of the softmax vectors to the expanded one-hot targets (integer masses)."""
    targets = np.repeat(np.eye(p.shape[1]), counts, axis=0)
    cost = 0.5 * np.abs(p[:, None, :] - targets[None, :, :]).sum(2)
    rows, cols = linear_sum_assignment(cost)
    per_sample = np.empty(len(p))
    per_sample[rows] = cost[rows, cols]
    return float(cost[rows, cols].mean()), per_sample


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(1, 6), st.integers(0, 10_000), st.sampled_from([0.3, 2.0, 8.0]))
def test_cot_matches_the_expanded_assignment(n, k, seed, scale):
    rng = np.random.default_rng(seed)
    p = scores.softmax(rng_logits(n, k, scale, seed))
    counts = rng.multinomial(n, rng.dirichlet(np.ones(k)))
    error, per_sample = scores.cot_transport(p, counts / n)
    want, want_per_sample = assignment_oracle(p, counts)
    assert error == pytest.approx(want, abs=1e-9)
    assert per_sample.mean() == pytest.approx(want, abs=1e-9)
    # A generic instance has one optimal class per sample: the costs each sample carries agree.
    np.testing.assert_allclose(per_sample, want_per_sample, atol=1e-9)
    assert scores.cot(p, counts) == pytest.approx(1 - want, abs=1e-9)  # shares need not be normalized


def test_cot_exact_at_scale_against_the_full_lp():
    # Fractional masses, a very confident model, near-uniform outputs, one-hot outputs, a
    # collapsed model and a skewed marginal: the shortest-path solver agrees with HiGHS on the
    # whole N × K problem.
    from tsens.gap.scores import _transport_lp

    rng = np.random.default_rng(5)
    n = 2000
    outputs = [
        scores.softmax(rng_logits(n, 10, 3.0, 1)),
        scores.softmax(rng_logits(n, 10, 12.0, 2)),
        scores.softmax(rng_logits(n, 10, 0.01, 3)),
        np.eye(10)[rng.integers(0, 3, n)],
        scores.softmax(np.c_[np.full((n, 1), 20.0), rng_logits(n, 9, 1.0, 4)]),
    ]
    for p in outputs:
        for m in (np.full(10, 0.1), rng.dirichlet(np.ones(10) * 0.3)):
            error, per_sample = scores.cot_transport(p, m)
            cost = (1 + p.sum(1, keepdims=True)) / 2 - p
            x, _ = _transport_lp(cost, np.ones(n), n * m)
            assert error == pytest.approx(float((x * cost).sum() / n), abs=1e-12)
            assert per_sample.mean() == pytest.approx(error, abs=1e-15)


def test_cot_duplicate_outputs_share_their_plan():
    rng = np.random.default_rng(8)
    base = scores.softmax(rng_logits(6, 4, 2.0, 8))
    p = base[rng.integers(0, 6, 40)]  # many exact duplicates
    counts = rng.multinomial(40, np.ones(4) / 4)
    error, per_sample = scores.cot_transport(p, counts / 40)
    assert error == pytest.approx(assignment_oracle(p, counts)[0], abs=1e-12)
    for row in base:
        same = np.all(p == row, axis=1)
        if same.any():
            assert np.ptp(per_sample[same]) < 1e-15


def test_cot_edge_cases():
    p = scores.softmax(rng_logits(7, 3))
    e, c = scores.cot_transport(p, [0, 1, 0])  # one class: every sample goes there
    np.testing.assert_allclose(c, 1 - p[:, 1], atol=1e-15)
    e, c = scores.cot_transport(p[:1], [0.2, 0.5, 0.3])  # one sample, split over the classes
    assert e == pytest.approx(float(np.dot([0.2, 0.5, 0.3], 1 - p[0])), abs=1e-12)
    uniform = np.full((9, 3), 1 / 3)  # constant logits: every plan costs 1 − 1/K
    assert scores.cot(uniform, [1, 1, 1]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        scores.cot(uniform, [1, -1, 1])


def test_cott_threshold_reproduces_the_training_error():
    rng = np.random.default_rng(2)
    n, k = 400, 5
    p = scores.softmax(rng_logits(n, k, 2.0, 3))
    labels = rng.integers(0, k, n)
    marginal = scores.class_shares(labels, k)
    for error in (0.0, 0.1, 0.37, 1.0):
        t = scores.cott_threshold(p, marginal, error)
        _, costs = scores.cot_transport(p, marginal)
        assert np.mean(costs > t) == pytest.approx(round(error * n) / n)
        assert scores.cott(p, marginal, t) == pytest.approx(1 - round(error * n) / n)
    # cot_and_cott: the same numbers, with one shared transport of the test set
    q = scores.softmax(rng_logits(300, k, 1.0, 9))
    t = scores.cott_threshold(p, marginal, 0.2)
    assert scores.cot_and_cott(q, marginal, p, 0.2) == pytest.approx(
        (scores.cot(q, marginal), scores.cott(q, marginal, t))
    )


def test_cot_subsample_is_seeded():
    p = scores.softmax(rng_logits(50, 3, 1.0, 4))
    a = scores.cot(p, [1, 1, 1], max_samples=20, seed=1)
    assert a == scores.cot(p, [1, 1, 1], max_samples=20, seed=1)
    assert scores.cot(p, [1, 1, 1], max_samples=50) == scores.cot(p, [1, 1, 1], max_samples=None)


# ---------------------------------------------------------------- TIC


def tic_oracle(h: np.ndarray, z: np.ndarray, y: np.ndarray, bias: bool, rtol: float = 1e-10) -> float:
    """Per-sample gradients by vmap(grad) and the Hessian of the mean loss by torch.func.hessian,
    with respect to the flattened (W, b) of a last layer that maps h onto exactly z."""
    h_t, z_t, y_t = torch.from_numpy(h), torch.from_numpy(z), torch.from_numpy(y)
    k, m = z.shape[1], h.shape[1]
    size = k * m + (k if bias else 0)

    def logits(theta: torch.Tensor, hi: torch.Tensor, zi: torch.Tensor) -> torch.Tensor:
        # zi + hi Wᵀ + b at θ = 0: the logits z with the last layer's parameter derivatives
        return zi + hi @ theta[: k * m].reshape(k, m).T + (theta[k * m :] if bias else 0)

    def loss(theta, hi, zi, yi):
        return torch.nn.functional.cross_entropy(logits(theta, hi, zi)[None], yi[None])

    theta0 = torch.zeros(size, dtype=torch.float64)
    grads = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0, 0))(theta0, h_t, z_t, y_t)
    hess = torch.func.hessian(
        lambda t: torch.func.vmap(loss, in_dims=(None, 0, 0, 0))(t, h_t, z_t, y_t).mean()
    )(theta0)
    c = grads.T @ grads / len(h)
    return float(torch.trace(torch.linalg.pinv(hess, rtol=rtol, hermitian=True) @ c)) / len(h)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 40), st.integers(1, 4), st.integers(2, 5), st.integers(0, 1000), st.booleans())
def test_tic_matches_torch_func(n, m, k, seed, bias):
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(n, m))
    z = rng_logits(n, k, 1.0, seed)
    y = rng.integers(0, k, n)
    got = tic_gap(h, z, y, bias=bias, max_samples=None)
    assert got == pytest.approx(tic_oracle(h, z, y, bias), rel=1e-8, abs=1e-13)


def test_tic_dead_units_subset_and_one_class():
    rng = np.random.default_rng(1)
    h = np.maximum(rng.normal(size=(60, 4)), 0)
    z = rng_logits(60, 3, 1.0, 2)
    y = rng.integers(0, 3, 60)
    base = tic_gap(h, z, y, max_samples=None)
    dead = np.hstack([h, np.zeros((60, 2))])  # dead units add only null directions
    assert tic_gap(dead, z, y, max_samples=None) == pytest.approx(base, rel=1e-10)
    assert base == pytest.approx(tic_oracle(dead, z, y, True), rel=1e-8)
    # a seeded subset: H and C from 30 samples, the divisor stays 60
    rows = np.sort(np.random.default_rng(7).choice(60, size=30, replace=False))
    sub = tic_gap(h, z, y, max_samples=30, seed=7)
    assert sub == pytest.approx(tic_oracle(h[rows], z[rows], y[rows], True) * 30 / 60, rel=1e-8)
    assert tic_gap(h, z[:, :1], np.zeros(60, int)) == 0.0
    assert math.isnan(tic_gap(h, z, y, max_dim=5))
    hess, c = tic_matrices(h, z, y)
    assert tic_trace(hess, c) / 60 == pytest.approx(base, rel=1e-10)


# ---------------------------------------------------------------- weight spectra


def ks_scan(x: np.ndarray) -> tuple[float, float, float]:
    """Brute force over every candidate x_min: MLE α, KS distance; the least distance wins."""
    x = np.sort(x)
    best = (math.inf, math.nan, math.nan)
    for i in range(len(x) - 1):
        tail = x[i:]
        alpha = 1 + len(tail) / sum(math.log(v / x[i]) for v in tail)
        if alpha <= 1:
            continue
        d = max(abs(1 - (v / x[i]) ** (1 - alpha) - j / len(tail)) for j, v in enumerate(tail))
        if d < best[0]:
            best = (d, alpha, x[i])
    return best


@pytest.mark.parametrize("alpha", [2.0, 3.5])
def test_powerlaw_alpha_recovers_a_known_tail_and_matches_the_ks_scan(alpha):
    rng = np.random.default_rng(int(alpha * 10))
    x = 0.5 * rng.random(800) ** (-1 / (alpha - 1))  # Pareto(α) above 0.5
    fit = spectra.powerlaw_fit(x)
    d, a, xmin = ks_scan(x)
    assert fit.ks == pytest.approx(d, rel=1e-10) and fit.alpha == pytest.approx(a, rel=1e-10)
    assert fit.xmin == xmin
    assert abs(fit.alpha - alpha) < 0.25


def test_spectra_stable_rank_moments_and_small_layers():
    net = random_network((40, 30, 25, 10), seed=3, batchnorm=True)
    rows = spectra.layer_spectra(net)
    for layer, row in zip(net.layers, rows, strict=True):
        w = layer.weight.numpy()
        assert row["stable_rank"] == pytest.approx(
            np.linalg.norm(w, "fro") ** 2 / np.linalg.norm(w, 2) ** 2, rel=1e-10
        )
        assert row["weight_mean"] == pytest.approx(w.mean()) and row["weight_std"] == pytest.approx(w.std())
        assert row["weight_q50"] == pytest.approx(np.median(w))
        assert row["weight_q25"] == pytest.approx(np.percentile(w, 25))
        evals = np.linalg.eigvalsh(w.T @ w)
        np.testing.assert_allclose(
            spectra.eigenvalues(layer.weight), np.sort(evals)[-min(w.shape) :], rtol=1e-9, atol=1e-12
        )
    assert math.isnan(rows[-1]["alpha"])  # 10 eigenvalues: no tail fit
    fitted = [r for r in rows if not math.isnan(r["alpha"])]
    assert len(fitted) == 2
    f = spectra.spectra_features(net)
    assert f["ww_alpha_mean"] == pytest.approx(np.mean([r["alpha"] for r in fitted]))
    top = spectra.eigenvalues(net.layers[0].weight).max()
    assert rows[0]["alpha_weighted"] == pytest.approx(rows[0]["alpha"] * math.log10(top))
    assert f["stable_rank_mean"] == pytest.approx(np.mean([r["stable_rank"] for r in rows]))
    assert math.isnan(spectra.spectra_features(random_network((5, 4, 3)))["ww_alpha_mean"])


# ---------------------------------------------------------------- wiring into the checkpoint features


def test_checkpoint_features_from_the_passes_never_read_test_labels():
    net = random_network((5, 8, 7, 3), seed=11, scale=1.5)
    rng = np.random.default_rng(0)
    x_tr, y_tr = rng.normal(size=(80, 5)), rng.integers(0, 3, 80)
    x_te, y_te = 1.3 * rng.normal(size=(50, 5)), rng.integers(0, 3, 50)
    measures = ["predictions", "logits", "penultimate", "margin"]

    def run(test_labels):
        sets = {"train": Dataset(x_tr, y_tr, "train", (5,)), "test": Dataset(x_te, test_labels, "test", (5,))}
        res = tsens.measure_sets(net, sets, measures, compute=F64)
        return res, checkpoint_features(net, res["train"], res["test"])

    res, cf = run(y_te)
    _, blind = run(None)
    assert cf.features.keys() == blind.features.keys()
    for name, value in cf.features.items():
        assert value == blind.features[name] or (math.isnan(value) and math.isnan(blind.features[name])), name
    tr, te = res["train"].columns, res["test"].columns
    f = cf.features
    assert f["nuclear_norm_test"] == pytest.approx(scores.nuclear_norm(scores.softmax(te["logits"])))
    assert f["mano_train"] == pytest.approx(scores.mano(tr["logits"]))
    assert f["energy_test"] == pytest.approx(scores.energy(te["logits"]))
    assert f["dispersion_test"] == pytest.approx(scores.dispersion(te["penultimate"], te["logits"].argmax(1)))
    assert f["gdscore_train"] == pytest.approx(scores.gdscore(tr["logits"], tr["penultimate"]))
    marginal = np.bincount(y_tr, minlength=3) / 80
    assert f["cot_acc"] == pytest.approx(scores.cot(scores.softmax(te["logits"]), marginal))
    assert f["tic_gap"] == pytest.approx(tic_gap(tr["penultimate"], tr["logits"], y_tr))
    assert (f["margin_q25_train"], f["margin_q50_train"], f["margin_q75_train"]) == pytest.approx(
        scores.quartiles(tr["margin_true"])
    )
    assert f["margin_q50_test"] == pytest.approx(scores.quartiles(te["margin_pred"])[1])
    assert f["log_boundary_margin_q75_test"] == pytest.approx(
        math.log(scores.quartiles(te["boundary_pred"])[2])
    )
    for name in ("cott_acc", "mde_train", "ww_alpha_weighted_mean", "stable_rank_mean", "weight_std"):
        assert name in f
    assert all(isinstance(v, float) for v in f.values())
    assert cf.test_log_probs is None


def test_logit_margin_by_brute_force():
    rng = np.random.default_rng(11)
    z, y = rng.normal(size=(30, 4)), rng.integers(0, 4, 30)
    want = [z[i, y[i]] - max(z[i, j] for j in range(4) if j != y[i]) for i in range(30)]
    assert np.allclose(scores.logit_margin(z, y), want)
    top2 = np.sort(z, 1)[:, -2:]
    assert np.allclose(scores.logit_margin(z), top2[:, 1] - top2[:, 0])
    assert np.all(scores.logit_margin(z[:, :1]) == np.inf)
