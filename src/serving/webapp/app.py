"""Routes of the web app (see the package docstring)."""

from __future__ import annotations

import functools
import math
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import anyio
import bentoml
import pandas as pd
from fastapi import FastAPI, Form, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from customer360.serving.webapp import (
    campaigns,
    charts,
    models_page,
    population,
    queries,
    sales_page,
    security,
)
from customer360.serving.webapp.reader import reader_of

APP_PATH = "/app"
HERE = Path(__file__).parent
TIMELINE_PER_PAGE = 20
LIST_LIMIT = 1000  # rows a customer list shows; its CSV export has them all
PAGE_ROWS = 200  # rows a department or Pareto list shows (1000 rows took ~0.5 s to render)
SEGMENT_ORDER = ("A", "B", "C", "D")
MAX_PAGE = 10_000  # a timeline page past it shows the last page reachable (review 5)
# RFM scores of the segment lists' filters: a bin number (configs/segments.yaml rfm.bins).
RfmScore = Annotated[int | None, Query(ge=1, le=100)]

app = FastAPI(title="customer360 workspace", docs_url=None, redoc_url=None, openapi_url=None)
app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
templates = Jinja2Templates(directory=HERE / "templates")


# --- formatting filters -------------------------------------------------------------------------


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def money(value: Any) -> str:
    return "—" if _missing(value) else f"{float(value):,.2f}"


def pct(value: Any) -> str:
    return "—" if _missing(value) else f"{100 * float(value):.1f}%"


def num(value: Any, digits: int = 0) -> str:
    return "—" if _missing(value) else f"{float(value):,.{digits}f}"


def date(value: Any) -> str:
    if _missing(value) or value is pd.NaT:
        return "—"
    return pd.Timestamp(value).strftime("%d %b %Y")


def words(value: Any) -> str:
    return "—" if _missing(value) else str(value).replace("_", " ")


templates.env.filters.update(money=money, pct=pct, num=num, date=date, words=words)
templates.env.globals["base"] = APP_PATH


# --- plumbing -----------------------------------------------------------------------------------


def service() -> Any:
    """The running Customer360 instance (the app lives in its worker). Call its API methods
    with ``.local``: the plain attribute is a client that goes back through HTTP."""
    return bentoml.get_current_service()


async def read(fn, *args, **kwargs):
    """Run a warehouse read ``fn(con, ...)`` in a worker thread on the app's shared read-only
    connection (see :mod:`customer360.serving.webapp.reader`)."""
    reader = reader_of(service())
    return await anyio.to_thread.run_sync(lambda: reader.run(fn, *args, **kwargs))


def render(request: Request, name: str, status: int = 200, **context) -> HTMLResponse:
    csrf = request.cookies.get(security.CSRF_COOKIE) or security.new_csrf()
    response = templates.TemplateResponse(
        request,
        name,
        {"csrf": csrf, "csrf_field": security.CSRF_FIELD,
         "signed_in": bool(security.configured_token()), **context},
        status_code=status,
    )
    if request.cookies.get(security.CSRF_COOKIE) != csrf:
        response.set_cookie(security.CSRF_COOKIE, csrf, **security.COOKIE_OPTIONS)
    return response


