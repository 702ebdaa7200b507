"""Where feature SQL runs: the embedded DuckDB warehouse or Apache Spark.

Feature SQL is written once, in DuckDB's dialect. :class:`DuckDBEngine` runs it as is;
:class:`SparkEngine` transpiles it with sqlglot to Spark SQL and runs it on a SparkSession
whose temporary views hold the raw tables (for example exported from the DuckDB file to
Parquet with :meth:`SparkEngine.from_duckdb`). Both return pandas frames.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import duckdb
import pandas as pd
import sqlglot

from customer360.data.contracts import RAW_TABLES
from customer360.data.warehouse import require_tables
from customer360.features.spec import FeatureError

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

ENGINES = ("duckdb", "spark")


class Engine(Protocol):
    """Runs one DuckDB-dialect query and returns a pandas frame."""

    name: str

    def query(self, sql: str) -> pd.DataFrame: ...


MEMORY_LIMIT_ENV = "CUSTOMER360_FEATURES_MEMORY_LIMIT"
DEFAULT_MEMORY_LIMIT = "3GB"


class DuckDBEngine:
    """Runs feature SQL inside the DuckDB warehouse connection.

    DuckDB takes up to 80 % of the machine's RAM by default and a feature build uses what it
    is given (1M customers: 6.2-6.7 GiB peak on a 24 GiB machine). When the connection runs
    with DuckDB's default limit, each feature query runs with ``memory_limit`` set to
    ``$CUSTOMER360_FEATURES_MEMORY_LIMIT`` (default 3GB: 5.1 GiB peak for the whole process at
    1M customers, see docs/benchmarks.md; ``none`` turns this off) and the default is restored
    afterwards; a limit the caller set on the connection is left alone. A query that does not
    fit is run again under DuckDB's default, with a warning, rather than fail.
    """

    name = "duckdb"

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def query(self, sql: str) -> pd.DataFrame:
        limit = os.environ.get(MEMORY_LIMIT_ENV, DEFAULT_MEMORY_LIMIT).strip()
        if limit.lower() == "none" or not self._default_memory_limit():
            return self.con.execute(sql).df()
        try:
            self.con.execute(f"SET memory_limit = '{limit}'")
        except duckdb.OutOfMemoryException:
            return self._unlimited(sql, limit)  # already holds more than the limit
        except duckdb.Error as exc:
            raise FeatureError(
                f"{MEMORY_LIMIT_ENV}={limit!r} is not a DuckDB memory size ({exc}); use e.g. "
                "'3GB', '8GB', or 'none' for DuckDB's default."
            ) from exc
        try:
            return self.con.execute(sql).df()
        except duckdb.OutOfMemoryException:
            self.con.execute("RESET memory_limit")
            return self._unlimited(sql, limit)
        finally:
            self.con.execute("RESET memory_limit")

    def _unlimited(self, sql: str, limit: str) -> pd.DataFrame:
        log.warning(
            "feature query did not fit in %s (%s); running it under DuckDB's default limit",
            limit, MEMORY_LIMIT_ENV,
        )
        return self.con.execute(sql).df()

    def _default_memory_limit(self) -> bool:
        """Whether the connection runs with DuckDB's default memory limit (nobody set one)."""
        query = "SELECT current_setting('memory_limit')"
        current = self.con.execute(query).fetchone()[0]
        with duckdb.connect() as fresh:
            return current == fresh.execute(query).fetchone()[0]


def to_spark_sql(sql: str) -> str:
    """Transpile one DuckDB-dialect statement to Spark SQL.

    Examples
    --------
    >>> to_spark_sql("SELECT arg_max(a, b) FROM t")
    'SELECT MAX_BY(a, b) FROM t'
    """
    statements = sqlglot.transpile(sql, read="duckdb", write="spark")
    if len(statements) != 1:
        raise FeatureError(f"Expected one SQL statement to transpile, got {len(statements)}.")
    return statements[0]


