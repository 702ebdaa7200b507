"""Benchmark the synthetic CRM generator: wall time, peak memory and rows per table.

Run::

    .venv/bin/python benchmarks/generate.py --customers 1000000 --seed 42

Peak memory is the process's maximum resident set size (``resource`` ru_maxrss), which covers
numpy, pandas and DuckDB's native memory. The warehouse is written to a temporary directory
(or ``--db``) and deleted afterwards unless ``--keep`` is given.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from customer360.data.synthetic import generate_warehouse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--db", type=Path, default=None, help="Where to write the warehouse.")
    parser.add_argument("--keep", action="store_true", help="Keep the warehouse file.")
    args = parser.parse_args()

    tmp = None
    if args.db is None:
        tmp = Path(tempfile.mkdtemp(prefix="c360-gen-"))
        db = tmp / "bench.duckdb"
    else:
        db = args.db
    last = [time.perf_counter()]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        print(f"  {done:>10,}/{total:,} customers  (+{now - last[0]:.1f}s)", flush=True)
        last[0] = now

    start = time.perf_counter()
    counts = generate_warehouse(
        db, n_customers=args.customers, seed=args.seed, on_progress=progress, overwrite=True
    )
    elapsed = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    size_mib = db.stat().st_size / 2**20
    print(f"customers={args.customers:,} seed={args.seed} cpus={os.cpu_count()} "
          f"load1={os.getloadavg()[0]:.1f}")
    print(f"wall time: {elapsed:.1f} s ({args.customers / elapsed:,.0f} customers/s)")
    print(f"peak RSS: {peak_mib:,.0f} MiB; warehouse file: {size_mib:,.0f} MiB")
    for table, rows in counts.items():
        print(f"  {table:<28}{rows:>14,}")
    if tmp is not None and not args.keep:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
