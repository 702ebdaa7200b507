"""Probabilistic CLV jobs: fit BG/NBD, Pareto/NBD and Gamma-Gamma, evaluate on a holdout, plot,
write ``params.json`` / ``customers.parquet`` and log everything to MLflow.

Two entry points share one pipeline (:func:`fit_and_report`):

* :func:`run_transactions` (``customer360 clv fit``): any CSV/Parquet transaction log;
* :func:`run_warehouse` (``customer360 clv warehouse``): the warehouse's purchases before
  ``as_of``, the last ``holdout_days`` of them held out, logged to the MLflow experiment
  ``clv_probabilistic``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from customer360.data.readers import customers_before, margin_rate_before, purchases_before
from customer360.errors import ContractError, ModelError
from customer360.features.rfm import rfm_summary
from customer360.figures import new_figure
from customer360.models.clv import (
    DAYS_PER_UNIT,
    BetaGeoModel,
    ClvProbabilisticConfig,
    ParetoNBDModel,
    customer_clv,
    fit_pair,
    load_clv_config,
    stack_for,
    stack_scores,
    transaction_kwargs,
)

log = logging.getLogger(__name__)

EXPERIMENT = "clv_probabilistic"
TIME_UNITS = {"days": "D", "weeks": "W", "D": "D", "W": "W"}


@dataclass
class ClvReport:
    """What a probabilistic CLV job produced."""

    output_dir: Path
    params: dict[str, Any]
    customers: pd.DataFrame
    plots: list[Path] = field(default_factory=list)
    run_id: str | None = None


# --- evaluation ---------------------------------------------------------------------------------


def holdout_by_frequency(
    rfm: pd.DataFrame, predictions: dict[str, np.ndarray], max_frequency: int
) -> pd.DataFrame:
    """Mean actual and predicted holdout purchases per calibration frequency (pooled above
    ``max_frequency``)."""
    freq = np.minimum(rfm["frequency"].to_numpy(), max_frequency).astype(int)
    frame = pd.DataFrame({"frequency": freq, "actual": rfm["frequency_holdout"].to_numpy()})
    for name, values in predictions.items():
        frame[name] = values
    table = frame.groupby("frequency").mean()
    table.insert(0, "customers", frame.groupby("frequency").size())
    return table


def holdout_metrics(rfm: pd.DataFrame, predictions: dict[str, np.ndarray]) -> dict[str, float]:
    """Totals and per-customer errors of each model's holdout predictions, with a baseline.

    The baseline predicts each customer's calibration purchase rate (frequency / T) times the
    holdout length: what a model without dropout or shrinkage would say. The Poisson deviance
    scores each model as the mean forecast it is (a proper score: the true means minimise it);
    the MAE is read against ``zero_forecast_mae``, the MAE of forecasting no purchase at all,
    which a mean forecast of mostly-zero counts often cannot beat.
    """
    from sklearn.metrics import mean_poisson_deviance

    actual = rfm["frequency_holdout"].to_numpy()
    duration = rfm["duration_holdout"].to_numpy()
    age = rfm["T"].to_numpy()
    baseline = np.where(age > 0, rfm["frequency"].to_numpy() / np.maximum(age, 1e-12), 0.0)
    metrics = {
        "holdout_actual_total": float(actual.sum()),
        "holdout_customers": len(rfm),
        "zero_forecast_mae": float(np.abs(actual).mean()),
    }
    for name, pred in {**predictions, "baseline_rate": baseline * duration}.items():
        metrics[f"{name}_holdout_predicted_total"] = float(pred.sum())
        metrics[f"{name}_holdout_mae"] = float(np.abs(pred - actual).mean())
        metrics[f"{name}_holdout_rmse"] = float(np.sqrt(((pred - actual) ** 2).mean()))
        metrics[f"{name}_holdout_poisson_deviance"] = float(
            mean_poisson_deviance(actual, np.maximum(pred, 1e-9))
        )
    return metrics


# --- plots --------------------------------------------------------------------------------------


def plot_holdout_by_frequency(table: pd.DataFrame, path: Path, holdout_label: str) -> Path:
    """Actual vs predicted mean holdout purchases by calibration frequency."""
    fig, ax = new_figure((7, 4.5))
    labels = [str(f) for f in table.index[:-1]] + [f"{table.index[-1]}+"]
    x = np.arange(len(table))
    ax.plot(x, table["actual"], "k-o", label="actual")
    for name in table.columns.drop(["customers", "actual"]):
        ax.plot(x, table[name], "--s", label=name)
    ax.set_xticks(x, labels)
    ax.set_xlabel("repeat purchases in calibration")
    ax.set_ylabel("mean repeat purchases in the holdout")
    ax.set_title(f"Holdout ({holdout_label}): purchases by calibration frequency")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _grid(max_frequency: int, age: float, n_recency: int = 40) -> tuple[pd.DataFrame, tuple]:
    """Hypothetical customers of age ``age`` on a frequency x recency grid (valid cells only)."""
    freqs = np.arange(max_frequency + 1)
    recs = np.linspace(0, age, n_recency)
    f, r = np.meshgrid(freqs, recs, indexing="ij")
    valid = (f > 0) | (r == 0)
    rows = pd.DataFrame({"frequency": f[valid], "recency": r[valid], "T": age})
    return rows, (f.shape, valid, recs)


def plot_matrix(
    model: BetaGeoModel | ParetoNBDModel,
    path: Path,
    *,
    kind: str,
    max_frequency: int,
    age: float,
    horizon: float = 1.0,
    unit_label: str = "weeks",
) -> Path:
    """Heatmap of P(alive) (``kind="p_alive"``) or of expected purchases in the next
    ``horizon`` (``kind="frequency_recency"``) over frequency x recency at age ``age``."""
    rows, (shape, valid, recs) = _grid(max_frequency, age)
    if kind == "p_alive":
        values, title = model.p_alive(rows), "P(alive)"
    else:
        values = model.expected_purchases(rows, horizon)
        title = f"Expected purchases in the next {horizon:g} {unit_label}"
    image = np.full(shape, np.nan)
    image[valid] = values
    fig, ax = new_figure((6.5, 5))
    shown = ax.imshow(
        np.ma.masked_invalid(image),
        origin="lower",
        aspect="auto",
        cmap="viridis",
        extent=(recs[0], recs[-1], -0.5, max_frequency + 0.5),
    )
    fig.colorbar(shown, ax=ax)
    ax.set_xlabel(f"recency ({unit_label}, customer age {age:.0f})")
    ax.set_ylabel("repeat purchases (frequency)")
    ax.set_title(f"{model._label}: {title}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


# --- the shared pipeline ------------------------------------------------------------------------


def _model_summary(model: Any) -> dict[str, Any]:
    return {
        "params": model.params_,
        "log_likelihood": model.log_likelihood_,
        "penalizer_used": model.penalizer_used_,
        "customers_fitted": model.n_customers_,
        "distinct_rows": model.n_unique_,
    }


def fit_and_report(
    rfm: pd.DataFrame,
    output_dir: Path,
    *,
    cfg: ClvProbabilisticConfig,
    time_unit: str,
    months: int,
    annual_discount_rate: float,
    margin_rate: float,
    extra_customers: pd.Series | None = None,
    context: dict[str, Any] | None = None,
    history: dict[str, Any] | None = None,
) -> ClvReport:
    """Fit the three models on ``rfm``, evaluate, plot and write the output files.

    With holdout columns in ``rfm`` (``frequency_holdout``, ``duration_holdout``), expected
    purchases are over the holdout and evaluated against it; otherwise over
    ``cfg.horizon_days``. ``extra_customers`` (ids without any purchase) are added to
    ``customers.parquet`` with the defaults of
    :func:`customer360.models.clv.probabilistic_scores`. ``history`` (the transaction log:
    ``con``, ``purchases``, ``customer_col``, ``date_col``, ``calibration_end``) adds the ML
    purchase model stacked on BG/NBD (:mod:`customer360.training.clv_stack`), trained by
    backtesting inside the calibration period. Without ``monetary_value`` the spend model is
    skipped; spend that never varies is not fitted (a warning; CLV uses the constant).
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    unit_days = DAYS_PER_UNIT[time_unit]
    unit_label = "days" if time_unit == "D" else "weeks"
    from customer360.training import clv_stack

    bg = BetaGeoModel(**transaction_kwargs(cfg)).fit(rfm)
    gg, spend_note = clv_stack.spend_model(
        rfm, lambda frame: fit_pair(frame, cfg)[1],
        constant_amount=bool((history or {}).get("constant_amount")),
    )
    no_spend = np.full(len(rfm), np.nan)
    holdout = "frequency_holdout" in rfm.columns
    horizon = float(rfm["duration_holdout"].iloc[0]) if holdout else cfg.horizon_days / unit_days
    clv_kwargs = {
        "months": months,
        "annual_discount_rate": annual_discount_rate,
        "margin_rate": margin_rate,
        "time_unit": time_unit,
    }
    predictions = {"bgnbd": bg.expected_purchases(rfm, horizon)}
    columns = {
        "customer_id": rfm["customer_id"].to_numpy(),
        "frequency": rfm["frequency"].to_numpy(),
        "recency": rfm["recency"].to_numpy(),
        "T": rfm["T"].to_numpy(),
        "monetary_value": rfm["monetary_value"].to_numpy() if gg is not None else no_spend,
        "p_alive": bg.p_alive(rfm),
        "expected_purchases": predictions["bgnbd"],
        "expected_spend": gg.expected_spend(rfm) if gg is not None else no_spend,
        "clv": customer_clv(bg, gg, rfm, **clv_kwargs) if gg is not None else no_spend,
    }
    stacked_summary: dict[str, Any] | None = None
    if history is not None:
        try:
            stacked = clv_stack.fit_stacked_purchases(
                history["con"],
                history["purchases"],
                customer_col=history["customer_col"],
                date_col=history["date_col"],
                calibration_end=history["calibration_end"],
                time_unit=time_unit,
                horizon=horizon,
                age_max=float(rfm["T"].max()),
                transaction_kwargs=transaction_kwargs(cfg),
            )
            factor = stacked.correction(
                clv_stack.history_features(
                    history["con"], history["purchases"], rfm, bg,
                    customer_col=history["customer_col"], date_col=history["date_col"],
                    end=history["calibration_end"], time_unit=time_unit,
                )
            )
            predictions["ml_stacked"] = predictions["bgnbd"] * factor
            columns["expected_purchases_ml"] = predictions["ml_stacked"]
            columns["clv_ml"] = columns["clv"] * factor
            stacked_summary = {"backtest": stacked.info, "features": list(clv_stack.FEATURES)}
        except ModelError as exc:
            log.warning("ML-CLV (stacked) left out: %s", exc)
            stacked_summary = {"error": str(exc)}
    # Pareto/NBD is the second opinion: when it cannot be fitted or evaluated, the job still
    # delivers BG/NBD + Gamma-Gamma and params.json says why Pareto/NBD is missing.
    try:
        pareto = ParetoNBDModel(**transaction_kwargs(cfg)).fit(rfm)
        pareto_columns = {
            "p_alive_pareto": pareto.p_alive(rfm),
            "expected_purchases_pareto": pareto.expected_purchases(rfm, horizon),
            "clv_pareto": (
                customer_clv(pareto, gg, rfm, **clv_kwargs) if gg is not None else no_spend
            ),
        }
        predictions["pareto_nbd"] = pareto_columns["expected_purchases_pareto"]
        columns.update(pareto_columns)
        pareto_summary: dict[str, Any] = _model_summary(pareto)
    except ModelError as exc:
        log.warning("Pareto/NBD left out: %s", exc)
        pareto_summary = {"error": str(exc)}
    customers = pd.DataFrame(columns)
    if holdout:
        customers["actual_purchases_holdout"] = rfm["frequency_holdout"].to_numpy()
    if extra_customers is not None and len(extra_customers):
        # documented no-purchase defaults (as in probabilistic_scores); RFM and holdout unknown
        unknown = {"frequency", "recency", "T", "monetary_value", "actual_purchases_holdout"}
        defaults = pd.DataFrame({"customer_id": extra_customers.to_numpy()}).assign(**{
            col: np.nan if col in unknown else 0.0
            for col in customers.columns.drop("customer_id")
        })
        defaults["expected_spend"] = gg.population_mean_spend_ if gg is not None else np.nan
        customers = pd.concat([customers, defaults], ignore_index=True)
    customers["has_purchases"] = customers["frequency"].notna()

    params: dict[str, Any] = {
        **(context or {}),
        "time_unit": unit_label,
        "expected_purchases_horizon": horizon,
        "clv": {
            "months": months,
            "annual_discount_rate": annual_discount_rate,
            "margin_rate": margin_rate,
        },
        "customers_with_purchases": len(rfm),
        "customers_without_purchases": int(0 if extra_customers is None else len(extra_customers)),
        "models": {
            "bgnbd": _model_summary(bg),
            "pareto_nbd": pareto_summary,
            "gamma_gamma": {"error": spend_note}
            if spend_note
            else {
                **_model_summary(gg),
                "customers_excluded": gg.n_excluded_,
                "population_mean_spend": gg.population_mean_spend_,
            },
        },
    }
    if isinstance(gg, clv_stack.ConstantSpend):
        params["constant_spend"] = gg.spend
    if stacked_summary is not None:
        params["models"]["ml_stacked"] = stacked_summary
    plots = [
        plot_matrix(
            bg,
            output_dir / "p_alive_matrix.png",
            kind="p_alive",
            max_frequency=cfg.plot_max_frequency,
            age=float(rfm["T"].max()),
            unit_label=unit_label,
        ),
        plot_matrix(
            bg,
            output_dir / "frequency_recency_matrix.png",
            kind="frequency_recency",
            max_frequency=cfg.plot_max_frequency,
            age=float(rfm["T"].max()),
            horizon=horizon,
            unit_label=unit_label,
        ),
    ]
    if holdout:
        metrics = holdout_metrics(rfm, predictions)
        params["holdout"] = {
            "duration": horizon,
            "actual_total_repeat_purchases": metrics["holdout_actual_total"],
            "zero_forecast_mae": metrics["zero_forecast_mae"],
            **{
                name: {
                    "predicted_total_repeat_purchases": metrics[f"{name}_holdout_predicted_total"],
                    "mae_per_customer": metrics[f"{name}_holdout_mae"],
                    "rmse_per_customer": metrics[f"{name}_holdout_rmse"],
                    "poisson_deviance_per_customer": metrics[
                        f"{name}_holdout_poisson_deviance"
                    ],
                }
                for name in (*predictions, "baseline_rate")
            },
        }
        selected = (stacked_summary or {}).get("backtest", {}).get("selected")
        if selected in params["holdout"]:
            params["holdout"]["selected_by_backtest"] = selected
        table = holdout_by_frequency(rfm, predictions, cfg.plot_max_frequency)
        table.to_csv(output_dir / "holdout_by_frequency.csv")
        plots.append(
            plot_holdout_by_frequency(
                table, output_dir / "holdout_by_frequency.png", f"{horizon:.4g} {unit_label}"
            )
        )
    (output_dir / "params.json").write_text(json.dumps(params, indent=2, default=_json_default))
    customers.to_parquet(output_dir / "customers.parquet", index=False)
    return ClvReport(output_dir=output_dir, params=params, customers=customers, plots=plots)


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (dt.date, pd.Timestamp)):
        return str(value)
    raise TypeError(f"not JSON serialisable: {value!r}")


