"""Synthetic sales pipeline (issue 15): leads, their history, opportunities and stages.

Written by :func:`customer360.data.synthetic.generate_warehouse` after the customers and their
events exist, from its own random stream, so every other table is identical with or without it.

The model
---------
* **Leads.** B2B customers get a Poisson number of company leads (new deals), and new companies
  not yet customers get leads too; a few B2C customers and new people get person leads. Each
  lead has a latent *fit* (seen through the qualification answers) and *interest* (seen
  through its activity rate: e-mail opens and clicks, web visits, calls, meetings).
* **Conversion.** A lead converts to an opportunity with probability ``p_convert``:
  logistic in source, size, industry, fit, interest, qualification answers and the customer's
  engagement (e-mail opens and clicks and sessions in the 90 days before the lead was created,
  read from ``events``). The wait to converting is gamma distributed with a mean set by the
  decision timeframe (people: short). Leads that do not convert are disqualified after a gamma
  wait with probability ``disqualify_share``. Qualification happens after an exponential wait,
  and always before a conversion.
* **Opportunities.** Each converted lead opens one opportunity. It passes the four stage
  transitions lead -> potential customer -> proposal -> verbal acceptance -> close, each with
  the same probability ``p_win ** (1/4)``; a failed transition closes it as lost at the end of
  that stage. Stage durations are gamma distributed with a mean set by the cycle: people short
  (1-3 months in all), companies by their decision timeframe (up to over 9 months). Those not
  closed by today are open (censored).

Truth: ``truth_leads`` (``p_convert``, the conversion wait's gamma and the disqualification
wait) and ``truth_opportunities`` (``p_win``, the stage duration mean, the true close time and
outcome, also past today). :func:`oracle_conversion_probability` turns them into the
probability of converting within a horizon as of a date.
"""

from __future__ import annotations

import logging
from datetime import date

import duckdb
import numpy as np
import pandas as pd
from pydantic import Field
from scipy import stats

from customer360.config import StrictModel
from customer360.data import contracts as k
from customer360.data.warehouse import insert_frame

log = logging.getLogger(__name__)

SALES_TRUTH_DDL: dict[str, str] = {
    "truth_leads": """
CREATE TABLE truth_leads (
  lead_id VARCHAR NOT NULL,
  p_convert DOUBLE NOT NULL,
  converts BOOLEAN NOT NULL,
  conversion_wait_mean_days DOUBLE NOT NULL,
  conversion_wait_shape DOUBLE NOT NULL,
  disqualify_share DOUBLE NOT NULL,
  disqualify_wait_mean_days DOUBLE NOT NULL,
  true_converted_at TIMESTAMP
)""",
    "truth_opportunities": """
CREATE TABLE truth_opportunities (
  opportunity_id VARCHAR NOT NULL,
  p_win DOUBLE NOT NULL,
  stage_mean_days DOUBLE NOT NULL,
  will_win BOOLEAN NOT NULL,
  true_closed_at TIMESTAMP NOT NULL
)""",
}
SALES_TRUTH_KEYS = {"truth_leads": "lead_id", "truth_opportunities": "opportunity_id"}

ENGAGEMENT_EVENTS = ("email_open", "email_click", "session")
ENGAGEMENT_WINDOW_DAYS = 90
STAGE_SHAPE = 2.0
WAIT_SHAPE = 2.0
DISQUALIFY_SHAPE = 2.0


