"""`serve` exit codes a supervisor can trust (issue 12, item 6), through the real CLI."""

from __future__ import annotations

import subprocess

import duckdb
import pytest
from serving_env import REPO, build_env, free_port

CLI = str(REPO / ".venv/bin/customer360")


def _run(args: list[str], env: dict[str, str] | None = None, timeout: float = 180):
    return subprocess.run(
        [CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def test_serve_without_a_feature_snapshot_names_the_fixing_command(small_warehouse):
    out = _run(["serve", "--db", str(small_warehouse), "--port", "1"])
    assert out.returncode == 2, out.stdout + out.stderr
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "feature_snapshots" in lines[0]
    assert "customer360 features build --as-of" in lines[0]
    assert "Traceback" not in out.stderr


@pytest.mark.server
def test_serve_exits_non_zero_with_the_cause_when_the_worker_fails(
    tmp_path_factory, small_warehouse_master, tmp_path
):
    env = build_env(tmp_path_factory.getbasetemp() / "serving_env", small_warehouse_master)
    db = env.copy_db(tmp_path / "warehouse.duckdb")
    with duckdb.connect(str(db)) as con:  # a snapshot the champions cannot read
        con.execute("ALTER TABLE feature_snapshots DROP COLUMN txn__orders__all")
    out = _run(["serve", "--db", str(db), "--port", str(free_port())], env=env.env(db))
    assert out.returncode == 2, (out.stdout + out.stderr)[-3000:]
    errors = [line for line in out.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out.stdout[-3000:]
    assert "the service could not start" in errors[0]
    assert "txn__orders__all" in errors[0]
