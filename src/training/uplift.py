"""Uplift fit, held-out evaluation and the campaign plan (issue 16).

Wiring only: read the campaign log and the features as of each campaign's start, fit the
meta-learners of :mod:`customer360.models.uplift` on every campaign but the latest, evaluate on
the latest (randomised, held out in time) against churn-risk and propensity targeting and, on
a synthetic warehouse, against the true effects; then plan who to contact.

Strategies compared (each fills the budget with contacts in its own order):

* ``mass_D`` -- value segment D in random order (the "mass campaign to low-value customers");
* ``focused_BC`` -- value segments B and C in random order;
* ``top_uplift`` -- expected incremental margin net of the contact cost, positive ones only;
  for the retention offer it is churn probability x value if retained x save rate - cost
  (which equals the estimated incremental margin: save rate = uplift / churn probability);
* ``top_churn_risk`` -- the highest estimated probability of not buying without contact;
* ``top_propensity`` -- the highest estimated probability of buying when contacted.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import math
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pandas as pd
from pydantic import Field

from customer360.config import StrictModel, load_config
from customer360.data.campaigns import load_campaign_log
from customer360.data.warehouse import table_exists
from customer360.errors import CampaignError
from customer360.figures import new_figure
from customer360.models.ope import evaluate_policy
from customer360.models.tabular import threads_for
from customer360.models.uplift import (
    UpliftLearner,
    fit_value_model,
    gain_curve,
    predict_value,
    qini_auc,
    true_gain_auc,
    uplift_at_k,
)

log = logging.getLogger(__name__)

SCORES_TABLE = "campaign_scores"
BACKTESTS_TABLE = "campaign_backtests"
STRATEGIES = ("mass_D", "focused_BC", "top_uplift", "top_churn_risk", "top_propensity")
BEST_BACKTEST = "best_backtest"
"""A plan's strategy rule: contact whom the strategy with the highest DR backtest would."""
FATIGUE_FEATURES = ("camp__offers_received__90d", "camp__contacted__120d")


class UpliftConfig(StrictModel):
    """``configs/campaigns.yaml``: learners, evaluation and plan settings."""

    method: str = "x"
    n_estimators: int = Field(200, ge=10)
    learning_rate: float = Field(0.05, gt=0)
    num_leaves: int = Field(15, ge=2)
    min_child_samples: int = Field(50, ge=1)
    n_jobs: int | None = Field(None, ge=1)
    """LightGBM threads; ``None``: every core for :data:`PARALLEL_FIT_ROWS` training rows or
    more, one below (small fits lose to thread start-up and, on a shared machine, to
    oversubscription)."""
    k: float = Field(0.3, gt=0, le=1)
    """Share targeted for uplift@k."""
    n_boot: int = Field(300, ge=50)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    seed: int = 0


PARALLEL_FIT_ROWS = 100_000


def fit_threads(config: UpliftConfig, rows: int) -> int:
    """LightGBM threads for a fit on ``rows`` training rows (``config.n_jobs`` when set).

    Examples
    --------
    >>> fit_threads(UpliftConfig(n_jobs=3), 10), fit_threads(UpliftConfig(), 10)
    (3, 1)
    """
    if config.n_jobs is not None:
        return config.n_jobs
    return threads_for(rows, PARALLEL_FIT_ROWS)


def load_uplift_config(path=None) -> UpliftConfig:
    return load_config(path or "campaigns", UpliftConfig)


def _fatigue(con: duckdb.DuckDBPyConnection, starts: list[dt.date]) -> pd.DataFrame:
    days = ", ".join(f"(DATE '{d}')" for d in starts)
    return con.execute(
        f"""
        WITH s(as_of) AS (VALUES {days})
        SELECT c.customer_id, s.as_of,
          (SELECT count(*) FROM offer_events o WHERE o.customer_id = c.customer_id
             AND o.ts >= s.as_of - INTERVAL 90 DAY AND o.ts < s.as_of)::DOUBLE
             AS camp__offers_received__90d,
          (SELECT count(*) FROM campaign_contacts k JOIN campaigns g USING (campaign_id)
             WHERE k.customer_id = c.customer_id AND k.arm = 'treatment'
             AND g.started_at >= s.as_of - INTERVAL 120 DAY AND g.started_at < s.as_of)::DOUBLE
             AS camp__contacted__120d
        FROM customers c CROSS JOIN s
        """
    ).df()


