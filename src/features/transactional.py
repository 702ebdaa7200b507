"""Transactional features: RFM, windows of orders/spend/margin, baskets, inter-purchase times,
trends, returns, cost to serve, profitability, breadth, discounts and referrals.

Definitions (all from ``transactions`` rows with ``ts`` strictly before the as-of date T):

* an *order* is a row with ``is_return = false``; spend and margin sums cover orders only;
* *returns value* is the money refunded (``-amount`` of return rows, a positive number);
* *cost to serve* sums ``cost_to_serve`` of every row (orders and returns);
* *profitability* = margin on orders - returns value - cost to serve;
* day counts are whole calendar days between dates;
* inter-purchase times are gaps in days between consecutive distinct purchase days;
* *trend* compares the last 90 days with the 90 before: ``(last - previous) / (last +
  previous)``, from -1 (all activity in the previous window) to +1 (all in the last), 0 when
  both are empty;
* *category orders* count the orders per product category (one feature per category of
  :data:`customer360.data.contracts.CATEGORIES`): with the categorised web/app events of the
  behavioural family they show a customer's category taste, not only its argmax
  (``txn__top_category__all``).
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

WINDOWS: tuple[int | None, ...] = (30, 90, 365, None)
"""Windows of the count and sum features (``None`` = all history before T)."""

RATIO_WINDOWS: tuple[int | None, ...] = (365, None)

CATEGORY_ORDERS: dict[str, str] = {c: f"txn__category_orders_{c}__all" for c in CATEGORIES}
"""Product category -> the feature counting the customer's orders in it before T."""


def _key(days: int | None) -> str:
    return "all" if days is None else str(days)


def _aggregates() -> str:
    cols = []
    for days in WINDOWS:
        cond, k = window_start(days), _key(days)
        cols += [
            f"SUM(CASE WHEN NOT is_return AND {cond} THEN 1 ELSE 0 END) AS orders_{k}",
            f"SUM(CASE WHEN NOT is_return AND {cond} THEN amount ELSE 0 END) AS spend_{k}",
            f"SUM(CASE WHEN NOT is_return AND {cond} THEN margin ELSE 0 END) AS margin_{k}",
            f"SUM(CASE WHEN NOT is_return AND {cond} THEN discount ELSE 0 END) AS discount_{k}",
            f"SUM(CASE WHEN is_return AND {cond} THEN 1 ELSE 0 END) AS returns_{k}",
            f"SUM(CASE WHEN is_return AND {cond} THEN -amount ELSE 0 END) AS returns_value_{k}",
            f"SUM(CASE WHEN {cond} THEN cost_to_serve ELSE 0 END) AS cts_{k}",
        ]
    previous = "ts >= {t180} AND ts < {t90}"
    cols += [
        f"SUM(CASE WHEN NOT is_return AND {previous} THEN 1 ELSE 0 END) AS orders_prev90",
        f"SUM(CASE WHEN NOT is_return AND {previous} THEN amount ELSE 0 END) AS spend_prev90",
        "MIN(CASE WHEN NOT is_return THEN day END) AS first_day",
        "MAX(CASE WHEN NOT is_return THEN day END) AS last_day",
    ]
    cols += [
        f"SUM(CASE WHEN NOT is_return AND category = '{c}' THEN 1 ELSE 0 END) AS orders_cat_{c}"
        for c in CATEGORIES
    ]
    return ",\n  ".join(cols)


def _breadth() -> str:
    cols = [
        f"SUM(CASE WHEN {window_start(days).replace('ts', 'last_ts')} THEN 1 ELSE 0 END)"
        f" AS breadth_{_key(days)}"
        for days in WINDOWS
    ]
    return ", ".join(cols)


# The rows before T, inlined into each CTE below rather than shared as a CTE of its own: a
# CTE read by several others gets materialised by DuckDB, which costs more than rescanning.
ROWS = """(SELECT customer_id, ts, CAST(ts AS DATE) AS day, amount, margin, discount,
                  cost_to_serve, category, channel, is_return, referrer_id
           FROM transactions WHERE ts < {t}) AS txn_rows"""

