"""Issue 13 items 4 and 5: self-contained registered models under one lifecycle.

A data scientist's ``mlflow.pyfunc.load_model("models:/churn@champion").predict(df)`` on the
frame ``customer360 features build --output`` writes gives the batch scores; the ``prob__``
inputs are computed inside the model; every registered version says what it is.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import duckdb
import mlflow
import numpy as np
import pandas as pd
import pytest
from serving_env import REPO, ServingEnv


@pytest.fixture
def use_env(env, monkeypatch) -> ServingEnv:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env.tracking_uri)
    monkeypatch.setenv("CUSTOMER360_CONFIG_DIR", str(env.config_dir))
    mlflow.set_tracking_uri(env.tracking_uri)
    mlflow.set_registry_uri(env.tracking_uri)
    return env


@pytest.fixture(scope="module")
def built(env, tmp_path_factory) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`features build --output` as a user runs it, and the batch scores of the same date."""
    from customer360.serving.batch import score_customers

    base = tmp_path_factory.mktemp("lifecycle")
    db = env.copy_db(base / "w.duckdb")
    out = base / "features.parquet"
    cmd = [str(REPO / ".venv/bin/customer360"), "features", "build", "--as-of", env.as_of,
           "--output", str(out), "--db", str(db)]
    run = subprocess.run(cmd, env=env.env(db), capture_output=True, text=True, timeout=300,
                         cwd=REPO)
    assert run.returncode == 0, run.stdout + run.stderr
    with pytest.MonkeyPatch.context() as mp:
        for key in ("MLFLOW_TRACKING_URI", "CUSTOMER360_CONFIG_DIR"):
            mp.setenv(key, env.env(db)[key])
        score_customers(env.as_of, base / "scores.parquet", db=db)
    return pd.read_parquet(out), pd.read_parquet(base / "scores.parquet")


def test_pyfunc_on_features_build_output_equals_batch_scores(use_env, built):
    features, scores = built
    assert not [c for c in features.columns if c.startswith("prob__")]
    scores = scores.set_index("customer_id").loc[features["customer_id"]]
    churn = mlflow.pyfunc.load_model("models:/churn@champion").predict(features)
    clv = mlflow.pyfunc.load_model("models:/clv@champion").predict(features)
    assert len(churn) == len(clv) == len(features) == 3000
    np.testing.assert_allclose(
        churn["churn_probability"].to_numpy(), scores["churn_probability"].to_numpy(),
        rtol=0, atol=1e-12,
    )
    np.testing.assert_allclose(
        clv["clv_ml"].to_numpy(), scores["clv_ml"].to_numpy(), rtol=1e-12, atol=1e-9
    )
    assert (churn["reason_1"].to_numpy() == scores["reason_1"].to_numpy()).all()


def test_the_model_computes_its_prob_inputs_and_ignores_given_ones(use_env, built):
    """The signature holds no prob__ column, and wrong prob__ columns change nothing."""
    features, _ = built
    for name in ("churn", "clv"):
        model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
        inputs = model.metadata.get_input_schema().input_names()
        assert not [c for c in inputs if c.startswith("prob__")], name
        inner = model.unwrap_python_model().model
        wanted = [c for c in inner.schema_.columns if c.startswith("prob__")]
        assert wanted, f"{name} is stacked on the probabilistic scores"
        head = features.head(50)
        noisy = head.assign(**{c: -1.0 for c in wanted})
        pd.testing.assert_frame_equal(inner.predict_frame(head), inner.predict_frame(noisy))


def test_rfm_from_features_equals_the_rfm_summary(env):
    """frequency / recency / T / monetary_value derived from four features equal rfm_summary's."""
    from customer360.features import build_features
    from customer360.models.prob_stack import rfm_from_features
    from customer360.training.probabilistic import warehouse_rfm

    with duckdb.connect(str(env.db), read_only=True) as con:
        features = build_features(con, env.as_of).set_index("customer_id")
        rfm = warehouse_rfm(con, env.as_of).set_index("customer_id")
    derived = rfm_from_features(features)
    assert int(derived["buyer"].sum()) == len(rfm)
    derived = derived.loc[rfm.index]
    for col in ("frequency", "recency", "monetary_value"):
        np.testing.assert_allclose(derived[col], rfm[col], rtol=1e-12, atol=1e-9, err_msg=col)
    # rfm_summary's T runs to the day before the as-of date; the models score one day later
    np.testing.assert_allclose(derived["T"], rfm["T"] + 1 / 7, rtol=0, atol=1e-12)


def test_registered_versions_carry_a_description_and_tags(use_env):
    from customer360.features.registry import FEATURE_SET_VERSION

    client = mlflow.MlflowClient()
    for name, label in (("churn", "label__churn__"), ("clv", "label__margin__")):
        version = client.get_model_version_by_alias(name, "champion")
        tags = version.tags
        assert tags["label"].startswith(label)
        assert "days after the as-of date" in tags["label_definition"]
        assert int(tags["horizon_days"]) > 0
        assert tags["feature_set_version"] == FEATURE_SET_VERSION
        assert int(tags["rows_registered_model"]) > int(tags["rows_fit_evaluated_model"]) > 0
        assert tags["probabilistic_inputs_fitted_as_of"] < use_env.as_of
        assert "prob__ inputs are computed inside the model" in version.description
        assert f"{int(tags['rows_registered_model']):,} labelled rows" in version.description


