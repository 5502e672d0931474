"""``tsens activations``: active-unit counts per sample, or activation frequency per unit."""

from __future__ import annotations

from typing import Any

import click
import numpy as np

from ..active_units import count_statistics
from ..sweep import activations_per_sample
from . import options, render


@click.command()
@options.checkpoint_options
@click.option(
    "--data", "data_spec", required=True, help="Data set: a name (digits, cifar-test, ...) or a file."
)
@options.data_options
@click.option("--per-unit", is_flag=True, help="One row per hidden unit with its activation frequency.")
@options.compute_options
@options.output_options
def activations(data_spec: str, **params: Any) -> None:
    """Active units per hidden layer and in total, N_l(x) and N(x) ([T] Thm 3.2).

    A unit is active on its activation's piece of largest slope (ReLU: z > 0). The summary
    gives mean, variance, skewness, excess kurtosis and a normality p-value per layer, and the
    dead (never active) and always-active units on this data.
    """
    nets, data, compute = options.inputs(data_spec, params)
    tables = []
    for net in nets:
        with options.progress_for(params, net.path, len(data)) as progress:
            cols, totals = activations_per_sample(net, data, compute=compute, progress=progress)
        active = net.activation.active_code
        if params["per_unit"]:
            units = _unit_columns(totals, len(data), active)
            tables.append(options.per_checkpoint_table(net, units))
        else:
            tables.append(options.per_checkpoint_table(net, cols, {"sample": np.arange(len(data))}))
        if not params["quiet"]:
            _summary(net.path, net.describe(), cols, totals, len(data), active)
    options.emit("activations", tables, nets, {"data": data_spec}, {**params, "data": data_spec})


def _unit_columns(totals: list[np.ndarray], n: int, active: int) -> dict[str, np.ndarray]:
    layer = np.concatenate([np.full(len(t), l) for l, t in enumerate(totals, 1)])
    unit = np.concatenate([np.arange(len(t)) for t in totals])
    freq = np.concatenate([t / n for t in totals])
    cols = {"layer": layer, "unit": unit, "active_frequency": freq[:, active]}
    if freq.shape[1] > 2:
        cols.update({f"piece{k}_frequency": freq[:, k] for k in range(freq.shape[1])})
    return cols


def _summary(
    path: str, arch: str, cols: dict[str, np.ndarray], totals: list[np.ndarray], n: int, active: int
) -> None:
    rows = []
    for l, t in enumerate(totals, 1):
        s = count_statistics(cols[f"active_l{l}"])
        dead = int((t[:, active] == 0).sum())
        always = int((t[:, active] == n).sum())
        rows.append((f"layer {l} ({len(t)})", *s.values(), dead, always))
    s = count_statistics(cols["active_total"])
    dead = sum(int((t[:, active] == 0).sum()) for t in totals)
    always = sum(int((t[:, active] == n).sum()) for t in totals)
    rows.append(("total", *s.values(), dead, always))
    render.show_table(
        f"{path}: {arch}, active units on {n:,} samples",
        ["layer (width)", "mean", "variance", "skewness", "ex. kurtosis", "normal p", "dead", "always on"],
        rows,
    )
