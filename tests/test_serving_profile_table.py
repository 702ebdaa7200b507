"""Issue 17: the profile table behind /customer360 and /next_best_offer by id.

The service built in-process over the shared serving env (real MLflow store, real DuckDB
copy), once with the env's greedy bandit and once with the bandit exploring (Thompson draws
per decision period): the table's rows equal the full scoring path's for every customer,
exclusions included, and a row stops answering when its decision period, a history window
edge or feedback makes the stored answer stale; the service then scores it in full.
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import yaml


def _service(env, folder, config_dir):
    """A started service object (no HTTP) over a private copy of the warehouse."""
    db = env.copy_db(folder / "w.duckdb")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", env.tracking_uri)
        mp.setenv("CUSTOMER360_CONFIG_DIR", str(config_dir))
        mp.setenv("CUSTOMER360_DB", str(db))
        from customer360.serving.service import Customer360

        svc = Customer360.inner()
        yield svc
        svc.close_reader()


@pytest.fixture(scope="module")
def service(env, tmp_path_factory):
    """The env's configs: greedy bandit (exploration 0)."""
    yield from _service(env, tmp_path_factory.mktemp("table"), env.config_dir)


@pytest.fixture(scope="module")
def exploring(env, tmp_path_factory):
    """The bandit explores (exploration 1): offers ranked on per-period Thompson draws."""
    folder = tmp_path_factory.mktemp("table_bandit")
    configs = shutil.copytree(env.config_dir, folder / "configs")
    nbo = yaml.safe_load((configs / "nbo.yaml").read_text())
    nbo["bandit"]["exploration"] = 1.0
    (configs / "nbo.yaml").write_text(yaml.safe_dump(nbo))
    yield from _service(env, folder, configs)


def _full(svc, rows: np.ndarray) -> list[dict]:
    return svc._full_part(svc.snapshot.iloc[rows], False).to_dict("records")


def _same(got: dict, want: dict) -> bool:
    def norm(v):
        return None if isinstance(v, float) and np.isnan(v) else v

    return list(got) == list(want) and all(norm(got[k]) == norm(want[k]) for k in got)


def _differing(got: list[dict], want: list[dict]) -> list[str]:
    assert len(got) == len(want)
    return [w["customer_id"] for g, w in zip(got, want, strict=True) if not _same(g, w)]


def _recorded(svc, row: int, accepted: bool = False) -> str:
    """Feedback on the row's first offer through the service; returns the offer id."""
    offer = svc.profiles.rows(np.array([row]))[0]["offer_1_id"]
    assert offer is not None
    answer = svc._feedback(str(svc.ids[row]), offer, accepted, None, None, None)
    assert getattr(answer, "recorded", False), answer
    return offer


@pytest.mark.parametrize("which", ["service", "exploring"])
def test_table_rows_equal_full_scoring_for_every_customer(which, request):
    svc = request.getfixturevalue(which)
    rows = np.arange(len(svc.snapshot))
    table = svc.profiles
    assert table is not None and len(table) == len(rows)
    assert table.use_bandit == (which == "exploring") or svc.scorer.population.bandit.total > 0
    assert table.fresh(rows).all()
    want = _full(svc, rows)
    assert not _differing(table.rows(rows), want)
    assert any(w["excluded"] for w in want)  # the exclusions were compared, not all empty
    assert any(w["offer_1_id"] for w in want)
    # and through the service's own lookup, in request order (repeats and reversed)
    picked = np.r_[rows[::-1][:50], rows[:5]]
    assert not _differing(svc._by_rows(picked, svc._full_part), [want[r] for r in picked])


def test_table_memory_is_a_few_hundred_bytes_a_customer(service):
    table = service.profiles
    per_customer = table.nbytes / len(table)
    # exclusion codes (one byte per offer), the top offers' numbers, codes for the texts
    assert table.excluded.nbytes == len(table) * len(service.scorer.population.offers)
    assert 50 < per_customer < 1_000, per_customer


