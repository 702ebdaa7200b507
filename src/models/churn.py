"""Churn model: a LightGBM classifier, calibrated on validation data, with reason codes.

The classifier is boosted on the training snapshots with early stopping on the validation
snapshot; its raw scores are then calibrated (isotonic or sigmoid, whichever gives the lower
out-of-fold Brier score on the validation data) because next-best-offer multiplies the
probability by money. Reason codes are LightGBM's own SHAP contributions (``pred_contrib``)
turned into plain sentences from the feature registry's descriptions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from customer360.errors import ModelError
from customer360.models.tabular import (
    BoostedTabularModel,
    TableSchema,
    reason_phrases,
    sample_rows,
)

log = logging.getLogger(__name__)

CALIBRATION_METHODS = ("isotonic", "sigmoid")
NO_CALIBRATION = "none"
REASON_COLUMNS = ("reason_1", "reason_2", "reason_3")
PROBABILITY_FLOOR = 1e-4


@dataclass(frozen=True)
class Calibrator:
    """A monotone map from LightGBM's raw log-odds to a calibrated probability.

    ``method`` is ``isotonic`` (``x``/``y`` are the step function's knots, interpolated) or
    ``sigmoid`` (``x = [slope, intercept]`` of a logistic fit on the raw score; ``none`` is
    the identity ``slope=1, intercept=0``, i.e. LightGBM's own probability).
    """

    method: str
    x: tuple[float, ...]
    y: tuple[float, ...] = ()

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=float)
        if self.method == "isotonic":
            p = np.interp(raw, self.x, self.y)
        else:
            slope, intercept = self.x
            p = 1.0 / (1.0 + np.exp(-(slope * raw + intercept)))
        # Isotonic steps can reach exactly 0 or 1; a churn probability never should.
        return np.clip(p, PROBABILITY_FLOOR, 1.0 - PROBABILITY_FLOOR)

    @classmethod
    def fit(
        cls, raw: np.ndarray, y: np.ndarray, method: str, sample_weight: np.ndarray | None = None
    ) -> Calibrator:
        """Fit ``method`` on raw scores ``raw`` and binary labels ``y`` (rows weighted by
        ``sample_weight`` when given, e.g. NBO's inverse-propensity weights)."""
        raw = np.asarray(raw, dtype=float)
        y = np.asarray(y, dtype=float)
        if method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(
                raw, y, sample_weight=sample_weight
            )
            knots_x, knots_y = iso.X_thresholds_.tolist(), iso.y_thresholds_.tolist()
            return cls("isotonic", tuple(knots_x), tuple(knots_y))
        if method == NO_CALIBRATION:
            return cls(NO_CALIBRATION, (1.0, 0.0))
        if method == "sigmoid":
            from sklearn.linear_model import LogisticRegression

            lr = LogisticRegression(C=1e6, max_iter=1000).fit(
                raw.reshape(-1, 1), y, sample_weight=sample_weight
            )
            return cls("sigmoid", (float(lr.coef_[0, 0]), float(lr.intercept_[0])))
        raise ModelError(
            f"Unknown calibration method {method!r}; use isotonic, sigmoid, none or auto."
        )


def choose_calibrator(
    raw: np.ndarray, y: np.ndarray, method: str = "auto", *, folds: int = 5, seed: int = 0
) -> tuple[Calibrator, dict[str, float]]:
    """Fit the calibrator on validation scores, choosing the method by out-of-fold Brier.

    Each candidate is fitted on k-1 folds of the validation rows and scored on the held-out
    fold, so the comparison with the uncalibrated score is honest. With ``method="auto"`` the
    candidates are isotonic, sigmoid and, as the yardstick, no calibration: when LightGBM's
    own probabilities are already calibrated on the validation data (early stopping on the
    validation log-loss often achieves that), a calibrator that would only add noise is not
    used. Returns the calibrator refitted on all rows and the out-of-fold Brier scores
    (``brier_raw``, ``brier_isotonic``, ``brier_sigmoid``).
    """
    from sklearn.model_selection import StratifiedKFold

    raw = np.asarray(raw, dtype=float)
    y = np.asarray(y, dtype=int)
    fitted = CALIBRATION_METHODS if method == "auto" else (method,)
    oof = {m: np.empty(len(y)) for m in fitted}
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fit_idx, held_idx in splitter.split(raw.reshape(-1, 1), y):
        for m in fitted:
            oof[m][held_idx] = Calibrator.fit(raw[fit_idx], y[fit_idx], m)(raw[held_idx])
    report = {"brier_raw": float(np.mean((1 / (1 + np.exp(-raw)) - y) ** 2))}
    report.update({f"brier_{m}": float(np.mean((p - y) ** 2)) for m, p in oof.items()})
    candidates = [*fitted, NO_CALIBRATION] if method == "auto" else list(fitted)
    best = min(
        candidates, key=lambda m: report["brier_raw" if m == NO_CALIBRATION else f"brier_{m}"]
    )
    log.info("calibration: out-of-fold Brier %s -> chose %s", report, best)
    return Calibrator.fit(raw, y, best), report


class ChurnClassifier(BoostedTabularModel):
    """Calibrated LightGBM churn classifier with plain-language reason codes.

    Parameters
    ----------
    params
        LightGBM hyperparameters (learning rate, leaves, regularisation ...); the objective
        is fixed to ``binary`` with ``binary_logloss`` for early stopping.
    calibration
        ``"auto"`` (isotonic, sigmoid or none, whichever has the lowest out-of-fold Brier
        on the validation data), ``"isotonic"``, ``"sigmoid"`` or ``"none"``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = pd.DataFrame({"days_since_purchase": rng.uniform(0, 100, 400)})
    >>> y = (rng.uniform(size=400) < X["days_since_purchase"] / 100).astype(int)
    >>> m = ChurnClassifier(num_boost_round=20).fit(X[:200], y[:200], X_val=X[200:], y_val=y[200:])
    >>> list(m.predict_frame(X.head(2)).columns)
    ['churn_probability', 'reason_1', 'reason_2', 'reason_3']
    """

    objective = {"objective": "binary", "metric": "binary_logloss"}
    kind = "churn"

    def __init__(
        self,
        *,
        params: dict | None = None,
        num_boost_round: int = 1000,
        early_stopping_rounds: int = 50,
        calibration: str = "auto",
        seed: int = 0,
        n_jobs: int = 2,
    ) -> None:
        super().__init__(
            params=params,
            num_boost_round=num_boost_round,
            early_stopping_rounds=early_stopping_rounds,
            seed=seed,
            n_jobs=n_jobs,
        )
        self.calibration = calibration

    def fit(
        self,
        X: pd.DataFrame | np.ndarray,
        y: np.ndarray,
        *,
        X_val: pd.DataFrame | np.ndarray,
        y_val: np.ndarray,
        schema: TableSchema | None = None,
        descriptions: dict[str, str] | None = None,
        callbacks: Sequence[Callable] = (),
        calibrate: bool = True,
    ) -> ChurnClassifier:
        """Boost on (``X``, ``y``), stop early and calibrate on (``X_val``, ``y_val``).

        ``y`` is 1 for churners. ``schema`` fixes how columns are read (inferred from ``X``
        when omitted); ``descriptions`` maps column -> plain description for reason codes.
        ``calibrate=False`` skips calibration (used inside tuning trials, whose objective is
        the booster's validation log-loss); predictions then use the sigmoid of the raw score.
        """
        for name, labels in (("training", y), ("validation", y_val)):
            if len(np.unique(np.asarray(labels))) < 2:
                raise ModelError(
                    f"The {name} rows hold only one class; churn needs churners and stayers in "
                    "both training and validation data."
                )
        _, val_m = self._fit_booster(
            X, y, X_val, y_val, schema=schema, descriptions=descriptions, callbacks=callbacks
        )
        if calibrate:
            self.calibrator_, self.calibration_report_ = choose_calibrator(
                self.predict_raw(val_m), np.asarray(y_val), self.calibration, seed=self.seed
            )
        else:
            self.calibrator_ = Calibrator(NO_CALIBRATION, (1.0, 0.0))
            self.calibration_report_ = {}
        return self

    # --- family: LightGBM alone, the spline logistic regression alone, or a blend ---------------
    # ``linear_`` (a fitted sklearn pipeline on the model matrix) and ``blend_weight_`` (weight
    # of the LightGBM log-odds; 1 = LightGBM only, 0 = linear only) are set by training when
    # its family choice (cross-validated, or on the validation rows) picked them;
    # ``linear_rows_`` caps the rows the linear part is refit on. Reason codes always come
    # from the booster.

    def family(self) -> str:
        """``lightgbm``, ``linear`` or ``blend``: which scores the probability is built on."""
        weight = getattr(self, "blend_weight_", 1.0)
        if getattr(self, "linear_", None) is None or weight >= 1.0:
            return "lightgbm"
        return "linear" if weight <= 0.0 else "blend"

    def predict_raw(
        self, X: pd.DataFrame | np.ndarray, *, num_threads: int | None = None
    ) -> np.ndarray:
        """Log-odds of churn from the chosen family (before calibration)."""
        m = X if isinstance(X, np.ndarray) else self.matrix(X)
        raw = super().predict_raw(m, num_threads=num_threads)
        if self.family() == "lightgbm":
            return raw
        weight = self.blend_weight_
        return weight * raw + (1.0 - weight) * self.linear_.decision_function(m)

    def refit_all(self, X, y, *, rounds: int, schema=None, descriptions=None):
        """Refit the booster and, when used, the linear part on all rows ``X``, ``y`` (the
        linear part on a seeded sample of at most ``linear_rows_`` of them when that is set:
        its few hundred coefficients are settled long before millions of rows)."""
        super().refit_all(X, y, rounds=rounds, schema=schema, descriptions=descriptions)
        if getattr(self, "linear_", None) is not None:
            from sklearn.base import clone

            m = X if isinstance(X, np.ndarray) else self.matrix(X)
            y = np.asarray(y, dtype=int)
            cap = getattr(self, "linear_rows_", None)
            if cap is not None:
                rows = sample_rows(len(y), cap, self.seed)
                m, y = m[rows], y[rows]
            self.linear_ = clone(self.linear_).fit(m, y)
        return self

    def _save_artifacts(self, folder) -> None:
        if self.family() != "lightgbm":
            import joblib

            state = {"linear": self.linear_, "weight": self.blend_weight_,
                     "rows": getattr(self, "linear_rows_", None)}
            joblib.dump(state, Path(folder) / "linear.joblib")

    def _load_artifacts(self, folder) -> None:
        path = Path(folder) / "linear.joblib"
        if path.is_file():
            import joblib

            state = joblib.load(path)
            self.linear_, self.blend_weight_ = state["linear"], float(state["weight"])
            self.linear_rows_ = state.get("rows")

    def predict_proba(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Calibrated churn probability per row."""
        return self.calibrator_(self.predict_raw(X))

    def predict_uncalibrated(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """LightGBM's own probability before calibration."""
        return 1.0 / (1.0 + np.exp(-self.predict_raw(X)))

    def reasons(
        self, X: pd.DataFrame | np.ndarray, k: int = 3, *, num_threads: int | None = None
    ) -> np.ndarray:
        """Top ``k`` drivers of each row's risk as plain sentences, shape (n, k)."""
        m = X if isinstance(X, np.ndarray) else self.matrix(X)
        contrib = self.contributions(m, num_threads=num_threads)
        return reason_phrases(m, contrib, self.schema_, self.descriptions_, self.medians_, k=k)

    def score_matrix(
        self, m: np.ndarray, *, num_threads: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated probability, shape (n,), and ``reason_1..3``, shape (n, 3) (None where
        the model has fewer inputs than reasons), of rows already in the model's matrix."""
        probability = self.calibrator_(self.predict_raw(m, num_threads=num_threads))
        phrases = self.reasons(m, k=len(REASON_COLUMNS), num_threads=num_threads)
        reasons = np.full((len(m), len(REASON_COLUMNS)), None, dtype=object)
        reasons[:, : phrases.shape[1]] = phrases
        return probability, reasons

    def predict_frame(self, X: pd.DataFrame) -> pd.DataFrame:
        """``churn_probability`` and ``reason_1..3`` per row (index kept from ``X``)."""
        probability, reasons = self.score_matrix(self.matrix(X))
        out = pd.DataFrame({"churn_probability": probability}, index=X.index)
        for j, col in enumerate(REASON_COLUMNS):
            out[col] = reasons[:, j]
        return out

    def _extra_state(self) -> dict:
        c = self.calibrator_
        return {
            "calibrator": {"method": c.method, "x": list(c.x), "y": list(c.y)},
            "calibration_report": self.calibration_report_,
        }

    def _load_extra_state(self, state: dict) -> None:
        c = state["calibrator"]
        self.calibrator_ = Calibrator(c["method"], tuple(c["x"]), tuple(c["y"]))
        self.calibration_report_ = state.get("calibration_report", {})
