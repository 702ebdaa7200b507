"""Identity resolution inside the warehouse: crosswalk, stable ids, golden records, review.

One :func:`resolve` run over the ``source_records`` table:

1. standardises the records not seen before into ``identity_records`` (raw value kept next to
   ``std_<column>``): :func:`standardise_new`, which ``customer360 ingest source_records``
   runs at the point of entry, so here it only catches up on records that arrived otherwise;
2. trains the Splink model once (saved in ``identity_model``) and, on later runs, scores only
   the new records: against the existing ones (``predict_between``) and among themselves
   (``predict_within``); scored pairs at or above the review threshold go to
   ``identity_pairs``;
3. clusters every stored pair at the match threshold, except a pair flagged
   ``person_conflict`` (unrelated given names and no date of birth or id agreeing:
   :func:`~customer360.identity.roles.person_conflict_sql`, the rule ``unify`` applies), with
   the steward's decisions (``identity_decisions``) applied: an accepted pair is a link (a
   person conflict included), a rejected pair never is;
4. assigns stable ids (:func:`assign_ids`) and writes ``identity_crosswalk``,
   ``identity_aliases``, ``identity_splits``, ``identity_review`` and ``identity_golden``.

Stable-id rules (documented in docs/architecture.md):

* a cluster whose records had no id gets a new one, ``U`` + the first 12 hex digits of the
  sha1 of its smallest record key (deterministic, so a rerun mints the same id);
* a cluster holding records of one existing customer keeps that customer's id;
* a cluster holding records of several existing customers is a merge: the survivor is the
  customer with the most records before the merge, then the earliest first seen, then the
  smallest id; every other id becomes an alias of the survivor and still resolves;
* an existing customer whose records would now fall into several clusters is kept whole and
  flagged in ``identity_splits`` (a suspected split), never re-keyed silently.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from customer360.data.warehouse import (
    get_meta,
    registered,
    set_meta,
    table_exists,
    transaction,
)
from customer360.errors import IdentityError
from customer360.identity.roles import (
    affordable_blocking,
    blocking_columns,
    build_settings,
    name_forms,
    standardise_frame,
)
from customer360.identity.unify import (
    IdentityConfig,
    conflict_rule,
    load_identity_config,
    prediction_columns,
    train_linker,
)

log = logging.getLogger(__name__)

# The roles of the source_records contract's identity columns (no inference needed: the
# contract names them).
ROLES = {
    "given_name": "given_name", "surname": "surname", "company_name": "full_name",
    "email": "email", "phone": "phone", "street": "address", "postcode": "postcode",
    "city": "city", "date_of_birth": "dob", "company_id": "id",
}
GOLDEN_ATTRIBUTES = tuple(ROLES) + ("country",)
DECISIONS = ("accept", "reject")

DDL = {
    "identity_records": None,  # created from the first standardised frame
    "identity_pairs": """CREATE TABLE IF NOT EXISTS identity_pairs (
  record_key_l VARCHAR, record_key_r VARCHAR, match_probability DOUBLE, match_weight DOUBLE,
  match_weights VARCHAR, run_id VARCHAR, person_conflict BOOLEAN,
  PRIMARY KEY (record_key_l, record_key_r))""",
    "identity_decisions": """CREATE TABLE IF NOT EXISTS identity_decisions (
  record_key_l VARCHAR, record_key_r VARCHAR, decision VARCHAR NOT NULL,
  steward VARCHAR NOT NULL, decided_at TIMESTAMP NOT NULL, note VARCHAR,
  PRIMARY KEY (record_key_l, record_key_r))""",
    "identity_crosswalk": """CREATE TABLE IF NOT EXISTS identity_crosswalk (
  record_key VARCHAR PRIMARY KEY, source_system VARCHAR NOT NULL,
  source_record_id VARCHAR NOT NULL, customer_id VARCHAR NOT NULL,
  match_probability DOUBLE, cluster_size INTEGER NOT NULL, first_seen_run VARCHAR NOT NULL)""",
    "identity_aliases": """CREATE TABLE IF NOT EXISTS identity_aliases (
  alias_id VARCHAR PRIMARY KEY, customer_id VARCHAR NOT NULL, merged_run VARCHAR NOT NULL)""",
    "identity_splits": """CREATE TABLE IF NOT EXISTS identity_splits (
  customer_id VARCHAR, run_id VARCHAR, parts INTEGER NOT NULL, records INTEGER NOT NULL,
  PRIMARY KEY (customer_id, run_id))""",
    "identity_model": """CREATE TABLE IF NOT EXISTS identity_model (
  trained_run VARCHAR NOT NULL, settings VARCHAR NOT NULL)""",
}


def _create(con: duckdb.DuckDBPyConnection) -> None:
    for ddl in DDL.values():
        if ddl:
            con.execute(ddl)
    # Warehouses resolved before the person-conflict rule: their stored pairs have no flag
    # (NULL, read as no conflict); pairs scored from now on carry it.
    con.execute("ALTER TABLE identity_pairs ADD COLUMN IF NOT EXISTS person_conflict BOOLEAN")


def _ordered(a: pd.Series, b: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Pair keys in a canonical order (left < right), so a pair is stored once."""
    a, b = a.astype(str).to_numpy(), b.astype(str).to_numpy()
    swap = a > b
    return np.where(swap, b, a), np.where(swap, a, b)


