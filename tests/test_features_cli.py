"""`customer360 features ...`: list, docs, build (snapshots replaced per as-of date)."""

from __future__ import annotations

import json

import pandas as pd
from typer.testing import CliRunner

from customer360.cli import app
from customer360.data.warehouse import connect
from customer360.features.registry import FEATURE_SET_VERSION, FEATURES, catalogue_markdown

runner = CliRunner()


def test_features_list_prints_the_catalogue():
    result = runner.invoke(app, ["features", "list", "--family", "svc"], terminal_width=250)
    assert result.exit_code == 0, result.output
    assert "svc__open_complaints__all" in result.output
    assert "txn__orders__30d" not in result.output
    assert FEATURE_SET_VERSION in result.output


def test_features_docs_writes_the_catalogue(tmp_path):
    out = tmp_path / "features.md"
    result = runner.invoke(app, ["features", "docs", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text() == catalogue_markdown()


def test_features_build_writes_snapshots_training_set_and_manifest(small_warehouse, tmp_path):
    out = tmp_path / "out" / "training.parquet"
    args = ["features", "build", "--db", str(small_warehouse)]
    result = runner.invoke(
        app,
        [
            *args,
            "--as-of",
            "2025-12-31",
            "--as-of",
            "2026-03-31",
            "--horizon",
            "90",
            "--output",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    manifest = json.loads((tmp_path / "out" / "training.manifest.json").read_text())
    assert manifest["feature_set_version"] == FEATURE_SET_VERSION
    assert manifest["as_of_dates"] == ["2025-12-31", "2026-03-31"]
    assert sum(manifest["rows_per_as_of"].values()) == manifest["rows"] == len(frame)
    assert manifest["n_features"] == len(FEATURES)
    assert "label__churn__90d" in frame.columns

    # rebuilding one date replaces its rows; the default as-of is the warehouse's today
    assert runner.invoke(app, [*args, "--as-of", "2026-03-31"]).exit_code == 0
    assert runner.invoke(app, args).exit_code == 0
    with connect(small_warehouse, read_only=True) as con:
        counts = dict(
            con.execute(
                "SELECT strftime(as_of, '%Y-%m-%d'), count(*) FROM feature_snapshots GROUP BY 1"
            ).fetchall()
        )
        n_train = con.execute("SELECT count(*) FROM training_set").fetchone()[0]
        columns = [r[0] for r in con.execute("DESCRIBE feature_snapshots").fetchall()]
    assert counts == {
        "2025-12-31": manifest["rows_per_as_of"]["2025-12-31"],
        "2026-03-31": manifest["rows_per_as_of"]["2026-03-31"],
        "2026-06-30": 3000,
    }
    assert n_train == len(frame)
    assert columns == ["customer_id", "as_of", *[f.name for f in FEATURES]]


def test_features_build_reports_a_bad_date(small_warehouse):
    result = runner.invoke(
        app, ["features", "build", "--db", str(small_warehouse), "--as-of", "31/12/2025"]
    )
    assert result.exit_code != 0
    assert "YYYY-MM-DD" in str(result.exception) + result.output


def test_write_table_replaces_dates_and_rebuilds_on_a_new_feature_set(tmp_path, caplog):
    from customer360.features.assembler import write_table

    con = connect(tmp_path / "w.duckdb", create=True)
    day1, day2 = pd.Timestamp("2026-01-01"), pd.Timestamp("2026-02-01")
    first = pd.DataFrame({"customer_id": ["a", "b"], "as_of": [day1, day2], "x": [1.0, 2.0]})
    write_table(con, first, "snap")
    write_table(con, pd.DataFrame({"customer_id": ["c"], "as_of": [day2], "x": [3.0]}), "snap")
    rows = con.execute("SELECT customer_id, x FROM snap ORDER BY customer_id").fetchall()
    assert rows == [("a", 1.0), ("c", 3.0)]  # day 2 replaced, day 1 kept
    renamed = pd.DataFrame({"customer_id": ["d"], "as_of": [day1], "y": [4.0]})
    with caplog.at_level("WARNING"):
        write_table(con, renamed, "snap")
    assert "rebuilding" in caplog.text
    assert con.execute("SELECT * FROM snap").fetchall() == [("d", day1.to_pydatetime(), 4.0)]
    con.close()
