"""``tsens transitions``: how often the activation pattern changes along curves through the data."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import click

from ..datasets import Dataset
from ..errors import TsensError
from ..jobs import transitions_job
from ..runs import CheckpointRef
from ..stream import prepared_for
from ..summaries import DESCRIBED
from ..transitions import (
    DEFAULT_POINTS,
    KINDS,
    METHODS,
    Trajectories,
    TransitionResult,
    check_count,
    check_points,
    make_trajectories,
    transitions_summary,
)
from . import inputs, options, render
from .command import command
from .flow import run_jobs
from .outputs import Tables, check_side_files, checked_targets, write_side_file

NEEDS_DATA = ("ellipse", "translations")

SIDE_FILES = (("--plot", "plot", ".png"), ("--save-trajectories", "save_trajectories", ".npz"))
"""Extra outputs, refused before any work like ``-o``."""
CURVES_PER_TASK = 32
"""On a cluster, each task counts this many curves of one checkpoint."""


@command()
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
    type=click.Choice(METHODS),
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
@checked_targets
def transitions(**params: Any) -> None:
    """Count transitions — changes of any hidden unit's linear piece — along closed curves
    through the data ([N] §3): exactly, every crossing in closed form, or sampled at K points.

    One row per curve: transitions in total and per layer, arc length, transitions per unit
    length, the data indices it goes through, and with --jacobian ‖J_prob‖_F along it. A unit
    counts once per breakpoint it crosses; touching one counts nothing. Computed in float64
    whatever --dtype. More transitions = a more complex function near the data.
    """
    kind = params["trajectory"]
    if kind in KINDS:
        check_count(params["count"])
    check_points(params["points"])
    source = click.get_current_context().get_parameter_source("points")
    if params["method"] == "exact" and source == click.core.ParameterSource.COMMANDLINE:
        render.warn("--points applies to --method sampled only; the exact count ignores it")
    if kind in NEEDS_DATA and not params["data"]:
        raise TsensError(f"--trajectory {kind} needs --data (the data set its curves go through)")
    check_side_files(params, SIDE_FILES)
    compute = inputs.compute(params)
    refs = inputs.checkpoints(params)
    load = inputs.loader(params)
    data = inputs.dataset(params["data"], params) if params["data"] else None
    tables = Tables("transitions", params, {"data": params["data"]})
    plans: list[tuple[CheckpointRef, Dataset | None, Trajectories]] = []
    saved: Trajectories | None = None
    for ref in refs:  # the curves each checkpoint sees (its preprocessing of the data)
        net = load(ref)
        prepared = _prepared(net, data)
        traj = make_trajectories(kind, prepared, net.input_dim, params["count"], params["seed"])
        if params["save_trajectories"]:
            if saved is not None and not saved.same_curves(traj):
                raise TsensError(
                    "--save-trajectories: the checkpoints see different curves (their inputs are "
                    "preprocessed differently or differ in size); save them one checkpoint at a time"
                )
            saved = traj
        plans.append((ref, prepared, traj))
    # One task per checkpoint, or on a cluster per group of curves.
    size = CURVES_PER_TASK if params["executor"] != "local" else None
    chunks = [traj.chunks(size) if size else [traj] for _, _, traj in plans]
    items = [(ref, part) for (ref, _, _), parts in zip(plans, chunks, strict=True) for part in parts]
    shared = dict(
        method=params["method"],
        points=params["points"],
        jacobian=params["jacobian"] or bool(params["plot"]),
        compute=compute,
        load=load,
    )

    def item_progress(item: tuple[CheckpointRef, Trajectories]) -> AbstractContextManager[Any]:
        return render.progress(params, item[0].path, item[1].count)

    done = run_jobs(params, compute, transitions_job, items, shared, item_progress)
    results = []
    for (ref, prepared, traj), parts in zip(plans, chunks, strict=True):
        result = TransitionResult.concat([next(done) for _ in parts], traj)
        if not params["jacobian"]:
            result.columns.pop("jac_prob_mean", None)
            result.columns.pop("jac_prob_max", None)
        row = transitions_summary(result)
        applied = {"preprocess": prepared.preprocess.to_json()} if prepared is not None else {}
        tables.add(ref, result.network, result.columns, [row], applied)
        results.append(result)
        if not inputs.quiet(params):
            _render(row, result, result.network.describe())
    tables.write()
    if saved is not None:
        write_side_file(
            params,
            "save_trajectories",
            lambda p: saved.save(p, force=params["force"]),
            f"{saved.count:,} curves",
        )
    if params["plot"]:
        from ..transition_plots import plot_transitions

        write_side_file(params, "plot", lambda p: plot_transitions(results, p))


def _prepared(net: Any, data: Dataset | None) -> Dataset | None:
    if data is None:
        return None
    prepared = prepared_for(net, data)
    prepared.check_input_dim(net.input_dim, f"checkpoint {net.path or 'network'}")
    return prepared


def _render(row: dict[str, Any], result: Any, arch: str) -> None:
    names = [
        "transitions",
        *(f"transitions_l{l + 1}" for l in range(result.layers)),
        "transitions_per_length",
    ]
    labels = {"transitions": "total", "transitions_per_length": "per unit length"}
    rows = [
        (labels.get(n, f"layer {n.removeprefix('transitions_l')}"), row[f"{n}_mean"], row[f"{n}_std"])
        + tuple(row[f"{n}_{k}"] for k in DESCRIBED[1:])
        for n in names
    ]
    how = "exact" if result.method == "exact" else f"sampled at {result.points:,} points"
    caption = ""
    if "jac_prob_mean_mean" in row and "jac_prob_mean" in result.columns:
        caption = (
            f"‖J_prob‖_F along the curves: mean {render.fmt(row['jac_prob_mean_mean'])}, "
            f"max {render.fmt(row['jac_prob_max_mean'])} (averaged over curves)"
        )
    render.show_table(
        f"{row['checkpoint']}: {arch}, transitions along {row['trajectories']:,} "
        f"{row['trajectory_kind']} curves ({how})",
        ["transitions", "mean", "std", *DESCRIBED[1:]],
        rows,
        caption=caption,
    )
