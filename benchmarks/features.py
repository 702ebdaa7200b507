"""Benchmark the feature build: full build, transactional family vs pandas, RFM vs lifetimes.

Run::

    .venv/bin/python benchmarks/features.py --customers 1000000 --orders-per-customer 25

1. A warehouse of raw tables is written straight from numpy (the synthetic generator gives
   about 6 transactions per customer; this benchmark needs >= 20 transactions per customer, so
   it draws its own: customers, transactions, events, third_party, social, support_tickets).
   Tables are created without primary keys (the features do not need them). Reused with
   ``--db`` if the file already exists.
2. Full feature build (all families, one as-of date) in a fresh child process per repeat:
   wall time and the child's peak RSS (``ru_maxrss``: numpy, pandas and DuckDB native memory).
3. The transactional family: ``build_features(families=["txn"])`` (DuckDB reads the table and
   returns pandas) against a plain pandas groupby implementation of the same 47 features
   working on a DataFrame already in memory (its load time is reported apart, not counted);
   values are checked equal.
4. RFM: ``customer360.features.rfm.rfm_summary`` against lifetimes'
   ``summary_data_from_transaction_data`` on every order of the warehouse (``--lifetimes-rows``
   takes a subsample of customers instead), values checked equal: ours from the warehouse
   table (default plan, and the SQL plan forced) and from the DataFrame lifetimes gets.

Medians of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from customer360.data.contracts import (
    ACQUISITION_CHANNELS,
    AGE_BANDS,
    CATEGORIES,
    COMPANY_SIZES,
    CONTRACTS,
    EDUCATION_LEVELS,
    EVENT_CHANNELS,
    EVENT_TYPES,
    GENDERS,
    INCOME_BANDS,
    INDUSTRIES,
    PROFESSIONS,
    REGIONS,
    REVENUE_BANDS,
    SALES_CHANNELS,
    SOCIAL_KINDS,
    SOCIAL_PLATFORMS,
    TICKET_CATEGORIES,
)
from customer360.data.warehouse import META_DDL, registered

START = np.datetime64("2023-01-01T00:00:00", "s")
TODAY = np.datetime64("2026-06-30T00:00:00", "s")
AS_OF = "2026-06-30"
CHUNK = 100_000
DAY = 86_400


# --- 1. raw tables from numpy ----------------------------------------------------------------


def _pick(values: tuple[str, ...]) -> str:
    """SQL list literal to index with a 1-based code."""
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def _create_tables(con: duckdb.DuckDBPyConnection) -> None:
    for contract in CONTRACTS.values():
        con.execute(contract.ddl(primary_key=False))
    con.execute(META_DDL)


def _insert(con: duckdb.DuckDBPyConnection, table: str, frame: pd.DataFrame, select: str) -> None:
    """Append ``select`` (which reads the DataFrame ``frame`` by that name) to ``table``."""
    with registered(con, frame, "frame"):
        con.execute(f"INSERT INTO {table} {select}")


def _stamps(rng, lo: np.ndarray, n_each: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Owner index and a uniform timestamp in [lo, TODAY) for each of sum(n_each) rows."""
    owner = np.repeat(np.arange(len(n_each)), n_each)
    lo_s = lo[owner]
    span = (TODAY - lo_s).astype(np.int64)
    ts = lo_s + (rng.random(len(owner)) * span).astype(np.int64).astype("timedelta64[s]")
    return owner, ts


