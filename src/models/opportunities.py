"""Opportunity scoring (issue 15): point-in-time stage rows, win probability per stage, time to
close from a survival model that keeps open opportunities as censored, expected close date
with an interval, and the pipeline forecast per month with an interval.

Pure: frames in, frames out. ``opportunities``, ``opportunity_stages`` and ``leads`` are the
raw tables. The survival model is scikit-survival's Cox proportional-hazards estimator; open
opportunities enter it as censored at the as-of date, never as lost. The win model trains only
on opportunities whose outcome was known by the as-of date (an open one is not a loss).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from customer360.data import contracts as k
from customer360.models.segments import SalesCycleConfig, load_segments_config

STAGE_FEATURES_DESCRIPTIONS: dict[str, str] = {
    "opp__stage": "stage",
    "opp__stage_index": "how far through the stages",
    "opp__days_in_stage": "days in the current stage",
    "opp__log_pace": "days per stage so far",
    "opp__log_days_in_stage": "days in the current stage (log)",
    "opp__age_days": "days since the opportunity opened",
    "opp__log_amount": "deal amount",
    "opp__expected_close_in_days": "days to the seller's expected close date",
    "opp__lead_type": "account type",
    "opp__company_size": "company size",
    "opp__industry": "industry",
    "opp__decision_timeframe": "decision timeframe",
    "opp__need_identified": "main need identified",
    "opp__cost_of_postponing": "cost of postponing",
    "opp__purchase_influence": "contact's influence on the purchase",
}
OPPORTUNITY_FEATURES = tuple(STAGE_FEATURES_DESCRIPTIONS)
SURVIVAL_CATEGORICALS = ("opp__stage", "opp__lead_type", "opp__decision_timeframe")
SURVIVAL_NUMERICS = ("opp__log_amount", "opp__log_pace", "opp__log_days_in_stage")
DAY = pd.Timedelta(days=1)


def _days(delta: pd.Series) -> np.ndarray:
    return delta.dt.total_seconds().to_numpy() / 86_400


def stage_rows(
    opportunities: pd.DataFrame,
    stages: pd.DataFrame,
    leads: pd.DataFrame | None,
    as_of: pd.Timestamp,
    *,
    every_stage: bool,
) -> pd.DataFrame:
    """Point-in-time rows of opportunities opened before ``as_of``.

    ``every_stage=False``: one row per opportunity, at its stage as of ``as_of`` (for scoring
    open ones). ``every_stage=True``: one row per stage entered before ``as_of``, with the
    features at that stage's entry (for training). Each row carries ``opportunity_id``,
    ``entered_at`` (of its stage), ``observed_at`` (entry for training rows, ``as_of`` for
    scoring rows), the outcome known at ``as_of`` (``known_outcome``: won / lost / open;
    ``known_closed_at``), ``amount`` and :data:`OPPORTUNITY_FEATURES`.
    """
    as_of = pd.Timestamp(as_of)
    opps = opportunities[opportunities["created_at"] < as_of]
    # a hash lookup: Series.isin on Arrow strings walks the values in Python
    known = pd.Index(opps["opportunity_id"]).get_indexer(stages["opportunity_id"]) >= 0
    st = stages[(stages["entered_at"] < as_of).to_numpy() & known].copy()
    st["stage_index"] = pd.Categorical(st["stage"], categories=list(k.OPPORTUNITY_STAGES)).codes
    st = st.sort_values(["opportunity_id", "entered_at", "stage_index"], kind="stable")
    if not every_stage:
        st = st.groupby("opportunity_id", sort=False).tail(1)
    rows = st.merge(opps, on="opportunity_id", how="inner", suffixes=("", "_opp"))
    closed = rows["closed_at"].notna() & (rows["closed_at"] < as_of)
    rows["known_outcome"] = np.where(closed, rows["outcome"], "open")
    rows["known_closed_at"] = rows["closed_at"].where(closed)
    if not every_stage:
        rows = rows[rows["known_outcome"] == "open"]
    rows = rows.reset_index(drop=True)
    observed = rows["entered_at"] if every_stage else pd.Series(as_of, index=rows.index)
    rows["observed_at"] = observed
    lead_cols = ["lead_id", "lead_type", "company_size", "industry", "qualified_at",
                 "decision_timeframe", "need_identified", "cost_of_postponing",
                 "purchase_influence"]
    if leads is not None and not leads.empty:
        info = rows[["lead_id"]].merge(leads[lead_cols], on="lead_id", how="left")
    else:
        info = pd.DataFrame({c: pd.Series([None] * len(rows), dtype=object) for c in lead_cols})
    timeframe_known = info["qualified_at"].notna().to_numpy() & (
        pd.to_datetime(info["qualified_at"]) < observed.to_numpy()).to_numpy()
    expected = pd.to_datetime(rows["expected_close_date"])

    def text(values: pd.Series, missing: str) -> np.ndarray:
        return values.astype(object).where(values.notna(), missing).astype(str).to_numpy()

    out = pd.DataFrame({
        "opportunity_id": rows["opportunity_id"],
        "entered_at": rows["entered_at"],
        "observed_at": observed.to_numpy(),
        "created_at": rows["created_at"],
        "amount": rows["amount"].to_numpy(dtype=float),
        "known_outcome": rows["known_outcome"].to_numpy(),
        "known_closed_at": rows["known_closed_at"],
        "opp__stage": rows["stage"].astype(str).to_numpy(),
        "opp__stage_index": rows["stage_index"].to_numpy(dtype=float),
        "opp__days_in_stage": _days(observed - rows["entered_at"]),
        "opp__log_days_in_stage": np.log1p(np.maximum(_days(observed - rows["entered_at"]), 0)),
        "opp__log_pace": np.log1p(_days(rows["entered_at"] - rows["created_at"])
                                  / np.maximum(rows["stage_index"].to_numpy(dtype=float), 1)),
        "opp__age_days": _days(observed - rows["created_at"]),
        "opp__log_amount": np.log1p(rows["amount"].to_numpy(dtype=float)),
        "opp__expected_close_in_days": _days(expected - observed),
        "opp__lead_type": text(info["lead_type"], "unknown"),
        "opp__company_size": text(info["company_size"], "none"),
        "opp__industry": text(info["industry"], "none"),
        "opp__decision_timeframe": np.where(
            timeframe_known, text(info["decision_timeframe"], "unknown"), "unknown"),
        "opp__need_identified": np.where(
            timeframe_known, text(info["need_identified"].map({True: "yes", False: "no"}),
                                  "unknown"), "unknown"),
        "opp__cost_of_postponing": np.where(
            timeframe_known, text(info["cost_of_postponing"], "unknown"), "unknown"),
        "opp__purchase_influence": np.where(
            timeframe_known, text(info["purchase_influence"], "unknown"), "unknown"),
    })
    # the close stage is the win itself: nothing left to predict there
    return out[out["opp__stage"] != "close"].reset_index(drop=True)


def win_labels(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``(y, known)``: 1 for won, 0 for lost, and the mask of rows whose outcome is known.
    Open (censored) opportunities are not known: they are left out, never counted as lost."""
    known = (rows["known_outcome"] != "open").to_numpy()
    return (rows["known_outcome"] == "won").to_numpy(dtype=int), known


