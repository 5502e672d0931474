"""``tsens bound``: data-free bounds on tangent sensitivity and the Jacobian ([T] Thm 3.1), and
with data the Gaussian bounds ([T] Thm 3.2, eq. 2) beside the measured values."""

from __future__ import annotations

import math
import os
from typing import Any

import click

from ..choices import BOUNDS
from ..errors import ThresholdExceeded
from . import decode, options, render, thresholds
from .command import command
from .outputs import checked_targets, write_tables


@command()
@options.checkpoint_options
@options.data_option(
    required=False, help="Data set for the active-count fit (gauss, gauss-paper) and the measured ‖T‖, ‖J‖."
)
@options.preprocess_options
@click.option(
    "--per-layer", is_flag=True, help="One row per Linear layer: weight norms and each bound's layer term."
)
@options.tangent_option(
    "Bound ‖T‖ of the summed logits (sum = sqrt(n) × the all bound) or of every logit (all)."
)
@thresholds.option("--fail-above", "above", "repeatable; names below")
@thresholds.option("--fail-below", "below", "repeatable")
@options.compute_options
@options.executor_options
@options.output_options
@checked_targets()
def bound(**params: Any) -> None:
    """Upper bounds on tangent sensitivity ‖T(x)‖_F and on ‖J_logit(x)‖_F, in log10, one row
    per checkpoint ([T] Thm 3.1–3.2).

    Data-free: paper (eq. 1, explicit constants), path (sums over paths of |weights|) and
    spectral (norm products), and the tightest of each; the weight norms they read (raw and
    BatchNorm-folded) and log10 w = Σ log10 max|W_l|. With --data also the Gaussian fit
    (active_mean, active_std; population std, ddof = 0, as in the author's code) of the total
    active count, the gauss and gauss-paper bounds, the measured mean and max of ‖T‖ and
    ‖J_logit‖, and the looseness of the tightest bound (tightest − measured max, in decades).

    \b
    BOUND names for --fail-above/--fail-below: any log10_ column, with or
    without the log10_ or log10_tangent_ prefix, '-' = '_': paper, path,
    spectral, jacobian_paper, jacobian_path, jacobian_spectral, w; with --data
    also gauss, gauss_paper, tangent_measured_mean, tangent_measured_max,
    jacobian_measured_mean, jacobian_measured_max. Example: --fail-above path=12.
    """
    from ..commands import bound as run

    with_data = params["data"] is not None
    above = thresholds.resolve(params["fail_above"], with_data, "--fail-above")
    below = thresholds.resolve(params["fail_below"], with_data, "--fail-below")
    result = decode.call(run, params, ("checkpoints", "data"), ("reading", "per_layer"))
    if not params["quiet"]:
        _render(result.summary_rows, params["reading"], with_data)
    write_tables(result, params)
    crossed = [msg for row in result.extra["rows"] for msg in thresholds.crossings(row, above, below)]
    if crossed:
        raise ThresholdExceeded("; ".join(crossed))


def _labels(paths: list[str]) -> tuple[str, list[str]]:
    """The directory all checkpoints share ("" if none), and each path relative to it."""
    try:
        common = os.path.commonpath([os.path.dirname(p) for p in paths])
    except ValueError:  # absolute and relative paths mixed
        common = ""
    return common, [os.path.relpath(p, common) if common else p for p in paths]


def _render(rows: list[dict[str, Any]], reading: str, with_data: bool) -> None:
    """One compact table (fits 80 columns with data): log10 tangent bounds, the tightest, the
    tightest Jacobian bound, and with data the Gaussian bounds, the measured max ‖T‖ and the
    looseness of the tightest bound."""
    from rich import box
    from rich.table import Table

    common, labels = _labels([r["checkpoint"] for r in rows])
    render.note(f"tsens bound: {common}/" if common else "tsens bound")
    table = Table(box=box.SIMPLE_HEAD, padding=0, show_edge=False)
    table.add_column("checkpoint", min_width=14)
    keys = [*(f"log10_tangent_{k}" for k in BOUNDS), "tightest_tangent", "log10_jacobian_tightest"]
    header = [*BOUNDS, "tightest", "J"]
    if with_data:
        keys += [
            "log10_tangent_gauss",
            "log10_tangent_gauss_paper",
            "log10_tangent_measured_max",
            "looseness",
        ]
        header += ["gauss", "g-paper", "max", "loose"]
    for name in header:
        table.add_column(name, justify="right", no_wrap=True)
    for r, label in zip(rows, labels, strict=True):
        cells = [v if isinstance(v, str) else _decades(v) for v in (r[k] for k in keys)]
        table.add_row(f"{label} ({r['architecture']})", *cells)
    render.show(table)
    caption = (
        f"log10 bounds on ‖T(x)‖_F ({reading} reading) over all inputs; J = the tightest bound on "
        "‖J_logit(x)‖_F (all in the table)."
    )
    if with_data:
        caption += (
            " max = the largest ‖T(x)‖_F measured on the data; loose = tightest − max, in decades. "
            "gauss, g-paper ([T] eq. 2) hold in expectation under the Gaussian fit of the active count; "
            "n/a where they do not apply (no hidden layer, or a measured max of 0)."
        )
    else:
        caption += " gauss, gauss-paper and measured values need --data."
    render.note(caption)


def _decades(value: float | None) -> str:
    """log10 values with two decimals; inf as inf, None as n/a."""
    return render.fmt(value) if value is None or not math.isfinite(value) else f"{value:.2f}"
