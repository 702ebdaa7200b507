"""Batch scoring on Spark (local mode, 2 cores) next to the DuckDB path (issue 17 item 2).

Generates a warehouse of ``--customers`` (seed 9) with its feature snapshot once, then runs
``score_customers`` (DuckDB) and ``score_customers_spark`` (``local[2]``) on it, each in its
own process under ``/usr/bin/time -v``, and prints wall time, CPU time (user + sys of the
process tree: driver, JVM and Python workers) and peak RSS of each, with the load average.
The champions are whatever ``MLFLOW_TRACKING_URI`` holds (e.g. the store of
``benchmarks/serving.py``, or a test environment's); ``CUSTOMER360_CONFIG_DIR`` as usual.

Run::

    MLFLOW_TRACKING_URI=sqlite:///$PWD/out/bench_serving/mlruns/mlflow.db \\
        nice -n 5 .venv/bin/python benchmarks/batch_spark.py --customers 50000
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path


def prepare(db: Path, customers: int) -> str:
    """The warehouse with its snapshot as of its 'today' (built once)."""
    from customer360.data.synthetic import generate_warehouse
    from customer360.data.warehouse import connect, get_meta
    from customer360.features import build_features
    from customer360.features.assembler import SNAPSHOT_TABLE, write_outputs

    if not db.exists():
        generate_warehouse(db, n_customers=customers, seed=9)
        with connect(db) as con:
            as_of = get_meta(con, "today")
            write_outputs(build_features(con, as_of), con=con, table=SNAPSHOT_TABLE)
    with connect(db, read_only=True) as con:
        return str(get_meta(con, "today"))


def run_one(engine: str, db: Path, as_of: str, out: Path) -> None:
    """One scoring run in this process (called under /usr/bin/time)."""
    if engine == "duckdb":
        from customer360.serving.batch import score_customers

        report = score_customers(as_of, out / "duckdb.parquet", db=db)
    else:
        from customer360.features.engine import local_spark
        from customer360.serving.batch_spark import score_customers_spark

        spark = local_spark(cores=2, **{"spark.pyspark.python": sys.executable,
                                        "spark.driver.memory": "3g"})
        report = score_customers_spark(as_of, out / "spark.parquet", db=db, spark=spark)
        spark.stop()
    print(json.dumps({"engine": engine, "rows": report.rows, "chunks": report.chunks,
                      "job_s": round(report.seconds, 1)}))


def timed(engine: str, db: Path, as_of: str, out: Path) -> dict:
    load = os.getloadavg()[0]
    cmd = ["/usr/bin/time", "-v", sys.executable, __file__, "--run", engine, "--db", str(db),
           "--as-of", as_of, "--out", str(out)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(proc.stdout[-3000:] + proc.stderr[-3000:])

    def field(name: str) -> float:
        return float(re.search(rf"{re.escape(name)}: ([\d.]+)", proc.stderr).group(1))

    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**result, "wall_s": round(wall, 1),
            "cpu_s": round(field("User time (seconds)") + field("System time (seconds)"), 1),
            "peak_rss_mib_largest_process": round(field("Maximum resident set size (kbytes)")
                                                  / 1024),
            "load_start": load, "load_end": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("out/bench_spark"))
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--engines", default="duckdb,spark")
    parser.add_argument("--run", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--as-of", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        run_one(args.run, args.db, args.as_of, args.out)
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    db = args.workdir / f"warehouse_{args.customers}.duckdb"
    as_of = prepare(db, args.customers)
    for engine in args.engines.split(","):
        print(json.dumps(timed(engine, db, as_of, args.workdir)), flush=True)


if __name__ == "__main__":
    main()
