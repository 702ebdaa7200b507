"""Batch scoring: every customer of a feature snapshot, in chunks, to Parquet and DuckDB.

:func:`score_customers` (CLI: ``customer360 score``) streams the snapshot out of DuckDB chunk
by chunk and scores each chunk with the same :class:`~customer360.serving.profile.ProfileScorer`
the service uses, so a customer's row here equals the service's answer for that customer.
Memory is flat in the number of customers except for the population-level parts that must see
everyone (classification columns, probabilistic scores).

:func:`score_spark` scores churn and ML CLV on Spark through ``mlflow.pyfunc.spark_udf`` for
feature tables beyond one machine.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from customer360.errors import Customer360Error, WarehouseError
from customer360.serving.profile import (
    REASON_COLUMNS,
    SNAPSHOT_TABLE,
    Population,
    ProfileScorer,
    load_champions,
    prob_horizons,
)
from customer360.serving.schemas import ServingConfig, load_serving_config

log = logging.getLogger(__name__)

SCORES_TABLE = "customer_scores"
ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class ScoreReport:
    """What a batch scoring run wrote."""

    as_of: dt.date
    rows: int
    chunks: int
    output: str
    table: str
    seconds: float
    model_versions: dict[str, str]
    sales_outputs: tuple[str, ...] = ()  # issue 15: lead / opportunity / forecast Parquet


def _snapshot_rows(con: Any, as_of: dt.date) -> int:
    from customer360.data.warehouse import table_exists

    if not table_exists(con, SNAPSHOT_TABLE):
        raise WarehouseError(
            f"The warehouse has no {SNAPSHOT_TABLE} table. Run `customer360 features build "
            f"--as-of {as_of}` first."
        )
    n = con.execute(
        f"SELECT count(*) FROM {SNAPSHOT_TABLE} WHERE CAST(as_of AS DATE) = ?", [as_of]
    ).fetchone()[0]
    if n == 0:
        dates = [
            str(r[0])
            for r in con.execute(
                f"SELECT DISTINCT CAST(as_of AS DATE) FROM {SNAPSHOT_TABLE} ORDER BY 1"
            ).fetchall()
        ]
        raise WarehouseError(
            f"{SNAPSHOT_TABLE} has no rows for as_of {as_of} (it has {', '.join(dates)}). Run "
            f"`customer360 features build --as-of {as_of}` first, or score one of those dates."
        )
    return int(n)


def build_scorer(
    con: Any, as_of: dt.date, config: ServingConfig
) -> ProfileScorer:
    """Champions + population context for ``as_of``, reading only the columns classification
    needs for the whole population."""
    from customer360.models.segments import load_segments_config, required_features

    champions = load_champions(config.models, config.alias)
    cols = ["customer_id", "as_of", *required_features(load_segments_config())]
    select = ", ".join(dict.fromkeys(f'"{c}"' for c in cols))
    base = con.execute(
        f"SELECT {select} FROM {SNAPSHOT_TABLE} WHERE CAST(as_of AS DATE) = ? "
        "ORDER BY customer_id",
        [as_of],
    ).df()
    population = Population.build(
        con, base, as_of, config, prob_horizons=prob_horizons(champions)
    )
    return ProfileScorer(champions, population, config)


def score_customers(
    as_of: dt.date | str,
    output: str | Path,
    *,
    db: str | Path | None = None,
    chunk_size: int | None = None,
    table: str = SCORES_TABLE,
    on_progress: ProgressCallback | None = None,
) -> ScoreReport:
    """Score every customer of the ``as_of`` feature snapshot.

    Parameters
    ----------
    as_of
        Snapshot date (``feature_snapshots`` must hold it).
    output
        Parquet file to write (one row per customer, the flat profile columns).
    db
        Warehouse file (default ``$CUSTOMER360_DB`` / ``data/customer360.duckdb``); the scores
        also replace the DuckDB table ``table`` in it.
    chunk_size
        Customers per chunk (default ``chunk_size`` of ``configs/serving.yaml``).
    on_progress
        Called with ``(customers_done, customers_total)`` after each chunk.

    Examples
    --------
    >>> score_customers("2026-06-30", "out/scores.parquet")  # doctest: +SKIP
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from customer360.data.warehouse import connect

    started = time.perf_counter()
    as_of = pd.Timestamp(as_of).date()
    config = load_serving_config()
    chunk_size = chunk_size or config.chunk_size
    if chunk_size < 1:
        raise Customer360Error(f"--chunk-size must be at least 1, got {chunk_size}.")
    output = Path(output)
    if output.suffix != ".parquet":
        raise Customer360Error(f"--output must be a .parquet file, got {output}.")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".partial")

    con = connect(db)
    try:
        total = _snapshot_rows(con, as_of)
        scorer = build_scorer(con, as_of, config)
        side = con.cursor()
        # Arrow batches of exactly chunk_size rows (issue 17: chunks no longer round up to
        # DuckDB's 2048-row vectors), each turned into the frame the models read.
        reader = con.cursor()  # its own cursor: build_scorer's queries stay on con
        stream = reader.sql(
            f"SELECT * FROM {SNAPSHOT_TABLE} WHERE CAST(as_of AS DATE) = ? ORDER BY customer_id",
            params=[as_of],
        ).to_arrow_reader(chunk_size)
        writer: pq.ParquetWriter | None = None
        schema: pa.Schema | None = None
        done = chunks = 0
        try:
            for batch in stream:
                if batch.num_rows == 0:
                    continue
                chunk = batch.to_pandas()
                flat = scorer.score(chunk, exclusions=False)
                flat = _with_definitions(flat)  # issue 13: horizons and definitions
                flat = _with_identity(side, flat)  # issue 14: golden + source records
                if schema is None:
                    schema = _described(_arrow_schema(flat))
                    writer = pq.ParquetWriter(tmp, schema)
                writer.write_table(pa.Table.from_pandas(flat, schema=schema, preserve_index=False))
                done += len(chunk)
                chunks += 1
                log.info("scored chunk %d (%d/%d customers)", chunks, done, total)
                if on_progress is not None:
                    on_progress(done, total)
        finally:
            if writer is not None:
                writer.close()
            reader.close()
        if done != total:
            raise WarehouseError(
                f"Scored {done} customers but the snapshot as of {as_of} has {total}; the "
                "warehouse changed during scoring. Run again."
            )
        tmp.replace(output)
        side.execute(
            f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM read_parquet(?)", [str(output)]
        )
        sales_outputs = _score_sales(side, as_of, output, config)  # issue 15
        side.close()
    finally:
        if tmp.exists():
            tmp.unlink()
        con.close()
    return ScoreReport(
        as_of=as_of,
        rows=done,
        chunks=chunks,
        output=str(output),
        table=table,
        seconds=time.perf_counter() - started,
        model_versions=scorer.model_versions,
        sales_outputs=tuple(sales_outputs),
    )


