"""Randomised campaigns with a known treatment effect per customer (issue 16).

:func:`generate_campaigns` runs on a generated warehouse and writes

* ``campaigns`` and ``campaign_contacts`` (contracts in :data:`CAMPAIGN_CONTRACTS`): in each
  wave every eligible customer (one who had bought before the wave started) is put at random in
  one of the three action campaigns (retention offer, cross-sell, up-sell) and, inside it, in
  treatment with probability ``treatment_share`` or in the randomised holdout (control);
  whether they bought within the horizon and their margin in it are logged;
* ``truth_campaign_effects``: for every eligible customer x wave x action the true purchase
  probability and expected margin over the horizon without and with the contact.

The true effect is a shift of the purchase log-odds that depends on the customer's state when
the wave starts: churn risk (at risk or not, leave and hazard rates), value (expected yearly
margin), segment (B2B or B2C, affluence, engagement, satisfaction) and channel fatigue (offers
received in the 90 days before plus a contact in the previous wave). Some customers react
negatively: fatigued ones, and for the retention offer high-value customers at low risk.
Customers already gone when the wave starts do not react. Campaign purchases are recorded in
the campaign log only, not added to ``transactions``.

Examples
--------
>>> import tempfile, pathlib
>>> from customer360.data.synthetic import generate_warehouse
>>> from customer360.data.warehouse import connect
>>> db = pathlib.Path(tempfile.mkdtemp()) / "w.duckdb"
>>> _ = generate_warehouse(db, n_customers=300, seed=1)
>>> con = connect(db)
>>> counts = generate_campaigns(con, seed=1, config=CampaignConfig(waves=1))
>>> counts["campaigns"]
3
"""

from __future__ import annotations

import datetime as dt
import logging

import duckdb
import numpy as np
import pandas as pd
from pydantic import Field

from customer360.config import StrictModel
from customer360.data.contracts import (
    CAMPAIGN_ACTIONS,
    CAMPAIGN_CONTACTS,
    CAMPAIGN_CONTRACTS,
    CAMPAIGNS,
)
from customer360.data.warehouse import get_meta, insert_frame, table_exists, transaction
from customer360.errors import CampaignError

log = logging.getLogger(__name__)

TRUTH_CAMPAIGN_DDL = """
CREATE TABLE IF NOT EXISTS truth_campaign_effects (
  customer_id VARCHAR NOT NULL,
  started_at DATE NOT NULL,
  action VARCHAR NOT NULL,
  churn_risk DOUBLE NOT NULL,
  p_control DOUBLE NOT NULL,
  p_treated DOUBLE NOT NULL,
  margin_control DOUBLE NOT NULL,
  margin_treated DOUBLE NOT NULL
)"""
FATIGUE_DAYS = 90


class CampaignConfig(StrictModel):
    """Parameters of the simulated campaigns (``configs/campaigns.yaml`` ``simulation:``)."""

    waves: int = Field(4, ge=1, le=12)
    """Campaign waves; the last one's horizon ends the day before today."""
    wave_spacing_days: int = Field(91, ge=1)
    horizon_days: int = Field(90, ge=7, le=365)
    treatment_share: float = Field(0.5, gt=0, lt=1)
    """Share of eligible customers contacted; the rest is the randomised holdout."""
    channels: dict[str, str] = {"retention": "email", "cross_sell": "app", "up_sell": "phone"}
    margin_noise_shape: float = Field(2.0, gt=0)
    """Gamma shape of the realised margin around its expectation (mean 1)."""


