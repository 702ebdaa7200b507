"""The documented daily job (`scripts/daily_job.sh`, issue 16 item 5) run end to end as a
scheduler would, on a copy of the trained test warehouse and a copy of its MLflow store."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess

import duckdb
import pandas as pd
import pytest
from serving_env import REPO

SCRIPT = REPO / "scripts" / "daily_job.sh"
QUIET = "psi_warn: 1.0e6\npsi_alert: 1.0e6\nks_statistic_alert: 1.0\ncramers_v_alert: 1.0\n" \
        "auc_drop_alert: 2.0\nrealised_auc_drop_alert: 2.0\nsegment_share_alert: 1.0\n"
ALERT = "psi_warn: 0.0\npsi_alert: 0.0\nks_statistic_alert: 1.0e-9\ntest_alpha: 0.99\n"


@pytest.fixture(scope="module")
def job(env, tmp_path_factory):
    """Run the job twice on the same day: quiet thresholds, then thresholds that must alert."""
    from customer360.data.synthetic_identity import write_source_records

    base = tmp_path_factory.mktemp("daily")
    db = env.copy_db(base / "w.duckdb")
    store = base / "mlflow.db"
    shutil.copy(env.tracking_uri.removeprefix("sqlite:///"), store)
    with duckdb.connect(str(db)) as con:
        write_source_records(con, seed=5, today=dt.date.fromisoformat(env.as_of))
    (base / "quiet.yaml").write_text(QUIET)
    (base / "alert.yaml").write_text(ALERT)

    def run(config: str) -> subprocess.CompletedProcess:
        environ = env.env(
            db, MLFLOW_TRACKING_URI=f"sqlite:///{store}", DB=str(db), OUT=str(base / "out"),
            AS_OF=env.as_of, C360=str(REPO / ".venv/bin/customer360"),
            PY=str(REPO / ".venv/bin/python"), MONITOR_CONFIG=str(base / config),
            TRAIN_ARGS="--trials 1",
        )
        return subprocess.run(["bash", str(SCRIPT)], env=environ, capture_output=True,
                              text=True, timeout=900, cwd=REPO)

    quiet = run("quiet.yaml")
    first_scores = pd.read_parquet(base / "out" / f"scores_{env.as_of}.parquet")
    alert = run("alert.yaml")
    second_scores = pd.read_parquet(base / "out" / f"scores_{env.as_of}.parquet")
    return {"db": db, "store": store, "quiet": quiet, "alert": alert,
            "first": first_scores, "second": second_scores}


def test_quiet_monitor_ends_the_job_without_retraining(job):
    quiet = job["quiet"]
    assert quiet.returncode == 0, quiet.stdout[-3000:] + quiet.stderr[-3000:]
    assert "monitor quiet; done" in quiet.stdout
    assert "retrain" not in quiet.stdout


def test_unify_ran_and_search_knows_the_source_records(job):
    assert "identity run (" in job["quiet"].stdout
    with duckdb.connect(str(job["db"]), read_only=True) as con:
        records = con.execute("SELECT count(*) FROM source_records").fetchall()[0][0]
        linked = con.execute("SELECT count(*) FROM identity_crosswalk").fetchall()[0][0]
        emails = con.execute(
            "SELECT count(*) FROM search_keys WHERE matched LIKE 'email %'").fetchall()[0][0]
    assert linked == records > 0
    assert emails > 0


def test_a_rerun_of_the_same_day_scores_the_same(job):
    first, second = job["first"], job["second"]
    assert len(first) == len(second) > 0
    pd.testing.assert_frame_equal(
        first.sort_values("customer_id").reset_index(drop=True),
        second.sort_values("customer_id").reset_index(drop=True),
    )
    with duckdb.connect(str(job["db"]), read_only=True) as con:
        records = con.execute("SELECT count(*) FROM source_records").fetchall()[0][0]
        crosswalk = con.execute("SELECT count(*) FROM identity_crosswalk").fetchall()[0][0]
        scored = con.execute("SELECT count(*) FROM customer_scores").fetchall()[0][0]
    assert crosswalk == records  # the second identity run re-keyed and added nothing
    assert scored == len(second)


def test_an_alert_retrains_and_goes_through_the_promotion_gate(job):
    alert = job["alert"]
    assert alert.returncode == 0, alert.stdout[-3000:] + alert.stderr[-3000:]
    assert "monitor alert: retrain churn and promote" in alert.stdout
    assert ("done: new churn champion" in alert.stdout
            or "the challenger did not beat the champion" in alert.stdout)
    import mlflow

    uri = f"sqlite:///{job['store']}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions = client.search_model_versions("name='churn'")
    assert len(versions) >= 2  # the test store's first version and the retrained one


def _run_on(db, tmp_path, **extra) -> subprocess.CompletedProcess:
    import os

    environ = {**os.environ, "DB": str(db), "OUT": str(tmp_path / "out"),
               "C360": str(REPO / ".venv/bin/customer360"),
               "PY": str(REPO / ".venv/bin/python"), **extra}
    environ.pop("AS_OF", None)
    return subprocess.run(["bash", str(SCRIPT)], env=environ, capture_output=True, text=True,
                          timeout=300, cwd=REPO)


def test_a_missing_warehouse_stops_the_job_with_the_fix_not_a_traceback(tmp_path):
    db = tmp_path / "nowhere.duckdb"
    run = _run_on(db, tmp_path)
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    assert f"daily_job: error: Warehouse file {db} does not exist" in run.stderr
    assert "customer360 generate" in run.stderr
    assert not db.exists()


def test_an_empty_warehouse_stops_the_job_with_the_fix_not_a_traceback(tmp_path):
    # no source_records table (a warehouse without identity sources) is no reason to fail;
    # no transactions means no default as-of date, said so
    db = tmp_path / "empty.duckdb"
    duckdb.connect(str(db)).close()
    run = _run_on(db, tmp_path)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    assert "identity run" not in run.stdout
    assert "holds no transactions" in run.stderr and "set AS_OF=" in run.stderr
