"""estimate-gap: every estimator against its formula computed independently from the
per-sample tables; statuses and fallbacks; calibration without leaks; files; the command."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import re
import warnings

import numpy as np
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
from clitools import one_line_error, read_stream, run
from nets import random_network
from safetensors.torch import save_file
from scipy import stats

import tsens
from tsens.choices import ESTIMATORS
from tsens.commands import gap_estimates as estimate_gap
from tsens.errors import TsensError
from tsens.gap import estimators as est
from tsens.gap.calibration import Calibration, calibrate, cross_fit, fit
from tsens.gap.estimators import CALIBRATED
from tsens.gap.features import atc_accuracy, atc_threshold, binned_loss

F64 = tsens.Compute(dtype="float64", batch_size=16)
RUNS = ("a", "b", "c", "d", "e", "f", "g")


def save_net(path, widths, seed, scale, metadata, batchnorm=False):
    net = random_network(widths, seed=seed, scale=scale, batchnorm=batchnorm)
    state = {k: v.contiguous() for k, v in net.torch_module().state_dict().items()}
    save_file(state, str(path), metadata={"tsens.activation": "relu", **metadata})


def make_zoo(root, runs=RUNS, steps=(1, 2, 3), batchnorm=False):
    """Runs of random networks whose scale grows with the step (sharper, more confident)."""
    paths = []
    for r, run_name in enumerate(runs):
        (root / run_name).mkdir(parents=True, exist_ok=True)
        for step in steps:
            path = root / run_name / f"step={step}.safetensors"
            config = "twin" if run_name in ("a", "b") else run_name
            meta = {"run": run_name, "step": str(step), "config": config, "dataset": "toy"}
            save_net(
                path,
                (5, 7, 6, 3),
                seed=100 * r + (0 if run_name != "b" else 7),
                scale=0.6 + 0.5 * step,
                metadata=meta,
                batchnorm=batchnorm,
            )
            paths.append(str(path))
    return paths


def make_sets(root, labelled_test=True):
    rng = np.random.default_rng(0)
    np.savez(root / "train.npz", x=rng.normal(size=(60, 5)), y=rng.integers(0, 3, 60))
    test = {"x": 1.3 * rng.normal(size=(40, 5))}
    if labelled_test:
        test["y"] = rng.integers(0, 3, 40)
    np.savez(root / "test.npz", **test)
    return str(root / "train.npz"), str(root / "test.npz")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    paths = make_zoo(root)
    train, test = make_sets(root)
    refs = tsens.plan_runs(paths)
    result = estimate_gap(
        refs, tsens.load_dataset(train), tsens.load_dataset(test), compute=F64, names=ESTIMATORS
    )
    return {"root": root, "paths": paths, "train": train, "test": test, "refs": refs, "result": result}


def columns(path, spec, names):
    net = tsens.load_network(path)
    return net, tsens.measure(net, tsens.load_dataset(spec), names, compute=F64).columns


def test_estimators_match_their_formulas_from_the_per_sample_tables(zoo):
    rows = {r["checkpoint"]: r for r in zoo["result"].rows}
    for i, ref in enumerate(zoo["refs"]):
        row = rows[ref.path]
        net, tr = columns(ref.path, zoo["train"], ["predictions", "jacobian", "active", "path_score"])
        _, te = columns(ref.path, zoo["test"], ["predictions", "jacobian", "active", "path_score"])
        l_tr, a_tr = tr["loss"].mean(), tr["correct"].mean()
        assert row["train_loss"] == pytest.approx(l_tr) and row["train_acc"] == pytest.approx(a_tr)
        assert row["test_loss"] == pytest.approx(te["loss"].mean())
        assert (row["est_naive_loss"], row["est_naive_acc"]) == pytest.approx((l_tr, a_tr))
        clip = lambda v: min(1.0, max(0.0, v))  # noqa: E731
        # [N]: ratio of mean ‖J_prob‖_F.
        ratio = te["jac_prob_fro"].mean() / tr["jac_prob_fro"].mean()
        assert row["est_jacobian_loss"] == pytest.approx(l_tr * ratio)
        assert row["est_jacobian_acc"] == pytest.approx(clip(a_tr * ratio))
        # [T] eq. 7: ratio of mean path scores, test over train.
        p_te, p_tr = te["path_score"].mean(), tr["path_score"].mean()
        if np.isfinite(p_te) and np.isfinite(p_tr) and (p_te > 0) == (p_tr > 0):
            assert row["est_membership_loss"] == pytest.approx(l_tr * p_te / p_tr)
        else:
            assert row["status_membership"] != "ok" and row["est_membership_loss"] == l_tr
        # [T] eq. 6: log B(test)/log B(train), B = H w^{k-1} E|N|^{k-1} / (sqrt(pi) k^k), k = 2.
        logs = []
        for cols in (te, tr):
            n = cols["active_total"].astype(float)
            mu, sigma = n.mean(), n.std()
            abs_mean = sigma * math.sqrt(2 / math.pi) * math.exp(-(mu**2) / (2 * sigma**2)) + mu * (
                1 - 2 * stats.norm.cdf(-mu / sigma)
            )
            w = math.prod(float(layer.weight.abs().max()) for layer in net.layers)
            logs.append(math.log10(7 * w * abs_mean / (math.sqrt(math.pi) * 4)))
        if (logs[0] > 0) == (logs[1] > 0):
            assert row["est_kummer_loss"] == pytest.approx(l_tr * logs[0] / logs[1])
        else:
            assert row["status_kummer"] == "log-crosses-zero" and row["est_kummer_loss"] == l_tr
        # AC and DoC.
        assert row["est_confidence_acc"] == pytest.approx(te["confidence"].mean())
        assert row["est_confidence_loss"] == pytest.approx(te["entropy"].mean())
        assert row["est_doc_acc"] == pytest.approx(
            clip(a_tr - (tr["confidence"].mean() - te["confidence"].mean()))
        )
        assert row["est_doc_loss"] == pytest.approx(l_tr + te["entropy"].mean() - tr["entropy"].mean())
        # ATC: the threshold leaves a share of training confidences above it equal to the accuracy.
        t = atc_threshold(tr["confidence"], a_tr)
        assert abs(np.mean(tr["confidence"] > t) - a_tr) <= 1 / len(tr["confidence"])
        assert row["est_atc_acc"] == pytest.approx(np.mean(te["confidence"] > t))
        # layer-norm [T] eq. 5: previous checkpoint of the run.
        prev = next((r for r in zoo["refs"][:i][::-1] if r.run == ref.run), None)
        if prev is None:
            assert row["status_layer_norm"] == "no-previous-checkpoint"
        else:

            def log_w(p):
                return sum(
                    math.log10(float(layer.weight.abs().max())) for layer in tsens.load_network(p).layers
                )

            a, b = log_w(prev.path), log_w(ref.path)
            if (a > 0) == (b > 0):
                assert row["est_layer_norm_loss"] == pytest.approx(l_tr * a / b)


def test_disagreement_pairs_siblings_by_step(zoo):
    rows = {r["checkpoint"]: r for r in zoo["result"].rows}
    for ref in zoo["refs"]:
        row = rows[ref.path]
        if ref.run not in ("a", "b"):
            assert row["status_disagreement"] == "no-sibling"
            continue
        other = next(r for r in zoo["refs"] if r.run == ({"a", "b"} - {ref.run}).pop() and r.step == ref.step)
        _, mine = columns(ref.path, zoo["test"], ["log_probs"])
        _, theirs = columns(other.path, zoo["test"], ["log_probs"])
        pred = theirs["log_probs"].argmax(1)
        assert row["est_disagreement_acc"] == pytest.approx(np.mean(mine["log_probs"].argmax(1) == pred))
        assert row["est_disagreement_loss"] == pytest.approx(
            -np.mean(mine["log_probs"][np.arange(40), pred]), rel=1e-6
        )


def test_mean_gap_is_the_other_runs_mean_gap(zoo):
    strict = estimate_gap(
        zoo["refs"], tsens.load_dataset(zoo["train"]), tsens.load_dataset(zoo["test"]), compute=F64,
        hold_out="siblings",
    )  # fmt: skip
    for rows, siblings in ((zoo["result"].rows, False), (strict.rows, True)):
        for row in rows:
            # Held out: the run, and with hold_out="siblings" also its sibling (runs a and b).
            out = {"a", "b"} if siblings and row["run"] in ("a", "b") else {row["run"]}
            others = [r for r in rows if r["run"] not in out]
            gap = np.mean([r["test_loss"] - r["train_loss"] for r in others])
            assert row["est_mean_gap_loss"] == pytest.approx(row["train_loss"] + gap)


def test_test_labels_never_reach_a_label_free_estimate(zoo):
    unlabelled = zoo["root"] / "unlabelled.npz"
    with np.load(zoo["test"]) as npz:
        np.savez(unlabelled, x=npz["x"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        blind = estimate_gap(
            zoo["refs"],
            tsens.load_dataset(zoo["train"]),
            tsens.load_dataset(str(unlabelled)),
            compute=F64,
            names=ESTIMATORS,
        )
        default = estimate_gap(
            zoo["refs"], tsens.load_dataset(zoo["train"]), tsens.load_dataset(str(unlabelled)), compute=F64
        )
    assert blind.evaluation is None and blind.ranking is None
    assert any("fall back to naive" in n for n in blind.notes)
    # By default what cannot run is left out and said so, not shown as a fallback.
    assert not set(CALIBRATED) & set(default.names) and any("left out" in n for n in default.notes)
    for seen, unseen in zip(zoo["result"].rows, blind.rows, strict=True):
        assert "test_loss" not in unseen
        for name in zoo["result"].names:
            key = name.replace("-", "_")
            if name in CALIBRATED:
                assert unseen[f"status_{key}"] == "no-calibration"
                assert unseen[f"est_{key}_loss"] == unseen["train_loss"]
            else:
                for target in ("loss", "acc"):
                    a, b = unseen[f"est_{key}_{target}"], seen[f"est_{key}_{target}"]
                    assert a == b or (math.isnan(a) and math.isnan(b)), name


def feature_rows(rng, runs, per_run):
    """Random feature rows of the ``shift`` set for ``runs`` runs of ``per_run`` checkpoints."""
    groups = [f"r{i}" for i in range(runs) for _ in range(per_run)]
    keys = (
        "train_loss",
        "train_acc",
        "conf_train",
        "conf_shift",
        "entropy_train",
        "entropy_shift",
        "atc_acc",
    )
    rows = [{k: float(rng.normal()) for k in keys} for _ in groups]
    for row in rows:
        row["train_loss"] = abs(row["train_loss"]) + 0.1
    return groups, rows


def test_leave_one_run_out_never_leaks_a_run_into_its_own_model():
    rng = np.random.default_rng(0)
    runs, rows = feature_rows(rng, 8, 4)
    y = np.array([r["conf_shift"] + 0.1 * rng.normal() for r in rows])
    base = cross_fit(rows, y, runs).value
    planted = y.copy()
    own = np.array([g == "r3" for g in runs])
    planted[own] += 1000.0  # a signal only run r3's own model could see
    moved = cross_fit(rows, planted, runs).value
    assert np.array_equal(moved[own], base[own])  # r3 is scored without r3
    assert np.all(np.abs(moved[~own] - base[~own]) > 1.0)  # the others did see it


def test_feature_set_and_alpha_are_chosen_by_grouped_cross_validation():
    rng = np.random.default_rng(1)
    runs, rows = feature_rows(rng, 6, 5)
    y = np.array([2.0 * r["entropy_shift"] for r in rows])
    model = fit(rows, y, runs)
    assert model.feature_set == "shift"  # the train-only set cannot see the signal
    assert np.allclose(model.predict(rows), y, atol=0.05)
    with pytest.raises(TsensError, match="at least 2 runs"):
        fit(rows[:5], y[:5], runs[:5])


def test_calibration_file_round_trip_is_plain_json(tmp_path, zoo):
    rows = [est_row for est_row in zoo["result"].rows]
    feats = [{k: v for k, v in r.items() if isinstance(v, float)} for r in rows]
    cal = calibrate(
        feats,
        [{"test_loss": r["test_loss"], "test_acc": r["test_acc"]} for r in rows],
        [r["run"] for r in rows],
        dataset="toy",
    )
    path = tmp_path / "cal.json"
    cal.save(path)
    doc = json.loads(path.read_text())
    assert doc["tsens_calibration"] == 2 and doc["runs"] == sorted(RUNS)
    back = Calibration.load(path)
    assert np.allclose(back.loss.predict(feats), cal.loss.predict(feats))
    with pytest.raises(TsensError, match="exists"):
        cal.save(path)
    path.write_text('{"tsens_calibration": 2, "loss": {}}')
    with pytest.raises(TsensError, match="malformed"):
        Calibration.load(path)
    path.write_text('{"tsens_calibration": 1, "loss": {}}')
    with pytest.raises(TsensError, match="older tsens"):
        Calibration.load(path)


def test_log_ratios_refuse_sign_changes_and_infinities():
    f = {"train_loss": 0.5, "train_acc": 0.9, "log10_w": 0.3}
    assert est.layer_norm(f, {"log10_w": -0.2}).status == "log-crosses-zero"
    assert est.layer_norm(f, {"log10_w": 0.6}).loss == pytest.approx(1.0)
    assert est.layer_norm(f, None).status == "no-previous-checkpoint"
    g = {"train_loss": 0.5, "train_acc": 0.9, "path_score_test": -math.inf, "path_score_train": 3.0}
    assert est.membership(g) == est.Estimate(0.5, 0.9, "path-score-inf")


def test_atc_and_binned_loss_by_hand():
    train_conf = np.array([0.2, 0.4, 0.6, 0.8, 0.9])
    # accuracy 0.6: the threshold leaves 3 of 5 above it.
    assert atc_accuracy(train_conf, 0.6, np.array([0.5, 0.7, 0.95, 0.1])) == pytest.approx(0.5)
    losses = np.arange(40, dtype=float)
    conf = np.linspace(0, 1, 40)
    assert binned_loss(conf, losses, np.array([0.0, 1.0])) == pytest.approx((0.5 + 38.5) / 2)


def test_ordering_single_checkpoint_batchnorm_and_no_calibration_runs(tmp_path):
    paths = make_zoo(tmp_path, runs=("x", "y"), steps=(10, 2), batchnorm=True)
    train, test = make_sets(tmp_path)
    refs = tsens.plan_runs(paths)
    assert [r.step for r in refs] == [2, 10, 2, 10]
    result = estimate_gap(refs, tsens.load_dataset(train), tsens.load_dataset(test), compute=F64)
    assert [r["status_layer_norm"] for r in result.rows][::2] == ["no-previous-checkpoint"] * 2
    assert result.rows[0]["status_calibrated"] == "too-few-calibration-runs"
    assert any("use mean-gap instead" in n for n in result.notes)
    single = estimate_gap(
        refs[:1], tsens.load_dataset(train), tsens.load_dataset(test), compute=F64, names=ESTIMATORS
    )
    assert len(single.rows) == 1 and single.rows[0]["status_mean_gap"] == "too-few-calibration-runs"
    with pytest.raises(TsensError, match="`train`"):
        estimate_gap(
            refs,
            tsens.load_dataset(test).__class__(np.zeros((3, 5)), None, "t", (5,)),
            tsens.load_dataset(test),
        )


def test_command_tables_plot_and_calibration_files(tmp_path, zoo):
    out, summary, plot, cal = (tmp_path / n for n in ("rows.parquet", "eval.csv", "gap.png", "cal.json"))
    result = run(
        "estimate-gap", *zoo["paths"], "--train", zoo["train"], "--test", zoo["test"], "--dtype", "float64",
        "-o", out, "--summary", summary, "--plot", plot, "--save-calibration", cal, "--estimators", "all",
    )  # fmt: skip
    assert "how good each estimator is" in result.stderr and "★" in result.stderr
    table = pq.read_table(out)
    assert table.num_rows == 21 and {"run", "step", "est_calibrated_loss", "status_kummer"} <= set(
        table.column_names
    )
    got = table.column("est_doc_loss").to_pylist()
    assert got == pytest.approx([r["est_doc_loss"] for r in zoo["result"].rows])
    text = summary.read_text().splitlines()
    assert text[0].startswith('"kind","name","checkpoints","mae_loss","mae_acc_points"')
    assert len(text) == 1 + len(zoo["result"].evaluation) + len(zoo["result"].ranking)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(cal.read_text())["provenance"]["command"] == "estimate-gap"
    # A saved calibration scores other checkpoints.
    again = run("estimate-gap", *zoo["paths"][:3], "--train", zoo["train"], "--test", zoo["test"],
                "--calibration", cal, "-o", "-", "-q")  # fmt: skip
    rows = ipc.open_stream(io.BytesIO(again.stdout_bytes)).read_all().to_pylist()
    assert all(r["status_calibrated"] == "ok" for r in rows)


def test_command_refusals(tmp_path, zoo, monkeypatch):
    def refused(*extra, train=zoo["train"]):
        result = run("estimate-gap", zoo["paths"][0], "--train", train, "--test", zoo["test"], *extra, code=2)
        assert len(result.stderr.strip().splitlines()) == 1
        return result.stderr

    unlabelled = tmp_path / "x.npz"
    np.savez(unlabelled, x=np.zeros((4, 5)))
    assert "--train" in (err := refused(train=unlabelled)) and "no labels" in err
    assert "--estimators" in refused("--estimators", "magic")
    assert "matches no file" in refused("--calibrate", tmp_path / "none*.safetensors")
    assert "not both" in refused("--calibrate", zoo["paths"][1], "--calibration", tmp_path / "c.json")

    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    message = "tsens: error: plots need matplotlib: pip install 'tsens[plot]'"
    assert refused("--plot", tmp_path / "p.png").strip() == message


def test_calibration_from_another_data_set_warns_and_falls_back(tmp_path, zoo):
    other = tmp_path / "other"
    paths = []
    for r, run_name in enumerate(RUNS):
        (other / run_name).mkdir(parents=True)
        path = other / run_name / "step=1.safetensors"
        save_net(
            path,
            (5, 7, 6, 3),
            seed=r,
            scale=1.0,
            metadata={"run": f"o{run_name}", "dataset": "elsewhere", "test_loss": "1.0", "test_acc": "0.5"},
        )
        paths.append(str(path))
    result = run(
        "estimate-gap",
        *zoo["paths"][:3],
        "--train",
        zoo["train"],
        "--test",
        zoo["test"],
        "--calibrate",
        str(other / "*" / "*.safetensors"),
        "-o",
        "-",
    )
    assert "trained on elsewhere" in result.stderr and "fall back to naive" in result.stderr
    rows = ipc.open_stream(io.BytesIO(result.stdout_bytes)).read_all().to_pylist()
    assert {r["status_calibrated"] for r in rows} == {"calibration-from-another-dataset"}


def test_calibrated_gaps_do_not_extrapolate_without_limit():
    rng = np.random.default_rng(2)
    runs, rows = feature_rows(rng, 6, 5)
    y = np.array([r["entropy_shift"] for r in rows])
    model = fit(rows, y, runs)
    # A feature beyond the calibration range is clipped to it, and the row flagged.
    top = max(r["entropy_shift"] for r in rows)
    far, edge = dict(rows[0], entropy_shift=1e6), dict(rows[0], entropy_shift=top)
    value, outside = model.predict_with_range([far, edge, rows[0]])
    assert value[0] == value[1] and list(outside) == [True, False, False]
    # And the prediction stays within the calibration targets' range widened by half its width.
    wild = dataclasses.replace(model, coef=[1e6 * c for c in model.coef])
    lo, hi = y.min(), y.max()
    assert wild.predict([far])[0] == pytest.approx(hi + 0.5 * (hi - lo))
    assert est.from_gaps({"train_loss": 0.1, "train_acc": 0.9}, -5.0, 0.5) == est.Estimate(0.0, 1.0)


def test_calibration_runs_that_are_also_scored_are_left_out(zoo):
    result = run(
        "estimate-gap", *zoo["paths"], "--train", zoo["train"], "--test", zoo["test"],
        "--calibrate", zoo["paths"][0], "--dtype", "float64", "-o", "-",
    )  # fmt: skip
    assert "left out" in result.stderr
    rows = read_stream(result).to_pylist()
    # Dropped, the calibration falls back to leave-one-run-out: the same estimates as without it.
    for got, want in zip(rows, zoo["result"].rows, strict=True):
        assert got["est_calibrated_loss"] == pytest.approx(want["est_calibrated_loss"])


def test_save_calibration_is_refused_before_any_work(tmp_path, zoo):
    unlabelled = tmp_path / "x.npz"
    with np.load(zoo["test"]) as npz:
        np.savez(unlabelled, x=npz["x"])
    out = tmp_path / "rows.csv"
    result = run(
        "estimate-gap", *zoo["paths"], "--train", zoo["train"], "--test", unlabelled,
        "--save-calibration", tmp_path / "c.json", "-o", out, code=2,
    )  # fmt: skip
    one_line_error(result, "--save-calibration")
    assert not out.exists()


def test_summary_leads_with_the_ranking_and_new_options_are_checked(tmp_path, zoo):
    result = run("estimate-gap", *zoo["paths"], "--train", zoo["train"], "--test", zoo["test"],
                 "--dtype", "float64", "--interval", "0.8")  # fmt: skip
    err = result.stderr
    lead = err.index("checkpoints ranked by calibrated")
    assert lead < err.index("how good each estimator is") and "80 % intervals" in err
    assert re.search(r"\b[a-g] @ [123]\b", err) and "6 more checkpoints" in err
    assert "test loss (accuracy %) by step" not in err  # per-run detail on request
    detail = run(
        "estimate-gap", *zoo["paths"][:6], "--train", zoo["train"], "--test", zoo["test"], "--detail"
    )
    assert "a: test loss (accuracy %) by step" in detail.stderr

    def refused(*extra):
        out = run(
            "estimate-gap", zoo["paths"][0], "--train", zoo["train"], "--test", zoo["test"], *extra, code=2
        )
        return one_line_error(out, extra[0])

    refused("--interval", "1.5")
    refused("--features", "everything")
    refused("--estimators", "cot,magic")


def test_warnings_come_before_the_estimates(tmp_path, zoo):
    # A test set that is the training set, and checkpoints whose recorded train accuracy differs.
    paths = []
    for r, name in enumerate(("p", "q")):
        (tmp_path / name).mkdir()
        path = tmp_path / name / "step=1.safetensors"
        save_net(path, (5, 7, 6, 3), seed=r, scale=1.0, metadata={"run": name, "train_acc": "0.999"})
        paths.append(str(path))
    result = run("estimate-gap", *paths, "--train", zoo["train"], "--test", zoo["train"])
    err = result.stderr
    assert "holds the training inputs" in err and "recorded 99.9 %" in err
    assert err.index("holds the training inputs") < err.index("checkpoints ranked by")


@pytest.mark.parametrize("name", ESTIMATORS)
def test_each_estimator_declares_the_measures_its_features_need(tmp_path, name):
    """The passes compute exactly what is asked: with only the measures an estimator declares,
    every feature it reads is there (and the calibrated one's feature sets, up to the richest)."""
    from tsens.commands.jobs import features_job
    from tsens.gap.calibration import FEATURE_SETS, derived, sets_up_to
    from tsens.gap.estimators import ESTIMATORS as REGISTRY
    from tsens.gap.estimators import required_measures

    path = tmp_path / "n.safetensors"
    save_net(path, (5, 7, 6, 3), seed=1, scale=1.0, metadata={})
    train, test = make_sets(tmp_path)
    ref = tsens.plan_runs([str(path)])[0]
    for features in ("field", "all") if name == "calibrated" else ("train",):
        measures = required_measures([name], features)
        cf = features_job(
            ref, train=tsens.load_dataset(train), test=tsens.load_dataset(test), measures=measures,
            compute=F64, load=lambda r: tsens.load_network(r.path),
        )  # fmt: skip
        have = derived(cf.features)
        reads = set(REGISTRY[name].reads)
        if name == "calibrated":
            reads |= {f for s in sets_up_to(features) for f in FEATURE_SETS[s]}
        assert reads <= set(have), (name, features, sorted(reads - set(have)))


def test_checkpoints_naming_their_data_sets_are_scored_per_set(tmp_path):
    """Without train/test, each checkpoint's metadata names its sets; two sets, two groups."""
    from tsens.commands import estimate_gap as command

    paths = []
    for group in ("one", "two"):
        root = tmp_path / group
        root.mkdir()
        train, test = make_sets(root)
        for name in ("r1", "r2"):
            path = root / f"{name}.safetensors"
            meta = {"run": f"{group}-{name}", "dataset": train, "test_dataset": test, "step": "1"}
            save_net(path, (5, 7, 6, 3), seed=len(paths), scale=1.0, metadata=meta)
            paths.append(str(path))
    result = command(paths, setup=tsens.Setup(compute=F64))
    gaps = result.extra["gaps"]
    assert [(tr, te) for tr, te, _ in gaps] == [
        (str(tmp_path / g / "train.npz"), str(tmp_path / g / "test.npz")) for g in ("one", "two")
    ]
    rows = result.table.to_pylist()
    assert [r["train_set"] for r in rows] == [gaps[0][0]] * 2 + [gaps[1][0]] * 2
    # Each group is the same as scoring it alone with its sets given.
    alone = command(paths[2:], gaps[1][0], gaps[1][1], setup=tsens.Setup(compute=F64)).table.to_pylist()
    assert [r["est_doc_acc"] for r in rows[2:]] == [r["est_doc_acc"] for r in alone]
    with pytest.raises(TsensError, match="2 pairs of data sets"):
        command(paths, fit_calibration=True, setup=tsens.Setup(compute=F64))


def test_a_calibration_richer_than_the_passes_is_refused_before_any_work(zoo, monkeypatch):
    import importlib

    from tsens.commands import estimate_gap as command

    module = importlib.import_module("tsens.commands.estimate_gap")
    rows = zoo["result"].rows
    cal = calibrate(rows, [{"test_loss": r["test_loss"], "test_acc": r["test_acc"]} for r in rows],
                    [r["run"] for r in rows], dataset="toy")  # fmt: skip
    cal.loss = dataclasses.replace(cal.loss, feature_set="sensitivity")
    ran = []
    monkeypatch.setattr(module, "gap_estimates", lambda *a, **k: ran.append(1))
    with pytest.raises(TsensError, match="'sensitivity' or richer"):
        command(zoo["paths"], zoo["train"], zoo["test"], calibration=cal)
    assert not ran
