"""Point-in-time assembly: feature frames, labels, training sets and their outputs.

One function builds features for training (historical as-of dates) and for scoring (as-of
today): :func:`build_features`. For each as-of date T it runs ONE query in the engine: the
customers signed up before T (``base``), LEFT JOINed with every family's per-customer CTEs,
each reading only rows strictly before T. Defaults replace nulls as declared.

Labels (:func:`build_labels`) read only rows in ``[T, T + H)``:

``label__churn__{H}d``
    1 when the customer makes no purchase in ``[T, T+H)`` or their contract ends in it, else 0;
    null (NaN) for customers without any purchase before T.
``label__margin__{H}d``
    sum of ``margin`` of every transaction in ``[T, T+H)``, returns included (0 if none).
``label__purchases__{H}d``
    orders (non-return transactions) in ``[T, T+H)``.
``label__offer_accepted__{H}d``
    1 when an offer made in ``[T, T+H)`` was accepted, 0 when offers were made but none
    accepted, null when no offer was made.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from customer360.data.warehouse import (
    get_meta,
    registered,
    require_tables,
    set_meta,
    table_exists,
    transaction,
)
from customer360.features.engine import Engine, resolve_engine
from customer360.features.registry import FAMILY_SQL, FEATURE_SET_VERSION, FEATURES
from customer360.features.spec import FeatureError, FeatureSpec, as_of_date, time_literals

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]

SNAPSHOT_TABLE = "feature_snapshots"
TRAINING_TABLE = "training_set"
ID_COLUMNS = ("customer_id", "as_of")

_BASE_SQL = "SELECT * FROM customers WHERE signup_date < {d}"


def _families(families: Iterable[str] | None) -> list[str]:
    if families is None:
        return list(FAMILY_SQL)
    chosen = list(families)
    unknown = [f for f in chosen if f not in FAMILY_SQL]
    if unknown:
        raise FeatureError(
            f"Unknown feature families {unknown}; use some of {', '.join(FAMILY_SQL)}."
        )
    return [f for f in FAMILY_SQL if f in chosen]


def feature_specs(families: Iterable[str] | None = None) -> list[FeatureSpec]:
    """The declarations of the chosen families (all by default), in registry order."""
    chosen = set(_families(families))
    return [f for f in FEATURES if f.family in chosen]


def features_sql(as_of: dt.date | str, families: Iterable[str] | None = None) -> str:
    """The one DuckDB-dialect query computing the features as of ``as_of``.

    Examples
    --------
    >>> "transactions WHERE ts < TIMESTAMP '2026-01-01 00:00:00'" in features_sql("2026-01-01")
    True
    """
    chosen = _families(families)
    ctes = [("base", _BASE_SQL)]
    joins: list[str] = []
    for family in chosen:
        ctes += FAMILY_SQL[family].ctes
        joins += FAMILY_SQL[family].joins
    columns = ["base.customer_id"] + [f.select_sql() for f in feature_specs(chosen)]
    join_sql = "\n".join(
        f"LEFT JOIN {name} ON {name}.customer_id = base.customer_id" for name in joins
    )
    sql = (
        "WITH "
        + ",\n".join(f"{name} AS (\n{body}\n)" for name, body in ctes)
        + "\nSELECT "
        + ",\n  ".join(columns)
        + f"\nFROM base\n{join_sql}\nORDER BY base.customer_id"
    )
    return sql.format_map(time_literals(as_of_date(as_of)))


def _normalise(frame: pd.DataFrame, specs: Sequence[FeatureSpec], as_of: dt.date) -> pd.DataFrame:
    """Same dtypes whatever the engine: int64, float64, str; ``as_of`` as a timestamp."""
    out = frame.reset_index(drop=True)
    casts = {}
    for spec in specs:
        casts[spec.name] = "str" if spec.dtype == "category" else spec.dtype
    out = out.astype({"customer_id": "str", **casts})
    stamp = pd.Series(pd.Timestamp(as_of), index=out.index, dtype="datetime64[us]", name="as_of")
    return pd.concat([out["customer_id"], stamp, out[[s.name for s in specs]]], axis=1)


def _as_of_list(as_of: Any) -> list[dt.date]:
    values = (
        [as_of]
        if isinstance(as_of, (str, dt.date)) or not isinstance(as_of, Iterable)
        else list(as_of)
    )
    dates = [as_of_date(v) for v in values]
    if not dates:
        raise FeatureError("No as-of date given; pass at least one date (YYYY-MM-DD).")
    if len(set(dates)) != len(dates):
        raise FeatureError(f"As-of dates repeat: {[d.isoformat() for d in dates]}.")
    return dates


def build_features(
    con: duckdb.DuckDBPyConnection | None,
    as_of: dt.date | str | Iterable[dt.date | str],
    *,
    engine: str | Engine = "duckdb",
    families: Iterable[str] | None = None,
    on_progress: ProgressCallback | None = None,
) -> pd.DataFrame:
    """Features of every customer signed up before each as-of date.

    Parameters
    ----------
    con
        The DuckDB warehouse (may be ``None`` when ``engine`` is an engine object).
    as_of
        One date or several (rolling snapshots). Only rows strictly before midnight of each
        date are read; for scoring pass today's date.
    engine
        ``"duckdb"`` (default), ``"spark"`` (local Spark fed from the warehouse) or an engine
        object such as :class:`~customer360.features.engine.SparkEngine`.
    families
        Restrict to some families (``"txn"``, ``"beh"``...); default all.
    on_progress
        Called with ``(done, total)`` after each as-of date.

    Returns
    -------
    pandas.DataFrame
        ``customer_id``, ``as_of`` then the registry's features in order; one row per customer
        x as-of date, sorted by as-of date then customer id.

    Examples
    --------
    >>> frame = build_features(con, "2026-06-30")                # doctest: +SKIP
    >>> frame.loc[0, "txn__recency_days__all"]                   # doctest: +SKIP
    """
    dates = _as_of_list(as_of)
    chosen = _families(families)
    specs = feature_specs(chosen)
    if con is not None and isinstance(engine, str):
        require_tables(con, "customers", *{t for f in chosen for t in FAMILY_SQL[f].tables})
    runner = resolve_engine(con, engine)

    def one_date(day: dt.date) -> pd.DataFrame:
        raw = runner.query(features_sql(day, chosen))
        log.info("features as of %s: %d customers", day, len(raw))
        return _normalise(raw, specs, day)

    return _per_date(
        dates, one_date, runner, owns_runner=isinstance(engine, str), on_progress=on_progress
    )


def _per_date(dates, one_date, runner, *, owns_runner: bool, on_progress) -> pd.DataFrame:
    """Stack ``one_date(day)`` over the as-of dates, reporting progress after each; closes the
    engine when this call opened it (``owns_runner``)."""
    frames = []
    try:
        for i, day in enumerate(dates, start=1):
            frames.append(one_date(day))
            if on_progress is not None:
                on_progress(i, len(dates))
    finally:
        if owns_runner and hasattr(runner, "close"):
            runner.close()
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def label_names(horizon_days: int) -> list[str]:
    """The label columns for a horizon of ``horizon_days`` days."""
    return [
        f"label__{what}__{horizon_days}d"
        for what in ("churn", "margin", "purchases", "offer_accepted")
    ]


def labels_sql(as_of: dt.date | str, horizon_days: int) -> str:
    """The DuckDB-dialect query of the labels for one as-of date (rows in ``[T, T+H)`` only)."""
    churn, margin, purchases, accepted = label_names(horizon_days)
    sql = f"""
