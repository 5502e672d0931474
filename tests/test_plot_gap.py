"""The gap figure (:func:`tsens.plots.plot_gap`) from fake results of the shape the command
produces: written as a PNG, with the band, the reference lines and the bars sorted by MAE."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

pytest.importorskip("matplotlib")

import tsens.plots  # noqa: E402
from tsens.plots import plot_gap  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"
ESTIMATORS = {
    # name: (loss noise, acc noise); None where the estimator does not estimate that target
    "naive": (None, None),
    "calibrated": (0.02, 0.01),
    "calibrated-train": (0.05, 0.02),
    "atc": (0.08, 0.015),
    "doc": (0.12, 0.03),
    "cot": (None, 0.012),
    "tic": (0.04, None),
    "layer-norm": (0.3, 0.08),
    "kummer": (5.0, 0.2),
}


@dataclass
class FakeResult:
    rows: list[dict[str, Any]]
    evaluation: list[dict[str, Any]] | None = None
    recommended: str = "calibrated"
    level: float | None = None  # the real GapResult's interval level; not in the contract
    notes: list[str] = field(default_factory=list)

    @property
    def labelled(self) -> bool:
        return self.evaluation is not None


def fake_rows(runs=3, steps=(100, 200, 400, 800), estimators=ESTIMATORS, labelled=True, seed=0):
    """Per checkpoint: train and test values whose gap grows with the step, every estimator's
    estimate (the truth plus noise), statuses, calibrated's interval and a feature column."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(runs):
        for i, step in enumerate(steps):
            train_loss = 1.2 / (1 + i + r) + 0.05
            train_acc = min(0.99, 0.6 + 0.1 * i + 0.02 * r)
            test_loss = train_loss + 0.1 + 0.08 * i
            test_acc = train_acc - 0.05 - 0.03 * i
            row = {
                "checkpoint": f"run{r}/step{step}.safetensors",
                "run": f"run-{r}",
                "step": step,
                "train_loss": train_loss,
                "train_acc": train_acc,
            }
            if labelled:
                row.update(test_loss=test_loss, test_acc=test_acc)
            for name, (loss_noise, acc_noise) in estimators.items():
                key = name.replace("-", "_")
                if name == "naive":
                    loss, acc = train_loss, train_acc
                else:
                    loss = math.nan if loss_noise is None else test_loss + loss_noise * rng.standard_normal()
                    acc = math.nan if acc_noise is None else test_acc + acc_noise * rng.standard_normal()
                row.update({f"est_{key}_loss": loss, f"est_{key}_acc": acc, f"status_{key}": "ok"})
                if name == "calibrated":
                    row.update(
                        est_calibrated_loss_lo=loss - 0.06,
                        est_calibrated_loss_hi=loss + 0.06,
                        est_calibrated_acc_lo=acc - 0.025,
                        est_calibrated_acc_hi=acc + 0.025,
                    )
            row["log10_kummer_test"] = 3.0
            rows.append(row)
    return rows


def fake_evaluation(rows, estimators=ESTIMATORS, level=0.9):
    """One row per estimator, as the command's evaluation lays it out."""
    out = []
    truth_loss = np.array([r["test_loss"] for r in rows])
    truth_acc = np.array([r["test_acc"] for r in rows])
    for name in estimators:
        key = name.replace("-", "_")
        loss = np.array([r[f"est_{key}_loss"] for r in rows])
        acc = np.array([r[f"est_{key}_acc"] for r in rows])
        row = {
            "kind": "estimator",
            "name": name,
            "checkpoints": len(rows),
            "mae_loss": float(np.mean(np.abs(loss - truth_loss))),
            "mae_acc_points": float(100 * np.mean(np.abs(acc - truth_acc))),
            "kendall_loss": 0.5,
        }
        if name == "calibrated":
            lo, hi = (np.array([r[f"est_calibrated_loss_{s}"] for r in rows]) for s in ("lo", "hi"))
            row["coverage_loss"] = float(np.mean((lo <= truth_loss) & (truth_loss <= hi)))
            lo, hi = (np.array([r[f"est_calibrated_acc_{s}"] for r in rows]) for s in ("lo", "hi"))
            row["coverage_acc"] = float(np.mean((lo <= truth_acc) & (truth_acc <= hi)))
            row["interval_level"] = level
        out.append(row)
    out.append({"kind": "feature", "name": "log10_kummer_test", "checkpoints": len(rows)})
    return out


