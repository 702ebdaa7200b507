"""Ingest benchmark: 1M transaction rows from CSV (and Parquet) into a fresh warehouse.

The input is made here with numpy (independent of the synthetic generator): 100k customers and
1M transactions, 1% of them deliberately broken (bad number, unknown customer, bad channel,
duplicate key) so the quarantine path is exercised. Each measurement runs in a fresh child
process, so peak memory (VmHWM, the whole child: Python, DuckDB, the load) is the ingest's own.
Wall time and CPU time (all threads) of the load itself are reported; under contention the CPU
time is the steadier figure. The reference is a bare DuckDB load of
the same CSV with no contract checks (``INSERT INTO transactions SELECT ... FROM read_csv``).

Run::

    .venv/bin/python benchmarks/ingest.py            # 1M rows, 3 repeats
    .venv/bin/python benchmarks/ingest.py --rows 200000 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

CATEGORIES = np.array(["electronics", "home", "fashion", "grocery", "sports", "beauty"])
CHANNELS = np.array(["web", "app", "store", "phone", "sales_rep"])


def make_inputs(folder: Path, n_rows: int, n_customers: int, seed: int = 0) -> dict[str, Path]:
    """Write customers.csv, transactions.csv and transactions.parquet; 1% of rows broken."""
    rng = np.random.default_rng(seed)
    cust_ids = np.char.add("C", np.arange(n_customers).astype(str))
    customers = pa.table({
        "customer_id": cust_ids,
        "customer_type": np.full(n_customers, "B2C"),
        "region": rng.choice(["north", "south", "east", "west", "central"], n_customers),
        "city": np.full(n_customers, "Springfield"),
        "acquisition_channel": rng.choice(["paid_digital", "referral", "direct"], n_customers),
        "signup_date": np.full(n_customers, "2023-01-01"),
    })
    pacsv.write_csv(customers, folder / "customers.csv")

    is_return = rng.random(n_rows) < 0.05
    amount = np.round(rng.gamma(2.0, 40.0, n_rows), 2) * np.where(is_return, -1, 1)
    seconds = rng.integers(0, 3 * 365 * 86400, n_rows)
    ts = np.datetime64("2023-01-01T00:00:00") + seconds.astype("timedelta64[s]")
    columns = {
        "transaction_id": np.char.add("T", np.arange(n_rows).astype(str)),
        "customer_id": cust_ids[rng.integers(0, n_customers, n_rows)],
        "ts": np.datetime_as_string(ts, unit="s"),
        "amount": amount.astype(str),
        "margin": np.round(amount * 0.3, 2).astype(str),
        "quantity": rng.integers(1, 5, n_rows).astype(str),
        "category": rng.choice(CATEGORIES, n_rows),
        "channel": rng.choice(CHANNELS, n_rows),
        "discount": np.round(rng.random(n_rows) * 5, 2).astype(str),
        "is_return": np.where(is_return, "true", "false"),
        "referrer_id": np.full(n_rows, "", dtype=object),
        "cost_to_serve": np.round(rng.gamma(2.0, 2.0, n_rows), 2).astype(str),
    }
    bad = rng.choice(n_rows, size=n_rows // 100, replace=False)
    kinds = np.array_split(bad, 4)
    columns["amount"][kinds[0]] = "n/a"
    columns["customer_id"][kinds[1]] = "C_unknown"
    columns["channel"][kinds[2]] = "fax"
    columns["transaction_id"][kinds[3]] = columns["transaction_id"][kinds[3] - 1]
    referred = rng.random(n_rows) < 0.02
    columns["referrer_id"][referred] = cust_ids[rng.integers(0, n_customers, referred.sum())]
    columns["referrer_id"][~referred] = None
    table = pa.table({k: pa.array(v, pa.string()) for k, v in columns.items()})
    pacsv.write_csv(table, folder / "transactions.csv")
    pq.write_table(table, folder / "transactions.parquet")
    return {
        "customers": folder / "customers.csv",
        "csv": folder / "transactions.csv",
        "parquet": folder / "transactions.parquet",
    }


def _peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). Not ``ru_maxrss``: Linux carries that over
    from the parent across fork + exec, so it would report the input generator's memory."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, db: str, customers: str, file: str) -> None:
    """One measurement in this (fresh) process; prints a JSON line."""
    from customer360.data.ingest import ingest_file
    from customer360.data.warehouse import connect

    con = connect(db, create=True)
    ingest_file(con, "customers", customers)
    start, cpu_start = time.perf_counter(), time.process_time()
    if mode == "bare":
        cols = "transaction_id, customer_id, ts, amount, margin, quantity, category, channel, " \
            "discount, is_return, referrer_id, cost_to_serve"
        con.execute(
            f"INSERT INTO transactions ({cols}) SELECT {cols} FROM read_csv('{file}', "
            "header = true) WHERE amount <> 'n/a' AND channel <> 'fax' "
            "QUALIFY row_number() OVER (PARTITION BY transaction_id) = 1"
        )
        rows, loaded, quarantined = None, None, None
    else:
        report = ingest_file(con, "transactions", file)
        rows, loaded, quarantined = report.rows_read, report.rows_loaded, report.rows_quarantined
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    con.close()
    peak_mb = _peak_rss_mb()
    print(json.dumps({
        "seconds": seconds, "cpu_seconds": cpu, "rows_read": rows, "rows_loaded": loaded,
        "rows_quarantined": quarantined, "peak_rss_mb": peak_mb,
    }))


def measure(mode: str, inputs: dict[str, Path], folder: Path, i: int) -> dict:
    db = folder / f"bench_{mode}_{i}.duckdb"
    file = inputs["parquet" if mode == "parquet" else "csv"]
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(db), str(inputs["customers"]), str(file)],
        check=True, capture_output=True, text=True,
    )
    db.unlink()
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        inputs = make_inputs(folder, args.rows, args.customers)
        size_mb = inputs["csv"].stat().st_size / 2**20
        print(f"{args.rows:,} transaction rows, CSV {size_mb:.0f} MiB")
        results = {}
        for mode in ("csv", "parquet", "bare"):
            runs = [measure(mode, inputs, folder, i) for i in range(args.repeats)]
            sec = statistics.median(r["seconds"] for r in runs)
            cpu = statistics.median(r["cpu_seconds"] for r in runs)
            mem = statistics.median(r["peak_rss_mb"] for r in runs)
            results[mode] = (sec, cpu)
            extra = ""
            if runs[0]["rows_read"] is not None:
                r = runs[0]
                assert r["rows_read"] == r["rows_loaded"] + r["rows_quarantined"]
                extra = f"  loaded {r['rows_loaded']:,} quarantined {r['rows_quarantined']:,}"
            print(f"{mode:8s} median {sec:6.2f} s wall ({cpu:5.1f} s CPU)  "
                  f"{args.rows / sec:>10,.0f} rows/s  peak RSS {mem:,.1f} MiB{extra}")
        print(
            "checked CSV ingest / bare DuckDB load: "
            f"{results['csv'][0] / results['bare'][0]:.2f}x wall, "
            f"{results['csv'][1] / results['bare'][1]:.2f}x CPU"
        )


if __name__ == "__main__":
    main()
