"""rfm_summary must equal lifetimes' summaries exactly, from any source, and reject bad input."""

from __future__ import annotations

from pathlib import Path

import duckdb
import lifetimes
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lifetimes.utils import calibration_and_holdout_data, summary_data_from_transaction_data

from customer360.errors import ContractError
from customer360.features.rfm import rfm_summary

CDNOW_SAMPLE = Path(lifetimes.__file__).parent / "datasets" / "CDNOW_sample.txt"


def load_cdnow_raw() -> pd.DataFrame:
    """The raw CDNOW 1/10 sample: customer id, YYYYMMDD date, units, dollars."""
    return pd.read_csv(
        CDNOW_SAMPLE,
        sep=r"\s+",
        header=None,
        names=["cid", "cid_seq", "date", "units", "amount"],
        dtype={"cid": str, "date": str},
    )


def _compare(mine: pd.DataFrame, ref: pd.DataFrame, pairs: dict[str, str]) -> None:
    mine = mine.set_index("customer_id")
    assert sorted(mine.index) == sorted(ref.index)
    for ours, theirs in pairs.items():
        np.testing.assert_allclose(
            mine[ours].to_numpy(), ref.loc[mine.index, theirs].to_numpy(), rtol=1e-12, atol=1e-9,
            err_msg=ours,
        )


def test_cdnow_matches_lifetimes_calibration_and_holdout():
    raw = load_cdnow_raw()
    mine = rfm_summary(
        duckdb.connect(), raw, customer_col="cid", date_col="date", amount_col="amount",
        calibration_end="1997-09-30", observation_end="1998-06-30", time_unit="W",
    )
    assert len(mine) == 2357
    raw["dt"] = pd.to_datetime(raw["date"], format="%Y%m%d")
    ref = calibration_and_holdout_data(
        raw, "cid", "dt", calibration_period_end="1997-09-30",
        observation_period_end="1998-06-30", freq="D", freq_multiplier=7,
        monetary_value_col="amount",
    )
    _compare(mine, ref, {
        "frequency": "frequency_cal", "recency": "recency_cal", "T": "T_cal",
        "monetary_value": "monetary_value_cal", "frequency_holdout": "frequency_holdout",
        "monetary_value_holdout": "monetary_value_holdout", "duration_holdout": "duration_holdout",
    })
    # the published T of a customer who joined on 1997-01-01 is 38.86 weeks
    assert mine.loc[mine.customer_id == "00004", "T"].iloc[0] == pytest.approx(272 / 7)


def _timestamped_log(seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 400
    start = pd.Timestamp("2024-01-01")
    return pd.DataFrame({
        "customer": rng.choice([f"c{i:03d}" for i in range(60)], n),
        "ts": start + pd.to_timedelta(rng.integers(0, 200 * 24 * 60, n), unit="min"),
        "amount": rng.gamma(2.0, 20.0, n).round(2),
    })


@pytest.mark.parametrize("plan", ["runs", "sql"])
def test_intraday_timestamps_and_same_day_purchases_match_summary_data(plan):
    tx = _timestamped_log()
    for unit, mult in (("D", 1), ("W", 7)):
        mine = rfm_summary(
            duckdb.connect(), tx, customer_col="customer", date_col="ts", amount_col="amount",
            calibration_end="2024-05-31", time_unit=unit, plan=plan,
        )
        ref = summary_data_from_transaction_data(
            tx, "customer", "ts", monetary_value_col="amount",
            observation_period_end="2024-05-31", freq="D", freq_multiplier=mult,
        )
        _compare(mine, ref, {c: c for c in ("frequency", "recency", "T", "monetary_value")})


def test_table_csv_parquet_and_frame_sources_agree(tmp_path):
    tx = _timestamped_log(5)
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.register("tx_frame", tx)
    con.execute("CREATE TABLE transactions AS SELECT * FROM tx_frame")
    con.unregister("tx_frame")
    tx.to_csv(tmp_path / "tx.csv", index=False)
    tx.to_parquet(tmp_path / "tx.parquet")
    kwargs = dict(customer_col="customer", date_col="ts", amount_col="amount",
                  calibration_end="2024-04-30", observation_end="2024-07-31")
    results = [rfm_summary(con, s, **kwargs) for s in
               ("transactions", tmp_path / "tx.csv", str(tmp_path / "tx.parquet"), tx)]
    for other in results[1:]:
        pd.testing.assert_frame_equal(results[0], other, check_exact=False, rtol=1e-12)
    assert results[0]["frequency_holdout"].sum() > 0
    # no helper views are left behind
    names = con.execute("SELECT table_name FROM information_schema.tables").fetchall()
    assert {r[0] for r in names} == {"transactions"}


def test_no_amount_column_gives_rfm_only():
    tx = _timestamped_log()
    out = rfm_summary(duckdb.connect(), tx, customer_col="customer", date_col="ts",
                      amount_col=None, calibration_end="2024-05-31")
    assert list(out.columns) == ["customer_id", "frequency", "recency", "T"]


@pytest.mark.parametrize("plan", ["runs", "sql"])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 60), st.floats(-50, 500, allow_nan=False)),
        min_size=1, max_size=40,
    ),
    st.integers(0, 70),
)
def test_property_matches_lifetimes_on_random_logs(plan, rows, cal_offset):
    tx = pd.DataFrame(rows, columns=["cid", "day", "amount"])
    tx["date"] = pd.Timestamp("2025-01-01") + pd.to_timedelta(tx["day"], unit="D")
    cal_end = pd.Timestamp("2025-01-01") + pd.Timedelta(days=cal_offset)
    if (tx["date"] <= cal_end).sum() == 0:
        return
    mine = rfm_summary(duckdb.connect(), tx, customer_col="cid", date_col="date",
                       amount_col="amount", calibration_end=cal_end, plan=plan)
    ref = summary_data_from_transaction_data(
        tx[tx["date"] <= cal_end], "cid", "date", monetary_value_col="amount",
        observation_period_end=cal_end,
    )
    _compare(mine, ref, {c: c for c in ("frequency", "recency", "T", "monetary_value")})
    assert (mine["recency"] <= mine["T"]).all()