def labelled_result(**kwargs):
    rows = fake_rows(**kwargs)
    return FakeResult(rows, fake_evaluation(rows, kwargs.get("estimators", ESTIMATORS)))


def axes_by_label(fig):
    return {ax.get_label(): ax for ax in fig.axes}


def line_labels(ax):
    return [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]


def assert_png(path):
    assert path.read_bytes()[:8] == PNG


def test_labelled_bars_sorted_with_references_and_band(tmp_path):
    result = labelled_result()
    fig = plot_gap(result, tmp_path / "gap.png")
    assert_png(tmp_path / "gap.png")
    axes = axes_by_label(fig)
    mae = {r["name"]: r for r in result.evaluation if r["kind"] == "estimator"}
    blue = "#1f77b4"
    for metric, column, absent in (("loss", "mae_loss", "cot"), ("acc", "mae_acc_points", "tic")):
        ax = axes[f"mae {metric}"]
        names = [t.get_text() for t in ax.get_yticklabels()]
        expected = sorted((n for n in mae if math.isfinite(mae[n][column])), key=lambda n: mae[n][column])
        assert names == expected and absent not in names and len(names) == len(ESTIMATORS) - 1
        bars = ax.patches
        assert len(bars) == len(names)
        widths = [bar.get_width() for bar in bars]
        assert widths == sorted(widths)  # kummer's bar is cut but stays the longest
        for bar, name in zip(bars, names, strict=True):
            beats = mae[name][column] < mae["calibrated-train"][column]
            colour = tuple(round(c, 3) for c in bar.get_facecolor()[:3])
            assert (colour == tuple(round(int(blue[i : i + 2], 16) / 255, 3) for i in (1, 3, 5))) == beats
        references = {line.get_label(): line.get_xdata()[0] for line in ax.get_lines()}
        assert references == {
            "reference: naive": pytest.approx(mae["naive"][column]),
            "reference: calibrated-train": pytest.approx(mae["calibrated-train"][column]),
        }
        assert {t.get_text() for t in ax.texts} >= {"naive", "calibrated-train"}
        covered = mae["calibrated"][f"coverage_{metric}"]
        assert f"90 % interval covers {100 * covered:.0f} % of checkpoints" in ax.get_title()
    assert any("→" in t.get_text() for t in axes["mae loss"].texts)  # kummer's loss is off the chart

    # Per run: truth, train, calibrated with its band, and the best two others by MAE per target.
    runs = [label for label in axes if label.startswith("run ")]
    assert len(runs) == 6
    for metric, column in (("loss", "mae_loss"), ("acc", "mae_acc_points")):
        ax = axes[f"run run-1 {metric}"]
        best = sorted(
            (n for n in mae if n not in ("naive", "calibrated") and math.isfinite(mae[n][column])),
            key=lambda n: mae[n][column],
        )[:2]
        assert sorted(line_labels(ax)) == sorted(
            ["train value (naive)", "truth (test labels)", "calibrated (recommended)", *best]
        )
        bands = [c for c in ax.collections if c.get_label() == "calibrated: 90 % interval"]
        assert len(bands) == 1
        assert ax.get_legend() is None
    legends = [ax for ax in fig.axes if ax.get_legend() is not None]
    assert [ax.get_label() for ax in legends] == ["legend"]
    assert "truth (test labels)" in [t.get_text() for t in legends[0].get_legend().get_texts()]


