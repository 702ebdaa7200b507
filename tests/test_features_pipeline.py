"""Known-answer tests of the feature pipeline on a tiny hand-built warehouse, and the same
feature definitions on Spark (local mode) giving identical values.

The tiny warehouse (as of T = 2026-01-01) has:

* c1: a B2C customer with four orders, one return, a referral, web/app/email events, social
  posts, support tickets (one closed after T, one never closed) and a third-party record;
* c2: a B2B customer with a contract, one order before T (referred by c1) and one after;
* c3: a prospect who signed up the day before T and has no rows anywhere;
* c4: signed up on T, so not in the frame;
* plus one row at exactly T in every table, which must be ignored.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from customer360.data.warehouse import connect, set_meta
from customer360.features import build_features, build_training_set
from customer360.features.assembler import build_labels, features_sql
from customer360.features.registry import FEATURES, feature_names
from customer360.features.spec import FeatureError

T = "2026-01-01"

CUSTOMERS = """
('c1','B2C',NULL,NULL,'25-34','F','north','Oslo','referral',DATE '2024-01-01',NULL),
('c2','B2B','small','retail',NULL,NULL,'south','Rome','direct',DATE '2024-06-01',DATE '2026-03-01'),
('c3','B2C',NULL,NULL,'65+','M','east','Kyiv','partner',DATE '2025-12-31',NULL),
('c4','B2C',NULL,NULL,'18-24','X','west','Lima','paid_digital',DATE '2026-01-01',NULL)"""

TRANSACTIONS = """
('t1','c1',TIMESTAMP '2025-10-01 10:00',100,30,1,'home','web',10,false,NULL,5),
('t2','c1',TIMESTAMP '2025-12-01 10:00',50,10,1,'sports','web',0,false,NULL,5),
('t2b','c1',TIMESTAMP '2025-12-01 15:00',30,6,1,'sports','app',0,false,NULL,1),
('t3','c1',TIMESTAMP '2025-12-11 10:00',-20,-5,1,'sports','web',0,true,NULL,2),
('t6','c1',TIMESTAMP '2025-12-21 08:00',40,8,1,'beauty','web',0,false,NULL,3),
('t7','c1',TIMESTAMP '2026-01-01 00:00',50,12,1,'home','web',0,false,NULL,3),
('t4','c2',TIMESTAMP '2025-12-20 10:00',200,80,2,'home','store',0,false,'c1',10),
('t5','c2',TIMESTAMP '2026-01-10 10:00',300,90,2,'home','store',0,false,NULL,10)"""

THIRD_PARTY = """
('c1',TIMESTAMP '2025-06-01','professional','master','middle',3,250000,60,NULL,NULL),
('c2',TIMESTAMP '2026-02-01',NULL,NULL,NULL,NULL,NULL,40,'1M-10M',12)"""

EVENTS = """
('e1','c1',TIMESTAMP '2025-12-30 09:00','session','web',NULL),
('e2','c1',TIMESTAMP '2025-12-30 09:05','product_view','web','home'),
('e3','c1',TIMESTAMP '2025-11-01 12:00','cart_add','app','home'),
('e4','c1',TIMESTAMP '2025-12-10 08:00','email_send','email',NULL),
('e5','c1',TIMESTAMP '2025-12-20 08:00','email_send','email',NULL),
('e6','c1',TIMESTAMP '2025-12-20 09:00','email_open','email',NULL),
('e7','c1',TIMESTAMP '2025-12-20 09:01','email_click','email',NULL),
('e8','c1',TIMESTAMP '2025-08-01 08:00','email_send','email',NULL),
('e9','c1',TIMESTAMP '2025-08-15 20:00','session','app',NULL),
('e10','c1',TIMESTAMP '2026-01-01 00:00','session','web',NULL)"""

SOCIAL = """
('s1','c1',TIMESTAMP '2025-12-15 10:00','mention','x',-0.5),
('s2','c1',TIMESTAMP '2025-11-20 10:00','comment','facebook',0.3),
('s3','c1',TIMESTAMP '2025-12-20 10:00','like','instagram',NULL),
('s4','c1',TIMESTAMP '2025-09-01 10:00','mention','x',0.8),
('s5','c1',TIMESTAMP '2026-01-01 00:00','share','x',NULL)"""

TICKETS = """
('k1','c1',TIMESTAMP '2025-11-01 10:00',TIMESTAMP '2025-11-03 10:00','fee_complaint','resolved',2),
('k2','c1',TIMESTAMP '2025-12-01 10:00',TIMESTAMP '2026-01-05 10:00','product_issue','resolved',4),
('k3','c1',TIMESTAMP '2025-12-20 10:00',NULL,'return_request','open',NULL),
('k4','c1',TIMESTAMP '2025-06-01 10:00',TIMESTAMP '2025-06-10 10:00','general','resolved',5),
('k5','c1',TIMESTAMP '2026-01-01 00:00',NULL,'billing','open',NULL)"""

OFFER_EVENTS = """
('oe1','c1','o1',TIMESTAMP '2026-01-05 10:00','email',0.5,true),
('oe2','c2','o1',TIMESTAMP '2026-01-06 10:00','email',0.5,false),
('oe3','c1','o1',TIMESTAMP '2025-12-01 10:00','email',0.5,true)"""


def _fill(con, table: str, values: str) -> None:
    con.execute(f"INSERT INTO {table} VALUES {values}")


@pytest.fixture
def tiny(tmp_path):
    con = connect(tmp_path / "tiny.duckdb", create=True)
    _fill(con, "customers", CUSTOMERS)
    _fill(con, "transactions", TRANSACTIONS)
    _fill(con, "third_party", THIRD_PARTY)
    _fill(con, "events", EVENTS)
    _fill(con, "social", SOCIAL)
    _fill(con, "support_tickets", TICKETS)
    _fill(con, "offers", "('o1','Gold card','services','sales',12.5,'email','A|B')")
    _fill(con, "offer_events", OFFER_EVENTS)
    set_meta(con, "today", "2026-06-30")
    yield con
    con.close()


@pytest.fixture
def tiny_frame(tiny) -> pd.DataFrame:
    return build_features(tiny, T).set_index("customer_id")


def _check(row: pd.Series, expected: dict) -> None:
    for name, want in expected.items():
        got = row[name]
        if want is None:
            assert pd.isna(got), f"{name}: expected null, got {got}"
        elif isinstance(want, str):
            assert got == want, f"{name}: expected {want!r}, got {got!r}"
        else:
            assert math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-12), (
                f"{name}: expected {want}, got {got}"
            )


def test_frame_shape_columns_and_dtypes(tiny_frame):
    # c4 signed up on T: not yet a customer as of T.
    assert list(tiny_frame.index) == ["c1", "c2", "c3"]
    assert list(tiny_frame.columns) == ["as_of", *feature_names()]
    assert (tiny_frame["as_of"] == pd.Timestamp(T)).all()
    for spec in FEATURES:
        column = tiny_frame[spec.name]
        if spec.dtype == "category":
            assert pd.api.types.is_string_dtype(column), spec.name
        else:
            assert column.dtype == spec.dtype, spec.name


def test_transactional_rfm_windows_and_ratios(tiny_frame):
    _check(
        tiny_frame.loc["c1"],
        {
            "txn__recency_days__all": 11,  # last order 2025-12-21; t7 at exactly T is ignored
            "txn__first_purchase_days__all": 92,
            "txn__orders__all": 4,
            "txn__spend_sum__all": 220,
            "txn__margin_sum__all": 54,
            "txn__orders__30d": 1,  # the window starts 2025-12-02 00:00
            "txn__spend_sum__30d": 40,
            "txn__orders__90d": 3,
            "txn__spend_sum__90d": 120,
            "txn__orders__365d": 4,
            "txn__returns__365d": 1,
            "txn__returns_value__365d": 20,
            "txn__returns_value__30d": 20,
            "txn__cost_to_serve__365d": 16,
            "txn__profitability__365d": 54 - 20 - 16,
            "txn__profitability__30d": 8 - 20 - 5,
            "txn__avg_basket__365d": 55,
            "txn__return_ratio__365d": 20 / 220,
            "txn__discount_share__365d": 10 / 230,
            "txn__category_breadth__365d": 3,
            "txn__category_breadth__all": 3,
            "txn__top_category__all": "sports",
            "txn__preferred_channel__365d": "web",
            "txn__referrals_made__all": 1,
            "txn__referred_buyers__all": 1,
        },
    )


def test_inter_purchase_times_and_trends(tiny_frame):
    c1 = tiny_frame.loc["c1"]
    # purchase days 2025-10-01, 12-01 (two orders), 12-21: gaps 61 and 20
    _check(
        c1,
        {
            "txn__purchase_days__all": 3,
            "txn__ipt_mean_days__all": 40.5,
            "txn__ipt_std_days__all": float(np.std([61, 20], ddof=1)),
            # last 90 days: 3 orders / 120 spend; the 90 before: 1 order / 100 spend
            "txn__orders_trend__90d": (3 - 1) / (3 + 1),
            "txn__spend_trend__90d": (120 - 100) / (120 + 100),
        },
    )
    # one purchase day: mean and spread undefined; trend from nothing before: +1
    _check(
        tiny_frame.loc["c2"],
        {
            "txn__ipt_mean_days__all": None,
            "txn__ipt_std_days__all": None,
            "txn__orders_trend__90d": 1.0,
        },
    )


def test_demographic_and_third_party(tiny_frame):
    _check(
        tiny_frame.loc["c2"],
        {
            "demo__customer_type__static": "B2B",
            "demo__company_size__static": "small",
            "demo__age_band__static": "n/a",
            "demo__tenure_days__all": 579,
            "demo__has_contract__static": 1,
            "demo__contract_days_left__all": 59,
            "demo__signup_to_first_purchase_days__all": 567,
            # the provider's record arrived after T
            "tp__has_record__static": 0,
            "tp__revenue_band__static": "unknown",
            "tp__affluence_score__static": None,
        },
    )
    _check(
        tiny_frame.loc["c1"],
        {
            "tp__income_band__static": "middle",
            "tp__affluence_score__static": 60,
            "tp__home_value__static": 250000,
            "tp__household_size__static": 3,
            "tp__revenue_band__static": "unknown",
            "tp__record_age_days__all": 214,
            "demo__has_contract__static": 0,
            "demo__contract_days_left__all": None,
        },
    )


def test_behavioural(tiny_frame):
    _check(
        tiny_frame.loc["c1"],
        {
            "beh__sessions__30d": 1,
            "beh__product_views__30d": 1,
            "beh__cart_adds__30d": 0,
            "beh__cart_adds__90d": 1,
            "beh__email_sends__30d": 2,
            "beh__email_open_rate__30d": 0.5,
            "beh__email_click_rate__30d": 0.5,
            "beh__sessions__365d": 2,
            "beh__email_sends__365d": 3,
            "beh__days_since_last_visit__all": 2,
            # visits: 3 in the last 90 days, 1 in the 90 before
            "beh__engagement_trend__90d": 0.5,
            # web 2, app 2, email 2 (sends excluded): ties go alphabetically
            "beh__preferred_channel__365d": "app",
        },
    )


def test_category_orders_and_events_per_category(tiny_frame):
    from customer360.data.contracts import CATEGORIES
    from customer360.features.behavioural import CATEGORY_EVENTS
    from customer360.features.transactional import CATEGORY_ORDERS

    assert list(CATEGORY_ORDERS) == list(CATEGORY_EVENTS) == list(CATEGORIES)
    # c1 orders: home t1, sports t2 + t2b (the t3 return is not an order), beauty t6; t7 (home)
    # at exactly T is ignored. Categorised events: e2 (view) and e3 (cart add), both home.
    c1 = {c: 0 for c in CATEGORIES} | {"home": 1, "sports": 2, "beauty": 1}
    # c2: t4 (home) before T, t5 (home) after it; no events
    c2 = {c: 0 for c in CATEGORIES} | {"home": 1}
    for cust, orders, events in (
        ("c1", c1, {c: 2 if c == "home" else 0 for c in CATEGORIES}),
        ("c2", c2, {c: 0 for c in CATEGORIES}),
        ("c3", {c: 0 for c in CATEGORIES}, {c: 0 for c in CATEGORIES}),
    ):
        _check(
            tiny_frame.loc[cust],
            {CATEGORY_ORDERS[c]: n for c, n in orders.items()}
            | {CATEGORY_EVENTS[c]: n for c, n in events.items()},
        )
    per_category = tiny_frame[list(CATEGORY_ORDERS.values())].sum(axis=1)
    assert (per_category == tiny_frame["txn__orders__all"]).all()


def test_social(tiny_frame):
    _check(
        tiny_frame.loc["c1"],
        {
            "social__mentions__30d": 1,
            "social__likes_shares__30d": 1,
            "social__negative_mentions__30d": 1,
            "social__sentiment_mean__30d": -0.5,
            "social__sentiment_min__30d": -0.5,
            "social__comments__90d": 1,
            "social__sentiment_mean__90d": (-0.5 + 0.3) / 2,
            "social__sentiment_trend__90d": (-0.5 + 0.3) / 2 - 0.8,
            "social__mentions__365d": 2,
            "social__likes_shares__365d": 1,  # the share at exactly T is ignored
            "social__sentiment_mean__365d": (-0.5 + 0.3 + 0.8) / 3,
            "social__sentiment_min__365d": -0.5,
        },
    )


def test_service_open_tickets_at_t(tiny_frame):
    _check(
        tiny_frame.loc["c1"],
        {
            "svc__tickets__90d": 3,
            "svc__tickets__365d": 4,
            "svc__complaints__90d": 1,
            "svc__fee_complaints__90d": 1,
            "svc__return_requests__90d": 1,
            # k2 was closed after T (status says resolved today) and k3 is still open
            "svc__open_tickets__all": 2,
            "svc__open_complaints__all": 1,
            "svc__open_returns__all": 1,
            # k2's score (4) was given after T; the last score known at T is k1's
            "svc__satisfaction_last__all": 2,
            "svc__satisfaction_mean__365d": 3.5,
            "svc__satisfaction_mean__90d": 2,
            "svc__days_since_last_ticket__all": 12,
        },
    )


def test_customers_without_rows_get_documented_defaults(tiny_frame):
    c3 = tiny_frame.loc["c3"]
    for spec in FEATURES:
        value = c3[spec.name]
        if spec.family == "demo":
            continue
        if spec.default is None:
            assert pd.isna(value), spec.name
        else:
            assert value == spec.default, spec.name
    _check(c3, {"demo__tenure_days__all": 1, "demo__signup_to_first_purchase_days__all": None})
    # no NaN anywhere but in features that declare what a null means
    nullable = {f.name for f in FEATURES if f.default is None}
    with_nan = {c for c in tiny_frame.columns if tiny_frame[c].isna().any()}
    assert with_nan <= nullable


def test_labels_semantics(tiny):
    labels = build_labels(tiny, "2025-12-15", 30).set_index("customer_id")
    # c3 (signed up 2025-12-31) is not a customer as of 2025-12-15
    assert list(labels.index) == ["c1", "c2"]
    c1, c2 = labels.loc["c1"], labels.loc["c2"]
    # c1 bought on 12-21 and on 01-01 (inside [T, T+30)); the 12-11 return is before T
    assert c1["label__churn__30d"] == 0
    assert c1["label__purchases__30d"] == 2
    assert c1["label__margin__30d"] == pytest.approx(20)
    # c2 never bought before T: churn undefined; its future still counts for margin
    assert np.isnan(c2["label__churn__30d"])
    assert c2["label__purchases__30d"] == 2
    assert c2["label__margin__30d"] == pytest.approx(170)
    # c1 accepted the offer of 01-05 (the one of 12-01 is before T); c2 rejected its offer
    assert c1["label__offer_accepted__30d"] == 1
    assert c2["label__offer_accepted__30d"] == 0


def test_training_set_contract_end_and_offer_labels(tiny):
    ts = build_training_set(tiny, [T], 90).set_index("customer_id")
    assert list(ts.columns[-4:]) == [
        "label__churn__90d",
        "label__margin__90d",
        "label__purchases__90d",
        "label__offer_accepted__90d",
    ]
    # c2 bought on 01-10 but its contract ends on 03-01, inside the horizon
    assert ts.loc["c2", "label__churn__90d"] == 1
    assert ts.loc["c1", "label__churn__90d"] == 0  # t7 at exactly T counts for the label
    assert ts.loc["c1", "label__purchases__90d"] == 1
    assert ts.loc["c1", "label__offer_accepted__90d"] == 1
    assert ts.loc["c2", "label__offer_accepted__90d"] == 0
    assert np.isnan(ts.loc["c3", "label__churn__90d"])
    # features in the training set are the features as of T
    feats = build_features(tiny, T).set_index("customer_id")
    pd.testing.assert_frame_equal(ts[feats.columns], feats)


def test_labels_past_the_data_are_refused(tiny):
    with pytest.raises(FeatureError, match="data ends before 2026-06-30"):
        build_training_set(tiny, ["2026-06-01"], 90)
    with pytest.raises(FeatureError, match="positive"):
        build_training_set(tiny, [T], 0)


def test_several_as_of_dates_and_bad_input(tiny):
    frame = build_features(tiny, ["2025-12-15", T])
    assert frame.groupby("as_of").size().to_dict() == {
        pd.Timestamp("2025-12-15"): 2,
        pd.Timestamp(T): 3,
    }
    with pytest.raises(FeatureError, match="time of day"):
        build_features(tiny, dt.datetime(2026, 1, 1, 12))
    with pytest.raises(FeatureError, match="YYYY-MM-DD"):
        build_features(tiny, "01/01/2026")
    with pytest.raises(FeatureError, match="Unknown feature families"):
        build_features(tiny, T, families=["nope"])
    with pytest.raises(FeatureError, match="engine"):
        build_features(tiny, T, engine="pandas")


def test_family_subset_matches_full_frame(tiny, tiny_frame):
    txn = build_features(tiny, T, families=["txn"]).set_index("customer_id")
    assert list(txn.columns) == ["as_of", *feature_names("txn")]
    pd.testing.assert_frame_equal(txn, tiny_frame[txn.columns])


def test_feature_sql_reads_only_rows_before_t():
    sql = features_sql(T)
    assert "TIMESTAMP '2026-01-01 00:00:00'" in sql
    # every raw-table read is filtered on its time column
    for table, column in [
        ("transactions", "ts"),
        ("events", "ts"),
        ("social", "ts"),
        ("support_tickets", "opened_at"),
        ("third_party", "observed_at"),
    ]:
        assert f"FROM {table} WHERE {column} < TIMESTAMP '2026-01-01 00:00:00'" in sql, table


# --- the same definitions on Spark ----------------------------------------------------------


@pytest.fixture(scope="session")
def spark():
    pytest.importorskip("pyspark")
    from customer360.features.engine import local_spark

    # Small data: one shuffle partition, no adaptive re-planning and no Java code generation
    # (compiling the wide aggregations costs more than it saves) halve the test time.
    session = local_spark(
        cores=2,
        app_name="customer360-tests",
        **{
            "spark.sql.shuffle.partitions": "1",
            "spark.sql.adaptive.enabled": "false",
            "spark.sql.codegen.wholeStage": "false",
            "spark.sql.codegen.factoryMode": "NO_CODEGEN",
        },
    )
    yield session
    session.stop()


def assert_same_values(left: pd.DataFrame, right: pd.DataFrame) -> None:
    """Equal frames up to 1e-9 on floats (sums may add up in another order)."""
    assert list(left.columns) == list(right.columns)
    assert len(left) == len(right)
    left = left.sort_values(["as_of", "customer_id"]).reset_index(drop=True)
    right = right.sort_values(["as_of", "customer_id"]).reset_index(drop=True)
    for col in left.columns:
        a, b = left[col], right[col]
        if pd.api.types.is_float_dtype(a):
            assert pd.api.types.is_float_dtype(b), col
            assert (a.isna() == b.isna()).all(), col
            np.testing.assert_allclose(
                a.to_numpy(), b.to_numpy(), rtol=1e-9, atol=1e-9, equal_nan=True, err_msg=col
            )
        else:
            assert a.astype(str).tolist() == b.astype(str).tolist(), col


@pytest.mark.spark
def test_spark_gives_the_known_answers(tiny, spark):
    from customer360.features.engine import SparkEngine

    engine = SparkEngine.from_duckdb(tiny, spark)
    try:
        on_spark = build_features(tiny, T, engine=engine)
    finally:
        engine.close()
    assert_same_values(build_features(tiny, T), on_spark)
    assert on_spark.set_index("customer_id").loc["c1", "beh__preferred_channel__365d"] == "app"


@pytest.mark.spark
def test_spark_equals_duckdb_on_small_warehouse(small_warehouse_master, spark):
    from customer360.features.engine import SparkEngine

    as_of = ["2026-03-31"]
    with connect(small_warehouse_master, read_only=True) as con:
        on_duckdb = build_training_set(con, as_of, 90)
        engine = SparkEngine.from_duckdb(con, spark)
        try:
            on_spark = build_training_set(con, as_of, 90, engine=engine)
        finally:
            engine.close()
    assert len(on_duckdb) > 1000
    assert_same_values(on_duckdb, on_spark)


def test_duckdb_feature_queries_run_under_a_memory_limit_and_restore_it(
    tiny, tiny_frame, monkeypatch, caplog
):
    from customer360.features.engine import MEMORY_LIMIT_ENV

    setting = "SELECT current_setting('memory_limit')"
    default = tiny.execute(setting).fetchone()[0]
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "700MB")
    frame = build_features(tiny, T).set_index("customer_id")
    pd.testing.assert_frame_equal(frame, tiny_frame)
    assert tiny.execute(setting).fetchone()[0] == default
    # a limit nothing fits in (so the limit is really applied): the query runs again under
    # DuckDB's default, with a warning
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "1KB")
    with caplog.at_level("WARNING"):
        again = build_features(tiny, T).set_index("customer_id")
    pd.testing.assert_frame_equal(again, tiny_frame)
    assert any("did not fit" in r.message for r in caplog.records)
    assert tiny.execute(setting).fetchone()[0] == default
    # a limit the caller set is theirs: not replaced, not reset
    caplog.clear()
    tiny.execute("SET memory_limit = '5GB'")
    mine = tiny.execute(setting).fetchone()[0]
    with caplog.at_level("WARNING"):
        build_features(tiny, T)
    assert tiny.execute(setting).fetchone()[0] == mine
    assert not any("did not fit" in r.message for r in caplog.records)
    tiny.execute("RESET memory_limit")
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "lots")
    with pytest.raises(FeatureError, match=MEMORY_LIMIT_ENV):
        build_features(tiny, T)
