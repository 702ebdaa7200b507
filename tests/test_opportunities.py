"""Opportunities (issue 15): censoring, time to close, pipeline forecast and its backtest."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from customer360.data.warehouse import connect
from customer360.models.opportunities import stage_rows, win_labels
from customer360.training.leads import load_leads_config, warehouse_today
from customer360.training.opportunities import (
    SalesTables,
    backtest_forecast,
    forecast_as_of,
    landmark_rows,
    prepare_win_data,
    read_opportunity_tables,
)

T0 = pd.Timestamp("2026-01-01")


def _tiny() -> SalesTables:
    """Three opportunities: won, lost and still open on 2026-03-01."""
    opps = pd.DataFrame({
        "opportunity_id": ["OW", "OL", "OO"], "lead_id": [None] * 3, "customer_id": [None] * 3,
        "account_name": ["a", "b", "c"], "created_at": [T0] * 3, "amount": [100.0, 200.0, 300.0],
        "expected_close_date": [pd.Timestamp("2026-04-01").date()] * 3,
        "stage": ["close", "proposal", "proposal"], "outcome": ["won", "lost", "open"],
        "closed_at": [pd.Timestamp("2026-02-10"), pd.Timestamp("2026-02-01"), pd.NaT],
        "loss_reason": [None, "price", None],
    })
    stages = pd.DataFrame({
        "opportunity_stage_id": [f"S{i}" for i in range(7)],
        "opportunity_id": ["OW", "OW", "OW", "OL", "OL", "OO", "OO"],
        "stage": ["lead", "proposal", "close", "lead", "proposal", "lead", "proposal"],
        "entered_at": [T0, T0 + pd.Timedelta(days=10), pd.Timestamp("2026-02-10"), T0,
                       T0 + pd.Timedelta(days=5), T0, T0 + pd.Timedelta(days=20)],
    })
    return SalesTables(opps, stages, None)


def test_open_opportunities_are_censored_not_lost():
    tables = _tiny()
    as_of = pd.Timestamp("2026-03-01")
    rows = stage_rows(tables.opportunities, tables.stages, None, as_of, every_stage=True)
    y, known = win_labels(rows)
    by_id = rows.assign(y=y, known=known).groupby("opportunity_id")
    assert by_id["known"].all().to_dict() == {"OL": True, "OO": False, "OW": True}
    assert by_id["y"].max().to_dict() == {"OL": 0, "OO": 0, "OW": 1}
    # survival data (landmark 2026-02-01; nothing was open yet on 2026-01-01): the open one
    # is censored at as_of, the one won since is an event, the lost one is left out
    marks = landmark_rows(tables, as_of, months=2).set_index("opportunity_id")
    assert set(marks.index) == {"OO", "OW"}
    assert marks.loc["OO", "event"] == False  # noqa: E712 - numpy bool
    assert marks.loc["OO", "days"] == 28.0
    assert marks.loc["OW", "event"] == True  # noqa: E712
    assert marks.loc["OW", "days"] == 9.0


@pytest.fixture(scope="module")
def warehouse(small_warehouse_master):
    with connect(small_warehouse_master, read_only=True) as con:
        yield con, read_opportunity_tables(con), warehouse_today(con)


def test_win_data_hold_no_open_opportunity(warehouse):
    con, tables, today = warehouse
    data, rows = prepare_win_data(con, tables, today)
    open_ids = set(tables.opportunities.loc[tables.opportunities["outcome"] == "open",
                                            "opportunity_id"])
    assert open_ids
    assert not set(rows["opportunity_id"]) & open_ids
    assert len(data.X_test) and len(data.X_train)
    assert {"oracle"} <= set(data.extra_baselines)


def test_forecast_and_close_dates(warehouse):
    _, tables, today = warehouse
    config = load_leads_config()
    scored, forecast = forecast_as_of(tables, pd.Timestamp(today), 3, config)
    assert len(scored) == (tables.opportunities["outcome"] == "open").sum()
    assert scored["win_probability"].between(0, 1).all()
    dated = scored.dropna(subset=["close_date_low", "close_date_high"])
    assert len(dated) > 0.5 * len(scored)
    assert (dated["close_date_low"] <= dated["expected_close_date"]).all()
    assert (dated["expected_close_date"] <= dated["close_date_high"]).all()
    assert (forecast["low"] <= forecast["expected_won"]).all()
    assert (forecast["expected_won"] <= forecast["high"]).all()
    assert forecast["month"].tolist()[0] == (pd.Timestamp(today).to_period("M") + 1).strftime(
        "%Y-%m")


def test_forecast_backtest_within_interval_most_months(warehouse):
    _, tables, today = warehouse
    config = load_leads_config().model_copy(update={"backtest_months": 3})
    table = backtest_forecast(tables, today, config)
    assert len(table) == 3
    assert table["within_interval"].sum() >= 2, table
    assert np.all(table["actual_won"] >= 0)


def test_sales_cycle_classes_observed_then_predicted():
    from customer360.models.opportunities import sales_cycle_classes

    opps = pd.DataFrame({
        "opportunity_id": ["a", "b", "c", "d"], "customer_id": ["C1", "C2", "C3", None],
        "created_at": pd.to_datetime(["2025-01-01"] * 4),
        "closed_at": pd.to_datetime(["2025-02-15", "2025-07-01", None, "2025-02-01"]),
        "outcome": ["won", "won", "open", "won"],
    })
    predicted = pd.DataFrame({"opportunity_id": ["c"],
                              "expected_close_date": pd.to_datetime(["2026-03-01"])})
    out = sales_cycle_classes(opps, predicted).set_index("customer_id")
    assert out["cycle_class"].to_dict() == {"C1": "short", "C2": "intermediate", "C3": "long"}
    assert out.loc["C3", "cycle_source"] == "predicted"
