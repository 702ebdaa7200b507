"""Synthetic CRM generator: determinism, contracts, ground-truth sanity, offers and oracles."""

from __future__ import annotations

import hashlib
from datetime import date, datetime, timedelta

import duckdb
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from customer360.data import synthetic as syn
from customer360.data.contracts import CONTRACTS
from customer360.data.oracle import oracle_churn_probability, oracle_expected_margin
from customer360.errors import WarehouseError

TODAY = syn.DEFAULT_TODAY
TODAY_TS = datetime.combine(TODAY, datetime.min.time())


@pytest.fixture(scope="module")
def con(small_warehouse_master):
    with duckdb.connect(str(small_warehouse_master), read_only=True) as c:
        c.execute(
            "CREATE TEMP VIEW all_txn AS "
            "SELECT * FROM transactions UNION ALL SELECT * FROM truth_future_transactions"
        )
        yield c


def one(con, sql: str, params=None):
    return con.execute(sql, params or []).fetchone()[0]


def table_digest(path) -> dict[str, str]:
    with duckdb.connect(str(path), read_only=True) as c:
        out = {}
        for table in (*CONTRACTS, *syn.TRUTH_TABLES):
            rows = c.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()
            out[table] = hashlib.sha256(repr(rows).encode()).hexdigest()
        return out


# --- determinism and arguments ----------------------------------------------------------------


def test_same_seed_gives_identical_tables_and_other_seed_differs(tmp_path):
    a = syn.generate_warehouse(tmp_path / "a.duckdb", n_customers=300, seed=11)
    b = syn.generate_warehouse(tmp_path / "b.duckdb", n_customers=300, seed=11)
    c = syn.generate_warehouse(tmp_path / "c.duckdb", n_customers=300, seed=12)
    assert a == b
    assert c["customers"] == 300
    # issue 14: source_records is written only with source_records=True (empty otherwise).
    filled = [t for t in CONTRACTS if t != "source_records"]
    assert all(a[t] > 0 for t in (*filled, *syn.TRUTH_TABLES)) and a["source_records"] == 0
    da, db, dc = (table_digest(tmp_path / f"{x}.duckdb") for x in "abc")
    assert da == db
    assert da["transactions"] != dc["transactions"]
    assert da["offers"] == dc["offers"]  # the catalogue is fixed


def test_existing_warehouse_is_not_overwritten_without_consent(tmp_path):
    path = tmp_path / "w.duckdb"
    syn.generate_warehouse(path, n_customers=50, seed=1)
    with pytest.raises(WarehouseError, match="--overwrite"):
        syn.generate_warehouse(path, n_customers=50, seed=2)
    counts = syn.generate_warehouse(path, n_customers=60, seed=2, overwrite=True)
    assert counts["customers"] == 60
    junk = tmp_path / "notes.duckdb"
    junk.write_text("not a database")
    with pytest.raises(WarehouseError, match="cannot be read"):
        syn.generate_warehouse(junk, n_customers=50, seed=1)
    assert junk.read_text() == "not a database"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_customers": 3, "seed": 1}, "at least 10"),
        ({"n_customers": 50, "seed": 1, "today": "30/06/2026"}, "ISO date"),
        ({"n_customers": 50, "seed": 1, "today": "2023-02-01"}, "180 days"),
    ],
)
def test_bad_arguments_raise_clear_errors(tmp_path, kwargs, match):
    with pytest.raises(WarehouseError, match=match):
        syn.generate_warehouse(tmp_path / "x.duckdb", **kwargs)


def test_meta_and_custom_today(tmp_path):
    path = tmp_path / "t.duckdb"
    syn.generate_warehouse(path, n_customers=100, seed=3, today=date(2025, 12, 31))
    with duckdb.connect(str(path), read_only=True) as c:
        meta = dict(c.execute("SELECT key, value FROM warehouse_meta").fetchall())
        assert one(c, "SELECT max(ts) FROM transactions") < datetime(2025, 12, 31)
        assert one(c, "SELECT min(ts) FROM truth_future_transactions") >= datetime(2025, 12, 31)
    assert meta["today"] == "2025-12-31"
    assert meta["seed"] == "3"
    assert meta["n_customers"] == "100"
    assert meta["generator_version"] == syn.GENERATOR_VERSION


