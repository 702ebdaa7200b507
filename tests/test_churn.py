"""Churn training on the small synthetic warehouse: time split, oracle-relative quality,
calibration, MLflow run layout, the registered pyfunc and its reason codes."""

from __future__ import annotations

import datetime as dt

import mlflow
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from customer360.errors import ModelError
from customer360.training.common import SnapshotPlan, snapshot_dates, time_split

H = 90


def small_churn_config():
    from customer360.training.churn import load_churn_config

    cfg = load_churn_config()
    return cfg.model_copy(
        update={
            "trials": 3,
            "n_jobs": 1,
            "num_boost_round": 400,
            "early_stopping_rounds": 30,
            "snapshots": SnapshotPlan(count=10, step_days=45),
        }
    )


@pytest.fixture(scope="module")
def churn_run(small_warehouse_master, tmp_path_factory):
    """Train churn once for the module, in its own MLflow store."""
    from customer360.data.warehouse import connect
    from customer360.training.churn import prepare_warehouse_data, run_churn_job

    store = tmp_path_factory.mktemp("churn_mlruns")
    uri = f"sqlite:///{store / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        cfg = small_churn_config()
        with connect(small_warehouse_master, read_only=True) as con:
            data = prepare_warehouse_data(con, cfg)
        progress = []
        result = run_churn_job(
            data,
            cfg,
            trials=cfg.trials,
            register=True,
            model_name="churn",
            on_progress=lambda done, total: progress.append((done, total)),
        )
    return {"result": result, "uri": uri, "data": data, "config": cfg, "progress": progress}


@pytest.fixture
def churn_store(churn_run, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", churn_run["uri"])
    mlflow.set_tracking_uri(churn_run["uri"])
    mlflow.set_registry_uri(churn_run["uri"])
    return churn_run


# --- time-based split --------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    horizon=st.integers(min_value=7, max_value=200),
    step=st.integers(min_value=7, max_value=200),
    count=st.integers(min_value=3, max_value=14),
)
def test_time_split_never_lets_a_later_period_into_earlier_labels(horizon, step, count):
    dates = snapshot_dates(dt.date(2026, 6, 30), horizon, SnapshotPlan(count=count, step_days=step))
    as_of = pd.Series(pd.to_datetime(dates))
    try:
        split = time_split(as_of, horizon)
    except ModelError as exc:
        assert "Add earlier snapshots" in str(exc)
        return
    gap = dt.timedelta(days=horizon)
    assert max(split.train_dates) + gap <= min(split.validation_dates)
    assert max(split.validation_dates) + gap <= min(split.test_dates)
    assert split.test_dates == (dates[-1],)
    assert not (split.train & split.test).any() and not (split.train & split.validation).any()
    parts = split.train_dates + split.validation_dates + split.test_dates + split.purged_dates
    assert sorted(parts) == sorted(dates)  # every snapshot used once or purged, none lost


def test_warehouse_split_keeps_test_period_out_of_training(churn_store):
    data = churn_store["data"]
    tags = mlflow.get_run(churn_store["result"].run_id).data.tags
    train_dates = [dt.date.fromisoformat(d) for d in tags["as_of_train"].split(",")]
    val_dates = [dt.date.fromisoformat(d) for d in tags["as_of_validation"].split(",")]
    (test_date,) = [dt.date.fromisoformat(d) for d in tags["as_of_test"].split(",")]
    gap = dt.timedelta(days=H)
    # every training label window [T, T+H) ends before validation starts, and validation's
    # before the test snapshot: no test-period transaction reaches a training label
    assert max(train_dates) + gap <= min(val_dates)
    assert max(val_dates) + gap <= test_date
    assert len(train_dates) >= 3
    assert int(tags["rows_test"]) == len(data.X_test) == len(data.y_test)
    assert int(tags["rows_train"]) == len(data.X_train) > len(data.X_test)


# --- quality -------------------------------------------------------------------------------------


def test_churn_auc_within_5_percent_of_the_oracle(churn_store):
    result = churn_store["result"]
    oracle_auc = result.baselines["oracle"]["roc_auc"]
    assert result.metrics["roc_auc"] >= 0.95 * oracle_auc, (result.metrics, oracle_auc)
    assert result.metrics["roc_auc_vs_oracle"] == pytest.approx(
        result.metrics["roc_auc"] / oracle_auc
    )


