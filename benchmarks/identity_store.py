"""Warehouse identity resolution (issue 14): a first run, then an incremental batch, then a rerun.

The generator's source records of ``--entities`` true customers are split: all but
``--new`` records arrive first, the rest later. Reported: seconds per run, records re-keyed by
the incremental run and by the rerun (0 expected), and the crosswalk's pairwise precision,
recall and F1 against the truth table (pairs inside one ``customer_id``).

Source records are standardised as they arrive (``standardise_new``, which ``customer360 ingest
source_records`` runs), timed apart from ``resolve``'s match. ``--by-hand`` then runs Splink as
a user would write it by hand on the same standardised records (``identity_records``), with
the same comparisons, blocking rules and training steps (prior from an exact rule, u by random
sampling, EM on the same two blocks, predict at the review threshold, cluster at the match
threshold), so the overhead of ``resolve`` over plain Splink is reported side by side, with and
without the standardisation, and against a hand-written job that also standardises (the
same standardisers in one process, each distinct value once). Peak RSS is the process's
(DuckDB runs in it).

Run::

    .venv/bin/python benchmarks/identity_store.py --entities 20000 --new 2000
    .venv/bin/python benchmarks/identity_store.py --entities 675000 --new 10000 --by-hand
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import tempfile
import time
from pathlib import Path

import pandas as pd

from customer360.data.synthetic_identity import generate_source_records
from customer360.data.warehouse import connect, create_schema, insert_frame
from customer360.identity.store import resolve, standardise_new
from customer360.identity.unify import evaluate


def splink_by_hand(con, first_run: dict) -> dict:
    """Plain Splink on the first run's standardised records with its comparisons, blocking
    rules and EM blocks; seconds per step."""
    from splink import DuckDBAPI, Linker, block_on

    from customer360.identity.roles import _standardised, blocking_columns, build_settings
    from customer360.identity.store import ROLES, _splink_frame
    from customer360.identity.unify import load_identity_config

    config = load_identity_config()
    seconds: dict[str, float] = {}
    # The same standardisers on the first run's raw records in one process, as a hand-written
    # job would call the libraries (each distinct value once); timed apart ("standardise"),
    # not in "total", which is Splink's part.
    raw = con.sql(
        "SELECT * FROM source_records WHERE record_key IN (SELECT record_key FROM "
        "identity_crosswalk WHERE first_seen_run = 'first') ORDER BY record_key"
    ).to_arrow_table().to_pandas(types_mapper=pd.ArrowDtype)
    t0 = time.perf_counter()
    _standardised(raw, ROLES, config.default_phone_region)
    standardise = time.perf_counter() - t0
    del raw
    t0 = time.perf_counter()
    # Read through Arrow, as resolve does (DuckDB's pandas conversion of 1M records costs
    # ~6 s, which would flatter the ratio).
    records = _splink_frame(con.sql(
        "SELECT * FROM identity_records WHERE record_key IN (SELECT record_key FROM "
        "identity_crosswalk WHERE first_seen_run = 'first') ORDER BY record_key"
    ).to_arrow_table().to_pandas(types_mapper=pd.ArrowDtype))
    dropped = [d["columns"] for d in first_run["blocking_rules_dropped"]]
    blocking = [g for g in blocking_columns(ROLES) if g not in dropped]
    linker = Linker(DuckDBAPI().register(records, table_name="by_hand"),
                    build_settings(ROLES, "dedupe_only", blocking=blocking,
                                   max_iterations=config.em_max_iterations), log_level=None)
    seconds["load"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    blocks = [b.split(" & ") for b in first_run["em_blocks"]]
    linker.training.estimate_probability_two_random_records_match(
        [block_on(*sum(blocks, []))], recall=config.deterministic_recall)
    linker.training.estimate_u_using_random_sampling(max_pairs=config.u_max_pairs,
                                                     seed=config.seed)
    for block in blocks:
        linker.training.estimate_parameters_using_expectation_maximisation(block_on(*block))
    seconds["train"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    scored = linker.inference.predict(threshold_match_probability=config.review_threshold)
    seconds["predict"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(
        scored, threshold_match_probability=config.match_threshold).as_pandas_dataframe()
    seconds["cluster"] = time.perf_counter() - t0
    seconds["total"] = sum(seconds.values())
    seconds["standardise"] = standardise
    return {"records": len(records), "clusters": int(clusters["cluster_id"].nunique()),
            "seconds": {k: round(v, 2) for k, v in seconds.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=20_000)
    parser.add_argument("--new", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--by-hand", action="store_true",
                        help="also time plain Splink written by hand on the same records")
    args = parser.parse_args()
    logging.getLogger("splink").setLevel(logging.ERROR)
    t0 = time.perf_counter()
    records, truth = generate_source_records(args.entities, seed=args.seed)
    print(f"generated {len(records):,} records in {time.perf_counter() - t0:.1f} s", flush=True)
    cut = len(records) - args.new
    out: dict = {"records": len(records), "entities": args.entities, "new": args.new}
    with tempfile.TemporaryDirectory() as tmp:
        con = connect(Path(tmp) / "w.duckdb", create=True)
        create_schema(con)
        for name, part in (("first", records.iloc[:cut]), ("incremental", records.iloc[cut:]),
                           ("rerun", records.iloc[:0])):
            if len(part):
                insert_frame(con, "source_records", part)
            # Standardised at the point of entry, as `customer360 ingest source_records` does;
            # timed apart from the match.
            t0 = time.perf_counter()
            standardise_new(con)
            entry = time.perf_counter() - t0
            t0 = time.perf_counter()
            summary = resolve(con, run_id=name)
            out[name] = summary | {"standardise_at_entry_seconds": round(entry, 2),
                                   "wall_seconds": round(time.perf_counter() - t0, 2)}
            print(name, json.dumps(out[name]), flush=True)
        out["peak_rss_mib_after_resolve"] = round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        print("peak RSS MiB", out["peak_rss_mib_after_resolve"], flush=True)
        if args.by_hand:
            out["by_hand"] = splink_by_hand(con, out["first"])
            hand = out["by_hand"]["seconds"]["total"]
            match = out["first"]["seconds"]["total"]
            entry = out["first"]["standardise_at_entry_seconds"]
            by_hand_std = out["by_hand"]["seconds"]["standardise"]
            print("by hand", json.dumps(out["by_hand"]),
                  f"resolve first run / by hand = {match / hand:.2f}x; with the standardisation "
                  f"at entry = {(match + entry) / hand:.2f}x; both standardising = "
                  f"{(match + entry) / (hand + by_hand_std):.2f}x", flush=True)
        crosswalk = con.execute(
            "SELECT source_system AS source, record_key AS record_id, customer_id "
            "FROM identity_crosswalk").df()
        con.close()
    keyed = truth.rename(columns={"source_system": "source", "record_key": "record_id",
                                  "entity_id": "truth"})[["source", "record_id", "truth"]]
    empty = crosswalk.iloc[:0].rename(columns={"source": "source_l", "record_id": "record_id_l"})
    empty = empty.assign(source_r=empty["source_l"], record_id_r=empty["record_id_l"])
    quality = evaluate(crosswalk, empty, keyed, link_only=False)["cluster"]
    out["cluster_quality"] = quality
    print(json.dumps(out["cluster_quality"]))


if __name__ == "__main__":
    main()
