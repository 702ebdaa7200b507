"""ML-CLV stacked on the probabilistic purchase model, for ``clv fit`` on a user's log (issue 13).

BG/NBD says how many purchases each customer should make over a horizon; its assumptions
(stationary rates, one dropout process) leave a pattern in its errors that depends on the
customer's history. The stacked model learns that pattern by *backtesting inside the
calibration period*: cut the calibration period at an earlier date, summarise the log up to
that cut-off (RFM and a BG/NBD fitted on those rows only), and take as target the purchases
each customer made between the cut-off and the calibration end. A Poisson LightGBM with the
BG/NBD forecast as its offset (``init_score = log E[N]``) learns a multiplicative correction of
BG/NBD from horizon-free inputs (frequency, recency, age, the gap since the last purchase, the
purchase rate, P(alive), the one-unit BG/NBD rate). The correction is then applied to the
BG/NBD fitted on the whole calibration period, for the holdout (or CLV) horizon:

    E_ml[N(h)] = E_bgnbd[N(h)] * exp(f(x)).

No row after the calibration end is read; the holdout only scores the result.

The same backtest also ranks the candidate forecasts (BG/NBD, Pareto/NBD, the stacked model)
by their mean Poisson negative log-likelihood on the backtest targets (the stacked model's
out-of-fold figure from its cross-validation) and names the best one ``selected``. The score
is a proper one for a mean forecast; per-customer MAE is not: on counts that are mostly zero
it is lowest for a forecast of 0 for nearly everyone (the median), so it rewards forecasts
whose total is too low, and it is not used to choose.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from customer360.errors import ModelError
from customer360.features.rfm import rfm_summary
from customer360.models.clv import DAYS_PER_UNIT, BetaGeoModel, ParetoNBDModel

log = logging.getLogger(__name__)

RECENT_DAYS = (14, 30, 60, 90, 180)
FEATURES = (
    "frequency", "recency", "T", "gap", "rate", "p_alive", "log_rate_1",
    *(f"purchase_days_{d}d" for d in RECENT_DAYS),
)
MIN_BACKTEST_CUSTOMERS = 200
LGB_PARAMS = {
    "objective": "poisson",
    "metric": "poisson",
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_data_in_leaf": 50,
    "lambda_l2": 1.0,
    "feature_fraction": 0.9,
    "verbosity": -1,
    "deterministic": True,
}


@dataclass
class StackedPurchases:
    """A fitted stacked purchase model: the booster of the log-correction, how it was trained
    (cut-off, window, rows, rounds) and what it says on the calibration rows."""

    booster: Any
    cutoff: dt.date
    window: float
    rows: int
    rounds: int
    info: dict[str, Any] = field(default_factory=dict)

    def correction(self, X: np.ndarray) -> np.ndarray:
        """``exp(f(x))`` per row of ``X`` (:func:`stack_features`): the factor applied to
        BG/NBD's forecast."""
        raw = self.booster.predict(X, raw_score=True)
        return np.exp(np.clip(raw, -5.0, 5.0))


def recent_purchase_days(
    con, purchases: pd.DataFrame, rfm: pd.DataFrame, *, customer_col: str, date_col: str,
    end: dt.date, time_unit: str, days: int,
) -> np.ndarray:
    """Purchase days of each ``rfm`` customer in the ``days`` days up to ``end`` (inclusive).

    A customer with no purchase before the window made all of them inside it."""
    window = rfm_summary(
        con, purchases, customer_col=customer_col, date_col=date_col, amount_col=None,
        calibration_end=end - dt.timedelta(days=days), observation_end=end, time_unit=time_unit,
    )
    inside = pd.Series(window["frequency_holdout"].to_numpy(), index=window["customer_id"])
    counts = inside.reindex(rfm["customer_id"].to_numpy()).to_numpy(dtype=float)
    return np.where(np.isnan(counts), rfm["frequency"].to_numpy(dtype=float) + 1.0, counts)