def record_decision(
    con: duckdb.DuckDBPyConnection, key_l: str, key_r: str, decision: str, *, steward: str,
    note: str | None = None,
) -> None:
    """Store a steward's ``accept`` / ``reject`` of a pair; later runs respect it.

    Examples
    --------
    >>> record_decision(con, "crm:1", "pos:9", "reject", steward="ann")  # doctest: +SKIP
    """
    if decision not in DECISIONS:
        raise IdentityError(f"Decision {decision!r}: use one of {', '.join(DECISIONS)}.")
    if key_l == key_r:
        raise IdentityError(f"Decision on {key_l!r} with itself: name two different records.")
    _create(con)
    known = con.execute(
        "SELECT count(*) FROM identity_records WHERE record_key IN (?, ?)", [key_l, key_r]
    ).fetchone()[0] if table_exists(con, "identity_records") else 0
    if known < 2:
        raise IdentityError(
            f"Decision on {key_l!r} / {key_r!r}: both must be resolved source records "
            "(record_key = system:id, as in identity_review); run `customer360 identity run`.")
    (left,), (right,) = _ordered(pd.Series([key_l]), pd.Series([key_r]))
    con.execute(
        "INSERT OR REPLACE INTO identity_decisions VALUES (?, ?, ?, ?, ?, ?)",
        [left, right, decision, steward, dt.datetime.now(dt.UTC).replace(tzinfo=None), note],
    )


def standardise_new(
    con: duckdb.DuckDBPyConnection, config: IdentityConfig | None = None
) -> pd.DataFrame:
    """Standardise the source records not in ``identity_records`` yet (issue 14 item 1: at the
    point of entry, the raw value kept next to the standardised one); returns them.

    ``customer360 ingest source_records FILE`` calls it after the file is loaded, so a run of
    :func:`resolve` only matches; :func:`resolve` calls it too, for records that arrived any
    other way. Running it again standardises nothing twice.
    """
    config = config or load_identity_config()
    if not table_exists(con, "source_records"):
        return pd.DataFrame()
    _create(con)
    seen = table_exists(con, "identity_records")
    standardised_with = json.dumps({"default_phone_region": config.default_phone_region})
    before = get_meta(con, STANDARDISED_WITH_META)
    where = ("WHERE record_key NOT IN (SELECT record_key FROM identity_records)" if seen
             else "")
    waiting = con.execute(f"SELECT count(*) FROM source_records {where}").fetchall()[0][0]
    if waiting and seen and before not in (None, standardised_with):
        raise IdentityError(
            f"identity_records were standardised with {before} (warehouse_meta key "
            f"{STANDARDISED_WITH_META}), this identity config says {standardised_with}: records "
            "standardised two ways would not compare. Use the same identity config for "
            "`customer360 ingest source_records --identity-config` and `customer360 identity "
            "run --config`.")
    if not waiting:
        return pd.DataFrame()
    # Through Arrow: DuckDB's pandas conversion of 1M x 16 columns took 6.4 s, Arrow 0.5 s.
    raw = con.sql(f"SELECT * FROM source_records {where} ORDER BY record_key"
                  ).to_arrow_table().to_pandas(types_mapper=pd.ArrowDtype)
    # The name forms are derived for Splink (``_splink_frame``), not stored.
    clean = standardise_frame(raw, ROLES, config.default_phone_region, forms=False)
    clean = clean.astype({c: "string" for c in clean.columns if c.startswith("std_")})
    # The rows and the settings they were standardised with land together or not at all.
    with registered(con, clean) as view, transaction(con):
        if seen:
            con.execute(f"INSERT INTO identity_records BY NAME SELECT * FROM {view}")
        else:
            con.execute(f"CREATE TABLE identity_records AS SELECT * FROM {view}")
        set_meta(con, STANDARDISED_WITH_META, standardised_with)
    return clean


STANDARDISED_WITH_META = "identity_standardised_with"


def _splink_frame(frame: pd.DataFrame) -> pd.DataFrame:
    # Column arrays as they are (Arrow-backed text stays Arrow): no copy into Python objects.
    return pd.DataFrame({"record_id": frame["record_key"].astype("string").array}
                        | {f"std_{c}": frame[f"std_{c}"].astype("string").array for c in ROLES}
                        | {c: v.array for c, v in name_forms(frame, ROLES).items()})


