"""``/app/campaigns`` (issue 16): the campaign planner page.

A GET form (budget, cost per contact, action, value segments) that writes nothing: it calls
:func:`customer360.serving.campaign.plan_from_scores`, the function behind ``POST
/campaign_plan``, on the app's read-only connection, and shows that answer: the contact list
(CSV export with every contact), its expected incremental margin, and the strategies (mass to
D, focused on B/C, top uplift, top churn risk, top propensity) as backtested on the held-out
randomised campaign by the last ``customer360 campaign plan`` run, with their intervals.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pandas as pd
from markupsafe import Markup
from pydantic import ValidationError

from customer360.data.contracts import CAMPAIGN_ACTIONS
from customer360.errors import NotFoundError
from customer360.serving.campaign import (
    SEGMENTS,
    CampaignPlanRequest,
    CampaignPlanResult,
    PlannedContact,
    plan_from_scores,
)
from customer360.serving.webapp import charts

PAGE_LIMIT = 200  # contacts the page lists; the CSV has them all
CSV_LIMIT = 10_000  # the most /campaign_plan returns
STRATEGY_NAMES = {
    "mass_D": "mass to D",
    "focused_BC": "focused on B/C",
    "top_uplift": "top uplift",
    "top_churn_risk": "top churn risk",
    "top_propensity": "top propensity",
}
DEFAULTS = {"action": "retention", "budget": "", "cost_per_contact": "", "segments": []}


def parse(params, limit: int = PAGE_LIMIT) -> tuple[dict[str, Any], CampaignPlanRequest | None,
                                                    str | None]:
    """The form's values, the request they make (None before the form is sent) and the error
    (what, how to fix) when they make none."""
    form = {
        "action": params.get("action") or DEFAULTS["action"],
        "budget": (params.get("budget") or "").strip(),
        "cost_per_contact": (params.get("cost_per_contact") or "").strip(),
        "segments": [s for s in params.getlist("segments") if s],
    }
    if not form["budget"] and not form["cost_per_contact"]:
        return form, None, None
    try:
        # a form sends text: read it in lax mode (the JSON endpoint's model is strict)
        # a blank number is left out, so its error says it is required
        given = {k: form[k] for k in ("budget", "cost_per_contact") if form[k]}
        request = CampaignPlanRequest.model_validate({
            "action": form["action"], **given, "segments": form["segments"] or None,
            "limit": limit,
        }, strict=False)
    except ValidationError as exc:
        from customer360.serving.openapi import field_errors  # openapi imports this package

        return form, None, (f"The plan was not made: {field_errors(exc.errors(), 'form')}. "
                            "Correct it and plan again.")
    return form, request, None


def plan(con, request: CampaignPlanRequest) -> tuple[CampaignPlanResult | None, str | None]:
    """``/campaign_plan``'s answer for ``request``, or the reason there is none."""
    try:
        return plan_from_scores(con, request), None
    except (ValueError, NotFoundError) as exc:
        return None, str(exc)


def strategies(result: CampaignPlanResult) -> list[dict[str, Any]]:
    """The backtest rows with a readable name."""
    return [{**row, "name": STRATEGY_NAMES.get(row["strategy"], row["strategy"])}
            for row in result.backtest]


def strategy_chart(rows: list[dict[str, Any]]) -> Markup | None:
    if not rows:
        return None
    return charts.column_chart(
        [r["name"] for r in rows], [r["backtest_incremental_margin"] for r in rows],
        label="incremental margin net of cost per strategy (backtest on the held-out campaign)",
        width=640, height=220,
    )


def query(form: dict[str, Any]) -> str:
    pairs = [("action", form["action"]), ("budget", form["budget"]),
             ("cost_per_contact", form["cost_per_contact"])]
    pairs += [("segments", s) for s in form["segments"]]
    return urlencode(pairs)


def context(form: dict[str, Any], result: CampaignPlanResult | None,
            error: str | None) -> dict[str, Any]:
    rows = strategies(result) if result is not None else []
    return {
        "form": form, "actions": list(CAMPAIGN_ACTIONS), "segments": list(SEGMENTS),
        "result": result, "error": error, "strategies": rows, "chart": strategy_chart(rows),
        "contacts": [c.model_dump() for c in result.customers] if result is not None else [],
        "csv_query": query(form),
    }


def contacts_frame(result: CampaignPlanResult) -> pd.DataFrame:
    """The plan's contacts, one row each, in :class:`PlannedContact`'s columns."""
    return pd.DataFrame([c.model_dump() for c in result.customers],
                        columns=list(PlannedContact.model_fields))