def test_cli_generate_prints_counts(tmp_path):
    from typer.testing import CliRunner

    from customer360.cli import app

    path = tmp_path / "cli.duckdb"
    result = CliRunner().invoke(
        app, ["generate", "--customers", "120", "--seed", "5", "--db", str(path)]
    )
    assert result.exit_code == 0, result.output
    assert "truth_future_transactions" in result.output
    with duckdb.connect(str(path), read_only=True) as c:
        assert one(c, "SELECT count(*) FROM customers") == 120


def test_config_file_matches_code_defaults_and_is_recorded(tmp_path):
    assert syn.load_synthetic_config() == syn.SyntheticConfig()
    cfg = syn.SyntheticConfig(b2b_share=0.9, prospect_share=0.0)
    path = tmp_path / "cfg.duckdb"
    syn.generate_warehouse(path, n_customers=200, seed=4, config=cfg)
    with duckdb.connect(str(path), read_only=True) as c:
        assert syn.warehouse_config(c) == cfg
        assert one(c, "SELECT avg(CAST(customer_type = 'B2B' AS INTEGER)) FROM customers") > 0.8
        assert one(c, "SELECT count(*) FROM truth_customers WHERE is_prospect") == 0


def test_bad_config_is_rejected_with_the_key_named(tmp_path):
    from customer360.errors import ConfigError

    bad = tmp_path / "synthetic.yaml"
    bad.write_text("b2b_share: 1.5\ncategory_margin_rate: {electronics: 0.1}\n")
    with pytest.raises(ConfigError, match="b2b_share"):
        syn.load_synthetic_config(bad)
    bad.write_text("category_margin_rate: {electronics: 0.1}\n")
    with pytest.raises(ConfigError, match="missing"):
        syn.load_synthetic_config(bad)


# --- contracts --------------------------------------------------------------------------------


def contract_violations(con) -> list[str]:
    """Every contract rule checked in SQL; returns human-readable violations."""
    bad = []
    types = {
        (t, c): dt
        for t, c, dt in con.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
        ).fetchall()
    }
    for table, contract in CONTRACTS.items():
        pk = contract.primary_key
        dup = one(con, f"SELECT count(*) - count(DISTINCT {pk}) FROM {table}")
        if dup:
            bad.append(f"{table}.{pk}: {dup} duplicate keys")
        for col in contract.columns:
            if types.get((table, col.name)) != col.dtype:
                bad.append(f"{table}.{col.name}: type {types.get((table, col.name))}")
            rules = []
            if not col.nullable:
                rules.append(f"{col.name} IS NULL")
            if col.allowed:
                values = ", ".join(f"'{v}'" for v in col.allowed)
                rules.append(f"{col.name} NOT IN ({values})")
            if col.min is not None:
                rules.append(f"{col.name} < {col.min}")
            if col.max is not None:
                rules.append(f"{col.name} > {col.max}")
            if col.references:
                ref_table, ref_col = col.references.split(".")
                rules.append(
                    f"{col.name} IS NOT NULL AND {col.name} NOT IN "
                    f"(SELECT {ref_col} FROM {ref_table})"
                )
            for rule in rules:
                n = one(con, f"SELECT count(*) FROM {table} WHERE {rule}")
                if n:
                    bad.append(f"{table}: {n} rows with {rule}")
        for name, expr in contract.checks:
            n = one(con, f"SELECT count(*) FROM {table} WHERE NOT ({expr})")
            if n:
                bad.append(f"{table}: {n} rows break {name}")
    return bad