def _stored_pairs(linker: Any, scored: Any, run_id: str) -> pa.Table:
    """Splink's scored pairs as ``identity_pairs`` rows, built by one query in Splink's DuckDB
    and read as Arrow: the pair in canonical order (left < right, as :func:`_ordered`), the
    per-comparison weights (term-frequency adjustment included) as one JSON object, the
    person-conflict flag. Selecting only these columns matters: the predictions hold both
    records' values and name-form lists, and their pandas copy cost seconds at 1M records."""
    columns = prediction_columns(linker, scored)
    # Every compared column, including a combined one (``location``: street, postcode, city).
    compared = [c.removeprefix("mw_") for c in columns if c.startswith("mw_std_")]
    weights = ", ".join(
        f"\"{c.removeprefix('std_')}\" := round(mw_{c}"
        + (f" + coalesce(mw_tf_adj_{c}, 0)" if f"mw_tf_adj_{c}" in columns else "") + ", 4)"
        for c in compared)
    conflict = conflict_rule(linker, scored, ROLES, columns)
    table = linker.misc.query_sql(f"""
        SELECT least(record_id_l, record_id_r) AS record_key_l,
               greatest(record_id_l, record_id_r) AS record_key_r,
               CAST(match_probability AS DOUBLE) AS match_probability,
               CAST(match_weight AS DOUBLE) AS match_weight,
               {f"CAST(to_json(struct_pack({weights})) AS VARCHAR)" if compared else "'{}'"}
                   AS match_weights,
               {f"coalesce({conflict}, false)" if conflict else "false"} AS person_conflict
        FROM {scored.physical_name}""").as_pyarrow_table()
    # The run id is data, not SQL text (it may come from a caller).
    return table.add_column(5, "run_id", pa.array([run_id] * table.num_rows, pa.string()))


