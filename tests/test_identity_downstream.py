"""Issue 14 item 6: downstream on the unified id (re-keyed ingest, customers rows, the profile)."""

from __future__ import annotations

import pandas as pd
import pytest

from customer360.data.synthetic_identity import generate_source_records
from customer360.errors import IngestError

TXN_HEADER = ("transaction_id,customer_id,ts,amount,margin,quantity,category,channel,discount,"
              "is_return,referrer_id,cost_to_serve\n")


def _txn(tid: str, customer: str, referrer: str = "") -> str:
    return f"{tid},{customer},2026-01-05 10:00:00,20.0,5.0,1,home,web,0,false,{referrer},1.5\n"


@pytest.fixture(scope="module")
def unified(tmp_path_factory):
    """A warehouse whose customers come from identity alone: CRM is the master system, two
    customers merged by a steward's accept (so one id is an alias)."""
    from customer360.data.warehouse import connect, create_schema, insert_frame
    from customer360.identity.store import record_decision, resolve
    from customer360.identity.unify import load_identity_config

    config = load_identity_config().model_copy(update={"master_system": "crm"})
    records, truth = generate_source_records(120, seed=3)
    db = tmp_path_factory.mktemp("idd") / "w.duckdb"
    con = connect(db, create=True)
    create_schema(con)
    insert_frame(con, "source_records", records)
    first = resolve(con, config=config, run_id="r1")
    walk = con.execute("SELECT * FROM identity_crosswalk").df()
    # Two single-record webshop customers, merged by a steward: the later id becomes an alias.
    singles = walk[(walk["cluster_size"] == 1) & (walk["source_system"] == "webshop")]
    a, b = singles.sort_values("record_key").iloc[:2].itertuples()
    record_decision(con, a.record_key, b.record_key, "accept", steward="ann")
    second = resolve(con, config=config, run_id="r2")
    yield con, config, first, second, walk, (a, b), tmp_path_factory.mktemp("idd_files")
    con.close()


def test_unified_ids_adopt_the_master_system_and_every_customer_gets_a_row(unified):
    con, _, first, second, walk, _, _ = unified
    crm = walk[walk["source_system"] == "crm"]
    # A cluster holding a CRM record carries a CRM id (the master's), others a minted U-id.
    has_crm = walk.groupby("customer_id")["source_system"].apply(lambda s: "crm" in set(s))
    ids = pd.Series(has_crm.index, index=has_crm.index)
    assert ids[has_crm].isin(set(crm["source_record_id"])).all()
    assert ids[~has_crm].str.match(r"^U[0-9A-F]{12}$").all()
    assert first["customers_created"] == walk["customer_id"].nunique()
    customers = con.execute("SELECT * FROM customers").df().set_index("customer_id")
    assert set(customers.index) == set(walk["customer_id"])
    golden = con.execute("SELECT customer_id, company_name, city FROM identity_golden").df()
    golden = golden.set_index("customer_id")
    assert (customers.loc[golden.index, "customer_type"]
            == golden["company_name"].notna().map({True: "B2B", False: "B2C"})).all()
    # (the merged customer's golden city may have moved since its row was created)
    same_city = customers.loc[golden.index, "city"] == golden["city"].fillna("unknown")
    assert same_city.sum() >= len(golden) - 1
    # The rerun with the merge creates no customer: the survivor already has its row.
    assert second["merges"] == 1 and second["customers_created"] == 0


def test_reingest_maps_known_ids_and_aliases_and_quarantines_unknown_ones(unified):
    from customer360.data.ingest import ingest_file, read_quarantine

    con, _, _, _, walk, (a, b), files = unified
    survivor = con.execute("SELECT customer_id FROM identity_crosswalk WHERE record_key = ?",
                           [a.record_key]).fetchone()[0]
    alias = {a.customer_id, b.customer_id} - {survivor}
    assert len(alias) == 1 and con.execute(
        "SELECT customer_id FROM identity_aliases WHERE alias_id = ?", list(alias)
    ).fetchone()[0] == survivor
    other = walk[(walk["source_system"] == "webshop") & (walk["cluster_size"] > 1)].iloc[0]
    path = files / "webshop_orders.csv"
    path.write_text(TXN_HEADER + _txn("W1", a.source_record_id)
                    + _txn("W2", b.source_record_id)
                    + _txn("W3", other.source_record_id, referrer=a.source_record_id)
                    + _txn("W4", "WEB9999999") + _txn("W5", "CRM-0000001"))
    report = ingest_file(con, "transactions", path, source_system="webshop")
    assert (report.rows_read, report.rows_loaded, report.rows_quarantined) == (5, 3, 2)
    assert report.reasons == {"customer_id: unknown record id of source system webshop": 2}
    loaded = dict(con.execute("SELECT transaction_id, customer_id FROM transactions "
                              "WHERE transaction_id LIKE 'W%'").fetchall())
    # Both merged records land on the survivor; the referrer is re-keyed too.
    assert loaded == {"W1": survivor, "W2": survivor, "W3": other.customer_id}
    assert con.execute("SELECT referrer_id FROM transactions WHERE transaction_id = 'W3'"
                       ).fetchone()[0] == survivor
    rows, total = read_quarantine(con, table="transactions", source_file=path)
    text = " ".join(r["reason"] for r in rows)
    assert total == 2
    assert "'WEB9999999' is not a known record id of source system webshop" in text
    assert "'CRM-0000001' is not a known record id of source system webshop" in text
    assert "customer360 identity run" in text
    # The same file again: skipped, nothing added.
    again = ingest_file(con, "transactions", path, source_system="webshop")
    assert again.skipped_duplicate_file and again.rows_loaded == 0