def test_missing_column_names_it_and_lists_columns(tmp_path):
    path = tmp_path / "tx.csv"
    _timestamped_log().to_csv(path, index=False)
    with pytest.raises(ContractError, match=r"'cust_id'.*columns are: customer, ts, amount"):
        rfm_summary(duckdb.connect(), path, customer_col="cust_id", date_col="ts",
                    amount_col="amount", calibration_end="2024-05-31")


def test_unparseable_date_is_reported_with_value_and_customer():
    tx = pd.DataFrame({"c": ["a", "b"], "d": ["2024-01-01", "yesterday"], "x": [1.0, 2.0]})
    with pytest.raises(ContractError, match=r"1 row.*'yesterday'.*customer 'b'"):
        rfm_summary(duckdb.connect(), tx, customer_col="c", date_col="d", amount_col="x",
                    calibration_end="2024-05-31")


def test_bad_arguments_and_nulls_are_rejected():
    tx = pd.DataFrame({"c": ["a", "b"], "d": ["2024-01-01", "2024-01-02"], "x": [1.0, None]})
    con = duckdb.connect()
    kw = dict(customer_col="c", date_col="d", amount_col="x")
    with pytest.raises(ContractError, match="null values.*'x': 1"):
        rfm_summary(con, tx, **kw, calibration_end="2024-05-31")
    with pytest.raises(ContractError, match="observation_end .* must be after"):
        rfm_summary(con, tx, **kw, calibration_end="2024-05-31", observation_end="2024-05-01")
    with pytest.raises(ContractError, match="time_unit"):
        rfm_summary(con, tx, **kw, calibration_end="2024-05-31", time_unit="M")
    with pytest.raises(ContractError, match="neither a table"):
        rfm_summary(con, "no_such_table", **kw, calibration_end="2024-05-31")
    with pytest.raises(ContractError, match="calibration_end"):
        rfm_summary(con, tx, **kw, calibration_end="not a date")


@pytest.mark.parametrize("plan", ["runs", "sql"])
def test_known_answer_first_day_total_is_left_out_of_the_repeat_mean(plan):
    # a: three rows on the first day (total 600), then day totals 10 and 50 -> mean 30
    tx = pd.DataFrame({
        "c": ["a", "a", "a", "a", "a", "a", "b", "b"],
        "d": pd.to_datetime(["2024-01-01 09:00", "2024-01-01 12:00", "2024-01-01 23:59",
                             "2024-01-03", "2024-01-05 08:00", "2024-01-05 20:00",
                             "2024-01-02", "2024-01-02 10:00"], format="ISO8601"),
        "x": [100.0, 200.0, 300.0, 10.0, 20.0, 30.0, 7.0, 8.0],
    })
    out = rfm_summary(duckdb.connect(), tx, customer_col="c", date_col="d", amount_col="x",
                      calibration_end="2024-01-10", plan=plan).set_index("customer_id")
    assert out.loc["a"].tolist() == [2.0, 4.0, 9.0, 30.0]
    assert out.loc["b"].tolist() == [0.0, 0.0, 8.0, 0.0]


