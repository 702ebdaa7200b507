"""Web app benchmark (issue 18): server time of the customer card and of search.

Starts the real service (``bentoml serve``, no token, loopback) on the warehouse and tiny
champion models of ``benchmarks/serving.py``'s ``prepare`` (generated and trained once in
``--workdir``), warms it up, then requests, one at a time:

* ``GET /app/customers/{id}`` for ``--requests`` distinct random customers,
* ``GET /app/?q=...`` for as many searches (an id prefix, a full id, a city, a region),
* ``GET /app/segments`` and ``/app/departments/marketing`` a few times (cached per snapshot
  after the first),
* ``POST /customer360`` for the same customers (the API call the card makes, for scale).

It prints p50 / p95 / max of the wall time seen by the client on loopback, and the median of
each phase the app reports in its ``Server-Timing`` header (``profile``: the service's own
``customer360``; ``warehouse``: the card's DuckDB reads; ``charts``; ``render``).

Rerun::

    nice .venv/bin/python benchmarks/webapp.py --workdir out/bench_webapp --customers 20000

Results go to stdout as a Markdown table (recorded in docs/benchmarks.md with ``uptime``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import free_port, prepare, wait_ready  # noqa: E402


def timings(resp: httpx.Response) -> dict[str, float]:
    out = {}
    for part in resp.headers.get("server-timing", "").split(","):
        name, _, dur = part.strip().partition(";dur=")
        if dur:
            out[name] = float(dur)
    return out


def measure(client: httpx.Client, requests: list[tuple[str, str, dict | None]]) -> dict:
    walls, phases = [], {}
    for method, path, body in requests:
        t = time.perf_counter()
        resp = client.request(method, path, json=body)
        walls.append(1000 * (time.perf_counter() - t))
        if resp.status_code != 200:
            raise RuntimeError(f"{method} {path} answered {resp.status_code}: {resp.text[:300]}")
        for k, v in timings(resp).items():
            phases.setdefault(k, []).append(v)
    w = np.asarray(walls)
    return {"n": len(w), "p50": np.percentile(w, 50), "p95": np.percentile(w, 95),
            "max": w.max(), "phases": {k: float(np.median(v)) for k, v in phases.items()}}


TIMELINE_TABLES = ("customers", "third_party", "transactions", "events", "support_tickets",
                   "offer_events", "social")


def replicated_queries(db: Path, copies: int, workdir: Path, requests: int, seed: int) -> dict:
    """The card's warehouse reads and search, in process on one kept connection (as the app
    reads), over a scratch warehouse holding ``copies`` copies of the tables the card and
    search read, each copy's ids suffixed (``C00000123`` -> ``C00000123_7``), stored copy after
    copy so each customer's rows stay together as the generator writes them. Measures what
    the warehouse part of the card costs at ``copies`` x the customers, without generating
    and training a warehouse that size."""
    from customer360.serving.webapp import app as webapp_app
    from customer360.serving.webapp import queries

    scratch = workdir / f"replicated_{copies}.duckdb"
    if not scratch.exists():
        t = time.perf_counter()
        with duckdb.connect(str(scratch)) as con:
            con.execute(f"ATTACH '{db}' AS src (READ_ONLY)")
            for table in TIMELINE_TABLES:
                con.execute(f"CREATE TABLE {table} AS SELECT * FROM src.{table} LIMIT 0")
                for k in range(copies):
                    con.execute(f"INSERT INTO {table} SELECT * REPLACE (customer_id || '_{k}' "
                                f"AS customer_id) FROM src.{table}")
        print(f"replicated x{copies} in {time.perf_counter() - t:.0f} s", flush=True)
    with duckdb.connect(str(scratch), read_only=True) as con:
        (n,) = con.execute("SELECT count(*) FROM customers").fetchone()
        (n_events,) = con.execute("SELECT count(*) FROM events").fetchone()
        ids = [r[0] for r in con.execute(
            f"SELECT customer_id FROM customers USING SAMPLE {requests} ROWS "
            f"(reservoir, {seed})").fetchall()]
        card, search = [], []
        for i, cid in enumerate(ids):
            t = time.perf_counter()
            webapp_app._card_data(con, cid, 1)
            card.append(1000 * (time.perf_counter() - t))
            t = time.perf_counter()
            queries.search_customers(con, cid if i % 2 else cid[:-4])
            search.append(1000 * (time.perf_counter() - t))
    return {"customers": n, "events": n_events,
            **{f"card_{q}": np.percentile(card, q) for q in (50, 95)},
            **{f"search_{q}": np.percentile(search, q) for q in (50, 95)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("out/bench_webapp"))
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--url", default=None,
                        help="measure this already running service (started on the same "
                             "warehouse) instead of starting one")
    parser.add_argument("--replicate", type=int, default=0, metavar="K",
                        help="also time the card's warehouse reads and search over K copies "
                             "of the warehouse's tables (see replicated_queries)")
    args = parser.parse_args()

    from customer360.serving.service import serve_command

    db = args.workdir / f"serve_{args.customers}.duckdb"
    if args.requests or not db.exists():  # --requests 0: only the replicated reads
        db, _ = prepare(args.workdir, args.customers)
    if args.replicate:
        r = replicated_queries(db, args.replicate, args.workdir, 50, args.seed)
        load = os.getloadavg()
        print(f"\nwarehouse reads over x{args.replicate}: {r['customers']:,} customers, "
              f"{r['events']:,} events (load {load[0]:.2f}): card reads p50 "
              f"{r['card_50']:.1f} ms / p95 {r['card_95']:.1f} ms; search p50 "
              f"{r['search_50']:.1f} ms / p95 {r['search_95']:.1f} ms")
        if args.requests == 0:
            return
    with duckdb.connect(str(db), read_only=True) as con:
        ids = [r[0] for r in con.execute("SELECT customer_id FROM feature_snapshots").fetchall()]
        cities = [r[0] for r in con.execute(
            "SELECT DISTINCT city FROM customers WHERE city IS NOT NULL").fetchall()]
        regions = [r[0] for r in con.execute(
            "SELECT DISTINCT region FROM customers WHERE region IS NOT NULL").fetchall()]
    rng = np.random.default_rng(args.seed)
    sample = [str(ids[i]) for i in rng.choice(len(ids), size=args.requests + 20, replace=False)]
    warm, sample = sample[:20], sample[20:]

    proc = log = None
    url = args.url
    if url is None:
        port = free_port()
        cmd, env = serve_command(db, port=port)
        env.pop("CUSTOMER360_API_TOKEN", None)
        log = open(args.workdir / "server.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        url = f"http://127.0.0.1:{port}"
    try:
        if proc is not None:
            t = time.perf_counter()
            wait_ready(url, proc, "/readyz", timeout=900)
            print(f"server ready in {time.perf_counter() - t:.0f} s", flush=True)
        with httpx.Client(base_url=url, timeout=120) as client:
            for cid in warm:  # first requests load templates, models' lazy parts, caches
                client.get(f"/app/customers/{cid}")
                client.get(f"/app/?q={cid[:-2]}")
            measure(client, [("GET", "/app/segments", None)])
            queries = [(cid[:-2] if i % 4 == 0 else cid if i % 4 == 1 else
                        cities[i % len(cities)] if i % 4 == 2 else regions[i % len(regions)])
                       for i, cid in enumerate(sample)]
            rows = {
                "card `/app/customers/{id}`": measure(
                    client, [("GET", f"/app/customers/{c}", None) for c in sample]),
                "search `/app/?q=`": measure(
                    client, [("GET", f"/app/?q={q}", None) for q in queries]),
                "API `POST /customer360`": measure(
                    client, [("POST", "/customer360", {"customer_id": c}) for c in sample]),
                "segments `/app/segments` (cached)": measure(
                    client, [("GET", "/app/segments", None)] * 10),
            }
            try:
                rows["department `/app/departments/sales` (cached)"] = measure(
                    client, [("GET", "/app/departments/sales", None)] * 10)
            except RuntimeError as exc:
                print(f"(no department page: {exc})")
    finally:
        if proc is not None:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=60)
            log.close()
    load = os.getloadavg()
    print(f"\n{args.customers:,} customers, load average {load[0]:.2f} / {load[1]:.2f} / "
          f"{load[2]:.2f}\n")
    print("| page | requests | p50 ms | p95 ms | max ms | median phases (ms) |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        phases = ", ".join(f"{k} {v:.1f}" for k, v in r["phases"].items())
        print(f"| {name} | {r['n']} | {r['p50']:.1f} | {r['p95']:.1f} | {r['max']:.1f} | "
              f"{phases} |")


if __name__ == "__main__":
    main()
