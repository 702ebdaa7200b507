"""Probabilistic CLV wrappers: published CDNOW values, weighted = plain fit, robustness, scores."""

from __future__ import annotations

import functools
import json
import logging
import re
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from lifetimes import BetaGeoFitter, GammaGammaFitter, ParetoNBDFitter
from lifetimes.generate_data import beta_geometric_nbd_model
from test_rfm import load_cdnow_raw

from customer360.errors import ContractError, ModelError
from customer360.features.rfm import rfm_summary
from customer360.models.clv import (
    BetaGeoModel,
    GammaGammaModel,
    ParetoNBDModel,
    _BetaGeoFitter,
    _warm_start,
    customer_clv,
    monthly_rate,
    purchases_column,
)
from customer360.training.probabilistic import probabilistic_scores


@pytest.fixture(scope="module")
def cdnow_rfm() -> pd.DataFrame:
    """CDNOW 1/10 sample summarised from raw transactions by our own rfm_summary, in weeks."""
    return rfm_summary(
        duckdb.connect(), load_cdnow_raw(), customer_col="cid", date_col="date",
        amount_col="amount", calibration_end="1997-09-30", observation_end="1998-06-30",
        time_unit="W",
    )


def _sig3(x: float) -> str:
    return f"{x:.3g}"


def test_cdnow_published_values(cdnow_rfm):
    """Published values from the raw CDNOW 1/10 sample (2,357 customers, calibration to
    1997-09-30, one purchase per customer-day, weeks = days / 7), summarised by rfm_summary.

    BG/NBD: Fader, Hardie & Lee (2005) r=0.243, alpha=4.414, a=0.793, b=2.426, LL=-9582.4.
    Pareto/NBD: r=0.553, alpha=10.578, s=0.606, beta=11.669, LL=-9595.0.
    Gamma-Gamma: p=6.25, q=3.74, gamma=15.44. It is fitted on the same raw-transaction summary
    (monetary value = mean of the repeat purchase days' totals), which reproduces gamma=15.44 to
    four digits; lifetimes' rounded file cdnow_customers_summary_with_transactions.csv gives
    15.45 (p and q agree either way), so the raw data is the source used here.
    """
    assert len(cdnow_rfm) == 2357
    bg = BetaGeoModel().fit(cdnow_rfm)
    pn = ParetoNBDModel().fit(cdnow_rfm)
    gg = GammaGammaModel().fit(cdnow_rfm)
    published = {
        bg: {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426},
        pn: {"r": 0.553, "alpha": 10.578, "s": 0.606, "beta": 11.669},
        gg: {"p": 6.25, "q": 3.74, "v": 15.44},
    }
    for model, values in published.items():
        for name, value in values.items():
            assert _sig3(model.params_[name]) == _sig3(value), (type(model).__name__, name)
        assert model.penalizer_used_ == 0.0
    assert gg.params_["v"] == pytest.approx(15.44, abs=0.005)
    assert bg.log_likelihood_ == pytest.approx(-9582.4, abs=0.05)
    assert pn.log_likelihood_ == pytest.approx(-9595.0, abs=0.05)
    assert gg.n_excluded_ == 2357 - 946  # 946 customers repeat-bought in calibration


def _rel(a: dict, b: dict) -> float:
    return max(abs(a[k] - b[k]) / abs(b[k]) for k in b)


def test_weighted_fit_equals_plain_fit(cdnow_rfm):
    f, r, t = cdnow_rfm["frequency"], cdnow_rfm["recency"], cdnow_rfm["T"]
    bg = BetaGeoModel().fit(cdnow_rfm)
    assert bg.n_unique_ < len(cdnow_rfm) / 2
    plain_bg = BetaGeoFitter().fit(f, r, t)
    assert _rel(bg.params_, plain_bg.params_.to_dict()) < 1e-4
    pn = ParetoNBDModel().fit(cdnow_rfm)
    plain_pn = ParetoNBDFitter().fit(f, r, t, initial_params=np.ones(4), tol=1e-6)
    assert _rel(pn.params_, plain_pn.params_.to_dict()) < 1e-4
    repeat = cdnow_rfm[cdnow_rfm["frequency"] > 0]
    gg = GammaGammaModel().fit(cdnow_rfm)
    plain_gg = GammaGammaFitter().fit(repeat["frequency"], repeat["monetary_value"])
    assert _rel(gg.params_, plain_gg.params_.to_dict()) < 1e-4
    # the unweighted wrapper gives the same optimum and the same log-likelihood
    unweighted = BetaGeoModel(weighted=False).fit(cdnow_rfm)
    assert _rel(unweighted.params_, bg.params_) < 1e-4
    assert unweighted.log_likelihood_ == pytest.approx(bg.log_likelihood_, rel=1e-9)



