"""Benchmark: `clv fit` on the full CDNOW log (lifetimes ships it) with the stacked ML model.

Runs the `clv fit` pipeline (``run_transactions``) on ``CDNOW_master.txt`` (23,570 customers,
69,659 rows), calibration to 1997-09-30, holdout to 1998-06-30, weeks, and prints the holdout
table: predicted total vs actual and per-customer MAE for BG/NBD, Pareto/NBD, the stacked ML
and the naive rate.

    nice .venv/bin/python benchmarks/clv_stack.py

Results go to docs/benchmarks.md ("CLV on users' logs: the stacked ML").
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import lifetimes
import pandas as pd


def main() -> None:
    from customer360.training.probabilistic import run_transactions

    work = Path(tempfile.mkdtemp(prefix="c360-bench-clv-stack-"))
    raw = pd.read_csv(
        Path(lifetimes.__file__).parent / "datasets" / "CDNOW_master.txt",
        sep=r"\s+", dtype={"customer_id": str, "date": str},
    )
    source = work / "cdnow.csv"
    raw.to_csv(source, index=False)
    start = time.perf_counter()
    report = run_transactions(
        source, customer_col="customer_id", date_col="date", amount_col="dollar_value",
        output_dir=work / "out", calibration_end="1997-09-30", holdout_end="1998-06-30",
        time_unit="weeks",
    )
    seconds = time.perf_counter() - start
    hold = report.params["holdout"]
    actual = hold["actual_total_repeat_purchases"]
    print(f"customers {report.params['customers_with_purchases']:,}; holdout "
          f"{hold['duration']:.4g} weeks; actual {actual:,.0f} repeat purchases")
    print("| model | predicted total | vs actual | MAE per customer |")
    print("|---|---|---|---|")
    for name, v in hold.items():
        if isinstance(v, dict):
            total = v["predicted_total_repeat_purchases"]
            print(f"| {name} | {total:,.0f} | {total / actual - 1:+.1%} | "
                  f"{v['mae_per_customer']:.4f} |")
    print(json.dumps({"seconds": round(seconds, 1), "load": os.getloadavg(),
                      "backtest": report.params["models"].get("ml_stacked")}))


if __name__ == "__main__":
    main()
