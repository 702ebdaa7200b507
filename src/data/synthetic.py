"""Synthetic CRM warehouse with known ground truth.

The generator simulates every customer's life on a weekly grid from 2023-01-01 to one year past
the synthetic "today" and writes what a CRM would have recorded before today into the raw tables
(see :mod:`customer360.data.contracts`). Everything the business cannot see goes to ``truth_*``
tables that only tests and evaluation may read. Parameters: :class:`SyntheticConfig`
(``configs/synthetic.yaml``).

The model
---------
* **Lifecycle.** Sign-ups grow over the history. Prospects (``prospect_share``) never buy; some
  of them browse. Everyone else makes a first purchase after an exponential wait, then buys as a
  Poisson process with a latent daily rate (gamma distributed; B2B lower) while *active*. An
  active customer may turn *at risk*: they then buy, browse and open e-mails at
  ``at_risk_factor`` of their usual intensity (behaviour thins out), and leave (*gone*) with
  probability ``leave_prob_weekly`` per week.
* **Hazard.** At the end of each week an active customer turns at risk with probability
  :func:`weekly_hazard`: a static weekly hazard ``h0`` (a beta-distributed dropout probability
  scaled by latent satisfaction, which also drives social sentiment and ticket satisfaction, and
  latent engagement, which drives browsing) times ``exp`` of the effects of fee complaints and
  eventually unresolved tickets opened in the 13 previous whole weeks plus a capped "grudge" per
  fee complaint ever. Contract customers may also leave at the end of the week in which their
  contract ends.
* **Spend.** Net order value is gamma distributed around a customer mean that is itself gamma
  distributed (gamma-gamma) and grows with latent affluence (seen through the third-party
  affluence score); B2B orders are far larger. Margin = amount x the category's margin rate;
  some orders are returned later (``is_return`` rows with negative amount and margin, never
  after the customer left); first orders of referral-acquired customers name an earlier
  customer as referrer.
* **Offers.** The true acceptance probability depends only on static customer attributes x
  offer (:func:`true_acceptance`); a softmax logging policy over noisy scores chooses one offer
  per offer event and its exact propensity is logged.

Truth tables: ``truth_customers``, ``truth_future_transactions``, ``truth_tickets``,
``truth_offer_acceptance``, ``truth_logging_policy`` (see :data:`TRUTH_DDL`). The oracles that
read them live in :mod:`customer360.data.oracle`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import pandas as pd
from pydantic import ConfigDict, Field, model_validator

from customer360.config import StrictModel, load_config
from customer360.data import contracts as k
from customer360.data.synthetic_b2b import (  # issue 15
    SALES_TRUTH_DDL,
    SALES_TRUTH_KEYS,
    write_sales_pipeline,
)
from customer360.data.warehouse import (
    connect,
    create_schema,
    get_meta,
    insert_frame,
    set_meta,
)
from customer360.errors import WarehouseError

if TYPE_CHECKING:  # issue 16
    from customer360.data.campaigns import CampaignConfig

log = logging.getLogger(__name__)
META_CONFIG_KEY = "generator_config"

GENERATOR_VERSION = "1"
HISTORY_START = date(2023, 1, 1)
DEFAULT_TODAY = date(2026, 6, 30)
FUTURE_DAYS = 365
DUCKDB_MEMORY_LIMIT = "4GB"
"""DuckDB's share of memory while generating (numpy chunks add well under 1 GB)."""
CHUNK_SIZE = 50_000
"""Customers per chunk. Fixed, because the random streams are per chunk: changing it changes
the data of a given seed."""

TICKET_WINDOW_WEEKS = 13
"""Fee complaints and unresolved tickets raise the hazard for this many whole weeks."""


class DriftConfig(StrictModel):
    """A change in the world from ``start`` on, so monitoring has something to find.

    Off by default (``SyntheticConfig.drift`` is None); the generator's output is then the same
    as before drift existed.
    """

    start: date
    """First day of the changed world (sign-ups and orders on or after it)."""
    acquisition_channel_shares: dict[str, float] | None = None
    """Acquisition channel mix of customers signing up from ``start`` (e.g. a new campaign
    channel taking most sign-ups); every channel named, shares summing to 1."""
    price_factor: float = Field(1.0, gt=0)
    """Order values (and their margins) from ``start`` on are multiplied by this."""

    @model_validator(mode="after")
    def _channels(self) -> DriftConfig:
        shares = self.acquisition_channel_shares
        if shares is not None:
            keys = set(shares)
            if keys != set(k.ACQUISITION_CHANNELS):
                raise ValueError(
                    "drift.acquisition_channel_shares must give every channel exactly once: "
                    f"missing {sorted(set(k.ACQUISITION_CHANNELS) - keys)}, "
                    f"unknown {sorted(keys - set(k.ACQUISITION_CHANNELS))}"
                )
            if abs(sum(shares.values()) - 1.0) > 1e-9 or min(shares.values()) < 0:
                raise ValueError("drift.acquisition_channel_shares must be >= 0 and sum to 1")
        return self