def test_warm_started_fits_on_many_distinct_histories_equal_plain_fits():
    # continuous T: ~24k distinct histories, enough for the coarse-to-fine path
    rng = np.random.default_rng(3)
    age = np.round(rng.uniform(20, 40, 30_000), 3)
    rfm = beta_geometric_nbd_model(age, 0.25, 4.0, 0.8, 2.5, size=len(age))
    rfm["monetary_value"] = np.where(
        rfm["frequency"] > 0, np.round(rng.gamma(6.0, 4.0, len(rfm)), 2), 0.0
    )
    bg = BetaGeoModel().fit(rfm)
    assert bg.n_unique_ >= 20_000 and 0 < bg.n_coarse_ < bg.n_unique_ / 4
    plain = BetaGeoFitter().fit(rfm["frequency"], rfm["recency"], rfm["T"])
    assert _rel(bg.params_, plain.params_.to_dict()) < 1e-4
    # the finite-difference Hessian gives lifetimes' standard errors
    ours_se = bg.fitter_.standard_errors_.to_dict()
    assert _rel(ours_se, plain.standard_errors_.to_dict()) < 1e-3

    # a coarse fit that fails costs only the warm start, never the fit
    coarse = {c: rfm[c].to_numpy() for c in ("frequency", "recency", "T")}
    assert _warm_start(_BetaGeoFitter, 0.0, (coarse, np.ones(len(rfm))), maxiter=1) == {}
    start = _warm_start(_BetaGeoFitter, 0.0, (coarse, np.ones(len(rfm))))
    assert set(start) == {"initial_params", "hess_inv0"}

    repeat = rfm[rfm["frequency"] > 0]
    many = pd.concat([repeat] * 4, ignore_index=True)
    many["monetary_value"] = rng.gamma(6.0, 4.0, len(many))
    gg = GammaGammaModel().fit(many)
    assert gg.n_unique_ >= 20_000 and gg.n_coarse_ > 0
    plain_gg = GammaGammaFitter().fit(many["frequency"], many["monetary_value"])
    assert _rel(gg.params_, plain_gg.params_.to_dict()) < 1e-4

def test_predictions_are_vectorised_finite_and_bounded(cdnow_rfm):
    bg = BetaGeoModel().fit(cdnow_rfm)
    gg = GammaGammaModel().fit(cdnow_rfm)
    p = bg.p_alive(cdnow_rfm)
    assert p.shape == (2357,) and (p >= 0).all() and (p <= 1).all()
    assert (p[cdnow_rfm["frequency"].to_numpy() == 0] == 1).all()  # BG/NBD: no repeat = alive
    e39 = bg.expected_purchases(cdnow_rfm, 39.0)
    # holdout (39 weeks): BG/NBD predicts 1,653 repeat purchase days against 1,882 actual
    actual = cdnow_rfm["frequency_holdout"].sum()
    assert actual == 1882
    assert abs(e39.sum() - actual) / actual < 0.15
    ref = BetaGeoFitter().fit(cdnow_rfm["frequency"], cdnow_rfm["recency"], cdnow_rfm["T"])
    np.testing.assert_allclose(
        e39, ref.conditional_expected_number_of_purchases_up_to_time(
            39.0, cdnow_rfm["frequency"], cdnow_rfm["recency"], cdnow_rfm["T"]), rtol=1e-4)
    spend = gg.expected_spend(cdnow_rfm)
    assert np.isfinite(spend).all() and (spend > 0).all()