def flat_metrics(params: dict[str, Any]) -> dict[str, float]:
    """MLflow metrics from a ``params.json`` dict: log-likelihoods and holdout errors."""
    fitted = {m: v for m, v in params["models"].items() if "params" in v}
    out = {f"{m}_log_likelihood": v["log_likelihood"] for m, v in fitted.items()}
    for m, v in fitted.items():
        out.update({f"{m}_{k}": p for k, p in v["params"].items()})
    hold = params.get("holdout")
    if hold:
        out["holdout_actual_total"] = hold["actual_total_repeat_purchases"]
        for name, v in hold.items():
            if isinstance(v, dict):
                out[f"{name}_holdout_predicted_total"] = v["predicted_total_repeat_purchases"]
                out[f"{name}_holdout_mae"] = v["mae_per_customer"]
                if "poisson_deviance_per_customer" in v:
                    out[f"{name}_holdout_poisson_deviance"] = v["poisson_deviance_per_customer"]
    return out


def log_to_mlflow(report: ClvReport, *, tags: dict[str, Any]) -> str:
    """One MLflow run in experiment ``clv_probabilistic`` with params, metrics and artifacts."""
    import mlflow

    from customer360.training.tracking import run_tags, setup_mlflow

    setup_mlflow(EXPERIMENT)
    with mlflow.start_run(
        run_name=tags.get("run_name", "probabilistic"), tags=run_tags(**tags)
    ) as run:
        mlflow.log_params(
            {
                "time_unit": report.params["time_unit"],
                "expected_purchases_horizon": report.params["expected_purchases_horizon"],
                **{f"clv_{k}": v for k, v in report.params["clv"].items()},
                **{
                    f"{m}_penalizer": v.get("penalizer_used", "failed")
                    for m, v in report.params["models"].items()
                },
            }
        )
        mlflow.log_metrics(flat_metrics(report.params))
        for path in report.plots:
            mlflow.log_artifact(str(path), artifact_path="plots")
        mlflow.log_artifact(str(report.output_dir / "params.json"))
        report.run_id = run.info.run_id
    return report.run_id


