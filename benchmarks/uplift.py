"""Uplift fit + campaign plan at scale (issue 16 target: 1M customers within 5 minutes).

The campaign frame (logged contacts with their features as of each campaign's start and the
true effects) is read once from a synthetic warehouse with campaigns, then resampled with
replacement to ``--rows`` contacts, the waves kept in their proportions. Timed: the fit
(purchase and margin meta-learners, value model, held-out evaluation) and the plan (every
strategy with its DR backtest and OPE, then the contact list for ``--rows`` customers).
Building features for 1M customers is the feature pipeline's benchmark, not this one.

    nice .venv/bin/python benchmarks/uplift.py --customers 20000 --rows 1000000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np

from customer360.data.campaigns import CampaignConfig
from customer360.data.synthetic import generate_warehouse
from customer360.training.uplift import (
    UpliftConfig,
    campaign_frame,
    contact_list,
    fit_frame,
    plan_strategies,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", type=Path, help="Warehouse with campaigns (default: generate one).")
    ap.add_argument("--customers", type=int, default=20_000)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--action", default="retention")
    ap.add_argument("--n-estimators", type=int, default=200)
    ap.add_argument("--method", default="x")
    ap.add_argument("--n-jobs", type=int, default=None,
                    help="LightGBM threads (default: configs/campaigns.yaml's rule, every core "
                    "for 100k training rows or more)")
    args = ap.parse_args()
    db = args.db
    if db is None:
        db = Path(tempfile.mkdtemp()) / "w.duckdb"
        generate_warehouse(db, n_customers=args.customers, seed=5, campaigns=CampaignConfig())
    with duckdb.connect(str(db), read_only=True) as con:
        small = campaign_frame(con, args.action)
    rng = np.random.default_rng(0)
    big = small.iloc[rng.integers(0, len(small), args.rows)].reset_index(drop=True)
    big["customer_id"] = [f"R{i:08d}" for i in range(len(big))]
    cfg = UpliftConfig(n_estimators=args.n_estimators, method=args.method, n_jobs=args.n_jobs)
    load = os.getloadavg()
    t0 = time.perf_counter()
    fit = fit_frame(big, args.action, cfg)
    t1 = time.perf_counter()
    results = plan_strategies(fit, budget=50_000, cost=1.0, config=cfg)
    contacts = contact_list(fit, big, budget=50_000, cost=1.0)
    t2 = time.perf_counter()
    print(f"rows {len(big):,} (train {len(big) - len(fit.holdout):,}, held out "
          f"{len(fit.holdout):,}), {len(fit.columns)} features, method {args.method}, "
          f"{args.n_estimators} trees")
    print(f"fit {t1 - t0:.1f} s, plan {t2 - t1:.1f} s, total {t2 - t0:.1f} s; "
          f"load average before {load[0]:.1f}, after {os.getloadavg()[0]:.1f}")
    print(f"contacts {len(contacts):,}; true Qini purchase uplift "
          f"{fit.metrics.get('true_qini_purchase__uplift', float('nan')):.3f} vs churn risk "
          f"{fit.metrics.get('true_qini_purchase__churn_risk', float('nan')):.3f}")
    for r in results:
        print(f"  {r.strategy:15s} contacts {r.contacts:6d} "
              f"DR {r.backtest_incremental_margin:12,.0f} [{r.ci_low:,.0f}, {r.ci_high:,.0f}]"
              f" true {r.true_incremental_margin}")


if __name__ == "__main__":
    main()
