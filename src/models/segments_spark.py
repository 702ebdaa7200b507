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


# --- the whole of classify -------------------------------------------------------------------


def _flag(expr: Any) -> Any:
    """A condition with null read as false: numpy's NaN comparisons are false, and
    :func:`customer360.models.segments._pick` takes the first true condition."""
    from pyspark.sql import functions as F

    return F.coalesce(expr, F.lit(False))


def _pick(conditions: list[Any], choices: list[str], default: str) -> Any:
    """Spark twin of :func:`customer360.models.segments._pick`: first true condition wins."""
    from pyspark.sql import functions as F

    out = None
    for cond, choice in zip(conditions, choices, strict=True):
        out = (F if out is None else out).when(_flag(cond), F.lit(choice))
    return out.otherwise(F.lit(default))


def _num(column: str, fill: float | None = None) -> Any:
    from pyspark.sql import functions as F

    value = F.col(f"`{column}`").cast("double")
    return value if fill is None else F.coalesce(value, F.lit(float(fill)))


def _status(frame: Any, cfg: segments.StatusConfig, bought: Any, recency: Any) -> tuple[Any, Any]:
    """Status column and the ``active`` flag; the buyers' affluence quantiles and customer-type
    shares are Spark aggregates (two scalars and a few type names reach the driver)."""
    from pyspark.sql import functions as F

    active = bought & _flag(recency <= cfg.active_window_days)
    interest_events = sum((_num(c, 0.0) for c in cfg.interest_features), F.lit(0.0))
    interest = interest_events >= cfg.interest_min_events
    affluence = _num("tp__affluence_score__static")
    income = _flag(F.col("tp__income_band__static").isin(list(cfg.capacity_income_bands)))
    capacity = _flag(affluence >= cfg.capacity_min_affluence) | income
    potential = ~bought & _flag(interest) & capacity
    ctype = F.col("demo__customer_type__static")
    cuts = quantile_cuts(frame.select(affluence.alias("_aff"), bought.alias("_b")), "_aff",
                         list(cfg.probable_affluence_quantiles),
                         where=F.col("_b") & F.col("_aff").isNotNull())
    if cuts:
        lo, hi = cuts
        types = (frame.where(bought & ctype.isNotNull()).groupBy(ctype.alias("t")).count()
                 .collect())
        n = sum(r["count"] for r in types)
        common = [r["t"] for r in types if r["count"] / n >= cfg.probable_min_type_share]
        similar = _flag((affluence >= lo) & (affluence <= hi)) & _flag(ctype.isin(common))
    else:  # nobody to compare with
        similar = F.lit(False)
    status = _pick([active, bought, potential, ~bought & similar],
                   ["active", "inactive", "potential", "probable"], "cold")
    return status, active


