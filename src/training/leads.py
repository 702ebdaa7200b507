"""Lead conversion model training and scoring (issue 15): warehouse -> point-in-time snapshots
-> the churn job (Optuna, calibration, baselines, MLflow, registry, champion gate).

One lifecycle: the conversion model is the churn estimator run through
:func:`customer360.training.churn.run_churn_job`; this module only says what is special about
leads (the snapshots, the label, the oracle, the grade plot, scores and grades).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field

from customer360.config import StrictModel, load_config
from customer360.data.warehouse import registered, require_tables, table_exists
from customer360.errors import ModelError
from customer360.models.leads import (
    ACTIVITY_KINDS,
    LEAD_FEATURE_DESCRIPTIONS,
    LEAD_FEATURES,
    conversion_label,
    lead_features,
    lead_grade,
    lead_score,
    lead_trend,
    open_leads_as_of,
    score_leads,
)
from customer360.training.common import (
    SnapshotPlan,
    TrainResult,
    data_fingerprint,
    snapshot_dates,
    time_split,
)

log = logging.getLogger(__name__)

ENGAGEMENT_EVENTS = ("email_open", "email_click", "session")
GRADES = ("A", "B", "C", "D")


class GradeCutoffs(StrictModel):
    A: int = Field(45, ge=1, le=100)
    B: int = Field(25, ge=1, le=100)
    C: int = Field(10, ge=1, le=100)


class LeadsConfig(StrictModel):
    """``configs/leads.yaml``."""

    experiment: str = "leads"
    model_name: str = "leads"
    horizon_days: int = Field(90, ge=1)
    snapshots: SnapshotPlan = SnapshotPlan(count=8, step_days=45)
    trials: int = Field(10, ge=0)
    grades: GradeCutoffs = GradeCutoffs()
    trend_band: int = Field(5, ge=1)
    reasons: int = Field(2, ge=1, le=5)
    byo_model_name: str = "leads_byo"
    opportunity_model_name: str = "opportunities"
    opportunity_experiment: str = "opportunities"
    interval: float = Field(0.8, gt=0, lt=1)
    forecast_draws: int = Field(2000, ge=100)
    backtest_months: int = Field(6, ge=1)
    survival_max_rows: int = Field(50_000, ge=1_000)


def load_leads_config(path: str | Path | None = None) -> LeadsConfig:
    """Parse ``configs/leads.yaml`` (or ``path``)."""
    return load_config(path or "leads", LeadsConfig)


def read_sales_tables(con) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``leads`` and ``lead_events`` tables as frames."""
    require_tables(con, "leads", "lead_events")
    leads = _read_leads(con)
    events = con.execute("SELECT lead_id, ts, kind, status FROM lead_events").df()
    return leads, events


def _read_leads(con) -> pd.DataFrame:
    """The ``leads`` table; raises when it is empty (nothing to train or score)."""
    leads = con.execute("SELECT * FROM leads").df()
    if leads.empty:
        raise ModelError(
            "The warehouse has no leads; ingest a leads file (`customer360 ingest leads FILE`) "
            "or generate a warehouse."
        )
    return leads


def customer_engagement(con, open_leads: pd.DataFrame, as_of: dt.date) -> pd.DataFrame:
    """log1p of each linked lead's customer e-mail opens, clicks and sessions in the 90 days
    before the lead's creation and before ``as_of`` (rows strictly before ``as_of``)."""
    frame = open_leads[["lead_id", "customer_id", "created_at"]].dropna(subset=["customer_id"])
    empty = pd.DataFrame(columns=["lead_id", "engagement_at_creation", "engagement_90d"])
    if frame.empty or not table_exists(con, "events"):
        return empty
    kinds = ", ".join(f"'{e}'" for e in ENGAGEMENT_EVENTS)
    cur = con.cursor()  # DuckDB 2: a result left open on ``con`` would block the register
    with registered(cur, frame, "_c360_leads") as view:
        return cur.execute(
            f"""
            SELECT l.lead_id,
              ln(1 + count(e.event_id) FILTER (WHERE e.ts < l.created_at
                 AND e.ts >= l.created_at - INTERVAL 90 DAY)) AS engagement_at_creation,
              ln(1 + count(e.event_id) FILTER (WHERE e.ts >= ?::TIMESTAMP - INTERVAL 90 DAY))
                 AS engagement_90d
            FROM {view} l LEFT JOIN events e
              ON e.customer_id = l.customer_id AND e.event_type IN ({kinds})
             AND e.ts < ?::TIMESTAMP
             AND e.ts >= least(l.created_at, ?::TIMESTAMP) - INTERVAL 90 DAY
            GROUP BY l.lead_id""",
            [pd.Timestamp(as_of)] * 3,
        ).df()