WITH base AS (SELECT customer_id, contract_end_date FROM customers WHERE signup_date < {{d}}),
past AS (
  SELECT customer_id, COUNT(*) AS orders FROM transactions
  WHERE ts < {{t}} AND NOT is_return GROUP BY customer_id
),
future AS (
  SELECT customer_id, SUM(CASE WHEN NOT is_return THEN 1 ELSE 0 END) AS purchases,
         SUM(margin) AS margin
  FROM transactions WHERE ts >= {{t}} AND ts < {{h}} GROUP BY customer_id
),
offers_made AS (
  SELECT customer_id, MAX(CASE WHEN accepted THEN 1 ELSE 0 END) AS accepted
  FROM offer_events WHERE ts >= {{t}} AND ts < {{h}} GROUP BY customer_id
)
SELECT base.customer_id,
  CAST(CASE WHEN past.orders IS NULL THEN NULL
            WHEN COALESCE(future.purchases, 0) = 0 THEN 1
            WHEN base.contract_end_date >= {{d}} AND base.contract_end_date < {{dh}} THEN 1
            ELSE 0 END AS DOUBLE) AS {churn},
  CAST(COALESCE(future.margin, 0.0) AS DOUBLE) AS {margin},
  CAST(COALESCE(future.purchases, 0) AS BIGINT) AS {purchases},
  CAST(offers_made.accepted AS DOUBLE) AS {accepted}
