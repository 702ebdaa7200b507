"""Bring your own table: automatic typing of messy columns, CLI train -> promote -> predict
round trip, honest comparison with the baselines, and clear errors."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from customer360.cli import app
from customer360.errors import ConfigError
from customer360.models.tabular import infer_schema, parse_numbers, to_matrix
from customer360.training.churn import binary_labels, train_churn_table
from customer360.training.common import predict_table


def messy_table(n: int = 1500, seed: int = 3) -> pd.DataFrame:
    """A customer table as users export it: numbers as text with thousands separators and
    stray spaces, blanks, N/A, free text, and a non-linear churn rule."""
    rng = np.random.default_rng(seed)
    spend = rng.gamma(2.0, 600.0, n)
    tenure = rng.integers(1, 60, n)
    plan = rng.choice(["basic", "pro", "enterprise"], n, p=[0.5, 0.35, 0.15])
    login = rng.exponential(20.0, n)
    logit = -1.0 + 2.5 * (login > 30) - 1.5 * ((plan == "enterprise") & (tenure > 24))
    logit += 1.2 * (spend < 400) * (plan != "basic")
    churned = rng.uniform(size=n) < 1 / (1 + np.exp(-logit))
    frame = pd.DataFrame(
        {
            "Customer ID": [f"C{i:05d}" for i in range(n)],
            "monthly spend": [f" {v:,.2f} " for v in spend],
            "tenure_months": tenure.astype(str),
            "plan": [f" {p.title()}" if i % 7 == 0 else f"{p} " for i, p in enumerate(plan)],
            "days_since_login": login.round(1),
            "notes": [f"called on {i}" for i in range(n)],
            "Churned?": np.where(churned, "Yes", "No"),
        }
    )
    frame.loc[::29, "monthly spend"] = "   "
    frame.loc[5::41, "tenure_months"] = "N/A"
    frame.loc[frame.index.isin([3, 400]), "Churned?"] = ""
    return frame


def test_infer_schema_types_messy_columns():
    frame = messy_table(300)
    schema = infer_schema(frame, exclude=["Churned?", "Customer ID"])
    assert "monthly spend" in schema.columns and "monthly spend" not in schema.categories
    assert "tenure_months" not in schema.categories
    # case and stray spaces differ between rows; levels are kept as written (trimmed)
    assert set(schema.categories["plan"]) >= {"basic", "pro", "Basic"}
    assert "notes" not in schema.columns
    assert any(n.column == "notes" and n.action == "dropped" for n in schema.notes)
    m = to_matrix(frame, schema)
    spend = m[:, schema.columns.index("monthly spend")]
    assert np.isnan(spend[0]) and np.isnan(spend[29])
    expected = float(frame.loc[1, "monthly spend"].strip().replace(",", ""))
    assert spend[1] == pytest.approx(expected)
    assert np.isnan(m[5, schema.columns.index("tenure_months")])


def test_mostly_numeric_column_keeps_numbers_and_reports_the_strays():
    frame = pd.DataFrame({"x": [str(i) for i in range(99)] + ["oops"], "y": ["a", "b"] * 50})
    schema = infer_schema(frame)
    assert "x" not in schema.categories
    (note,) = [n for n in schema.notes if n.column == "x"]
    assert note.action == "read as missing" and "'oops'" in note.detail


@settings(max_examples=80, deadline=None)
@given(st.floats(min_value=-1e9, max_value=1e9, allow_nan=False), st.booleans())
def test_parse_numbers_reads_formatted_text(value, thousands):
    text = f"  {value:,.3f} " if thousands else f"{value:.3f}  "
    parsed, bad = parse_numbers(pd.Series([text, "", " "]))
    assert not bad.any()
    assert parsed[0] == pytest.approx(round(value, 3), abs=1e-6)
    assert parsed[1:].isna().all()


def test_binary_labels_errors_and_positive_label():
    values = pd.Series(["Yes", "No", " yes", "", "No"])
    y, present, positive = binary_labels(values, column="churn", positive_label="YES")
    assert positive == "yes" and present.tolist() == [True, True, True, False, True]
    assert y.tolist() == [1, 0, 1, 0]
    assert binary_labels(values, column="churn")[2] == "yes"
    with pytest.raises(ConfigError, match="exactly two values"):
        binary_labels(pd.Series(["Yes", "No", "maybe"]), column="churn")
    with pytest.raises(ConfigError, match="'maybe' does not occur in column 'churn'"):
        binary_labels(pd.Series(["1", "0"]), column="churn", positive_label="maybe")
    y, _, positive = binary_labels(pd.Series([0, 1, 1.0, 0]), column="churn")
    assert positive == "1" and y.tolist() == [0, 1, 1, 0]
    with pytest.raises(ConfigError, match="pass --positive-label"):
        binary_labels(pd.Series(["stay", "leave"]), column="status")


def test_table_training_errors_are_clear(tmp_path):
    frame = messy_table(200)
    with pytest.raises(ConfigError, match="Label column 'churn' is not in"):
        train_churn_table(frame, "churn")
    frame["tier"] = np.resize(["a", "b", "c"], len(frame))
    with pytest.raises(ConfigError, match="exactly two values.*3"):
        train_churn_table(frame, "tier")
    with pytest.raises(ConfigError, match="'Maybe' does not occur"):
        train_churn_table(frame, "Churned?", positive_label="Maybe")
    with pytest.raises(ConfigError, match="does not exist"):
        train_churn_table(tmp_path / "missing.csv", "Churned?")


def test_cli_train_promote_predict_round_trip(tmp_path):
    # 4000 rows: with 1500 (300 validation rows) picking the best of 3 trials on validation
    # was noise-level and the tuned model could land below the untuned one on test
    frame = messy_table(4000)
    source = tmp_path / "customers.csv"
    frame.to_csv(source, index=False)
    runner = CliRunner()
    trained = runner.invoke(
        app,
        [
            "train",
            "churn",
            "--table",
            str(source),
            "--label",
            "Churned?",
            "--positive-label",
            "Yes",
            "--id-col",
            "Customer ID",
            "--trials",
            "3",
        ],
    )
    assert trained.exit_code == 0, trained.output
    assert "logistic_regression" in trained.output and "lightgbm_untuned" in trained.output
    assert "mlflow ui --backend-store-uri" in trained.output

    # the report is honest: tuned vs both baselines on the same held-out rows
    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias("churn_byo", "challenger")
    run = client.get_run(version.run_id)
    tuned = run.data.metrics["test_roc_auc"]
    baselines = {
        name: run.data.metrics[f"baseline_{name}_roc_auc"]
        for name in ("logistic_regression", "lightgbm_untuned")
    }
    for name, auc in baselines.items():
        assert tuned >= auc or f"below {name}'s" in " ".join(trained.output.split())
    assert tuned >= max(baselines.values()), (tuned, baselines)
    assert "2 row(s) with a blank 'Churned?'" in " ".join(trained.output.split())
    assert run.data.tags["positive_label"] == "yes"
    # test figures from a model fitted on the training rows only; the registered model was
    # refit on every labelled row (4000 minus the 2 blank labels)
    assert int(run.data.tags["rows_fit_evaluated_model"]) == int(run.data.tags["rows_train"])
    assert run.data.tags["rows_registered_model"] == "3998"
    assert "refit on all 3,998 labelled rows" in " ".join(trained.output.split())

    # the first version of a model with no champion is @champion straight away, and says so
    assert "and @champion (the model had no champion yet)" in " ".join(trained.output.split())
    assert "customer360 predict --model churn_byo --table" in trained.output
    assert client.get_model_version_by_alias("churn_byo", "champion").version == version.version
    promoted = runner.invoke(app, ["promote", "churn_byo"])
    assert promoted.exit_code == 0 and "already @champion" in promoted.output, promoted.output

    out = tmp_path / "scored.csv"
    scored = runner.invoke(  # NAME alone means NAME@champion
        app,
        ["predict", "--model", "churn_byo", "--table", str(source), "--output", str(out)],
    )
    assert scored.exit_code == 0, scored.output
    result = pd.read_csv(out)
    assert list(result.columns) == [
        "Customer ID",
        "churn_probability",
        "reason_1",
        "reason_2",
        "reason_3",
    ]
    assert result["Customer ID"].tolist() == frame["Customer ID"].tolist()
    assert result["churn_probability"].between(0, 1, inclusive="neither").all()
    assert result["reason_1"].str.contains(r" is .* \((?:raises|lowers) risk\)").all()
    assert (
        result[["reason_1", "reason_2", "reason_3"]]
        .stack()
        .str.contains("days since login|monthly spend|plan|tenure months")
        .all()
    )

    # numbers as text and clean numbers give the same predictions
    clean = frame.copy()
    clean["monthly spend"] = pd.to_numeric(
        clean["monthly spend"].str.strip().str.replace(",", ""), errors="coerce"
    )
    clean["tenure_months"] = pd.to_numeric(clean["tenure_months"], errors="coerce")
    again = predict_table("churn_byo@champion", clean, id_col="Customer ID")
    np.testing.assert_allclose(again["churn_probability"], result["churn_probability"], rtol=1e-9)


def test_cli_refuses_label_without_table_and_unknown_alias(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["train", "churn", "--label", "x"])
    assert res.exit_code != 0 and "--table" in str(res.exception)
    frame = messy_table(60)
    source = tmp_path / "t.csv"
    frame.to_csv(source, index=False)
    res = runner.invoke(
        app,
        [
            "predict",
            "--model",
            "ghost@champion",
            "--table",
            str(source),
            "--output",
            str(tmp_path / "o.csv"),
        ],
    )
    assert res.exit_code != 0 and "No registered model 'ghost'" in str(res.exception)


def _selection_record(run_id: str) -> tuple[list[float], dict, str]:
    """What selection decided in a run: the trials' CV losses, the chosen settings and the
    calibration method."""
    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    trials = client.search_runs(
        [run.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{run_id}'",
        order_by=["attributes.start_time ASC"],
    )
    losses = [t.data.metrics["val_binary_logloss"] for t in trials]
    chosen = {k: v for k, v in run.data.params.items() if k.startswith("best_")}
    return losses, chosen, run.data.tags["calibration_method"]


def test_cv_selection_never_sees_the_test_rows():
    from customer360.training.churn import holdout_split, load_churn_config

    cfg = load_churn_config()
    cfg = cfg.model_copy(update={"n_jobs": 1, "byo": cfg.byo.model_copy(update={"cv_folds": 3})})
    frame = messy_table(900)
    y, present, _ = binary_labels(frame["Churned?"], column="Churned?", positive_label="Yes")
    _, test = holdout_split(y, test=cfg.byo.test_fraction, seed=cfg.seed)
    # same labels (so the same split), but the test rows' features scrambled
    scrambled = frame.copy()
    rows = frame.index[present][test]
    for column in ("monthly spend", "days_since_login", "plan"):
        scrambled.loc[rows, column] = frame.loc[rows[::-1], column].to_numpy()
    runs = [
        train_churn_table(
            t,
            "Churned?",
            positive_label="Yes",
            id_col="Customer ID",
            trials=3,
            config=cfg,
            register=False,
        )
        for t in (frame, scrambled)
    ]
    first, second = (_selection_record(r.run_id) for r in runs)
    assert len(first[0]) == 3 and first == second  # selection identical: it never saw test
    assert runs[0].metrics["roc_auc"] != runs[1].metrics["roc_auc"]  # yet test rows differ
    run = mlflow.MlflowClient().get_run(runs[0].run_id)
    assert run.data.tags["cv_folds"] == "3" and run.data.tags["rows_validation"] == "0"
    labelled = int(present.sum())
    assert int(run.data.tags["rows_train"]) + int(run.data.tags["rows_test"]) == labelled
    assert run.data.tags["rows_registered_model"] == str(labelled)


def _family_table(n: int, *, linear: bool, seed: int = 0) -> pd.DataFrame:
    """``linear``: churn log-odds a weighted sum of eight numbers; otherwise a pure
    interaction (the sign of x0 * x1) no linear model can express."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8))
    if linear:
        logit = x @ np.array([1.2, -1.0, 0.8, -0.7, 0.6, -0.5, 0.4, 0.3])
    else:
        logit = 3.0 * np.sign(x[:, 0] * x[:, 1])
    y = rng.uniform(size=n) < 1 / (1 + np.exp(-logit))
    return pd.DataFrame(x, columns=[f"x{i}" for i in range(8)]).assign(churn=y.astype(int))


