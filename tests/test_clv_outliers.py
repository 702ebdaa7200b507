"""A contract-valid outlier never stops scoring (issue 12, item 5): the Gamma-Gamma fit that
fails on it falls back to capped spend with a warning and a recorded reason."""

from __future__ import annotations

import numpy as np
import pytest
from test_clv_probabilistic import _tiny_warehouse

from customer360.errors import ModelError
from customer360.models.clv import GammaGammaModel
from customer360.training.probabilistic import probabilistic_scores, warehouse_rfm


def _with_outlier(tmp_path):
    con = _tiny_warehouse(tmp_path / "w.duckdb")
    buyer = con.execute(
        "SELECT customer_id FROM transactions WHERE NOT is_return GROUP BY 1 "
        "HAVING count(*) >= 3 ORDER BY 1 LIMIT 1"
    ).fetchone()[0]
    con.execute(
        "INSERT INTO transactions SELECT customer_id, ts + INTERVAL 1 HOUR, 1e308, is_return, "
        "0.0 FROM transactions WHERE customer_id = ? AND NOT is_return ORDER BY ts DESC LIMIT 1",
        [buyer],
    )
    return con, buyer


def test_a_1e308_order_falls_back_with_a_warning_and_scores_stay_finite(tmp_path, caplog):
    con, buyer = _with_outlier(tmp_path)
    rfm = warehouse_rfm(con, "2025-12-31", time_unit="W")
    with pytest.raises(ModelError, match="q=.* <= 1"):
        GammaGammaModel(fallback_cap_quantile=None).fit(rfm)
    with pytest.warns(RuntimeWarning, match="Gamma-Gamma fit failed .* capped at"):
        model = GammaGammaModel().fit(rfm)
    assert model.spend_cap_ < 1e6 and "q=" in model.fallback_reason_
    assert model.params_["q"] > 1

    with pytest.warns(RuntimeWarning, match="Gamma-Gamma fit failed"):
        scores = probabilistic_scores(con, "2025-12-31", horizon_days=90, discount_rate=0.1)
    assert len(scores) == 302
    values = scores.drop(columns="customer_id").to_numpy(dtype=float)
    assert np.isfinite(values).all()
    row = scores.set_index("customer_id").loc[buyer]
    assert row["prob__expected_spend"] <= model.spend_cap_
    assert "refitted with mean spend capped" in caplog.text
