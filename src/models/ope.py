"""Off-policy evaluation: what would a candidate policy have earned on logs made by another one?

Three estimators of a target policy's value (expected reward per decision) from logs of
``(context, action, reward, logging propensity)``:

* **IPS** (inverse propensity scoring): ``mean(w_i r_i)`` with ``w_i = pi(a_i|x_i) / mu_i``.
  Unbiased when the logged propensities ``mu_i`` are right and positive wherever the target
  acts.
* **SNIPS** (self-normalised IPS): ``sum(w_i r_i) / sum(w_i)``; slightly biased, much lower
  variance when weights are large.
* **DR** (doubly robust): ``mean(sum_a pi(a|x_i) q(x_i, a) + w_i (r_i - q(x_i, a_i)))`` with a
  reward model ``q``; unbiased if either the propensities or ``q`` are right.

Each comes with a percentile-bootstrap interval over logged rows, plus the effective sample
size ``(sum w)^2 / sum w^2`` and warnings about tiny or missing propensities. Pure numpy: arrays
in, a :class:`OPEResult` out.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import numpy as np

from customer360.errors import Customer360Error

log = logging.getLogger(__name__)

ESTIMATORS = ("ips", "snips", "dr")


@dataclass(frozen=True)
class Estimate:
    """One estimator's point value and bootstrap interval."""

    value: float
    ci_low: float
    ci_high: float


@dataclass
class OPEResult:
    """Estimates of one target policy's value on one log.

    ``ess`` is the effective sample size of the importance weights; ``n`` the rows used;
    ``n_dropped`` rows without a usable propensity (reported in ``warnings``, never silent).
    """

    ips: Estimate
    snips: Estimate
    dr: Estimate
    ess: float
    n: int
    n_dropped: int
    max_weight: float
    confidence: float
    n_boot: int
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def effective_sample_size(weights: np.ndarray) -> float:
    """Kish effective sample size ``(sum w)^2 / sum w^2`` of importance weights."""
    weights = np.asarray(weights, dtype=float)
    denom = float(np.sum(weights**2))
    return float(np.sum(weights) ** 2 / denom) if denom > 0 else 0.0


def snips_value(rewards: np.ndarray, weights: np.ndarray) -> float:
    """Self-normalised IPS estimate ``sum(w r) / sum(w)`` (0 when every weight is 0)."""
    total = float(np.sum(weights))
    return float(np.sum(np.asarray(weights) * np.asarray(rewards)) / total) if total > 0 else 0.0


def per_action_mean_reward(actions: np.ndarray, rewards: np.ndarray, n_actions: int) -> np.ndarray:
    """The simplest reward model: each action's mean logged reward (global mean if unseen)."""
    counts = np.bincount(actions, minlength=n_actions).astype(float)
    sums = np.bincount(actions, weights=rewards, minlength=n_actions)
    overall = float(np.mean(rewards)) if len(rewards) else 0.0
    return np.where(counts > 0, sums / np.maximum(counts, 1.0), overall)