@contextmanager
def timed(request: Request, phase: str):
    """Time a phase of the request; the phases go out in a ``Server-Timing`` header (read by
    benchmarks/webapp.py and the browser's developer tools)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        phases = request.scope.setdefault("c360_timing", {})
        phases[phase] = phases.get(phase, 0.0) + time.perf_counter() - start


@app.middleware("http")
async def server_timing(request: Request, call_next):
    start = time.perf_counter()
    response = await call_next(request)
    phases = request.scope.get("c360_timing", {})
    total = time.perf_counter() - start
    response.headers["Server-Timing"] = ", ".join(
        [f"{k};dur={1000 * v:.2f}" for k, v in phases.items()] + [f"app;dur={1000 * total:.2f}"]
    )
    return response


@app.middleware("http")
async def guard(request: Request, call_next):
    """Session check (when a token is configured) and CSRF check on every POST."""
    path = request.url.path.removeprefix(APP_PATH) or "/"
    if request.method == "POST":
        await request.body()  # cached, so the route can parse the form again
        form = await request.form()
        if not security.csrf_ok(
            request.cookies.get(security.CSRF_COOKIE), form.get(security.CSRF_FIELD)
        ):
            return PlainTextResponse(
                "refused: this form has no valid CSRF token (reload the page and submit again)",
                status_code=403,
            )
    if path in ("/login",) or path.startswith("/static/"):
        return await call_next(request)
    if not security.has_session(request.cookies.get(security.SESSION_COOKIE)):
        if request.method == "GET":
            target = quote(str(request.url.path) + ("?" + request.url.query
                                                   if request.url.query else ""))
            return RedirectResponse(f"{APP_PATH}/login?next={target}", status_code=303)
        return PlainTextResponse("sign in first: open /app/login", status_code=401)
    return await call_next(request)


# --- sign in ------------------------------------------------------------------------------------


def _safe_next(target: str) -> str:
    return target if target.startswith(APP_PATH + "/") and "//" not in target else APP_PATH + "/"


@app.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, next: str = APP_PATH + "/"):  # noqa: A002
    if not security.configured_token():
        return RedirectResponse(_safe_next(next), status_code=303)
    return render(request, "login.html", next=_safe_next(next), error=None)


@app.post("/login")
async def login(request: Request, token: str = Form(""), next: str = Form(APP_PATH + "/")):  # noqa: A002
    if not security.token_matches(token):
        return render(request, "login.html", status=401, next=_safe_next(next),
                      error="That token is not the service's token; try again.")
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        security.SESSION_COOKIE, security.session_value(security.configured_token()),
        **security.COOKIE_OPTIONS,
    )
    return response


# --- search -------------------------------------------------------------------------------------


@app.get("/", response_class=HTMLResponse)
async def search(request: Request, q: str = ""):
    svc = service()
    with timed(request, "warehouse"):
        results = await read(queries.search_customers, q) if q.strip() else None
    return render(
        request, "search.html", q=q,
        results=None if results is None else results.to_dict("records"),
        customers=len(svc.snapshot), as_of=svc.as_of,
    )


@functools.cache
def model_horizons() -> dict[str, int]:
    """Horizons (days) of the churn and ML CLV models, from their training configs."""
    from customer360.training.churn import load_churn_config
    from customer360.training.clv import load_clv_ml_config

    return {"churn": load_churn_config().horizon_days, "clv": load_clv_ml_config().horizon_days}


# --- the customer card --------------------------------------------------------------------------


def _card_data(con, customer_id: str, page: int) -> dict[str, Any]:
    rows, total = queries.timeline(con, customer_id, page=page, per_page=TIMELINE_PER_PAGE)
    return {
        "demographics": queries.demographics(con, customer_id),
        "timeline": rows.to_dict("records"),
        "timeline_total": total,
        "monthly": queries.monthly_spend(con, customer_id),
    }


@app.get("/customers/{customer_id}", response_class=HTMLResponse)
async def customer_card(request: Request, customer_id: str, page: int = 1, msg: str = ""):
    svc = service()
    with timed(request, "profile"):
        profile = await svc.customer360.local(customer_id=customer_id)
    if not hasattr(profile, "model_dump"):  # the API's error response (unknown id, ...)
        return render(request, "not_found.html", status=404, customer_id=customer_id)
    profile = profile.model_dump()
    page = min(max(1, page), MAX_PAGE)  # a huge offset is a slow scan (or an int64 overflow)
    with timed(request, "warehouse"):
        data = await read(_card_data, customer_id, page)
    pages = max(1, -(-data["timeline_total"] // TIMELINE_PER_PAGE))
    classes = profile["classifications"]
    with timed(request, "charts"):
        spend_svg = charts.spend_chart(data["monthly"])
        reasons_svg = charts.reasons_chart(profile["churn"]["reasons"])
    with timed(request, "render"):
        return render(
            request, "customer.html", p=profile, c=classes, msg=msg,
            lenses={k.removeprefix("lens_"): v for k, v in classes.items()
                    if k.startswith("lens_")},
            demographics=data["demographics"], timeline=data["timeline"],
            timeline_total=data["timeline_total"], page=min(page, pages), pages=pages,
            spend_svg=spend_svg, reasons_svg=reasons_svg, horizons=model_horizons(),
        )


@app.post("/customers/{customer_id}/feedback")
async def offer_feedback(
    request: Request, customer_id: str, offer_id: str = Form(...), accepted: str = Form(...)
):
    """Accept / reject an offer through the service's own ``feedback`` method (the same
    validation and recording as ``POST /feedback``)."""
    svc = service()
    result = await anyio.to_thread.run_sync(
        lambda: svc.feedback.local(
            customer_id=customer_id, offer_id=offer_id, accepted=accepted == "1"
        )
    )
    if not hasattr(result, "model_dump"):
        return PlainTextResponse(
            f"feedback not recorded: {bytes(result.body).decode()}", status_code=result.status_code
        )
    verb = "accepted" if result.accepted else "rejected"
    note = urlencode({"msg": f"Recorded: offer {offer_id} {verb}."})
    return RedirectResponse(
        f"{APP_PATH}/customers/{quote(customer_id)}?{note}", status_code=303
    )


# --- segments -----------------------------------------------------------------------------------


async def population_view() -> population.PopulationView:
    """The service's population view (built once per snapshot, in a worker thread)."""
    return await anyio.to_thread.run_sync(population.view, service())