class SalesPipelineConfig(StrictModel):
    """Parameters of the simulated sales pipeline (defaults are the generator's)."""

    leads_per_b2b_customer: float = Field(2.0, ge=0)
    new_company_leads_per_b2b_customer: float = Field(1.5, ge=0)
    person_lead_share_b2c: float = Field(0.05, ge=0, le=1)
    new_person_leads_per_b2c_customer: float = Field(0.02, ge=0)
    history_days: int = Field(900, ge=60)
    conversion_intercept: float = -1.2
    fit_effect: float = 1.1
    interest_effect: float = 1.0
    engagement_effect: float = 0.5
    activity_per_day: float = Field(0.15, gt=0)
    qualified_share: float = Field(0.8, ge=0, le=1)
    qualification_wait_days: float = Field(10.0, gt=0)
    disqualify_share: float = Field(0.7, ge=0, le=1)
    disqualify_wait_days: float = Field(120.0, gt=0)
    person_wait_days: float = Field(20.0, gt=0)
    timeframe_wait_days: tuple[float, float, float] = (30.0, 100.0, 220.0)
    person_cycle_days: float = Field(50.0, gt=0)
    timeframe_cycle_days: tuple[float, float, float] = (70.0, 180.0, 380.0)
    win_intercept: float = 0.0
    company_amount: float = Field(20000.0, gt=0)
    person_amount: float = Field(1500.0, gt=0)
    seller_optimism: float = Field(0.7, gt=0)


SOURCE_EFFECT = dict(zip(k.LEAD_SOURCES, (0.0, 0.8, 0.3, 0.4, -0.9, -0.2), strict=True))
SIZE_EFFECT = dict(zip(k.COMPANY_SIZES, (-0.4, 0.0, 0.3, 0.5), strict=True))
INDUSTRY_EFFECT = dict(zip(k.INDUSTRIES, (0.0, 0.2, -0.1, 0.4, -0.3, 0.1), strict=True))
SIZE_AMOUNT = dict(zip(k.COMPANY_SIZES, (0.3, 0.7, 1.5, 3.5), strict=True))
COST_EFFECT = np.array([-0.4, 0.1, 0.6])
INFLUENCE_EFFECT = np.array([-0.5, 0.0, 0.6])
ACTIVITY_KINDS = ("email_open", "email_click", "web_visit", "call", "meeting")
ACTIVITY_P = np.array([0.45, 0.15, 0.25, 0.1, 0.05])


def _lookup(table: dict[str, float], values: pd.Series) -> np.ndarray:
    return values.map(table).fillna(0.0).to_numpy(dtype=float)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _days(ts: np.ndarray | pd.Series, origin: np.datetime64) -> np.ndarray:
    return (np.asarray(ts, dtype="datetime64[ns]") - origin) / np.timedelta64(1, "D")


def _stamp(days: np.ndarray, origin: np.datetime64) -> np.ndarray:
    return origin + np.round(np.asarray(days) * 86_400).astype("timedelta64[s]")


def write_sales_pipeline(
    con: duckdb.DuckDBPyConnection,
    *,
    seed: int,
    today: date,
    config: SalesPipelineConfig | None = None,
) -> dict[str, int]:
    """Simulate the leads and opportunities of the warehouse's customers and write the four
    sales tables and their truth tables (which must exist, empty)."""
    cfg = config or SalesPipelineConfig()
    rng = np.random.default_rng([seed, 15_015])
    origin = np.datetime64(today.isoformat(), "ns")  # day 0 = today, history is negative
    customers = con.execute(
        "SELECT customer_id, customer_type, company_size, industry, signup_date "
        "FROM customers ORDER BY customer_id"
    ).df()
    leads = _draw_leads(rng, customers, cfg, origin)
    leads["engagement"] = _engagement(con, leads)
    truth_leads, lead_events = _simulate_leads(rng, leads, cfg, origin)
    opps, stages, truth_opps = _simulate_opportunities(rng, leads, cfg, origin)
    _insert(con, "leads", leads[k.LEADS.column_names])
    _insert(con, "lead_events", lead_events[k.LEAD_EVENTS.column_names])
    _insert(con, "opportunities", opps[k.OPPORTUNITIES.column_names])
    _insert(con, "opportunity_stages", stages[k.OPPORTUNITY_STAGE_HISTORY.column_names])
    _insert(con, "truth_leads", truth_leads)
    _insert(con, "truth_opportunities", truth_opps)
    counts = {"leads": len(leads), "lead_events": len(lead_events),
              "opportunities": len(opps), "opportunity_stages": len(stages)}
    log.info("sales pipeline: %s", counts)
    return counts