def test_holdout_without_amount_equals_the_columns_with_amount():
    # (lifetimes' calibration_and_holdout_data fails without a monetary column on pandas 3;
    # the columns with an amount are checked against it on CDNOW above)
    tx = _timestamped_log(11)
    kw = dict(customer_col="customer", date_col="ts", calibration_end="2024-04-15",
              observation_end="2024-07-01")
    bare = rfm_summary(duckdb.connect(), tx, amount_col=None, **kw)
    full = rfm_summary(duckdb.connect(), tx, amount_col="amount", **kw)
    assert list(bare.columns) == ["customer_id", "frequency", "recency", "T",
                                  "frequency_holdout", "duration_holdout"]
    pd.testing.assert_frame_equal(bare, full[bare.columns])
    assert bare["frequency_holdout"].sum() > 0


def test_null_timestamp_in_a_datetime_column_is_reported():
    tx = pd.DataFrame({"c": ["a", "b"], "d": pd.to_datetime(["2024-01-01", None]), "x": [1.0, 2.0]})
    with pytest.raises(ContractError, match=r"1 row.*missing or unparseable date.*customer 'b'"):
        rfm_summary(duckdb.connect(), tx, customer_col="c", date_col="d", amount_col="x",
                    calibration_end="2024-05-31")


@pytest.mark.parametrize("plan", ["runs", "sql"])
def test_known_answer_holdout_counts_days_and_averages_rows(plan):
    # a: calibration days 1 and 3; holdout: two rows on the 12th (one day), one on the 14th,
    #    one after observation_end (ignored). b: holdout only (no row: it is not a
    #    calibration customer). c: one calibration day, no holdout purchase.
    tx = pd.DataFrame({
        "c": ["a", "a", "a", "a", "a", "a", "b", "c"],
        "d": ["2024-01-01", "2024-01-03", "2024-01-12", "2024-01-12 18:00", "2024-01-14",
              "2024-02-01", "2024-01-11", "2024-01-05"],
        "x": [5.0, 7.0, 1.0, 2.0, 6.0, 1000.0, 4.0, 9.0],
    })
    out = rfm_summary(duckdb.connect(), tx, customer_col="c", date_col="d", amount_col="x",
                      calibration_end="2024-01-10", observation_end="2024-01-20", plan=plan)
    assert out["customer_id"].tolist() == ["a", "c"]
    a, c = out.set_index("customer_id").loc[["a", "c"]].to_dict("records")
    assert a == {"frequency": 1.0, "recency": 2.0, "T": 9.0, "monetary_value": 7.0,
                 "frequency_holdout": 2.0, "monetary_value_holdout": 3.0,
                 "duration_holdout": 10.0}
    assert c == {"frequency": 0.0, "recency": 0.0, "T": 5.0, "monetary_value": 0.0,
                 "frequency_holdout": 0.0, "monetary_value_holdout": 0.0,
                 "duration_holdout": 10.0}


@pytest.mark.parametrize("plan", ["runs", "sql"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(0, 6), st.integers(0, 90), st.floats(0, 500, allow_nan=False)),
        min_size=1, max_size=50,
    ),
    st.integers(0, 60),
    st.integers(1, 40),
)
def test_property_holdout_matches_lifetimes_with_integer_ids(
    plan, rows, cal_offset, hold_days
):
    tx = pd.DataFrame(rows, columns=["cid", "day", "amount"])
    tx["date"] = pd.Timestamp("2025-01-01") + pd.to_timedelta(tx["day"], unit="D")
    cal_end = pd.Timestamp("2025-01-01") + pd.Timedelta(days=cal_offset)
    obs_end = cal_end + pd.Timedelta(days=hold_days)
    if (tx["date"] <= cal_end).sum() == 0:
        return
    mine = rfm_summary(duckdb.connect(), tx, customer_col="cid", date_col="date",
                       amount_col="amount", calibration_end=cal_end, observation_end=obs_end,
                       plan=plan)
    assert mine["customer_id"].dtype == np.int64
    assert mine["customer_id"].is_monotonic_increasing
    if not ((tx["date"] > cal_end) & (tx["date"] <= obs_end)).any():
        # lifetimes refuses an empty holdout; ours reports no holdout purchases
        assert (mine["frequency_holdout"] == 0).all()
        assert (mine["monetary_value_holdout"] == 0).all()
        return
    ref = calibration_and_holdout_data(
        tx, "cid", "date", calibration_period_end=cal_end, observation_period_end=obs_end,
        freq="D", monetary_value_col="amount",
    )
    _compare(mine, ref, {
        "frequency": "frequency_cal", "recency": "recency_cal", "T": "T_cal",
        "monetary_value": "monetary_value_cal", "frequency_holdout": "frequency_holdout",
        "monetary_value_holdout": "monetary_value_holdout", "duration_holdout": "duration_holdout",
    })


