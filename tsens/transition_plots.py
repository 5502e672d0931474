"""The ``tsens transitions --plot`` figure (the optional extra ``tsens[plot]``, matplotlib)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .plots import require_matplotlib, save_figure
from .transitions import TransitionResult

_LAYER_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
MAX_CHECKPOINTS = 30
"""Checkpoints shown in the distribution panel; beyond this the panel says how many were left out."""


def plot_transitions(results: Sequence[TransitionResult], path: str | Path, curve: int = 0) -> None:
    """Top: ‖J_prob‖_F along curve ``curve`` of the last result (the latest checkpoint), one value
    per linear region (at its midpoint), every transition marked below, by layer ([N] Fig. 2). Bottom:
    the distribution of transitions per curve for every checkpoint (box and points)."""
    plt = require_matplotlib()
    first, last = results[0], results[-1]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.4), gridspec_kw={"height_ratios": [1.2, 1]})
    if last.regions is not None and last.region_jacobian is not None:
        _along_curve(top, last, curve)
    else:
        top.text(0.5, 0.5, "no Jacobian along the curve was computed", ha="center", va="center")
        top.set_axis_off()
    shown = list(results)[:MAX_CHECKPOINTS]
    values = [np.asarray(r.columns["transitions"], dtype=float) for r in shown]
    labels = [_short(r.network.path) for r in shown]
    positions = np.arange(1, len(shown) + 1)
    bottom.boxplot(values, positions=positions, widths=0.5, showfliers=False)
    rng = np.random.default_rng(0)
    for x, v in zip(positions, values, strict=True):
        bottom.scatter(x + rng.uniform(-0.15, 0.15, len(v)), v, s=6, alpha=0.5, color="#1f77b4", zorder=3)
    bottom.set_xticks(positions)
    bottom.set_xticklabels(
        labels, rotation=30 if len(shown) > 3 else 0, ha="right" if len(shown) > 3 else "center"
    )
    bottom.tick_params(labelsize=7)
    how = first.method if first.method == "exact" else f"sampled, {first.points:,} points"
    bottom.set_ylabel(f"transitions per curve ({how})", fontsize=8)
    title = f"{first.trajectories.count} {first.trajectories.kind} curves per checkpoint"
    if len(results) > MAX_CHECKPOINTS:
        title += f"; first {MAX_CHECKPOINTS} of {len(results)} checkpoints shown"
    bottom.set_title(title, fontsize=9)
    save_figure(fig, path)


def _along_curve(ax, result: TransitionResult, curve: int) -> None:
    regions = result.regions.of(curve)
    keep = result.regions.trajectory == curve
    jac = result.region_jacobian[keep]
    traj = result.trajectories
    edges = np.append(regions.lo, regions.hi[-1:])
    ax.stairs(jac, edges, color="black", lw=1.0, baseline=None, label="‖J_prob‖_F (region midpoint)")
    positive = jac[jac > 0]
    if len(positive) and positive.max() / positive.min() > 100:
        ax.set_yscale("log")
    # transitions as a rug along the bottom, one row per layer
    layers = int(regions.events_layer.max()) if len(regions.events_layer) else 0
    rug = ax.inset_axes([0, -0.02 - 0.04 * max(layers, 1), 1, 0.04 * max(layers, 1)], sharex=ax)
    for layer in range(1, layers + 1):
        ts = regions.events_t[regions.events_layer == layer]
        rug.vlines(
            ts, layer - 0.4, layer + 0.4, color=_LAYER_COLORS[(layer - 1) % len(_LAYER_COLORS)], lw=0.4
        )
    rug.set_ylim(layers + 0.5, 0.5)
    rug.set_yticks(range(1, layers + 1))
    rug.set_yticklabels([f"l{layer}" for layer in range(1, layers + 1)], fontsize=6)
    rug.tick_params(axis="x", labelsize=7)
    ax.tick_params(axis="x", labelbottom=False)
    if traj.is_ellipse and traj.indices is not None and traj.indices.shape[1] == 3:
        for k, index in enumerate(traj.indices[curve]):
            t = 2 * math.pi * k / 3
            ax.axvline(t, color="#d62728", lw=0.8, ls="--")
            ax.annotate(
                f"x{k + 1} (#{index})",
                (t, 1),
                xycoords=("data", "axes fraction"),
                fontsize=7,
                color="#d62728",
                xytext=(3, -10),
                textcoords="offset points",
            )
    unit = "t (radians)" if traj.is_ellipse else "t (segment index + position)"
    rug.set_xlabel(f"curve parameter {unit}", fontsize=8)
    ax.set_xlim(edges[0], edges[-1])
    ax.set_ylabel("‖J_prob‖_F", fontsize=8)
    total = int(result.columns["transitions"][curve])
    ax.set_title(
        f"{_short(result.network.path)}: curve {curve} ({traj.kind}), {total} transitions "
        "(marked below, by layer)",
        fontsize=9,
    )
    ax.tick_params(labelsize=7)


def _short(path: str) -> str:
    p = Path(path)
    return f"{p.parent.name}/{p.stem}" if p.parent.name else p.stem
