"""The probabilistic inputs (``prob__*``) of the churn and ML-CLV models, computed from features.

The LightGBM models are stacked on BG/NBD + Gamma-Gamma scores. A registered model carries the
two fitted probabilistic models (the parameters it was trained with) in a
:class:`ProbabilisticStack`, which derives the RFM summary of every row from four
transactional features and scores it. So ``mlflow.pyfunc.load_model(...).predict(frame)`` on a
plain feature frame (``customer360 features build --output``) needs no ``prob__`` columns, and
the service, batch scoring and a notebook all get the same answers.

RFM in the probabilistic models' time unit (weeks by default), as of the feature date T:

* ``frequency = txn__purchase_days__all - 1`` (repeat purchase days);
* ``recency = (txn__first_purchase_days__all - txn__recency_days__all) / 7``;
* ``T = txn__first_purchase_days__all / 7``;
* ``monetary_value = txn__repeat_spend_mean__all``.

These equal :func:`customer360.features.rfm.rfm_summary` over the purchases before T (a test
checks it). Customers without a purchase before T are outside the models' scope and get the
documented defaults of :func:`customer360.models.clv.probabilistic_scores`.

Pure: frames in, frames out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from customer360.errors import ModelError

PROB_PREFIX = "prob__"
RFM_FEATURES = {
    "purchase_days": "txn__purchase_days__all",
    "first_days": "txn__first_purchase_days__all",
    "recency_days": "txn__recency_days__all",
    "repeat_spend": "txn__repeat_spend_mean__all",
}
"""The transactional features the RFM summary is derived from."""

_PURCHASES = re.compile(rf"{PROB_PREFIX}expected_purchases__(\d+)d")


def is_prob_column(name: str) -> bool:
    """Whether ``name`` is one of the stacked probabilistic scores."""
    return str(name).startswith(PROB_PREFIX)


def rfm_from_features(features: pd.DataFrame, time_unit: str = "W") -> pd.DataFrame:
    """``frequency, recency, T, monetary_value`` (rows of ``features``, same index) and a
    ``buyer`` flag (a purchase before the feature date).

    Examples
    --------
    >>> f = pd.DataFrame({"txn__purchase_days__all": [3, 0], "txn__first_purchase_days__all":
    ...     [70.0, None], "txn__recency_days__all": [14.0, None],
    ...     "txn__repeat_spend_mean__all": [25.0, 0.0]})
    >>> rfm_from_features(f, "W").round(2).to_dict("list")["recency"]
    [8.0, 0.0]
    """
    from customer360.models.clv import DAYS_PER_UNIT

    missing = [c for c in RFM_FEATURES.values() if c not in features.columns]
    if missing:
        raise ModelError(
            f"The model computes its prob__ inputs from {', '.join(RFM_FEATURES.values())}; "
            f"the input lacks {', '.join(missing)}. Pass the frame `customer360 features build` "
            "writes (every registry feature)."
        )
    unit = DAYS_PER_UNIT[time_unit]

    def number(key: str) -> np.ndarray:
        return pd.to_numeric(features[RFM_FEATURES[key]], errors="coerce").to_numpy(
            dtype=np.float64, na_value=np.nan
        )

    days = number("purchase_days")
    first = number("first_days")
    last = number("recency_days")
    buyer = (days >= 1) & np.isfinite(first) & np.isfinite(last)
    frequency = np.where(buyer, np.maximum(days - 1, 0), 0.0)
    spend = np.nan_to_num(number("repeat_spend"), nan=0.0)
    return pd.DataFrame(
        {
            "frequency": frequency,
            "recency": np.where(buyer, (first - last) / unit, 0.0),
            "T": np.where(buyer, first / unit, 0.0),
            "monetary_value": np.where(frequency > 0, spend, 0.0),
            "buyer": buyer,
        },
        index=features.index,
    )


def purchase_horizons(columns: Sequence[str]) -> list[int]:
    """Horizons (days) of the ``prob__expected_purchases__{H}d`` names in ``columns``."""
    return sorted({int(m.group(1)) for c in columns if (m := _PURCHASES.fullmatch(str(c)))})


@dataclass
class ProbabilisticStack:
    """Fitted BG/NBD + Gamma-Gamma and the CLV settings the ``prob__`` inputs were made with.

    ``transform(features, columns)`` returns the requested ``prob__`` columns for every row.
    """

    transaction_model: Any  # a fitted customer360.models.clv.BetaGeoModel
    spend_model: Any  # a fitted customer360.models.clv.GammaGammaModel
    months: int
    annual_discount_rate: float
    margin_rate: float
    time_unit: str
    fitted_as_of: str

    def transform(self, features: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
        """The ``prob__`` ``columns`` of ``features`` (same index), scored at the feature date.

        Examples
        --------
        >>> stack.transform(frame, ["prob__p_alive", "prob__clv"])  # doctest: +SKIP
        """
        from customer360.models.clv import DAYS_PER_UNIT, customer_clv

        rfm = rfm_from_features(features, self.time_unit)
        buyer = rfm["buyer"].to_numpy()
        scored = rfm[buyer]
        unit = DAYS_PER_UNIT[self.time_unit]
        out = pd.DataFrame(index=features.index)
        for name in columns:
            values = np.zeros(len(rfm))
            if name == f"{PROB_PREFIX}expected_spend":
                values[:] = self.spend_model.population_mean_spend_
            if len(scored):
                if name == f"{PROB_PREFIX}p_alive":
                    values[buyer] = self.transaction_model.p_alive(scored)
                elif name == f"{PROB_PREFIX}expected_spend":
                    values[buyer] = self.spend_model.expected_spend(scored)
                elif name == f"{PROB_PREFIX}clv":
                    values[buyer] = customer_clv(
                        self.transaction_model, self.spend_model, scored, months=self.months,
                        annual_discount_rate=self.annual_discount_rate,
                        margin_rate=self.margin_rate, time_unit=self.time_unit,
                    )
                elif match := _PURCHASES.fullmatch(name):
                    horizon = int(match.group(1)) / unit
                    values[buyer] = self.transaction_model.expected_purchases(scored, horizon)
                else:
                    raise ModelError(f"Unknown probabilistic input {name!r}.")
            out[name] = values
        return out

    def params(self) -> dict[str, float | str]:
        """Flat parameters for the run and the model's ``meta.json``."""
        out: dict[str, float | str] = {
            f"bgnbd_{k}": v for k, v in self.transaction_model.params_.items()
        }
        out.update({f"gamma_gamma_{k}": v for k, v in self.spend_model.params_.items()})
        out.update(
            months=self.months, annual_discount_rate=self.annual_discount_rate,
            margin_rate=self.margin_rate, time_unit=self.time_unit,
            fitted_as_of=self.fitted_as_of,
        )
        return out