def lead_snapshot(con, leads, events, as_of: dt.date) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(open leads as of the date, their features)``, both in the same row order."""
    ts = pd.Timestamp(as_of)
    open_ = open_leads_as_of(leads, events, ts)
    features = lead_features(open_, events, customer_engagement(con, open_, as_of), ts)
    return open_, features


def open_lead_snapshot(con, as_of: dt.date) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`lead_snapshot` as of one date, reading only the events it uses: status changes
    before ``as_of`` (which leads are open), then the activity events before ``as_of`` of the
    open leads only (joined in DuckDB), instead of every event of every lead. Same frames as
    ``lead_snapshot(con, *read_sales_tables(con), as_of)``, at a fraction of the memory."""
    require_tables(con, "leads", "lead_events")
    ts = pd.Timestamp(as_of)
    leads = _read_leads(con)
    changes = con.execute(
        "SELECT lead_id, ts, kind, status FROM lead_events WHERE kind = 'status_change' "
        "AND ts < ?::TIMESTAMP", [ts]).df()
    open_ = open_leads_as_of(leads, changes, ts)
    kinds = ", ".join(f"'{k}'" for k in ACTIVITY_KINDS)
    cur = con.cursor()  # DuckDB 2: a result left open on ``con`` would block the register
    with registered(cur, open_[["lead_id"]], "_c360_open_leads") as view:
        events = cur.execute(
            f"SELECT e.lead_id, e.ts, e.kind, e.status FROM lead_events e "
            f"JOIN {view} o USING (lead_id) WHERE e.kind IN ({kinds}) AND e.ts < ?::TIMESTAMP",
            [ts]).df()
    features = lead_features(open_, events, customer_engagement(con, open_, as_of), ts)
    return open_, features


def warehouse_today(con) -> dt.date:
    """The synthetic warehouse's today (meta ``today``), else the calendar's."""
    if not table_exists(con, "warehouse_meta"):
        return dt.date.today()
    rows = con.execute("SELECT value FROM warehouse_meta WHERE key = 'today'").fetchall()
    return dt.date.fromisoformat(rows[0][0]) if rows else dt.date.today()


def training_snapshots(con, config: LeadsConfig) -> pd.DataFrame:
    """Stacked point-in-time snapshots: ``lead_id``, ``as_of``, the features and ``label``."""
    leads, events = read_sales_tables(con)
    parts = []
    for as_of in snapshot_dates(warehouse_today(con), config.horizon_days, config.snapshots):
        open_, feats = lead_snapshot(con, leads, events, as_of)
        feats["as_of"] = pd.Timestamp(as_of)
        feats["label"] = conversion_label(open_, pd.Timestamp(as_of), config.horizon_days)
        parts.append(feats)
    return pd.concat(parts, ignore_index=True)


def oracle_scores(con, test: pd.DataFrame, horizon_days: int) -> np.ndarray | None:
    """The generator's true conversion probability of the test rows (None without truth)."""
    if not table_exists(con, "truth_leads"):
        return None
    from customer360.data.synthetic_b2b import oracle_conversion_probability

    parts = [
        oracle_conversion_probability(con, pd.Timestamp(d).date(), horizon_days).assign(as_of=d)
        for d in test["as_of"].unique()
    ]
    truth = pd.concat(parts)
    values = test[["lead_id", "as_of"]].merge(truth, on=["lead_id", "as_of"], how="left")
    out = values["p_convert_horizon"].to_numpy(dtype=float)
    if np.isnan(out).any():
        raise ModelError(f"The truth has no conversion probability for {np.isnan(out).sum()} "
                         "test lead(s); the truth tables do not match the raw tables.")
    return out


def _churn_config(config: LeadsConfig, model_name: str):
    from customer360.training.churn import load_churn_config

    base = load_churn_config()
    return base.model_copy(update={
        "experiment": config.experiment, "model_name": model_name,
        "horizon_days": config.horizon_days, "snapshots": config.snapshots,
        "trials": config.trials, "stack_probabilistic": False,
    })


