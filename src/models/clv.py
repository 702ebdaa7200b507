"""Probabilistic CLV: thin scikit-learn style wrappers around lifetimes' BG/NBD, Pareto/NBD and
Gamma-Gamma fitters, plus vectorised CLV and the scores the other rooms stack on (frames in,
frames out: the warehouse is read by ``customer360.training.probabilistic``).

What the wrappers add to lifetimes:

* **Speed.** Customers with the same (frequency, recency, T) contribute identical likelihood
  terms, so the fit runs on the unique rows with their counts as weights; the optimum is the
  same as the plain fit, the cost grows with the number of distinct histories, not customers.
  When there are many distinct histories (dates to the day), a fit on a coarsened copy warm-
  starts the exact fit, and the Hessian for standard errors comes from finite differences of
  the exact gradient (see ``_WarmStartMixin``).
* **Robustness.** A fit that raises, does not converge, returns non-finite values or drifts
  to a degenerate corner (a parameter below ``min_param`` or above ``max_param``) is retried
  with each penalizer of ``retry_penalizers`` (logged); when none works a :class:`ModelError`
  says what happened. Inputs are validated (with the offending customer id) and every
  prediction is checked: a NaN or infinite output raises instead of leaking downstream.
* **Gamma-Gamma eligibility rule.** The spend model needs ``frequency > 0`` and
  ``monetary_value > 0``. Customers without a repeat purchase, with zero spend or with
  returns-only (net non-positive) repeat spend are left out of the fit (counted in
  ``n_excluded_``) and get the population mean spend of the fitted prior, ``p * v / (q - 1)``,
  as their expected spend.

Time is in whatever unit the RFM columns use (the warehouse scoring uses weeks).
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import io
import logging
import math
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import pandas as pd
from autograd import value_and_grad
from lifetimes import BetaGeoFitter, GammaGammaFitter, ParetoNBDFitter
from lifetimes.utils import ConvergenceError
from scipy.optimize import minimize
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from customer360.config import StrictModel, load_config
from customer360.errors import ContractError, ModelError

if TYPE_CHECKING:
    from customer360.models.prob_stack import ProbabilisticStack

log = logging.getLogger(__name__)

DAYS_PER_MONTH = 365.25 / 12
DAYS_PER_UNIT = {"D": 1.0, "W": 7.0}


class ClvProbabilisticConfig(StrictModel):
    """``configs/clv_probabilistic.yaml``: see the comments in that file."""

    time_unit: Literal["D", "W"] = "W"
    horizon_days: int = 90
    clv_months: int = 12
    annual_discount_rate: float = 0.10
    margin_rate: float | None = None
    penalizer_coef: float = 0.0
    retry_penalizers: tuple[float, ...] = (0.001, 0.01, 0.1)
    min_repeat_customers: int = 10
    min_param: float = 1e-6
    max_param: float = 1e6
    holdout_days: int = 180
    plot_max_frequency: int = 20


def load_clv_config(path: str | None = None) -> ClvProbabilisticConfig:
    """Load ``configs/clv_probabilistic.yaml`` (or ``path``)."""
    return load_config(path or "clv_probabilistic", ClvProbabilisticConfig)


# --- input checks ------------------------------------------------------------------------------


def _customer_ids(X: pd.DataFrame) -> np.ndarray:
    if "customer_id" in X.columns:
        return X["customer_id"].to_numpy()
    return X.index.to_numpy()


def _column(X: pd.DataFrame, name: str) -> np.ndarray:
    if not isinstance(X, pd.DataFrame):
        raise ContractError(
            f"Expected a DataFrame with columns frequency, recency, T (and monetary_value), got "
            f"{type(X).__name__}; build it with customer360.features.rfm.rfm_summary."
        )
    if name not in X.columns:
        raise ContractError(
            f"RFM input lacks column {name!r}; it has {', '.join(map(str, X.columns))}. Build it "
            "with customer360.features.rfm.rfm_summary."
        )
    values = pd.to_numeric(X[name], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    return values


def _reject(X: pd.DataFrame, bad: np.ndarray, what: str) -> None:
    if bad.any():
        ids = _customer_ids(X)[bad][:5].tolist()
        raise ContractError(
            f"{int(bad.sum())} customer(s) have {what} (e.g. customer ids {ids}); fix the "
            "RFM summary (rfm_summary produces valid rows) or drop those customers explicitly."
        )


def rfm_arrays(X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated ``frequency, recency, T`` arrays of an RFM frame (lifetimes' invariants)."""
    freq, rec, age = (_column(X, c) for c in ("frequency", "recency", "T"))
    if len(freq) == 0:
        raise ContractError("The RFM input has no customers.")
    _reject(X, ~(np.isfinite(freq) & np.isfinite(rec) & np.isfinite(age)), "missing/non-finite RFM")
    _reject(X, (freq < 0) | (freq != np.round(freq)), "a negative or non-integer frequency")
    _reject(X, (rec < 0) | (rec > age + 1e-9), "recency < 0 or recency > T")
    _reject(X, (freq == 0) & (rec != 0), "recency > 0 without repeat purchases")
    return freq, rec, age


