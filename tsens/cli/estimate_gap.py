"""``tsens estimate-gap``: test loss and accuracy without test labels, and how good each estimate is."""

from __future__ import annotations

import glob
import math
from pathlib import Path
from typing import Any

import click

from ..errors import TsensError
from ..gap import GapResult, estimate_gap
from ..gap.calibration import Calibration
from ..gap.estimators import NAMES
from ..runs import plan_runs
from ..tables import provenance
from . import inputs, options, render
from .command import command
from .outputs import Tables, check_side_files, checked_targets, write_side_file

SIDE_FILES = (("--plot", "plot", ".png"), ("--save-calibration", "save_calibration", ".json"))
"""Extra outputs, refused before any work like ``-o``."""


def _estimators(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    chosen = tuple(m.strip() for m in value.split(",") if m.strip())
    if chosen == ("all",):
        return NAMES
    bad = [m for m in chosen if m not in NAMES]
    if bad or not chosen:
        raise click.BadParameter(f"{value!r}: expected all or a comma-separated subset of {', '.join(NAMES)}")
    return chosen


def _expand(patterns: tuple[str, ...]) -> list[str]:
    paths: list[str] = []
    for pattern in patterns:
        found = sorted(glob.glob(pattern)) or ([pattern] if Path(pattern).exists() else [])
        if not found:
            raise TsensError(f"--calibrate {pattern!r} matches no file")
        paths += found
    return paths


@command("estimate-gap")
@options.checkpoint_options
@options.data_option("--train", help="The training set, with labels: a name (digits, cifar, ...) or a file.")
@options.data_option(
    "--test", help="Test inputs (labels optional, used only for evaluation and calibration)."
)
@options.preprocess_options
@click.option(
    "--estimators",
    default="all",
    callback=_estimators,
    show_default=True,
    help=f"Comma-separated subset of {', '.join(NAMES)} (naive is always included).",
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
@checked_targets
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
    check_side_files(params, SIDE_FILES)
    if params.get("calibration") and params.get("calibrate"):
        raise TsensError("give --calibrate GLOB or --calibration FILE, not both")
    if params.get("save_calibration") and params.get("calibration"):
        raise TsensError(
            "--save-calibration writes a calibration fitted here; --calibration gives one already"
        )
    compute = inputs.compute(params)
    refs = inputs.checkpoints(params)
    calibration_refs = plan_runs(_expand(params["calibrate"])) if params["calibrate"] else []
    calibration = Calibration.load(params["calibration"]) if params["calibration"] else None
    train = inputs.dataset(params["train"], params)
    test = inputs.dataset(params["test"], params)
    can_fit = bool(calibration_refs) or (test.y is not None and len({r.run for r in refs}) >= 2)
    if params["save_calibration"] and not can_fit:
        raise TsensError(
            "--save-calibration needs --calibrate checkpoints, or a labelled --test and checkpoints "
            "of at least 2 runs"
        )
    result = estimate_gap(
        refs,
        train,
        test,
        estimators=params["estimators"],
        calibration=calibration,
        calibration_refs=calibration_refs,
        sibling_key=params["sibling_key"],
        compute=compute,
        load=inputs.loader(params),
        fit_calibration=bool(params["save_calibration"]),
        executor=inputs.executor(params, compute),
        progress=lambda ref: render.progress_sets(params, ref.path, {"train": len(train), "test": len(test)}),
    )
    tables = Tables("estimate-gap", params, {"train": params["train"], "test": params["test"]})
    for ref, row, cf in zip(refs, result.rows, result.features, strict=True):
        columns = {k: [v] for k, v in row.items() if k not in ("checkpoint", "run", "step")}
        tables.add(ref, cf.network, columns, applied=cf.applied)
    tables.add_summary([*(result.evaluation or []), *(result.ranking or [])])
    for note in result.notes:
        render.warn(note)
    if not inputs.quiet(params):
        _render(result)
    tables.write()
    if params["save_calibration"]:
        if result.calibration is None:
            raise TsensError(
                "--save-calibration: no calibration was fitted (give --calibrate or a labelled --test)"
            )
        result.calibration.provenance = provenance(
            "estimate-gap", tables.records, tables.data, {k: v for k, v in params.items() if k != "force"}
        )
        calibration = result.calibration
        write_side_file(
            params,
            "save_calibration",
            lambda p: calibration.save(p, force=params["force"]),
            "the calibration",
        )
    if params["plot"]:
        from ..plots import plot_gap

        write_side_file(params, "plot", lambda p: plot_gap(result, p))


def _cell(row: dict[str, Any], loss: str, acc: str, status: str | None = None) -> str:
    text = f"{row[loss]:.3f} ({100 * row[acc]:.1f})" if math.isfinite(row[loss]) else "n/a"
    return text + ("*" if status and row.get(status, "ok") != "ok" else "")


def _render(result: GapResult) -> None:
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
            caption="* fell back to naive (see the status columns)",
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
        "which label-free measure ranks the generalization gap (Kendall's τ across checkpoints)",
        ["measure", "τ with loss gap", "τ with accuracy gap"],
        [(r["name"], r["kendall_loss_gap"], r["kendall_acc_gap"]) for r in ranked[:8]],
    )


def _yes(loss: bool | None, acc: bool | None) -> str:
    def word(v: bool | None) -> str:
        return "n/a" if v is None else "yes" if v else "no"

    return f"{word(loss)}/{word(acc)}"