def test_a_row_goes_stale_with_its_period_and_its_history_window(exploring):
    svc = exploring
    table = svc.profiles
    rows = np.arange(len(table))
    now = pd.Timestamp.now(tz="UTC").tz_localize(None)
    assert table.fresh(rows, now).all()
    # the bandit's decision period rolls over: every row is stale, and answered in full
    assert not table.fresh(rows, now + pd.Timedelta(days=8)).any()  # period: week
    built = table.period
    try:
        table.period = "1999-W01"
        assert not table.fresh(rows).any()
        assert not _differing(svc._by_rows(rows[:40], svc._full_part), _full(svc, rows[:40]))
    finally:
        table.period = built
    # a history event crossing a window edge makes its own customer stale, at that instant
    edge = np.flatnonzero(table.valid_until < np.iinfo(np.int64).max)
    for row in edge[:3]:  # (when the warehouse's history has events inside the windows)
        at = pd.Timestamp(int(table.valid_until[row]))
        before = at - pd.Timedelta(microseconds=1)
        if table.fresh(rows[[row]], before).all():  # the edge falls in this decision period
            assert not table.fresh(rows[[row]], at).any()
            assert table.fresh(rows[table.valid_until > at.value], at).all()


def test_valid_until_is_the_first_window_edge_after_the_build():
    from types import SimpleNamespace

    from customer360.serving.profile import _valid_until

    rules = SimpleNamespace(rejected_window_days=90, contact_window_days=30)
    started = pd.Timestamp("2026-06-01")
    history = pd.DataFrame({
        "customer_id": ["a", "a", "b", "c", "zz"],
        "ts": pd.to_datetime(["2026-05-20", "2026-03-20", "2026-06-05", "2025-01-01",
                              "2026-06-02"]),
    })
    pop = SimpleNamespace(nbo_config=SimpleNamespace(eligibility=rules), history=history)
    until = _valid_until(pop, pd.Series(["a", "b", "c", "d"]), started)
    day = pd.Timedelta(days=1)
    assert [pd.Timestamp(int(u)) if u < np.iinfo(np.int64).max else None for u in until] == [
        pd.Timestamp("2026-03-20") + 90 * day,  # leaves the rejected window first (06-18)
        pd.Timestamp("2026-06-05"),  # enters the decision
        None,  # every edge passed before the build
        None,  # no history ("zz" is not served)
    ]


def test_greedy_feedback_sends_everyone_to_the_full_path(service):
    table = service.profiles
    rows = np.arange(len(table))
    row = 0
    was_bandit = table.use_bandit
    offer = _recorded(service, row)
    fresh = table.fresh(rows)
    assert not fresh[row]
    if not was_bandit:  # greedy and no feedback at start-up: the bandit now ranks everyone
        assert not fresh.any()
    # the stale customer is scored in full: the rejected offer is excluded now
    again = service._by_rows(np.array([row]), service._full_part)[0]
    assert _same(again, _full(service, np.array([row]))[0])
    assert offer in {e["offer_id"] for e in again["excluded"]}


def test_bandit_feedback_stales_the_customer_and_its_segment_only(exploring):
    svc = exploring
    table = svc.profiles
    rows = np.arange(len(table))
    segment = table.segment
    assert len(set(segment)) > 1
    row = int(np.flatnonzero(segment == segment[0])[0])
    offer = _recorded(svc, row)
    fresh = table.fresh(rows)
    assert not fresh[row]
    assert not fresh[segment == segment[row]].any()  # the segment's posterior moved
    assert fresh[segment != segment[row]].all()
    # the rows still answered from the table are still the full path's answers ...
    want = _full(svc, rows)
    assert not _differing(table.rows(rows[fresh]), [want[r] for r in rows[fresh]])
    # ... and a request mixing fresh and stale rows gets each from its own path, in order
    mixed = np.r_[rows[fresh][:20], rows[~fresh][:20], row]
    rng = np.random.default_rng(0)
    mixed = rng.permutation(mixed)
    assert not _differing(svc._by_rows(mixed, svc._full_part), [want[r] for r in mixed])
    got = svc._by_rows(np.array([row]), svc._full_part)[0]
    assert offer in {e["offer_id"] for e in got["excluded"]}
