"""Leakage tests: features as of T never see rows dated on or after T, labels only see rows in
[T, T+H).

Rows are added the way real data arrives: written to Parquet files and ingested with
:func:`customer360.data.ingest.ingest_file` into a copy of the small generated warehouse.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil

import pandas as pd
import pytest

from customer360.data.contracts import CONTRACTS
from customer360.data.ingest import ingest_file
from customer360.data.warehouse import connect
from customer360.features import build_features
from customer360.features.assembler import build_labels
from customer360.features.registry import FAMILY_SQL, feature_names

T = dt.date(2025, 12, 31)
H = 90

# SELECT list per raw table for new rows: ids get a prefix, every time column is moved to
# {start} + {step} * i hours, where i = 0, 1, ... (so the first new row sits exactly on {start}).
_OFFSET = "(row_number() OVER () - 1)"
_SHIFTED = f"{{start}} + to_hours({{step}} * {_OFFSET})"
NEW_ROWS: dict[str, str] = {
    "customers": f"""
        SELECT '{{prefix}}' || customer_id AS customer_id, customer_type, company_size,
               industry, age_band, gender, region, city, acquisition_channel,
               CAST({_SHIFTED} AS DATE) AS signup_date, CAST(NULL AS DATE) AS contract_end_date
        FROM (SELECT * FROM customers ORDER BY customer_id LIMIT 60)""",
    "transactions": f"""
        SELECT '{{prefix}}' || transaction_id AS transaction_id, customer_id,
               {_SHIFTED} AS ts, amount, margin, quantity, category, channel, discount,
               is_return, CASE WHEN {_OFFSET} % 3 = 0 THEN 'C00000001' END AS referrer_id,
               cost_to_serve
        FROM (SELECT * FROM transactions WHERE customer_id <> 'C00000001'
              ORDER BY transaction_id LIMIT 400)""",
    "third_party": f"""
        SELECT c.customer_id, {_SHIFTED} AS observed_at, 'manager' AS profession,
               'master' AS education, 'high' AS income_band, 2::INTEGER AS household_size,
               500000.0 AS home_value, 99.0 AS affluence_score,
               CAST(NULL AS VARCHAR) AS revenue_band,
               CAST(NULL AS INTEGER) AS employee_count
        FROM (SELECT customer_id FROM customers WHERE customer_id NOT IN
              (SELECT customer_id FROM third_party) ORDER BY customer_id LIMIT 100) AS c""",
    "events": f"""
        SELECT '{{prefix}}' || event_id AS event_id, customer_id, {_SHIFTED} AS ts, event_type,
               channel, category
        FROM (SELECT * FROM events ORDER BY event_id LIMIT 400)""",
    "social": f"""
        SELECT '{{prefix}}' || social_id AS social_id, customer_id, {_SHIFTED} AS ts, kind,
               platform, sentiment
        FROM (SELECT * FROM social ORDER BY social_id LIMIT 200)""",
    "support_tickets": f"""
        SELECT '{{prefix}}' || ticket_id AS ticket_id, customer_id, {_SHIFTED} AS opened_at,
               CASE WHEN {_OFFSET} % 2 = 1 THEN {_SHIFTED} + INTERVAL 1 DAY END AS closed_at,
               category,
               CASE WHEN {_OFFSET} % 2 = 1 THEN 'resolved' ELSE 'open' END AS status,
               CASE WHEN {_OFFSET} % 2 = 1 THEN 1 END::INTEGER AS satisfaction
        FROM (SELECT * FROM support_tickets ORDER BY ticket_id LIMIT 200)""",
    "offer_events": f"""
        SELECT '{{prefix}}' || offer_event_id AS offer_event_id, customer_id, offer_id,
               {_SHIFTED} AS ts, channel, propensity, true AS accepted
        FROM (SELECT * FROM offer_events ORDER BY offer_event_id LIMIT 200)""",
}


def _copy(master, folder):
    path = folder / "w.duckdb"
    shutil.copy(master, path)
    os.chmod(path, 0o644)
    return path


def ingest_new_rows(con, folder, *, start: dt.datetime, step_hours: int, prefix: str) -> int:
    """Ingest new rows into every raw table with a time column, dated from ``start`` on."""
    added = 0
    for table, select in NEW_ROWS.items():
        assert CONTRACTS[table].time_column is not None
        file = folder / f"{prefix}_{table}.parquet"
        sql = select.format(
            prefix=prefix, start=f"TIMESTAMP '{start:%Y-%m-%d %H:%M:%S}'", step=step_hours
        )
        con.execute(f"COPY ({sql}) TO '{file}' (FORMAT PARQUET)")
        report = ingest_file(con, table, file)
        assert report.rows_quarantined == 0, (table, report.reasons)
        assert report.rows_loaded > 0, table
        added += report.rows_loaded
    return added


@pytest.fixture(scope="module")
def baseline(small_warehouse_master):
    with connect(small_warehouse_master, read_only=True) as con:
        return build_features(con, T), build_labels(con, T, H)


@pytest.fixture(scope="module")
def with_future_rows(small_warehouse_master, tmp_path_factory):
    """A warehouse copy with rows dated in [T, T+83 days) added to every raw table."""
    folder = tmp_path_factory.mktemp("future")
    path = _copy(small_warehouse_master, folder)
    with connect(path) as con:
        added = ingest_new_rows(
            con, folder, start=dt.datetime.combine(T, dt.time(0)), step_hours=5, prefix="F"
        )
        assert added > 1500
    return path


@pytest.mark.parametrize("family", list(FAMILY_SQL))
def test_features_ignore_rows_dated_on_or_after_t(family, baseline, with_future_rows):
    before = baseline[0][["customer_id", "as_of", *feature_names(family)]]
    with connect(with_future_rows, read_only=True) as con:
        after = build_features(con, T, families=[family])
        # the added rows really are in the warehouse, at T and after
        assert (
            con.execute(
                "SELECT count(*) FROM transactions WHERE transaction_id LIKE 'F%' AND ts = ?", [T]
            ).fetchone()[0]
            == 1
        )
    pd.testing.assert_frame_equal(after, before)


def test_future_rows_do_change_later_features(with_future_rows):
    """Positive control: the same added rows are visible as of a later date."""
    later = T + dt.timedelta(days=120)
    with connect(with_future_rows, read_only=True) as con:
        after = build_features(con, later, families=["txn", "svc"]).set_index("customer_id")
    assert after.loc["C00000001", "txn__referrals_made__all"] > 0
    # customers who signed up on or after T only appear as of later dates
    assert after.index.str.startswith("F").sum() == 60


def test_labels_use_only_the_horizon_window(baseline, small_warehouse_master, tmp_path):
    labels_before = baseline[1]
    path = _copy(small_warehouse_master, tmp_path)
    with connect(path) as con:
        # rows dated on/after T+H, and orders before T by customers who already bought then
        ingest_new_rows(
            con,
            tmp_path,
            start=dt.datetime.combine(T + dt.timedelta(days=H), dt.time(0)),
            step_hours=3,
            prefix="L",
        )
        file = tmp_path / "past.parquet"
        con.execute(f"""COPY (
            SELECT 'P' || transaction_id AS transaction_id, customer_id,
                   ts - INTERVAL 1 DAY AS ts, amount, margin, quantity, category, channel,
                   discount, is_return, referrer_id, cost_to_serve
            FROM transactions WHERE ts < DATE '{T}' AND NOT is_return
            ORDER BY transaction_id LIMIT 300) TO '{file}' (FORMAT PARQUET)""")
        assert ingest_file(con, "transactions", file).rows_loaded == 300
        pd.testing.assert_frame_equal(build_labels(con, T, H), labels_before)


def test_labels_do_see_rows_inside_the_horizon(baseline, with_future_rows):
    with connect(with_future_rows, read_only=True) as con:
        after = build_labels(con, T, H)
    before = baseline[1]
    assert (after["label__purchases__90d"] >= before["label__purchases__90d"]).all()
    assert after["label__purchases__90d"].sum() > before["label__purchases__90d"].sum()
    assert after["label__offer_accepted__90d"].sum() > before["label__offer_accepted__90d"].sum()
