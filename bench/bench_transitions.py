"""Speed of exact transition counting against the ways it can be done otherwise, in one run.

Setup ([N] §3): an MLP 3072-100-100-100-100-10, He-initialised weights, biases N(0, 0.1²),
100 segments between two N(0, I) points and 100 random ellipses with N(0, I) axes. Per trajectory:

* ``tsens`` exact (layer-by-layer subdivision, float64);
* a region-to-region **walk** (the route of Gamba et al. 2022's exact counter): from the current
  point, one forward pass of the curve's coefficient vectors with the current pattern (float64),
  the first crossing of any unit ahead, step across it, repeat; batched over trajectories;
* 2^20-point **sampling** with plain forward passes (float32, [N]'s way);
* 2^20-point sampling that folds the first layer onto the curve (z₁ from 2–3 vectors; the
  *smart* sampler, ``tsens.transitions.sampled_transitions`` in float32).

The samplers are timed on a few trajectories and scaled per trajectory (printed as such); their
counts are checked against the exact ones on those trajectories. Then the cost of the exact count
at width 1000 and at depth 8.

Usage: python bench/bench_transitions.py [--quick]
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import numpy as np
import torch

from tsens.network import Layer, Network
from tsens.piecewise import parse_activation
from tsens.transitions import Trajectories, exact_transitions, random_ellipses, sampled_transitions
from tsens.transitions.exact import piece_tables

TWO_PI = 2 * math.pi


def he_network(widths: tuple[int, ...], seed: int = 0) -> Network:
    """He-initialised weights N(0, 2/fan_in), biases N(0, 0.1²), ReLU, float64."""
    g = torch.Generator().manual_seed(seed)
    layers = []
    for k, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        w = torch.randn(fan_out, fan_in, generator=g, dtype=torch.float64) * (2 / fan_in) ** 0.5
        b = 0.1 * torch.randn(fan_out, generator=g, dtype=torch.float64)
        layers.append(Layer(w, b, name=str(k)))
    return Network(tuple(layers), parse_activation("relu"))


def segments(dim: int, count: int, seed: int) -> Trajectories:
    """``count`` open segments between two N(0, I) points."""
    rng = np.random.default_rng(seed)
    return Trajectories("segment", points=rng.standard_normal((count, 2, dim)), closed=False)


def timed(fn: Callable[[], object], repeat: int = 1) -> tuple[float, object]:
    """Best wall time of ``repeat`` runs after one warm-up, and the last result."""
    out = fn()
    best = math.inf
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


# --------------------------------------------------------------------------- baselines


def plain_sampled(net: Network, traj: Trajectories, points: int, chunk: int = 1 << 14) -> np.ndarray:
    """[N]'s count by plain forward passes of the points x(t_i) (float32), per hidden layer."""
    net32 = net.to(dtype=torch.float32)
    weights = [(layer.folded_weight, layer.folded_bias) for layer in net32.layers[:-1]]
    coef = traj.pieces().float()  # T × K × d (single-piece curves: ellipses and segments)
    period = TWO_PI if traj.is_ellipse else 1.0
    closed = traj.is_ellipse
    counts = np.zeros((traj.count, len(weights)), dtype=np.int64)
    t_all = torch.arange(points, dtype=torch.float64) * (period / (points if closed else points - 1))
    for c in range(traj.count):
        prev, head = None, None
        total = [0] * len(weights)
        for start in range(0, points, chunk):
            t = t_all[start : start + chunk]
            basis = [torch.ones_like(t), torch.cos(t), torch.sin(t)] if closed else [torch.ones_like(t), t]
            x = torch.stack(basis, 1).float() @ coef[c]  # the points themselves, chunk × d
            a, codes = x, []
            for w, b in weights:
                z = torch.addmm(b, a, w.T)
                codes.append(net32.activation.codes(z).to(torch.int16))
                a = net32.activation(z)
            for i, code in enumerate(codes):
                total[i] += int((code[1:] - code[:-1]).abs().sum())
                if prev is not None:
                    total[i] += int((code[0] - prev[i]).abs().sum())
            prev = [code[-1] for code in codes]
            head = head or [code[0] for code in codes]
        if closed:
            for i in range(len(weights)):
                total[i] += int((head[i] - prev[i]).abs().sum())
        counts[c] = total
    return counts