_segments_cache: dict[tuple, dict[str, Any]] = {}


def _segments_data(con) -> dict[str, Any] | None:
    """The A-D table, RFM grid and members of the latest ``customer_segments`` date, cached
    until the table changes (its latest date or its row count)."""
    as_of = queries.latest_segments_as_of(con)
    if as_of is None:
        return None
    (rows,) = con.execute("SELECT count(*) FROM customer_segments").fetchone()
    key = (as_of, rows)
    if key not in _segments_cache:
        _segments_cache.clear()
        _segments_cache[key] = _read_segments(con, as_of)
    return _segments_cache[key]


def _read_segments(con, as_of) -> dict[str, Any]:
    return {"as_of": as_of, "table": queries.segment_table(con, as_of),
            "grid": queries.rfm_grid(con, as_of),
            "members": queries.segment_members(con, as_of)[["customer_id", "value_segment"]]}


@app.get("/segments", response_class=HTMLResponse)
async def segments(request: Request):
    with timed(request, "warehouse"):
        data = await read(_segments_data)
    with timed(request, "population"):
        view = await population_view()
    report = view.report
    context: dict[str, Any] = {"data": data}
    if data is not None:
        churn = pd.Series(view.frame["churn_probability"].to_numpy(),
                          index=view.frame["customer_id"])
        members = data["members"]
        risk = (pd.Series(churn.reindex(members["customer_id"]).to_numpy())
                .groupby(members["value_segment"].to_numpy()).mean())
        table = data["table"].assign(churn_risk=lambda t: t["value_segment"].map(risk))
        grid = data["grid"]
        context.update(
            table=table.to_dict("records"), total=int(table["customers"].sum()),
            r_scores=[int(r) for r in sorted(grid["rfm_r"].unique(), reverse=True)],
            f_scores=[int(f) for f in sorted(grid["rfm_f"].unique())],
            cells={(int(r), int(f)): int(n) for r, f, n in grid.itertuples(index=False)},
        )
    per_segment = report.segments[report.segments["segment"] != "all"]
    with timed(request, "charts"):
        pareto_svg = charts.line_chart(
            {"margin (buyers)": (report.curve["customer_share"], report.curve["margin_share"]),
             "purchases by referred customers (referrers)": (
                 view.referral_curve["customer_share"], view.referral_curve["value_share"])},
            label="Pareto curves of margin and of referrals that buy",
            x_label="share of customers, best first", y_label="share of the total",
            guide=report.top_share,
        )
        segment_svg = charts.column_chart(
            [f"{s} ({n:,})" for s, n in zip(per_segment["segment"], per_segment["customers"],
                                             strict=True)],
            per_segment["margin"].to_numpy(), label="margin per value segment",
            width=520, height=200,
        )
    negative = population.negative_contributors(view.frame)
    return render(
        request, "segments.html", active="segments", **context, report=report, view=view,
        pareto_svg=pareto_svg, segment_svg=segment_svg,
        negative=negative.head(10).to_dict("records"), negative_total=len(negative),
        negative_sum=float(negative["profitability"].sum()),
    )


