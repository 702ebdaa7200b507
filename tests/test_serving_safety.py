"""The service against careless and hostile clients (issue 12, items 3, 4 and 10), on a real
``bentoml serve`` on a loopback port: idempotent and validated /feedback (also across a kill -9),
JSON-only POSTs, the bearer scheme in any case, no exposed server without a token, and offers
that do not change on refresh while the bandit explores."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import duckdb
import pandas as pd
import psutil
import pytest
import yaml
from serving_env import REPO, Server, ServingEnv

pytestmark = pytest.mark.server

TOKEN = "safety-token-1"



@pytest.fixture(scope="module")
def explore_env(env, tmp_path_factory) -> ServingEnv:
    """The trained env with the NBO bandit exploring (plain Thompson sampling)."""
    config_dir = tmp_path_factory.mktemp("explore_configs")
    for path in env.config_dir.iterdir():
        if path.is_file():
            (config_dir / path.name).write_bytes(path.read_bytes())
    nbo = yaml.safe_load((config_dir / "nbo.yaml").read_text())
    nbo["bandit"]["exploration"] = 1.0
    (config_dir / "nbo.yaml").write_text(yaml.safe_dump(nbo))
    return dataclasses.replace(env, config_dir=config_dir)


@pytest.fixture(scope="module")
def server(explore_env, tmp_path_factory):
    base = tmp_path_factory.mktemp("safety")
    db = explore_env.copy_db(base / "warehouse.duckdb")
    with Server(explore_env, db, base / "server.log", token=TOKEN) as srv:
        srv.db = db
        yield srv


@pytest.fixture(scope="module")
def ids(env) -> list[str]:
    with duckdb.connect(str(env.db), read_only=True) as con:
        rows = con.execute(
            "SELECT customer_id FROM feature_snapshots WHERE txn__orders__all > 0 "
            "ORDER BY customer_id"
        ).fetchall()
    buyers = [r[0] for r in rows]
    return buyers[:: max(1, len(buyers) // 6)][:6]


def ok(resp):
    assert resp.status_code == 200, resp.text
    return resp.json()


def feedback_rows(db) -> pd.DataFrame:
    with duckdb.connect(str(db), read_only=True) as con:
        exists = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'nbo_feedback'"
        ).fetchone()[0]
        if not exists:
            return pd.DataFrame(columns=["feedback_id", "customer_id", "offer_id", "accepted"])
        return con.execute("SELECT * FROM nbo_feedback").df()


def eligible_events(srv: Server, n: int) -> list[dict]:
    """``n`` feedback events on offers the service recommended (so eligible), fresh ids."""
    with duckdb.connect(str(srv.db), read_only=True) as con:
        customers = [
            r[0]
            for r in con.execute(
                "SELECT customer_id FROM feature_snapshots ORDER BY customer_id LIMIT ?", [n]
            ).fetchall()
        ]
    items = ok(srv.post("next_best_offer_batch", json={
        "customers": [{"customer_id": c} for c in customers]
    }))
    events = []
    for i, item in enumerate(it for it in items if it["result"] and it["result"]["offers"]):
        offer = item["result"]["offers"][0]["offer_id"]
        events.append({
            "customer_id": item["customer_id"], "offer_id": offer, "accepted": i % 3 == 0,
            "event_id": uuid.uuid4().hex,
        })
    assert len(events) >= n // 2, "too few customers with an offer to test feedback"
    return events


# --- item 10: offers that do not change on refresh (first: before any feedback) -------------

def test_offers_are_one_decision_per_period_across_calls_endpoints_and_batch(
    server, explore_env, ids, tmp_path, monkeypatch
):
    """With exploration on, /next_best_offer answers the same ranks on every call, and
    /customer360 and `customer360 score` rank the customer's offers the same way."""
    from customer360.serving.batch import score_customers

    def ranked(offers):
        return [(o["offer_id"], o["rank"], round(o["score"], 12)) for o in offers]

    first = {c: ranked(ok(server.post("next_best_offer", json={"customer_id": c}))["offers"])
             for c in ids}
    assert any(first.values())
    for _ in range(4):
        for c in ids:
            again = ok(server.post("next_best_offer", json={"customer_id": c}))["offers"]
            assert ranked(again) == first[c]
    for c in ids:
        profile = ok(server.post("customer360", json={"customer_id": c}))
        assert ranked(profile["offers"]) == first[c]
    # exploring: the score is a posterior draw, not the expected value
    offers = [o for c in ids for o in
              ok(server.post("next_best_offer", json={"customer_id": c}))["offers"]]
    assert any(abs(o["score"] - o["expected_value"]) > 1e-9 for o in offers)

    monkeypatch.setenv("MLFLOW_TRACKING_URI", explore_env.tracking_uri)
    monkeypatch.setenv("CUSTOMER360_CONFIG_DIR", str(explore_env.config_dir))
    out = tmp_path / "scores.parquet"
    score_customers(explore_env.as_of, out, db=explore_env.copy_db(tmp_path / "w.duckdb"))
    scores = pd.read_parquet(out).set_index("customer_id")
    for c in ids:
        batch = [(scores.at[c, f"offer_{r}_id"], r, round(scores.at[c, f"offer_{r}_score"], 12))
                 for r in range(1, len(first[c]) + 1)]
        assert batch == first[c]


