"""Spark batch scoring equals the DuckDB path (issue 17 item 2), part by part.

So far: the segments' population-level cuts (rank scores, quantile cut points, volume tier),
computed as Spark aggregations, equal numpy's on tiny data with ties, zeros and nulls.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from customer360.models import segments

pytestmark = pytest.mark.spark

SPEND = [0.0, 5.0, 5.0, 12.5, None, 40.0, 40.0, 40.0, 3.0, 250.0, 0.0, 7.25, 99.0, 1.0]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return pd.DataFrame({
        "customer_id": [f"C{i:03d}" for i in range(len(SPEND))],
        "spend": SPEND,
    })


def _on_spark(spark, frame, column):
    return (
        spark.createDataFrame(frame.astype({"spend": "float64"}))
        .withColumn("got", column)
        .toPandas()
        .sort_values("customer_id")["got"]
        .to_numpy()
    )


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_rank_scores_equal_numpy(spark, frame, higher_is_better):
    from pyspark.sql import functions as F

    from customer360.models.segments_spark import quantile_scores

    bought = frame["spend"].fillna(0) > 0
    want = segments.quantile_scores(
        frame.loc[bought, "spend"].to_numpy(), 5, higher_is_better=higher_is_better
    )
    got = _on_spark(spark, frame, quantile_scores(
        "spend", 5, higher_is_better=higher_is_better,
        where=F.coalesce(F.col("spend"), F.lit(0.0)) > 0,
    ))
    assert np.all(pd.isna(got[~bought.to_numpy()]))
    assert got[bought.to_numpy()].astype(np.int64).tolist() == want.tolist()


def test_quantile_cuts_equal_numpy(spark, frame):
    from pyspark.sql import functions as F

    from customer360.models.segments_spark import quantile_cuts

    qs = [0.1, 0.5, 0.8, 0.95]
    spend = frame["spend"].dropna().to_numpy()
    want = np.quantile(spend[spend > 0], qs)
    df = spark.createDataFrame(frame.astype({"spend": "float64"}))
    got = quantile_cuts(df, "spend", qs, where=F.col("spend") > 0)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert quantile_cuts(df, "spend", qs, where=F.col("spend") > 1e9) == []


@pytest.mark.parametrize("method", ["quantile", "mean"])
def test_volume_tier_equals_the_duckdb_rule(spark, frame, method):
    from customer360.models.segments_spark import volume_tier

    cfg = segments.load_segments_config().volume.model_copy(
        update={"feature": "spend", "method": method}
    )
    want = segments._volume_tier(frame, cfg)
    df = spark.createDataFrame(frame.astype({"spend": "float64"}))
    got = _on_spark(spark, frame, volume_tier(df, cfg))
    assert got.tolist() == want.tolist()
    assert set(want) >= {"none", "very_high", "low"}  # the data reach the tiers that matter


def test_value_segment_equals_the_duckdb_rule(spark, frame):
    from pyspark.sql import functions as F

    from customer360.models.segments_spark import value_segment

    cfg = segments.load_segments_config().value.model_copy(update={"feature": "spend"})
    profit = frame.assign(spend=frame["spend"].fillna(0) - 3.0)  # some buyers unprofitable
    bought = (frame["customer_id"] != "C010").to_numpy()
    want = segments._value_segment(profit, cfg, bought)
    df = spark.createDataFrame(profit.astype({"spend": "float64"}))
    got = _on_spark(spark, profit, value_segment(df, cfg, F.col("customer_id") != "C010"))
    assert got.tolist() == want.tolist()
    assert {cfg.never_bought_segment, cfg.unprofitable_segment, *list(cfg.shares)[:2]} <= set(want)


def test_purchase_scores_equal_the_fitted_model(spark):
    from customer360.models.clv import BetaGeoModel, GammaGammaModel
    from customer360.models.clv_spark import purchase_scores

    rng = np.random.default_rng(17)
    n = 60
    T = rng.integers(60, 200, n).astype(float)
    freq = rng.poisson(2.0, n).astype(float)
    rec = np.where(freq > 0, np.floor(T * rng.uniform(0.2, 1.0, n)), 0.0)
    rfm = pd.DataFrame({"customer_id": [f"C{i:03d}" for i in range(n)],
                        "frequency": freq, "recency": rec, "T": T,
                        "monetary_value": np.where(freq > 0, rng.gamma(3.0, 20.0, n), 0.0)})
    model = BetaGeoModel().fit(rfm)
    spend = GammaGammaModel().fit(rfm)
    got = (purchase_scores(spark.createDataFrame(rfm), model, [30, 90], spend_model=spend)
           .toPandas()
           .sort_values("customer_id").reset_index(drop=True))
    assert got["customer_id"].tolist() == rfm["customer_id"].tolist()
    np.testing.assert_allclose(got["p_alive"], model.p_alive(rfm), rtol=1e-12)
    np.testing.assert_allclose(got["expected_purchases_90"], model.expected_purchases(rfm, 90),
                               rtol=1e-12)
    np.testing.assert_allclose(got["expected_spend"], spend.expected_spend(rfm), rtol=1e-12)
    assert got["expected_purchases_90"].gt(got["expected_purchases_30"]).any()
