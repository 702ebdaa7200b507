"""Benchmark the drift path of ``customer360 monitor``: 1M customers x 140 features.

Run::

    .venv/bin/python benchmarks/monitor.py --customers 1000000 --features 140

1. A DuckDB file with a ``feature_snapshots`` table of two as-of dates is written straight from
   numpy (``--categorical`` of the columns are text with 6 levels, the rest doubles with 10 %
   missing; the current date is shifted on a fifth of the numeric columns). Reused with
   ``--db`` if the file exists.
2. Timed, medians of ``--repeats``: reading both snapshots from DuckDB, the drift rows (PSI +
   KS / chi-square for every feature, :func:`customer360.monitoring.monitor.feature_drift_rows`)
   and writing them to ``monitor_results``.

Not included: the segment mix (``classify`` of the segments room, once per as-of) and the
champion's predictions on the reference snapshot (the scoring's cost, see ``customer360 score``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

REFERENCE, CURRENT = "2026-03-31", "2026-06-29"


def write_snapshots(path: Path, n: int, k: int, n_cat: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    con = duckdb.connect(str(path))
    try:
        for day, shift in ((REFERENCE, 0.0), (CURRENT, 0.3)):
            cols: dict[str, object] = {
                "customer_id": np.char.add("C", np.arange(n).astype(str)),
                "as_of": pd.Timestamp(day),
            }
            for j in range(k - n_cat):
                x = rng.gamma(2.0, 1.0 + (shift if j % 5 == 0 else 0.0), n)
                x[rng.random(n) < 0.1] = np.nan
                cols[f"num__f{j:03d}__90d"] = x
            levels = np.array(list("abcdef"), dtype=object)
            for j in range(n_cat):
                cols[f"cat__f{j:03d}__static"] = levels[rng.integers(0, 6, n)]
            frame = pd.DataFrame(cols)
            con.register("_f", frame)
            if day == REFERENCE:
                con.execute("CREATE TABLE feature_snapshots AS SELECT * FROM _f")
            else:
                con.execute("INSERT INTO feature_snapshots SELECT * FROM _f")
            con.unregister("_f")
            del frame, cols
    finally:
        con.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=140)
    parser.add_argument("--categorical", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--db", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from customer360.monitoring.monitor import (
        MonitorConfig,
        _snapshot,
        feature_drift_rows,
        write_results,
    )

    tmp = None
    db = args.db
    if db is None:
        tmp = tempfile.TemporaryDirectory()
        db = Path(tmp.name) / "monitor.duckdb"
    if not db.exists():
        t = time.perf_counter()
        write_snapshots(db, args.customers, args.features, args.categorical, args.seed)
        print(f"wrote {db} in {time.perf_counter() - t:.1f} s")
    config = MonitorConfig()
    timings: dict[str, list[float]] = {"read": [], "drift": [], "write": [], "total": []}
    for _ in range(args.repeats):
        con = duckdb.connect(str(db))
        t0 = time.perf_counter()
        ref = _snapshot(con, pd.Timestamp(REFERENCE).date())
        cur = _snapshot(con, pd.Timestamp(CURRENT).date())
        t1 = time.perf_counter()
        feats = [c for c in ref.columns if c not in ("customer_id", "as_of")]
        rows = feature_drift_rows(ref[feats], cur[feats], config)
        t2 = time.perf_counter()
        rows = rows.assign(
            as_of=pd.Timestamp(CURRENT).date(), reference_as_of=pd.Timestamp(REFERENCE).date(),
            model_version=None, computed_at=pd.Timestamp.now(),
        )[["as_of", "reference_as_of", "check", "feature", "value", "p_value", "threshold",
           "status", "model_version", "computed_at"]]
        write_results(con, rows)
        t3 = time.perf_counter()
        con.close()
        del ref, cur
        for key, value in (("read", t1 - t0), ("drift", t2 - t1), ("write", t3 - t2),
                           ("total", t3 - t0)):
            timings[key].append(value)
        alerts = int((rows["status"] == "alert").sum())
    print(
        f"{args.customers:,} customers x {args.features} features ({args.categorical} "
        f"categorical), {len(rows)} result rows, {alerts} alerts; medians of {args.repeats}: "
        + ", ".join(f"{k} {statistics.median(v):.1f} s" for k, v in timings.items())
    )
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
