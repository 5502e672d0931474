"""Evaluate every estimate-gap estimator on the development zoo (``zoo/``, ``make zoo``).

The zoo's runs are grouped by the data they were trained and tested on (metadata ``dataset``
and ``test_dataset``: clean digits, digits with 20 % label noise, mnist1d, ...); each group goes
through :func:`tsens.commands.estimate_gap` as one command would, with its test labels, so
``mean-gap`` and ``calibrated`` are cross-fitted leave-one-run-out inside the group. Prints each
group's evaluation and then the pooled one (every checkpoint of every group), in the same
columns as ``tsens estimate-gap``'s summary, and the label-free features' Kendall τ with the gap.

Usage: python scripts/evaluate_zoo.py [--zoo zoo] [--dtype float64] [--summary FILE.csv]
"""

from __future__ import annotations

import argparse
import warnings
from collections import defaultdict
from pathlib import Path

import tsens
from tsens.choices import DEFAULT_FEATURES, ESTIMATORS, FEATURE_SETS
from tsens.commands import estimate_gap
from tsens.gap import calibration
from tsens.gap.evaluation import evaluate, hyperparameters, rank_features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", default="zoo")
    parser.add_argument("--dtype", default="float64")
    parser.add_argument("--features", default=DEFAULT_FEATURES, choices=FEATURE_SETS)
    parser.add_argument(
        "--loss-space",
        default=calibration.LOSS_SPACE,
        choices=("difference", "log-ratio"),
        help="The space the calibrated estimators model the loss in (to compare them; README).",
    )
    parser.add_argument("--hold-out", default="run", choices=("run", "siblings"))
    parser.add_argument("--summary", default=None, help="Write the pooled evaluation as a table.")
    parser.add_argument("--rows", default=None, help="Write every checkpoint's row as a table.")
    args = parser.parse_args()
    calibration.TARGETS["loss"] = calibration.Target("loss", args.loss_space)
    refs = tsens.plan_runs(sorted(str(p) for p in Path(args.zoo).glob("*/*.safetensors")))
    groups: dict[tuple[str, str], list[tsens.CheckpointRef]] = defaultdict(list)
    for ref in refs:
        groups[(str(ref.metadata["dataset"]), str(ref.metadata["test_dataset"]))].append(ref)
    rows, hyper = [], []
    names = list(ESTIMATORS)
    for (train, test), members in groups.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = estimate_gap(
                members,
                train,
                test,
                estimators=ESTIMATORS,  # all, with their fallbacks: what a user asking for them gets
                features=args.features,
                hold_out=args.hold_out,
                setup=tsens.Setup(compute=tsens.Compute(dtype=args.dtype)),
            ).extra["gap"]
        names = [n for n in names if n in result.names]
        hyper += [hyperparameters(ref.metadata) for ref in result_refs(members)]
        runs = len({r.run for r in members})
        print(f"\n== {train} → {test}: {runs} runs, {len(members)} checkpoints")
        for note in [*result.notes, *(str(w.message) for w in caught)]:
            print(f"   note: {note}")
        show(result.evaluation or [])
        rows += result.rows
    print(f"\n== pooled: {len(rows)} checkpoints")
    pooled = evaluate(rows, names, hyper, 0.9)
    show(pooled)
    print("\nlabel-free features, Kendall τ with the true gap (loss, accuracy), pooled:")
    for r in sorted(rank_features(rows), key=lambda r: -abs(r["kendall_loss_gap"])):
        print(f"   {r['name']:<24s} {r['kendall_loss_gap']:+.3f} {r['kendall_acc_gap']:+.3f}")
    if args.summary:
        meta = tsens.provenance("scripts/evaluate_zoo.py", data={"zoo": args.zoo}, options=vars(args))
        columns = {k: [r.get(k) for r in pooled] for k in pooled[0]}
        tsens.write_table(tsens.make_table(columns, meta), args.summary, force=True)
    if args.rows:
        meta = tsens.provenance("scripts/evaluate_zoo.py", data={"zoo": args.zoo}, options=vars(args))
        keys = list(dict.fromkeys(k for r in rows for k in r))
        columns = {k: [r.get(k) for r in rows] for k in keys}
        tsens.write_table(tsens.make_table(columns, meta), args.rows, force=True)


def result_refs(members: list[tsens.CheckpointRef]) -> list[tsens.CheckpointRef]:
    """The checkpoints in the order ``estimate_gap`` scores them (runs, then steps)."""
    return tsens.plan_runs([m.path for m in members])


def show(evaluation: list[dict]) -> None:
    head = (
        f"{'estimator':<17s} {'MAE loss':>9s} {'MAE acc':>8s} {'τ gap':>7s} {'gran τ':>7s} "
        f"{'cover':>9s} {'fallb.':>6s}"
    )
    print(f"   {head}  beats naive/calibrated-train/best (loss, acc)")
    for e in evaluation:
        beats = " ".join(
            "".join(
                "-" if e[f"beats_{b}_{t}"] is None else "y" if e[f"beats_{b}_{t}"] else "n"
                for t in ("loss", "acc")
            )
            for b in ("naive", "calibrated_train", "best_baseline")
        )
        mark = "*" if e["winner_loss"] or e["winner_acc"] else " "
        cover = (
            f"{e['coverage_loss']:.2f}/{e['coverage_acc']:.2f}"
            if e["coverage_loss"] == e["coverage_loss"]
            else ""
        )
        print(
            f"  {mark}{e['name']:<17s} {e['mae_loss']:9.4f} {e['mae_acc_points']:8.2f} "
            f"{e['kendall_loss_gap']:7.3f} {e['granulated_kendall_loss_gap']:7.3f} {cover:>9s} "
            f"{e['fallbacks']:6d}  {beats}"
        )


if __name__ == "__main__":
    main()