def create_campaign_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create ``campaigns`` and ``campaign_contacts`` from their contracts (no-op if present)."""
    for contract in CAMPAIGN_CONTRACTS.values():
        con.execute(contract.ddl())


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def true_effects(state: pd.DataFrame, horizon_days: int) -> dict[str, pd.DataFrame]:
    """True horizon purchase probability and expected margin, without and with each action.

    ``state`` holds one row per customer at a wave start: ``alive``, ``at_risk``,
    ``purchase_rate_per_day``, ``at_risk_factor``, ``leave_prob_weekly``,
    ``hazard_static_weekly``, ``expected_margin_per_order``, ``is_b2b``, ``affluence``,
    ``engagement``, ``satisfaction`` and ``fatigue``. Returns ``{action: frame}`` with
    ``churn_risk``, ``p_control``, ``p_treated``, ``margin_control``, ``margin_treated``.
    """
    weeks = horizon_days / 7.0
    alive = state["alive"].to_numpy(bool)
    at_risk = state["at_risk"].to_numpy(bool) & alive
    churn = np.where(
        at_risk,
        1 - (1 - state["leave_prob_weekly"].to_numpy()) ** weeks,
        0.5 * (1 - (1 - np.minimum(state["hazard_static_weekly"].to_numpy(), 1.0)) ** weeks),
    )
    churn = np.where(alive, churn, 1.0)
    rate = state["purchase_rate_per_day"].to_numpy() * np.where(
        at_risk, state["at_risk_factor"].to_numpy(), 1.0
    )
    orders = np.where(alive, rate * horizon_days * (1 - churn / 2), 0.0)
    p0 = 1 - np.exp(-orders)
    per_order = state["expected_margin_per_order"].to_numpy()
    # expected orders of a buyer: E[N | N >= 1] of a Poisson count
    per_buyer = per_order * np.where(orders > 1e-9, orders / np.maximum(p0, 1e-12), 1.0)
    yearly = np.log1p(np.maximum(state["purchase_rate_per_day"].to_numpy() * 365 * per_order, 0))
    value_z = (yearly - yearly.mean()) / (yearly.std() + 1e-9)
    fatigue = state["fatigue"].to_numpy(float)
    b2b = state["is_b2b"].to_numpy(float)
    aff = state["affluence"].to_numpy()
    eng = state["engagement"].to_numpy()
    sat = state["satisfaction"].to_numpy()
    shift = {
        # saves customers at risk; annoys valuable customers who were not leaving anyway
        "retention": 3.0 * churn + 0.3 * sat - 0.25 * fatigue
        - 0.5 * ((value_z > 1.0) & (churn < 0.05)),
        "cross_sell": 0.5 + 0.4 * eng - 0.7 * b2b - 0.8 * churn - 0.25 * fatigue,
        "up_sell": 0.1 + 0.5 * aff + 0.4 * value_z + 0.5 * b2b - 1.2 * churn - 0.25 * fatigue,
    }
    basket = {"retention": 1.0, "cross_sell": 1.05, "up_sell": 1.15}
    out = {}
    for action in CAMPAIGN_ACTIONS:
        p1 = np.where(alive, _sigmoid(_logit(p0) + shift[action]), 0.0)
        out[action] = pd.DataFrame(
            {
                "churn_risk": churn,
                "p_control": p0,
                "p_treated": p1,
                "margin_control": p0 * per_buyer,
                "margin_treated": p1 * per_buyer * basket[action],
            },
            index=state.index,
        )
    return out


def wave_starts(today: dt.date, config: CampaignConfig) -> list[dt.date]:
    """Start days of the waves, oldest first; the last horizon ends the day before ``today``."""
    last = today - dt.timedelta(days=config.horizon_days)
    return [
        last - dt.timedelta(days=config.wave_spacing_days * (config.waves - 1 - w))
        for w in range(config.waves)
    ]


def _customer_state(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return con.execute(
        """
        SELECT t.customer_id, c.customer_type = 'B2B' AS is_b2b, t.is_prospect,
               t.first_purchase_at, t.at_risk_from, t.left_at,
               t.purchase_rate_per_day, t.at_risk_factor, t.leave_prob_weekly,
               t.hazard_static_weekly, t.expected_margin_per_order,
               t.affluence_latent AS affluence, t.engagement_latent AS engagement,
               t.satisfaction_latent AS satisfaction
        FROM truth_customers t JOIN customers c USING (customer_id)
        ORDER BY t.customer_id
        """
    ).df()


def _recent_offers(con: duckdb.DuckDBPyConnection, start: dt.date) -> pd.Series:
    frame = con.execute(
        f"""
        SELECT customer_id, count(*)::INTEGER AS n FROM offer_events
        WHERE ts >= DATE '{start}' - INTERVAL {FATIGUE_DAYS} DAY AND ts < DATE '{start}'
        GROUP BY customer_id
        """
    ).df()
    return frame.set_index("customer_id")["n"]


def generate_campaigns(
    con: duckdb.DuckDBPyConnection, *, seed: int, config: CampaignConfig | None = None
) -> dict[str, int]:
    """Simulate randomised campaigns on a generated warehouse (see the module docstring).

    Replaces any campaign tables already there. Returns the row count of each table written.
    """
    config = config or CampaignConfig()
    unknown = set(config.channels) ^ set(CAMPAIGN_ACTIONS)
    if unknown:
        raise CampaignError(
            f"campaign channels must name exactly the actions {CAMPAIGN_ACTIONS}; "
            f"got {sorted(config.channels)}."
        )
    if not table_exists(con, "truth_customers"):
        raise CampaignError(
            "campaigns can only be simulated on a synthetic warehouse (truth_customers is "
            "missing); run `customer360 generate` first."
        )
    today = dt.date.fromisoformat(get_meta(con, "today"))
    rng = np.random.default_rng([seed, 16])
    base = _customer_state(con)
    ids = base["customer_id"].to_numpy()
    contacted_before = pd.Series(0, index=base["customer_id"])
    headers, contacts, truths = [], [], []
    for start in wave_starts(today, config):
        start_ts = pd.Timestamp(start)
        eligible = (~base["is_prospect"]) & (base["first_purchase_at"] < start_ts)
        st = base.loc[eligible].copy()
        st["alive"] = st["left_at"].isna() | (st["left_at"] > start_ts)
        st["at_risk"] = st["at_risk_from"].notna() & (st["at_risk_from"] <= start_ts)
        recent = _recent_offers(con, start).reindex(st["customer_id"]).fillna(0).to_numpy()
        st["fatigue"] = recent + contacted_before.reindex(st["customer_id"]).to_numpy()
        effects = true_effects(st, config.horizon_days)
        n = len(st)
        action_idx = rng.integers(0, len(CAMPAIGN_ACTIONS), n)
        treated = rng.random(n) < config.treatment_share
        noise = rng.gamma(config.margin_noise_shape, 1 / config.margin_noise_shape, n)
        u = rng.random(n)
        p_arm = np.empty(n)
        m_arm = np.empty(n)
        for a, action in enumerate(CAMPAIGN_ACTIONS):
            eff = effects[action]
            rows = action_idx == a
            p_t, p_c = eff["p_treated"].to_numpy(), eff["p_control"].to_numpy()
            p = np.where(treated, p_t, p_c)
            m_t, m_c = eff["margin_treated"].to_numpy(), eff["margin_control"].to_numpy()
            m = np.where(treated, m_t, m_c)
            p_arm[rows], m_arm[rows] = p[rows], m[rows]
            truths.append(
                eff.assign(customer_id=st["customer_id"].to_numpy(), started_at=start,
                           action=action)
            )
            headers.append(
                {
                    "campaign_id": f"CMP-{start:%Y%m%d}-{action}",
                    "action": action,
                    "channel": config.channels[action],
                    "started_at": start,
                    "horizon_days": config.horizon_days,
                    "control_group": "control",
                    "treatment_share": config.treatment_share,
                }
            )
        purchased = u < p_arm
        # margin of a buyer: its expectation given a purchase, times mean-1 gamma noise
        margin = np.where(purchased, m_arm / np.maximum(p_arm, 1e-12) * noise, 0.0)
        campaign = np.array([f"CMP-{start:%Y%m%d}-{a}" for a in CAMPAIGN_ACTIONS])[action_idx]
        contacts.append(
            pd.DataFrame(
                {
                    "contact_id": pd.Series(campaign) + "-" + st["customer_id"].to_numpy(),
                    "campaign_id": campaign,
                    "customer_id": st["customer_id"].to_numpy(),
                    "arm": np.where(treated, "treatment", "control"),
                    "treatment_probability": config.treatment_share,
                    "purchased": purchased,
                    "margin": np.round(margin, 2),
                }
            )
        )
        contacted_before = pd.Series(0, index=ids)
        contacted_before.loc[st["customer_id"].to_numpy()[treated]] = 1
        log.info("campaign wave %s: %d eligible customers", start, n)
    contact_frame = pd.concat(contacts, ignore_index=True)
    truth_frame = pd.concat(truths, ignore_index=True)
    with transaction(con):
        for name in ("campaign_contacts", "campaigns", "truth_campaign_effects"):
            con.execute(f"DROP TABLE IF EXISTS {name}")
        create_campaign_tables(con)
        con.execute(TRUTH_CAMPAIGN_DDL)
        insert_frame(con, CAMPAIGNS.name, pd.DataFrame(headers), ", ".join(CAMPAIGNS.column_names))
        insert_frame(
            con, CAMPAIGN_CONTACTS.name, contact_frame, ", ".join(CAMPAIGN_CONTACTS.column_names)
        )
        insert_frame(
            con,
            "truth_campaign_effects",
            truth_frame,
            "customer_id, started_at, action, churn_risk, p_control, p_treated, "
            "margin_control, margin_treated",
        )
    return {
        "campaigns": len(headers),
        "campaign_contacts": len(contact_frame),
        "truth_campaign_effects": len(truth_frame),
    }


def load_campaign_log(
    con: duckdb.DuckDBPyConnection, *, action: str | None = None
) -> pd.DataFrame:
    """Contacts joined with their campaign header, refused unless every campaign has a control.

    Raises
    ------
    CampaignError
        The tables are missing, the action is unknown, or a campaign names no control group or
        has no row in it (uplift needs a randomised holdout).
    """
    for name in CAMPAIGN_CONTRACTS:
        if not table_exists(con, name):
            raise CampaignError(
                f"the warehouse has no {name} table. Log campaigns with a randomised holdout "
                "(`customer360 campaign simulate` on a synthetic warehouse, or ingest "
                "campaigns and campaign_contacts files) before fitting uplift."
            )
    if action is not None and action not in CAMPAIGN_ACTIONS:
        raise CampaignError(f"unknown action {action!r}; choose one of {CAMPAIGN_ACTIONS}.")
    where = "" if action is None else f"WHERE c.action = '{action}'"
    frame = con.execute(
        f"""
        SELECT k.contact_id, k.campaign_id, k.customer_id, c.action, c.started_at,
               c.horizon_days, c.control_group, k.arm, k.treatment_probability,
               k.purchased, k.margin
        FROM campaign_contacts k JOIN campaigns c USING (campaign_id) {where}
        ORDER BY c.started_at, k.customer_id
        """
    ).df()
    if frame.empty:
        raise CampaignError(
            f"no campaign contacts{'' if action is None else f' for action {action!r}'} in "
            "campaign_contacts; log a campaign with a control group first."
        )
    require_control(frame)
    return frame


def require_control(log_frame: pd.DataFrame) -> None:
    """Refuse a campaign log in which some campaign has no randomised control rows.

    ``log_frame`` needs ``campaign_id``, ``control_group`` and ``arm``.

    Examples
    --------
    >>> bad = pd.DataFrame({"campaign_id": ["C1", "C1"], "control_group": [None, None],
    ...                     "arm": ["treatment", "treatment"]})
    >>> require_control(bad)
    Traceback (most recent call last):
    ...
    customer360.errors.CampaignError: campaign C1 names no control group ...
    """
    for campaign, rows in log_frame.groupby("campaign_id", sort=True):
        names = rows["control_group"].dropna().unique()
        if len(names) == 0:
            raise CampaignError(
                f"campaign {campaign} names no control group (campaigns.control_group is "
                f"NULL; {len(rows)} contacts, all treated). Uplift needs eligible customers "
                "held out at random: log them in campaign_contacts with arm='control' and set "
                "control_group='control' for the campaign."
            )
        n_control = int((rows["arm"] == names[0]).sum())
        if n_control == 0 or n_control == len(rows):
            raise CampaignError(
                f"campaign {campaign} has {n_control} rows in its control group "
                f"{names[0]!r} and {len(rows) - n_control} treated: uplift needs both arms. "
                "Log the randomised holdout (eligible, not contacted) in campaign_contacts."
            )
