"""What the sales department page (``/app/departments/sales``) adds to the sales lens (issue
15): the open leads by grade (counts, the list of one grade, its CSV export) and the pipeline
forecast chart, from the leads and opportunities the service scored at start-up
(:class:`customer360.serving.sales.SalesScores`, the same numbers as ``/lead_score`` and
batch scoring). Pure: the scored frames in, rows and a chart out.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from customer360.serving.webapp import charts

GRADES = ("A", "B", "C", "D")
LEAD_COLUMNS = ["lead_id", "customer_id", "grade", "score", "probability", "trend",
                "reason_positive_1", "reason_negative_1"]


def lead_rows(leads: pd.DataFrame | None, grade: str | None) -> pd.DataFrame:
    """Open leads of ``grade`` (all grades when None), best score first."""
    if leads is None:
        return pd.DataFrame(columns=LEAD_COLUMNS)
    rows = leads if grade is None else leads[leads["grade"] == grade]
    cols = [c for c in LEAD_COLUMNS if c in rows.columns]
    return rows.sort_values(["score", "lead_id"], ascending=[False, True])[cols]


def grade_counts(leads: pd.DataFrame | None) -> list[dict[str, Any]]:
    """Leads, share and mean conversion probability per grade A-D (every grade listed)."""
    if leads is None or leads.empty:
        return []
    groups = leads.groupby("grade")["probability"].agg(["size", "mean"]).reindex(list(GRADES))
    total = len(leads)
    return [{"grade": g, "leads": int(0 if pd.isna(r["size"]) else r["size"]),
             "share": (0 if pd.isna(r["size"]) else r["size"]) / total,
             "probability": None if pd.isna(r["mean"]) else float(r["mean"])}
            for g, r in groups.iterrows()]


def context(scores: Any, grade: str | None, limit: int) -> dict[str, Any]:
    """The template context of the sales block: ``grades``, ``leads`` (at most ``limit``),
    ``matching``, ``grade``, ``forecast`` rows, ``forecast_svg``, ``interval``, ``as_of``
    and whether each model is served."""
    leads = scores.leads
    rows = lead_rows(leads, grade)
    interval = scores.config.interval if scores.config is not None else None
    forecast = scores.forecast
    return {
        "as_of": scores.as_of, "grade": grade, "grades": grade_counts(leads),
        "leads": rows.head(limit).to_dict("records"), "matching": len(rows),
        "forecast": [] if forecast is None else forecast.to_dict("records"),
        "forecast_svg": charts.forecast_chart(forecast, interval or 0.8),
        "interval": interval, "has_leads": leads is not None,
        "has_opportunities": scores.opportunities is not None,
        "open_opportunities": 0 if scores.opportunities is None else len(scores.opportunities),
    }
