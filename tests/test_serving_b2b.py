"""Issue 15 item 6 served: /lead_score and /opportunity_score (by id and by payload), the B2B
parts of /customer360, and batch scoring's lead / opportunity files and stored scorings (the
trend's reference), against a real server on the session's trained environment."""

from __future__ import annotations

import datetime as dt
import math

import pandas as pd
import pytest
from serving_env import Server, _environ

from customer360.data.warehouse import connect
from customer360.models.leads import LEAD_FEATURES
from customer360.models.opportunities import OPPORTUNITY_FEATURES

pytestmark = pytest.mark.server

EARLIER_DAYS = 45


@pytest.fixture(scope="module")
def scored(env, tmp_path_factory):
    """A warehouse copy scored twice (an earlier date stored, then batch scoring of the
    snapshot), the batch files, and a server on that warehouse."""
    from customer360.serving.batch import score_customers
    from customer360.serving.sales import load_sales_models, score_sales, store_sales_scores

    base = tmp_path_factory.mktemp("b2b")
    db = env.copy_db(base / "warehouse.duckdb")
    environ = env.env(db)
    keys = ("MLFLOW_TRACKING_URI", "CUSTOMER360_CONFIG_DIR", "CUSTOMER360_DB")
    with _environ(**{k: environ[k] for k in keys}):
        as_of = dt.date.fromisoformat(env.as_of)
        models = load_sales_models()
        with connect(db) as con:
            earlier = score_sales(con, as_of - dt.timedelta(days=EARLIER_DAYS), models)
            store_sales_scores(con, earlier, base / "earlier.parquet")
        report = score_customers(as_of, base / "scores.parquet", db=db)
    files = {p.rsplit("_", 1)[1].removesuffix(".parquet"): pd.read_parquet(p)
             for p in report.sales_outputs}
    server = Server(env, db, base / "server.log")
    try:
        server.wait_ready()
        yield server, files, earlier, db
    finally:
        server.stop()


def ok(resp):
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_batch_writes_leads_opportunities_and_forecast_and_stores_each_scoring(scored, env):
    _, files, earlier, db = scored
    assert set(files) == {"leads", "opportunities", "forecast"}
    leads = files["leads"]
    assert len(leads) > 100 and leads["lead_id"].is_unique
    assert leads["score"].between(1, 100).all() and set(leads["grade"]) <= set("ABCD")
    # the trend compares with the stored earlier scoring: leads scored then move or stay,
    # the others are new
    before = earlier.leads.set_index("lead_id")["score"]
    seen = leads["lead_id"].isin(before.index)
    assert seen.any() and (~seen).any()
    assert (leads.loc[~seen, "trend"] == "new").all()
    delta = leads.loc[seen, "score"].to_numpy() - before[leads.loc[seen, "lead_id"]].to_numpy()
    trend = leads.loc[seen, "trend"].to_numpy()
    assert ((delta >= 5) == (trend == "improving")).all()
    assert ((delta <= -5) == (trend == "declining")).all()
    assert files["opportunities"]["win_probability"].between(0, 1).all()
    forecast = files["forecast"]
    assert (forecast["low"] <= forecast["expected_won"]).all()
    assert (forecast["expected_won"] <= forecast["high"]).all()
    with connect(db, read_only=True) as con:
        dates = con.execute("SELECT as_of, count(*) FROM lead_scores GROUP BY 1 ORDER BY 1"
                            ).fetchall()
        opp_dates = con.execute("SELECT count(DISTINCT as_of) FROM opportunity_scores"
                                ).fetchone()[0]
    assert [d for d, _ in dates] == [dt.date.fromisoformat(env.as_of)
                                     - dt.timedelta(days=EARLIER_DAYS),
                                     dt.date.fromisoformat(env.as_of)]
    assert dates[1][1] == len(leads) and opp_dates == 2


def test_lead_score_by_id_equals_batch_and_by_payload_equals_by_id(scored, env):
    server, files, _, db = scored
    row = files["leads"].sort_values("score").iloc[-1]
    body = ok(server.post("/lead_score", json={"lead_id": row["lead_id"]}))
    assert body["score"] == row["score"] and body["grade"] == row["grade"]
    assert body["trend"] == row["trend"]
    assert math.isclose(body["probability"], row["probability"], rel_tol=1e-9)
    assert body["reasons_for"] and all("raises the chance" in r for r in body["reasons_for"])
    assert all("lowers the chance" in r for r in body["reasons_against"])
    features = _lead_features(env, db, row["lead_id"])
    by_payload = ok(server.post("/lead_score", json={"features": features}))
    assert by_payload["score"] == body["score"] and by_payload["trend"] is None
    assert by_payload["reasons_for"] == body["reasons_for"]


