"""Promotion gate: @champion moves to the challenger only when it beats the champion on the
same test data; otherwise the command refuses with both figures and a non-zero exit."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
from typer.testing import CliRunner

from customer360.cli import app
from customer360.training.churn import load_churn_config, train_churn_table
from customer360.training.promote import promote

NAME = "churn_gate"


def table(n: int = 1200, seed: int = 0, renamed: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    logit = 1.5 * x[:, 0] - 1.0 * x[:, 1] * (x[:, 2] > 0) + 0.5 * x[:, 2] ** 2 - 0.5
    y = rng.uniform(size=n) < 1 / (1 + np.exp(-logit))
    frame = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "churn": y.astype(int)})
    return frame.rename(columns={"c": "d"}) if renamed else frame


def train(frame: pd.DataFrame, *, weak: bool) -> str:
    """One registered challenger; ``weak`` = two shallow trees, clearly worse."""
    cfg = load_churn_config().model_copy(
        update={
            "n_jobs": 1,
            "num_boost_round": 2 if weak else 300,
            "early_stopping_rounds": 2 if weak else 30,
            "fixed_params": {"num_leaves": 2, "learning_rate": 0.01} if weak else {},
            "search_space": {},
            "linear_c": [],  # LightGBM only: ``weak`` must stay weak for the gate to refuse it
        }
    )
    result = train_churn_table(frame, "churn", model_name=NAME, trials=0, config=cfg)
    return result.version


def test_gate_promotes_better_and_refuses_worse_or_equal():
    frame = table()
    runner = CliRunner()
    v1 = train(frame, weak=True)
    client = mlflow.MlflowClient()
    # the first version of a model with no champion became @champion at training time
    assert client.get_model_version_by_alias(NAME, "champion").version == int(v1)
    first = promote(NAME)
    assert not first.promoted and "already @champion" in first.message

    v2 = train(frame, weak=False)  # same table, same split -> same test snapshot
    res = runner.invoke(app, ["promote", NAME])
    assert res.exit_code == 0, res.output
    assert client.get_model_version_by_alias(NAME, "champion").version == int(v2)

    v3 = train(frame, weak=True)
    res = runner.invoke(app, ["promote", NAME])
    assert res.exit_code == 1
    text = " ".join(res.output.split())
    assert f"v{v3} does not beat the champion" in text and "vs" in text
    decision = promote(NAME)
    assert not decision.promoted
    assert decision.challenger_value < decision.champion_value
    assert f"{decision.challenger_value:.4f}" in text and f"{decision.champion_value:.4f}" in text
    assert client.get_model_version_by_alias(NAME, "champion").version == int(v2)

    v4 = train(frame, weak=False)  # identical to the champion: not strictly better
    decision = promote(NAME)
    assert not decision.promoted and decision.challenger_value == decision.champion_value
    assert decision.challenger_version == v4


def test_gate_uses_champion_rescored_on_new_test_data_and_refuses_incomparable():
    v1 = train(table(seed=1), weak=True)  # first version: @champion without a gate
    assert mlflow.MlflowClient().get_model_version_by_alias(NAME, "champion").version == int(v1)
    # a different table with the same columns: different test rows, so training re-scores the
    # champion on the challenger's test rows and promotion compares those two figures
    v2 = train(table(seed=2), weak=False)
    decision = promote(NAME)
    assert decision.promoted and "re-scored" in decision.message
    assert decision.challenger_version == v2 and decision.challenger_value > decision.champion_value
    # a column the champion needs is gone: it cannot score the new test rows -> no comparison
    train(table(seed=3, renamed=True), weak=False)
    decision = promote(NAME)
    assert not decision.promoted and "Cannot compare" in decision.message
