"""The calibrated estimators' selection, intervals and guards, the granulated τ, agreement on the
line and the summary's answer, each against an independent computation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from tsens.datasets import Dataset
from tsens.errors import TsensError
from tsens.gap import calibration as cal
from tsens.gap import estimators as est
from tsens.gap.answer import agreement_columns, ranking, recorded_mismatches, same_inputs
from tsens.gap.evaluation import evaluate, granulated_kendall
from tsens.runs import CheckpointRef


def rows_of(rng, runs, per_run, extra=0):
    """Feature rows of the ``shift`` set (and ``extra`` noise features named ``noise{i}``)."""
    groups = [f"r{i}" for i in range(runs) for _ in range(per_run)]
    rows = []
    for _ in groups:
        row = {k: float(rng.normal()) for k in ("train_acc", "conf_train", "conf_shift", "entropy_train")}
        row.update(entropy_shift=float(rng.normal()), atc_acc=float(rng.normal()))
        row["train_loss"] = float(rng.uniform(0.05, 2.0))
        row.update({f"noise{i}": float(rng.normal()) for i in range(extra)})
        rows.append(row)
    return groups, rows


def ridge_by_lstsq(x, y, alpha):
    """Ridge with an unpenalised intercept on standardised columns, as an augmented least-squares
    problem (independent of the normal equations the module solves)."""
    mean, scale = x.mean(0), x.std(0)
    scale[scale == 0] = 1
    z = (x - mean) / scale
    design = np.vstack(
        [
            np.column_stack([np.ones(len(z)), z]),
            np.column_stack([np.zeros(z.shape[1]), math.sqrt(alpha) * np.eye(z.shape[1])]),
        ]
    )
    target = np.concatenate([y, np.zeros(z.shape[1])])
    beta = np.linalg.lstsq(design, target, rcond=None)[0]
    return lambda q: beta[0] + ((q - mean) / scale) @ beta[1:]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=1, max_size=40), st.sampled_from([0.5, 0.8, 0.9, 0.95]))
def test_conformal_quantile_is_the_finite_sample_quantile(residuals, level):
    q = cal.conformal_quantile(residuals, level)
    n = len(residuals)
    # The smallest |r| that at least ⌈(n+1)·level⌉ residuals do not exceed.
    need = math.ceil((n + 1) * level)
    candidates = [abs(r) for r in residuals if sum(abs(s) <= abs(r) for s in residuals) >= need]
    assert q == (min(candidates) if need <= n else math.inf)


def test_one_standard_error_takes_the_simplest_candidate_within_noise():
    def s(name, alpha, mae, se):
        return cal._Score(name, alpha, mae, se, np.zeros(1))

    # The best is shift (0.9 ± 0.1): every candidate up to 1.0 is a near-tie; the simplest set
    # and, within it, the strongest α (listed first) wins.
    scores = [s("train", 10, 0.98, 0.2), s("train", 1, 0.95, 0.1), s("shift", 1, 0.9, 0.1)]
    assert cal.one_standard_error(scores).alpha == 10
    scores = [s("train", 10, 1.2, 0.1), s("train", 1, 1.0, 0.1), s("shift", 1, 0.9, 0.1)]
    assert (cal.one_standard_error(scores).feature_set, cal.one_standard_error(scores).alpha) == ("train", 1)
    scores = [s("train", 10, 1.2, 0.1), s("shift", 1, 0.5, 0.1)]
    assert cal.one_standard_error(scores).feature_set == "shift"


def test_a_richer_set_is_chosen_only_when_it_wins_by_more_than_noise():
    rng = np.random.default_rng(3)
    runs, rows = rows_of(rng, 8, 5)
    logs = np.array([math.log(r["train_loss"]) for r in rows])
    # A target of the train set only: the shift set's extra features are noise.
    y = 0.8 * logs + 0.3 * np.array([r["train_acc"] for r in rows]) + 0.05 * rng.normal(size=len(rows))
    assert cal.fit(rows, y, runs).feature_set == "train"
    # A strong signal only the shift set sees.
    y2 = y + 2.0 * np.array([r["entropy_shift"] for r in rows])
    assert cal.fit(rows, y2, runs).feature_set == "shift"


def test_chosen_model_its_residuals_and_interval_are_those_of_leave_one_run_out():
    rng = np.random.default_rng(4)
    runs, rows = rows_of(rng, 7, 4)
    y = np.array([r["conf_shift"] + 0.3 * rng.normal() for r in rows])
    model = cal.fit(rows, y, runs, sets=("shift",))
    names = cal.FEATURE_SETS["shift"]
    x = np.array([[cal.derived(r)[n] for n in names] for r in rows])
    groups = np.array(runs)
    residuals = np.empty(len(y))
    for run in sorted(set(runs)):
        held = groups == run
        predict = ridge_by_lstsq(x[~held], y[~held], model.alpha)
        clipped = np.clip(x[held], x[~held].min(0), x[~held].max(0))
        span = y[~held].max() - y[~held].min()
        raw = predict(clipped)
        residuals[held] = np.clip(raw, y[~held].min() - span / 2, y[~held].max() + span / 2) - y[held]
    assert np.allclose(model.residuals, residuals, atol=1e-9)
    # Chosen by its error in nats: the loss gap decoded as train + gap, at least 0.
    base = np.array([r["train_loss"] for r in rows])
    natural = np.abs(np.maximum(base + y + residuals, 0) - np.maximum(base + y, 0))
    assert model.cv_mae == pytest.approx(np.mean(natural))
    full = ridge_by_lstsq(x, y, model.alpha)
    assert np.allclose(
        model.predict(rows), np.clip(full(x), y.min() - (y.max() - y.min()) / 2, None), atol=1e-9
    )
    q = sorted(np.abs(residuals))[math.ceil(0.9 * (len(y) + 1)) - 1]
    assert model.half_width(0.9) == pytest.approx(q)


def test_cross_fit_intervals_come_from_the_other_runs_only():
    rng = np.random.default_rng(5)
    runs, rows = rows_of(rng, 7, 3)
    y = np.array([r["conf_shift"] for r in rows]) + 0.2 * rng.normal(size=len(rows))
    prediction = cal.cross_fit(rows, y, runs, sets=("shift",), level=0.8)
    for run in sorted(set(runs)):
        held = np.array([g == run for g in runs])
        others = [r for r, h in zip(rows, held, strict=True) if not h]
        model = cal.fit(others, y[~held], [g for g in runs if g != run], sets=("shift",))
        mine = [r for r, h in zip(rows, held, strict=True) if h]
        base, value, q = np.array([r["train_loss"] for r in mine]), model.predict(mine), model.half_width(0.8)
        assert np.allclose(prediction.value[held], np.maximum(base + value, 0))
        assert np.allclose(prediction.lo[held], np.maximum(base + value - q, 0))
        assert np.allclose(prediction.hi[held], np.maximum(base + value + q, 0))


def test_targets_encode_and_decode_in_their_space_within_range():
    rows = [{"train_loss": 0.5, "train_acc": 0.9}]
    truths = [{"test_loss": 1.5, "test_acc": 0.7}]
    ratio, diff = cal.Target("loss", "log-ratio"), cal.Target("loss", "difference")
    assert ratio.encode(rows, truths)[0] == pytest.approx(math.log(3.0))
    assert diff.encode(rows, truths)[0] == pytest.approx(1.0)
    assert cal.TARGETS["acc"].encode(rows, truths)[0] == pytest.approx(-0.2)
    base = np.array([0.5])
    assert ratio.decode(base, np.log([3.0]))[0] == pytest.approx(1.5)
    assert diff.decode(base, np.array([-2.0]))[0] == 0.0  # a loss is at least 0
    assert cal.TARGETS["acc"].decode(np.array([0.9]), np.array([0.5]))[0] == 1.0  # within [0, 1]


def test_features_option_bounds_the_sets_and_refuses_unknown_names():
    assert cal.sets_up_to("shift") == ("train", "shift")
    with pytest.raises(TsensError, match="features"):
        cal.sets_up_to("everything")


def brute_granulated(pred, truth, hyper, axes):
    psis = []
    for axis in axes:
        taus = []
        others = [a for a in (*axes, "dataset", "seed") if a != axis]
        keys = {tuple(h.get(o) for o in others) for h in hyper}
        for key in keys:
            members = [i for i, h in enumerate(hyper) if tuple(h.get(o) for o in others) == key]
            if len({hyper[i][axis] for i in members}) < 2:
                continue
            signs = [
                np.sign(pred[a] - pred[b]) * np.sign(truth[a] - truth[b])
                for a, b in itertools.combinations(members, 2)
            ]
            taus.append(np.mean(signs))
        if taus:
            psis.append(np.mean(taus))
    return float(np.mean(psis)), len(psis)


def test_granulated_kendall_against_a_brute_force_over_a_grid():
    rng = np.random.default_rng(6)
    hyper = [
        {"width": w, "lr": lr, "seed": s, "dataset": "d"}
        for w, lr, s in itertools.product(("16", "48", "128"), ("0.01", "0.001"), ("0", "1"))
    ]
    pred, truth = rng.normal(size=len(hyper)), rng.normal(size=len(hyper))
    got = granulated_kendall(pred, truth, hyper)
    want = brute_granulated(pred, truth, hyper, ("width", "lr"))
    assert got == pytest.approx(want) and got[1] == 2
    # A measure equal to the truth has τ = 1 along every axis.
    assert granulated_kendall(truth, truth, hyper) == (1.0, 2)
    assert math.isnan(granulated_kendall(pred, truth, [{} for _ in hyper])[0])


def test_agreement_on_the_line_against_scipy():
    rng = np.random.default_rng(7)
    truth_train, truth_test = rng.integers(0, 3, 400), rng.integers(0, 3, 300)
    models = []
    for flip_train, flip_test in ((0.05, 0.2), (0.1, 0.3), (0.2, 0.45), (0.15, 0.35)):
        tr = np.where(rng.random(400) < flip_train, rng.integers(0, 3, 400), truth_train)
        te = np.where(rng.random(300) < flip_test, rng.integers(0, 3, 300), truth_test)
        models.append((tr, te))
    acc, status = est.agreement_on_the_line([m[0] for m in models], [m[1] for m in models], 0.9)
    pairs = list(itertools.combinations(range(4), 2))
    x = stats.norm.ppf([np.mean(models[a][0] == models[b][0]) for a, b in pairs])
    y = stats.norm.ppf([np.mean(models[a][1] == models[b][1]) for a, b in pairs])
    slope, intercept = np.linalg.lstsq(np.column_stack([x, np.ones_like(x)]), y, rcond=None)[0]
    assert status == "ok" and acc == pytest.approx(stats.norm.cdf(slope * stats.norm.ppf(0.9) + intercept))
    assert est.agreement_on_the_line([m[0] for m in models[:2]], [m[1] for m in models[:2]], 0.9)[1] == (
        "fewer-than-3-runs"
    )
    same = [truth_train] * 3
    assert est.agreement_on_the_line(same, [m[1] for m in models[:3]], 0.9)[1] == "agreement-constant"


def test_evaluation_measures_coverage_and_leaves_unestimated_quantities_out():
    rows = []
    for i in range(6):
        rows.append(
            {
                "train_loss": 0.1, "train_acc": 1.0, "test_loss": 0.5 + 0.1 * i, "test_acc": 0.8,
                "est_naive_loss": 0.1, "est_naive_acc": 1.0, "status_naive": "ok",
                "est_calibrated_loss": 0.6, "est_calibrated_acc": 0.8, "status_calibrated": "ok",
                "est_calibrated_loss_lo": 0.55, "est_calibrated_loss_hi": 0.75,
                "est_calibrated_acc_lo": 0.7, "est_calibrated_acc_hi": 0.9,
                "est_cot_loss": math.nan, "est_cot_acc": 0.75, "status_cot": "ok",
            }
        )  # fmt: skip
    out = {r["name"]: r for r in evaluate(rows, ["naive", "calibrated", "cot"], level=0.9)}
    truth = np.array([r["test_loss"] for r in rows])
    assert out["calibrated"]["coverage_loss"] == pytest.approx(np.mean((truth >= 0.55) & (truth <= 0.75)))
    assert out["calibrated"]["coverage_acc"] == 1.0 and out["calibrated"]["interval_level"] == 0.9
    assert math.isnan(out["cot"]["mae_loss"]) and out["cot"]["beats_naive_loss"] is None
    assert out["cot"]["mae_acc_points"] == pytest.approx(5.0) and out["cot"]["beats_naive_acc"] is True
    assert out["calibrated"]["winner_loss"] and not out["cot"]["winner_loss"]


def test_answer_ranks_flags_disagreement_and_warns_before_the_estimates():
    def row(acc, lo, hi, doc, atc):
        return {
            "checkpoint": "c", "run": "r", "step": 1, "train_loss": 0.1, "train_acc": 0.99,
            "est_calibrated_acc": acc, "est_calibrated_loss": 1 - acc, "status_calibrated": "ok",
            "est_calibrated_acc_lo": lo, "est_calibrated_acc_hi": hi,
            "est_doc_acc": doc, "status_doc": "ok", "est_atc_acc": atc, "status_atc": "ok",
        }  # fmt: skip

    rows = [row(0.6, 0.55, 0.67, 0.9, 0.92), row(0.8, 0.7, 0.9, 0.78, 0.85)]
    agreement_columns(rows, ["naive", "calibrated", "doc", "atc"], "calibrated")
    assert [r["estimates_disagree"] for r in rows] == [True, False]
    assert (rows[0]["label_free_acc_min"], rows[0]["label_free_acc_max"]) == (0.9, 0.92)
    assert [r["est_calibrated_acc"] for r in ranking(rows, "calibrated")] == [0.8, 0.6]
    for r in rows:  # without an interval, a spread over 5 points disagrees
        del r["est_calibrated_acc_lo"], r["est_calibrated_acc_hi"]
    agreement_columns(rows, ["naive", "doc", "atc"], "naive")
    assert [r["estimates_disagree"] for r in rows] == [False, True]

    refs = [
        CheckpointRef("a.safetensors", "a", 1, {"train_acc": 0.998, "train_loss": 0.01}),
        CheckpointRef("b.safetensors", "b", 1, {"train_acc": 0.99}),
    ]
    measured = [{"train_acc": 0.684, "train_loss": 0.9}, {"train_acc": 0.985, "train_loss": 0.05}]
    (note,) = recorded_mismatches(refs, measured, "digits")
    assert "1 of 2" in note and "measured 68.4 %, recorded 99.8 %" in note
    assert recorded_mismatches(refs[1:], measured[1:], "digits") == []
    x = np.arange(24.0).reshape(6, 4)
    a, b = Dataset(x, None, "train.npz", (4,)), Dataset(x.copy(), None, "test.npz", (4,))
    assert "holds the training inputs" in same_inputs(a, b)[0]
    assert same_inputs(a, Dataset(x + 1, None, "other.npz", (4,))) == []
