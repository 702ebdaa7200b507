"""Warehouse reads of the web app: search, demographics, the activity timeline, spend per
month and the segment figures. Each function takes an open (read-only) connection."""

from __future__ import annotations

import datetime as dt
import functools

import duckdb
import pandas as pd

from customer360.data.warehouse import table_exists
from customer360.serving.webapp import search

SEARCH_LIMIT = search.SEARCH_LIMIT

# One row per activity: (kind, ts, what, amount). Tables absent from a warehouse are skipped.
_TIMELINE_PARTS = {
    "transactions": (
        "SELECT CASE WHEN is_return THEN 'return' WHEN referrer_id IS NOT NULL "
        "THEN 'referred purchase' ELSE 'purchase' END AS kind, ts, "
        "category || ' via ' || channel AS what, amount FROM transactions WHERE customer_id = $id"
    ),
    "support_tickets": (
        "SELECT 'ticket' AS kind, opened_at AS ts, category || ' (' || status || ')' AS what, "
        "NULL::DOUBLE AS amount FROM support_tickets WHERE customer_id = $id"
    ),
    "offer_events": (
        "SELECT 'offer' AS kind, ts, offer_id || CASE WHEN accepted THEN ' accepted' "
        "ELSE ' not accepted' END || ' (' || channel || ')' AS what, NULL::DOUBLE AS amount "
        "FROM offer_events WHERE customer_id = $id"
    ),
    "events": (
        "SELECT event_type AS kind, ts, channel || coalesce(' · ' || category, '') AS what, "
        "NULL::DOUBLE AS amount FROM events WHERE customer_id = $id"
    ),
    "social": (
        "SELECT 'social ' || kind AS kind, ts, platform || ', sentiment ' || "
        "round(sentiment, 2) AS what, NULL::DOUBLE AS amount FROM social WHERE customer_id = $id"
    ),
}


def search_customers(con: duckdb.DuckDBPyConnection, query: str) -> pd.DataFrame:
    """Customers matching ``query`` by id, name, email, phone, city, region or industry, best
    first (at most :data:`SEARCH_LIMIT`); see :func:`customer360.serving.webapp.search.search`."""
    return search.search(con, query, phone_region=_phone_region(), limit=SEARCH_LIMIT)


@functools.cache
def _phone_region() -> str:
    """The region phone numbers without a country code belong to (configs/identity.yaml)."""
    from customer360.identity.unify import load_identity_config

    return load_identity_config().default_phone_region


def _tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables")
            .fetchall()}


def _row(con: duckdb.DuckDBPyConnection, sql: str, params: list) -> dict:
    cur = con.execute(sql, params)
    row = cur.fetchone()
    return {} if row is None else dict(zip([d[0] for d in cur.description], row, strict=True))


def demographics(con: duckdb.DuckDBPyConnection, customer_id: str) -> dict:
    """The customer's master-data row (and third-party attributes when present)."""
    out = _row(con, "SELECT * FROM customers WHERE customer_id = ?", [customer_id])
    if table_exists(con, "third_party"):
        tp = _row(con, "SELECT * EXCLUDE (customer_id) FROM third_party WHERE customer_id = ? "
                  "LIMIT 1", [customer_id])
        out.update({f"third_party · {k}": v for k, v in tp.items()})
    return {k: v for k, v in out.items() if v is not None and not (isinstance(v, float) and
                                                                   pd.isna(v))}