def walk(net: Network, traj: Trajectories) -> np.ndarray:
    """Region-to-region walk, one forward pass per crossing, batched over trajectories (float64).

    From the current parameter t and the current pattern, the coefficient vectors of the curve
    (ellipse: c, u, v; segment: p, q − p) go through every layer with that pattern fixed; the first
    crossing of any unit ahead of t ends the region; the walk steps there and flips that unit.
    Single-piece curves only (ellipses, segments). Returns the total count per trajectory."""
    layers = [(layer.folded_weight, layer.folded_bias) for layer in net.layers[:-1]]
    slopes, offsets = piece_tables(net.activation, torch.device("cpu"))
    bps = torch.tensor(net.activation.breakpoints, dtype=torch.float64)
    coef0 = traj.pieces()
    n = traj.count
    ellipse = traj.is_ellipse
    end = TWO_PI if ellipse else 1.0
    # the pattern at t = 0 (generic curves: no unit sits on a breakpoint there)
    a = coef0[:, 0] + coef0[:, 1] if ellipse else coef0[:, 0]  # x(0)
    codes = []
    for w, b in layers:
        z = a @ w.T + b
        codes.append(net.activation.codes(z).long())
        a = net.activation(z)
    t = torch.zeros(n, dtype=torch.float64)
    last = torch.full((n, 2), -1, dtype=torch.long)  # (layer, unit) just crossed
    count = torch.zeros(n, dtype=torch.int64)
    active = torch.arange(n)
    while len(active):
        c = coef0[active]
        tc = t[active]
        best_t = torch.full((len(active),), end, dtype=torch.float64)
        best_l = torch.full((len(active),), -1, dtype=torch.long)
        best_j = torch.zeros(len(active), dtype=torch.long)
        best_d = torch.zeros(len(active), dtype=torch.long)
        x = c
        for li, (w, b) in enumerate(layers):
            z = x @ w.T
            z[:, 0] += b
            for bp in bps:
                alpha = z[:, 0] - bp
                if ellipse:
                    r = torch.hypot(z[:, 1], z[:, 2])
                    q = -alpha / r
                    cross = q.abs() < 1
                    psi = torch.atan2(z[:, 2], z[:, 1])
                    th = torch.acos(q.clamp(-1, 1))
                    cands = [(torch.remainder(psi - th, TWO_PI), 1), (torch.remainder(psi + th, TWO_PI), -1)]
                else:
                    r = -alpha / z[:, 1]
                    cross = z[:, 1] != 0
                    cands = [(r, torch.sign(z[:, 1]).long())]
                for root, direction in cands:
                    just = (last[active, 0] == li)[:, None] & (
                        torch.arange(z.shape[2])[None, :] == last[active, 1][:, None]
                    )
                    ahead = cross & (root > tc[:, None]) & ~(just & (root <= tc[:, None] + 1e-9))
                    root = torch.where(ahead, root, torch.full_like(root, math.inf))
                    m, j = root.min(1)
                    better = m < best_t
                    best_t = torch.where(better, m, best_t)
                    best_l = torch.where(better, li, best_l)
                    best_j = torch.where(better, j, best_j)
                    d = direction if isinstance(direction, int) else direction.gather(1, j[:, None])[:, 0]
                    best_d = torch.where(better, torch.as_tensor(d), best_d)
            code = codes[li][active]
            x = z * slopes[code][:, None, :]
            x[:, 0] += offsets[code]
        done = best_l < 0
        step = active[~done]
        count[step] += 1
        t[step] = best_t[~done]
        for li in range(len(layers)):
            sel = ~done & (best_l == li)
            rows = active[sel]
            codes[li][rows, best_j[sel]] += best_d[sel]
        last[step, 0], last[step, 1] = best_l[~done], best_j[~done]
        active = step
    return count.numpy()


