"""Serving and batch-scoring benchmark.

1. Latency and throughput of ``POST /churn`` by customer id on our BentoML service at 1, 8 and
   32 concurrent clients, next to MLflow's own scoring server (``mlflow models serve -m
   models:/churn@champion --env-manager local``) serving the same churn model under the same
   load. MLflow's server has no id lookup, so its clients send the customer's full feature row
   (``dataframe_split``); ours send only the id. Loopback only, bounded request counts. The
   load generator is one thread per client with its own keep-alive ``http.client``
   connection; ``--pin on`` runs both servers on CPU 0 and the load generator on CPU 1
   (``--pin both``: unpinned, then pinned), ``--repeats N`` runs every level N times, the two
   servers interleaved, and the table shows medians.
2. Batch scoring (``customer360 score``) of a generated warehouse: wall time and peak memory of
   the scoring process.
3. ``--mixed-bad FRACTION`` (issue 12): our service alone, ``--clients`` threads for
   ``--duration`` seconds on ``/churn`` and ``/customer360`` by id with FRACTION bad payloads
   mixed in (unknown ids, malformed JSON, nulls in every feature, wrong types, wrong content
   type); counts per status class and per kind, p50/p99 of the valid requests, server RSS
   every ~5 s. Exits 1 on any 5xx, a valid request not answered 200 or a bad one answered
   outside its expected statuses.

Rerun (the work folder keeps the generated warehouses and the tiny trained models)::

    .venv/bin/python benchmarks/serving.py --workdir out/bench_serving --customers 20000 \
        --pin both --repeats 3
    .venv/bin/python benchmarks/serving.py --workdir out/bench_serving --skip-latency \
        --batch-customers 200000
    .venv/bin/python benchmarks/serving.py --workdir out/bench_mixed --customers 5000 \
        --mixed-bad 0.1 --duration 60 --clients 50

Results go to stdout as Markdown tables (recorded in docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny(cfg, **extra):
    """Few boosting rounds, one thread, the fewest snapshots that leave a training date."""
    steps = -(-cfg.horizon_days // cfg.snapshots.step_days)
    snapshots = cfg.snapshots.model_copy(update={"count": 1 + 2 * steps})
    return cfg.model_copy(update={"num_boost_round": 60, "early_stopping_rounds": 10,
                                  "n_jobs": 1, "snapshots": snapshots, **extra})


def warehouse(db: Path, customers: int, seed: int) -> str:
    """Generate a warehouse with a feature snapshot; returns its as-of date."""
    from customer360.data.synthetic import generate_warehouse
    from customer360.data.warehouse import connect, get_meta
    from customer360.features import build_features
    from customer360.features.assembler import SNAPSHOT_TABLE, write_outputs

    if not db.exists():
        t = time.perf_counter()
        generate_warehouse(db, n_customers=customers, seed=seed)
        print(f"generated {customers:,} customers in {time.perf_counter() - t:.0f} s", flush=True)
    with connect(db) as con:
        as_of = get_meta(con, "today")
        if not con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'feature_snapshots'"
        ).fetchone()[0]:
            t = time.perf_counter()
            write_outputs(build_features(con, as_of), con=con, table=SNAPSHOT_TABLE)
            print(f"features in {time.perf_counter() - t:.0f} s", flush=True)
    return as_of


def prepare(workdir: Path, customers: int) -> tuple[Path, str]:
    """Warehouse + tiny champion models (trained once, reused by later runs)."""
    workdir.mkdir(parents=True, exist_ok=True)
    store = workdir / "mlruns"
    store.mkdir(exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{(store / 'mlflow.db').resolve()}"
    db = workdir / f"serve_{customers}.duckdb"
    as_of = warehouse(db, customers, seed=5)
    # models are pickled by reference to customer360's classes: retrain after code changes
    # (delete MODELS_READY)
    if not (workdir / "MODELS_READY").exists():
        import mlflow

        from customer360.data.warehouse import connect
        from customer360.training.churn import load_churn_config, train_churn
        from customer360.training.clv import load_clv_ml_config, train_clv
        from customer360.training.nbo import train_nbo
        from customer360.training.promote import promote

        with connect(db) as con:
            train_churn(con, tiny(load_churn_config(), untuned_rounds=30), trials=1)
            train_clv(con, tiny(load_clv_ml_config()), trials=1)
            train_nbo(con, trials=0)
        # fresh tiny models serve the benchmark whether or not they beat an older champion
        client = mlflow.MlflowClient()
        for name in ("churn", "clv", "nbo"):
            if not promote(name).promoted:
                version = client.get_model_version_by_alias(name, "challenger").version
                client.set_registered_model_alias(name, "champion", version)
        (workdir / "MODELS_READY").write_text("ok")
    return db, as_of


# --- load generation --------------------------------------------------------------------------


def wait_ready(url: str, proc: subprocess.Popen, path: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server {url} exited with {proc.returncode}")
        try:
            if httpx.get(url + path, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"server {url} not ready")


def load(url: str, bodies: list[bytes], clients: int, per_client: int) -> dict[str, float]:
    """``clients`` threads, each with its own keep-alive connection (``http.client``: the
    lightest client, so the load generator takes as little CPU from the server as it can),
    ``per_client`` requests each."""
    parsed = urlsplit(url)
    latencies: list[float] = []
    lock = threading.Lock()
    errors = 0
    headers = {"Content-Type": "application/json"}

    def worker(k: int) -> None:
        nonlocal errors
        mine = []
        bad = 0
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
        try:
            for i in range(per_client):
                body = bodies[(k * per_client + i) % len(bodies)]
                t = time.perf_counter()
                conn.request("POST", parsed.path, body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
                mine.append(time.perf_counter() - t)
                bad += resp.status != 200
        finally:
            conn.close()
        with lock:
            latencies.extend(mine)
            errors += bad

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, range(clients)))
    wall = time.perf_counter() - start
    ms = np.asarray(latencies) * 1000
    return {
        "clients": clients,
        "requests": len(ms),
        "errors": errors,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "throughput_rps": len(ms) / wall,
        "load_avg_1m": os.getloadavg()[0],
    }


def mlflow_bodies(db: Path, as_of: str, ids: list[str]) -> list[bytes]:
    """The churn model's input row of each customer as MLflow's ``dataframe_split`` JSON."""
    from customer360.data.warehouse import connect
    from customer360.serving.profile import (
        conform,
        load_champions,
        load_snapshot,
        prob_horizons,
        probabilistic_frame,
    )

    champion = load_champions(["churn"])["churn"]
    with connect(db, read_only=True) as con:
        snap = load_snapshot(con)
        prob = probabilistic_frame(con, snap["as_of"].iloc[0], prob_horizons({"c": champion}))
    rows = conform(snap.merge(prob, on="customer_id"), [champion]).set_index("customer_id")
    frame = rows.loc[ids, champion.input_columns]
    bodies = []
    for values in frame.itertuples(index=False):
        clean = [None if isinstance(v, float) and math.isnan(v) else v for v in values]
        split = {"columns": champion.input_columns, "data": [clean]}
        bodies.append(json.dumps({"dataframe_split": split}, default=str).encode())
    return bodies


SERVER_CPU, CLIENT_CPU = 0, 1


def _pinned_to(cpu: int | None):
    """A ``preexec_fn`` pinning the child (and everything it starts) to ``cpu``."""
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def start_servers(
    db: Path, pin: bool, logs, mlflow: bool = True
) -> dict[str, tuple[subprocess.Popen, str, str]]:
    """Our service and (``mlflow``) MLflow's scoring server on free loopback ports; with
    ``pin`` both run on CPU ``SERVER_CPU`` (the load generator then takes ``CLIENT_CPU``)."""
    from customer360.serving.service import serve_command

    port_ours, port_mlflow = free_port(), free_port()
    cmd, env = serve_command(db, port=port_ours)
    env.pop("CUSTOMER360_API_TOKEN", None)
    preexec = _pinned_to(SERVER_CPU if pin else None)
    ours = subprocess.Popen(cmd, env=env, stdout=logs, stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=preexec)
    if not mlflow:
        return {"ours": (ours, f"http://127.0.0.1:{port_ours}", "/readyz")}
    mlflow_cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m",
                  "models:/churn@champion", "--env-manager", "local", "-h", "127.0.0.1",
                  "-p", str(port_mlflow)]
    # MLflow's server runs `uvicorn` from PATH: this environment's
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    theirs = subprocess.Popen(mlflow_cmd, env=env, stdout=logs, stderr=subprocess.STDOUT,
                              start_new_session=True, preexec_fn=preexec)
    return {
        "ours": (ours, f"http://127.0.0.1:{port_ours}", "/readyz"),
        "mlflow": (theirs, f"http://127.0.0.1:{port_mlflow}", "/ping"),
    }


SERVERS = {
    "ours": ("customer360 (BentoML), id", "/churn"),
    "profile": ("customer360 (BentoML), /customer360 by id", "/customer360"),
    "mlflow": ("MLflow scoring server, feature row", "/invocations"),
}
SERVER_OF = {"ours": "ours", "profile": "ours", "mlflow": "mlflow"}  # endpoint -> process


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its children so far."""
    root = psutil.Process(pid)
    return sum(sum(p.cpu_times()[:2]) for p in [root, *root.children(recursive=True)])


