"""Issue 14: the generator's source systems with a truth table (item 7) and their contract."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from customer360.data.synthetic_identity import SOURCE_SYSTEMS, generate_source_records
from customer360.errors import IdentityError


def test_source_records_are_deterministic_duplicated_and_hold_hard_negatives():
    records, truth = generate_source_records(2_000, seed=5)
    again, _ = generate_source_records(2_000, seed=5)
    pd.testing.assert_frame_equal(records, again)
    assert set(records["source_system"]) == set(SOURCE_SYSTEMS)
    assert records["record_key"].is_unique and len(truth) == len(records)
    assert (truth["record_key"] == records["record_key"]).all()
    duplicates = 1 - truth["entity_id"].nunique() / len(truth)
    assert 0.25 < duplicates < 0.4
    keyed = records.assign(entity=truth["entity_id"])
    # Duplicates disagree: some copies of one entity have another spelling of the surname.
    spellings = keyed.assign(s=keyed["surname"].str.lower()).groupby("entity")["s"].nunique()
    assert (spellings > 1).mean() > 0.02
    # Hard negatives: different entities sharing surname, street and postcode (households),
    # and different companies whose names share their first two words (sister companies).
    home = keyed.dropna(subset=["street", "postcode"]).assign(s=lambda f: f["surname"].str.lower())
    per_home = home.groupby(["s", "street", "postcode"])["entity"].nunique()
    assert (per_home > 1).sum() >= 10
    firms = keyed.dropna(subset=["company_name"]).drop_duplicates("entity")
    stems = firms["company_name"].str.split(" ").str[:2].str.join(" ")
    assert firms.groupby(stems)["company_id"].nunique().max() >= 2
    # People have no company id, companies no date of birth.
    assert records.loc[records["company_name"].isna(), "company_id"].isna().all()
    assert records.loc[records["company_name"].notna(), "date_of_birth"].isna().all()


def test_generator_writes_source_records_that_pass_their_own_contract(tmp_path):
    from customer360.data.ingest import ingest_file
    from customer360.data.synthetic import generate_warehouse
    from customer360.data.warehouse import connect

    db = tmp_path / "w.duckdb"
    counts = generate_warehouse(db, n_customers=60, seed=2, source_records=True)
    assert counts["source_records"] == counts["truth_source_records"] >= 60
    con = connect(db)
    try:
        kinds = con.execute(
            "SELECT bool_and((r.company_name IS NOT NULL) = (c.customer_type = 'B2B')) "
            "FROM source_records r JOIN truth_source_records t USING (record_key) "
            "JOIN customers c ON c.customer_id = t.entity_id").fetchone()[0]
        assert kinds
        # The generator's rows re-ingested into a fresh warehouse: all load, none quarantined.
        path = tmp_path / "sources.csv"
        con.execute(f"COPY source_records TO '{path}' (HEADER)")
    finally:
        con.close()
    fresh = connect(tmp_path / "fresh.duckdb", create=True)
    try:
        report = ingest_file(fresh, "source_records", path)
        assert report.rows_loaded == counts["source_records"], report.reasons
        assert report.rows_quarantined == 0
    finally:
        fresh.close()


def test_ingest_standardises_source_records_at_entry_and_resolve_matches_them(
        tmp_path, monkeypatch, capsys):
    from test_identity import run_main

    from customer360.data.warehouse import connect
    from customer360.identity.store import resolve

    records, _ = generate_source_records(80, seed=5)
    path = tmp_path / "sources.csv"
    records.to_csv(path, index=False)
    db = tmp_path / "w.duckdb"
    code, text = run_main(monkeypatch, capsys, "ingest", "source_records", str(path),
                          "--db", str(db))
    assert code == 0 and f"Standardised {len(records)} new source records" in text, text
    con = connect(db)
    try:
        rows, phones = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE std_phone LIKE '+%') FROM identity_records"
        ).fetchone()
        assert rows == len(records) and phones > len(records) // 2
        first = resolve(con, run_id="r1")
        assert first["new_records"] == len(records) and first["trained"]
        assert con.execute("SELECT count(*) FROM identity_crosswalk").fetchone()[0] == rows
        assert resolve(con, run_id="r2")["new_records"] == 0
    finally:
        con.close()


def test_records_standardised_two_ways_are_refused_and_a_bad_config_loads_nothing(
        tmp_path, monkeypatch, capsys):
    from test_identity import run_main

    from customer360.data.warehouse import connect, create_schema, insert_frame
    from customer360.identity.store import standardise_new
    from customer360.identity.unify import IdentityConfig

    records, _ = generate_source_records(40, seed=6)
    db = tmp_path / "w.duckdb"
    con = connect(db, create=True)
    try:
        create_schema(con)
        insert_frame(con, "source_records", records.iloc[:30])
        assert len(standardise_new(con)) == 30
        insert_frame(con, "source_records", records.iloc[30:])
        with pytest.raises(IdentityError, match="default_phone_region.*US"):
            standardise_new(con, IdentityConfig(default_phone_region="US"))
        assert len(standardise_new(con)) == len(records) - 30  # the same settings: fine
    finally:
        con.close()
    path = tmp_path / "more.csv"
    records.iloc[:5].assign(source_record_id=lambda f: f["source_record_id"] + "x",
                            record_key=lambda f: f["record_key"] + "x").to_csv(path, index=False)
    bad = tmp_path / "identity.yaml"
    bad.write_text("match_threshold: 2\n")
    code, text = run_main(monkeypatch, capsys, "ingest", "source_records", str(path),
                          "--identity-config", str(bad), "--db", str(db))
    assert code == 2 and "match_threshold" in text, text
    con = connect(db)
    try:
        assert con.execute("SELECT count(*) FROM source_records").fetchone()[0] == len(records)
    finally:
        con.close()


@pytest.fixture(scope="module")
def resolved(tmp_path_factory):
    """A warehouse whose source records arrive in two batches, resolved after each."""
    from customer360.data.warehouse import connect, create_schema, insert_frame
    from customer360.identity.store import resolve

    records, truth = generate_source_records(300, seed=11)
    db = tmp_path_factory.mktemp("identity") / "w.duckdb"
    con = connect(db, create=True)
    create_schema(con)
    half = len(records) * 2 // 3
    insert_frame(con, "source_records", records.iloc[:half])
    first = resolve(con, run_id="r1")
    before = con.execute("SELECT record_key, customer_id FROM identity_crosswalk").df()
    insert_frame(con, "source_records", records.iloc[half:])
    second = resolve(con, run_id="r2")
    yield con, truth, first, second, before
    con.close()


def test_stable_ids_across_an_incremental_run(resolved):
    from customer360.identity.store import resolve

    con, truth, first, second, before = resolved
    assert first["trained"] and not second["trained"]
    assert second["new_records"] == len(truth) - first["records"]
    after = con.execute("SELECT record_key, customer_id FROM identity_crosswalk").df()
    kept = before.merge(after, on="record_key", suffixes=("_before", "_after"))
    moved = kept[kept["customer_id_before"] != kept["customer_id_after"]]
    # An id only changes by a documented merge: the old id is then an alias of the new one.
    aliases = con.execute("SELECT alias_id, customer_id FROM identity_aliases").df()
    assert set(moved["customer_id_before"]) <= set(aliases["alias_id"])
    assert len(after) == len(truth)
    # Quality against the truth: precision first.
    keyed = after.merge(truth, on="record_key")
    same_id = keyed.groupby("customer_id")["entity_id"].nunique()
    assert (same_id == 1).mean() > 0.9
    # Running again on the same input changes nothing.
    snapshot = con.execute("SELECT * FROM identity_crosswalk ORDER BY record_key").df()
    again = resolve(con, run_id="r3")
    assert again["new_records"] == 0 and again["records_rekeyed"] == 0
    pd.testing.assert_frame_equal(
        snapshot, con.execute("SELECT * FROM identity_crosswalk ORDER BY record_key").df())


def test_merge_keeps_an_alias_that_still_resolves():
    from customer360.identity.store import assign_ids

    previous = pd.DataFrame({"record_key": ["a", "b", "c", "d"],
                             "customer_id": ["X", "X", "Y", "Z"],
                             "first_seen_run": ["r1", "r1", "r1", "r2"]})
    keys = pd.Series(["a", "b", "c", "d", "e"])
    # a, b, c, e are one cluster now (X and Y merge), d alone keeps Z.
    ids, aliases, splits = assign_ids(keys, np.array([0, 0, 0, 1, 0]), previous, "r3")
    assert ids.tolist() == ["X", "X", "X", "Z", "X"]  # X had the most records: it survives
    assert aliases.to_dict("records") == [{"alias_id": "Y", "customer_id": "X",
                                           "merged_run": "r3"}]
    assert splits.empty
    # X's records now fall into two clusters: flagged, and X is kept whole, not re-keyed.
    ids, aliases, splits = assign_ids(keys, np.array([0, 1, 2, 3, 4]), previous, "r4")
    assert ids[:2].tolist() == ["X", "X"] and ids[4].startswith("U")
    assert splits.to_dict("records") == [{"customer_id": "X", "parts": 2, "records": 2}]


def test_review_decisions_survive_a_rerun(resolved):
    from customer360.identity.store import record_decision, resolve

    con, *_ = resolved
    queue = con.execute("SELECT * FROM identity_review").df()
    assert len(queue) >= 2, "the generator's hard negatives should leave uncertain pairs"
    weights = json.loads(queue["match_weights"].iloc[0])
    assert {"given_name", "surname", "date_of_birth"} <= set(weights)
    accept, reject = queue.iloc[0], queue.iloc[1]
    record_decision(con, accept["record_key_r"], accept["record_key_l"], "accept",
                    steward="ann")
    record_decision(con, reject["record_key_l"], reject["record_key_r"], "reject",
                    steward="ann", note="twins")
    with pytest.raises(IdentityError, match="use one of"):
        record_decision(con, accept["record_key_l"], accept["record_key_r"], "maybe",
                        steward="ann")
    for run in ("r4", "r5"):
        resolve(con, run_id=run)
        ids = dict(con.execute("SELECT record_key, customer_id FROM identity_crosswalk")
                   .fetchall())
        assert ids[accept["record_key_l"]] == ids[accept["record_key_r"]]
        left = set(con.execute("SELECT record_key_l || record_key_r FROM identity_review")
                   .df().iloc[:, 0])
        assert accept["record_key_l"] + accept["record_key_r"] not in left
        assert reject["record_key_l"] + reject["record_key_r"] not in left


def test_stored_pairs_explain_their_match_weight(resolved):
    # Per pair: the prior's weight + the per-comparison weights (term frequency included) =
    # the match weight; so the difference is one constant over every stored pair.
    con, *_ = resolved
    pairs = con.execute("SELECT record_key_l, record_key_r, match_weight, match_weights "
                        "FROM identity_pairs").df()
    assert len(pairs) > 50
    assert (pairs["record_key_l"] < pairs["record_key_r"]).all()
    parts = pairs["match_weights"].map(lambda text: sum(json.loads(text).values()))
    prior = pairs["match_weight"] - parts
    assert prior.max() - prior.min() < 1e-3 * 12
    assert {"given_name", "surname", "date_of_birth", "email", "phone"} <= set(
        json.loads(pairs["match_weights"].iloc[0]))


def test_golden_records_name_the_record_each_attribute_came_from(resolved):
    con, *_ = resolved
    golden = con.execute("SELECT * FROM identity_golden").df()
    customers = con.execute("SELECT count(DISTINCT customer_id) FROM identity_crosswalk")
    assert len(golden) == customers.fetchone()[0]
    row = golden.sort_values("source_records").iloc[-1]
    source = con.execute("SELECT surname, source_system FROM identity_records "
                         "WHERE record_key = ?", [row["surname_source"]]).fetchone()
    assert source[0] == row["surname"]
    # company_name follows source priority (crm, b2b, webshop, callcentre, pos): no customer
    # has a record with a company name in a system ranked above the one chosen.
    rank = "list_position(['crm', 'b2b', 'webshop', 'callcentre', 'pos'], {})"
    worse = con.execute(f"""
        SELECT count(*) FROM identity_golden g
        JOIN identity_crosswalk c USING (customer_id)
        JOIN identity_records r ON r.record_key = c.record_key AND r.company_name IS NOT NULL
        WHERE {rank.format('r.source_system')}
              < {rank.format("split_part(g.company_name_source, ':', 1)")}""").fetchall()
    assert golden["company_name"].notna().sum() > 10 and worse[0][0] == 0


def test_incremental_writes_equal_a_full_rewrite(resolved):
    # Later runs write only the crosswalk rows that changed and the golden records of the
    # customers they touch; the tables must equal what a full rewrite gives.
    from customer360.identity.store import _write_golden, load_identity_config

    con, truth, *_ = resolved
    golden = con.execute("SELECT * FROM identity_golden ORDER BY customer_id").df()
    crosswalk = con.execute("SELECT * FROM identity_crosswalk ORDER BY record_key").df()
    assert len(crosswalk) == len(truth) == crosswalk["record_key"].nunique()
    assert set(golden["customer_id"]) == set(crosswalk["customer_id"])
    assert (golden.set_index("customer_id")["source_records"]
            == crosswalk["customer_id"].value_counts().reindex(golden["customer_id"])).all()
    _write_golden(con, load_identity_config(), None)
    pd.testing.assert_frame_equal(
        golden, con.execute("SELECT * FROM identity_golden ORDER BY customer_id").df())


def test_changed_survivorship_rules_rebuild_every_golden_record(tmp_path):
    # Later runs rewrite only the golden records of touched customers, but a change of the
    # rules in configs/identity.yaml must reach every customer on the next run.
    from customer360.data.warehouse import connect, create_schema, insert_frame
    from customer360.identity.store import _write_golden, resolve
    from customer360.identity.unify import IdentityConfig

    records, _ = generate_source_records(300, seed=11)
    con = connect(tmp_path / "w.duckdb", create=True)
    try:
        create_schema(con)
        insert_frame(con, "source_records", records)
        resolve(con, run_id="r1")
        before = con.execute("SELECT * FROM identity_golden ORDER BY customer_id").df()
        reversed_priority = IdentityConfig(
            survivorship={a: "source_priority" for a in ("email", "phone", "street", "city")},
            source_priority=["pos", "callcentre", "webshop", "b2b", "crm"])
        again = resolve(con, config=reversed_priority, run_id="r2")
        assert again["new_records"] == 0 and again["records_rekeyed"] == 0
        after = con.execute("SELECT * FROM identity_golden ORDER BY customer_id").df()
        assert not after["email_source"].equals(before["email_source"])
        _write_golden(con, reversed_priority, None)
        pd.testing.assert_frame_equal(
            after, con.execute("SELECT * FROM identity_golden ORDER BY customer_id").df())
    finally:
        con.close()


def test_identity_cli_runs_reviews_and_refuses_bad_decisions(resolved, monkeypatch, capsys):
    from test_identity import run_main

    con, *_ = resolved
    db = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
                     ).fetchall()[0][0]
    pair = con.execute("SELECT record_key_l, record_key_r FROM identity_review LIMIT 1").fetchall()
    con.close()  # the CLI opens the file itself (the last test of this module that uses it)
    code, text = run_main(monkeypatch, capsys, "identity", "review", "--db", db, "--limit", "3")
    assert code == 0 and "identity review queue" in text, text
    code, text = run_main(monkeypatch, capsys, "identity", "review", pair[0][0], "--db", db,
                          "--accept")
    assert code == 2 and "exactly one of --accept or --reject" in text
    code, text = run_main(monkeypatch, capsys, "identity", "review", "crm:nope", pair[0][1],
                          "--reject", "--db", db)
    assert code == 2 and "both must be resolved source records" in text


HOUSEHOLD_COLUMNS = ["source_record_id", "given_name", "surname", "company_name", "email",
                     "phone", "street", "postcode", "city", "date_of_birth", "company_id"]


def _with_household(people: list[dict]) -> dict[str, pd.DataFrame]:
    """600 generated source records plus ``people`` (source_record_id, given_name,
    date_of_birth each) of one household: one surname, street, postcode, city, landline and
    family email, as a one-source frame for ``unify_frames``."""
    records, _ = generate_source_records(600, seed=13)
    home = {"surname": "Hollingshead", "email": "the.hollingsheads@example.org",
            "phone": "+44 20 7946 0321", "street": "17 Larkspur Road", "postcode": "SW19 4QT",
            "city": "London", "company_name": pd.NA, "company_id": pd.NA}
    family = pd.DataFrame([home | person for person in people])[HOUSEHOLD_COLUMNS]
    return {"crm": pd.concat([records[HOUSEHOLD_COLUMNS].astype("string"),
                              family.astype("string")], ignore_index=True)}


def test_household_members_sharing_contact_data_are_not_merged_zero_config():
    # Issue 14: two people of one household (same surname, street, postcode, city, landline and
    # family email; different given name and date of birth) among generated source records.
    from customer360.identity.unify import unify_frames

    frames = _with_household([
        {"source_record_id": "H1", "given_name": "Margaret", "date_of_birth": "1961-03-14"},
        {"source_record_id": "H2", "given_name": "Thomas", "date_of_birth": "1993-08-02"},
    ])
    result = unify_frames(frames, id_col="source_record_id")
    ids = result["clusters"].set_index("record_id")["customer_id"]
    assert ids["H1"] != ids["H2"]


def test_generated_households_hold_no_two_people_with_one_given_name():
    # A household is one surname, address and landline; relatives there get their own names.
    from customer360.data.synthetic_identity import SourceRecordsConfig, _entities

    people = _entities(3_000, np.random.default_rng(3), SourceRecordsConfig(), None)
    people = people[~people["is_b2b"]]
    home = ["surname", "number", "street_name", "street_type", "city", "district", "sector",
            "unit", "landline"]
    sizes = people.groupby(home)["entity"].size()
    assert (sizes > 2).sum() >= 20  # households of three or more are there to clash
    assert people.groupby(home)["given"].nunique().eq(sizes).all()


def test_short_forms_of_a_given_name_in_sql():
    import duckdb

    from customer360.identity.roles import _short_form_sql

    names = pd.DataFrame({
        "a": ["ELIZABETH", "ED", "PATRICIA", "VICTORIA", "STEPHEN",
              "WILLIAM", "AMELIA", "DANIEL", "JO", "EMMA"],
        "b": ["LIZ", "EDWARD", "PAT", "TORI", "STEVE", "BILL", "MARIA", "AN", "J", "EMILY"],
    })
    con = duckdb.connect()
    con.register("names", names)
    short = con.sql(f"SELECT {_short_form_sql('a', 'b')} AS s FROM names").df()["s"]
    # A prefix of two letters or more, an inner part of three or more, or the same first
    # three letters; nothing else.
    assert short.tolist() == [True] * 5 + [False] * 5


def test_given_name_forms_relate_nicknames_and_nothing_else():
    from customer360.identity.standardise import given_name_forms

    left = given_name_forms(pd.Series(["bill", "ted", "peggy", "bill", "margaret", "thomas"]))
    right = given_name_forms(pd.Series(["william", "edward", "margaret", "will", "thomas", pd.NA]))
    shared = [bool(set(a) & set(b)) if b is not pd.NA else None
              for a, b in zip(left.tolist(), right.tolist(), strict=True)]
    assert shared == [True, True, True, True, False, None]
    assert right.isna().tolist() == [False] * 5 + [True]
    # A typo of a listed name takes its forms only when one listed name alone is one edit
    # away: Dcebbie is Debbie (so Deborah); Dve could be Dave or Eve, so it stays itself.
    typos = given_name_forms(pd.Series(["dcebbie", "dve"])).tolist()
    assert "deborah" in typos[0] and typos[1] == ["dve"]


def test_a_nickname_of_one_person_merges_while_relatives_stay_apart():
    # Bill and William at one address, one surname and dates of birth a day apart are one
    # person (William is the name Bill is short for); Thomas at that address is a relative:
    # his given name is no form of William's and his date of birth differs, so the person rule
    # keeps him apart although every contact detail agrees.
    from customer360.identity.unify import unify_frames

    result = unify_frames(_with_household([
        {"source_record_id": "H1", "given_name": "William", "date_of_birth": "1961-03-14"},
        {"source_record_id": "H2", "given_name": "Bill", "date_of_birth": "1961-03-15"},
        {"source_record_id": "H3", "given_name": "Thomas", "date_of_birth": "1993-08-02"},
    ]), id_col="source_record_id")
    ids = result["clusters"].set_index("record_id")["customer_id"]
    assert ids["H1"] == ids["H2"]
    assert ids["H3"] not in {ids["H1"], ids["H2"]}
    pairs = result["pairs"].set_index(["record_id_l", "record_id_r"])
    conflict = {frozenset(k): v for k, v in pairs["person_conflict"].items()}
    assert not conflict[frozenset({"H1", "H2"})]
    assert conflict[frozenset({"H1", "H3"})] and conflict[frozenset({"H2", "H3"})]


def test_relatives_at_one_address_stay_apart_while_a_typo_of_one_merges():
    # person_conflict_sql on a real run: Margaret and Christopher share every contact detail
    # and the surname but not a given name or a date of birth, so they stay two people; a copy
    # of Margaret with a typo in her given name and no date of birth is still Margaret, and
    # "Chris" without a date of birth is still Christopher.
    from customer360.identity.unify import unify_frames

    frames = _with_household([
        {"source_record_id": "H1", "given_name": "Margaret", "date_of_birth": "1961-03-14"},
        {"source_record_id": "H2", "given_name": "Christopher", "date_of_birth": "1993-08-02"},
        {"source_record_id": "H3", "given_name": "Margret", "date_of_birth": pd.NA},
        {"source_record_id": "H4", "given_name": "Chris", "date_of_birth": pd.NA},
    ])
    result = unify_frames(frames, id_col="source_record_id")
    ids = result["clusters"].set_index("record_id")["customer_id"]
    assert ids["H1"] != ids["H2"]
    assert ids["H1"] == ids["H3"]
    assert ids["H2"] == ids["H4"]  # Chris is a short form of Christopher
    pairs = result["pairs"].set_index(["record_id_l", "record_id_r"])
    conflict = {frozenset(k): v for k, v in pairs["person_conflict"].items()}
    assert conflict[frozenset({"H1", "H2"})] and conflict[frozenset({"H3", "H2"})]
    assert conflict[frozenset({"H1", "H4"})]
    assert not conflict[frozenset({"H1", "H3"})] and not conflict[frozenset({"H2", "H4"})]
    report = result["report"]
    assert report["person_conflicts_not_merged"] >= 2
    assert report["matched_pairs"] == int(
        ((result["pairs"]["match_probability"] >= report["thresholds"]["match"])
         & ~result["pairs"]["person_conflict"]).sum())


def test_the_warehouse_path_holds_relatives_apart_and_respects_an_accept(tmp_path):
    # identity.store.resolve applies unify's person rule: relatives sharing every contact
    # detail stay two customers on the first run and when one more arrives incrementally; the
    # held-back pair is stored with its flag, and a steward's accept still links it.
    from customer360.data.warehouse import connect, create_schema, insert_frame
    from customer360.identity.store import record_decision, resolve

    records, _ = generate_source_records(300, seed=11)
    home = {"source_system": "crm", "surname": "HOLLINGSHEAD", "company_name": pd.NA,
            "email": "the.hollingsheads@example.org", "phone": "+44 20 7946 0321",
            "street": "17 Larkspur Road", "postcode": "SW19 4QT", "city": "London",
            "country": "GB", "company_id": pd.NA,
            "created_at": pd.Timestamp("2025-01-02"), "updated_at": pd.Timestamp("2025-06-01")}
    family = pd.DataFrame([home | {"source_record_id": i, "record_key": f"crm:{i}",
                                   "given_name": g, "date_of_birth": d}
                           for i, g, d in (("H1", "MARGARET", "1961-03-14"),
                                           ("H2", "CHRISTOPHER", "1993-08-02"),
                                           ("H3", "MARGRET", pd.NA),
                                           ("H4", "THOMAS", "1996-11-20"))])[records.columns]
    con = connect(tmp_path / "w.duckdb", create=True)
    try:
        create_schema(con)
        insert_frame(con, "source_records", pd.concat([records, family.iloc[:3]],
                                                      ignore_index=True))
        first = resolve(con, run_id="r1")
        insert_frame(con, "source_records", family.iloc[3:])
        second = resolve(con, run_id="r2")
        ids = dict(con.execute("SELECT record_key, customer_id FROM identity_crosswalk")
                   .fetchall())
        assert ids["crm:H1"] == ids["crm:H3"]  # Margret is a typo of Margaret
        assert len({ids["crm:H1"], ids["crm:H2"], ids["crm:H4"]}) == 3
        flags = dict(con.execute(
            "SELECT record_key_l || '|' || record_key_r, person_conflict FROM identity_pairs "
            "WHERE record_key_l LIKE 'crm:H%' AND record_key_r LIKE 'crm:H%'").fetchall())
        assert flags["crm:H1|crm:H2"] and not flags["crm:H1|crm:H3"]
        assert flags["crm:H2|crm:H4"]  # scored incrementally, flagged all the same
        assert first["person_conflicts_not_merged"] >= 1
        assert second["person_conflicts_not_merged"] >= 1
        record_decision(con, "crm:H2", "crm:H4", "accept", steward="ann", note="same man")
        resolve(con, run_id="r3")
        ids = dict(con.execute("SELECT record_key, customer_id FROM identity_crosswalk")
                   .fetchall())
        assert ids["crm:H2"] == ids["crm:H4"] != ids["crm:H1"]
    finally:
        con.close()


def test_em_narrows_the_name_block_when_namesakes_crowd_it():
    # Namesakes grow with the square of the population: here 1,500 people share 96 given name
    # and surname pairs, so the name block holds many more pairs than there are records. EM
    # then trains on names + postcode (a date-of-birth match must keep its weight); on the
    # generator's own names (few namesakes) it trains on the names alone.
    from customer360.identity.unify import unify_frames

    def frame(records, truth):
        out = records[HOUSEHOLD_COLUMNS].astype("string").assign(
            source_record_id=records["record_key"].astype("string"))
        return {"crm": out.assign(truth=records["record_key"].map(
            truth.set_index("record_key")["entity_id"]).astype("string"))}

    records, truth = generate_source_records(1500, seed=5)
    entity = pd.factorize(records["record_key"].map(truth.set_index("record_key")["entity_id"]))[0]
    given = np.array(["ANNA", "JOHN", "MARY", "PETER", "SARAH", "DAVID", "EMMA", "JAMES",
                      "LUCY", "MARK", "ALICE", "PAUL"])
    surnames = np.array(["SMITH", "JONES", "TAYLOR", "BROWN", "WILSON", "EVANS", "KHAN", "PATEL"])
    person = records["company_name"].isna().to_numpy()
    records.loc[person, "given_name"] = given[entity[person] % len(given)]
    records.loc[person, "surname"] = surnames[(entity[person] // len(given)) % len(surnames)]
    crowded = unify_frames(frame(records, truth), id_col="source_record_id", truth_col="truth")
    report = crowded["report"]
    assert report["name_block_pairs_per_record"] > 1
    assert report["em_blocks"][0] == "std_given_name & std_surname & std_postcode"
    dob = next(c for c in crowded["settings"]["comparisons"]
               if c["output_column_name"] == "std_date_of_birth")
    exact = next(lv for lv in dob["comparison_levels"] if not lv.get("is_null_level"))
    assert exact["m_probability"] > 0.9
    assert report["quality"]["pairwise"]["precision"] >= 0.99

    plain = unify_frames(frame(*generate_source_records(400, seed=5)),
                         id_col="source_record_id", truth_col="truth")
    assert plain["report"]["name_block_pairs_per_record"] < 1
    assert "std_given_name & std_surname & std_postcode" not in plain["report"]["em_blocks"]


def test_blocking_rules_that_compare_too_many_pairs_a_record_are_dropped():
    # A rule on a low-cardinality pair (a name and a city) compares pairs in proportion to the
    # square of the population; over max_pairs_per_record it is dropped, reported, and not
    # part of the trained model (so Spark, which takes the model's rules, drops it too).
    from customer360.identity.roles import affordable_blocking
    from customer360.identity.unify import IdentityConfig, unify_frames

    records, _ = generate_source_records(400, seed=5)
    frame = records[HOUSEHOLD_COLUMNS].astype("string").assign(
        source_record_id=records["record_key"].astype("string"), city="LONDON")
    result = unify_frames({"crm": frame}, id_col="source_record_id",
                          config=IdentityConfig(max_pairs_per_record=1.5))
    dropped = result["report"]["blocking_rules_dropped"]
    assert {tuple(d["columns"]) for d in dropped} == {("std_given_name", "std_city"),
                                                       ("std_surname", "std_city")}
    assert all(d["pairs"] > 1.5 * len(frame) for d in dropped)
    rules = result["report"]["blocking_rules"]
    assert len(rules) == 17  # the 19 generated for these columns, less the two
    assert not any("std_given_name" in r and "std_city" in r for r in rules)
    assert not any("std_surname" in r and "std_city" in r for r in rules)
    # Nothing over the budget: nothing dropped; all over it: the cheapest rule is kept.
    std = pd.DataFrame({"std_a": ["x"] * 6, "std_b": ["p", "p", "q", "q", "r", "s"]})
    assert affordable_blocking(std, [["std_a"], ["std_b"]], 3.0) == (
        [["std_a"], ["std_b"]], [])
    assert affordable_blocking(std, [["std_a"], ["std_b"]], 0.1) == (
        [["std_b"]], [{"columns": ["std_a"], "pairs": 15}])


def test_records_with_nothing_to_train_on_get_a_clear_error():
    # Every identity value blank: no block has a pair for Splink's EM (it raised its own
    # exception, a traceback for the user); the blocks are tried in turn and, when none
    # trains, the error says what to check.
    from customer360.identity.unify import unify_frames

    blank = pd.DataFrame({"id": ["1", "2", "3"], "first_name": [None] * 3,
                          "surname": [None] * 3, "email": [None] * 3}).astype("string")
    with pytest.raises(IdentityError, match="No training block of these records has pairs"):
        unify_frames({"crm": blank}, id_col="id")



def test_a_record_standardised_during_a_run_is_scored_by_the_next_one(tmp_path):
    """Records another connection standardises after a run read its new records (here: C,
    standardised beside B, while the run scores only B) get no crosswalk row from that run;
    they are still new to the next run, which scores and clusters them."""
    from customer360.data.warehouse import connect, create_schema, insert_frame, transaction
    from customer360.identity.store import (
        _cluster_and_write,
        _score,
        load_identity_config,
        resolve,
        standardise_new,
    )

    records, truth = generate_source_records(400, seed=12)
    entity = truth.set_index("record_key")["entity_id"]
    first = records.iloc[: len(records) // 2]
    rest = records.iloc[len(records) // 2:]
    # C: later records of entities that already have a record in the first batch
    known = set(entity[first["record_key"]])
    is_c = entity[rest["record_key"]].isin(known).to_numpy()
    batch_b, batch_c = rest[~is_c], rest[is_c]
    assert len(batch_c) >= 20
    con = connect(tmp_path / "w.duckdb", create=True)
    try:
        create_schema(con)
        insert_frame(con, "source_records", first)
        resolve(con, run_id="r1")
        insert_frame(con, "source_records", rest)
        config = load_identity_config()
        standardise_new(con, config)
        new_b = batch_b[["record_key"]].sort_values("record_key").reset_index(drop=True)
        _score(con, config, new_b, "r2", {})
        with transaction(con):
            _cluster_and_write(con, config, "r2", new_b)
        in_crosswalk = set(con.execute("SELECT record_key FROM identity_crosswalk").df()
                           .iloc[:, 0])
        assert set(batch_b["record_key"]) <= in_crosswalk
        assert not set(batch_c["record_key"]) & in_crosswalk
        again = resolve(con, run_id="r3")
        assert again["new_records"] == len(batch_c)
        scored = con.execute(
            "SELECT count(*) FROM identity_pairs WHERE run_id = 'r3' AND (record_key_l IN "
            "(SELECT unnest(?)) OR record_key_r IN (SELECT unnest(?)))",
            [batch_c["record_key"].tolist()] * 2).fetchone()[0]
        assert scored > 0
        crosswalk = con.execute("SELECT record_key, customer_id FROM identity_crosswalk").df()
        assert len(crosswalk) == len(records) == crosswalk["record_key"].nunique()
        # C's records joined the customers of their entity's first-batch records
        keyed = crosswalk.assign(entity=entity[crosswalk["record_key"]].to_numpy())
        first_ids = keyed[keyed["record_key"].isin(first["record_key"])]
        c_rows = keyed[keyed["record_key"].isin(batch_c["record_key"])]
        joined = c_rows.merge(first_ids, on="entity", suffixes=("", "_first"))
        assert (joined["customer_id"] == joined["customer_id_first"]).mean() > 0.8
    finally:
        con.close()