def test_reingest_refuses_unknown_systems_and_tables_without_customers(unified, tmp_path):
    from customer360.data.ingest import ingest_file
    from customer360.data.warehouse import connect, create_schema

    con, *_ = unified
    path = tmp_path / "orders.csv"
    path.write_text(TXN_HEADER + _txn("X1", "WEB0000001"))
    with pytest.raises(IngestError, match=r"no record of source system 'shop'.*known systems: "
                                          r"b2b, callcentre, crm, pos, webshop"):
        ingest_file(con, "transactions", path, source_system="shop")
    offers = tmp_path / "offers.csv"
    offers.write_text("offer_id,product,category,kind,margin,channel,eligible_segments\n"
                      "O9,Card,services,sales,1,email,A\n")
    with pytest.raises(IngestError, match="no column referencing customers.customer_id"):
        ingest_file(con, "offers", offers, source_system="webshop")
    fresh = connect(tmp_path / "fresh.duckdb", create=True)
    try:
        create_schema(fresh)
        with pytest.raises(IngestError, match="no identity crosswalk yet"):
            ingest_file(fresh, "transactions", path, source_system="webshop")
        assert fresh.execute("SELECT count(*) FROM transactions").fetchone()[0] == 0
    finally:
        fresh.close()


def test_ingest_cli_takes_source(unified, monkeypatch, capsys):
    from test_identity import run_main

    con, _, _, _, walk, _, files = unified
    known = walk[walk["source_system"] == "pos"].iloc[0]
    path = files / "pos_orders.csv"
    path.write_text(TXN_HEADER + _txn("P1", known.source_record_id) + _txn("P2", "LOY404"))
    db = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = "
                     "current_database()").fetchall()[0][0]
    con.close()  # the CLI opens the file itself (the last test of this module that uses it)
    code, text = run_main(monkeypatch, capsys, "ingest", "transactions", str(path), "--source",
                          "pos", "--db", db)
    text = " ".join(text.split())
    assert code == 0 and "read 2 = loaded 1 + quarantined 1" in text, text
    assert "unknown record id of source system pos" in text
    code, text = run_main(monkeypatch, capsys, "ingest", "offers", str(path), "--source", "pos",
                          "--db", db)
    assert code == 2 and "nothing to re-key" in " ".join(text.split())


def test_assign_ids_adopts_master_ids_and_keeps_the_others_as_aliases():
    import numpy as np

    from customer360.identity.store import assign_ids

    previous = pd.DataFrame({"record_key": ["web:1"], "customer_id": ["U1"],
                             "first_seen_run": ["r1"]})
    keys = pd.Series(["crm:C2", "crm:C1", "pos:9", "web:1", "crm:C7", "pos:8"])
    master = pd.Series(["C2", "C1", None, None, "C7", None])
    # {C2, C1, pos:9} is new: the smallest master id wins, C2 becomes its alias; {web:1, C7}
    # keeps its old id U1 and C7 is an alias of it; pos:8 alone mints a U-id.
    ids, aliases, splits = assign_ids(keys, np.array([0, 0, 0, 1, 1, 2]), previous, "r2", master)
    assert ids.tolist()[:5] == ["C1", "C1", "C1", "U1", "U1"] and ids[5].startswith("U")
    assert sorted(map(tuple, aliases[["alias_id", "customer_id"]].to_numpy())) == [
        ("C2", "C1"), ("C7", "U1")]
    assert splits.empty


def test_customers_owned_by_identity_get_rows_for_new_customers_on_later_runs(tmp_path):
    """No master system and an empty customers table: identity is the only source of customers,
    so a later run's new unified customers need their rows too (not only the first run's)."""
    from customer360.data.warehouse import connect, create_schema, insert_frame
    from customer360.identity.store import resolve
    from customer360.identity.unify import load_identity_config

    config = load_identity_config().model_copy(update={"master_system": None})
    records, truth = generate_source_records(60, seed=3)
    early = truth["entity_id"].isin(set(truth["entity_id"].drop_duplicates().iloc[:40]))
    con = connect(tmp_path / "w.duckdb", create=True)
    try:
        create_schema(con)
        insert_frame(con, "source_records", records[early.to_numpy()])
        first = resolve(con, config=config, run_id="r1")
        insert_frame(con, "source_records", records[~early.to_numpy()])
        second = resolve(con, config=config, run_id="r2")
        third = resolve(con, config=config, run_id="r3")
        unified = {r[0] for r in con.execute(
            "SELECT DISTINCT customer_id FROM identity_crosswalk").fetchall()}
        rows = [r[0] for r in con.execute("SELECT customer_id FROM customers").fetchall()]
        assert first["customers_created"] > 0 and second["customers_created"] > 0
        assert third["customers_created"] == 0  # a rerun creates nothing twice
        assert set(rows) == unified and len(rows) == len(set(rows))
    finally:
        con.close()


def test_customers_from_elsewhere_without_a_master_system_are_left_alone(tmp_path):
    from customer360.data.warehouse import connect, create_schema, insert_frame
    from customer360.identity.store import resolve
    from customer360.identity.unify import load_identity_config

    config = load_identity_config().model_copy(update={"master_system": None})
    records, _ = generate_source_records(60, seed=3)
    con = connect(tmp_path / "w.duckdb", create=True)
    try:
        create_schema(con)
        con.execute("INSERT INTO customers (customer_id, customer_type, region, city, "
                    "acquisition_channel, signup_date) VALUES ('C0000001', 'B2C', 'north', "
                    "'Leeds', 'direct', DATE '2024-01-02')")
        insert_frame(con, "source_records", records)
        assert resolve(con, config=config, run_id="r1")["customers_created"] == 0
        assert con.execute("SELECT count(*) FROM customers").fetchone()[0] == 1
    finally:
        con.close()
