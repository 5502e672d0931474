"""Transitions along curves ([N] §3): exact counts against closed forms, dense sampling and
brute force on the reference nn.Module; the curves; the command line."""

from __future__ import annotations

import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from clitools import one_line_error, run
from hypothesis import given, settings
from hypothesis import strategies as st
from nets import ACTIVATIONS, random_network, reference_preacts
from safetensors.torch import save_file

from tsens.compute import Compute
from tsens.datasets import Preprocess, load_dataset
from tsens.errors import TsensError
from tsens.jacobian import jacobian_norms
from tsens.network import Layer, Network
from tsens.piecewise import parse_activation
from tsens.stream import prepared_for
from tsens.trace import Tracer
from tsens.transitions import (
    Trajectories,
    count_transitions,
    ellipses_through_data,
    exact_transitions,
    load_trajectories,
    make_trajectories,
    random_ellipses,
    sampled_transitions,
    transitions_summary,
    translation_polygons,
)

TWO_PI = 2 * math.pi


def scaled_ellipses(d: int, count: int, seed: int, scale: float = 3.0) -> Trajectories:
    r = random_ellipses(d, count, seed=seed)
    rng = np.random.default_rng(seed + 1)
    return Trajectories("test", rng.normal(size=r.center.shape), scale * r.u, scale * r.v)


def polylines(d: int, count: int, k: int, seed: int, closed: bool = True, scale: float = 2.0) -> Trajectories:
    rng = np.random.default_rng(seed)
    return Trajectories("test", points=scale * rng.normal(size=(count, k, d)), closed=closed)


def exact(net, traj):
    return exact_transitions(net, traj).per_layer


# --------------------------------------------------------------------------- curves


def test_ellipse_passes_through_its_three_data_points():
    data = prepared_for(random_network((64, 3)), load_dataset("digits-test"))
    traj = ellipses_through_data(data, 5, seed=3)
    assert traj.indices.shape == (5, 3)
    for i in range(5):
        on_curve = traj.at(np.array([0, TWO_PI / 3, 2 * TWO_PI / 3]), np.full(3, i))
        pos = [int(np.nonzero(data.indices == j)[0][0]) for j in traj.indices[i]]
        want = torch.stack([data.input(p, dtype=torch.float64) for p in pos])
        assert torch.allclose(on_curve, want, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 9), st.integers(0, 10_000))
def test_ellipse_construction_on_random_points(d, seed):
    x = np.random.default_rng(seed).normal(size=(3, d))
    c = x.mean(0)
    u = x[0] - c
    v = (2 / math.sqrt(3)) * (x[1] - c + u / 2)
    traj = Trajectories("t", c[None], u[None], v[None])
    assert np.allclose(traj.at(np.array([0, TWO_PI / 3, 2 * TWO_PI / 3])).numpy(), x, atol=1e-12)


def test_lengths_exact_for_polylines_and_ellipses():
    from scipy.integrate import quad

    poly = polylines(4, 3, 5, seed=0)
    steps = np.diff(np.concatenate([poly.points, poly.points[:, :1]], 1), axis=1)
    assert np.allclose(poly.lengths(), np.linalg.norm(steps, axis=2).sum(1), rtol=1e-14)
    open_ = Trajectories("t", points=poly.points, closed=False)
    assert np.allclose(open_.lengths(), np.linalg.norm(steps[:, :-1], axis=2).sum(1), rtol=1e-14)
    ell = scaled_ellipses(6, 4, seed=1)
    for i in range(4):
        u, v = ell.u[i], ell.v[i]
        speed = lambda t, u=u, v=v: float(np.linalg.norm(-u * np.sin(t) + v * np.cos(t)))  # noqa: E731
        want = quad(speed, 0, TWO_PI, epsabs=0, epsrel=1e-13, limit=200)[0]
        assert ell.lengths()[i] == pytest.approx(want, rel=1e-9)
    circle = Trajectories("t", np.zeros((1, 3)), np.array([[2.0, 0, 0]]), np.array([[0, 2.0, 0]]))
    assert circle.lengths()[0] == pytest.approx(4 * math.pi, rel=1e-12)
    flat = Trajectories("t", np.zeros((1, 2)), np.array([[1.0, 0]]), np.array([[2.0, 0]]))
    assert flat.lengths()[0] == pytest.approx(4 * math.sqrt(5), rel=1e-12)  # a segment run twice


def test_translation_polygons_shift_the_raw_image_then_preprocess():
    data = prepared_for(random_network((64, 3)), load_dataset("digits-test"))
    traj = translation_polygons(data, 3, seed=1)
    assert traj.points.shape == (3, 8, 64) and traj.closed
    pos = int(np.nonzero(data.indices == traj.indices[0, 0])[0][0])
    raw = data.raw(pos).reshape(8, 8)  # the shipped digits are stored flat
    for s in (0, 1, 7):
        want = data.transform(np.roll(raw, s, axis=-1).reshape(1, 64), dtype=torch.float64)[0].numpy()
        assert np.array_equal(traj.points[0, s], want)
    flat = load_dataset("mnist1d-test")
    with pytest.raises(TsensError, match="translations needs images"):
        translation_polygons(flat, 2)


