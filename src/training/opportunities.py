"""Opportunity models (issue 15): win probability per stage (the churn job: Optuna,
calibration, baselines, MLflow, registry as ``opportunities``, champion gate), time to close
(scikit-survival Cox model, open opportunities censored) logged beside it, and the pipeline
forecast with its backtest on past months.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from customer360.data.warehouse import require_tables, table_exists
from customer360.errors import ModelError
from customer360.models.opportunities import (
    OPPORTUNITY_FEATURES,
    STAGE_FEATURES_DESCRIPTIONS,
    TimeToClose,
    close_month_probabilities,
    month_starts,
    pipeline_forecast,
    stage_rows,
    win_labels,
)
from customer360.training.common import TrainResult, data_fingerprint
from customer360.training.leads import (
    LeadsConfig,
    _churn_config,
    load_leads_config,
    warehouse_today,
)

log = logging.getLogger(__name__)

UNTUNED_ROUNDS = 100
DAY = pd.Timedelta(days=1)


@dataclass
class SalesTables:
    opportunities: pd.DataFrame
    stages: pd.DataFrame
    leads: pd.DataFrame | None


def read_opportunity_tables(con) -> SalesTables:
    """``opportunities``, ``opportunity_stages`` and (when present) the ``leads`` they came
    from, as frames."""
    require_tables(con, "opportunities", "opportunity_stages")
    opps = con.execute("SELECT * FROM opportunities").df()
    if opps.empty:
        raise ModelError("The warehouse has no opportunities; ingest an opportunities file "
                         "(`customer360 ingest opportunities FILE`) or generate a warehouse.")
    stages = con.execute("SELECT * FROM opportunity_stages").df()
    # only the leads an opportunity came from: the stage rows join nothing else
    leads = con.execute(
        "SELECT * FROM leads WHERE lead_id IN (SELECT lead_id FROM opportunities)"
    ).df() if table_exists(con, "leads") else None
    return SalesTables(opps, stages, leads)


def _oracle_win(con, rows: pd.DataFrame) -> np.ndarray | None:
    """True P(win | reached the row's stage): each of the 4 transitions passes with
    ``p_win ** (1/4)``."""
    if not table_exists(con, "truth_opportunities"):
        return None
    truth = con.execute("SELECT opportunity_id, p_win FROM truth_opportunities").df()
    p = rows[["opportunity_id"]].merge(truth, on="opportunity_id", how="left")["p_win"]
    left = 4 - rows["opp__stage_index"].to_numpy(dtype=float)
    return p.to_numpy(dtype=float) ** (left / 4)


def prepare_win_data(con, tables: SalesTables, today: dt.date, holdout_days: int = 120):
    """Stage-entry rows as of today with a known outcome, split by close date: test closed in
    the last ``holdout_days``, validation in the ``holdout_days`` before, training earlier."""
    from customer360.models.tabular import infer_schema
    from customer360.training.churn import ChurnData

    as_of = pd.Timestamp(today)
    rows = stage_rows(tables.opportunities, tables.stages, tables.leads, as_of, every_stage=True)
    y, known = win_labels(rows)
    rows, y = rows[known].reset_index(drop=True), y[known]
    closed = rows["known_closed_at"]
    test = (closed >= as_of - pd.Timedelta(days=holdout_days)).to_numpy()
    val = ~test & (closed >= as_of - pd.Timedelta(days=2 * holdout_days)).to_numpy()
    train = ~test & ~val
    features = list(OPPORTUNITY_FEATURES)
    schema = infer_schema(rows[features])
    oracle = _oracle_win(con, rows[test].reset_index(drop=True))
    test_rows = rows[test].reset_index(drop=True)
    data = ChurnData(
        X_train=rows.loc[train, features].reset_index(drop=True), y_train=y[train],
        X_val=rows.loc[val, features].reset_index(drop=True), y_val=y[val],
        X_test=test_rows[features], y_test=y[test], schema=schema,
        descriptions=dict(STAGE_FEATURES_DESCRIPTIONS),
        test_identity=f"opportunities;closed_since={as_of.date() - dt.timedelta(holdout_days)};"
        f"rows={int(test.sum())};hash={data_fingerprint(test_rows[features].astype(str))}",
        tags={"source": "warehouse", "model_kind": "opportunities",
              "label": "won (stage-entry rows of closed opportunities; open ones left out)",
              "rows_train": int(train.sum()), "rows_validation": int(val.sum()),
              "rows_test": int(test.sum())},
        extra_baselines={"oracle": oracle} if oracle is not None else {},
    )
    return data, rows


def landmark_rows(tables: SalesTables, as_of: pd.Timestamp, months: int = 12) -> pd.DataFrame:
    """Open opportunities observed on each month start of the ``months`` before ``as_of``
    (landmarks), with ``event`` (won before ``as_of``) and ``days`` (from the landmark to the
    win, or to ``as_of``: censored). Those lost by ``as_of`` are left out: the model is of the
    time to a won close, and a lost deal closes sooner (at the end of its stage), so mixing
    the two would pull the forecast's wins forward."""
    as_of = pd.Timestamp(as_of)
    opps = tables.opportunities
    closed = opps.set_index("opportunity_id")
    parts = []
    for lm in pd.date_range(end=as_of - pd.Timedelta(days=1), periods=months, freq="MS"):
        rows = stage_rows(opps, tables.stages, tables.leads, lm, every_stage=False)
        end = rows["opportunity_id"].map(closed["closed_at"])
        outcome = rows["opportunity_id"].map(closed["outcome"])
        known = end.notna() & (end < as_of)
        lost = known & (outcome == "lost")
        rows = rows.assign(event=(known & (outcome == "won")).to_numpy(),
                           days=np.maximum(((end.where(known, as_of) - lm) / DAY).to_numpy(
                               dtype=float), 0.01))
        parts.append(rows[~lost.to_numpy()])
    return pd.concat(parts, ignore_index=True)


def fit_time_to_close(tables: SalesTables, as_of: pd.Timestamp,
                      max_rows: int | None = None) -> TimeToClose:
    """The survival model of the time to a won close, on the landmark rows before ``as_of``
    (a seeded random ``max_rows`` of them when there are more: the Cox fit's cost grows with
    the rows, its estimates hardly move past tens of thousands)."""
    rows = landmark_rows(tables, as_of)
    if max_rows is not None and len(rows) > max_rows:
        rows = rows.sample(n=max_rows, random_state=0).reset_index(drop=True)
    if rows.empty or not rows["event"].any():
        raise ModelError(f"No opportunity was won before {pd.Timestamp(as_of).date()}; the "
                         "time-to-close model needs won deals to learn from.")
    return TimeToClose().fit(rows, rows["event"].to_numpy(), rows["days"].to_numpy())


def _untuned_win_model(rows: pd.DataFrame, y: np.ndarray):
    from customer360.models.churn import ChurnClassifier
    from customer360.models.tabular import infer_schema, to_matrix

    features = list(OPPORTUNITY_FEATURES)
    schema = infer_schema(rows[features])
    model = ChurnClassifier(params={"min_child_samples": 10}, seed=0, n_jobs=2)
    model.refit_all(to_matrix(rows[features], schema), y, rounds=UNTUNED_ROUNDS, schema=schema,
                    descriptions=dict(STAGE_FEATURES_DESCRIPTIONS))
    return model


def forecast_as_of(
    tables: SalesTables, as_of: pd.Timestamp, months: int, config: LeadsConfig, *,
    win_model=None, seed: int = 0, ttc: TimeToClose | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(open opportunities with p_win and close-date interval, forecast per month)`` from
    what was known at ``as_of``: models fitted on rows before it (``win_model`` given: used
    instead of an untuned LightGBM fitted here; ``ttc`` given: the time-to-close model fitted
    by :func:`fit_time_to_close` at ``as_of``, not fitted again)."""
    as_of = pd.Timestamp(as_of)
    if win_model is None:
        hist = stage_rows(tables.opportunities, tables.stages, tables.leads, as_of,
                          every_stage=True)
        y, known = win_labels(hist)
        win_model = _untuned_win_model(hist[known].reset_index(drop=True), y[known])
        predict = win_model.predict_uncalibrated
    else:
        predict = win_model.predict_proba
    ttc = ttc or fit_time_to_close(tables, as_of, config.survival_max_rows)
    open_rows = stage_rows(tables.opportunities, tables.stages, tables.leads, as_of,
                           every_stage=False)
    edges = month_starts(as_of, months)
    features = list(OPPORTUNITY_FEATURES)
    p_win = predict(open_rows[features]) if len(open_rows) else np.zeros(0)
    p_month = close_month_probabilities(ttc, open_rows, as_of, edges)
    forecast = pipeline_forecast(open_rows["amount"].to_numpy(), p_win, p_month, edges,
                                 interval=config.interval, draws=config.forecast_draws,
                                 seed=seed)
    lo_q = (1 - config.interval) / 2
    q = ttc.close_quantiles(open_rows, [lo_q, 0.5, 1 - lo_q])
    scored = pd.DataFrame({
        "opportunity_id": open_rows["opportunity_id"],
        "stage": open_rows["opp__stage"],
        "amount": open_rows["amount"],
        "win_probability": p_win,
        **close_dates(as_of, q),
    })
    return scored, forecast


def close_dates(as_of: pd.Timestamp, quantiles: np.ndarray) -> dict[str, pd.Series]:
    """``close_date_low``, ``expected_close_date`` and ``close_date_high`` from the days to
    the close at the low, median and high quantiles (NaN, beyond the horizon: NaT)."""
    names = {"expected_close_date": 1, "close_date_low": 0, "close_date_high": 2}
    return {name: pd.Timestamp(as_of) + pd.to_timedelta(quantiles[:, j], unit="D")
            for name, j in names.items()}


def backtest_forecast(tables: SalesTables, today: dt.date, config: LeadsConfig) -> pd.DataFrame:
    """For each of the last ``backtest_months`` whole months: fit on what was known at its
    first day, forecast the won amount of the opportunities then open closing in that month,
    and compare with what they really won in it."""
    last_start = pd.Timestamp(today).to_period("M").to_timestamp() - pd.DateOffset(months=1)
    starts = [last_start - pd.DateOffset(months=i) for i in range(config.backtest_months)][::-1]
    opps = tables.opportunities
    out = []
    for start in starts:
        start = pd.Timestamp(start)
        end = start + pd.DateOffset(months=1)
        _, forecast = forecast_as_of(tables, start, 1, config)
        open_ids = opps[(opps["created_at"] < start)
                        & (opps["closed_at"].isna() | (opps["closed_at"] >= start))]
        won = open_ids[(open_ids["outcome"] == "won") & (open_ids["closed_at"] < end)]
        row = forecast.iloc[0].to_dict()
        row["actual_won"] = float(won["amount"].sum())
        row["within_interval"] = bool(row["low"] <= row["actual_won"] <= row["high"])
        out.append(row)
    return pd.DataFrame(out)


def plot_backtest(table: pd.DataFrame):
    from customer360.models.tabular import _figure

    fig, ax = _figure()
    x = np.arange(len(table))
    ax.fill_between(x, table["low"], table["high"], alpha=0.3, label="forecast interval")
    ax.plot(x, table["expected_won"], marker="o", label="expected won amount")
    ax.plot(x, table["actual_won"], marker="s", linestyle="--", label="actually won")
    ax.set_xticks(x, table["month"], rotation=45)
    ax.set_ylabel("won amount")
    ax.set_title("Pipeline forecast backtest (fitted at each month's start)")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_forecast(table: pd.DataFrame):
    from customer360.models.tabular import _figure

    fig, ax = _figure()
    x = np.arange(len(table))
    err = [table["expected_won"] - table["low"], table["high"] - table["expected_won"]]
    ax.bar(x, table["expected_won"], yerr=err, capsize=4)
    ax.set_xticks(x, table["month"])
    ax.set_ylabel("expected won amount")
    ax.set_title("Pipeline forecast (open opportunities)")
    return fig


@dataclass
class OpportunityResult:
    train: TrainResult
    scored: pd.DataFrame
    forecast: pd.DataFrame
    backtest: pd.DataFrame


def train_opportunities(
    con, config: LeadsConfig | None = None, *, trials: int | None = None, register: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> OpportunityResult:
    """Train and register the win model ``opportunities``; fit the time-to-close model and
    log it, the open pipeline's forecast and the backtest (table and plot) in the same run."""
    import mlflow

    from customer360.training.churn import run_churn_job

    config = config or load_leads_config()
    today = warehouse_today(con)
    tables = read_opportunity_tables(con)
    data, _ = prepare_win_data(con, tables, today)
    cfg = _churn_config(config, config.opportunity_model_name).model_copy(
        update={"experiment": config.opportunity_experiment})
    result = run_churn_job(data, cfg, trials=config.trials if trials is None else trials,
                           register=register, model_name=config.opportunity_model_name,
                           on_progress=on_progress)
    model = mlflow.pyfunc.load_model(result.model_uri).unwrap_python_model().model
    scored, forecast = forecast_as_of(tables, pd.Timestamp(today), 3, config, win_model=model)
    backtest = backtest_forecast(tables, today, config)
    with mlflow.start_run(run_id=result.run_id):
        mlflow.set_tag("model_kind", "opportunities")
        mlflow.log_figure(plot_backtest(backtest), "plots/forecast_backtest.png")
        mlflow.log_figure(plot_forecast(forecast), "plots/pipeline_forecast.png")
        mlflow.log_table(backtest, "forecast_backtest.json")
        mlflow.log_table(forecast, "pipeline_forecast.json")
        mlflow.log_metric("backtest_within_interval_share",
                          float(backtest["within_interval"].mean()))
    return OpportunityResult(result, scored, forecast, backtest)