# --------------------------------------------------------------------------- sections


def row(name: str, per_traj: float, note: str = "") -> None:
    print(f"  {name:<58s} {per_traj * 1e3:10.2f} ms/trajectory  {note}")


def comparison(count: int, sample_count: int, points: int) -> None:
    widths = (3072, 100, 100, 100, 100, 10)
    net = he_network(widths)
    print(f"{'-'.join(map(str, widths))}, He init, biases N(0, 0.1²), {torch.get_num_threads()} threads")
    for name, traj in (
        ("segments", segments(3072, count, seed=1)),
        ("random ellipses", random_ellipses(3072, count, seed=2)),
    ):
        t_exact, exact = timed(lambda traj=traj: exact_transitions(net, traj).per_layer, repeat=2)
        totals = exact.sum(1)
        print(
            f"\n{count} {name}: exact transitions mean {totals.mean():.1f} (min {totals.min()}, max "
            f"{totals.max()}), per layer {np.round(exact.mean(0), 1).tolist()}"
        )
        row("tsens exact (layer-by-layer subdivision, float64)", t_exact / count)
        t_walk, walked = timed(lambda traj=traj: walk(net, traj))
        same = "same counts" if np.array_equal(walked, totals) else f"differs on {(walked != totals).sum()}"
        row(
            "region-to-region walk, one forward pass per crossing",
            t_walk / count,
            f"{t_walk / t_exact:7.1f}× exact's time; {same}",
        )
        few = Trajectories(
            traj.kind,
            *(
                (traj.center[:sample_count], traj.u[:sample_count], traj.v[:sample_count])
                if traj.is_ellipse
                else (None, None, None)
            ),
            points=None if traj.is_ellipse else traj.points[:sample_count],
            closed=traj.closed,
        )
        t0 = time.perf_counter()
        smart = sampled_transitions(net, few, points, dtype=torch.float32)
        t_smart = (time.perf_counter() - t0) / sample_count
        t0 = time.perf_counter()
        plain = plain_sampled(net, few, points)
        t_plain = (time.perf_counter() - t0) / sample_count
        e_few = exact[:sample_count]
        for label, t_s, counts in (
            (
                f"2^{round(math.log2(points))}-point sampling, plain forward passes (float32)",
                t_plain,
                plain,
            ),
            (f"2^{round(math.log2(points))}-point sampling, first layer folded (float32)", t_smart, smart),
        ):
            fewer = int((e_few.sum(1) - counts.sum(1)).sum())
            agree = (
                "same counts as exact"
                if fewer == 0
                else f"{fewer} fewer transitions than exact"
                if fewer > 0
                else f"{-fewer} MORE than exact (float32 rounding flips points next to a breakpoint)"
            )
            row(
                label,
                t_s,
                f"{t_s / (t_exact / count):7.0f}× exact's time; {agree} (timed on {sample_count}, scaled)",
            )


def scaling(count: int) -> None:
    print("\ncost of the exact count elsewhere (random ellipses / segments as above)")
    for widths in ((3072, 1000, 1000, 1000, 1000, 10), (3072, *([100] * 8), 10)):
        net = he_network(widths)
        for name, traj in (
            ("segments", segments(3072, count, seed=1)),
            ("random ellipses", random_ellipses(3072, count, seed=2)),
        ):
            t, res = timed(lambda traj=traj, net=net: exact_transitions(net, traj).per_layer)
            print(
                f"  {'-'.join(map(str, widths)):<34s} {count} {name:<16s} {t / count * 1e3:9.1f} ms/curve, "
                f"{res.sum(1).mean():8.0f} transitions on average"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer trajectories and points (a smoke run)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.quick:
        comparison(count=10, sample_count=1, points=1 << 16)
        scaling(count=2)
    else:
        comparison(count=100, sample_count=2, points=1 << 20)
        scaling(count=10)


if __name__ == "__main__":
    main()
