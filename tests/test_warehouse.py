"""The warehouse file: location rules, creation, clear errors, bookkeeping tables."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from customer360.data.contracts import CONTRACTS
from customer360.data.warehouse import (
    connect,
    get_meta,
    insert_frame,
    registered,
    require_tables,
    resolve_db_path,
    set_meta,
    table_counts,
)
from customer360.errors import WarehouseError


def test_explicit_path_beats_env(tmp_path, monkeypatch):
    monkeypatch.setenv("CUSTOMER360_DB", str(tmp_path / "env.duckdb"))
    assert resolve_db_path(tmp_path / "flag.duckdb") == tmp_path / "flag.duckdb"
    assert resolve_db_path() == tmp_path / "env.duckdb"
    monkeypatch.delenv("CUSTOMER360_DB")
    assert str(resolve_db_path()) == "data/customer360.duckdb"


def test_missing_file_is_a_clear_error_not_an_empty_warehouse(tmp_path):
    missing = tmp_path / "nope" / "typo.duckdb"
    with pytest.raises(WarehouseError, match="does not exist.*customer360 generate"):
        connect(missing)
    assert not missing.exists()


def test_create_builds_every_contract_table_with_its_columns(tmp_path):
    with connect(tmp_path / "w.duckdb", create=True) as con:
        for name, contract in CONTRACTS.items():
            cols = [r[0] for r in con.execute(f"DESCRIBE {name}").fetchall()]
            assert cols == contract.column_names
        assert set(table_counts(con)) == {*CONTRACTS, "quarantine"}
        assert all(v == 0 for v in table_counts(con).values())


def test_primary_key_and_not_null_are_enforced_by_the_schema(tmp_path):
    with connect(tmp_path / "w.duckdb", create=True) as con:
        con.execute(
            "INSERT INTO offers VALUES ('O1', 'card', 'home', 'sales', 10.0, 'email', 'A|B')"
        )
        with pytest.raises(duckdb.ConstraintException):
            con.execute(
                "INSERT INTO offers VALUES ('O1', 'card', 'home', 'sales', 10.0, 'email', 'A')"
            )
        with pytest.raises(duckdb.ConstraintException):
            con.execute(
                "INSERT INTO offers VALUES ('O2', NULL, 'home', 'sales', 10.0, 'email', 'A')"
            )


def test_meta_roundtrip_and_require_tables(tmp_path):
    with connect(tmp_path / "w.duckdb", create=True) as con:
        assert get_meta(con, "today") is None
        set_meta(con, "today", "2026-06-30")
        set_meta(con, "today", "2026-07-01")
        assert get_meta(con, "today") == "2026-07-01"
        require_tables(con, "customers", "transactions")
        with pytest.raises(WarehouseError, match="feature_snapshots"):
            require_tables(con, "customers", "feature_snapshots")


def test_insert_frame_computes_columns_and_never_leaves_the_frame_registered(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.execute("CREATE TABLE t (id VARCHAR, x DOUBLE)")
    insert_frame(con, "t", pd.DataFrame({"n": [1, 2]}), "printf('C%02d', n), n * 1.5")
    assert con.execute("SELECT * FROM t ORDER BY id").fetchall() == [("C01", 1.5), ("C02", 3.0)]
    with pytest.raises(duckdb.Error):
        with registered(con, pd.DataFrame({"n": [3]})) as view:
            con.execute(f"INSERT INTO t SELECT n FROM {view}")  # wrong column count
    with pytest.raises(duckdb.CatalogException):
        con.execute(f"SELECT * FROM {view}")


def test_contract_ddl_with_and_without_the_primary_key():
    contract = CONTRACTS["customers"]
    con = duckdb.connect()
    con.execute(contract.ddl("keyed"))
    con.execute(contract.ddl("bulk", primary_key=False))
    assert "PRIMARY KEY" not in contract.ddl(primary_key=False)
    key = contract.primary_key
    pk = con.execute(
        "SELECT count(*) FROM duckdb_constraints() "
        "WHERE table_name = ? AND constraint_type = 'PRIMARY KEY'", ["keyed"]
    ).fetchone()[0]
    assert pk == 1 and key in contract.ddl()
    no_pk = con.execute(
        "SELECT count(*) FROM duckdb_constraints() "
        "WHERE table_name = ? AND constraint_type = 'PRIMARY KEY'", ["bulk"]
    ).fetchone()[0]
    assert no_pk == 0
    # NOT NULL columns stay NOT NULL without the key
    nullable = dict(con.execute(
        "SELECT column_name, is_nullable FROM information_schema.columns WHERE table_name = 'bulk'"
    ).fetchall())
    assert all(nullable[c.name] == ("YES" if c.nullable else "NO") for c in contract.columns)



def test_cluster_by_customer_keeps_rows_and_key_and_lets_rfm_use_its_run_scan(
    small_warehouse, caplog
):
    from typer.testing import CliRunner

    from customer360.cli import app
    from customer360.data.warehouse import cluster_by_customer
    from customer360.features.rfm import rfm_summary

    kw = dict(customer_col="customer_id", date_col="ts", amount_col="amount",
              calibration_end="2026-03-31")
    runs_sql = ("SELECT count(*) FILTER (new) FROM (SELECT customer_id IS DISTINCT FROM "
                "lag(customer_id) OVER (ORDER BY rowid) AS new FROM transactions)")
    with connect(small_warehouse) as con:
        # scatter the rows, as many appended files would
        con.execute("CREATE TEMP TABLE scattered AS SELECT * FROM transactions "
                    "ORDER BY hash(transaction_id)")
        con.execute("DELETE FROM transactions")
        con.execute("INSERT INTO transactions SELECT * FROM scattered")
        before = con.execute("SELECT * FROM transactions ORDER BY transaction_id").df()
        customers = before["customer_id"].nunique()
        assert con.execute(runs_sql).fetchone()[0] > 0.5 * len(before)
        with caplog.at_level("DEBUG", logger="customer360.features.rfm"):
            scattered = rfm_summary(con, "transactions", **kw)
        assert "SQL plan" in caplog.text

    result = CliRunner().invoke(app, ["cluster", "--db", str(small_warehouse)])
    assert result.exit_code == 0, result.output
    assert f"{len(before):,} rows" in result.output

    with connect(small_warehouse) as con:
        after = con.execute("SELECT * FROM transactions ORDER BY transaction_id").df()
        pd.testing.assert_frame_equal(after, before)
        assert con.execute(runs_sql).fetchone()[0] == customers
        assert {r[0] for r in con.execute("SHOW TABLES").fetchall()} >= {"transactions"}
        assert not [r for r in con.execute("SHOW TABLES").fetchall() if "clustered" in r[0]]
        with pytest.raises(duckdb.ConstraintException):
            con.execute("INSERT INTO transactions SELECT * FROM transactions LIMIT 1")
        caplog.clear()
        with caplog.at_level("DEBUG", logger="customer360.features.rfm"):
            clustered = rfm_summary(con, "transactions", **kw)
        assert "run scan" in caplog.text
        pd.testing.assert_frame_equal(clustered, scattered, check_exact=False, rtol=1e-12)
        # clustering twice changes nothing
        assert cluster_by_customer(con) == len(before)
        with pytest.raises(WarehouseError, match="no customer_id|customer_id column"):
            cluster_by_customer(con, "offers")


def test_transaction_commits_the_block_or_rolls_all_of_it_back(tmp_path):
    from customer360.data.warehouse import transaction

    with connect(tmp_path / "w.duckdb", create=True) as con:
        con.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
        with transaction(con):
            con.execute("INSERT INTO t VALUES (1)")
            con.execute("INSERT INTO t VALUES (2)")
        with pytest.raises(duckdb.ConstraintException):
            with transaction(con):
                con.execute("INSERT INTO t VALUES (3)")
                con.execute("INSERT INTO t VALUES (1)")  # duplicate key: the 3 goes too
        assert con.execute("SELECT list(x ORDER BY x) FROM t").fetchall()[0][0] == [1, 2]
        # the connection is usable again: no transaction was left open
        with transaction(con):
            con.execute("INSERT INTO t VALUES (4)")
        assert con.execute("SELECT count(*) FROM t").fetchall()[0][0] == 3