def prepare_lead_data(con, config: LeadsConfig):
    """Time-split snapshots as the churn job's :class:`ChurnData`, with the oracle."""
    from customer360.models.tabular import infer_schema
    from customer360.training.churn import ChurnData

    snaps = training_snapshots(con, config)
    split = time_split(snaps["as_of"], config.horizon_days, validation=config.snapshots.validation,
                       test=config.snapshots.test)
    features = list(LEAD_FEATURES)
    schema = infer_schema(snaps[features])
    test = snaps[split.test].reset_index(drop=True)
    extra = {}
    oracle = oracle_scores(con, test, config.horizon_days)
    if oracle is not None:
        extra["oracle"] = oracle
    y = snaps["label"].to_numpy(dtype=int)
    data = ChurnData(
        X_train=snaps.loc[split.train, features].reset_index(drop=True),
        y_train=y[split.train],
        X_val=snaps.loc[split.validation, features].reset_index(drop=True),
        y_val=y[split.validation],
        X_test=test[features],
        y_test=test["label"].to_numpy(dtype=int),
        schema=schema,
        descriptions=dict(LEAD_FEATURE_DESCRIPTIONS),
        test_identity=f"leads;as_of={','.join(map(str, split.test_dates))};rows={len(test)};"
        f"hash={data_fingerprint(test[['lead_id', *features]].astype(str))}",
        tags={
            "source": "warehouse", "label": f"converts within {config.horizon_days} days",
            "model_kind": "leads", "as_of_test": ",".join(map(str, split.test_dates)),
            "as_of_validation": ",".join(map(str, split.validation_dates)),
            "as_of_train": ",".join(map(str, split.train_dates)),
            "rows_train": int(split.train.sum()), "rows_validation": int(split.validation.sum()),
            "rows_test": int(split.test.sum()),
        },
        extra_baselines=extra,
    )
    return data, test


def grade_table(y: np.ndarray, probability: np.ndarray, cutoffs) -> pd.DataFrame:
    """Leads, realised conversions and mean predicted probability per grade."""
    grade = lead_grade(lead_score(probability), cutoffs)
    frame = pd.DataFrame({"grade": grade, "y": y, "p": probability})
    out = frame.groupby("grade").agg(leads=("y", "size"), converted=("y", "mean"),
                                     predicted=("p", "mean"))
    return out.reindex(list(GRADES)).dropna(subset=["leads"]).reset_index()


def plot_grades(table: pd.DataFrame):
    """Bar chart: realised and predicted conversion per grade."""
    from customer360.models.tabular import _figure

    fig, ax = _figure()
    x = np.arange(len(table))
    ax.bar(x - 0.2, table["converted"], 0.4, label="realised conversion")
    ax.bar(x + 0.2, table["predicted"], 0.4, label="mean predicted probability")
    ax.set_xticks(x, [f"{g}\n({n:,} leads)" for g, n in zip(table["grade"], table["leads"],
                                                            strict=True)])
    ax.set_ylabel("share converting within the horizon")
    ax.set_title("Lead grade vs realised conversion (test snapshot)")
    ax.legend()
    return fig


