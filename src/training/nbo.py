"""Next-best-offer training and evaluation: warehouse offer events -> propensity model ->
off-policy value of the learned policy -> MLflow (registered as ``nbo`` @challenger).

Point in time
-------------
Each logged offer event gets the customer's features built as of the first day of a snapshot
grid (every ``propensity.as_of_step_months`` months) at or before the event's date: only rows
strictly before that day are read, so nothing the event caused (or anything later) leaks into
its features. Events of customers who signed up after their snapshot date have no features
and are counted in ``events_without_features`` (logged), not silently lost.

With ``pair__category_affinity`` in ``propensity.linear_features`` the model also reads the
per-category registry features (orders ``txn__category_orders_<category>__all`` and views +
cart adds ``beh__category_events_<category>__all``, strictly before the snapshot date), from
which it derives how much the customer favours the offer's category. Acceptance depends mostly
on that taste; ``txn__top_category__all`` is only its argmax.

Time-based split (by timestamp): the oldest events train the model, the next
``calibration_fraction`` stop boosting early and fit the calibration map, and the newest
``holdout_fraction`` ("test") are where every policy is evaluated off-policy.

Weights: each training event is weighted by ``min(1 / propensity, weight_clip)`` so the model
sees every offer as if the logging policy had chosen uniformly; the clip bounds the variance
that a few tiny propensities would otherwise add.

Policies compared on the test events (value = expected reward per decision, reward =
accepted x margin): ``logging`` (what was done), ``learned`` (argmax P(accept) x margin among
eligible offers), ``offer_rate`` (non-personalised: argmax of each offer's training acceptance
rate x margin), ``uniform_eligible`` and, on synthetic warehouses, ``oracle`` (argmax of the
true acceptance x margin among eligible offers). Each gets IPS / SNIPS / DR estimates with
bootstrap intervals; synthetic warehouses add the true value from ``truth_offer_acceptance``
and ``truth_logging_policy``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from customer360.data.readers import offer_history
from customer360.data.warehouse import registered, require_tables, table_exists
from customer360.errors import Customer360Error, ModelError
from customer360.models.nbo import (
    OFFER_COLUMNS,
    NBOConfig,
    PropensityModel,
    eligibility,
    load_nbo_config,
    pair_frame,
    predict_accept,
)
from customer360.models.ope import OPEResult, evaluate_policy, one_hot_policy, uniform_policy

log = logging.getLogger(__name__)

MODEL_NAME = "nbo"
EXPERIMENT = "nbo"
POLICIES = ("logging", "learned", "offer_rate", "uniform_eligible", "oracle")

ProgressCallback = Callable[[int, int], None]


# --- data ---------------------------------------------------------------------------------


def load_offers(con: duckdb.DuckDBPyConnection, config: NBOConfig) -> pd.DataFrame:
    """The offer catalogue (warehouse table + config overrides), sorted by ``offer_id``."""
    from customer360.data.readers import offer_table
    from customer360.models.nbo import offer_catalogue

    return offer_catalogue(offer_table(con, config.catalogue.source_table), config)


# The reader moved to data/ (serving reads history too); the old name stays for callers.
load_history = offer_history


def snapshot_grid(first: pd.Timestamp, last: pd.Timestamp, step_months: int) -> list[dt.date]:
    """Month starts from ``first``'s month up to ``last``, every ``step_months`` months."""
    start = pd.Timestamp(first).to_period("M").to_timestamp()
    dates = pd.date_range(start, pd.Timestamp(last), freq=f"{step_months}MS")
    return [d.date() for d in dates]


def customer_snapshots(
    con: duckdb.DuckDBPyConnection,
    as_of_dates: list[dt.date],
    *,
    on_progress: ProgressCallback | None = None,
) -> pd.DataFrame:
    """Features + value segment of every customer at every as-of date (``as_of`` datetime)."""
    from customer360.features import build_features
    from customer360.models.segments import classify, load_segments_config

    seg_config = load_segments_config()
    parts = []
    for i, as_of in enumerate(as_of_dates):
        feats = build_features(con, as_of)
        seg = classify(feats, seg_config)[["customer_id", "value_segment"]]
        parts.append(feats.merge(seg, on="customer_id", how="left", validate="one_to_one"))
        if on_progress is not None:
            on_progress(i + 1, len(as_of_dates))
    out = pd.concat(parts, ignore_index=True)
    out["as_of"] = pd.to_datetime(out["as_of"]).astype("datetime64[us]")
    return out


@dataclass
class OfferData:
    """Logged offer events with point-in-time features, split in time."""

    offers: pd.DataFrame
    events: pd.DataFrame
    """Events with ``snapshot`` (feature as-of), features, ``value_segment``, ``as_of`` =
    event time (the decision time, used by the eligibility history rules)."""
    history: pd.DataFrame
    feature_columns: list[str]
    train: pd.DataFrame
    calib: pd.DataFrame
    test: pd.DataFrame
    n_without_features: int
    today: dt.date
    snapshots: list[dt.date]
    customer_columns: list[str] = field(default_factory=list)
    """Every registry feature the events carry (``feature_columns`` and more)."""