class SyntheticConfig(StrictModel):
    """The knobs of the simulated world (``configs/synthetic.yaml``).

    Rates are per day unless named ``_weekly``; ``*_log_hazard`` are additive effects on the log
    of the weekly at-risk hazard. The config used is stored in ``warehouse_meta`` under
    ``generator_config``, so the oracles project with the same parameters.
    """

    model_config = ConfigDict(**StrictModel.model_config, use_attribute_docstrings=True)

    b2b_share: float = Field(0.2, ge=0, le=1)
    prospect_share: float = Field(0.17, ge=0, le=1)
    """Share of sign-ups that never buy."""
    interested_prospect_share: float = Field(0.5, ge=0, le=1)
    """Share of prospects that browse (sessions, product views) without buying."""
    signup_growth_per_year: float = Field(0.25, ge=0)
    """Exponential growth rate of the sign-up intensity."""
    b2c_purchase_rate: float = Field(0.02, gt=0)
    """Mean of the gamma-distributed B2C purchase rate (orders per day)."""
    b2c_purchase_rate_shape: float = Field(1.2, gt=0)
    b2b_purchase_rate: float = Field(0.008, gt=0)
    b2b_purchase_rate_shape: float = Field(1.5, gt=0)
    b2c_mean_spend: float = Field(55.0, gt=0)
    """Population mean of the customer mean order value (B2C), before the affluence effect."""
    b2b_mean_spend: float = Field(900.0, gt=0)
    mean_spend_shape: float = Field(6.0, gt=0)
    """Gamma shape of the customer mean order value across customers."""
    order_value_shape: float = Field(4.0, gt=0)
    """Gamma shape of a customer's order values around their mean (gamma-gamma)."""
    affluence_spend_effect: float = 0.3
    """Log mean spend per standard deviation of latent affluence."""
    first_purchase_mean_days_b2c: float = Field(10.0, gt=0)
    first_purchase_mean_days_b2b: float = Field(75.0, gt=0)
    """Median over B2B customers of the mean wait from signup (first contact) to first purchase."""
    first_purchase_spread_b2b: float = Field(1.0, ge=0)
    """Log-normal sigma of a B2B customer's mean wait: buying cycles run from weeks to over a
    year (about 2/3 short <= 3 months, 1/5 intermediate, 1/9 long > 9 months)."""
    dropout_beta_a: float = Field(1.3, gt=0)
    """Beta(a, b) of the base weekly dropout probability."""
    dropout_beta_b: float = Field(180.0, gt=0)
    b2b_hazard_factor: float = Field(0.7, gt=0)
    satisfaction_log_hazard: float = -0.35
    engagement_log_hazard: float = -0.3
    fee_complaint_log_hazard: float = 1.4
    """Per fee complaint opened in the previous 13 weeks."""
    unresolved_log_hazard: float = 1.0
    """Per eventually unresolved ticket opened in the previous 13 weeks."""
    fee_grudge_log_hazard: float = 0.3
    """Per fee complaint ever (up to ``fee_grudge_cap``): complaints leave a grudge."""
    fee_grudge_cap: int = Field(3, ge=0)
    hazard_cap: float = Field(0.5, gt=0, le=1)
    at_risk_factor: float = Field(0.3, ge=0, le=1)
    """Purchase and engagement intensity while at risk, relative to active."""
    leave_prob_weekly: float = Field(0.15, gt=0, le=1)
    """Weekly probability that an at-risk customer leaves."""
    contract_share_b2c: float = Field(0.1, ge=0, le=1)
    contract_share_b2b: float = Field(0.45, ge=0, le=1)
    contract_leave_prob: float = Field(0.4, ge=0, le=1)
    """Probability of leaving at the end of the week in which the contract ends."""
    fee_ticket_rate_weekly: float = Field(0.012, ge=0)
    """Fee complaints per week of an average-satisfaction B2C customer."""
    other_ticket_rate_weekly: float = Field(0.03, ge=0)
    unresolved_prob_active: float = Field(0.2, ge=0, le=1)
    unresolved_prob_at_risk: float = Field(0.3, ge=0, le=1)
    category_margin_rate: dict[str, float] = {
        "electronics": 0.12, "home": 0.30, "fashion": 0.45, "grocery": 0.08,
        "sports": 0.28, "beauty": 0.50, "services": 0.60,
    }
    category_return_prob: dict[str, float] = {
        "electronics": 0.08, "home": 0.05, "fashion": 0.15, "grocery": 0.01,
        "sports": 0.06, "beauty": 0.04, "services": 0.02,
    }
    discount_share: float = Field(0.3, ge=0, le=1)
    """Share of orders with a discount (5-30% of the list price)."""
    email_sends_per_day: float = Field(0.025, ge=0)
    offer_events_per_year: float = Field(2.0, ge=0)
    """Offer presentations per customer-year over the last year before today."""
    logging_noise: float = Field(0.8, ge=0)
    """Standard deviation of the logging policy's per-event score noise."""
    logging_temperature: float = Field(1.0, gt=0)
    drift: DriftConfig | None = None
    """Inject drift after a date (see :class:`DriftConfig`); None keeps the world stationary."""

    @model_validator(mode="after")
    def _every_category(self) -> SyntheticConfig:
        for name in ("category_margin_rate", "category_return_prob"):
            keys = set(getattr(self, name))
            if keys != set(k.CATEGORIES):
                raise ValueError(
                    f"{name} must give every category exactly once: "
                    f"missing {sorted(set(k.CATEGORIES) - keys)}, "
                    f"unknown {sorted(keys - set(k.CATEGORIES))}"
                )
        return self

    def by_category(self, name: str) -> np.ndarray:
        """``category_margin_rate`` or ``category_return_prob`` in category order."""
        values = getattr(self, name)
        return np.array([values[c] for c in k.CATEGORIES])


def warehouse_config(con: duckdb.DuckDBPyConnection) -> SyntheticConfig:
    """The :class:`SyntheticConfig` a warehouse was generated with (defaults if not recorded)."""
    raw = get_meta(con, META_CONFIG_KEY)
    return SyntheticConfig.model_validate_json(raw) if raw else SyntheticConfig()


def load_synthetic_config(path: str | Path | None = None) -> SyntheticConfig:
    """``configs/synthetic.yaml`` (or ``path``) as a :class:`SyntheticConfig`."""
    return load_config(path or "synthetic", SyntheticConfig)


CITIES = {
    "north": ("Aberdeen", "Inverness", "Dundee"),
    "south": ("Brighton", "Southampton", "Plymouth"),
    "east": ("Norwich", "Cambridge", "Ipswich"),
    "west": ("Bristol", "Cardiff", "Exeter"),
    "central": ("Birmingham", "Leicester", "Nottingham"),
}
CITY_NAMES = tuple(c for r in k.REGIONS for c in CITIES[r])


@dataclass(frozen=True)
class Offer:
    offer_id: str
    product: str
    category: str
    kind: str
    margin: float
    channel: str
    eligible_segments: str
    base: float
    """Logit intercept of acceptance."""
    b2b: float
    affluence: float
    age: float
    """Effect per age band step (older = positive)."""
    taste: float
    """Effect of the customer's latent taste for the offer's category."""
    region: str | None = None
    region_effect: float = 0.0


OFFERS: tuple[Offer, ...] = (
    Offer("O01", "Premium laptop bundle", "electronics", "sales", 180.0, "email", "A|B",
          -3.6, 0.3, 1.0, -0.1, 1.3),
    Offer("O02", "Smart home starter kit", "home", "cross_sell", 60.0, "app", "A|B|C",
          -2.6, -0.8, 0.3, -0.15, 1.0, "south", 0.5),
    Offer("O03", "Seasonal fashion voucher", "fashion", "sales", 25.0, "app", "A|B|C|D",
          -1.6, -2.0, 0.1, -0.35, 1.2),
    Offer("O04", "Grocery subscription", "grocery", "cross_sell", 15.0, "email", "B|C|D",
          -1.2, -1.5, -0.4, 0.1, 0.8),
    Offer("O05", "Fitness gear pack", "sports", "cross_sell", 40.0, "web", "A|B|C",
          -2.2, -1.0, 0.2, -0.3, 1.2, "west", 0.4),
    Offer("O06", "Beauty box", "beauty", "sales", 35.0, "app", "A|B|C|D",
          -2.0, -2.5, 0.2, 0.0, 1.3),
    Offer("O07", "Extended warranty", "services", "service", 45.0, "phone", "A|B|C|D",
          -2.4, 0.8, 0.0, 0.25, 0.7),
    Offer("O08", "Loyalty fee waiver", "services", "retention", 20.0, "email", "A|B|C|D",
          -1.0, 0.0, -0.3, 0.1, 0.2),
    Offer("O09", "Business equipment lease", "electronics", "sales", 400.0, "sales_rep", "A|B",
          -5.5, 3.2, 0.6, 0.0, 0.8),
    Offer("O10", "Managed services upgrade", "services", "cross_sell", 250.0, "sales_rep", "A|B",
          -5.0, 2.8, 0.3, 0.0, 1.0, "central", 0.5),
    Offer("O11", "Home office furniture", "home", "sales", 90.0, "web", "A|B|C",
          -3.2, 0.5, 0.6, 0.1, 1.0),
    Offer("O12", "Concierge support plan", "services", "retention", 70.0, "phone", "A|B",
          -3.5, 0.6, 1.1, 0.3, 0.5, "north", 0.4),
)
OFFER_EVENT_DAYS = 365