def _write_chunk(con, rng, first: int, n: int, orders_mean: float, offset_ids: dict) -> None:
    cid = np.arange(first, first + n)
    b2b = rng.random(n) < 0.2
    signup = START + (rng.random(n) * (TODAY - START).astype(np.int64)).astype(
        "timedelta64[s]"
    ).astype("timedelta64[D]").astype("timedelta64[s]")
    contract = rng.random(n) < np.where(b2b, 0.45, 0.1)
    frame = pd.DataFrame(
        {
            "cid": cid,
            "b2b": b2b,
            "size": rng.integers(1, len(COMPANY_SIZES) + 1, n),
            "industry": rng.integers(1, len(INDUSTRIES) + 1, n),
            "age": rng.integers(1, len(AGE_BANDS) + 1, n),
            "gender": rng.integers(1, len(GENDERS) + 1, n),
            "region": rng.integers(1, len(REGIONS) + 1, n),
            "channel": rng.integers(1, len(ACQUISITION_CHANNELS) + 1, n),
            "signup": signup,
            "contract_days": np.where(contract, rng.integers(365, 1100, n), -1),
        }
    )
    _insert(
        con,
        "customers",
        frame,
        f"""SELECT printf('C%08d', cid),
        CASE WHEN b2b THEN 'B2B' ELSE 'B2C' END,
        CASE WHEN b2b THEN {_pick(COMPANY_SIZES)}[size] END,
        CASE WHEN b2b THEN {_pick(INDUSTRIES)}[industry] END,
        CASE WHEN NOT b2b THEN {_pick(AGE_BANDS)}[age] END,
        CASE WHEN NOT b2b THEN {_pick(GENDERS)}[gender] END,
        {_pick(REGIONS)}[region], 'city_' || (cid % 500), {_pick(ACQUISITION_CHANNELS)}[channel],
        CAST(signup AS DATE),
        CASE WHEN contract_days > 0 THEN CAST(signup AS DATE) + CAST(contract_days AS INTEGER) END
        FROM frame""",
    )

    # transactions: 17% never buy; buyers' rates are gamma distributed
    buyer = rng.random(n) >= 0.17
    rate = rng.gamma(1.5, orders_mean / 0.83 / 1.5, n) * buyer
    n_tx = rng.poisson(rate)
    owner, ts = _stamps(rng, signup, n_tx)
    m = len(owner)
    ret = rng.random(m) < 0.05
    amount = np.round(rng.gamma(3.0, np.where(b2b[owner], 300.0, 20.0)), 2)
    sign = np.where(ret, -1.0, 1.0)
    cat = rng.integers(1, len(CATEGORIES) + 1, m)
    referred = (rng.random(m) < 0.01) & ~ret
    frame = pd.DataFrame(
        {
            "tid": np.arange(offset_ids["tx"], offset_ids["tx"] + m),
            "cid": cid[owner],
            "ts": ts,
            "amount": sign * amount,
            "margin": np.round(sign * amount * (0.05 + 0.04 * cat), 2),
            "qty": rng.integers(1, 4, m),
            "cat": cat,
            "channel": rng.integers(1, len(SALES_CHANNELS) + 1, m),
            "discount": np.where(~ret & (rng.random(m) < 0.3), np.round(amount * 0.1, 2), 0.0),
            "ret": ret,
            # another customer of the chunk, never the buyer
            "ref": np.where(referred, first + (owner + rng.integers(1, n, m)) % n, -1),
            "cts": np.round(rng.uniform(1, 10, m), 2),
        }
    )
    offset_ids["tx"] += m
    _insert(
        con,
        "transactions",
        frame,
        f"""SELECT printf('T%010d', tid), printf('C%08d', cid),
        ts, amount, margin, qty, {_pick(CATEGORIES)}[cat], {_pick(SALES_CHANNELS)}[channel],
        discount, ret, CASE WHEN ref >= 0 THEN printf('C%08d', ref) END, cts FROM frame""",
    )

    # events: about twice the transactions
    n_ev = rng.poisson(rate * 2 + 3 * rng.random(n))
    owner, ts = _stamps(rng, signup, n_ev)
    m = len(owner)
    etype = rng.choice(len(EVENT_TYPES), m, p=[0.25, 0.3, 0.08, 0.22, 0.11, 0.04]) + 1
    frame = pd.DataFrame(
        {
            "eid": np.arange(offset_ids["ev"], offset_ids["ev"] + m),
            "cid": cid[owner],
            "ts": ts,
            "etype": etype,
            "web": rng.random(m) < 0.6,
            "cat": rng.integers(1, len(CATEGORIES) + 1, m),
        }
    )
    offset_ids["ev"] += m
    _insert(
        con,
        "events",
        frame,
        f"""SELECT printf('E%010d', eid), printf('C%08d', cid), ts,
        {_pick(EVENT_TYPES)}[etype],
        CASE WHEN etype >= 4 THEN 'email' WHEN web THEN 'web' ELSE 'app' END,
        CASE WHEN etype IN (2, 3) THEN {_pick(CATEGORIES)}[cat] END FROM frame""",
    )
    assert set(EVENT_CHANNELS) == {"web", "app", "email"}

    # third party: 87% enriched once
    has_tp = rng.random(n) < 0.87
    _, obs = _stamps(rng, signup, has_tp.astype(int))
    frame = pd.DataFrame(
        {
            "cid": cid[has_tp],
            "b2b": b2b[has_tp],
            "obs": obs,
            "prof": rng.integers(1, len(PROFESSIONS) + 1, has_tp.sum()),
            "edu": rng.integers(1, len(EDUCATION_LEVELS) + 1, has_tp.sum()),
            "inc": rng.integers(1, len(INCOME_BANDS) + 1, has_tp.sum()),
            "hh": rng.integers(1, 7, has_tp.sum()),
            "home": np.round(rng.gamma(4, 60_000, has_tp.sum()), -3),
            "aff": np.round(rng.uniform(0, 100, has_tp.sum()), 1),
            "rev": rng.integers(1, len(REVENUE_BANDS) + 1, has_tp.sum()),
            "emp": rng.integers(1, 2000, has_tp.sum()),
        }
    )
    _insert(
        con,
        "third_party",
        frame,
        f"""SELECT printf('C%08d', cid), obs,
        CASE WHEN NOT b2b THEN {_pick(PROFESSIONS)}[prof] END,
        CASE WHEN NOT b2b THEN {_pick(EDUCATION_LEVELS)}[edu] END,
        CASE WHEN NOT b2b THEN {_pick(INCOME_BANDS)}[inc] END,
        CASE WHEN NOT b2b THEN hh END, CASE WHEN NOT b2b THEN home END, aff,
        CASE WHEN b2b THEN {_pick(REVENUE_BANDS)}[rev] END, CASE WHEN b2b THEN emp END
        FROM frame""",
    )

    # social and support tickets
    owner, ts = _stamps(rng, signup, rng.poisson(1.4, n))
    m = len(owner)
    kind = rng.integers(1, len(SOCIAL_KINDS) + 1, m)
    frame = pd.DataFrame(
        {
            "sid": np.arange(offset_ids["so"], offset_ids["so"] + m),
            "cid": cid[owner],
            "ts": ts,
            "kind": kind,
            "platform": rng.integers(1, len(SOCIAL_PLATFORMS) + 1, m),
            "sent": np.where(np.isin(kind, [1, 4]), np.round(rng.uniform(-1, 1, m), 3), np.nan),
        }
    )
    offset_ids["so"] += m
    _insert(
        con,
        "social",
        frame,
        f"""SELECT printf('S%010d', sid), printf('C%08d', cid), ts,
        {_pick(SOCIAL_KINDS)}[kind], {_pick(SOCIAL_PLATFORMS)}[platform],
        CASE WHEN isnan(sent) THEN NULL ELSE sent END FROM frame""",
    )
    owner, ts = _stamps(rng, signup, rng.poisson(1.7, n))
    m = len(owner)
    closed = ts + (rng.exponential(3 * DAY, m)).astype(np.int64).astype("timedelta64[s]")
    still_open = closed >= TODAY
    frame = pd.DataFrame(
        {
            "kid": np.arange(offset_ids["tk"], offset_ids["tk"] + m),
            "cid": cid[owner],
            "opened": ts,
            "closed": closed,
            "open": still_open,
            "cat": rng.integers(1, len(TICKET_CATEGORIES) + 1, m),
            "sat": rng.integers(1, 6, m),
            "rated": rng.random(m) < 0.6,
        }
    )
    offset_ids["tk"] += m
    _insert(
        con,
        "support_tickets",
        frame,
        f"""SELECT printf('K%010d', kid),
        printf('C%08d', cid), opened, CASE WHEN NOT open THEN closed END,
        {_pick(TICKET_CATEGORIES)}[cat], CASE WHEN open THEN 'open' ELSE 'resolved' END,
        CASE WHEN rated AND NOT open THEN sat END FROM frame""",
    )