def test_gamma_gamma_eligibility_rule_for_one_purchase_zero_spend_and_returns_only(cdnow_rfm):
    edge = pd.DataFrame({
        "customer_id": ["one_purchase", "zero_spend", "returns_only", "normal"],
        "frequency": [0.0, 3.0, 2.0, 2.0],
        "recency": [0.0, 10.0, 8.0, 8.0],
        "T": [20.0, 20.0, 20.0, 20.0],
        "monetary_value": [0.0, 0.0, -25.0, 40.0],
    })
    cols = ["frequency", "recency", "T", "monetary_value"]
    data = pd.concat([cdnow_rfm[cols], edge[cols]])
    gg = GammaGammaModel().fit(data)
    eligible_only = GammaGammaModel().fit(data[(data.frequency > 0) & (data.monetary_value > 0)])
    assert _rel(gg.params_, eligible_only.params_) < 1e-9  # excluded rows do not enter the fit
    spend = gg.expected_spend(edge)
    p, q, v = gg.params_["p"], gg.params_["q"], gg.params_["v"]
    assert spend[:3] == pytest.approx([p * v / (q - 1)] * 3)
    assert spend[3] != pytest.approx(p * v / (q - 1))
    bg = BetaGeoModel().fit(cdnow_rfm)
    clv = customer_clv(bg, gg, edge, months=6, annual_discount_rate=0.1, margin_rate=0.3)
    assert np.isfinite(clv).all() and (clv > 0).all()


def test_clv_matches_hand_computation_and_responds_to_rate_and_margin(cdnow_rfm):
    bg = BetaGeoModel().fit(cdnow_rfm)
    gg = GammaGammaModel().fit(cdnow_rfm)
    x = cdnow_rfm.head(50)
    step = 365.25 / 12 / 7
    n1, n2, n3 = (bg.expected_purchases(x, m * step) for m in (1, 2, 3))
    d = monthly_rate(0.12)
    assert (1 + d) ** 12 == pytest.approx(1.12)
    by_hand = 0.4 * gg.expected_spend(x) * (n1 / (1 + d) + (n2 - n1) / (1 + d) ** 2
                                            + (n3 - n2) / (1 + d) ** 3)
    clv3 = customer_clv(bg, gg, x, months=3, annual_discount_rate=0.12, margin_rate=0.4)
    np.testing.assert_allclose(clv3, by_hand, rtol=1e-12)
    no_discount = customer_clv(bg, gg, x, months=3, annual_discount_rate=0.0, margin_rate=0.4)
    assert (no_discount >= clv3).all() and (no_discount > clv3).any()
    assert (customer_clv(bg, gg, x, months=3, margin_rate=0.0) == 0).all()
    with pytest.raises(ModelError, match="discount rate"):
        customer_clv(bg, gg, x, annual_discount_rate=-2.0)


def _homogeneous_rate_rfm() -> pd.DataFrame:
    """Everyone buys at the same rate: BG/NBD's r, alpha run off to infinity unpenalised."""
    np.random.seed(1)
    return beta_geometric_nbd_model(np.full(400, 30.0), 1e4, 2e4, 0.8, 2.5, size=400)


def test_non_convergence_is_retried_with_a_penalizer_and_logged(caplog):
    rfm = _homogeneous_rate_rfm()
    with pytest.raises(Exception, match="converge"):
        BetaGeoFitter().fit(rfm["frequency"], rfm["recency"], rfm["T"])
    with caplog.at_level(logging.WARNING, logger="customer360.models.clv"):
        model = BetaGeoModel().fit(rfm)
    assert model.penalizer_used_ == 0.001
    assert "succeeded with penalizer 0.001" in caplog.text
    assert all(np.isfinite(v) and v < 1e6 for v in model.params_.values())
    assert np.isfinite(model.p_alive(rfm)).all()


def test_unremediable_fits_raise_model_error():
    t = np.random.default_rng(0).integers(20, 40, 300).astype(float)
    no_dropout = pd.DataFrame({"frequency": t, "recency": t, "T": t})  # buys every week, no churn
    with pytest.raises(ModelError, match=r"a < 1e-06 .* no customer ever drops out"):
        BetaGeoModel().fit(no_dropout)
    with pytest.raises(ModelError, match=r"Pareto/NBD .*s < 1e-06"):
        ParetoNBDModel().fit(no_dropout)
    with pytest.raises(ModelError, match="penalizer 0.1: the optimiser did not converge"):
        BetaGeoModel(max_iter=1).fit(_homogeneous_rate_rfm())