def test_save_and_load_give_identical_counts(tmp_path):
    net = random_network((5, 8, 6, 3), seed=2)
    for i, traj in enumerate((scaled_ellipses(5, 4, seed=0), polylines(5, 3, 4, seed=1, closed=False))):
        path = tmp_path / f"curves{i}.npz"
        traj.save(path)
        with pytest.raises(TsensError, match="exists; pass `force`"):
            traj.save(path)
        back = load_trajectories(path)
        assert back.same_curves(traj) and back.closed == traj.closed and back.kind == traj.kind
        assert np.array_equal(exact(net, back), exact(net, traj))


@pytest.mark.parametrize(
    "arrays, fragment",
    [
        ({"a": np.zeros(3)}, "expected keys"),
        ({"center": np.zeros((2, 3)), "u": np.zeros((2, 3))}, "missing v"),
        ({"center": np.zeros((2, 3)), "u": np.zeros((2, 4)), "v": np.zeros((2, 3))}, "key 'u'"),
        ({"points": np.zeros((2, 1, 3))}, "key 'points'"),
        ({"points": np.full((2, 3, 3), np.nan)}, "NaN"),
        ({"points": np.zeros((2, 3, 3)), "closed": np.array([1, 0])}, "key 'closed'"),
        ({"points": np.zeros((2, 3, 3)), "extra": np.zeros(1)}, "key 'extra'"),
        ({"center": np.ones((2, 3)), "u": np.eye(2, 3) * [[1], [0]], "v": np.zeros((2, 3))}, "curve 1 is"),
        ({"points": np.stack([np.eye(3), np.ones((3, 3))]), "closed": np.array(False)}, "key 'points'"),
    ],
)
def test_bad_trajectory_files_name_the_file_and_key(tmp_path, arrays, fragment):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(TsensError, match=fragment) as err:
        load_trajectories(path)
    assert str(path) in str(err.value)


# --------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_one_hidden_layer_matches_the_closed_form(activation):
    """z_j = α_j + R_j cos(t − ψ_j): unit j crosses breakpoint b twice iff |α_j − b| < R_j; a
    segment crosses b iff its end values lie on both sides."""
    net = random_network((6, 40, 3), activation=activation, seed=4, scale=3.0)
    act = net.activation
    w, b = net.layers[0].folded_weight, net.layers[0].folded_bias
    ell = scaled_ellipses(6, 6, seed=5)
    alpha = torch.from_numpy(ell.center) @ w.T + b
    radius = torch.hypot(torch.from_numpy(ell.u) @ w.T, torch.from_numpy(ell.v) @ w.T)
    want = sum(2 * ((alpha - bp).abs() < radius).sum(1) for bp in act.breakpoints)
    assert np.array_equal(exact(net, ell)[:, 0], want.numpy())
    poly = polylines(6, 4, 5, seed=6)
    z = torch.from_numpy(poly.points) @ w.T + b  # T × k × h at the vertices
    z_next = torch.roll(z, -1, dims=1)
    want = sum(((z > bp) != (z_next > bp)).sum((1, 2)) for bp in act.breakpoints)
    assert np.array_equal(exact(net, poly)[:, 0], want.numpy())


def test_tangency_is_no_transition_and_multi_breakpoint_units_count_each_crossing():
    def one_layer(rows, biases, activation):
        w = torch.tensor(rows, dtype=torch.float64)
        layers = (
            Layer(w, torch.tensor(biases, dtype=torch.float64)),
            Layer(torch.ones(1, len(rows), dtype=torch.float64)),
        )
        return Network(layers, parse_activation(activation))

    circle = Trajectories("t", np.zeros((1, 2)), np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]))
    # cos t − 1 touches 0 at t = 0; cos t + 1 touches it at π; cos t crosses twice
    assert exact(one_layer([[1.0, 0], [1.0, 0], [1.0, 0]], [-1.0, 1.0, 0.0], "relu"), circle).tolist() == [
        [2]
    ]
    # 4 cos t + 3 runs from −1 to 7: it crosses 0 and 6, twice each (ReLU6 codes 0 → 1 → 2 → 1 → 0)
    net = one_layer([[4.0, 0]], [3.0], "relu6")
    assert exact(net, circle).tolist() == [[4]]
    assert sampled_transitions(net, circle, 1000).tolist() == [[4]]
    # two identical units cross at the same points: each counts
    assert exact(one_layer([[1.0, 0], [1.0, 0]], [0.5, 0.5], "relu"), circle).tolist() == [[4]]


