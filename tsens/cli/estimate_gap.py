"""``tsens estimate-gap``: test loss and accuracy without test labels, and how good each estimate is."""

from __future__ import annotations

import math
from typing import Any

import click

from ..choices import DEFAULT_FEATURES, ESTIMATORS, FEATURE_SETS, HOLD_OUT
from ..errors import TsensError
from . import decode, options, render
from .command import command, option_names
from .outputs import checked_targets, write_side_file, write_tables

SIDE_FILES = (("--plot", "plot", ".png"), ("--save-calibration", "save_calibration", ".json"))
"""Extra outputs, refused before any work like ``-o``."""
NOT_APPLICABLE = {"no-hidden-layer"}
"""Statuses shown as n/a: the estimator does not apply to the checkpoint."""


def _estimators(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    return None if value is None else options.comma_list(ESTIMATORS, everything=True)(ctx, param, value)


def _level(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not 0 < value < 1:
        raise click.BadParameter(f"{value!r}: expected a coverage level strictly between 0 and 1, e.g. 0.9")
    return value


@command("estimate-gap", aliases={"fit_calibration": "--save-calibration"})
@options.checkpoint_options
@options.data_option(
    "--train",
    required=False,
    help="The training set, with labels: a name (digits, cifar, ...) or a file (default: each "
    "checkpoint's metadata `dataset`; checkpoints of different sets are scored apart).",
)
@options.data_option(
    "--test",
    required=False,
    help="Test inputs (labels optional, used only for evaluation and calibration; default: each "
    "checkpoint's metadata `test_dataset`).",
)
@options.preprocess_options
@click.option(
    "--estimators",
    default=None,
    callback=_estimators,
    help=f"Comma-separated subset of {', '.join(ESTIMATORS)}, or all (naive is always included). "
    "Default: every estimator that can run on what is given (the others are named in a note), "
    "but jacobian, kummer and membership, whose measures cost several passes: name them.",
)
@click.option(
    "--features",
    type=click.Choice(FEATURE_SETS),
    default=DEFAULT_FEATURES,
    show_default=True,
    help="The richest feature set the calibrated estimator may choose (nested, simplest first); "
    "sensitivity and all compute the costly Jacobian, tangent and region measures.",
)
@click.option(
    "--interval",
    default=0.9,
    show_default=True,
    type=float,
    callback=_level,
    metavar="LEVEL",
    help="Coverage of the calibrated estimators' intervals (split-conformal).",
)
@click.option(
    "--calibrate",
    multiple=True,
    metavar="GLOB",
    help="Checkpoints of other runs whose test loss and accuracy are known, to fit the calibrated "
    "estimators.",
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
    help="Runs whose checkpoints share this metadata value are siblings (disagreement, agreement).",
)
@click.option(
    "--hold-out",
    type=click.Choice(HOLD_OUT),
    default="run",
    show_default=True,
    help="What the calibrated estimators' cross-validation holds out: each run (leave-one-run-out), "
    "or each run with its sibling runs (stricter when seeds are near-duplicates).",
)
@click.option("--detail", is_flag=True, help="Also show every estimate of every run, step by step.")
@click.option(
    "--plot", default=None, metavar="FILE.png", help="Draw truth and estimates (needs tsens[plot])."
)
@options.compute_options
@options.executor_options
@options.output_options
@checked_targets(*SIDE_FILES)
def estimate_gap_command(**params: Any) -> None:
    """Estimate test loss (nats) and accuracy of every checkpoint without test labels.

    The summary leads with the checkpoints ranked by the recommended estimate and its interval.
    Estimators: naive (test = train); calibrated-train (a ridge on ln train loss and train
    accuracy) and calibrated (a ridge on label-free features, chosen by nested grouped
    cross-validation with the one-standard-error rule, split-conformal intervals), fitted on
    --calibrate runs, a --calibration file, or, when the test set has labels, leave-one-run-out
    over the given runs; mean-gap; the label-free confidence (AC), doc (Guillory et al. 2021),
    atc (Garg et al. 2022), cot and cott (Lu et al. 2023), tic (Takeuchi's information
    criterion of the last layer; Naganuma et al. 2026), disagreement (Jiang et al. 2022) and
    agreement-on-the-line (Baek et al. 2022) between sibling runs; jacobian ([N], Novak et al.
    2018); the paper's layer-norm, kummer, membership ([T] §4). Features of the calibrated
    estimator include the nuclear norm (Deng et al. 2023), MaNo (Xie et al. 2024), energy (Peng
    et al. 2024), dispersion (Xie et al. 2023), GdScore (Xie et al. 2025), margins (Jiang et al.
    2019) and weight spectra (Martin & Mahoney 2021). With test labels the summary says how good
    each estimator is: MAE, Kendall's τ, granulated τ, interval coverage, and whether it beats
    naive and calibrated-train.
    """
    from ..commands import estimate_gap

    test = None if params["test"] is None else decode.setup(params).dataset(params["test"])
    if params["summary_path"] and test is not None and test.y is None:
        raise TsensError(
            f"--summary writes the evaluation of the estimators, which needs test labels; "
            f"--test {params['test']!r} has none"
        )
    options = ("estimators", "features", "interval", "calibrate", "calibration", "sibling_key", "hold_out")
    fit = bool(params["save_calibration"])
    result = decode.call(
        estimate_gap, params, ("checkpoints", "train"), options, test=test, fit_calibration=fit
    )
    names = option_names(click.get_current_context().command)
    for note in result.notes:
        render.warn(str(TsensError(note).for_options(names)))
    gap, gaps = result.extra["gap"], result.extra["gaps"]
    if not params["quiet"]:
        for train, test_spec, one in gaps:
            if len(gaps) > 1:
                render.note(f"== {train} → {test_spec}: {len(one.rows)} checkpoints")
            _render(one, params["detail"])
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

        if len(gaps) > 1:
            render.warn(
                f"--plot draws the checkpoints of {gaps[0][0]} → {gaps[0][1]} only, "
                f"the first of {len(gaps)} data sets"
            )
        write_side_file(params, "plot", lambda p: plot_gap(gap, p))


def _cell(row: dict[str, Any], loss: str, acc: str, status: str | None = None) -> str:
    state = row.get(status, "ok") if status else "ok"
    if state in NOT_APPLICABLE:
        return "n/a"
    parts = []
    if math.isfinite(row[loss]):
        parts.append(f"{row[loss]:.3f}")
    if math.isfinite(row[acc]):
        parts.append(f"({100 * row[acc]:.1f})" if parts else f"– ({100 * row[acc]:.1f})")
    if not parts:
        return "n/a"
    return " ".join(parts) + ("*" if state != "ok" else "")


def _with_interval(row: dict[str, Any], key: str, target: str) -> str:
    value = row[f"est_{key}_{target}"]
    if not math.isfinite(value):
        return "n/a"
    scale, digits, unit = (100, 1, " %") if target == "acc" else (1, 3, "")
    text = f"{scale * value:.{digits}f}{unit}"
    lo, hi = row.get(f"est_{key}_{target}_lo", math.nan), row.get(f"est_{key}_{target}_hi", math.nan)
    if math.isfinite(lo) and math.isfinite(hi):
        text += f" [{scale * lo:.{digits}f}, {scale * hi:.{digits}f}]"
    return text


MAX_RANKED = 15
"""Checkpoints shown in the leading table (every one is in the -o table)."""


def _label(row: dict[str, Any]) -> str:
    return f"{row['run']} @ {render.fmt(row['step'])}" if row.get("step") is not None else row["checkpoint"]


def _lead(result: Any) -> None:
    from ..gap.answer import ranking

    best = result.recommended
    key = best.replace("-", "_")
    ranked = ranking(result.rows, best)
    shown = ranked[:MAX_RANKED]
    level = f"{100 * result.level:g} %"
    calibrated = best != "naive"
    header = ["#", "checkpoint", "train acc %", f"test acc % ({best})" if calibrated else "test acc %"]
    if calibrated:
        header += ["train loss", f"test loss ({best})"]
    header.append("label-free acc %")
    if result.labelled:
        header.append("true test acc %")
    table = []
    for i, row in enumerate(shown, 1):
        spread = (
            f"{100 * row['label_free_acc_min']:.1f}–{100 * row['label_free_acc_max']:.1f}"
            if math.isfinite(row.get("label_free_acc_min", math.nan))
            else "n/a"
        )
        if row.get("estimates_disagree"):
            spread += " (disagree)"
        estimate = _with_interval(row, key, "acc") if calibrated else "unknown"
        line = [i, _label(row), f"{100 * row['train_acc']:.1f}", estimate]
        if calibrated:
            line += [f"{row['train_loss']:.3f}", _with_interval(row, key, "loss")]
        line.append(spread)
        if result.labelled:
            line.append(f"{100 * row['test_acc']:.1f}")
        table.append(line)
    if calibrated:
        title = f"checkpoints ranked by {best}'s estimated test accuracy, with {level} intervals"
        caption = f"[lo, hi]: {level} split-conformal interval from held-out runs' residuals."
    else:
        title = (
            "no calibration (give --calibrate runs, a --calibration file or a labelled --test of 2+ runs): "
            "checkpoints ranked by train accuracy; the label-free estimators' range beside it"
        )
        caption = (
            "test accuracy unknown: without a calibration no estimator here has been shown to beat "
            "test = train."
        )
    disagree = sum(1 for r in result.rows if r.get("estimates_disagree"))
    if disagree:
        caption += (
            f" The label-free estimators disagree for {disagree} checkpoint(s) "
            + (f"(their median outside {best}'s interval)" if calibrated else "(more than 5 points apart)")
            + ": do not read any single one of them as the answer there."
        )
    if len(ranked) > len(shown):
        more = len(ranked) - len(shown)
        caption += f" {more} more checkpoints: -o FILE holds every row; --detail shows every run."
    render.show_table(title, header, table, caption=caption, text_columns=2)


def _render(result: Any, detail: bool) -> None:
    _lead(result)
    names = list(result.names)
    if detail:
        _per_run(result, names)
    if result.evaluation is None:
        render.note("the test set has no labels: estimates only, no evaluation")
        return
    rows = []
    for e in result.evaluation:
        mark = " ★" if e["winner_loss"] or e["winner_acc"] else ""
        coverage = (
            f"{100 * e['coverage_loss']:.0f}/{100 * e['coverage_acc']:.0f}"
            if math.isfinite(e["coverage_loss"])
            else ""
        )
        rows.append(
            (
                e["name"] + mark,
                e["mae_loss"],
                e["mae_acc_points"],
                e["kendall_loss_gap"],
                e["granulated_kendall_loss_gap"],
                coverage,
                e["fallbacks"],
                _yes(e["beats_naive_loss"], e["beats_naive_acc"]),
                _yes(e["beats_calibrated_train_loss"], e["beats_calibrated_train_acc"]),
            )
        )
    render.show_table(
        f"how good each estimator is, over {result.evaluation[0]['checkpoints']} checkpoints",
        [
            "estimator",
            "MAE loss",
            "MAE acc (pts)",
            "τ gap",
            "granulated τ",
            "coverage %",
            "fallbacks",
            "beats naive",
            "beats calibrated-train",
        ],
        rows,
        caption="★ lowest MAE of loss or accuracy; nan: not estimated; beats = lower MAE, for loss/accuracy; "
        "τ gap = Kendall's τ of the predicted with the true loss gap (test − train); granulated τ: the "
        "same within groups that differ along one hyper-parameter only (Jiang et al. 2020); coverage: "
        f"share of true values inside the {100 * result.level:g} % intervals (loss/accuracy).",
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


def _per_run(result: Any, names: list[str]) -> None:
    runs: dict[str, list[dict[str, Any]]] = {}
    for row in result.rows:
        runs.setdefault(row["run"], []).append(row)
    for run, rows in runs.items():
        table = [("train", *(_cell(r, "train_loss", "train_acc") for r in rows))]
        if result.labelled:
            table.append(("test (true)", *(_cell(r, "test_loss", "test_acc") for r in rows)))
        for name in names:
            key = name.replace("-", "_")
            table.append(
                (name, *(_cell(r, f"est_{key}_loss", f"est_{key}_acc", f"status_{key}") for r in rows))
            )
        render.show_table(
            f"{run}: test loss (accuracy %) by step",
            ["", *(render.fmt(r["step"]) for r in rows)],
            table,
            caption="* fell back to naive (see the status columns); –: not estimated"
            + (
                "; n/a: does not apply (no hidden layer)"
                if any(NOT_APPLICABLE & set(r.values()) for r in rows)
                else ""
            ),
        )


def _yes(loss: bool | None, acc: bool | None) -> str:
    def word(v: bool | None) -> str:
        return "–" if v is None else "yes" if v else "no"

    return f"{word(loss)}/{word(acc)}"
