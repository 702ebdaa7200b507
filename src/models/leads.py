"""Lead scoring (issue 15): point-in-time lead features, score 1-100, grade A-D, reasons, trend.

Everything here is pure: frames in, frames out. ``leads`` and ``lead_events`` are the raw
tables (:mod:`customer360.data.contracts`); ``engagement`` is the customer's e-mail and web
activity counted by the caller from ``events``. Features as of a date use only rows dated
strictly before it: the qualification answers count from ``qualified_at``, the status from the
dated status changes in ``lead_events``; ``status``, ``status_changed_at`` and
``converted_at`` of the leads table (filled after the fact) are never features.

The conversion model itself is the churn model's estimator (one lifecycle for every learned
model): :mod:`customer360.training.leads` trains it on these features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from customer360.data import contracts as k
from customer360.errors import ConfigError

ACTIVITY_KINDS = tuple(kind for kind in k.LEAD_EVENT_KINDS if kind != "status_change")
OPEN_STATUSES = ("new", "working", "qualified")
RECENT_DAYS = 30
UNKNOWN = "unknown"

LEAD_FEATURE_DESCRIPTIONS: dict[str, str] = {
    "lead__age_days": "days since the lead was created",
    "lead__type": "lead type",
    "lead__source": "lead source",
    "lead__channel": "first contact channel",
    "lead__company_size": "company size",
    "lead__industry": "industry",
    "lead__is_customer": "already a customer",
    "lead__status": "lead status",
    "lead__qualified": "qualified",
    "lead__need_identified": "main need identified",
    "lead__decision_timeframe": "decision timeframe",
    "lead__cost_of_postponing": "cost of postponing",
    "lead__purchase_influence": "contact's influence on the purchase",
    **{f"lead__{kind}_count__all": f"{kind.replace('_', ' ')}s so far" for kind in ACTIVITY_KINDS},
    **{
        f"lead__{kind}_count__{RECENT_DAYS}d": f"{kind.replace('_', ' ')}s in the last 30 days"
        for kind in ACTIVITY_KINDS
    },
    "lead__activity_per_week": "activity per week since creation",
    "lead__days_since_activity": "days since the last activity",
    "lead__customer_engagement__at_creation": "customer's e-mail and web activity before the "
    "lead",
    "lead__customer_engagement__90d": "customer's e-mail and web activity in the last 90 days",
}
LEAD_FEATURES = tuple(LEAD_FEATURE_DESCRIPTIONS)


def open_leads_as_of(
    leads: pd.DataFrame, lead_events: pd.DataFrame, as_of: pd.Timestamp
) -> pd.DataFrame:
    """Leads created before ``as_of`` whose last status change before it leaves them open
    (new, working or qualified), with that status in ``status_as_of``."""
    as_of = pd.Timestamp(as_of)
    made = leads[leads["created_at"] < as_of]
    changes = lead_events[(lead_events["kind"] == "status_change") & (lead_events["ts"] < as_of)]
    last = changes.sort_values("ts", kind="stable").groupby("lead_id")["status"].last()
    status = made["lead_id"].map(last).fillna("new")
    out = made.assign(status_as_of=status.to_numpy())
    return out[out["status_as_of"].isin(OPEN_STATUSES)].reset_index(drop=True)


def lead_features(
    open_leads: pd.DataFrame,
    lead_events: pd.DataFrame,
    engagement: pd.DataFrame | None,
    as_of: pd.Timestamp,
) -> pd.DataFrame:
    """The point-in-time features of ``open_leads`` (from :func:`open_leads_as_of`) as of
    ``as_of``: one row per lead, ``lead_id`` first, then :data:`LEAD_FEATURES`.

    ``engagement`` holds ``lead_id``, ``engagement_at_creation`` and ``engagement_90d`` (the
    customer's counts, already restricted to before the lead's creation and before ``as_of``);
    leads without a customer count 0.

    Examples
    --------
    >>> leads = pd.DataFrame({"lead_id": ["L1"], "customer_id": [None], "lead_type": ["person"],
    ...     "source": ["referral"], "channel": ["web"], "company_size": [None], "industry": [None],
    ...     "created_at": [pd.Timestamp("2026-01-01")], "qualified_at": [pd.NaT],
    ...     "need_identified": [None], "decision_timeframe": [None], "cost_of_postponing": [None],
    ...     "purchase_influence": [None], "status_as_of": ["new"]})
    >>> events = pd.DataFrame({"lead_id": ["L1"], "ts": [pd.Timestamp("2026-01-05")],
    ...     "kind": ["web_visit"], "status": [None]})
    >>> lead_features(leads, events, None, pd.Timestamp("2026-01-11"))["lead__age_days"].item()
    10.0
    """
    as_of = pd.Timestamp(as_of)
    lv = open_leads.reset_index(drop=True)
    age = (as_of - lv["created_at"]).dt.total_seconds().to_numpy() / 86_400
    qualified = lv["qualified_at"].notna().to_numpy() & (lv["qualified_at"] < as_of).to_numpy()

    def answer(col: str) -> np.ndarray:
        values = lv[col].astype(object).where(lv[col].notna(), UNKNOWN).astype(str).to_numpy()
        return np.where(qualified, values, UNKNOWN)

    need = lv["need_identified"].map({True: "yes", False: "no"}).astype(object)
    out = pd.DataFrame({
        "lead_id": lv["lead_id"].to_numpy(),
        "lead__age_days": age,
        "lead__type": lv["lead_type"].astype(str).to_numpy(),
        "lead__source": lv["source"].astype(str).to_numpy(),
        "lead__channel": lv["channel"].astype(str).to_numpy(),
        "lead__company_size": lv["company_size"].astype(object).where(
            lv["company_size"].notna(), "none").astype(str).to_numpy(),
        "lead__industry": lv["industry"].astype(object).where(
            lv["industry"].notna(), "none").astype(str).to_numpy(),
        "lead__is_customer": lv["customer_id"].notna().to_numpy(dtype=float),
        "lead__status": lv["status_as_of"].astype(str).to_numpy(),
        "lead__qualified": qualified.astype(float),
        "lead__need_identified": np.where(qualified, need.where(need.notna(), UNKNOWN), UNKNOWN),
        "lead__decision_timeframe": answer("decision_timeframe"),
        "lead__cost_of_postponing": answer("cost_of_postponing"),
        "lead__purchase_influence": answer("purchase_influence"),
    })
    idx = pd.Index(out["lead_id"]).get_indexer(lead_events["lead_id"])
    kind = pd.Categorical(lead_events["kind"], categories=list(ACTIVITY_KINDS)).codes
    ts = lead_events["ts"].to_numpy(dtype="datetime64[ns]")
    keep = (idx >= 0) & (kind >= 0) & (ts < as_of.to_datetime64())
    idx, kind, ts = idx[keep], kind[keep].astype(np.int64), ts[keep]
    n, n_kinds = len(out), len(ACTIVITY_KINDS)
    counts = np.bincount(idx * n_kinds + kind, minlength=n * n_kinds).reshape(n, n_kinds)
    recent = ts >= (as_of - pd.Timedelta(days=RECENT_DAYS)).to_datetime64()
    recent_counts = np.bincount(idx[recent] * n_kinds + kind[recent],
                                minlength=n * n_kinds).reshape(n, n_kinds)
    for j, name in enumerate(ACTIVITY_KINDS):
        out[f"lead__{name}_count__all"] = counts[:, j].astype(float)
    for j, name in enumerate(ACTIVITY_KINDS):
        out[f"lead__{name}_count__{RECENT_DAYS}d"] = recent_counts[:, j].astype(float)
    out["lead__activity_per_week"] = counts.sum(axis=1) / np.maximum(age, 1.0) * 7
    seconds = (as_of.to_datetime64() - ts) / np.timedelta64(1, "s")
    since = np.full(n, np.inf)
    np.minimum.at(since, idx, seconds)
    out["lead__days_since_activity"] = np.where(np.isinf(since), np.nan, since / 86_400)
    eng = (
        out[["lead_id"]].merge(engagement, on="lead_id", how="left")
        if engagement is not None else pd.DataFrame(index=out.index)
    )
    for col, src in (("lead__customer_engagement__at_creation", "engagement_at_creation"),
                     ("lead__customer_engagement__90d", "engagement_90d")):
        out[col] = eng[src].fillna(0).to_numpy(dtype=float) if src in eng else 0.0
    return out


def conversion_label(
    open_leads: pd.DataFrame, as_of: pd.Timestamp, horizon_days: int
) -> np.ndarray:
    """1 when the lead converted within ``horizon_days`` after ``as_of``, else 0."""
    as_of = pd.Timestamp(as_of)
    converted = open_leads["converted_at"]
    hit = (converted >= as_of) & (converted < as_of + pd.Timedelta(days=horizon_days))
    return hit.fillna(False).to_numpy(dtype=int)


def lead_score(probability: np.ndarray) -> np.ndarray:
    """Score 1-100: the conversion probability in whole percent, at least 1.

    Examples
    --------
    >>> lead_score(np.array([0.0, 0.004, 0.42, 1.0])).tolist()
    [1, 1, 42, 100]
    """
    return np.clip(np.ceil(np.round(np.asarray(probability) * 100, 6)), 1, 100).astype(int)


def lead_grade(score: np.ndarray, cutoffs: Mapping[str, int]) -> np.ndarray:
    """Grade A-D from the score: ``cutoffs`` maps A, B and C to their lowest score; below C
    is D.

    Examples
    --------
    >>> lead_grade(np.array([90, 60, 30, 5]), {"A": 70, "B": 40, "C": 20}).tolist()
    ['A', 'B', 'C', 'D']
    """
    a, b, c = (int(cutoffs[g]) for g in "ABC")
    if not 1 <= c < b < a <= 100:
        raise ConfigError(
            f"Grade cut-offs must satisfy 1 <= C < B < A <= 100; got A={a}, B={b}, C={c}. "
            "Fix grades in configs/leads.yaml."
        )
    s = np.asarray(score)
    return np.select([s >= a, s >= b, s >= c], ["A", "B", "C"], "D").astype(object)


def lead_trend(score: np.ndarray, previous: np.ndarray, band: int) -> np.ndarray:
    """``improving`` / ``steady`` / ``declining`` against the previous score (NaN: ``new``):
    a change of at least ``band`` points either way is a move.

    Examples
    --------
    >>> lead_trend(np.array([50, 50, 50, 50]), np.array([40, 48, 60, np.nan]), 5).tolist()
    ['improving', 'steady', 'declining', 'new']
    """
    s = np.asarray(score, dtype=float)
    p = np.asarray(previous, dtype=float)
    delta = s - p
    out = np.select([delta >= band, delta <= -band], ["improving", "declining"], "steady")
    return np.where(np.isnan(p), "new", out).astype(object)


def split_reasons(
    X: np.ndarray,
    contrib: np.ndarray,
    schema,
    descriptions: Sequence[str],
    medians: np.ndarray,
    *,
    k: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` strongest reasons for (positive) and against (negative) converting, as plain
    sentences, shape (n, k) each; None where a lead has fewer such drivers."""
    from customer360.models.tabular import reason_phrases

    out = []
    for sign in (1, -1):
        part = np.where(sign * contrib > 0, contrib, 0.0)
        phrases = reason_phrases(X, part, schema, descriptions, medians, k=k,
                                 up="raises the chance", down="lowers the chance").astype(object)
        strongest = np.sort(np.abs(part), axis=1)[:, ::-1][:, : phrases.shape[1]]
        phrases[strongest == 0] = None
        out.append(phrases)
    return out[0], out[1]