def _members(con, segment: str | None, r: int | None, f: int | None):
    as_of = queries.latest_segments_as_of(con)
    if as_of is None:
        return None, pd.DataFrame()
    return as_of, queries.segment_members(con, as_of, value_segment=segment, rfm_r=r, rfm_f=f)


def _list_title(segment: str | None, r: int | None, f: int | None) -> str:
    parts = [f"value segment {segment}"] if segment else []
    if r is not None:
        parts.append(f"R = {r}")
    if f is not None:
        parts.append(f"F = {f}")
    return ", ".join(parts) or "all customers"


@app.get("/segments/customers", response_class=HTMLResponse)
async def segment_list(
    request: Request, segment: str | None = None, r: RfmScore = None, f: RfmScore = None
):
    as_of, rows = await read(_members, segment, r, f)
    query = urlencode({k: v for k, v in (("segment", segment), ("r", r), ("f", f))
                       if v is not None})
    return render(
        request, "segment_list.html", as_of=as_of, total=len(rows),
        rows=rows.head(LIST_LIMIT).to_dict("records"),
        title=_list_title(segment, r, f), csv_url=f"{APP_PATH}/segments/customers.csv?{query}",
    )


@app.get("/segments/customers.csv")
async def segment_csv(segment: str | None = None, r: RfmScore = None, f: RfmScore = None):
    as_of, rows = await read(_members, segment, r, f)
    return _csv(rows, "customers_" + _list_title(segment, r, f))



# --- population lists: Pareto groups and the departments ---------------------------------------

PARETO_LISTS = {
    "top-margin": "the top {share} of buyers by margin",
    "top-referrals": "the top {share} of referrers by purchases of the customers they referred",
    "negative": "customers who contribute negatively (profitability below zero)",
}


def _pareto_rows(view: population.PopulationView, who: str) -> pd.DataFrame:
    frame, share = view.frame, view.report.top_share
    if who == "top-margin":
        return population.top_share(frame[frame["orders"] >= 1], "margin", share)
    if who == "top-referrals":
        return population.top_share(frame[frame["referrals"] > 0], "referrals", share)
    return population.negative_contributors(frame)


