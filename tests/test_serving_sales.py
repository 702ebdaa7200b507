import pandas as pd
import pytest

from customer360.errors import Customer360Error
from customer360.serving.sales import b2b_profile_parts


def _opps():
    return pd.DataFrame({
        "customer_id": ["c1", "c1", None, "c2"],
        "opportunity_id": ["o1", "o2", "o3", "o4"],
        "stage": ["proposal", "lead", "proposal", "verbal"],
        "amount": [100.0, 50.0, 10.0, 5.0],
        "win_probability": [0.2, 0.7, 0.9, 0.5],
        "expected_close_date": pd.to_datetime(["2027-01-01", "2027-02-01", None, "2027-03-01"]),
        "close_date_low": pd.to_datetime(["2026-12-01"] * 4),
        "close_date_high": pd.to_datetime(["2027-06-01"] * 4),
    })


def test_profiles_carry_open_opportunities_and_leads_of_their_customer():
    leads = pd.DataFrame({"customer_id": ["c3", "c1"], "lead_id": ["l1", "l2"],
                          "score": [80, 30], "grade": ["A", "C"], "trend": ["new", "steady"]})
    parts = b2b_profile_parts(_opps(), leads)
    assert sorted(parts) == ["c1", "c2", "c3"]  # the unlinked o3 belongs to no profile
    assert [o["opportunity_id"] for o in parts["c1"]["open_opportunities"]] == ["o2", "o1"]
    assert parts["c1"]["leads"] == [{"lead_id": "l2", "score": 30, "grade": "C",
                                     "trend": "steady"}]
    assert parts["c3"]["open_opportunities"] == []
    assert parts["c2"]["open_opportunities"][0]["expected_close_date"] == pd.Timestamp(
        "2027-03-01")


def test_missing_columns_are_a_clear_error():
    with pytest.raises(Customer360Error, match="win_probability"):
        b2b_profile_parts(_opps().drop(columns="win_probability"), None)
