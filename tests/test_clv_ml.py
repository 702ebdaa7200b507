"""ML-CLV: value metrics, the Tweedie regressor, and training on the small synthetic warehouse
against BG/NBD + Gamma-Gamma, "last period repeats" and the oracle."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest

from customer360.models.clv_ml import CLVRegressor
from customer360.models.tabular import decile_table, normalized_gini, value_metrics
from customer360.training.common import SnapshotPlan


def test_normalized_gini_is_one_for_perfect_order_and_negative_for_reversed():
    rng = np.random.default_rng(1)
    actual = rng.gamma(0.5, 100.0, 500) * (rng.uniform(size=500) < 0.4)
    assert normalized_gini(actual, actual) == pytest.approx(1.0)
    assert normalized_gini(actual, -actual) < -0.9
    assert abs(normalized_gini(actual, rng.uniform(size=500))) < 0.2


def test_value_metrics_on_a_known_case():
    actual = np.array([0.0, 0.0, 10.0, 30.0] * 25)
    predicted = actual * 1.1
    m = value_metrics(actual, predicted)
    assert m["total_error"] == pytest.approx(0.1)
    assert m["decile_mape"] == pytest.approx(0.1)
    assert m["normalized_gini"] == pytest.approx(1.0)
    table = decile_table(actual, predicted)
    assert list(table.index) == list(range(1, 11))
    assert table["predicted"].is_monotonic_decreasing


def test_clv_regressor_keeps_level_on_validation_and_clips_negative_targets():
    rng = np.random.default_rng(0)
    n = 2000
    X = pd.DataFrame({"orders": rng.poisson(3, n).astype(float), "seg": rng.choice(["a", "b"], n)})
    y = rng.gamma(2.0, 20.0, n) * (rng.uniform(size=n) < X["orders"] / 8) * (1 + (X["seg"] == "b"))
    y[:5] = -15.0  # returns exceeding purchases
    model = CLVRegressor(num_boost_round=200, n_jobs=1).fit(
        X[:1000], y[:1000], X_val=X[1000:], y_val=y[1000:]
    )
    pred_val = model.predict(X[1000:])
    assert pred_val.sum() == pytest.approx(np.clip(y[1000:], 0, None).sum(), rel=1e-6)
    assert model.n_negative_targets_ == 5
    assert (pred_val > 0).all()
    assert normalized_gini(y[1000:], pred_val) > 0.3


@pytest.fixture(scope="module")
def clv_run(small_warehouse_master, tmp_path_factory):
    from customer360.data.warehouse import connect
    from customer360.training.clv import load_clv_ml_config, train_clv

    store = tmp_path_factory.mktemp("clv_mlruns")
    uri = f"sqlite:///{store / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        cfg = load_clv_ml_config().model_copy(
            update={
                "trials": 3,
                "n_jobs": 1,
                "num_boost_round": 400,
                "snapshots": SnapshotPlan(count=9, step_days=90),
            }
        )
        with connect(small_warehouse_master, read_only=True) as con:
            result = train_clv(con, cfg)
    return result, uri


def test_clv_gini_within_10_percent_of_the_oracle(clv_run):
    result, _ = clv_run
    oracle = result.baselines["oracle"]["normalized_gini"]
    assert result.metrics["normalized_gini"] >= 0.9 * oracle, (result.metrics, oracle)


def test_clv_beats_probabilistic_and_last_period_baselines(clv_run):
    result, _ = clv_run
    gini = result.metrics["normalized_gini"]
    assert gini > result.baselines["bgnbd_gamma_gamma"]["normalized_gini"]
    assert gini > result.baselines["last_period_repeats"]["normalized_gini"]
    assert result.metrics["spearman"] > result.baselines["bgnbd_gamma_gamma"]["spearman"]
    assert abs(result.metrics["total_error"]) < 0.5
    for values in (result.metrics, *result.baselines.values()):
        assert set(values) >= {"normalized_gini", "spearman", "decile_mape", "total_error"}


def test_clv_pyfunc_returns_clv_ml_and_run_has_decile_chart(clv_run, monkeypatch):
    result, uri = clv_run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    model = mlflow.pyfunc.load_model("models:/clv@challenger")
    example = model.input_example
    out = model.predict(example)
    assert list(out.columns) == ["clv_ml"] and (out["clv_ml"] >= 0).all()
    # self-contained: the probabilistic inputs are computed inside, not read as columns
    assert not any(c.startswith("prob__")
                   for c in model.metadata.get_input_schema().input_names())
    paths = {a.path for a in mlflow.MlflowClient().list_artifacts(result.run_id, "plots")}
    assert {"plots/deciles.png", "plots/shap_summary.png"} <= paths
