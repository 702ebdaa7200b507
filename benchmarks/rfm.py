"""Benchmark ``rfm_summary`` against lifetimes' ``summary_data_from_transaction_data``.

Run::

    .venv/bin/python benchmarks/rfm.py --sizes 200000 2000000 20000000 --lifetimes-max 20000000

For each size a transaction log is drawn with numpy (one row per order: VARCHAR customer id,
TIMESTAMP with time of day over three years, amount; ~25 orders per customer) and written
once to Parquet (cached in ``--dir``). ``--layouts`` stores the same rows in up to three
orders: ``random`` (as drawn), ``customer`` (each customer's rows together, in drawing order
within the customer, as the synthetic warehouse writes them) and ``customer_time`` (customer,
then time: what ``customer360 cluster`` leaves). Timed, median of ``--repeats`` runs, all on
the same rows and the same calibration end:

* ``rfm_summary`` reading a table of a DuckDB file (the warehouse case; default plan, and the
  SQL plan forced), the Parquet file directly, and the pandas DataFrame that lifetimes gets;
* lifetimes on that DataFrame with a datetime64 column (its fastest input) and with the dates
  as ISO strings (what it gets from a CSV: it parses them itself, inside the timing).

Loading the DataFrame is not timed. frequency / recency / T / monetary_value are checked equal
(1e-9) for every run against the table run. Runs are interleaved (one of each per round).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

CAL_END = "2026-06-29"
COLUMNS = ("frequency", "recency", "T", "monetary_value")
# row orders measured: name -> ORDER BY over the drawn rows (None: as drawn)
LAYOUTS = {
    "random": None,
    "customer": "customer_id, file_row_number",
    "customer_time": "customer_id, ts, file_row_number",
}


def make_log(path: Path, rows: int, seed: int) -> None:
    """Write ``rows`` orders of ``rows // 25`` customers to ``path`` (Parquet)."""
    rng = np.random.default_rng(seed)
    customers = max(1, rows // 25)
    ids = np.char.add("C", np.char.zfill(rng.integers(0, customers, rows).astype(str), 8))
    seconds = rng.integers(0, 3 * 365 * 86_400, rows)
    frame = pd.DataFrame(
        {
            "customer_id": ids,
            "ts": pd.Timestamp("2023-07-01") + pd.to_timedelta(seconds, unit="s"),
            "amount": rng.gamma(2.0, 30.0, rows).round(2),
        }
    )
    frame.to_parquet(path, index=False)


def check_equal(ours: pd.DataFrame, theirs: pd.DataFrame) -> None:
    if "customer_id" in theirs.columns:
        theirs = theirs.set_index("customer_id")
    theirs = theirs.sort_index()
    ours = ours.set_index("customer_id").sort_index()
    assert list(ours.index) == list(theirs.index), "customer sets differ"
    for col in COLUMNS:
        np.testing.assert_allclose(ours[col], theirs[col], rtol=1e-9, atol=1e-9, err_msg=col)


def lifetimes(data: pd.DataFrame) -> pd.DataFrame:
    """lifetimes' summary of ``data`` (days, calibration end ``CAL_END``)."""
    from lifetimes.utils import summary_data_from_transaction_data

    return summary_data_from_transaction_data(
        data,
        "customer_id",
        "ts",
        monetary_value_col="amount",
        observation_period_end=CAL_END,
        freq="D",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200_000, 2_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--lifetimes-max", type=int, default=2_000_000, help="Largest size lifetimes is run at."
    )
    parser.add_argument(
        "--lifetimes-repeats", type=int, default=None, help="Lifetimes repeats (default --repeats)."
    )
    parser.add_argument("--dir", type=Path, default=Path("/tmp/c360-rfm-bench"))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--layouts",
        nargs="+",
        default=list(LAYOUTS),
        choices=LAYOUTS,
        help="Row orders to measure.",
    )
    args = parser.parse_args()

    from customer360.features.rfm import rfm_summary

    args.dir.mkdir(parents=True, exist_ok=True)
    kw = dict(
        customer_col="customer_id", date_col="ts", amount_col="amount", calibration_end=CAL_END
    )
    print(f"cpus={os.cpu_count()} duckdb={duckdb.__version__}")
    for rows, layout in [(r, lay) for r in args.sizes for lay in args.layouts]:
        load_before = os.getloadavg()[0]
        drawn = args.dir / f"tx_{rows}.parquet"
        if not drawn.exists():
            make_log(drawn, rows, args.seed)
        parquet = drawn if layout == "random" else args.dir / f"tx_{rows}_{layout}.parquet"
        if not parquet.exists():
            order = LAYOUTS[layout]
            duckdb.connect().execute(
                f"COPY (SELECT * EXCLUDE (file_row_number) FROM read_parquet('{drawn}', "
                f"file_row_number = true) ORDER BY {order}) TO '{parquet}' (FORMAT parquet)"
            )
        db = parquet.with_suffix(".duckdb")
        if not db.exists():
            with duckdb.connect(str(db)) as w:
                w.execute(f"CREATE TABLE transactions AS SELECT * FROM read_parquet('{parquet}')")
        con = duckdb.connect(str(db), read_only=True)
        mem = duckdb.connect()
        # (label, repeats, function, arguments); the runs are interleaved (one of each per
        # round) so that a change in the machine's load hits every candidate alike.
        plan: list[tuple[str, int, Callable[..., object], tuple[object, ...]]] = [
            ("table", args.repeats, partial(rfm_summary, **kw), (con, "transactions")),
            (
                "table, SQL plan",
                args.repeats,
                partial(rfm_summary, plan="sql", **kw),
                (con, "transactions"),
            ),
            ("parquet", args.repeats, partial(rfm_summary, **kw), (mem, str(parquet))),
        ]
        with_lifetimes = rows <= args.lifetimes_max
        if with_lifetimes:
            frame = pd.read_parquet(parquet)
            as_text = frame.assign(ts=frame["ts"].dt.strftime("%Y-%m-%d %H:%M:%S"))
            reps = args.lifetimes_repeats or args.repeats
            plan += [
                ("DataFrame", args.repeats, partial(rfm_summary, **kw), (mem, frame)),
                ("lifetimes datetime64", reps, lifetimes, (frame,)),
                ("lifetimes ISO strings", reps, lifetimes, (as_text,)),
            ]
        runs: dict[str, list[float]] = {label: [] for label, *_ in plan}
        outputs: dict[str, object] = {}
        for round_ in range(max(r for _, r, _, _ in plan)):
            for label, repeats, fn, fn_args in plan:
                if round_ < repeats:
                    start = time.perf_counter()
                    outputs[label] = fn(*fn_args)
                    runs[label].append(time.perf_counter() - start)
        med = {label: statistics.median(r) for label, r in runs.items()}
        ours = outputs["table"]
        load = f"load1 {load_before:.1f} -> {os.getloadavg()[0]:.1f}"
        line = f"{rows:,} rows / {len(ours):,} customers, {layout} order ({load}): " + (
            "; ".join(f"{label} {med[label]:.3f} s {fmt(r)}" for label, r in runs.items())
        )
        if with_lifetimes:
            for label in (
                "table, SQL plan",
                "parquet",
                "DataFrame",
                "lifetimes datetime64",
                "lifetimes ISO strings",
            ):
                check_equal(ours, outputs[label])
            ratios = [
                f"{theirs} / {mine} {med[theirs] / med[mine]:.1f}x"
                for theirs in ("lifetimes datetime64", "lifetimes ISO strings")
                for mine in ("table", "table, SQL plan", "parquet", "DataFrame")
            ]
            line += "; ratios " + ", ".join(ratios) + "; values equal"
        print(line, flush=True)
        con.close()


def fmt(runs: list[float]) -> str:
    return "[" + ", ".join(f"{r:.3f}" for r in runs) + "]"


if __name__ == "__main__":
    main()