def _unique_weighted(
    weights: np.ndarray | None = None, **columns: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Distinct rows of the given columns and how many customers share each.

    With ``weights`` (rows that already stand for several customers) the weights are summed.
    """
    frame = pd.DataFrame(columns)
    if weights is None:
        counts = frame.groupby(list(columns), sort=False).size()
    else:
        counts = frame.assign(_w=weights).groupby(list(columns), sort=False)["_w"].sum()
    uniq = counts.index.to_frame(index=False)
    return {c: uniq[c].to_numpy() for c in columns}, counts.to_numpy().astype("float64")


# --- exact fits on many distinct histories ----------------------------------------------------
#
# With purchase dates to the day, 1M customers still have ~100k distinct (frequency, recency, T)
# histories, and lifetimes' fit then spends its time in two places: ~30 BFGS steps from a cold
# start and autograd's reverse-over-reverse Hessian at the optimum (kept only for standard
# errors; it cost more than the optimisation). Both are cut without changing the optimum:
# a first fit on a coarsened copy of the data (a few thousand rows) gives a start and an
# inverse Hessian that put BFGS within a few steps of the exact optimum, and the Hessian is
# taken by finite differences of the exact gradient (one gradient per parameter).

_COARSE_MIN_ROWS = 20_000  # below this many distinct rows the plain weighted fit is quick
_COARSE_GRID = 32  # coarse time grid: max(T) / 32 per step
_HESSIAN_STEP = 1e-5  # forward-difference step in log-parameter space


class _WarmStartMixin:
    """A lifetimes fitter whose optimiser takes a start Hessian and whose Hessian is cheap.

    Overrides lifetimes' ``BaseFitter._fit`` (same optimiser, tolerance and convergence
    check); ``fit`` passes ``hess_inv0`` through to scipy's BFGS when a warm start is given.
    """

    def _fit(self, minimizing_function_args, initial_params, params_size, disp, tol=1e-7,
             bounds=None, **kwargs):
        objective = value_and_grad(self._negative_log_likelihood)
        x0 = np.full(params_size, 0.1) if initial_params is None else np.asarray(initial_params)
        result = minimize(objective, x0, args=minimizing_function_args, jac=True, tol=tol,
                          bounds=bounds, options={"disp": disp, **kwargs})
        if not result.success:
            raise ConvergenceError(f"The optimiser did not converge: {result.message}")
        self._log_optimum_ = result.x
        hessian = _gradient_jacobian(objective, result.x, result.jac, minimizing_function_args)
        return result.x, result.fun, hessian

    def __getstate__(self) -> dict:
        # lifetimes stores a lambda as ``generate_new_data`` when fitting, which pickle cannot
        # write; it only simulates data, so a registered model (issue 13) is saved without it.
        state = self.__dict__.copy()
        state.pop("generate_new_data", None)
        return state


def _gradient_jacobian(objective, x: np.ndarray, grad: np.ndarray, args: tuple) -> np.ndarray:
    """Symmetric Hessian from forward differences of an exact gradient (one call per parameter)."""
    columns = []
    for i in range(len(x)):  # over the 3-4 model parameters, not customers
        shifted = x.copy()
        shifted[i] += _HESSIAN_STEP
        columns.append((objective(shifted, *args)[1] - grad) / _HESSIAN_STEP)
    jac = np.array(columns)
    return (jac + jac.T) / 2


class _BetaGeoFitter(_WarmStartMixin, BetaGeoFitter):
    pass


class _GammaGammaFitter(_WarmStartMixin, GammaGammaFitter):
    pass


def _warm_start(
    fitter_cls: type, penalty: float, coarse: tuple[dict[str, np.ndarray], np.ndarray] | None,
    **kwargs: Any,
) -> dict[str, Any]:
    """``fit`` keywords that start the exact fit at a coarse fit's optimum and curvature.

    ``coarse`` is (columns in the fitter's argument order, weights); the coarse data must keep
    the exact data's time scale (lifetimes divides times by max(T)). A coarse fit that fails
    only costs the warm start: ``{}``, and the exact fit starts cold as lifetimes' would.
    """
    if coarse is None:
        return {}
    columns, weights = coarse
    first = fitter_cls(penalizer_coef=penalty)
    try:
        first.fit(*columns.values(), weights=weights, **kwargs)
        inverse = np.linalg.inv(first._hessian_)
    except (ConvergenceError, ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
        log.debug("coarse warm-start fit failed (%s); the exact fit starts cold", exc)
        return {}
    inverse = (inverse + inverse.T) / 2
    if not np.all(np.linalg.eigvalsh(inverse) > 0):
        return {}
    return {"initial_params": first._log_optimum_, "hess_inv0": inverse}


def _coarse_grid(values: np.ndarray, step: float) -> np.ndarray:
    return np.round(values / step) * step


def _finite(values: Any, what: str, X: pd.DataFrame) -> np.ndarray:
    """Return ``values`` as a float array, raising when any entry is NaN or infinite."""
    arr = np.asarray(values, dtype="float64")
    bad = ~np.isfinite(arr)
    if bad.any():
        ids = _customer_ids(X)[bad][:5].tolist()
        raise ModelError(
            f"{what} is NaN or infinite for {int(bad.sum())} customer(s) (e.g. {ids}): their "
            "histories or the horizon are outside the model's numeric range. Check the time "
            "unit of the inputs, or refit with a larger penalizer_coef."
        )
    return arr


class _FittedCheck(BaseEstimator):
    """Shared plumbing: fitted check, fit-with-retries, parameter diagnostics."""

    _label: ClassVar[str] = ""
    # Parameters that may run to infinity together at a well-defined homogeneous limit.
    _benign_high: ClassVar[frozenset[str]] = frozenset()

    def _require_fitted(self) -> None:
        try:
            check_is_fitted(self, "params_")
        except NotFittedError as exc:
            raise ModelError(
                f"{type(self).__name__} is not fitted yet; call fit(rfm) before predicting."
            ) from exc

    def _diagnose(self, params: dict[str, float], neg_ll: float) -> tuple[str, bool] | None:
        """What is wrong with a fit, and whether a penalizer is the remedy (``None``: fine)."""
        values = np.array(list(params.values()), dtype="float64")
        if not np.isfinite(values).all() or not np.isfinite(neg_ll):
            return f"non-finite result ({_fmt_params(params)}, -LL {neg_ll})", True
        high = [k for k, v in params.items() if v > self.max_param]
        if high and set(high) <= self._benign_high:
            log.warning(
                "%s: %s > %g (%s): the data show almost no heterogeneity, so the model sits at "
                "its homogeneous limit; predictions stay finite (and are checked)",
                self._label, ", ".join(high), self.max_param, _fmt_params(params),
            )
        elif high:
            # Exploding parameters (e.g. r, alpha -> inf for homogeneous rates): the L2
            # penalty pulls them back.
            return f"{', '.join(high)} > {self.max_param:g} ({_fmt_params(params)})", True
        low = [k for k, v in params.items() if v < self.min_param]
        if low:
            # A parameter collapsing to 0 is a boundary optimum (e.g. nobody drops out); an L2
            # penalty only pushes it further down, so do not retry.
            return (
                f"{', '.join(low)} < {self.min_param:g} ({_fmt_params(params)}): the data show "
                "no variation the model can identify (e.g. no customer ever drops out)",
                False,
            )
        return None

    def _fit_with_retries(self, fit_once, n_customers: int, detail: str):
        penalties = [self.penalizer_coef] + sorted(
            p for p in self.retry_penalizers if p > self.penalizer_coef
        )
        problems = []
        for penalty in penalties:
            captured = io.StringIO()
            try:
                with contextlib.redirect_stdout(captured), np.errstate(all="ignore"):
                    fitter, params = fit_once(penalty)
            except ConvergenceError:
                problems.append(f"penalizer {penalty:g}: the optimiser did not converge")
                log.debug("optimiser output: %s", captured.getvalue())
                continue
            except (ValueError, FloatingPointError, ZeroDivisionError, np.linalg.LinAlgError) as e:
                problems.append(f"penalizer {penalty:g}: {type(e).__name__}: {e}")
                continue
            neg_ll = float(getattr(fitter, "_negative_log_likelihood_", np.nan))
            diagnosis = self._diagnose(params, neg_ll)
            if diagnosis is None:
                if penalty != self.penalizer_coef:
                    log.warning(
                        "%s: fit with penalizer %g failed (%s); succeeded with penalizer %g",
                        self._label, self.penalizer_coef, "; ".join(problems), penalty,
                    )
                return fitter, params, penalty
            problems.append(f"penalizer {penalty:g}: {diagnosis[0]}")
            if not diagnosis[1]:
                break
        raise ModelError(
            f"{self._label} could not be fitted on {n_customers} customers ({detail}): "
            + "; ".join(problems)
            + ". Give it more purchase history (longer calibration period, more repeat "
            "customers), check the time unit, or set a larger penalizer_coef."
        )


def _fmt_params(params: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in params.items())


# --- transaction models: BG/NBD and Pareto/NBD --------------------------------------------------


class _TransactionModel(_FittedCheck):
    """Shared fit/predict of the two purchase-count models (subclasses pick the fitter)."""

    _fitter_cls: ClassVar[type]
    _warm_starts: ClassVar[bool] = False  # coarse-to-fine fits (BFGS-based fitters only)

    def __init__(
        self,
        *,
        penalizer_coef: float = 0.0,
        retry_penalizers: tuple[float, ...] = (0.001, 0.01, 0.1),
        weighted: bool = True,
        min_repeat_customers: int = 10,
        min_param: float = 1e-6,
        max_param: float = 1e6,
        max_iter: int | None = None,
    ) -> None:
        self.penalizer_coef = penalizer_coef
        self.retry_penalizers = retry_penalizers
        self.weighted = weighted
        self.min_repeat_customers = min_repeat_customers
        self.min_param = min_param
        self.max_param = max_param
        self.max_iter = max_iter

    def fit(self, X: pd.DataFrame, y: object = None) -> _TransactionModel:
        """Fit on an RFM frame (columns ``frequency``, ``recency``, ``T``); returns ``self``."""
        freq, rec, age = rfm_arrays(X)
        n_repeat = int((freq > 0).sum())
        if n_repeat < self.min_repeat_customers:
            raise ModelError(
                f"{self._label} needs at least {self.min_repeat_customers} customers with a repeat "
                f"purchase, got {n_repeat} of {len(freq)}; use a longer calibration period or "
                "more customers."
            )
        if self.weighted:
            cols, weights = _unique_weighted(frequency=freq, recency=rec, T=age)
        else:
            cols, weights = {"frequency": freq, "recency": rec, "T": age}, np.ones(len(freq))

        coarse = self._coarse(cols, weights)

        def fit_once(penalty: float):
            kwargs = self._fit_kwargs(len(freq), len(weights))
            kwargs.update(_warm_start(self._fitter_cls, penalty, coarse, **kwargs))
            fitter = self._fitter_cls(penalizer_coef=penalty)
            fitter.fit(cols["frequency"], cols["recency"], cols["T"], weights=weights, **kwargs)
            params = {k: float(v) for k, v in fitter.params_.items()}
            return fitter, params

        detail = f"{n_repeat} with repeat purchases, {len(weights)} distinct histories"
        self.fitter_, self.params_, self.penalizer_used_ = self._fit_with_retries(
            fit_once, len(freq), detail
        )
        self.time_max_ = float(cols["T"].max())
        self.log_likelihood_ = self._total_log_likelihood(
            cols["frequency"], cols["recency"], cols["T"], weights
        )
        self.n_customers_ = len(freq)
        self.n_unique_ = len(weights)
        self.n_coarse_ = 0 if coarse is None else len(coarse[1])
        return self

    def _fit_kwargs(self, n_customers: int, n_rows: int) -> dict[str, Any]:
        return {} if self.max_iter is None else {"maxiter": self.max_iter}

    def _coarse(
        self, cols: dict[str, np.ndarray], weights: np.ndarray
    ) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
        """Recency and T on a coarse grid (same max(T)) for a warm start, or ``None``."""
        if not self._warm_starts or len(weights) < _COARSE_MIN_ROWS:
            return None
        t_max = cols["T"].max()
        step = t_max / _COARSE_GRID
        age = np.where(cols["T"] == t_max, t_max, _coarse_grid(cols["T"], step))
        rec = np.minimum(_coarse_grid(cols["recency"], step), age)
        return _unique_weighted(weights, frequency=cols["frequency"], recency=rec, T=age)

    def _total_log_likelihood(self, freq, rec, age, weights) -> float:  # pragma: no cover
        """Unpenalised log-likelihood of all customers, in the data's own time unit."""
        raise NotImplementedError

    def _predictor(self) -> tuple[Any, float]:
        """The lifetimes fitter that evaluates predictions and the factor applied to times."""
        return self.fitter_, 1.0

    def p_alive(self, X: pd.DataFrame) -> np.ndarray:
        """Probability that each customer is still active at the end of calibration."""
        self._require_fitted()
        freq, rec, age = rfm_arrays(X)
        fitter, c = self._predictor()
        with np.errstate(all="ignore"):
            out = fitter.conditional_probability_alive(freq, rec * c, age * c)
        return np.clip(_finite(out, f"{self._label} P(alive)", X), 0.0, 1.0)

    def expected_purchases(self, X: pd.DataFrame, t: float) -> np.ndarray:
        """Expected repeat purchases of each customer in the next ``t`` time units."""
        self._require_fitted()
        if not (np.isfinite(t) and t >= 0):
            raise ModelError(f"The horizon t must be a finite number >= 0, got {t!r}.")
        freq, rec, age = rfm_arrays(X)
        fitter, c = self._predictor()
        with np.errstate(all="ignore"):
            out = fitter.conditional_expected_number_of_purchases_up_to_time(
                t * c, freq, rec * c, age * c
            )
        return _finite(out, f"{self._label} expected purchases over {t:g}", X)


class BetaGeoModel(_TransactionModel):
    """BG/NBD purchase model (Fader, Hardie & Lee 2005) on lifetimes' ``BetaGeoFitter``.

    Parameters
    ----------
    penalizer_coef
        L2 penalty on the parameters for the first attempt.
    retry_penalizers
        Penalties tried in turn when a fit fails or is degenerate.
    weighted
        Fit on unique (frequency, recency, T) rows with counts as weights (same optimum).
    min_repeat_customers
        Minimum customers with ``frequency > 0``; fewer is an error.
    min_param, max_param
        A fitted parameter outside this range counts as degenerate.
    max_iter
        Optimiser iteration cap (``None``: lifetimes' default).

    Examples
    --------
    >>> import pandas as pd
    >>> rfm = pd.DataFrame({"frequency": [0, 1, 2, 3] * 5, "recency": [0, 5, 9, 20] * 5,
    ...                     "T": [30, 30, 25, 22] * 5})
    >>> model = BetaGeoModel(min_repeat_customers=5).fit(rfm)
    >>> sorted(model.params_)
    ['a', 'alpha', 'b', 'r']
    """

    _label = "BG/NBD"
    _fitter_cls = _BetaGeoFitter
    _warm_starts = True

    def _total_log_likelihood(self, freq, rec, age, weights) -> float:
        log_params = np.log([self.params_[k] for k in ("r", "alpha", "a", "b")])
        # lifetimes returns the weighted mean negative log-likelihood (penalty 0 here)
        mean_nll = BetaGeoFitter._negative_log_likelihood(log_params, freq, rec, age, weights, 0.0)
        return float(-mean_nll * weights.sum())


class ParetoNBDModel(_TransactionModel):
    """Pareto/NBD purchase model (Schmittlein, Morrison & Colombo 1987) on ``ParetoNBDFitter``.

    Same hyperparameters as :class:`BetaGeoModel`. lifetimes optimises this model with
    Nelder-Mead from a random start; the wrapper starts from ones (deterministic) and rescales
    the tolerance for the weighted objective, which lifetimes divides by the mean weight.
    """

    _label = "Pareto/NBD"
    _fitter_cls = ParetoNBDFitter

    def _fit_kwargs(self, n_customers: int, n_rows: int) -> dict[str, Any]:
        # lifetimes' Pareto objective is sum(w * ll) / mean(w): on unique rows it is the plain
        # objective times n_rows / n_customers, so Nelder-Mead's absolute function tolerance
        # shrinks alike; the parameter tolerance stays that of a plain fit with tol=1e-6.
        kwargs: dict[str, Any] = {
            "initial_params": np.ones(4),
            "tol": 1e-6,
            "xatol": 1e-6,
            "fatol": 1e-6 * n_rows / n_customers,
        }
        if self.max_iter is not None:
            kwargs["maxiter"] = self.max_iter
        return kwargs

    def _predictor(self) -> tuple[Any, float]:
        # lifetimes fits Pareto/NBD with times scaled to max(T) = 1, but predicts in the data's
        # units, where its hypergeometric terms overflow for long, busy histories (e.g. 98
        # purchases, last one at T: NaN). The model is scale-equivariant (alpha and beta scale
        # with time, P(alive) and counts do not), so evaluate in the fitted scale instead.
        c = 1.0 / self.time_max_
        scaled = copy.copy(self.fitter_)
        scaled.params_ = self.fitter_.params_.copy()
        scaled.params_[["alpha", "beta"]] *= c
        return scaled, c

    def _total_log_likelihood(self, freq, rec, age, weights) -> float:
        # In the fitted scale (see _predictor); the density of x purchase times picks up a
        # factor c**x under t -> c * t, so LL(data units) = LL(scaled) + x * log(c).
        scaled, c = self._predictor()
        params = [scaled.params_[k] for k in ("r", "alpha", "s", "beta")]
        with np.errstate(all="ignore"):
            terms = ParetoNBDFitter._conditional_log_likelihood(params, freq, rec * c, age * c)
        return float((weights * (terms + freq * np.log(c))).sum())


# --- spend model: Gamma-Gamma --------------------------------------------------------------------


def gamma_gamma_eligible(X: pd.DataFrame) -> np.ndarray:
    """Customers the Gamma-Gamma model can learn from: a repeat purchase and positive spend."""
    freq = _column(X, "frequency")
    money = _column(X, "monetary_value")
    return (freq > 0) & (money > 0) & np.isfinite(money)


class GammaGammaModel(_FittedCheck):
    """Gamma-Gamma spend model (Fader, Hardie & Lee 2005) on lifetimes' ``GammaGammaFitter``.

    Fits only customers with ``frequency > 0`` and ``monetary_value > 0`` (see the module
    docstring); the others get the prior population mean spend.

    Parameters
    ----------
    penalizer_coef, retry_penalizers, min_param, max_param
        As for :class:`BetaGeoModel`.
    weighted
        Fit on unique (frequency, monetary_value) rows with counts as weights.
    min_customers
        Minimum eligible customers; fewer is an error.
    fallback_cap_quantile
        When the fit fails (no convergence, or ``q <= 1``: spend so heavy-tailed that its mean
        is infinite, e.g. one order of 1e308), refit once with each customer's mean spend
        capped at this quantile of the eligible customers' spend, with a warning; the cap
        (``spend_cap_``) also applies when scoring and the reason is kept in
        ``fallback_reason_``. ``None`` re-raises instead.
    """

    _label = "Gamma-Gamma"
    # q, v -> inf with p * v / (q - 1) fixed: every customer has the same mean spend; the
    # conditional expectation then tends to that mean, so the fit is accepted (and logged)
    # rather than distorted by a penalizer.
    _benign_high = frozenset({"q", "v"})

    def __init__(
        self,
        *,
        penalizer_coef: float = 0.0,
        retry_penalizers: tuple[float, ...] = (0.001, 0.01, 0.1),
        weighted: bool = True,
        min_customers: int = 10,
        min_param: float = 1e-6,
        max_param: float = 1e6,
        fallback_cap_quantile: float | None = 0.99,
    ) -> None:
        self.penalizer_coef = penalizer_coef
        self.retry_penalizers = retry_penalizers
        self.weighted = weighted
        self.min_customers = min_customers
        self.min_param = min_param
        self.max_param = max_param
        self.fallback_cap_quantile = fallback_cap_quantile

    def fit(self, X: pd.DataFrame, y: object = None) -> GammaGammaModel:
        """Fit on an RFM frame with ``frequency`` and ``monetary_value``; returns ``self``."""
        import warnings

        eligible = gamma_gamma_eligible(X)
        n_ok = int(eligible.sum())
        if n_ok < self.min_customers:
            raise ModelError(
                f"Gamma-Gamma needs at least {self.min_customers} customers with a repeat purchase "
                f"and positive spend, got {n_ok} of {len(X)}; use a longer calibration period."
            )
        freq = _column(X, "frequency")[eligible]
        money = _column(X, "monetary_value")[eligible]
        self.spend_cap_ = None
        self.fallback_reason_ = None
        try:
            return self._fit_spend(X, freq, money, n_ok)
        except ModelError as exc:
            if self.fallback_cap_quantile is None:
                raise
            cap = float(np.quantile(money, self.fallback_cap_quantile))
            reason = (
                f"Gamma-Gamma fit failed ({exc}); refitted with mean spend capped at {cap:.6g} "
                f"(the {self.fallback_cap_quantile:g} quantile; "
                f"{int((money > cap).sum())} customer(s) capped)"
            )
            log.warning(reason)
            warnings.warn(reason, RuntimeWarning, stacklevel=2)
            self._fit_spend(X, freq, np.minimum(money, cap), n_ok)
            self.spend_cap_ = cap
            self.fallback_reason_ = reason
            return self

    def _fit_spend(
        self, X: pd.DataFrame, freq: np.ndarray, money: np.ndarray, n_ok: int
    ) -> GammaGammaModel:
        if self.weighted:
            cols, weights = _unique_weighted(frequency=freq, monetary_value=money)
        else:
            cols, weights = {"frequency": freq, "monetary_value": money}, np.ones(len(freq))

        coarse = None
        if len(weights) >= _COARSE_MIN_ROWS:
            # spend on a 2 % log grid for the warm start
            grid = np.exp(np.round(np.log(cols["monetary_value"]) * 50) / 50)
            coarse = _unique_weighted(weights, frequency=cols["frequency"], monetary_value=grid)

        def fit_once(penalty: float):
            # lifetimes' default (unconstrained BFGS) first, so results equal a plain fit; when
            # it fails or lands on q <= 1 (infinite mean spend), refit with q >= 1 enforced.
            start = _warm_start(_GammaGammaFitter, penalty, coarse)
            fitter = _GammaGammaFitter(penalizer_coef=penalty)
            try:
                fitter.fit(cols["frequency"], cols["monetary_value"], weights=weights, **start)
                if fitter.params_["q"] > 1:
                    return fitter, {k: float(v) for k, v in fitter.params_.items()}
                reason = f"q={fitter.params_['q']:.4g} <= 1"
            except ConvergenceError:
                reason = "no convergence"
            log.info("Gamma-Gamma: unconstrained fit gave %s; refitting with q >= 1", reason)
            fitter = _GammaGammaFitter(penalizer_coef=penalty)
            fitter.fit(
                cols["frequency"], cols["monetary_value"], weights=weights, q_constraint=True
            )
            return fitter, {k: float(v) for k, v in fitter.params_.items()}

        self.fitter_, self.params_, self.penalizer_used_ = self._fit_with_retries(
            fit_once, n_ok, f"{len(X) - n_ok} excluded: no repeat purchase or spend <= 0"
        )
        if self.params_["q"] <= 1 + 1e-9:
            raise ModelError(
                f"Gamma-Gamma fitted q={self.params_['q']:.4g} <= 1, so the mean spend is "
                "infinite (spend is extremely heavy-tailed); cap outlier amounts or set a "
                "penalizer_coef."
            )
        log_params = np.log([self.params_[k] for k in ("p", "q", "v")])
        mean_nll = GammaGammaFitter._negative_log_likelihood(
            log_params, cols["frequency"], cols["monetary_value"], weights, 0.0
        )
        self.log_likelihood_ = float(-mean_nll * weights.sum())
        self.n_customers_ = n_ok
        self.n_excluded_ = int(len(X) - n_ok)
        self.n_unique_ = len(weights)
        self.n_coarse_ = 0 if coarse is None else len(coarse[1])
        return self

    @property
    def population_mean_spend_(self) -> float:
        """Mean spend per purchase of the fitted prior, ``p * v / (q - 1)``."""
        self._require_fitted()
        p, q, v = (self.params_[k] for k in ("p", "q", "v"))
        return p * v / (q - 1)

    def expected_spend(self, X: pd.DataFrame) -> np.ndarray:
        """Conditional expected spend per purchase; the prior mean for ineligible customers."""
        self._require_fitted()
        eligible = gamma_gamma_eligible(X)
        out = np.full(len(X), self.population_mean_spend_)
        if eligible.any():
            money = _column(X, "monetary_value")[eligible]
            if getattr(self, "spend_cap_", None) is not None:
                money = np.minimum(money, self.spend_cap_)
            with np.errstate(all="ignore"):
                out[eligible] = self.fitter_.conditional_expected_average_profit(
                    _column(X, "frequency")[eligible], money
                )
        return _finite(out, "Gamma-Gamma expected spend", X)


# --- CLV ----------------------------------------------------------------------------------------


def monthly_rate(annual_discount_rate: float) -> float:
    """The monthly rate equivalent to an annual discount rate."""
    if not (math.isfinite(annual_discount_rate) and annual_discount_rate > -1):
        raise ModelError(f"The discount rate must be > -1, got {annual_discount_rate!r}.")
    return (1 + annual_discount_rate) ** (1 / 12) - 1


def customer_clv(
    transaction_model: _TransactionModel,
    spend_model: GammaGammaModel,
    X: pd.DataFrame,
    *,
    months: int = 12,
    annual_discount_rate: float = 0.10,
    margin_rate: float = 1.0,
    time_unit: str = "W",
) -> np.ndarray:
    """Discounted expected margin of each customer over the next ``months`` months.

    ``CLV = margin_rate * E[spend] * sum_m (E[N(m)] - E[N(m-1)]) / (1 + d_month)^m``, with
    ``E[N(m)]`` the expected purchases in the first ``m`` months (computed for every customer at
    once, one vectorised call per month) and ``d_month`` the monthly equivalent of the annual
    rate.

    Parameters
    ----------
    transaction_model
        A fitted :class:`BetaGeoModel` or :class:`ParetoNBDModel`.
    spend_model
        A fitted :class:`GammaGammaModel`.
    X
        RFM frame (``frequency``, ``recency``, ``T``, ``monetary_value``) in ``time_unit``.
    months, annual_discount_rate, margin_rate
        Horizon, yearly discount rate and the margin share of revenue.
    time_unit
        ``"D"`` or ``"W"``: the unit of ``X``'s durations.
    """
    if time_unit not in DAYS_PER_UNIT:
        raise ModelError(f"time_unit must be 'D' or 'W', got {time_unit!r}.")
    if months < 1:
        raise ModelError(f"The CLV horizon must be at least one month, got {months}.")
    step = DAYS_PER_MONTH / DAYS_PER_UNIT[time_unit]
    cumulative = np.column_stack(
        [transaction_model.expected_purchases(X, m * step) for m in range(1, months + 1)]
    )
    per_month = np.diff(cumulative, axis=1, prepend=0.0)
    discount = (1 + monthly_rate(annual_discount_rate)) ** -np.arange(1, months + 1)
    clv = margin_rate * spend_model.expected_spend(X) * (per_month @ discount)
    return _finite(clv, "CLV", X)


# --- scores for the stacked models ----------------------------------------------------------

def purchases_column(horizon_days: int) -> str:
    """Name of the expected-purchases score column for a horizon."""
    return f"prob__expected_purchases__{horizon_days}d"


def stack_for(
    rfm: pd.DataFrame,
    cfg: ClvProbabilisticConfig,
    *,
    margin_rate: float,
    as_of: dt.date | str,
    annual_discount_rate: float | None = None,
    months: int | None = None,
) -> ProbabilisticStack:
    """Fit BG/NBD + Gamma-Gamma on ``rfm`` (the purchases before ``as_of``, in the config's
    time unit) and keep them with the CLV settings: the ``prob__`` inputs of the LightGBM models.
    """
    from customer360.models.prob_stack import ProbabilisticStack

    bg, gg = fit_pair(rfm, cfg)
    return ProbabilisticStack(
        transaction_model=bg,
        spend_model=gg,
        months=cfg.clv_months if months is None else months,
        annual_discount_rate=(
            cfg.annual_discount_rate if annual_discount_rate is None else annual_discount_rate
        ),
        margin_rate=float(margin_rate),
        time_unit=cfg.time_unit,
        fitted_as_of=str(pd.Timestamp(as_of).date()),
    )


def stack_scores(
    stack: ProbabilisticStack, rfm: pd.DataFrame, customer_ids: pd.Series, horizon_days: int
) -> pd.DataFrame:
    """``customer_id`` and the four ``prob__`` columns of every id in ``customer_ids``.

    ``rfm`` is the RFM summary with calibration ending the day before the scoring date; each
    customer is scored at the scoring date itself (``T`` one day later). Ids without a purchase
    get the documented defaults: ``p_alive = 0``, no expected purchases, ``clv = 0`` and the
    population mean spend of the fitted Gamma-Gamma prior. Sorted by ``customer_id``.
    """
    bg, gg = stack.transaction_model, stack.spend_model
    unit_days = DAYS_PER_UNIT[stack.time_unit]
    scored = rfm.assign(T=rfm["T"] + 1 / unit_days)
    scores = pd.DataFrame({
        "customer_id": scored["customer_id"].to_numpy(),
        "prob__p_alive": bg.p_alive(scored),
        purchases_column(horizon_days): bg.expected_purchases(scored, horizon_days / unit_days),
        "prob__expected_spend": gg.expected_spend(scored),
        "prob__clv": customer_clv(
            bg, gg, scored, months=stack.months, annual_discount_rate=stack.annual_discount_rate,
            margin_rate=stack.margin_rate, time_unit=stack.time_unit,
        ),
    })
    everyone = pd.DataFrame({"customer_id": pd.Series(customer_ids).to_numpy()})
    out = everyone.merge(scores, on="customer_id", how="outer")
    defaults = {
        "prob__p_alive": 0.0,
        purchases_column(horizon_days): 0.0,
        "prob__expected_spend": gg.population_mean_spend_,
        "prob__clv": 0.0,
    }
    return out.fillna(defaults).sort_values("customer_id", ignore_index=True)


def fit_pair(
    rfm: pd.DataFrame, cfg: ClvProbabilisticConfig
) -> tuple[BetaGeoModel, GammaGammaModel]:
    """Fit BG/NBD and Gamma-Gamma on an RFM frame with the config's robustness settings."""
    bg = BetaGeoModel(**transaction_kwargs(cfg)).fit(rfm)
    gg = GammaGammaModel(
        penalizer_coef=cfg.penalizer_coef,
        retry_penalizers=cfg.retry_penalizers,
        min_customers=cfg.min_repeat_customers,
        min_param=cfg.min_param,
        max_param=cfg.max_param,
    ).fit(rfm)
    return bg, gg


def transaction_kwargs(cfg: ClvProbabilisticConfig) -> dict[str, Any]:
    """Hyperparameters of the purchase models taken from the config."""
    return {
        "penalizer_coef": cfg.penalizer_coef,
        "retry_penalizers": cfg.retry_penalizers,
        "min_repeat_customers": cfg.min_repeat_customers,
        "min_param": cfg.min_param,
        "max_param": cfg.max_param,
    }
