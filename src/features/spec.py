"""How a feature is declared: :class:`FeatureSpec` (the data) and :class:`FamilySQL` (the SQL).

Every feature is declared once, next to the SQL expression that computes it, in the module of
its family (``demographic.py``, ``transactional.py`` ...). The registry, the docs catalogue, the
serving schema and the model signatures are all derived from these declarations.

SQL is written once, in DuckDB's dialect, and transpiled to Spark SQL with sqlglot by the Spark
engine. Templates use these placeholders, filled by :func:`time_literals`:

``{t}``
    the as-of timestamp literal (midnight of the as-of date); rows are read when ``ts < {t}``;
``{d}``
    the as-of date literal;
``{t30}``, ``{t90}``, ``{t180}``, ``{t365}``
    the timestamp ``N`` days before the as-of timestamp (window starts, inclusive).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

from customer360.errors import Customer360Error

FAMILIES: dict[str, str] = {
    "demo": "demographic",
    "txn": "transactional",
    "tp": "third party",
    "beh": "behavioural",
    "social": "social",
    "svc": "service",
}
"""Family prefix -> plain name, in registry order."""

WINDOW_DAYS: tuple[int, ...] = (30, 90, 180, 365)
"""Window lengths with a ready-made start-of-window placeholder ``{tN}``."""

SQL_TYPES: dict[str, str] = {"int64": "BIGINT", "float64": "DOUBLE", "category": "VARCHAR"}
"""Declared dtype -> the SQL type every engine casts the feature to."""

_NAME = re.compile(r"^(?P<family>[a-z]+)__(?P<what>[a-z0-9_]+?)__(?P<window>\d+d|all|static)$")


class FeatureError(Customer360Error):
    """A feature declaration or a feature build request is invalid."""


@dataclass(frozen=True)
class FeatureSpec:
    """One declared feature.

    Attributes
    ----------
    name
        ``<family>__<what>__<window>``, e.g. ``txn__spend_sum__90d``.
    family
        Family prefix (``demo``, ``txn``, ``tp``, ``beh``, ``social``, ``svc``).
    description
        Plain words, usable as a reason code ("days since last purchase").
    dtype
        ``int64``, ``float64`` or ``category`` (strings; model code converts them).
    window_days
        Length of the look-back window in days; ``None`` for ``all`` (whole history before the
        as-of date) and ``static`` (latest known attribute).
    default
        Value for customers with no rows in the family (or when the expression is undefined);
        ``None`` keeps a null, whose meaning is in ``null_means``.
    sql
        The SQL expression (DuckDB dialect) over the family's joined CTEs and ``base`` (the
        customers row).
    null_means
        When ``default`` is ``None``: what a null says (documented in docs/features.md).
    """

    name: str
    family: str
    description: str
    dtype: str
    window_days: int | None
    default: int | float | str | None
    sql: str = field(default="", repr=False)
    null_means: str = ""

    @property
    def window(self) -> str:
        """The window suffix of the name: ``30d``, ``all``, ``static``..."""
        return self.name.rsplit("__", 1)[1]

    def select_sql(self) -> str:
        """``CAST(COALESCE(expr, default) AS type) AS name`` for the assembler's SELECT."""
        expr = self.sql
        if self.default is not None:
            expr = f"COALESCE({expr}, {sql_literal(self.default)})"
        return f"CAST({expr} AS {SQL_TYPES[self.dtype]}) AS {self.name}"


def sql_literal(value: int | float | str) -> str:
    """A SQL literal for a default value (strings quoted, floats with a decimal point)."""
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(value) if "." in repr(value) or "e" in repr(value) else f"{value}.0"
    return str(int(value))


def feature(
    name: str,
    description: str,
    dtype: str,
    default: int | float | str | None,
    sql: str,
    *,
    null_means: str = "",
) -> FeatureSpec:
    """Declare a feature; family and window are read from the name and checked.

    Examples
    --------
    >>> f = feature("txn__orders__90d", "orders in the last 90 days", "int64", 0, "a.n90")
    >>> (f.family, f.window_days, f.window)
    ('txn', 90, '90d')
    """
    match = _NAME.match(name)
    if match is None:
        raise FeatureError(
            f"Feature name {name!r} does not read <family>__<what>__<window> (window 30d, 90d, "
            "365d, all or static); rename it."
        )
    family, window = match["family"], match["window"]
    if family not in FAMILIES:
        raise FeatureError(
            f"Feature {name!r} has unknown family {family!r}; use one of {', '.join(FAMILIES)}."
        )
    if dtype not in SQL_TYPES:
        raise FeatureError(
            f"Feature {name!r} has dtype {dtype!r}; use one of {', '.join(SQL_TYPES)}."
        )
    if default is None and not null_means:
        raise FeatureError(f"Feature {name!r} may be null: say what a null means (null_means).")
    if dtype == "int64" and default is None:
        raise FeatureError(
            f"Feature {name!r} is int64 but may be null; declare it float64 or give a default."
        )
    window_days = int(window[:-1]) if window.endswith("d") else None
    return FeatureSpec(
        name=name,
        family=family,
        description=description,
        dtype=dtype,
        window_days=window_days,
        default=default,
        sql=" ".join(sql.split()),
        null_means=null_means,
    )


