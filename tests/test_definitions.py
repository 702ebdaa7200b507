"""Every served churn / CLV number names its definition and horizon (issue 13, item 7)."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from customer360.serving.batch import _described, _with_definitions
from customer360.serving.schemas import ChurnResult, ClvResult, ProfileResult
from customer360.training.churn import load_churn_config
from customer360.training.clv import load_clv_ml_config


def test_api_results_carry_definition_and_horizon():
    churn = ChurnResult(customer_id="c1", as_of=None, churn_probability=0.3, reasons=[])
    assert churn.horizon_days == load_churn_config().horizon_days
    assert f"{churn.horizon_days} days" in churn.definition
    clv = ClvResult(customer_id="c1", as_of=None, clv_ml=10.0, prob_clv=12.0, horizon_days=365)
    assert clv.clv_ml_horizon_days == load_clv_ml_config().horizon_days
    assert clv.clv_ml_definition.startswith("ML-CLV") and "Probabilistic" in clv.prob_clv_definition
    assert f"{clv.prob_clv_horizon_months} months" in clv.prob_clv_definition
    # the profile nests both, so probabilistic and ML CLV are told apart there too
    fields = ProfileResult.model_fields["clv"].annotation.model_fields
    assert {"clv_ml_horizon_days", "prob_clv_horizon_months"} <= set(fields)


def test_batch_columns_carry_horizons_and_field_metadata(tmp_path):
    flat = pd.DataFrame({"customer_id": ["a", "b"], "churn_probability": [0.1, 0.9],
                         "clv_ml": [5.0, 1.0], "prob__clv": [4.0, 2.0]})
    out = _with_definitions(flat)
    assert out["churn_horizon_days"].tolist() == [load_churn_config().horizon_days] * 2
    assert {"clv_ml_horizon_days", "prob_clv_horizon_months"} <= set(out.columns)
    schema = _described(pa.Schema.from_pandas(out, preserve_index=False))
    path = tmp_path / "scores.parquet"
    pq.write_table(pa.Table.from_pandas(out, schema=schema, preserve_index=False), path)
    read = pq.read_schema(path)
    meta = read.field("churn_probability").metadata
    assert meta[b"horizon_days"] == str(load_churn_config().horizon_days).encode()
    assert b"no purchase" in meta[b"definition"]
    assert b"ML-CLV" in read.field("clv_ml").metadata[b"definition"]
