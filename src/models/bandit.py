"""Thompson sampling over (value segment x offer) arms, learning from every acceptance or rejection.

State lives in the warehouse as an **append-only feedback log** ``nbo_feedback``; the bandit
state is its aggregate (view ``nbo_bandit_state``: successes and failures per segment x offer).
Appends never conflict with each other, so concurrent feedback loses no update, and a restart
resumes exactly where the log ends. Priors (``prior_alpha``/``prior_beta`` or one centred on
the propensity model) come from config, not from the table, so changing them needs no
migration.

Concurrency
-----------
* Threads: share one connection and give each thread its own ``con.cursor()``; every write is
  one short transaction, retried on a DuckDB transaction conflict.
* Processes: DuckDB allows one writing process per file. :func:`connect_with_retry` waits (with
  back-off) until another process releases the file, so a feedback writer started while the
  trainer holds the file succeeds once the file is free.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from customer360.data.tables import BANDIT_STATE_VIEW as STATE_VIEW
from customer360.data.tables import FEEDBACK_TABLE
from customer360.data.tables import NBO_SEGMENTS_TABLE as SEGMENTS_TABLE
from customer360.data.tables import SEGMENTS_TABLE as VALUE_SEGMENTS_TABLE
from customer360.data.warehouse import insert_frame, registered, table_exists, transaction
from customer360.errors import Customer360Error, NotFoundError, WarehouseError

log = logging.getLogger(__name__)


FEEDBACK_DDL = f"""
CREATE TABLE IF NOT EXISTS {FEEDBACK_TABLE} (
  feedback_id VARCHAR PRIMARY KEY,
  customer_id VARCHAR NOT NULL,
  offer_id VARCHAR NOT NULL,
  segment VARCHAR NOT NULL,
  accepted BOOLEAN NOT NULL,
  ts TIMESTAMP NOT NULL,
  recorded_at TIMESTAMP NOT NULL
)
"""

STATE_DDL = f"""
CREATE VIEW IF NOT EXISTS {STATE_VIEW} AS
SELECT segment, offer_id,
       count(*) AS n,
       sum(CASE WHEN accepted THEN 1 ELSE 0 END) AS successes,
       sum(CASE WHEN accepted THEN 0 ELSE 1 END) AS failures,
       max(ts) AS last_ts
FROM {FEEDBACK_TABLE}
GROUP BY segment, offer_id
"""

SEGMENTS_DDL = f"""
CREATE TABLE IF NOT EXISTS {SEGMENTS_TABLE} (
  customer_id VARCHAR PRIMARY KEY,
  value_segment VARCHAR NOT NULL,
  as_of TIMESTAMP NOT NULL
)
"""

_RETRYABLE = (duckdb.TransactionException, duckdb.ConstraintException)


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create the feedback log, the state view and the segment lookup (idempotent)."""
    _retry(lambda: _create(con), what="create the bandit tables")