def test_a_curve_inside_one_region_has_no_transition():
    net = random_network((5, 8, 6, 3), seed=1)
    x0 = torch.randn(1, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    dist = min(float(z.detach().abs().min()) for z in reference_preacts(net, x0))
    assert dist > 1e-3
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=(2, 1, 5))
    tiny = 1e-7 / (np.linalg.norm(u) + np.linalg.norm(v))
    traj = Trajectories("t", x0.numpy(), tiny * u, tiny * v)
    res = exact_transitions(net, traj, keep_regions=True)
    assert res.per_layer.tolist() == [[0, 0]] and len(res.regions.lo) == 1


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("variant", ["bias", "batchnorm", "no-bias"])
def test_exact_is_never_below_sampling_and_dense_sampling_reaches_it(activation, variant):
    net = random_network(
        (4, 9, 7, 3),
        activation=activation,
        seed=7,
        scale=3.0,
        bias=variant != "no-bias",
        batchnorm=variant == "batchnorm",
    )
    ell = scaled_ellipses(4, 3, seed=8)
    poly = polylines(4, 2, 4, seed=9)
    for traj in (ell, poly):
        e = exact(net, traj)
        previous = np.zeros_like(e)
        for k in (16, 256, 1 << 14):
            s = sampled_transitions(net, traj, k)
            assert (s <= e).all(), (k, s, e)
            previous = s
        assert np.array_equal(previous, e)


@settings(max_examples=25, deadline=None)
@given(
    widths=st.lists(st.integers(1, 7), min_size=1, max_size=3),
    d=st.integers(1, 5),
    activation=st.sampled_from(ACTIVATIONS),
    seed=st.integers(0, 1000),
    shift=st.floats(0.0, TWO_PI),
)
def test_direction_and_start_do_not_change_the_count(widths, d, activation, seed, shift):
    net = random_network((d, *widths, 2), activation=activation, seed=seed, scale=3.0)
    ell = scaled_ellipses(d, 2, seed=seed)
    e = exact(net, ell)
    reversed_ = Trajectories("t", ell.center, ell.u, -ell.v)  # x(−t)
    c, s = math.cos(shift), math.sin(shift)
    moved = Trajectories("t", ell.center, c * ell.u + s * ell.v, -s * ell.u + c * ell.v)  # x(t + shift)
    assert np.array_equal(exact(net, reversed_), e)
    assert np.array_equal(exact(net, moved), e)
    assert (sampled_transitions(net, ell, 64) <= e).all()
    poly = polylines(d, 2, 4, seed=seed)
    p = exact(net, poly)
    assert np.array_equal(exact(net, Trajectories("t", points=poly.points[:, ::-1])), p)
    assert np.array_equal(exact(net, Trajectories("t", points=np.roll(poly.points, 1, axis=1))), p)
    opened = exact(net, Trajectories("t", points=poly.points, closed=False))
    assert (opened <= p).all()


def brute_force_codes(net, x):
    """Piece codes of every hidden unit from the reference nn.Module (independent of tsens)."""
    with torch.no_grad():
        return [net.activation.codes(z.detach()).long() for z in reference_preacts(net, x)]


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_polylines_equal_brute_force_dense_sampling_on_tiny_nets(activation):
    net = random_network((3, 4, 3, 2), activation=activation, seed=11, scale=2.0)
    poly = polylines(3, 2, 5, seed=12, closed=False)
    k = 40_001
    for i in range(poly.count):
        t = torch.linspace(0, poly.segments, k, dtype=torch.float64)
        codes = brute_force_codes(net, poly.at(t, np.full(k, i)))
        want = [int((c[1:] - c[:-1]).abs().sum()) for c in codes]
        assert exact(net, poly)[i].tolist() == want


def test_segment_through_the_origin_of_a_bias_free_net():
    """Every unit of a bias-free net sits at 0 at the origin: all cross there at once."""
    net = random_network((4, 6, 5, 2), bias=False, seed=3)
    x = np.random.default_rng(1).normal(size=4)
    poly = Trajectories("t", points=np.stack([-x, x])[None], closed=False)
    t = torch.linspace(0, 1, 10_000, dtype=torch.float64)  # even count: no sample at the origin
    codes = brute_force_codes(net, poly.at(t))
    assert exact(net, poly)[0].tolist() == [int((c[1:] - c[:-1]).abs().sum()) for c in codes]