def latency_benchmark(
    db: Path, as_of: str, per_level: dict[int, int], *, pin: bool, repeats: int,
    endpoints: tuple[str, ...] = ("ours", "mlflow"), url: str | None = None,
) -> list[dict]:
    """Every concurrency level ``repeats`` times, the ``endpoints`` (keys of ``SERVERS``)
    interleaved (so all see the same background load); one row per endpoint, level and
    repeat, with the serving process's CPU per request. ``url``: load our service already
    running there (started on ``db``; its CPU is then the process listening on the port)."""
    with __import__("duckdb").connect(str(db), read_only=True) as con:
        ids = [r[0] for r in con.execute(
            "SELECT customer_id FROM feature_snapshots ORDER BY hash(customer_id) LIMIT 500"
        ).fetchall()]
    by_id = [json.dumps({"customer_id": c}).encode() for c in ids]
    bodies = {"ours": by_id, "profile": by_id}
    if "mlflow" in endpoints:
        bodies["mlflow"] = mlflow_bodies(db, as_of, ids)
    logs = open(Path(db).parent / "bench_servers.log", "ab")  # noqa: SIM115
    started_here = url is None  # (only these are stopped at the end)
    if started_here:
        servers = start_servers(db, pin, logs, mlflow="mlflow" in endpoints)
    else:
        servers = {"ours": (_Running(url), url, "/readyz")}
    mine = os.sched_getaffinity(0)
    results = []
    try:
        for name, (proc, address, ready) in servers.items():
            wait_ready(address, proc, ready)
            tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
            rss = sum(p.memory_info().rss for p in tree) / 2**20
            print(f"{name} server ready: {rss:.0f} MiB RSS (all its processes)", flush=True)
        if pin:
            os.sched_setaffinity(0, {CLIENT_CPU})
        urls = {key: servers[SERVER_OF[key]][1] + SERVERS[key][1] for key in endpoints}
        for key in endpoints:
            load(urls[key], bodies[key], 4, 10)  # warm-up
        for repeat in range(repeats):
            for clients, per_client in per_level.items():
                for key in endpoints:
                    pid = servers[SERVER_OF[key]][0].pid
                    cpu = tree_cpu_s(pid)
                    row = load(urls[key], bodies[key], clients, per_client)
                    row["server_cpu_ms_per_request"] = (
                        (tree_cpu_s(pid) - cpu) * 1000 / max(row["requests"], 1)
                    )
                    row.update(server=SERVERS[key][0], key=key, pinned=pin, repeat=repeat)
                    results.append(row)
                    print(json.dumps(row), flush=True)
    finally:
        os.sched_setaffinity(0, mine)
        for proc, _, _ in servers.values():
            if started_here and proc.poll() is None:
                os.killpg(proc.pid, 15)
                proc.wait(timeout=60)
        logs.close()
    return results