def survival_target(rows: pd.DataFrame, as_of: pd.Timestamp) -> tuple[np.ndarray, np.ndarray]:
    """``(event, days)``: closed (won or lost) by ``as_of`` and the days from the stage entry
    to the close, or to ``as_of`` for the open (censored) ones."""
    event = rows["known_closed_at"].notna().to_numpy()
    end = rows["known_closed_at"].where(event, pd.Timestamp(as_of))
    days = np.maximum(_days(end - rows["entered_at"]), 0.01)
    return event, days


def _design(rows: pd.DataFrame, levels: dict[str, list[str]] | None = None):
    levels = levels or {c: sorted(rows[c].unique()) for c in SURVIVAL_CATEGORICALS}
    parts = [rows[list(SURVIVAL_NUMERICS)].to_numpy(dtype=float)]
    for col, values in levels.items():
        codes = pd.Categorical(rows[col], categories=values).codes
        onehot = np.zeros((len(rows), max(len(values) - 1, 0)))
        for j in range(1, len(values)):
            onehot[:, j - 1] = codes == j
        parts.append(onehot)
    return np.hstack(parts), levels


def _estimator_base():
    from sklearn.base import BaseEstimator

    return BaseEstimator


class TimeToClose(_estimator_base()):
    """Cox proportional-hazards time from an observation of an open opportunity to its won
    close, with opportunities still open censored; a thin wrapper over scikit-survival.

    Examples
    --------
    >>> ttc = TimeToClose(alpha=0.1).fit(rows, event, days)       # doctest: +SKIP
    >>> ttc.close_quantiles(open_rows, [0.1, 0.5, 0.9])            # doctest: +SKIP
    """

    def __init__(self, *, alpha: float = 0.1) -> None:
        self.alpha = alpha

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_")

    def fit(self, rows: pd.DataFrame, event: np.ndarray, days: np.ndarray) -> TimeToClose:
        from sksurv.linear_model import CoxPHSurvivalAnalysis
        from sksurv.util import Surv

        X, self.levels_ = _design(rows)
        self.model_ = CoxPHSurvivalAnalysis(alpha=self.alpha).fit(
            X, Surv.from_arrays(event=event.astype(bool), time=days))
        self.times_ = self.model_.unique_times_
        return self

    def survival(self, rows: pd.DataFrame) -> np.ndarray:
        """S(t) of each row at :attr:`times_`, shape (n, len(times_))."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "model_")
        X, _ = _design(rows, self.levels_)
        return self.model_.predict_survival_function(X, return_array=True)

    def conditional_survival(self, rows: pd.DataFrame, grid: np.ndarray) -> np.ndarray:
        """P(still not won ``grid`` days after the row's observation), shape (n, len(grid)).

        The model is fitted on landmark rows (open opportunities observed at past dates,
        their stage and days in it as covariates), so its time origin is the observation
        itself: no conditioning on time already spent is needed. Computed as
        ``S0(t) ** exp(x @ coef)`` at ``grid`` only (what :meth:`survival` gives at every
        event time, which is an (n, event times) array: gigabytes at 50k rows).
        """
        base = self._baseline_at(grid)
        with np.errstate(divide="ignore", over="ignore"):
            return np.clip(base[None, :] ** self._risk(rows)[:, None], 0.0, 1.0)

    def _risk(self, rows: pd.DataFrame) -> np.ndarray:
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "model_")
        X, _ = _design(rows, self.levels_)
        return np.exp(self.model_.predict(X))

    def _baseline_at(self, grid: np.ndarray) -> np.ndarray:
        """The baseline survival S0 at ``grid`` days: 1 before the first event time, its last
        value after the last one."""
        s0 = self.model_.baseline_survival_
        idx = np.searchsorted(s0.x, np.asarray(grid, dtype=float), side="right") - 1
        return np.where(idx < 0, 1.0, s0.y[np.clip(idx, 0, None)])

    def close_quantiles(self, rows: pd.DataFrame, quantiles, horizon_days: int = 1500
                        ) -> np.ndarray:
        """Days from now to the close at each quantile (NaN: beyond ``horizon_days``): the
        first whole day ``t`` with ``S(t) <= 1 - q``, i.e. ``-log S0(t) >= -log(1 - q) /
        exp(x @ coef)``, found by a binary search on the day grid (no (n, days) array)."""
        grid = np.arange(1, horizon_days + 1, dtype=float)
        with np.errstate(divide="ignore"):
            hazard = -np.log(self._baseline_at(grid))  # non-decreasing in t
        risk = self._risk(rows)
        out = np.full((len(rows), len(quantiles)), np.nan)
        for j, q in enumerate(quantiles):
            first = np.searchsorted(hazard, -np.log1p(-q) / risk, side="left")
            out[:, j] = np.where(first < len(grid), grid[np.minimum(first, len(grid) - 1)],
                                 np.nan)
        return out


def month_starts(as_of: pd.Timestamp, months: int) -> pd.DatetimeIndex:
    """The first days of the ``months`` calendar months after ``as_of``'s month, plus the
    following start (``months + 1`` edges); ``as_of`` itself when it is a month start."""
    as_of = pd.Timestamp(as_of)
    first = as_of if as_of == as_of.to_period("M").to_timestamp() else (
        as_of.to_period("M") + 1).to_timestamp()
    return pd.date_range(first, periods=months + 1, freq="MS")


def close_month_probabilities(
    ttc: TimeToClose, rows: pd.DataFrame, as_of: pd.Timestamp, edges: pd.DatetimeIndex
) -> np.ndarray:
    """P(an open row closes in each month between ``edges``), shape (n, len(edges) - 1)."""
    offsets = np.asarray([(e - pd.Timestamp(as_of)) / DAY for e in edges], dtype=float)
    cond = ttc.conditional_survival(rows, np.maximum(offsets, 0.0))
    return np.clip(cond[:, :-1] - cond[:, 1:], 0.0, 1.0)


def pipeline_forecast(
    amount: np.ndarray,
    p_win: np.ndarray,
    p_month: np.ndarray,
    edges: pd.DatetimeIndex,
    *,
    interval: float = 0.8,
    draws: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Expected won amount per month, with a central ``interval``: per month, the won amount
    is a sum of independent deals, each won in that month with probability
    ``p_win * p_month`` (outcome and timing taken as independent given the features).
    Monte Carlo draws below 20M deal-draws, otherwise the normal approximation."""
    q = np.asarray(p_win)[:, None] * np.asarray(p_month)
    a = np.asarray(amount, dtype=float)
    lo_q, hi_q = (1 - interval) / 2, 1 - (1 - interval) / 2
    rng = np.random.default_rng(seed)
    rows = []
    for m in range(q.shape[1]):
        mean = float(a @ q[:, m])
        if len(a) * draws <= 20_000_000:
            wins = rng.random((draws, len(a))) < q[:, m][None, :]
            totals = wins.astype(float) @ a
            lo, hi = np.quantile(totals, [lo_q, hi_q])
        else:
            from scipy.stats import norm

            sd = float(np.sqrt((a**2) @ (q[:, m] * (1 - q[:, m]))))
            lo = max(0.0, mean + norm.ppf(lo_q) * sd)
            hi = mean + norm.ppf(hi_q) * sd
        rows.append({"month": edges[m].strftime("%Y-%m"), "expected_won": mean,
                     "low": float(lo), "high": float(hi), "deals": int((q[:, m] > 0).sum())})
    return pd.DataFrame(rows)


CYCLE_CLASSES = ("short", "intermediate", "long")


def sales_cycle_classes(
    opportunities: pd.DataFrame,
    predicted_close: pd.DataFrame | None = None,
    limits: SalesCycleConfig | None = None,
) -> pd.DataFrame:
    """Sales-cycle class per customer: the median over its opportunities of the cycle from
    opening to a won close (observed), or to the predicted close date of an open one
    (``predicted_close``: ``opportunity_id``, ``expected_close_date``) when it has no won deal
    yet. Returns ``customer_id``, ``cycle_days``, ``cycle_class``, ``cycle_source``.

    The classes use ``limits`` (default: ``sales_cycle`` of ``configs/segments.yaml``), the
    thresholds :func:`customer360.models.segments.classify` applies to ``cycle_days``: one rule.

    Examples
    --------
    >>> opps = pd.DataFrame({"opportunity_id": ["a", "b"], "customer_id": ["C1", "C2"],
    ...     "created_at": pd.to_datetime(["2025-01-01", "2025-01-01"]),
    ...     "closed_at": pd.to_datetime(["2025-02-01", "2026-01-01"]), "outcome": ["won"] * 2})
    >>> sales_cycle_classes(opps)["cycle_class"].tolist()
    ['short', 'long']
    """
    opps = opportunities.dropna(subset=["customer_id"])
    won = opps[opps["outcome"] == "won"]
    observed = pd.DataFrame({
        "customer_id": won["customer_id"],
        "cycle_days": _days(won["closed_at"] - won["created_at"]),
        "cycle_source": "observed",
    })
    parts = [observed]
    if predicted_close is not None:
        pred = opps.merge(predicted_close[["opportunity_id", "expected_close_date"]],
                          on="opportunity_id").dropna(subset=["expected_close_date"])
        pred = pred[~pred["customer_id"].isin(observed["customer_id"])]
        parts.append(pd.DataFrame({
            "customer_id": pred["customer_id"],
            "cycle_days": _days(pd.to_datetime(pred["expected_close_date"]) - pred["created_at"]),
            "cycle_source": "predicted",
        }))
    both = pd.concat(parts, ignore_index=True)
    out = both.groupby("customer_id", sort=True).agg(
        cycle_days=("cycle_days", "median"), cycle_source=("cycle_source", "first")).reset_index()
    if limits is None:
        limits = load_segments_config().sales_cycle
    short, inter = limits.short_max_days, limits.intermediate_max_days
    out["cycle_class"] = np.select(
        [out["cycle_days"] <= short, out["cycle_days"] <= inter], CYCLE_CLASSES[:2],
        CYCLE_CLASSES[2])
    return out[["customer_id", "cycle_days", "cycle_class", "cycle_source"]]