def test_churn_beats_its_baselines_on_the_same_test_rows(churn_store):
    result = churn_store["result"]
    auc = result.metrics["roc_auc"]
    assert auc >= result.baselines["logistic_regression"]["roc_auc"]
    assert auc > result.baselines["bgnbd_1_minus_p_alive"]["roc_auc"]
    assert result.metrics["brier"] < result.baselines["bgnbd_1_minus_p_alive"]["brier"]
    for values in (result.metrics, *result.baselines.values()):
        assert set(values) >= {"roc_auc", "pr_auc", "brier", "log_loss", "lift_at_10", "ece"}


def test_calibration_is_chosen_out_of_fold_and_never_hurts(churn_store):
    run = mlflow.get_run(churn_store["result"].run_id)
    method = run.data.tags["calibration_method"]
    metrics = run.data.metrics
    assert method in {"isotonic", "sigmoid", "none"}
    raw = metrics["val_calibration_brier_raw"]
    chosen = raw if method == "none" else metrics[f"val_calibration_brier_{method}"]
    assert chosen <= min(
        raw, metrics["val_calibration_brier_isotonic"], metrics["val_calibration_brier_sigmoid"]
    )


def test_calibration_improves_brier_on_validation(churn_store):
    """An over-confident booster (deep trees, big steps, no early stopping) is what
    calibration is for: on the validation snapshot, out of fold, it must lower the Brier."""
    from customer360.models.churn import ChurnClassifier

    data = churn_store["data"]
    model = ChurnClassifier(
        # leaves of one row and full steps: over-confident whatever the feature set (with the
        # milder num_leaves 127 / min_child_samples 2 / learning_rate 0.5 the gain hovered
        # around the 5 % bar and moved with every added feature)
        params={"num_leaves": 255, "min_child_samples": 1, "learning_rate": 1.0, "lambda_l2": 0},
        num_boost_round=80,
        early_stopping_rounds=80,
        n_jobs=1,
    ).fit(data.X_train, data.y_train, X_val=data.X_val, y_val=data.y_val, schema=data.schema)
    report = model.calibration_report_
    assert model.calibrator_.method in {"isotonic", "sigmoid"}
    assert report[f"brier_{model.calibrator_.method}"] < 0.95 * report["brier_raw"]
    # ... and the calibrated probabilities are better on the later, untouched test snapshot
    brier = lambda p: float(np.mean((p - data.y_test) ** 2))  # noqa: E731
    assert brier(model.predict_proba(data.X_test)) < brier(model.predict_uncalibrated(data.X_test))


# --- MLflow ---------------------------------------------------------------------------------------


def test_one_parent_run_with_nested_trials_tags_config_and_plots(churn_store):
    result, cfg = churn_store["result"], churn_store["config"]
    client = mlflow.MlflowClient()
    parent = client.get_run(result.run_id)
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'"
    )
    assert len(children) == cfg.trials
    assert all("val_binary_logloss" in c.data.metrics for c in children)
    tags = parent.data.tags
    for key in ("git_commit", "feature_set_version", "as_of_test", "rows_train", "test_snapshot"):
        assert tags[key]
    assert churn_store["progress"][-1] == (cfg.trials, cfg.trials)
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert artifacts >= {
        f"plots/{n}.png"
        for n in (
            "roc",
            "pr",
            "calibration",
            "cumulative_gain",
            "feature_importance",
            "shap_summary",
        )
    }
    assert {a.path for a in client.list_artifacts(result.run_id)} >= {"config.json"}
    version = client.get_model_version_by_alias("churn", "challenger")
    assert str(version.version) == result.version and version.run_id == result.run_id


def test_champion_pyfunc_predicts_probabilities_and_reason_codes(churn_store):
    from customer360.features.registry import describe
    from customer360.training.promote import promote

    # the first version became @champion at training time; promoting it again is a no-op
    assert "already @champion" in promote("churn").message
    model = mlflow.pyfunc.load_model("models:/churn@champion")
    columns = model.metadata.get_input_schema().input_names()
    rows = churn_store["data"].X_test.head(50)
    out = model.predict(rows[columns])
    assert list(out.columns) == ["churn_probability", "reason_1", "reason_2", "reason_3"]
    p = out["churn_probability"].to_numpy()
    assert np.all((p > 0) & (p < 1))
    reasons = out[["reason_1", "reason_2", "reason_3"]].to_numpy().ravel()
    assert all(r.endswith(("(raises risk)", "(lowers risk)")) for r in reasons)
    descriptions = {describe(c) for c in columns if not c.startswith("prob__")}
    assert any(r.split(" is ")[0] in descriptions for r in reasons)
    # the same rows through the in-process model give the same probabilities
    inner = model.unwrap_python_model().model
    np.testing.assert_allclose(inner.predict_proba(rows), p)


# --- family choice on the validation snapshot (issue 13 item 2, warehouse path) -----------------