def customer_frame(con: duckdb.DuckDBPyConnection, as_of: list[dt.date]) -> pd.DataFrame:
    """Registry features, fatigue features and the value segment of every customer as of each
    date (``customer_id``, ``as_of``, features..., ``value_segment``)."""
    from customer360.features.assembler import build_features
    from customer360.models.segments import classify, load_segments_config

    feats = build_features(con, as_of)
    feats["as_of"] = pd.to_datetime(feats["as_of"]).dt.date
    fat = _fatigue(con, as_of)
    fat["as_of"] = pd.to_datetime(fat["as_of"]).dt.date
    feats = feats.merge(fat, on=["customer_id", "as_of"], how="left")
    cfg = load_segments_config()
    seg = pd.concat(
        [classify(g, cfg)[["customer_id", "value_segment"]].assign(as_of=d)
         for d, g in feats.groupby("as_of", sort=True)],
        ignore_index=True,
    )
    return feats.merge(seg, on=["customer_id", "as_of"], how="left")


def _is_text(s: pd.Series) -> bool:
    return isinstance(s.dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(s)


def category_levels(frame: pd.DataFrame, columns: list[str]) -> dict[str, list[str]]:
    """The training levels of every non-numeric column (fixed codes for scoring)."""
    return {c: sorted(frame[c].dropna().astype(str).unique()) for c in columns
            if _is_text(frame[c])}


def feature_matrix(
    frame: pd.DataFrame, columns: list[str], levels: dict[str, list[str]]
) -> np.ndarray:
    """Numeric matrix of ``columns``: categories as their code among the training
    ``levels`` (unseen or missing -> NaN), numbers as floats."""
    out = np.empty((len(frame), len(columns)))
    for j, c in enumerate(columns):
        s = frame[c]
        if c in levels:
            codes = pd.Categorical(s.astype("string"), categories=levels[c]).codes
            out[:, j] = np.where(codes < 0, np.nan, codes)
        else:
            out[:, j] = pd.to_numeric(s, errors="coerce").astype(float).to_numpy()
    return np.ascontiguousarray(out)


def _feature_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if "__" in c]


@dataclass
class UpliftFit:
    """Fitted learners of one action and their held-out evaluation."""

    action: str
    columns: list[str]
    purchase: UpliftLearner
    margin: UpliftLearner
    levels: dict[str, list[str]]
    value: object
    """Margin of a buyer (:func:`fit_value_model`)."""
    holdout: pd.DataFrame
    """The latest campaign's rows: features, arms and outcomes."""
    scored: pd.DataFrame = field(default_factory=pd.DataFrame)
    """The same rows with every score, outcome and (synthetic) true effect."""
    metrics: dict[str, float] = field(default_factory=dict)
    train_campaigns: list[str] = field(default_factory=list)
    holdout_campaign: str = ""


def score_frame(fit: UpliftFit, frame: pd.DataFrame, cost: float) -> pd.DataFrame:
    """Add the estimated effects and every ranking score to a customer frame."""
    X = feature_matrix(frame, fit.columns, fit.levels)
    p0, p1 = fit.purchase.predict_outcomes(X)
    out = frame[["customer_id", "value_segment"]].copy()
    out["p_buy_control"] = p0
    out["p_buy_contacted"] = p1
    out["churn_probability"] = 1 - p0
    out["uplift_purchase"] = fit.purchase.predict_effect(X)
    out["uplift_margin"] = fit.margin.predict_effect(X)
    if fit.action == "retention":
        value_if_retained = predict_value(fit.value, X)
        save_rate = out["uplift_purchase"] / np.maximum(out["churn_probability"], 1e-3)
        out["expected_net_margin"] = (
            out["churn_probability"] * value_if_retained * save_rate - cost
        )
    else:
        out["expected_net_margin"] = out["uplift_margin"] - cost
    return out


