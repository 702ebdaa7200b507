"""Bring your own table with a date column (issue 13): time-ordered hold-out and folds."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from customer360.errors import ConfigError
from customer360.training.churn import (
    find_time_column,
    load_churn_config,
    time_holdout,
    time_ordered_splits,
    train_churn_table,
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 40), min_size=12, max_size=200),
    st.integers(2, 6),
)
def test_time_ordered_folds_never_train_on_later_rows_than_they_validate_on(days, folds):
    times = np.asarray(days)
    if len(np.unique(times)) < 2:
        with pytest.raises(ConfigError, match="too few distinct values"):
            time_ordered_splits(times, folds)
        return
    splits = time_ordered_splits(times, folds)
    held_all = np.concatenate([h for _, h in splits])
    assert len(held_all) == len(np.unique(held_all))  # every row validated at most once
    for fit, held in splits:
        assert len(fit) and len(held)
        assert times[fit].max() < times[held].min()
    assert set(times[held_all]) >= {times.max()}  # the latest rows are validated on
    # expanding windows: each fold fits on everything before its held-out block
    for fit, held in splits:
        assert set(fit) == set(np.flatnonzero(times < times[held].min()))


def test_time_holdout_takes_the_latest_rows_whole_days():
    times = np.array([1, 1, 2, 2, 3, 3, 4, 4, 5, 5])
    train, test = time_holdout(times, test=0.2)
    assert times[test].min() > times[train].max() and test.sum() == 2


def _dated_table(n: int = 700, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    day = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 365, n), unit="D")
    x = rng.normal(size=(n, 3))
    y = rng.uniform(size=n) < 1 / (1 + np.exp(-(1.5 * x[:, 0] - x[:, 1])))
    return pd.DataFrame({
        "signup": day.strftime("%Y-%m-%d"), "a": x[:, 0], "b": x[:, 1], "c": x[:, 2],
        "left": y.astype(int),
    })


def test_a_date_column_is_found_and_orders_the_split(tmp_path):
    cfg = load_churn_config()
    cfg = cfg.model_copy(update={  # one linear candidate, no blends: the split is under test
        "n_jobs": 1, "linear_c": [1.0], "linear_knots": [0], "blend_weights": [],
        "byo": cfg.byo.model_copy(update={"cv_folds": 3}),
    })
    frame = _dated_table(500)
    result = train_churn_table(frame, "left", trials=0, config=cfg, register=False)
    tags = mlflow.MlflowClient().get_run(result.run_id).data.tags
    assert tags["time_col"] == "signup" and tags["split"].startswith("time-ordered")
    assert tags["test_from"] > tags["train_until"]
    test_rows = int(tags["rows_test"])
    assert test_rows == int((frame["signup"] >= tags["test_from"][:10]).sum())
    assert 0.15 * len(frame) < test_rows < 0.25 * len(frame)
    assert tags["rows_registered_model"] == str(len(frame))
    assert any("dated" in note and "Selection" in note for note in result.notes)


def test_time_column_errors_are_clear():
    frame = _dated_table(60)
    with pytest.raises(ConfigError, match="Time column 'when' is not in t.csv"):
        find_time_column(frame, exclude=[], time_col="when", source="t.csv")
    with pytest.raises(ConfigError, match="'a' of t.csv: 60 of 60 value"):
        find_time_column(frame.astype({"a": str}), exclude=[], time_col="a", source="t.csv")
    two = frame.assign(renewal=frame["signup"])
    with pytest.raises(ConfigError, match="several date columns .*--time-col"):
        find_time_column(two, exclude=[], time_col=None, source="t.csv")
    assert find_time_column(two, exclude=[], time_col="renewal", source="t.csv") == "renewal"