def make_warehouse(db: Path, customers: int, orders_mean: float, seed: int) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    con = duckdb.connect(str(db))
    _create_tables(con)
    ids = {"tx": 0, "ev": 0, "so": 0, "tk": 0}
    for first in range(0, customers, CHUNK):
        _write_chunk(con, rng, first, min(CHUNK, customers - first), orders_mean, ids)
        print(f"  generated {min(first + CHUNK, customers):>10,} customers", flush=True)
    con.execute("INSERT INTO warehouse_meta VALUES ('today', '2026-06-30')")
    counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in CONTRACTS}
    con.close()
    return counts


# --- 2. full build in a child process ----------------------------------------------------------


def child_build(db: str, as_of: str, families: str | None) -> None:
    from customer360.features import build_features

    con = duckdb.connect(db, read_only=True)
    start = time.perf_counter()
    frame = build_features(con, as_of, families=families.split(",") if families else None)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {"seconds": seconds, "peak_mib": peak, "rows": len(frame), "columns": frame.shape[1]}
        )
    )


def run_child(db: Path, families: str | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child-build", str(db)]
    if families:
        cmd += ["--families", families]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# --- 3. the transactional family in plain pandas ---------------------------------------------


def pandas_txn_features(tx: pd.DataFrame, customer_ids: pd.Series, as_of: str) -> pd.DataFrame:
    """The txn family with pandas groupbys (same definitions as transactional.py)."""
    t = pd.Timestamp(as_of)
    tx = tx[tx["ts"] < t]
    order = ~tx["is_return"]
    day = tx["ts"].dt.normalize()
    out = pd.DataFrame(index=pd.Index(customer_ids, name="customer_id"))
    windows = {"30d": 30, "90d": 90, "365d": 365, "all": None}
    sums = {}
    for w, days in windows.items():
        inside = tx["ts"] >= t - pd.Timedelta(days=days) if days else pd.Series(True, tx.index)
        o, r = order & inside, tx["is_return"] & inside
        part = (
            pd.DataFrame(
                {
                    "orders": o.astype("int64"),
                    "spend": tx["amount"].where(o, 0.0),
                    "margin": tx["margin"].where(o, 0.0),
                    "discount": tx["discount"].where(o, 0.0),
                    "returns": r.astype("int64"),
                    "returns_value": (-tx["amount"]).where(r, 0.0),
                    "cts": tx["cost_to_serve"].where(inside, 0.0),
                }
            )
            .groupby(tx["customer_id"])
            .sum()
        )
        part["breadth"] = tx[o].groupby("customer_id")["category"].nunique()
        sums[w] = part.reindex(out.index).fillna(0)
    previous = (
        order & (tx["ts"] >= t - pd.Timedelta(days=180)) & (tx["ts"] < t - pd.Timedelta(days=90))
    )
    prev = (
        pd.DataFrame(
            {"orders": previous.astype("int64"), "spend": tx["amount"].where(previous, 0.0)}
        )
        .groupby(tx["customer_id"])
        .sum()
        .reindex(out.index)
        .fillna(0)
    )
    orders_days = day[order]
    first = orders_days.groupby(tx.loc[order, "customer_id"]).min().reindex(out.index)
    last = orders_days.groupby(tx.loc[order, "customer_id"]).max().reindex(out.index)
    out["txn__recency_days__all"] = (t - last).dt.days.astype("float64")
    out["txn__first_purchase_days__all"] = (t - first).dt.days.astype("float64")
    pdays = (
        pd.DataFrame({"customer_id": tx.loc[order, "customer_id"], "day": orders_days})
        .drop_duplicates()
        .sort_values(["customer_id", "day"])
    )
    pdays["gap"] = pdays.groupby("customer_id")["day"].diff().dt.days
    ipt = (
        pdays.groupby("customer_id")
        .agg(n=("day", "size"), mean=("gap", "mean"), std=("gap", "std"))
        .reindex(out.index)
    )
    out["txn__purchase_days__all"] = ipt["n"].fillna(0).astype("int64")
    out["txn__ipt_mean_days__all"] = ipt["mean"]
    out["txn__ipt_std_days__all"] = ipt["std"]

    def trend(a: pd.Series, b: pd.Series) -> pd.Series:
        return ((a - b) / (a + b).replace(0, np.nan)).fillna(0.0)

    out["txn__orders_trend__90d"] = trend(sums["90d"]["orders"], prev["orders"])
    out["txn__spend_trend__90d"] = trend(sums["90d"]["spend"], prev["spend"])
    refs = (
        tx[order & tx["referrer_id"].notna()]
        .groupby("referrer_id")["customer_id"]
        .agg(["size", "nunique"])
        .reindex(out.index)
        .fillna(0)
    )
    out["txn__referrals_made__all"] = refs["size"].astype("int64")
    out["txn__referred_buyers__all"] = refs["nunique"].astype("int64")
    for name, column, rows in (
        ("txn__top_category__all", "category", order),
        (
            "txn__preferred_channel__365d",
            "channel",
            order & (tx["ts"] >= t - pd.Timedelta(days=365)),
        ),
    ):
        counts = tx[rows].groupby(["customer_id", column]).size().rename("n").reset_index()
        top = counts.sort_values(["customer_id", "n", column], ascending=[True, False, True])
        top = top.drop_duplicates("customer_id").set_index("customer_id")[column]
        out[name] = top.reindex(out.index).fillna("none").astype("str")
    per_category = tx[order].groupby(["customer_id", "category"]).size().unstack(fill_value=0)
    for c in CATEGORIES:
        counts = per_category[c] if c in per_category.columns else pd.Series(dtype="int64")
        out[f"txn__category_orders_{c}__all"] = counts.reindex(out.index).fillna(0).astype("int64")
    for w in windows:
        s = sums[w]
        out[f"txn__orders__{w}"] = s["orders"].astype("int64")
        out[f"txn__spend_sum__{w}"] = s["spend"]
        out[f"txn__margin_sum__{w}"] = s["margin"]
        out[f"txn__returns__{w}"] = s["returns"].astype("int64")
        out[f"txn__returns_value__{w}"] = s["returns_value"]
        out[f"txn__cost_to_serve__{w}"] = s["cts"]
        out[f"txn__profitability__{w}"] = s["margin"] - s["returns_value"] - s["cts"]
    for w in ("365d", "all"):
        s = sums[w]
        out[f"txn__avg_basket__{w}"] = (s["spend"] / s["orders"].replace(0, np.nan)).fillna(0.0)
        out[f"txn__return_ratio__{w}"] = (
            s["returns_value"] / s["spend"].replace(0, np.nan)
        ).fillna(0.0)
        out[f"txn__discount_share__{w}"] = (
            s["discount"] / (s["spend"] + s["discount"]).replace(0, np.nan)
        ).fillna(0.0)
        out[f"txn__category_breadth__{w}"] = s["breadth"].astype("int64")
    return out.reset_index()


def compare(duck: pd.DataFrame, pand: pd.DataFrame) -> int:
    """Number of columns compared; raises if any value differs (floats to 1e-6 relative)."""
    duck = duck.sort_values("customer_id").reset_index(drop=True)
    pand = pand.sort_values("customer_id").reset_index(drop=True)
    assert duck["customer_id"].tolist() == pand["customer_id"].tolist()
    names = [c for c in duck.columns if c.startswith("txn__")]
    assert sorted(names) == sorted(c for c in pand.columns if c.startswith("txn__"))
    for c in names:
        if pd.api.types.is_float_dtype(duck[c]):
            np.testing.assert_allclose(duck[c], pand[c], rtol=1e-6, atol=1e-6, err_msg=c)
        else:
            assert (duck[c].astype(str) == pand[c].astype(str)).all(), c
    return len(names)


def timed(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--orders-per-customer", type=float, default=25.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--db", type=Path, default=None, help="Warehouse file (reused).")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--pandas-repeats", type=int, default=1, help="Repeats of the slow pandas baseline."
    )
    parser.add_argument(
        "--lifetimes-rows",
        type=int,
        default=0,
        help="Compare RFM on the orders of a subsample of about this many transactions "
        "(0: the whole log).",
    )
    parser.add_argument("--lifetimes-repeats", type=int, default=1)
    parser.add_argument(
        "--parts",
        nargs="+",
        default=["build", "txn", "rfm"],
        choices=["build", "txn", "rfm"],
        help="Measurements to run (2. full build, 3. transactional family, 4. RFM).",
    )
    parser.add_argument("--child-build", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--families", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_build:
        child_build(args.child_build, AS_OF, args.families)
        return

    db = args.db or Path(tempfile.mkdtemp(prefix="c360-feat-")) / "bench.duckdb"
    print(f"cpus={os.cpu_count()} load1={os.getloadavg()[0]:.1f} db={db}")
    if not db.exists():
        start = time.perf_counter()
        counts = make_warehouse(db, args.customers, args.orders_per_customer, args.seed)
        print(f"warehouse written in {time.perf_counter() - start:.0f} s: {counts}")
    con = duckdb.connect(str(db), read_only=True)
    counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in CONTRACTS}
    print("rows:", counts)

    if "build" in args.parts:
        full_build(db, args.repeats)
    if "txn" in args.parts:
        txn_family(con, args.repeats, args.pandas_repeats)
    if "rfm" in args.parts:
        rfm_vs_lifetimes(con, counts, args.repeats, args.lifetimes_rows, args.lifetimes_repeats)