def test_every_contract_rule_holds(con):
    assert contract_violations(con) == []
    for table in CONTRACTS:
        if table == "source_records":  # issue 14: opt-in; its rules are tested where written
            continue
        assert one(con, f"SELECT count(*) FROM {table}") > 0, table


def test_contract_checker_catches_a_broken_row(small_warehouse):
    # the checker above must be able to fail: corrupt a writable copy and expect violations
    with duckdb.connect(str(small_warehouse)) as c:
        c.execute("UPDATE transactions SET category = 'toys', discount = -1 WHERE rowid < 3")
        c.execute("UPDATE customers SET company_size = 'micro' WHERE customer_type = 'B2C' "
                  "AND rowid < 5")
        problems = contract_violations(c)
    assert any("category NOT IN" in p for p in problems)
    assert any("discount < 0" in p for p in problems)
    assert any("b2b_fields_only_for_companies" in p for p in problems)


def test_truth_tables_have_expected_shape(con):
    n = one(con, "SELECT count(*) FROM customers")
    n_offers = one(con, "SELECT count(*) FROM offers")
    assert 10 <= n_offers <= 12
    assert one(con, "SELECT count(*) FROM truth_customers") == n
    assert one(con, "SELECT count(*) FROM truth_offer_acceptance") == n * n_offers
    assert one(con, "SELECT count(*) FROM truth_logging_policy") == n_offers * one(
        con, "SELECT count(*) FROM offer_events"
    )
    kinds = {r[0] for r in con.execute("SELECT DISTINCT kind FROM offers").fetchall()}
    assert kinds == {"sales", "cross_sell", "retention", "service"}


# --- time boundaries and ground truth ---------------------------------------------------------


def test_raw_tables_stop_before_today_and_future_is_separate(con):
    for table, contract in CONTRACTS.items():
        if contract.time_column:
            assert one(con, f"SELECT count(*) FROM {table} WHERE {contract.time_column} >= ?",
                       [TODAY]) == 0, table
    assert one(con, "SELECT min(ts) FROM truth_future_transactions") >= TODAY_TS
    assert one(con, "SELECT max(ts) FROM truth_future_transactions") < TODAY_TS + timedelta(
        days=syn.FUTURE_DAYS
    )
    assert one(con, "SELECT min(signup_date) FROM customers") >= syn.HISTORY_START
    shared = one(con, "SELECT count(*) FROM truth_future_transactions "
                      "JOIN transactions USING (transaction_id)")
    assert shared == 0


def test_signups_spread_and_prospects_share(con):
    never = one(con, "SELECT avg(CAST(customer_id NOT IN (SELECT customer_id FROM transactions)"
                     " AS INTEGER)) FROM customers")
    assert 0.15 <= never <= 0.25
    late = one(con, "SELECT avg(CAST(signup_date >= DATE '2026-01-01' AS INTEGER)) FROM customers")
    assert 0.08 < late < 0.3
    # about half the prospects show interest (product views) without buying
    interested = one(con, """
        SELECT avg(CAST(customer_id IN (SELECT customer_id FROM events
                                        WHERE event_type = 'product_view') AS INTEGER))
        FROM truth_customers WHERE is_prospect""")
    assert 0.3 < interested < 0.8


def test_observed_purchase_rates_track_latent_rates(con):
    rows = con.execute("""
        WITH orders AS (
            SELECT customer_id, count(*) AS n FROM transactions WHERE NOT is_return GROUP BY 1)
        SELECT t.purchase_rate_per_day,
               coalesce(o.n, 0) / date_diff('day', c.signup_date, DATE '2026-06-30') AS observed
        FROM truth_customers t JOIN customers c USING (customer_id)
        LEFT JOIN orders o USING (customer_id)
        WHERE NOT t.is_prospect AND (t.at_risk_from IS NULL OR t.at_risk_from >= ?)
          AND c.signup_date < DATE '2025-06-30'
    """, [TODAY]).fetchnumpy()
    assert len(rows["observed"]) > 300
    assert np.corrcoef(rows["purchase_rate_per_day"], rows["observed"])[0, 1] > 0.8