@pytest.mark.parametrize("plan", ["runs", "sql"])
def test_large_table_with_many_same_day_repeats_matches_lifetimes(tmp_path, plan):
    # a DuckDB table of 300k rows (many vectors and row groups), 2000 customers, most of them
    # with several orders on one day
    rng = np.random.default_rng(17)
    n = 300_000
    tx = pd.DataFrame({
        "customer": np.char.add("id-", rng.integers(0, 2000, n).astype(str)),
        "ts": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 400 * 24, n), unit="h"),
        "amount": rng.gamma(2.0, 20.0, n).round(2),
    })
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.execute("CREATE TABLE tx AS SELECT * FROM tx")
    mine = rfm_summary(con, "tx", customer_col="customer", date_col="ts", amount_col="amount",
                       calibration_end="2025-01-15", plan=plan)
    assert mine["customer_id"].tolist() == sorted(mine["customer_id"])
    ref = summary_data_from_transaction_data(
        tx[tx["ts"] < "2025-01-16"], "customer", "ts", monetary_value_col="amount",
        observation_period_end="2025-01-15", freq="D",
    )
    _compare(mine, ref, {c: c for c in ("frequency", "recency", "T", "monetary_value")})
    # most customers bought more than once on some day: rows outnumber purchase days
    assert (tx.groupby("customer").size() > ref["frequency"] + 1).mean() > 0.5


def test_no_purchase_up_to_calibration_end_gives_an_empty_frame_with_the_columns():
    tx = pd.DataFrame({"c": ["a"], "d": ["2024-03-01"], "x": [1.0]})
    out = rfm_summary(duckdb.connect(), tx, customer_col="c", date_col="d", amount_col="x",
                      calibration_end="2024-01-31", observation_end="2024-06-30")
    assert out.empty
    assert list(out.columns) == ["customer_id", "frequency", "recency", "T", "monetary_value",
                                 "frequency_holdout", "monetary_value_holdout",
                                 "duration_holdout"]


def test_null_customer_id_is_rejected():
    tx = pd.DataFrame({"c": ["a", None], "d": ["2024-01-01", "2024-01-02"], "x": [1.0, 2.0]})
    with pytest.raises(ContractError, match="null values.*'c': 1"):
        rfm_summary(duckdb.connect(), tx, customer_col="c", date_col="d", amount_col="x",
                    calibration_end="2024-05-31")


def _layouts(seed: int = 23) -> dict[str, pd.DataFrame]:
    """One log of 3,000 customers in the row orders a warehouse can hold."""
    rng = np.random.default_rng(seed)
    n = 60_000
    tx = pd.DataFrame({
        "customer": np.char.add("k", rng.integers(0, 3000, n).astype(str)),
        "ts": pd.Timestamp("2023-01-01") + pd.to_timedelta(rng.integers(0, 900 * 24, n), unit="h"),
        "amount": rng.gamma(2.0, 20.0, n).round(2),
    })
    clustered = tx.sort_values("customer", kind="stable", ignore_index=True)
    # two clustered batches appended (the second one holds the later half of the history):
    # most customers appear in two runs
    late = tx["ts"] >= pd.Timestamp("2024-03-01")
    appended = pd.concat([
        tx[~late].sort_values("customer", kind="stable"),
        tx[late].sort_values("customer", kind="stable"),
    ], ignore_index=True)
    return {
        "random": tx,
        "clustered": clustered,
        "clustered_by_date": clustered.sort_values(["customer", "ts"], ignore_index=True),
        "appended": appended,
        # clustered, ids not in sorted order
        "shuffled_customers": tx.sort_values("customer", ascending=False, kind="stable",
                                             ignore_index=True),
    }