def _score_sales(con: Any, as_of: dt.date, output: Path, config: ServingConfig) -> list[str]:
    """Issue 15: open leads and opportunities scored as the service scores them, written
    next to ``output`` and kept in ``lead_scores`` / ``opportunity_scores``."""
    from customer360.serving.sales import load_sales_models, score_sales, store_sales_scores

    scores = score_sales(con, as_of, load_sales_models(config.alias))
    return store_sales_scores(con, scores, output)


def _with_identity(con: Any, flat: pd.DataFrame) -> pd.DataFrame:
    """``flat`` with the text column ``identity``: each customer's identity block as JSON
    (:func:`customer360.identity.store.identity_json`, the same as ``/customer360``'s
    ``identity``), null when the customer has none or the warehouse has no identity tables."""
    from customer360.identity.store import identity_json

    blocks = identity_json(con, flat["customer_id"].astype(str).tolist())
    mapped = flat["customer_id"].astype(str).map(blocks.set_index("customer_id")["identity"])
    return flat.assign(identity=mapped.astype(object).where(mapped.notna(), None))


def _arrow_schema(flat: pd.DataFrame):
    """The output schema from the first chunk; all-null text columns typed as strings so
    later chunks fit."""
    import pyarrow as pa

    schema = pa.Schema.from_pandas(flat, preserve_index=False)
    fields = [
        pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f for f in schema
    ]
    return pa.schema(fields)


# --- issue 13: what the score columns mean ----------------------------------------------------


def _with_definitions(flat: pd.DataFrame) -> pd.DataFrame:
    """``flat`` with the constant horizon columns (``churn_horizon_days``, ...) added."""
    from customer360.serving.definitions import definitions

    return flat.assign(**definitions().horizon_columns())


