"""Figures (the optional extra ``tsens[plot]``, matplotlib): drawn from library results only."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import TsensError
from .files import atomic_output

if TYPE_CHECKING:
    from .gap import GapResult

MAX_RUNS = 8
"""Runs drawn one per row; beyond this the figure says how many were left out."""

_TRAIN = "#b5b5b5"
"""Train values: light grey, behind everything."""
_RECOMMENDED = "#1f77b4"
"""The recommended estimate, its interval band and the bars of estimators that beat calibrated-train."""
_OTHERS = ("#e6550d", "#2ca02c", "#9467bd", "#8c564b")
"""The other estimators drawn per run, in order of first appearance (at most two per panel)."""
_WORSE = "#c8c8c8"
"""Bars of estimators that do not beat calibrated-train."""
_REFERENCES = (("naive", "#444444", "--"), ("calibrated-train", "#d62728", ":"))
"""The MAE bar chart's vertical reference lines: estimator, colour, line style."""
_TARGETS = (
    ("loss", "test loss (nats)", 1.0, "mae_loss"),
    ("acc", "test accuracy (%)", 100.0, "mae_acc_points"),
)
"""Per target: the row suffix, the axis label, the factor to its unit, the evaluation's MAE column."""


def require_matplotlib() -> Any:
    """matplotlib's pyplot on the Agg backend, or one clear line on how to get it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise TsensError("plots need matplotlib: pip install 'tsens[plot]'") from None
    return plt


def save_figure(fig: Any, path: str | Path) -> None:
    """Lay ``fig`` out, write it to ``path`` (its format from the suffix, PNG by default) whole or
    not at all, and close it."""
    plt = require_matplotlib()
    fig.tight_layout()
    with atomic_output(path, what="plot", force=True) as stream:
        fig.savefig(stream, dpi=110, format=Path(path).suffix.lstrip(".").lower() or "png")
    plt.close(fig)


def plot_gap(result: GapResult, path: str | Path) -> Any:
    """The gap figure, written to ``path`` and returned (closed): when test labels are known, a
    bar chart of each estimator's mean absolute error (loss in nats, accuracy in points) against
    naive and calibrated-train, with the recommended interval's coverage; then per run (the first
    :data:`MAX_RUNS`), test loss and accuracy across steps: the truth when known, the train
    value, the recommended estimate with its interval as a band, and at most two other
    estimators per panel (the best two by MAE when labelled, else calibrated-train and atc)."""
    plt = require_matplotlib()
    rows = list(result.rows)
    runs: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        runs.setdefault(str(row.get("run", "")), []).append(row)
    shown = list(runs)[:MAX_RUNS]
    evaluation = [r for r in (result.evaluation or []) if r.get("kind", "estimator") == "estimator"]
    labelled = bool(result.labelled)
    evaluated = labelled and bool(evaluation)
    recommended = _recommended(result, rows)
    others = {metric: _others(rows, evaluation, evaluated, recommended, metric) for metric, *_ in _TARGETS}
    colours: dict[str, str] = {}
    for name in [n for names in others.values() for n in names]:
        colours.setdefault(name, _OTHERS[len(colours) % len(_OTHERS)])
    level = _interval_level(result, evaluation, recommended)

    bars = max((len(_mae_entries(evaluation, column)) for *_, column in _TARGETS), default=0)
    band = recommended is not None and any(
        _finite(r.get(f"est_{_key(recommended)}_{m}_lo"))
        and _finite(r.get(f"est_{_key(recommended)}_{m}_hi"))
        for r in rows
        for m, *_ in _TARGETS
    )
    entries = 1 + labelled + (recommended is not None) + band + len(colours)
    columns = entries if entries <= 5 else math.ceil(entries / 2)
    legend = 0.45 if entries <= columns else 0.75
    heights = ([max(2.2, 0.27 * bars + 1.3)] if evaluated else []) + [legend] + [2.3] * max(len(shown), 1)
    note = len(runs) > MAX_RUNS
    heights += [0.3] if note else []
    with plt.rc_context({"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 9}):
        height = sum(heights) + 0.6
        fig = plt.figure(figsize=(11, height))
        grid = fig.add_gridspec(len(heights), 2, height_ratios=heights)
        fig.suptitle(
            "Test loss and accuracy estimated without test labels"
            + (", against the truth" if labelled else " (test labels unknown: no truth)"),
            fontsize=12,
            y=1 - 0.1 / height,  # tight_layout leaves room for its height, not for the default gap above
        )
        at = 0
        if evaluated:
            for col, (metric, _, _, column) in enumerate(_TARGETS):
                ax = fig.add_subplot(grid[at, col])
                ax.set_label(f"mae {metric}")
                _draw_bars(ax, evaluation, metric, column, recommended, level, rows)
            at += 1
        legend_ax = fig.add_subplot(grid[at, :])
        legend_ax.set_label("legend")
        legend_ax.axis("off")
        at += 1
        run_axes = []
        for i, run in enumerate(shown):
            for col, (metric, label, scale, _) in enumerate(_TARGETS):
                ax = fig.add_subplot(grid[at + i, col])
                ax.set_label(f"run {run} {metric}")
                _draw_run(ax, runs[run], metric, scale, labelled, recommended, others[metric], colours, level)
                # "step" under the last row only (and wherever a run has no steps): less to read.
                xlabel = _x_of(runs[run])[1]
                if i == len(shown) - 1 or xlabel != _x_of(runs[shown[-1]])[1]:
                    ax.set_xlabel(xlabel)
                ax.set_title(run)
                ax.set_ylabel(label)
                run_axes.append(ax)
        if not shown:
            ax = fig.add_subplot(grid[at, :])
            ax.axis("off")
            ax.text(0.5, 0.5, "no checkpoints", ha="center", va="center", transform=ax.transAxes)
        handles = _legend_handles(run_axes)
        if handles:
            legend_ax.legend(
                list(handles.values()),
                list(handles),
                loc="lower center",
                bbox_to_anchor=(0.5, 0.0),
                ncol=columns,
                frameon=False,
                handlelength=2.5,
                columnspacing=1.5,
            )
        if note:
            ax = fig.add_subplot(grid[-1, :])
            ax.set_label("note")
            ax.axis("off")
            ax.text(
                0.0,
                0.5,
                f"First {MAX_RUNS} of {len(runs)} runs shown; the table has every checkpoint.",
                ha="left",
                va="center",
                fontsize=8,
                style="italic",
                transform=ax.transAxes,
            )
        save_figure(fig, path)
    return fig


def _key(name: str) -> str:
    return name.replace("-", "_")


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _series(rows: list[dict[str, Any]], column: str, scale: float = 1.0) -> Any:
    """``column`` of each row times ``scale``: a masked array, masked where absent or not finite."""
    import numpy as np

    values = [float(r[column]) * scale if _finite(r.get(column)) else math.nan for r in rows]
    return np.ma.masked_invalid(np.array(values, dtype=np.float64))


def _estimates(rows: list[dict[str, Any]], name: str, metric: str) -> bool:
    """Whether estimator ``name`` has a finite estimate of ``metric`` in any row."""
    return any(_finite(r.get(f"est_{_key(name)}_{metric}")) for r in rows)


def _recommended(result: Any, rows: list[dict[str, Any]]) -> str | None:
    """The estimator to draw as the main line: the recommended one, else calibrated, if in the rows."""
    for name in (getattr(result, "recommended", None) or "calibrated", "calibrated"):
        if any(_estimates(rows, name, metric) for metric, *_ in _TARGETS):
            return name
    return None


def _others(
    rows: list[dict[str, Any]],
    evaluation: list[dict[str, Any]],
    evaluated: bool,
    recommended: str | None,
    metric: str,
) -> list[str]:
    """At most two estimators to draw besides the recommended one for ``metric``: the best two by
    MAE (neither naive nor calibrated) when labelled, else calibrated-train and atc."""
    skip = {"naive", "calibrated", recommended}
    if evaluated:
        column = dict((m, c) for m, *_, c in _TARGETS)[metric]
        names = [name for name, _ in _mae_entries(evaluation, column)]
    else:
        names = ["calibrated-train", "atc"]
    return [n for n in names if n not in skip and _estimates(rows, n, metric)][:2]


def _interval_level(result: Any, evaluation: list[dict[str, Any]], recommended: str | None) -> float | None:
    """The level of the recommended estimator's intervals (e.g. 0.9), when the result says."""
    for row in evaluation:
        if row.get("name") == recommended and _finite(row.get("interval_level")):
            return float(row["interval_level"])
    for source in (result, getattr(result, "calibration", None)):
        for attribute in ("interval_level", "level"):
            value = getattr(source, attribute, None)
            if _finite(value):
                return float(value)
    return None


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.0f} %"