def strategy_order(scored: pd.DataFrame, strategy: str, seed: int) -> np.ndarray:
    """Row positions in the order the strategy would contact them (only eligible rows)."""
    rng = np.random.default_rng(seed)
    noise = rng.random(len(scored))
    seg = scored["value_segment"].astype(str).to_numpy()
    if strategy == "mass_D":
        rows = np.flatnonzero(seg == "D")
        return rows[np.argsort(noise[rows])]
    if strategy == "focused_BC":
        rows = np.flatnonzero(np.isin(seg, ["B", "C"]))
        return rows[np.argsort(noise[rows])]
    if strategy == "top_uplift":
        score = scored["expected_net_margin"].to_numpy()
        rows = np.flatnonzero(score > 0)
        return rows[np.argsort(-score[rows], kind="stable")]
    if strategy == "top_churn_risk":
        return np.argsort(-scored["churn_probability"].to_numpy(), kind="stable")
    if strategy == "top_propensity":
        return np.argsort(-scored["p_buy_contacted"].to_numpy(), kind="stable")
    raise CampaignError(f"unknown strategy {strategy!r}; choose one of {STRATEGIES}.")


def campaign_frame(con: duckdb.DuckDBPyConnection, action: str) -> pd.DataFrame:
    """The logged contacts of ``action`` (refused without a control group) with the features
    as of each campaign's start and, on a synthetic warehouse, the true effects."""
    logged = load_campaign_log(con, action=action)
    logged["as_of"] = logged["started_at"].map(lambda d: pd.Timestamp(d).date())
    starts = sorted(logged["as_of"].unique())
    if len(starts) < 2:
        raise CampaignError(
            f"action {action!r} has one campaign ({starts[0]}); uplift is fitted on earlier "
            "campaigns and checked on the latest, so log at least two."
        )
    frame = logged.merge(customer_frame(con, starts), on=["customer_id", "as_of"], how="left")
    if table_exists(con, "truth_campaign_effects"):
        truth = con.execute(
            "SELECT customer_id, started_at, p_treated - p_control AS true_uplift_purchase, "
            "margin_treated - margin_control AS true_uplift_margin "
            "FROM truth_campaign_effects WHERE action = ?", [action]
        ).df()
        truth["as_of"] = truth.pop("started_at").map(lambda d: pd.Timestamp(d).date())
        frame = frame.merge(truth, on=["customer_id", "as_of"], how="left")
    return frame


def fit_uplift(
    con: duckdb.DuckDBPyConnection, action: str, config: UpliftConfig | None = None
) -> UpliftFit:
    """Fit purchase and margin uplift of ``action`` on all campaigns but the latest and
    evaluate on the latest (see the module docstring)."""
    return fit_frame(campaign_frame(con, action), action, config)


def fit_frame(frame: pd.DataFrame, action: str, config: UpliftConfig | None = None) -> UpliftFit:
    """:func:`fit_uplift` on a :func:`campaign_frame` already read."""
    cfg = config or UpliftConfig()
    starts = sorted(frame["as_of"].unique())
    columns = _feature_columns(frame)
    train = frame[frame["as_of"] < starts[-1]]
    hold = frame[frame["as_of"] == starts[-1]].reset_index(drop=True)
    threads = fit_threads(cfg, len(train))
    kw = dict(method=cfg.method, n_estimators=cfg.n_estimators, learning_rate=cfg.learning_rate,
              num_leaves=cfg.num_leaves, min_child_samples=cfg.min_child_samples,
              n_jobs=threads, random_state=cfg.seed)
    levels = category_levels(train, columns)
    X = feature_matrix(train, columns, levels)
    t = (train["arm"] == "treatment").to_numpy()
    e = train["treatment_probability"].to_numpy()
    purchase = UpliftLearner(binary=True, **kw).fit(X, train["purchased"].astype(int), t,
                                                    propensity=e)
    margin = UpliftLearner(binary=False, **kw).fit(X, train["margin"], t, propensity=e)
    bought = train["purchased"].to_numpy(bool)
    value = fit_value_model(X[bought], train["margin"].to_numpy()[bought], seed=cfg.seed,
                            n_jobs=threads, n_estimators=cfg.n_estimators)
    fit = UpliftFit(action, columns, purchase, margin, levels, value, hold,
                    train_campaigns=sorted(train["campaign_id"].unique()),
                    holdout_campaign=str(hold["campaign_id"].iloc[0]))
    scored = score_frame(fit, hold, cost=0.0)
    kept = ["treatment_probability", "purchased", "margin", "arm", "as_of"]
    kept += [c for c in ("true_uplift_purchase", "true_uplift_margin") if c in hold]
    for c in kept:
        scored[c] = hold[c].to_numpy()
    scored["treated"] = (hold["arm"] == "treatment").to_numpy()
    scored["_m0"] = margin.predict_outcomes(feature_matrix(hold, columns, levels))[0]
    fit.scored = scored
    fit.metrics = evaluate_holdout(scored, k=cfg.k)
    return fit


