"""Batch scoring: `customer360 score` (chunked, Parquet + DuckDB table) and the Spark path."""

from __future__ import annotations

import subprocess

import duckdb
import pandas as pd
import pytest
from serving_env import REPO, ServingEnv, add_identities


@pytest.fixture
def use_env(env, monkeypatch) -> ServingEnv:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env.tracking_uri)
    monkeypatch.setenv("CUSTOMER360_CONFIG_DIR", str(env.config_dir))
    return env


@pytest.fixture(scope="module")
def scored(env, tmp_path_factory) -> tuple[pd.DataFrame, duckdb.DuckDBPyConnection]:
    """`customer360 score` run as a user would, on a copy of the warehouse."""
    base = tmp_path_factory.mktemp("scored")
    db = env.copy_db(base / "w.duckdb")
    out = base / "scores.parquet"
    cmd = [str(REPO / ".venv/bin/customer360"), "score", "--as-of", env.as_of,
           "--output", str(out), "--db", str(db), "--chunk-size", "2048"]
    run = subprocess.run(cmd, env=env.env(db), capture_output=True, text=True, timeout=300,
                         cwd=REPO)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Scored 3,000 customers" in " ".join(run.stdout.split())
    return pd.read_parquet(out), db


def test_score_writes_every_customer_once_to_parquet_and_duckdb(scored, env):
    frame, db = scored
    with duckdb.connect(str(env.db), read_only=True) as con:
        expected = set(
            con.execute("SELECT customer_id FROM feature_snapshots WHERE as_of = ?", [env.as_of])
            .df()["customer_id"]
        )
    assert len(frame) == len(expected) and set(frame["customer_id"]) == expected
    with duckdb.connect(str(db), read_only=True) as con:
        table = con.execute("SELECT * FROM customer_scores ORDER BY customer_id").df()
    assert len(table) == len(frame)
    with duckdb.connect(str(db), read_only=True) as con:
        # the web app's search index is rebuilt by each scoring run and is fresh
        from customer360.serving.webapp.search import search
        assert search(con, frame["customer_id"].iloc[0])["customer_id"].iloc[0] == \
            frame["customer_id"].iloc[0]
        keyed = con.execute("SELECT count(DISTINCT customer_id) FROM search_keys").fetchall()
    assert keyed[0][0] >= len(frame)
    pd.testing.assert_series_equal(
        table["churn_probability"], frame.sort_values("customer_id")["churn_probability"]
        .reset_index(drop=True), check_names=False,
    )


def test_scores_are_complete_and_in_range(scored):
    frame, _ = scored
    assert frame["churn_probability"].between(0, 1).all()
    assert frame["reason_1"].notna().all()
    assert frame["value_segment"].isin(["A", "B", "C", "D"]).all()
    assert frame["seg__status"].notna().all()
    assert frame["prob__p_alive"].between(0, 1).all()
    assert frame["clv_ml"].notna().all()
    has_offer = frame["offer_1_id"].notna()
    assert has_offer.mean() > 0.5
    ranked = frame[frame["offer_2_id"].notna()]
    assert (ranked["offer_1_id"] != ranked["offer_2_id"]).all()


def test_chunk_size_does_not_change_the_scores(scored, use_env, tmp_path):
    from customer360.serving.batch import score_customers

    frame, _ = scored
    db = use_env.copy_db(tmp_path / "w.duckdb")
    report = score_customers(use_env.as_of, tmp_path / "one.parquet", db=db, chunk_size=10_000)
    assert report.chunks == 1 and report.rows == len(frame)
    one = pd.read_parquet(tmp_path / "one.parquet")
    pd.testing.assert_frame_equal(one, frame)


def test_batch_profile_carries_the_identity_block(use_env, tmp_path):
    # issue 14: the batch profile's identity column is /customer360's identity block (JSON).
    import json

    from customer360.data.warehouse import connect
    from customer360.identity.store import identity_json
    from customer360.serving.batch import score_customers

    db = use_env.copy_db(tmp_path / "w.duckdb")
    with connect(db) as con:
        add_identities(con)
        blocks = identity_json(con).set_index("customer_id")["identity"]
    # chunks of 16: the 30 identities span several chunks (one identity query per chunk)
    score_customers(use_env.as_of, tmp_path / "s.parquet", db=db, chunk_size=16)
    frame = pd.read_parquet(tmp_path / "s.parquet").set_index("customer_id")
    with_identity = frame["identity"].dropna()
    assert 20 <= len(with_identity) <= 30 and set(with_identity.index) <= set(blocks.index)
    for cid, text in with_identity.items():
        assert json.loads(text) == json.loads(blocks[cid])
    block = json.loads(with_identity.iloc[0])
    assert {"golden", "source_records", "aliases"} == set(block)
    assert all(g["source_system"] and g["source_record_id"] for g in block["golden"])


def test_unknown_snapshot_date_is_a_clear_error(use_env, tmp_path):
    from customer360.errors import WarehouseError
    from customer360.serving.batch import score_customers

    db = use_env.copy_db(tmp_path / "w.duckdb")
    with pytest.raises(WarehouseError, match="no rows for as_of 1999-01-01.*features build"):
        score_customers("1999-01-01", tmp_path / "x.parquet", db=db)
    assert not (tmp_path / "x.parquet").exists()


@pytest.mark.spark
def test_spark_scoring_equals_the_duckdb_batch(scored, use_env, monkeypatch):
    import sys

    from customer360.features.engine import local_spark
    from customer360.serving.batch import score_spark, spark_input

    frame, db = scored
    sample = frame.sort_values("customer_id").iloc[::15]
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)  # executors run the models here
    spark = local_spark(
        cores=2, **{"spark.sql.shuffle.partitions": "2", "spark.pyspark.python": sys.executable}
    )
    features = spark_input(spark, db, use_env.as_of, customer_ids=sample["customer_id"].tolist())
    got = score_spark(spark, features).toPandas().sort_values("customer_id")
    assert list(got["customer_id"]) == list(sample["customer_id"])
    pd.testing.assert_series_equal(
        got["churn_probability"].reset_index(drop=True),
        sample["churn_probability"].reset_index(drop=True), check_names=False,
    )
    assert list(got["reason_1"]) == list(sample["reason_1"])
    pd.testing.assert_series_equal(
        got["clv_ml"].reset_index(drop=True), sample["clv_ml"].reset_index(drop=True),
        check_names=False,
    )