CTES: tuple[tuple[str, str], ...] = (
    ("txn_agg", f"SELECT customer_id,\n  {_aggregates()}\nFROM {ROWS} GROUP BY customer_id"),
    # Gaps between consecutive orders; same-day orders give 0 and are skipped, so the non-zero
    # gaps are exactly the gaps between consecutive distinct purchase days.
    (
        "txn_ipt",
        f"""SELECT customer_id,
                  1 + SUM(CASE WHEN gap > 0 THEN 1 ELSE 0 END) AS purchase_days,
                  AVG(CASE WHEN gap > 0 THEN gap END) AS ipt_mean,
                  STDDEV_SAMP(CASE WHEN gap > 0 THEN gap END) AS ipt_std,
                  SUM(CASE WHEN day > first_day THEN amount ELSE 0 END) AS repeat_spend
           FROM (SELECT customer_id, day, amount,
                        date_diff('day', LAG(day) OVER (PARTITION BY customer_id ORDER BY day),
                                  day) AS gap,
                        MIN(day) OVER (PARTITION BY customer_id) AS first_day
                 FROM {ROWS} WHERE NOT is_return) AS gaps
           GROUP BY customer_id""",
    ),
    (
        "txn_ref",
        f"""SELECT referrer_id AS customer_id, COUNT(*) AS referrals,
                  COUNT(DISTINCT customer_id) AS referred_buyers
           FROM {ROWS} WHERE referrer_id IS NOT NULL AND NOT is_return
           GROUP BY referrer_id""",
    ),
    # One row per customer and category bought: gives the breadth per window (categories whose
    # last order falls in the window) and the most bought category.
    (
        "txn_cat",
        f"""SELECT customer_id, category, COUNT(*) AS n, MAX(ts) AS last_ts
           FROM {ROWS} WHERE NOT is_return GROUP BY customer_id, category""",
    ),
    ("txn_breadth", f"SELECT customer_id, {_breadth()} FROM txn_cat GROUP BY customer_id"),
    ("txn_topcat", ranked_mode("txn_cat", "category", "TRUE", count="n")),
    ("txn_topchan", ranked_mode(ROWS, "channel", "NOT is_return AND ts >= {t365}")),
)


def _normalised_trend(last: str, previous: str) -> str:
    return f"({last} - {previous}) / NULLIF({last} + {previous}, 0)"


