"""``tsens jacobian``: input–output Jacobian norms and tangent sensitivity per sample."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import click

from ..choices import SENSITIVITIES
from . import decode, options, render
from .command import command
from .outputs import checked_targets, write_tables


@command()
@options.checkpoint_options
@options.data_option()
@options.preprocess_options
@click.option(
    "--measures",
    "sensitivities",
    default=",".join(SENSITIVITIES),
    callback=options.comma_list(SENSITIVITIES),
    show_default=True,
    help="Which sensitivities: jacobian, tangent or both.",
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
@checked_targets()
def jacobian(**params: Any) -> None:
    """Per-sample Jacobian norms ‖J_prob‖_F, ‖J_logit‖_F ([N] §3) and tangent sensitivity
    ‖T(x)‖_F ([T] Def. 3.1), in exact closed forms.

    With labels also loss (nats), correctness and the true class's ‖J_y‖₂ with [N] App. A.3's
    loss-based predictions beside it. Bigger = more sensitive.
    """
    from ..commands import jacobian as run

    result = decode.call(
        run, params, ("checkpoints", "data"), ("sensitivities", "reading", "probes"), _render
    )
    write_tables(result, params)


def _render(net: Any, summary: Sequence[dict[str, Any]], rows: Mapping[str, Any]) -> None:
    from ..summaries import DESCRIBED, SENSITIVITY_COLUMNS

    row = summary[0]
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
        f"{row['checkpoint']}: {net.describe()}, {row['samples']:,} samples",
        ["measure", *DESCRIBED],
        [(name, *(row[f"{name}_{k}"] for k in DESCRIBED)) for name in names],
        caption=caption,
    )
