"""Uplift quality per action (issue 16 item 2): retention offer, cross-sell and up-sell.

One synthetic warehouse with campaigns (randomised holdouts and the generator's true effects);
for each action the learners are fitted on every wave but the latest and evaluated on the
latest (`customer360.training.uplift.fit_frame`, the code `campaign plan` runs). Printed per
action and ranking: the true-gain share (area of the cumulative *true* effect in the
ranking's order, as a share of the oracle's; 0 = random) for purchase and margin, the Qini
coefficient on the randomised outcomes, then every strategy's plan under one budget: the DR
estimate of its incremental margin with its interval and the true one.

Run::

    nice .venv/bin/python benchmarks/uplift_actions.py --customers 20000 --seed 3
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import duckdb

from customer360.data.campaigns import CampaignConfig
from customer360.data.contracts import CAMPAIGN_ACTIONS
from customer360.data.synthetic import generate_warehouse
from customer360.training.uplift import UpliftConfig, campaign_frame, fit_frame, plan_strategies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", type=Path, help="Warehouse with campaigns (default: generate one).")
    ap.add_argument("--customers", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--n-estimators", type=int, default=100)
    ap.add_argument("--budget", type=float, default=2_000.0)
    ap.add_argument("--cost", type=float, default=1.0)
    args = ap.parse_args()
    db = args.db
    if db is None:
        db = Path(tempfile.mkdtemp()) / "w.duckdb"
        t0 = time.perf_counter()
        generate_warehouse(db, n_customers=args.customers, seed=args.seed,
                           campaigns=CampaignConfig())
        print(f"warehouse of {args.customers:,} customers in {time.perf_counter() - t0:.0f} s")
    cfg = UpliftConfig(n_estimators=args.n_estimators)
    print(f"load average {os.getloadavg()[0]:.1f}; budget {args.budget:,.0f}, "
          f"cost {args.cost} a contact, {args.n_estimators} trees, method {cfg.method}")
    print("| action | contacts train / held out | ranking | true gain purchase | "
          "true gain margin | Qini (outcomes) |")
    print("|---|---|---|---|---|---|")
    plans = {}
    for action in CAMPAIGN_ACTIONS:
        with duckdb.connect(str(db), read_only=True) as con:
            frame = campaign_frame(con, action)
        fit = fit_frame(frame, action, cfg)
        m = fit.metrics
        sizes = f"{len(frame) - len(fit.holdout):,} / {len(fit.holdout):,}"
        rows = (("uplift model", "uplift", m.get("true_qini_margin__plan_score")),
                ("highest churn risk", "churn_risk", None),
                ("highest propensity", "propensity", None))
        for label, key, margin in rows:
            print(f"| {action} | {sizes} | {label} | "
                  f"{m.get(f'true_qini_purchase__{key}', float('nan')):.3f} | "
                  f"{'' if margin is None else f'{margin:.3f}'} | {m[f'qini__{key}']:.4f} |")
        plans[action] = plan_strategies(fit, budget=args.budget, cost=args.cost, config=cfg)
    print()
    print("| action | strategy | contacts | DR estimate [interval] | true | true inside |")
    print("|---|---|---|---|---|---|")
    for action, results in plans.items():
        for r in results:
            inside = (r.true_incremental_margin is not None
                      and r.ci_low <= r.true_incremental_margin <= r.ci_high)
            print(f"| {action} | {r.strategy} | {r.contacts:,} | "
                  f"{r.backtest_incremental_margin:,.0f} [{r.ci_low:,.0f}, {r.ci_high:,.0f}] | "
                  f"{r.true_incremental_margin:,.0f} | {'yes' if inside else 'no'} |")


if __name__ == "__main__":
    main()