def test_customers_who_left_never_transact_again(con):
    n_left = one(con, "SELECT count(*) FROM truth_customers WHERE left_at < ?", [TODAY])
    assert n_left > 100
    after = one(con, """
        SELECT count(*) FROM all_txn t JOIN truth_customers c USING (customer_id)
        WHERE c.left_at IS NOT NULL AND t.ts >= c.left_at""")
    assert after == 0
    assert one(con, "SELECT count(*) FROM all_txn t JOIN truth_customers c USING (customer_id) "
                    "WHERE c.is_prospect") == 0
    # and alive_at_today agrees with left_at
    assert one(con, "SELECT count(*) FROM truth_customers "
                    "WHERE alive_at_today <> (left_at IS NULL OR left_at > ?)", [TODAY]) == 0


def test_behaviour_thins_out_before_leaving(con):
    last, before = con.execute("""
        WITH l AS (SELECT customer_id, left_at FROM truth_customers
                   WHERE left_reason = 'hazard' AND left_at < DATE '2026-06-30'
                     AND at_risk_from <= left_at - 56)
        SELECT count(*) FILTER (WHERE e.ts >= l.left_at - 56),
               count(*) FILTER (WHERE e.ts < l.left_at - 56)
        FROM l JOIN events e ON e.customer_id = l.customer_id
        WHERE e.event_type = 'session' AND e.ts >= l.left_at - 112 AND e.ts < l.left_at
    """).fetchone()
    assert before > 50
    assert last < 0.75 * before


def test_b2b_orders_larger_and_less_frequent(con):
    rows = dict(
        (r[0], r[1:])
        for r in con.execute("""
            SELECT c.customer_type, avg(t.amount), avg(tc.purchase_rate_per_day)
            FROM transactions t JOIN customers c USING (customer_id)
            JOIN truth_customers tc USING (customer_id)
            WHERE NOT t.is_return GROUP BY 1""").fetchall()
    )
    assert rows["B2B"][0] > 5 * rows["B2C"][0]
    assert rows["B2B"][1] < rows["B2C"][1]


def test_b2b_sales_cycles_run_from_weeks_to_over_nine_months(con):
    waits = dict(
        con.execute("""
            SELECT c.customer_type, list(date_diff('day', c.signup_date, f.first_ts))
            FROM customers c
            JOIN (SELECT customer_id, min(ts) AS first_ts FROM transactions GROUP BY 1) f
              USING (customer_id)
            GROUP BY 1""").fetchall()
    )
    b2b, b2c = np.array(waits["B2B"]), np.array(waits["B2C"])
    assert np.median(b2b) > 2 * np.median(b2c)
    # every sales-cycle class of configs/segments.yaml is populated among B2B buyers
    assert (b2b <= 91).mean() > 0.5
    assert ((b2b > 91) & (b2b <= 274)).mean() > 0.05
    assert (b2b > 274).sum() >= 3


def test_transactions_carry_returns_referrals_costs_and_discounts(con):
    stats = con.execute("""
        SELECT avg(CAST(is_return AS INTEGER)), count(*) FILTER (WHERE referrer_id IS NOT NULL),
               avg(cost_to_serve), avg(CAST(discount > 0 AS INTEGER)),
               count(*) FILTER (WHERE is_return AND margin > 0)
        FROM transactions""").fetchone()
    assert 0.02 < stats[0] < 0.12
    assert stats[1] > 50
    assert stats[2] > 0
    assert 0.1 < stats[3] < 0.5
    assert stats[4] == 0
    # referrers signed up before the customers they referred
    later = one(con, """
        SELECT count(*) FROM transactions t JOIN customers b USING (customer_id)
        JOIN customers r ON r.customer_id = t.referrer_id WHERE r.signup_date > b.signup_date""")
    assert later == 0


