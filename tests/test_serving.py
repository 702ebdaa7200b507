"""The BentoML service against a real server on a free loopback port.

One server per module (token on), restarted once without a token for the persistence tests;
models are the real churn / clv / nbo champions trained with minimal settings
(tests/serving_env.py).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import duckdb
import numpy as np
import pandas as pd
import pytest
from serving_env import REPO, Server

pytestmark = pytest.mark.server

TOKEN = "test-token-123"


class Served:
    """The module's current server (the restart test swaps it)."""

    server: Server



@pytest.fixture(scope="module")
def served(env, tmp_path_factory):
    base = tmp_path_factory.mktemp("served")
    db = env.copy_db(base / "warehouse.duckdb")
    holder = Served()
    holder.db = db
    holder.base = base
    holder.server = Server(env, db, base / "server1.log", token=TOKEN)
    try:
        holder.server.wait_ready()
        yield holder
    finally:
        holder.server.stop()


@pytest.fixture(scope="module")
def server(served) -> Server:
    return served.server


@pytest.fixture(scope="module")
def snapshot(env) -> pd.DataFrame:
    with duckdb.connect(str(env.db), read_only=True) as con:
        return con.execute("SELECT * FROM feature_snapshots ORDER BY customer_id").df()


@pytest.fixture(scope="module")
def ids(snapshot) -> list[str]:
    """Customers who bought before the snapshot (full profiles), spread over the table."""
    buyers = snapshot.loc[snapshot["txn__orders__all"] > 0, "customer_id"].tolist()
    return buyers[:: max(1, len(buyers) // 8)][:8]


def ok(resp):
    assert resp.status_code == 200, resp.text
    return resp.json()


# --- happy paths ------------------------------------------------------------------------------


def test_churn_by_id(server, ids, env):
    body = ok(server.post("/churn", json={"customer_id": ids[0]}))
    assert body["customer_id"] == ids[0]
    assert body["as_of"] == env.as_of
    assert 0.0 <= body["churn_probability"] <= 1.0
    assert len(body["reasons"]) == 3 and all(isinstance(r, str) and r for r in body["reasons"])


def test_clv_by_id(server, ids):
    body = ok(server.post("/clv", json={"customer_id": ids[1]}))
    assert np.isfinite(body["clv_ml"])
    assert 0.0 <= body["p_alive"] <= 1.0
    assert body["prob_clv"] is not None and body["expected_purchases"] >= 0
    assert body["horizon_days"] == 365


def test_next_best_offer_by_id(server, ids):
    from customer360.models.nbo import EXCLUSION_REASONS

    body = ok(server.post("/next_best_offer", json={"customer_id": ids[2]}))
    offers = body["offers"]
    assert 1 <= len(offers) <= 3
    assert [o["rank"] for o in offers] == list(range(1, len(offers) + 1))
    assert all(0 <= o["p_accept"] <= 1 and o["reasons"][0].startswith("P(accept)") for o in offers)
    scores = [o["score"] for o in offers]
    assert scores == sorted(scores, reverse=True)
    shown = {o["offer_id"] for o in offers}
    for ex in body["excluded"]:
        assert ex["offer_id"] not in shown
        assert set(ex["reason"].split("|")) <= set(EXCLUSION_REASONS)


def test_customer360_profile_matches_the_single_endpoints(server, ids, env):
    from customer360.config import load_config
    from customer360.models.segments import SegmentsConfig, service_policy

    cid = ids[3]
    profile = ok(server.post("/customer360", json={"customer_id": cid}))
    churn = ok(server.post("/churn", json={"customer_id": cid}))
    clv = ok(server.post("/clv", json={"customer_id": cid}))
    nbo = ok(server.post("/next_best_offer", json={"customer_id": cid}))
    assert profile["churn"] == churn
    assert profile["clv"] == clv
    assert profile["offers"] == nbo["offers"] and profile["excluded"] == nbo["excluded"]
    assert profile["p_alive"] == clv["p_alive"]
    assert profile["value_segment"] in {"A", "B", "C", "D"}
    assert profile["classifications"]["status"] in {"active", "inactive", "potential", "probable"}
    cfg = load_config(env.config_dir / "segments.yaml", SegmentsConfig)
    assert profile["service_policy"] == service_policy(profile["value_segment"], cfg).model_dump()
    assert set(profile["model_versions"]) == {"churn", "clv", "nbo"}


def test_churn_lookup_equals_the_registered_pyfunc(env, monkeypatch):
    """/churn by id reads one typed matrix and calls LightGBM directly; its answers must be
    the registered pyfunc's, bit for bit, whether rows come all at once or one by one."""
    from customer360.data.warehouse import connect
    from customer360.serving.profile import (
        ChurnLookup,
        conform,
        load_champions,
        load_snapshot,
        prob_horizons,
        probabilistic_frame,
    )

    monkeypatch.setenv("MLFLOW_TRACKING_URI", env.tracking_uri)
    monkeypatch.setenv("CUSTOMER360_CONFIG_DIR", str(env.config_dir))
    champions = load_champions(["churn", "clv"])
    churn = champions["churn"]
    with connect(env.db, read_only=True) as con:
        snap = load_snapshot(con)
        prob = probabilistic_frame(con, env.as_of, [365, *prob_horizons(champions)])
    rows = conform(snap.merge(prob, on="customer_id", how="left"), [churn])
    lookup = ChurnLookup.build(churn, rows)
    assert lookup is not None and len(lookup) == len(rows)
    # one float64 cell per customer and booster input: the served columns plus the prob__
    # inputs the self-contained model computes from them
    assert lookup.nbytes == len(rows) * lookup.model.booster_.num_feature() * 8
    assert lookup.model.booster_.num_feature() > len(churn.input_columns)

    expected = churn.predict(rows)  # the generic path: signature cast + MLflow pyfunc
    probability, reasons = lookup.predict(np.arange(len(rows)))
    np.testing.assert_array_equal(probability, expected["churn_probability"].to_numpy())
    np.testing.assert_array_equal(
        reasons, expected[["reason_1", "reason_2", "reason_3"]].to_numpy(dtype=object)
    )
    assert np.unique(probability).size > 10  # not a constant model
    for i in np.linspace(0, len(rows) - 1, 25).astype(int):  # the service's one-row calls
        one_p, one_r = lookup.predict(np.array([i]))
        assert one_p[0] == probability[i]
        assert list(one_r[0]) == list(reasons[i])
    # Only our churn classifier has the fast path; anything else keeps the pyfunc path.
    assert ChurnLookup.build(champions["clv"], rows) is None


def _payload(env, snapshot, cid: str, columns: dict[str, str]) -> dict:
    """A full feature payload for ``cid``, built the way a client would: the snapshot's
    features plus the probabilistic scores for every horizon the models read."""
    from customer360.data.warehouse import connect
    from customer360.training.probabilistic import probabilistic_scores

    row = snapshot.set_index("customer_id").loc[cid].to_dict()
    pattern = r"prob__expected_purchases__(\d+)d"
    horizons = {int(m.group(1)) for c in columns if (m := re.fullmatch(pattern, c))}
    with connect(env.db, read_only=True) as con:
        for h in sorted(horizons) or [365]:
            scores = probabilistic_scores(con, env.as_of, horizon_days=h).set_index("customer_id")
            row.update(scores.loc[cid].to_dict())
    payload = {}
    for col in columns:
        value = row[col]
        plain = value.item() if hasattr(value, "item") else value
        payload[col] = None if pd.isna(value) else plain
    return payload


def test_feature_payload_gives_the_same_answer_as_the_id(server, ids, snapshot, env):
    columns = ok(server.post("/schema_info", json={}))["feature_columns"]
    cid = ids[4]
    payload = _payload(env, snapshot, cid, columns)
    by_id = ok(server.post("/customer360", json={"customer_id": cid}))
    churn = ok(server.post("/churn", json={"features": payload}))
    assert churn["customer_id"] is None
    assert churn["churn_probability"] == pytest.approx(by_id["churn"]["churn_probability"])
    assert churn["reasons"] == by_id["churn"]["reasons"]
    clv = ok(server.post("/clv", json={"features": payload}))
    assert clv["clv_ml"] == pytest.approx(by_id["clv"]["clv_ml"])
    profile = ok(server.post("/customer360", json={"features": payload}))
    assert profile["value_segment"] in {"A", "B", "C", "D"}
    assert profile["offers"], "a payload customer gets offers too"


def test_batch_endpoints_match_single_requests_and_isolate_unknown_ids(server, ids):
    batch = [{"customer_id": ids[0]}, {"customer_id": "NO-SUCH-ID"}, {"customer_id": ids[5]}]
    for path, single in (
        ("churn_batch", "churn"),
        ("clv_batch", "clv"),
        ("next_best_offer_batch", "next_best_offer"),
        ("customer360_batch", "customer360"),
    ):
        items = ok(server.post(path, json={"customers": batch}))
        assert [i["customer_id"] for i in items] == [ids[0], "NO-SUCH-ID", ids[5]]
        assert items[1]["result"] is None and "NO-SUCH-ID" in items[1]["error"]
        for item in (items[0], items[2]):
            assert item["error"] is None
            alone = ok(server.post(single, json={"customer_id": item["customer_id"]}))
            assert item["result"] == alone


def test_churn_by_id_equals_the_pyfunc_path_through_the_server(server, snapshot):
    """/churn_batch (the lookup matrix) against /customer360_batch (the registered pyfunc on
    the snapshot's rows) for many customers, never-buyers included, and an unknown id."""
    many = snapshot["customer_id"].iloc[:: max(1, len(snapshot) // 60)].tolist()
    request = {"customers": [{"customer_id": c} for c in [*many, "NOT-A-CUSTOMER"]]}
    fast = ok(server.post("churn_batch", json=request))
    full = ok(server.post("customer360_batch", json=request))
    assert fast[-1]["result"] is None and "NOT-A-CUSTOMER" in fast[-1]["error"]
    for f, p in zip(fast[:-1], full[:-1], strict=True):
        assert f["error"] is None, f["error"]
        assert f["result"] == p["result"]["churn"]  # exact: same probability, same reasons


def test_adaptive_batching_under_concurrency_keeps_answers_apart(server, ids):
    expected = {c: ok(server.post("churn", json={"customer_id": c})) for c in ids}

    def call(cid):
        return ok(server.post("churn_batch", json={"customers": [{"customer_id": cid}]}))[0]

    def single(cid):
        return ok(server.post("churn", json={"customer_id": cid}))

    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(call, ids * 3))
        singles = list(pool.map(single, ids * 3))
    for item in got:
        assert item["result"] == expected[item["customer_id"]]
    for answer in singles:  # concurrent single requests are scored together, never mixed up
        assert answer == expected[answer["customer_id"]]


def test_batch_scoring_equals_single_requests(server, env, ids, tmp_path, monkeypatch):
    """`customer360 score` and the service give the same numbers for the same customers."""
    from customer360.serving.batch import score_customers

    monkeypatch.setenv("MLFLOW_TRACKING_URI", env.tracking_uri)
    monkeypatch.setenv("CUSTOMER360_CONFIG_DIR", str(env.config_dir))
    db = env.copy_db(tmp_path / "w.duckdb")  # no feedback yet: the same bandit state
    out = tmp_path / "scores.parquet"
    score_customers(env.as_of, out, db=db, chunk_size=2048)
    scores = pd.read_parquet(out).set_index("customer_id")
    request = {"customers": [{"customer_id": c} for c in ids]}
    items = ok(server.post("customer360_batch", json=request))
    for item in items:
        profile, row = item["result"], scores.loc[item["customer_id"]]
        assert row["churn_probability"] == pytest.approx(profile["churn"]["churn_probability"])
        assert [row[f"reason_{i}"] for i in (1, 2, 3)] == profile["churn"]["reasons"]
        assert row["clv_ml"] == pytest.approx(profile["clv"]["clv_ml"])
        assert row["prob__p_alive"] == pytest.approx(profile["p_alive"])
        assert row["value_segment"] == profile["value_segment"]
        assert row["seg__rfm_segment"] == profile["classifications"]["rfm_segment"]
        batch_offers = [row[f"offer_{o['rank']}_id"] for o in profile["offers"]]
        assert batch_offers == [o["offer_id"] for o in profile["offers"]]
        for o in profile["offers"]:
            assert row[f"offer_{o['rank']}_expected_value"] == pytest.approx(o["expected_value"])


# --- bad input --------------------------------------------------------------------------------

BAD_INPUTS = [
    # (endpoint, raw body, status, text that must appear in the answer)
    ("churn", "{not json", 400, "Invalid JSON"),
    ("churn", '{"customer_id": 12345}', 400, '"customer_id"'),
    ("churn", '{"customer_id": "C1", "features": {}}', 400, "exactly one of customer_id"),
    ("churn", "{}", 400, "exactly one of customer_id or features"),
    ("churn", '{"customer_id": "C1", "colour": "red"}', 400, '"colour"'),
    ("clv", '{"features": {"txn__orders__all": 3}}', 400, "missing field(s) features."),
    ("churn", '{"customer_id": "UNKNOWN-42"}', 404, "UNKNOWN-42"),
    ("churn_batch", '{"customers": []}', 400, '"customers"'),
    ("churn_batch", '{"customers": [{"customer_id": 7}]}', 400, '"customer_id"'),
    ("feedback", '{"customer_id": "C1", "offer_id": "O1", "accepted": "maybe"}', 400, '"accepted"'),
    ("feedback", '{"customer_id": "C1", "offer_id": "O01"}', 400, '"accepted"'),
]


@pytest.mark.parametrize(("path", "body", "status", "needle"), BAD_INPUTS)
def test_bad_input_is_a_4xx_naming_the_problem(server, path, body, status, needle):
    resp = server.post(path, content=body)
    assert resp.status_code == status, resp.text
    assert needle in resp.text


def test_wrong_feature_type_names_the_field(server, ids, snapshot, env):
    columns = ok(server.post("/schema_info", json={}))["feature_columns"]
    payload = _payload(env, snapshot, ids[4], columns)
    numeric = next(c for c, t in columns.items() if t in {"double", "long"})
    payload[numeric] = "lots"
    resp = server.post("/churn", json={"features": payload})
    assert resp.status_code == 400 and f"features.{numeric}" in resp.text


def test_oversized_batch_is_refused(server, ids):
    from customer360.serving.schemas import SERVING_CONFIG

    too_many = [{"customer_id": ids[0]}] * (SERVING_CONFIG.max_batch_size + 1)
    resp = server.post("churn_batch", json={"customers": too_many})
    assert resp.status_code == 400
    assert "customers" in resp.text and str(SERVING_CONFIG.max_batch_size) in resp.text


def test_feedback_for_unknown_customer_or_offer_is_not_found(server, ids):
    ghost = {"customer_id": "GHOST-1", "offer_id": "O01", "accepted": True}
    resp = server.post("feedback", json=ghost)
    assert resp.status_code == 404 and "GHOST-1" in resp.text
    resp = server.post("feedback", json={**ghost, "customer_id": ids[0], "offer_id": "NOPE"})
    assert resp.status_code == 404 and "NOPE" in resp.text


def test_no_bad_request_takes_the_worker_down(server, ids):
    assert server.proc.poll() is None
    assert ok(server.post("churn", json={"customer_id": ids[0]}))["customer_id"] == ids[0]


# --- token ------------------------------------------------------------------------------------


def test_token_is_required_on_every_non_health_endpoint(server, ids):
    import httpx

    for path in ("churn", "clv", "next_best_offer", "customer360", "churn_batch", "feedback",
                 "schema_info"):
        resp = httpx.post(f"{server.url}/{path}", json={"customer_id": ids[0]})
        assert resp.status_code == 401, path
        assert "bearer token" in resp.text
    wrong = httpx.post(
        f"{server.url}/churn", json={"customer_id": ids[0]},
        headers={"Authorization": "Bearer wrong"},
    )
    assert wrong.status_code == 401
    for path in ("healthz", "livez", "readyz"):
        assert httpx.get(f"{server.url}/{path}").status_code == 200
    spec = httpx.get(f"{server.url}/docs.json").json()
    assert {"/churn", "/customer360", "/feedback", "/churn_batch"} <= set(spec["paths"])


# --- feedback ---------------------------------------------------------------------------------


def _top_offer(server, cid):
    return ok(server.post("next_best_offer", json={"customer_id": cid}))["offers"][0]


def test_concurrent_feedback_loses_nothing_and_feeds_the_bandit(served, ids):
    server = served.server
    cid = ids[6]
    top = _top_offer(server, cid)
    served.feedback_customer, served.feedback_offer = cid, top["offer_id"]
    served.score_before = top["score"]

    def reject(_):
        body = {"customer_id": cid, "offer_id": top["offer_id"], "accepted": False}
        return server.post("feedback", json=body)

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(reject, range(20)))
    assert [a.status_code for a in answers] == [200] * 20, [a.text for a in answers]
    after = ok(server.post("next_best_offer", json={"customer_id": cid}))["offers"]
    same = [o for o in after if o["offer_id"] == top["offer_id"]]
    assert not same or same[0]["score"] < top["score"]


def test_customer_ids_never_reach_the_log_in_clear(served, ids):
    from serving_env import log_hash as hash_id  # the servers' keyed hash

    text = served.server.log.read_text()
    for cid in [*ids, "UNKNOWN-42", "GHOST-1", "NO-SUCH-ID"]:
        assert cid not in text
    assert hash_id(served.feedback_customer) in text


def test_feedback_survives_a_restart_and_token_off_opens_the_api(served, env):
    served.server.stop()
    with duckdb.connect(str(served.db), read_only=True) as con:
        n = con.execute(
            "SELECT count(*) FROM nbo_feedback WHERE customer_id = ? AND offer_id = ?",
            [served.feedback_customer, served.feedback_offer],
        ).fetchone()[0]
    assert n == 20
    served.server = Server(env, served.db, served.base / "server2.log", token=None)
    served.server.wait_ready()
    import httpx

    resp = httpx.post(
        f"{served.server.url}/next_best_offer", json={"customer_id": served.feedback_customer}
    )
    offers = ok(resp)["offers"]
    same = [o for o in offers if o["offer_id"] == served.feedback_offer]
    assert not same or same[0]["score"] < served.score_before


# --- refusing to start ------------------------------------------------------------------------


def test_serve_refuses_to_start_naming_the_missing_champion(env, tmp_path):
    import mlflow

    store = tmp_path / "store"
    shutil.copytree(env.tracking_uri.removeprefix("sqlite:///").rsplit("/", 1)[0], store)
    uri = f"sqlite:///{store / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.delete_registered_model_alias("nbo", "champion")
    run_env = env.env(env.db, MLFLOW_TRACKING_URI=uri)
    out = subprocess.run(
        [str(REPO / ".venv/bin/customer360"), "serve", "--db", str(env.db), "--port", "1"],
        env=run_env, capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert out.returncode == 2
    text = " ".join((out.stdout + out.stderr).split())
    assert "no registered model version with alias 'champion' for nbo in the MLflow" in text