RANKINGS = {
    "uplift": "uplift_purchase",
    "churn_risk": "churn_probability",
    "propensity": "p_buy_contacted",
}


def evaluate_holdout(scored: pd.DataFrame, *, k: float) -> dict[str, float]:
    """Qini, uplift@k and margin gain of each ranking on the held-out randomised campaign, and
    the share of the oracle's true gain where the truth is known."""
    y = scored["purchased"].astype(int).to_numpy()
    t = scored["treated"].to_numpy()
    out: dict[str, float] = {}
    for name, col in RANKINGS.items():
        s = scored[col].to_numpy()
        out[f"qini__{name}"] = qini_auc(y, s, t)
        out[f"uplift_at_{int(k * 100)}__{name}"] = uplift_at_k(y, s, t, k)
        _, gain = gain_curve(scored["margin"].to_numpy(), s, t)
        out[f"margin_gain_at_{int(k * 100)}__{name}"] = float(gain[int(round(k * 100))])
        if "true_uplift_purchase" in scored:
            out[f"true_qini_purchase__{name}"] = true_gain_auc(
                scored["true_uplift_purchase"].to_numpy(), s)
    if "true_uplift_margin" in scored:
        out["true_qini_margin__uplift"] = true_gain_auc(
            scored["true_uplift_margin"].to_numpy(), scored["uplift_margin"].to_numpy())
        out["true_qini_margin__plan_score"] = true_gain_auc(
            scored["true_uplift_margin"].to_numpy(), scored["expected_net_margin"].to_numpy())
        out["true_qini_margin__churn_risk"] = true_gain_auc(
            scored["true_uplift_margin"].to_numpy(), scored["churn_probability"].to_numpy())
    return out


# --- the plan -----------------------------------------------------------------------------------


@dataclass
class StrategyResult:
    strategy: str
    contacts: int
    cost: float
    predicted_incremental_margin: float
    """Sum of the model's estimated incremental margin of the contacts, minus their cost."""
    backtest_incremental_margin: float
    """Doubly robust estimate on the held-out randomised campaign, minus cost."""
    ci_low: float
    ci_high: float
    true_incremental_margin: float | None = None
    ope: dict | None = None


# The plan's inputs (CLI and /campaign_plan): a budget and a cost per contact in currency units.
MAX_BUDGET = 1e12
MAX_COST = 1e9
MIN_COST = 0.01
"""Smallest cost per contact (a cent), for the CLI and /campaign_plan alike."""


@functools.cache
def value_segments() -> tuple[str, ...]:
    """The value segments of ``configs/segments.yaml`` (``value.shares``), best first; read
    once per process, so every check agrees with the /campaign_plan schema built from it."""
    from customer360.models.segments import load_segments_config

    return tuple(load_segments_config().value.shares)