def test_jacobian_along_the_curve():
    net = random_network((5, 8, 6, 3), seed=5)
    traj = scaled_ellipses(5, 3, seed=2, scale=1.0)
    res = count_transitions(net, traj, jacobian=True)
    regions = res.regions
    assert np.array_equal(
        np.bincount(regions.trajectory), res.columns["transitions"] + 1
    )  # closed: wrap split
    mid = (regions.lo + regions.hi) / 2
    x = traj.at(mid, regions.trajectory)
    assert np.allclose(
        res.region_jacobian, jacobian_norms(Tracer(net, dtype=torch.float64)(x))["jac_prob_fro"]
    )
    # the region-weighted mean is close to the mean over densely and evenly sampled points
    t = np.linspace(0, TWO_PI, 4000, endpoint=False)
    for i in range(3):
        dense = jacobian_norms(Tracer(net, dtype=torch.float64)(traj.at(t, np.full(len(t), i))))[
            "jac_prob_fro"
        ]
        assert res.columns["jac_prob_mean"][i] == pytest.approx(float(dense.mean()), rel=0.03)
        assert res.columns["jac_prob_max"][i] >= res.columns["jac_prob_mean"][i]
    row = transitions_summary(res)
    assert row["transitions_mean"] == pytest.approx(res.columns["transitions"].mean())
    assert {"transitions_l1_median", "transitions_l2_std", "jac_prob_mean_mean"} <= set(row)


def test_library_errors_name_parameters():
    net = random_network((5, 4, 3))
    traj = scaled_ellipses(5, 1, seed=0)
    with pytest.raises(TsensError, match="`points`"):
        count_transitions(net, traj, method="sampled", points=1)
    with pytest.raises(TsensError, match="`method`"):
        count_transitions(net, traj, method="walk")
    with pytest.raises(TsensError, match="`count`"):
        random_ellipses(5, 0)
    with pytest.raises(TsensError, match="no hidden layer"):
        count_transitions(random_network((5, 3)), traj)
    with pytest.raises(TsensError, match="expects 4"):
        count_transitions(random_network((4, 3, 2)), traj)
    with pytest.raises(TsensError, match="`trajectory`"):
        make_trajectories("spiral", None, 5, 2)
    assert Compute().dtype == "float32"  # counting ignores it: float64 throughout


# --------------------------------------------------------------------------- degenerate curves


def curve_points(traj: Trajectories, i: int, t: np.ndarray) -> torch.Tensor:
    """x(t) of curve i straight from its definition (module docstring of .trajectories), in
    NumPy: independent of tsens' own evaluation."""
    if traj.is_ellipse:
        x = traj.center[i] + np.cos(t)[:, None] * traj.u[i] + np.sin(t)[:, None] * traj.v[i]
    else:
        p = traj.points[i]
        nxt = np.roll(p, -1, axis=0)
        seg = np.minimum(np.floor(t).astype(int), traj.segments - 1)
        s = (t - seg)[:, None]
        x = p[seg] + s * (nxt[seg] - p[seg])
    return torch.from_numpy(x)


def dense_count(net, traj: Trajectories, i: int, k: int = 40_000) -> list[int]:
    """Per-layer transitions of curve i by brute force: piece codes from the reference
    nn.Module at k points evenly spread over the parameter, wrapping around when closed."""
    closed = traj.is_ellipse or traj.closed
    t = np.linspace(0, traj.period, k, endpoint=not closed)
    codes = brute_force_codes(net, curve_points(traj, i, t))
    if closed:
        codes = [torch.cat([c, c[:1]]) for c in codes]
    return [int((c[1:] - c[:-1]).abs().sum()) for c in codes]


def without_repeats(points: np.ndarray, closed: bool) -> np.ndarray:
    """The polyline's points with consecutive repeats (and, closed, a last point equal to the
    first) removed: the same path without zero-length segments."""
    keep = [points[0]]
    for q in points[1:]:
        if not np.array_equal(q, keep[-1]):
            keep.append(q)
    if closed and len(keep) > 1 and np.array_equal(keep[-1], keep[0]):
        keep.pop()
    return np.stack(keep)


def finite_columns(res) -> None:
    for name, values in res.columns.items():
        if name not in ("trajectory_kind", "indices", "method"):
            assert np.isfinite(np.asarray(values, dtype=np.float64)).all(), name


def test_a_curve_that_is_one_point_is_refused_naming_it():
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=(2, 3, 4))
    u[1] = v[1] = 0
    with pytest.raises(TsensError, match=r"curve 1 is a single point \(keys 'u' and 'v' are 0\)"):
        Trajectories("t", rng.normal(size=(3, 4)), u, v)
    points = rng.normal(size=(3, 5, 4))
    points[2] = points[2, 3]  # every point equal
    points[0, 1] = points[0, 0]  # one repeat only: a curve
    for closed in (True, False):
        with pytest.raises(TsensError, match=r"trajectories: curve 2 is a single point .*'points'"):
            Trajectories("t", points=points, closed=closed)
    points[1] = 0.0
    with pytest.raises(
        TsensError, match=r"curve 1 \(data indices 2, 3\) is .*; 2 of the 3 curves are points$"
    ):
        Trajectories("t", points=points, indices=np.arange(6).reshape(3, 2))
    with pytest.raises(TsensError, match="no curves"):
        Trajectories("t", np.zeros((0, 4)), np.zeros((0, 4)), np.zeros((0, 4)))