FROM base
LEFT JOIN past ON past.customer_id = base.customer_id
LEFT JOIN future ON future.customer_id = base.customer_id
LEFT JOIN offers_made ON offers_made.customer_id = base.customer_id
ORDER BY base.customer_id"""
    return sql.format_map(time_literals(as_of_date(as_of), horizon_days))


def data_end(con: duckdb.DuckDBPyConnection) -> dt.date | None:
    """First date without data: warehouse meta ``today`` if set, else the day after the last
    transaction (``None`` for an empty warehouse)."""
    today = get_meta(con, "today")
    if today:
        return dt.date.fromisoformat(today[:10])
    last = con.execute("SELECT max(ts) FROM transactions").fetchone()[0]
    return None if last is None else last.date() + dt.timedelta(days=1)


def build_labels(
    con: duckdb.DuckDBPyConnection | None,
    as_of: dt.date | str,
    horizon_days: int,
    *,
    engine: str | Engine = "duckdb",
) -> pd.DataFrame:
    """Labels of every customer signed up before ``as_of`` from rows in ``[T, T+H)``."""
    runner = resolve_engine(con, engine)
    try:
        raw = runner.query(labels_sql(as_of, horizon_days))
    finally:
        if isinstance(engine, str) and hasattr(runner, "close"):
            runner.close()
    churn, margin, purchases, accepted = label_names(horizon_days)
    return raw.astype(
        {
            "customer_id": "str",
            churn: "float64",
            margin: "float64",
            purchases: "int64",
            accepted: "float64",
        }
    ).reset_index(drop=True)


def build_training_set(
    con: duckdb.DuckDBPyConnection,
    as_of_dates: Iterable[dt.date | str] | dt.date | str,
    horizon_days: int,
    *,
    engine: str | Engine = "duckdb",
    families: Iterable[str] | None = None,
    on_progress: ProgressCallback | None = None,
) -> pd.DataFrame:
    """Features as of each date plus labels from the ``horizon_days`` after it.

    Features read rows strictly before T, labels only rows in ``[T, T+H)``; an as-of date whose
    horizon runs past the end of the data is an error (its labels would be truncated).

    Returns
    -------
    pandas.DataFrame
        ``customer_id``, ``as_of``, the features, then :func:`label_names` columns.

    Examples
    --------
    >>> ts = build_training_set(con, ["2025-06-30", "2025-09-30"], 90)   # doctest: +SKIP
    >>> ts["label__churn__90d"].mean()                                  # doctest: +SKIP
    """
    if int(horizon_days) <= 0:
        raise FeatureError(f"Horizon must be a positive number of days, got {horizon_days}.")
    dates = _as_of_list(as_of_dates)
    require_tables(con, "customers", "transactions", "offer_events")
    end = data_end(con)
    late = [d for d in dates if end is None or d + dt.timedelta(days=horizon_days) > end]
    if late:
        raise FeatureError(
            f"Labels for as-of {', '.join(d.isoformat() for d in late)} with a {horizon_days}-day "
            f"horizon need data until as-of + {horizon_days} days, but the warehouse data ends "
            f"before {end}. Pick as-of dates at least {horizon_days} days before {end}."
        )
    runner = resolve_engine(con, engine)

    def one_date(day: dt.date) -> pd.DataFrame:
        feats = build_features(con, day, engine=runner, families=families)
        labels = build_labels(con, day, horizon_days, engine=runner)
        return feats.merge(labels, on="customer_id", how="left", validate="one_to_one")

    return _per_date(
        dates, one_date, runner, owns_runner=isinstance(engine, str), on_progress=on_progress
    )


def write_table(con: duckdb.DuckDBPyConnection, frame: pd.DataFrame, table: str) -> int:
    """Write ``frame`` into DuckDB ``table``, replacing the rows of its as-of dates.

    When the table was built by another feature-set version (different columns) it is rebuilt
    and a warning is logged: snapshots are derived data, rebuilt by ``features build``.
    Returns the number of rows written.
    """
    with registered(con, frame) as new, transaction(con):
        if table_exists(con, table):
            existing = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
            if existing != list(frame.columns):
                log.warning(
                    "table %s holds another feature set (version %s, now %s): rebuilding it",
                    table,
                    get_meta(con, f"{table}_feature_set_version"),
                    FEATURE_SET_VERSION,
                )
                con.execute(f"DROP TABLE {table}")
        con.execute(f"CREATE TABLE IF NOT EXISTS {table} AS SELECT * FROM {new} LIMIT 0")
        con.execute(f"DELETE FROM {table} WHERE as_of IN (SELECT DISTINCT as_of FROM {new})")
        con.execute(f"INSERT INTO {table} SELECT * FROM {new}")
        set_meta(con, f"{table}_feature_set_version", FEATURE_SET_VERSION)
    return len(frame)


def manifest(frame: pd.DataFrame, **extra: Any) -> dict[str, Any]:
    """What a feature/training-set output holds: as-of dates, row counts, feature-set version."""
    counts = frame.groupby("as_of").size()
    return {
        "feature_set_version": FEATURE_SET_VERSION,
        "as_of_dates": [pd.Timestamp(d).date().isoformat() for d in counts.index],
        "rows_per_as_of": {pd.Timestamp(d).date().isoformat(): int(n) for d, n in counts.items()},
        "rows": len(frame),
        "n_features": sum(
            1 for c in frame.columns if c not in ID_COLUMNS and not c.startswith("label__")
        ),
        "labels": [c for c in frame.columns if c.startswith("label__")],
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **extra,
    }


def write_outputs(
    frame: pd.DataFrame,
    *,
    con: duckdb.DuckDBPyConnection | None = None,
    table: str | None = None,
    parquet: str | Path | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Write a feature or training frame to Parquet (+ ``<file>.manifest.json``) and/or a
    DuckDB table; returns the manifest."""
    info = manifest(frame, table=table, parquet=str(parquet) if parquet else None, **extra)
    if table is not None:
        if con is None:
            raise FeatureError(f"Writing table {table!r} needs a warehouse connection.")
        write_table(con, frame, table)
    if parquet is not None:
        path = Path(parquet)
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path, index=False)
        manifest_path(path).write_text(json.dumps(info, indent=2) + "\n")
    return info