def check_plan_inputs(
    *, action: str, budget: float, cost: float, segments: list[str] | None = None
) -> None:
    """Refuse a plan's inputs before anything is fitted or read.

    Raises
    ------
    CampaignError
        Naming the input and what to give instead.

    Examples
    --------
    >>> check_plan_inputs(action="retention", budget=1000, cost=2.5, segments=["A"])
    """
    from customer360.data.contracts import CAMPAIGN_ACTIONS

    if action not in CAMPAIGN_ACTIONS:
        raise CampaignError(f"action {action!r} is unknown; use one of {list(CAMPAIGN_ACTIONS)}.")
    if not (math.isfinite(budget) and 0 < budget <= MAX_BUDGET):
        raise CampaignError(f"budget must be a number above 0 and at most {MAX_BUDGET:g} "
                            f"(got {budget!r}).")
    if not (math.isfinite(cost) and MIN_COST <= cost <= MAX_COST):
        raise CampaignError(f"cost per contact must be between {MIN_COST:g} and {MAX_COST:g} "
                            f"(got {cost!r}).")
    known = value_segments()
    unknown = sorted(set(segments or []) - set(known))
    if unknown:
        raise CampaignError(f"unknown value segments {unknown}; use some of {list(known)} "
                            "(configs/segments.yaml, value.shares).")