class _Running:
    """A server started elsewhere, as far as :func:`latency_benchmark` needs a process: the
    pid listening on the url's port, always running."""

    def __init__(self, url: str) -> None:
        port = urlsplit(url).port
        self.pid = next(c.pid for c in psutil.net_connections("tcp")
                        if c.laddr and c.laddr.port == port and c.status == "LISTEN" and c.pid)

    def poll(self) -> None:
        return None


def latency_table(rows: list[dict]) -> str:
    """Medians over the repeats, per server, pinning and concurrency level, as Markdown."""
    lines = ["| server | pinned | clients | runs x requests | p50 ms | p99 ms | req/s | "
             "server CPU ms/req | load avg |",
             "|---|---|---|---|---|---|---|---|---|"]
    tail = [""]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["pinned"], r["clients"], r["key"]), []).append(r)
    order = list(SERVERS)
    for (pinned, clients, key), runs in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][1], order.index(kv[0][2]))
    ):
        med = {m: float(np.median([r[m] for r in runs]))
               for m in ("p50_ms", "p99_ms", "throughput_rps", "server_cpu_ms_per_request")}
        loads = [r["load_avg_1m"] for r in runs]
        lines.append(
            f"| {SERVERS[key][0]} | {'yes' if pinned else 'no'} | {clients} | "
            f"{len(runs)} x {runs[0]['requests']} | {med['p50_ms']:.1f} | {med['p99_ms']:.1f} | "
            f"{med['throughput_rps']:.1f} | {med['server_cpu_ms_per_request']:.2f} | "
            f"{min(loads):.1f}-{max(loads):.1f} |"
        )
    for pinned in sorted({r["pinned"] for r in rows}):
        for clients in sorted({r["clients"] for r in rows}):
            ratios = [
                ours["throughput_rps"] / theirs["throughput_rps"]
                for ours in rows
                for theirs in rows
                if ours["key"] == "ours" and theirs["key"] == "mlflow"
                and ours["pinned"] == theirs["pinned"] == pinned
                and ours["clients"] == theirs["clients"] == clients
                and ours["repeat"] == theirs["repeat"]
            ]
            if ratios:
                tail.append(f"throughput ours/MLflow, pinned={pinned}, {clients} clients: "
                            f"median {np.median(ratios):.2f}x over {len(ratios)} runs")
    return "\n".join(lines + tail)


