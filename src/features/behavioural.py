"""Behavioural features: web/app sessions, product views, cart adds and the email funnel.

Read from ``events`` rows with ``ts`` strictly before the as-of date T. A *visit* is any
session, product view or cart add. Email rates are per email sent in the same window, capped
at 1 (an open can follow a send made just before the window), and 0 when nothing was sent.
The engagement trend compares visits in the last 90 days with the 90 before:
``(last - previous) / (last + previous)``, 0 when both are empty. *Category events* count the
product views and cart adds per product category (one feature per category of
:data:`customer360.data.contracts.CATEGORIES`, events without a category are not counted).
"""

from __future__ import annotations

from customer360.data.contracts import CATEGORIES
from customer360.features.spec import (
    FamilySQL,
    FeatureSpec,
    feature,
    ranked_mode,
    window_start,
    window_suffix,
    window_words,
)

WINDOWS: tuple[int, ...] = (30, 90, 365)
_COUNTED = (
    ("sessions", "session", "sessions"),
    ("product_views", "product_view", "product views"),
    ("cart_adds", "cart_add", "cart adds"),
    ("email_sends", "email_send", "emails sent"),
)
_VISIT = "event_type IN ('session', 'product_view', 'cart_add')"

CATEGORY_EVENTS: dict[str, str] = {c: f"beh__category_events_{c}__all" for c in CATEGORIES}
"""Product category -> the feature counting the customer's views and cart adds in it before T."""


def _aggregates() -> str:
    cols = []
    for days in WINDOWS:
        cond = window_start(days)
        for alias, event_type, _ in _COUNTED:
            cols.append(
                f"SUM(CASE WHEN event_type = '{event_type}' AND {cond} THEN 1 ELSE 0 END)"
                f" AS {alias}_{days}"
            )
        for alias, event_type in (("opens", "email_open"), ("clicks", "email_click")):
            cols.append(
                f"SUM(CASE WHEN event_type = '{event_type}' AND {cond} THEN 1 ELSE 0 END)"
                f" AS {alias}_{days}"
            )
    cols += [
        f"SUM(CASE WHEN {_VISIT} AND ts >= {{t90}} THEN 1 ELSE 0 END) AS visits_90",
        f"SUM(CASE WHEN {_VISIT} AND ts >= {{t180}} AND ts < {{t90}} THEN 1 ELSE 0 END)"
        " AS visits_prev90",
        f"MAX(CASE WHEN {_VISIT} THEN ts END) AS last_visit",
    ]
    cols += [
        f"SUM(CASE WHEN category = '{c}' THEN 1 ELSE 0 END) AS events_cat_{c}" for c in CATEGORIES
    ]
    return ",\n  ".join(cols)


CTES: tuple[tuple[str, str], ...] = (
    (
        "beh_agg",
        f"SELECT customer_id,\n  {_aggregates()}\n"
        "FROM events WHERE ts < {t} GROUP BY customer_id",
    ),
    (
        "beh_chan",
        ranked_mode(
            "events", "channel", "event_type <> 'email_send' AND ts >= {t365} AND ts < {t}"
        ),
    ),
)


def _declare() -> tuple[FeatureSpec, ...]:
    out: list[FeatureSpec] = []
    for days in WINDOWS:
        w, words = window_suffix(days), window_words(days)
        for alias, _, plain in _COUNTED:
            out.append(
                feature(
                    f"beh__{alias}__{w}", f"{plain} {words}", "int64", 0, f"beh_agg.{alias}_{days}"
                )
            )
        for alias, plain in (("opens", "open"), ("clicks", "click")):
            out.append(
                feature(
                    f"beh__email_{plain}_rate__{w}",
                    f"email {plain} rate {words} (per email sent)",
                    "float64",
                    0.0,
                    f"CASE WHEN beh_agg.email_sends_{days} > 0 THEN"
                    f" LEAST(1.0, beh_agg.{alias}_{days} / beh_agg.email_sends_{days}) END",
                )
            )
    out += [
        feature(
            name,
            f"product views and cart adds in category {c} ever (before the as-of date)",
            "int64",
            0,
            f"beh_agg.events_cat_{c}",
        )
        for c, name in CATEGORY_EVENTS.items()
    ]
    out += [
        feature(
            "beh__days_since_last_visit__all",
            "days since last website or app visit",
            "float64",
            None,
            "date_diff('day', CAST(beh_agg.last_visit AS DATE), {d})",
            null_means="never visited before the as-of date",
        ),
        feature(
            "beh__engagement_trend__90d",
            "trend of visits, last 90 days vs the 90 before (-1 to +1)",
            "float64",
            0.0,
            "(beh_agg.visits_90 - beh_agg.visits_prev90)"
            " / NULLIF(beh_agg.visits_90 + beh_agg.visits_prev90, 0)",
        ),
        feature(
            "beh__preferred_channel__365d",
            "most used digital channel in the last 365 days (web, app, email)",
            "category",
            "none",
            "beh_chan.top_value",
        ),
    ]
    return tuple(out)


FAMILY = FamilySQL(
    family="beh",
    tables=("events",),
    ctes=CTES,
    joins=("beh_agg", "beh_chan"),
    features=_declare(),
)
