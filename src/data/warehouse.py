"""The embedded DuckDB warehouse: where it lives, how to open it, its bookkeeping tables."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from customer360.data.contracts import CONTRACTS
from customer360.errors import WarehouseError

DEFAULT_DB_PATH = Path("data/customer360.duckdb")
DB_ENV_VAR = "CUSTOMER360_DB"

QUARANTINE_DDL = """
CREATE TABLE IF NOT EXISTS quarantine (
  table_name VARCHAR NOT NULL,
  source_file VARCHAR NOT NULL,
  row_number BIGINT NOT NULL,
  reason VARCHAR NOT NULL,
  raw_row VARCHAR,
  ingested_at TIMESTAMP NOT NULL
)
"""

INGEST_LOG_DDL = """
CREATE TABLE IF NOT EXISTS ingest_log (
  file_sha256 VARCHAR NOT NULL,
  table_name VARCHAR NOT NULL,
  source_file VARCHAR NOT NULL,
  rows_read BIGINT NOT NULL,
  rows_loaded BIGINT NOT NULL,
  rows_quarantined BIGINT NOT NULL,
  ingested_at TIMESTAMP NOT NULL,
  PRIMARY KEY (file_sha256, table_name)
)
"""

META_DDL = """
CREATE TABLE IF NOT EXISTS warehouse_meta (
  key VARCHAR PRIMARY KEY,
  value VARCHAR NOT NULL
)
"""


def resolve_db_path(path: str | Path | None = None) -> Path:
    """The warehouse file: the explicit ``path``, else ``$CUSTOMER360_DB``, else the default
    ``data/customer360.duckdb``."""
    if path is not None:
        return Path(path)
    env = os.environ.get(DB_ENV_VAR)
    return Path(env) if env else DEFAULT_DB_PATH


def connect(
    path: str | Path | None = None, *, read_only: bool = False, create: bool = False
) -> duckdb.DuckDBPyConnection:
    """Open the warehouse.

    Parameters
    ----------
    path
        Warehouse file; see :func:`resolve_db_path`.
    read_only
        Open read-only (many readers may share a file; one writer may not).
    create
        Create the file and the empty raw tables if they do not exist yet. Without it a missing
        file is an error, so a typo in a path does not silently give an empty warehouse.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> con = connect(pathlib.Path(tempfile.mkdtemp()) / "w.duckdb", create=True)
    >>> con.sql("select count(*) from customers").fetchall()[0][0]
    0
    """
    db = resolve_db_path(path)
    if not db.exists() and not create:
        raise WarehouseError(
            f"Warehouse file {db} does not exist. Run `customer360 generate --db {db}` for a "
            f"synthetic one, `customer360 ingest` to load your data, or pass --db / set "
            f"{DB_ENV_VAR} to the right file."
        )
    if create:
        db.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(db), read_only=read_only)
    except duckdb.IOException as exc:
        raise WarehouseError(
            f"Cannot open warehouse {db}: {exc}. Another process may hold it for writing; "
            "stop it or open read-only."
        ) from exc
    if create and not read_only:
        create_schema(con)
    return con


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create every raw table from its contract plus the bookkeeping tables (idempotent)."""
    for contract in CONTRACTS.values():
        con.execute(contract.ddl())
    con.execute(QUARANTINE_DDL)
    con.execute(INGEST_LOG_DDL)
    con.execute(META_DDL)


def table_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    return (
        con.execute(  # fetchall: the result is finished, so a relation can run next
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]
        ).fetchall()[0][0]
        > 0
    )


def require_tables(con: duckdb.DuckDBPyConnection, *tables: str) -> None:
    """Raise a clear error when the warehouse lacks any of ``tables``."""
    missing = [t for t in tables if not table_exists(con, t)]
    if missing:
        raise WarehouseError(
            f"The warehouse lacks table(s) {', '.join(missing)}. Generate or ingest them first "
            "(`customer360 generate` or `customer360 ingest TABLE FILE`)."
        )


