"""Benchmark: next best offer at demo scale.

Measures, on a synthetic warehouse (generated when missing):

* training end to end (``train_nbo``: features at every month start, fit, OPE) and the true
  policy values it reports: learned vs logging vs oracle (reward = accepted x margin);
* ``recommend`` throughput for every customer x offer pair (eligibility + LightGBM +
  ranking, vectorised) against a plain per-customer Python loop over the same function;
* off-policy evaluation (IPS/SNIPS/DR with a 500-resample bootstrap) on 100k logged rows;
* feedback writes: single ``record_feedback`` calls from 4 threads (one cursor each) and one
  ``record_feedback_batch``.

Run (prints a table and a JSON line; the figures go in docs/benchmarks.md):

    .venv/bin/python benchmarks/nbo.py --db /tmp/nbo_bench.duckdb --customers 20000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd


def _median_time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path("/tmp/nbo_bench.duckdb"))
    parser.add_argument("--customers", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from customer360.data.synthetic import generate_warehouse
    from customer360.models.bandit import BanditState, record_feedback, record_feedback_batch
    from customer360.models.nbo import load_nbo_config, recommend
    from customer360.models.ope import evaluate_policy, one_hot_policy
    from customer360.training.nbo import current_customers, load_history, load_offers, train_nbo

    if not args.db.exists():
        generate_warehouse(args.db, n_customers=args.customers, seed=args.seed)
    os.environ.setdefault(
        "MLFLOW_TRACKING_URI", f"sqlite:///{tempfile.mkdtemp(prefix='nbo_bench_')}/mlflow.db"
    )
    config = load_nbo_config()
    results: dict[str, float] = {}
    con = duckdb.connect(str(args.db), read_only=True)

    t0 = time.perf_counter()
    trained = train_nbo(con, config, register=False)
    results["train_seconds"] = time.perf_counter() - t0
    truth = trained.policy_values.set_index("policy")["true_value"]
    for name in truth.index:
        results[f"true_value_{name}"] = float(truth[name])
    results["learned_over_logging"] = float(truth["learned"] / truth["logging"])
    results["learned_over_oracle"] = float(truth["learned"] / truth["oracle"])
    results["n_test_events"] = trained.metrics["n_test_events"]
    for col in ("dr", "dr_low", "dr_high"):
        results[f"learned_{col}"] = float(
            trained.policy_values.set_index("policy").loc["learned", col]
        )

    offers = load_offers(con, config)
    customers = current_customers(con)
    history = load_history(con, offers)
    pairs = len(customers) * len(offers)
    secs, _ = _median_time(
        lambda: recommend(customers, offers, trained.model, config, history=history, k=3),
        args.repeats,
    )
    results["recommend_seconds"] = secs
    results["recommend_pairs_per_second"] = pairs / secs
    sample = customers.head(200)
    loop_secs, _ = _median_time(
        lambda: [
            recommend(sample.iloc[[i]], offers, trained.model, config, history=history, k=3)
            for i in range(len(sample))
        ],
        1,
    )
    results["loop_pairs_per_second"] = len(sample) * len(offers) / loop_secs
    results["vectorised_over_loop"] = (
        results["recommend_pairs_per_second"] / results["loop_pairs_per_second"]
    )
    con.close()

    rng = np.random.default_rng(0)
    n, k = 100_000, 12
    actions = rng.integers(0, k, n)
    rewards = (rng.random(n) < 0.1) * rng.uniform(10, 400, n)
    target = one_hot_policy(rng.integers(0, k, n), k)
    q = rng.random((n, k))
    secs, _ = _median_time(
        lambda: evaluate_policy(actions, rewards, np.full(n, 1 / k), target, reward_model=q,
                                n_boot=500),
        args.repeats,
    )
    results["ope_100k_rows_500_boot_seconds"] = secs

    with tempfile.TemporaryDirectory() as tmp:
        fcon = duckdb.connect(str(Path(tmp) / "fb.duckdb"))
        per_thread, n_threads = 250, 4

        def worker(i: int) -> None:
            cur = fcon.cursor()
            for j in range(per_thread):
                record_feedback(cur, f"C{i}", f"O{j % 12:02d}", bool(j % 3 == 0), segment="A")
            cur.close()

        t0 = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        secs = time.perf_counter() - t0
        results["feedback_single_per_second_4_threads"] = per_thread * n_threads / secs
        assert BanditState.load(fcon).total == per_thread * n_threads
        batch = pd.DataFrame({
            "customer_id": [f"C{i}" for i in range(100_000)],
            "offer_id": [f"O{i % 12:02d}" for i in range(100_000)],
            "segment": "B",
            "accepted": rng.random(100_000) < 0.1,
        })
        t0 = time.perf_counter()
        record_feedback_batch(fcon, batch)
        results["feedback_batch_100k_seconds"] = time.perf_counter() - t0
        results["bandit_load_seconds"], state = _median_time(
            lambda: BanditState.load(fcon), args.repeats
        )
        assert state.total == per_thread * n_threads + 100_000
        fcon.close()

    width = max(map(len, results))
    for key, value in results.items():
        print(f"{key:<{width}}  {value:,.4g}")
    print(json.dumps({"customers": args.customers, **results}))


if __name__ == "__main__":
    main()