def test_nbo_pyfunc_scores_every_offer_of_plain_feature_rows(use_env, built):
    """No offer columns: every catalogue offer for each row; int64 features as they come."""
    from customer360.models.nbo import OFFER_COLUMNS, pair_frame

    features, _ = built
    head = features.head(4)
    assert (head.dtypes == "int64").sum() > 10
    model = mlflow.pyfunc.load_model("models:/nbo@champion")
    out = model.predict(head)
    inner = model.unwrap_python_model()
    offers = inner.model.offers_
    assert list(out.columns) == ["input_row", "offer_id", "p_accept"]
    assert len(out) == 4 * len(offers) and len(offers) > 1
    pairs = pair_frame(head, offers, out["input_row"].to_numpy(),
                       np.tile(np.arange(len(offers)), 4))
    np.testing.assert_allclose(out["p_accept"], inner.model.predict_proba(pairs), atol=1e-12)
    # with offer columns given, one answer per row, equal to the same pairs
    one = model.predict(pairs[[*features.columns.drop(["customer_id", "as_of"]),
                               *OFFER_COLUMNS]].head(3))
    np.testing.assert_allclose(one["p_accept"], out["p_accept"].head(3), atol=1e-12)


def test_nbo_is_registered_and_gated_like_the_others(env, tmp_path, monkeypatch):
    """NBO goes through the shared runner: its first version became @champion at training,
    its version carries churn's description and tags, config.json says what ran, and a worse
    challenger is scored against the champion on its own test events and promoted only when its
    figure is the better one."""
    import json
    import shutil

    from customer360.models.nbo import PropensityModel, load_nbo_config
    from customer360.training.nbo import train_nbo
    from customer360.training.promote import promote

    store = tmp_path / "store.db"
    shutil.copy(env.tracking_uri.removeprefix("sqlite:///"), store)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    monkeypatch.setenv("CUSTOMER360_CONFIG_DIR", str(env.config_dir))
    mlflow.set_tracking_uri(f"sqlite:///{store}")
    mlflow.set_registry_uri(f"sqlite:///{store}")
    client = mlflow.MlflowClient()
    first = client.get_model_version_by_alias("nbo", "champion")
    assert str(first.version) == "1"
    first_run = client.get_run(first.run_id)
    assert first_run.data.tags["became_champion"] == "true"
    tags = first.tags
    assert "offer_events.accepted" in tags["label_definition"]
    assert int(tags["rows_registered_model"]) > int(tags["rows_fit_evaluated_model"]) > 0
    assert f"{int(tags['rows_registered_model']):,} labelled rows" in first.description
    ran = json.loads(
        (Path(client.download_artifacts(first.run_id, "config.json", str(tmp_path)))).read_text()
    )["ran"]
    assert ran["trials_run"] == 0 and ran["calibration"] == "sigmoid"
    assert ran["model_class"] == "PropensityModel"
    assert ran["registered_model_rounds"] >= ran["evaluated_model_rounds"] >= 1
    loaded = mlflow.pyfunc.load_model("models:/nbo@champion").unwrap_python_model().model
    assert isinstance(loaded, PropensityModel)
    assert loaded.best_iteration_ == ran["registered_model_rounds"]

    # a challenger that sees one weak feature and no per-offer base: a worse policy
    config = load_nbo_config()
    prop = config.propensity.model_copy(update={
        "feature_columns": ["demo__region__static"], "linear_features": [],
        "calibration_folds": 0, "history_days": 150, "refit": False,
    })
    weak = config.model_copy(update={
        "propensity": prop, "ope": config.ope.model_copy(update={"n_boot": 50}),
    })
    with duckdb.connect(str(env.copy_db(tmp_path / "w.duckdb"))) as con:
        result = train_nbo(con, weak, trials=0)
    assert result.version == "2" and not result.became_champion
    run = client.get_run(result.run_id)
    assert run.data.tags["champion_version_evaluated"] == str(first.version)
    # the champion re-scored on the challenger's own test events, by the same figure (on a few
    # hundred logged events the doubly robust values are noisy: which one wins is not asserted,
    # only that the gate follows the two figures)
    champ = run.data.metrics["champion_test_policy_value_dr"]
    mine = run.data.metrics["test_policy_value_dr"]
    assert np.isfinite(champ) and np.isfinite(mine) and champ != mine
    assert run.data.tags["rows_registered_model"] == run.data.tags["rows_fit_evaluated_model"]
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert {"plots/calibration.png", "plots/acceptance_by_offer.png",
            "plots/policy_values.png"} <= artifacts
    decision = promote("nbo")
    assert decision.promoted == (mine > champ), decision.message
    assert ("does not beat" in decision.message) == (not decision.promoted)
    assert f"{champ:.4f}" in decision.message and f"{mine:.4f}" in decision.message
    want = "2" if decision.promoted else str(first.version)
    assert str(client.get_model_version_by_alias("nbo", "champion").version) == want