# --- entry points -------------------------------------------------------------------------------


def _read_columns(con: duckdb.DuckDBPyConnection, path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise ContractError(f"Transactions file {path} does not exist.")
    from customer360.data.files import duckdb_reader

    try:
        return con.execute(f"SELECT * FROM {duckdb_reader(path)}(?)", [str(path)]).df()
    except duckdb.Error as exc:
        raise ContractError(f"Cannot read transactions file {path}: {exc}") from exc


def run_transactions(
    transactions: Path,
    *,
    customer_col: str,
    date_col: str,
    amount_col: str | None,
    output_dir: Path,
    calibration_end: str | None = None,
    holdout_end: str | None = None,
    time_unit: str = "weeks",
    discount_rate: float | None = None,
    margin_rate: float = 1.0,
    config: ClvProbabilisticConfig | None = None,
    mlflow_log: bool = False,
) -> ClvReport:
    """Bring-your-own transactions: fit, evaluate (with a holdout) and write ``output_dir``.

    Rows with a negative amount are returns: they are not purchase occasions, so they are left
    out of the purchase summary (their count is reported in ``params.json``); customers with
    only returns appear in ``customers.parquet`` with the no-purchase defaults.

    Parameters
    ----------
    transactions
        CSV or Parquet file, one row per transaction.
    customer_col, date_col, amount_col
        Its columns; ``amount_col=None``: a log without amounts (purchase models only, the
        Gamma-Gamma spend model is skipped with a message).
    output_dir
        Receives ``params.json``, ``customers.parquet`` and the PNG plots.
    calibration_end
        Last calibration day (default: the last date in the file).
    holdout_end
        Last holdout day; requires ``calibration_end``. Adds the holdout evaluation.
    time_unit
        ``"days"`` or ``"weeks"``.
    discount_rate
        Annual discount rate of the CLV (default from the config).
    margin_rate
        Margin share of revenue (default 1.0: CLV in revenue).
    """
    cfg = config or load_clv_config()
    unit = TIME_UNITS.get(time_unit)
    if unit is None:
        raise ContractError(f"--time-unit must be days or weeks, got {time_unit!r}.")
    if holdout_end is not None and calibration_end is None:
        raise ContractError("--holdout-end needs --calibration-end (where the holdout starts).")
    if holdout_end is not None and calibration_end is not None:
        try:
            ordered = pd.Timestamp(holdout_end) > pd.Timestamp(calibration_end)
        except (ValueError, TypeError) as exc:
            raise ContractError(
                f"--calibration-end {calibration_end!r} / --holdout-end {holdout_end!r}: not a "
                "date; use YYYY-MM-DD."
            ) from exc
        if not ordered:
            raise ContractError(
                f"--holdout-end {holdout_end} must be after --calibration-end {calibration_end}: "
                "the holdout is the period after calibration."
            )
    con = duckdb.connect()
    frame = _read_columns(con, transactions)
    missing = [
        c for c in (customer_col, date_col, amount_col) if c is not None and c not in frame.columns
    ]
    if missing:
        raise ContractError(
            f"{transactions} has no column(s) {', '.join(map(repr, missing))}; its columns are: "
            f"{', '.join(map(str, frame.columns))}. Pass the right --customer-col/--date-col/"
            "--amount-col."
        )
    amounts = (
        pd.to_numeric(frame[amount_col], errors="coerce")
        if amount_col is not None
        else pd.Series(np.zeros(len(frame)))
    )
    if amounts.isna().any():
        row = int(np.flatnonzero(amounts.isna().to_numpy())[0])
        raise ContractError(
            f"{transactions}: column {amount_col!r} has {int(amounts.isna().sum())} missing or "
            f"non-numeric value(s) (first at data row {row + 1}: {frame[amount_col].iloc[row]!r})"
            "; fix or remove those rows."
        )
    is_return = (amounts < 0).to_numpy()
    purchases = frame.loc[~is_return]
    try:
        if calibration_end is None:
            calibration_end = str(rfm_summary_last_day(con, purchases, customer_col, date_col))
        rfm = rfm_summary(
            con,
            purchases,
            customer_col=customer_col,
            date_col=date_col,
            amount_col=amount_col,
            calibration_end=calibration_end,
            observation_end=holdout_end,
            time_unit=unit,
        )
    except ContractError as exc:
        raise ContractError(f"{transactions}: {exc}") from exc
    if rfm.empty:
        raise ContractError(
            f"{transactions} has no purchases on or before the calibration end {calibration_end}."
        )
    everyone = pd.Series(frame[customer_col].unique())
    extra = everyone[~everyone.isin(rfm["customer_id"])]
    months = cfg.clv_months
    rate = cfg.annual_discount_rate if discount_rate is None else discount_rate
    report = fit_and_report(
        rfm,
        output_dir,
        cfg=cfg,
        time_unit=unit,
        months=months,
        annual_discount_rate=rate,
        margin_rate=margin_rate,
        extra_customers=extra,
        history={
            "con": con,
            "purchases": purchases,
            "customer_col": customer_col,
            "date_col": date_col,
            "calibration_end": calibration_end,
            "constant_amount": amount_col is not None
            and amounts[~is_return].nunique(dropna=True) == 1,
        },
        context={
            "input": {
                "file": str(transactions),
                "rows": len(frame),
                "return_rows_excluded": int(is_return.sum()),
                "calibration_end": str(calibration_end),
                "holdout_end": holdout_end,
            }
        },
    )
    if mlflow_log:
        log_to_mlflow(
            report,
            tags={
                "run_name": "byo",
                "source": str(transactions),
                "calibration_end": calibration_end,
            },
        )
    return report


def rfm_summary_last_day(
    con: duckdb.DuckDBPyConnection, frame: pd.DataFrame, customer_col: str, date_col: str
) -> dt.date:
    """The last purchase day in ``frame`` (parsed the way rfm_summary parses dates)."""
    probe = rfm_summary(
        con,
        frame,
        customer_col=customer_col,
        date_col=date_col,
        amount_col=None,
        calibration_end="2262-04-01",
    )
    gap = float((probe["T"] - probe["recency"]).min())  # far end minus the last purchase day
    last = pd.Timestamp("2262-04-01") - pd.Timedelta(days=gap)
    return last.date()


def run_warehouse(
    con: duckdb.DuckDBPyConnection,
    as_of: str | dt.date,
    output_dir: Path,
    *,
    config: ClvProbabilisticConfig | None = None,
    holdout_days: int | None = None,
    discount_rate: float | None = None,
    margin_rate: float | None = None,
    mlflow_log: bool = True,
) -> ClvReport:
    """Calibration/holdout evaluation on the warehouse, logged to MLflow.

    The holdout is the ``holdout_days`` days before ``as_of``; calibration is everything
    before it. Only non-return purchases strictly before ``as_of`` are read.
    """
    cfg = config or load_clv_config()
    days = cfg.holdout_days if holdout_days is None else holdout_days
    as_of_ts = pd.Timestamp(as_of)
    cal_end = (as_of_ts - pd.Timedelta(days=days + 1)).date()
    obs_end = (as_of_ts - pd.Timedelta(days=1)).date()
    purchases = purchases_before(con, as_of_ts)
    rfm = rfm_summary(
        con,
        purchases,
        customer_col="customer_id",
        date_col="ts",
        amount_col="amount",
        calibration_end=cal_end,
        observation_end=obs_end,
        time_unit=cfg.time_unit,
    )
    margin = margin_rate if margin_rate is not None else cfg.margin_rate
    if margin is None:
        margin = margin_rate_before(con, cal_end + dt.timedelta(days=1))
    rate = cfg.annual_discount_rate if discount_rate is None else discount_rate
    report = fit_and_report(
        rfm,
        output_dir,
        cfg=cfg,
        time_unit=cfg.time_unit,
        months=cfg.clv_months,
        annual_discount_rate=rate,
        margin_rate=margin,
        context={
            "input": {
                "warehouse_as_of": str(as_of_ts.date()),
                "calibration_end": str(cal_end),
                "holdout_end": str(obs_end),
            }
        },
    )
    if mlflow_log:
        log_to_mlflow(
            report,
            tags={
                "run_name": f"warehouse-{as_of_ts.date()}",
                "as_of": as_of_ts.date(),
                "calibration_end": cal_end,
                "holdout_days": days,
                "customers": len(rfm),
                "purchase_rows": len(purchases),
            },
        )
    log.info("probabilistic CLV on %d customers written to %s", len(rfm), output_dir)
    return report


# --- the warehouse scores the stacked models read ------------------------------------------------


def warehouse_rfm(con, as_of: dt.date | str, *, time_unit: str = "W") -> pd.DataFrame:
    """RFM summary of the warehouse purchases strictly before ``as_of`` (returns excluded).

    The calibration period ends the day before ``as_of``, so no row dated ``as_of`` or later
    is read.
    """
    cal_end = (pd.Timestamp(as_of) - pd.Timedelta(days=1)).date()
    return rfm_summary(
        con, purchases_before(con, as_of), customer_col="customer_id", date_col="ts",
        amount_col="amount", calibration_end=cal_end, time_unit=time_unit,
    )


def warehouse_stack(
    con,
    as_of: dt.date | str,
    *,
    config: ClvProbabilisticConfig | None = None,
    discount_rate: float | None = None,
    margin_rate: float | None = None,
    months: int | None = None,
    rfm: pd.DataFrame | None = None,
):
    """BG/NBD + Gamma-Gamma fitted on the purchases before ``as_of`` with the CLV settings
    (:class:`~customer360.models.prob_stack.ProbabilisticStack`); ``margin_rate=None`` and no
    configured rate use the warehouse's margin / revenue ratio before ``as_of``."""
    cfg = config or load_clv_config()
    margin = margin_rate if margin_rate is not None else cfg.margin_rate
    if margin is None:
        margin = margin_rate_before(con, as_of)
    rfm = warehouse_rfm(con, as_of, time_unit=cfg.time_unit) if rfm is None else rfm
    return stack_for(
        rfm, cfg, margin_rate=margin, as_of=as_of, annual_discount_rate=discount_rate,
        months=months,
    )


def probabilistic_scores(
    con,
    as_of: dt.date | str,
    *,
    horizon_days: int | None = None,
    discount_rate: float | None = None,
    margin_rate: float | None = None,
    months: int | None = None,
    config: ClvProbabilisticConfig | None = None,
) -> pd.DataFrame:
    """BG/NBD + Gamma-Gamma scores of every customer signed up before ``as_of``.

    Fits both models on the non-return purchases strictly before ``as_of`` (time in weeks) and
    scores each customer:

    * ``prob__p_alive``: P(still active) at ``as_of``;
    * ``prob__expected_purchases__{H}d``: expected purchases in ``[as_of, as_of + H days)``;
    * ``prob__expected_spend``: expected spend per purchase (Gamma-Gamma);
    * ``prob__clv``: discounted expected margin over ``months`` months.

    Customers who never bought before ``as_of`` get the documented defaults of
    :func:`customer360.models.clv.stack_scores`.

    Parameters
    ----------
    con
        Warehouse connection (tables ``customers`` and ``transactions``).
    as_of
        Scoring date; only rows strictly before it are read.
    horizon_days, discount_rate, margin_rate, months
        Override ``configs/clv_probabilistic.yaml`` (``discount_rate`` is annual;
        ``margin_rate=None`` uses the warehouse's margin / revenue ratio before ``as_of``).
    config
        An already loaded config.

    Returns
    -------
    pandas.DataFrame
        ``customer_id`` and the four ``prob__`` columns, sorted by ``customer_id``.

    Examples
    --------
    >>> probabilistic_scores(con, "2026-06-30", horizon_days=90)  # doctest: +SKIP
    """
    cfg = config or load_clv_config()
    horizon = cfg.horizon_days if horizon_days is None else horizon_days
    rfm = warehouse_rfm(con, as_of, time_unit=cfg.time_unit)
    stack = warehouse_stack(
        con, as_of, config=cfg, discount_rate=discount_rate, margin_rate=margin_rate,
        months=months, rfm=rfm,
    )
    return stack_scores(stack, rfm, customers_before(con, as_of)["customer_id"], horizon)