def test_pareto_predictions_stay_finite_for_busy_customers_and_units_are_consistent(cdnow_rfm):
    """lifetimes' Pareto/NBD predictions overflow in day units for busy customers (e.g. 120+
    purchases, last one on the calibration end day: NaN); the wrapper evaluates in the fitted
    time scale, where they are finite, and the log-likelihood follows the change of units."""
    days = cdnow_rfm.assign(recency=cdnow_rfm["recency"] * 7, T=cdnow_rfm["T"] * 7)
    pn_days = ParetoNBDModel().fit(days)
    busy = pd.DataFrame({"frequency": np.arange(1.0, 272.0), "recency": 272.0, "T": 272.0})
    with np.errstate(all="ignore"):
        raw = pn_days.fitter_.conditional_probability_alive(
            busy["frequency"], busy["recency"], busy["T"])
    assert np.isnan(raw).sum() > 100
    np.testing.assert_allclose(pn_days.p_alive(busy), 1.0)  # bought on the last day: alive
    assert np.isfinite(pn_days.expected_purchases(busy, 30.0)).all()
    pn_weeks = ParetoNBDModel().fit(cdnow_rfm)
    assert pn_days.params_["alpha"] == pytest.approx(7 * pn_weeks.params_["alpha"], rel=1e-4)
    # x purchase-time densities: LL(days) = LL(weeks) - sum(x) * log(7)
    shift = cdnow_rfm["frequency"].sum() * np.log(7)
    assert pn_days.log_likelihood_ == pytest.approx(pn_weeks.log_likelihood_ - shift, abs=0.01)
    bg_days, bg_weeks = BetaGeoModel().fit(days), BetaGeoModel().fit(cdnow_rfm)
    assert bg_days.log_likelihood_ == pytest.approx(bg_weeks.log_likelihood_ - shift, abs=0.01)


def test_homogeneous_spend_is_accepted_at_its_limit_and_logged(caplog):
    rng = np.random.default_rng(0)
    freq = rng.integers(1, 10, 300)
    money = np.array([rng.gamma(4, 10, k).mean() for k in freq])  # same mean for everyone
    rfm = pd.DataFrame({"frequency": freq, "monetary_value": money})
    with caplog.at_level(logging.WARNING, logger="customer360.models.clv"):
        gg = GammaGammaModel().fit(rfm)
    assert "homogeneous limit" in caplog.text
    assert gg.params_["q"] > 1e6
    spend = gg.expected_spend(rfm)
    np.testing.assert_allclose(spend, gg.population_mean_spend_, rtol=1e-4)
    assert gg.population_mean_spend_ == pytest.approx(money.mean(), rel=0.05)


def test_too_few_repeat_customers_and_bad_rows_are_clear_errors():
    few = pd.DataFrame({"frequency": [0, 0, 1], "recency": [0, 0, 2], "T": [5, 5, 5],
                        "monetary_value": [0, 0, 3.0]})
    with pytest.raises(ModelError, match="at least 10 customers with a repeat purchase, got 1 of"):
        BetaGeoModel().fit(few)
    with pytest.raises(ModelError, match="Gamma-Gamma needs at least 10"):
        GammaGammaModel().fit(few)
    bad = pd.DataFrame({"customer_id": ["ok", "broken"], "frequency": [1, 2],
                        "recency": [2, 9], "T": [5, 5]})
    with pytest.raises(ContractError, match=r"recency > T \(e.g. customer ids \['broken'\]\)"):
        BetaGeoModel().fit(bad)
    with pytest.raises(ContractError, match="lacks column 'T'"):
        BetaGeoModel().fit(bad.drop(columns="T"))
    with pytest.raises(ContractError, match="non-finite"):
        BetaGeoModel().fit(bad.assign(T=[5, np.nan]))


def test_unfitted_and_nan_predictions_raise(cdnow_rfm):
    with pytest.raises(ModelError, match="not fitted"):
        BetaGeoModel().p_alive(cdnow_rfm)
    with pytest.raises(ModelError, match="not fitted"):
        GammaGammaModel().expected_spend(cdnow_rfm)
    bg = BetaGeoModel().fit(cdnow_rfm)
    with pytest.raises(ModelError, match=r"NaN or infinite for \d+ customer"):
        bg.expected_purchases(cdnow_rfm, 1e300)
    with pytest.raises(ModelError, match="horizon"):
        bg.expected_purchases(cdnow_rfm, float("nan"))