def evaluate_policy(
    actions: np.ndarray,
    rewards: np.ndarray,
    propensities: np.ndarray,
    target: np.ndarray,
    *,
    reward_model: np.ndarray | None = None,
    n_boot: int = 500,
    confidence: float = 0.95,
    seed: int = 0,
    min_propensity: float = 1e-3,
    min_ess_fraction: float = 0.01,
) -> OPEResult:
    """IPS, SNIPS and DR estimates of a target policy's value with bootstrap intervals.

    Parameters
    ----------
    actions
        Logged action index per row, ``0 <= a < K``.
    rewards
        Logged reward per row (e.g. ``accepted * margin``).
    propensities
        Logging policy's probability of the logged action; NaN = missing. Rows with a missing
        or non-positive propensity cannot be weighted: they are dropped and counted in a
        warning.
    target
        ``(n, K)`` array: the target policy's probability of each action in each row's context
        (rows sum to 1; a deterministic policy is one-hot; an all-zero row means "make no
        offer", worth 0).
    reward_model
        ``(n, K)`` predicted reward of each action in each context for DR; default: each
        action's mean logged reward.
    n_boot, confidence, seed
        Percentile bootstrap over rows.
    min_propensity
        Propensities below this trigger a warning (huge weights, unstable estimates).
    min_ess_fraction
        Warn when the effective sample size is below this fraction of the rows.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> a = rng.integers(0, 2, 1000); r = (a == 1).astype(float)
    >>> res = evaluate_policy(a, r, np.full(1000, 0.5), np.tile([0.0, 1.0], (1000, 1)))
    >>> round(res.snips.value, 2), round(res.ips.value, 2)  # true value 1; IPS is noisier
    (1.0, 1.07)
    """
    actions = np.asarray(actions)
    rewards = np.asarray(rewards, dtype=float)
    propensities = np.asarray(propensities, dtype=float)
    target = np.asarray(target, dtype=float)
    n_rows = len(actions)
    if not (len(rewards) == len(propensities) == target.shape[0] == n_rows):
        raise Customer360Error(
            f"Off-policy evaluation needs one reward, propensity and target row per logged "
            f"action; got {n_rows} actions, {len(rewards)} rewards, {len(propensities)} "
            f"propensities and {target.shape[0]} target rows."
        )
    if target.ndim != 2:
        raise Customer360Error("The target policy must be an (n_rows, n_actions) array.")
    n_actions = target.shape[1]
    if n_rows and (actions.min() < 0 or actions.max() >= n_actions):
        raise Customer360Error(
            f"Logged actions must be indices in [0, {n_actions}); found {actions.min()}.."
            f"{actions.max()}."
        )
    if not np.isfinite(rewards).all():
        bad = int(np.flatnonzero(~np.isfinite(rewards))[0])
        raise Customer360Error(f"Reward at row {bad} is missing or not finite; fix the log.")
    row_sums = target.sum(axis=1)
    bad_rows = ~(np.isclose(row_sums, 1.0, atol=1e-6) | (row_sums == 0)) | (target < 0).any(1)
    if bad_rows.any():
        bad = int(np.flatnonzero(bad_rows)[0])
        raise Customer360Error(
            f"Target policy probabilities of row {bad} sum to {row_sums[bad]:.4f}; each row "
            "must be a distribution (sum 1) or all zeros (make no offer, reward 0)."
        )

    warnings: list[str] = []
    usable = np.isfinite(propensities) & (propensities > 0) & (propensities <= 1)
    n_dropped = int((~usable).sum())
    if n_dropped:
        warnings.append(
            f"{n_dropped} of {n_rows} rows have a missing, non-positive or >1 propensity "
            "and were left out of every estimate; log the logging policy's probability."
        )
    if not usable.any():
        raise Customer360Error(
            "No logged row has a usable propensity (all missing, <= 0 or > 1): off-policy "
            "evaluation needs the logging policy's probability of each logged action."
        )
    n_tiny = int((propensities[usable] < min_propensity).sum())
    if n_tiny:
        warnings.append(
            f"{n_tiny} rows have a propensity below {min_propensity:g} "
            f"(smallest {np.min(propensities[usable]):.2e}); their importance weights dominate "
            "the estimates and widen the intervals."
        )

    actions, rewards, propensities, target = (
        actions[usable], rewards[usable], propensities[usable], target[usable]
    )
    if reward_model is None:
        q = np.broadcast_to(per_action_mean_reward(actions, rewards, n_actions), target.shape)
    else:
        q = np.asarray(reward_model, dtype=float)[usable]
        if q.shape != target.shape:
            raise Customer360Error(
                f"Reward model shape {q.shape} does not match the target policy {target.shape}."
            )
    rows = np.arange(len(actions))
    pi_logged = target[rows, actions]
    weights = pi_logged / propensities
    q_logged = q[rows, actions]
    q_target = np.einsum("ij,ij->i", target, q)

    supported = float(np.mean(pi_logged > 0))
    ess = effective_sample_size(weights)
    if ess < min_ess_fraction * len(weights):
        warnings.append(
            f"Effective sample size {ess:.1f} is below {min_ess_fraction:.0%} of the "
            f"{len(weights)} rows: the target policy rarely agrees with the logging policy "
            f"(it matches the logged action in {supported:.1%} of rows)."
        )

    wr = weights * rewards
    dr_terms = q_target + weights * (rewards - q_logged)
    point = {
        "ips": float(np.mean(wr)),
        "snips": snips_value(rewards, weights),
        "dr": float(np.mean(dr_terms)),
    }
    boots = _bootstrap_sums(np.vstack([wr, weights, dr_terms]), n_boot, seed)
    n_used = len(weights)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot_values = {
            "ips": boots[0] / n_used,
            "snips": np.where(boots[1] > 0, boots[0] / boots[1], 0.0),
            "dr": boots[2] / n_used,
        }
    tail = (1 - confidence) / 2 * 100
    estimates = {
        name: Estimate(
            value=point[name],
            ci_low=float(np.percentile(boot_values[name], tail)),
            ci_high=float(np.percentile(boot_values[name], 100 - tail)),
        )
        for name in ESTIMATORS
    }
    return OPEResult(
        **estimates,
        ess=ess,
        n=n_used,
        n_dropped=n_dropped,
        max_weight=float(np.max(weights)),
        confidence=confidence,
        n_boot=n_boot,
        warnings=warnings,
    )


def _bootstrap_sums(terms: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Column sums of ``terms`` (shape ``(m, n)``) over ``n_boot`` row resamples -> ``(m, B)``.

    Each resample draws ``n`` row indices with replacement; their counts per row
    (``bincount``) times ``terms`` give the resampled sums without gathering rows.
    """
    rng = np.random.default_rng(seed)
    n = terms.shape[1]
    out = np.empty((terms.shape[0], n_boot))
    for b in range(n_boot):
        counts = np.bincount(rng.integers(0, n, n, dtype=np.int64), minlength=n)
        out[:, b] = terms @ counts
    return out


def one_hot_policy(choice: np.ndarray, n_actions: int) -> np.ndarray:
    """Deterministic policy matrix: probability 1 on ``choice[i]`` in row ``i``."""
    target = np.zeros((len(choice), n_actions))
    target[np.arange(len(choice)), choice] = 1.0
    return target


def uniform_policy(n_rows: int, n_actions: int, allowed: np.ndarray | None = None) -> np.ndarray:
    """Uniform policy over all actions, or over the ``allowed`` mask (``(n, K)`` booleans)."""
    if allowed is None:
        return np.full((n_rows, n_actions), 1.0 / n_actions)
    allowed = np.asarray(allowed, dtype=float)
    counts = allowed.sum(axis=1, keepdims=True)
    if (counts == 0).any():
        bad = int(np.flatnonzero(counts[:, 0] == 0)[0])
        raise Customer360Error(f"Row {bad} allows no action; a policy must choose something.")
    return allowed / counts
