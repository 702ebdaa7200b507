"""Search of the web app at scale: :func:`customer360.serving.webapp.search.search` on a
warehouse of N customers whose identity tables hold about 1.3 records per customer.

The tables have the columns and standardised forms identity resolution writes
(``identity_records``, ``identity_crosswalk``, ``identity_golden``, ``customers``), filled
by DuckDB SQL so that a million customers take seconds to build. Each query kind (email, phone,
full name, surname prefix, source record id, customer id) is timed on existing values sampled
at random, with the search index (``customer360 score`` and ``identity run`` build it) and,
with ``--no-index``, by scanning;
the figure is the wall time of one call on a read-only connection, as the web app's reader
makes it.

    .venv/bin/python benchmarks/webapp_search.py --customers 1000000 --queries 40
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import duckdb
from tqdm import tqdm

from customer360.serving.webapp.search import build_search_index, search

GIVEN = ["ann", "john", "olivia", "james", "maria", "wei", "fatima", "lukas", "sofia", "omar",
         "emma", "noah", "chloe", "arjun", "ines", "piotr", "yuki", "kofi", "lena", "marco"]


def build(path: Path, customers: int, seed: int) -> None:
    con = duckdb.connect(str(path))
    con.execute(f"SELECT setseed({seed / 1000})")
    con.execute(f"""CREATE TABLE customers AS
        SELECT 'C' || lpad(i::VARCHAR, 7, '0') AS customer_id,
               CASE WHEN i % 10 = 0 THEN 'B2B' ELSE 'B2C' END AS customer_type,
               'north' AS region, 'city' || (i % 500) AS city,
               CASE WHEN i % 10 = 0 THEN 'retail' END AS industry,
               DATE '2020-01-01' + (i % 2000)::INT AS signup_date
        FROM range({customers}) t(i)""")
    given = "[" + ", ".join(f"'{g}'" for g in GIVEN) + "]"
    # about 30 % of customers have a second record in another system
    con.execute(f"""CREATE TABLE identity_records AS
        WITH base AS (
          SELECT i, j, 'C' || lpad(i::VARCHAR, 7, '0') AS customer_id,
                 {given}[1 + (hash(i) % {len(GIVEN)})::INT] AS g,
                 's' || (hash(i * 7) % 200000)::VARCHAR AS s
          FROM range({customers}) t(i), range(2) u(j)
          WHERE j = 0 OR hash(i * 13) % 10 < 3
        )
        SELECT CASE j WHEN 0 THEN 'crm' ELSE 'webshop' END || ':' || i AS record_key,
               CASE j WHEN 0 THEN 'crm' ELSE 'webshop' END AS source_system,
               i::VARCHAR AS source_record_id, customer_id,
               g AS given_name, s AS surname, NULL::VARCHAR AS company_name,
               g || '.' || s || '.' || i || '@example.com' AS email,
               '+4420' || lpad((i % 100000000)::VARCHAR, 8, '0') AS phone,
               g AS std_given_name, s AS std_surname, NULL::VARCHAR AS std_company_name,
               g || '.' || s || '.' || i || '@example.com' AS std_email,
               '+4420' || lpad((i % 100000000)::VARCHAR, 8, '0') AS std_phone
        FROM base""")
    con.execute("""CREATE TABLE identity_crosswalk AS
        SELECT record_key, source_system, source_record_id, customer_id FROM identity_records""")
    con.execute("""CREATE TABLE identity_golden AS
        SELECT customer_id, arg_min(given_name, record_key) AS given_name,
               arg_min(surname, record_key) AS surname, NULL::VARCHAR AS company_name
        FROM identity_records GROUP BY customer_id""")
    con.execute("ALTER TABLE identity_records DROP COLUMN customer_id")
    con.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=40, help="queries per kind")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--db", type=Path, default=None, help="reuse or build this file")
    parser.add_argument("--no-index", action="store_true",
                        help="drop the search index: measure the scanning fallback")
    args = parser.parse_args()
    path = args.db or Path(tempfile.mkdtemp()) / "search.duckdb"
    if not path.exists():
        t = time.perf_counter()
        build(path, args.customers, args.seed)
        print(f"built {args.customers:,} customers in {time.perf_counter() - t:.1f} s")
    with duckdb.connect(str(path)) as writer:
        if args.no_index:
            writer.execute("DROP TABLE IF EXISTS search_keys_meta")
        else:
            t = time.perf_counter()
            keys = build_search_index(writer)
            print(f"search index: {keys:,} keys in {time.perf_counter() - t:.1f} s")
    con = duckdb.connect(str(path), read_only=True)
    sample = con.execute(f"""SELECT r.*, x.customer_id FROM identity_records r
        JOIN identity_crosswalk x USING (record_key)
        USING SAMPLE {args.queries} ROWS (reservoir, {args.seed})""").df()
    kinds = {
        "email": lambda r: r.email.upper(),
        "phone (national)": lambda r: "0" + r.phone[3:],
        "full name": lambda r: f"{r.given_name} {r.surname}",
        "surname prefix": lambda r: r.surname[:4],
        "source record id": lambda r: r.source_record_id,
        "customer id": lambda r: r.customer_id,
    }
    search(con, "warm-up")
    print(f"load average {os.getloadavg()[0]:.1f}; {args.queries} queries per kind")
    print("| query kind | p50 ms | p95 ms | rows found (median) |")
    print("|---|---|---|---|")
    for kind, make in kinds.items():
        times, found = [], []
        for row in tqdm(list(sample.itertuples()), desc=kind, leave=False, disable=None):
            t = time.perf_counter()
            out = search(con, make(row))
            times.append((time.perf_counter() - t) * 1000)
            found.append(len(out))
            assert row.customer_id in set(out["customer_id"]) or kind == "surname prefix"
        times.sort()
        p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
        print(f"| {kind} | {statistics.median(times):.1f} | {p95:.1f} | "
              f"{statistics.median(found):.0f} |")


if __name__ == "__main__":
    main()
