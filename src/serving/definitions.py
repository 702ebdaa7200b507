"""What the served numbers mean (issue 13, item 7): the definition and horizon of every
churn, CLV and segment-share output, read once from the training configs.

API responses carry them as fields (``definition`` / ``horizon_days`` on the churn result,
``clv_ml_*`` and ``prob_clv_*`` on the CLV result); batch scoring adds them as Parquet field
metadata and as constant ``*_horizon_*`` columns, so a score file read without this code still
says what it holds.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass


@dataclass(frozen=True)
class Definitions:
    churn_horizon_days: int
    clv_ml_horizon_days: int
    prob_clv_horizon_months: int
    prob_purchases_horizon_days: int

    @property
    def churn(self) -> str:
        return (
            f"Probability that the customer makes no purchase in the {self.churn_horizon_days} "
            "days after the as-of date (contract customers: that the contract ends in them); "
            "calibrated LightGBM (or the linear/blend family the training chose)."
        )

    @property
    def clv_ml(self) -> str:
        return (
            f"ML-CLV: margin the customer is expected to bring in the {self.clv_ml_horizon_days} "
            "days after the as-of date (Tweedie LightGBM stacked on the BG/NBD and Gamma-Gamma "
            "scores); not discounted."
        )

    @property
    def prob_clv(self) -> str:
        return (
            f"Probabilistic CLV: discounted expected margin over the next "
            f"{self.prob_clv_horizon_months} months from BG/NBD (purchases) x Gamma-Gamma "
            "(spend per purchase)."
        )

    @property
    def expected_purchases(self) -> str:
        return (
            f"BG/NBD expected repeat purchases in the {self.prob_purchases_horizon_days} days "
            "after the as-of date."
        )

    def column_metadata(self) -> dict[str, dict[str, str]]:
        """Parquet field metadata of the batch score columns that carry these numbers."""
        return {
            "churn_probability": {
                "definition": self.churn, "horizon_days": str(self.churn_horizon_days)},
            "clv_ml": {"definition": self.clv_ml, "horizon_days": str(self.clv_ml_horizon_days)},
            "prob__clv": {
                "definition": self.prob_clv, "horizon_months": str(self.prob_clv_horizon_months)},
        }

    def horizon_columns(self) -> dict[str, int]:
        """Constant columns batch scoring adds beside the scores."""
        return {
            "churn_horizon_days": self.churn_horizon_days,
            "clv_ml_horizon_days": self.clv_ml_horizon_days,
            "prob_clv_horizon_months": self.prob_clv_horizon_months,
        }


@functools.cache
def definitions() -> Definitions:
    """The definitions from ``configs/churn.yaml``, ``clv.yaml``, ``clv_probabilistic.yaml``
    and ``serving.yaml`` (read once)."""
    from customer360.models.clv import load_clv_config
    from customer360.serving.schemas import load_serving_config
    from customer360.training.churn import load_churn_config
    from customer360.training.clv import load_clv_ml_config

    return Definitions(
        churn_horizon_days=load_churn_config().horizon_days,
        clv_ml_horizon_days=load_clv_ml_config().horizon_days,
        prob_clv_horizon_months=load_clv_config().clv_months,
        prob_purchases_horizon_days=load_serving_config().prob_horizon_days,
    )