def _x_of(rows: list[dict[str, Any]]) -> tuple[list[float], str]:
    """The steps, or the checkpoints' order (from 1) when any step is unknown, and the axis label."""
    steps = [r.get("step") for r in rows]
    if all(_finite(s) for s in steps):
        return [float(s) for s in steps], "step"
    return [float(i) for i in range(1, len(rows) + 1)], "checkpoint (in order; step unknown)"


def _draw_run(
    ax: Any,
    rows: list[dict[str, Any]],
    metric: str,
    scale: float,
    labelled: bool,
    recommended: str | None,
    others: list[str],
    colours: dict[str, str],
    level: float | None,
) -> None:
    """One run's panel for ``metric``: truth, train, the recommended estimate and its band, others."""
    from matplotlib.ticker import MaxNLocator

    x, xlabel = _x_of(rows)
    dots = {"marker": "o", "ms": 4} if len(rows) == 1 else {}
    ax.plot(
        x, _series(rows, f"train_{metric}", scale), color=_TRAIN, lw=1.6, label="train value (naive)", **dots
    )
    if labelled:
        truth = _series(rows, f"test_{metric}", scale)
        ax.plot(x, truth, color="black", lw=2.4, marker="o", ms=4, label="truth (test labels)", zorder=5)
    for name in others:
        estimate = _series(rows, f"est_{_key(name)}_{metric}", scale)
        ax.plot(x, estimate, color=colours[name], lw=1.4, ls="--", label=name, zorder=3, **dots)
    if recommended is not None:
        key = _key(recommended)
        estimate = _series(rows, f"est_{key}_{metric}", scale)
        lo = _series(rows, f"est_{key}_{metric}_lo", scale)
        hi = _series(rows, f"est_{key}_{metric}_hi", scale)
        band = f"{recommended}: " + ("" if level is None else f"{_percent(level)} ") + "interval"
        if (~(lo.mask | hi.mask)).any():
            if len(rows) == 1:
                ax.vlines(x, lo, hi, color=_RECOMMENDED, alpha=0.25, lw=10, label=band, zorder=2)
            else:
                ax.fill_between(x, lo, hi, color=_RECOMMENDED, alpha=0.18, lw=0, label=band, zorder=2)
        label = f"{recommended} (recommended)"
        ax.plot(x, estimate, color=_RECOMMENDED, lw=2, marker="o", ms=3, label=label, zorder=4)
    ax.grid(alpha=0.3, lw=0.5)
    if len(x) == 1:
        ax.set_xticks(x)
    elif xlabel != "step":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    elif min(x) > 0 and max(x) / min(x) > 20:
        ax.set_xscale("log")


