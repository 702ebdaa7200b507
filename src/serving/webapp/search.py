"""Search of the web app: a customer by id, name, email or phone.

The query is read once (:func:`read_query`): what kind of thing it is and its standardised form,
made by the same standardisers identity resolution applies to source records
(:mod:`customer360.identity.standardise`), so ``" Ann.Smith@Example.COM "`` and
``"020 7946 0018"`` compare equal to what was stored. Emails, phones and names are found among
the source records (``identity_records``) and mapped to the unified customer through
``identity_crosswalk``: any source record's value finds its customer, and the result says
which record matched. Customer ids (and merged ids kept as aliases), cities, regions and
industries are found in ``customers``.

Every lookup is an equality or a prefix test (``starts_with``) on standardised columns that
DuckDB scans in a few milliseconds per million records; nothing is matched with
``LIKE '%...%'`` and user text never enters SQL except as a bound parameter.
"""

from __future__ import annotations

import dataclasses
import re

import duckdb
import pandas as pd

from customer360.identity.standardise import (
    standardise_email,
    standardise_name,
    standardise_phone,
)

SEARCH_LIMIT = 50
# A search box is not a document: longer queries are cut before they are read.
MAX_QUERY_CHARS = 200
# Fewest digits that make a query a phone number rather than (the start of) an id.
MIN_PHONE_DIGITS = 7

_PHONE_CHARS = re.compile(r"[0-9+().\-/\s]+")
_IDENTITY_TABLES = ("identity_records", "identity_crosswalk")
RESULT_COLUMNS = ["customer_id", "name", "customer_type", "region", "city", "industry",
                  "signup_date", "matched"]


@dataclasses.dataclass(frozen=True)
class Query:
    """A search query as read: ``kind`` is ``email``, ``phone`` or ``text`` (an id, a name, a
    city, a region or an industry); ``key`` is the standardised form used for matching
    (``None`` when nothing is left, e.g. an unparseable phone)."""

    raw: str
    kind: str
    key: str | None


def read_query(q: str, *, phone_region: str = "GB") -> Query:
    """What kind of query ``q`` is and its standardised key.

    Examples
    --------
    >>> read_query("  Ann.Smith@Example.COM ")
    Query(raw='Ann.Smith@Example.COM', kind='email', key='ann.smith@example.com')
    >>> read_query("020 7946 0018").key
    '+442079460018'
    >>> read_query("José  O'Brien")
    Query(raw="José  O'Brien", kind='text', key='jose o brien')
    >>> read_query("C000123").kind
    'text'
    """
    raw = (q or "")[:MAX_QUERY_CHARS].strip()
    if "@" in raw:
        email = standardise_email(pd.Series([raw])).iloc[0]
        # an unfinished address ("ann.smith@") still matches as a prefix
        key = email if isinstance(email, str) else raw.lower()
        return Query(raw, "email", key or None)
    digits = sum(ch.isdigit() for ch in raw)
    if digits >= MIN_PHONE_DIGITS and _PHONE_CHARS.fullmatch(raw):
        phone = standardise_phone(pd.Series([raw]), phone_region).iloc[0]
        return Query(raw, "phone", phone if isinstance(phone, str) else None)
    name = standardise_name(pd.Series([raw])).iloc[0]
    return Query(raw, "text", name if isinstance(name, str) else None)


def _tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables").fetchall()}


