"""``tsens activations``: active-unit counts per sample, or activation frequency per unit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import click

from . import decode, options, render
from .command import command
from .outputs import checked_targets, write_tables

_STATS = ("mean", "variance", "skewness", "excess_kurtosis", "normality_p")


@command()
@options.checkpoint_options
@options.data_option()
@options.preprocess_options
@click.option("--per-unit", is_flag=True, help="One row per hidden unit with its activation frequency.")
@options.compute_options
@options.executor_options
@options.output_options
@checked_targets()
def activations(**params: Any) -> None:
    """Active units per hidden layer and in total, N_l(x) and N(x) ([T] Thm 3.2).

    A unit is active on its activation's piece of largest slope (ReLU: z > 0). The summary
    gives mean, variance, skewness, excess kurtosis and a normality p-value per layer, and the
    dead (never active) and always-active units on this data.
    """
    from ..commands import activations as run

    result = decode.call(run, params, ("checkpoints", "data"), ("per_unit",), _render)
    write_tables(result, params)


def _render(net: Any, summary: Sequence[dict[str, Any]], rows: Mapping[str, Any]) -> None:
    row = summary[0]
    layers = [k.removeprefix("width_") for k in row if k.startswith("width_")]
    table = [
        (
            f"layer {key[1:]} ({row[f'width_{key}']})" if key != "total" else "total",
            *(row[f"active_{key}_{s}"] for s in _STATS),
            row[f"dead_{key}"],
            row[f"always_on_{key}"],
        )
        for key in layers
    ]
    render.show_table(
        f"{row['checkpoint']}: {net.describe()}, active units on {row['samples']:,} samples",
        ["layer (width)", "mean", "variance", "skewness", "ex. kurtosis", "normal p", "dead", "always on"],
        table,
    )