def _lead_features(env, db, lead_id: str) -> dict:
    from customer360.training.leads import lead_snapshot, read_sales_tables

    with connect(db, read_only=True) as con:
        leads, events = read_sales_tables(con)
        _, feats = lead_snapshot(con, leads, events, dt.date.fromisoformat(env.as_of))
    rec = feats.set_index("lead_id").loc[lead_id, list(LEAD_FEATURES)].to_dict()
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in rec.items()}


def test_opportunity_score_by_id_and_payload(scored, env):
    from customer360.models.opportunities import stage_rows
    from customer360.training.opportunities import read_opportunity_tables

    server, files, _, db = scored
    row = files["opportunities"].iloc[0]
    body = ok(server.post("/opportunity_score", json={"opportunity_id": row["opportunity_id"]}))
    assert body["stage"] == row["stage"]
    assert math.isclose(body["win_probability"], row["win_probability"], rel_tol=1e-9)
    assert body["expected_close_date"] == str(row["expected_close_date"].date())
    assert body["close_date_low"] <= body["expected_close_date"] <= body["close_date_high"]
    with connect(db, read_only=True) as con:
        tables = read_opportunity_tables(con)
    rows = stage_rows(tables.opportunities, tables.stages, tables.leads,
                      pd.Timestamp(env.as_of), every_stage=False).set_index("opportunity_id")
    features = rows.loc[row["opportunity_id"], list(OPPORTUNITY_FEATURES)].to_dict()
    by_payload = ok(server.post("/opportunity_score", json={"features": features}))
    assert math.isclose(by_payload["win_probability"], body["win_probability"], rel_tol=1e-9)
    assert by_payload["expected_close_date"] == body["expected_close_date"]


def test_b2b_profile_carries_open_opportunities_and_leads_equal_to_batch(scored):
    server, files, _, _ = scored
    opps = files["opportunities"].dropna(subset=["customer_id"])
    cid = opps["customer_id"].value_counts().index[0]
    body = ok(server.post("/customer360", json={"customer_id": cid}))
    mine = opps[opps["customer_id"] == cid].sort_values("win_probability", ascending=False)
    assert [o["opportunity_id"] for o in body["open_opportunities"]] == list(
        mine["opportunity_id"])
    assert [o["win_probability"] for o in body["open_opportunities"]] == pytest.approx(
        list(mine["win_probability"]))
    leads = files["leads"]
    assert [ld["lead_id"] for ld in body["leads"]] == list(
        leads[leads["customer_id"] == cid].sort_values("score", ascending=False, kind="stable")
        ["lead_id"])


def test_profile_sales_cycle_comes_from_won_opportunities(scored, env):
    from customer360.models.segments import load_segments_config
    from customer360.training.segments import observed_sales_cycles

    server, _, _, db = scored
    with connect(db, read_only=True) as con:
        cycles = observed_sales_cycles(con, dt.date.fromisoformat(env.as_of),
                                       load_segments_config().sales_cycle)
        served = {r[0] for r in con.execute("SELECT customer_id FROM feature_snapshots")
                  .fetchall()}
    cycles = cycles[cycles["customer_id"].isin(served)]
    assert len(cycles) >= 3
    for rec in cycles.head(3).itertuples():
        body = ok(server.post("/customer360", json={"customer_id": rec.customer_id}))
        assert body["classifications"]["sales_cycle"] == rec.cycle_class


@pytest.mark.parametrize("path,body,status,says", [
    ("/lead_score", {"lead_id": "L-nope"}, 404, "not an open lead"),
    ("/lead_score", {}, 400, "exactly one of lead_id or features"),
    ("/lead_score", {"lead_id": "x", "features": {}}, 400, "exactly one"),
    ("/lead_score", {"features": {"lead__age_days": 3}}, 400, "missing"),
    ("/opportunity_score", {"opportunity_id": "O-nope"}, 404, "is not open"),
    ("/opportunity_score", {"features": {"opp__stage": "lead", "bogus": 1}}, 400, "bogus"),
])
def test_bad_requests_are_4xx_naming_the_problem(scored, path, body, status, says):
    server = scored[0]
    resp = server.post(path, json=body)
    assert resp.status_code == status, resp.text
    assert says in resp.json()["error"]


def test_payload_values_are_checked_field_by_field(scored, env):
    server, files, _, db = scored
    features = _lead_features(env, db, files["leads"]["lead_id"].iloc[0])
    bad_category = {**features, "lead__source": "carrier pigeon"}
    resp = server.post("/lead_score", json={"features": bad_category})
    assert resp.status_code == 400 and "features.lead__source" in resp.json()["error"]
    bad_number = {**features, "lead__age_days": "ten"}
    resp = server.post("/lead_score", json={"features": bad_number})
    assert resp.status_code == 400 and "features.lead__age_days" in resp.json()["error"]