def stack_features(rfm: pd.DataFrame, bg: BetaGeoModel, recent: list[np.ndarray]) -> np.ndarray:
    """The horizon-free inputs of the correction (columns ``FEATURES``), contiguous float64;
    ``recent``: :func:`recent_purchase_days` for each of ``RECENT_DAYS``."""
    freq = rfm["frequency"].to_numpy(dtype=float)
    rec = rfm["recency"].to_numpy(dtype=float)
    age = rfm["T"].to_numpy(dtype=float)
    rate = np.where(age > 0, freq / np.maximum(age, 1e-12), 0.0)
    one_unit = bg.expected_purchases(rfm, 1.0)
    return np.ascontiguousarray(
        np.column_stack(
            [freq, rec, age, age - rec, rate, bg.p_alive(rfm), np.log(one_unit + 1e-9), *recent]
        ),
        dtype=np.float64,
    )


def poisson_nll(expected: np.ndarray, actual: np.ndarray) -> float:
    """Mean Poisson negative log-likelihood ``mu - y log mu`` (without ``log y!``), the figure
    LightGBM's ``poisson`` metric reports, so a cross-validated booster and a fitted BG/NBD are
    scored on the same scale."""
    mu = np.maximum(np.asarray(expected, dtype=float), 1e-9)
    return float(np.mean(mu - np.asarray(actual, dtype=float) * np.log(mu)))


def backtest_scores(
    forecasts: dict[str, np.ndarray], actual: np.ndarray
) -> dict[str, dict[str, float]]:
    """Per candidate forecast of the backtest targets: Poisson NLL, total and MAE."""
    return {
        name: {
            "poisson_nll": poisson_nll(pred, actual),
            "predicted_total": float(np.sum(pred)),
            "mae_per_customer": float(np.mean(np.abs(pred - actual))),
        }
        for name, pred in forecasts.items()
    }


def backtest_window(age_max: float, horizon: float) -> float:
    """The backtest target window: the horizon, but at most half the oldest customer's age
    (so the earlier cut-off still has histories to learn from)."""
    return float(min(horizon, 0.5 * age_max))


def fit_stacked_purchases(
    con,
    purchases: pd.DataFrame,
    *,
    customer_col: str,
    date_col: str,
    calibration_end: str | dt.date,
    time_unit: str,
    horizon: float,
    age_max: float,
    transaction_kwargs: dict[str, Any],
    seed: int = 0,
    folds: int = 5,
) -> StackedPurchases:
    """Backtest inside the calibration period and fit the correction (see the module text).

    Raises :class:`ModelError` when the earlier cut-off leaves too few customers or the
    BG/NBD cannot be fitted there; the caller reports the stacked model as skipped.
    """
    import lightgbm as lgb

    window = backtest_window(age_max, horizon)
    unit_days = DAYS_PER_UNIT[time_unit]
    end = pd.Timestamp(calibration_end).date()
    cutoff = end - dt.timedelta(days=max(1, int(round(window * unit_days))))
    early = rfm_summary(
        con,
        purchases,
        customer_col=customer_col,
        date_col=date_col,
        amount_col=None,
        calibration_end=cutoff,
        observation_end=end,
        time_unit=time_unit,
    )
    if len(early) < MIN_BACKTEST_CUSTOMERS:
        raise ModelError(
            f"the backtest cut-off {cutoff} leaves {len(early)} customer(s) with purchases "
            f"(need {MIN_BACKTEST_CUSTOMERS}); use a longer calibration period"
        )
    bg_early = BetaGeoModel(**transaction_kwargs).fit(early)
    window = float(early["duration_holdout"].iloc[0])
    base = bg_early.expected_purchases(early, window)
    target = early["frequency_holdout"].to_numpy(dtype=float)
    X = history_features(
        con, purchases, early, bg_early, customer_col=customer_col, date_col=date_col,
        end=cutoff, time_unit=time_unit,
    )
    offset = np.log(np.maximum(base, 1e-9))
    params = {**LGB_PARAMS, "seed": seed, "num_threads": 1}
    data = lgb.Dataset(X, target, init_score=offset, feature_name=list(FEATURES),
                       free_raw_data=False)
    cv = lgb.cv(
        params,
        data,
        num_boost_round=1000,
        nfold=folds,
        stratified=False,
        seed=seed,
        callbacks=[lgb.early_stopping(50, verbose=False)],
    )
    key = next(k for k in cv if k.endswith("poisson-mean"))
    rounds = max(1, int(np.argmin(cv[key])) + 1)
    booster = lgb.train(params, data, num_boost_round=rounds)
    fitted = base * np.exp(booster.predict(X, raw_score=True))
    forecasts = {"bgnbd": base}
    try:
        forecasts["pareto_nbd"] = (
            ParetoNBDModel(**transaction_kwargs).fit(early).expected_purchases(early, window)
        )
    except ModelError as exc:
        log.warning("Pareto/NBD not scored in the backtest: %s", exc)
    scores = backtest_scores(forecasts, target)
    # the stacked model's score is out of fold (lgb.cv), the others' in sample: 2-4 parameters
    scores["ml_stacked"] = {
        "poisson_nll": float(cv[key][rounds - 1]),
        "predicted_total": float(fitted.sum()),
        "mae_per_customer": float(np.mean(np.abs(fitted - target))),
    }
    info = {
        "cutoff": str(cutoff),
        "window": window,
        "customers": len(early),
        "rounds": rounds,
        "backtest_actual_total": float(target.sum()),
        "backtest_bgnbd_total": float(base.sum()),
        "backtest_stacked_total_in_sample": float(fitted.sum()),
        "backtest_cv_poisson": float(cv[key][rounds - 1]),
        "scores": scores,
        "selected": min(scores, key=lambda name: scores[name]["poisson_nll"]),
        "selected_by": "lowest mean Poisson negative log-likelihood on the backtest targets",
    }
    log.info("stacked purchase model: %s", info)
    return StackedPurchases(booster, cutoff, window, len(early), rounds, info)