def manifest_path(parquet: str | Path) -> Path:
    """``data/x.parquet`` -> ``data/x.manifest.json``."""
    path = Path(parquet)
    return path.with_name(path.stem + ".manifest.json")


def build_and_write(
    con: duckdb.DuckDBPyConnection,
    as_of_dates: Iterable[dt.date | str] | dt.date | str,
    *,
    horizon_days: int | None = None,
    output: str | Path | None = None,
    engine: str | Engine = "duckdb",
    on_progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """What ``customer360 features build`` does: build, then write every output.

    The features of each as-of date replace that date's rows in the DuckDB table
    ``feature_snapshots`` (serving reads the latest). With ``horizon_days`` the labels are
    built too and the features + labels replace that date's rows in ``training_set``.
    ``output`` (optional) gets the frame as Parquet with a ``.manifest.json`` next to it.
    Returns the manifest.
    """
    if horizon_days is None:
        frame = build_features(con, as_of_dates, engine=engine, on_progress=on_progress)
        return write_outputs(frame, con=con, table=SNAPSHOT_TABLE, parquet=output)
    frame = build_training_set(
        con, as_of_dates, horizon_days, engine=engine, on_progress=on_progress
    )
    features = frame[[c for c in frame.columns if not c.startswith("label__")]]
    write_table(con, features, SNAPSHOT_TABLE)
    return write_outputs(
        frame, con=con, table=TRAINING_TABLE, parquet=output, horizon_days=horizon_days
    )