TRUTH_DDL: dict[str, str] = {
    "truth_customers": """
CREATE TABLE truth_customers (
  customer_id VARCHAR NOT NULL,
  is_prospect BOOLEAN NOT NULL,
  first_purchase_at TIMESTAMP,
  first_purchase_rate_per_day DOUBLE NOT NULL,
  purchase_rate_per_day DOUBLE NOT NULL,
  at_risk_factor DOUBLE NOT NULL,
  dropout_prob_weekly DOUBLE NOT NULL,
  hazard_static_weekly DOUBLE NOT NULL,
  leave_prob_weekly DOUBLE NOT NULL,
  contract_leave_prob DOUBLE NOT NULL,
  fee_ticket_rate_weekly DOUBLE NOT NULL,
  other_ticket_rate_weekly DOUBLE NOT NULL,
  mean_spend DOUBLE NOT NULL,
  expected_margin_per_order DOUBLE NOT NULL,
  satisfaction_latent DOUBLE NOT NULL,
  engagement_latent DOUBLE NOT NULL,
  affluence_latent DOUBLE NOT NULL,
  favourite_category VARCHAR NOT NULL,
  at_risk_from DATE,
  left_at DATE,
  left_reason VARCHAR,
  alive_at_today BOOLEAN NOT NULL
)""",
    "truth_future_transactions": None,  # same columns as transactions, filled below
    "truth_tickets": """
CREATE TABLE truth_tickets (
  ticket_id VARCHAR NOT NULL,
  customer_id VARCHAR NOT NULL,
  opened_at TIMESTAMP NOT NULL,
  week_index INTEGER NOT NULL,
  is_fee_complaint BOOLEAN NOT NULL,
  eventually_unresolved BOOLEAN NOT NULL
)""",
    "truth_offer_acceptance": """
CREATE TABLE truth_offer_acceptance (
  customer_id VARCHAR NOT NULL,
  offer_id VARCHAR NOT NULL,
  p_accept DOUBLE NOT NULL
)""",
    "truth_logging_policy": """
CREATE TABLE truth_logging_policy (
  offer_event_id VARCHAR NOT NULL,
  offer_id VARCHAR NOT NULL,
  probability DOUBLE NOT NULL
)""",
}
TRUTH_TABLES = tuple(TRUTH_DDL)
TRUTH_KEYS: dict[str, str] = {
    "truth_customers": "customer_id",
    "truth_future_transactions": "transaction_id",
    "truth_tickets": "ticket_id",
    "truth_offer_acceptance": "customer_id, offer_id",
    "truth_logging_policy": "offer_event_id, offer_id",
}
# issue 15: the sales pipeline's truth tables (customer360.data.synthetic_b2b)
TRUTH_DDL.update(SALES_TRUTH_DDL)
TRUTH_KEYS.update(SALES_TRUTH_KEYS)
TRUTH_TABLES = tuple(TRUTH_DDL)



def _ids(prefix: str, col: str, width: int) -> str:
    return f"'{prefix}' || lpad(CAST({col} AS VARCHAR), {width}, '0')"


def _nullable(values: np.ndarray, present: np.ndarray, dtype: str) -> pd.Series:
    """Nullable integer column: ``values`` where ``present``, else null."""
    return pd.Series(np.asarray(values).astype(np.int64), dtype=dtype).where(present)


def _cat(values: tuple[str, ...], codes: np.ndarray) -> pd.Categorical:
    """Categorical column from integer codes (-1 means null)."""
    return pd.Categorical.from_codes(np.asarray(codes, dtype=np.int16), categories=list(values))


@dataclass
class _Chunk:
    """Static attributes and simulated lifecycle of one chunk of customers (arrays of n)."""

    gid: np.ndarray
    is_b2b: np.ndarray
    prospect: np.ndarray
    interested: np.ndarray
    region: np.ndarray
    age: np.ndarray
    signup: np.ndarray  # day index
    lam: np.ndarray
    mean_spend: np.ndarray
    dropout: np.ndarray
    h0: np.ndarray
    sat: np.ndarray
    eng: np.ndarray
    aff: np.ndarray
    taste: np.ndarray  # n x categories
    contract_end: np.ndarray  # day index or -1
    first: np.ndarray  # day of the first purchase (inf for prospects)
    first_rate: np.ndarray  # 1 / mean wait to the first purchase
    fee_rate: np.ndarray  # weekly fee complaint rate
    other_rate: np.ndarray  # weekly rate of other tickets
    at_risk: np.ndarray  # day index (inf if never)
    left: np.ndarray  # day index (inf if never)
    left_contract: np.ndarray
    tickets: dict[str, np.ndarray]
    acq_referral: np.ndarray | None = None