@pytest.mark.parametrize("holdout", [None, "2025-01-31"])
@pytest.mark.parametrize("unit", ["D", "W"])
def test_run_scan_and_sql_plans_agree_on_every_row_order(tmp_path, holdout, unit, caplog):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    kw = dict(customer_col="customer", date_col="ts", amount_col="amount",
              calibration_end="2024-09-30", observation_end=holdout, time_unit=unit)
    reference = None
    for name, frame in _layouts().items():
        con.register("frame", frame)
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM frame")
        con.unregister("frame")
        sql = rfm_summary(con, name, plan="sql", **kw)
        runs = rfm_summary(con, name, plan="runs", **kw)
        pd.testing.assert_frame_equal(runs, sql, check_exact=False, rtol=1e-12, obj=name)
        with caplog.at_level("DEBUG", logger="customer360.features.rfm"):
            caplog.clear()
            auto = rfm_summary(con, name, **kw)
        pd.testing.assert_frame_equal(auto, sql, check_exact=False, rtol=1e-12, obj=name)
        chosen = "runs" if "run scan" in caplog.text else "sql"
        assert chosen == ("sql" if name == "random" else "runs"), name
        if reference is None:
            reference = sql
        pd.testing.assert_frame_equal(sql, reference, check_exact=False, rtol=1e-12, obj=name)
    assert (reference["frequency"] > 0).mean() > 0.9
    if holdout:
        assert reference["frequency_holdout"].sum() > 0


def test_unknown_plan_is_rejected():
    tx = pd.DataFrame({"c": ["a"], "d": ["2024-01-01"], "x": [1.0]})
    with pytest.raises(ContractError, match="plan must be 'auto', 'runs' or 'sql'"):
        rfm_summary(duckdb.connect(), tx, customer_col="c", date_col="d", amount_col="x",
                    calibration_end="2024-01-31", plan="fast")


def test_run_scan_restores_numpys_huge_page_setting():
    from numpy._core import multiarray

    tx = _layouts()["clustered"]
    before = multiarray._get_madvise_hugepage()
    for setting in (True, False):
        multiarray._set_madvise_hugepage(setting)
        try:
            rfm_summary(duckdb.connect(), tx, customer_col="customer", date_col="ts",
                        amount_col="amount", calibration_end="2024-09-30", plan="runs")
            assert multiarray._get_madvise_hugepage() is setting
        finally:
            multiarray._set_madvise_hugepage(before)


@pytest.mark.parametrize("holdout", [None, "2025-01-31"])
def test_run_scan_sorting_in_two_threads_gives_the_same_values(monkeypatch, holdout):
    import customer360.features.rfm as rfm

    kw = dict(customer_col="customer", date_col="ts", amount_col="amount",
              calibration_end="2024-09-30", observation_end=holdout)
    layouts = _layouts()
    single = {name: rfm_summary(duckdb.connect(), tx, plan="runs", **kw)
              for name, tx in layouts.items()}
    cuts = []
    halves = rfm._halves
    monkeypatch.setattr(rfm, "_PARALLEL_MIN_ROWS", 1_000)
    monkeypatch.setattr(rfm, "_halves", lambda *a: cuts.append(halves(*a)) or cuts[-1])
    for name, tx in layouts.items():
        two = rfm_summary(duckdb.connect(), tx, plan="runs", **kw)
        pd.testing.assert_frame_equal(two, single[name], check_exact=False, rtol=1e-12, obj=name)
    # sorted: random, clustered, appended, shuffled_customers (clustered_by_date needs no
    # sort); only the clustered layout (ids ascending, days unsorted) splits into two halves
    assert [len(c) for c in cuts] == [1, 2, 1, 1]


@pytest.mark.parametrize("plan", ["auto", "runs", "sql"])
def test_amount_that_is_not_a_number_is_reported_under_every_plan(plan):
    tx = pd.DataFrame({"c": ["a", "a", "b"], "d": ["2024-01-01", "2024-01-02", "2024-01-03"],
                       "x": ["1.0", "abc", "2"]})
    with pytest.raises(ContractError, match=r"Column 'x' of the transactions DataFrame must be "
                       r"numeric.*'abc'.*Fix or remove"):
        rfm_summary(duckdb.connect(), tx, customer_col="c", date_col="d", amount_col="x",
                    calibration_end="2024-05-31", plan=plan)