def table_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Row counts of every raw table and of the quarantine."""
    names = [*CONTRACTS, "quarantine"]
    return {
        name: con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
        for name in names
        if table_exists(con, name)
    }


def get_meta(con: duckdb.DuckDBPyConnection, key: str, default: str | None = None) -> str | None:
    if not table_exists(con, "warehouse_meta"):
        return default
    row = con.execute("SELECT value FROM warehouse_meta WHERE key = ?", [key]).fetchone()
    return row[0] if row else default


def set_meta(con: duckdb.DuckDBPyConnection, key: str, value: str) -> None:
    con.execute(META_DDL)
    con.execute(
        "INSERT INTO warehouse_meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = ?",
        [key, value, value],
    )


@contextmanager
def registered(con: Any, frame: Any, name: str = "_c360_frame") -> Iterator[str]:
    """``frame`` (pandas or Arrow) visible to SQL on ``con`` as ``name`` inside the block.

    Examples
    --------
    >>> import pandas as pd
    >>> con = duckdb.connect()
    >>> with registered(con, pd.DataFrame({"x": [1, 2]})) as view:
    ...     con.execute(f"SELECT sum(x) FROM {view}").fetchall()[0][0]
    3
    """
    con.register(name, frame)
    try:
        yield name
    finally:
        con.unregister(name)


@contextmanager
def transaction(con: Any) -> Iterator[None]:
    """Run the block as one transaction: committed at the end, rolled back on any error.

    Examples
    --------
    >>> con = duckdb.connect()
    >>> con.execute("CREATE TABLE t (x INTEGER)").fetchall()
    []
    >>> try:
    ...     with transaction(con):
    ...         con.execute("INSERT INTO t VALUES (1)").fetchall()
    ...         raise ValueError("stop")
    ... except ValueError:
    ...     pass
    [(1,)]
    >>> con.execute("SELECT count(*) FROM t").fetchall()[0][0]
    0
    """
    con.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def insert_frame(con: Any, table: str, frame: Any, select: str = "*") -> None:
    """``INSERT INTO table SELECT <select> FROM frame`` (``select`` may compute columns)."""
    with registered(con, frame) as view:
        con.execute(f"INSERT INTO {table} SELECT {select} FROM {view}")


def cluster_by_customer(con: duckdb.DuckDBPyConnection, table: str = "transactions") -> int:
    """Rewrite ``table`` in customer and time order, so each customer's rows are one run.

    Appended batches spread a customer's rows over many places; after this, ``rfm_summary``
    can use its run scan (see ``customer360.features.rfm``) and range scans by customer read
    fewer row groups. Rows, columns, types and the primary key are unchanged; the rewrite is
    one transaction (all or nothing). Returns the number of rows.

    Examples
    --------
    >>> con = duckdb.connect()
    >>> create_schema(con)
    >>> cluster_by_customer(con)
    0
    """
    contract = CONTRACTS.get(table)
    if contract is None or "customer_id" not in contract.column_names:
        keyed = [name for name, c in CONTRACTS.items() if "customer_id" in c.column_names]
        raise WarehouseError(
            f"Cannot cluster {table!r} by customer: it is not a warehouse table with a "
            f"customer_id column; choose one of {', '.join(keyed)}."
        )
    require_tables(con, table)
    order = ", ".join(["customer_id", *([contract.time_column] if contract.time_column else [])])
    staging = f"{table}__clustered"
    with transaction(con):
        con.execute(contract.ddl(staging, primary_key=False))
        con.execute(f"INSERT INTO {staging} SELECT * FROM {table} ORDER BY {order}, "
                    f"{contract.primary_key}")
        rows = con.execute(f"SELECT count(*) FROM {staging}").fetchall()[0][0]
        con.execute(f"DROP TABLE {table}")
        con.execute(f"ALTER TABLE {staging} RENAME TO {table}")
        con.execute(f"ALTER TABLE {table} ADD PRIMARY KEY ({contract.primary_key})")
    return rows
