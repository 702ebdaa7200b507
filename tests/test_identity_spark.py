"""Issue 14: one trained model, two engines (DuckDB and Spark), the same clusters."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from customer360.data.synthetic_identity import generate_source_records
from customer360.errors import IdentityError

pytestmark = pytest.mark.spark

COLUMNS = ["source_record_id", "given_name", "surname", "company_name", "email", "phone",
           "street", "postcode", "city", "date_of_birth", "company_id"]


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    pytest.importorskip("pyspark")
    from pyspark.sql import SparkSession
    from splink.backends.spark import similarity_jar_location

    from customer360.features.engine import local_spark

    # spark.jars only applies to a new session: stop one a previous module of this process left.
    active = SparkSession.getActiveSession()
    if active is not None:
        active.stop()
    session = local_spark(
        cores=2, app_name="customer360-identity",
        **{"spark.jars": similarity_jar_location(), "spark.sql.shuffle.partitions": "1",
           "spark.sql.adaptive.enabled": "false", "spark.default.parallelism": "1"},
    )
    session.sparkContext.setCheckpointDir(str(tmp_path_factory.mktemp("splink_checkpoints")))
    yield session
    session.stop()


def _partition(clusters: pd.DataFrame) -> set[frozenset[str]]:
    ids = clusters["source"] + ":" + clusters["record_id"]
    return {frozenset(members) for members in ids.groupby(clusters["customer_id"]).agg(list)}


def test_duckdb_and_spark_give_the_same_clusters_on_a_small_set(spark):
    from customer360.identity.unify import spark_clusters, unify_frames

    records, truth = generate_source_records(70, seed=4)
    web = records["source_system"] == "webshop"
    frames = {"crm": records.loc[~web, COLUMNS].astype("string"),
              "webshop": records.loc[web, COLUMNS].astype("string")}
    duck = unify_frames(frames, id_col="source_record_id")
    assert duck["report"]["link_type"] == "link_and_dedupe"
    merged = duck["clusters"]["customer_id"].value_counts()
    assert (merged > 1).sum() >= 5, "the set must hold duplicates for the check to mean anything"
    on_spark = spark_clusters(spark, frames, id_col="source_record_id",
                              settings=duck["settings"])
    assert len(on_spark) == len(duck["clusters"]) == len(records)
    assert _partition(on_spark) == _partition(duck["clusters"])
    # A model whose given-name comparison lacks a level (one trained before the nickname
    # level) is refused with a message, not zipped level by level against the wrong SQL.
    old = json.loads(json.dumps(duck["settings"]))
    given = next(c for c in old["comparisons"] if c["output_column_name"] == "std_given_name")
    given["comparison_levels"] = [lv for lv in given["comparison_levels"]
                                  if lv.get("label_for_charts") != "Nicknames of the same name"]
    with pytest.raises(IdentityError, match="retrain"):
        spark_clusters(spark, frames, id_col="source_record_id", settings=old)
