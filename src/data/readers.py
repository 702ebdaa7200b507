"""Warehouse readers shared by training and serving: one SQL query each, frames out.

Models stay pure (frames in, frames out): the wiring in training/ and serving/ reads its
inputs here once and passes the frames down.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pandas as pd

from customer360.data.tables import FEEDBACK_TABLE
from customer360.data.warehouse import require_tables, table_exists
from customer360.errors import Customer360Error


def _timestamp(value: dt.date | str) -> dt.datetime:
    return pd.Timestamp(value).to_pydatetime()


def purchases_before(con, before: dt.date | str) -> pd.DataFrame:
    """Non-return transactions (``customer_id, ts, amount``) strictly before ``before``."""
    require_tables(con, "transactions", "customers")
    return con.execute(
        "SELECT customer_id, ts, amount FROM transactions WHERE NOT is_return AND ts < ?",
        [_timestamp(before)],
    ).df()


def margin_rate_before(con, before: dt.date | str) -> float:
    """Margin share of revenue of the purchases before ``before`` (1.0 without revenue)."""
    require_tables(con, "transactions")
    amount, margin = con.execute(
        "SELECT sum(amount), sum(margin) FROM transactions WHERE NOT is_return AND ts < ?",
        [_timestamp(before)],
    ).fetchall()[0]
    return float(margin / amount) if amount else 1.0


def customers_before(con, before: dt.date | str) -> pd.DataFrame:
    """``customer_id`` of every customer signed up before ``before``, sorted."""
    require_tables(con, "customers")
    return con.execute(
        "SELECT customer_id FROM customers WHERE signup_date < ? ORDER BY customer_id",
        [pd.Timestamp(before).date()],
    ).df()


def offer_table(con, table: str = "offers") -> pd.DataFrame:
    """The raw offer catalogue ``table``, sorted by ``offer_id``; an empty one is an error."""
    require_tables(con, table)
    offers = con.execute(f"SELECT * FROM {table} ORDER BY offer_id").df()
    if offers.empty:
        raise Customer360Error(
            f"The offer catalogue (table {table}) is empty; ingest offers first."
        )
    return offers


def offer_history(
    con,
    offers: pd.DataFrame | None = None,
    customer_ids: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Every past offer and answer: ``offer_events`` plus the bandit feedback log.

    Columns ``customer_id, offer_id, ts, channel, accepted``; feeds the held / recently
    rejected / contact-cap rules. ``customer_ids`` restricts it to those customers (what a
    single request needs).
    """
    where, params = "", []
    if customer_ids is not None:
        where, params = " WHERE list_contains(?::VARCHAR[], customer_id)", [list(customer_ids)]
    parts = [
        con.execute(
            f"SELECT customer_id, offer_id, ts, channel, accepted FROM offer_events{where}", params
        ).df()
    ]
    if table_exists(con, FEEDBACK_TABLE):
        fb = con.execute(
            f"SELECT customer_id, offer_id, ts, accepted FROM {FEEDBACK_TABLE}{where}", params
        ).df()
        if len(fb):
            if offers is None:
                offers = con.execute("SELECT offer_id, channel FROM offers").df()
            fb["channel"] = (
                offers.set_index("offer_id")["channel"].reindex(fb["offer_id"]).to_numpy()
            )
            parts.append(fb)
    return pd.concat(parts, ignore_index=True)
