"""Monitoring: drift statistics, alerts that fire on injected drift and stay quiet without it,
confidence-based performance against realised performance, the real CLI's exit code 3."""

from __future__ import annotations

import subprocess
import sys

import duckdb
import mlflow
import numpy as np
import pandas as pd
import pytest

from customer360.monitoring.drift import (
    categorical_drift,
    expected_performance,
    numeric_drift,
    psi_from_counts,
    realised_performance,
)

REFERENCE, CURRENT, DRIFT_START = "2026-03-31", "2026-06-29", "2026-04-01"
# A price change (order values x3) and a new acquisition mix from DRIFT_START.
DRIFT = {
    "start": DRIFT_START,
    "price_factor": 3.0,
    "acquisition_channel_shares": {
        "paid_digital": 0.02, "organic_content": 0.02, "referral": 0.02,
        "live_event": 0.02, "partner": 0.02, "direct": 0.9,
    },
}


def _build(db, dates=(REFERENCE, CURRENT)):
    from customer360.data.warehouse import connect
    from customer360.features.assembler import build_and_write

    with connect(db) as con:
        build_and_write(con, list(dates))
    return db


@pytest.fixture(scope="module")
def drifted_warehouse(tmp_path_factory):
    from conftest import SMALL_CUSTOMERS, SMALL_SEED

    from customer360.data.synthetic import DriftConfig, SyntheticConfig, generate_warehouse

    path = tmp_path_factory.mktemp("drift") / "drift.duckdb"
    generate_warehouse(path, n_customers=SMALL_CUSTOMERS, seed=SMALL_SEED,
                       config=SyntheticConfig(drift=DriftConfig(**DRIFT)))
    return _build(path)


# --- the statistics --------------------------------------------------------------------------


def test_psi_and_ks_are_zero_on_identical_data_and_large_on_a_shift():
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"a": rng.normal(size=4000), "b": rng.exponential(size=4000)})
    ref.loc[::10, "b"] = np.nan
    same = numeric_drift(ref, ref)
    assert np.allclose(same["psi"], 0.0) and np.allclose(same["statistic"], 0.0)
    shifted = ref.assign(a=ref["a"] + 0.5, b=ref["b"] * 2)
    out = numeric_drift(ref, shifted).set_index("feature")
    assert (out["psi"] > 0.1).all() and (out["p_value"] < 1e-6).all()
    # the KS statistic agrees with scipy's exact one
    from scipy import stats

    d = stats.ks_2samp(ref["a"], shifted["a"]).statistic
    assert out.loc["a", "statistic"] == pytest.approx(d)
    # an empty bin gives a large but finite PSI
    assert np.isfinite(psi_from_counts(np.array([[100, 0]]), np.array([[50, 50]]))).all()


def test_categorical_drift_includes_missing_as_a_category():
    ref = pd.DataFrame({"c": ["a", "b"] * 500})
    cur = pd.DataFrame({"c": ["a"] * 500 + [None] * 500})
    row = categorical_drift(ref, cur).iloc[0]
    assert row["psi"] > 1 and row["p_value"] < 1e-10 and row["cur_missing"] == 0.5


def test_expected_performance_tracks_realised_on_later_snapshots(small_warehouse_master):
    """The generator's true churn probabilities are calibrated by construction, so CBPE from
    them must match the realised AUC / Brier once the labels of each later snapshot mature."""
    from customer360.data.oracle import oracle_churn_probability
    from customer360.features.assembler import build_labels

    with duckdb.connect(str(small_warehouse_master), read_only=True) as con:
        for as_of in ("2025-12-31", "2026-02-28", "2026-03-31"):
            p = oracle_churn_probability(con, as_of, 90)
            y = build_labels(con, as_of, 90)[["customer_id", "label__churn__90d"]]
            both = p.merge(y, on="customer_id", validate="one_to_one").dropna()
            est = expected_performance(both["p_churn"].to_numpy())
            real = realised_performance(both["p_churn"], both["label__churn__90d"])
            assert est["roc_auc"] == pytest.approx(real["roc_auc"], abs=0.03), as_of
            assert est["brier"] == pytest.approx(real["brier"], abs=0.02), as_of
            assert est["positive_rate"] == pytest.approx(real["positive_rate"], abs=0.03)
    # the check has teeth: halved (miscalibrated) probabilities keep their ranking but their
    # Brier estimate no longer matches the realised one
    off = expected_performance(both["p_churn"].to_numpy() * 0.5)
    assert abs(off["brier"] - real["brier"]) > 0.02


# --- the monitor on warehouses ---------------------------------------------------------------