def local_spark(cores: int = 2, app_name: str = "customer360", **conf: str) -> SparkSession:
    """A local-mode SparkSession set up for feature builds (UTC, Arrow, few partitions).

    ``conf`` adds Spark settings, e.g. ``{"spark.sql.shuffle.partitions": "1"}`` for tiny data.
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:  # pragma: no cover - pyspark is a test/extra dependency
        raise FeatureError(
            "The Spark engine needs pyspark: install the test extras (`pip install -e .[test]`)."
        ) from exc
    builder = (
        SparkSession.builder.master(f"local[{cores}]")
        .appName(app_name)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(max(2, cores * 2)))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", "2g")
    )
    # Local executors run this interpreter (it has pandas and the models), not whichever
    # `python3` is first on PATH. PySpark reads only the environment variable, when the first
    # session of the process starts; a value the user set wins.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # Splink's similarity functions (JARO_WINKLER, ...) must be on the driver's class path
    # when the JVM starts: a session started later in the same process cannot add them, so
    # every session carries them and identity resolution can run in the same session.
    if "spark.jars" not in conf:
        try:
            from splink.backends.spark import similarity_jar_location
        except ImportError:  # pragma: no cover - splink is a core dependency
            pass
        else:
            builder = builder.config("spark.jars", similarity_jar_location())
    for key, value in conf.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


class SparkEngine:
    """Runs feature SQL on Spark after transpiling it from DuckDB's dialect.

    Parameters
    ----------
    spark
        A SparkSession whose catalog has the raw tables (temporary views are fine).
    workdir
        Folder of Parquet files this engine exported and owns; removed by :meth:`close`.
    """

    name = "spark"

    def __init__(self, spark: SparkSession, *, workdir: Path | None = None) -> None:
        self.spark = spark
        self._workdir = workdir

    @classmethod
    def from_duckdb(
        cls,
        con: duckdb.DuckDBPyConnection,
        spark: SparkSession | None = None,
        *,
        tables: tuple[str, ...] = RAW_TABLES,
        workdir: str | Path | None = None,
    ) -> SparkEngine:
        """Export ``tables`` from the DuckDB warehouse to Parquet and register them in Spark.

        Examples
        --------
        >>> engine = SparkEngine.from_duckdb(con)            # doctest: +SKIP
        >>> engine.query("SELECT count(*) AS n FROM customers")  # doctest: +SKIP
        """
        require_tables(con, *tables)
        spark = spark or local_spark()
        own = workdir is None
        folder = Path(tempfile.mkdtemp(prefix="c360_spark_")) if own else Path(workdir)
        folder.mkdir(parents=True, exist_ok=True)
        for table in tables:
            path = folder / f"{table}.parquet"
            con.execute(f"COPY {table} TO '{path}' (FORMAT PARQUET)")
            spark.read.parquet(str(path)).createOrReplaceTempView(table)
        log.info("exported %d tables to %s for Spark", len(tables), folder)
        return cls(spark, workdir=folder if own else None)

    def query(self, sql: str) -> pd.DataFrame:
        return self.spark.sql(to_spark_sql(sql)).toPandas()

    def close(self) -> None:
        """Drop the Parquet files this engine exported (the session stays up)."""
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None


def resolve_engine(con: duckdb.DuckDBPyConnection | None, engine: Any) -> Engine:
    """Turn ``"duckdb"``, ``"spark"`` or an engine object into an :class:`Engine`."""
    if not isinstance(engine, str):
        if not hasattr(engine, "query"):
            raise FeatureError(f"Engine {engine!r} has no query(sql) method.")
        return engine
    if engine not in ENGINES:
        raise FeatureError(f"Unknown engine {engine!r}; use one of {', '.join(ENGINES)}.")
    if con is None:
        raise FeatureError(f"The {engine} engine needs a DuckDB warehouse connection.")
    if engine == "duckdb":
        return DuckDBEngine(con)
    return SparkEngine.from_duckdb(con)