# --- item 4: JSON only, bearer scheme, exposure, keyed log hashes ----------------------------

def test_bearer_scheme_is_case_insensitive_and_the_token_still_checked(server):
    for header in (f"bearer {TOKEN}", f"BEARER {TOKEN}", f"Bearer  {TOKEN}"):
        assert server.post("schema_info", headers={"Authorization": header}).status_code == 200
    for header in ("bearer wrong", f"Basic {TOKEN}", TOKEN, "bearer"):
        resp = server.post("schema_info", headers={"Authorization": header})
        assert resp.status_code == 401, header


def test_non_json_posts_get_415_and_write_nothing(server, ids):
    before = len(feedback_rows(server.db))
    body = f'{{"customer_id": "{ids[0]}", "offer_id": "O01", "accepted": true}}'
    cases = [
        ("text/plain", body),
        ("text/plain;charset=UTF-8", body),
        ("application/x-www-form-urlencoded", f"customer_id={ids[0]}&offer_id=O01&accepted=1"),
        ("multipart/form-data; boundary=x", body),
    ]
    for content_type, content in cases:
        for path in ("feedback", "churn"):
            resp = server.post(path, content=content, headers={"Content-Type": content_type})
            assert resp.status_code == 415, (path, content_type, resp.text)
            assert "application/json" in resp.json()["error"]
    assert len(feedback_rows(server.db)) == before
    # JSON (with a charset parameter) is still served
    resp = server.post("churn", content=f'{{"customer_id": "{ids[0]}"}}',
                       headers={"Content-Type": "application/json; charset=utf-8"})
    assert resp.status_code == 200, resp.text


def test_serve_refuses_a_non_loopback_host_without_a_token(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CUSTOMER360_API_TOKEN"}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "customer360.cli", "serve", "--host", "0.0.0.0",
         "--db", str(tmp_path / "none.duckdb"), "--port", "1"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=60,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    message = " ".join((proc.stdout + proc.stderr).split())
    assert "refusing to serve on 0.0.0.0" in message
    assert "--insecure-no-token" in message and "CUSTOMER360_API_TOKEN" in message
    assert time.monotonic() - started < 30


def test_exposure_rules():
    from customer360.errors import Customer360Error
    from customer360.serving.service import check_exposure, is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")
    assert not is_loopback("example.com")
    with pytest.raises(Customer360Error, match="insecure-no-token"):
        check_exposure("0.0.0.0")
    check_exposure("0.0.0.0", insecure_no_token=True)


def test_log_hash_is_keyed_not_a_bare_sha256():
    from customer360.serving.profile import hash_id

    cid = "C0000001"
    assert hash_id(cid) != hashlib.sha256(cid.encode()).hexdigest()[:12]
    code = "from customer360.serving.profile import hash_id; print(hash_id('C0000001'))"

    def run(key: str | None) -> str:
        env = {k: v for k, v in os.environ.items() if k != "CUSTOMER360_LOG_HASH_KEY"}
        if key:
            env["CUSTOMER360_LOG_HASH_KEY"] = key
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, check=True).stdout.strip()

    assert run("k1") == run("k1") != run("k2")  # a set key correlates across processes
    assert run(None) != run(None)  # otherwise a fresh key per process


# --- item 3: idempotent, validated feedback --------------------------------------------------

