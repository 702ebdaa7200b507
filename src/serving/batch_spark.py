"""The whole batch scoring job on Spark (issue 17 items 2 and 4): ``customer360 score --engine
spark`` and ``spark-submit`` of this module.

Same output columns and values as :func:`customer360.serving.batch.score_customers`, computed
where the data live:

* population-level steps as Spark windows and aggregates: the segments
  (:func:`customer360.models.segments_spark.classify`), the RFM summary and the probabilistic
  scores (:mod:`customer360.models.clv_spark`), the bandit's counts;
* per-customer steps inside the executors: customers are hashed into buckets, each bucket is
  co-grouped with its customers' offer history and scored by the same
  :class:`~customer360.serving.profile.ProfileScorer` the DuckDB path and the service use
  (churn with reasons, ML CLV, eligibility, offer ranking and the bandit's decision for the
  period). Executors load the champions from the MLflow registry themselves.

Only small things reach the driver: cut points, the offer catalogue, the bandit's segment x
offer counts, and the RFM columns the BG/NBD and Gamma-Gamma fits read (four floats per
buyer; the fit is one optimisation on the driver, its parameters go back to the executors).

The warehouse tables are Parquet (``<dir>/<table>.parquet``, a file or a folder of part files)
or tables of the session's catalog (see ``docs/spark.md``).

Examples
--------
>>> spark-submit --master local[2] -m customer360.serving.batch_spark --help  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from customer360.errors import Customer360Error, WarehouseError
from customer360.serving.profile import SNAPSHOT_TABLE

if __name__ == "__main__":  # pragma: no cover - spark-submit runs this file as a script
    # ... which puts this folder first on sys.path, where serving/profile.py would shadow the
    # standard library's profile module (pyspark imports cProfile, cProfile imports profile).
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]

log = logging.getLogger(__name__)

# Tables the job reads (identity and feedback tables are optional).
JOB_TABLES = (SNAPSHOT_TABLE, "customers", "transactions", "offers", "offer_events")
OPTIONAL_TABLES = ("opportunities", "offer_feedback", "identity_golden", "identity_crosswalk",
                   "identity_records", "identity_aliases")
# Environment the executors need to reach the registry and the configs.
EXECUTOR_ENV = ("MLFLOW_TRACKING_URI", "CUSTOMER360_CONFIG_DIR")
_CLASS_PREFIX = "_cls__"


class SparkTables:
    """Where the job's warehouse tables live: a folder of Parquet (``<dir>/<table>.parquet``)
    or, with ``folder=None``, the session's catalog (``spark.table(name)``).

    Examples
    --------
    >>> tables = SparkTables(spark, "s3a://bucket/warehouse")  # doctest: +SKIP
    >>> tables.table("transactions").count()  # doctest: +SKIP
    """

    def __init__(self, spark: Any, folder: str | Path | None = None) -> None:
        self.spark = spark
        self.folder = None if folder is None else str(folder).rstrip("/")

    def _path(self, name: str) -> str:
        return f"{self.folder}/{name}.parquet"

    def has(self, name: str) -> bool:
        if self.folder is None:
            return bool(self.spark.catalog.tableExists(name))
        if "://" not in self.folder:
            return Path(self._path(name)).exists()
        try:
            self.spark.read.parquet(self._path(name)).schema  # noqa: B018 - probes the path
        except Exception:  # an object store without the table
            return False
        return True

    def table(self, name: str) -> Any:
        if not self.has(name):
            where = f"folder {self.folder}" if self.folder else "the Spark catalog"
            raise WarehouseError(
                f"Table {name} is not in {where}. Export it ({name}.parquet) or register it "
                "in the catalog; docs/spark.md lists the tables the job reads."
            )
        if self.folder is None:
            return self.spark.table(name)
        return self.spark.read.parquet(self._path(name))

    @classmethod
    def from_duckdb(cls, con: Any, spark: Any, folder: str | Path, as_of: dt.date) -> SparkTables:
        """Export the job's tables from a DuckDB warehouse to ``folder`` (only the ``as_of``
        rows of the snapshot), for local runs and the tests."""
        from customer360.data.warehouse import table_exists

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in (*JOB_TABLES, *OPTIONAL_TABLES):
            if not table_exists(con, name):
                continue
            rows = (f"(SELECT * FROM {SNAPSHOT_TABLE} WHERE CAST(as_of AS DATE) = DATE "
                    f"'{as_of.isoformat()}')" if name == SNAPSHOT_TABLE else name)
            con.execute(f"COPY {rows} TO '{folder / (name + '.parquet')}' (FORMAT PARQUET)")
        return cls(spark, folder)


# --- population-level steps -------------------------------------------------------------------


def probabilistic_scores(tables: SparkTables, as_of: dt.date, horizons: list[int]) -> Any:
    """The ``prob__*`` scores of :func:`customer360.serving.profile.probabilistic_frame` as a
    Spark DataFrame: RFM and margin rate aggregated on Spark, the fit on the driver from the
    RFM columns, the scores in the executors."""
    from pyspark.sql import functions as F

    from customer360.models import clv_spark
    from customer360.models.clv import load_clv_config, stack_for

    cfg = load_clv_config()
    before = F.lit(pd.Timestamp(as_of)).cast("timestamp")
    tx = tables.table("transactions").where(~F.col("is_return") & (F.col("ts") < before))
    rfm = clv_spark.rfm_summary(tx, as_of - dt.timedelta(days=1), time_unit=cfg.time_unit)
    rfm = rfm.cache()
    margin = cfg.margin_rate
    if margin is None:
        amount, profit = tx.agg(F.sum("amount"), F.sum("margin")).first()
        margin = float(profit / amount) if amount else 1.0
    # The one step on the driver: the fit reads every buyer's (frequency, recency, T, spend).
    fit_rows = rfm.orderBy("customer_id").toPandas()
    stack = stack_for(fit_rows, cfg, margin_rate=margin, as_of=as_of)
    customers = tables.table("customers").where(F.col("signup_date") < F.lit(as_of))
    return clv_spark.stack_scores(rfm, customers, stack, horizons)


def observed_sales_cycles(tables: SparkTables, as_of: dt.date) -> Any:
    """Spark twin of :func:`customer360.training.segments.observed_sales_cycles`: per customer
    with an opportunity won by ``as_of``, the median days from opening to close
    (``customer_id``, ``cycle_days``), or None without an opportunities table."""
    from pyspark.sql import functions as F

    if not tables.has("opportunities"):
        return None
    seconds = (F.col("closed_at").cast("timestamp").cast("double")
               - F.col("created_at").cast("timestamp").cast("double"))
    won = tables.table("opportunities").where(
        F.col("customer_id").isNotNull() & (F.col("outcome") == "won")
        & F.col("closed_at").isNotNull() & (F.to_date("closed_at") <= F.lit(as_of)))
    return won.groupBy(F.col("customer_id").cast("string").alias("customer_id")).agg(
        F.median(seconds / 86_400).alias("cycle_days"))


def offer_history(tables: SparkTables, offers: pd.DataFrame) -> Any:
    """Spark twin of :func:`customer360.data.readers.offer_history`: offer events plus the
    bandit feedback log (its channel from the catalogue)."""
    from pyspark.sql import functions as F

    cols = ["customer_id", "offer_id", "ts", "channel", "accepted"]
    events = tables.table("offer_events").select(*cols)
    if not tables.has("offer_feedback"):
        return events
    channels = tables.spark.createDataFrame(
        offers[["offer_id", "channel"]].astype(object).rename(columns={"channel": "_ch"}))
    fb = (tables.table("offer_feedback").join(F.broadcast(channels), "offer_id", "left")
          .select("customer_id", "offer_id", "ts", F.col("_ch").alias("channel"), "accepted"))
    return events.unionByName(fb)


def bandit_state(tables: SparkTables) -> Any:
    """:meth:`customer360.models.bandit.BanditState.load` aggregated on Spark."""
    from pyspark.sql import functions as F

    from customer360.models.bandit import BanditState

    if not tables.has("offer_feedback"):
        return BanditState.empty()
    acc = F.col("accepted")
    counts = (tables.table("offer_feedback").groupBy("segment", "offer_id").agg(
        F.sum(F.when(acc, 1).otherwise(0)).cast("long").alias("successes"),
        F.sum(F.when(acc, 0).otherwise(1)).cast("long").alias("failures"),
    ).toPandas())
    if counts.empty:
        return BanditState.empty()
    return BanditState(counts.set_index(["segment", "offer_id"]).sort_index())


def identity_blocks(tables: SparkTables) -> Any:
    """Spark twin of :func:`customer360.identity.store.identity_json`: ``customer_id,
    identity`` (the block as JSON text), or None without identity tables."""
    from pyspark.sql import functions as F

    from customer360.identity.store import GOLDEN_ATTRIBUTES, RECORD_FIELDS

    if not all(tables.has(t) for t in ("identity_golden", "identity_crosswalk",
                                       "identity_records")):
        return None
    records = tables.table("identity_records")
    fields = [F.col(f"r.{f}").cast("string").alias(f) for f in RECORD_FIELDS if f in
              records.columns]
    recs = (tables.table("identity_crosswalk").alias("c")
            .join(records.alias("r"), F.col("c.record_key") == F.col("r.record_key"))
            .groupBy(F.col("c.customer_id").alias("customer_id"))
            .agg(F.sort_array(F.collect_list(F.struct(
                F.col("c.source_system").alias("source_system"),
                F.col("c.source_record_id").alias("source_record_id"),
                F.col("c.match_probability").alias("match_probability"), *fields,
            ))).alias("source_records")))
    golden = tables.table("identity_golden")

    def attribute(a: str) -> Any:
        source = F.col(f"{a}_source")
        system = F.split(source, ":").getItem(0)
        return F.struct(F.lit(a).alias("attribute"), F.col(a).cast("string").alias("value"),
                        system.alias("source_system"),
                        F.substring(source, F.length(system) + 2, 1 << 20)
                        .alias("source_record_id"))

    kept = F.filter(F.array(*[attribute(a) for a in GOLDEN_ATTRIBUTES]),
                    lambda x: x["value"].isNotNull())
    block = golden.select("customer_id", kept.alias("golden")).join(recs, "customer_id")
    if tables.has("identity_aliases"):
        aliases = (tables.table("identity_aliases").groupBy("customer_id")
                   .agg(F.sort_array(F.collect_list("alias_id")).alias("aliases")))
        block = block.join(aliases, "customer_id", "left")
    else:
        block = block.withColumn("aliases", F.lit(None).cast("array<string>"))
    block = block.withColumn("aliases", F.coalesce("aliases", F.array().cast("array<string>")))
    payload = F.struct("golden", "source_records", "aliases")
    return block.select("customer_id", F.to_json(payload, {"ignoreNullFields": "false"})
                        .alias("identity"))


# --- per-customer steps in the executors ------------------------------------------------------


_SCORERS: dict[tuple, Any] = {}


def _scorer_key(context: dict[str, Any]) -> tuple:
    return tuple(sorted(context["env"].items())), tuple(sorted(context["versions"].items()))


def _executor_scorer(context: dict[str, Any]) -> Any:
    """The :class:`ProfileScorer` of this Python worker, loaded once per worker (the champions
    from the registry at the driver's versions)."""
    from customer360.serving.profile import ProfileScorer, load_champions

    key = _scorer_key(context)
    scorer = _SCORERS.get(key)
    if scorer is None:
        os.environ.update(context["env"])
        champions = load_champions(list(context["versions"]), context["config"].alias)
        found = {n: c.version for n, c in champions.items()}
        if found != context["versions"]:
            raise Customer360Error(
                f"The registry's '{context['config'].alias}' models changed during the job "
                f"(driver {context['versions']}, executor {found}); run the job again."
            )
        scorer = ProfileScorer(champions, context["population"], context["config"])
        _SCORERS[key] = scorer
    return scorer


def score_bucket(
    rows: pd.DataFrame, history: pd.DataFrame, context: dict[str, Any]
) -> pd.DataFrame:
    """The flat profile rows (as :func:`customer360.serving.batch.score_customers` writes them,
    without ``identity``) of one bucket of customers: ``rows`` holds their features, ``prob__*``
    scores and classifications (columns prefixed ``_cls__``), ``history`` their past offers."""
    from dataclasses import replace

    from customer360.serving.batch import _with_definitions

    if rows.empty:
        return pd.DataFrame()
    scorer = _executor_scorer(context)
    rows = rows.sort_values("customer_id", ignore_index=True)
    classes = rows[[c for c in rows.columns if c.startswith(_CLASS_PREFIX)]]
    classes = classes.rename(columns=lambda c: c.removeprefix(_CLASS_PREFIX))
    classes.index = pd.Index(rows["customer_id"].to_numpy(), name="customer_id")
    prob_cols = context["prob_columns"]
    features = rows[[*context["feature_columns"], *prob_cols]]
    scorer.population = replace(
        context["population"],
        classifications=classes,
        prob=features[["customer_id", *prob_cols]].set_index("customer_id"),
        history=history[context["history_columns"]].reset_index(drop=True),
    )
    size = context["config"].chunk_size
    parts = [
        _with_definitions(scorer.score(features.iloc[i : i + size].reset_index(drop=True),
                                       exclusions=False))
        for i in range(0, len(features), size)
    ]
    return contiguous_columns(pd.concat(parts, ignore_index=True))


def contiguous_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its Arrow-backed columns (pandas 3's strings) as object columns.

    Concatenating chunks leaves such a column as several Arrow chunks, and PySpark's pandas ->
    Arrow conversion of a UDF's result takes one contiguous array per column (it fails with
    "Cannot convert pyarrow.lib.ChunkedArray to pyarrow.lib.Array" once a bucket holds more
    customers than ``chunk_size``)."""
    arrow = [c for c, t in frame.dtypes.items()
             if isinstance(t, pd.ArrowDtype)
             or (isinstance(t, pd.StringDtype) and t.storage == "pyarrow")]
    if not arrow:
        return frame
    return frame.astype({c: object for c in arrow})


def score_spark_job(
    spark: Any,
    tables: SparkTables,
    as_of: dt.date | str,
    output: str | Path,
    *,
    buckets: int | None = None,
) -> dict[str, Any]:
    """Score every customer of the ``as_of`` snapshot on Spark into the Parquet folder
    ``output`` (the columns of ``customer360 score``).

    Parameters
    ----------
    spark
        The session (local mode or a cluster's).
    tables
        Where the warehouse tables live.
    buckets
        Groups of customers scored together in the executors (default
        ``spark.sql.shuffle.partitions``).

    Returns
    -------
    dict
        ``rows``, ``buckets``, ``seconds`` and ``model_versions``.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import from_arrow_schema

    from customer360.models.nbo import load_nbo_config, offer_catalogue
    from customer360.models.segments import load_segments_config
    from customer360.models.segments_spark import classify
    from customer360.serving.batch import _arrow_schema
    from customer360.serving.profile import (
        Population,
        ProfileScorer,
        _policies,
        load_champions,
        prob_horizons,
    )
    from customer360.serving.schemas import load_serving_config
    from customer360.training.tracking import tracking_uri

    started = time.perf_counter()
    as_of = pd.Timestamp(as_of).date()
    config = load_serving_config()
    champions = load_champions(["churn", "clv", "nbo"], config.alias)
    versions = {n: c.version for n, c in champions.items()}
    # cached: classification's aggregates, the sample and the scoring all read them
    snap = tables.table(SNAPSHOT_TABLE).where(F.to_date("as_of") == F.lit(as_of)).cache()
    total = snap.count()
    if total == 0:
        raise WarehouseError(
            f"{SNAPSHOT_TABLE} has no rows for as_of {as_of}. Run `customer360 features build "
            f"--as-of {as_of}` first."
        )
    seg_cfg, nbo_cfg = load_segments_config(), load_nbo_config()
    horizons = sorted({config.prob_horizon_days, *prob_horizons(champions)})
    prob = probabilistic_scores(tables, as_of, horizons).cache()
    log.info("probabilistic scores of %d customers (%.1f s)", prob.count(),
             time.perf_counter() - started)
    cycles = observed_sales_cycles(tables, as_of)  # issue 15: won deals' sales cycles
    classes = classify(snap, seg_cfg, clv=prob, cycles=cycles).drop("as_of")
    classes = classes.select("customer_id", *[
        F.col(c).alias(_CLASS_PREFIX + c) for c in classes.columns if c != "customer_id"])
    classes = classes.cache()
    log.info("classified %d customers (%.1f s)", classes.count(), time.perf_counter() - started)
    offers = offer_catalogue(tables.table(nbo_cfg.catalogue.source_table).toPandas()
                             .sort_values("offer_id", ignore_index=True), nbo_cfg)
    history = offer_history(tables, offers)
    n_buckets = buckets or int(spark.conf.get("spark.sql.shuffle.partitions"))
    bucket = F.pmod(F.hash("customer_id"), F.lit(n_buckets)).alias("_bucket")
    wide = (snap.join(prob, "customer_id", "left").join(classes, "customer_id", "left")
            .withColumn("_bucket", bucket))
    history = history.withColumn("_bucket", bucket)

    population = Population(
        as_of=as_of, classifications=pd.DataFrame(), prob=pd.DataFrame(), policies=_policies(
            None, seg_cfg), offers=offers, history=pd.DataFrame(), bandit=bandit_state(tables),
        segments_config=seg_cfg, nbo_config=nbo_cfg, classify_base=None,
    )
    context = {
        "env": {k: os.environ[k] for k in EXECUTOR_ENV if k in os.environ}
        | {"MLFLOW_TRACKING_URI": tracking_uri()},
        "versions": versions,
        "config": config,
        "population": population,
        "feature_columns": [c for c in snap.columns],
        "prob_columns": [c for c in prob.columns if c != "customer_id"],
        "history_columns": ["customer_id", "offer_id", "ts", "channel", "accepted"],
    }
    # The output schema from a few customers scored on the driver (as the DuckDB path takes
    # it from its first chunk).
    # The driver's scorer reuses the champions loaded above.
    _SCORERS[_scorer_key(context)] = ProfileScorer(champions, population, config)
    sample_ids = [r[0] for r in snap.select("customer_id").orderBy("customer_id").limit(8)
                  .collect()]
    sample = score_bucket(
        wide.where(F.col("customer_id").isin(sample_ids)).drop("_bucket").toPandas(),
        history.where(F.col("customer_id").isin(sample_ids)).drop("_bucket").toPandas(),
        context,
    )
    _SCORERS.clear()  # the driver's copy is not needed any more
    schema = from_arrow_schema(_arrow_schema(sample))
    log.info("output schema from %d sample rows (%.1f s)", len(sample),
             time.perf_counter() - started)

    def score_group(rows: pd.DataFrame, past: pd.DataFrame) -> pd.DataFrame:
        out = score_bucket(rows.drop(columns="_bucket"), past.drop(columns="_bucket"), context)
        return out if len(out) else pd.DataFrame({f.name: [] for f in schema.fields})

    scored = (wide.groupBy("_bucket").cogroup(history.groupBy("_bucket"))
              .applyInPandas(score_group, schema))
    ident = identity_blocks(tables)
    if ident is not None:
        scored = scored.join(ident, "customer_id", "left")
    else:
        scored = scored.withColumn("identity", F.lit(None).cast("string"))
    columns = [*sample.columns, "identity"]
    scored.select(*columns).write.mode("overwrite").parquet(str(output))
    rows = spark.read.parquet(str(output)).count()
    log.info("wrote %d rows to %s (%.1f s)", rows, output, time.perf_counter() - started)
    for frame in (snap, prob, classes):
        frame.unpersist()
    if rows != total:
        raise WarehouseError(
            f"Scored {rows} customers but the snapshot as of {as_of} has {total}; the "
            "warehouse changed during scoring. Run again."
        )
    return {"rows": rows, "buckets": n_buckets, "seconds": time.perf_counter() - started,
            "model_versions": versions}


# --- entry points -----------------------------------------------------------------------------


def score_customers_spark(
    as_of: dt.date | str,
    output: str | Path,
    *,
    db: str | Path | None = None,
    spark: Any = None,
    table: str = "customer_scores",
) -> Any:
    """``customer360 score --engine spark``: export the DuckDB warehouse's tables to Parquet
    beside ``output``, score them in a local Spark session (or ``spark``), write the Parquet
    folder ``output`` and replace the DuckDB table ``table`` with it.

    Returns a :class:`customer360.serving.batch.ScoreReport` (``chunks`` = buckets).
    """
    import shutil
    import tempfile

    from customer360.data.warehouse import connect
    from customer360.features.engine import local_spark
    from customer360.serving.batch import ScoreReport, _score_sales
    from customer360.serving.schemas import load_serving_config

    started = time.perf_counter()
    as_of = pd.Timestamp(as_of).date()
    output = Path(output)
    spark = spark or local_spark()
    work = Path(tempfile.mkdtemp(prefix="c360_score_spark_"))
    try:
        with connect(db, read_only=True) as con:
            tables = SparkTables.from_duckdb(con, spark, work, as_of)
        done = score_spark_job(spark, tables, as_of, output)
        with connect(db) as con:
            con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM "
                        f"read_parquet('{output}/*.parquet')")
            # issue 15: open leads and opportunities are small; scored on the driver as the
            # DuckDB path scores them (OUTPUT_leads.parquet, ... next to the folder)
            sales_outputs = _score_sales(con, as_of, output, load_serving_config())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ScoreReport(as_of=as_of, rows=done["rows"], chunks=done["buckets"],
                       output=str(output), table=table, seconds=time.perf_counter() - started,
                       model_versions=done["model_versions"],
                       sales_outputs=tuple(sales_outputs))


def main(argv: list[str] | None = None) -> int:
    """``spark-submit ... customer360/serving/batch_spark.py --as-of D --tables DIR --output
    DIR``: the daily job against a cluster's session (master from ``spark-submit``)."""
    from pyspark.sql import SparkSession

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--as-of", required=True, help="Snapshot date (YYYY-MM-DD).")
    parser.add_argument("--output", required=True, help="Parquet folder to write.")
    parser.add_argument("--tables", default=None,
                        help="Folder of <table>.parquet (default: the session's catalog).")
    parser.add_argument("--buckets", type=int, default=None,
                        help="Customer groups scored together (default: shuffle partitions).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    spark = SparkSession.builder.appName("customer360-score").getOrCreate()
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
    done = score_spark_job(spark, SparkTables(spark, args.tables), args.as_of, args.output,
                           buckets=args.buckets)
    print(f"Scored {done['rows']:,} customers as of {args.as_of} in {done['seconds']:.1f} s "
          f"({done['buckets']} buckets) -> {args.output}; models {done['model_versions']}")
    return 0


if __name__ == "__main__":  # pragma: no cover - spark-submit entry
    raise SystemExit(main())
