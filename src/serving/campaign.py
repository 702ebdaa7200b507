"""``/campaign_plan`` (issue 16): cut the latest plan's ranking to a budget.

``customer360 campaign plan`` stores every eligible customer's scores of an action in the
warehouse table ``campaign_scores`` (with the strategies' backtest in ``campaign_backtests``).
The endpoint re-cuts that ranking for a budget, a cost per contact and value segments without
refitting: contacts are the customers whose expected incremental margin exceeds the cost, best
first, as many as the budget pays for.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from customer360.data.contracts import CAMPAIGN_ACTIONS
from customer360.data.warehouse import table_exists
from customer360.errors import NotFoundError
from customer360.training.uplift import BACKTESTS_TABLE, SCORES_TABLE

SEGMENTS = ("A", "B", "C", "D")


class CampaignPlanRequest(BaseModel):
    """Budget, cost per contact, action and optional value segments of a plan."""

    model_config = ConfigDict(extra="forbid")

    action: str = Field("retention", description="retention | cross_sell | up_sell.",
                        json_schema_extra={"enum": list(CAMPAIGN_ACTIONS)})
    budget: float = Field(..., gt=0, le=1e12, description="Total contact budget.")
    cost_per_contact: float = Field(..., gt=0, le=1e9, description="Cost of one contact.")
    segments: list[str] | None = Field(
        None, description="Only these value segments (A-D); default all.",
        json_schema_extra={"items": {"enum": list(SEGMENTS)}},
    )
    limit: int = Field(100, ge=0, le=10_000, description="Customer ids returned, best first.")


class PlannedContact(BaseModel):
    customer_id: str
    value_segment: str
    expected_net_margin: float
    churn_probability: float
    uplift_purchase: float


class CampaignPlanResult(BaseModel):
    action: str
    as_of: str
    contacts: int
    cost: float
    expected_incremental_margin: float
    """Sum over the contacts of the estimated incremental margin, net of their cost."""
    customers: list[PlannedContact]
    backtest: list[dict]
    """The strategies as backtested by the last ``campaign plan`` run (its own budget)."""


def plan_from_scores(
    con: duckdb.DuckDBPyConnection, request: CampaignPlanRequest
) -> CampaignPlanResult:
    """The plan for ``request`` from the stored ranking.

    Raises
    ------
    NotFoundError
        No stored plan for the action (run ``customer360 campaign plan --action A`` first).
    """
    import json

    if request.action not in CAMPAIGN_ACTIONS:
        raise ValueError(f"action must be one of {CAMPAIGN_ACTIONS}")
    bad = sorted(set(request.segments or []) - set(SEGMENTS))
    if bad:
        raise ValueError(f"unknown value segments {bad}; use some of {list(SEGMENTS)}")
    if not table_exists(con, SCORES_TABLE):
        raise NotFoundError(
            f"no campaign plan is stored for {request.action!r}; run `customer360 campaign "
            f"plan --action {request.action} --budget B --cost-per-contact C` first."
        )
    scores = con.execute(f"SELECT * FROM {SCORES_TABLE} WHERE action = ?",
                         [request.action]).df()
    if scores.empty:
        raise NotFoundError(
            f"no campaign plan is stored for {request.action!r}; run `customer360 campaign "
            f"plan --action {request.action} --budget B --cost-per-contact C` first."
        )
    cost = request.cost_per_contact
    net = scores["gross_margin"].to_numpy() - cost
    keep = net > 0
    if request.segments:
        keep &= scores["value_segment"].isin(request.segments).to_numpy()
    rows = np.flatnonzero(keep)
    rows = rows[np.argsort(-net[rows], kind="stable")][: int(request.budget // cost)]
    chosen = scores.iloc[rows].assign(expected_net_margin=net[rows])
    stored = con.execute(f"SELECT payload FROM {BACKTESTS_TABLE} WHERE action = ?",
                         [request.action]).fetchone()
    return CampaignPlanResult(
        action=request.action,
        as_of=str(pd.Timestamp(scores["as_of"].iloc[0]).date()),
        contacts=len(rows),
        cost=cost * len(rows),
        expected_incremental_margin=float(net[rows].sum()),
        customers=[PlannedContact(**r) for r in chosen.head(request.limit)[
            ["customer_id", "value_segment", "expected_net_margin", "churn_probability",
             "uplift_purchase"]].to_dict("records")],
        backtest=json.loads(stored[0]) if stored else [],
    )
