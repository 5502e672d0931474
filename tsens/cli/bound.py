"""``tsens bound``: data-free bounds on tangent sensitivity and the Jacobian ([T] Thm 3.1), and
with data the Gaussian bounds ([T] Thm 3.2, eq. 2) beside the measured values."""

from __future__ import annotations

import math
import os
from contextlib import AbstractContextManager
from typing import Any

import click
from rich import box
from rich.table import Table

from ..bounds import BOUNDS, crossings, resolve_bound
from ..errors import ThresholdExceeded, TsensError
from ..jobs import bound_job
from ..runs import CheckpointRef
from . import inputs, options, render
from .command import command
from .flow import run_jobs
from .outputs import Tables, checked_targets

Threshold = tuple[str, float]


def _thresholds(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[Threshold]:
    out = []
    for value in values:
        name, sep, number = value.partition("=")
        try:
            limit = float(number)
        except ValueError:
            limit = None
        if not sep or not name.strip() or limit is None:
            raise click.BadParameter(f"{value!r}: expected BOUND=LOG10, e.g. path=12")
        out.append((name.strip(), limit))
    return out


def _resolve(thresholds: list[Threshold], with_data: bool, option: str) -> list[Threshold]:
    try:
        return [(resolve_bound(name, with_data), limit) for name, limit in thresholds]
    except TsensError as exc:
        raise click.BadParameter(str(exc.for_options({"data": "--data"})), param_hint=option) from None


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
@click.option(
    "--fail-above",
    multiple=True,
    callback=_thresholds,
    metavar="BOUND=LOG10",
    help="Exit 1 if a checkpoint's log10 BOUND is above LOG10 (repeatable; names below).",
)
@click.option(
    "--fail-below",
    multiple=True,
    callback=_thresholds,
    metavar="BOUND=LOG10",
    help="Exit 1 if a checkpoint's log10 BOUND is below LOG10 (repeatable).",
)
@options.compute_options
@options.executor_options
@options.output_options
@checked_targets
def bound(**params: Any) -> None:
    """Upper bounds on tangent sensitivity ‖T(x)‖_F and on ‖J_logit(x)‖_F, in log10, one row
    per checkpoint ([T] Thm 3.1–3.2).

    Data-free: paper (eq. 1, explicit constants), path (sums over paths of |weights|) and
    spectral (norm products), and the tightest of each; the weight norms they read (raw and
    BatchNorm-folded) and log10 w = Σ log10 max|W_l|. With --data also the Gaussian fit
    (active_mean, active_std; population std, ddof = 0, as in the author's code) of the total
    active count, the gauss and gauss-paper bounds and the measured mean and max of ‖T‖ and
    ‖J_logit‖.

    \b
    BOUND names for --fail-above/--fail-below: any log10_ column, with or
    without the log10_ or log10_tangent_ prefix, '-' = '_': paper, path,
    spectral, jacobian_paper, jacobian_path, jacobian_spectral, w; with --data
    also gauss, gauss_paper, tangent_measured_mean, tangent_measured_max,
    jacobian_measured_mean, jacobian_measured_max. Example: --fail-above path=12.
    """
    with_data = params["data"] is not None
    above = _resolve(params["fail_above"], with_data, "--fail-above")
    below = _resolve(params["fail_below"], with_data, "--fail-below")
    compute = inputs.compute(params)
    refs = inputs.checkpoints(params)
    data = inputs.dataset(params["data"], params) if with_data else None
    tables = Tables("bound", params, {"data": params["data"]})
    shared = dict(data=data, reading=params["reading"], compute=compute, load=inputs.loader(params))

    def item_progress(ref: CheckpointRef) -> AbstractContextManager[Any]:
        return render.progress(params, ref.path, len(data) if data is not None else 0)

    rows, summaries = [], []
    for ref, out in zip(refs, run_jobs(params, compute, bound_job, refs, shared, item_progress), strict=True):
        rep = out.detail
        row = rep.row()
        cols = rep.layer_rows() if params["per_layer"] else {k: [v] for k, v in row.items()}
        cols.pop("checkpoint")
        summaries.extend(out.summary)
        tables.add(ref, out.network, cols, out.summary, out.applied)
        rows.append(row)
    if not inputs.quiet(params):
        _render(summaries, params["reading"], with_data)
    tables.write()
    crossed = [msg for row in rows for msg in crossings(row, above, below)]
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
    tightest Jacobian bound, and with data the Gaussian bounds, the measured max ‖T‖ and the gap."""
    common, labels = _labels([r["checkpoint"] for r in rows])
    table = Table(
        title=f"tsens bound: {common}/" if common else "tsens bound",
        box=box.SIMPLE_HEAD,
        padding=0,
        show_edge=False,
        title_justify="left",
        caption_justify="left",
    )
    table.add_column("checkpoint", overflow="fold", min_width=14)
    keys = [*(f"log10_tangent_{k}" for k in BOUNDS), "tightest_tangent", "log10_jacobian_tightest"]
    header = [*BOUNDS, "tightest", "J"]
    if with_data:
        keys += ["log10_tangent_gauss", "log10_tangent_gauss_paper", "log10_tangent_measured_max", "gap"]
        header += ["gauss", "g-paper", "max", "gap"]
    for name in header:
        table.add_column(name, justify="right", no_wrap=True)
    for r, label in zip(rows, labels, strict=True):
        cells = [v if isinstance(v, str) else _decades(v) for v in (r[k] for k in keys)]
        table.add_row(f"{label} ({r['architecture']})", *cells)
    table.caption = (
        f"log10 bounds on ‖T(x)‖_F ({reading} reading) over all inputs; J = the tightest bound on "
        "‖J_logit(x)‖_F (all in the table)."
    )
    if with_data:
        table.caption += (
            " max = the largest ‖T(x)‖_F measured on the data; gap = tightest − max, in decades. "
            "gauss, g-paper ([T] eq. 2) hold in expectation under the Gaussian fit of the active count; "
            "n/a where they do not apply (no hidden layer, or a measured max of 0)."
        )
    else:
        table.caption += " gauss, gauss-paper and measured values need --data."
    render.console.print(table)


def _decades(value: float | None) -> str:
    """log10 values with two decimals; inf as inf, None as n/a."""
    return render.fmt(value) if value is None or not math.isfinite(value) else f"{value:.2f}"
