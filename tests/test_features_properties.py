"""Invariants of the transactional features on random tiny transaction logs (hypothesis)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from customer360.data.warehouse import connect
from customer360.features import build_features

T = dt.date(2026, 1, 1)

rows = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),  # customer
        st.integers(min_value=1, max_value=500 * 24),  # hours before T
        st.floats(min_value=0, max_value=500, allow_nan=False),  # amount
        st.booleans(),  # is_return
        st.sampled_from(["home", "sports", "beauty"]),
    ),
    max_size=40,
)


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    con = connect(tmp_path_factory.mktemp("props") / "w.duckdb", create=True)
    con.execute(
        "INSERT INTO customers SELECT id, 'B2C', NULL, NULL, '25-34', 'F', 'north', 'x', "
        "'direct', DATE '2024-01-01', NULL FROM (VALUES ('a'), ('b'), ('c')) AS v(id)"
    )
    yield con
    con.close()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(log=rows)
def test_transactional_invariants(warehouse, log):
    con = warehouse
    con.execute("DELETE FROM transactions")
    midnight = dt.datetime.combine(T, dt.time(0))
    new_rows = pd.DataFrame(
        {
            "transaction_id": [f"t{i}" for i in range(len(log))],
            "customer_id": [r[0] for r in log],
            "ts": [midnight - dt.timedelta(hours=r[1]) for r in log],
            "amount": [-r[2] if r[3] else r[2] for r in log],
            "is_return": [r[3] for r in log],
            "category": [r[4] for r in log],
        }
    )
    con.register("new_rows", new_rows)
    con.execute(
        "INSERT INTO transactions SELECT transaction_id, customer_id, CAST(ts AS TIMESTAMP), "
        "amount, amount * 0.3, 1, category, 'web', 0, is_return, NULL, 1.5 FROM new_rows"
    )
    con.unregister("new_rows")
    f = build_features(con, T, families=["txn"]).set_index("customer_id")
    assert list(f.index) == ["a", "b", "c"]
    assert (
        not f.drop(
            columns=[
                "txn__recency_days__all",
                "txn__first_purchase_days__all",
                "txn__ipt_mean_days__all",
                "txn__ipt_std_days__all",
            ]
        )
        .isna()
        .any()
        .any()
    )
    for what in ("orders", "spend_sum", "returns", "cost_to_serve"):
        windows = [f[f"txn__{what}__{w}"] for w in ("30d", "90d", "365d", "all")]
        for shorter, longer in zip(windows, windows[1:], strict=False):
            assert (shorter <= longer + 1e-9).all(), what
    for w in ("30d", "90d", "365d", "all"):
        expected = (
            f[f"txn__margin_sum__{w}"]
            - f[f"txn__returns_value__{w}"]
            - f[f"txn__cost_to_serve__{w}"]
        )
        np.testing.assert_allclose(f[f"txn__profitability__{w}"], expected, atol=1e-9)
    bought = f["txn__orders__all"] > 0
    assert (f.loc[~bought, "txn__recency_days__all"].isna()).all()
    assert (f.loc[bought, "txn__recency_days__all"] >= 1).all()
    assert (f["txn__purchase_days__all"] <= f["txn__orders__all"]).all()
    assert (f["txn__category_breadth__all"] <= 3).all()
    # mean gap x (purchase days - 1) = days between first and last purchase
    repeat = f["txn__purchase_days__all"] >= 2
    span = f["txn__first_purchase_days__all"] - f["txn__recency_days__all"]
    np.testing.assert_allclose(
        f.loc[repeat, "txn__ipt_mean_days__all"] * (f.loc[repeat, "txn__purchase_days__all"] - 1),
        span[repeat],
        atol=1e-9,
    )
    assert f.loc[~repeat, "txn__ipt_mean_days__all"].isna().all()
    for col in ("txn__orders_trend__90d", "txn__spend_trend__90d"):
        assert f[col].between(-1, 1).all()
