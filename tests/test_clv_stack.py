"""`clv fit` on users' logs (issue 13): the ML-CLV stacked on BG/NBD, logs without amounts,
spend that never varies."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
from test_rfm import load_cdnow_raw
from typer.testing import CliRunner

from customer360.cli import app

CALIBRATION = ("--calibration-end", "1997-09-30", "--holdout-end", "1998-06-30")


@pytest.fixture(scope="module")
def cdnow_log(tmp_path_factory) -> pd.DataFrame:
    """The first 500 customers of the CDNOW 1/10 sample as a user's log: customer, ISO date,
    amount."""
    raw = load_cdnow_raw()
    raw = raw[raw["cid"].isin(raw["cid"].drop_duplicates().iloc[:500])]
    return pd.DataFrame({
        "customer": raw["cid"],
        "day": pd.to_datetime(raw["date"], format="%Y%m%d").dt.strftime("%Y-%m-%d"),
        "amount": raw["amount"],
    })


def _fit(tmp_path, frame: pd.DataFrame, *extra: str):
    source = tmp_path / "log.csv"
    frame.to_csv(source, index=False)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [
        "clv", "fit", "--transactions", str(source), "--customer-col", "customer",
        "--date-col", "day", "--output", str(out), *CALIBRATION, *extra,
    ])
    assert result.exit_code == 0, result.output
    return result, json.loads((out / "params.json").read_text()), pd.read_parquet(
        out / "customers.parquet")


def test_log_without_amounts_fits_purchase_models_and_the_stacked_ml(tmp_path, cdnow_log):
    result, params, customers = _fit(tmp_path, cdnow_log.drop(columns="amount"))
    assert "gamma_gamma" in result.output and "not fitted" in result.output
    assert "no amount column" in params["models"]["gamma_gamma"]["error"]
    assert set(params["models"]["bgnbd"]["params"]) == {"r", "alpha", "a", "b"}
    # the stacked model was trained inside the calibration period only
    backtest = params["models"]["ml_stacked"]["backtest"]
    assert backtest["cutoff"] < "1997-09-30" and backtest["customers"] == 500
    hold = params["holdout"]
    assert {"bgnbd", "pareto_nbd", "ml_stacked", "baseline_rate"} <= set(hold)
    assert "ml_stacked" in result.output
    assert hold["ml_stacked"]["predicted_total_repeat_purchases"] == pytest.approx(
        customers["expected_purchases_ml"].sum())
    scored = customers[customers["has_purchases"]]
    assert np.isfinite(scored["expected_purchases_ml"]).all()
    assert (scored["expected_purchases_ml"] >= 0).all()
    assert scored[["expected_spend", "clv", "clv_ml"]].isna().all().all()


def test_spend_that_never_varies_warns_and_fits_no_spend_model(tmp_path, cdnow_log, caplog):
    flat = cdnow_log.assign(amount=12.5)
    with caplog.at_level(logging.WARNING, logger="customer360.training.clv_stack"):
        _, params, customers = _fit(tmp_path, flat, "--amount-col", "amount")
    assert "spend never varies" in caplog.text
    assert "never varies" in params["models"]["gamma_gamma"]["error"]
    assert "params" not in params["models"]["gamma_gamma"]
    assert params["constant_spend"] >= 12.5  # mean spend per purchase day
    scored = customers[customers["has_purchases"]]
    np.testing.assert_allclose(scored["expected_spend"], params["constant_spend"])
    assert (scored["clv"] > 0).all() and np.isfinite(scored["clv_ml"]).all()