def test_ellipses_through_identical_samples_are_refused_with_their_data_indices(tmp_path):
    path = tmp_path / "same.npz"
    x = np.tile(np.random.default_rng(1).normal(size=(1, 5)), (10, 1))
    np.savez(path, x=x, y=np.zeros(10, dtype=np.int64))
    data = load_dataset(str(path), limit=4, seed=3)  # original indices, not positions
    with pytest.raises(
        TsensError, match=r"^ellipse: curve 0 \(data indices [\d, ]+\) is a single point"
    ) as err:
        ellipses_through_data(data, 2, seed=0)
    named = {int(i) for i in str(err.value).split("data indices ")[1].split(")")[0].split(", ")}
    assert len(named) == 3 and named <= set(data.indices.tolist())
    assert "`seed`" in str(err.value) and len(str(err.value).splitlines()) == 1


def test_translations_of_an_image_every_shift_leaves_unchanged_are_refused(tmp_path):
    path = tmp_path / "rows.npz"
    x = np.repeat(np.random.default_rng(2).normal(size=(3, 1, 4, 1)), 5, axis=3)  # constant rows
    np.savez(path, x=x)
    data = load_dataset(str(path))
    assert data.image_shape == (1, 4, 5)
    with pytest.raises(TsensError, match=r"^translations: curve 0 \(data indices \d\) is a single point"):
        translation_polygons(data, 2, seed=0)
    x[1, 0, 0, 0] += 1.0  # one image changes under a shift, others do not: still refused
    np.savez(path, x=x)
    with pytest.raises(TsensError, match="single point"):
        translation_polygons(load_dataset(str(path)), 3, seed=0)


def test_a_point_curve_is_one_line_on_the_command_line(files, tmp_path):
    same = tmp_path / "same.npz"
    np.savez(same, x=np.ones((5, 6), dtype=np.float32), y=np.zeros(5, dtype=np.int64))
    result = run("transitions", files["ckpt"], "--data", same, code=2)
    one_line_error(result, "curve 0 (data indices", "single point", "--seed")


def test_ellipse_through_two_identical_samples_is_a_segment_there_and_back(tmp_path):
    """Through a, a, b the ellipse is flat: it runs from b to (4a − b)/3 and back, so its length
    is 8|a − b|/3, and its counts are those of dense sampling on the reference module."""
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(2, 3))
    path = tmp_path / "twice.npz"
    np.savez(path, x=np.stack([a, b, a]))
    net = random_network((3, 6, 5, 2), seed=5, scale=3.0)
    traj = ellipses_through_data(prepared_for(net, load_dataset(str(path))), 1, seed=0)
    assert np.linalg.matrix_rank(np.stack([traj.u[0], traj.v[0]]), tol=1e-12) == 1
    assert traj.lengths()[0] == pytest.approx(8 * np.linalg.norm(a - b) / 3, rel=1e-12)
    for method in ("exact", "sampled"):
        res = count_transitions(net, traj, method=method, points=1 << 16, jacobian=True)
        finite_columns(res)
        assert res.columns["transitions"][0] > 0
        assert [int(res.columns[f"transitions_l{l}"][0]) for l in (1, 2)] == dense_count(net, traj, 0)
        assert res.columns["transitions_per_length"][0] == pytest.approx(
            res.columns["transitions"][0] / (8 * np.linalg.norm(a - b) / 3), rel=1e-12
        )


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_flat_ellipse_through_collinear_points_counts_its_segment_twice(activation):
    """Three collinear points: the ellipse is the segment between its extremes, run there and
    back: twice the count of the open segment, and the count of dense sampling."""
    rng = np.random.default_rng(6)
    net = random_network((4, 7, 5, 2), activation=activation, seed=7, scale=3.0)
    for _ in range(3):
        p, w = rng.normal(size=(2, 4))
        x = p + rng.uniform(-2, 2, size=(3, 1)) * w
        c = x.mean(0)
        u = x[0] - c
        v = (2 / math.sqrt(3)) * (x[1] - c + u / 2)
        flat = Trajectories("t", c[None], u[None], v[None])
        # the extremes, found independently: the farthest curve points along w, densely
        t = np.linspace(0, TWO_PI, 200_001)
        along = curve_points(flat, 0, t).numpy() @ w
        ends = np.stack(
            [x[0] + (along.min() - x[0] @ w) / (w @ w) * w, x[0] + (along.max() - x[0] @ w) / (w @ w) * w]
        )
        assert flat.lengths()[0] == pytest.approx(2 * np.linalg.norm(ends[1] - ends[0]), rel=1e-8)
        segment = Trajectories("t", points=ends[None], closed=False)
        e = exact(net, flat)
        assert np.array_equal(e, 2 * exact(net, segment))
        assert e[0].tolist() == dense_count(net, flat, 0)


