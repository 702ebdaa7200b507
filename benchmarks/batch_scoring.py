"""Batch scoring (issue 17): `score_customers` next to the bare model calls.

Scores every customer of a warehouse made by ``benchmarks/serving.py`` (its work folder holds
the warehouses and the tiny champions) and reports wall time, CPU time and peak RSS of the
whole job, then times the bare model calls on the first ``--bare-rows`` rows of the same
snapshot: the churn booster's raw score and exact ``pred_contrib`` (the contributions), the
CLV booster's raw score and the NBO booster on the customer x offer pairs, and scales them to
the whole snapshot. ``--profile`` writes a pyinstrument text profile of the job (pyinstrument
is not a project dependency: install it in your venv to use it).

Run::

    nice .venv/bin/python benchmarks/serving.py --workdir out/bench_serving --skip-latency \\
        --batch-customers 200000   # once: warehouse + champions
    nice .venv/bin/python benchmarks/batch_scoring.py --workdir out/bench_serving \\
        --customers 200000 --chunk-size 50000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path


def bare_calls(db: Path, as_of: str, rows: int) -> dict[str, float]:
    """CPU seconds per customer of the three bare Booster.predict calls."""
    import duckdb
    import numpy as np
    import pandas as pd

    from customer360.serving.batch import build_scorer
    from customer360.serving.schemas import load_serving_config

    with duckdb.connect(str(db), read_only=True) as con:
        scorer = build_scorer(con, pd.Timestamp(as_of).date(), load_serving_config())
        chunk = con.execute(
            f"SELECT * FROM feature_snapshots ORDER BY customer_id LIMIT {int(rows)}"
        ).df()
    features = scorer.enrich(chunk)
    direct = scorer.direct
    churn_m = direct.churn_model.matrix(scorer.champions["churn"].model_input(features))
    clv_m = direct.clv_model.matrix(scorer.champions["clv"].model_input(features))
    from customer360.models.nbo import pair_frame

    offers = scorer.population.offers
    n_o = len(offers)
    cust = np.repeat(np.arange(len(features)), n_o)
    pairs = pair_frame(features, offers, cust, np.tile(np.arange(n_o), len(features)))
    nbo_m = direct.nbo_model.matrix(pairs)
    out = {}
    for name, call in (
        ("churn_raw", lambda: direct.churn_model.booster_.predict(churn_m, raw_score=True)),
        ("churn_contrib", lambda: direct.churn_model.booster_.predict(churn_m, pred_contrib=True)),
        ("clv_raw", lambda: direct.clv_model.booster_.predict(clv_m, raw_score=True)),
        ("nbo_raw", lambda: direct.nbo_model.booster_.predict(nbo_m, raw_score=True)),
        ("path_reasons", lambda: direct.attribution.contributions(churn_m)),
    ):
        start = time.process_time()
        call()
        out[name] = (time.process_time() - start) / len(features)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("out/bench_serving"))
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--chunk-size", type=int, default=50_000)
    parser.add_argument("--bare-rows", type=int, default=2_000)
    parser.add_argument("--profile", type=Path, default=None, help="write a pyinstrument profile")
    args = parser.parse_args()
    os.environ.setdefault(
        "MLFLOW_TRACKING_URI", f"sqlite:///{(args.workdir / 'mlruns/mlflow.db').resolve()}"
    )
    from customer360.data.warehouse import connect, get_meta
    from customer360.serving.batch import score_customers

    db = args.workdir / f"batch_{args.customers}.duckdb"
    with connect(db, read_only=True) as con:
        as_of = get_meta(con, "today")
    profiler = None
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.005)
        profiler.start()
    load_start = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), time.process_time()
    report = score_customers(
        as_of, args.workdir / f"scores_{args.customers}.parquet", db=db, chunk_size=args.chunk_size
    )
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if profiler is not None:
        profiler.stop()
        args.profile.write_text(profiler.output_text(unicode=False, color=False))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    bare = bare_calls(db, as_of, args.bare_rows)
    bare_exact = sum(v for k, v in bare.items() if k != "path_reasons") * report.rows
    print(json.dumps({
        "customers": report.rows, "chunks": report.chunks, "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1), "peak_rss_mib": round(peak), "load_start": load_start,
        "load_end": os.getloadavg()[0],
        "bare_cpu_s_per_1k": {k: round(v * 1e3, 3) for k, v in bare.items()},
        "bare_three_calls_cpu_s_scaled": round(bare_exact, 1),
        "job_cpu_over_bare_calls": round(cpu / bare_exact, 3),
    }))


if __name__ == "__main__":
    main()
