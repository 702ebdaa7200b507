"""Uplift and the campaign planner (issue 16) on a real synthetic warehouse with randomised
campaigns and known true effects; one plan is run through the CLI and checked against them."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from customer360.cli import app
from customer360.data.campaigns import CampaignConfig, generate_campaigns, load_campaign_log
from customer360.data.synthetic import generate_warehouse
from customer360.errors import CampaignError, ModelError
from customer360.models.uplift import UpliftLearner, gain_curve, true_gain_auc
from customer360.training.uplift import fit_uplift

CUSTOMERS = 10_000
BUDGET, COST = 600.0, 1.0


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """A 10k warehouse with three quarterly campaign waves, and one retention plan made by
    `customer360 campaign plan` (MLflow store and outputs in tmp paths)."""
    root = tmp_path_factory.mktemp("uplift")
    db = root / "w.duckdb"
    generate_warehouse(db, n_customers=CUSTOMERS, seed=11, campaigns=CampaignConfig(waves=3))
    cfg = root / "campaigns.yaml"
    cfg.write_text("n_estimators: 60\nn_boot: 200\n")
    out = root / "plan"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
        result = CliRunner().invoke(app, [
            "campaign", "plan", "--db", str(db), "--budget", str(BUDGET),
            "--cost-per-contact", str(COST), "--action", "retention", "--output", str(out),
            "--config", str(cfg),
        ])
        assert result.exit_code == 0, result.output
        import mlflow

        run = mlflow.search_runs(experiment_names=["campaign_plan"], output_format="list")[0]
        artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id,
                                                                          "plots")]
    return {"db": db, "out": out, "output": result.output, "run": run, "artifacts": artifacts,
            "config": cfg}


def test_generator_writes_a_randomised_holdout_and_the_truth(planned):
    with duckdb.connect(str(planned["db"]), read_only=True) as con:
        log = load_campaign_log(con)
        truth = con.execute("SELECT * FROM truth_campaign_effects").df()
    assert set(log["arm"]) == {"treatment", "control"}
    share = (log["arm"] == "treatment").mean()
    assert 0.47 < share < 0.53
    assert set(log["action"]) == {"retention", "cross_sell", "up_sell"}
    effect = truth["p_treated"] - truth["p_control"]
    assert (effect < -1e-4).mean() > 0.05, "some customers must react negatively"
    assert (effect > 1e-4).mean() > 0.2
    # the effect varies with churn risk (retention) and is zero for customers already gone
    ret = truth[truth["action"] == "retention"]
    assert np.corrcoef(ret["churn_risk"], ret["p_treated"] - ret["p_control"])[0, 1] > 0.1
    gone = truth["churn_risk"] == 1.0
    assert gone.any() and np.allclose(effect[gone], 0.0)


def test_default_generator_output_is_unchanged(small_warehouse_master):
    with duckdb.connect(str(small_warehouse_master), read_only=True) as con:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables")
                  .fetchall()}
    assert not tables & {"campaigns", "campaign_contacts", "truth_campaign_effects"}


def test_uplift_targeting_beats_churn_risk_targeting_on_the_truth(planned):
    m = json.loads((planned["out"] / "metrics.json").read_text())
    # on the generator's true effects of the held-out campaign
    assert m["true_qini_purchase__uplift"] > m["true_qini_purchase__churn_risk"] + 0.05
    assert m["true_qini_purchase__uplift"] > m["true_qini_purchase__propensity"]
    # and on the randomised outcomes themselves (scikit-uplift's Qini coefficient)
    assert m["qini__uplift"] > m["qini__churn_risk"]


def test_plan_interval_covers_the_true_incremental_margin(planned):
    table = pd.read_csv(planned["out"] / "strategies.csv")
    assert list(table["strategy"]) == ["mass_D", "focused_BC", "top_uplift", "top_churn_risk",
                                       "top_propensity"]
    assert (table["contacts"] <= BUDGET / COST).all()
    assert (table["contacts"] > 0).all()
    for row in table.to_dict("records"):
        assert row["ci_low"] <= row["true_incremental_margin"] <= row["ci_high"], row
        assert row["ci_low"] <= row["backtest_incremental_margin"] <= row["ci_high"]
    assert table["ope_dr_per_customer"].notna().all()


def test_plan_writes_contacts_plots_and_mlflow_run(planned):
    contacts = pd.read_csv(planned["out"] / "contacts.csv")
    assert 0 < len(contacts) <= BUDGET / COST
    assert contacts["customer_id"].is_unique
    assert (contacts["expected_net_margin"] > 0).all()
    assert contacts["expected_net_margin"].is_monotonic_decreasing
    # The list follows the uplift ranking by default; the strategy the backtest favours is
    # marked and, when it is another, named with the option that follows it.
    strategies = pd.read_csv(planned["out"] / "strategies.csv")
    best = strategies.loc[strategies["backtest_incremental_margin"].idxmax(), "strategy"]
    assert strategies.loc[strategies["best_backtest"], "strategy"].tolist() == [best]
    assert strategies.loc[strategies["chosen"], "strategy"].tolist() == ["top_uplift"]
    assert planned["run"].data.params["strategy"] == "top_uplift"
    output = " ".join(planned["output"].split())
    assert "as top_uplift would" in output
    assert (f"rerun with --strategy {best}" in output) == (best != "top_uplift")
    for name in ("qini_curve", "incremental_margin_by_decile", "incremental_margin_by_segment"):
        assert (planned["out"] / f"{name}.png").stat().st_size > 1000
        assert f"plots/{name}.png" in planned["artifacts"]
    assert planned["run"].data.params["action"] == "retention"
    assert "true_qini_purchase__uplift" in planned["run"].data.metrics
    assert "Incremental margin net of cost" in planned["output"]


def test_plan_follows_the_strategy_asked_for_and_refuses_an_unknown_one(planned, tmp_path):
    out = tmp_path / "plan"
    args = ["campaign", "plan", "--db", str(planned["db"]), "--budget", str(BUDGET),
            "--cost-per-contact", str(COST), "--action", "retention",
            "--config", str(planned["config"])]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
        bad = CliRunner().invoke(app, args + ["--strategy", "everyone"])
        assert bad.exit_code != 0 and isinstance(bad.exception, CampaignError)
        assert "strategy 'everyone' is unknown; use best_backtest or one of" in str(
            bad.exception)
        result = CliRunner().invoke(app, args + ["--strategy", "top_churn_risk",
                                                 "--output", str(out)])
    assert result.exit_code == 0, result.output
    contacts = pd.read_csv(out / "contacts.csv")
    assert 0 < len(contacts) <= BUDGET / COST
    assert contacts["churn_probability"].is_monotonic_decreasing
    strategies = pd.read_csv(out / "strategies.csv")
    assert strategies.loc[strategies["chosen"], "strategy"].tolist() == ["top_churn_risk"]
    assert "as top_churn_risk would" in " ".join(result.output.split())


def test_a_log_without_control_is_refused(small_warehouse):
    with duckdb.connect(str(small_warehouse)) as con:
        generate_campaigns(con, seed=1, config=CampaignConfig(waves=2))
        con.execute("UPDATE campaigns SET control_group = NULL "
                    "WHERE action = 'retention' AND started_at = (SELECT max(started_at) "
                    "FROM campaigns)")
        with pytest.raises(CampaignError, match=r"campaign CMP-\d{8}-retention names no "
                           r"control group .*arm='control'"):
            fit_uplift(con, "retention")
        con.execute("UPDATE campaigns SET control_group = 'control'")
        con.execute("DELETE FROM campaign_contacts WHERE arm = 'control' "
                    "AND campaign_id LIKE '%cross_sell'")
        with pytest.raises(CampaignError, match="has 0 rows in its control group 'control'"):
            load_campaign_log(con, action="cross_sell")
        load_campaign_log(con, action="up_sell")  # untouched campaigns still load
    result = CliRunner().invoke(app, ["campaign", "plan", "--db", str(small_warehouse),
                                      "--budget", "10", "--cost-per-contact", "1",
                                      "--action", "cross_sell"])
    assert result.exit_code != 0
    assert isinstance(result.exception, CampaignError)


def test_learners_recover_a_known_effect_and_refuse_one_arm():
    rng = np.random.default_rng(3)
    n = 6000
    X = rng.normal(size=(n, 4))
    t = rng.random(n) < 0.5
    tau = np.where(X[:, 0] > 0, 0.25, -0.1)
    y = (rng.random(n) < 0.3 + t * tau).astype(int)
    for method in ("t", "x", "dr"):
        m = UpliftLearner(method=method, n_estimators=60).fit(X, y, t, propensity=0.5)
        assert true_gain_auc(tau, m.predict_effect(X)) > 0.5, method
    with pytest.raises(ModelError, match="both arms"):
        UpliftLearner().fit(X, y, np.ones(n, bool), propensity=0.5)
    share, gain = gain_curve(y, tau, t)
    assert gain[0] == 0 and share[-1] == 1.0


def test_campaign_plan_endpoint_logic_cuts_the_stored_ranking(planned):
    from customer360.serving.campaign import CampaignPlanRequest, plan_from_scores

    with duckdb.connect(str(planned["db"]), read_only=True) as con:
        full = plan_from_scores(con, CampaignPlanRequest(budget=BUDGET, cost_per_contact=COST))
        half = plan_from_scores(con, CampaignPlanRequest(budget=BUDGET / 2,
                                                         cost_per_contact=COST, limit=5))
        only_d = plan_from_scores(con, CampaignPlanRequest(budget=BUDGET, cost_per_contact=COST,
                                                           segments=["D"]))
        # segments are a Literal of configs/segments.yaml's value segments (review 1)
        with pytest.raises(ValueError, match="Input should be 'A', 'B', 'C' or 'D'"):
            plan_from_scores(con, CampaignPlanRequest(budget=1, cost_per_contact=1,
                                                      segments=["Z"]))
        from customer360.errors import NotFoundError

        with pytest.raises(NotFoundError, match="campaign plan --action up_sell"):
            plan_from_scores(con, CampaignPlanRequest(action="up_sell", budget=1,
                                                      cost_per_contact=1))
    contacts = pd.read_csv(planned["out"] / "contacts.csv")
    # the same customers as the CLI's contact list for the same budget and cost
    assert full.contacts == len(contacts)
    assert [c.customer_id for c in full.customers] == contacts["customer_id"].head(100).tolist()
    assert full.expected_incremental_margin == pytest.approx(
        contacts["expected_net_margin"].sum(), rel=1e-6)
    assert half.contacts <= BUDGET / 2 and len(half.customers) == min(5, half.contacts)
    assert {c.value_segment for c in only_d.customers} <= {"D"}
    assert [b["strategy"] for b in full.backtest][:2] == ["mass_D", "focused_BC"]


def test_an_ingested_log_without_control_is_refused(small_warehouse, tmp_path):
    from customer360.data.campaigns import create_campaign_tables
    from customer360.data.contracts import CAMPAIGN_CONTACTS, CAMPAIGNS
    from customer360.data.ingest import ingest_file
    from customer360.data.warehouse import connect

    (tmp_path / "campaigns.csv").write_text(
        "campaign_id,action,channel,started_at,horizon_days,control_group,treatment_share\n"
        "K1,retention,email,2026-01-05,90,,1.0\n"
        "K2,bogus,email,2026-01-05,90,control,0.5\n")
    (tmp_path / "contacts.csv").write_text(
        "contact_id,campaign_id,customer_id,arm,treatment_probability,purchased,margin\n"
        "X1,K1,C00000001,treatment,1.0,true,12.5\n"
        "X2,K1,C00000002,treatment,1.0,false,0\n")
    with connect(small_warehouse) as con:
        create_campaign_tables(con)
        header = ingest_file(con, CAMPAIGNS, tmp_path / "campaigns.csv")
        rows = ingest_file(con, CAMPAIGN_CONTACTS, tmp_path / "contacts.csv")
        assert (header.rows_loaded, header.rows_quarantined) == (1, 1)
        assert header.reasons == {"action: value not allowed": 1}
        assert rows.rows_loaded == 2
        with pytest.raises(CampaignError, match="campaign K1 names no control group"):
            load_campaign_log(con)