def test_affluence_relates_to_spend_and_sentiment_to_satisfaction(con):
    aff = one(con, """
        SELECT corr(tp.affluence_score, ln(tc.mean_spend)) FROM third_party tp
        JOIN truth_customers tc USING (customer_id) JOIN customers c USING (customer_id)
        WHERE c.customer_type = 'B2C'""")
    assert aff > 0.3
    sent = one(con, """
        WITH s AS (SELECT customer_id, avg(sentiment) AS s FROM social GROUP BY 1),
             t AS (SELECT customer_id, avg(satisfaction) AS sat FROM support_tickets GROUP BY 1)
        SELECT corr(s, sat) FROM s JOIN t USING (customer_id)""")
    assert sent > 0.3


def test_fee_complaints_go_with_higher_churn(con):
    # recent buyers at several snapshots: complained about fees in the 90 days before T or not;
    # churn = no purchase in the 180 days after T
    rows = con.execute("""
        WITH snaps AS (SELECT unnest([DATE '2025-01-01', DATE '2025-04-01', DATE '2025-07-01',
                                      DATE '2025-10-01', DATE '2026-01-01']) AS t),
        recent AS (SELECT DISTINCT s.t, x.customer_id FROM snaps s JOIN all_txn x
                   ON x.ts < s.t AND x.ts >= s.t - 90 AND NOT x.is_return),
        fee AS (SELECT DISTINCT s.t, k.customer_id FROM snaps s JOIN support_tickets k
                ON k.opened_at < s.t AND k.opened_at >= s.t - 90
                AND k.category = 'fee_complaint'),
        later AS (SELECT DISTINCT s.t, x.customer_id FROM snaps s JOIN all_txn x
                  ON x.ts >= s.t AND x.ts < s.t + 180 AND NOT x.is_return)
        SELECT f.customer_id IS NOT NULL AS complained,
               avg(CAST(l.customer_id IS NULL AS INTEGER)) AS churn, count(*) AS n
        FROM recent r LEFT JOIN fee f USING (t, customer_id) LEFT JOIN later l
        USING (t, customer_id) GROUP BY 1""").fetchall()
    churn = {r[0]: (r[1], r[2]) for r in rows}
    assert churn[True][1] > 100
    assert churn[True][0] > churn[False][0] + 0.05


# --- offers -----------------------------------------------------------------------------------


def test_logging_propensities_are_exact_probabilities(con):
    assert one(con, """
        SELECT max(abs(s - 1)) FROM (SELECT sum(probability) AS s
                                     FROM truth_logging_policy GROUP BY offer_event_id)""") < 1e-9
    assert one(con, """
        SELECT max(abs(e.propensity - p.probability)) FROM offer_events e
        JOIN truth_logging_policy p USING (offer_event_id, offer_id)""") < 1e-12
    assert one(con, "SELECT count(*) FROM offer_events WHERE ts < ?",
               [TODAY - timedelta(days=366)]) == 0
    # the channel of an offer event is its offer's channel
    assert one(con, "SELECT count(*) FROM offer_events e JOIN offers o USING (offer_id) "
                    "WHERE e.channel <> o.channel") == 0


def test_acceptance_follows_truth_and_leaves_room_for_a_better_policy(con):
    logged, accepted, logging_value, oracle_value = con.execute("""
        WITH ev AS (SELECT e.offer_event_id, e.customer_id, e.accepted, a.p_accept
                    FROM offer_events e
                    JOIN truth_offer_acceptance a USING (customer_id, offer_id)),
        logging AS (SELECT e.offer_event_id, sum(p.probability * a.p_accept * o.margin) AS v
                    FROM offer_events e JOIN truth_logging_policy p USING (offer_event_id)
                    JOIN truth_offer_acceptance a ON a.customer_id = e.customer_id
                         AND a.offer_id = p.offer_id
                    JOIN offers o ON o.offer_id = p.offer_id GROUP BY 1),
        best AS (SELECT e.offer_event_id, max(a.p_accept * o.margin) AS v
                 FROM offer_events e JOIN truth_offer_acceptance a USING (customer_id)
                 JOIN offers o ON o.offer_id = a.offer_id GROUP BY 1)
        SELECT (SELECT sum(p_accept) FROM ev), (SELECT sum(CAST(accepted AS INTEGER)) FROM ev),
               (SELECT avg(v) FROM logging), (SELECT avg(v) FROM best)""").fetchone()
    # realised acceptances match the true probabilities (3 standard deviations)
    assert abs(accepted - logged) < 3 * np.sqrt(logged) + 5
    assert oracle_value >= 1.5 * logging_value
    assert logging_value > 0