def affordable(budget: float, cost: float, available: int) -> int:
    """How many of ``available`` contacts ``budget`` pays for at ``cost`` each (a checked
    cost, at least ``MIN_COST``); never overflows on a tiny cost."""
    if budget / cost >= available:
        return available
    return max(0, int(budget // cost))


def _select(order: np.ndarray, budget: float, cost: float) -> np.ndarray:
    return order[: affordable(budget, cost, len(order))]


def backtest(
    scored: pd.DataFrame, chosen: np.ndarray, cost: float, *, n_boot: int, confidence: float,
    seed: int,
) -> tuple[float, float, float, dict]:
    """Incremental margin of contacting rows ``chosen`` of the held-out randomised campaign,
    net of cost: the doubly robust (AIPW) sum over the chosen rows with a bootstrap interval,
    and the IPS / SNIPS / DR value of the plan as a policy (:func:`evaluate_policy`) against
    the logged random assignment."""
    y = scored["margin"].to_numpy(float)
    t = scored["treated"].to_numpy()
    e = scored["treatment_probability"].to_numpy(float)
    mu0 = scored["_m0"].to_numpy(float)
    mu1 = mu0 + scored["uplift_margin"].to_numpy(float)
    aipw = mu1 - mu0 + t * (y - mu1) / e - (~t) * (y - mu0) / (1 - e)
    terms = aipw[chosen]
    rng = np.random.default_rng(seed)
    n = len(terms)
    point = float(terms.sum()) - cost * n
    if n == 0:
        return 0.0, 0.0, 0.0, {}
    boot = np.array([terms[rng.integers(0, n, n)].sum() for _ in range(n_boot)]) - cost * n
    a = (1 - confidence) / 2
    lo, hi = np.quantile(boot, [a, 1 - a])
    target = np.zeros((len(y), 2))
    target[:, 0] = 1.0
    target[chosen, 0], target[chosen, 1] = 0.0, 1.0
    actions = t.astype(int)
    propensity = np.where(t, e, 1 - e)
    reward_model = np.column_stack([mu0, mu1])
    res = evaluate_policy(actions, y, propensity, target, reward_model=reward_model,
                          n_boot=n_boot, confidence=confidence, seed=seed)
    return point, float(lo), float(hi), res.to_dict()


def plan_strategies(
    fit: UpliftFit, *, budget: float, cost: float, segments: list[str] | None = None,
    config: UpliftConfig | None = None,
) -> list[StrategyResult]:
    """Every strategy under the same budget, backtested on the held-out campaign."""
    cfg = config or UpliftConfig()
    check_plan_inputs(action=fit.action, budget=budget, cost=cost, segments=segments)
    scored = fit.scored.copy()
    scored["expected_net_margin"] = score_frame(fit, fit.holdout, cost)["expected_net_margin"]
    allowed = (np.ones(len(scored), bool) if not segments
               else scored["value_segment"].astype(str).isin(segments).to_numpy())
    out = []
    for strategy in STRATEGIES:
        order = strategy_order(scored, strategy, cfg.seed)
        order = order[allowed[order]]
        chosen = _select(order, budget, cost)
        point, lo, hi, ope = backtest(scored, chosen, cost, n_boot=cfg.n_boot,
                                      confidence=cfg.confidence, seed=cfg.seed)
        truth = None
        if "true_uplift_margin" in scored:
            truth = float(scored["true_uplift_margin"].to_numpy()[chosen].sum())
            truth -= cost * len(chosen)
        out.append(StrategyResult(
            strategy, len(chosen), cost * len(chosen),
            float(scored["uplift_margin"].to_numpy()[chosen].sum()) - cost * len(chosen),
            point, lo, hi, truth, ope,
        ))
    return out


def contact_list(
    fit: UpliftFit, frame: pd.DataFrame, *, budget: float, cost: float,
    segments: list[str] | None = None, strategy: str = "top_uplift", seed: int = 0,
) -> pd.DataFrame:
    """Who to contact now: the customers of ``frame`` (a :func:`customer_frame` of today) the
    strategy picks within the budget, with their scores, best first."""
    scored = score_frame(fit, frame, cost)
    order = strategy_order(scored, strategy, seed)
    if segments:
        order = order[scored["value_segment"].astype(str).isin(segments).to_numpy()[order]]
    return scored.iloc[_select(order, budget, cost)].reset_index(drop=True)


# --- plots, MLflow and the command's job ----------------------------------------------------------


def qini_figure(scored: pd.DataFrame, action: str):
    """Qini curves (incremental buyers) of uplift, churn-risk and propensity targeting on the
    held-out campaign, with the random line."""
    from customer360.models.uplift import qini_points

    fig, ax = new_figure((6, 4.5))
    y = scored["purchased"].astype(int).to_numpy()
    t = scored["treated"].to_numpy()
    for name, col in RANKINGS.items():
        x, q = qini_points(y, scored[col].to_numpy(), t)
        ax.plot(x, q, label=name)
    ax.plot([0, len(y)], [0, q[-1]], "k--", label="random")
    ax.set(title=f"Qini curve, {action} (held-out campaign)", xlabel="customers contacted",
           ylabel="incremental buyers")
    ax.legend()
    return fig


def _aipw_terms(scored: pd.DataFrame) -> np.ndarray:
    y = scored["margin"].to_numpy(float)
    t = scored["treated"].to_numpy()
    e = scored["treatment_probability"].to_numpy(float)
    mu0 = scored["_m0"].to_numpy(float)
    mu1 = mu0 + scored["uplift_margin"].to_numpy(float)
    return mu1 - mu0 + t * (y - mu1) / e - (~t) * (y - mu0) / (1 - e)


def incremental_table(scored: pd.DataFrame, by: str) -> pd.DataFrame:
    """Mean incremental margin per contact by ``by`` ("decile" of the plan score or
    "value_segment"): doubly robust estimate, model's estimate, and the truth when known."""
    frame = scored.assign(_aipw=_aipw_terms(scored))
    if by == "decile":
        rank = frame["expected_net_margin"].rank(method="first", ascending=False)
        frame["decile"] = np.ceil(rank / len(frame) * 10).astype(int)
    cols = {"_aipw": "dr_estimate", "uplift_margin": "model_estimate"}
    if "true_uplift_margin" in frame:
        cols["true_uplift_margin"] = "true"
    out = frame.groupby(by, sort=True)[list(cols)].mean().rename(columns=cols)
    out["customers"] = frame.groupby(by, sort=True).size()
    return out.reset_index()


def bar_figure(table: pd.DataFrame, by: str, action: str):
    fig, ax = new_figure((7, 4.5))
    cols = [c for c in ("dr_estimate", "model_estimate", "true") if c in table]
    x = np.arange(len(table))
    w = 0.8 / len(cols)
    for i, c in enumerate(cols):
        ax.bar(x + i * w, table[c], w, label=c)
    ax.set_xticks(x + w * (len(cols) - 1) / 2, table[by].astype(str))
    ax.axhline(0, color="k", lw=0.8)
    ax.set(title=f"Incremental margin per contact by {by}, {action} (held-out campaign)",
           xlabel=by, ylabel="incremental margin per contact")
    ax.legend()
    return fig


def write_plan_tables(
    con: duckdb.DuckDBPyConnection, action: str, as_of, scores: pd.DataFrame,
    backtest: pd.DataFrame,
) -> None:
    """Replace the stored scores (``scores`` scored at zero cost) and backtest of ``action``
    that ``/campaign_plan`` cuts to a budget (the caller holds a transaction)."""
    from customer360.data.warehouse import registered

    cols = ["customer_id", "value_segment", "churn_probability", "uplift_purchase",
            "uplift_margin", "gross_margin"]
    frame = scores.assign(gross_margin=scores["expected_net_margin"])[cols]
    frame = frame.assign(action=action, as_of=pd.Timestamp(as_of))
    con.execute(f"CREATE TABLE IF NOT EXISTS {SCORES_TABLE} (customer_id VARCHAR, "
                "value_segment VARCHAR, churn_probability DOUBLE, uplift_purchase DOUBLE, "
                "uplift_margin DOUBLE, gross_margin DOUBLE, action VARCHAR, as_of DATE)")
    con.execute(f"DELETE FROM {SCORES_TABLE} WHERE action = ?", [action])
    with registered(con, frame) as view:
        con.execute(f"INSERT INTO {SCORES_TABLE} SELECT customer_id, value_segment, "
                    "churn_probability, uplift_purchase, uplift_margin, gross_margin, action, "
                    f"as_of FROM {view}")
    bt = backtest.assign(action=action)
    con.execute(f"CREATE TABLE IF NOT EXISTS {BACKTESTS_TABLE} (action VARCHAR, payload JSON)")
    con.execute(f"DELETE FROM {BACKTESTS_TABLE} WHERE action = ?", [action])
    con.execute(f"INSERT INTO {BACKTESTS_TABLE} VALUES (?, ?)",
                [action, bt.to_json(orient="records")])


@dataclass
class PlanReport:
    action: str
    strategies: pd.DataFrame
    contacts: pd.DataFrame
    metrics: dict[str, float]
    run_id: str
    files: list[str]
    strategy: str = "top_uplift"
    """The strategy the contact list follows."""


def choose_strategy(results: list[StrategyResult], rule: str) -> str:
    """The strategy a plan follows: ``rule`` itself, or with :data:`BEST_BACKTEST` the one
    whose doubly robust estimate on the held-out randomised campaign is highest.

    The chosen strategy's own estimate is then optimistic (it won on that campaign); its
    interval says how far to trust it.

    Examples
    --------
    >>> r = [StrategyResult("top_uplift", 9, 9.0, 5.0, 1.0, -2, 4),
    ...      StrategyResult("top_propensity", 9, 9.0, 2.0, 3.0, 1, 5)]
    >>> choose_strategy(r, "best_backtest"), choose_strategy(r, "top_uplift")
    ('top_propensity', 'top_uplift')
    """
    check_strategy(rule)
    if rule == BEST_BACKTEST:
        return max(results, key=lambda r: r.backtest_incremental_margin).strategy
    return rule


def check_strategy(rule: str) -> None:
    """Refuse a strategy rule that is neither :data:`BEST_BACKTEST` nor one of
    :data:`STRATEGIES`."""
    if rule != BEST_BACKTEST and rule not in STRATEGIES:
        raise CampaignError(
            f"strategy {rule!r} is unknown; use {BEST_BACKTEST} or one of {list(STRATEGIES)}.")


def run_campaign_plan(
    con: duckdb.DuckDBPyConnection,
    *,
    action: str,
    budget: float,
    cost: float,
    segments: list[str] | None = None,
    output: str | None = None,
    config: UpliftConfig | None = None,
    on_progress=None,
    store: bool = False,
    strategy: str = "top_uplift",
) -> PlanReport:
    """Fit, evaluate, compare the strategies and plan who to contact today; log it to MLflow
    (experiment ``campaign_plan``) with the Qini and incremental-margin plots and, when
    ``output`` is given, write the contact list, the strategy table and the plots there.
    ``store`` keeps today's scores and the backtest in the warehouse for ``/campaign_plan``
    (needs a writable ``con``). The contact list follows ``strategy`` (:func:`choose_strategy`;
    the default, ranking by the uplift model, is the one ``/campaign_plan`` re-cuts); the
    strategies table marks it (``chosen``) and the one with the best DR backtest
    (``best_backtest``)."""
    from pathlib import Path

    import mlflow

    from customer360.training.common import log_figures, warehouse_today
    from customer360.training.tracking import run_tags, setup_mlflow

    check_plan_inputs(action=action, budget=budget, cost=cost, segments=segments)
    check_strategy(strategy)
    cfg = config or load_uplift_config()
    step = on_progress or (lambda done, total: None)
    step(0, 4)
    fit = fit_uplift(con, action, cfg)
    step(1, 4)
    results = plan_strategies(fit, budget=budget, cost=cost, segments=segments, config=cfg)
    table = pd.DataFrame([{k: v for k, v in r.__dict__.items() if k != "ope"} for r in results])
    for name in ("ips", "snips", "dr"):
        table[f"ope_{name}_per_customer"] = [r.ope[name]["value"] if r.ope else np.nan
                                             for r in results]
    chosen = choose_strategy(results, strategy)
    table["chosen"] = table["strategy"] == chosen
    table["best_backtest"] = table["strategy"] == choose_strategy(results, BEST_BACKTEST)
    step(2, 4)
    today = warehouse_today(con)
    now = customer_frame(con, [today])
    now = now[now["value_segment"].astype(str).isin(["A", "B", "C", "D"])]
    contacts = contact_list(fit, now, budget=budget, cost=cost, segments=segments,
                            strategy=chosen, seed=cfg.seed)
    if store:
        from customer360.data.warehouse import transaction

        with transaction(con):
            write_plan_tables(con, action, today, score_frame(fit, now, 0.0), table)
    step(3, 4)
    scored = fit.scored.copy()
    scored["expected_net_margin"] = score_frame(fit, fit.holdout, cost)["expected_net_margin"]
    by_decile = incremental_table(scored, "decile")
    by_segment = incremental_table(scored, "value_segment")
    figures = {
        "qini_curve": qini_figure(scored, action),
        "incremental_margin_by_decile": bar_figure(by_decile, "decile", action),
        "incremental_margin_by_segment": bar_figure(by_segment, "value_segment", action),
    }
    files: list[str] = []
    if output:
        out = Path(output)
        out.mkdir(parents=True, exist_ok=True)
        for name, fig in figures.items():
            fig.savefig(out / f"{name}.png", dpi=100)
            files.append(str(out / f"{name}.png"))
        contacts.to_csv(out / "contacts.csv", index=False)
        table.to_csv(out / "strategies.csv", index=False)
        (out / "metrics.json").write_text(json.dumps(fit.metrics, indent=1))
        files += [str(out / n) for n in ("contacts.csv", "strategies.csv", "metrics.json")]
    setup_mlflow("campaign_plan")
    with mlflow.start_run(run_name=f"plan-{action}",
                          tags=run_tags(action=action, as_of=today,
                                        holdout_campaign=fit.holdout_campaign,
                                        train_campaigns=",".join(fit.train_campaigns),
                                        rows_holdout=len(fit.holdout))) as run:
        mlflow.log_params({"budget": budget, "cost_per_contact": cost, "action": action,
                           "segments": ",".join(segments or []), "method": cfg.method,
                           "strategy": chosen, "strategy_rule": strategy})
        mlflow.log_metrics({k: float(v) for k, v in fit.metrics.items() if np.isfinite(v)})
        mlflow.log_table(table.drop(columns=[c for c in table if table[c].isna().all()]),
                         "strategies.json")
        mlflow.log_table(by_decile, "incremental_by_decile.json")
        mlflow.log_table(by_segment, "incremental_by_segment.json")
        log_figures(figures)
    step(4, 4)
    return PlanReport(action, table, contacts, fit.metrics, run.info.run_id, files, chosen)