def prepare_offer_data(
    con: duckdb.DuckDBPyConnection,
    config: NBOConfig,
    *,
    on_progress: ProgressCallback | None = None,
) -> OfferData:
    """Offer events of the training window joined to their point-in-time features."""
    from customer360.features.registry import feature_names
    from customer360.training.common import warehouse_today

    require_tables(con, "offer_events", "offers")
    cfg = config.propensity
    offers = load_offers(con, config)
    today = warehouse_today(con)
    start = pd.Timestamp(today) - pd.Timedelta(days=cfg.history_days)
    events = con.execute(
        "SELECT * FROM offer_events WHERE ts >= ? AND ts < ? ORDER BY ts, offer_event_id",
        [start.to_pydatetime(), pd.Timestamp(today).to_pydatetime()],
    ).df()
    if len(events) < 200:
        raise ModelError(
            f"Only {len(events)} offer events between {start.date()} and {today}: too few to "
            "train a propensity model (need >= 200). Widen propensity.history_days or ingest "
            "more offer_events."
        )
    unknown = sorted(set(events["offer_id"]) - set(offers["offer_id"]))
    if unknown:
        raise Customer360Error(
            f"offer_events references offers {unknown[:5]} missing from the catalogue."
        )
    events["ts"] = pd.to_datetime(events["ts"]).astype("datetime64[us]")
    grid = snapshot_grid(events["ts"].min(), events["ts"].max(), cfg.as_of_step_months)
    snaps = customer_snapshots(con, grid, on_progress=on_progress)
    grid_ts = pd.to_datetime(pd.Series(grid)).astype("datetime64[us]").to_numpy()
    # latest snapshot at or before the event's day (features read rows strictly before it)
    events["snapshot"] = grid_ts[
        np.searchsorted(grid_ts, events["ts"].to_numpy(), side="right") - 1
    ]
    wanted = cfg.model_features([c for c in feature_names() if c in snaps.columns])
    missing = [c for c in wanted if c not in snaps.columns]
    if missing:
        raise Customer360Error(
            f"configs/nbo.yaml propensity.feature_columns names unknown features {missing}."
        )
    eligibility_cols = list(config.eligibility.open_issue_features) + ["value_segment"]
    # every registry feature rides along, so a champion trained on other features can be
    # re-scored on these events (the promotion gate)
    available = [c for c in feature_names() if c in snaps.columns]
    keep = ["customer_id", "as_of", *dict.fromkeys(wanted + eligibility_cols + available)]
    merged = events.merge(
        snaps[keep].copy().rename(columns={"as_of": "snapshot"}),
        on=["customer_id", "snapshot"],
        how="left",
        validate="many_to_one",
        indicator=True,
    )
    no_feat = merged["_merge"] != "both"
    n_without = int(no_feat.sum())
    if n_without:
        log.warning(
            "%d of %d offer events belong to customers without a feature snapshot before them "
            "(signed up after the snapshot date); they are left out of training and evaluation",
            n_without,
            len(merged),
        )
    merged = merged[~no_feat].drop(columns="_merge").reset_index(drop=True).copy()
    merged["as_of"] = merged["ts"]  # decision time for the history-based rules
    merged = merged.merge(
        offers[list(OFFER_COLUMNS)].rename(columns={"channel": "offer_channel"}),
        on="offer_id",
        how="left",
    )
    history = load_history(con, offers)
    n = len(merged)
    n_test = int(round(n * cfg.holdout_fraction))
    n_calib = int(round(n * cfg.calibration_fraction))
    n_train = n - n_test - n_calib
    if min(n_train, n_calib, n_test) < 50:
        raise ModelError(
            f"{n} usable offer events split into {n_train} train / {n_calib} calibration / "
            f"{n_test} test: each part needs >= 50. Adjust propensity.holdout_fraction / "
            "calibration_fraction or widen history_days."
        )
    return OfferData(
        offers=offers,
        events=merged,
        history=history,
        feature_columns=wanted,
        train=merged.iloc[:n_train].reset_index(drop=True),
        calib=merged.iloc[n_train : n_train + n_calib].reset_index(drop=True),
        test=merged.iloc[n_train + n_calib :].reset_index(drop=True),
        n_without_features=n_without,
        today=today,
        snapshots=grid,
        customer_columns=list(dict.fromkeys(wanted + available)),
    )


def model_input(frame: pd.DataFrame, feature_columns: list[str]) -> pd.DataFrame:
    """Propensity-model input of logged events: customer features + the offer columns."""
    out = frame[feature_columns].copy()
    for col in OFFER_COLUMNS:
        out[col] = frame["offer_channel"] if col == "channel" else frame[col]
    return out


