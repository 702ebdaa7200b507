"""`clv fit` on users' logs (issue 13): the ML-CLV stacked on BG/NBD, logs without amounts,
spend that never varies."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import mean_poisson_deviance
from test_rfm import load_cdnow_raw
from typer.testing import CliRunner

from customer360.cli import app
from customer360.training.clv_stack import poisson_nll

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


@pytest.fixture(scope="module")
def no_amounts_fit(tmp_path_factory, cdnow_log):
    """One `clv fit` of the log without its amount column, shared by the tests that read it."""
    return _fit(tmp_path_factory.mktemp("no_amounts"), cdnow_log.drop(columns="amount"))


def test_log_without_amounts_fits_purchase_models_and_the_stacked_ml(no_amounts_fit):
    result, params, customers = no_amounts_fit
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


def test_backtest_picks_the_candidate_with_the_lowest_poisson_nll(no_amounts_fit):
    result, params, customers = no_amounts_fit
    backtest = params["models"]["ml_stacked"]["backtest"]
    scores = backtest["scores"]
    assert set(scores) == {"bgnbd", "pareto_nbd", "ml_stacked"}
    assert backtest["selected"] == min(scores, key=lambda m: scores[m]["poisson_nll"])
    # the backtest's totals are of its own window (cut-off to calibration end), not the holdout
    assert scores["bgnbd"]["predicted_total"] == pytest.approx(backtest["backtest_bgnbd_total"])
    hold = params["holdout"]
    assert hold["selected_by_backtest"] == backtest["selected"]
    assert "backtest pick" in result.output and "no purchase at all" in result.output
    scored = customers[customers["has_purchases"]]
    actual = scored["actual_purchases_holdout"].to_numpy()
    assert hold["zero_forecast_mae"] == pytest.approx(actual.mean())
    for name, column in (("bgnbd", "expected_purchases"), ("ml_stacked", "expected_purchases_ml")):
        pred = scored[column].to_numpy()
        assert hold[name]["poisson_deviance_per_customer"] == pytest.approx(
            mean_poisson_deviance(actual, pred))
        assert hold[name]["mae_per_customer"] == pytest.approx(np.abs(pred - actual).mean())


def test_poisson_nll_is_lightgbm_scale_and_lowest_at_the_true_means():
    rng = np.random.default_rng(3)
    mu = rng.gamma(0.5, 1.0, 5_000) + 1e-3
    y = rng.poisson(mu).astype(float)
    best = poisson_nll(mu, y)
    assert best < poisson_nll(mu * 1.3, y) and best < poisson_nll(mu * 0.7, y)
    assert best < poisson_nll(np.full_like(mu, mu.mean()), y)
    # deviance = 2 (NLL(mu) - NLL(y)), with 0 log 0 = 0 in the saturated term
    saturated = np.mean(y - np.where(y > 0, y * np.log(np.maximum(y, 1e-300)), 0.0))
    assert mean_poisson_deviance(y, mu) == pytest.approx(2 * (best - saturated))


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
