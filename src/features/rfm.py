"""Recency / frequency / monetary summaries for the probabilistic CLV models, in DuckDB SQL.

The output matches ``lifetimes.utils.summary_data_from_transaction_data`` (and, with a
holdout, ``calibration_and_holdout_data``) column for column, but runs as one SQL query, so it
scales to warehouse-sized transaction logs where lifetimes' pandas code is slow.

Definitions (``time_unit="D"``; with ``"W"`` every duration is the day count divided by 7 as a
float, i.e. lifetimes' ``freq="D", freq_multiplier=7``):

* purchases are collapsed to one per customer-day; a day's amount is the sum of its rows;
* ``frequency``: number of purchase days after the first one (repeat purchases);
* ``recency``: days between the first and the last purchase day;
* ``T``: days between the first purchase day and ``calibration_end``;
* ``monetary_value``: mean of the repeat purchase days' totals, 0 when ``frequency`` is 0;
* ``frequency_holdout``: purchase days in ``(calibration_end, observation_end]``;
* ``monetary_value_holdout``: mean amount of the holdout *rows* (lifetimes averages raw rows
  there, not day totals), 0 without holdout purchases;
* ``duration_holdout``: days between ``calibration_end`` and ``observation_end``.

Boundaries are whole days: every row dated on ``calibration_end`` (any time of day) belongs to
the calibration period. lifetimes' ``calibration_and_holdout_data`` instead compares raw
timestamps with midnight, which moves intraday rows of the last calibration day into the
holdout; for date-only data (such as CDNOW) both agree exactly.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from customer360.errors import ContractError

TimeUnit = Literal["D", "W"]
_UNIT_DAYS = {"D": 1.0, "W": 7.0}
_FILE_SUFFIXES = {".csv", ".tsv", ".txt", ".parquet", ".pq", ".gz"}

RFM_COLUMNS = ("frequency", "recency", "T", "monetary_value")
HOLDOUT_COLUMNS = ("frequency_holdout", "monetary_value_holdout", "duration_holdout")


def rfm_summary(
    con: duckdb.DuckDBPyConnection,
    source: str | Path | pd.DataFrame,
    *,
    customer_col: str,
    date_col: str,
    amount_col: str | None,
    calibration_end: str | dt.date | pd.Timestamp,
    observation_end: str | dt.date | pd.Timestamp | None = None,
    time_unit: TimeUnit = "D",
) -> pd.DataFrame:
    """Summarise a transaction log into lifetimes' frequency / recency / T / monetary_value.

    Parameters
    ----------
    con
        DuckDB connection that does the work (and holds ``source`` when it is a table name).
    source
        A table or view name in ``con``, a CSV/Parquet file path, or a pandas DataFrame.
    customer_col, date_col, amount_col
        Column names in ``source``. ``amount_col=None`` skips the monetary columns. Dates may be
        DATE/TIMESTAMP, ISO strings, or ``YYYYMMDD`` integers.
    calibration_end
        Last day of the calibration period (inclusive). Rows after it are ignored for the
        calibration columns.
    observation_end
        Last day of the holdout period (inclusive); adds the holdout columns.
    time_unit
        ``"D"`` (days) or ``"W"`` (weeks = days / 7).

    Returns
    -------
    pandas.DataFrame
        One row per customer with a purchase on or before ``calibration_end``, sorted by
        ``customer_id``: ``customer_id, frequency, recency, T[, monetary_value][,
        frequency_holdout[, monetary_value_holdout], duration_holdout]`` (floats).

    Raises
    ------
    ContractError
        Missing columns, null keys or amounts, unparseable dates, a bad time unit, or
        ``observation_end`` not after ``calibration_end``.

    Examples
    --------
    >>> import duckdb, pandas as pd
    >>> tx = pd.DataFrame({"cid": ["a", "a", "a", "b"],
    ...                    "day": ["2024-01-01", "2024-01-01", "2024-01-08", "2024-01-05"],
    ...                    "amt": [5.0, 5.0, 4.0, 3.0]})
    >>> rfm_summary(duckdb.connect(), tx, customer_col="cid", date_col="day", amount_col="amt",
    ...             calibration_end="2024-01-15", time_unit="W")
      customer_id  frequency  recency         T  monetary_value
    0           a        1.0      1.0  2.000000             4.0
    1           b        0.0      0.0  1.428571             0.0
    """
    if time_unit not in _UNIT_DAYS:
        raise ContractError(f"time_unit must be 'D' (days) or 'W' (weeks), got {time_unit!r}.")
    cal_end = _as_day(calibration_end, "calibration_end")
    obs_end = None if observation_end is None else _as_day(observation_end, "observation_end")
    if obs_end is not None and obs_end <= cal_end:
        raise ContractError(
            f"observation_end ({obs_end}) must be after calibration_end ({cal_end}); "
            "the holdout period is the days after calibration_end up to observation_end."
        )
    with _SourceView(con, source) as (view, where):
        columns = _describe(con, view)
        wanted = [customer_col, date_col] + ([amount_col] if amount_col else [])
        missing = [c for c in wanted if c not in columns]
        if missing:
            raise ContractError(
                f"{where} has no column(s) {', '.join(map(repr, missing))}; its columns are: "
                f"{', '.join(columns)}. Pass the right --customer-col/--date-col/--amount-col."
            )
        day, parsed = _day_expression(where, date_col, columns[date_col])
        log = _fetch(con, view, where, customer_col, day, amount_col, cal_end)
        _check(con, view, where, log, date_col, parsed, customer_col, amount_col)
    holdout_days = None if obs_end is None else (obs_end - cal_end).days
    return _summarise(log, holdout_days, _UNIT_DAYS[time_unit])


def _as_day(value: object, name: str) -> dt.date:
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ContractError(f"{name}={value!r} is not a date; use YYYY-MM-DD.") from exc
    if pd.isna(stamp):
        raise ContractError(f"{name} is missing; use YYYY-MM-DD.")
    return stamp.date()


class _SourceView:
    """Context manager exposing ``source`` as a DuckDB view name plus a human description."""

    def __init__(self, con: duckdb.DuckDBPyConnection, source: str | Path | pd.DataFrame):
        self.con = con
        self.source = source
        self.name = f"_rfm_src_{uuid.uuid4().hex[:12]}"
        self.kind = ""

    def __enter__(self) -> tuple[str, str]:
        src = self.source
        if isinstance(src, pd.DataFrame):
            self.con.register(self.name, src)
            self.kind = "frame"
            return self.name, "the transactions DataFrame"
        path = Path(src)
        if path.suffix.lower() in _FILE_SUFFIXES or path.exists():
            if not path.is_file():
                raise ContractError(f"Transactions file {path} does not exist.")
            reader = "read_parquet" if path.suffix.lower() in {".parquet", ".pq"} else "read_csv"
            try:
                self.con.execute(
                    f"CREATE TEMP VIEW {self.name} AS SELECT * FROM {reader}(?)", [str(path)]
                )
            except duckdb.Error:
                # Views cannot take prepared parameters in every DuckDB build; quote instead.
                quoted = str(path).replace("'", "''")
                try:
                    self.con.execute(
                        f"CREATE TEMP VIEW {self.name} AS SELECT * FROM {reader}('{quoted}')"
                    )
                except duckdb.Error as exc:
                    raise ContractError(f"Cannot read transactions file {path}: {exc}") from exc
            self.kind = "view"
            return self.name, f"file {path}"
        tables = {
            r[0]
            for r in self.con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        }
        if str(src) not in tables:
            raise ContractError(
                f"{src!r} is neither a table in the warehouse nor an existing file; tables: "
                f"{', '.join(sorted(tables)) or '(none)'}."
            )
        return _quote(str(src)), f"table {src}"

    def __exit__(self, *exc: object) -> None:
        if self.kind == "frame":
            self.con.unregister(self.name)
        elif self.kind == "view":
            self.con.execute(f"DROP VIEW IF EXISTS {self.name}")


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _describe(con: duckdb.DuckDBPyConnection, view: str) -> dict[str, str]:
    rows = con.execute(f"DESCRIBE SELECT * FROM {view}").fetchall()
    return {r[0]: str(r[1]).upper() for r in rows}


def _day_expression(where: str, date_col: str, dtype: str) -> tuple[str, str]:
    """SQL turning ``date_col`` into a DATE, and the parse expression that is NULL on failure."""
    col = _quote(date_col)
    if dtype == "DATE" or dtype.startswith("TIMESTAMP"):
        expr = f"CAST({col} AS DATE)"
        return expr, expr
    if dtype in {"INTEGER", "BIGINT", "UINTEGER", "UBIGINT", "HUGEINT"}:
        # YYYYMMDD integers (CDNOW style); anything else is not a date we can trust.
        parsed = f"try_strptime(CAST({col} AS VARCHAR), '%Y%m%d')"
    elif dtype == "VARCHAR":
        parsed = f"COALESCE(try_cast({col} AS TIMESTAMP), try_strptime({col}, '%Y%m%d'))"
    else:
        raise ContractError(
            f"Column {date_col!r} in {where} has type {dtype}, which is not a date; give a "
            "DATE/TIMESTAMP column, ISO strings (YYYY-MM-DD[ HH:MM:SS]) or YYYYMMDD integers."
        )
    return f"CAST({parsed} AS DATE)", parsed


@dataclass(frozen=True)
class _Log:
    """The transactions as Arrow columns: customer id, day, amount (None without amounts).

    ``day`` counts days after ``calibration_end`` (0 = that day, negative = before it).
    """

    customer: pa.ChunkedArray
    day: pa.ChunkedArray
    amount: pa.ChunkedArray | None


def _fetch(
    con: duckdb.DuckDBPyConnection,
    view: str,
    where: str,
    customer_col: str,
    day: str,
    amount_col: str | None,
    cal_end: dt.date,
) -> _Log:
    """One scan of ``view``: DuckDB parses the dates and casts the amounts, Arrow carries them.

    Every row comes back (also those after the periods) so that the null checks cover the
    whole source, as the error messages promise.
    """
    amount = f", CAST({_quote(amount_col)} AS DOUBLE) AS amount" if amount_col else ""
    sql = (
        f"SELECT {_quote(customer_col)} AS customer, {day} - DATE '{cal_end.isoformat()}' AS day"
        f"{amount} FROM {view}"
    )
    try:
        table = con.sql(sql).to_arrow_table()
    except duckdb.ConversionException as exc:
        raise ContractError(
            f"Column {amount_col!r} of {where} must be numeric "
            f"({str(exc).splitlines()[0]}). Fix or remove the rows whose amount is not a "
            "number."
        ) from exc
    return _Log(
        table.column("customer"),
        table.column("day"),
        table.column("amount") if amount_col else None,
    )


def _check(
    con: duckdb.DuckDBPyConnection,
    view: str,
    where: str,
    log: _Log,
    date_col: str,
    parsed: str,
    customer_col: str,
    amount_col: str | None,
) -> None:
    """Prove every date parsed and no customer id or amount is null.

    The counts are Arrow null counts of the fetched columns (free); an example of a bad date
    is looked up in ``view`` only when there is one.
    """
    n_bad = log.day.null_count
    if n_bad:
        col, cust = _quote(date_col), _quote(customer_col)
        value, customer = con.execute(
            f"SELECT CAST({col} AS VARCHAR), CAST({cust} AS VARCHAR) FROM {view} "
            f"WHERE {parsed} IS NULL LIMIT 1"
        ).fetchall()[0]
        raise ContractError(
            f"{n_bad} row(s) of {where} have a missing or unparseable date in column "
            f"{date_col!r} (e.g. value {value!r} for customer {customer!r}); use ISO dates "
            "YYYY-MM-DD or YYYYMMDD and fix or remove those rows."
        )
    nulls = {customer_col: log.customer.null_count}
    if amount_col and log.amount is not None:
        nulls[amount_col] = log.amount.null_count
    nulls = {c: n for c, n in nulls.items() if n}
    if nulls:
        detail = ", ".join(f"{c!r}: {n}" for c, n in nulls.items())
        raise ContractError(
            f"{where} has null values ({detail} rows); every transaction needs a customer and "
            "an amount. Fill or remove those rows."
        )


def _encode(customer: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """Dense integer codes of the customer ids (one hash pass) and the ids they stand for."""
    encoded = pc.dictionary_encode(customer)
    if encoded.num_chunks == 0:
        return np.empty(0, np.int64), pa.array([], type=customer.type)
    if encoded.num_chunks > 1 and not all(
        c.dictionary.equals(encoded.chunk(0).dictionary) for c in encoded.chunks
    ):
        encoded = pa.table({"c": encoded}).unify_dictionaries().column("c")
    codes = np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in encoded.chunks])
    return codes.astype(np.int64, copy=False), encoded.chunk(0).dictionary


def _summarise(log: _Log, holdout_days: int | None, unit_days: float) -> pd.DataFrame:
    """The summary from the fetched columns, vectorised over rows (no per-customer loop).

    Rows are reduced to distinct customer-days by sorting one int64 key per row (the
    customer's code in the high bits, the day in the low bits): after the sort each customer's
    days are one ascending run, so its number of purchase days, first day and last calibration
    day are read off the run's ends. The amounts need no sort: ``np.bincount`` sums them per
    customer, once for the calibration rows after the first purchase day (the repeat days'
    totals, summed directly rather than as total minus first day) and once for holdout rows.
    """
    codes, ids = _encode(log.customer)
    day = log.day.to_numpy()
    amount = None if log.amount is None else log.amount.to_numpy()
    last = 0 if holdout_days is None else holdout_days
    if day.size and day.max() > last:
        keep = day <= last
        codes, day = codes[keep], day[keep]
        amount = None if amount is None else amount[keep]
    n_ids = len(ids)
    columns = ["customer_id", *RFM_COLUMNS[: 4 if amount is not None else 3]]
    if holdout_days is not None:
        columns += [c for c in HOLDOUT_COLUMNS if amount is not None or "monetary" not in c]
    if day.size == 0:
        empty = pd.DataFrame({c: pd.Series(dtype="float64") for c in columns})
        empty["customer_id"] = ids.to_pandas()
        return empty

    origin = int(day.min())
    day_bits = int(day.max() - origin).bit_length()
    if day_bits + n_ids.bit_length() > 62:
        raise ContractError("The purchase dates span too many days to summarise; check them.")
    runs = codes << day_bits  # a new array: codes stays as it is for the amounts below
    runs |= day - origin
    runs.sort()
    distinct = np.empty(runs.size, bool)
    distinct[0] = True
    np.not_equal(runs[1:], runs[:-1], out=distinct[1:])
    runs = runs[distinct]
    run_customer = runs >> day_bits
    run_day = (runs & ((1 << day_bits) - 1)) + origin
    n_days = np.bincount(run_customer, minlength=n_ids)
    if holdout_days is None:
        n_cal = n_days
    else:
        n_cal = np.bincount(run_customer[run_day <= 0], minlength=n_ids)
    run_start = np.cumsum(n_days) - n_days
    by_id = pc.sort_indices(ids).to_numpy()
    buyers = by_id[n_cal[by_id] > 0]

    first_day = np.full(n_ids, np.iinfo(np.int64).max)
    first_day[buyers] = run_day[run_start[buyers]]
    last_cal_day = run_day[run_start[buyers] + n_cal[buyers] - 1]
    frequency = n_cal[buyers] - 1
    out = {
        "customer_id": ids.take(pa.array(buyers)).to_pandas(),
        "frequency": frequency.astype("float64"),
        "recency": (last_cal_day - first_day[buyers]) / unit_days,
        "T": -first_day[buyers] / unit_days,
    }
    if amount is not None:
        repeat = day > first_day[codes]
        if holdout_days is not None:
            repeat &= day <= 0
        repeat_total = np.bincount(codes, np.where(repeat, amount, 0.0), minlength=n_ids)
        out["monetary_value"] = np.divide(
            repeat_total[buyers], frequency, out=np.zeros(len(buyers)), where=frequency > 0
        )
    if holdout_days is not None:
        out["frequency_holdout"] = (n_days - n_cal)[buyers].astype("float64")
        if amount is not None:
            held = day > 0
            held_sum = np.bincount(codes[held], weights=amount[held], minlength=n_ids)[buyers]
            held_rows = np.bincount(codes[held], minlength=n_ids)[buyers]
            out["monetary_value_holdout"] = np.divide(
                held_sum, held_rows, out=np.zeros(len(buyers)), where=held_rows > 0
            )
        out["duration_holdout"] = np.full(len(buyers), holdout_days / unit_days)
    return pd.DataFrame(out, columns=columns)