def score_leads(model, X: pd.DataFrame, cutoffs: Mapping[str, int], *, k: int = 2,
                num_threads: int | None = None, attribution=None) -> pd.DataFrame:
    """``probability``, ``score``, ``grade``, ``reason_positive_1..k`` and
    ``reason_negative_1..k`` per row of ``X`` with a fitted conversion model (the churn
    estimator trained by :func:`customer360.training.leads.train_leads`). The reasons come
    from exact TreeSHAP, or from ``attribution.contributions(matrix)`` when given (e.g. the
    serving room's fast path attributions)."""
    m = model.matrix(X)
    probability = model.predict_proba(m)
    contrib = (model.contributions(m, num_threads=num_threads) if attribution is None
               else attribution.contributions(m, num_threads=num_threads))
    descriptions = list(model.descriptions_)
    pos, neg = split_reasons(m, contrib, model.schema_, descriptions, model.medians_, k=k)
    score = lead_score(probability)
    out = pd.DataFrame({"probability": probability, "score": score,
                        "grade": lead_grade(score, cutoffs)}, index=X.index)
    for j in range(k):
        out[f"reason_positive_{j + 1}"] = pos[:, j] if j < pos.shape[1] else None
    for j in range(k):
        out[f"reason_negative_{j + 1}"] = neg[:, j] if j < neg.shape[1] else None
    return out
