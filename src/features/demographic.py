"""Demographic features: who the customer is and how long they have been with us.

Read from ``customers`` (only customers with ``signup_date`` strictly before the as-of date T
are in a feature frame) and, for the time to first purchase, from ``transactions`` before T.
Gender is deliberately not a feature. Attributes that do not apply (company size of a person,
age band of a company) are ``"n/a"``.
"""

from __future__ import annotations

from customer360.features.spec import FamilySQL, FeatureSpec, feature

_CATEGORICAL = (
    ("customer_type", "customer type (B2C person or B2B company)"),
    ("company_size", "company size band (B2B)"),
    ("industry", "industry (B2B)"),
    ("age_band", "age band (B2C)"),
    ("region", "sales region"),
    ("acquisition_channel", "acquisition channel"),
)

CTES: tuple[tuple[str, str], ...] = (
    (
        "demo_first",
        """SELECT customer_id, MIN(CAST(ts AS DATE)) AS first_day
           FROM transactions WHERE ts < {t} AND NOT is_return GROUP BY customer_id""",
    ),
)


def _declare() -> tuple[FeatureSpec, ...]:
    out = [
        feature(f"demo__{col}__static", words, "category", "n/a", f"base.{col}")
        for col, words in _CATEGORICAL
    ]
    out += [
        feature(
            "demo__tenure_days__all",
            "days since sign-up",
            "int64",
            0,
            "date_diff('day', base.signup_date, {d})",
        ),
        feature(
            "demo__has_contract__static",
            "has a fixed-term contract (1) or not (0)",
            "int64",
            0,
            "CASE WHEN base.contract_end_date IS NULL THEN 0 ELSE 1 END",
        ),
        feature(
            "demo__contract_days_left__all",
            "days until the contract ends (negative: ended)",
            "float64",
            None,
            "date_diff('day', {d}, base.contract_end_date)",
            null_means="no fixed-term contract",
        ),
        feature(
            "demo__signup_to_first_purchase_days__all",
            "days from sign-up to first purchase",
            "float64",
            None,
            "date_diff('day', base.signup_date, demo_first.first_day)",
            null_means="never bought before the as-of date",
        ),
    ]
    return tuple(out)


FAMILY = FamilySQL(
    family="demo",
    tables=("customers", "transactions"),
    ctes=CTES,
    joins=("demo_first",),
    features=_declare(),
)
