"""Issue 14: the generator's source systems with a truth table (item 7) and their contract."""

from __future__ import annotations

import pandas as pd

from customer360.data.synthetic_identity import SOURCE_SYSTEMS, generate_source_records


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
