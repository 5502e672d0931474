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

_STYLE = {
    "naive": ("#7f7f7f", "--"),
    "layer-norm": ("#bcbd22", ":"),
    "kummer": ("#17becf", ":"),
    "membership": ("#9467bd", ":"),
    "jacobian": ("#8c564b", ":"),
    "confidence": ("#e377c2", "-."),
    "doc": ("#ff7f0e", "-"),
    "atc": ("#2ca02c", "-"),
    "disagreement": ("#d62728", "-."),
    "mean-gap": ("#aec7e8", "--"),
    "calibrated": ("#1f77b4", "-"),
}


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


def plot_gap(result: GapResult, path: str | Path) -> None:
    """Per run, test loss and accuracy across steps, true (black) and estimated; then, over all
    checkpoints, each estimate against the truth (when test labels are known)."""
    plt = require_matplotlib()
    names = [k.removeprefix("status_").replace("_", "-") for k in result.rows[0] if k.startswith("status_")]
    runs: dict[str, list[dict[str, Any]]] = {}
    for row in result.rows:
        runs.setdefault(row["run"], []).append(row)
    shown = list(runs)[:MAX_RUNS]
    extra = 1 if result.labelled else 0
    fig, axes = plt.subplots(len(shown) + extra, 2, figsize=(11, 2.6 * (len(shown) + extra)), squeeze=False)
    for i, run in enumerate(shown):
        rows = runs[run]
        steps = [r["step"] if r["step"] is not None else j for j, r in enumerate(rows)]
        for col, (metric, label) in enumerate((("loss", "test loss (nats)"), ("acc", "test accuracy"))):
            ax = axes[i][col]
            ax.plot(steps, [r[f"train_{metric}"] for r in rows], color="#bbbbbb", lw=1, label="train")
            if result.labelled:
                ax.plot(
                    steps,
                    [r[f"test_{metric}"] for r in rows],
                    color="black",
                    lw=2.2,
                    marker="o",
                    label="true",
                )
            for name in names:
                key = name.replace("-", "_")
                color, style = _STYLE.get(name, ("#333333", "-"))
                ax.plot(
                    steps, [r[f"est_{key}_{metric}"] for r in rows], color=color, ls=style, lw=1.2, label=name
                )
            ax.set_title(f"{run}", fontsize=8)
            ax.set_ylabel(label, fontsize=8)
            ax.set_xlabel("step", fontsize=7)
            ax.tick_params(labelsize=7)
            if all(isinstance(s, int | float) and s > 0 for s in steps) and max(steps) / min(steps) > 20:
                ax.set_xscale("log")
    axes[0][1].legend(fontsize=6, ncol=2, loc="best")
    if len(runs) > MAX_RUNS:
        fig.suptitle(f"first {MAX_RUNS} of {len(runs)} runs shown; the table has them all", fontsize=9)
    if result.labelled:
        for col, (metric, label) in enumerate((("loss", "test loss (nats)"), ("acc", "test accuracy"))):
            ax = axes[-1][col]
            truth = [r[f"test_{metric}"] for r in result.rows]
            for name in names:
                key = name.replace("-", "_")
                color, _ = _STYLE.get(name, ("#333333", "-"))
                ax.scatter(
                    truth, [r[f"est_{key}_{metric}"] for r in result.rows], s=8, color=color, label=name
                )
            finite = [v for v in truth if math.isfinite(v)]
            lo, hi = min(finite), max(finite)
            ax.plot([lo, hi], [lo, hi], color="black", lw=1)
            ax.set_xlabel(f"true {label}", fontsize=8)
            ax.set_ylabel(f"estimated {label}", fontsize=8)
            ax.set_title(f"all {len(result.rows)} checkpoints: estimate against truth", fontsize=8)
            ax.tick_params(labelsize=7)
    save_figure(fig, path)
