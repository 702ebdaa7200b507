"""Social features: mentions, likes and shares, sentiment.

Read from ``social`` rows with ``ts`` strictly before the as-of date T. Sentiment is scored on
mentions and comments (likes and shares carry none). A *negative mention* is a mention or
comment with sentiment below :data:`NEGATIVE_SENTIMENT`. Sentiment mean and minimum are 0
(neutral) when the window holds no scored post; the sentiment trend is the mean of the last 90
days minus the mean of the 90 before, 0 unless both windows hold scored posts.
"""

from __future__ import annotations

from customer360.features.spec import (
    FamilySQL,
    FeatureSpec,
    feature,
    window_start,
    window_suffix,
    window_words,
)

WINDOWS: tuple[int, ...] = (30, 90, 365)
NEGATIVE_SENTIMENT = -0.3


def _aggregates() -> str:
    cols = []
    for days in WINDOWS:
        cond = window_start(days)
        cols += [
            f"SUM(CASE WHEN kind = 'mention' AND {cond} THEN 1 ELSE 0 END) AS mentions_{days}",
            f"SUM(CASE WHEN kind IN ('like', 'share') AND {cond} THEN 1 ELSE 0 END)"
            f" AS likes_shares_{days}",
            f"SUM(CASE WHEN kind = 'comment' AND {cond} THEN 1 ELSE 0 END) AS comments_{days}",
            f"SUM(CASE WHEN sentiment < {NEGATIVE_SENTIMENT} AND {cond} THEN 1 ELSE 0 END)"
            f" AS negative_{days}",
            f"AVG(CASE WHEN {cond} THEN sentiment END) AS sentiment_mean_{days}",
            f"MIN(CASE WHEN {cond} THEN sentiment END) AS sentiment_min_{days}",
        ]
    cols.append("AVG(CASE WHEN ts >= {t180} AND ts < {t90} THEN sentiment END) AS sentiment_prev90")
    return ",\n  ".join(cols)


CTES: tuple[tuple[str, str], ...] = (
    (
        "social_agg",
        f"SELECT customer_id,\n  {_aggregates()}\n"
        "FROM social WHERE ts < {t} GROUP BY customer_id",
    ),
)


def _declare() -> tuple[FeatureSpec, ...]:
    out: list[FeatureSpec] = []
    a = "social_agg"
    for days in WINDOWS:
        w, words = window_suffix(days), window_words(days)
        out += [
            feature(
                f"social__mentions__{w}",
                f"social media mentions {words}",
                "int64",
                0,
                f"{a}.mentions_{days}",
            ),
            feature(
                f"social__likes_shares__{w}",
                f"likes and shares {words}",
                "int64",
                0,
                f"{a}.likes_shares_{days}",
            ),
            feature(
                f"social__comments__{w}",
                f"social media comments {words}",
                "int64",
                0,
                f"{a}.comments_{days}",
            ),
            feature(
                f"social__negative_mentions__{w}",
                f"negative mentions or comments {words}",
                "int64",
                0,
                f"{a}.negative_{days}",
            ),
            feature(
                f"social__sentiment_mean__{w}",
                f"average sentiment (-1 to 1) {words} (0 without posts)",
                "float64",
                0.0,
                f"{a}.sentiment_mean_{days}",
            ),
            feature(
                f"social__sentiment_min__{w}",
                f"most negative sentiment {words} (0 without posts)",
                "float64",
                0.0,
                f"{a}.sentiment_min_{days}",
            ),
        ]
    out.append(
        feature(
            "social__sentiment_trend__90d",
            "change of average sentiment, last 90 days vs the 90 before",
            "float64",
            0.0,
            f"{a}.sentiment_mean_90 - {a}.sentiment_prev90",
        )
    )
    return tuple(out)


FAMILY = FamilySQL(
    family="social",
    tables=("social",),
    ctes=CTES,
    joins=("social_agg",),
    features=_declare(),
)
