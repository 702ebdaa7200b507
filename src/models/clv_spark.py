"""Probabilistic purchase scores on Spark (issue 17 item 2): a fitted BG/NBD / Pareto/NBD model
evaluated inside the executors, one Arrow batch at a time.

The fitted parameters are a handful of floats, so the model is shipped to the executors with
the task and lifetimes' own closed forms run there (``mapInPandas``); nothing is collected to
the driver and the numbers are those of :meth:`~customer360.models.clv._TransactionModel.p_alive`
and ``expected_purchases``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pandas as pd


def purchase_scores(
    frame: Any,
    model: Any,
    horizons: Sequence[float],
    *,
    spend_model: Any = None,
    id_column: str = "customer_id",
) -> Any:
    """Spark DataFrame ``id_column, p_alive, expected_purchases_<t>`` (one per horizon) of the
    RFM rows ``frame`` (columns ``frequency, recency, T``) under the fitted ``model``; with a
    fitted Gamma-Gamma ``spend_model`` also ``expected_spend`` (needs ``monetary_value``).

    Examples
    --------
    >>> purchase_scores(rfm, BetaGeoModel().fit(rfm_pd), [30, 90]).show()  # doctest: +SKIP
    """
    names = [f"expected_purchases_{t:g}" for t in horizons]
    schema = ", ".join(
        [f"{id_column} string", "p_alive double", *(f"{n} double" for n in names)]
        + (["expected_spend double"] if spend_model is not None else [])
    )
    columns = [id_column, "frequency", "recency", "T"]
    if spend_model is not None:
        columns.append("monetary_value")

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for rfm in batches:
            if rfm.empty:
                continue
            out = {id_column: rfm[id_column].astype(str), "p_alive": model.p_alive(rfm)}
            for name, t in zip(names, horizons, strict=True):
                out[name] = model.expected_purchases(rfm, float(t))
            if spend_model is not None:
                out["expected_spend"] = spend_model.expected_spend(rfm)
            yield pd.DataFrame(out)

    return frame.select(*columns).mapInPandas(score, schema)
