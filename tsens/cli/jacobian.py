"""``tsens jacobian``: input–output Jacobian norms and tangent sensitivity per sample."""

from __future__ import annotations

from typing import Any

import click

from ..errors import TsensError
from ..jobs import OnlySet
from ..measures import Options
from ..summaries import DESCRIBED, SENSITIVITY_COLUMNS, columns_of, jacobian_summary
from . import options, render
from .command import command
from .flow import per_sample
from .outputs import checked_targets

MEASURES = ("jacobian", "tangent")


def _measures(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    chosen = tuple(m.strip() for m in value.split(",") if m.strip())
    bad = [m for m in chosen if m not in MEASURES]
    if bad or not chosen:
        raise click.BadParameter(f"{value!r}: expected a comma-separated subset of {', '.join(MEASURES)}")
    return chosen


@command()
@options.checkpoint_options
@options.data_option()
@options.preprocess_options
@click.option(
    "--measures",
    default="jacobian,tangent",
    callback=_measures,
    show_default=True,
    help="Which measures: jacobian, tangent or both.",
)
@options.tangent_option("T of the summed logits (sum) or of every logit (all).")
@click.option(
    "--probes",
    type=int,
    default=None,
    help="Hutchinson estimate of ‖T‖ with this many probes (for very wide layers); default exact.",
)
@options.compute_options
@options.executor_options
@options.output_options
@checked_targets
def jacobian(**params: Any) -> None:
    """Per-sample Jacobian norms ‖J_prob‖_F, ‖J_logit‖_F ([N] §3) and tangent sensitivity
    ‖T(x)‖_F ([T] Def. 3.1), in exact closed forms.

    With labels also loss (nats), correctness and the true class's ‖J_y‖₂ with [N] App. A.3's
    loss-based predictions beside it. Bigger = more sensitive.
    """
    if params["probes"] is not None and "tangent" not in params["measures"]:
        raise TsensError("--probes only applies to the tangent measure; add it to --measures")
    settings = Options(reading=params["reading"], probes=params["probes"])
    measures = ["predictions", *params["measures"]]
    per_sample(
        "jacobian",
        params,
        {"data": params["data"]},
        measures,
        OnlySet(jacobian_summary, listed=True),
        _render,
        options=settings,
        columns=OnlySet(columns_of),
    )


def _render(rows: list[dict[str, Any]], arch: str) -> None:
    row = rows[0]
    names = [c for c in SENSITIVITY_COLUMNS if f"{c}_mean" in row]
    caption = ""
    if "loss_mean" in row:
        caption = f"loss {render.fmt(row['loss_mean'])} nats, accuracy {row['accuracy']:.2%}"
        for name in names:
            caption += f"; Spearman({name}, loss) = {render.fmt(row[f'spearman_{name}_loss'], 3)}"
        if "eq7_median_ratio" in row:
            caption += (
                f"\n[N] App. A.3: median ‖J‖_F / eq. 7 = {render.fmt(row['eq7_median_ratio'], 3)}; "
                f"‖J_y‖₂ inside eq. 5's bracket for {row['eq5_inside_share']:.1%} of samples"
            )
    render.show_table(
        f"{row['checkpoint']}: {arch}, {row['samples']:,} samples",
        ["measure", *DESCRIBED],
        [(name, *(row[f"{name}_{k}"] for k in DESCRIBED)) for name in names],
        caption=caption,
    )