def test_unlabelled_draws_no_truth_and_no_bars(tmp_path):
    result = FakeResult(fake_rows(labelled=False), level=0.8)
    fig = plot_gap(result, tmp_path / "gap.png")
    assert_png(tmp_path / "gap.png")
    axes = axes_by_label(fig)
    assert not any(label.startswith("mae") for label in axes)
    ax = axes["run run-0 loss"]
    assert sorted(line_labels(ax)) == sorted(
        ["train value (naive)", "calibrated (recommended)", "calibrated-train", "atc"]
    )
    assert any(c.get_label() == "calibrated: 80 % interval" for c in ax.collections)
    # without a level (the contract does not promise one) the band is just "interval"
    fig = plot_gap(FakeResult(fake_rows(runs=1, steps=(1, 2), labelled=False)), tmp_path / "small.png")
    ax = axes_by_label(fig)["run run-0 acc"]
    assert any(c.get_label() == "calibrated: interval" for c in ax.collections)


def test_single_checkpoint_without_step(tmp_path):
    rows = fake_rows(runs=1, steps=(None,))
    result = FakeResult(rows, fake_evaluation(rows))
    fig = plot_gap(result, tmp_path / "gap.png")
    assert_png(tmp_path / "gap.png")
    ax = axes_by_label(fig)["run run-0 acc"]
    assert ax.get_xlabel().startswith("checkpoint")
    assert any(c.get_label() == "calibrated: 90 % interval" for c in ax.collections)  # a bar, not a band


def test_nan_maes_and_estimators_missing(tmp_path):
    estimators = {"naive": (None, None), "calibrated": (0.02, None), "tic": (0.04, None), "cot": (None, 0.01)}
    rows = fake_rows(runs=2, steps=(1, 10, 100, 1000), estimators=estimators)
    for row in rows:  # calibrated could not bound accuracy
        row["est_calibrated_acc_lo"] = row["est_calibrated_acc_hi"] = math.nan
    rows[3]["step"] = None
    result = FakeResult(rows, fake_evaluation(rows, estimators))
    fig = plot_gap(result, tmp_path / "gap.png")
    assert_png(tmp_path / "gap.png")
    axes = axes_by_label(fig)
    assert [t.get_text() for t in axes["mae acc"].get_yticklabels()] == ["cot", "naive"]
    assert [t.get_text() for t in axes["mae loss"].get_yticklabels()][-1] == "naive"
    assert [line.get_label() for line in axes["mae acc"].get_lines()] == ["reference: naive"]
    assert axes["run run-1 loss"].get_xscale() == "log"
    assert axes["run run-0 acc"].get_xlabel().startswith("checkpoint")  # run-0 has a step None
    assert not [c for c in axes["run run-1 acc"].collections if "interval" in c.get_label()]
    assert [c for c in axes["run run-1 loss"].collections if "interval" in c.get_label()]
    # nothing estimated at all: the panels say so
    rows = fake_rows(runs=1, steps=(1, 2), estimators={"naive": (None, None)})
    evaluation = fake_evaluation(rows, {"naive": (None, None)})
    evaluation[0]["mae_acc_points"] = math.nan
    fig = plot_gap(FakeResult(rows, evaluation), tmp_path / "none.png")
    assert_png(tmp_path / "none.png")
    assert "no estimator" in axes_by_label(fig)["mae acc"].texts[0].get_text()


def test_recommended_without_interval_and_too_many_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(tsens.plots, "MAX_RUNS", 2)  # as with MAX_RUNS + 2 runs, drawn faster
    estimators = {"naive": (None, None), "atc": (0.08, 0.015), "doc": (0.12, 0.03)}
    rows = fake_rows(runs=4, steps=(1, 2), estimators=estimators, labelled=False)
    fig = plot_gap(FakeResult(rows, recommended="naive"), tmp_path / "gap.png")
    assert_png(tmp_path / "gap.png")
    axes = axes_by_label(fig)
    assert sorted(label for label in axes if label.startswith("run ")) == [
        f"run run-{r} {m}" for r in (0, 1) for m in ("acc", "loss")
    ]
    assert "First 2 of 4 runs" in axes["note"].texts[0].get_text()
    ax = axes["run run-0 loss"]
    assert sorted(line_labels(ax)) == ["atc", "naive (recommended)", "train value (naive)"]
    assert not ax.collections