def test_monitor_stays_quiet_without_drift(small_warehouse):
    from customer360.monitoring.monitor import RESULTS_TABLE, run_monitor

    _build(small_warehouse)
    report = run_monitor(db=small_warehouse, as_of=CURRENT, reference_as_of=REFERENCE)
    assert not report.alerting, report.alerts
    assert {"psi", "ks", "chi2", "segment_share"} <= set(report.results["check"])
    with duckdb.connect(str(small_warehouse), read_only=True) as con:
        stored = con.execute(
            f'SELECT count(*), count(DISTINCT feature) FROM {RESULTS_TABLE} WHERE "check" = \'psi\''
        ).fetchone()
        shares = con.execute(
            f"SELECT as_of, sum(value) FROM {RESULTS_TABLE} WHERE \"check\" = 'segment_share' "
            "GROUP BY as_of ORDER BY as_of"
        ).fetchall()
    assert stored[0] == stored[1] > 100  # one row per feature
    assert [str(d) for d, _ in shares] == [REFERENCE, CURRENT]
    assert all(s == pytest.approx(1.0) for _, s in shares)
    # MLflow: one run with metrics, the PSI plot and the HTML report
    run = mlflow.get_run(report.run_id)
    assert run.data.tags["alerting"] == "false"
    assert run.data.metrics["alerts"] == 0
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(report.run_id)}
    assert {"psi.png", "monitor_report.html"} <= artifacts
    # a second run of the same dates replaces its rows instead of adding to them
    run_monitor(db=small_warehouse, as_of=CURRENT, reference_as_of=REFERENCE, log_mlflow=False)
    with duckdb.connect(str(small_warehouse), read_only=True) as con:
        again = con.execute(
            f'SELECT count(*) FROM {RESULTS_TABLE} WHERE "check" = \'psi\''
        ).fetchone()[0]
    assert again == stored[0]


def test_monitor_fires_on_injected_price_and_channel_drift(drifted_warehouse, tmp_path):
    import shutil

    from customer360.monitoring.monitor import run_monitor

    db = tmp_path / "d.duckdb"
    shutil.copy(drifted_warehouse, db)
    report = run_monitor(db=db, as_of=CURRENT, reference_as_of=REFERENCE, log_mlflow=False)
    alerts = report.alerts
    assert report.alerting
    # the alerts name the features the injected change moves: spend and margin, not tenure
    assert "txn__spend_sum__90d" in set(alerts["feature"])
    assert all(f.startswith("txn__") for f in alerts["feature"]), alerts
    psi = report.results.query("check == 'psi'").set_index("feature")["value"]
    assert psi["demo__acquisition_channel__static"] > 0.01
    assert psi["txn__spend_sum__90d"] > psi["demo__tenure_days__all"] * 5


def test_cli_exits_3_on_drift_and_0_without(drifted_warehouse, small_warehouse, tmp_path):
    import shutil

    db = tmp_path / "d.duckdb"
    shutil.copy(drifted_warehouse, db)
    _build(small_warehouse)
    cmd = [sys.executable, "-m", "customer360.cli", "monitor", "--as-of", CURRENT,
           "--reference-as-of", REFERENCE]
    drift = subprocess.run([*cmd, "--db", str(db)], capture_output=True, text=True, timeout=300)
    assert drift.returncode == 3, drift.stdout + drift.stderr
    assert "drift alert" in drift.stdout and "txn__spend_sum__90d" in drift.stdout
    quiet = subprocess.run([*cmd, "--db", str(small_warehouse)], capture_output=True, text=True,
                           timeout=300)
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    # a reference date without a snapshot is a clear error naming the fix
    from customer360.errors import WarehouseError
    from customer360.monitoring.monitor import run_monitor

    with pytest.raises(WarehouseError, match="features build --as-of 2024-01-31"):
        run_monitor(db=small_warehouse, as_of=CURRENT, reference_as_of="2024-01-31")


def test_monitor_config_refuses_unknown_keys(tmp_path):
    from customer360.errors import ConfigError
    from customer360.monitoring.monitor import load_monitor_config

    assert load_monitor_config().psi_alert == 0.25
    bad = tmp_path / "monitor.yaml"
    bad.write_text("psi_alrt: 0.3\n")
    with pytest.raises(ConfigError, match="psi_alrt"):
        load_monitor_config(bad)


# --- with a churn champion -------------------------------------------------------------------


def test_monitor_with_champion_checks_predictions_and_performance(
    tmp_path_factory, small_warehouse_master, tmp_path, monkeypatch
):
    """The reference comes from the champion's tags; prediction drift and CBPE rows appear,
    and on a test snapshot with mature labels the estimate is close to the realised AUC."""
    from serving_env import build_env

    from customer360.monitoring.monitor import run_monitor

    env = build_env(tmp_path_factory.getbasetemp() / "serving_env", small_warehouse_master)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env.tracking_uri)
    monkeypatch.setenv("CUSTOMER360_CONFIG_DIR", str(env.config_dir))
    mlflow.set_tracking_uri(env.tracking_uri)
    mlflow.set_registry_uri(env.tracking_uri)
    client = mlflow.MlflowClient()
    mv = client.get_model_version_by_alias("churn", "champion")
    tags = client.get_run(mv.run_id).data.tags
    train_dates = tags["as_of_train"].split(",")
    test_date = tags["as_of_test"].split(",")[-1]
    db = _build(env.copy_db(tmp_path / "w.duckdb"), [max(train_dates), test_date])

    report = run_monitor(db=db, as_of=env.as_of, log_mlflow=False)
    assert str(report.reference_as_of) == max(train_dates)
    checks = set(report.results["check"])
    assert {"prediction_psi", "prediction_ks", "expected_roc_auc", "expected_brier"} <= checks
    assert set(report.results["model_version"].dropna()) == {str(mv.version)}

    matured = run_monitor(db=db, as_of=test_date, log_mlflow=False)
    rows = matured.results.set_index("check")["value"]
    assert "realised_roc_auc" in rows.index
    assert rows["expected_roc_auc"] == pytest.approx(rows["realised_roc_auc"], abs=0.08)
    assert rows["expected_brier"] == pytest.approx(rows["realised_brier"], abs=0.05)