def _create(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(FEEDBACK_DDL)
    con.execute(STATE_DDL)
    con.execute(SEGMENTS_DDL)


def _retry(fn, *, what: str, attempts: int = 50, base_delay: float = 0.005):
    """Run ``fn``; on a DuckDB write conflict roll back and retry with jittered back-off."""
    rng = np.random.default_rng()
    for attempt in range(attempts):
        try:
            return fn()
        except (*_RETRYABLE, duckdb.CatalogException) as exc:
            if isinstance(exc, duckdb.CatalogException) and "already exists" not in str(exc):
                raise
            if attempt == attempts - 1:
                raise WarehouseError(
                    f"Could not {what} after {attempts} attempts because of concurrent "
                    f"writers: {exc}. Retry later."
                ) from exc
            time.sleep(base_delay * (1 + attempt) * rng.uniform(0.5, 1.5))
    return None  # pragma: no cover


def connect_with_retry(
    path: str | Path, *, timeout_s: float = 30.0, poll_s: float = 0.05
) -> duckdb.DuckDBPyConnection:
    """Open the warehouse for writing, waiting while another process holds its lock."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return duckdb.connect(str(path))
        except duckdb.IOException as exc:
            if time.monotonic() >= deadline:
                raise WarehouseError(
                    f"Warehouse {path} stayed locked by another process for {timeout_s:.0f} s "
                    f"({exc}); stop the other writer or raise the timeout."
                ) from exc
            time.sleep(poll_s)


def store_segments(con: duckdb.DuckDBPyConnection, segments: pd.DataFrame, as_of) -> int:
    """Replace the customer -> value segment lookup used when feedback names no segment."""
    ensure_tables(con)
    frame = pd.DataFrame(
        {
            "customer_id": segments["customer_id"].astype(str).to_numpy(),
            "value_segment": segments["value_segment"].astype(str).to_numpy(),
            "as_of": pd.Timestamp(as_of),
        }
    )

    def write() -> None:
        with transaction(con):
            con.execute(f"DELETE FROM {SEGMENTS_TABLE}")
            insert_frame(con, SEGMENTS_TABLE, frame)

    _retry(write, what="store customer segments")
    return len(frame)


def lookup_segment(con: duckdb.DuckDBPyConnection, customer_id: str) -> str:
    """A customer's value segment: ``nbo_segments`` (written by ``nbo train``), else the
    latest ``customer_segments`` row (written by ``customer360 segments``)."""
    ensure_tables(con)
    row = con.execute(
        f"SELECT value_segment FROM {SEGMENTS_TABLE} WHERE customer_id = ?", [customer_id]
    ).fetchall()
    if not row:
        if table_exists(con, VALUE_SEGMENTS_TABLE):
            row = con.execute(
                f"SELECT value_segment FROM {VALUE_SEGMENTS_TABLE} WHERE customer_id = ? "
                "ORDER BY as_of DESC LIMIT 1",
                [customer_id],
            ).fetchall()
    if not row:
        raise NotFoundError(
            f"Customer {customer_id!r} has no value segment in {SEGMENTS_TABLE} or "
            f"{VALUE_SEGMENTS_TABLE}; pass segment=... or run `customer360 nbo train` (or "
            "`customer360 segments`) first."
        )
    return str(row[0][0])


def record_feedback(
    con: duckdb.DuckDBPyConnection,
    customer_id: str,
    offer_id: str,
    accepted: bool,
    ts: datetime | None = None,
    segment: str | None = None,
    *,
    feedback_id: str | None = None,
) -> str:
    """Append one acceptance or rejection to the feedback log; returns its ``feedback_id``.

    Parameters
    ----------
    con
        Warehouse connection (give each thread its own ``con.cursor()``).
    customer_id, offer_id, accepted
        Who was offered what, and the answer.
    ts
        When the customer answered (default: now, UTC).
    segment
        The customer's value segment; default: looked up in ``nbo_segments`` (written by
        ``nbo train``).
    feedback_id
        Idempotency key: recording the same id twice counts once (a client retry after a
        timeout does not double count). Default: a fresh UUID.

    Examples
    --------
    >>> import duckdb
    >>> con = duckdb.connect()
    >>> _ = record_feedback(con, "C1", "O1", True, segment="A")
    >>> BanditState.load(con).counts.loc[("A", "O1"), "successes"]
    np.int64(1)
    """
    if segment is None:
        segment = lookup_segment(con, customer_id)
    if not isinstance(accepted, (bool, np.bool_)):
        raise Customer360Error(
            f"Feedback for customer {customer_id!r}, offer {offer_id!r}: accepted must be true "
            f"or false, got {accepted!r}."
        )
    fid = feedback_id or uuid.uuid4().hex
    now = pd.Timestamp.now(tz="UTC").tz_localize(None).to_pydatetime()
    params = [fid, str(customer_id), str(offer_id), str(segment), bool(accepted), ts or now, now]
    _retry(
        lambda: _insert_creating(
            con, f"INSERT OR IGNORE INTO {FEEDBACK_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?)", params
        ),
        what=f"record feedback for customer {customer_id}",
    )
    return fid


def find_feedback(con: duckdb.DuckDBPyConnection, feedback_id: str) -> dict | None:
    """The stored event ``feedback_id`` (``customer_id``, ``offer_id``, ``accepted``) or None
    when it was never recorded (a client's retry checks it before writing again)."""
    if not table_exists(con, FEEDBACK_TABLE):
        return None
    rows = con.execute(
        f"SELECT customer_id, offer_id, accepted FROM {FEEDBACK_TABLE} WHERE feedback_id = ?",
        [feedback_id],
    ).fetchall()
    if not rows:
        return None
    customer_id, offer_id, accepted = rows[0]
    return {"customer_id": customer_id, "offer_id": offer_id, "accepted": bool(accepted)}


def _insert_creating(con: duckdb.DuckDBPyConnection, sql: str, params: list) -> None:
    """Run an insert; on the very first feedback create the tables and run it again (the hot
    path stays a single statement)."""
    try:
        con.execute(sql, params)
    except duckdb.CatalogException:
        ensure_tables(con)
        con.execute(sql, params)


def record_feedback_batch(con: duckdb.DuckDBPyConnection, feedback: pd.DataFrame) -> int:
    """Append many feedback rows (columns customer_id, offer_id, segment, accepted, ts) at once."""
    ensure_tables(con)
    missing = {"customer_id", "offer_id", "segment", "accepted"} - set(feedback.columns)
    if missing:
        raise Customer360Error(f"Feedback frame lacks column(s) {sorted(missing)}.")
    now = pd.Timestamp.now(tz="UTC").tz_localize(None)
    frame = pd.DataFrame(
        {
            "feedback_id": feedback["feedback_id"].astype(str).to_numpy()
            if "feedback_id" in feedback
            else [uuid.uuid4().hex for _ in range(len(feedback))],
            "customer_id": feedback["customer_id"].astype(str).to_numpy(),
            "offer_id": feedback["offer_id"].astype(str).to_numpy(),
            "segment": feedback["segment"].astype(str).to_numpy(),
            "accepted": feedback["accepted"].astype(bool).to_numpy(),
            "ts": pd.to_datetime(feedback["ts"]).to_numpy() if "ts" in feedback else now,
            "recorded_at": now,
        }
    )

    def write() -> None:
        with registered(con, frame) as view:
            con.execute(f"INSERT OR IGNORE INTO {FEEDBACK_TABLE} SELECT * FROM {view}")

    _retry(write, what="record a feedback batch")
    return len(frame)


@dataclass
class BanditState:
    """Beta-Bernoulli counts per (segment, offer_id); posterior = prior + counts.

    ``counts`` is indexed by ``(segment, offer_id)`` with integer columns ``successes`` and
    ``failures``. Arms never seen have zero counts.
    """

    counts: pd.DataFrame

    @classmethod
    def empty(cls) -> BanditState:
        index = pd.MultiIndex.from_arrays([[], []], names=["segment", "offer_id"])
        return cls(pd.DataFrame({"successes": [], "failures": []}, index=index).astype("int64"))

    @classmethod
    def load(cls, con: duckdb.DuckDBPyConnection) -> BanditState:
        """Aggregate the durable feedback log into the current state (empty when no feedback
        was ever recorded). Reads only, so a read-only connection works."""
        if not table_exists(con, FEEDBACK_TABLE):
            return cls.empty()
        frame = con.execute(
            f"SELECT segment, offer_id, "
            f"sum(CASE WHEN accepted THEN 1 ELSE 0 END)::BIGINT AS successes, "
            f"sum(CASE WHEN accepted THEN 0 ELSE 1 END)::BIGINT AS failures "
            f"FROM {FEEDBACK_TABLE} GROUP BY segment, offer_id"
        ).df()
        if frame.empty:
            return cls.empty()
        return cls(frame.set_index(["segment", "offer_id"]).sort_index())

    @property
    def total(self) -> int:
        return int(self.counts["successes"].sum() + self.counts["failures"].sum())

    def lookup(
        self, segments: Sequence[str] | np.ndarray, offer_ids: Sequence[str] | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Successes and failures for each (segment, offer) pair, vectorised (0 if unseen)."""
        keys = pd.MultiIndex.from_arrays(
            [np.asarray(segments, dtype=object), np.asarray(offer_ids, dtype=object)]
        )
        aligned = self.counts.reindex(keys)
        return (
            aligned["successes"].fillna(0).to_numpy(dtype=float),
            aligned["failures"].fillna(0).to_numpy(dtype=float),
        )

    def updated(self, feedback: pd.DataFrame) -> BanditState:
        """A new state with ``feedback`` (segment, offer_id, accepted) added; in memory."""
        acc = feedback["accepted"].astype(bool)
        delta = (
            pd.DataFrame(
                {
                    "segment": feedback["segment"].astype(str).to_numpy(),
                    "offer_id": feedback["offer_id"].astype(str).to_numpy(),
                    "successes": acc.astype("int64").to_numpy(),
                    "failures": (~acc).astype("int64").to_numpy(),
                }
            )
            .groupby(["segment", "offer_id"])[["successes", "failures"]]
            .sum()
        )
        merged = self.counts.add(delta, fill_value=0).astype("int64")
        return BanditState(merged)


def thompson_draw(
    successes: np.ndarray,
    failures: np.ndarray,
    prior_mean: np.ndarray | float,
    prior_strength: float,
    *,
    exploration: float,
    rng: np.random.Generator | None = None,
    quantiles: np.ndarray | None = None,
) -> np.ndarray:
    """Acceptance probabilities for ranking: Thompson draws from each arm's Beta posterior.

    Posterior ``Beta(s0 m + successes, s0 (1 - m) + failures)`` with prior mean ``m`` and
    strength ``s0`` (pseudo-observations). ``exploration`` scales the draw's spread around the
    posterior mean: 0 = greedy on the mean, 1 = plain Thompson sampling, >1 = explore more.
    The draw is the posterior's quantile at ``quantiles`` (in (0, 1), one per arm: a
    reproducible decision, see :func:`decision_quantiles`) or, without them, a fresh draw
    from ``rng``.
    """
    if exploration < 0:
        raise Customer360Error(f"exploration must be >= 0, got {exploration}.")
    prior_mean = np.clip(np.asarray(prior_mean, dtype=float), 1e-4, 1 - 1e-4)
    a = prior_strength * prior_mean + successes
    b = prior_strength * (1 - prior_mean) + failures
    mean = a / (a + b)
    if exploration == 0:
        return np.broadcast_to(mean, np.broadcast(a, b).shape).copy()
    if quantiles is not None:
        from scipy.special import betaincinv

        draw = betaincinv(a, b, np.asarray(quantiles, dtype=float))
    elif rng is not None:
        draw = rng.beta(a, b)
    else:
        raise Customer360Error("thompson_draw needs rng= or quantiles= when exploration > 0.")
    return np.clip(mean + exploration * (draw - mean), 0.0, 1.0)


def decision_period_key(decided_at: Any | None, period: str) -> str:
    """The decision period holding ``decided_at`` (default: now, UTC): ``2026-12-01`` (day),
    ``2026-W49`` (ISO week) or ``2026-12`` (month).

    Examples
    --------
    >>> decision_period_key("2026-12-01 23:00", "week")
    '2026-W49'
    """
    ts = pd.Timestamp.now(tz="UTC") if decided_at is None else pd.Timestamp(decided_at)
    if period == "day":
        return ts.strftime("%Y-%m-%d")
    if period == "week":
        year, week, _ = ts.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "month":
        return ts.strftime("%Y-%m")
    raise Customer360Error(
        f"bandit.decision_period must be day, week or month, got {period!r} (configs/nbo.yaml)."
    )


def decision_quantiles(
    customer_ids: np.ndarray,
    offer_ids: np.ndarray,
    decided_at: Any | None = None,
    period: str = "week",
) -> np.ndarray:
    """One fixed point in (0, 1) per (customer, offer) pair and decision period, vectorised.

    A keyed hash (SipHash, keyed by the period) of the customer and offer ids: the same pair
    gets the same point on every call, endpoint, process and batch chunk within the period,
    and an unrelated one in the next period. Used as the quantile of the Thompson draw, it
    makes one exploration decision per customer per period.

    Examples
    --------
    >>> u = decision_quantiles(np.array(["C1", "C1"]), np.array(["O1", "O2"]), "2026-12-01")
    >>> bool(((u > 0) & (u < 1)).all() and u[0] != u[1])
    True
    """
    key = decision_period_key(decided_at, period).ljust(16, "_")[:16]
    h_c = pd.util.hash_array(np.asarray(customer_ids, dtype=object), hash_key=key)
    h_o = pd.util.hash_array(np.asarray(offer_ids, dtype=object), hash_key=key)
    # splitmix64 finaliser over the pair: uniform bits that depend on both ids.
    with np.errstate(over="ignore"):
        x = h_c ^ (h_o * np.uint64(0x9E3779B97F4A7C15))
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return ((x >> np.uint64(11)).astype(float) + 0.5) / float(2**53)


def simulate_thompson(
    p_true: np.ndarray,
    margin: np.ndarray,
    segments: np.ndarray,
    allowed: np.ndarray | None = None,
    *,
    rounds: int = 50,
    batch_size: int = 200,
    prior_mean: float = 0.1,
    prior_strength: float = 2.0,
    exploration: float = 1.0,
    seed: int = 0,
    on_round=None,
) -> pd.DataFrame:
    """Run Beta-Bernoulli Thompson sampling per segment x offer against known acceptance.

    Each round draws ``batch_size`` customers, offers each the allowed offer with the highest
    sampled ``p x margin``, draws acceptance from ``p_true`` and updates the counts. Regret is
    measured against the customer-level oracle ``max_a p_true x margin`` among allowed offers.

    Parameters
    ----------
    p_true
        ``(n_customers, n_offers)`` true acceptance probabilities.
    margin
        ``(n_offers,)`` margin of each offer (reward = accepted x margin).
    segments
        ``(n_customers,)`` arm group of each customer (e.g. value segment A-D).
    allowed
        ``(n_customers, n_offers)`` eligibility mask (default: everything allowed).
    on_round
        Optional callback ``on_round(round_index, feedback_frame)`` (e.g. to persist feedback).

    Returns
    -------
    DataFrame
        One row per round: ``round``, ``regret`` (mean per decision), ``cumulative_regret``,
        ``expected_reward``, ``oracle_reward``, ``acceptance_rate``.
    """
    rng = np.random.default_rng(seed)
    p_true = np.asarray(p_true, dtype=float)
    margin = np.asarray(margin, dtype=float)
    n_c, n_o = p_true.shape
    allowed = np.ones_like(p_true, dtype=bool) if allowed is None else np.asarray(allowed, bool)
    if (~allowed.any(axis=1)).any():
        raise Customer360Error("Every simulated customer needs at least one allowed offer.")
    seg_levels, seg_code = np.unique(np.asarray(segments).astype(str), return_inverse=True)
    succ = np.zeros((len(seg_levels), n_o))
    fail = np.zeros((len(seg_levels), n_o))
    value_true = np.where(allowed, p_true * margin, -np.inf)
    oracle = value_true.max(axis=1)
    rows = []
    cumulative = 0.0
    for r in range(rounds):
        batch = rng.integers(0, n_c, batch_size)
        g = seg_code[batch]
        draws = thompson_draw(
            succ[g], fail[g], prior_mean, prior_strength, exploration=exploration, rng=rng
        )
        choice = np.argmax(np.where(allowed[batch], draws * margin, -np.inf), axis=1)
        p_chosen = p_true[batch, choice]
        accepted = rng.random(batch_size) < p_chosen
        np.add.at(succ, (g, choice), accepted)
        np.add.at(fail, (g, choice), ~accepted)
        expected = p_chosen * margin[choice]
        regret = float(np.mean(oracle[batch] - expected))
        cumulative += regret * batch_size
        rows.append(
            {
                "round": r,
                "regret": regret,
                "cumulative_regret": cumulative,
                "expected_reward": float(np.mean(expected)),
                "oracle_reward": float(np.mean(oracle[batch])),
                "acceptance_rate": float(np.mean(accepted)),
            }
        )
        if on_round is not None:
            on_round(
                r,
                pd.DataFrame(
                    {"customer_idx": batch, "segment": seg_levels[g], "offer_idx": choice,
                     "accepted": accepted}
                ),
            )
    return pd.DataFrame(rows)