def _insert(con, table: str, frame: pd.DataFrame) -> None:
    insert_frame(con, table, frame, ", ".join(frame.columns))


def _draw_leads(
    rng: np.random.Generator, customers: pd.DataFrame, cfg: SalesPipelineConfig,
    origin: np.datetime64,
) -> pd.DataFrame:
    b2b = customers[customers.customer_type == "B2B"]
    b2c = customers[customers.customer_type == "B2C"]
    per = rng.poisson(cfg.leads_per_b2b_customer, len(b2b))
    linked_co = b2b.loc[b2b.index.repeat(per)]
    linked_p = b2c[rng.random(len(b2c)) < cfg.person_lead_share_b2c]
    n_new_co = rng.poisson(cfg.new_company_leads_per_b2b_customer * len(b2b))
    n_new_p = rng.poisson(cfg.new_person_leads_per_b2c_customer * len(b2c))
    new_co = pd.DataFrame({
        "customer_id": None,
        "company_size": rng.choice(k.COMPANY_SIZES, n_new_co, p=[0.35, 0.35, 0.2, 0.1]),
        "industry": rng.choice(k.INDUSTRIES, n_new_co),
    })
    new_p = pd.DataFrame({"customer_id": [None] * n_new_p})
    parts = [
        linked_co[["customer_id", "company_size", "industry"]].assign(lead_type="company"),
        new_co.assign(lead_type="company"),
        linked_p[["customer_id"]].assign(lead_type="person"),
        new_p.assign(lead_type="person"),
    ]
    leads = pd.concat(parts, ignore_index=True)
    n = len(leads)
    is_co = (leads.lead_type == "company").to_numpy()
    leads.loc[~is_co, ["company_size", "industry"]] = None
    leads["lead_id"] = [f"L{i:08d}" for i in range(n)]
    serial = np.arange(n)
    leads["name"] = np.where(is_co, [f"Company {i:06d}" for i in serial],
                             [f"Person {i:06d}" for i in serial])
    leads["source"] = rng.choice(k.LEAD_SOURCES, n, p=[0.3, 0.12, 0.12, 0.1, 0.2, 0.16])
    leads["channel"] = rng.choice(k.LEAD_CHANNELS, n, p=[0.35, 0.25, 0.2, 0.1, 0.1])
    leads["owner"] = [f"rep_{i:02d}" for i in rng.integers(1, 13, n)]
    created = -rng.uniform(1, cfg.history_days, n)
    leads["created_day"] = created
    leads["created_at"] = _stamp(created, origin)
    leads["is_company"] = is_co
    return leads


def _engagement(con, leads: pd.DataFrame) -> np.ndarray:
    """log1p of the customer's e-mail opens, clicks and sessions in the 90 days before the
    lead was created (0 for leads without a customer)."""
    frame = leads[["lead_id", "customer_id", "created_at"]].dropna(subset=["customer_id"])
    if frame.empty:
        return np.zeros(len(leads))
    kinds = ", ".join(f"'{e}'" for e in ENGAGEMENT_EVENTS)
    con.register("_c360_sales_leads", frame)
    try:
        counts = con.execute(
            f"""
            SELECT l.lead_id, count(e.event_id) AS n
            FROM _c360_sales_leads l LEFT JOIN events e
              ON e.customer_id = l.customer_id AND e.event_type IN ({kinds})
             AND e.ts < l.created_at
             AND e.ts >= l.created_at - INTERVAL {ENGAGEMENT_WINDOW_DAYS} DAY
            GROUP BY l.lead_id"""
        ).df()
    finally:
        con.unregister("_c360_sales_leads")
    n = leads[["lead_id"]].merge(counts, on="lead_id", how="left")["n"].fillna(0)
    return np.log1p(n.to_numpy(dtype=float))


