"""Search of the web app: a customer by id, name, email or phone.

The query is read once (:func:`read_query`): what kind of thing it is and its standardised form,
made by the same standardisers identity resolution applies to source records
(:mod:`customer360.identity.standardise`), so ``" Ann.Smith@Example.COM "`` and
``"020 7946 0018"`` compare equal to what was stored. Emails, phones and names are found among
the source records (``identity_records``) and mapped to the unified customer through
``identity_crosswalk``: any source record's value finds its customer, and the result says
which record matched. Customer ids (and merged ids kept as aliases), cities, regions and
industries are found in ``customers``.

With a search index (:func:`build_search_index`: one table ``search_keys`` of every searchable
key, sorted, so that a prefix is a range that DuckDB's zone maps narrow to one row group),
a query costs a few milliseconds at a million customers; without one, or when the index is
older than the tables it was built from, the same matches are found by scanning (fine for
small warehouses). Nothing is matched with ``LIKE '%...%'``, and user text never enters SQL
except as a bound parameter.
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


INDEX_TABLE = "search_keys"
INDEX_META = "search_keys_meta"
# The largest code point: ``key < prefix || chr(MAX_CODE_POINT)`` closes a prefix range.
MAX_CODE_POINT = 0x10FFFF


def _fold_sql(column: str) -> str:
    """SQL of :func:`~customer360.identity.standardise.standardise_name`'s folding for ASCII
    text (ids, cities): lower-case, accents stripped, runs of other characters to one blank."""
    return (f"nullif(trim(regexp_replace(strip_accents(lower({column})), '[^0-9a-z]+', ' ', "
            "'g')), '')")


def _source_counts(con: duckdb.DuckDBPyConnection, tables: set[str]) -> list[int]:
    return [con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] if t in tables else -1
            for t in ("customers", "identity_crosswalk", "identity_aliases")]


def build_search_index(con: duckdb.DuckDBPyConnection) -> int:
    """(Re)build the ``search_keys`` table from ``customers`` and the identity tables; returns
    its number of keys. Run after ingest or identity resolution (``customer360 identity run``
    and ``customer360 score`` do); a stale index is ignored, never wrong.

    Each key row: ``key`` (standardised), ``customer_id``, ``matched`` (what to show),
    ``exact_rank`` (rank when the query equals the key) and ``prefix_rank`` (rank when the
    query is only its beginning; NULL = exact matches only).
    """
    tables = _tables(con)
    parts = [f"""SELECT {_fold_sql('customer_id')} AS key, customer_id, 'customer id' AS matched,
                 0 AS exact_rank, 4 AS prefix_rank FROM customers"""]
    for column in ("city", "region", "industry"):
        parts.append(f"""SELECT {_fold_sql(column)}, customer_id, '{column}', 5, NULL
                         FROM customers""")
    if set(_IDENTITY_TABLES) <= tables:
        src = ("FROM identity_records r JOIN identity_crosswalk x USING (record_key)")
        where = "' in ' || r.source_system || ' record ' || r.source_record_id"
        parts += [
            f"SELECT DISTINCT {_fold_sql('customer_id')}, customer_id, 'customer id', 0, 4 "
            "FROM identity_crosswalk",
            f"SELECT r.std_email, x.customer_id, 'email ' || r.email || {where}, 0, 2 {src}",
            f"SELECT r.std_phone, x.customer_id, 'phone ' || r.phone || {where}, 0, NULL {src}",
            "SELECT concat_ws(' ', r.std_given_name, r.std_surname), x.customer_id, "
            f"'name ' || concat_ws(' ', r.given_name, r.surname) || {where}, 1, 3 {src}",
            "SELECT concat_ws(' ', r.std_surname, r.std_given_name), x.customer_id, "
            f"'name ' || concat_ws(' ', r.given_name, r.surname) || {where}, 1, 3 {src}",
            f"SELECT r.std_given_name, x.customer_id, 'name ' || concat_ws(' ', r.given_name, "
            f"r.surname) || {where}, 2, 3 {src}",
            f"SELECT r.std_company_name, x.customer_id, 'company ' || r.company_name || {where},"
            f" 1, 3 {src}",
            f"SELECT {_fold_sql('r.source_record_id')}, x.customer_id, 'record id' || {where}, "
            f"0, NULL {src}",
        ]
    if "identity_aliases" in tables:
        parts.append(f"SELECT {_fold_sql('alias_id')}, customer_id, 'merged id ' || alias_id, "
                     "0, NULL FROM identity_aliases")
    counts = _source_counts(con, tables)
    con.execute(f"""CREATE OR REPLACE TABLE {INDEX_TABLE} AS
        SELECT * FROM ({' UNION ALL '.join(parts)}) WHERE key IS NOT NULL ORDER BY key""")
    con.execute(f"""CREATE OR REPLACE TABLE {INDEX_META} AS SELECT now() AS built_at,
        {counts[0]}::BIGINT AS customers, {counts[1]}::BIGINT AS crosswalk,
        {counts[2]}::BIGINT AS aliases""")
    return con.execute(f"SELECT count(*) FROM {INDEX_TABLE}").fetchall()[0][0]


def _index_is_fresh(con: duckdb.DuckDBPyConnection, tables: set[str]) -> bool:
    if not {INDEX_TABLE, INDEX_META} <= tables:
        return False
    meta = con.execute(f"SELECT customers, crosswalk, aliases FROM {INDEX_META}").fetchall()
    return bool(meta) and list(meta[0]) == _source_counts(con, tables)


def _indexed(con: duckdb.DuckDBPyConnection, query: Query, limit: int) -> pd.DataFrame:
    """Matches from the sorted ``search_keys``: exact keys, and prefixes where allowed."""
    key = query.key  # names and ids are folded alike on both sides (see _fold_sql)
    if key is None:
        return pd.DataFrame(columns=["customer_id", "rank", "matched"])
    exact_only = query.kind == "phone"
    return con.execute(f"""
        SELECT customer_id, min(rank) AS rank,
               first(matched ORDER BY rank, matched) AS matched FROM (
          SELECT customer_id, matched,
                 CASE WHEN key = $key THEN exact_rank ELSE prefix_rank END AS rank
          FROM {INDEX_TABLE} WHERE key >= $key AND key < $key || chr({MAX_CODE_POINT})
        ) WHERE rank IS NOT NULL {'AND rank = 0' if exact_only else ''}
        GROUP BY customer_id ORDER BY rank, customer_id LIMIT $n""",
        {"key": key, "n": int(limit)}).df()


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
    if _index_is_fresh(con, tables):
        return _with_attributes(con, _indexed(con, query, limit), tables)[columns]
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
    sql = f"""
        SELECT customer_id, min(rank) AS rank, first(matched ORDER BY rank, matched) AS matched
        FROM ({' UNION ALL '.join(parts)}) GROUP BY customer_id
        ORDER BY rank, customer_id LIMIT $n"""
    best = con.execute(sql, {k: v for k, v in params.items() if k in used}).df()
    return _with_attributes(con, best, tables)[columns]


def _with_attributes(
    con: duckdb.DuckDBPyConnection, best: pd.DataFrame, tables: set[str]
) -> pd.DataFrame:
    """The ranked ``(customer_id, rank, matched)`` rows with the name (golden record) and the
    customer's master data, in rank order."""
    if best.empty:
        return pd.DataFrame(columns=RESULT_COLUMNS)
    ids = best["customer_id"].tolist()
    attributes = con.execute("""
        SELECT customer_id, customer_type, region, city, industry, signup_date FROM customers
        WHERE customer_id IN (SELECT unnest($ids))""", {"ids": ids}).df()
    out = best.merge(attributes, on="customer_id", how="left")
    if "identity_golden" in tables:
        names = con.execute("""
            SELECT customer_id,
                   coalesce(company_name, nullif(concat_ws(' ', given_name, surname), '')) AS name
            FROM identity_golden WHERE customer_id IN (SELECT unnest($ids))""",
            {"ids": ids}).df()
        out = out.merge(names, on="customer_id", how="left")
    else:
        out["name"] = None
    return out
