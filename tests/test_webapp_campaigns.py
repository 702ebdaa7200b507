"""The campaign planner page (/app/campaigns, issue 16) in Debian's Chromium driven by
Playwright, against one real server (token on) over a copy of the small trained warehouse with
randomised campaigns and a stored `campaign plan`: the page's numbers are /campaign_plan's."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import duckdb
import httpx
import pytest
from serving_env import Server, chromium, signed_in

from customer360.serving.webapp.app import money

pytestmark = [pytest.mark.server, pytest.mark.browser]

TOKEN = "campaign-token-789"
STORED_BUDGET, STORED_COST = 300.0, 1.0


@pytest.fixture(scope="module")
def db(env, tmp_path_factory) -> Path:
    """A private copy of the trained warehouse with campaigns and one stored retention plan
    (its MLflow run goes to a store of its own)."""
    from customer360.data.campaigns import CampaignConfig, generate_campaigns
    from customer360.data.warehouse import connect
    from customer360.training.uplift import UpliftConfig, run_campaign_plan

    root = tmp_path_factory.mktemp("webapp_campaigns")
    path = env.copy_db(root / "warehouse.duckdb")
    with connect(path) as con:
        generate_campaigns(con, seed=3, config=CampaignConfig(waves=3))
    with pytest.MonkeyPatch.context() as mp, connect(path) as con:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'plan_mlflow.db'}")
        run_campaign_plan(con, action="retention", budget=STORED_BUDGET, cost=STORED_COST,
                          config=UpliftConfig(n_estimators=20, n_boot=50), store=True)
    return path


@pytest.fixture(scope="module")
def server(env, db):
    with Server(env, db, db.parent / "server.log", token=TOKEN) as srv:
        yield srv


@pytest.fixture(scope="module")
def page(server):
    with chromium() as browser:
        yield signed_in(browser, f"{server.url}/app/campaigns", TOKEN)


def rows_of(db: Path) -> int:
    with duckdb.connect(str(db), read_only=True) as con:
        return sum(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                   for t in ("campaign_scores", "campaign_backtests"))


def test_the_form_shows_what_campaign_plan_returns(page, server, db):
    before = rows_of(db)
    assert page.locator("nav a[aria-current=page]").inner_text() == "Campaigns"
    assert page.locator("#plan").count() == 0  # no plan before the form is sent
    page.fill("#budget", "150")
    page.fill("#cost_per_contact", "0.5")
    page.select_option("#action", "retention")
    page.check("input[name=segments][value=B]")
    page.check("input[name=segments][value=C]")
    page.click("#plan-form button[type=submit]")
    page.wait_for_selector("#plan")
    api = server.post("/campaign_plan", json={
        "budget": 150, "cost_per_contact": 0.5, "action": "retention",
        "segments": ["B", "C"], "limit": 10_000}).json()
    assert api["contacts"] > 0
    assert float(page.get_attribute("#plan-margin", "data-value")) == pytest.approx(
        api["expected_incremental_margin"], rel=1e-12)
    assert page.inner_text("#plan-margin") == money(api["expected_incremental_margin"])
    assert page.inner_text("#plan-cost") == money(api["cost"])
    # the strategies side by side: every backtested strategy with its numbers and interval
    shown = page.locator("#strategy-table tbody tr")
    assert [shown.nth(i).get_attribute("data-strategy") for i in range(shown.count())] == [
        s["strategy"] for s in api["backtest"]]
    assert {"mass_D", "focused_BC", "top_uplift", "top_churn_risk"} <= {
        s["strategy"] for s in api["backtest"]}
    for i, s in enumerate(api["backtest"]):
        row = shown.nth(i)
        assert row.locator(".backtest").inner_text() == money(s["backtest_incremental_margin"])
        assert row.locator(".predicted").inner_text() == money(s["predicted_incremental_margin"])
        assert row.locator(".interval").inner_text() == (
            f"{money(s['ci_low'])} – {money(s['ci_high'])}")
        assert s["ci_low"] <= s["backtest_incremental_margin"] <= s["ci_high"]
    assert page.locator("#strategy-chart svg rect").count() >= len(api["backtest"])
    # the contact list: the API's customers, only from B and C; the CSV has all contacts
    ids = page.locator("#contact-table tbody tr td:first-child").all_inner_texts()
    assert ids == [c["customer_id"] for c in api["customers"]][: len(ids)]
    assert {c["value_segment"] for c in api["customers"]} <= {"B", "C"}
    href = page.get_attribute("#csv", "href")
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    got = httpx.get(f"{server.url}{href}", cookies=cookies, timeout=30)
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/csv")
    exported = list(csv.DictReader(io.StringIO(got.text)))
    assert [r["customer_id"] for r in exported] == [c["customer_id"] for c in api["customers"]]
    assert len(exported) == api["contacts"]
    assert rows_of(db) == before  # a GET writes nothing


def test_bad_input_is_a_clear_message_not_a_5xx(page, server):
    response = page.goto(f"{server.url}/app/campaigns?budget=-5&cost_per_contact=1")
    assert response.status == 400
    assert "budget" in page.inner_text("#plan-error")
    assert "greater than 0" in page.inner_text("#plan-error")
    # the same rules and wording as /campaign_plan's 400s: field, what is wrong, the fix
    response = page.goto(f"{server.url}/app/campaigns?budget=10&cost_per_contact=")
    assert response.status == 400
    assert "cost_per_contact: Field required (required: add it)" in page.inner_text("#plan-error")
    response = page.goto(f"{server.url}/app/campaigns?budget=10&cost_per_contact=0")
    assert response.status == 400
    assert "cost_per_contact: Input should be greater than or equal to 0.01" in page.inner_text(
        "#plan-error")
    response = page.goto(f"{server.url}/app/campaigns?budget=100&cost_per_contact=1"
                         "&action=up_sell")
    assert response.status == 400
    assert "customer360 campaign plan --action up_sell" in page.inner_text("#plan-error")
