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


INDEX_TABLE = "search_keys"
INDEX_META = "search_keys_meta"
# The largest code point: ``key < prefix || chr(MAX_CODE_POINT)`` closes a prefix range.
MAX_CODE_POINT = 0x10FFFF


_FOLD_FUNCTION = "customer360_fold_name"


def _fold_arrow(values):  # pyarrow StringArray in, out: standardise_name, vectorised
    import pyarrow as pa

    folded = standardise_name(pd.Series(values.to_pandas(), dtype="string"))
    return pa.array(folded.astype(object).where(folded.notna(), None).tolist(), type=pa.string())


def _register_fold(con: duckdb.DuckDBPyConnection) -> None:
    """Make :func:`_fold_sql`'s Python half (``standardise_name`` itself) callable on ``con``."""
    try:
        con.create_function(_FOLD_FUNCTION, _fold_arrow, ["VARCHAR"], "VARCHAR", type="arrow")
    except duckdb.NotImplementedException:  # already registered on this connection
        pass


def _fold_sql(column: str) -> str:
    """SQL of :func:`~customer360.identity.standardise.standardise_name` (how queries are
    folded) for ids, cities, regions and industries: ASCII text is folded in SQL (lower-case,
    runs of other characters to one blank), the rest by ``standardise_name`` itself, so
    ``Łódź`` and ``Straße`` are keyed as the query ``lodz`` / ``strasse`` is read. Needs
    :func:`_register_fold` on the connection."""
    ascii_fold = f"nullif(trim(regexp_replace(lower({column}), '[^0-9a-z]+', ' ', 'g')), '')"
    return (f"CASE WHEN regexp_matches({column}, '[^\\x00-\\x7F]') "
            f"THEN {_FOLD_FUNCTION}({column}) ELSE {ascii_fold} END")


def _key_rows(tables: set[str], kind: str | None = None) -> str | None:
    """SQL of every searchable key: ``(key, customer_id, matched, exact_rank, prefix_rank)``.

    The one definition of what is searchable and how it ranks: :func:`build_search_index`
    stores it sorted, and :func:`search` reads it directly when there is no fresh index.
    ``exact_rank`` applies when the query equals the key, ``prefix_rank`` when the query is
    only its beginning (NULL = exact matches only). With ``kind`` ``email`` or ``phone``, only
    the keys such a query can reach (every other key is folded to ``[0-9a-z ]``, so has no
    ``@`` and no ``+``): the scan skips the rest; ``None`` when there are none.
    """
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
            f"SELECT r.std_email AS key, x.customer_id, 'email ' || r.email || {where} AS matched,"
            f" 0 AS exact_rank, 2 AS prefix_rank {src}",
            f"SELECT r.std_phone AS key, x.customer_id, 'phone ' || r.phone || {where} AS matched,"
            f" 0 AS exact_rank, NULL AS prefix_rank {src}",
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
            f"SELECT {_fold_sql('r.record_key')}, x.customer_id, 'record id' || {where}, "
            f"0, NULL {src}",
        ]
    if "identity_aliases" in tables:
        parts.append(f"SELECT {_fold_sql('alias_id')}, customer_id, 'merged id ' || alias_id, "
                     "0, NULL FROM identity_aliases")
    if kind in ("email", "phone"):
        parts = [p for p in parts if p.startswith(f"SELECT r.std_{kind} AS key")]
    return " UNION ALL ".join(parts) or None


# What the freshness of the index is judged by: these tables' row counts at build time.
_COUNTED = ("customers", "identity_crosswalk", "identity_aliases")


def _counts_sql(tables: set[str]) -> str:
    return ", ".join(f"(SELECT count(*) FROM {t})" if t in tables else "-1" for t in _COUNTED)


def build_search_index(con: duckdb.DuckDBPyConnection) -> int:
    """(Re)build the ``search_keys`` table (:func:`_key_rows`, sorted by key) from
    ``customers`` and the identity tables; returns its number of keys. Run after ingest or
    identity resolution (``customer360 identity run`` and ``customer360 score`` do); an index
    whose tables' row counts changed since is ignored (see docs/architecture.md for what
    that does not catch).
    """
    tables = _tables(con)
    _register_fold(con)
    con.execute(f"""CREATE OR REPLACE TABLE {INDEX_TABLE} AS
        SELECT * FROM ({_key_rows(tables)}) WHERE key IS NOT NULL ORDER BY key""")
    con.execute(f"""CREATE OR REPLACE TABLE {INDEX_META} AS
        SELECT now() AS built_at, c[1] AS customers, c[2] AS crosswalk, c[3] AS aliases
        FROM (SELECT [{_counts_sql(tables)}]::BIGINT[] AS c)""")
    return con.execute(f"SELECT count(*) FROM {INDEX_TABLE}").fetchall()[0][0]


def _index_is_fresh(con: duckdb.DuckDBPyConnection, tables: set[str]) -> bool:
    if not {INDEX_TABLE, INDEX_META} <= tables:
        return False
    fresh = con.execute(f"""SELECT [customers, crosswalk, aliases] = [{_counts_sql(tables)}]
                            FROM {INDEX_META}""").fetchall()
    return bool(fresh) and bool(fresh[0][0])


def search(
    con: duckdb.DuckDBPyConnection, q: str, *, phone_region: str = "GB",
    limit: int = SEARCH_LIMIT,
) -> pd.DataFrame:
    """Customers matching ``q``, best first: :data:`RESULT_COLUMNS`, at most ``limit`` rows.

    Ranks: 0 the exact id, an alias of it, a source record's id, an exact email or phone;
    1 an exact full name (either order) or company; 2 an exact given name or an email prefix;
    3 a name prefix; 4 an id prefix; 5 a city, region or industry equal to the query (all
    compared folded, like names). ``matched`` says what matched (and in which source record).
    Keys are read from the search index when it is fresh, else computed by scanning.
    """
    query = read_query(q, phone_region=phone_region)
    if query.key is None:
        return pd.DataFrame(columns=RESULT_COLUMNS)
    tables = _tables(con)
    if "customers" not in tables:
        return pd.DataFrame(columns=RESULT_COLUMNS)
    if _index_is_fresh(con, tables):
        keys = INDEX_TABLE
    else:
        _register_fold(con)
        rows = _key_rows(tables, query.kind)
        if rows is None:
            return pd.DataFrame(columns=RESULT_COLUMNS)
        keys = f"({rows})"
    golden = "identity_golden" in tables
    name = ("coalesce(g.company_name, nullif(concat_ws(' ', g.given_name, g.surname), ''))"
            if golden else "NULL::VARCHAR")
    return con.execute(f"""
        WITH best AS (
          SELECT customer_id, min(rank) AS rank,
                 first(matched ORDER BY rank, matched) AS matched FROM (
            SELECT customer_id, matched,
                   CASE WHEN key = $key THEN exact_rank ELSE prefix_rank END AS rank
            FROM {keys} WHERE key >= $key AND key < $key || chr({MAX_CODE_POINT})
          ) WHERE rank IS NOT NULL {'AND rank = 0' if query.kind == 'phone' else ''}
          GROUP BY customer_id ORDER BY rank, customer_id LIMIT $n)
        SELECT b.customer_id, {name} AS name, c.customer_type, c.region, c.city, c.industry,
               c.signup_date, b.matched
        FROM best b LEFT JOIN customers c USING (customer_id)
        {'LEFT JOIN identity_golden g USING (customer_id)' if golden else ''}
        ORDER BY b.rank, b.customer_id""", {"key": query.key, "n": int(limit)}).df()
