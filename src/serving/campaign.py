"""``/campaign_plan`` (issue 16): cut the latest plan's ranking to a budget.

``customer360 campaign plan`` stores every eligible customer's scores of an action in the
warehouse table ``campaign_scores`` (with the strategies' backtest in ``campaign_backtests``).
The endpoint re-cuts that ranking for a budget, a cost per contact and value segments without
refitting: contacts are the customers whose expected incremental margin exceeds the cost, best
first, as many as the budget pays for.
"""

from __future__ import annotations

from typing import Literal

import duckdb
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from customer360.data.contracts import CAMPAIGN_ACTIONS
from customer360.data.warehouse import table_exists
from customer360.errors import CampaignError, NotFoundError
from customer360.training.uplift import (
    BACKTESTS_TABLE,
    MAX_BUDGET,
    MAX_COST,
    MIN_COST,
    SCORES_TABLE,
    affordable,
    check_plan_inputs,
    value_segments,
)

SEGMENTS = value_segments()  # configs/segments.yaml (read once per process): the schema's enum
CampaignAction = Literal[CAMPAIGN_ACTIONS]  # type: ignore[valid-type]
ValueSegment = Literal[SEGMENTS]  # type: ignore[valid-type]


class CampaignPlanRequest(BaseModel):
    """Budget, cost per contact, action and optional value segments of a plan."""

    # strict: JSON types as the schema says (no true for a number, no "5" or 2.0 for limit)
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)

    action: CampaignAction = Field("retention", description=" | ".join(CAMPAIGN_ACTIONS) + ".")
    budget: float = Field(..., gt=0, le=MAX_BUDGET, description="Total contact budget.")
    cost_per_contact: float = Field(
        ..., ge=MIN_COST, le=MAX_COST,
        description=f"Cost of one contact, at least {MIN_COST:g} (a cent).",
    )
    segments: list[ValueSegment] | None = Field(
        None, max_length=len(SEGMENTS),
        description=f"Only these value segments ({', '.join(SEGMENTS)}); default all.",
    )
    limit: int = Field(100, ge=0, le=10_000, description="Customer ids returned, best first.")

    @model_validator(mode="after")
    def _plannable(self) -> CampaignPlanRequest:
        try:
            check_plan_inputs(action=self.action, budget=self.budget,
                              cost=self.cost_per_contact, segments=self.segments)
        except CampaignError as exc:
            raise ValueError(str(exc)) from None
        return self


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

    # again here: a request built with model_construct skips the model's validator
    check_plan_inputs(action=request.action, budget=request.budget,
                      cost=request.cost_per_contact, segments=request.segments)
    scores = (con.execute(f"SELECT * FROM {SCORES_TABLE} WHERE action = ?",
                          [request.action]).df() if table_exists(con, SCORES_TABLE) else None)
    if scores is None or scores.empty:
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
    rows = rows[np.argsort(-net[rows], kind="stable")]
    rows = rows[: affordable(request.budget, cost, len(rows))]
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
            list(PlannedContact.model_fields)].to_dict("records")],
        backtest=json.loads(stored[0]) if stored else [],
    )