# --- mixed load with bad payloads (issue 12) --------------------------------------------------

MIXED_PATHS = ("/churn", "/customer360")
BAD_KINDS = ("unknown_id", "malformed_json", "null_features", "wrong_type", "wrong_content_type")
# what each bad kind may answer (anything else, and any 5xx, is a failure)
BAD_EXPECTED = {
    "unknown_id": {404},
    "malformed_json": {400, 422},
    # a null scores as the registry default says, or is refused naming the field
    "null_features": {200, 400, 422},
    "wrong_type": {400, 422},
    "wrong_content_type": {415},
}
JSON = "application/json"


def bad_request(kind: str, rng: np.random.Generator, columns: list[str]) -> tuple[bytes, str]:
    """One bad payload of ``kind``: its body and its Content-Type."""
    n = int(rng.integers(1_000_000))
    if kind == "unknown_id":
        return json.dumps({"customer_id": f"no-such-customer-{n}"}).encode(), JSON
    if kind == "malformed_json":
        return [b'{"customer_id": ', b'{"customer_id": "c1",}', b"\xff\xfe{", b"[1, 2"][n % 4], JSON
    if kind == "null_features":
        return json.dumps({"features": dict.fromkeys(columns)}).encode(), JSON
    if kind == "wrong_type":
        body = [{"customer_id": n}, {"customer_id": ["x"]}, {"features": "abc"},
                {"customer_id": None, "features": None}][n % 4]
        return json.dumps(body).encode(), JSON
    return json.dumps({"customer_id": "x"}).encode(), ["text/plain",
                                                       "application/x-www-form-urlencoded"][n % 2]