# --- warehouse scores ---------------------------------------------------------------------------


@functools.cache
def _tiny_tables(extra_future_rows: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """customers + transactions with the contract's column names and types (built once)."""
    rng = np.random.default_rng(11)
    np.random.seed(11)  # lifetimes' simulator draws from the global generator
    sim = beta_geometric_nbd_model(np.full(300, 52.0), 0.5, 4.0, 0.8, 2.5, size=300)
    start = pd.Timestamp("2025-01-01")
    freq = sim["frequency"].to_numpy().astype(int)
    owner = np.repeat(np.arange(300), freq + 1)
    # first purchase on day 0, repeats uniformly inside each customer's active span
    first = np.r_[0, np.cumsum(freq + 1)[:-1]]
    days = rng.uniform(0, 1, len(owner)) * np.repeat(sim["recency"].to_numpy() * 7, freq + 1)
    days[first] = 0.0
    tx = pd.DataFrame({
        "customer_id": [f"C{i:04d}" for i in owner],
        "ts": start + pd.to_timedelta(days, unit="D"),
        "amount": rng.gamma(4, 10, len(owner)) * np.repeat(rng.gamma(3, 1 / 3, 300), freq + 1),
        "is_return": False,
    })
    tx["margin"] = tx["amount"] * 0.3
    # a returns-only customer and a return row of a normal customer
    tx.loc[len(tx)] = ["RET1", start + pd.Timedelta(days=20), -30.0, True, -9.0]
    tx.loc[len(tx)] = ["C0000", start + pd.Timedelta(days=30), -10.0, True, -3.0]
    if extra_future_rows:
        tx.loc[len(tx)] = ["C0001", pd.Timestamp("2026-01-05"), 500.0, False, 150.0]
        tx.loc[len(tx)] = ["C0002", pd.Timestamp("2025-12-31 23:00"), 500.0, False, 150.0]
    customers = pd.DataFrame({"customer_id": [f"C{i:04d}" for i in range(300)] + ["RET1", "NEW"],
                              "signup_date": [start.date()] * 302})
    return tx, customers


def _tiny_warehouse(path, *, extra_future_rows: bool = False) -> duckdb.DuckDBPyConnection:
    """A real DuckDB file holding the tiny customers + transactions tables."""
    tx, customers = _tiny_tables(extra_future_rows)
    con = duckdb.connect(str(path))
    con.register("tx_df", tx)
    con.register("cu_df", customers)
    con.execute("CREATE TABLE transactions AS SELECT * FROM tx_df")
    con.execute("CREATE TABLE customers AS SELECT * FROM cu_df")
    return con


def test_probabilistic_scores_cover_everyone_without_nan_or_leakage(tmp_path):
    con = _tiny_warehouse(tmp_path / "w.duckdb")
    as_of = "2025-12-31"
    scores = probabilistic_scores(con, as_of, horizon_days=90, discount_rate=0.1)
    cols = ["customer_id", "prob__p_alive", purchases_column(90), "prob__expected_spend",
            "prob__clv"]
    assert list(scores.columns) == cols
    assert len(scores) == 302 and scores["customer_id"].is_unique
    assert not scores.isna().any().any()
    no_history = scores.set_index("customer_id").loc[["RET1", "NEW"]]
    assert (no_history[["prob__p_alive", purchases_column(90), "prob__clv"]] == 0).all().all()
    assert no_history["prob__expected_spend"].nunique() == 1
    buyers = scores[~scores.customer_id.isin(["RET1", "NEW"])]
    assert (buyers["prob__clv"] > 0).all()
    assert buyers["prob__p_alive"].between(0, 1).all()
    # rows on or after as_of must not change anything
    con2 = _tiny_warehouse(tmp_path / "w2.duckdb", extra_future_rows=True)
    later = probabilistic_scores(con2, as_of, horizon_days=90, discount_rate=0.1)
    pd.testing.assert_frame_equal(scores, later)
    # margin_rate defaults to the warehouse's margin share (0.3 here): CLV scales linearly
    full = probabilistic_scores(con, as_of, horizon_days=90, discount_rate=0.1, margin_rate=1.0)
    np.testing.assert_allclose(full["prob__clv"] * 0.3, scores["prob__clv"], rtol=1e-9)


# --- BYO CLI and the MLflow-logged warehouse evaluation -----------------------------------------


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory) -> Path:
    """A user's transaction log: ~300 simulated customers, returns as negative amounts."""
    folder = tmp_path_factory.mktemp("byo")
    con = _tiny_warehouse(folder / "src.duckdb")
    path = folder / "my transactions.csv"
    con.execute(
        "SELECT customer_id AS client, strftime(ts, '%Y-%m-%d') AS order_date, amount AS value "
        "FROM transactions ORDER BY ts"
    ).df().to_csv(path, index=False)
    return path