def timeline(
    con: duckdb.DuckDBPyConnection, customer_id: str, *, page: int, per_page: int
) -> tuple[pd.DataFrame, int]:
    """One page of the customer's activities, newest first, and the total count (one pass:
    the count is a window over the same union)."""
    present = _tables(con)
    parts = [sql for table, sql in _TIMELINE_PARTS.items() if table in present]
    columns = ["kind", "ts", "what", "amount"]
    if not parts:
        return pd.DataFrame(columns=columns), 0
    union = " UNION ALL ".join(parts)
    rows = con.execute(
        f"SELECT *, count(*) OVER () AS total FROM ({union}) ORDER BY ts DESC, kind "
        "LIMIT $lim OFFSET $off",
        {"id": customer_id, "lim": per_page, "off": (page - 1) * per_page},
    ).fetchall()
    if not rows and page > 1:  # past the last page: the count still comes back
        (total,) = con.execute(f"SELECT count(*) FROM ({union})", {"id": customer_id}).fetchone()
        return pd.DataFrame(columns=columns), int(total)
    frame = pd.DataFrame([r[:4] for r in rows], columns=columns)
    return frame, int(rows[0][4]) if rows else 0


def monthly_spend(con: duckdb.DuckDBPyConnection, customer_id: str) -> pd.DataFrame:
    """Net spend per calendar month (returns subtracted)."""
    return con.execute(
        "SELECT date_trunc('month', ts) AS month, sum(amount) AS spend FROM transactions "
        "WHERE customer_id = ? GROUP BY 1 ORDER BY 1",
        [customer_id],
    ).df()


def latest_segments_as_of(con: duckdb.DuckDBPyConnection) -> dt.date | None:
    if not table_exists(con, "customer_segments"):
        return None
    (as_of,) = con.execute("SELECT max(CAST(as_of AS DATE)) FROM customer_segments").fetchone()
    return as_of


def segment_members(
    con: duckdb.DuckDBPyConnection, as_of: dt.date, *, value_segment: str | None = None,
    rfm_r: int | None = None, rfm_f: int | None = None,
) -> pd.DataFrame:
    """The ``customer_segments`` rows of ``as_of`` in a value segment or an R x F cell."""
    where, params = ["CAST(as_of AS DATE) = $as_of"], {"as_of": as_of}
    if value_segment is not None:
        where.append("value_segment = $seg")
        params["seg"] = value_segment
    if rfm_r is not None:
        where.append("rfm_r = $r")
        params["r"] = rfm_r
    if rfm_f is not None:
        where.append("rfm_f = $f")
        params["f"] = rfm_f
    return con.execute(
        "SELECT customer_id, value_segment, rfm_segment, rfm_r, rfm_f, rfm_m, status, "
        "lifecycle_stage, clv FROM customer_segments WHERE " + " AND ".join(where)
        + " ORDER BY customer_id",
        params,
    ).df()


def segment_table(con: duckdb.DuckDBPyConnection, as_of: dt.date) -> pd.DataFrame:
    """Per value segment: customers, revenue, margin, cost to serve (transactions before
    ``as_of``) and mean CLV (the table's ``clv``)."""
    return con.execute(
        "WITH t AS (SELECT customer_id, sum(amount) AS revenue, sum(margin) AS margin, "
        "sum(cost_to_serve) AS cost_to_serve FROM transactions WHERE ts < $as_of GROUP BY 1) "
        "SELECT s.value_segment, count(*) AS customers, coalesce(sum(t.revenue), 0) AS revenue, "
        "coalesce(sum(t.margin), 0) AS margin, coalesce(sum(t.cost_to_serve), 0) AS "
        "cost_to_serve, avg(s.clv) AS mean_clv FROM customer_segments s LEFT JOIN t USING "
        "(customer_id) WHERE CAST(s.as_of AS DATE) = $as_of GROUP BY 1 ORDER BY 1",
        {"as_of": as_of},
    ).df()


def rfm_grid(con: duckdb.DuckDBPyConnection, as_of: dt.date) -> pd.DataFrame:
    """Customer counts per (R, F) score cell."""
    return con.execute(
        "SELECT rfm_r, rfm_f, count(*) AS customers FROM customer_segments "
        "WHERE CAST(as_of AS DATE) = $as_of GROUP BY 1, 2 ORDER BY 1 DESC, 2",
        {"as_of": as_of},
    ).df()