def test_acceptance_depends_only_on_static_attributes():
    rng = np.random.default_rng(0)
    n = 500
    taste = rng.dirichlet(np.ones(7), n)
    args = (rng.random(n) < 0.3, rng.integers(0, 6, n), rng.standard_normal(n),
            rng.integers(0, 5, n), taste)
    p1 = syn.true_acceptance(*args)
    p2 = syn.true_acceptance(*args)
    assert p1.shape == (n, len(syn.OFFERS))
    np.testing.assert_array_equal(p1, p2)
    assert ((p1 > 0) & (p1 < 1)).all()


# --- oracles ----------------------------------------------------------------------------------


def realised(con, as_of: date, horizon: int):
    return con.execute("""
        SELECT c.customer_id,
               CAST(count(*) FILTER (WHERE NOT x.is_return AND x.ts >= ? AND x.ts < ?) = 0
                    OR coalesce(c.contract_end_date >= ? AND c.contract_end_date < ?, false)
                    AS INTEGER) AS churned,
               coalesce(sum(x.margin) FILTER (WHERE x.ts >= ? AND x.ts < ?), 0) AS margin
        FROM customers c JOIN all_txn x USING (customer_id)
        GROUP BY c.customer_id, c.contract_end_date
        HAVING count(*) FILTER (WHERE NOT x.is_return AND x.ts < ?) > 0
        ORDER BY 1""", [as_of, as_of + timedelta(days=horizon)] * 3 + [as_of]).df()


@pytest.mark.parametrize(("as_of", "horizon"), [(TODAY - timedelta(days=180), 90), (TODAY, 180)])
def test_oracle_churn_is_informative_calibrated_and_not_clairvoyant(con, as_of, horizon):
    labels = realised(con, as_of, horizon)
    oracle = oracle_churn_probability(con, as_of, horizon)
    assert oracle["p_churn"].between(0, 1).all()
    assert oracle["customer_id"].is_unique
    df = labels.merge(oracle, on="customer_id", how="left")
    assert df["p_churn"].notna().all()
    auc = roc_auc_score(df["churned"], df["p_churn"])
    assert 0.75 < auc < 0.995
    assert abs(df["p_churn"].mean() - df["churned"].mean()) < 0.04
    margin = oracle_expected_margin(con, as_of, horizon)
    df = labels.merge(margin, on="customer_id")
    assert np.corrcoef(df["margin"], df["expected_margin"])[0, 1] > 0.4
    assert 0.8 < df["margin"].sum() / df["expected_margin"].sum() < 1.25


def test_oracle_knows_prospects_and_gone_customers(con):
    as_of = TODAY - timedelta(days=90)
    oracle = oracle_churn_probability(con, as_of, 90).set_index("customer_id")["p_churn"]
    gone = [r[0] for r in con.execute(
        "SELECT customer_id FROM truth_customers WHERE left_at <= ? OR is_prospect", [as_of]
    ).fetchall()]
    assert len(gone) > 100
    assert (oracle.loc[oracle.index.intersection(gone)] == 1.0).all()
    later = one(con, "SELECT count(*) FROM customers WHERE signup_date >= ?", [as_of])
    assert len(oracle) == one(con, "SELECT count(*) FROM customers") - later
    with pytest.raises(WarehouseError, match="horizon_days"):
        oracle_churn_probability(con, as_of, 0)
