"""ML-CLV training: margin within H, LightGBM Tweedie stacked on BG/NBD + Gamma-Gamma.

Snapshots are split by time like churn; the model is compared on the test snapshot with the
probabilistic model alone (expected purchases x expected spend x margin rate), with "last
period repeats" (the margin of the H days before the as-of date) and, on synthetic data, with
the oracle's expected margin.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from customer360.config import load_config
from customer360.data.warehouse import registered
from customer360.models.clv_ml import CLVRegressor
from customer360.models.tabular import (
    model_input_example,
    plot_deciles,
    plot_gain,
    plot_importance,
    to_matrix,
    value_metrics,
)
from customer360.training.common import (
    Evaluation,
    TrainingConfig,
    TrainResult,
    feature_descriptions,
    oracle_values,
    run_training_job,
    shap_figure,
    warehouse_split,
)

log = logging.getLogger(__name__)

PRIMARY_METRIC = "normalized_gini"
MODEL_LABEL = "lightgbm_tweedie"


class ClvConfig(TrainingConfig):
    """``configs/clv.yaml``."""

    experiment: str = "clv"
    model_name: str = "clv"
    horizon_days: int = 180


def load_clv_ml_config(path: str | Path | None = None) -> ClvConfig:
    """Parse ``configs/clv.yaml`` (or ``path``)."""
    return load_config(path or "clv", ClvConfig)


def margin_label(horizon_days: int) -> str:
    return f"label__margin__{horizon_days}d"


def last_period_margin(con, test: pd.DataFrame, horizon_days: int) -> np.ndarray:
    """Margin (returns included) of each test row's customer in ``[T - H, T)``: the "last
    period repeats" baseline."""
    keys = test[["customer_id", "as_of"]].drop_duplicates()
    with registered(con, keys) as view:
        past = con.execute(
            f"""
            SELECT k.customer_id, k.as_of, coalesce(sum(t.margin), 0) AS margin
            FROM {view} k
            LEFT JOIN transactions t
              ON t.customer_id = k.customer_id
             AND t.ts >= k.as_of - to_days(CAST(? AS INTEGER)) AND t.ts < k.as_of
            GROUP BY k.customer_id, k.as_of
            """,
            [horizon_days],
        ).df()
    past["as_of"] = past["as_of"].astype(test["as_of"].dtype)
    merged = test[["customer_id", "as_of"]].merge(past, on=["customer_id", "as_of"], how="left")
    return merged["margin"].to_numpy(dtype=float)


def probabilistic_margin(con, test: pd.DataFrame, horizon_days: int) -> np.ndarray | None:
    """BG/NBD + Gamma-Gamma alone: expected purchases in H x expected spend x the margin rate
    before the as-of date. ``None`` when the ``prob__`` scores are missing on the test rows."""
    from customer360.data.readers import margin_rate_before

    purchases = f"prob__expected_purchases__{horizon_days}d"
    if purchases not in test.columns or test[purchases].isna().any():
        return None
    rate = test["as_of"].map(
        {d: margin_rate_before(con, pd.Timestamp(d).date()) for d in test["as_of"].unique()}
    )
    return (test[purchases] * test["prob__expected_spend"] * rate).to_numpy(dtype=float)


def train_clv(
    con,
    config: ClvConfig | None = None,
    *,
    trials: int | None = None,
    register: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train, evaluate, log and register the ML-CLV model (margin within H) from the warehouse.

    Parameters are those of :func:`customer360.training.churn.train_churn`. The pyfunc returns
    one column, ``clv_ml``.

    Examples
    --------
    >>> result = train_clv(connect(), trials=5)                    # doctest: +SKIP
    >>> sorted(result.baselines)                                   # doctest: +SKIP
    ['bgnbd_gamma_gamma', 'last_period_repeats', 'oracle']
    """
    config = config or load_clv_ml_config()
    horizon = config.horizon_days
    label = margin_label(horizon)
    parts = warehouse_split(con, config, label, with_probabilistic=True)
    train, val, test = parts.train, parts.validation, parts.test
    features, schema, notes = parts.features, parts.schema, parts.notes
    descriptions = feature_descriptions(features)
    y_train, y_val, y_test = (part[label].to_numpy(dtype=float) for part in (train, val, test))

    scores = {"last_period_repeats": last_period_margin(con, test, horizon)}
    prob = probabilistic_margin(con, test, horizon)
    if prob is not None:
        scores["bgnbd_gamma_gamma"] = prob
    else:
        notes.append("No BG/NBD + Gamma-Gamma scores on the test snapshot: baseline left out.")
    oracle = oracle_values(con, test, horizon, kind="margin")
    if oracle is not None:
        scores["oracle"] = oracle

    train_m, val_m = to_matrix(train[features], schema), to_matrix(val[features], schema)

    def fit(params: dict, callbacks=(), *, final: bool = False) -> CLVRegressor:
        return CLVRegressor(
            params=params,
            num_boost_round=config.num_boost_round,
            early_stopping_rounds=config.early_stopping_rounds,
            seed=config.seed,
            n_jobs=config.n_jobs,
        ).fit(
            train_m,
            y_train,
            X_val=val_m,
            y_val=y_val,
            schema=schema,
            descriptions=descriptions,
            callbacks=callbacks,
        )

    def evaluate(model: CLVRegressor) -> Evaluation:
        test_m = model.matrix(test[features])
        pred = model.predict(test_m)
        metrics = value_metrics(y_test, pred)
        baselines = {name: value_metrics(y_test, s) for name, s in scores.items()}
        if "oracle" in baselines:
            metrics["gini_vs_oracle"] = (
                metrics[PRIMARY_METRIC] / baselines["oracle"][PRIMARY_METRIC]
            )
        found = [
            f"The ML-CLV normalized Gini {metrics[PRIMARY_METRIC]:.4f} is below {name}'s "
            f"{b[PRIMARY_METRIC]:.4f} on the same test rows."
            for name, b in baselines.items()
            if name != "oracle" and b[PRIMARY_METRIC] > metrics[PRIMARY_METRIC]
        ]
        curves = {MODEL_LABEL: pred, **scores}
        figures = {
            "deciles": plot_deciles(
                y_test,
                {
                    MODEL_LABEL: pred,
                    **{k: v for k, v in scores.items() if k == "bgnbd_gamma_gamma"},
                },
            ),
            "cumulative_gain": plot_gain(np.clip(y_test, 0, None), curves),
            "feature_importance": plot_importance(model.importance()),
            "shap_summary": shap_figure(model, test_m, schema.columns, config.seed),
        }
        extra = {"n_negative_targets_clipped": float(model.n_negative_targets_)}
        return Evaluation(metrics, baselines, figures, found, extra)

    return run_training_job(
        config=config,
        model_name=config.model_name,
        trials=config.trials if trials is None else trials,
        register=register,
        fit=fit,
        tuning_metric="poisson",
        evaluate=evaluate,
        champion_input=test[features],
        champion_score=lambda pred: value_metrics(y_test, pred["clv_ml"].to_numpy(dtype=float)),
        primary_metric=PRIMARY_METRIC,
        example=model_input_example(train[features], schema),
        tags=parts.tags,
        test_identity=parts.test_identity,
        notes=notes,
        refit_data=(
            (
                np.vstack([train_m, val_m, to_matrix(test[features], schema)]),
                np.concatenate([y_train, y_val, y_test]),
            )
            if config.refit_on_all_rows
            else None
        ),
        on_progress=on_progress,
        stack=parts.stack,
    )