def test_flat_ellipse_through_the_origin_of_a_bias_free_net():
    """Every unit crosses 0 at the origin at once, twice along the flat ellipse (the slivers
    between coinciding crossings are dropped): twice the straight segment's count."""
    net = random_network((4, 6, 5, 2), bias=False, seed=3)
    x = np.random.default_rng(1).normal(size=4)
    flat = Trajectories("t", np.zeros((1, 4)), x[None], np.zeros((1, 4)))  # x cos t: 0 at π/2, 3π/2
    segment = Trajectories("t", points=np.stack([-x, x])[None], closed=False)
    e = exact(net, flat)
    assert e[0].tolist() == dense_count(net, flat, 0) == [2 * n for n in dense_count(net, segment, 0)]
    assert e[0].sum() > 0


@settings(max_examples=25, deadline=None)
@given(
    d=st.integers(1, 4),
    k=st.integers(2, 5),
    closed=st.booleans(),
    activation=st.sampled_from(ACTIVATIONS),
    seed=st.integers(0, 1000),
    repeats=st.lists(st.integers(0, 2), min_size=5, max_size=5),
    wrap=st.booleans(),
)
def test_repeated_points_change_nothing(d, k, closed, activation, seed, repeats, wrap):
    """A point repeated consecutively adds a zero-length segment, no part of the path: counts
    (exact and sampled), length and the Jacobian along the curve are the polyline's without it."""
    net = random_network((d, 5, 4, 2), activation=activation, seed=seed, scale=2.0)
    base = polylines(d, 1, k, seed=seed, closed=closed).points[0]
    points = np.repeat(base, np.array(repeats[:k]) + 1, axis=0)
    if wrap and closed:
        points = np.concatenate([points, points[:1]])  # the last segment goes nowhere
    repeated = Trajectories("t", points=points[None], closed=closed)
    plain = Trajectories("t", points=without_repeats(points, closed)[None], closed=closed)
    assert plain.points.shape[1] == k
    assert np.array_equal(exact(net, repeated), exact(net, plain))
    assert np.array_equal(sampled_transitions(net, repeated, 97), sampled_transitions(net, plain, 97))
    assert repeated.lengths()[0] == pytest.approx(plain.lengths()[0], rel=1e-14)
    a = count_transitions(net, repeated, jacobian=True)
    b = count_transitions(net, plain, jacobian=True)
    finite_columns(a)
    assert a.columns["transitions_per_length"] == pytest.approx(
        b.columns["transitions_per_length"], rel=1e-14
    )
    assert a.columns["jac_prob_mean"] == pytest.approx(b.columns["jac_prob_mean"], rel=1e-9)
    assert a.columns["jac_prob_max"] == pytest.approx(b.columns["jac_prob_max"], rel=1e-9)
    assert len(a.regions.lo) == len(b.regions.lo)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_repeated_points_equal_brute_force_dense_sampling(activation):
    net = random_network((3, 4, 3, 2), activation=activation, seed=11, scale=2.0)
    for closed in (False, True):
        poly = polylines(3, 2, 4, seed=12, closed=closed)
        points = np.repeat(poly.points, [2, 1, 3, 1], axis=1)
        repeated = Trajectories("t", points=points, closed=closed)
        for i in range(2):
            assert exact(net, repeated)[i].tolist() == dense_count(net, poly, i)