def _finance_priority(cfg: segments.FinanceLensConfig) -> Any:
    """The top-revenue buyers bringing ``priority_revenue_share`` of revenue (ties by id), as
    running sums over one global ordering, like the numpy cumulative sum."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    revenue = _num(cfg.revenue_feature, 0.0)
    positive = F.when(revenue > 0, revenue).otherwise(F.lit(0.0))
    ordered = Window.orderBy(revenue.desc(), F.col("customer_id").cast("string").asc())
    running = F.sum(positive).over(ordered.rowsBetween(Window.unboundedPreceding, 0))
    total = F.sum(positive).over(Window.partitionBy(F.lit(1)))
    return (positive > 0) & ((running - positive) < F.lit(cfg.priority_revenue_share) * total)


def classify(frame: Any, config: segments.SegmentsConfig, clv: Any = None,
             cycles: Any = None) -> Any:
    """Spark twin of :func:`customer360.models.segments.classify`: the same columns
    (:data:`~customer360.models.segments.OUTPUT_COLUMNS`, ``as_of`` when ``frame`` has it) and
    values for every customer of the Spark DataFrame ``frame``.

    Row rules are column expressions; the population-level steps (rank scores, quantile cuts,
    value shares, the finance running sum) are Spark windows and aggregates, so only a few
    cut points reach the driver. ``clv`` is an optional Spark DataFrame with ``customer_id``
    and ``prob__clv`` (the ``clv`` column; null elsewhere); ``cycles`` one with
    ``customer_id`` and ``cycle_days`` (a won deal's cycle, as
    :func:`customer360.training.segments.observed_sales_cycles`), which classes
    ``sales_cycle`` for the customers it lists, as the pandas ``classify`` does.

    Examples
    --------
    >>> classify(spark.table("feature_snapshots"), load_segments_config()).show()  # doctest: +SKIP
    """
    from pyspark.sql import functions as F

    missing = [c for c in segments.required_features(config) if c not in frame.columns]
    if missing:
        raise segments.ContractError(
            f"the Spark feature frame lacks column(s) {missing}. Build it with customer360."
            "features.build_features, or fix the feature names in configs/segments.yaml."
        )
    rfm = config.rfm
    orders = _num("txn__orders__all", 0.0)
    bought = orders >= 1
    recency = _num(rfm.recency_feature)
    bad = frame.where(bought & recency.isNull()).select("customer_id").first()
    if bad is not None:
        raise segments.ContractError(
            f"customer {bad[0]!r} has orders but no {rfm.recency_feature}; the feature build is "
            "inconsistent, rebuild the features"
        )
    status, active = _status(frame, config.status, bought, recency)
    ipt = _num("txn__ipt_mean_days__all")
    fq = config.frequency
    frequency_class = _pick(
        [~bought, ipt <= fq.frequent_max_ipt_days, ipt <= fq.habitual_max_ipt_days],
        ["none", "frequent", "habitual"], "occasional",
    )
    scores = {}
    for axis, column, better_high in (("r", rfm.recency_feature, False),
                                      ("f", rfm.frequency_feature, True),
                                      ("m", rfm.monetary_feature, True)):
        value = f"_rfm_{axis}"
        frame = frame.withColumn(value, _num(column, 0.0))
        scores[axis] = F.coalesce(
            quantile_scores(value, rfm.bins, higher_is_better=better_high, where=bought),
            F.lit(0).cast("long"),
        )
    grid = segments._rfm_grid(rfm)
    width = rfm.bins + 1
    cells = F.create_map(*[
        x for r in range(width) for f in range(width)
        for x in (F.lit(r * width + f), F.lit(str(grid[r, f])))
    ])
    first_days = _num("txn__first_purchase_days__all")
    lc = config.lifecycle
    single = orders == 1
    to_first = _num("demo__signup_to_first_purchase_days__all")
    sc = config.sales_cycle
    sales_cfg = config.lenses.sales
    qualified = (
        _flag(_num("tp__affluence_score__static") >= sales_cfg.qualification_min_affluence)
        & _flag(_num("beh__product_views__90d", 0.0) >= sales_cfg.qualification_min_product_views)
        & _flag(_num("beh__days_since_last_visit__all")
                <= sales_cfg.qualification_max_days_since_visit)
    )
    loyal = (active
             & (_num("txn__referred_buyers__all", 0.0) >= sales_cfg.loyal_min_referred_buyers)
             & (orders >= sales_cfg.loyal_min_orders))
    new = active & _flag(first_days <= sales_cfg.new_max_days_since_first)
    fin = config.lenses.finance
    orders_365 = _num("txn__orders__365d", 0.0)
    svc = config.lenses.service
    special = (
        (_num("svc__tickets__365d", 0.0) >= svc.special_needs_min_tickets_365d)
        | (_num("svc__open_complaints__all", 0.0) >= svc.special_needs_min_open_complaints)
        | (_num("svc__open_returns__all", 0.0) >= svc.special_needs_min_open_returns)
    )
    satisfaction = _num(svc.satisfaction_feature)
    columns = {
        "status": status,
        "volume_tier": volume_tier(frame, config.volume),
        "frequency_class": frequency_class,
        "rfm_r": scores["r"],
        "rfm_f": scores["f"],
        "rfm_m": scores["m"],
        "rfm_score": F.concat(*[scores[a].cast("string") for a in "rfm"]),
        "rfm_segment": F.element_at(cells, (scores["r"] * width + scores["f"]).cast("int")),
        "value_segment": value_segment(frame, config.value, bought),
        "lifecycle_stage": _pick(
            [~bought, single & (first_days <= lc.first_purchase_max_days), single,
             recency <= lc.post_sale_max_days],
            ["prospect", "first_purchase", "follow_up", "post_sale"], "renewal_cross_sell"),
        "sales_cycle": _pick(
            [~bought, to_first.isNull(), to_first <= sc.short_max_days,
             to_first <= sc.intermediate_max_days],
            ["none", "unknown", "short", "intermediate"], "long"),
        "lens_marketing": _pick([bought, status == "potential"],
                                ["existing", "qualified_potential"], "potential"),
        "lens_sales": _pick([~bought & qualified, ~bought, ~active, loyal, new],
                            ["qualified_prospect", "prospect", "inactive", "loyal", "new"],
                            "existing"),
        "lens_finance": _pick(
            [~bought, _finance_priority(fin), orders_365 >= fin.recurring_min_orders_365d,
             single | (orders_365 <= fin.transactional_max_orders_365d)],
            ["none", "priority", "recurring", "transactional"], "average"),
        "lens_service": _pick(
            [special, satisfaction >= svc.satisfied_min_score,
             satisfaction <= svc.unsatisfied_max_score, satisfaction.isNotNull()],
            ["special_needs", "satisfied", "unsatisfied", "neutral"], "no_feedback"),
    }
    keys = ["customer_id", *(["as_of"] if "as_of" in frame.columns else [])]
    out = frame.select(
        F.col("customer_id").cast("string").alias("customer_id"),
        *[F.col(k) for k in keys[1:]],
        *[expr.alias(name) for name, expr in columns.items()],
    )
    if cycles is not None:  # issue 15: won deals' cycles win over signup-to-first-purchase
        days = F.col("_cycle_days")
        out = (out.join(cycles.select(F.col("customer_id").cast("string").alias("customer_id"),
                                      F.col("cycle_days").cast("double").alias("_cycle_days")),
                        "customer_id", "left")
               .withColumn("sales_cycle", F.when(days.isNull(), F.col("sales_cycle"))
                           .when(days <= sc.short_max_days, "short")
                           .when(days <= sc.intermediate_max_days, "intermediate")
                           .otherwise("long"))
               .drop("_cycle_days"))
    if clv is None:
        return out.withColumn("clv", F.lit(None).cast("double"))
    scores_clv = clv.select(F.col("customer_id").cast("string").alias("customer_id"),
                            F.col("prob__clv").cast("double").alias("clv"))
    return out.join(scores_clv, "customer_id", "left")