def _simulate_leads(
    rng: np.random.Generator, leads: pd.DataFrame, cfg: SalesPipelineConfig,
    origin: np.datetime64,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    n = len(leads)
    is_co = leads["is_company"].to_numpy()
    created = leads["created_day"].to_numpy()
    fit = rng.normal(0, 1, n)
    interest = rng.normal(0, 0.8, n)
    # qualification answers: noisy views of the fit; people decide fast
    need = fit + rng.normal(0, 0.7, n) > -0.3
    tf_p = np.where(is_co[:, None], [0.4, 0.4, 0.2], [0.9, 0.1, 0.0])
    timeframe = (rng.random(n)[:, None] > np.cumsum(tf_p, axis=1)).sum(axis=1).clip(0, 2)
    cost = np.digitize(fit + rng.normal(0, 0.8, n), [-0.5, 0.6])
    influence = rng.choice(3, n, p=[0.35, 0.35, 0.3])
    eng = leads["engagement"].to_numpy()
    logit = (
        cfg.conversion_intercept
        + _lookup(SOURCE_EFFECT, leads.source)
        + _lookup(SIZE_EFFECT, leads.company_size)
        + _lookup(INDUSTRY_EFFECT, leads.industry)
        + cfg.fit_effect * fit + 0.4 * need
        + COST_EFFECT[cost] + INFLUENCE_EFFECT[influence]
        + cfg.interest_effect * interest
        + cfg.engagement_effect * (eng - 1.0)
    )
    p_convert = _sigmoid(logit)
    converts = rng.random(n) < p_convert
    wait_mean = np.where(is_co, np.asarray(cfg.timeframe_wait_days)[timeframe],
                         cfg.person_wait_days)
    conv_day = created + rng.gamma(WAIT_SHAPE, wait_mean / WAIT_SHAPE)
    conv_day = np.where(converts, conv_day, np.inf)
    disq = ~converts & (rng.random(n) < cfg.disqualify_share)
    disq_day = np.where(
        disq, created + rng.gamma(DISQUALIFY_SHAPE, cfg.disqualify_wait_days / DISQUALIFY_SHAPE,
                                  n), np.inf)
    qualified = converts | (rng.random(n) < cfg.qualified_share)
    q_day = created + rng.exponential(cfg.qualification_wait_days, n)
    q_day = np.minimum(q_day, created + 0.5 * (np.minimum(conv_day, disq_day) - created))
    q_day = np.where(qualified & (q_day < 0), q_day, np.nan)
    end = np.minimum(np.minimum(conv_day, disq_day), 0.0)
    # activity: a Poisson process from creation to the end, faster with interest
    rate = cfg.activity_per_day * np.exp(interest)
    n_act = rng.poisson(rate * np.maximum(end - created, 0))
    a_idx = np.repeat(np.arange(n), n_act)
    a_day = created[a_idx] + rng.random(a_idx.size) * (end - created)[a_idx]
    a_kind = rng.choice(ACTIVITY_KINDS, a_idx.size, p=ACTIVITY_P)
    first_act = np.full(n, np.inf)
    np.minimum.at(first_act, a_idx, a_day)
    working = np.minimum(first_act, created + rng.exponential(3.0, n))
    status_rows = [
        (np.arange(n), created, "new"),
        (np.arange(n), working, "working"),
        (np.arange(n), np.where(np.isnan(q_day), np.inf, q_day), "qualified"),
        (np.arange(n), conv_day, "converted"),
        (np.arange(n), disq_day, "disqualified"),
    ]
    s_idx = np.concatenate([r[0] for r in status_rows])
    s_day = np.concatenate([r[1] for r in status_rows])
    s_status = np.concatenate([np.full(len(r[0]), r[2]) for r in status_rows])
    keep = s_day < 0
    # a disqualified lead stops working; drop status changes after the final one
    final = np.minimum(conv_day, disq_day)
    keep &= s_day <= final[s_idx]
    ev = pd.DataFrame({
        "i": np.concatenate([s_idx[keep], a_idx]),
        "day": np.concatenate([s_day[keep], a_day]),
        "kind": np.concatenate([np.full(keep.sum(), "status_change"), a_kind]),
        "status": np.concatenate([s_status[keep], np.full(a_idx.size, None)]),
    }).sort_values(["i", "day"], kind="stable", ignore_index=True)
    ev["lead_id"] = leads["lead_id"].to_numpy()[ev["i"]]
    ev["ts"] = _stamp(ev["day"].to_numpy(), origin)
    ev["lead_event_id"] = [f"LE{i:010d}" for i in range(len(ev))]
    last = ev[ev.kind == "status_change"].groupby("i").tail(1).set_index("i")
    leads["status"] = last["status"].reindex(np.arange(n)).to_numpy()
    leads["status_changed_at"] = last["ts"].reindex(np.arange(n)).to_numpy()
    q_known = ~np.isnan(q_day)
    leads["qualified_at"] = pd.Series(_stamp(np.nan_to_num(q_day), origin)).where(q_known)
    leads["need_identified"] = pd.Series(need, dtype="boolean").where(q_known)
    leads["decision_timeframe"] = pd.Series(
        np.asarray(k.DECISION_TIMEFRAMES, dtype=object)[timeframe]).where(q_known)
    leads["cost_of_postponing"] = pd.Series(
        np.asarray(k.POSTPONING_COSTS, dtype=object)[cost]).where(q_known)
    leads["purchase_influence"] = pd.Series(
        np.asarray(k.PURCHASE_INFLUENCES, dtype=object)[influence]).where(q_known)
    conv_seen = conv_day < 0
    leads["converted_at"] = pd.Series(_stamp(np.where(conv_seen, conv_day, 0), origin)).where(
        conv_seen)
    # hidden state the opportunities need
    leads["_fit"], leads["_timeframe"], leads["_influence"] = fit, timeframe, influence
    leads["_conv_day"] = conv_day
    truth = pd.DataFrame({
        "lead_id": leads["lead_id"],
        "p_convert": p_convert,
        "converts": converts,
        "conversion_wait_mean_days": wait_mean,
        "conversion_wait_shape": WAIT_SHAPE,
        "disqualify_share": cfg.disqualify_share,
        "disqualify_wait_mean_days": cfg.disqualify_wait_days,
        "true_converted_at": pd.Series(_stamp(np.where(converts, conv_day, 0), origin)).where(
            converts),
    })
    return truth, ev[k.LEAD_EVENTS.column_names]


def _simulate_opportunities(
    rng: np.random.Generator, leads: pd.DataFrame, cfg: SalesPipelineConfig,
    origin: np.datetime64,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    src = leads[leads["_conv_day"] < 0].reset_index(drop=True)
    n = len(src)
    is_co = src["is_company"].to_numpy()
    created = src["_conv_day"].to_numpy()
    wlogit = (
        cfg.win_intercept + 0.8 * src["_fit"].to_numpy()
        + 0.5 * _lookup(SIZE_EFFECT, src.company_size)
        + _lookup(INDUSTRY_EFFECT, src.industry)
        + 0.3 * (src["engagement"].to_numpy() - 1.0)
        + INFLUENCE_EFFECT[src["_influence"].to_numpy()]
    )
    p_win = _sigmoid(wlogit)
    advance = p_win ** 0.25
    cycle = np.where(is_co, np.asarray(cfg.timeframe_cycle_days)[src["_timeframe"].to_numpy()],
                     cfg.person_cycle_days)
    stage_mean = cycle / 4
    durations = rng.gamma(STAGE_SHAPE, stage_mean[:, None] / STAGE_SHAPE, (n, 4))
    passes = rng.random((n, 4)) < advance[:, None]
    # transitions passed before the first failure: 4 = won
    reached = np.where(passes.all(axis=1), 4, np.argmin(passes, axis=1))
    won = reached == 4
    enter = created[:, None] + np.concatenate([np.zeros((n, 1)), np.cumsum(durations, 1)], 1)
    close_day = enter[np.arange(n), np.minimum(reached + 1, 4)]
    close_day = np.where(won, enter[:, 4], close_day)
    stage_reached = np.arange(5)[None, :] <= reached[:, None]
    seen = stage_reached & (enter < 0)
    s_i, s_k = np.nonzero(seen)
    ids = np.array([f"O{i:08d}" for i in range(n)], dtype=object)
    stages = pd.DataFrame({
        "opportunity_id": ids[s_i],
        "stage": np.asarray(k.OPPORTUNITY_STAGES, dtype=object)[s_k],
        "entered_at": _stamp(enter[s_i, s_k], origin),
    })
    stages["opportunity_stage_id"] = [f"OS{i:09d}" for i in range(len(stages))]
    current = seen.sum(axis=1) - 1
    closed = close_day < 0
    outcome = np.where(closed, np.where(won, "won", "lost"), "open")
    size_amt = src["company_size"].map(SIZE_AMOUNT).fillna(1.0).to_numpy()
    amount = np.where(is_co, cfg.company_amount * size_amt, cfg.person_amount) * np.exp(
        rng.normal(0, 0.5, n))
    guess = created + cycle * cfg.seller_optimism * np.exp(rng.normal(0, 0.3, n))
    reasons = rng.choice(k.LOSS_REASONS, n, p=[0.3, 0.25, 0.2, 0.15, 0.1])
    opps = pd.DataFrame({
        "opportunity_id": ids,
        "lead_id": src["lead_id"],
        "customer_id": src["customer_id"],
        "account_name": src["name"],
        "created_at": _stamp(created, origin),
        "amount": np.round(amount, 2),
        "expected_close_date": pd.to_datetime(_stamp(guess, origin)).normalize().date,
        "stage": np.asarray(k.OPPORTUNITY_STAGES, dtype=object)[current],
        "outcome": outcome,
        "closed_at": pd.Series(_stamp(np.where(closed, close_day, 0), origin)).where(closed),
        "loss_reason": pd.Series(reasons).where(outcome == "lost"),
    })
    truth = pd.DataFrame({
        "opportunity_id": ids,
        "p_win": p_win,
        "stage_mean_days": stage_mean,
        "will_win": won,
        "true_closed_at": _stamp(close_day, origin),
    })
    return opps, stages, truth


def oracle_conversion_probability(
    con: duckdb.DuckDBPyConnection, as_of: date, horizon_days: int
) -> pd.DataFrame:
    """The true probability that each lead open at ``as_of`` (not converted or disqualified
    before it) converts within ``horizon_days``, given its latent propensity and age.

    Returns ``lead_id``, ``p_convert_horizon``.
    """
    t = con.execute(
        """
        SELECT l.lead_id, l.created_at, t.p_convert, t.conversion_wait_mean_days AS wm,
               t.conversion_wait_shape AS ws, t.disqualify_share AS ds,
               t.disqualify_wait_mean_days AS dm
        FROM leads l JOIN truth_leads t USING (lead_id)
        WHERE l.created_at < ?""",
        [pd.Timestamp(as_of)],
    ).df()
    age = (pd.Timestamp(as_of) - t["created_at"]).dt.total_seconds().to_numpy() / 86_400
    wait = stats.gamma(t["ws"].to_numpy(), scale=(t["wm"] / t["ws"]).to_numpy())
    f_now, f_end = wait.cdf(age), wait.cdf(age + horizon_days)
    g_now = stats.gamma(DISQUALIFY_SHAPE, scale=(t["dm"] / DISQUALIFY_SHAPE).to_numpy()).cdf(age)
    p = t["p_convert"].to_numpy()
    still_c = p * (1 - f_now)
    still_n = (1 - p) * (1 - t["ds"].to_numpy() * g_now)
    posterior = still_c / np.maximum(still_c + still_n, 1e-12)
    within = (f_end - f_now) / np.maximum(1 - f_now, 1e-12)
    return pd.DataFrame({"lead_id": t["lead_id"], "p_convert_horizon": posterior * within})
