"""scripts/daily_job.sh end to end (issue 16 item 5) on a tiny generated warehouse with source
records, a real MLflow sqlite store and configs in tmp paths: every step leaves its output, a
rerun changes nothing, and the monitor's exit code alone decides whether churn is retrained."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import duckdb
import mlflow
import pytest
import yaml
from serving_env import REPO, _configs, _environ

CUSTOMERS, SEED = 1500, 5
REFERENCE, CURRENT = "2026-03-31", "2026-06-29"
TABLES = ("identity_crosswalk", "customer_scores", "monitor_results", "feature_snapshots")


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """The warehouse with first champions of churn, CLV and NBO, and a runner of the script."""
    from customer360.data.synthetic import generate_warehouse
    from customer360.data.warehouse import connect, get_meta
    from customer360.features import build_features
    from customer360.features.assembler import SNAPSHOT_TABLE, write_outputs
    from customer360.training.churn import train_churn
    from customer360.training.clv import train_clv
    from customer360.training.nbo import train_nbo

    root = tmp_path_factory.mktemp("daily")
    db = root / "warehouse.duckdb"
    generate_warehouse(db, n_customers=CUSTOMERS, seed=SEED, source_records=True)
    configs = _configs(root / "configs")
    # quiet run: the tiny model's expected / realised AUC is noisy, so only drift may alert
    monitor = yaml.safe_load((configs / "monitor.yaml").read_text())
    monitor.update(auc_drop_alert=1.0, realised_auc_drop_alert=1.0)
    (configs / "monitor.yaml").write_text(yaml.safe_dump(monitor))
    # alerting run: the same configs with a PSI alert threshold every feature crosses
    alert = root / "configs_alert"
    _configs(alert)
    (alert / "monitor.yaml").write_text(yaml.safe_dump({**monitor, "psi_warn": 0.0,
                                                        "psi_alert": 0.0}))
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
           "CUSTOMER360_CONFIG_DIR": str(configs), "CUSTOMER360_DB": str(db)}
    with _environ(**env), connect(db) as con:
        write_outputs(build_features(con, get_meta(con, "today")), con=con, table=SNAPSHOT_TABLE)
        train_churn(con, trials=1)
        train_clv(con, trials=1)
        train_nbo(con, trials=0)

    def run(config_dir: Path = configs) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(REPO / "scripts" / "daily_job.sh")], capture_output=True, text=True,
            timeout=900, env={**os.environ, **env, "CUSTOMER360_CONFIG_DIR": str(config_dir),
                              "DB": str(db), "OUT": str(root / "out"), "AS_OF": CURRENT,
                              "REFERENCE_AS_OF": REFERENCE,
                              "C360": str(REPO / ".venv" / "bin" / "customer360")})

    return {"db": db, "root": root, "env": env, "run": run, "alert": alert}


def counts(db: Path) -> dict[str, int]:
    with duckdb.connect(str(db), read_only=True) as con:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


def churn_versions(job) -> int:
    with _environ(MLFLOW_TRACKING_URI=job["env"]["MLFLOW_TRACKING_URI"]):
        return len(mlflow.MlflowClient().search_model_versions("name = 'churn'"))


def test_daily_job_end_to_end_rerun_and_retrain(job):
    versions = churn_versions(job)
    first = job["run"]()
    assert first.returncode == 0, first.stdout + first.stderr
    log = first.stdout
    assert "daily_job: unify " in log and "no source_records" not in log
    assert f"score {CURRENT}" in log and "monitor quiet" in log and "retrain" not in log
    assert (job["root"] / "out" / f"scores_{CURRENT}.parquet").stat().st_size > 0
    after_first = counts(job["db"])
    assert all(after_first[t] > 0 for t in TABLES), after_first
    with duckdb.connect(str(job["db"]), read_only=True) as con:
        dates = {str(d) for (d,) in con.execute(
            "SELECT DISTINCT as_of FROM monitor_results").fetchall()}
    assert CURRENT in dates
    assert churn_versions(job) == versions  # quiet monitor: no retraining

    second = job["run"]()
    assert second.returncode == 0, second.stdout + second.stderr
    assert "monitor quiet" in second.stdout
    assert counts(job["db"]) == after_first  # idempotent: same rows, nothing added
    assert churn_versions(job) == versions

    alerting = job["run"](job["alert"])
    assert alerting.returncode == 0, alerting.stdout + alerting.stderr
    assert "monitor alert: retrain churn and promote" in alerting.stdout
    assert churn_versions(job) == versions + 1  # the alert alone triggered `train churn`
