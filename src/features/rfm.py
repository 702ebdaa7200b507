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

Two exact plans compute the same numbers:

* **Run scan**, for logs whose rows come in long runs per customer (the warehouse writes each
  customer's orders together; ``customer360 cluster`` restores that after appends).
  DuckDB streams customer id, day and amount to Arrow in table order; consecutive equal ids
  form runs, so only the run heads are hashed (dictionary-encoded), not every row. Each row gets
  a 64-bit key ``customer rank | day | row position``; one numpy sort of those keys (a no-op
  when rows are already in customer and date order) gives the customer-days, and
  ``np.add.reduceat`` their totals. A customer split over several runs is still counted once,
  because the key holds the customer's rank, not the run: the plan is exact for any row order
  and only its speed depends on the layout.
* **SQL**, one DuckDB query (customer-day aggregate, then customer aggregate), for logs in no
  particular order, where nearly every row starts a run and hashing per run would cost what the
  hash aggregate costs, and for logs too large to sort in memory.

A probe of the first rows picks the plan; the run scan also falls back to SQL after the fetch
when the whole log turns out to have short runs.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from customer360.data.files import SUFFIXES, duckdb_reader
from customer360.errors import ContractError

logger = logging.getLogger(__name__)

try:  # numpy's private huge-page switch, see _small_pages
    from numpy._core import multiarray as _np_multiarray
except ImportError:  # pragma: no cover - other numpy layouts
    _np_multiarray = None

TimeUnit = Literal["D", "W"]
Plan = Literal["auto", "runs", "sql"]
_UNIT_DAYS = {"D": 1.0, "W": 7.0}
_FILE_SUFFIXES = set(SUFFIXES)

# Run-scan plan limits. The probe reads this many rows first; the plan is used when at most
# one row in _RUN_SHARE_MAX starts a new customer run (a clustered log has one run per
# customer, ~1/25 of the rows; a log in random order has nearly one per row). Above
# _RUN_MAX_ROWS the work is left to DuckDB, which can spill: the run scan holds the log in
# memory (peak ~85 bytes a row with the Arrow fetch; 1.7 GiB at 20M rows, as much as the SQL
# plan there).
_RUN_PROBE_ROWS = 16_384
_RUN_SHARE_MAX = 0.25
_RUN_MAX_ROWS = 100_000_000
_EPOCH = dt.date(1970, 1, 1)

_DURATIONS = ("recency", "T", "duration_holdout")  # divided by the time unit

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
    plan: Plan = "auto",
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
    plan
        ``"auto"`` (default) picks the run scan for logs stored in runs per customer and the
        SQL plan otherwise; ``"runs"`` or ``"sql"`` force one (both give the same values; see
        the module docstring).

    Returns
    -------
    pandas.DataFrame
        One row per customer with a purchase on or before ``calibration_end``, sorted by
        ``customer_id``: ``customer_id, frequency, recency, T[, monetary_value][,
        frequency_holdout[, monetary_value_holdout], duration_holdout]`` (floats).

    Raises
    ------
    ContractError
        Missing columns, null keys or amounts, unparseable dates, a bad time unit or plan,
        or ``observation_end`` not after ``calibration_end``.

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
    if plan not in ("auto", "runs", "sql"):
        raise ContractError(f"plan must be 'auto', 'runs' or 'sql', got {plan!r}.")
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
        _validate(con, view, where, date_col, parsed, customer_col, amount_col)
        unit = _UNIT_DAYS[time_unit]
        try:
            out = None
            if plan != "sql":
                with _small_pages():
                    out = _run_summary(
                        con,
                        view,
                        customer_col,
                        day,
                        amount_col,
                        cal_end,
                        obs_end,
                        unit,
                        force=plan == "runs",
                    )
            if out is None:
                logger.debug("rfm_summary: SQL plan")
                sql = _summary_sql(view, customer_col, day, amount_col, obs_end is not None)
                params = {"cal_end": cal_end, "unit": unit}
                if obs_end is not None:
                    params["obs_end"] = obs_end
                out = con.execute(sql, params).df()
        except duckdb.ConversionException as exc:
            raise ContractError(
                f"Column {amount_col!r} of {where} must be numeric "
                f"({str(exc).splitlines()[0]}). Fix or remove the rows whose amount is not a "
                "number."
            ) from exc
    for col in out.columns[1:]:
        out[col] = out[col].astype("float64")
    return out


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
            reader = duckdb_reader(path)
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


def _validate(
    con: duckdb.DuckDBPyConnection,
    view: str,
    where: str,
    date_col: str,
    parsed: str,
    customer_col: str,
    amount_col: str | None,
) -> None:
    """Prove every date parses and no customer id or amount is null.

    Plain ``count(*) - count(col)`` null counts are answered from table statistics without a
    scan; only string or integer dates need the parse check, which scans. Examples of bad rows
    are looked up only when there are some.
    """
    col, cust = _quote(date_col), _quote(customer_col)
    native = parsed == f"CAST({col} AS DATE)"
    not_null = [customer_col] + ([amount_col] if amount_col else [])
    checked = not_null + ([date_col] if native else [])
    row = con.execute(
        "SELECT " + ", ".join(f"count(*) - count({_quote(c)})" for c in checked) + f" FROM {view}"
    ).fetchall()[0]
    nulls = dict(zip(checked, row, strict=True))
    n_bad = nulls.pop(date_col, 0) if native else None
    if n_bad is None:
        n_bad = con.execute(f"SELECT count(*) FROM {view} WHERE {parsed} IS NULL").fetchall()[0][0]
    if n_bad:
        value, customer = con.execute(
            f"SELECT CAST({col} AS VARCHAR), CAST({cust} AS VARCHAR) FROM {view} "
            f"WHERE {parsed} IS NULL LIMIT 1"
        ).fetchall()[0]
        raise ContractError(
            f"{n_bad} row(s) of {where} have a missing or unparseable date in column "
            f"{date_col!r} (e.g. value {value!r} for customer {customer!r}); use ISO dates "
            "YYYY-MM-DD or YYYYMMDD and fix or remove those rows."
        )
    nulls = {c: n for c, n in nulls.items() if n}
    if nulls:
        detail = ", ".join(f"{c!r}: {n}" for c, n in nulls.items())
        raise ContractError(
            f"{where} has null values ({detail} rows); every transaction needs a customer and "
            "an amount. Fill or remove those rows."
        )


def _summary_sql(
    view: str, customer_col: str, day: str, amount_col: str | None, holdout: bool
) -> str:
    """One scan of ``view``: aggregate to customer-days, then to customers (no window).

    The repeat-day mean is ``(sum of day totals - first day's total) / frequency``; the first
    day's total is ``arg_min(total, day)``. That replaces the ``ROW_NUMBER()`` window the
    first version used, which sorted every customer-day and was most of the run time. The
    subtraction rounds like any float sum: the result agrees with the plain mean of the repeat
    days to about 1e-15 times the customer's total spend.
    """
    cust = _quote(customer_col)
    amount = f"CAST({_quote(amount_col)} AS DOUBLE)" if amount_col else "0.0"
    last_day = "$obs_end" if holdout else "$cal_end"
    cal = "FILTER (WHERE day <= $cal_end)" if holdout else ""
    n_cal = f"count(*) {cal}"
    cols = [
        f"CAST({n_cal} - 1 AS DOUBLE) AS frequency",
        f"date_diff('day', min(day), max(day) {cal}) / $unit AS recency",
        "date_diff('day', min(day), $cal_end) / $unit AS \"T\"",
    ]
    if amount_col:
        cols.append(
            f"CASE WHEN {n_cal} > 1 THEN (sum(total) {cal} - arg_min(total, day)) "
            f"/ ({n_cal} - 1) ELSE 0.0 END AS monetary_value"
        )
    if holdout:
        hold = "FILTER (WHERE day > $cal_end)"
        cols.append(f"CAST(count(*) {hold} AS DOUBLE) AS frequency_holdout")
        if amount_col:
            cols.append(
                f"COALESCE(sum(total) {hold} / sum(n_rows) {hold}, 0.0) AS monetary_value_holdout"
            )
        cols.append("date_diff('day', $cal_end, $obs_end) / $unit AS duration_holdout")
    having = f"HAVING {n_cal} > 0" if holdout else ""
    n_rows = ", count(*) AS n_rows" if holdout and amount_col else ""
    return f"""
    SELECT customer_id, {", ".join(cols)}
    FROM (
      SELECT {cust} AS customer_id, {day} AS day, sum({amount}) AS total{n_rows}
      FROM {view} WHERE {day} <= {last_day} GROUP BY ALL
    )
    GROUP BY customer_id {having}
    ORDER BY customer_id"""


def _run_summary(
    con: duckdb.DuckDBPyConnection,
    view: str,
    customer_col: str,
    day: str,
    amount_col: str | None,
    cal_end: dt.date,
    obs_end: dt.date | None,
    unit: float,
    *,
    force: bool = False,
) -> pd.DataFrame | None:
    """The run-scan plan (see the module docstring), or None when the SQL plan should run.

    ``force`` skips the probe and the run-length checks (the row limit and the 63-bit key
    still apply).
    """
    last = obs_end or cal_end
    amount = f", CAST({_quote(amount_col)} AS DOUBLE) AS a" if amount_col else ""
    rows_sql = (
        f"SELECT {_quote(customer_col)} AS c, "
        f"CAST(date_diff('day', DATE '{_EPOCH}', {day}) AS INTEGER) AS d{amount} "
        f"FROM {view} WHERE {day} <= DATE '{last}'"
    )
    small = False
    if not force:
        probe = con.sql(f"SELECT c FROM ({rows_sql}) LIMIT {_RUN_PROBE_ROWS}").to_arrow_table()
        if len(_run_starts(probe.column("c"))) > _RUN_SHARE_MAX * max(1, probe.num_rows):
            return None
        small = probe.num_rows < _RUN_PROBE_ROWS  # the probe read the whole log
    if not small:
        n_rows = con.sql(f"SELECT count(*) FROM ({rows_sql})").fetchall()[0][0]
        if n_rows > _RUN_MAX_ROWS:
            logger.info("rfm_summary: %d rows exceed the run scan's limit; using SQL", n_rows)
            return None
    table = con.sql(rows_sql).to_arrow_table()
    starts = _run_starts(table.column("c"))
    n = table.num_rows
    if n == 0 or (len(starts) > _RUN_SHARE_MAX * n and not force):
        return None
    columns = _run_columns(
        table,
        starts,
        cal_day=(cal_end - _EPOCH).days,
        obs_day=None if obs_end is None else (obs_end - _EPOCH).days,
        with_amount=amount_col is not None,
    )
    if columns is None:
        logger.info("rfm_summary: the run scan's 63-bit key does not fit; using SQL")
        return None
    logger.debug("rfm_summary: run scan over %d rows in %d customer runs", n, len(starts))
    ids, values = columns
    out = pd.DataFrame({"customer_id": ids.to_pandas()})
    for name, col in values.items():
        out[name] = col / unit if name in _DURATIONS else col
    return out


def _run_starts(ids: pa.ChunkedArray) -> np.ndarray:
    """Row positions where the customer id differs from the previous row's."""
    parts, offset, previous = [], 0, None
    for chunk in ids.chunks:
        m = len(chunk)
        if m == 0:
            continue
        new = np.ones(m, dtype=bool)
        if m > 1:
            new[1:] = pc.not_equal(chunk.slice(1), chunk.slice(0, m - 1)).to_numpy(
                zero_copy_only=False
            )
        if previous is not None and chunk[0].as_py() == previous:
            new[0] = False
        parts.append(np.flatnonzero(new) + offset)
        offset += m
        previous = chunk[m - 1].as_py()
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _chunks_to_numpy(column: pa.ChunkedArray, zeros: int = 0) -> np.ndarray:
    """One numpy array of ``column``, followed by ``zeros`` zero elements."""
    arrays = [chunk.to_numpy(zero_copy_only=False) for chunk in column.chunks]
    if len(arrays) == 1 and not zeros:
        return arrays[0]
    out = np.empty(len(column) + zeros, dtype=arrays[0].dtype)
    np.concatenate(arrays, out=out[: len(column)])
    out[len(column) :] = 0
    return out


@contextmanager
def _small_pages() -> Iterator[None]:
    """Turn off numpy's transparent-huge-page advice for large arrays inside the block.

    numpy advises the kernel to back large arrays with huge pages. Where the kernel then
    compacts memory on first touch (``/sys/kernel/mm/transparent_hugepage/defrag`` set to
    ``madvise``, as on our machines), the run scan's short-lived arrays took 1.5-3x longer and
    varied from run to run (20M rows: 1.6-2.0 s without the advice, 1.8-3.5 s with it).
    The setting is process-wide, so it is restored on exit. Uses numpy's private switch (the
    one behind ``NUMPY_MADVISE_HUGEPAGE``) and does nothing where it is missing.
    """
    switch = getattr(_np_multiarray, "_set_madvise_hugepage", None)
    previous = switch(False) if switch is not None else None
    try:
        yield
    finally:
        if switch is not None:
            switch(previous)


_PARALLEL_MIN_ROWS = 1_000_000


def _halves(starts: np.ndarray, run_rank: np.ndarray, n: int) -> list[slice]:
    """Rows ``[0, n)`` cut at a run start near the middle, when the ranks of the runs before
    the cut are all below those after it; else one slice (the whole)."""
    middle = len(starts) // 2
    if n < _PARALLEL_MIN_ROWS or middle == 0:
        return [slice(0, n)]
    if run_rank[:middle].max() >= run_rank[middle:].min():
        return [slice(0, n)]
    cut = int(starts[middle])
    return [slice(0, cut), slice(cut, n)]


def _bits(value: int) -> int:
    return max(1, int(value).bit_length())


def _run_columns(
    table: pa.Table,
    starts: np.ndarray,
    *,
    cal_day: int,
    obs_day: int | None,
    with_amount: bool,
) -> tuple[pa.Array, dict[str, np.ndarray]] | None:
    """Customer ids (sorted) and the summary columns in days, from rows grouped in runs.

    ``table`` holds ``c`` (customer id), ``d`` (day number) and, with amounts, ``a``; ``starts``
    are the positions where a new run of equal ids begins. Returns None when the packed key
    would not fit 63 bits (the SQL plan then runs).

    After sorting, each customer's rows are one slice ``[start, end)`` in day order, split at
    ``first_end`` (end of the first purchase day) and ``hold`` (first holdout row). Sums over
    those slices come from one ``np.add.reduceat``; distinct days are rows minus the rows that
    repeat the previous row's customer-day, which are few.
    """
    n = table.num_rows
    heads = table.column("c").take(pa.array(starts)).combine_chunks()
    if len(heads) < 2 or pc.all(pc.less(heads.slice(0, len(heads) - 1), heads.slice(1))).as_py():
        # one run per customer, in id order (a log clustered by customer id): run = rank
        customers = heads  # already in id order
        run_rank = np.arange(len(heads), dtype=np.int64)
    else:
        encoded = pc.dictionary_encode(heads)
        by_id = pc.sort_indices(encoded.dictionary)  # rank -> customer code
        customers = encoded.dictionary.take(by_id)
        rank_of_code = np.empty(len(customers), dtype=np.int64)
        rank_of_code[by_id.to_numpy()] = np.arange(len(customers))
        run_rank = rank_of_code[encoded.indices.to_numpy()]
    k = len(customers)
    run_rows = np.diff(np.append(starts, n))

    days = _chunks_to_numpy(table.column("d"))
    first_day = int(days.min())
    day_bits = _bits(int(days.max()) - first_day)
    row_bits = _bits(n - 1)
    if _bits(k - 1) + day_bits + row_bits > 63:
        return None
    # customer-day key of every row: rank in the high bits, day offset in the low bits
    key = np.repeat((run_rank << day_bits) - first_day, run_rows)
    key += days  # in place: no temporary array the size of the log
    del days
    # one zero after the last row, so that reduceat's slice bounds may equal n
    amounts = _chunks_to_numpy(table.column("a"), zeros=1) if with_amount else None
    if np.any(key[1:] < key[:-1]):
        # sort by (customer, day) and carry each row's position in the low bits, so one
        # plain sort of int64 keys gives both the order and the permutation of the amounts
        key <<= row_bits
        position = np.arange(n, dtype=np.int64)
        key |= position
        moved = np.empty_like(amounts) if amounts is not None else None

        def sort_part(part: slice) -> None:
            key[part].sort()
            if moved is not None:
                np.bitwise_and(key[part], (1 << row_bits) - 1, out=position[part])
                # take() into another array: no buffering
                np.take(amounts[:n], position[part], out=moved[part], mode="clip")

        # numpy sorts and gathers without the GIL: two threads when the rows split into two
        # halves whose keys do not overlap (every rank before the split below every rank after)
        parts = _halves(starts, run_rank, n)
        if len(parts) == 1:
            sort_part(parts[0])
        else:
            with ThreadPoolExecutor(len(parts)) as pool:
                list(pool.map(sort_part, parts))
        if moved is not None:
            moved[n] = 0.0
            amounts = moved
        del position
        key >>= row_bits

    rows = np.bincount(run_rank, weights=run_rows, minlength=k).astype(np.int64)
    start = np.zeros(k, dtype=np.int64)
    np.cumsum(rows[:-1], out=start[1:])
    end = start + rows
    if obs_day is None:
        hold = end
    else:  # first row after calibration_end (adding 2**day_bits lands on the next customer)
        offset = min(max(cal_day - first_day + 1, 0), 1 << day_bits)
        hold = np.searchsorted(key, (np.arange(k, dtype=np.int64) << day_bits) + offset)
    # rows repeating the previous row's customer-day (same customer: the key holds the rank)
    repeats = np.flatnonzero(key[1:] == key[:-1]) + 1
    n_cal = (hold - start) - (np.searchsorted(repeats, hold) - np.searchsorted(repeats, start))
    first_key = key[start]
    first_end = start + 1
    tied = first_end < end
    tied[tied] = key[first_end[tied]] == first_key[tied]
    first_end[tied] = np.searchsorted(key, first_key[tied] + 1)
    day_mask = (1 << day_bits) - 1
    first = (first_key & day_mask) + first_day
    last = (key[np.maximum(hold - 1, start)] & day_mask) + first_day

    frequency = (n_cal - 1).astype(np.float64)
    values: dict[str, np.ndarray] = {
        "frequency": frequency,
        "recency": (last - first).astype(np.float64),
        "T": (cal_day - first).astype(np.float64),
    }
    if amounts is not None:
        # slices [start, first_end), [first_end, hold), [hold, next start); a slice that is
        # empty gives a stray value, which the frequency / row-count masks below discard
        bounds = np.stack([start, first_end, hold], axis=1).ravel()
        sums = np.add.reduceat(amounts, bounds).reshape(k, 3)
        values["monetary_value"] = np.where(
            frequency > 0, sums[:, 1] / np.maximum(frequency, 1.0), 0.0
        )
    if obs_day is not None:
        hold_rows = end - hold
        values["frequency_holdout"] = (
            hold_rows - (np.searchsorted(repeats, end) - np.searchsorted(repeats, hold))
        ).astype(np.float64)
        if amounts is not None:
            values["monetary_value_holdout"] = np.where(
                hold_rows > 0, sums[:, 2] / np.maximum(hold_rows, 1), 0.0
            )
        values["duration_holdout"] = np.full(k, float(obs_day - cal_day))
    ids = customers
    if obs_day is not None:
        keep = n_cal > 0  # customers whose first purchase is in the calibration period
        ids = ids.filter(pa.array(keep))
        values = {name: column[keep] for name, column in values.items()}
    return ids, values