@dataclass(frozen=True)
class FamilySQL:
    """The SQL of one family: CTEs (DuckDB dialect templates) plus the features over them.

    ``joins`` names the CTEs keyed by ``customer_id`` (one row per customer) that the assembler
    LEFT JOINs to ``base`` (customers signed up before the as-of date); feature expressions
    refer to their columns as ``cte.column``. The family's CTEs may read the raw tables listed
    in ``tables``, always with a ``< {t}`` filter on the table's time column.
    """

    family: str
    tables: tuple[str, ...]
    ctes: tuple[tuple[str, str], ...]
    joins: tuple[str, ...]
    features: tuple[FeatureSpec, ...]

    def __post_init__(self) -> None:
        cte_names = {name for name, _ in self.ctes}
        missing = [j for j in self.joins if j not in cte_names]
        if missing:
            raise FeatureError(f"Family {self.family!r} joins undeclared CTE(s) {missing}.")
        strangers = [f.name for f in self.features if f.family != self.family]
        if strangers:
            raise FeatureError(f"Family {self.family!r} declares foreign features {strangers}.")


def window_start(days: int | None) -> str:
    """SQL placeholder condition on ``ts`` for a look-back window (``TRUE`` for all history)."""
    return "TRUE" if days is None else f"ts >= {{t{days}}}"


def window_suffix(days: int | None) -> str:
    """``30d`` for 30, ``all`` for ``None``."""
    return "all" if days is None else f"{days}d"


def window_words(days: int | None) -> str:
    """Plain words for a window: ``in the last 30 days`` / ``ever (before the as-of date)``."""
    return "ever (before the as-of date)" if days is None else f"in the last {days} days"


def as_of_date(value: dt.date | dt.datetime | str) -> dt.date:
    """Normalise an as-of value to a date; a timestamp must be exactly midnight.

    Features are computed from rows strictly before midnight of the as-of date.
    """
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError as exc:
            raise FeatureError(
                f"As-of date {value!r} is not an ISO date; write it as YYYY-MM-DD."
            ) from exc
    if isinstance(value, dt.datetime) or hasattr(value, "to_pydatetime"):
        stamp = value.to_pydatetime() if hasattr(value, "to_pydatetime") else value
        if stamp.time() != dt.time(0):
            raise FeatureError(
                f"As-of {stamp.isoformat()} has a time of day; features are built as of "
                "midnight of a date. Pass the date (YYYY-MM-DD)."
            )
        return stamp.date()
    if isinstance(value, dt.date):
        return value
    raise FeatureError(f"As-of {value!r} is not a date; pass YYYY-MM-DD or a datetime.date.")


def time_literals(as_of: dt.date, horizon_days: int | None = None) -> dict[str, str]:
    """Fill-ins for the SQL placeholders of an as-of date (``{t}``, ``{d}``, ``{t30}``...).

    With ``horizon_days`` also ``{h}`` / ``{dh}``: the timestamp / date ``H`` days after.
    """
    midnight = dt.datetime.combine(as_of, dt.time(0))
    out = {
        "t": f"TIMESTAMP '{midnight:%Y-%m-%d %H:%M:%S}'",
        "d": f"DATE '{as_of:%Y-%m-%d}'",
    }
    for days in WINDOW_DAYS:
        out[f"t{days}"] = f"TIMESTAMP '{midnight - dt.timedelta(days=days):%Y-%m-%d %H:%M:%S}'"
    if horizon_days is not None:
        end = midnight + dt.timedelta(days=horizon_days)
        out["h"] = f"TIMESTAMP '{end:%Y-%m-%d %H:%M:%S}'"
        out["dh"] = f"DATE '{end:%Y-%m-%d}'"
    return out


def ranked_mode(source: str, column: str, where: str, *, count: str | None = None) -> str:
    """SQL for each customer's most frequent ``column`` value (ties: alphabetical first).

    ``count`` names a column of ``source`` that already holds the counts per customer and
    value; otherwise rows of ``source`` are counted.
    """
    counted = (
        f"SELECT customer_id, {column}, {count} AS n FROM {source} WHERE {where}"
        if count
        else f"SELECT customer_id, {column}, COUNT(*) AS n FROM {source} WHERE {where} "
        f"GROUP BY customer_id, {column}"
    )
    # Two aggregations and a join rather than ROW_NUMBER(): window functions are the slowest
    # operator in DuckDB for this shape, and ties resolve the same way on every engine.
    return f"""
    SELECT counted.customer_id, MIN(counted.{column}) AS top_value
    FROM ({counted}) AS counted
    JOIN (SELECT customer_id, MAX(n) AS n FROM ({counted}) AS c GROUP BY customer_id) AS best
      ON best.customer_id = counted.customer_id AND best.n = counted.n
    GROUP BY counted.customer_id"""
