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
from tsens.datasets import load_dataset
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
    np.savez(bad, points=np.zeros((2, 3, 4)))
    one_line_error(run(*base, "--trajectory", bad, code=2), str(bad), "'points'")
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