def test_resending_feedback_with_the_same_ids_stores_one_row_each(server):
    events = eligible_events(server, 200)
    before = len(feedback_rows(server.db))

    def send(event):
        return server.post("feedback", json=event)

    with ThreadPoolExecutor(8) as pool:
        first = [ok(r) for r in pool.map(send, events)]
        # the retry storm: every event twice more, concurrently
        again = [r for r in pool.map(send, events + events)]
    assert [a.json() for a in again] == first + first
    assert all(a.headers.get("idempotent-replayed") == "true" for a in again)
    rows = feedback_rows(server.db)
    assert len(rows) == before + len(events)
    assert rows["feedback_id"].isin([e["event_id"] for e in events]).sum() == len(events)
    stored = rows.set_index("feedback_id").loc[[e["event_id"] for e in events]]
    assert stored["accepted"].tolist() == [e["accepted"] for e in events]
    # the Idempotency-Key header does the same
    event = {k: v for k, v in events[0].items() if k != "event_id"}
    key = {"Idempotency-Key": uuid.uuid4().hex}
    one, two = (ok(server.post("feedback", json=event, headers=key)) for _ in range(2))
    assert one == two and one["event_id"] == key["Idempotency-Key"]
    assert len(feedback_rows(server.db)) == before + len(events) + 1


def test_feedback_is_validated_against_what_exists(server, ids):
    event = eligible_events(server, 20)[0]
    nbo = ok(server.post("next_best_offer", json={"customer_id": ids[0]}))
    never = [x["offer_id"] for x in nbo["excluded"] if "segment_not_eligible" in x["reason"]]
    before = len(feedback_rows(server.db))
    cases = [
        ({**event, "accepted": "yes"}, 400, "accepted"),
        ({**event, "accepted": 1}, 400, "accepted"),
        ({**event, "accepted": "true"}, 400, "accepted"),
        ({**event, "channel": "carrier-pigeon"}, 400, "carrier-pigeon"),
        ({**event, "customer_id": "NOBODY-1"}, 404, "NOBODY-1"),
        ({**event, "offer_id": "NO-SUCH-OFFER"}, 404, "NO-SUCH-OFFER"),
        ({**event, "event_id": "has spaces"}, 400, "event_id"),
    ]
    if never:
        cases.append(({**event, "customer_id": ids[0], "offer_id": never[0]}, 422,
                      "never eligible"))
    for body, status, needle in cases:
        resp = server.post("feedback", json=body)
        assert resp.status_code == status, (body, resp.text)
        assert needle in resp.text
    assert len(feedback_rows(server.db)) == before
    assert never, "the test warehouse should hold a segment-restricted offer"
    # the same id for another answer is a conflict, not a silent overwrite
    ok(server.post("feedback", json=event))
    resp = server.post("feedback", json={**event, "accepted": not event["accepted"]})
    assert resp.status_code == 409 and event["event_id"] in resp.text
    resp = server.post("feedback", json=event, headers={"Idempotency-Key": "other-key"})
    assert resp.status_code == 400 and "differ" in resp.text
    assert len(feedback_rows(server.db)) == before + 1


def test_kill_9_during_feedback_loses_no_acknowledged_event(explore_env, tmp_path):
    """Acknowledged events are committed: after a kill -9 in the middle of a stream of writes
    every one of them is in the warehouse, and resending all events stores each exactly once."""
    db = explore_env.copy_db(tmp_path / "warehouse.duckdb")
    srv = Server(explore_env, db, tmp_path / "server1.log")
    srv.db = db
    try:
        srv.wait_ready()
        events = eligible_events(srv, 200)
        acked: list[str] = []

        def send(event):
            try:
                resp = srv.post("feedback", json=event)
            except Exception:
                return
            if resp.status_code == 200:
                acked.append(event["event_id"])

        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(send, e) for e in events]
            deadline = time.monotonic() + 60
            while len(acked) < len(events) // 4 and time.monotonic() < deadline:
                time.sleep(0.01)
            # kill -9 the worker (it writes; BentoML starts it in its own session) and the server
            parent = psutil.Process(srv.proc.pid)
            for proc in [*parent.children(recursive=True), parent]:
                proc.send_signal(signal.SIGKILL)
            srv.proc.wait(timeout=10)
            for f in futures:
                f.result()
    finally:
        srv.stop()
    assert acked, srv.log.read_text()[-3000:]
    assert len(events) // 4 <= len(acked) < len(events)
    stored = set(feedback_rows(db)["feedback_id"])
    assert set(acked) <= stored

    srv = Server(explore_env, db, tmp_path / "server2.log")
    try:
        srv.wait_ready()
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda e: srv.post("feedback", json=e), events))
    finally:
        srv.stop()
    assert [a.status_code for a in answers] == [200] * len(events)
    rows = feedback_rows(db)
    assert rows["feedback_id"].value_counts().max() == 1
    assert set(rows["feedback_id"]) == {e["event_id"] for e in events}