def history_features(
    con, purchases: pd.DataFrame, rfm: pd.DataFrame, bg: BetaGeoModel, *, customer_col: str,
    date_col: str, end: dt.date | str, time_unit: str,
) -> np.ndarray:
    """:func:`stack_features` of the ``rfm`` customers as of ``end`` (their summary, the BG/NBD
    fitted up to ``end`` and their recent purchase days)."""
    end = pd.Timestamp(end).date()
    recent = [
        recent_purchase_days(
            con, purchases, rfm, customer_col=customer_col, date_col=date_col, end=end,
            time_unit=time_unit, days=days,
        )
        for days in RECENT_DAYS
    ]
    return stack_features(rfm, bg, recent)


# --- the spend model a log allows ---------------------------------------------------------------


@dataclass
class ConstantSpend:
    """Stand-in for Gamma-Gamma when every purchase has the same amount: nothing to learn, so
    every customer's expected spend is that amount (``spend``)."""

    spend: float
    n_excluded_: int = 0

    @property
    def population_mean_spend_(self) -> float:
        return self.spend

    def expected_spend(self, X: pd.DataFrame) -> np.ndarray:
        return np.full(len(X), self.spend)


def spend_model(
    rfm: pd.DataFrame, fit_gamma_gamma, *, constant_amount: bool = False
) -> tuple[Any, str | None]:
    """The spend model for ``rfm`` and, when Gamma-Gamma is not fitted, why.

    No ``monetary_value`` column (a log without amounts): ``None``, purchase models only.
    Spend that never varies (``constant_amount``: every purchase row of the log has the same
    amount, or every repeat customer the same mean spend): a warning and
    :class:`ConstantSpend` at the repeat customers' mean spend per purchase day. Otherwise
    ``fit_gamma_gamma(rfm)``.
    """
    if "monetary_value" not in rfm.columns:
        return None, (
            "skipped: the log has no amount column, so only the purchase models are fitted "
            "(expected spend and CLV are left empty); pass --amount-col to add them"
        )
    money = rfm["monetary_value"].to_numpy(dtype=float)
    repeat = (rfm["frequency"].to_numpy() > 0) & np.isfinite(money) & (money > 0)
    same = repeat.any() and np.ptp(money[repeat]) <= 1e-9 * max(1.0, abs(money[repeat]).max())
    if constant_amount or same:
        value = float(money[repeat].mean()) if repeat.any() else float(np.nanmean(money))
        message = (
            "not fitted: spend never varies (every purchase has the same amount), so there is "
            f"nothing for Gamma-Gamma to learn; CLV uses the mean spend per purchase day, {value:g}"
        )
        log.warning("Gamma-Gamma %s", message)
        return ConstantSpend(value), message
    return fit_gamma_gamma(rfm), None
