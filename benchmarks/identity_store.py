"""Warehouse identity resolution (issue 14): a first run, then an incremental batch, then a rerun.

The generator's source records of ``--entities`` true customers are split: all but
``--new`` records arrive first, the rest later. Reported: seconds per run, records re-keyed by
the incremental run and by the rerun (0 expected), and the crosswalk's pairwise precision,
recall and F1 against the truth table (pairs inside one ``customer_id``).

Run::

    .venv/bin/python benchmarks/identity_store.py --entities 20000 --new 2000
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

from customer360.data.synthetic_identity import generate_source_records
from customer360.data.warehouse import connect, create_schema, insert_frame
from customer360.identity.store import resolve
from customer360.identity.unify import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=20_000)
    parser.add_argument("--new", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    logging.getLogger("splink").setLevel(logging.ERROR)
    records, truth = generate_source_records(args.entities, seed=args.seed)
    cut = len(records) - args.new
    out: dict = {"records": len(records), "entities": args.entities, "new": args.new}
    with tempfile.TemporaryDirectory() as tmp:
        con = connect(Path(tmp) / "w.duckdb", create=True)
        create_schema(con)
        for name, part in (("first", records.iloc[:cut]), ("incremental", records.iloc[cut:]),
                           ("rerun", records.iloc[:0])):
            if len(part):
                insert_frame(con, "source_records", part)
            t0 = time.perf_counter()
            summary = resolve(con, run_id=name)
            out[name] = summary | {"seconds": round(time.perf_counter() - t0, 2)}
            print(name, json.dumps(out[name]), flush=True)
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
