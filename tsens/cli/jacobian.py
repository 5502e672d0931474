"""``tsens jacobian``: input–output Jacobian norms and tangent sensitivity per sample."""

from __future__ import annotations

from typing import Any

import click
import numpy as np

from ..errors import TsensError
from ..sweep import sensitivity_per_sample
from . import options, render
from .summaries import DESCRIBE_HEADER, describe

MEASURES = ("jacobian", "tangent")


def _measures(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    chosen = tuple(m.strip() for m in value.split(",") if m.strip())
    bad = [m for m in chosen if m not in MEASURES]
    if bad or not chosen:
        raise click.BadParameter(f"{value!r}: expected a comma-separated subset of {', '.join(MEASURES)}")
    return chosen


@click.command()
@options.checkpoint_options
@click.option(
    "--data", "data_spec", required=True, help="Data set: a name (digits, cifar-test, ...) or a file."
)
@options.data_options
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
    type=click.IntRange(min=1),
    default=None,
    help="Hutchinson estimate of ‖T‖ with this many probes (for very wide layers); default exact.",
)
@options.compute_options
@options.output_options
def jacobian(data_spec: str, **params: Any) -> None:
    """Per-sample Jacobian norms ‖J_prob‖_F, ‖J_logit‖_F and tangent sensitivity ‖T(x)‖_F.

    Exact closed forms (SPEC §2.1–2.2). With labels also loss (nats), correctness and the true
    class's ‖J_y‖₂ with [N] App. A.3's loss-based predictions beside it. Bigger = more
    sensitive.
    """
    if params["probes"] is not None and "tangent" not in params["measures"]:
        raise TsensError("--probes only applies to the tangent measure; add it to --measures")
    nets, data, compute = options.inputs(data_spec, params)
    tables = []
    for net in nets:
        with options.progress_for(params, net.path, len(data)) as progress:
            cols = sensitivity_per_sample(
                net,
                data,
                jacobian="jacobian" in params["measures"],
                tangent=params["reading"] if "tangent" in params["measures"] else None,
                probes=params["probes"],
                compute=compute,
                progress=progress,
            )
        if params["probes"] is not None:
            cols["tangent_fro_estimate"] = cols.pop("tangent_fro")
        tables.append(options.per_checkpoint_table(net, cols, {"sample": np.arange(len(data))}))
        if not params["quiet"]:
            _summary(net.path, net.describe(), cols, len(data))
    options.emit("jacobian", tables, nets, {"data": data_spec}, {**params, "data": data_spec})


def _summary(path: str, arch: str, cols: dict[str, np.ndarray], n: int) -> None:
    from scipy import stats  # deferred: scipy.stats is slow to import

    names = [k for k in ("jac_prob_fro", "jac_logit_fro", "tangent_fro", "tangent_fro_estimate") if k in cols]
    caption = ""
    if "loss" in cols:
        caption = f"loss {cols['loss'].mean():.4g} nats, accuracy {cols['correct'].mean():.2%}"
        for name in names:
            rho = stats.spearmanr(cols[name], cols["loss"]).statistic
            caption += f"; Spearman({name}, loss) = {rho:.3f}"
        if "jac_prob_eq7" in cols:
            predicted = cols["jac_prob_eq7"] > 0  # eq. 7 is 0 where the loss rounds to 0
            ratio = np.median(cols["jac_prob_fro"][predicted] / cols["jac_prob_eq7"][predicted])
            inside = np.mean(
                (cols["jac_true_class"] >= 0.999 * cols["jac_true_lower"])
                & (cols["jac_true_class"] <= 1.001 * cols["jac_true_upper"])
            )
            caption += (
                f"\n[N] App. A.3: median ‖J‖_F / eq. 7 = {ratio:.3g}; "
                f"‖J_y‖₂ inside eq. 5's bracket for {inside:.1%} of samples"
            )
    render.show_table(
        f"{path}: {arch}, {n:,} samples",
        ["measure", *DESCRIBE_HEADER],
        [(name, *describe(cols[name])) for name in names],
        caption=caption,
    )
