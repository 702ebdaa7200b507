"""The sales department page and the B2B customer card (issue 15 item 6) in Debian's Chromium
driven by Playwright, against one real server (token on) over a copy of the small trained
warehouse, whose open leads and opportunities were also batch-scored: the page's counts,
list, CSV and forecast are batch scoring's numbers (both come from one scoring function)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import httpx
import pandas as pd
import pytest
from serving_env import Server, _environ, chromium, signed_in

pytestmark = [pytest.mark.server, pytest.mark.browser]

TOKEN = "sales-token-321"


@pytest.fixture(scope="module")
def scored(env, tmp_path_factory) -> tuple[Path, dict[str, pd.DataFrame]]:
    """A warehouse copy and its batch-scored leads, opportunities and forecast."""
    import datetime as dt

    from customer360.data.warehouse import connect
    from customer360.serving.sales import load_sales_models, score_sales

    path = env.copy_db(tmp_path_factory.mktemp("webapp_sales") / "warehouse.duckdb")
    environ = env.env(path)
    keys = ("MLFLOW_TRACKING_URI", "CUSTOMER360_CONFIG_DIR", "CUSTOMER360_DB")
    with _environ(**{k: environ[k] for k in keys}), connect(path, read_only=True) as con:
        scores = score_sales(con, dt.date.fromisoformat(env.as_of), load_sales_models())
    return path, {"leads": scores.leads, "opportunities": scores.opportunities,
                  "forecast": scores.forecast}


@pytest.fixture(scope="module")
def server(env, scored):
    db = scored[0]
    with Server(env, db, db.parent / "server.log", token=TOKEN) as srv:
        yield srv


@pytest.fixture(scope="module")
def page(server):
    with chromium() as browser:
        yield signed_in(browser, f"{server.url}/app/departments/sales", TOKEN)


def test_leads_by_grade_list_and_csv(page, server, scored):
    leads = scored[1]["leads"]
    counts = leads["grade"].value_counts()
    page.goto(f"{server.url}/app/departments/sales")
    table = page.get_by_role("table").filter(has=page.get_by_role("columnheader",
                                                                  name="Mean conversion"))
    for grade in "ABCD":
        row = table.get_by_role("row").filter(has=page.get_by_role("link", name=grade,
                                                                   exact=True))
        cell = row.get_by_role("cell").nth(1)
        assert int(cell.inner_text().replace(",", "")) == int(counts.get(grade, 0)), grade
    best = leads["grade"].value_counts().index[0]
    page.get_by_role("link", name=best, exact=True).first.click()
    page.wait_for_url(f"**/app/departments/sales?grade={best}*")
    assert page.get_by_role("heading", name=f"Grade {best} leads").is_visible()
    shown = page.locator("#leads tbody tr")
    assert shown.count() == min(int(counts[best]), 200)
    top = leads[leads["grade"] == best].sort_values(["score", "lead_id"],
                                                    ascending=[False, True]).iloc[0]
    assert shown.first.get_by_role("cell").first.inner_text() == top["lead_id"]
    href = page.get_by_role("link", name="Download CSV").get_attribute("href")
    resp = httpx.get(f"{server.url}{href}", cookies={c["name"]: c["value"]
                                                     for c in page.context.cookies()})
    assert resp.status_code == 200 and "attachment" in resp.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    assert len(rows) == int(counts[best]) and {r["grade"] for r in rows} == {best}
    assert rows[0]["lead_id"] == top["lead_id"]


def test_pipeline_forecast_chart_and_table(page, server, scored):
    forecast = scored[1]["forecast"]
    page.goto(f"{server.url}/app/departments/sales")
    chart = page.get_by_role("img", name="expected won amount per month with its 80% interval")
    assert chart.is_visible()
    assert chart.locator("rect").count() == len(forecast)
    cells = page.locator("#forecast tbody tr").first.get_by_role("cell")
    assert cells.nth(0).inner_text() == forecast["month"].iloc[0]
    assert float(cells.nth(1).inner_text().replace(",", "")) == pytest.approx(
        forecast["expected_won"].iloc[0], abs=0.01)


def test_customer_card_shows_open_opportunities_and_sales_cycle(page, server, scored):
    opps = scored[1]["opportunities"].dropna(subset=["customer_id"])
    cid = opps["customer_id"].value_counts().index[0]
    mine = opps[opps["customer_id"] == cid].sort_values("win_probability", ascending=False)
    page.goto(f"{server.url}/app/customers/{cid}")
    section = page.get_by_role("region", name="Sales pipeline")
    assert section.is_visible()
    assert section.locator("#sales-cycle").inner_text() in {"short", "intermediate", "long",
                                                            "none"}
    table = section.get_by_role("table", name="Open opportunities")
    ids = [r.get_by_role("cell").first.inner_text()
           for r in table.locator("tbody tr").all()]
    assert ids == list(mine["opportunity_id"])


def test_bad_grade_is_refused(page, server):
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    resp = httpx.get(f"{server.url}/app/departments/sales/leads.csv?grade=Z", cookies=cookies)
    assert resp.status_code in (400, 422)