def server_rss_mib(pid: int) -> float:
    """RSS of the server and every process it started, MiB."""
    root = psutil.Process(pid)
    total = 0
    for p in [root, *root.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def mixed_load(url: str, ids: list[str], columns: list[str], *, clients: int, duration: float,
               bad_fraction: float, max_per_client: int, pid: int,
               sample_every: float = 5.0) -> dict:
    """``clients`` threads, each with its own keep-alive connection, for ``duration`` seconds
    (and at most ``max_per_client`` requests each) on ``/churn`` and ``/customer360`` by id,
    ``bad_fraction`` of the requests bad payloads; server RSS sampled every ``sample_every``
    seconds."""
    parsed = urlsplit(url)
    lock = threading.Lock()
    counts: dict[tuple[str, str], int] = {}  # (kind, status) -> n
    valid_ms: dict[str, list[float]] = {p: [] for p in MIXED_PATHS}
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    start = time.monotonic()

    def sampler() -> None:
        while True:
            samples.append((time.monotonic() - start, server_rss_mib(pid)))
            if stop.wait(sample_every):
                samples.append((time.monotonic() - start, server_rss_mib(pid)))
                return

    def worker(k: int) -> None:
        rng = np.random.default_rng(1000 + k)
        mine: dict[tuple[str, str], int] = {}
        lat: list[tuple[str, float]] = []
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
        deadline = start + duration
        try:
            for _ in range(max_per_client):
                if time.monotonic() >= deadline:
                    break
                path = MIXED_PATHS[int(rng.integers(len(MIXED_PATHS)))]
                if rng.random() < bad_fraction:
                    kind = BAD_KINDS[int(rng.integers(len(BAD_KINDS)))]
                    body, ctype = bad_request(kind, rng, columns)
                else:
                    kind = "valid"
                    body = json.dumps({"customer_id": ids[int(rng.integers(len(ids)))]}).encode()
                    ctype = JSON
                t = time.perf_counter()
                try:
                    conn.request("POST", path, body=body, headers={"Content-Type": ctype})
                    resp = conn.getresponse()
                    resp.read()
                    status = str(resp.status)
                except (OSError, http.client.HTTPException) as exc:
                    status = f"conn:{type(exc).__name__}"
                    conn.close()
                    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
                if kind == "valid" and status == "200":
                    lat.append((path, time.perf_counter() - t))
                mine[(kind, status)] = mine.get((kind, status), 0) + 1
        finally:
            conn.close()
        with lock:
            for path, x in lat:
                valid_ms[path].append(x * 1000)
            for key, n in mine.items():
                counts[key] = counts.get(key, 0) + n

    watcher = threading.Thread(target=sampler, daemon=True)
    watcher.start()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, range(clients)))
    wall = time.monotonic() - start
    stop.set()
    watcher.join(timeout=30)
    total = sum(counts.values())
    by_class: dict[str, int] = {}
    for (_, status), n in counts.items():
        cls = f"{status[0]}xx" if status.isdigit() else "connection error"
        by_class[cls] = by_class.get(cls, 0) + n
    valid = sum(n for (kind, _), n in counts.items() if kind == "valid")
    unexpected = {f"{kind} -> {status}": n for (kind, status), n in counts.items()
                  if (kind == "valid" and status != "200")
                  or (kind != "valid" and (not status.isdigit()
                                           or int(status) not in BAD_EXPECTED[kind]))}
    ms = np.concatenate([np.asarray(v) for v in valid_ms.values()])
    per_path = {p: {"n": len(v), "p50_ms": float(np.percentile(v, 50)) if v else float("nan"),
                    "p99_ms": float(np.percentile(v, 99)) if v else float("nan")}
                for p, v in valid_ms.items()}
    return {
        "clients": clients, "duration_s": wall, "requests": total, "valid": valid,
        "valid_200": len(ms), "bad": total - valid, "by_class": by_class,
        "by_kind": {f"{k} -> {s}": n for (k, s), n in sorted(counts.items())},
        "unexpected": unexpected,
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else float("nan"),
        "per_path": per_path, "throughput_rps": total / wall, "rss_mib": samples,
        "load_avg": os.getloadavg(),
    }


