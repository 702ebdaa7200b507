"""`predict --table` on bad tables (issue 12, item 7): one line naming the cause, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from customer360.cli import app

CLI = str(Path(sys.executable).parent / "customer360")


def _predict(table: Path, tmp_path: Path, model: str = "churn_byo@challenger"):
    return subprocess.run(
        [CLI, "predict", "--model", model, "--table", str(table),
         "--output", str(tmp_path / "out.csv")],
        capture_output=True, text=True, timeout=120,
    )


def _one_error_line(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    return lines[0]


def _table(n: int = 200, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    spend = rng.gamma(2.0, 300.0, n)
    login = rng.exponential(20.0, n)
    churned = rng.uniform(size=n) < 1 / (1 + np.exp(-(-1 + 2.5 * (login > 30))))
    return pd.DataFrame({
        "customer_id": [f"C{i:04d}" for i in range(n)],
        "spend": spend.round(2),
        "days_since_login": login.round(1),
        "churned": np.where(churned, "yes", "no"),
    })


def _write_bad(kind: str, path: Path) -> Path:
    if kind == "empty.parquet":
        _table().iloc[:0].to_parquet(path)
    elif kind == "header_only.csv":
        path.write_text("customer_id,spend,days_since_login\n")
    elif kind == "zero_bytes.csv":
        path.write_bytes(b"")
    elif kind == "corrupt.parquet":
        _table().to_parquet(path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


@pytest.mark.parametrize(
    ("kind", "needle"),
    [
        ("empty.parquet", "has no data rows"),
        ("header_only.csv", "has no data rows"),
        ("zero_bytes.csv", "is empty (0 bytes)"),
        ("corrupt.parquet", "Cannot read table file"),
    ],
)
def test_unreadable_or_empty_table_is_one_line_and_exit_2(kind, needle, tmp_path):
    table = _write_bad(kind, tmp_path / kind)
    line = _one_error_line(_predict(table, tmp_path))
    assert needle in line and kind in line


def test_non_numbers_in_numeric_columns_are_refused_naming_column_and_rows(tmp_path):
    source = tmp_path / "train.csv"
    _table().to_csv(source, index=False)
    res = CliRunner().invoke(app, ["train", "churn", "--table", str(source), "--label",
                                   "churned", "--id-col", "customer_id", "--trials", "1"])
    assert res.exit_code == 0, res.output
    frame = _table(20, seed=2).drop(columns="churned").astype({"spend": str})
    frame.loc[[3, 11], "spend"] = "abc"
    frame.loc[[0], "days_since_login"] = np.inf
    table = tmp_path / "score.csv"
    frame.to_csv(table, index=False)
    line = _one_error_line(_predict(table, tmp_path))
    assert "column 'spend': 2 row(s) (4, 12) hold 'abc', 'abc'" in line
    assert "column 'days_since_login': 1 row(s) (1) hold 'inf'" in line
    assert not (tmp_path / "out.csv").exists()
    # blanks remain "missing" and score
    frame.loc[[3, 11], "spend"] = ""
    frame.loc[[0], "days_since_login"] = np.nan
    frame.to_csv(table, index=False)
    out = _predict(table, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert len(pd.read_csv(tmp_path / "out.csv")) == 20
