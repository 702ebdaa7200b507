"""The web app (customer360.serving.webapp) in Debian's Chromium driven by Playwright, against
one real server (token on) over the small trained warehouse of tests/serving_env.py.

Set ``CUSTOMER360_SCREENSHOTS=docs/screenshots`` to refresh the README's screenshots.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import re
from pathlib import Path

import duckdb
import httpx
import numpy as np
import pytest
from serving_env import Server, add_identities, chromium, signed_in

pytestmark = [pytest.mark.server, pytest.mark.browser]

TOKEN = "webapp-token-456"



@pytest.fixture(scope="module")
def db(env, tmp_path_factory) -> Path:
    """A private copy of the trained warehouse with ``customer_segments`` written."""
    from customer360.data.warehouse import connect
    from customer360.serving.webapp.search import build_search_index
    from customer360.training.segments import run_segments

    path = env.copy_db(tmp_path_factory.mktemp("webapp") / "warehouse.duckdb")
    with connect(path) as con:
        run_segments(con, dt.date.fromisoformat(env.as_of), with_clv=True)
        # source records resolved with the CRM as master (unified ids = customer ids)
        add_identities(con)
        build_search_index(con)
    return path


@pytest.fixture(scope="module")
def server(env, db):
    with Server(env, db, db.parent / "server.log", token=TOKEN) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def page(browser, server):
    """A signed-in tab."""
    tab = signed_in(browser, f"{server.url}/app/", TOKEN)
    yield tab
    tab.context.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    out = Path(os.environ.get("CUSTOMER360_SCREENSHOTS") or tmp_path_factory.mktemp("shots"))
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")
def customer(db) -> str:
    """A customer with purchases and at least one offer."""
    with duckdb.connect(str(db), read_only=True) as con:
        (cid,) = con.execute(
            "SELECT customer_id FROM feature_snapshots WHERE txn__orders__all > 2 "
            "ORDER BY customer_id LIMIT 1 OFFSET 3"
        ).fetchone()
    return cid


def feedback_rows(db: Path, customer_id: str) -> int:
    from customer360.data.warehouse import table_exists

    with duckdb.connect(str(db), read_only=True) as con:
        if not table_exists(con, "nbo_feedback"):  # created by the first feedback
            return 0
        return con.execute(
            "SELECT count(*) FROM nbo_feedback WHERE customer_id = ?", [customer_id]
        ).fetchone()[0]


def test_pages_need_the_session(browser, server, customer):
    context = browser.new_context()
    tab = context.new_page()
    for path in ("/app/", f"/app/customers/{customer}", "/app/segments"):
        tab.goto(f"{server.url}{path}")
        assert "/app/login" in tab.url, path
        assert tab.locator("#token").is_visible()
    tab.fill("#token", "wrong")
    tab.click("button[type=submit]")
    assert tab.locator(".error").is_visible()
    assert not any(c["name"] == "c360_session" for c in context.cookies())
    context.close()
    # the API itself still needs the bearer header
    assert httpx.post(f"{server.url}/churn", json={"customer_id": customer}).status_code == 401


def test_session_cookie_is_httponly_and_strict(page):
    session = next(c for c in page.context.cookies() if c["name"] == "c360_session")
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert TOKEN not in session["value"]


def test_search_finds_the_customer(page, server, customer, shots):
    page.goto(f"{server.url}/app/")
    page.fill("input[name=q]", customer.lower())
    page.click("form.search button")
    link = page.locator("#results a", has_text=customer)
    assert link.count() == 1
    page.screenshot(path=shots / "search.png", full_page=True)
    link.click()
    page.wait_for_url(f"**/app/customers/{customer}")
    page.goto(f"{server.url}/app/?q=no-such-customer")
    assert page.locator(".empty").is_visible()


def test_search_finds_a_customer_by_email(page, server, db):
    with duckdb.connect(str(db), read_only=True) as con:
        email, system, customer_id = con.execute("""
            SELECT r.email, r.source_system, x.customer_id FROM identity_records r
            JOIN identity_crosswalk x USING (record_key) WHERE r.std_email IS NOT NULL
            ORDER BY r.record_key LIMIT 1""").fetchall()[0]
    page.goto(f"{server.url}/app/")
    page.get_by_label("search").fill(f"  {email.upper()} ")
    page.get_by_role("button", name="Search").click()
    row = page.locator("#results tbody tr").first
    assert row.get_by_role("link").inner_text() == customer_id
    # the raw value is shown as the source system holds it; the same email may sit in
    # several of the customer's records, so any of them may be the one named
    text = " ".join(row.inner_text().lower().split())
    assert f"email {' '.join(email.lower().split())} in " in text and " record " in text


def test_hostile_search_queries_get_a_page(page, server):
    """Over HTTP: wildcards, quotes, parameter markers, NUL, non-ASCII and a 5,000-character
    query each answer 200 with the search page, and the same request twice the same rows."""
    page.goto(f"{server.url}/app/")
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    with httpx.Client(cookies=cookies, timeout=60) as client:
        for q in ["%", "_", "\\", "' OR 1=1 --", "$key", "@", "+", "@@@", "\x00", "ann\u0301",
                  "Łódź", "0" * 30, "x" * 5000, "+99 999 999 999 999"]:
            first, again = (client.get(f"{server.url}/app/", params={"q": q}) for _ in "12")
            assert first.status_code == again.status_code == 200, q
            assert "Find a customer" in first.text and "Traceback" not in first.text, q
            rows = [r.text.count("<tr>") for r in (first, again)]
            assert rows[0] == rows[1], q


def test_card_matches_customer360(page, server, customer, shots):
    api = server.post("/customer360", json={"customer_id": customer}).json()
    page.goto(f"{server.url}/app/customers/{customer}")
    shown = float(page.get_attribute("#churn-probability", "data-value"))
    assert shown == pytest.approx(api["churn"]["churn_probability"], abs=1e-12)
    assert page.get_attribute("#value-segment", "data-value") == api["value_segment"]
    offers = page.locator("#offers tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.offer)"
    )
    assert offers == [o["offer_id"] for o in api["offers"]]
    assert page.locator("#churn-reasons li").count() == len(api["churn"]["reasons"])
    assert page.locator(".chart svg").count() >= 1
    assert page.locator("#timeline tbody tr").count() > 0
    page.screenshot(path=shots / "customer.png", full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=shots / "customer_phone.png", full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})


def test_profile_and_card_show_golden_attributes_with_their_sources(page, server, db, shots):
    # issue 14: the API's identity block and the card's Identity section say the same.
    with duckdb.connect(str(db), read_only=True) as con:
        (cid,) = con.execute(
            "SELECT customer_id FROM identity_crosswalk WHERE customer_id IN "
            "(SELECT customer_id FROM feature_snapshots) GROUP BY customer_id "
            "HAVING count(*) >= 2 ORDER BY customer_id LIMIT 1").fetchone()
        golden = con.execute("SELECT * FROM identity_golden WHERE customer_id = ?", [cid]
                             ).df().iloc[0]
        records = con.execute("SELECT source_system, source_record_id FROM identity_crosswalk "
                              "WHERE customer_id = ? ORDER BY 1, 2", [cid]).fetchall()
    api = server.post("/customer360", json={"customer_id": cid}).json()
    identity = api["identity"]
    by_attr = {g["attribute"]: g for g in identity["golden"]}
    assert by_attr["surname"]["value"] == golden["surname"]
    assert (f'{by_attr["surname"]["source_system"]}:{by_attr["surname"]["source_record_id"]}'
            == golden["surname_source"])
    assert sorted((r["source_system"], r["source_record_id"])
                  for r in identity["source_records"]) == sorted(records)
    assert ("crm", cid) in records  # the CRM record's id is the warehouse's customer id
    page.goto(f"{server.url}/app/customers/{cid}")
    section = page.get_by_role("region", name="Identity")
    rows = section.locator("#golden-record tbody tr")
    shown = {r.locator("td").nth(1).inner_text(): r.locator("td").nth(2).inner_text()
             for r in rows.all()}
    for g in identity["golden"]:
        assert shown[g["value"]] == f'{g["source_system"]} {g["source_record_id"]}'
    assert section.locator("#source-records tbody tr").count() == len(records)
    assert f"Source records ({len(records)})" in section.inner_text()
    section.screenshot(path=shots / "customer_identity.png")
    # A customer without source records: the card says so, the API gives null.
    with duckdb.connect(str(db), read_only=True) as con:
        (other,) = con.execute(
            "SELECT customer_id FROM feature_snapshots WHERE customer_id NOT IN "
            "(SELECT customer_id FROM identity_crosswalk) ORDER BY customer_id LIMIT 1"
        ).fetchone()
    assert server.post("/customer360", json={"customer_id": other}).json()["identity"] is None
    page.goto(f"{server.url}/app/customers/{other}")
    assert "No identity resolution for this customer" in page.get_by_role(
        "region", name="Identity").inner_text()


def test_accepting_an_offer_stores_one_feedback_row(page, server, db, customer):
    before = feedback_rows(db, customer)
    page.goto(f"{server.url}/app/customers/{customer}")
    first = page.locator("#offers tbody tr").first
    offer = first.get_attribute("data-offer")
    first.locator("button.ok").click()
    page.wait_for_selector(".notice")
    assert offer in page.inner_text(".notice")
    assert feedback_rows(db, customer) == before + 1
    with duckdb.connect(str(db), read_only=True) as con:
        accepted = con.execute(
            "SELECT accepted FROM nbo_feedback WHERE customer_id = ? AND offer_id = ? "
            "ORDER BY ts DESC LIMIT 1", [customer, offer],
        ).fetchone()[0]
    assert accepted is True


def test_post_without_csrf_is_refused(page, server, db, customer):
    before = feedback_rows(db, customer)
    offer = server.post("/customer360", json={"customer_id": customer}).json()["offers"][0]
    resp = page.context.request.post(
        f"{server.url}/app/customers/{customer}/feedback",
        form={"offer_id": offer["offer_id"], "accepted": "1"},
    )
    assert resp.status == 403
    forged = page.context.request.post(
        f"{server.url}/app/customers/{customer}/feedback",
        form={"offer_id": offer["offer_id"], "accepted": "1", "csrf_token": "forged"},
    )
    assert forged.status == 403
    assert feedback_rows(db, customer) == before


def test_segments_page_counts_equal_the_table(page, server, db, shots):
    with duckdb.connect(str(db), read_only=True) as con:
        expected = dict(con.execute(
            "SELECT value_segment, count(*) FROM customer_segments GROUP BY 1"
        ).fetchall())
        grid = {(r, f): n for r, f, n in con.execute(
            "SELECT rfm_r, rfm_f, count(*) FROM customer_segments GROUP BY 1, 2"
        ).fetchall()}
    page.goto(f"{server.url}/app/segments")
    shown = {
        row.get_attribute("data-segment"): int(row.locator("[data-count]").get_attribute(
            "data-count"))
        for row in page.locator("#segment-table tbody tr").all()
    }
    assert shown == expected
    cells = page.locator("#rfm-grid td[data-count]").evaluate_all(
        "cells => cells.map(c => [+c.dataset.r, +c.dataset.f, +c.dataset.count])"
    )
    assert {(r, f): n for r, f, n in cells if n} == grid
    page.screenshot(path=shots / "segments.png", full_page=True)


def test_segment_list_and_csv_export(page, server, db, shots):
    page.goto(f"{server.url}/app/segments")
    page.locator("#segment-table tbody tr[data-segment=A] a").first.click()
    page.wait_for_url("**/app/segments/customers?segment=A")
    listed = page.locator("#members tbody tr td:first-child").all_inner_texts()
    page.screenshot(path=shots / "segment_list.png")
    resp = page.context.request.get(server.url + page.get_attribute("#csv", "href"))
    assert resp.status == 200 and resp.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(resp.text())))
    with duckdb.connect(str(db), read_only=True) as con:
        members = [r[0] for r in con.execute(
            "SELECT customer_id FROM customer_segments WHERE value_segment = 'A' "
            "ORDER BY customer_id"
        ).fetchall()]
    assert [r["customer_id"] for r in rows] == listed == members
    assert {r["value_segment"] for r in rows} == {"A"}


def test_get_writes_nothing(server, db, customer):
    """A GET of the feedback address is not a way to record feedback."""
    before = feedback_rows(db, customer)
    resp = httpx.get(f"{server.url}/app/customers/{customer}/feedback?offer_id=x&accepted=1")
    assert resp.status_code in (303, 405)
    assert feedback_rows(db, customer) == before



# --- issue 18, second slice: Pareto lists, departments, models ---------------------------------


def csv_rows(page, url: str) -> list[dict]:
    resp = page.context.request.get(url)
    assert resp.status == 200 and resp.headers["content-type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(resp.text())))


def snapshot_column(db: Path, column: str) -> dict[str, float]:
    with duckdb.connect(str(db), read_only=True) as con:
        return dict(con.execute(
            f"SELECT customer_id, coalesce({column}, 0) FROM feature_snapshots "
            "WHERE as_of = (SELECT max(as_of) FROM feature_snapshots)"
        ).fetchall())


def test_pareto_figures_and_their_lists(page, server, db, shots):
    """The headline share equals the one computed from the snapshot; each figure links to
    its customers, and the CSV holds them."""
    import math

    margin = snapshot_column(db, "txn__margin_sum__365d")
    orders = snapshot_column(db, "txn__orders__all")
    profit = snapshot_column(db, "txn__profitability__365d")
    buyers = sorted((margin[c] for c in margin if orders[c] >= 1), reverse=True)
    k = math.ceil(0.2 * len(buyers))
    page.goto(f"{server.url}/app/segments")
    shown = float(page.locator("#pareto dd").first.get_attribute("data-share"))
    assert shown == pytest.approx(sum(buyers[:k]) / sum(buyers), rel=1e-9)
    assert page.locator("svg[aria-label^='Pareto curves'] polyline").count() == 2
    page.screenshot(path=shots / "segments.png", full_page=True)

    page.locator("#pareto a", has_text="of buyers").click()
    page.wait_for_url("**/app/segments/pareto/top-margin")
    top = csv_rows(page, server.url + page.get_attribute("#csv", "href"))
    assert len(top) == k
    assert sum(margin[r["customer_id"]] for r in top) == pytest.approx(sum(buyers[:k]))

    negative = {c for c, v in profit.items() if v < 0}
    page.goto(f"{server.url}/app/segments")
    assert int(page.get_attribute("#negative-count", "data-count")) == len(negative)
    rows = csv_rows(page, f"{server.url}/app/segments/pareto/negative.csv")
    assert {r["customer_id"] for r in rows} == negative
    values = [float(r["profitability"]) for r in rows]
    assert values == sorted(values)


@pytest.mark.parametrize("department", ["marketing", "sales", "finance", "service"])
def test_department_counts_equal_the_segments_table(page, server, db, department):
    column = f"lens_{department}"
    with duckdb.connect(str(db), read_only=True) as con:
        expected = dict(con.execute(
            f"SELECT {column}, count(*) FROM customer_segments GROUP BY 1").fetchall())
    page.goto(f"{server.url}/app/departments/{department}")
    assert page.locator("nav a[aria-current=page]").inner_text() == department.capitalize()
    shown = {
        row.get_attribute("data-class"): int(row.locator("[data-count]").get_attribute(
            "data-count"))
        for row in page.locator("#classes tbody tr").all()
    }
    flags = {"open_complaints"} if department == "service" else set()
    assert {k: v for k, v in shown.items() if k not in flags} == expected
    if flags:
        complaints = snapshot_column(db, "svc__open_complaints__all")
        assert shown["open_complaints"] == sum(v > 0 for v in complaints.values())


def test_department_filter_and_csv(page, server, db, shots):
    with duckdb.connect(str(db), read_only=True) as con:
        cls, segment = con.execute(
            "SELECT lens_sales, value_segment FROM customer_segments GROUP BY 1, 2 "
            "ORDER BY count(*) DESC LIMIT 1").fetchone()
        expected = {r[0] for r in con.execute(
            "SELECT customer_id FROM customer_segments WHERE lens_sales = ? "
            "AND value_segment = ?", [cls, segment]).fetchall()}
    page.goto(f"{server.url}/app/departments/sales")
    page.select_option("select[name=cls]", cls)
    page.select_option("select[name=value_segment]", segment)
    page.click("form.filters button")
    page.wait_for_url(f"**/app/departments/sales?cls={cls}*")
    listed = page.locator("#members tbody tr td:first-child").all_inner_texts()
    assert set(listed) <= expected and len(listed) == min(len(expected), 200)
    rows = csv_rows(page, server.url + page.get_attribute("#csv", "href"))
    assert {r["customer_id"] for r in rows} == expected
    # the page holds 200 rows: two screens' worth is enough to show it
    page.screenshot(path=shots / "department.png", clip={"x": 0, "y": 0, "width": 1280,
                                                          "height": 1800}, full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=shots / "department_phone.png", clip={"x": 0, "y": 0, "width": 390,
                                                                "height": 1688}, full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{server.url}/app/departments/legal")
    assert "No department" in page.inner_text("h1")


def test_models_page_shows_the_registry(page, server, env, shots):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=env.tracking_uri, registry_uri=env.tracking_uri)
    page.goto(f"{server.url}/app/models")
    for name in ("churn", "clv", "nbo"):
        version = client.get_model_version_by_alias(name, "champion")
        card = page.locator(f"#model-{name} .version[data-role=champion]")
        assert card.get_attribute("data-version") == str(version.version)
        metrics = client.get_run(version.run_id).data.metrics
        cells = card.locator("td[data-metric]").evaluate_all(
            "cells => cells.map(c => [c.dataset.metric, +c.dataset.value])")
        assert cells and {m: v for m, v in cells} == pytest.approx(
            {m.removeprefix("test_"): v for m, v in metrics.items() if m.startswith("test_")})
        assert card.locator("a", has_text="training run").get_attribute("href").endswith(
            f"/runs/{version.run_id}")
    assert page.locator("#model-churn th", has_text="logistic regression").count() >= 1
    page.screenshot(path=shots / "models.png", full_page=True)


def test_charts_are_escaped_svg_with_a_label():
    from customer360.serving.webapp import charts

    svg = charts.column_chart(["<script>x</script>", "b"], [5.0, -2.0], label="net <spend>")
    assert svg.startswith("<svg") and 'aria-label="net &lt;spend&gt;"' in svg
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert svg.count("<rect") == 2 and f'fill="{charts.RED}"' in svg  # the negative bar
    bars = charts.bar_chart(["a", "b", "c"], [3, 2, 1], label="reasons")
    assert bars.count("<rect") == 3
    curve = charts.line_chart({"m": (np.linspace(0, 1, 5000), np.linspace(0, 1, 5000))},
                              label="pareto", x_label="x", y_label="y", guide=0.2)
    assert len(curve.split("<polyline points=\"")[1].split('"')[0].split()) <= 201


def test_model_metrics_sit_next_to_their_baselines():
    from customer360.serving.webapp.models_page import metric_table

    names, rows = metric_table({
        "test_roc_auc": 0.9, "test_auc": 0.8, "baseline_lr_roc_auc": 0.85,
        "baseline_lr_auc": 0.7, "baseline_auc": 0.6, "val_auc": 0.1,
    })
    assert names == ["baseline", "lr"]
    assert rows == [{"metric": "auc", "model": 0.8, "lr": 0.7, "baseline": 0.6},
                    {"metric": "roc_auc", "model": 0.9, "lr": 0.85}]


def test_department_selection_and_classes():
    import pandas as pd

    from customer360.serving.webapp import population

    frame = pd.DataFrame({c: ["x"] * 4 for c in population.LIST_COLUMNS})
    frame = frame.assign(
        customer_id=["a", "b", "c", "d"], lens_sales=["loyal", "new", "loyal", "prospect"],
        churn_probability=[0.1, 0.5, 0.9, np.nan], revenue=1.0, margin=1.0, clv=1.0,
        open_complaints=[True, False, False, True],
    )
    rows, n = population.select(frame, {"lens_sales": "loyal", "status": None})
    assert n == 2 and rows["customer_id"].tolist() == ["c", "a"]
    rows, n = population.select(frame, {"open_complaints": "1"}, limit=1)
    assert n == 2 and rows["customer_id"].tolist() == ["a"]  # unknown churn last
    classes = population.department_classes(frame, "sales")
    assert classes["cls"].tolist() == ["prospect", "new", "loyal"]
    assert classes["customers"].tolist() == [1, 1, 2]
    service = population.department_classes(frame.assign(lens_service="satisfied"), "service")
    assert service.set_index("cls")["customers"].to_dict() == {"satisfied": 4,
                                                               "open_complaints": 2}


# --- review 4, 5: download names and hostile query strings ---------------------------------------

DOWNLOAD_NAME = r'attachment; filename="[A-Za-z0-9._-]+\.csv"'


def test_attachment_names_keep_only_safe_characters():
    from customer360.serving.webapp.app import attachment_name

    name = attachment_name("customers_value segment A, R = 3")
    assert name == "customers_value_segment_A_R_3.csv"
    for hostile in ('x"; filename=evil.sh', "a\r\nSet-Cookie: s=1", "../../etc/passwd", "", "é"):
        name = attachment_name(hostile)
        assert re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*\.csv", name), (hostile, name)


@pytest.mark.parametrize("url", [
    '/app/segments/customers.csv?segment=A%22%3B%20filename%3Devil.sh',
    "/app/segments/customers.csv?segment=%0D%0ASet-Cookie%3A%20s%3D1",
    "/app/segments/customers.csv?segment=..%2F..%2Fetc%2Fpasswd",
    '/app/departments/sales.csv?cls=%22%0D%0AX-Evil%3A%201',
    "/app/departments/sales.csv?cls=..%2F..%2Fx",
])
def test_csv_download_names_from_user_input_are_sanitised(page, server, url):
    resp = page.context.request.get(server.url + url)
    assert resp.status == 200, resp.text()
    assert re.fullmatch(DOWNLOAD_NAME, resp.headers["content-disposition"]), resp.headers
    assert "x-evil" not in resp.headers and "set-cookie" not in resp.headers


def test_huge_or_negative_pages_are_clamped(page, server, customer):
    for value in ("-5", "0", "999999999", str(10**30)):
        resp = page.context.request.get(f"{server.url}/app/customers/{customer}?page={value}")
        assert resp.status == 200, (value, resp.status)


def test_no_hostile_query_string_on_a_get_route_gets_a_5xx(page, server, customer):
    from urllib.parse import quote, urlencode

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    routes = ["/app/", f"/app/customers/{customer}", "/app/segments", "/app/segments/customers",
              "/app/segments/customers.csv", "/app/segments/pareto/{x}",
              "/app/segments/pareto/{x}.csv", "/app/departments/{x}",
              "/app/departments/{x}.csv", "/app/customers/{x}", "/app/login", "/app/models"]
    value = st.one_of(st.integers(min_value=-(10**30), max_value=10**30).map(str),
                      st.text(max_size=12), st.sampled_from(["A", "sales", "1", "", "%00"]))
    params = st.dictionaries(
        st.sampled_from(["page", "r", "f", "segment", "cls", "q", "msg", "next", "value_segment",
                         "status", "lifecycle_stage", "customer_type"]), value, max_size=4)

    @settings(max_examples=60, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(route=st.sampled_from(routes), part=st.sampled_from(["sales", "top-margin", "x", "é"]),
           query=params)
    def check(route, part, query):
        url = server.url + route.replace("{x}", quote(part, safe="")) + "?" + urlencode(query)
        resp = page.context.request.get(url, max_redirects=0)
        assert resp.status < 500, (url, resp.status)

    check()


def test_card_reads_and_feedback_writes_at_once_all_succeed(page, server, db, customer):
    """Review 2: the service owns the web app's kept-open reader and its write lock; cards
    read while /feedback writes, from many clients at once: every read answers, every write
    is stored."""
    from concurrent.futures import ThreadPoolExecutor

    offer = server.post("next_best_offer", json={"customer_id": customer}).json()["offers"][0]
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    before = feedback_rows(db, customer)

    def call(k):
        if k % 2:
            with httpx.Client(cookies=cookies, timeout=60) as client:
                return client.get(f"{server.url}/app/customers/{customer}").status_code
        body = {"customer_id": customer, "offer_id": offer["offer_id"], "accepted": k % 4 == 0,
                "event_id": f"review2-{k}"}
        return server.post("feedback", json=body).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(call, range(16)))
    assert codes == [200] * 16, codes
    assert feedback_rows(db, customer) == before + 8
