"""Benchmark: churn / ML-CLV training time per Optuna trial and peak memory.

Generates (or reuses) a synthetic warehouse of N customers, builds the snapshots (one
training snapshot of N customers plus the validation and test snapshots), runs the full
training job (Optuna trials as nested MLflow runs, refit, calibration, baselines, plots,
registration) into a throwaway MLflow store, and prints timings and peak RSS.

    .venv/bin/python benchmarks/train.py --customers 1000000 --trials 20 --model churn

Results go to docs/benchmarks.md ("Churn / CLV training").
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

from customer360.training.common import SnapshotPlan


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--model", choices=["churn", "clv"], default="churn")
    parser.add_argument("--db", type=Path, default=None, help="reuse/create this warehouse")
    parser.add_argument("--n-jobs", type=int, default=2)
    args = parser.parse_args()

    from customer360.data.synthetic import generate_warehouse
    from customer360.data.warehouse import connect

    work = Path(tempfile.mkdtemp(prefix="c360-bench-train-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    db = args.db or work / f"bench_{args.customers}.duckdb"
    timings: dict[str, float] = {}
    if not db.exists():
        t = time.perf_counter()
        generate_warehouse(db, n_customers=args.customers, seed=42)
        timings["generate_s"] = time.perf_counter() - t

    if args.model == "churn":
        from customer360.training.churn import (
            load_churn_config as load,
        )
        from customer360.training.churn import (
            prepare_warehouse_data,
            run_churn_job,
        )
    else:
        from customer360.training.clv import load_clv_ml_config as load
        from customer360.training.clv import train_clv

    cfg = load()
    # one training snapshot of every customer + one validation + one test snapshot
    cfg = cfg.model_copy(
        update={
            "n_jobs": args.n_jobs,
            "snapshots": SnapshotPlan(count=3, step_days=cfg.horizon_days),
        }
    )
    with connect(db, read_only=True) as con:
        t = time.perf_counter()
        if args.model == "churn":
            data = prepare_warehouse_data(con, cfg)
            timings["snapshots_s"] = time.perf_counter() - t
            rows = len(data.X_train)
            t = time.perf_counter()
            result = run_churn_job(
                data, cfg, trials=args.trials, register=True, model_name="churn_bench"
            )
        else:
            result = train_clv(con, cfg, trials=args.trials)
            rows = None
        timings["job_s"] = time.perf_counter() - t

    import mlflow

    run = mlflow.get_run(result.run_id)
    out = {
        "model": args.model,
        "customers": args.customers,
        "train_rows": rows or int(run.data.tags["rows_train"]),
        "trials": args.trials,
        "pruned": int(run.data.metrics.get("n_pruned", 0)),
        "seconds_per_trial": round(run.data.metrics.get("seconds_per_trial", float("nan")), 2),
        **{k: round(v, 1) for k, v in timings.items()},
        "peak_rss_gib": round(peak_rss_gib(), 2),
        "test_metric": round(
            result.metrics.get("roc_auc", result.metrics.get("normalized_gini", float("nan"))), 4
        ),
        "cpu_count": os.cpu_count(),
        # issue 13: the family chosen on the validation snapshot and the candidates' figures
        "model_family": run.data.tags.get("model_family"),
        "family_selected_on": run.data.tags.get("family_selected_on"),
        **{
            k: round(v, 4)
            for k, v in run.data.metrics.items()
            if k.startswith(("val_roc_auc_", "cv_roc_auc_", "family_choice_"))
        },
        **{
            f"baseline_{name}_auc": round(values["roc_auc"], 4)
            for name, values in result.baselines.items()
            if "roc_auc" in values
        },
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
