"""``tsens estimate-gap``: test loss and accuracy without test labels, and how good each estimate is."""

from __future__ import annotations

import math
from typing import Any

import click

from ..choices import ESTIMATORS
from ..errors import TsensError
from . import decode, options, render
from .command import command, option_names
from .outputs import checked_targets, write_side_file, write_tables

SIDE_FILES = (("--plot", "plot", ".png"), ("--save-calibration", "save_calibration", ".json"))
"""Extra outputs, refused before any work like ``-o``."""
NOT_APPLICABLE = {"no-hidden-layer"}
"""Statuses shown as n/a: the estimator does not apply to the checkpoint."""


@command("estimate-gap", aliases={"fit_calibration": "--save-calibration"})
@options.checkpoint_options
@options.data_option("--train", help="The training set, with labels: a name (digits, cifar, ...) or a file.")
@options.data_option(
    "--test", help="Test inputs (labels optional, used only for evaluation and calibration)."
)
@options.preprocess_options
@click.option(
    "--estimators",
    default="all",
    callback=options.comma_list(ESTIMATORS, everything=True),
    show_default=True,
    help=f"Comma-separated subset of {', '.join(ESTIMATORS)} (naive is always included).",
)
@click.option(
    "--calibrate",
    multiple=True,
    metavar="GLOB",
    help="Checkpoints of other runs whose test loss and accuracy are known, to fit mean-gap and calibrated.",
)
@click.option(
    "--calibration", default=None, metavar="FILE", help="A calibration written by --save-calibration."
)
@click.option(
    "--save-calibration", default=None, metavar="FILE.json", help="Write the fitted calibration (JSON)."
)
@click.option(
    "--sibling-key",
    default="config",
    show_default=True,
    help="Runs whose checkpoints share this metadata value are siblings (for disagreement).",
)
@click.option(
    "--plot", default=None, metavar="FILE.png", help="Draw truth and estimates (needs tsens[plot])."
)
@options.compute_options
@options.executor_options
@options.output_options
@checked_targets(*SIDE_FILES)
def estimate_gap_command(**params: Any) -> None:
    """Estimate test loss (nats) and accuracy of every checkpoint without test labels.

    Estimators: naive (test = train); the paper's layer-norm, kummer, membership ([T] §4,
    eqs. 5–7, as published, with a status where they are undefined) and jacobian ([N]); the
    label-free baselines confidence (AC), doc (Guillory et al. 2021), atc (Garg et al. 2022);
    disagreement between sibling runs (Jiang et al. 2022); mean-gap and calibrated (a ridge
    model of the gap fitted on --calibrate runs, a --calibration file, or, when the test set has
    labels, leave-one-run-out over the given runs). With test labels the summary says how good
    each estimator is: MAE, Kendall's τ, and whether it beats naive, doc and the best baseline.
    """
    from ..commands import estimate_gap

    test = decode.setup(params).dataset(params["test"])
    if params["summary_path"] and test.y is None:
        raise TsensError(
            f"--summary writes the evaluation of the estimators, which needs test labels; "
            f"--test {params['test']!r} has none"
        )
    options = ("estimators", "calibrate", "calibration", "sibling_key")
    fit = bool(params["save_calibration"])
    result = decode.call(
        estimate_gap, params, ("checkpoints", "train"), options, test=test, fit_calibration=fit
    )
    names = option_names(click.get_current_context().command)
    for note in result.notes:
        render.warn(str(TsensError(note).for_options(names)))
    gap = result.extra["gap"]
    if not params["quiet"]:
        _render(gap)
    write_tables(result, params)
    if params["save_calibration"]:
        calibration = gap.calibration
        if calibration is None:
            raise TsensError(
                "--save-calibration: no calibration was fitted (give --calibrate or a labelled --test)"
            )
        write_side_file(
            params,
            "save_calibration",
            lambda p: calibration.save(p, force=params["force"]),
            "the calibration",
        )
    if params["plot"]:
        from ..plots import plot_gap

        write_side_file(params, "plot", lambda p: plot_gap(gap, p))


def _cell(row: dict[str, Any], loss: str, acc: str, status: str | None = None) -> str:
    state = row.get(status, "ok") if status else "ok"
    if state in NOT_APPLICABLE or not math.isfinite(row[loss]):
        return "n/a"
    return f"{row[loss]:.3f} ({100 * row[acc]:.1f})" + ("*" if state != "ok" else "")


def _render(result: Any) -> None:
    names = [k.removeprefix("status_") for k in result.rows[0] if k.startswith("status_")]
    runs: dict[str, list[dict[str, Any]]] = {}
    for row in result.rows:
        runs.setdefault(row["run"], []).append(row)
    for run, rows in runs.items():
        table = [("train", *(_cell(r, "train_loss", "train_acc") for r in rows))]
        if result.labelled:
            table.append(("test (true)", *(_cell(r, "test_loss", "test_acc") for r in rows)))
        for key in names:
            table.append(
                (
                    key.replace("_", "-"),
                    *(_cell(r, f"est_{key}_loss", f"est_{key}_acc", f"status_{key}") for r in rows),
                )
            )
        render.show_table(
            f"{run}: test loss (accuracy %) by step",
            ["", *(render.fmt(r["step"]) for r in rows)],
            table,
            caption="* fell back to naive (see the status columns)"
            + (
                "; n/a: does not apply (no hidden layer)"
                if any(NOT_APPLICABLE & set(r.values()) for r in rows)
                else ""
            ),
        )
    if result.evaluation is None:
        render.note("the test set has no labels: estimates only, no evaluation")
        return
    rows = []
    for e in result.evaluation:
        mark = " ★" if e["winner_loss"] or e["winner_acc"] else ""
        rows.append(
            (
                e["name"] + mark,
                e["mae_loss"],
                e["mae_acc_points"],
                e["kendall_loss"],
                e["kendall_loss_gap"],
                e["fallbacks"],
                _yes(e["beats_naive_loss"], e["beats_naive_acc"]),
                _yes(e["beats_doc_loss"], e["beats_doc_acc"]),
                _yes(e["beats_best_baseline_loss"], e["beats_best_baseline_acc"]),
            )
        )
    render.show_table(
        f"how good each estimator is, over {result.evaluation[0]['checkpoints']} checkpoints",
        [
            "estimator",
            "MAE loss",
            "MAE acc (pts)",
            "τ loss",
            "τ gap",
            "fallbacks",
            "beats naive",
            "beats doc",
            "beats best",
        ],
        rows,
        caption="★ lowest MAE of loss or accuracy; beats = lower MAE, for loss/accuracy; τ = Kendall's τ "
        "of predicted with true test loss, and of predicted with true gap (test − train loss).",
    )
    ranked = sorted(
        (r for r in result.ranking or [] if math.isfinite(r["kendall_loss_gap"])),
        key=lambda r: -abs(r["kendall_loss_gap"]),
    )
    if not ranked:  # fewer than three checkpoints, or a constant gap: no ranking is defined
        return
    render.show_table(
        "which label-free feature ranks the generalization gap (Kendall's τ across checkpoints)",
        ["feature", "τ with loss gap", "τ with accuracy gap"],
        [(r["name"], r["kendall_loss_gap"], r["kendall_acc_gap"]) for r in ranked[:8]],
    )


def _yes(loss: bool | None, acc: bool | None) -> str:
    def word(v: bool | None) -> str:
        return "n/a" if v is None else "yes" if v else "no"

    return f"{word(loss)}/{word(acc)}"