def _score(
    con, config: IdentityConfig, new: pd.DataFrame, run_id: str, seconds: dict[str, float]
) -> dict[str, Any]:
    """Score the new records (all of them on the first run) and store the pairs; the stages'
    seconds go to ``seconds``."""
    from splink import DuckDBAPI, Linker

    t0 = time.perf_counter()
    # Only the key and the standardised columns: Splink compares nothing else.
    # Through Arrow, on a cursor of its own (a relation cannot run beside the connection's
    # open results): DuckDB's pandas conversion of 1M x 11 text columns costs seconds.
    with con.cursor() as reader:
        everything = reader.sql(
            "SELECT record_key, " + ", ".join(f"std_{c}" for c in ROLES)
            + " FROM identity_records ORDER BY record_key").to_arrow_table().to_pandas(
            types_mapper=pd.ArrowDtype)
    db_api = DuckDBAPI()
    rows = con.execute("SELECT settings FROM identity_model").fetchall()
    model = rows[0] if rows else None
    first = model is None
    dropped: list[dict[str, Any]] = []
    if first:
        records = _splink_frame(everything)
        blocking, dropped = affordable_blocking(
            records, blocking_columns(ROLES), config.max_pairs_per_record)
        settings: Any = build_settings(ROLES, "dedupe_only", blocking=blocking,
                                       max_iterations=config.em_max_iterations)
        frame = db_api.register(records, table_name="c360_identity_all")
        linker = Linker(frame, settings, log_level=None)
        training = train_linker(linker, ROLES, config, records)
        seconds["train"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        scored = linker.inference.predict(threshold_match_probability=config.review_threshold)
        saved = json.dumps(linker.misc.save_model_to_json(), default=str)
        con.execute("INSERT INTO identity_model VALUES (?, ?)", [run_id, saved])
    else:
        settings = json.loads(model[0])
        settings["source_dataset_column_name"] = None
        training = {"em_blocks": [], "em_blocks_skipped": [], "name_block_pairs_per_record": None}
        records = _splink_frame(everything)  # the name forms derived once for all
        is_new = everything["record_key"].isin(set(new["record_key"])).to_numpy()
        new_df = db_api.register(records[is_new].reset_index(drop=True),
                                 table_name="c360_identity_new")
        old_df = db_api.register(records[~is_new].reset_index(drop=True),
                                 table_name="c360_identity_old")
        all_df = db_api.register(records, table_name="c360_identity_all")
        linker = Linker(all_df, settings, log_level=None)
        for comp in settings["comparisons"]:
            if any(lv.get("tf_adjustment_column") for lv in comp["comparison_levels"]):
                linker.table_management.compute_tf_table(comp["output_column_name"])
        between = linker.inference.predict_between(
            old_df, new_df, threshold_match_probability=config.review_threshold)
        within = linker.inference.predict_within(
            new_df, threshold_match_probability=config.review_threshold)
        scored = [between, within]
    seconds["predict"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    tables = [_stored_pairs(linker, s, run_id)
              for s in (scored if isinstance(scored, list) else [scored])]
    stored = held = 0
    if sum(t.num_rows for t in tables):
        pairs = pa.concat_tables(tables)
        with registered(con, pairs) as view:
            # Between and within never score one pair twice, and a pair already stored from
            # an earlier run keeps its row.
            con.execute(f"INSERT OR IGNORE INTO identity_pairs BY NAME SELECT * FROM {view}")
        stored = pairs.num_rows
        seconds["store_pairs"] = time.perf_counter() - t0
        held = int(pc.sum(pc.and_(pairs["person_conflict"], pc.greater_equal(
            pairs["match_probability"], config.match_threshold))).as_py() or 0)
    return {"trained": first, **training, "blocking_rules_dropped": dropped,
            "pairs_scored": stored,
            "person_conflicts_not_merged": held}


def assign_ids(
    records: pd.Series, labels: np.ndarray, previous: pd.DataFrame, run_id: str,
    master_ids: pd.Series | None = None, *, positions: np.ndarray | None = None,
) -> tuple[pd.Series, pd.DataFrame, pd.DataFrame]:
    """Stable customer ids for clustered records (the rules of the module docstring).

    Parameters
    ----------
    records
        Record keys.
    labels
        Cluster label per record (same order).
    previous
        The last crosswalk: ``record_key``, ``customer_id``, ``first_seen_run``.
    positions
        Optional: the position in ``records`` of each row of ``previous`` (computed when
        missing).
    master_ids
        Per record (same order), its id in the master system (the warehouse's existing
        ``customers.customer_id``) or missing. A cluster without an old id adopts its smallest
        master id instead of a new U-id; any other master id in a cluster becomes an alias of
        the cluster's id.

    Returns
    -------
    ids, aliases, splits
        ``ids`` per record (aligned with ``records``); new ``alias_id -> customer_id`` rows;
        suspected splits (``customer_id``, ``parts``, ``records``).

    Examples
    --------
    >>> prev = pd.DataFrame({"record_key": ["a", "b"], "customer_id": ["X", "Y"],
    ...                      "first_seen_run": ["r1", "r1"]})
    >>> ids, aliases, _ = assign_ids(pd.Series(["a", "b", "c"]), np.array([0, 0, 0]), prev, "r2")
    >>> ids.tolist(), aliases["alias_id"].tolist()
    (['X', 'X', 'X'], ['Y'])
    """
    # Integer codes throughout (1M records: string groupbys and merges took ~5 s a run).
    keys = records.astype(str).to_numpy()
    labels = np.asarray(labels, dtype=np.int64)
    n = len(keys)
    if positions is None:
        positions = pd.Index(keys).get_indexer(previous["record_key"].astype(str).to_numpy())
    positions = np.asarray(positions, dtype=np.int64)
    known = positions >= 0  # previous rows whose record is still here (all, in resolve)
    codes, customers = pd.factorize(previous["customer_id"].astype(str).to_numpy())
    codes = codes.astype(np.int64)
    old = np.full(n, -1, dtype=np.int64)
    old[positions[known]] = codes[known]
    has = old >= 0
    n_labels = int(labels.max()) + 1 if n else 0
    # Suspected splits: an old customer over several clusters is kept whole (clusters joined).
    pair = np.unique(old[has] * max(n_labels, 1) + labels[has])
    parts = np.bincount(pair // max(n_labels, 1), minlength=len(customers))
    split = np.flatnonzero(parts > 1)
    per_customer = np.bincount(old[has], minlength=len(customers))
    order = np.argsort(customers[split], kind="stable")
    splits = pd.DataFrame({
        "customer_id": customers[split][order].astype(str),
        "parts": parts[split][order].astype(np.int64),
        "records": per_customer[split][order].astype(np.int64),
    })
    if len(split):
        size = n_labels + len(customers)
        graph = coo_matrix((np.ones(int(has.sum())), (labels[has], n_labels + old[has])),
                           shape=(size, size))
        _, joined = connected_components(graph, directed=False)
        labels = joined[labels]
        n_labels = int(labels.max()) + 1
    # Per cluster, its survivor among the old customers in it: most records before, then the
    # earliest first run, then the smallest id.
    size_of = np.bincount(codes, minlength=len(customers))
    run_codes, runs = pd.factorize(previous["first_seen_run"].astype(str).to_numpy(), sort=True)
    first_of = np.full(len(customers), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first_of, codes, run_codes.astype(np.int64))
    id_rank = np.empty(len(customers), dtype=np.int64)
    id_rank[np.argsort(customers.astype(str), kind="stable")] = np.arange(len(customers))
    pair = np.unique(labels[has] * max(len(customers), 1) + old[has])
    pair_label, pair_code = pair // max(len(customers), 1), pair % max(len(customers), 1)
    best = np.lexsort((id_rank[pair_code], first_of[pair_code], -size_of[pair_code],
                       pair_label))
    pair_label, pair_code = pair_label[best], pair_code[best]
    head = np.ones(len(pair_label), dtype=bool)
    head[1:] = pair_label[1:] != pair_label[:-1]
    survivor = np.full(n_labels, -1, dtype=np.int64)
    survivor[pair_label[head]] = pair_code[head]
    merged = ~head
    aliases = pd.DataFrame({
        "alias_id": customers[pair_code[merged]].astype(str),
        "customer_id": customers[survivor[pair_label[merged]]].astype(str),
        "merged_run": run_id,
    })
    ids_of_label = np.empty(n_labels, dtype=object)
    kept = survivor >= 0
    ids_of_label[kept] = customers[survivor[kept]]
    # A cluster without an old id: U + sha1 of its smallest record key (or its master id).
    used = np.zeros(n_labels, dtype=bool)
    used[labels] = True
    fresh = np.flatnonzero(~kept & used)
    rank = (np.arange(n) if pd.Index(keys).is_monotonic_increasing
            else np.argsort(np.argsort(keys, kind="stable"), kind="stable"))
    smallest = np.full(n_labels, n, dtype=np.int64)
    np.minimum.at(smallest, labels, rank)
    by_rank = np.empty(n, dtype=object)
    by_rank[rank] = keys
    ids_of_label[fresh] = ["U" + hashlib.sha1(k.encode()).hexdigest()[:12].upper()
                           for k in by_rank[smallest[fresh]]]
    if master_ids is not None:
        master = pd.Series(master_ids).reset_index(drop=True).astype(object)
        present = master.notna().to_numpy()
        on_fresh = present & ~kept[labels]
        if on_fresh.any():
            adopted = pd.Series(master[on_fresh].to_numpy()).groupby(labels[on_fresh]).min()
            ids_of_label[adopted.index.to_numpy()] = adopted.to_numpy()
    ids = pd.Series(ids_of_label[labels], dtype=object).astype(str)
    if master_ids is not None:
        # Master ids that are not their cluster's id still resolve (old warehouse references).
        other = pd.DataFrame({"master": master[present].to_numpy(),
                              "id": ids[present].to_numpy()})
        other = other[(other["master"] != other["id"]) & ~other["master"].isin(set(ids))]
        other = other.drop_duplicates("master")
        aliases = pd.concat([aliases, pd.DataFrame({
            "alias_id": other["master"].astype(str).to_numpy(),
            "customer_id": other["id"].astype(str).to_numpy(), "merged_run": run_id,
        })], ignore_index=True).drop_duplicates("alias_id")
    return ids.reset_index(drop=True), aliases, splits


def resolve(
    con: duckdb.DuckDBPyConnection, *, config: IdentityConfig | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Run identity resolution over ``source_records`` (incrementally after the first run).

    Returns a JSON-ready summary: new records, pairs scored, customers, merges, suspected
    splits, review queue length. Running it again on the same input changes nothing.
    """
    config = config or load_identity_config()
    run_id = run_id or dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    if not table_exists(con, "source_records"):
        raise IdentityError("No source_records table: ingest source records first "
                            "(`customer360 ingest source_records FILE`).")
    if con.execute("SELECT count(*) FROM source_records").fetchone()[0] == 0:
        raise IdentityError("source_records is empty: nothing to resolve; ingest source records "
                            "first (`customer360 ingest source_records FILE`).")
    _create(con)
    started = time.perf_counter()
    standardise_new(con, config)
    seconds = {"standardise": time.perf_counter() - started}
    # New = standardised (at ingest or just now) but not in the crosswalk yet.
    new = con.sql("SELECT record_key FROM identity_records WHERE record_key NOT IN "
                  "(SELECT record_key FROM identity_crosswalk) ORDER BY record_key"
                  ).to_arrow_table().to_pandas(types_mapper=pd.ArrowDtype)
    summary: dict[str, Any] = {"run_id": run_id, "new_records": int(len(new))}
    if new.empty and con.execute("SELECT count(*) FROM identity_crosswalk").fetchone()[0]:
        summary |= {"pairs_scored": 0, "trained": False, "person_conflicts_not_merged": 0}
    elif con.execute("SELECT count(*) FROM identity_records").fetchone()[0] == 0:
        raise IdentityError("source_records is empty: ingest source records first.")
    else:
        summary |= _score(con, config, new, run_id, seconds)
    t0 = time.perf_counter()
    with transaction(con):
        summary |= _cluster_and_write(con, config, run_id, new)
    seconds["cluster_and_write"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - started
    return summary | {"seconds": {k: round(v, 3) for k, v in seconds.items()}}


def _cluster_and_write(
    con, config: IdentityConfig, run_id: str, new: pd.DataFrame
) -> dict[str, Any]:
    """Cluster the records already in the crosswalk and the ``new`` ones this run scored,
    and write the crosswalk, aliases, splits, review queue, golden records and customers.
    A record standardised by another connection after ``new`` was read is left out: it is
    still new to the next run, which scores it (clustering it now would give it a crosswalk
    row, and so mark it as seen, without a score)."""
    with registered(con, new[["record_key"]]) as fresh:
        return _cluster_and_write_scoped(
            con, config, run_id,
            "(SELECT * FROM identity_records WHERE record_key IN (SELECT record_key FROM "
            f"identity_crosswalk) OR record_key IN (SELECT record_key FROM {fresh}))",
        )


def _cluster_and_write_scoped(
    con, config: IdentityConfig, run_id: str, records: str
) -> dict[str, Any]:
    # Records as row positions (in record-key order), computed by DuckDB: edges and the last
    # crosswalk come as positions, so the Python side works on integers. Materialised once,
    # so every read below sees the same records (the crosswalk the scope reads is rewritten).
    positions = "c360_identity_positions"
    con.execute(f"CREATE OR REPLACE TEMP TABLE {positions} AS SELECT record_key, source_system, "
                f"source_record_id, row_number() OVER (ORDER BY record_key) - 1 AS pos "
                f"FROM {records}")
    keys = con.sql(
        f"SELECT record_key, source_system, source_record_id FROM {positions} "
        "ORDER BY pos").to_arrow_table().to_pandas(types_mapper=pd.ArrowDtype)
    edges = con.execute(f"""
        WITH e AS (
          SELECT p.record_key_l, p.record_key_r, p.match_probability
          FROM identity_pairs p LEFT JOIN identity_decisions d USING (record_key_l, record_key_r)
          WHERE (p.match_probability >= ? AND NOT coalesce(p.person_conflict, false)
                 AND d.decision IS NULL) OR d.decision = 'accept'
          UNION ALL
          SELECT d.record_key_l, d.record_key_r, 1.0 FROM identity_decisions d
          LEFT JOIN identity_pairs p USING (record_key_l, record_key_r)
          WHERE d.decision = 'accept' AND p.record_key_l IS NULL)
        SELECT l.pos AS l, r.pos AS r, e.match_probability AS p
        FROM e JOIN {positions} l ON l.record_key = e.record_key_l
               JOIN {positions} r ON r.record_key = e.record_key_r
    """, [config.match_threshold]).fetchnumpy()
    left, right = edges["l"].astype(np.int64), edges["r"].astype(np.int64)
    n = len(keys)
    graph = coo_matrix((np.ones(len(left)), (left, right)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    # Through Arrow (the same dtypes as DuckDB's pandas conversion; 1M rows 0.5 s, not 1.3 s).
    previous = con.sql(f"SELECT k.pos, c.* FROM identity_crosswalk c JOIN {positions} k "
                       "USING (record_key) ORDER BY k.pos").to_arrow_table().to_pandas()
    at = previous.pop("pos").to_numpy(dtype=np.int64)
    master = (keys["source_record_id"].where(keys["source_system"] == config.master_system)
              if config.master_system else None)
    ids, aliases, splits = assign_ids(keys["record_key"], labels, previous, run_id, master,
                                      positions=at)
    if len(aliases):  # a rerun re-derives the same aliases: keep the run that made them
        known = set(con.execute("SELECT alias_id || '>' || customer_id FROM identity_aliases")
                    .df().iloc[:, 0])
        aliases = aliases[~(aliases["alias_id"] + ">" + aliases["customer_id"]).isin(known)]
    best = np.full(n, np.nan)
    probability = edges["p"].astype(np.float64)
    np.fmax.at(best, left, probability)
    np.fmax.at(best, right, probability)
    first_seen = np.full(n, run_id, dtype=object)
    first_seen[at] = previous["first_seen_run"].astype(str).to_numpy()
    id_codes, _ = pd.factorize(ids.to_numpy())
    crosswalk = keys.assign(
        customer_id=ids.to_numpy(),
        match_probability=best,
        cluster_size=np.bincount(id_codes)[id_codes].astype(np.int64),
        first_seen_run=first_seen,
    )
    changed = int((crosswalk["customer_id"].to_numpy()[at]
                   != previous["customer_id"].astype(str).to_numpy()).sum())
    # Only the rows that differ from the stored crosswalk are written (a 1M-record rewrite
    # cost most of an incremental run); the customers they touch get new golden records.
    differs = _differing(previous, crosswalk, at)
    written = crosswalk[differs].reset_index(drop=True)
    was = np.full(n, None, dtype=object)
    was[at] = previous["customer_id"].astype(str).to_numpy()
    touched = None if previous.empty else sorted(
        set(written["customer_id"]) | {c for c in was[differs] if c is not None})
    with registered(con, written) as view:
        con.execute(f"DELETE FROM identity_crosswalk WHERE record_key IN "
                    f"(SELECT record_key FROM {view})")
        con.execute(f"INSERT INTO identity_crosswalk SELECT * FROM {view}")
    if len(aliases):
        with registered(con, aliases) as view:
            con.execute(f"INSERT OR REPLACE INTO identity_aliases SELECT * FROM {view}")
        # Aliases of an id that is now itself an alias point at the final survivor.
        con.execute("""UPDATE identity_aliases a SET customer_id = b.customer_id
            FROM identity_aliases b WHERE a.customer_id = b.alias_id""")
    if len(splits):
        with registered(con, splits.assign(run_id=run_id)) as view:
            con.execute("INSERT OR REPLACE INTO identity_splits "
                        f"SELECT customer_id, run_id, parts, records FROM {view}")
    con.execute(f"DROP TABLE {positions}")
    _write_review(con, config)
    _write_golden(con, config, touched)
    created = _create_customers(con, config)
    return {
        "records": int(n), "customers": int(id_codes.max() + 1 if n else 0),
        "merges": int(len(aliases)), "customers_created": created,
        "suspected_splits": int(len(splits)), "records_rekeyed": changed,
        # fetchall: fetchone would leave the result open, and the caller unregisters a view
        "review_queue": con.execute("SELECT count(*) FROM identity_review").fetchall()[0][0],
    }


def _differing(previous: pd.DataFrame, crosswalk: pd.DataFrame, at: np.ndarray) -> np.ndarray:
    """Per row of ``crosswalk``: new, or different from its row of ``previous`` (``at``: the
    crosswalk position of each previous row) in any column."""
    differs = np.ones(len(crosswalk), dtype=bool)
    if previous.empty:
        return differs
    same = np.ones(len(at), dtype=bool)
    for column in crosswalk.columns:
        a = previous[column].reset_index(drop=True)
        b = crosswalk[column].iloc[at].reset_index(drop=True)
        same &= a.eq(b).to_numpy(dtype=bool, na_value=False) | (a.isna() & b.isna()).to_numpy()
    differs[at] = ~same
    return differs


def _write_review(con, config: IdentityConfig) -> None:
    """Pairs in the uncertain band that no steward decided, with their match weights."""
    con.execute("""CREATE OR REPLACE TABLE identity_review AS
        SELECT p.record_key_l, p.record_key_r, p.match_probability, p.match_weight,
               p.match_weights, l.customer_id AS customer_id_l, r.customer_id AS customer_id_r
        FROM identity_pairs p
        JOIN identity_crosswalk l ON l.record_key = p.record_key_l
        JOIN identity_crosswalk r ON r.record_key = p.record_key_r
        LEFT JOIN identity_decisions d USING (record_key_l, record_key_r)
        WHERE p.match_probability >= ? AND p.match_probability < ? AND d.decision IS NULL
        ORDER BY abs(p.match_probability - 0.5 * (? + ?))""",
        [config.review_threshold, config.match_threshold, config.review_threshold,
         config.match_threshold])


GOLDEN_RULES_META = "identity_golden_rules"


def _write_golden(con, config: IdentityConfig, customers: list[str] | None = None) -> None:
    """One row per customer: each attribute by its survivorship rule, with the record it came
    from (``<attribute>_source`` = record key). With ``customers``, only their rows are
    replaced (a customer no longer in the crosswalk, merged away, loses its row), unless the
    survivorship rules differ from those the table was built with: then every row is."""
    signature = json.dumps({"survivorship": config.survivorship,
                            "default_rule": config.default_rule,
                            "source_priority": config.source_priority}, sort_keys=True)
    full = (customers is None or not table_exists(con, "identity_golden")
            or get_meta(con, GOLDEN_RULES_META) != signature)
    rules = config.survivorship
    priority = config.source_priority
    rank = "CASE r.source_system " + " ".join(
        f"WHEN '{s}' THEN {i}" for i, s in enumerate(priority)) + f" ELSE {len(priority)} END"
    complete = " + ".join(f"(r.{c} IS NOT NULL)::INT" for c in GOLDEN_ATTRIBUTES)
    parts = []
    for attr in GOLDEN_ATTRIBUTES:
        rule = rules.get(attr, config.default_rule)
        std = f"std_{attr}" if attr in ROLES else attr
        # One DOUBLE per record: the rule's score, then recency as the tie-break (epoch
        # seconds stay below 1e10, so the score's unit is 1e10).
        key = {
            "source_priority": f"-({rank}) * 1e10 + epoch(r.updated_at)",
            "most_recent": f"epoch(r.updated_at) * 10 - ({rank})",
            "most_complete": f"({complete}) * 1e10 + epoch(r.updated_at)",
            "most_frequent": f"count(*) OVER (PARTITION BY c.customer_id, r.{std}) * 1e10 "
                             "+ epoch(r.updated_at)",
        }[rule]
        parts.append((attr, key))
    selects = ", ".join(
        f"arg_max(r.{a}, r.k_{a}) FILTER (WHERE r.{a} IS NOT NULL) AS {a}, "
        f"arg_max(r.record_key, r.k_{a}) FILTER (WHERE r.{a} IS NOT NULL) AS {a}_source"
        for a, _ in parts)
    keys = ", ".join(f"{k} AS k_{a}" for a, k in parts)
    only = "" if full else "AND c.customer_id IN (SELECT unnest(CAST($ids AS VARCHAR[])))"
    # A customer of one record (most of them: 450k of 664k at 1M records) takes its record's
    # values as they are, without the ranking (the window counts and arg_max cost seconds).
    alone = ", ".join(
        f"r.{a} AS {a}, CASE WHEN r.{a} IS NOT NULL THEN r.record_key END AS {a}_source"
        for a, _ in parts)
    query = f"""
        WITH ranked AS (
          SELECT c.customer_id, r.*, {keys}
          FROM identity_crosswalk c JOIN identity_records r USING (record_key)
          WHERE c.cluster_size > 1 {only}
        )
        SELECT r.customer_id, count(*) AS source_records, {selects}
        FROM ranked r GROUP BY r.customer_id
        UNION ALL
        SELECT c.customer_id, CAST(1 AS BIGINT) AS source_records, {alone}
        FROM identity_crosswalk c JOIN identity_records r USING (record_key)
        WHERE c.cluster_size = 1 {only}
        ORDER BY customer_id"""
    if full:
        con.execute(f"CREATE OR REPLACE TABLE identity_golden AS {query}")
        set_meta(con, GOLDEN_RULES_META, signature)
    elif customers:
        con.execute("DELETE FROM identity_golden WHERE customer_id IN "
                    "(SELECT unnest(CAST($ids AS VARCHAR[])))", {"ids": customers})
        con.execute(f"INSERT INTO identity_golden {query}", {"ids": customers})


def _create_customers(con, config: IdentityConfig) -> int:
    """A ``customers`` row for every unified customer the warehouse has not seen, from its
    golden record, so that re-keyed ingest of its transactions is not refused.

    Only when ``master_system`` is set (the warehouse's customers are then the master's
    records) or identity is the only source of customers (every ``customers`` row, if any, is
    a unified id or an alias of one; so later runs keep creating the rows of new customers):
    a warehouse whose customers came from elsewhere and name no master system is left alone.
    Type B2B when the golden record has a company name or id; city from the golden record;
    signup date = the earliest ``created_at`` of its records; region and acquisition channel
    are the config's placeholders.
    """
    if not table_exists(con, "customers"):
        return 0
    foreign = con.execute("""
        SELECT count(*) FROM customers
        WHERE customer_id NOT IN (SELECT customer_id FROM identity_crosswalk)
          AND customer_id NOT IN (SELECT alias_id FROM identity_aliases)""").fetchone()[0]
    if not (config.master_system or foreign == 0):
        return 0
    return int(con.execute("""
        INSERT INTO customers (customer_id, customer_type, region, city, acquisition_channel,
                               signup_date)
        SELECT g.customer_id,
               CASE WHEN g.company_name IS NOT NULL OR g.company_id IS NOT NULL
                    THEN 'B2B' ELSE 'B2C' END,
               ?, coalesce(g.city, 'unknown'), ?, CAST(s.first_created AS DATE)
        FROM identity_golden g
        JOIN (SELECT c.customer_id, min(r.created_at) AS first_created
              FROM identity_crosswalk c JOIN identity_records r USING (record_key)
              GROUP BY c.customer_id) s USING (customer_id)
        WHERE g.customer_id NOT IN (SELECT customer_id FROM customers)
          AND g.customer_id NOT IN (SELECT alias_id FROM identity_aliases)
        ORDER BY g.customer_id""",
        [config.new_customer_region, config.new_customer_channel]).fetchone()[0])


def resolve_id(con: duckdb.DuckDBPyConnection, customer_id: str) -> str:
    """The current id of ``customer_id`` (itself, or the survivor it was merged into)."""
    rows = con.execute("SELECT customer_id FROM identity_aliases WHERE alias_id = ?",
                       [customer_id]).fetchall()
    return rows[0][0] if rows else customer_id


# --- issue 14 item 6: the identity block of a profile -------------------------------------------

# Key fields of a source record shown next to a customer (raw values, as the system holds them).
RECORD_FIELDS = ("given_name", "surname", "company_name", "email", "phone", "street",
                 "postcode", "city", "date_of_birth", "company_id")


def identity_json(
    con: duckdb.DuckDBPyConnection, customer_ids: list[str] | None = None
) -> pd.DataFrame:
    """The identity block of each unified customer as JSON text, in one query.

    Returns ``customer_id`` and ``identity``: ``{"golden": [{attribute, value, source_system,
    source_record_id}], "source_records": [{source_system, source_record_id, match_probability,
    <RECORD_FIELDS>}], "aliases": [old ids merged into this one]}``. Only customers in
    ``identity_golden`` (and in ``customer_ids`` when given) have a row; a warehouse without
    identity tables gives an empty frame.

    Examples
    --------
    >>> identity_json(con, ["CRM-0000001"])  # doctest: +SKIP
    """
    empty = pd.DataFrame({"customer_id": pd.Series(dtype="string"),
                          "identity": pd.Series(dtype="string")})
    if not all(table_exists(con, t) for t in
               ("identity_golden", "identity_crosswalk", "identity_records")):
        return empty
    golden = ", ".join(
        f"struct_pack(attribute := '{a}', value := CAST(g.{a} AS VARCHAR), "
        f"source_system := split_part(g.{a}_source, ':', 1), "
        f"source_record_id := substr(g.{a}_source, length(split_part(g.{a}_source, ':', 1)) + 2))"
        for a in GOLDEN_ATTRIBUTES)
    fields = ", ".join(f"{f} := CAST(r.{f} AS VARCHAR)" for f in RECORD_FIELDS)
    aliases = ("(SELECT list(a.alias_id ORDER BY a.alias_id) FROM identity_aliases a "
               "WHERE a.customer_id = g.customer_id)"
               if table_exists(con, "identity_aliases") else "[]::VARCHAR[]")
    # One filter, on the crosswalk: golden rows join only the customers it kept.
    where = ("WHERE c.customer_id IN (SELECT unnest(CAST($ids AS VARCHAR[])))"
             if customer_ids is not None else "")
    params = {"ids": [str(c) for c in customer_ids]} if customer_ids is not None else {}
    return con.execute(f"""
        WITH recs AS (
              SELECT c.customer_id, list(struct_pack(
                       source_system := c.source_system, source_record_id := c.source_record_id,
                       match_probability := c.match_probability, {fields})
                     ORDER BY c.source_system, c.source_record_id) AS source_records
              FROM identity_crosswalk c JOIN identity_records r USING (record_key)
              {where}
              GROUP BY c.customer_id)
            SELECT g.customer_id, CAST(to_json(struct_pack(
                     golden := list_filter([{golden}], lambda x: x.value IS NOT NULL),
                     source_records := recs.source_records,
                     aliases := coalesce({aliases}, []::VARCHAR[]))) AS VARCHAR) AS identity
            FROM identity_golden g JOIN recs USING (customer_id)
            ORDER BY g.customer_id""", params).df()
