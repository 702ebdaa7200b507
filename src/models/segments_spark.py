"""The segments' population-level steps as Spark aggregations (issue 17 item 2, first part).

The DuckDB path (:mod:`customer360.models.segments`) cuts quantiles with numpy on the driver.
Here the same cut rules are Spark column expressions and aggregates, so the population never
leaves the executors; only the few cut points (scalars) reach the driver.

* :func:`quantile_scores` -- ``1 + floor(bins * (r - 1) / n)`` with ``r`` the minimum rank
  (ties share the lowest rank), like :func:`customer360.models.segments.quantile_scores`.
* :func:`quantile_cuts` -- exact quantiles with linear interpolation (Spark's ``percentile``),
  which is numpy's default rule used by ``np.quantile``.
* :func:`value_segment` -- the ``value_segment`` column (shares of the profit ranking).
* :func:`volume_tier` -- the ``volume_tier`` column of
  :func:`~customer360.models.segments.classify`.
"""

from __future__ import annotations

from typing import Any

from customer360.models import segments
from customer360.models.segments import ValueConfig, VolumeConfig


def quantile_scores(
    column: str, bins: int, *, higher_is_better: bool = True, where: Any = None
) -> Any:
    """Column expression: rank-based scores 1..``bins`` of ``column`` among rows where ``where``
    holds (null elsewhere).

    The window has no partition key (a global rank), so Spark moves the ranked rows to one
    partition for this step; the rows stay on an executor, not the driver.

    Examples
    --------
    >>> df.withColumn("r_score", quantile_scores("recency", 5))  # doctest: +SKIP
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    value = F.col(column) if higher_is_better else -F.col(column)
    flag = F.lit(True) if where is None else where
    ranked = Window.partitionBy(flag).orderBy(value.asc())
    everyone = Window.partitionBy(flag)
    score = 1 + F.floor(
        F.lit(bins) * (F.rank().over(ranked) - 1) / F.count(F.lit(1)).over(everyone)
    )
    return F.when(flag, score.cast("long"))


def quantile_cuts(frame: Any, column: str, quantiles: list[float], *, where: Any = None) -> list:
    """Exact quantiles of ``column`` (rows where ``where`` holds) with numpy's linear rule, as one
    Spark aggregate; ``[]`` when no row qualifies.

    Examples
    --------
    >>> quantile_cuts(df, "spend", [0.5, 0.8, 0.95], where=F.col("spend") > 0)  # doctest: +SKIP
    """
    from pyspark.sql import functions as F

    rows = frame if where is None else frame.where(where)
    qs = F.array(*[F.lit(float(q)) for q in quantiles])
    got = rows.agg(F.percentile(F.col(column).cast("double"), qs).alias("cuts")).first()
    return [] if got is None or got["cuts"] is None else [float(x) for x in got["cuts"]]


def volume_tier(frame: Any, cfg: VolumeConfig) -> Any:
    """Column expression of the volume tier: ``none`` / ``very_high`` / ``high`` / ``medium`` /
    ``low``, with the cut points computed by one Spark aggregate over the buyers' spend."""
    from pyspark.sql import functions as F

    spend = F.coalesce(F.col(cfg.feature).cast("double"), F.lit(0.0))
    positive = spend > 0
    if cfg.method == "quantile":
        cuts = quantile_cuts(frame.select(spend.alias("_spend")), "_spend", cfg.quantile_cuts,
                             where=F.col("_spend") > 0)
    else:
        mean = frame.where(positive).agg(F.avg(spend)).first()[0]
        cuts = [] if mean is None else [mean * m for m in cfg.mean_multiples]
    if not cuts:  # nobody bought: everyone is "none" or "low", as in the DuckDB path
        cuts = [float("inf")] * 3
    return (
        F.when(~positive, "none")
        .when(spend >= cuts[2], "very_high")
        .when(spend >= cuts[1], "high")
        .when(spend >= cuts[0], "medium")
        .otherwise("low")
    )


def value_segment(frame: Any, cfg: ValueConfig, bought: Any) -> Any:
    """Column expression of the value segment: buyers with positive ``cfg.feature`` ranked by it
    (ties share the best rank) and cut by the cumulative ``cfg.shares``, other buyers
    ``unprofitable_segment``, non-buyers ``never_bought_segment``.

    The cut-offs are :func:`customer360.models.segments.value_cutoffs`, as on the DuckDB path;
    only ``n`` (one count) reaches the driver.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    profit = F.coalesce(F.col(cfg.feature).cast("double"), F.lit(0.0))
    ranked = bought & (profit > 0)
    n = frame.where(ranked).count()
    labels = list(cfg.shares)
    out = F.when(~bought, F.lit(cfg.never_bought_segment))
    if n:
        cutoffs = segments.value_cutoffs(list(cfg.shares.values()), n)
        rank0 = F.rank().over(Window.partitionBy(ranked).orderBy(profit.desc())) - 1
        label = F.lit(labels[-1])
        for name, cutoff in reversed(list(zip(labels[:-1], cutoffs[:-1], strict=True))):
            label = F.when(rank0 < int(cutoff), F.lit(name)).otherwise(label)
        out = out.when(ranked, label)
    return out.otherwise(F.lit(cfg.unprofitable_segment))