@pytest.mark.parametrize(("linear", "family"), [(True, "linear"), (False, "lightgbm")])
@pytest.mark.parametrize(
    ("folds", "selected_on"), [(3, "cross-validation"), (0, "validation rows")]
)
def test_family_chosen_by_cv_linear_table_goes_linear_interactions_go_lightgbm(
    linear, family, folds, selected_on
):
    """Both selection paths: CV folds, and the single later validation part the warehouse's
    snapshots use (``cv_folds: 0``)."""
    from customer360.training.churn import load_churn_config

    cfg = load_churn_config()
    cfg = cfg.model_copy(
        update={
            "n_jobs": 1,
            "blend_weights": [],
            "byo": cfg.byo.model_copy(update={"cv_folds": folds}),
        }
    )
    frame = _family_table(900 if folds else 1500, linear=linear)
    result = train_churn_table(frame, "churn", model_name="fam", trials=0, config=cfg)
    run = mlflow.MlflowClient().get_run(result.run_id)
    assert run.data.tags["model_family"] == family, run.data.metrics
    assert run.data.tags["family_selected_on"] == selected_on
    assert result.model_label == f"{family}_tuned"
    prefix = "cv" if folds else "val"
    aucs = {k: v for k, v in run.data.metrics.items() if k.startswith(f"{prefix}_roc_auc_")}
    assert max(aucs, key=aucs.get) == f"{prefix}_roc_auc_{family}", aucs
    if linear:
        assert any("is the linear one" in n for n in result.notes)
    # the registered model (refit on all rows, linear part included) loads and scores
    scored = predict_table("fam", frame)
    assert scored["churn_probability"].between(0, 1).all()
    assert result.metrics["roc_auc"] >= result.baselines["lightgbm_untuned"]["roc_auc"] - 0.01


@pytest.mark.parametrize(
    ("setting", "value", "says"),
    [("linear_c", [0.5, -1.0], "linear_c"), ("linear_knots", [0, 1], "at least 2 knots"),
     ("blend_weights", [1.5], "blend_weights"), ("linear_max_rows", 10, "linear_max_rows")],
)
def test_bad_family_settings_are_refused_when_the_config_is_read(tmp_path, setting, value,
                                                                  says):
    """Not after the trials, as a scikit-learn traceback: the config error names the key."""
    import yaml

    from customer360.errors import ConfigError
    from customer360.training.churn import load_churn_config

    path = tmp_path / "churn.yaml"
    path.write_text(yaml.safe_dump({setting: value}))
    with pytest.raises(ConfigError, match=says):
        load_churn_config(path)
