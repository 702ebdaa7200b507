"""issue 15 item 4: sales-cycle classes from won opportunities reach the segments run."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from customer360.data.warehouse import connect
from customer360.training.segments import observed_sales_cycles


def test_observed_cycles_are_point_in_time(small_warehouse):
    con = connect(small_warehouse)
    try:
        won = con.execute(
            "SELECT customer_id, created_at, closed_at FROM opportunities WHERE outcome = 'won' "
            "AND customer_id IS NOT NULL ORDER BY closed_at").df()
        assert len(won) >= 2
        cut = pd.Timestamp(won["closed_at"].iloc[len(won) // 2]).date()
        early = observed_sales_cycles(con, cut)
        late = observed_sales_cycles(con, dt.date(2100, 1, 1))
    finally:
        con.close()
    assert early is not None and late is not None
    seen = set(won.loc[pd.to_datetime(won["closed_at"]).dt.date <= cut, "customer_id"])
    assert set(early["customer_id"]) == seen
    assert set(late["customer_id"]) == set(won["customer_id"])
    assert set(late["cycle_class"]) <= {"short", "intermediate", "long"}
    assert (late["cycle_source"] == "observed").all()
