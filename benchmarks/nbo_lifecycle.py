"""NBO offer quality and training cost through ``train_nbo``, for before/after comparisons.

Trains the propensity model on a synthetic warehouse (generated when missing) with
``configs/nbo.yaml`` as shipped into a throwaway MLflow store, and prints one JSON line: the
test AUC / weighted log loss of the model and of the offer-rate baseline, the policy values
(doubly robust estimate and, on synthetic data, the true value) of the logging, learned and
oracle policies, wall and CPU seconds.

    nice -n 5 .venv/bin/python benchmarks/nbo_lifecycle.py --customers 3000 --seed 7
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import tempfile
import time
from pathlib import Path

import duckdb


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--dir", type=Path, default=Path("/tmp"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    store = tempfile.mkdtemp(prefix="nbo_lifecycle_")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}/mlflow.db"

    from customer360.data.synthetic import generate_warehouse
    from customer360.training.nbo import train_nbo

    db = args.dir / f"nbo_lifecycle_{args.customers}_{args.seed}.duckdb"
    if not db.exists():
        generate_warehouse(db, n_customers=args.customers, seed=args.seed)
    wall, cpu = time.perf_counter(), _cpu()
    with duckdb.connect(str(db), read_only=True) as con:
        result = train_nbo(con, trials=args.trials, register=True)
    wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    values = result.policy_values.set_index("policy")
    m = result.metrics
    out = {
        "customers": args.customers,
        "seed": args.seed,
        "test_auc": m.get("test_auc"),
        "test_log_loss": m.get("test_log_loss"),
        "baseline_auc": m.get("baseline_offer_rate_auc", m.get("baseline_auc")),
        **{
            f"{p}_{c}": float(values.loc[p, c])
            for p in ("logging", "learned", "oracle")
            if p in values.index
            for c in ("dr", "true_value")
            if c in values.columns
        },
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "load": os.getloadavg()[0],
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
