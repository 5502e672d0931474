"""``tsens transitions``: how often the activation pattern changes along curves through the data."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import click

from ..choices import DEFAULT_POINTS, TRANSITION_METHODS
from . import decode, options, render
from .command import command
from .outputs import checked_targets, write_side_file, write_tables

SIDE_FILES = (("--plot", "plot", ".png"), ("--save-trajectories", "save_trajectories", ".npz"))
"""Extra outputs, refused before any work like ``-o``."""


@command(aliases={"same_curves": "--save-trajectories", "regions": "--plot"})
@options.checkpoint_options
@options.data_option(
    required=False,
    help="Data set the curves go through (a name or a file); ellipse and translations need it.",
)
@options.preprocess_options
@click.option(
    "--trajectory",
    default="ellipse",
    show_default=True,
    metavar="KIND",
    help="ellipse (through three data points) | random-ellipse (N(0, I) axes) | translations (the "
    "horizontal shifts of one image) | FILE.npz (your curves in input space).",
)
@click.option("--count", type=int, default=100, show_default=True, help="Curves per checkpoint (seeded).")
@click.option(
    "--method",
    type=click.Choice(TRANSITION_METHODS),
    default="exact",
    show_default=True,
    help="exact: every crossing; sampled: [N]'s sum over --points equidistant points.",
)
@click.option(
    "--points",
    type=int,
    default=DEFAULT_POINTS,
    show_default=True,
    metavar="K",
    help="Points per curve for --method sampled.",
)
@click.option(
    "--jacobian", is_flag=True, help="Also ‖J_prob‖_F along each curve (mean and max over its regions)."
)
@click.option(
    "--plot", default=None, metavar="FILE.png", help="‖J_prob‖ along one curve and the counts (tsens[plot])."
)
@click.option(
    "--save-trajectories",
    default=None,
    metavar="FILE.npz",
    help="Write the curves used (in input space, with data indices), readable by --trajectory.",
)
@options.compute_options
@options.executor_options
@options.output_options
@checked_targets(*SIDE_FILES)
def transitions(**params: Any) -> None:
    """Count transitions — changes of any hidden unit's linear piece — along closed curves
    through the data ([N] §3): exactly, every crossing in closed form, or sampled at K points.

    One row per curve: transitions in total and per layer, arc length, transitions per unit
    length, the data indices it goes through, and with --jacobian ‖J_prob‖_F along it. A unit
    counts once per breakpoint it crosses; touching one counts nothing. Computed in float64
    whatever --dtype. More transitions = a more complex function near the data.
    """
    from ..commands import transitions as run

    source = click.get_current_context().get_parameter_source("points")
    if params["method"] == "exact" and source == click.core.ParameterSource.COMMANDLINE:
        warnings.warn("--points applies to --method sampled only; the exact count ignores it", stacklevel=1)
    result = decode.call(
        run,
        params,
        ("checkpoints", "data"),
        ("trajectory", "count", "method", "points", "jacobian"),
        _render,
        regions=bool(params["plot"]),
        same_curves=bool(params["save_trajectories"]),
    )
    write_tables(result, params)
    curves = result.extra["trajectories"]
    if curves is not None:
        save = curves.save
        write_side_file(
            params, "save_trajectories", lambda p: save(p, force=params["force"]), f"{curves.count:,} curves"
        )
    if params["plot"]:
        from ..transition_plots import plot_transitions

        write_side_file(params, "plot", lambda p: plot_transitions(result.extra["results"], p))


def _render(net: Any, summary: Sequence[dict[str, Any]], rows: Mapping[str, Any]) -> None:
    from ..summaries import DESCRIBED

    row = summary[0]
    names = [
        "transitions",
        *(f"transitions_l{l + 1}" for l in range(net.depth - 1)),
        "transitions_per_length",
    ]
    labels = {"transitions": "total", "transitions_per_length": "per unit length"}
    table = [
        (labels.get(n, f"layer {n.removeprefix('transitions_l')}"), row[f"{n}_mean"], row[f"{n}_std"])
        + tuple(row[f"{n}_{k}"] for k in DESCRIBED[1:])
        for n in names
    ]
    how = "exact" if row["method"] == "exact" else f"sampled at {row['points']:,} points"
    caption = ""
    if "jac_prob_mean_mean" in row:
        caption = (
            f"‖J_prob‖_F along the curves: mean {render.fmt(row['jac_prob_mean_mean'])}, "
            f"max {render.fmt(row['jac_prob_max_mean'])} (averaged over curves)"
        )
    render.show_table(
        f"{row['checkpoint']}: {net.describe()}, transitions along {row['trajectories']:,} "
        f"{row['trajectory_kind']} curves ({how})",
        ["transitions", "mean", "std", *DESCRIBED[1:]],
        table,
        caption=caption,
    )
