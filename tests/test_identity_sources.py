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