def test_a_repeated_point_on_a_breakpoint_is_no_region_of_its_own():
    """z₂ = relu(w·x) + relu(−w·x) = |w·x| touches 0 at the origin without crossing it. Standing
    at the origin (a repeated point) must not make a piece of its own there: the counts are
    those of the straight segment through it, sampled densely."""
    w = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64)
    layers = (
        Layer(torch.cat([w, -w])),
        Layer(torch.ones(1, 2, dtype=torch.float64)),
        Layer(torch.ones(1, 1, dtype=torch.float64)),
    )
    net = Network(layers, parse_activation("relu"))
    x = np.array([0.3, -0.7, 1.1])
    straight = Trajectories("t", points=np.stack([-x, x])[None], closed=False)
    want = dense_count(net, straight, 0)  # even k: no sample at the origin
    assert want == [2, 0]
    for points in ([-x, 0 * x, 0 * x, x], [-x, 0 * x, 0 * x, 0 * x, x]):
        repeated = Trajectories("t", points=np.stack(points)[None], closed=False)
        assert exact(net, repeated)[0].tolist() == want
        assert sampled_transitions(net, repeated, 1000)[0].tolist() == want  # even: none at 0


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_units_constant_along_the_curve(activation):
    """Units whose weights are orthogonal to the curve (R = 0, β = 0) are constant: none
    crosses, also when the constant is exactly a breakpoint; a zero row in layer 2 is constant
    there too. Against dense sampling and the closed form of the moving units."""
    act = parse_activation(activation)
    bps = act.breakpoints
    rows = [[0.0, 0.0, 1.0]] * (len(bps) + 1) + [[1.0, 0.0, 0.0], [0.6, 0.8, 0.0]]
    biases = [b - 0.5 for b in bps] + [0.25, 0.0, -0.3]  # z ≡ b for each breakpoint, z ≡ 0.75
    w2 = torch.ones(3, len(rows), dtype=torch.float64)
    w2[1] = 0.0  # z₂ ≡ 0 along any curve
    layers = (
        Layer(torch.tensor(rows, dtype=torch.float64), torch.tensor(biases, dtype=torch.float64)),
        Layer(w2, torch.tensor([0.1, 0.0, -0.2], dtype=torch.float64)),
        Layer(torch.ones(1, 3, dtype=torch.float64)),
    )
    net = Network(layers, act)
    circle = Trajectories("t", np.array([[0.0, 0.0, 0.5]]), np.array([[2.5, 0, 0]]), np.array([[0, 2.5, 0]]))
    square = Trajectories("t", points=np.array([[[-3.0, -3, 0.5], [3, -3, 0.5], [3, 3, 0.5], [-3, 3, 0.5]]]))
    for traj in (circle, square):
        e = exact(net, traj)
        assert e[0].tolist() == dense_count(net, traj, 0)
    # layer 1 on the circle: only the two moving units cross, each breakpoint within 2.5 twice
    alpha, radius = np.array([0.0, -0.3]), 2.5
    want = sum(2 * int(abs(a - b) < radius) for a in alpha for b in bps)
    assert exact(net, circle)[0, 0] == want


def test_lengths_do_not_underflow_or_overflow():
    """Arc length scales with the curve: a tiny curve is not of length 0, a huge one not inf or
    NaN (2πr for a circle, the perimeter for a square)."""
    for r in (1e-200, 1.0, 1e200):
        with np.errstate(divide="raise", over="raise", invalid="raise"):
            circle = Trajectories("t", np.zeros((1, 3)), np.array([[r, 0, 0]]), np.array([[0, r, 0]]))
            flat = Trajectories("t", np.zeros((1, 2)), np.array([[r, 0]]), np.array([[2 * r, 0]]))
            square = Trajectories("t", points=r * np.array([[[0.0, 0], [1, 0], [1, 1], [0, 1]]]))
            assert circle.lengths()[0] == pytest.approx(TWO_PI * r, rel=1e-12)
            assert flat.lengths()[0] == pytest.approx(4 * math.sqrt(5) * r, rel=1e-12)
            assert square.lengths()[0] == pytest.approx(4 * r, rel=1e-14)


def test_summary_of_one_curve_has_no_standard_deviation():
    """The sample standard deviation of one value is undefined: None (n/a), never NaN; with
    several curves it is the sample one (ddof = 1), as the statistics module computes it."""
    import statistics

    net = random_network((5, 8, 6, 3), seed=1)
    traj = scaled_ellipses(5, 4, seed=3)
    res = count_transitions(net, traj, jacobian=True)
    row = transitions_summary(res)
    for name in ("transitions", "transitions_l1", "transitions_per_length"):
        assert row[f"{name}_std"] == pytest.approx(statistics.stdev(map(float, res.columns[name])))
    one = count_transitions(net, traj.chunks(1)[2], jacobian=True)
    row = transitions_summary(one)
    for name in ("transitions", "transitions_l1", "transitions_l2", "transitions_per_length"):
        assert row[f"{name}_std"] is None
        value = float(one.columns[name][0])
        assert [row[f"{name}_{q}"] for q in ("mean", "q05", "median", "q95")] == pytest.approx([value] * 4)
    numbers = [v for v in row.values() if isinstance(v, float)]
    assert numbers and np.isfinite(numbers).all()


def test_dataset_image_shape_comes_from_the_data_set(tmp_path):
    """The named sets stored flat know their image shape; files are images when stored so."""
    from tsens.datasets.named import FLAT_IMAGES

    assert FLAT_IMAGES["digits"] == (1, 8, 8)
    assert load_dataset("digits").image_shape == (1, 8, 8)
    assert load_dataset("Digits_Test", limit=5).image_shape == (1, 8, 8)
    assert load_dataset("mnist1d-test").image_shape is None
    flat, images = tmp_path / "flat.npz", tmp_path / "images.npz"
    np.savez(flat, x=np.zeros((3, 64), dtype=np.float32))  # 64 features, but not a named set
    np.savez(images, x=np.zeros((3, 2, 4, 5), dtype=np.float32))
    assert load_dataset(str(flat)).image_shape is None
    assert load_dataset(str(images)).image_shape == (2, 4, 5)
    assert load_dataset(str(images)).with_preprocess(Preprocess(crop=3)).image_shape == (2, 4, 5)


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def files(tmp_path):
    net = random_network((6, 8, 5, 3), seed=0)
    state = {k: v.float().contiguous() for k, v in net.torch_module().state_dict().items()}
    ckpt = tmp_path / "net.safetensors"
    save_file(state, str(ckpt), metadata={"tsens.activation": "relu"})
    data = tmp_path / "data.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.normal(size=(30, 6)).astype(np.float32), y=rng.integers(0, 3, 30))
    return {"ckpt": str(ckpt), "data": str(data), "dir": tmp_path}


