"""Plausible contracts (issue 12, item 5): money bounds, dates between the configured earliest
date and now plus a tolerance, id and text lengths. Real DuckDB files in tmp_path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import yaml
from test_ingest import CUSTOMER_COLUMNS, TX_COLUMNS, customer, make_warehouse, txn, write_csv

from customer360.data.contract_docs import render_contracts_markdown
from customer360.data.ingest import ingest_file
from customer360.data.warehouse import connect


def _future(days: float) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).strftime("%Y-%m-%d %H:%M:%S")


def test_implausible_rows_are_quarantined_with_a_reason_and_counts_reconcile(tmp_path):
    db = make_warehouse(tmp_path)
    rows = [
        txn("T1"),
        txn("T2", amount="1e308"),
        txn("T3", is_return="true", amount="-2e9", margin="-1"),
        txn("T4", ts="0001-01-01 00:00:00"),
        txn("T5", ts="9999-12-31 00:00:00"),
        txn("T6", ts=_future(3)),
        txn("T7", ts=_future(0.5)),  # within the 1-day clock-skew tolerance
        txn("X" * 129),
        txn("T9", cost_to_serve="5e9"),
    ]
    file = write_csv(tmp_path / "tx.csv", TX_COLUMNS, rows)
    with connect(db) as con:
        report = ingest_file(con, "transactions", file)
        reasons = dict(con.execute(
            "SELECT row_number, reason FROM quarantine WHERE table_name = 'transactions'"
        ).fetchall())
        loaded = sorted(r[0] for r in con.execute("SELECT transaction_id FROM transactions")
                        .fetchall())
    assert report.rows_read == report.rows_loaded + report.rows_quarantined == 9
    assert loaded == ["T1", "T7"]
    assert report.reasons == {
        "amount: above maximum 1000000000": 1,
        "amount: below minimum -1000000000": 1,
        "ts: before the earliest date 1970-01-01": 1,
        "ts: more than 1 day(s) in the future": 2,
        "transaction_id: longer than 128 characters": 1,
        "cost_to_serve: above maximum 1000000000": 1,
    }
    assert reasons[2] == "column amount: 1e+308 is above the maximum 1000000000"
    assert reasons[4] == "column ts: '0001-01-01 00:00:00' is before 1970-01-01"
    assert reasons[8] == (
        "column transaction_id: a value of 129 characters is longer than 128 characters"
    )


def test_earliest_date_is_configurable_and_planned_dates_may_be_future(tmp_path, monkeypatch):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "contracts.yaml").write_text(yaml.safe_dump(
        {"earliest_date": "2024-06-01", "future_tolerance_days": 1,
         "latest_planned_date": "2100-01-01"}
    ))
    monkeypatch.setenv("CUSTOMER360_CONFIG_DIR", str(configs))
    db = make_warehouse(tmp_path, customers=())
    people = [
        customer("C1"),  # signed up 2024-01-01: before the configured earliest date
        {**customer("C2"), "signup_date": "2024-07-01", "contract_end_date": "2090-01-01"},
        {**customer("C3"), "signup_date": "2024-07-01", "contract_end_date": "2150-01-01"},
    ]
    file = write_csv(tmp_path / "customers.csv", CUSTOMER_COLUMNS, people)
    with connect(db) as con:
        report = ingest_file(con, "customers", file)
    assert report.rows_loaded == 1
    assert report.reasons == {
        "signup_date: before the earliest date 2024-06-01": 1,
        "contract_end_date: after the latest planned date 2100-01-01": 1,
    }
    page = render_contracts_markdown()
    assert "from 2024-06-01" in page and "until 2100-01-01" in page