def _described(schema):
    """``schema`` with each churn / CLV column's definition and horizon as field metadata."""
    import pyarrow as pa

    from customer360.serving.definitions import definitions

    meta = definitions().column_metadata()
    return pa.schema(
        [f.with_metadata(meta[f.name]) if f.name in meta else f for f in schema],
        metadata=schema.metadata,
    )


# --- Spark -----------------------------------------------------------------------------------


CHURN_RESULT_TYPE = "churn_probability double, " + ", ".join(
    f"{c} string" for c in REASON_COLUMNS
)


def spark_input(
    spark: Any,
    db: str | Path | None,
    as_of: dt.date | str,
    *,
    customer_ids: list[str] | None = None,
    config: ServingConfig | None = None,
) -> Any:
    """A Spark DataFrame of model inputs from the warehouse: the snapshot's features plus the
    probabilistic scores the models are stacked on, cast to the signatures' types.

    For feature tables that fit in DuckDB (and the tests); at scale, build the same columns on
    Spark (``customer360.features`` runs on Spark too) and pass them to :func:`score_spark`.
    """
    from customer360.data.warehouse import connect
    from customer360.serving.profile import conform, load_snapshot, probabilistic_frame

    config = config or load_serving_config()
    as_of = pd.Timestamp(as_of).date()
    champions = load_champions(["churn", "clv"], config.alias)
    horizons = prob_horizons(champions)
    with connect(db, read_only=True) as con:
        features = load_snapshot(con, as_of)
        # models registered before they carried their probabilistic stack read prob__ columns;
        # self-contained ones compute them inside from the features
        if horizons:
            prob = probabilistic_frame(con, as_of, horizons)
            features = features.merge(prob, on="customer_id", how="left")
    if customer_ids is not None:
        features = features[features["customer_id"].isin(customer_ids)]
    frame = conform(features, champions.values())
    text = [c for c in frame.columns if pd.api.types.is_string_dtype(frame[c])]
    frame = frame.astype({c: object for c in text})
    frame["as_of"] = pd.to_datetime(frame["as_of"]).dt.date
    return spark.createDataFrame(frame)


def score_spark(spark: Any, features: Any, config: ServingConfig | None = None) -> Any:
    """Churn (with reasons) and ML CLV for a Spark DataFrame of feature rows.

    The registered champions run inside Spark executors through ``mlflow.pyfunc.spark_udf``
    (``env_manager="local"``: executors must run this Python environment, e.g. a session
    created with ``PYSPARK_PYTHON`` / ``spark.pyspark.python`` set to ``sys.executable``).

    Parameters
    ----------
    spark
        The active SparkSession.
    features
        Spark DataFrame with ``customer_id``, ``as_of`` and the models' input columns.

    Returns
    -------
    pyspark.sql.DataFrame
        ``customer_id``, ``as_of``, ``churn_probability``, ``reason_1..3``, ``clv_ml``.
    """
    import mlflow
    from pyspark.sql import functions as F

    from customer360.serving.profile import champion_versions

    config = config or load_serving_config()
    versions = champion_versions(["churn", "clv"], config.alias)
    udfs = {}
    inputs = {}
    for name, result_type in (("churn", CHURN_RESULT_TYPE), ("clv", "double")):
        uri = f"models:/{name}@{config.alias}"
        udfs[name] = mlflow.pyfunc.spark_udf(
            spark, uri, result_type=result_type, env_manager="local"
        )
        meta = mlflow.models.get_model_info(uri)
        inputs[name] = list(meta.signature.inputs.input_names())
    churn_cols = [F.col(f"`{c}`") for c in inputs["churn"]]
    clv_cols = [F.col(f"`{c}`") for c in inputs["clv"]]
    scored = features.select(
        "customer_id",
        "as_of",
        udfs["churn"](F.struct(*churn_cols)).alias("_churn"),
        udfs["clv"](F.struct(*clv_cols)).alias("clv_ml"),
    )
    log.info("spark scoring with model versions %s", versions)
    return scored.select(
        "customer_id",
        "as_of",
        *[F.col(f"_churn.{c}").alias(c) for c in ("churn_probability", *REASON_COLUMNS)],
        "clv_ml",
    )
