"""Benchmark ``rfm_summary`` against lifetimes' ``summary_data_from_transaction_data``.

Run::

    .venv/bin/python benchmarks/rfm.py --sizes 200000 2000000 20000000 --lifetimes-max 20000000

For each size a transaction log is drawn with numpy (one row per order: VARCHAR customer id,
TIMESTAMP with time of day over three years, amount; ~25 orders per customer) and written
once to Parquet (cached in ``--dir``). Timed, median of ``--repeats`` runs, all on the same
rows and the same calibration end:

* ``rfm_summary`` reading a table of a DuckDB file (the warehouse case), the Parquet file
  directly, and the pandas DataFrame that lifetimes gets;
* lifetimes on that DataFrame with a datetime64 column (its fastest input) and with the dates
  as ISO strings (what it gets from a CSV: it parses them itself, inside the timing).

Loading the DataFrame is not timed. frequency / recency / T / monetary_value are checked equal
(1e-9) for every lifetimes run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

CAL_END = "2026-06-29"
COLUMNS = ("frequency", "recency", "T", "monetary_value")


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


def timed(
    repeats: int, fn: Callable[..., object], *args: object, **kwargs: object
) -> tuple[float, list[float], object]:
    runs, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        runs.append(time.perf_counter() - start)
    return statistics.median(runs), runs, out


def check_equal(ours: pd.DataFrame, theirs: pd.DataFrame) -> None:
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
    args = parser.parse_args()

    from customer360.features.rfm import rfm_summary

    args.dir.mkdir(parents=True, exist_ok=True)
    kw = dict(
        customer_col="customer_id", date_col="ts", amount_col="amount", calibration_end=CAL_END
    )
    print(f"cpus={os.cpu_count()} duckdb={duckdb.__version__}")
    for rows in args.sizes:
        parquet = args.dir / f"tx_{rows}.parquet"
        if not parquet.exists():
            make_log(parquet, rows, args.seed)
        db = args.dir / f"tx_{rows}.duckdb"
        if not db.exists():
            with duckdb.connect(str(db)) as w:
                w.execute(f"CREATE TABLE transactions AS SELECT * FROM read_parquet('{parquet}')")
        con = duckdb.connect(str(db), read_only=True)
        mem = duckdb.connect()
        table_s, table_runs, ours = timed(args.repeats, rfm_summary, con, "transactions", **kw)
        pq_s, pq_runs, _ = timed(args.repeats, rfm_summary, mem, str(parquet), **kw)
        line = (
            f"{rows:,} rows / {len(ours):,} customers (load1={os.getloadavg()[0]:.1f}): "
            f"rfm_summary table {table_s:.3f} s {fmt(table_runs)}, parquet {pq_s:.3f} s "
            f"{fmt(pq_runs)}"
        )
        if rows <= args.lifetimes_max:
            frame = pd.read_parquet(parquet)
            frame_s, frame_runs, _ = timed(args.repeats, rfm_summary, mem, frame, **kw)
            reps = args.lifetimes_repeats or args.repeats

            lt_s, lt_runs, theirs = timed(reps, lifetimes, frame)
            check_equal(ours, theirs)
            as_text = frame.assign(ts=frame["ts"].dt.strftime("%Y-%m-%d %H:%M:%S"))
            del frame
            lt_str_s, lt_str_runs, theirs = timed(reps, lifetimes, as_text)
            check_equal(ours, theirs)
            line += (
                f", DataFrame {frame_s:.3f} s {fmt(frame_runs)}; lifetimes datetime64 "
                f"{lt_s:.3f} s {fmt(lt_runs)}, ISO strings {lt_str_s:.3f} s "
                f"{fmt(lt_str_runs)}; ratios vs table {lt_s / table_s:.1f}x / "
                f"{lt_str_s / table_s:.1f}x, vs parquet {lt_s / pq_s:.1f}x / "
                f"{lt_str_s / pq_s:.1f}x, vs DataFrame {lt_s / frame_s:.1f}x; values equal"
            )
        print(line, flush=True)
        con.close()


def fmt(runs: list[float]) -> str:
    return "[" + ", ".join(f"{r:.3f}" for r in runs) + "]"


if __name__ == "__main__":
    main()