def mixed_benchmark(db: Path, *, clients: int, duration: float, bad_fraction: float,
                    max_per_client: int) -> dict:
    """Our service alone on a free loopback port under :func:`mixed_load`, after a warm-up."""
    from customer360.serving.service import serve_command

    with __import__("duckdb").connect(str(db), read_only=True) as con:
        ids = [r[0] for r in con.execute(
            "SELECT customer_id FROM feature_snapshots ORDER BY hash(customer_id) LIMIT 500"
        ).fetchall()]
    port = free_port()
    cmd, env = serve_command(db, port=port)
    env.pop("CUSTOMER360_API_TOKEN", None)
    logs = open(Path(db).parent / "bench_mixed_server.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=env, stdout=logs, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, "/readyz")
        info = httpx.post(url + "/schema_info", timeout=30).json()
        columns = list(info["feature_columns"])
        print(f"server ready: {server_rss_mib(proc.pid):.0f} MiB RSS, "
              f"{len(columns)} feature columns", flush=True)
        for path in MIXED_PATHS:  # warm-up
            load(url + path, [json.dumps({"customer_id": c}).encode() for c in ids], 4, 10)
        row = mixed_load(url, ids, columns, clients=clients, duration=duration,
                         bad_fraction=bad_fraction, max_per_client=max_per_client,
                         pid=proc.pid)
        row["server_exited"] = proc.poll()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=60)
        logs.close()
    return row


def mixed_report(row: dict) -> str:
    rss = row["rss_mib"]
    lines = [
        f"{row['clients']} clients, {row['duration_s']:.1f} s: {row['requests']:,} requests "
        f"({row['throughput_rps']:.1f} req/s), {row['valid']:,} valid, {row['bad']:,} bad",
        "status classes: " + ", ".join(f"{k} {v:,}" for k, v in sorted(row["by_class"].items())),
        "by kind: " + ", ".join(f"{k} {v:,}" for k, v in row["by_kind"].items()),
        f"valid answered 200: {row['valid_200']:,} of {row['valid']:,}; "
        f"p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms",
        "valid by path: " + "; ".join(
            f"{p} n={v['n']:,} p50 {v['p50_ms']:.1f} ms p99 {v['p99_ms']:.1f} ms"
            for p, v in row["per_path"].items()),
        f"5xx: {row['by_class'].get('5xx', 0)}; unexpected: {row['unexpected'] or 'none'}",
        f"server RSS MiB (every ~5 s): start {rss[0][1]:.0f}, end {rss[-1][1]:.0f}, "
        f"min {min(r for _, r in rss):.0f}, max {max(r for _, r in rss):.0f}; "
        + " ".join(f"{r:.0f}" for _, r in rss),
        f"load average at end: {tuple(round(x, 2) for x in row['load_avg'])}",
    ]
    return "\n".join(lines)


# --- batch scoring ---------------------------------------------------------------------------