def _invoke(*args: str):
    from typer.testing import CliRunner

    from customer360.cli import app

    return CliRunner().invoke(app, ["clv", "fit", *args])


def test_byo_cli_with_holdout_writes_params_customers_and_plots(small_csv, tmp_path):
    out = tmp_path / "out"
    result = _invoke(
        "--transactions", str(small_csv), "--customer-col", "client", "--date-col", "order_date",
        "--amount-col", "value", "--calibration-end", "2025-08-31", "--holdout-end", "2025-12-31",
        "--time-unit", "weeks", "--discount-rate", "0.08", "--output", str(out),
    )
    assert result.exit_code == 0, result.output
    assert "Fitted models" in result.output and "Holdout" in result.output
    params = json.loads((out / "params.json").read_text())
    for name, keys in {"bgnbd": {"r", "alpha", "a", "b"}, "pareto_nbd": {"r", "alpha", "s", "beta"},
                       "gamma_gamma": {"p", "q", "v"}}.items():
        assert set(params["models"][name]["params"]) == keys
        assert params["models"][name]["log_likelihood"] < 0
    hold = params["holdout"]
    customers = pd.read_parquet(out / "customers.parquet")
    actual = customers["actual_purchases_holdout"].sum()
    assert hold["actual_total_repeat_purchases"] == actual > 0
    assert hold["duration"] == pytest.approx(122 / 7)
    for name in ("bgnbd", "pareto_nbd"):
        assert hold[name]["predicted_total_repeat_purchases"] == pytest.approx(
            customers["expected_purchases" + ("" if name == "bgnbd" else "_pareto")].sum())
        assert hold[name]["mae_per_customer"] == pytest.approx(
            (customers["expected_purchases"] - customers["actual_purchases_holdout"]).abs().mean()
        ) if name == "bgnbd" else hold[name]["mae_per_customer"] > 0
    assert params["input"]["return_rows_excluded"] == 2
    assert params["clv"]["annual_discount_rate"] == 0.08
    # every customer of the file is present; the returns-only one has the documented defaults
    assert customers["customer_id"].nunique() == 301
    ret = customers.set_index("customer_id").loc["RET1"]
    assert not ret["has_purchases"] and ret["p_alive"] == 0 and ret["clv"] == 0
    scored = customers[customers["has_purchases"]]
    assert not scored[["p_alive", "expected_purchases", "expected_spend", "clv"]].isna().any().any()
    for png in ("p_alive_matrix.png", "frequency_recency_matrix.png", "holdout_by_frequency.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--customer-col", "customer"], r"no column\(s\) 'customer'; its columns are: client, "
                                         r"order_date, value"),
        (["--calibration-end", "2025-08-31", "--holdout-end", "2025-06-30"],
         "--holdout-end 2025-06-30 must be after --calibration-end 2025-08-31"),
        (["--calibration-end", "2025-13-45"], "calibration_end='2025-13-45' is not a date"),
        (["--time-unit", "months"], "--time-unit must be days or weeks"),
    ],
)
def test_byo_cli_rejects_bad_arguments_clearly(small_csv, tmp_path, args, message):
    base = {"--customer-col": "client", "--date-col": "order_date", "--amount-col": "value"}
    given = dict(zip(args[::2], args[1::2], strict=True))
    merged = [x for k, v in {**base, **given}.items() for x in (k, v)]
    result = _invoke("--transactions", str(small_csv), "--output", str(tmp_path / "o"), *merged)
    assert isinstance(result.exception, ContractError), result.output
    assert re.search(message, str(result.exception))


