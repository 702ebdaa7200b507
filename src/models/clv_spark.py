"""Probabilistic purchase scores on Spark (issue 17 item 2): a fitted BG/NBD / Pareto/NBD model
evaluated inside the executors, one Arrow batch at a time.

The fitted parameters are a handful of floats, so the model is shipped to the executors with
the task and lifetimes' own closed forms run there (``mapInPandas``); nothing is collected to
the driver and the numbers are those of :meth:`~customer360.models.clv._TransactionModel.p_alive`
and ``expected_purchases``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pandas as pd


def purchase_scores(
    frame: Any,
    model: Any,
    horizons: Sequence[float],
    *,
    spend_model: Any = None,
    id_column: str = "customer_id",
) -> Any:
    """Spark DataFrame ``id_column, p_alive, expected_purchases_<t>`` (one per horizon) of the
    RFM rows ``frame`` (columns ``frequency, recency, T``) under the fitted ``model``; with a
    fitted Gamma-Gamma ``spend_model`` also ``expected_spend`` (needs ``monetary_value``).

    Examples
    --------
    >>> purchase_scores(rfm, BetaGeoModel().fit(rfm_pd), [30, 90]).show()  # doctest: +SKIP
    """
    names = [f"expected_purchases_{t:g}" for t in horizons]
    schema = ", ".join(
        [f"{id_column} string", "p_alive double", *(f"{n} double" for n in names)]
        + (["expected_spend double"] if spend_model is not None else [])
    )
    columns = [id_column, "frequency", "recency", "T"]
    if spend_model is not None:
        columns.append("monetary_value")

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for rfm in batches:
            if rfm.empty:
                continue
            out = {id_column: rfm[id_column].astype(str), "p_alive": model.p_alive(rfm)}
            for name, t in zip(names, horizons, strict=True):
                out[name] = model.expected_purchases(rfm, float(t))
            if spend_model is not None:
                out["expected_spend"] = spend_model.expected_spend(rfm)
            yield pd.DataFrame(out)

    return frame.select(*columns).mapInPandas(score, schema)


def rfm_summary(purchases: Any, calibration_end: Any, *, time_unit: str = "W") -> Any:
    """Spark twin of :func:`customer360.features.rfm.rfm_summary` (calibration columns only):
    ``customer_id, frequency, recency, T, monetary_value`` of a Spark DataFrame of purchases
    (``customer_id, ts, amount``) on or before ``calibration_end``, one aggregation over
    customer-days like the DuckDB SQL plan.

    Examples
    --------
    >>> rfm_summary(spark.table("transactions"), "2026-06-29").show()  # doctest: +SKIP
    """
    from pyspark.sql import functions as F

    from customer360.models.clv import DAYS_PER_UNIT

    unit = F.lit(DAYS_PER_UNIT[time_unit])
    cal_end = F.lit(pd.Timestamp(calibration_end).date())
    days = (
        purchases.select(F.col("customer_id").cast("string").alias("customer_id"),
                         F.to_date("ts").alias("day"), F.col("amount").cast("double").alias("a"))
        .where(F.col("day") <= cal_end)
        .groupBy("customer_id", "day").agg(F.sum("a").alias("total"))
    )
    n = F.count(F.lit(1))
    return days.groupBy("customer_id").agg(
        (n - 1).cast("double").alias("frequency"),
        (F.datediff(F.max("day"), F.min("day")) / unit).alias("recency"),
        (F.datediff(cal_end, F.min("day")) / unit).alias("T"),
        F.when(n > 1, (F.sum("total") - F.min_by("total", "day")) / (n - 1))
        .otherwise(F.lit(0.0)).alias("monetary_value"),
    )


def stack_scores(rfm: Any, customers: Any, stack: Any, horizons: Sequence[int]) -> Any:
    """Spark twin of :func:`customer360.models.clv.stack_scores` for every horizon at once:
    ``customer_id, prob__p_alive, prob__expected_purchases__{H}d (first horizon),
    prob__expected_spend, prob__clv`` then the other horizons' expected purchases, for every id
    of ``customers`` (Spark DataFrame with ``customer_id``) and of ``rfm``.

    The fitted ``stack`` (a :class:`~customer360.models.prob_stack.ProbabilisticStack`, a few
    floats) travels with the task; each executor scores its Arrow batches with the same
    closed forms as the DuckDB path. Ids without a purchase get that path's defaults.
    """
    from pyspark.sql import functions as F

    from customer360.models.clv import purchases_column
    from customer360.models.clv import stack_scores as score_frame

    horizons = sorted(set(int(h) for h in horizons))
    first = purchases_column(horizons[0])
    extra = [purchases_column(h) for h in horizons[1:]]
    cols = ["prob__p_alive", first, "prob__expected_spend", "prob__clv", *extra]
    schema = "customer_id string, " + ", ".join(f"{c} double" for c in cols)

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            if batch.empty:
                continue
            ids = batch["customer_id"]
            out = score_frame(stack, batch, ids, horizons[0])
            for h, col in zip(horizons[1:], extra, strict=True):
                out[col] = score_frame(stack, batch, ids, h)[col].to_numpy()
            yield out[["customer_id", *cols]]

    scored = rfm.mapInPandas(score, schema)
    everyone = (customers.select(F.col("customer_id").cast("string").alias("customer_id"))
                .unionByName(rfm.select("customer_id")).distinct())
    defaults = {"prob__p_alive": 0.0, "prob__expected_spend":
                float(stack.spend_model.population_mean_spend_), "prob__clv": 0.0,
                **{c: 0.0 for c in [first, *extra]}}
    return everyone.join(scored, "customer_id", "left").fillna(defaults).select(
        "customer_id", *cols)
