"""Benchmark: `clv fit` on the full CDNOW log (lifetimes ships it) with the stacked ML model.

Runs the `clv fit` pipeline (``run_transactions``) on ``CDNOW_master.txt`` (23,570 customers,
69,659 rows), calibration to 1997-09-30, holdout to 1998-06-30, weeks, and prints the holdout
table: predicted total vs actual and per-customer MAE for BG/NBD, Pareto/NBD, the stacked ML
and the naive rate.

    nice .venv/bin/python benchmarks/clv_stack.py [cdnow | cdnow_sample | transactions]

``cdnow_sample`` is lifetimes' 1/10 sample of the same log (2,357 customers); ``transactions``
is ``lifetimes.datasets.load_transaction_data()`` (5,000 customers, 2014, no amounts),
calibration to 2014-09-30, holdout to 2014-12-31.

Results go to docs/benchmarks.md ("CLV on users' logs: the stacked ML").
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import lifetimes
import pandas as pd
from lifetimes.datasets import load_transaction_data

DATASETS = Path(lifetimes.__file__).parent / "datasets"


def _cdnow(file: str = "CDNOW_master.txt") -> tuple[pd.DataFrame, dict, tuple[str, str]]:
    names = None if file == "CDNOW_master.txt" else [
        "customer_id", "customer_seq", "date", "units", "dollar_value"]
    raw = pd.read_csv(DATASETS / file, sep=r"\s+", header=None if names else "infer",
                      names=names, dtype={"customer_id": str, "date": str})
    return raw, {"customer_col": "customer_id", "date_col": "date",
                 "amount_col": "dollar_value"}, ("1997-09-30", "1998-06-30")


def _transactions() -> tuple[pd.DataFrame, dict, tuple[str, str]]:
    raw = load_transaction_data()  # no amount column
    return raw, {"customer_col": "id", "date_col": "date", "amount_col": None}, (
        "2014-09-30", "2014-12-31")


LOGS = {
    "cdnow": _cdnow,
    "cdnow_sample": lambda: _cdnow("CDNOW_sample.txt"),
    "transactions": _transactions,
}


def main() -> None:
    from customer360.training.probabilistic import run_transactions

    log_name = sys.argv[1] if len(sys.argv) > 1 else "cdnow"
    work = Path(tempfile.mkdtemp(prefix="c360-bench-clv-stack-"))
    source = work / f"{log_name}.csv"
    raw, columns, calibration = LOGS[log_name]()
    raw.to_csv(source, index=False)
    start = time.perf_counter()
    report = run_transactions(
        source, **columns, output_dir=work / "out", calibration_end=calibration[0],
        holdout_end=calibration[1], time_unit="weeks",
    )
    seconds = time.perf_counter() - start
    hold = report.params["holdout"]
    actual = hold["actual_total_repeat_purchases"]
    print(f"customers {report.params['customers_with_purchases']:,}; holdout "
          f"{hold['duration']:.4g} weeks; actual {actual:,.0f} repeat purchases")
    print("| model | predicted total | vs actual | MAE per customer | Poisson deviance |")
    print("|---|---|---|---|---|")
    for name, v in hold.items():
        if isinstance(v, dict):
            total = v["predicted_total_repeat_purchases"]
            pick = " (backtest pick)" if name == hold.get("selected_by_backtest") else ""
            print(f"| {name}{pick} | {total:,.0f} | {total / actual - 1:+.1%} | "
                  f"{v['mae_per_customer']:.4f} | {v['poisson_deviance_per_customer']:.4f} |")
    print(f"| no purchase at all | 0 | -100.0 % | {hold['zero_forecast_mae']:.4f} | |")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"seconds": round(seconds, 1), "load": os.getloadavg(),
                      "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
                      "backtest": report.params["models"].get("ml_stacked")}))


if __name__ == "__main__":
    main()