def test_byo_cli_unparseable_dates_and_too_few_repeaters(tmp_path):
    bad_dates = tmp_path / "bad.csv"
    bad_dates.write_text("id,day,amt\na,2024-01-01,3\nb,31/02/2024,4\n")
    result = _invoke("--transactions", str(bad_dates), "--customer-col", "id", "--date-col",
                     "day", "--amount-col", "amt", "--output", str(tmp_path / "o"))
    assert isinstance(result.exception, ContractError)
    assert re.search(r"bad.csv: 1 row.*'31/02/2024'.*customer 'b'", str(result.exception))
    few = tmp_path / "few.csv"
    few.write_text("id,day,amt\n" + "".join(f"c{i},2024-01-0{1 + i % 3},5\n" for i in range(30))
                   + "c1,2024-02-01,5\n")
    result = _invoke("--transactions", str(few), "--customer-col", "id", "--date-col", "day",
                     "--amount-col", "amt", "--output", str(tmp_path / "o"))
    assert isinstance(result.exception, ModelError)
    assert "at least 10 customers with a repeat purchase, got 1 of 30" in str(result.exception)


def test_clv_warehouse_cli_evaluates_and_logs_to_mlflow(tmp_path):
    import mlflow
    from typer.testing import CliRunner

    from customer360.cli import app

    _tiny_warehouse(tmp_path / "w.duckdb").close()
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [
        "clv", "warehouse", "--as-of", "2026-01-01", "--holdout-days", "120",
        "--db", str(tmp_path / "w.duckdb"), "--output", str(out),
    ])
    assert result.exit_code == 0, result.output
    run_id = re.search(r"MLflow run (\w+)", result.output).group(1)
    run = mlflow.get_run(run_id)
    assert mlflow.get_experiment(run.info.experiment_id).name == "clv_probabilistic"
    params = json.loads((out / "params.json").read_text())
    metrics = run.data.metrics
    assert metrics["bgnbd_log_likelihood"] == pytest.approx(
        params["models"]["bgnbd"]["log_likelihood"])
    assert metrics["holdout_actual_total"] > 0
    # the probabilistic models beat the no-dropout rate baseline on the holdout
    assert metrics["bgnbd_holdout_mae"] < metrics["baseline_rate_holdout_mae"]
    assert run.data.tags["as_of"] == "2026-01-01" and "git_commit" in run.data.tags
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "plots")}
    assert artifacts == {"plots/p_alive_matrix.png", "plots/frequency_recency_matrix.png",
                         "plots/holdout_by_frequency.png"}
    assert params["input"]["holdout_end"] == "2025-12-31"


def test_missing_warehouse_tables_are_a_clear_error(tmp_path):
    from customer360.errors import WarehouseError

    con = duckdb.connect(str(tmp_path / "empty.duckdb"))
    with pytest.raises(WarehouseError, match="lacks table"):
        probabilistic_scores(con, "2026-01-01")


def test_scores_on_the_synthetic_warehouse_track_the_oracles(small_warehouse_master):
    """On generated data the BG/NBD + GG scores rank customers like the generator's truth."""
    from customer360.data.oracle import oracle_churn_probability, oracle_expected_margin
    from customer360.data.warehouse import connect

    with connect(small_warehouse_master, read_only=True) as con:
        as_of = con.execute("SELECT value FROM warehouse_meta WHERE key = 'today'").fetchall()[0][0]
        scores = probabilistic_scores(con, as_of)
        churn = oracle_churn_probability(con, as_of, 90)
        margin = oracle_expected_margin(con, as_of, 365)
        n_signed_up = con.execute(
            "SELECT count(*) FROM customers WHERE signup_date < ?", [as_of]).fetchall()[0][0]
    assert len(scores) == n_signed_up and not scores.isna().any().any()
    both = scores.merge(churn, on="customer_id").merge(margin, on="customer_id")
    rho_churn = both[purchases_column(90)].corr(both["p_churn"], method="spearman")
    rho_value = both["prob__clv"].corr(both["expected_margin"], method="spearman")
    assert rho_churn < -0.5, rho_churn
    assert rho_value > 0.5, rho_value
