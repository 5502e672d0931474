"""The answer a user reads first: which checkpoint is best and what to expect of it.

From the per-checkpoint rows (:mod:`.estimates`) this module builds

* the ranking: checkpoints ordered by the recommended estimator's test accuracy (then loss),
  each with its interval when the estimator gives one;
* whether the label-free estimators (:data:`LABEL_FREE`) agree: with an interval, their median
  should fall inside it; without one, they should lie within :data:`SPREAD` of each other.
  Where they do not, the summary says so instead of presenting one number;
* warnings to read before any estimate: a training loss or accuracy that differs from the one
  the checkpoint's metadata records (the wrong data set, or the wrong preprocessing), and a test
  set that holds the training inputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..datasets import Dataset
from ..runs import CheckpointRef

Row = dict[str, Any]

LABEL_FREE = ("confidence", "doc", "atc", "cot", "cott", "disagreement", "agreement")
"""Estimators of the accuracy that read no calibration."""
SPREAD = 0.05
"""Without an interval, label-free accuracies further apart than this (5 points) disagree."""
RECORDED_ACC = 0.02
RECORDED_LOSS = 0.1
"""A measured train accuracy more than 2 points, or a loss more than 10 % (relative), away from
the recorded one is reported."""


def _key(name: str) -> str:
    return name.replace("-", "_")


def agreement_columns(rows: Sequence[Row], names: Sequence[str], recommended: str) -> None:
    """Add to each row ``label_free_acc_min``/``_max`` (over the label-free estimators that ran
    without falling back) and ``estimates_disagree`` (module docstring): whether their median lies
    outside the recommended estimator's accuracy interval or, without one, whether they span more
    than :data:`SPREAD`."""
    chosen = [n for n in LABEL_FREE if n in names]
    key = _key(recommended)
    for row in rows:
        values = [
            row[f"est_{_key(n)}_acc"]
            for n in chosen
            if row.get(f"status_{_key(n)}") == "ok" and math.isfinite(row[f"est_{_key(n)}_acc"])
        ]
        lo, hi = (min(values), max(values)) if values else (math.nan, math.nan)
        row["label_free_acc_min"], row["label_free_acc_max"] = lo, hi
        interval = (row.get(f"est_{key}_acc_lo", math.nan), row.get(f"est_{key}_acc_hi", math.nan))
        if not values:
            row["estimates_disagree"] = False
        elif all(math.isfinite(v) for v in interval):
            middle = float(np.median(values))
            row["estimates_disagree"] = bool(middle < interval[0] or middle > interval[1])
        else:
            row["estimates_disagree"] = bool(hi - lo > SPREAD)


def ranking(rows: Sequence[Row], recommended: str) -> list[Row]:
    """The rows ordered by the recommended estimate: highest test accuracy first, then lowest
    loss (NaN last)."""
    key = _key(recommended)

    def order(row: Row) -> tuple[float, float]:
        acc, loss = row[f"est_{key}_acc"], row[f"est_{key}_loss"]
        return (-acc if math.isfinite(acc) else math.inf, loss if math.isfinite(loss) else math.inf)

    return sorted(rows, key=order)


def _recorded(ref: CheckpointRef, name: str) -> float | None:
    value = ref.metadata.get(name)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def recorded_mismatches(
    refs: Sequence[CheckpointRef], rows: Sequence[Mapping[str, Any]], train: str
) -> list[str]:
    """One note when the measured train loss or accuracy of some checkpoints differs from the
    one their metadata records (``train_loss``, ``train_acc``)."""
    off = []
    for ref, row in zip(refs, rows, strict=True):
        acc, loss = _recorded(ref, "train_acc"), _recorded(ref, "train_loss")
        bad_acc = acc is not None and abs(row["train_acc"] - acc) > RECORDED_ACC
        bad_loss = loss is not None and abs(row["train_loss"] - loss) > RECORDED_LOSS * max(loss, 1e-3)
        if bad_acc or bad_loss:
            off.append((ref, row, acc, loss))
    if not off:
        return []
    ref, row, acc, loss = off[0]
    recorded = f"{100 * acc:.1f} %" if acc is not None else f"loss {loss:.4g}"
    measured = f"{100 * row['train_acc']:.1f} %" if acc is not None else f"loss {row['train_loss']:.4g}"
    return [
        f"the training set {train!r} gives {len(off)} of {len(refs)} checkpoint(s) another train accuracy or "
        f"loss than their metadata records (e.g. {ref.path}: measured {measured}, recorded {recorded}): "
        "is it the set they were trained on, preprocessed as in training? Every estimate builds on it"
    ]


def same_inputs(train: Dataset, test: Dataset) -> list[str]:
    """One note when the test set holds the training inputs (same size, the same samples at a
    few seeded positions)."""
    if len(train) != len(test) or train.sample_shape != test.sample_shape:
        return []
    positions = {0, len(train) - 1, *np.random.default_rng(0).integers(0, len(train), 8).tolist()}
    if all(np.array_equal(train.raw(i), test.raw(i)) for i in sorted(positions)):
        return [
            f"the test set {test.spec!r} holds the training inputs of {train.spec!r}: the estimates are of "
            "the training set itself, not of unseen data"
        ]
    return []
