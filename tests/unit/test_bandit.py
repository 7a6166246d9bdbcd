"""Thompson sampling: probability-best, the exploration floor, and exact propensities."""

import random
from collections import Counter

import numpy as np
import pytest
from nudge_server.bandit import ArmStats, CampaignPolicy, policy_probabilities, probability_best


def test_probability_best_of_two_arms_matches_the_closed_form() -> None:
    # Evan Miller's closed form for integer parameters: with X ~ Beta(a, b), Y ~ Beta(c, d),
    # P(X > Y) = sum_{i=0}^{a-1} B(c+i, b+d) / ((b+i) B(1+i, b) B(c, d)).
    from math import exp, lgamma, log

    def log_beta(x: float, y: float) -> float:
        return lgamma(x) + lgamma(y) - lgamma(x + y)

    a, b, c, d = 1 + 30, 1 + 70, 1 + 20, 1 + 80
    p_first_best = sum(
        exp(log_beta(c + i, b + d) - log(b + i) - log_beta(1 + i, b) - log_beta(c, d))
        for i in range(a)
    )
    stats = [ArmStats(pulls=100, rewards=30), ArmStats(pulls=100, rewards=20)]
    estimate = probability_best(stats, np.random.default_rng(7), draws=200_000)
    assert 0.9 < p_first_best < 0.99
    assert estimate[0] == pytest.approx(p_first_best, abs=0.004)
    assert estimate[1] == pytest.approx(1 - p_first_best, abs=0.004)


def test_probabilities_sum_to_one_and_respect_the_floor() -> None:
    p_best = np.array([1.0, 0.0, 0.0, 0.0])
    probs = policy_probabilities(p_best, 0.08)
    assert sum(probs) == pytest.approx(1.0)
    assert min(probs) == pytest.approx(0.02)
    assert probs[0] == pytest.approx(0.92 + 0.02)


def test_a_single_arm_is_always_chosen_with_propensity_one() -> None:
    policy = CampaignPolicy.build(["only"], [ArmStats(5, 1)], 0.05, np.random.default_rng(0))
    assert policy.choose(random.Random(1)) == (0, 1.0)


def test_draws_follow_the_logged_propensities() -> None:
    stats = [ArmStats(200, 40), ArmStats(200, 30), ArmStats(10, 1)]
    policy = CampaignPolicy.build(["a", "b", "c"], stats, 0.1, np.random.default_rng(3))
    rng = random.Random(11)
    n = 60_000
    counts = Counter()
    for _ in range(n):
        index, propensity = policy.choose(rng)
        assert propensity == policy.probabilities[index]
        counts[index] += 1
    for index, p in enumerate(policy.probabilities):
        assert counts[index] / n == pytest.approx(p, abs=0.01)
    # The clearly better arm is favoured; every arm keeps at least floor / k.
    assert policy.probabilities[0] > policy.probabilities[1]
    assert min(policy.probabilities) >= 0.1 / 3 - 1e-12
