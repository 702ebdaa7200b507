"""B2B scores in the customer profile (issue 15 item 6): the open opportunities and lead
scores of each customer, grouped once from the batch-scored frames so a request only looks
its customer up.

Pure: frames in, a mapping out. ``opportunities`` is the scored open pipeline
(:func:`customer360.training.opportunities.forecast_as_of`: ``opportunity_id``, ``stage``,
``amount``, ``win_probability``, ``expected_close_date``, ``close_date_low``,
``close_date_high``) with the ``customer_id`` of its account; ``leads`` is
:func:`customer360.training.leads.score_open_leads` with the lead's ``customer_id``.
"""

from __future__ import annotations

import pandas as pd

from customer360.errors import ModelError

OPPORTUNITY_FIELDS = ("opportunity_id", "stage", "amount", "win_probability",
                      "expected_close_date", "close_date_low", "close_date_high")
LEAD_FIELDS = ("lead_id", "score", "grade", "trend")


def _grouped(frame: pd.DataFrame | None, fields: tuple[str, ...], what: str,
             order: str) -> dict[str, list[dict]]:
    if frame is None or frame.empty:
        return {}
    missing = [c for c in ("customer_id", *fields) if c not in frame.columns]
    if missing:
        raise ModelError(f"The scored {what} lack the columns {missing}; score them with "
                         f"the current customer360 version.")
    linked = frame[frame["customer_id"].notna()]
    linked = linked.sort_values(["customer_id", order], ascending=[True, False], kind="stable")
    rows = linked[list(fields)].astype(object).where(linked[list(fields)].notna(), None)
    records = rows.to_dict("records")
    out: dict[str, list[dict]] = {}
    for cid, record in zip(linked["customer_id"].astype(str), records, strict=True):
        out.setdefault(cid, []).append(record)
    return out


def b2b_profile_parts(
    opportunities: pd.DataFrame | None, leads: pd.DataFrame | None
) -> dict[str, dict[str, list[dict]]]:
    """``{customer_id: {"open_opportunities": [...], "leads": [...]}}`` for the customers
    with at least one linked open opportunity or scored lead; opportunities by descending
    win probability, leads by descending score. Unlinked rows (no ``customer_id``) are left
    out: they belong to no profile.

    Examples
    --------
    >>> opps = pd.DataFrame({"customer_id": ["c1"], "opportunity_id": ["o1"],
    ...     "stage": ["proposal"], "amount": [10.0], "win_probability": [0.4],
    ...     "expected_close_date": [pd.Timestamp("2026-03-01")],
    ...     "close_date_low": [pd.NaT], "close_date_high": [pd.NaT]})
    >>> b2b_profile_parts(opps, None)["c1"]["open_opportunities"][0]["close_date_low"] is None
    True
    """
    opp = _grouped(opportunities, OPPORTUNITY_FIELDS, "opportunities", "win_probability")
    lead = _grouped(leads, LEAD_FIELDS, "leads", "score")
    return {cid: {"open_opportunities": opp.get(cid, []), "leads": lead.get(cid, [])}
            for cid in sorted(set(opp) | set(lead))}