def _legend_handles(axes: list[Any]) -> dict[str, Any]:
    """One handle per label over ``axes``: truth, the recommended estimate, its band, the other
    estimators, then the train value."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)

    def rank(label: str) -> int:
        if label.startswith("truth"):
            return 0
        if label.endswith("(recommended)"):
            return 1
        if label.endswith(" interval"):
            return 2
        return 4 if label.startswith("train value") else 3

    return {label: handles[label] for label in sorted(handles, key=rank)}


def _mae_entries(evaluation: list[dict[str, Any]], column: str) -> list[tuple[str, float]]:
    """(estimator, MAE) sorted by MAE, without the estimators whose MAE is not finite."""
    entries = [(str(r["name"]), float(r[column])) for r in evaluation if _finite(r.get(column))]
    return sorted(entries, key=lambda e: e[1])


def _draw_bars(
    ax: Any,
    evaluation: list[dict[str, Any]],
    metric: str,
    column: str,
    recommended: str | None,
    level: float | None,
    rows: list[dict[str, Any]],
) -> None:
    """Horizontal bars of each estimator's MAE for ``metric``, best on top, blue where they beat
    calibrated-train; naive and calibrated-train as labelled vertical lines; the recommended
    interval's coverage under the title."""
    what, unit = ("Test loss", "nats") if metric == "loss" else ("Test accuracy", "% points")
    title = f"{what}: mean absolute error per estimator"
    coverage = _coverage(evaluation, recommended, metric, level, rows)
    ax.set_title(title + (f"\n{coverage}" if coverage else ""), pad=16)
    entries = _mae_entries(evaluation, column)
    if not entries:
        ax.axis("off")
        ax.text(
            0.5,
            0.5,
            f"no estimator estimates the {what.lower()}",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
        return
    by_name = dict(entries)
    reference = by_name.get("calibrated-train")
    names = [name for name, _ in entries]
    values = [value for _, value in entries]
    beats = [reference is not None and v < reference - 1e-12 for v in values]
    # An estimator far off would squash the others: its bar is cut a little past the rest.
    references = [by_name[name] for name, *_ in _REFERENCES if name in by_name]
    kept = [v for v in values if not references or v <= 4 * max(references)]
    limit = max(values) if len(kept) == len(values) else 1.25 * max(kept)
    limit = limit if limit > 0 else 1.0
    y = list(range(len(entries)))
    drawn = [min(v, limit) for v in values]
    ax.barh(y, drawn, height=0.7, color=[_RECOMMENDED if b else _WORSE for b in beats], zorder=2)
    for yi, value in zip(y, values, strict=True):
        cut = value > limit
        ax.text(
            limit if cut else value,
            yi,
            f"{value:.3g} → " if cut else f" {value:.3g}",
            va="center",
            ha="right" if cut else "left",
            fontsize=8,
            zorder=3,
        )
    ax.set_yticks(y)
    ax.set_yticklabels(names)
    for tick, name in zip(ax.get_yticklabels(), names, strict=True):
        if name == recommended:
            tick.set_fontweight("bold")
    ax.invert_yaxis()
    ax.set_xlim(0, limit * 1.15)
    key = "blue: beats calibrated-train" if reference is not None else ""
    ax.set_xlabel(f"MAE ({unit}), lower is better" + (f"; {key}" if any(beats) else ""))
    ax.grid(axis="x", alpha=0.3, lw=0.5)
    lines = sorted(
        (by_name[name], name, colour, style) for name, colour, style in _REFERENCES if name in by_name
    )
    for i, (value, name, colour, style) in enumerate(lines):
        ax.axvline(value, color=colour, ls=style, lw=1.5, zorder=4, label=f"reference: {name}")
        # Above the axes, the smaller one's name to the left of its line, the larger's to the right.
        left = i == 0 and len(lines) > 1
        ax.annotate(
            name,
            (min(value, limit * 1.15), 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(-2 if left else 2, 2),
            textcoords="offset points",
            ha="right" if left else "left",
            va="bottom",
            fontsize=8,
            color=colour,
        )


def _coverage(
    evaluation: list[dict[str, Any]],
    recommended: str | None,
    metric: str,
    level: float | None,
    rows: list[dict[str, Any]],
) -> str:
    """E.g. "calibrated: 90 % interval covers 87 % of checkpoints", or "" when not evaluated or
    when the recommended estimator has no interval for ``metric`` (a coverage of 0 would mislead)."""
    if recommended is None or not any(
        _finite(r.get(f"est_{_key(recommended)}_{metric}_{side}")) for r in rows for side in ("lo", "hi")
    ):
        return ""
    for row in evaluation:
        if row.get("name") == recommended and _finite(row.get(f"coverage_{metric}")):
            stated = "" if level is None else f"{_percent(level)} "
            covered = _percent(row[f"coverage_{metric}"])
            return f"{recommended}: {stated}interval covers {covered} of checkpoints"
    return ""