def batch_benchmark(workdir: Path, customers: int, chunk_size: int) -> dict:
    db = workdir / f"batch_{customers}.duckdb"
    as_of = warehouse(db, customers, seed=9)
    out = workdir / f"scores_{customers}.parquet"
    cmd = [str(REPO / ".venv/bin/customer360"), "score", "--as-of", as_of, "--output", str(out),
           "--db", str(db), "--chunk-size", str(chunk_size)]
    start = time.perf_counter()
    proc = psutil.Popen(cmd, env=os.environ.copy(), stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE)
    peak = 0
    cpu = 0.0
    while proc.poll() is None:
        try:
            peak = max(peak, proc.memory_info().rss)
            times = proc.cpu_times()
            cpu = times.user + times.system
        except psutil.Error:
            pass
        time.sleep(0.2)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.read().decode()[-3000:])
    return {"customers": customers, "chunk_size": chunk_size, "wall_s": wall,
            "peak_rss_mib": peak / 2**20, "cpu_s_sampled": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("out/bench_serving"))
    parser.add_argument("--customers", type=int, default=20_000,
                        help="customers of the served warehouse")
    parser.add_argument("--requests", type=int, default=400,
                        help="requests per server and concurrency level (at least)")
    parser.add_argument("--batch-customers", type=int, nargs="*", default=[],
                        help="warehouse sizes to batch-score")
    parser.add_argument("--chunk-size", type=int, default=50_000)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of every concurrency level (tables show medians)")
    parser.add_argument("--pin", choices=["off", "on", "both"], default="off",
                        help=f"on: both servers on CPU {SERVER_CPU}, the load generator on "
                        f"CPU {CLIENT_CPU}; both: unpinned, then pinned")
    parser.add_argument("--mixed-bad", type=float, default=None, metavar="FRACTION",
                        help="instead of the latency table: /churn and /customer360 by id "
                        "with FRACTION bad payloads mixed in (issue 12 load test)")
    parser.add_argument("--duration", type=float, default=60.0,
                        help="seconds of the --mixed-bad run")
    parser.add_argument("--clients", type=int, default=50, help="clients of the --mixed-bad run")
    parser.add_argument("--endpoints", nargs="+", choices=list(SERVERS),
                        default=["ours", "mlflow"],
                        help="what the latency table loads: ours = /churn by id, profile = "
                        "/customer360 by id, mlflow = MLflow's server (issue 17: ours profile)")
    parser.add_argument("--url", default=None,
                        help="load our service already running at this address (started on "
                        "the same warehouse) instead of starting one")
    parser.add_argument("--max-per-client", type=int, default=100_000,
                        help="request cap per client of the --mixed-bad run")
    args = parser.parse_args()
    os.environ["BENTOML_DO_NOT_TRACK"] = "True"
    db, as_of = prepare(args.workdir, args.customers)
    print(f"load average at start: {os.getloadavg()}", flush=True)
    if args.mixed_bad is not None:
        row = mixed_benchmark(db, clients=args.clients, duration=args.duration,
                              bad_fraction=args.mixed_bad, max_per_client=args.max_per_client)
        print(json.dumps(row), flush=True)
        print()
        print(mixed_report(row))
        failed = row["by_class"].get("5xx", 0) or row["unexpected"] or row["server_exited"]
        sys.exit(1 if failed else 0)
    if not args.skip_latency:
        levels = {c: max(10, args.requests // c) for c in (1, 8, 32)}
        modes = {"off": [False], "on": [True], "both": [False, True]}[args.pin]
        rows = []
        for pin in modes:
            rows += latency_benchmark(db, as_of, levels, pin=pin, repeats=args.repeats,
                                      endpoints=tuple(args.endpoints), url=args.url)
        print()
        print(latency_table(rows))
    for n in args.batch_customers:
        r = batch_benchmark(args.workdir, n, args.chunk_size)
        print(json.dumps(r), flush=True)
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