def _declare() -> tuple[FeatureSpec, ...]:
    out: list[FeatureSpec] = [
        feature(
            "txn__recency_days__all",
            "days since last purchase",
            "float64",
            None,
            "date_diff('day', txn_agg.last_day, {d})",
            null_means="never bought before the as-of date",
        ),
        feature(
            "txn__first_purchase_days__all",
            "days since first purchase",
            "float64",
            None,
            "date_diff('day', txn_agg.first_day, {d})",
            null_means="never bought before the as-of date",
        ),
        feature(
            "txn__purchase_days__all",
            "number of distinct days with a purchase",
            "int64",
            0,
            "txn_ipt.purchase_days",
        ),
        feature(
            "txn__ipt_mean_days__all",
            "average days between purchases",
            "float64",
            None,
            "txn_ipt.ipt_mean",
            null_means="fewer than 2 distinct purchase days",
        ),
        feature(
            "txn__ipt_std_days__all",
            "spread (standard deviation) of days between purchases",
            "float64",
            None,
            "txn_ipt.ipt_std",
            null_means="fewer than 3 distinct purchase days",
        ),
        feature(
            "txn__orders_trend__90d",
            "trend of orders, last 90 days vs the 90 before (-1 to +1)",
            "float64",
            0.0,
            _normalised_trend("txn_agg.orders_90", "txn_agg.orders_prev90"),
        ),
        feature(
            "txn__spend_trend__90d",
            "trend of spend, last 90 days vs the 90 before (-1 to +1)",
            "float64",
            0.0,
            _normalised_trend("txn_agg.spend_90", "txn_agg.spend_prev90"),
        ),
        feature(
            "txn__referrals_made__all",
            "purchases made by customers this customer referred",
            "int64",
            0,
            "txn_ref.referrals",
        ),
        feature(
            "txn__referred_buyers__all",
            "referred customers who bought",
            "int64",
            0,
            "txn_ref.referred_buyers",
        ),
        feature(
            "txn__top_category__all",
            "most often bought product category",
            "category",
            "none",
            "txn_topcat.top_value",
        ),
        feature(
            "txn__preferred_channel__365d",
            "most used sales channel in the last 365 days",
            "category",
            "none",
            "txn_topchan.top_value",
        ),
    ]
    for days in WINDOWS:
        k, w, words = _key(days), window_suffix(days), window_words(days)
        a = "txn_agg"
        out += [
            feature(f"txn__orders__{w}", f"orders {words}", "int64", 0, f"{a}.orders_{k}"),
            feature(f"txn__spend_sum__{w}", f"spend {words}", "float64", 0.0, f"{a}.spend_{k}"),
            feature(
                f"txn__margin_sum__{w}",
                f"margin on orders {words}",
                "float64",
                0.0,
                f"{a}.margin_{k}",
            ),
            feature(f"txn__returns__{w}", f"returns {words}", "int64", 0, f"{a}.returns_{k}"),
            feature(
                f"txn__returns_value__{w}",
                f"money refunded for returns {words}",
                "float64",
                0.0,
                f"{a}.returns_value_{k}",
            ),
            feature(
                f"txn__cost_to_serve__{w}",
                f"cost to serve {words}",
                "float64",
                0.0,
                f"{a}.cts_{k}",
            ),
            feature(
                f"txn__profitability__{w}",
                f"margin minus returns minus cost to serve {words}",
                "float64",
                0.0,
                f"{a}.margin_{k} - {a}.returns_value_{k} - {a}.cts_{k}",
            ),
        ]
    out += [
        feature(
            name,
            f"orders in product category {c} ever (before the as-of date)",
            "int64",
            0,
            f"txn_agg.orders_cat_{c}",
        )
        for c, name in CATEGORY_ORDERS.items()
    ]
    for days in RATIO_WINDOWS:
        k, w, words = _key(days), window_suffix(days), window_words(days)
        a = "txn_agg"
        out += [
            feature(
                f"txn__avg_basket__{w}",
                f"average order value {words} (0 without orders)",
                "float64",
                0.0,
                f"{a}.spend_{k} / NULLIF({a}.orders_{k}, 0)",
            ),
            feature(
                f"txn__return_ratio__{w}",
                f"share of spend refunded {words} (0 without spend)",
                "float64",
                0.0,
                f"{a}.returns_value_{k} / NULLIF({a}.spend_{k}, 0)",
            ),
            feature(
                f"txn__discount_share__{w}",
                f"discount as a share of list price {words} (0 without orders)",
                "float64",
                0.0,
                f"{a}.discount_{k} / NULLIF({a}.spend_{k} + {a}.discount_{k}, 0)",
            ),
            feature(
                f"txn__category_breadth__{w}",
                f"distinct product categories bought {words}",
                "int64",
                0,
                f"txn_breadth.breadth_{k}",
            ),
        ]
    # issue 13: the last RFM input of the probabilistic models (frequency, recency and T are
    # purchase_days - 1, first_purchase_days - recency_days and first_purchase_days), so a
    # registered model computes its prob__ inputs from a feature frame alone.
    out.append(
        feature(
            "txn__repeat_spend_mean__all",
            "average spend per repeat purchase day: spend on the purchase days after the "
            "first, divided by their number (0 without a repeat purchase day)",
            "float64",
            0.0,
            "txn_ipt.repeat_spend / NULLIF(txn_ipt.purchase_days - 1, 0)",
        )
    )
    return tuple(out)


FAMILY = FamilySQL(
    family="txn",
    tables=("transactions",),
    ctes=CTES,
    joins=("txn_agg", "txn_ipt", "txn_ref", "txn_breadth", "txn_topcat", "txn_topchan"),
    features=_declare(),
)