def full_build(db: Path, repeats: int) -> None:
    """2. The full build, median of ``repeats`` fresh child processes."""
    runs = [run_child(db) for _ in range(repeats)]
    print(
        f"full build ({runs[0]['rows']:,} x {runs[0]['columns']}): seconds "
        f"{[round(r['seconds'], 1) for r in runs]} median "
        f"{statistics.median(r['seconds'] for r in runs):.1f}; peak RSS MiB "
        f"{[round(r['peak_mib']) for r in runs]}; load1={os.getloadavg()[0]:.1f}",
        flush=True,
    )


def txn_family(con: duckdb.DuckDBPyConnection, repeats: int, pandas_repeats: int) -> None:
    """3. The transactional family: DuckDB against plain pandas on the same rows."""
    from customer360.features import build_features

    duck_s, duck = timed(lambda: build_features(con, AS_OF, families=["txn"]), repeats)
    start = time.perf_counter()
    tx = con.execute(
        "SELECT customer_id, ts, amount, margin, discount, cost_to_serve, category, channel, "
        f"is_return, referrer_id FROM transactions WHERE ts < DATE '{AS_OF}'"
    ).df()
    ids = con.execute(f"SELECT customer_id FROM customers WHERE signup_date < DATE '{AS_OF}'").df()[
        "customer_id"
    ]
    load_s = time.perf_counter() - start
    pandas_s, pand = timed(partial(pandas_txn_features, tx, ids, AS_OF), pandas_repeats)
    n_cols = compare(duck, pand)
    print(
        f"txn family: DuckDB {duck_s:.1f} s, pandas {pandas_s:.1f} s (+{load_s:.1f} s load) "
        f"-> {pandas_s / duck_s:.1f}x; {n_cols} columns equal; load1={os.getloadavg()[0]:.1f}",
        flush=True,
    )


