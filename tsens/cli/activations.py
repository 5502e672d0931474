"""``tsens activations``: active-unit counts per sample, or activation frequency per unit."""

from __future__ import annotations

from typing import Any

import click

from ..jobs import OnlySet
from ..summaries import activations_summary, columns_of, unit_frequencies
from . import options, render
from .command import command
from .flow import per_sample
from .outputs import checked_targets

_STATS = ("mean", "variance", "skewness", "excess_kurtosis", "normality_p")


@command()
@options.checkpoint_options
@options.data_option()
@options.preprocess_options
@click.option("--per-unit", is_flag=True, help="One row per hidden unit with its activation frequency.")
@options.compute_options
@options.executor_options
@options.output_options
@checked_targets
def activations(**params: Any) -> None:
    """Active units per hidden layer and in total, N_l(x) and N(x) ([T] Thm 3.2).

    A unit is active on its activation's piece of largest slope (ReLU: z > 0). The summary
    gives mean, variance, skewness, excess kurtosis and a normality p-value per layer, and the
    dead (never active) and always-active units on this data.
    """
    rows = unit_frequencies if params["per_unit"] else columns_of
    per_sample(
        "activations",
        params,
        {"data": params["data"]},
        ["active"],
        OnlySet(activations_summary, listed=True),
        _render,
        columns=OnlySet(rows),
    )


def _render(rows: list[dict[str, Any]], arch: str) -> None:
    row = rows[0]
    layers = [k.removeprefix("width_") for k in row if k.startswith("width_")]
    rows = [
        (
            f"layer {key[1:]} ({row[f'width_{key}']})" if key != "total" else "total",
            *(row[f"active_{key}_{s}"] for s in _STATS),
            row[f"dead_{key}"],
            row[f"always_on_{key}"],
        )
        for key in layers
    ]
    render.show_table(
        f"{row['checkpoint']}: {arch}, active units on {row['samples']:,} samples",
        ["layer (width)", "mean", "variance", "skewness", "ex. kurtosis", "normal p", "dead", "always on"],
        rows,
    )
