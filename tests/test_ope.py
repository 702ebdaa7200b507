"""Off-policy evaluation estimators: exactness on easy cases, coverage on repeated draws."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from customer360.errors import Customer360Error
from customer360.models.ope import (
    effective_sample_size,
    evaluate_policy,
    one_hot_policy,
    uniform_policy,
)

# A small contextual bandit: 3 contexts x 3 actions, true acceptance and margins known.
P_ACCEPT = np.array([[0.10, 0.30, 0.05], [0.40, 0.10, 0.20], [0.05, 0.05, 0.50]])
MARGIN = np.array([10.0, 4.0, 8.0])
LOGGING = np.array([[0.6, 0.2, 0.2], [0.2, 0.6, 0.2], [0.2, 0.2, 0.6]])


def _simulate(rng: np.random.Generator, n: int):
    ctx = rng.integers(0, 3, n)
    cum = LOGGING[ctx].cumsum(axis=1)
    actions = (rng.random((n, 1)) > cum).sum(axis=1)
    accepted = rng.random(n) < P_ACCEPT[ctx, actions]
    rewards = accepted * MARGIN[actions]
    return ctx, actions, rewards, LOGGING[ctx, actions]


def test_ips_on_uniform_logging_equals_empirical_mean():
    rng = np.random.default_rng(1)
    n, k = 2000, 4
    actions = rng.integers(0, k, n)
    rewards = rng.random(n) * (actions + 1)
    res = evaluate_policy(actions, rewards, np.full(n, 1 / k), uniform_policy(n, k), n_boot=50)
    assert res.ips.value == pytest.approx(rewards.mean(), rel=1e-12)
    assert res.snips.value == pytest.approx(rewards.mean(), rel=1e-12)
    assert res.ess == pytest.approx(n)
    # A deterministic target on action 2: SNIPS is the empirical mean of the rows that chose it.
    res2 = evaluate_policy(actions, rewards, np.full(n, 1 / k), one_hot_policy(np.full(n, 2), k),
                           n_boot=50)
    assert res2.snips.value == pytest.approx(rewards[actions == 2].mean())
    assert res2.ips.value == pytest.approx(k * rewards[actions == 2].sum() / n)
    assert res2.ips.ci_low < res2.ips.value < res2.ips.ci_high


def test_intervals_cover_truth_at_stated_rate():
    rng = np.random.default_rng(2026)
    target_choice = np.argmax(P_ACCEPT * MARGIN, axis=1)
    true_value = float(np.mean((P_ACCEPT * MARGIN)[np.arange(3), target_choice]))
    draws, covered = 200, {"ips": 0, "snips": 0, "dr": 0}
    for i in range(draws):
        ctx, actions, rewards, prop = _simulate(rng, 600)
        target = one_hot_policy(target_choice[ctx], 3)
        res = evaluate_policy(actions, rewards, prop, target, n_boot=200, seed=i)
        for name in covered:
            est = getattr(res, name)
            covered[name] += est.ci_low <= true_value <= est.ci_high
    for name, hits in covered.items():
        assert 0.88 <= hits / draws <= 0.99, (name, hits / draws)


def test_dr_with_true_reward_model_is_tighter_than_ips():
    rng = np.random.default_rng(3)
    ctx, actions, rewards, prop = _simulate(rng, 3000)
    choice = np.argmax(P_ACCEPT * MARGIN, axis=1)[ctx]
    target = one_hot_policy(choice, 3)
    q = (P_ACCEPT * MARGIN)[ctx]
    res = evaluate_policy(actions, rewards, prop, target, reward_model=q, n_boot=200)
    width = lambda e: e.ci_high - e.ci_low  # noqa: E731
    assert width(res.dr) < width(res.ips)


def test_missing_and_tiny_propensities_warn_and_are_counted():
    rng = np.random.default_rng(4)
    n = 500
    actions = rng.integers(0, 2, n)
    rewards = rng.random(n)
    prop = np.full(n, 0.5)
    prop[:7] = np.nan
    prop[7:10] = 1e-5
    res = evaluate_policy(actions, rewards, prop, uniform_policy(n, 2), n_boot=20)
    assert res.n_dropped == 7 and res.n == n - 7
    assert any("7 of 500 rows" in w for w in res.warnings)
    assert any("below 0.001" in w for w in res.warnings)
    with pytest.raises(Customer360Error, match="No logged row has a usable propensity"):
        evaluate_policy(actions, rewards, np.full(n, np.nan), uniform_policy(n, 2))


def test_bad_inputs_are_clear_errors():
    with pytest.raises(Customer360Error, match="sum to"):
        evaluate_policy(np.array([0, 1]), np.array([1.0, 0.0]), np.array([0.5, 0.5]),
                        np.array([[0.5, 0.2], [0.5, 0.5]]))
    with pytest.raises(Customer360Error, match="indices"):
        evaluate_policy(np.array([0, 3]), np.array([1.0, 0.0]), np.array([0.5, 0.5]),
                        uniform_policy(2, 2))
    with pytest.raises(Customer360Error, match="Reward at row 1"):
        evaluate_policy(np.array([0, 1]), np.array([1.0, np.nan]), np.array([0.5, 0.5]),
                        uniform_policy(2, 2))


def test_effective_sample_size():
    assert effective_sample_size(np.ones(10)) == pytest.approx(10)
    assert effective_sample_size(np.r_[np.zeros(9), 5.0]) == pytest.approx(1)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(5, 60),
    k=st.integers(2, 5),
    seed=st.integers(0, 10_000),
)
def test_snips_is_a_weighted_mean_and_on_policy_ips_is_the_mean(n, k, seed):
    rng = np.random.default_rng(seed)
    logging = rng.dirichlet(np.ones(k), n)
    actions = np.array([rng.choice(k, p=row) for row in logging])
    rewards = rng.normal(size=n)
    prop = logging[np.arange(n), actions]
    target = rng.dirichlet(np.ones(k), n)
    res = evaluate_policy(actions, rewards, prop, target, n_boot=20, seed=seed)
    if res.snips.value != 0.0:
        assert rewards.min() - 1e-9 <= res.snips.value <= rewards.max() + 1e-9
    assert res.ips.ci_low <= res.ips.ci_high
    same = evaluate_policy(actions, rewards, prop, logging, n_boot=20, seed=seed)
    assert same.ips.value == pytest.approx(rewards.mean())
