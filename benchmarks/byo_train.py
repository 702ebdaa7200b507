"""Benchmark: bring-your-own churn training on a 100k-row, 50-column table (issue 13).

The table is synthetic and seeded: 40 numeric columns (a few of them carrying the signal, with
one interaction and one threshold), 10 categorical columns of 3-12 levels (two carrying
signal), 5 % blanks, and a binary label. ``train_churn_table`` runs the full job: 20 % test
hold-out, 5-fold stratified CV on the rest for every Optuna trial, the family choice
(LightGBM, spline logistic regressions, blends) and calibration on out-of-fold scores, the
baselines, plots, the refit on all rows and the MLflow logging (registration off), into a
throwaway MLflow store.

    nice .venv/bin/python benchmarks/byo_train.py --rows 100000 --trials 20 --folds 5

Results go to docs/benchmarks.md ("BYO training at 100k x 50").
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def synthetic_table(rows: int, *, numeric: int = 40, categorical: int = 10, seed: int = 7):
    """A seeded customer table with ``numeric + categorical`` feature columns and ``churned``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, numeric))
    cats = [rng.integers(0, 3 + (j % 10), rows) for j in range(categorical)]
    logit = (
        -1.0 + 0.8 * x[:, 0] - 0.6 * x[:, 1] + 0.5 * x[:, 2] * x[:, 3]
        + 1.0 * (x[:, 4] > 1.0) + 0.4 * np.sin(2 * x[:, 5])
        + 0.5 * (cats[0] == 1) - 0.4 * (cats[1] % 3 == 0)
    )
    y = rng.uniform(size=rows) < 1 / (1 + np.exp(-logit))
    frame = pd.DataFrame(x, columns=[f"num_{i:02d}" for i in range(numeric)])
    for j, c in enumerate(cats):
        frame[f"cat_{j}"] = np.asarray([f"level_{k}" for k in range(12)])[c]
    blanks = rng.uniform(size=frame.shape) < 0.05
    frame = frame.mask(blanks)
    frame["churned"] = y.astype(int)
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--n-jobs", type=int, default=2)
    args = parser.parse_args()

    from customer360.training.churn import load_churn_config, train_churn_table

    work = Path(tempfile.mkdtemp(prefix="c360-bench-byo-train-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    frame = synthetic_table(args.rows)
    config = load_churn_config()
    config = config.model_copy(update={
        "n_jobs": args.n_jobs,
        "byo": config.byo.model_copy(update={"cv_folds": args.folds}),
    })
    load_before = os.getloadavg()
    start = time.perf_counter()

    def cpu_seconds() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    cpu_start = cpu_seconds()

    def progress(done: int, total: int) -> None:
        print(f"trial {done}/{total}: {time.perf_counter() - start:.0f} s wall, "
              f"{cpu_seconds() - cpu_start:.0f} s CPU, load {os.getloadavg()[0]:.1f}",
              file=sys.stderr, flush=True)

    result = train_churn_table(frame, "churned", trials=args.trials, config=config,
                               register=False, model_name="bench_byo", on_progress=progress)
    seconds = time.perf_counter() - start
    import mlflow

    run = mlflow.get_run(result.run_id)
    out = {
        "rows": args.rows,
        "columns": frame.shape[1] - 1,
        "trials": args.trials,
        "folds": args.folds,
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu_seconds() - cpu_start, 1),
        "seconds_per_trial": run.data.metrics.get("seconds_per_trial"),
        "pruned": run.data.metrics.get("n_pruned"),
        "family": run.data.tags.get("model_family"),
        "roc_auc": round(result.metrics["roc_auc"], 4),
        "lr_roc_auc": round(result.baselines["logistic_regression"]["roc_auc"], 4),
        "untuned_roc_auc": round(result.baselines["lightgbm_untuned"]["roc_auc"], 4),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2),
        "load_before": [round(v, 1) for v in load_before],
        "load_after": [round(v, 1) for v in os.getloadavg()],
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