def _identity_hits(con: duckdb.DuckDBPyConnection, query: Query, tables: set[str]) -> str | None:
    """SQL (with ``$key``, ``$first``, ``$last``) of ``(customer_id, rank, matched)`` rows from
    the source records, or ``None`` when there is nothing to look for."""
    if query.key is None or not set(_IDENTITY_TABLES) <= tables:
        return None
    if query.kind == "email":
        cond, rank, what = ("starts_with(r.std_email, $key)",
                            "CASE WHEN r.std_email = $key THEN 0 ELSE 2 END", "'email ' || r.email")
    elif query.kind == "phone":
        cond, rank, what = "r.std_phone = $key", "0", "'phone ' || r.phone"
    else:
        full = "concat_ws(' ', r.std_given_name, r.std_surname)"
        cond = (f"starts_with({full}, $key) OR starts_with(r.std_surname, $key) "
                "OR starts_with(r.std_company_name, $key) "
                "OR (starts_with(r.std_given_name, $first) AND starts_with(r.std_surname, $last))"
                " OR (starts_with(r.std_surname, $first) AND starts_with(r.std_given_name, $last))")
        # a source system's own record id (what a call-centre agent has on screen) is exact
        cond += " OR r.source_record_id = $raw OR r.record_key = $raw"
        rank = ("CASE WHEN r.source_record_id = $raw OR r.record_key = $raw THEN 0 "
                f"WHEN {full} = $key OR r.std_company_name = $key THEN 1 "
                "WHEN r.std_surname = $key THEN 2 ELSE 3 END")
        what = ("CASE WHEN r.source_record_id = $raw OR r.record_key = $raw THEN 'record id' "
                "WHEN starts_with(r.std_company_name, $key) THEN 'company ' || r.company_name "
                "ELSE 'name ' || concat_ws(' ', r.given_name, r.surname) END")
    return f"""
        SELECT x.customer_id, {rank} AS rank,
               {what} || ' in ' || r.source_system || ' record ' || r.source_record_id AS matched
        FROM identity_records r JOIN identity_crosswalk x USING (record_key)
        WHERE {cond}"""


def search(
    con: duckdb.DuckDBPyConnection, q: str, *, phone_region: str = "GB",
    limit: int = SEARCH_LIMIT,
) -> pd.DataFrame:
    """Customers matching ``q``, best first: :data:`RESULT_COLUMNS`, at most ``limit`` rows.

    Ranks: 0 the exact id, an alias of it, a source record's id, an exact email or phone;
    1 an exact full name;
    2 an exact surname or an email prefix; 3 a name prefix; 4 an id prefix; 5 a city, region
    or industry equal to the query. ``matched`` says what matched (and in which source record).
    """
    query = read_query(q, phone_region=phone_region)
    columns = RESULT_COLUMNS
    if not query.raw:
        return pd.DataFrame(columns=columns)
    tables = _tables(con)
    parts = []
    if query.kind == "text":
        parts.append("""
            SELECT customer_id, CASE WHEN lower(customer_id) = lower($raw) THEN 0 ELSE 4 END
                   AS rank, 'customer id' AS matched
            FROM customers WHERE starts_with(lower(customer_id), lower($raw))
            UNION ALL
            SELECT customer_id, 5, 'city, region or industry' FROM customers
            WHERE lower(city) = lower($raw) OR lower(region) = lower($raw)
               OR lower(coalesce(industry, '')) = lower($raw)
               OR lower(replace(coalesce(industry, ''), '_', ' ')) = lower($raw)""")
        if "identity_crosswalk" in tables:
            parts.append("""
            SELECT DISTINCT customer_id, 0, 'customer id' FROM identity_crosswalk
            WHERE lower(customer_id) = lower($raw)""")
        if "identity_aliases" in tables:
            parts.append("""
            SELECT customer_id, 0, 'merged id ' || alias_id FROM identity_aliases
            WHERE lower(alias_id) = lower($raw)""")
    hits = _identity_hits(con, query, tables)
    if hits:
        parts.append(hits)
    if not parts:
        return pd.DataFrame(columns=columns)
    tokens = (query.key or "").split(" ")
    params = {"raw": query.raw, "key": query.key, "first": tokens[0], "last": tokens[-1],
              "n": int(limit)}
    used = {p for p in params if f"${p}" in " ".join(parts)} | {"n"}
    golden = "identity_golden" in tables
    name = ("coalesce(g.company_name, nullif(concat_ws(' ', g.given_name, g.surname), ''))"
            if golden else "NULL")
    sql = f"""
        WITH hits AS ({' UNION ALL '.join(parts)}),
        best AS (
          SELECT customer_id, min(rank) AS rank, arg_min(matched, rank) AS matched
          FROM hits GROUP BY customer_id ORDER BY rank, customer_id LIMIT $n
        )
        SELECT b.customer_id, {name} AS name, c.customer_type, c.region, c.city, c.industry,
               c.signup_date, b.matched
        FROM best b LEFT JOIN customers c USING (customer_id)
        {'LEFT JOIN identity_golden g USING (customer_id)' if golden else ''}
        ORDER BY b.rank, b.customer_id"""
    return con.execute(sql, {k: v for k, v in params.items() if k in used}).df()[columns]