def attachment_name(stem: str) -> str:
    """A download's file name from user input (filters, list names): letters, digits, ``.``,
    ``_`` and ``-`` only, so no quote, CR/LF or path part reaches the Content-Disposition
    header (review 4)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")[:80]
    return (safe or "export") + ".csv"


def _csv(rows: pd.DataFrame, stem: str) -> Response:
    name = attachment_name(stem)
    return Response(rows.to_csv(index=False), media_type="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _unknown(request: Request, what: str, value: str, known) -> HTMLResponse:
    return render(request, "not_found.html", status=404, what=what, value=value,
                  known=list(known))


@app.get("/segments/pareto/{who}.csv")
async def pareto_csv(request: Request, who: str):
    if who not in PARETO_LISTS:
        return _unknown(request, "Pareto list", who, PARETO_LISTS)
    view = await population_view()
    return _csv(_pareto_rows(view, who), f"customers_{who}")


@app.get("/segments/pareto/{who}", response_class=HTMLResponse)
async def pareto_list(request: Request, who: str):
    if who not in PARETO_LISTS:
        return _unknown(request, "Pareto list", who, PARETO_LISTS)
    view = await population_view()
    rows = _pareto_rows(view, who)
    title = PARETO_LISTS[who].format(share=pct(view.report.top_share))
    return render(request, "population_list.html", active="segments", title=title,
                  as_of=view.as_of, total=len(rows), rows=rows.head(PAGE_ROWS).to_dict("records"),
                  csv_url=f"{APP_PATH}/segments/pareto/{who}.csv", back=f"{APP_PATH}/segments",
                  back_label="segments", filters=None)


def _department_filters(request: Request, department: str) -> dict[str, str | None]:
    column, _ = population.DEPARTMENTS[department]
    cls = request.query_params.get("cls") or None
    filters: dict[str, str | None] = {k: request.query_params.get(k) or None
                                      for k in population.FILTERS}
    if cls in population.FLAGS.get(department, {}):
        filters[cls] = "1"
    else:
        filters[column] = cls
    return filters


def _department_summary(view: population.PopulationView, department: str):
    """Class table, filter options and chart of a department, once per population view."""
    cache = view.cache
    if department not in cache:
        frame = view.frame
        classes = population.department_classes(frame, department)
        options = {k: sorted(frame[k].dropna().unique().tolist()) for k in population.FILTERS}
        chart = charts.bar_chart(
            [words(c) for c in classes["cls"]], classes["customers"].to_numpy(),
            label=f"customers per {department} class", value_text=lambda v: f"{v:,.0f}")
        cache[department] = (classes.to_dict("records"), options, chart)
    return cache[department]


# issue 15: the sales page's leads by grade (the service's start-up scoring, as /lead_score)
Grade = Annotated[str | None, Query(pattern="^[ABCD]$")]


@app.get("/departments/sales/leads.csv")
async def sales_leads_csv(grade: Grade = None):
    rows = sales_page.lead_rows(service().sales.leads, grade)
    return _csv(rows, f"leads_{grade or 'all'}")


@app.get("/departments/{department}.csv")
async def department_csv(request: Request, department: str):
    if department not in population.DEPARTMENTS:
        return _unknown(request, "department", department, population.DEPARTMENTS)
    view = await population_view()
    rows, _ = population.select(view.frame, _department_filters(request, department))
    cls = request.query_params.get("cls") or "all"
    return _csv(rows, f"{department}_{cls}")


@app.get("/departments/{department}", response_class=HTMLResponse)
async def department(request: Request, department: str):
    if department not in population.DEPARTMENTS:
        return _unknown(request, "department", department, population.DEPARTMENTS)
    with timed(request, "population"):
        view = await population_view()
    frame = view.frame
    with timed(request, "classes"):
        classes, options, chart = _department_summary(view, department)
    with timed(request, "select"):
        rows, matching = population.select(frame, _department_filters(request, department),
                                           limit=PAGE_ROWS)
    query = urlencode({k: v for k, v in request.query_params.items() if v})
    with timed(request, "render"):
        return render(
            request, "department.html", active=f"dept-{department}", department=department,
            departments=list(population.DEPARTMENTS), classes=classes, chart=chart,
            as_of=view.as_of, total=matching, population=len(frame),
            rows=rows.to_dict("records"), options=options,
            chosen={k: request.query_params.get(k, "") for k in ("cls", *population.FILTERS)},
            csv_url=f"{APP_PATH}/departments/{department}.csv" + (f"?{query}" if query else ""),
            sales=_sales_context(request) if department == "sales" else None,
        )


def _sales_context(request: Request) -> dict[str, Any]:
    grade = request.query_params.get("grade")
    grade = grade if grade in sales_page.GRADES else None
    return sales_page.context(service().sales, grade, PAGE_ROWS)


# --- models -------------------------------------------------------------------------------------


@app.get("/models", response_class=HTMLResponse)
async def models(request: Request):
    with timed(request, "mlflow"):
        cards = await anyio.to_thread.run_sync(models_page.model_cards)
    return render(request, "models.html", active="models", cards=cards,
                  mlflow_ui=models_page.mlflow_ui_url())


# --- campaigns (issue 16; the logic is in webapp/campaigns.py) ---------------------------------


@app.get("/campaigns", response_class=HTMLResponse)
async def campaign_planner(request: Request):
    form, plan_request, error = campaigns.parse(request.query_params)
    result = None
    if plan_request is not None:
        with timed(request, "warehouse"):
            result, error = await read(campaigns.plan, plan_request)
    return render(request, "campaigns.html", status=200 if error is None else 400,
                  **campaigns.context(form, result, error))


@app.get("/campaigns.csv")
async def campaign_csv(request: Request):
    form, plan_request, error = campaigns.parse(request.query_params, limit=campaigns.CSV_LIMIT)
    result = None
    if plan_request is not None:
        result, error = await read(campaigns.plan, plan_request)
    if result is None:
        return PlainTextResponse(error or "give budget and cost_per_contact", status_code=400)
    return _csv(campaigns.contacts_frame(result), f"campaign_{result.action}")