class _Sim:
    """One generation run: calendar constants and the per-chunk simulation."""

    def __init__(self, n_customers: int, seed: int, today: date, cfg: SyntheticConfig) -> None:
        self.cfg = cfg
        self.n = n_customers
        self.seed = seed
        self.today = today
        self.today_day = (today - HISTORY_START).days
        self.end_day = self.today_day + FUTURE_DAYS
        self.n_weeks = math.ceil(self.end_day / 7)
        self.origin = np.datetime64(HISTORY_START.isoformat(), "ns")

    # -- static attributes --------------------------------------------------------------------
    def customers(self, rng: np.random.Generator, lo: int, hi: int) -> _Chunk:
        cfg = self.cfg
        n = hi - lo
        gid = np.arange(lo, hi, dtype=np.int64)
        is_b2b = rng.random(n) < cfg.b2b_share
        prospect = rng.random(n) < cfg.prospect_share
        interested = prospect & (rng.random(n) < cfg.interested_prospect_share)
        region = rng.choice(len(k.REGIONS), n, p=[0.15, 0.25, 0.2, 0.2, 0.2])
        age = rng.choice(len(k.AGE_BANDS), n, p=[0.1, 0.22, 0.22, 0.2, 0.15, 0.11])
        # Signups: the business grows, so later days are denser. Quantiles of a truncated
        # exponential keep customer ids in signup order (referrers are earlier customers).
        growth = max(cfg.signup_growth_per_year, 1e-9) / 365.0
        u = (gid + rng.random(n)) / self.n
        span = self.today_day
        signup = np.floor(np.log1p(u * np.expm1(growth * span)) / growth).astype(np.int64)
        signup = np.clip(signup, 0, self.today_day - 1)
        aff = rng.standard_normal(n)
        sat = rng.standard_normal(n)
        eng = rng.standard_normal(n)
        # Purchase rate (per day): gamma heterogeneity, B2B buys less often.
        b2b_shape, b2c_shape = cfg.b2b_purchase_rate_shape, cfg.b2c_purchase_rate_shape
        lam = np.where(
            is_b2b,
            rng.gamma(b2b_shape, cfg.b2b_purchase_rate / b2b_shape, n),
            rng.gamma(b2c_shape, cfg.b2c_purchase_rate / b2c_shape, n),
        )
        lam = lam * np.exp(0.15 * eng)
        lam[prospect] = 0.0
        # Gamma-gamma mean spend, higher for affluent customers and for companies.
        base = np.where(is_b2b, cfg.b2b_mean_spend, cfg.b2c_mean_spend) * np.exp(
            cfg.affluence_spend_effect * aff
        )
        mean_spend = rng.gamma(cfg.mean_spend_shape, base / cfg.mean_spend_shape)
        dropout = rng.beta(cfg.dropout_beta_a, cfg.dropout_beta_b, n)
        h0 = (
            dropout
            * np.exp(cfg.satisfaction_log_hazard * sat + cfg.engagement_log_hazard * eng)
            * np.where(is_b2b, cfg.b2b_hazard_factor, 1.0)
        )
        logits = 1.2 * rng.standard_normal((n, len(k.CATEGORIES)))
        logits[:, 0] += np.where(is_b2b, 1.0, 0.0)
        logits[:, 6] += np.where(is_b2b, 1.5, 0.0)
        taste = np.exp(logits)
        taste /= taste.sum(axis=1, keepdims=True)
        has_contract = rng.random(n) < np.where(
            is_b2b, cfg.contract_share_b2b, cfg.contract_share_b2c
        )
        years = rng.integers(1, 4, n)
        contract_end = np.where(has_contract, signup + 365 * years, -1)
        cycle = np.exp(cfg.first_purchase_spread_b2b * rng.standard_normal(n))
        first_rate = 1.0 / np.where(
            is_b2b, cfg.first_purchase_mean_days_b2b * cycle, cfg.first_purchase_mean_days_b2c
        )
        first = np.where(prospect, np.inf, signup + rng.exponential(1.0, n) / first_rate)
        fee_rate = cfg.fee_ticket_rate_weekly * np.exp(-0.6 * sat) * np.where(is_b2b, 1.3, 1.0)
        other_rate = cfg.other_ticket_rate_weekly * np.exp(-0.3 * sat)
        return _Chunk(
            gid=gid, is_b2b=is_b2b, prospect=prospect, interested=interested, region=region,
            age=age, signup=signup, lam=lam, mean_spend=mean_spend, dropout=dropout, h0=h0,
            sat=sat, eng=eng, aff=aff, taste=taste, contract_end=contract_end, first=first,
            first_rate=first_rate, fee_rate=fee_rate, other_rate=other_rate,
            at_risk=np.full(n, np.inf), left=np.full(n, np.inf),
            left_contract=np.zeros(n, dtype=bool), tickets={},
        )

    # -- weekly lifecycle with tickets ------------------------------------------------------
    def lifecycle(self, rng: np.random.Generator, c: _Chunk) -> None:
        cfg = self.cfg
        n = len(c.gid)
        state = np.zeros(n, dtype=np.int8)  # 0 active, 1 at risk, 2 gone
        fee_rate, other_rate = c.fee_rate, c.other_rate
        fee_ever = np.zeros(n, dtype=np.int32)
        fee_buf = np.zeros((TICKET_WINDOW_WEEKS, n), dtype=np.int16)
        unres_buf = np.zeros((TICKET_WINDOW_WEEKS, n), dtype=np.int16)
        fee13 = np.zeros(n, dtype=np.int32)
        unres13 = np.zeros(n, dtype=np.int32)
        contract_week = np.where(c.contract_end >= 0, c.contract_end // 7, -1)
        rec: dict[str, list[np.ndarray]] = {k_: [] for k_ in ("idx", "week", "fee", "unres")}
        for w in range(self.n_weeks):
            start = 7 * w
            # hazard and tickets start with the first purchase
            frac = np.clip((start + 7 - c.first) / 7.0, 0.0, 1.0)
            live = (state < 2) & (frac > 0)
            # Tickets of this week.
            n_fee = rng.poisson(fee_rate * frac) * live
            n_oth = rng.poisson(other_rate * frac) * live
            p_unres = np.where(
                state == 1, cfg.unresolved_prob_at_risk, cfg.unresolved_prob_active
            )
            u_fee = rng.binomial(n_fee, p_unres)
            u_oth = rng.binomial(n_oth, p_unres)
            has = np.flatnonzero(n_fee + n_oth)
            if has.size:
                for flag, cnt, unr in ((True, n_fee, u_fee), (False, n_oth, u_oth)):
                    m = has[cnt[has] > 0]
                    reps = cnt[m]
                    idx = np.repeat(m, reps)
                    # the first `unr` tickets of each customer-week are the unresolved ones
                    rank = np.arange(idx.size) - np.repeat(np.cumsum(reps) - reps, reps)
                    rec["idx"].append(idx)
                    rec["week"].append(np.full(idx.size, w, dtype=np.int32))
                    rec["fee"].append(np.full(idx.size, flag))
                    rec["unres"].append(rank < np.repeat(unr[m], reps))
            # Transitions at the end of week w use tickets of weeks [w-13, w-1].
            end_day = start + 7
            cw = contract_week == w
            if cw.any():
                leave = cw & live & (rng.random(n) < cfg.contract_leave_prob)
                c.left[leave] = end_day
                c.left_contract[leave] = True
                c.at_risk[leave & (state == 0)] = end_day
                state[leave] = 2
            h = weekly_hazard(c.h0, fee13, unres13, fee_ever, cfg)
            u = rng.random(n)
            go = live & (state == 1) & (u < cfg.leave_prob_weekly)
            risk = live & (state == 0) & (u < h)
            c.left[go] = end_day
            c.at_risk[risk] = end_day
            state[go] = 2
            state[risk] = 1
            slot = w % TICKET_WINDOW_WEEKS
            fee13 += n_fee - fee_buf[slot]
            fee_ever += n_fee
            unres13 += (u_fee + u_oth) - unres_buf[slot]
            fee_buf[slot] = n_fee
            unres_buf[slot] = u_fee + u_oth
        c.tickets = {
            key: (np.concatenate(v) if v else np.zeros(0, dtype=np.int64)) for key, v in rec.items()
        }
        # Prospects never "leave" (they never bought); their lifecycle fields stay empty.

    # -- helpers ------------------------------------------------------------------------------
    def ts(self, day: np.ndarray) -> np.ndarray:
        """Float day offsets -> datetime64[ns] (second precision)."""
        secs = np.floor(np.asarray(day, dtype=np.float64) * 86_400).astype(np.int64)
        return self.origin + secs.astype("timedelta64[s]")

    @staticmethod
    def poisson_segments(
        rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, rate: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Arrivals of independent Poisson processes on [lo, hi) with per-row rate.

        Returns the row index of every arrival and its time."""
        length = np.clip(hi - lo, 0.0, None)
        counts = rng.poisson(rate * length)
        idx = np.repeat(np.arange(lo.size), counts)
        t = lo[idx] + rng.random(idx.size) * length[idx]
        return idx, t

    def two_phase(
        self,
        rng: np.random.Generator,
        c: _Chunk,
        rate: np.ndarray,
        after_factor: float = 0.0,
        start: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Arrivals at ``rate`` while active, ``at_risk_factor * rate`` while at risk and
        ``after_factor * rate`` after leaving, from ``start`` (default signup) to the end of the
        simulation."""
        end = float(self.end_day)
        sig = c.signup.astype(np.float64) if start is None else np.minimum(start, end)
        a_end = np.minimum(c.at_risk, end)
        r_end = np.minimum(c.left, end)
        i1, t1 = self.poisson_segments(rng, sig, a_end, rate)
        i2, t2 = self.poisson_segments(rng, np.minimum(a_end, r_end), r_end,
                                       rate * self.cfg.at_risk_factor)
        parts_i, parts_t = [i1, i2], [t1, t2]
        if after_factor > 0:
            i3, t3 = self.poisson_segments(rng, r_end, np.full(sig.size, end),
                                           rate * after_factor)
            parts_i.append(i3)
            parts_t.append(t3)
        return np.concatenate(parts_i), np.concatenate(parts_t)


def weekly_hazard(
    h0: np.ndarray,
    fee13: np.ndarray,
    unres13: np.ndarray,
    fee_ever: np.ndarray,
    cfg: SyntheticConfig,
) -> np.ndarray:
    """Weekly probability that an active customer turns at risk.

    ``fee13``/``unres13`` count fee complaints / eventually unresolved tickets opened in the 13
    whole weeks before, ``fee_ever`` all fee complaints before; ``h0`` is the static hazard.
    """
    log_mult = (
        cfg.fee_complaint_log_hazard * fee13
        + cfg.unresolved_log_hazard * unres13
        + cfg.fee_grudge_log_hazard * np.minimum(fee_ever, cfg.fee_grudge_cap)
    )
    return np.minimum(cfg.hazard_cap, h0 * np.exp(log_mult))


def true_acceptance(
    is_b2b: np.ndarray,
    age: np.ndarray,
    aff: np.ndarray,
    region: np.ndarray,
    taste: np.ndarray,
) -> np.ndarray:
    """True acceptance probability of every customer x offer (n x len(OFFERS)).

    Depends only on static attributes: customer type, age band index, latent affluence,
    region index and the latent category taste.
    """
    cat_index = {c: i for i, c in enumerate(k.CATEGORIES)}
    reg_index = {r: i for i, r in enumerate(k.REGIONS)}
    out = np.empty((is_b2b.size, len(OFFERS)))
    age_c = np.where(is_b2b, 0.0, age - 2.5)
    for j, o in enumerate(OFFERS):
        z = (
            o.base
            + o.b2b * is_b2b
            + o.affluence * aff
            + o.age * age_c
            + o.taste * np.log(len(k.CATEGORIES) * taste[:, cat_index[o.category]])
        )
        if o.region is not None:
            z = z + o.region_effect * (region == reg_index[o.region])
        out[:, j] = 1.0 / (1.0 + np.exp(-z))
    return out


def generate_warehouse(
    db_path: str | Path,
    *,
    n_customers: int,
    seed: int,
    today: date | str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
    config: SyntheticConfig | None = None,
    campaigns: CampaignConfig | None = None,
    source_records: bool = False,
) -> dict[str, int]:
    """Generate a synthetic CRM warehouse with known ground truth.

    Parameters
    ----------
    db_path
        DuckDB file to create.
    n_customers
        Number of customers (>= 10).
    seed
        Random seed; the same seed, size and today give identical data.
    today
        Synthetic "today" (default 2026-06-30); raw tables hold rows strictly before it.
    on_progress
        Called as ``on_progress(customers_done, n_customers)`` after each chunk.
    overwrite
        Replace an existing file. Without it an existing warehouse with data is an error.
    config
        Parameters of the simulated world; default :class:`SyntheticConfig()` (the values of
        ``configs/synthetic.yaml``).
    campaigns
        Also simulate randomised campaigns with known effects
        (:func:`customer360.data.campaigns.generate_campaigns`); default none, so the tables
        are unchanged unless asked.
    source_records
        Also write ``source_records``: every customer as one to four records in the source
        systems, with duplication and hard negatives, and ``truth_source_records`` mapping each
        record to its ``customer_id`` (issue 14, :mod:`customer360.data.synthetic_identity`).
        Off, the table stays empty and every other table is unchanged.

    Returns
    -------
    dict
        Row count of every raw and truth table.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> counts = generate_warehouse(pathlib.Path(tempfile.mkdtemp()) / "w.duckdb",
    ...                             n_customers=50, seed=1)
    >>> counts["customers"]
    50
    """
    if n_customers < 10:
        raise WarehouseError(
            f"n_customers={n_customers} is too small; generate at least 10 customers."
        )
    today_d = _parse_today(today)
    if (today_d - HISTORY_START).days < 180:
        raise WarehouseError(
            f"today={today_d} leaves less than 180 days of history after {HISTORY_START}; "
            "pass a later date."
        )
    db = Path(db_path)
    if db.is_dir():
        raise WarehouseError(f"{db} is a directory; pass a file path such as {db / 'w.duckdb'}.")
    if db.exists():
        if not overwrite:
            rows = _customer_rows(db)
            if rows:
                raise WarehouseError(
                    f"Warehouse {db} already holds {rows} customers. Pass --overwrite "
                    "(overwrite=True) to replace it, or choose another --db path."
                )
        db.unlink()
        wal = db.with_name(db.name + ".wal")
        if wal.exists():
            wal.unlink()
    sim = _Sim(n_customers, seed, today_d, config or SyntheticConfig())
    con = connect(db, create=True)
    try:
        create_schema(con)
        _create_tables_without_keys(con)
        con.execute("SET preserve_insertion_order = false")
        con.execute(f"SET memory_limit = '{DUCKDB_MEMORY_LIMIT}'")
        _write_offers(con)
        counters = dict.fromkeys(("txn", "event", "social", "ticket", "offer_event"), 0)
        n_chunks = math.ceil(n_customers / CHUNK_SIZE)
        for ci in range(n_chunks):
            lo, hi = ci * CHUNK_SIZE, min(n_customers, (ci + 1) * CHUNK_SIZE)
            rng = np.random.default_rng([seed, ci])
            chunk = sim.customers(rng, lo, hi)
            sim.lifecycle(rng, chunk)
            _write_chunk(con, sim, rng, chunk, counters)
            log.info("generated customers %d-%d of %d", lo, hi, n_customers)
            if on_progress is not None:
                on_progress(hi, n_customers)
        # issue 15: leads and opportunities, from their own random stream
        write_sales_pipeline(con, seed=seed, today=today_d)
        for key, value in (
            ("today", today_d.isoformat()),
            ("seed", str(seed)),
            ("n_customers", str(n_customers)),
            ("generator_version", GENERATOR_VERSION),
            ("history_start", HISTORY_START.isoformat()),
            (META_CONFIG_KEY, sim.cfg.model_dump_json(exclude={"drift"} if sim.cfg.drift is None
                                                       else None)),
        ):
            set_meta(con, key, value)
        if source_records:  # issue 14
            from customer360.data.synthetic_identity import write_source_records

            write_source_records(con, seed=seed, today=today_d)
        # keys are added once at the end: one bulk index build instead of row-by-row upkeep
        for table, key in _primary_keys().items():
            con.execute(f"ALTER TABLE {table} ADD PRIMARY KEY ({key})")
        counts = {
            t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in (*k.RAW_TABLES, *TRUTH_TABLES)
        }
        # issue 16: randomised campaigns and their true effects, only when asked
        if campaigns is not None:
            from customer360.data.campaigns import generate_campaigns

            counts.update(generate_campaigns(con, seed=seed, config=campaigns))
        if source_records:  # issue 14
            counts["truth_source_records"] = con.execute(
                "SELECT count(*) FROM truth_source_records").fetchone()[0]
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return counts


def _customer_rows(db: Path) -> int:
    """Customers held by an existing file (0 for an empty warehouse); a clear error for a file
    that is not a readable DuckDB warehouse."""
    try:
        with duckdb.connect(str(db), read_only=True) as probe:
            has = probe.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = 'customers'"
            ).fetchone()[0]
            return probe.execute("SELECT count(*) FROM customers").fetchone()[0] if has else 0
    except duckdb.Error as exc:
        raise WarehouseError(
            f"{db} exists but cannot be read as a DuckDB warehouse ({exc}). Pass --overwrite "
            "(overwrite=True) to replace it, or choose another --db path."
        ) from exc


def _parse_today(today: date | str | None) -> date:
    if today is None:
        return DEFAULT_TODAY
    if isinstance(today, date):
        return today
    try:
        return date.fromisoformat(str(today))
    except ValueError as exc:
        raise WarehouseError(f"today={today!r} is not an ISO date (YYYY-MM-DD).") from exc


def _primary_keys() -> dict[str, str]:
    return {**{t: c.primary_key for t, c in k.CONTRACTS.items()}, **TRUTH_KEYS}


def _create_tables_without_keys(con: duckdb.DuckDBPyConnection) -> None:
    """(Re)create the raw and truth tables with the contract columns, types and NOT NULLs but
    without primary keys; :func:`generate_warehouse` adds the keys after loading."""
    for name, contract in k.CONTRACTS.items():
        con.execute(f"DROP TABLE {name}")
        con.execute(contract.ddl(name, primary_key=False))
    for name, ddl in TRUTH_DDL.items():
        con.execute(f"DROP TABLE IF EXISTS {name}")
        con.execute(ddl or k.TRANSACTIONS.ddl(name, primary_key=False))


def _write_offers(con: duckdb.DuckDBPyConnection) -> None:
    df = pd.DataFrame(
        {
            "offer_id": [o.offer_id for o in OFFERS],
            "product": [o.product for o in OFFERS],
            "category": [o.category for o in OFFERS],
            "kind": [o.kind for o in OFFERS],
            "margin": [o.margin for o in OFFERS],
            "channel": [o.channel for o in OFFERS],
            "eligible_segments": [o.eligible_segments for o in OFFERS],
        }
    )
    insert_frame(con, "offers", df)


CUST_ID = _ids("C", "cid", 8)


def _write_chunk(
    con: duckdb.DuckDBPyConnection,
    sim: _Sim,
    rng: np.random.Generator,
    c: _Chunk,
    counters: dict[str, int],
) -> None:
    n = len(c.gid)
    _write_customers(con, sim, rng, c)
    _write_third_party(con, sim, rng, c)
    _write_transactions(con, sim, rng, c, counters)
    _write_tickets(con, sim, rng, c, counters)
    _write_events(con, sim, rng, c, counters)
    _write_social(con, sim, rng, c, counters)
    _write_offer_events(con, sim, rng, c, counters)
    log.debug("chunk of %d customers written", n)


def _draw_category(rng: np.random.Generator, taste: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """One category per row, drawn from the taste of customer ``idx`` (inverse CDF on the
    row-offset cumulative tastes, so no rows x categories matrix is materialised)."""
    n_cat = taste.shape[1]
    flat = (np.cumsum(taste, axis=1) + np.arange(taste.shape[0])[:, None]).ravel()
    pos = np.searchsorted(flat, idx + rng.random(idx.size), side="right") - idx * n_cat
    return np.minimum(pos, n_cat - 1)


def _write_customers(con, sim: _Sim, rng: np.random.Generator, c: _Chunk) -> None:
    n = len(c.gid)
    b2b = c.is_b2b
    size = np.where(b2b, rng.choice(4, n, p=[0.4, 0.3, 0.2, 0.1]), -1)
    industry = np.where(b2b, rng.integers(0, len(k.INDUSTRIES), n), -1)
    age = np.where(b2b, -1, c.age)
    gender = np.where(b2b, -1, rng.choice(3, n, p=[0.49, 0.49, 0.02]))
    city = c.region * 3 + rng.integers(0, 3, n)
    channel = rng.choice(len(k.ACQUISITION_CHANNELS), n, p=[0.3, 0.2, 0.12, 0.08, 0.1, 0.2])
    channel[c.gid == 0] = 5  # the first customer cannot have been referred
    drift = sim.cfg.drift
    if drift is not None and drift.acquisition_channel_shares is not None:
        late = np.flatnonzero(c.signup >= (drift.start - HISTORY_START).days)
        shares = [drift.acquisition_channel_shares[ch] for ch in k.ACQUISITION_CHANNELS]
        channel[late] = rng.choice(len(k.ACQUISITION_CHANNELS), late.size, p=shares)
    contract_end = np.where(c.contract_end >= 0, c.contract_end, 0)
    df = pd.DataFrame(
        {
            "cid": c.gid,
            "customer_type": _cat(k.CUSTOMER_TYPES, b2b.astype(int)),
            "company_size": _cat(k.COMPANY_SIZES, size),
            "industry": _cat(k.INDUSTRIES, industry),
            "age_band": _cat(k.AGE_BANDS, age),
            "gender": _cat(k.GENDERS, gender),
            "region": _cat(k.REGIONS, c.region),
            "city": _cat(CITY_NAMES, city),
            "acq": _cat(k.ACQUISITION_CHANNELS, channel),
            "signup": c.signup,
            "has_contract": c.contract_end >= 0,
            "contract_end": contract_end,
        }
    )
    c.acq_referral = channel == k.ACQUISITION_CHANNELS.index("referral")
    start = f"DATE '{HISTORY_START.isoformat()}'"
    insert_frame(
        con,
        "customers",
        df,
        f"{CUST_ID}, customer_type, company_size, industry, age_band, gender, region, city, "
        f"acq, {start} + CAST(signup AS INTEGER), "
        f"CASE WHEN has_contract THEN {start} + CAST(contract_end AS INTEGER) END",
    )
    fav = np.argmax(c.taste, axis=1)
    n_cat = len(k.CATEGORIES)
    cfg = sim.cfg
    net_rate = cfg.by_category("category_margin_rate") * (
        1 - cfg.by_category("category_return_prob")
    )
    exp_margin = c.mean_spend * (c.taste * net_rate).sum(1)
    at_risk = np.where(np.isfinite(c.at_risk), c.at_risk, 0).astype(np.int64)
    left = np.where(np.isfinite(c.left), c.left, 0).astype(np.int64)
    reason = np.where(~np.isfinite(c.left), -1, np.where(c.left_contract, 1, 0))
    has_first = c.first < sim.end_day
    truth = pd.DataFrame(
        {
            "cid": c.gid,
            "is_prospect": c.prospect,
            "first_ts": pd.Series(sim.ts(np.where(has_first, c.first, 0.0))).where(has_first),
            "first_rate": np.where(c.prospect, 0.0, c.first_rate),
            "lam": c.lam,
            "at_risk_factor": np.full(n, cfg.at_risk_factor),
            "dropout": c.dropout,
            "h0": c.h0,
            "leave": np.full(n, cfg.leave_prob_weekly),
            "cleave": np.where(c.contract_end >= 0, cfg.contract_leave_prob, 0.0),
            "fee_rate": np.where(c.prospect, 0.0, c.fee_rate),
            "other_rate": np.where(c.prospect, 0.0, c.other_rate),
            "mean_spend": c.mean_spend,
            "exp_margin": exp_margin,
            "sat": c.sat,
            "eng": c.eng,
            "aff": c.aff,
            "fav": _cat(k.CATEGORIES, fav % n_cat),
            "has_risk": np.isfinite(c.at_risk),
            "at_risk": at_risk,
            "has_left": np.isfinite(c.left),
            "left_day": left,
            "reason": _cat(("hazard", "contract"), reason),
            "alive": c.left > sim.today_day,
        }
    )
    insert_frame(
        con,
        "truth_customers",
        truth,
        f"{CUST_ID}, is_prospect, first_ts, first_rate, lam, at_risk_factor, dropout, h0, leave, "
        f"cleave, fee_rate, other_rate, mean_spend, "
        f"exp_margin, sat, eng, aff, fav, "
        f"CASE WHEN has_risk THEN {start} + CAST(at_risk AS INTEGER) END, "
        f"CASE WHEN has_left THEN {start} + CAST(left_day AS INTEGER) END, reason, alive",
    )


def _affluence_score(aff: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.clip(50 + 16 * aff + rng.normal(0, 6, aff.size), 0, 100).round(1)


def _write_third_party(con, sim: _Sim, rng: np.random.Generator, c: _Chunk) -> None:
    n = len(c.gid)
    observed = c.signup + rng.integers(1, 60, n) + rng.random(n)
    keep = (rng.random(n) < 0.9) & (observed < sim.today_day)
    b2b = c.is_b2b
    income = np.clip(np.round(2 + 1.1 * c.aff + rng.normal(0, 0.6, n)), 0, 4).astype(int)

    def missing(share: float) -> np.ndarray:
        """Rows the provider could not fill."""
        return rng.random(n) < share

    profession = np.where(b2b | missing(0.05), -1, rng.integers(0, len(k.PROFESSIONS), n))
    education = np.where(
        b2b | missing(0.05),
        -1,
        np.clip(np.round(1.5 + 0.8 * c.aff + rng.normal(0, 0.9, n)), 0, 4).astype(int),
    )
    hh = np.clip(rng.poisson(1.6, n) + 1, 1, 15)
    home = np.round(rng.lognormal(12.3 + 0.35 * c.aff, 0.3), -3)
    size = rng.choice(4, n, p=[0.4, 0.3, 0.2, 0.1])
    revenue = np.clip(size + rng.integers(0, 2, n), 0, 4)
    employees = np.maximum(1, np.round(np.exp(1.0 + 1.6 * size + rng.normal(0, 0.5, n))))
    df = pd.DataFrame(
        {
            "cid": c.gid,
            "observed": sim.ts(observed),
            "profession": _cat(k.PROFESSIONS, profession),
            "education": _cat(k.EDUCATION_LEVELS, education),
            "income": _cat(k.INCOME_BANDS, np.where(b2b | missing(0.05), -1, income)),
            "hh": _nullable(hh, ~b2b, "Int32"),
            "home": pd.Series(np.where(b2b, np.nan, home)),
            "aff": _affluence_score(c.aff, rng),
            "revenue": _cat(k.REVENUE_BANDS, np.where(b2b, revenue, -1)),
            "employees": _nullable(employees, b2b, "Int64"),
        }
    )[keep]
    insert_frame(
        con,
        "third_party",
        df,
        f"{CUST_ID}, observed, profession, education, income, hh, home, aff, revenue, employees",
    )


def _write_transactions(
    con, sim: _Sim, rng: np.random.Generator, c: _Chunk, counters: dict[str, int]
) -> None:
    # the first purchase, then a Poisson process at the latent rate
    buyers = np.flatnonzero(c.first < sim.end_day)
    idx, t = sim.two_phase(rng, c, c.lam, start=c.first)
    idx, t = np.concatenate([buyers, idx]), np.concatenate([c.first[buyers], t])
    order = np.lexsort((t, idx))
    idx, t = idx[order], t[order]
    m = idx.size
    b2b = c.is_b2b[idx]
    cat = _draw_category(rng, c.taste, idx)
    cfg = sim.cfg
    shape = cfg.order_value_shape
    amount = np.round(rng.gamma(shape, c.mean_spend[idx] / shape), 2)
    drift = cfg.drift
    if drift is not None and drift.price_factor != 1.0:
        after = t >= (drift.start - HISTORY_START).days
        amount = np.where(after, np.round(amount * drift.price_factor, 2), amount)
    margin_rate = cfg.by_category("category_margin_rate")
    margin = np.round(amount * margin_rate[cat] * rng.uniform(0.85, 1.15, m), 2)
    qty = 1 + np.where(b2b, rng.poisson(8.0, m), rng.poisson(0.6, m))
    disc_rate = np.where(rng.random(m) < cfg.discount_share, rng.uniform(0.05, 0.3, m), 0.0)
    discount = np.round(amount * disc_rate / (1 - disc_rate), 2)
    # preferred channel per customer, occasionally another
    pref = np.where(c.is_b2b, rng.choice([3, 4], len(c.gid)), rng.choice([0, 1, 2], len(c.gid)))
    ch = np.where(rng.random(m) < 0.75, pref[idx], rng.integers(0, len(k.SALES_CHANNELS), m))
    cts = np.round(np.array([4.0, 3.0, 6.0, 8.0, 25.0])[ch] + 0.02 * amount
                   + rng.exponential(1.5, m), 2)
    # referral: the first order of referral-acquired customers, referred by an earlier customer
    first = np.ones(m, dtype=bool)
    first[1:] = idx[1:] != idx[:-1]
    referred = first & c.acq_referral[idx]
    gid = c.gid[idx]
    referrer = np.where(referred, np.floor(rng.random(m) * gid).astype(np.int64), -1)
    # returns: a later row with the negated amount and margin, before the customer leaves
    ret = rng.random(m) < cfg.by_category("category_return_prob")[cat]
    rt = t + rng.uniform(3, 30, m)
    ret &= (rt < c.left[idx]) & (rt < sim.end_day)
    r = np.flatnonzero(ret)
    all_idx = np.concatenate([idx, idx[r]])
    all_t = np.concatenate([t, rt[r]])
    is_ret = np.concatenate([np.zeros(m, bool), np.ones(r.size, bool)])
    df = pd.DataFrame(
        {
            "cid": c.gid[all_idx],
            "ts": sim.ts(all_t),
            "amount": np.concatenate([amount, -amount[r]]),
            "margin": np.concatenate([margin, -margin[r]]),
            "qty": np.concatenate([qty, qty[r]]).astype(np.int32),
            "cat": _cat(k.CATEGORIES, np.concatenate([cat, cat[r]])),
            "ch": _cat(k.SALES_CHANNELS, np.concatenate([ch, ch[r]])),
            "discount": np.concatenate([discount, np.zeros(r.size)]),
            "is_return": is_ret,
            "ref": np.concatenate([referrer, np.full(r.size, -1)]),
            "cts": np.concatenate([cts, np.round(3.0 + rng.exponential(2.0, r.size), 2)]),
        }
    )
    df["tid"] = np.arange(len(df), dtype=np.int64) + counters["txn"]
    counters["txn"] += len(df)
    select = (
        f"{_ids('T', 'tid', 12)}, {CUST_ID}, ts, amount, margin, qty, cat, ch, discount, "
        f"is_return, CASE WHEN ref >= 0 THEN {_ids('C', 'ref', 8)} END, cts"
    )
    past = all_t < sim.today_day
    future = (~past) & (all_t < sim.end_day)
    insert_frame(con, "transactions", df[past], select)
    insert_frame(con, "truth_future_transactions", df[future], select)


def _write_tickets(
    con, sim: _Sim, rng: np.random.Generator, c: _Chunk, counters: dict[str, int]
) -> None:
    tk = c.tickets
    idx, week = tk["idx"].astype(np.int64), tk["week"].astype(np.int64)
    m = idx.size
    lo = np.maximum(7.0 * week, c.first[idx])  # tickets start with the first purchase
    opened = lo + rng.random(m) * (7.0 * week + 7 - lo)
    fee, unres = tk["fee"].astype(bool), tk["unres"].astype(bool)
    other = rng.choice([1, 2, 3, 4, 5, 6], m, p=[0.2, 0.2, 0.2, 0.15, 0.1, 0.15])
    cat = np.where(fee, 0, other)
    closed = opened + np.where(unres, rng.exponential(10.0, m), rng.exponential(2.5, m)) + 0.01
    is_open = closed >= sim.today_day
    status = np.where(is_open, 0, np.where(unres, 2, 1))
    score = np.clip(
        np.round(3.4 + 0.8 * c.sat[idx] - 1.3 * unres - 0.6 * fee + rng.normal(0, 0.8, m)), 1, 5
    ).astype(np.int64)
    answered = (~is_open) & (rng.random(m) < 0.6)
    df = pd.DataFrame(
        {
            "cid": c.gid[idx],
            "opened": sim.ts(opened),
            "closed": pd.Series(sim.ts(closed)).where(~is_open),
            "cat": _cat(k.TICKET_CATEGORIES, cat),
            "status": _cat(k.TICKET_STATUSES, status),
            "sat": _nullable(score, answered, "Int32"),
            "week": week.astype(np.int32),
            "fee": fee,
            "unres": unres,
        }
    )
    df["kid"] = np.arange(m, dtype=np.int64) + counters["ticket"]
    counters["ticket"] += m
    tid = _ids("K", "kid", 10)
    past = opened < sim.today_day
    insert_frame(con, "support_tickets", df[past],
            f"{tid}, {CUST_ID}, opened, closed, cat, status, sat")
    insert_frame(con, "truth_tickets", df, f"{tid}, {CUST_ID}, opened, week, fee, unres")


def _write_events(
    con, sim: _Sim, rng: np.random.Generator, c: _Chunk, counters: dict[str, int]
) -> None:
    n = len(c.gid)
    engage = 0.015 * np.exp(0.5 * c.eng) * (1 + 20 * c.lam)
    engage = np.where(c.prospect, np.where(c.interested, 0.02, 0.0003), engage)
    parts = []
    # sessions, product views and cart adds on web/app, thinning out at risk
    for etype, mult in ((0, 1.0), (1, 2.0), (2, 0.3)):
        i, t = sim.two_phase(rng, c, engage * mult, after_factor=0.05)
        parts.append((i, t, np.full(i.size, etype), rng.choice([0, 1], i.size, p=[0.6, 0.4])))
    # e-mail: sends to every signed-up customer, opens and clicks depend on engagement/state
    end = np.full(n, float(sim.end_day))
    sends = np.full(n, sim.cfg.email_sends_per_day)
    si, st = sim.poisson_segments(rng, c.signup.astype(float), end, sends)
    state_at = np.where(st < c.at_risk[si], 0, np.where(st < c.left[si], 1, 2))
    p_open = np.array([0.35, 0.12, 0.03])[state_at] * np.clip(np.exp(0.3 * c.eng[si]), 0.3, 2.5)
    opened = rng.random(si.size) < np.minimum(p_open, 0.95)
    clicked = opened & (rng.random(si.size) < 0.25)
    ot = st + rng.exponential(0.5, si.size)
    ct = ot + rng.exponential(0.02, si.size)
    parts.append((si, st, np.full(si.size, 3), np.full(si.size, 2)))
    parts.append((si[opened], ot[opened], np.full(opened.sum(), 4), np.full(opened.sum(), 2)))
    parts.append((si[clicked], ct[clicked], np.full(clicked.sum(), 5), np.full(clicked.sum(), 2)))
    idx = np.concatenate([p[0] for p in parts])
    t = np.concatenate([p[1] for p in parts])
    etype = np.concatenate([p[2] for p in parts])
    ch = np.concatenate([p[3] for p in parts])
    # views and cart adds carry a category drawn from the customer's taste
    cat = np.full(idx.size, -1)
    browse = (etype == 1) | (etype == 2)
    cat[browse] = _draw_category(rng, c.taste, idx[browse])
    keep = t < sim.today_day
    df = pd.DataFrame(
        {
            "cid": c.gid[idx[keep]],
            "ts": sim.ts(t[keep]),
            "etype": _cat(k.EVENT_TYPES, etype[keep]),
            "ch": _cat(k.EVENT_CHANNELS, ch[keep]),
            "cat": _cat(k.CATEGORIES, cat[keep]),
        }
    )
    df["eid"] = np.arange(len(df), dtype=np.int64) + counters["event"]
    counters["event"] += len(df)
    insert_frame(con, "events", df, f"{_ids('E', 'eid', 12)}, {CUST_ID}, ts, etype, ch, cat")


def _write_social(
    con, sim: _Sim, rng: np.random.Generator, c: _Chunk, counters: dict[str, int]
) -> None:
    n = len(c.gid)
    active = rng.random(n) < 0.25
    rate = np.where(active, 0.01 * np.exp(0.3 * np.abs(c.sat)), 0.0)
    idx, t = sim.two_phase(rng, c, rate, after_factor=0.3)
    t_keep = t < sim.today_day
    idx, t = idx[t_keep], t[t_keep]
    m = idx.size
    kind = rng.choice(4, m, p=[0.3, 0.35, 0.1, 0.25])
    state_at = np.where(t < c.at_risk[idx], 0.0, -0.6)
    sentiment = np.tanh(0.7 * c.sat[idx] + state_at + rng.normal(0, 0.5, m))
    has_sent = (kind == 0) | (kind == 3)
    df = pd.DataFrame(
        {
            "cid": c.gid[idx],
            "ts": sim.ts(t),
            "kind": _cat(k.SOCIAL_KINDS, kind),
            "platform": _cat(k.SOCIAL_PLATFORMS,
                             np.where(c.is_b2b[idx], 3, rng.choice([0, 1, 2, 4], m))),
            "sentiment": pd.Series(np.round(sentiment, 3)).where(has_sent),
        }
    )
    df["sid"] = np.arange(m, dtype=np.int64) + counters["social"]
    counters["social"] += m
    select = f"{_ids('S', 'sid', 11)}, {CUST_ID}, ts, kind, platform, sentiment"
    insert_frame(con, "social", df, select)


def _write_offer_events(
    con, sim: _Sim, rng: np.random.Generator, c: _Chunk, counters: dict[str, int]
) -> None:
    n = len(c.gid)
    n_off = len(OFFERS)
    p = true_acceptance(c.is_b2b, c.age, c.aff, c.region, c.taste)
    acc = pd.DataFrame(
        {
            "cid": np.repeat(c.gid, n_off),
            "oid": _cat(tuple(o.offer_id for o in OFFERS), np.tile(np.arange(n_off), n)),
            "p": p.ravel(),
        }
    )
    insert_frame(con, "truth_offer_acceptance", acc, f"{CUST_ID}, oid, p")
    lo = np.maximum(c.signup.astype(float), float(sim.today_day - OFFER_EVENT_DAYS))
    hi = np.minimum(c.left, float(sim.today_day))
    cfg = sim.cfg
    idx, t = sim.poisson_segments(rng, lo, hi, np.full(n, cfg.offer_events_per_year / 365.0))
    m = idx.size
    margins = np.array([o.margin for o in OFFERS])
    # the incumbent rule: prefer high-margin offers, B2B offers for companies, plus noise
    b2b_pref = np.array([np.sign(o.b2b) for o in OFFERS])
    score = (
        0.35 * np.log(margins)[None, :]
        + 0.5 * b2b_pref[None, :] * np.where(c.is_b2b[idx], 1.0, -0.3)[:, None]
        + cfg.logging_noise * rng.standard_normal((m, n_off))
    )
    score -= score.max(axis=1, keepdims=True)
    prob = np.exp(score / cfg.logging_temperature)
    prob /= prob.sum(axis=1, keepdims=True)
    cum = np.cumsum(prob, axis=1)
    chosen = np.minimum((rng.random(m)[:, None] > cum).sum(1), n_off - 1)
    propensity = prob[np.arange(m), chosen]
    accepted = rng.random(m) < p[idx, chosen]
    channels = np.array([k.OFFER_CHANNELS.index(o.channel) for o in OFFERS])
    offer_cat = tuple(o.offer_id for o in OFFERS)
    oe = np.arange(m, dtype=np.int64) + counters["offer_event"]
    counters["offer_event"] += m
    df = pd.DataFrame(
        {
            "oe": oe,
            "cid": c.gid[idx],
            "oid": _cat(offer_cat, chosen),
            "ts": sim.ts(t),
            "ch": _cat(k.OFFER_CHANNELS, channels[chosen]),
            "prop": propensity,
            "acc": accepted,
        }
    )
    oe_id = _ids("OE", "oe", 10)
    insert_frame(con, "offer_events", df, f"{oe_id}, {CUST_ID}, oid, ts, ch, prop, acc")
    pol = pd.DataFrame(
        {
            "oe": np.repeat(oe, n_off),
            "oid": _cat(offer_cat, np.tile(np.arange(n_off), m)),
            "p": prob.ravel(),
        }
    )
    insert_frame(con, "truth_logging_policy", pol, f"{oe_id}, oid, p")