def rfm_vs_lifetimes(
    con: duckdb.DuckDBPyConnection,
    counts: dict[str, int],
    repeats: int,
    lifetimes_rows: int,
    lifetimes_repeats: int,
) -> None:
    """4. RFM vs lifetimes on the orders: all of them, or those of a subsample of customers."""
    from lifetimes.utils import summary_data_from_transaction_data

    from customer360.features.rfm import rfm_summary

    where = "NOT is_return"
    if 0 < lifetimes_rows < counts["transactions"]:
        share = lifetimes_rows / counts["transactions"]
        where += f" AND hash(customer_id) % 1000000 < {int(share * 1_000_000)}"
    con.execute(
        f"CREATE TEMP VIEW orders AS SELECT customer_id, ts, amount FROM transactions WHERE {where}"
    )
    frame = con.execute("SELECT * FROM orders").df()  # lifetimes' input; loading is not timed
    kw = dict(
        customer_col="customer_id", date_col="ts", amount_col="amount", calibration_end="2026-06-29"
    )
    mem = duckdb.connect()
    table_s, ours = timed(lambda: rfm_summary(con, "orders", **kw), repeats)
    sql_s, by_sql = timed(lambda: rfm_summary(con, "orders", plan="sql", **kw), repeats)
    frame_s, from_frame = timed(lambda: rfm_summary(mem, frame, **kw), repeats)
    theirs_s, theirs = timed(
        lambda: summary_data_from_transaction_data(
            frame,
            "customer_id",
            "ts",
            monetary_value_col="amount",
            observation_period_end="2026-06-29",
            freq="D",
        ),
        lifetimes_repeats,
    )
    theirs = theirs.reset_index().sort_values("customer_id").reset_index(drop=True)
    for other in (by_sql, from_frame, theirs):
        assert other["customer_id"].tolist() == ours["customer_id"].tolist()
        for col in ("frequency", "recency", "T", "monetary_value"):
            np.testing.assert_allclose(ours[col], other[col], rtol=1e-9, atol=1e-9, err_msg=col)
    print(
        f"RFM on {len(frame):,} orders / {len(ours):,} customers: rfm_summary {table_s:.2f} s "
        f"from the warehouse table (SQL plan forced: {sql_s:.2f} s), {frame_s:.2f} s from the "
        f"DataFrame; lifetimes {theirs_s:.1f} s from the DataFrame -> {theirs_s / table_s:.1f}x "
        f"(table), {theirs_s / sql_s:.1f}x (SQL plan), {theirs_s / frame_s:.1f}x (DataFrame); "
        f"values equal; load1={os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