def ipw_weights(propensity: pd.Series | np.ndarray, clip: float) -> np.ndarray:
    """Inverse-propensity weights ``min(1/p, clip)``; a missing or non-positive propensity is
    an error naming the row (the contract forbids them in ``offer_events``)."""
    p = np.asarray(propensity, dtype=float)
    bad = ~np.isfinite(p) | (p <= 0) | (p > 1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise Customer360Error(
            f"Offer event row {row} has propensity {p[row]!r}; inverse-propensity weighting "
            "needs the logging policy's probability in (0, 1]."
        )
    return np.minimum(1.0 / p, clip)


# --- fitting ------------------------------------------------------------------------------


def _model_settings(config: NBOConfig, params: dict | None = None) -> dict:
    """:class:`PropensityModel` hyperparameters from ``configs/nbo.yaml`` (+ tuned ``params``)."""
    cfg = config.propensity
    return dict(
        params={**cfg.params, **(params or {})},
        num_boost_round=cfg.num_boost_round,
        early_stopping_rounds=cfg.early_stopping_rounds,
        calibrate=None if cfg.calibrate == "none" else cfg.calibrate,
        linear_features=cfg.linear_features or None,
        linear_C=cfg.linear_C,
        linear_shared=cfg.linear_shared,
        seed=cfg.seed,
    )


def _labels(frame: pd.DataFrame, config: NBOConfig) -> tuple[np.ndarray, np.ndarray]:
    """Outcomes and inverse-propensity weights of logged events."""
    return (
        frame["accepted"].astype(int).to_numpy(),
        ipw_weights(frame["propensity"], config.propensity.weight_clip),
    )


def fit_propensity(
    data: OfferData,
    config: NBOConfig,
    params: dict | None = None,
    *,
    callbacks=(),
    calibrate: bool = True,
) -> PropensityModel:
    """Fit the weighted, calibrated propensity model on the train part of ``data``.

    Boosting stops early on the calibration events (their weighted log loss is the model's
    ``best_score_``, what tuning minimises); with ``calibrate`` the calibration map is then
    fitted on the calibration events plus, with ``propensity.calibration_folds`` > 1,
    out-of-fold log-odds of the training events. The offer catalogue is attached
    (``offers_``), so the model scores every offer of plain feature rows.
    """
    y, w = _labels(data.train, config)
    y_cal, w_cal = _labels(data.calib, config)
    X_cal = model_input(data.calib, data.feature_columns)
    model = PropensityModel(**_model_settings(config, params)).fit(
        model_input(data.train, data.feature_columns), y, w,
        X_cal=X_cal, y_cal=y_cal, cal_weight=w_cal, callbacks=callbacks, calibrate=calibrate,
    )
    model.offers_ = data.offers[list(OFFER_COLUMNS)].reset_index(drop=True)
    if calibrate and model.calibrate and config.propensity.calibration_folds > 1:
        _crossfit_calibration(model, data, config, X_cal, y_cal, w_cal)
    return model


def _crossfit_calibration(model, data, config, X_cal, y_cal, w_cal) -> None:
    """Refit the calibration map on calibration-event log-odds plus out-of-fold log-odds of
    the training events (contiguous time folds), so a few hundred events do not decide it
    alone. Each fold's model is boosted for the early-stopped number of rounds."""
    from sklearn.base import clone

    raws, ys, ws = [model.predict_raw(X_cal)], [y_cal], [w_cal]
    folds = np.array_split(np.arange(len(data.train)), config.propensity.calibration_folds)
    for fold in folds:
        rest = np.setdiff1d(np.arange(len(data.train)), fold)
        part, held = data.train.iloc[rest], data.train.iloc[fold]
        y_part, w_part = _labels(part, config)
        sub = clone(model).refit_all(
            model_input(part, data.feature_columns), y_part,
            rounds=model.best_iteration_, schema=model.schema_, sample_weight=w_part,
        )
        raws.append(sub.predict_raw(model_input(held, data.feature_columns)))
        y_held, w_held = _labels(held, config)
        ys.append(y_held)
        ws.append(w_held)
    model.fit_calibration(np.concatenate(raws), np.concatenate(ys), np.concatenate(ws))


def weighted_log_loss(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> float:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-np.sum(w * (y * np.log(p) + (1 - y) * np.log(1 - p))) / np.sum(w))


def classification_metrics(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> dict[str, float]:
    """AUC, weighted log loss, Brier score and calibration gap on held-out events."""
    from sklearn.metrics import roc_auc_score

    auc = float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")
    return {
        "auc": auc,
        "log_loss": weighted_log_loss(y, p, w),
        "brier": float(np.average((p - y) ** 2, weights=w)),
        "calibration_gap": float(abs(np.average(p, weights=w) - np.average(y, weights=w))),
    }


# --- policies -----------------------------------------------------------------------------


@dataclass
class PolicyMatrices:
    """Everything needed to evaluate policies on a set of logged decisions."""

    actions: np.ndarray
    rewards: np.ndarray
    accepted: np.ndarray
    propensities: np.ndarray
    allowed: np.ndarray
    p_hat: np.ndarray
    margin: np.ndarray
    p_true: np.ndarray | None = None
    logging_true: np.ndarray | None = None
    targets: dict[str, np.ndarray] = field(default_factory=dict)


def decision_matrices(
    con: duckdb.DuckDBPyConnection,
    decisions: pd.DataFrame,
    data: OfferData,
    model,
    config: NBOConfig,
    columns: list[str] | None = None,
) -> PolicyMatrices:
    """Eligibility, predicted and (synthetic) true acceptance of every offer per decision
    (``model`` reads the customer ``columns``, default ``data.feature_columns``)."""
    offers = data.offers
    n, k = len(decisions), len(offers)
    customers = decisions.drop(columns=[c for c in OFFER_COLUMNS if c in decisions.columns])
    elig = eligibility(customers, offers, config, data.history)
    allowed = elig["eligible"].to_numpy().reshape(n, k)
    pairs = pair_frame(
        customers[columns or data.feature_columns].reset_index(drop=True),
        offers,
        np.repeat(np.arange(n), k),
        np.tile(np.arange(k), n),
    )
    p_hat = predict_accept(model, pairs).reshape(n, k)
    margin = offers["margin"].to_numpy(dtype=float)
    action = pd.Series(np.arange(k), index=offers["offer_id"]).reindex(decisions["offer_id"])
    actions = action.to_numpy().astype(int)
    accepted = decisions["accepted"].astype(bool).to_numpy()
    mats = PolicyMatrices(
        actions=actions,
        rewards=accepted * margin[actions],
        accepted=accepted.astype(float),
        propensities=decisions["propensity"].to_numpy(dtype=float),
        allowed=allowed,
        p_hat=p_hat,
        margin=margin,
    )
    mats.p_true, mats.logging_true = _truth(con, decisions, offers)
    learned = np.where(allowed, p_hat * margin, -np.inf)
    has_any = allowed.any(axis=1)
    mats.targets["learned"] = one_hot_policy(np.argmax(learned, axis=1), k) * has_any[:, None]
    mats.targets["uniform_eligible"] = np.where(
        has_any[:, None], allowed / np.maximum(allowed.sum(1, keepdims=True), 1), 0.0
    )
    # non-personalised baseline: each offer's acceptance rate among the training events
    rate = (
        pd.Series(data.train["accepted"].astype(float).to_numpy())
        .groupby(data.train["offer_id"].to_numpy())
        .mean()
        .reindex(offers["offer_id"])
        .fillna(0.0)
        .to_numpy()
    )
    baseline = np.where(allowed, rate * margin, -np.inf)
    mats.targets["offer_rate"] = one_hot_policy(np.argmax(baseline, axis=1), k) * has_any[:, None]
    if mats.p_true is not None:
        oracle = np.where(allowed, mats.p_true * margin, -np.inf)
        mats.targets["oracle"] = one_hot_policy(np.argmax(oracle, axis=1), k) * has_any[:, None]
    return mats


def _truth(con, decisions: pd.DataFrame, offers: pd.DataFrame):
    """True acceptance (n, K) and true logging distribution (n, K) on synthetic warehouses."""
    if not table_exists(con, "truth_offer_acceptance"):
        return None, None
    cur = con.cursor()  # registered frames live on their own cursor
    try:
        p_true = _offer_matrix(
            cur, "truth_offer_acceptance", "customer_id", "p_accept", decisions, offers
        )
        logging_true = None
        if table_exists(con, "truth_logging_policy") and "offer_event_id" in decisions:
            logging_true = np.nan_to_num(
                _offer_matrix(
                    cur, "truth_logging_policy", "offer_event_id", "probability", decisions, offers
                ),
                nan=0.0,
            )
    finally:
        cur.close()
    if np.isnan(p_true).any():
        return None, logging_true
    return p_true, logging_true


def _offer_matrix(
    cur, table: str, key: str, value: str, decisions: pd.DataFrame, offers: pd.DataFrame
) -> np.ndarray:
    """``table.value`` per (decision row, offer) as an (n, K) matrix, NaN where missing."""
    with registered(cur, decisions[[key]].drop_duplicates()) as view:
        rows = cur.execute(
            f"SELECT t.{key}, t.offer_id, t.{value} FROM {table} t JOIN {view} USING ({key})"
        ).df()
    return (
        rows.pivot(index=key, columns="offer_id", values=value)
        .reindex(index=decisions[key].to_numpy(), columns=offers["offer_id"])
        .to_numpy(dtype=float)
    )


def policy_values(mats: PolicyMatrices, config: NBOConfig) -> tuple[pd.DataFrame, dict]:
    """OPE (IPS / SNIPS / DR with intervals, ESS) and true values of every policy.

    Returns a table (one row per policy) and the :class:`OPEResult` objects by policy.
    """
    ope_cfg = config.ope
    n, k = mats.p_hat.shape
    q = mats.p_hat * mats.margin
    rows, results = [], {}
    for name in POLICIES:
        if name == "logging":
            # on-policy: the logged action with probability 1 relative to itself
            target, prop = one_hot_policy(mats.actions, k), np.ones(n)
        elif name in mats.targets:
            target, prop = mats.targets[name], mats.propensities
        else:
            continue
        kwargs = dict(
            n_boot=ope_cfg.n_boot,
            confidence=ope_cfg.confidence,
            seed=ope_cfg.seed,
            min_propensity=ope_cfg.min_propensity,
        )
        res = evaluate_policy(mats.actions, mats.rewards, prop, target, reward_model=q, **kwargs)
        acc = evaluate_policy(
            mats.actions, mats.accepted, prop, target, reward_model=mats.p_hat, **kwargs
        )
        results[name] = res
        row = {
            "policy": name,
            "ips": res.ips.value,
            "ips_low": res.ips.ci_low,
            "ips_high": res.ips.ci_high,
            "snips": res.snips.value,
            "snips_low": res.snips.ci_low,
            "snips_high": res.snips.ci_high,
            "dr": res.dr.value,
            "dr_low": res.dr.ci_low,
            "dr_high": res.dr.ci_high,
            "ess": res.ess,
            "acceptance_rate": acc.snips.value,
        }
        truth_target = mats.logging_true if name == "logging" else target
        if mats.p_true is not None and truth_target is not None:
            row["true_value"] = float(np.mean(np.sum(truth_target * mats.p_true * mats.margin, 1)))
            row["true_acceptance_rate"] = float(np.mean(np.sum(truth_target * mats.p_true, 1)))
        rows.append(row)
    return pd.DataFrame(rows), results


# --- the job ------------------------------------------------------------------------------


@dataclass
class NBOResult:
    """What :func:`train_nbo` produced."""

    run_id: str
    model_uri: str
    version: str | None
    metrics: dict
    policy_values: pd.DataFrame
    model: PropensityModel = field(repr=False)
    ope: dict[str, OPEResult] = field(repr=False, default_factory=dict)
    notes: list[str] = field(default_factory=list)
    became_champion: bool = False
    rows: dict[str, int] = field(default_factory=dict)


def nbo_signature(example: pd.DataFrame, output: pd.DataFrame):
    """The pyfunc signature: customer features required with their own types (int64 features
    stay ``long``, as ``features build`` writes them), the offer columns optional."""
    from mlflow.models import infer_signature
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    from customer360.features.registry import dtypes

    kinds = dtypes()
    typed = example.copy()
    for col in typed.columns:
        if kinds.get(col) == "int64" and typed[col].notna().all():
            typed[col] = typed[col].astype("int64")
    inferred = infer_signature(typed, output)
    inputs = Schema([
        ColSpec(spec.type, spec.name, required=spec.name not in OFFER_COLUMNS)
        for spec in inferred.inputs.inputs
    ])
    return typed, ModelSignature(inputs=inputs, outputs=inferred.outputs)


def _training_config(config: NBOConfig):
    """The shared job runner's settings for the propensity model."""
    from customer360.training.common import ParamRange, TrainingConfig

    cfg = config.propensity
    return TrainingConfig(
        experiment=EXPERIMENT,
        model_name=MODEL_NAME,
        trials=cfg.trials,
        seed=cfg.seed,
        n_jobs=1,
        num_boost_round=cfg.num_boost_round,
        early_stopping_rounds=cfg.early_stopping_rounds,
        search_space={k: ParamRange(**v) for k, v in cfg.search_space.items()},
        refit_on_all_rows=cfg.refit,
    )


def train_nbo(
    con: duckdb.DuckDBPyConnection,
    config: NBOConfig | None = None,
    *,
    trials: int | None = None,
    register: bool = True,
    on_progress: ProgressCallback | None = None,
) -> NBOResult:
    """Train the propensity model on the warehouse's offer events and evaluate the policies.

    Runs through the shared job runner (:func:`customer360.training.common.run_training_job`),
    as churn and ML-CLV do: one MLflow parent run (experiment ``nbo``) with Optuna trials as
    nested runs when ``trials`` (default ``propensity.trials``) > 0, the model evaluated on
    the newest events it never saw, the current champion re-scored on the same events, then
    (``propensity.refit``) refit on every logged event with the chosen settings, logged as a
    pyfunc (customer feature columns + optional offer columns in, ``p_accept`` out) and, when
    ``register``, registered as ``nbo`` @challenger (the first version also @champion) with a
    description and tags. What is NBO's own: inverse-propensity weights, the pair features
    and offer catalogue inside the model, and the evaluation: held-out AUC / log loss /
    Brier against an offer-rate baseline, and per policy the OPE estimates (and true values
    on synthetic data): ``value_<policy>_<estimator>``; the promotion gate compares the
    learned policy's doubly robust value ``test_policy_value_dr``.

    Examples
    --------
    >>> from customer360.data.warehouse import connect  # doctest: +SKIP
    >>> result = train_nbo(connect(), trials=0)  # doctest: +SKIP
    >>> result.policy_values[["policy", "dr", "true_value"]]  # doctest: +SKIP
    """
    import mlflow

    from customer360.features.registry import FEATURE_SET_VERSION
    from customer360.training.common import Evaluation, run_training_job

    config = config or load_nbo_config()
    cfg = config.propensity
    trials = cfg.trials if trials is None else trials
    steps = 4
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        if on_progress is not None:
            on_progress(done, steps)

    data = prepare_offer_data(con, config)
    step()
    X_test = model_input(data.test, data.feature_columns)
    y_test, w_test = _labels(data.test, config)
    fitted: dict[str, PropensityModel] = {}
    evaluated: dict[str, object] = {}

    def fit(params: dict, callbacks=(), final: bool = False) -> PropensityModel:
        model = fit_propensity(data, config, params, callbacks=callbacks, calibrate=final)
        if final:
            fitted["model"] = model  # refit in place on all events by the runner
            step()
        return model

    def evaluate(model: PropensityModel) -> Evaluation:
        p = model.predict_proba(X_test)
        metrics = classification_metrics(y_test, p, w_test)
        rate = (
            pd.Series(data.train["accepted"].astype(float).to_numpy())
            .groupby(data.train["offer_id"].to_numpy())
            .mean()
        )
        base = rate.reindex(data.test["offer_id"].to_numpy()).fillna(rate.mean()).to_numpy()
        baseline = classification_metrics(y_test, base, w_test)
        table, ope = policy_values(decision_matrices(con, data.test, data, model, config), config)
        step()
        extra: dict[str, float] = {}
        for _, row in table.iterrows():
            for col in ("ips", "snips", "dr", "true_value", "acceptance_rate",
                        "true_acceptance_rate", "ess"):
                if col in row and pd.notna(row[col]):
                    extra[f"value_{row['policy']}_{col}"] = float(row[col])
        truth = table.set_index("policy").get("true_value")
        if truth is not None and truth.notna().all():
            extra["learned_over_logging"] = float(truth["learned"] / truth["logging"])
            extra["learned_over_oracle"] = float(truth["learned"] / truth["oracle"])
        if "learned" in set(table["policy"]):
            # The promotion gate compares this: the learned policy's doubly robust value per
            # decision on the held-out logged events (greater is better).
            metrics["policy_value_dr"] = float(table.set_index("policy").loc["learned", "dr"])
        extra["events_without_features"] = float(data.n_without_features)
        extra["n_test_events"] = float(len(data.test))
        with tempfile.TemporaryDirectory() as tmp:
            table.to_csv(Path(tmp) / "policy_values.csv", index=False)
            (Path(tmp) / "ope.json").write_text(
                json.dumps({k: v.to_dict() for k, v in ope.items()}, indent=2)
            )
            mlflow.log_artifact(str(Path(tmp) / "policy_values.csv"))
            mlflow.log_artifact(str(Path(tmp) / "ope.json"))
        evaluated.update(table=table, ope=ope, baseline=baseline, extra=extra)
        return Evaluation(
            metrics=metrics,
            baselines={"offer_rate": baseline},
            figures=_figures(data, p, table, cfg),
            notes=[f"{name}: {w}" for name, res in ope.items() for w in res.warnings],
            extra_metrics={k: v for k, v in extra.items() if np.isfinite(v)},
        )

    both = pd.concat([data.train, data.calib, data.test], ignore_index=True)
    y_all, w_all = _labels(both, config)
    refit = (model_input(both, data.feature_columns), y_all, w_all) if cfg.refit else None
    result = run_training_job(
        config=_training_config(config),
        model_name=MODEL_NAME,
        trials=trials,
        register=register,
        fit=fit,
        tuning_metric="binary_logloss",
        evaluate=evaluate,
        champion_evaluate=lambda champion: {
            "policy_value_dr": _learned_dr(con, data, champion.unwrap_python_model().model,
                                           config)
        },
        primary_metric="policy_value_dr",
        example=X_test.head(5),
        signature=nbo_signature,
        tags={
            "feature_set_version": FEATURE_SET_VERSION,
            "label": "accepted",
            "label_definition": LABEL_DEFINITION,
            "source": "warehouse",
            "today": data.today,
            "snapshots": ",".join(map(str, data.snapshots)),
            "rows_train": len(data.train),
            "rows_calibration": len(data.calib),
            "rows_test": len(data.test),
            "test_start": data.test["ts"].min(),
        },
        test_identity=(
            f"events {data.test['ts'].min()}..{data.test['ts'].max()};n={len(data.test)};"
            f"today={data.today}"
        ),
        refit_data=refit,
    )
    step()
    metrics = {
        **{f"test_{k}": v for k, v in result.metrics.items()},
        **{f"baseline_{k}": v for k, v in evaluated["baseline"].items()},
        **evaluated["extra"],
    }
    return NBOResult(
        run_id=result.run_id,
        model_uri=result.model_uri,
        version=result.version,
        metrics=metrics,
        policy_values=evaluated["table"],
        model=fitted["model"],
        ope=evaluated["ope"],
        notes=result.notes,
        became_champion=result.became_champion,
        rows=result.rows,
    )


LABEL_DEFINITION = (
    "P(accept) of an offer made to a customer: offer_events.accepted, inverse-propensity "
    "weighted by the logging policy"
)


def _learned_dr(con, data: OfferData, model, config: NBOConfig) -> float:
    """Doubly robust value of the policy ``model`` (e.g. the champion, which may read other
    features than this run's) induces on the held-out events."""
    mats = decision_matrices(con, data.test, data, model, config, data.customer_columns)
    table, _ = policy_values(mats, config)
    return float(table.set_index("policy").loc["learned", "dr"])


def _figures(data: OfferData, p: np.ndarray, table: pd.DataFrame, cfg) -> dict:
    """Calibration, acceptance by offer and policy values of one NBO run (``p``: the
    model's P(accept) of the test events)."""
    from customer360.models.nbo_plots import (
        plot_acceptance_by_offer,
        plot_policy_values,
        plot_weighted_calibration,
    )

    y = data.test["accepted"].astype(float).to_numpy()
    w = ipw_weights(data.test["propensity"], cfg.weight_clip)
    return {
        "calibration": plot_weighted_calibration(y, p, w),
        "acceptance_by_offer": plot_acceptance_by_offer(data.test["offer_id"].to_numpy(), y, p, w),
        "policy_values": plot_policy_values(table),
    }


def load_propensity_model(name: str = MODEL_NAME, alias: str = "challenger") -> PropensityModel:
    """The registered propensity model (``models:/nbo@challenger`` by default), unwrapped."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from customer360.errors import NotFoundError
    from customer360.training.tracking import setup_mlflow

    setup_mlflow(EXPERIMENT)
    uri = name if "/" in name or ":" in name else f"models:/{name}@{alias}"
    try:
        pyfunc = mlflow.pyfunc.load_model(uri)
    except MlflowException as exc:
        raise NotFoundError(
            f"No model at {uri}: {exc}. Run `customer360 nbo train` first."
        ) from exc
    return pyfunc.unwrap_python_model().model


# --- bring your own logs ------------------------------------------------------------------

BYO_POLICIES = ("uniform", "logging", "model")


def read_logs(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet log file."""
    from customer360.data.files import read_file

    return read_file(path, what="Log file", error=Customer360Error)


def _crossfit_rewards(
    context: pd.DataFrame,
    actions: np.ndarray,
    rewards: np.ndarray,
    weights: np.ndarray,
    n_actions: int,
    *,
    folds: int = 2,
    seed: int = 0,
) -> np.ndarray:
    """Out-of-fold predicted reward of every action for every row (``(n, K)``), LightGBM.

    Each row's predictions come from a model that never saw it, so a greedy policy built on
    them can be evaluated on the same log without overfitting bias.
    """
    import lightgbm as lgb

    n = len(actions)
    enc = pd.DataFrame(index=range(n))
    cats = []
    for col in context.columns:
        if pd.api.types.is_numeric_dtype(context[col]) or pd.api.types.is_bool_dtype(context[col]):
            enc[col] = pd.to_numeric(context[col], errors="coerce").to_numpy(dtype=float)
        else:
            enc[col] = pd.Categorical(context[col].astype("string")).codes.astype(float)
            enc.loc[enc[col] < 0, col] = np.nan
            cats.append(col)
    enc["__action"] = actions.astype(float)
    cats.append("__action")
    fold = np.random.default_rng(seed).integers(0, folds, n)
    out = np.zeros((n, n_actions))
    params = {
        "objective": "regression",
        "verbosity": -1,
        "num_leaves": 15,
        "learning_rate": 0.05,
        "min_data_in_leaf": 20,
        "num_threads": 1,
        "seed": seed,
    }
    for f in range(folds):
        tr, te = fold != f, fold == f
        if not te.any() or not tr.any():
            continue
        booster = lgb.train(
            params,
            lgb.Dataset(
                np.ascontiguousarray(enc[tr].to_numpy()),
                rewards[tr],
                weight=weights[tr],
                feature_name=list(enc.columns),
                categorical_feature=cats,
            ),
            num_boost_round=100,
        )
        rows = enc[te].to_numpy()
        for a in range(n_actions):
            rows[:, -1] = a
            out[te, a] = booster.predict(np.ascontiguousarray(rows))
    return out


def evaluate_logs(
    logs: pd.DataFrame,
    *,
    action_col: str,
    reward_col: str,
    propensity_col: str,
    context_cols: list[str] | None = None,
    context_prefix: str | None = None,
    policy: str = "uniform",
    model: str | None = None,
    config: NBOConfig | None = None,
) -> dict:
    """Off-policy value of a policy on your own bandit logs (IPS, SNIPS, DR + intervals, ESS).

    Parameters
    ----------
    logs
        One row per logged decision.
    action_col, reward_col, propensity_col
        The chosen action, its reward and the logging policy's probability of choosing it
        (missing propensities are counted and left out, with a warning).
    context_cols, context_prefix
        Context columns (explicit list, or every column starting with the prefix) for the
        reward model and the ``model`` policy.
    policy
        ``uniform`` (each seen action equally likely), ``logging`` (on-policy value of the
        logs themselves) or ``model``: greedy on predicted reward, from the registered MLflow
        model ``model`` (pyfunc taking the context columns + the action column) or, without
        ``model``, from a cross-fitted LightGBM reward model learned on the logs.

    Returns
    -------
    dict
        JSON-ready: ``policy``, ``n_rows``, ``actions``, ``estimates`` (ips/snips/dr with
        ``value``, ``ci_low``, ``ci_high``), ``ess``, ``warnings`` and more.
    """
    config = config or load_nbo_config()
    if policy not in BYO_POLICIES:
        raise Customer360Error(f"--policy must be one of {BYO_POLICIES}, got {policy!r}.")
    needed = [action_col, reward_col, propensity_col]
    missing = [c for c in needed if c not in logs.columns]
    if missing:
        raise Customer360Error(
            f"The log lacks column(s) {missing}; it has {list(logs.columns)}. Point "
            "--action-col / --reward-col / --propensity-col at the right columns."
        )
    if context_cols and context_prefix:
        raise Customer360Error("Give --context-cols or --context-prefix, not both.")
    if context_prefix:
        context_cols = [c for c in logs.columns if str(c).startswith(context_prefix)]
        if not context_cols:
            raise Customer360Error(f"No column of the log starts with {context_prefix!r}.")
    context_cols = context_cols or []
    bad_ctx = [c for c in context_cols if c not in logs.columns]
    if bad_ctx:
        raise Customer360Error(f"Context column(s) {bad_ctx} are not in the log.")
    if logs[action_col].isna().any():
        row = int(np.flatnonzero(logs[action_col].isna().to_numpy())[0])
        raise Customer360Error(f"Row {row} of the log has no action in {action_col!r}.")
    rewards = pd.to_numeric(logs[reward_col], errors="coerce").to_numpy(dtype=float)
    if not np.isfinite(rewards).all():
        row = int(np.flatnonzero(~np.isfinite(rewards))[0])
        raise Customer360Error(
            f"Row {row} of the log has a missing or non-numeric reward in {reward_col!r}: "
            f"{logs[reward_col].iloc[row]!r}."
        )
    propensities = pd.to_numeric(logs[propensity_col], errors="coerce").to_numpy(dtype=float)
    labels = sorted(logs[action_col].astype(str).unique().tolist())
    actions = pd.Categorical(logs[action_col].astype(str), categories=labels).codes.astype(int)
    n, k = len(logs), len(labels)
    usable = np.isfinite(propensities) & (propensities > 0)
    weights = np.where(
        usable,
        np.minimum(1 / np.where(usable, propensities, 1.0), config.propensity.weight_clip),
        0.0,
    )
    q = None
    if context_cols:
        q = _crossfit_rewards(
            logs[context_cols].reset_index(drop=True),
            actions,
            rewards,
            weights,
            k,
            seed=config.ope.seed,
        )
    if policy == "uniform":
        target, prop = uniform_policy(n, k), propensities
    elif policy == "logging":
        target, prop = one_hot_policy(actions, k), np.ones(n)
    else:
        if model is not None:
            scores = _registered_model_scores(model, logs, context_cols, action_col, labels)
        elif q is not None:
            scores = q
        else:
            raise Customer360Error(
                "--policy model needs context columns (--context-cols/--context-prefix) to "
                "learn a reward model from the logs, or --model NAME of a registered model."
            )
        target, prop = one_hot_policy(np.argmax(scores, axis=1), k), propensities
    ope = config.ope
    res = evaluate_policy(
        actions,
        rewards,
        prop,
        target,
        reward_model=q,
        n_boot=ope.n_boot,
        confidence=ope.confidence,
        seed=ope.seed,
        min_propensity=ope.min_propensity,
    )
    share = target.mean(axis=0)
    return {
        "policy": policy,
        "model": model,
        "n_rows": n,
        "n_used": res.n,
        "n_dropped": res.n_dropped,
        "actions": labels,
        "policy_action_share": {a: float(s) for a, s in zip(labels, share, strict=True)},
        "estimates": {name: vars(getattr(res, name)) for name in ("ips", "snips", "dr")},
        "ess": res.ess,
        "max_weight": res.max_weight,
        "confidence": res.confidence,
        "n_boot": res.n_boot,
        "reward_model": "cross-fitted LightGBM" if q is not None else "per-action mean",
        "warnings": res.warnings,
    }


def _registered_model_scores(
    name: str, logs: pd.DataFrame, context_cols: list[str], action_col: str, labels: list[str]
) -> np.ndarray:
    """Scores of every action per row from a registered pyfunc (context + action column in)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from customer360.errors import NotFoundError
    from customer360.training.tracking import setup_mlflow

    setup_mlflow(EXPERIMENT)
    uri = name if ":" in name else f"models:/{name}@challenger"
    try:
        pyfunc = mlflow.pyfunc.load_model(uri)
    except MlflowException as exc:
        raise NotFoundError(f"No model at {uri}: {exc}") from exc
    base = logs[context_cols].reset_index(drop=True)
    n = len(base)
    frame = base.loc[base.index.repeat(len(labels))].reset_index(drop=True)
    frame[action_col] = np.tile(labels, n)
    out = pyfunc.predict(frame)
    if isinstance(out, pd.DataFrame):
        out = out.iloc[:, 0]
    return np.asarray(out, dtype=float).reshape(n, len(labels))


# --- scoring and simulation on the warehouse ----------------------------------------------


def current_customers(
    con: duckdb.DuckDBPyConnection,
    customer_ids: list[str] | None = None,
) -> pd.DataFrame:
    """Features + value segment of customers as of the warehouse's today (all by default)."""
    from customer360.training.common import warehouse_today

    today = warehouse_today(con)
    snaps = customer_snapshots(con, [today])
    if customer_ids is not None:
        from customer360.errors import NotFoundError

        unknown = sorted(set(customer_ids) - set(snaps["customer_id"]))
        if unknown:
            raise NotFoundError(
                f"Customer(s) {unknown[:5]} are not in the warehouse (or signed up on/after "
                f"{today}); check the id."
            )
        snaps = snaps[snaps["customer_id"].isin(customer_ids)].reset_index(drop=True)
    return snaps


def recommend_for(
    con: duckdb.DuckDBPyConnection,
    customer_ids: list[str] | None = None,
    *,
    config: NBOConfig | None = None,
    model=None,
    k: int | None = None,
    use_bandit: bool = True,
    seed: int | None = None,
    include_excluded: bool = True,
) -> pd.DataFrame:
    """:func:`customer360.models.nbo.recommend` for warehouse customers as of today.

    Uses the registered ``nbo@challenger`` model unless ``model`` is given, the offer and
    feedback history for the eligibility rules, and (``use_bandit``) the Thompson-sampling
    state learned from recorded feedback.
    """
    from customer360.models.bandit import BanditState
    from customer360.models.nbo import recommend

    config = config or load_nbo_config()
    offers = load_offers(con, config)
    customers = current_customers(con, customer_ids)
    model = model if model is not None else load_propensity_model()
    bandit = BanditState.load(con) if use_bandit else None
    # features are as of the warehouse's today; the decision happens now, so feedback recorded
    # after today (held / rejected / contact cap) still counts
    now = pd.Timestamp.now(tz="UTC").tz_localize(None)
    customers["as_of"] = np.maximum(customers["as_of"].to_numpy(), np.datetime64(now, "us"))
    return recommend(
        customers,
        offers,
        model,
        config,
        history=load_history(con, offers, customer_ids),
        k=k,
        bandit=bandit,
        # seed: free draws (reproducible runs); None: one decision per customer per period,
        # the same as the service and batch scoring.
        rng=None if seed is None else np.random.default_rng(seed),
        include_excluded=include_excluded,
    )


def simulate_bandit(
    con: duckdb.DuckDBPyConnection,
    config: NBOConfig | None = None,
    *,
    rounds: int = 40,
    batch_size: int = 200,
    seed: int = 0,
    persist: bool = False,
    on_progress: ProgressCallback | None = None,
) -> pd.DataFrame:
    """Thompson sampling per value segment x offer against the synthetic true acceptance.

    Customers as of today with their eligibility (segment, open issues, history); every
    round offers a batch of random customers the eligible offer with the best sampled
    P(accept) x margin and draws the answer from ``truth_offer_acceptance``. With ``persist``
    every answer is appended to the durable feedback log (``nbo_feedback``), exactly as live
    feedback would be. Returns per-round regret (see
    :func:`customer360.models.bandit.simulate_thompson`).
    """
    from customer360.models.bandit import record_feedback_batch, simulate_thompson

    config = config or load_nbo_config()
    require_tables(con, "truth_offer_acceptance")
    offers = load_offers(con, config)
    customers = current_customers(con)
    elig = eligibility(customers, offers, config, load_history(con, offers))
    allowed = elig["eligible"].to_numpy().reshape(len(customers), len(offers))
    keep = allowed.any(axis=1)
    customers, allowed = customers[keep].reset_index(drop=True), allowed[keep]
    p_true, _ = _truth(con, customers, offers)
    if p_true is None:
        raise ModelError("truth_offer_acceptance lacks some customer x offer pairs.")
    segments = customers[config.eligibility.segment_column].astype(str).to_numpy()
    now = pd.Timestamp.now(tz="UTC").tz_localize(None)

    def on_round(r: int, fb: pd.DataFrame) -> None:
        if persist:
            record_feedback_batch(
                con,
                pd.DataFrame(
                    {
                        "customer_id": customers["customer_id"].to_numpy()[fb["customer_idx"]],
                        "offer_id": offers["offer_id"].to_numpy()[fb["offer_idx"]],
                        "segment": fb["segment"].to_numpy(),
                        "accepted": fb["accepted"].to_numpy(),
                        "ts": now,
                    }
                ),
            )
        if on_progress is not None:
            on_progress(r + 1, rounds)

    return simulate_thompson(
        p_true,
        offers["margin"].to_numpy(dtype=float),
        segments,
        allowed,
        rounds=rounds,
        batch_size=batch_size,
        prior_mean=config.bandit.prior_mean,
        prior_strength=2.0,
        exploration=config.bandit.exploration,
        seed=seed,
        on_round=on_round,
    )
