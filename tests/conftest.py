"""Small shared fixtures. Everything real: DuckDB files and MLflow stores live in tmp paths."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

SMALL_CUSTOMERS = 3000
SMALL_SEED = 7


@pytest.fixture(autouse=True)
def _isolated_mlflow(tmp_path, monkeypatch):
    """Every test gets its own MLflow sqlite store, never the developer's mlruns/."""
    store = tmp_path / "mlruns"
    store.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    monkeypatch.setenv("CUSTOMER360_DB", str(tmp_path / "default.duckdb"))
    yield


@pytest.fixture(scope="session")
def small_warehouse_master(tmp_path_factory) -> Path:
    """One small synthetic warehouse generated per test session (read it, do not write it)."""
    from customer360.data.synthetic import generate_warehouse

    path = tmp_path_factory.mktemp("warehouse") / "small.duckdb"
    generate_warehouse(path, n_customers=SMALL_CUSTOMERS, seed=SMALL_SEED)
    os.chmod(path, 0o444)
    return path


@pytest.fixture
def small_warehouse(small_warehouse_master, tmp_path) -> Path:
    """A private writable copy of the small synthetic warehouse."""
    dst = tmp_path / "small.duckdb"
    shutil.copy(small_warehouse_master, dst)
    os.chmod(dst, 0o644)
    return dst


@pytest.fixture(scope="module")
def env(tmp_path_factory, small_warehouse_master):
    """The trained, served-ready environment (tests/serving_env.py), built once per session."""
    from serving_env import build_env

    return build_env(tmp_path_factory.getbasetemp() / "serving_env", small_warehouse_master)


@pytest.fixture(scope="module")
def spark():
    """A local[2] Spark session for one module, its Python workers on this interpreter (the
    batch-on-Spark tests; modules that need other settings define their own)."""
    import sys

    from customer360.features.engine import local_spark

    session = local_spark(
        cores=2, **{"spark.sql.shuffle.partitions": "2", "spark.pyspark.python": sys.executable}
    )
    yield session
    session.stop()
