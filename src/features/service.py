"""Service features: tickets, complaints, tickets still open at the as-of date, satisfaction.

Read from ``support_tickets`` rows with ``opened_at`` strictly before the as-of date T. A ticket
is *open at T* when it was not closed before T (``closed_at`` null or on/after T); the
``status`` column is as of the extract and is never used. *Complaints* are the categories in
:data:`COMPLAINTS`; fee complaints are counted apart. Satisfaction is known once a ticket is
closed, so only tickets closed before T count.
"""

from __future__ import annotations

from customer360.features.spec import (
    FamilySQL,
    FeatureSpec,
    feature,
    window_suffix,
    window_words,
)

WINDOWS: tuple[int, ...] = (90, 365)
FEE_COMPLAINT = "fee_complaint"
COMPLAINTS: tuple[str, ...] = ("statement_unclear", "product_issue", "delivery", "billing")
"""Ticket categories counted as complaints (besides fee complaints)."""

_COMPLAINT_SQL = ", ".join(f"'{c}'" for c in COMPLAINTS)
_OPEN = "(closed_at IS NULL OR closed_at >= {t})"


def _aggregates() -> str:
    cols = []
    for days in WINDOWS:
        cond = f"opened_at >= {{t{days}}}"
        cols += [
            f"SUM(CASE WHEN {cond} THEN 1 ELSE 0 END) AS tickets_{days}",
            f"SUM(CASE WHEN category IN ({_COMPLAINT_SQL}) AND {cond} THEN 1 ELSE 0 END)"
            f" AS complaints_{days}",
            f"SUM(CASE WHEN category = '{FEE_COMPLAINT}' AND {cond} THEN 1 ELSE 0 END)"
            f" AS fee_complaints_{days}",
            f"SUM(CASE WHEN category = 'return_request' AND {cond} THEN 1 ELSE 0 END)"
            f" AS return_requests_{days}",
            f"AVG(CASE WHEN closed_at < {{t}} AND closed_at >= {{t{days}}} THEN satisfaction END)"
            f" AS satisfaction_{days}",
        ]
    cols += [
        "COUNT(*) AS tickets_all",
        f"SUM(CASE WHEN {_OPEN} THEN 1 ELSE 0 END) AS open_tickets",
        f"SUM(CASE WHEN {_OPEN} AND category IN ('{FEE_COMPLAINT}', {_COMPLAINT_SQL})"
        " THEN 1 ELSE 0 END) AS open_complaints",
        f"SUM(CASE WHEN {_OPEN} AND category = 'return_request' THEN 1 ELSE 0 END) AS open_returns",
        "MAX(opened_at) AS last_opened",
    ]
    return ",\n  ".join(cols)


CTES: tuple[tuple[str, str], ...] = (
    (
        "svc_agg",
        f"SELECT customer_id,\n  {_aggregates()}\n"
        "FROM support_tickets WHERE opened_at < {t} GROUP BY customer_id",
    ),
    (
        "svc_last_score",
        """SELECT customer_id, satisfaction FROM (
             SELECT customer_id, satisfaction, ROW_NUMBER() OVER (
               PARTITION BY customer_id ORDER BY closed_at DESC, ticket_id DESC) AS rn
             FROM support_tickets
             WHERE opened_at < {t} AND closed_at < {t} AND satisfaction IS NOT NULL) AS ranked
           WHERE rn = 1""",
    ),
)


def _declare() -> tuple[FeatureSpec, ...]:
    a = "svc_agg"
    out: list[FeatureSpec] = []
    for days in WINDOWS:
        w, words = window_suffix(days), window_words(days)
        out += [
            feature(
                f"svc__tickets__{w}",
                f"support tickets opened {words}",
                "int64",
                0,
                f"{a}.tickets_{days}",
            ),
            feature(
                f"svc__complaints__{w}",
                f"complaints (other than fees) {words}",
                "int64",
                0,
                f"{a}.complaints_{days}",
            ),
            feature(
                f"svc__fee_complaints__{w}",
                f"complaints about fees {words}",
                "int64",
                0,
                f"{a}.fee_complaints_{days}",
            ),
            feature(
                f"svc__return_requests__{w}",
                f"return requests {words}",
                "int64",
                0,
                f"{a}.return_requests_{days}",
            ),
            feature(
                f"svc__satisfaction_mean__{w}",
                f"average satisfaction (1-5) of tickets closed {words}",
                "float64",
                None,
                f"{a}.satisfaction_{days}",
                null_means="no rated ticket closed in the window",
            ),
        ]
    out += [
        feature("svc__tickets__all", "support tickets ever opened", "int64", 0, f"{a}.tickets_all"),
        feature(
            "svc__open_tickets__all", "support tickets still open", "int64", 0, f"{a}.open_tickets"
        ),
        feature(
            "svc__open_complaints__all",
            "complaints still open (fees included)",
            "int64",
            0,
            f"{a}.open_complaints",
        ),
        feature(
            "svc__open_returns__all", "return requests still open", "int64", 0, f"{a}.open_returns"
        ),
        feature(
            "svc__satisfaction_last__all",
            "satisfaction score (1-5) of the last closed ticket",
            "float64",
            None,
            "CAST(svc_last_score.satisfaction AS DOUBLE)",
            null_means="no rated ticket closed before the as-of date",
        ),
        feature(
            "svc__days_since_last_ticket__all",
            "days since the last support ticket",
            "float64",
            None,
            "date_diff('day', CAST(svc_agg.last_opened AS DATE), {d})",
            null_means="no ticket before the as-of date",
        ),
    ]
    return tuple(out)


FAMILY = FamilySQL(
    family="svc",
    tables=("support_tickets",),
    ctes=CTES,
    joins=("svc_agg", "svc_last_score"),
    features=_declare(),
)