def test_cli_rows_summary_and_round_trip(files):
    out, summary, curves = files["dir"] / "t.parquet", files["dir"] / "s.csv", files["dir"] / "c.npz"
    run(
        "transitions", files["ckpt"], "--data", files["data"], "--count", 7, "-o", out, "--summary", summary,
        "--save-trajectories", curves, "--jacobian", "-q",
    )  # fmt: skip
    table = pq.read_table(out)
    assert table.num_rows == 7
    for name in ("checkpoint", "run", "step", "trajectory", "trajectory_kind", "indices", "method", "transitions",
                 "transitions_l1", "transitions_l2", "length", "transitions_per_length", "jac_prob_mean", "jac_prob_max"):  # fmt: skip
        assert name in table.column_names, name
    rows = table.to_pylist()
    assert all(
        len(r["indices"]) == 3 and r["transitions"] == r["transitions_l1"] + r["transitions_l2"] for r in rows
    )
    assert "transitions_median" in summary.read_text().splitlines()[0]
    again = files["dir"] / "again.parquet"
    run("transitions", files["ckpt"], "--trajectory", curves, "-o", again, "-q")
    back = pq.read_table(again)
    assert back.column("transitions").to_pylist() == table.column("transitions").to_pylist()
    assert back.column("indices").to_pylist() == table.column("indices").to_pylist()


def test_cli_sampled_random_ellipse_and_plot(files):
    out, png = files["dir"] / "s.parquet", files["dir"] / "t.png"
    run("transitions", files["ckpt"], "--trajectory", "random-ellipse", "--count", 3, "--method", "sampled",
        "--points", 512, "-o", out, "-q")  # fmt: skip
    sampled = pq.read_table(out).column("transitions").to_pylist()
    out2 = files["dir"] / "e.parquet"
    res = run(
        "transitions",
        files["ckpt"],
        "--trajectory",
        "random-ellipse",
        "--count",
        3,
        "-o",
        out2,
        "--plot",
        png,
    )
    exact_counts = pq.read_table(out2).column("transitions").to_pylist()
    assert all(s <= e for s, e in zip(sampled, exact_counts, strict=True))
    assert png.read_bytes()[:4] == b"\x89PNG" and "transitions along 3 random-ellipse curves" in res.stderr


def test_cli_translations_on_images(tmp_path):
    ckpt = tmp_path / "digits.safetensors"
    net = random_network((64, 10, 10), seed=1)
    save_file({k: v.float().contiguous() for k, v in net.torch_module().state_dict().items()}, str(ckpt))
    out = tmp_path / "t.csv"
    run(
        "transitions",
        ckpt,
        "--data",
        "digits-test",
        "--trajectory",
        "translations",
        "--count",
        2,
        "-o",
        out,
        "-q",
    )
    assert len(out.read_text().splitlines()) == 3


def test_cli_bad_input_is_one_line(files):
    base = ("transitions", files["ckpt"])
    one_line_error(
        run(*base, "--data", files["data"], "--trajectory", "translations", code=2), "translations", "images"
    )
    bad = files["dir"] / "bad.npz"
    np.savez(bad, points=np.random.default_rng(0).normal(size=(2, 3, 4)))
    one_line_error(run(*base, "--trajectory", bad, code=2), str(bad), "'points'", "expects 6")
    np.savez(bad, nothing=np.zeros(3))
    one_line_error(run(*base, "--trajectory", bad, code=2), str(bad), "'center'")
    one_line_error(run(*base, "--data", files["data"], "--count", 0, code=2), "--count")
    one_line_error(run(*base, "--data", files["data"], "--points", 1, code=2), "--points")
    one_line_error(run(*base, code=2), "--trajectory ellipse needs --data")
    one_line_error(run(*base, "--trajectory", "spiral", code=2), "--trajectory", "spiral")
    one_line_error(run(*base, "--data", files["data"], "--plot", files["dir"] / "x.jpg", code=2), "--plot")


def test_a_npy_or_text_file_as_curves_is_refused_in_one_line(files, tmp_path):
    npy = tmp_path / "curves.npy"
    np.save(npy, np.zeros((2, 6)))
    text = tmp_path / "curves.npz"
    text.write_text("not an archive")
    for path in (npy, text):
        result = run("transitions", files["ckpt"], "--trajectory", path, code=2)
        one_line_error(result, path.name, "not a valid .npz file")
