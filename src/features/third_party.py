"""Third-party economic features: household economics (B2C) and firmographics (B2B).

Read from ``third_party`` rows with ``observed_at`` strictly before the as-of date T (the latest
such delivery per customer). Customers without a delivery before T get ``"unknown"`` for
categories and null for numbers; fields that do not apply to the customer type are null in the
source and treated the same way.
"""

from __future__ import annotations

from customer360.features.spec import FamilySQL, FeatureSpec, feature

_NO_RECORD = "no provider record before the as-of date, or the field does not apply"

CTES: tuple[tuple[str, str], ...] = (
    (
        "tp_latest",
        """SELECT * FROM (
             SELECT *, ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY observed_at DESC)
                       AS rn
             FROM third_party WHERE observed_at < {t}) AS ranked
           WHERE rn = 1""",
    ),
)

_CATEGORICAL = (
    ("income_band", "household income band"),
    ("profession", "profession"),
    ("education", "education level"),
    ("revenue_band", "company annual revenue band"),
)
_NUMERIC = (
    ("affluence_score", "affluence / net worth index (0-100)"),
    ("household_size", "household size"),
    ("home_value", "estimated home value"),
    ("employee_count", "company employees"),
)


def _declare() -> tuple[FeatureSpec, ...]:
    out = [
        feature(f"tp__{col}__static", words, "category", "unknown", f"tp_latest.{col}")
        for col, words in _CATEGORICAL
    ]
    out += [
        feature(
            f"tp__{col}__static",
            words,
            "float64",
            None,
            f"CAST(tp_latest.{col} AS DOUBLE)",
            null_means=_NO_RECORD,
        )
        for col, words in _NUMERIC
    ]
    out += [
        feature(
            "tp__has_record__static",
            "third-party enrichment available (1) or not (0)",
            "int64",
            0,
            "CASE WHEN tp_latest.customer_id IS NULL THEN 0 ELSE 1 END",
        ),
        feature(
            "tp__record_age_days__all",
            "days since the third-party record was delivered",
            "float64",
            None,
            "date_diff('day', CAST(tp_latest.observed_at AS DATE), {d})",
            null_means="no provider record before the as-of date",
        ),
    ]
    return tuple(out)


FAMILY = FamilySQL(
    family="tp",
    tables=("third_party",),
    ctes=CTES,
    joins=("tp_latest",),
    features=_declare(),
)