def train_leads(
    con,
    config: LeadsConfig | None = None,
    *,
    trials: int | None = None,
    register: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train, evaluate (vs logistic regression, untuned LightGBM and the oracle on the same
    test rows), log and register the lead conversion model ``leads``.

    Examples
    --------
    >>> result = train_leads(con, trials=5)          # doctest: +SKIP
    >>> result.metrics["roc_auc_vs_oracle"] > 0.95    # doctest: +SKIP
    True
    """
    import mlflow

    from customer360.training.churn import run_churn_job

    config = config or load_leads_config()
    data, test = prepare_lead_data(con, config)
    churn_cfg = _churn_config(config, config.model_name)
    result = run_churn_job(
        data, churn_cfg, trials=config.trials if trials is None else trials, register=register,
        model_name=config.model_name, on_progress=on_progress,
    )
    model = mlflow.pyfunc.load_model(result.model_uri).unwrap_python_model().model
    table = grade_table(data.y_test, model.predict_proba(data.X_test), config.grades.model_dump())
    with mlflow.start_run(run_id=result.run_id):
        mlflow.set_tags({"model_kind": "leads", **{f"grade_cutoff_{g}": v for g, v in
                                                   config.grades.model_dump().items()}})
        mlflow.log_figure(plot_grades(table), "plots/grade_vs_conversion.png")
        mlflow.log_table(table, "grade_vs_conversion.json")
        mlflow.log_metrics({f"test_conversion_grade_{r.grade}": float(r.converted)
                            for r in table.itertuples()})
    result.metrics["grade_table"] = table.to_dict("records")
    return result


def score_open_leads(
    con, model, config: LeadsConfig, *, as_of: dt.date | None = None,
    previous: pd.DataFrame | None = None, attribution=None,
) -> pd.DataFrame:
    """Score every lead open as of ``as_of`` (default: the warehouse's today): ``lead_id``,
    ``as_of``, probability, score, grade, trend and reasons. ``previous`` holds an earlier
    scoring (``lead_id``, ``score``); without it every trend is ``new``. ``attribution``: see
    :func:`~customer360.models.leads.score_leads`."""
    as_of = as_of or warehouse_today(con)
    _, feats = open_lead_snapshot(con, as_of)
    scored = score_leads(model, feats[list(LEAD_FEATURES)], config.grades.model_dump(),
                         k=config.reasons, attribution=attribution)
    before = (feats[["lead_id"]].merge(previous[["lead_id", "score"]], on="lead_id", how="left")
              ["score"].to_numpy(dtype=float) if previous is not None
              else np.full(len(feats), np.nan))
    scored.insert(3, "trend", lead_trend(scored["score"].to_numpy(), before, config.trend_band))
    scored.insert(0, "as_of", pd.Timestamp(as_of))
    scored.insert(0, "lead_id", feats["lead_id"].to_numpy())
    return scored


# --- bring your own table and predict ---------------------------------------------------------

LEAD_MODEL_KINDS = ("leads", "leads_byo")


def train_leads_table(
    table,
    label: str,
    *,
    positive_label: str | None = None,
    id_col: str | None = None,
    model_name: str | None = None,
    trials: int | None = None,
    config: LeadsConfig | None = None,
    register: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train a lead conversion model on any table with a binary label column: the churn
    job's bring-your-own-table path (the same typing, split, tuning, baselines and registry),
    registered as ``leads_byo`` (or ``model_name``) and tagged so ``predict`` writes lead
    scores, grades and reasons."""
    import mlflow

    from customer360.training.churn import load_churn_config, train_churn_table

    config = config or load_leads_config()
    churn_cfg = load_churn_config().model_copy(update={"experiment": config.experiment})
    name = model_name or config.byo_model_name
    result = train_churn_table(
        table, label, positive_label=positive_label, id_col=id_col, model_name=name,
        trials=trials, config=churn_cfg, register=register, on_progress=on_progress,
    )
    mlflow.MlflowClient().set_tag(result.run_id, "model_kind", "leads_byo")
    return result


def predict_leads_or_any(ref: str, table: pd.DataFrame, *, id_col: str | None = None,
                         config: LeadsConfig | None = None) -> pd.DataFrame:
    """:func:`customer360.training.common.predict_table`, except that a lead model (run tag
    ``model_kind``) writes id, probability, score 1-100, grade and the reasons for and against
    converting."""
    import mlflow

    from customer360.training.common import (
        check_numeric_cells,
        load_registered_model,
        predict_table,
    )

    loaded = load_registered_model(ref)
    run_id = loaded.metadata.run_id
    kind = mlflow.MlflowClient().get_run(run_id).data.tags.get("model_kind") if run_id else None
    if kind not in LEAD_MODEL_KINDS:
        return predict_table(ref, table, id_col=id_col, loaded=loaded)
    config = config or load_leads_config()
    trained_id = mlflow.MlflowClient().get_run(run_id).data.tags.get("id_col")
    if id_col is not None and id_col not in table.columns:
        from customer360.errors import ConfigError

        raise ConfigError(f"Id column {id_col!r} is not in the table; its columns are "
                          f"{', '.join(map(str, table.columns[:30]))}.")
    id_col = id_col or next((c for c in (trained_id, "lead_id") if c and c in table.columns),
                            None)
    model = loaded.unwrap_python_model().model
    check_numeric_cells(table, [c for c in model.schema_.columns
                                if c not in model.schema_.categories])
    rows = table.reset_index(drop=True)
    scored = score_leads(model, rows, config.grades.model_dump(), k=config.reasons)
    ids = (rows[id_col].rename(id_col) if id_col
           else pd.Series(np.arange(1, len(rows) + 1), name="row"))
    return pd.concat([ids, scored], axis=1)