def test_warehouse_job_chooses_the_family_on_the_validation_snapshot(churn_store):
    result = churn_store["result"]
    run = mlflow.get_run(result.run_id)
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["family_selected_on"] == "validation rows"
    aucs = {k: v for k, v in metrics.items() if k.startswith("val_roc_auc_")}
    assert {"val_roc_auc_lightgbm", "val_roc_auc_linear", "val_roc_auc_blend_w0.5"} <= set(aucs)
    best = max(aucs.values())
    family = tags["model_family"]
    chosen = "val_roc_auc_" + family + (
        f"_w{float(tags['blend_lightgbm_weight']):g}" if family == "blend" else ""
    )
    assert aucs[chosen] == best, aucs
    assert result.model_label == f"{family}_tuned"  # the results table names what won
    # the registered model (refit on every labelled row) is the family the run names
    loaded = mlflow.pyfunc.load_model(f"models:/churn/{result.version}")
    assert loaded.unwrap_python_model().model.family() == family


def test_warehouse_family_choice_never_reads_the_test_snapshot(churn_store):
    """Scrambling the test snapshot's features and labels changes nothing the validation
    choice decides: family, blend weight, linear settings, calibration."""
    import dataclasses

    from customer360.models.churn import ChurnClassifier, choose_calibrator
    from customer360.models.tabular import to_matrix
    from customer360.training.churn import choose_family_on_validation

    data = churn_store["data"]
    # two linear settings (one spline) keep this quick; the job's own choice is tested above
    cfg = churn_store["config"].model_copy(
        update={"linear_c": [0.5], "linear_knots": [0, 5], "linear_top": 1}
    )
    rng = np.random.default_rng(3)
    scrambled = dataclasses.replace(
        data,
        X_test=data.X_test.sample(frac=1.0, random_state=3).set_axis(data.X_test.index),
        y_test=rng.permutation(data.y_test),
    )
    train_m, val_m = (to_matrix(x, data.schema) for x in (data.X_train, data.X_val))
    decided = []
    experiment = mlflow.MlflowClient().create_experiment("family-choice")
    for d in (data, scrambled):
        model = ChurnClassifier(num_boost_round=60, n_jobs=1).fit(
            train_m, d.y_train, X_val=val_m, y_val=d.y_val, schema=d.schema
        )
        with mlflow.start_run(experiment_id=experiment):
            choose_family_on_validation(model, d, cfg, train_m, val_m)
        # whichever family won, the calibrator is the one chosen on its validation scores
        expected, _ = choose_calibrator(model.predict_raw(val_m), d.y_val, cfg.calibration,
                                        seed=cfg.seed)
        assert model.calibrator_ == expected
        decided.append(
            (model.family(), getattr(model, "blend_weight_", 1.0), model.calibrator_.method,
             np.round(model.predict_proba(val_m[:50]), 12).tolist())
        )
    assert decided[0] == decided[1]


def test_the_linear_part_is_refit_on_a_capped_sample_and_keeps_the_cap_when_saved(tmp_path):
    from sklearn.base import clone

    from customer360.models.churn import ChurnClassifier
    from customer360.models.tabular import (
        AveragedLinear,
        TableSchema,
        sample_rows,
        spline_logistic,
    )

    rng = np.random.default_rng(4)
    X = rng.normal(size=(1000, 3))
    y = (rng.uniform(size=1000) < 1 / (1 + np.exp(-X[:, 0]))).astype(int)
    schema = TableSchema(columns=("a", "b", "c"))
    model = ChurnClassifier(num_boost_round=10, n_jobs=1, seed=3).fit(
        X[:600], y[:600], X_val=X[600:], y_val=y[600:], schema=schema
    )
    linear = AveragedLinear(estimators=(spline_logistic(schema, c=1.0, knots=0),))
    model.linear_, model.blend_weight_, model.linear_rows_ = linear.fit(X, y), 0.5, 200
    model.refit_all(X, y, rounds=10)
    rows = sample_rows(1000, 200, seed=3)
    expected = clone(linear).fit(X[rows], y[rows])
    np.testing.assert_allclose(
        model.linear_.decision_function(X), expected.decision_function(X), rtol=1e-10
    )
    # uncapped it would differ: the cap is what made them equal
    everything = clone(linear).fit(X, y).decision_function(X)
    assert not np.allclose(model.linear_.decision_function(X), everything)
    model.save(tmp_path / "m")
    loaded = ChurnClassifier.load(tmp_path / "m")
    assert loaded.linear_rows_ == 200 and loaded.family() == "blend"
    np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X), rtol=1e-12)
