"""Population views of the web app: one frame per service snapshot, built once and cached.

Everything here comes from what the service already computed at start-up: the classifications
of every snapshot customer (``Population.classifications``: status, value segment, RFM,
lifecycle and the four department lenses, from ``configs/segments.yaml``), the feature
snapshot, and the churn model's probability. The Pareto figures are the project's own
:func:`customer360.models.segments.pareto_report` on those same rows, so the page shows what
``customer360 segments`` reports. Nothing is classified twice.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

# Each department's lens column and its classes, in the order the page lists them (the
# issue's order; classes the config produces beyond these are listed after them).
DEPARTMENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "marketing": ("lens_marketing", ("potential", "qualified_potential", "existing")),
    "sales": ("lens_sales", ("prospect", "qualified_prospect", "new", "existing", "inactive",
                             "loyal")),
    "finance": ("lens_finance", ("priority", "average", "transactional", "recurring", "none")),
    "service": ("lens_service", ("satisfied", "special_needs", "unsatisfied", "neutral",
                                 "no_feedback")),
}
# Extra, overlapping groups a department also works from (a feature flag, not a lens class).
FLAGS: dict[str, dict[str, str]] = {"service": {"open_complaints": "open complaints"}}
# Columns a list can be filtered on (query parameter = column).
FILTERS = ("value_segment", "status", "lifecycle_stage", "customer_type")
LIST_COLUMNS = ["customer_id", "customer_type", "value_segment", "status", "lifecycle_stage",
                "rfm_segment", "lens_marketing", "lens_sales", "lens_finance", "lens_service",
                "revenue", "margin", "profitability", "referrals", "clv", "churn_probability"]


@dataclass(frozen=True)
class PopulationView:
    """One row per snapshot customer (:data:`LIST_COLUMNS` + ``open_complaints``) and the
    Pareto report of the same rows."""

    as_of: Any
    frame: pd.DataFrame
    report: Any  # customer360.models.segments.ParetoReport
    referral_curve: pd.DataFrame
    built_seconds: float
    cache: dict = field(default_factory=dict)  # per-view summaries the pages derive once


def share_curve(values: np.ndarray) -> pd.DataFrame:
    """Cumulative share of the total held by the largest values: ``customer_share`` (k / n)
    against ``value_share`` (sum of the k largest / total), for the positive values."""
    v = np.sort(np.asarray(values, dtype=float)[np.asarray(values) > 0])[::-1]
    total = v.sum()
    return pd.DataFrame({
        "customer_share": np.arange(1, len(v) + 1) / max(len(v), 1),
        "value_share": np.cumsum(v) / total if total else np.full(len(v), np.nan),
    })


def build(svc: Any) -> PopulationView:
    """The view of the running service ``svc`` (its population, snapshot and churn model)."""
    from customer360.models.segments import pareto_report

    start = time.perf_counter()
    pop = svc.scorer.population
    features = svc.snapshot.reset_index(drop=True)
    ids = features["customer_id"].astype(str).to_numpy()
    classes = pop.classifications.reindex(ids)
    classified = classes.reset_index(names="customer_id")
    config = pop.segments_config
    report = pareto_report(classified, features, config)

    def feature(name: str) -> np.ndarray:
        return pd.to_numeric(features[name], errors="coerce").fillna(0.0).to_numpy(float)

    frame = pd.DataFrame({
        "customer_id": ids,
        "customer_type": features["demo__customer_type__static"].astype(str).to_numpy(),
        **{c: classes[c].to_numpy() for c in
           ("value_segment", "status", "lifecycle_stage", "rfm_segment", "lens_marketing",
            "lens_sales", "lens_finance", "lens_service")},
        "orders": feature("txn__orders__all"),
        "revenue": feature(config.lenses.finance.revenue_feature),
        "margin": feature(config.report.margin_feature),
        "profitability": feature(config.value.feature),
        "referrals": feature(config.report.referral_feature),
        "clv": pd.to_numeric(classes["clv"], errors="coerce").to_numpy(float),
        "churn_probability": churn_probabilities(svc),
        "open_complaints": (feature("svc__open_complaints__all") > 0
                            if "svc__open_complaints__all" in features.columns
                            else np.zeros(len(ids), dtype=bool)),
    })
    seconds = time.perf_counter() - start
    log.info("web app population view: %d customers in %.2f s", len(frame), seconds)
    return PopulationView(as_of=svc.as_of, frame=frame, report=report,
                          referral_curve=share_curve(frame["referrals"].to_numpy()),
                          built_seconds=seconds)


def churn_probabilities(svc: Any) -> np.ndarray:
    """Churn probability of every snapshot row (the service's churn model), in row order.
    Probabilities only: the reason codes (per-row contributions) took 160 s at 20,000 rows."""
    lookup = svc.churn_lookup
    if lookup is not None:
        return np.asarray(lookup.model.predict_proba(lookup.matrix), dtype=float)
    return svc.scorer.churn(svc.snapshot)["churn_probability"].to_numpy(dtype=float)


_lock = threading.Lock()


def view(svc: Any) -> PopulationView:
    """The cached view of ``svc``: built on first use, rebuilt when the snapshot changes."""
    with _lock:
        cached = getattr(svc, "_webapp_population", None)
        if cached is None or cached.as_of != svc.as_of:
            cached = build(svc)
            svc._webapp_population = cached
        return cached


# --- pure selections over the frame -------------------------------------------------------------


def department_classes(frame: pd.DataFrame, department: str) -> pd.DataFrame:
    """Per class of ``department``: customers, share, revenue, margin, mean CLV and mean churn
    probability, in the department's order, flags (e.g. open complaints) last."""
    column, order = DEPARTMENTS[department]
    groups = frame.groupby(column, sort=False)
    table = groups.agg(customers=("customer_id", "size"), revenue=("revenue", "sum"),
                       margin=("margin", "sum"), mean_clv=("clv", "mean"),
                       churn_risk=("churn_probability", "mean"))
    present = [c for c in order if c in table.index] + sorted(set(table.index) - set(order))
    table = table.reindex(present).reset_index(names="cls").assign(flag=False)
    for flag, _label in FLAGS.get(department, {}).items():
        rows = frame[frame[flag]]
        table.loc[len(table)] = {
            "cls": flag, "customers": len(rows), "revenue": rows["revenue"].sum(),
            "margin": rows["margin"].sum(), "mean_clv": rows["clv"].mean(),
            "churn_risk": rows["churn_probability"].mean(), "flag": True,
        }
    table["share"] = table["customers"] / max(len(frame), 1)
    return table


def select(frame: pd.DataFrame, filters: dict[str, str | None],
           limit: int | None = None) -> tuple[pd.DataFrame, int]:
    """The first ``limit`` (all when None) rows matching every given filter (``column ->
    value``; a flag column -> any value means "flag set"), highest churn probability first
    (ties in snapshot order), and how many rows match."""
    mask = np.ones(len(frame), dtype=bool)
    for column, value in filters.items():
        if value in (None, ""):
            continue
        if frame[column].dtype == bool:
            mask &= frame[column].to_numpy()
        else:
            mask &= (frame[column] == value).to_numpy()
    idx = np.flatnonzero(mask)
    order = np.argsort(-frame["churn_probability"].to_numpy()[idx], kind="stable")
    return frame.iloc[idx[order[:limit]]][LIST_COLUMNS], len(idx)


def top_share(frame: pd.DataFrame, column: str, share: float) -> pd.DataFrame:
    """The ``ceil(share * n)`` rows of ``frame`` with the largest ``column``, largest first:
    the customers behind a Pareto headline (``top_share_of_total`` takes the same ``k``)."""
    k = max(1, math.ceil(round(share * len(frame), 9))) if len(frame) else 0
    return frame.nlargest(k, column, keep="first")[LIST_COLUMNS]


def negative_contributors(frame: pd.DataFrame) -> pd.DataFrame:
    """Customers whose profitability is below zero, most negative first."""
    rows = frame[frame["profitability"] < 0][LIST_COLUMNS]
    return rows.sort_values(["profitability", "customer_id"], kind="stable")
