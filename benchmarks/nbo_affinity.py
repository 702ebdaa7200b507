"""NBO policy quality with the category-affinity pair feature and with its coarse form.

For each warehouse (generated when missing): the true value per decision of the logging,
offer-rate, learned and oracle policies on the newest 30% of logged offers, for
``configs/nbo.yaml`` as shipped (``pair__category_affinity`` from the per-category registry
features in the logistic base: "affinity") and with ``pair__top_category_match`` in its place
(the customer's top category only: "top category"). Prints a markdown table.

    .venv/bin/python benchmarks/nbo_affinity.py --customers 3000 20000 50000 --seed 7
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import duckdb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, nargs="+", default=[3000, 20000])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--dir", type=Path, default=Path("/tmp"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    from customer360.data.synthetic import generate_warehouse
    from customer360.models.nbo import load_nbo_config
    from customer360.training.nbo import (
        decision_matrices,
        fit_propensity,
        policy_values,
        prepare_offer_data,
    )

    base = load_nbo_config()
    base = base.model_copy(update={"ope": base.ope.model_copy(update={"n_boot": 50})})
    linear = [
        "pair__top_category_match" if c == "pair__category_affinity" else c
        for c in base.propensity.linear_features
    ]
    coarse = base.model_copy(
        update={"propensity": base.propensity.model_copy(update={"linear_features": linear})}
    )
    print("| customers (seed) | model | test offers | logging | offer rate | learned | oracle "
          "| learned / logging | learned / oracle | fit s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in args.customers:
        db = args.dir / f"nbo_affinity_{n}_{args.seed}.duckdb"
        if not db.exists():
            generate_warehouse(db, n_customers=n, seed=args.seed)
        con = duckdb.connect(str(db), read_only=True)
        for name, config in (("top category", coarse), ("affinity", base)):
            data = prepare_offer_data(con, config)
            start = time.perf_counter()
            model = fit_propensity(data, config)
            fit_s = time.perf_counter() - start
            table, _ = policy_values(
                decision_matrices(con, data.test, data, model, config), config
            )
            v = table.set_index("policy")["true_value"]
            print(f"| {n:,} ({args.seed}) | {name} | {len(data.test):,} | {v['logging']:.2f} | "
                  f"{v['offer_rate']:.2f} | {v['learned']:.2f} | {v['oracle']:.2f} | "
                  f"{v['learned'] / v['logging']:.2f} | {v['learned'] / v['oracle']:.3f} | "
                  f"{fit_s:.1f} |", flush=True)
        con.close()


if __name__ == "__main__":
    main()
