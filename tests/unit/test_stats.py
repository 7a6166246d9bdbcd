"""The report's statistics against known answers: published values, closed forms, and numbers
computed independently here (numerical integration, plain Python)."""

from __future__ import annotations

import csv
import gzip
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from nudge_server.stats import (
    INVERSE_PROPENSITY,
    MISMATCH,
    NO_MISMATCH,
    POLICY_SNAPSHOTS,
    SRM_THRESHOLD,
    UNRELIABLE,
    best_arm,
    beta_posterior,
    chi_square_independence,
    difference_of_proportions,
    probability_greater,
    reward_independence,
    sample_ratio_check,
    snapshot_sample_ratio_check,
    wilson_interval,
)
from scipy import integrate
from scipy import stats as sps

# --- Beta posterior ----------------------------------------------------------------------------


def test_posterior_uses_the_uniform_prior_and_its_quantiles() -> None:
    post = beta_posterior(10, 100)
    assert (post.alpha, post.beta) == (11, 91)
    assert post.mean == pytest.approx(11 / 102)
    # Independently: SciPy's Beta quantiles.
    assert post.interval.low == pytest.approx(sps.beta.ppf(0.025, 11, 91), rel=1e-12)
    assert post.interval.high == pytest.approx(sps.beta.ppf(0.975, 11, 91), rel=1e-12)
    assert post.interval.low == pytest.approx(0.0556372, abs=1e-6)
    assert post.interval.high == pytest.approx(0.1745528, abs=1e-6)


def test_posterior_with_no_data_is_the_uniform_prior() -> None:
    post = beta_posterior(0, 0)
    assert post.mean == 0.5
    assert post.interval.low == pytest.approx(0.025)
    assert post.interval.high == pytest.approx(0.975)


def test_posterior_with_no_rewards_has_its_closed_form_quantiles() -> None:
    # Beta(1, b) has F(x) = 1 - (1 - x)^b, so its u-quantile is 1 - (1 - u)^(1/b).
    post = beta_posterior(0, 9)
    assert post.interval.low == pytest.approx(1 - 0.975 ** (1 / 10), rel=1e-9)
    assert post.interval.high == pytest.approx(1 - 0.025 ** (1 / 10), rel=1e-9)


def test_posterior_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError):
        beta_posterior(5, 4)


# --- probability best and expected loss --------------------------------------------------------


def _integrated_best(params: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """P(best) = integral of f_k(x) prod_{j != k} F_j(x); E[max] = integral of 1 - prod F_j;
    loss_k = E[max] - mean_k. By numerical quadrature, independently of the code under test."""
    p_best = []
    for k, (a, b) in enumerate(params):
        others = [p for j, p in enumerate(params) if j != k]

        def integrand(x: float, a: float = a, b: float = b, others: list = others) -> float:
            value = sps.beta.pdf(x, a, b)
            for c, d in others:
                value *= sps.beta.cdf(x, c, d)
            return float(value)

        p_best.append(integrate.quad(integrand, 0, 1, limit=200, epsabs=1e-12)[0])

    def one_minus_all_below(x: float) -> float:
        return 1.0 - math.prod(sps.beta.cdf(x, a, b) for a, b in params)

    e_max = integrate.quad(one_minus_all_below, 0, 1, limit=200, epsabs=1e-12)[0]
    losses = [e_max - a / (a + b) for a, b in params]
    return p_best, losses


def test_two_arms_are_exact_and_match_the_integral() -> None:
    params = [(31.0, 71.0), (21.0, 81.0)]  # 30/100 against 20/100
    result = best_arm(params)
    assert result.method == "exact" and result.draws == 0
    p_best, losses = _integrated_best(params)
    assert result.probability_best[0] == pytest.approx(p_best[0], abs=1e-9)
    assert result.probability_best[1] == pytest.approx(p_best[1], abs=1e-9)
    assert sum(result.probability_best) == pytest.approx(1.0)
    assert result.expected_loss[0] == pytest.approx(losses[0], abs=1e-9)
    assert result.expected_loss[1] == pytest.approx(losses[1], abs=1e-9)
    assert 0.94 < result.probability_best[0] < 0.95


def test_two_arms_match_evan_millers_formula_written_out() -> None:
    # P(p_B > p_A) = sum_{i=0}^{a_B - 1} B(a_A+i, b_A+b_B) / ((b_B+i) B(1+i, b_B) B(a_A, b_A)).
    def log_beta(x: float, y: float) -> float:
        return math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y)

    a_a, b_a, a_b, b_b = 3 + 1, 47 + 1, 9 + 1, 41 + 1
    closed = sum(
        math.exp(
            log_beta(a_a + i, b_a + b_b)
            - math.log(b_b + i)
            - log_beta(1 + i, b_b)
            - log_beta(a_a, b_a)
        )
        for i in range(a_b)
    )
    result = best_arm([(a_a, b_a), (a_b, b_b)])
    assert result.probability_best[1] == pytest.approx(closed, abs=1e-12)
    assert probability_greater((a_b, b_b), (a_a, b_a)) == pytest.approx(closed, abs=1e-12)


def test_large_counts_stay_exact_and_agree_with_a_simulation() -> None:
    params = [(1 + 1_200.0, 1 + 98_800.0), (1 + 1_260.0, 1 + 98_740.0)]
    result = best_arm(params)
    rng = np.random.default_rng(5)
    draws = 400_000
    a = rng.beta(*params[0], size=draws)
    b = rng.beta(*params[1], size=draws)
    assert result.probability_best[1] == pytest.approx((b > a).mean(), abs=0.004)
    assert result.expected_loss[0] == pytest.approx(np.maximum(b - a, 0).mean(), rel=0.02)


def test_identical_arms_share_the_odds() -> None:
    result = best_arm([(5.0, 9.0), (5.0, 9.0)])
    assert result.probability_best == pytest.approx((0.5, 0.5), abs=1e-12)
    assert result.expected_loss[0] == pytest.approx(result.expected_loss[1], abs=1e-12)


def test_three_arms_by_monte_carlo_match_the_integrals() -> None:
    params = [(31.0, 71.0), (21.0, 81.0), (2.0, 3.0)]
    result = best_arm(params, draws=200_000, seed=11)
    assert result.method == "monte_carlo" and result.draws == 200_000 and result.seed == 11
    p_best, losses = _integrated_best(params)
    assert result.monte_carlo_error < 0.0012
    for estimate, exact in zip(result.probability_best, p_best, strict=True):
        assert estimate == pytest.approx(exact, abs=4 * result.monte_carlo_error + 1e-4)
    for estimate, exact in zip(result.expected_loss, losses, strict=True):
        assert estimate == pytest.approx(exact, abs=0.002)
    # The same seed gives the same answer.
    assert best_arm(params, draws=200_000, seed=11) == result


def test_one_arm_is_best_without_loss() -> None:
    result = best_arm([(3.0, 4.0)])
    assert result.probability_best == (1.0,) and result.expected_loss == (0.0,)


# --- chi-square --------------------------------------------------------------------------------


def test_chi_square_of_a_textbook_table() -> None:
    # Agresti, An Introduction to Categorical Data Analysis (2nd ed.), Table 2.5: party
    # identification (Democrat, Independent, Republican) by gender; Pearson X^2 = 30.1, df = 2.
    table = [[762, 484], [327, 239], [468, 477]]
    result = chi_square_independence(table)
    assert result.statistic == pytest.approx(30.07, abs=0.005)
    assert result.dof == 2
    # With two degrees of freedom the chi-square survival function is exp(-x / 2).
    assert result.p_value == pytest.approx(math.exp(-result.statistic / 2), rel=1e-9)
    assert result.reliable and result.note == ""


def test_chi_square_of_arms_and_rewards_on_the_aspirin_study() -> None:
    # Physicians' Health Study (Agresti, section 2.2): myocardial infarction in 189 of 11,034
    # on placebo and 104 of 11,037 on aspirin; Pearson X^2 = 25.01, df = 1.
    result = reward_independence([189, 104], [11_034, 11_037])
    assert result.statistic == pytest.approx(25.01, abs=0.005)
    assert result.dof == 1
    # df = 1: P(X^2 > x) = erfc(sqrt(x / 2)).
    assert result.p_value == pytest.approx(math.erfc(math.sqrt(result.statistic / 2)), rel=1e-9)


def test_chi_square_says_so_when_nobody_was_rewarded() -> None:
    result = reward_independence([0, 0, 0], [40, 50, 60])
    assert result.statistic is None and result.p_value is None and not result.reliable
    assert "undefined" in result.note and "a reward" in result.note


def test_chi_square_flags_small_expected_counts() -> None:
    result = reward_independence([1, 3], [20, 22])
    assert result.statistic is not None and not result.reliable
    assert "unreliable" in result.note and "below 5" in result.note


def test_chi_square_leaves_out_arms_without_data() -> None:
    with_empty = reward_independence([30, 20, 0], [100, 100, 0])
    without = reward_independence([30, 20], [100, 100])
    assert with_empty.statistic == pytest.approx(without.statistic)
    assert "left out" in with_empty.note


# --- proportions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("successes", "trials", "low", "high"),
    [
        # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I,
        # method 3 (score, no continuity correction).
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
        # The replay's logged click rate (README): 0.28% to 0.52%.
        (38, 10_000, 0.0028, 0.0052),
    ],
)
def test_wilson_interval_known_values(successes: int, trials: int, low: float, high: float) -> None:
    interval = wilson_interval(successes, trials)
    assert interval.low == pytest.approx(low, abs=5e-5)
    assert interval.high == pytest.approx(high, abs=5e-5)


def test_wilson_upper_bound_of_no_successes_is_closed_form() -> None:
    # x = 0: the upper end is z^2 / (n + z^2).
    z2 = 1.959963984540054**2
    assert wilson_interval(0, 26).high == pytest.approx(z2 / (26 + z2), rel=1e-12)
    assert wilson_interval(0, 0) == wilson_interval(0, 0).__class__(0.0, 1.0)


@pytest.mark.parametrize(
    ("a", "m", "b", "n", "low", "high"),
    [
        # Newcombe (1998), "Interval estimation for the difference between independent
        # proportions", Table II, method 10 (hybrid score).
        (56, 70, 48, 80, 0.0524, 0.3339),
        (9, 10, 3, 10, 0.1705, 0.8090),
        (5, 56, 0, 29, -0.0381, 0.1926),
        (0, 10, 0, 20, -0.1611, 0.2775),
        (0, 10, 0, 10, -0.2775, 0.2775),
        (10, 10, 0, 20, 0.6791, 1.0),
        (10, 10, 0, 10, 0.6075, 1.0),
    ],
)
def test_newcombe_interval_published_values(
    a: int, m: int, b: int, n: int, low: float, high: float
) -> None:
    diff = difference_of_proportions(a, m, b, n)
    assert diff.difference == pytest.approx(a / m - b / n)
    assert diff.interval is not None
    assert diff.interval.low == pytest.approx(low, abs=5e-5)
    assert diff.interval.high == pytest.approx(high, abs=5e-5)


def test_two_proportion_test_equals_pearson_on_the_two_by_two_table() -> None:
    diff = difference_of_proportions(189, 11_034, 104, 11_037)
    assert diff.z is not None and diff.z**2 == pytest.approx(25.01, abs=0.005)
    assert diff.p_value == pytest.approx(math.erfc(abs(diff.z) / math.sqrt(2)), rel=1e-9)
    assert diff.relative == pytest.approx((189 / 11_034) / (104 / 11_037) - 1)
    assert diff.reliable


def test_difference_with_an_empty_group_is_undefined() -> None:
    diff = difference_of_proportions(3, 10, 0, 0)
    assert diff.difference is None and diff.interval is None and diff.p_value is None
    assert not diff.reliable and "no observations" in diff.note


def test_difference_of_identical_all_zero_groups_has_p_value_one() -> None:
    diff = difference_of_proportions(0, 50, 0, 60)
    assert diff.p_value == 1.0 and diff.difference == 0.0


# --- sample ratio ------------------------------------------------------------------------------


def test_a_fair_split_is_not_flagged() -> None:
    result = sample_ratio_check([0] * 5_000 + [1] * 5_000, [0.5] * 10_000, 2)
    assert not result.mismatch and result.reliable
    assert (result.verdict, result.kind) == (NO_MISMATCH, INVERSE_PROPENSITY)
    assert result.statistic == pytest.approx(0.0) and result.p_value == pytest.approx(1.0)
    assert result.expected == (5_000.0, 5_000.0)


def test_a_lopsided_split_is_flagged_with_pearsons_statistic() -> None:
    # 5200 / 4800 under a logged 50/50: Pearson's X^2 = 2 x 200^2 / 5000 = 16, p = 6.3e-5.
    result = sample_ratio_check([0] * 5_200 + [1] * 4_800, [0.5] * 10_000, 2)
    assert result.statistic == pytest.approx(16.0)
    assert result.dof == 1
    assert result.p_value == pytest.approx(math.erfc(math.sqrt(8)), rel=1e-9)
    assert result.p_value < SRM_THRESHOLD and result.mismatch and result.verdict == MISMATCH
    assert "SAMPLE RATIO MISMATCH" in result.note


def test_a_random_fair_split_of_three_arms_is_not_flagged() -> None:
    rng = np.random.default_rng(2)
    arms = rng.integers(0, 3, size=9_000)
    result = sample_ratio_check(arms, np.full(9_000, 1 / 3), 3)
    assert result.dof == 2 and not result.mismatch
    # For a fixed split it agrees with Pearson's goodness of fit (asymptotically equivalent).
    pearson = sps.chisquare(np.bincount(arms, minlength=3))
    assert result.statistic == pytest.approx(pearson.statistic, rel=0.05)


def _adaptive_log(rng: np.random.Generator, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """A bandit-like log: arm 0's probability drifts from 1/k to 0.9, the rest share the rest."""
    t = np.arange(n) / n
    first = 1 / k + (0.9 - 1 / k) * t
    probs = np.column_stack([first] + [(1 - first) / (k - 1)] * (k - 1))
    arms = (rng.random(n)[:, None] > np.cumsum(probs, axis=1)).sum(axis=1)
    return arms, probs[np.arange(n), arms]


def test_an_adaptive_allocation_with_correct_propensities_is_rarely_flagged() -> None:
    rng = np.random.default_rng(20240601)
    p_values = []
    for _ in range(300):
        arms, propensities = _adaptive_log(rng, 2_000, 3)
        p_values.append(sample_ratio_check(arms, propensities, 3).p_value)
    share_below = np.mean(np.array(p_values) < 0.05)
    # Calibrated: about 5% of p-values below 0.05 (naively summing or averaging propensities
    # into Pearson's expected counts gives more than twice that here).
    assert 0.02 <= share_below <= 0.09
    assert np.mean(np.array(p_values) < SRM_THRESHOLD) <= 0.01


def test_lost_rows_of_one_arm_are_flagged_under_an_adaptive_allocation() -> None:
    rng = np.random.default_rng(3)
    arms, propensities = _adaptive_log(rng, 20_000, 3)
    keep = ~((arms == 1) & (rng.random(arms.size) < 0.15))  # 15% of arm 1's rows lost
    result = sample_ratio_check(arms[keep], propensities[keep], 3)
    assert result.mismatch


def test_wrong_logged_propensities_are_flagged() -> None:
    rng = np.random.default_rng(4)
    arms = (rng.random(10_000) < 0.4).astype(int)  # really 60/40 ...
    result = sample_ratio_check(arms, np.full(10_000, 0.5), 2)  # ... logged as 50/50
    assert result.mismatch


def test_an_arm_never_chosen_despite_its_floor_is_flagged() -> None:
    arms = [0] * 600 + [1] * 600
    result = sample_ratio_check(arms, [0.49] * 1_200, 3, min_propensity=0.02)
    assert result.observed == (600, 600, 0) and result.expected[2] is None
    assert result.never_chosen_p_value == pytest.approx(0.98**1_200)
    assert result.mismatch
    few = sample_ratio_check([0] * 30 + [1] * 30, [0.49] * 60, 3, min_propensity=0.02)
    assert not few.mismatch and few.never_chosen_p_value == pytest.approx(0.98**60)


def test_sample_ratio_with_few_decisions_is_unreliable() -> None:
    result = sample_ratio_check([0, 0, 1], [0.5, 0.5, 0.5], 2)
    assert not result.reliable and "fewer than 5" in result.note
    assert result.verdict == UNRELIABLE
    empty = sample_ratio_check([], [], 2)
    assert not empty.reliable and empty.verdict == UNRELIABLE and empty.p_value is None


def test_heavy_tailed_inverse_propensities_are_unreliable() -> None:
    # 2000 decisions at 50/50, then 1000 at (0.999, 0.001) in which arm 1 was drawn twice: its
    # 1/p weights are 2 (about 1000 times) and 1000 (twice), a Kish effective size of
    # 4000^2 / (1000 x 4 + 2 x 1000^2) = 8: two rows decide the test.
    arms = [0] * 1_000 + [1] * 1_000 + [0] * 998 + [1, 1]
    propensities = [0.5] * 2_000 + [0.999] * 998 + [0.001, 0.001]
    result = sample_ratio_check(arms, propensities, 2)
    assert not result.reliable and not result.mismatch and result.verdict == UNRELIABLE
    assert "heavy-tailed" in result.note


def _converging_log(rng: np.random.Generator, n: int, k: int, floor: float) -> tuple[Any, Any]:
    """A bandit converging on arm 0 in 20 steps, every arm kept at least floor / k."""
    t = (np.arange(n) * 20 // n) / 19
    greedy = np.column_stack([1 / k + (1 - 1 / k) * t] + [(1 - t) / k] * (k - 1))
    probs = floor / k + (1 - floor) * greedy
    arms = np.minimum((rng.random(n)[:, None] > np.cumsum(probs, axis=1)).sum(axis=1), k - 1)
    return arms, probs[np.arange(n), arms]


def test_rare_draws_at_the_floor_make_the_inverse_propensity_check_unreliable() -> None:
    # A correct log (seeded) on which the Wald test gives p ~ 3e-6: in the second half the
    # other arms had probability 0.002 (weight 500), and whether one of those rare draws
    # happened decides the statistic. Given the floor, the check says so instead of flagging.
    arms, propensities = _converging_log(np.random.default_rng(125), 4_000, 10, 0.02)
    blind = sample_ratio_check(arms, propensities, 10)
    assert blind.p_value is not None and blind.p_value < 1e-5 and blind.mismatch
    result = sample_ratio_check(arms, propensities, 10, min_propensity=0.002)
    assert result.p_value == pytest.approx(blind.p_value)
    assert not result.mismatch and result.verdict == UNRELIABLE
    assert "exploration floor" in result.note and "not flagged" in result.note
    # A generous floor (0.2 / 3 arms) leaves the check reliable and calibrated.
    rng = np.random.default_rng(1)
    p_values = []
    for _ in range(100):
        arms, propensities = _converging_log(rng, 2_000, 3, 0.3)
        check = sample_ratio_check(arms, propensities, 3, min_propensity=0.1)
        assert check.reliable
        p_values.append(check.p_value)
    assert np.mean(np.array(p_values) < 0.05) <= 0.09


def test_the_open_bandit_datasets_uniform_log_passes_and_agrees_with_pearson() -> None:
    path = Path(__file__).resolve().parents[2] / "data" / "obd" / "random_all.csv.gz"
    with gzip.open(path, "rt", newline="") as f:
        rows = list(csv.DictReader(f))
    arms = [int(r["item_id"]) for r in rows]
    result = sample_ratio_check(arms, [float(r["propensity_score"]) for r in rows], 80)
    # Real uniform-random logging over 80 items: no mismatch, and (a fixed split) close to
    # Pearson's goodness of fit against 10000 / 80 = 125 per item.
    counts = np.bincount(arms, minlength=80)
    pearson = float(((counts - 125) ** 2 / 125).sum())
    assert result.dof == 79 and result.reliable and not result.mismatch
    assert result.statistic == pytest.approx(pearson, rel=0.02)
    assert result.expected == pytest.approx([125.0] * 80)
    # A fixed split: the exploration floor of an adaptive policy does not make it unreliable.
    floored = sample_ratio_check(
        arms, [float(r["propensity_score"]) for r in rows], 80, min_propensity=0.05 / 80
    )
    assert floored.reliable and floored.verdict == NO_MISMATCH


# --- sample ratio from policy snapshots --------------------------------------------------------


def test_a_fair_fixed_split_passes_the_snapshot_check_with_pearsons_numbers() -> None:
    # 5000 / 3000 / 2000 decisions all drawn from (0.5, 0.3, 0.2): exactly as expected.
    arms = [0] * 5_000 + [1] * 3_000 + [2] * 2_000
    result = snapshot_sample_ratio_check(arms, [0] * 10_000, [[0.5, 0.3, 0.2]])
    assert (result.kind, result.verdict) == (POLICY_SNAPSHOTS, NO_MISMATCH)
    assert result.expected == pytest.approx((5_000.0, 3_000.0, 2_000.0))
    assert result.statistic == pytest.approx(0.0) and result.p_value == pytest.approx(1.0)
    assert result.dof == 2 and result.reliable and not result.mismatch
    assert result.ips_total == () and result.never_chosen_p_value is None
    # 5200 / 4800 under 50/50: the textbook X^2 = 16 (the same as the inverse-propensity test).
    lopsided = snapshot_sample_ratio_check([0] * 5_200 + [1] * 4_800, [0] * 10_000, [[0.5, 0.5]])
    assert lopsided.statistic == pytest.approx(16.0)
    assert lopsided.p_value == pytest.approx(math.erfc(math.sqrt(8)), rel=1e-9)
    assert lopsided.verdict == MISMATCH and "SAMPLE RATIO MISMATCH" in lopsided.note


def test_snapshot_expected_counts_of_an_adaptive_log_by_hand() -> None:
    # 40 decisions drawn from (0.6, 0.3, 0.1), then 60 from (0.2, 0.2, 0.6):
    # E = (24 + 12, 12 + 12, 4 + 36) = (36, 24, 40). Observed (30, 30, 40):
    # X^2 = 6^2/36 + 6^2/24 + 0 = 2.5 with 2 df, whose survival function is exp(-x/2).
    arms = [0] * 30 + [1] * 30 + [2] * 40
    snapshot = [0] * 40 + [1] * 60
    result = snapshot_sample_ratio_check(arms, snapshot, [[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    assert result.observed == (30, 30, 40)
    assert result.expected == pytest.approx((36.0, 24.0, 40.0))
    assert result.statistic == pytest.approx(2.5)
    assert result.dof == 2
    assert result.p_value == pytest.approx(math.exp(-1.25))
    assert result.verdict == NO_MISMATCH
    # The order of the rows does not matter, only which snapshot each was drawn from.
    again = snapshot_sample_ratio_check(
        arms[::-1], snapshot[::-1], [[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]]
    )
    assert again.statistic == pytest.approx(2.5)


def test_an_arm_missing_from_a_snapshot_has_probability_zero_and_no_degree_of_freedom() -> None:
    # Arm 2 is in no snapshot: E = 0, left out of the statistic (df = 2 arms - 1).
    result = snapshot_sample_ratio_check([0] * 50 + [1] * 50, [0] * 100, [[0.5, 0.5, 0.0]])
    assert result.expected == (50.0, 50.0, 0.0) and result.dof == 1
    assert result.verdict == NO_MISMATCH
    # ... and a decision that chose it anyway is impossible under the log: a mismatch.
    broken = snapshot_sample_ratio_check([0] * 50 + [1] * 49 + [2], [0] * 100, [[0.5, 0.5, 0.0]])
    assert broken.mismatch and broken.verdict == MISMATCH
    assert "1 decision(s) chose an arm their policy snapshot gave probability 0" in broken.note


def _snapshot_log(
    rng: np.random.Generator, n: int, k: int, snapshots: int = 20
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bandit-like log drawn from `snapshots` successive distributions: arm 0's probability
    drifts from 1/k to 0.9, the others share the rest."""
    first = 1 / k + (0.9 - 1 / k) * np.arange(snapshots) / (snapshots - 1)
    table = np.column_stack([first] + [(1 - first) / (k - 1)] * (k - 1))
    of_row = np.arange(n) * snapshots // n
    arms = (rng.random(n)[:, None] > np.cumsum(table[of_row], axis=1)).sum(axis=1)
    return np.minimum(arms, k - 1), of_row, table


def test_a_correct_adaptive_log_is_not_flagged_and_the_test_is_conservative() -> None:
    rng = np.random.default_rng(20240601)
    p_values = []
    for _ in range(300):
        arms, of_row, table = _snapshot_log(rng, 2_000, 3)
        result = snapshot_sample_ratio_check(arms, of_row, table)
        assert result.reliable
        p_values.append(result.p_value)
    # Exact for a fixed split, conservative when the probabilities change: at most about 5%
    # of the p-values are below 0.05, and none below the flagging threshold.
    assert np.mean(np.array(p_values) < 0.05) <= 0.07
    assert np.mean(np.array(p_values) < SRM_THRESHOLD) == 0.0


def test_rows_dropped_from_one_arm_of_an_adaptive_log_are_flagged() -> None:
    rng = np.random.default_rng(3)
    arms, of_row, table = _snapshot_log(rng, 20_000, 3)
    assert not snapshot_sample_ratio_check(arms, of_row, table).mismatch
    keep = ~((arms == 1) & (rng.random(arms.size) < 0.15))  # 15% of arm 1's rows lost
    result = snapshot_sample_ratio_check(arms[keep], of_row[keep], table)
    assert result.mismatch and result.verdict == MISMATCH
    assert result.observed[1] < result.expected[1]  # type: ignore[operator]


def test_small_expected_counts_make_the_snapshot_check_unreliable_never_ok() -> None:
    # E = (196, 2, 2): Pearson's approximation fails. X^2 = 16^2/196 + 18^2/2 + 2^2/2 is huge,
    # its p-value tiny: shown, not flagged, and the verdict says "unreliable".
    arms = [0] * 180 + [1] * 20
    result = snapshot_sample_ratio_check(arms, [0] * 200, [[0.98, 0.01, 0.01]])
    assert result.statistic == pytest.approx(16**2 / 196 + 18**2 / 2 + 2**2 / 2)
    assert result.p_value is not None and result.p_value < 1e-30
    assert not result.reliable and not result.mismatch and result.verdict == UNRELIABLE
    assert "expected count below 5" in result.note and "not flagged" in result.note
    # Arm 2 was never chosen: P = 0.99^200, times 3 arms, is no evidence.
    assert result.never_chosen_p_value == pytest.approx(3 * 0.99**200)


def test_an_arm_never_chosen_is_flagged_even_when_many_arms_dilute_pearson() -> None:
    # 80 arms drawn uniformly 1600 times (E = 20 each); arm 79 never chosen, the others 20 or
    # 21. Pearson's X^2 = 20 x 1/20 + 20 = 21 on 79 df says nothing; the exact chance of
    # never drawing arm 79, (79/80)^1600, times 80 arms, is about 1e-7.
    arms = [a for a in range(79) for _ in range(20)] + list(range(20))
    result = snapshot_sample_ratio_check(arms, [0] * 1_600, [[1 / 80] * 80])
    assert result.statistic == pytest.approx(21.0) and result.dof == 79
    assert result.p_value is not None and result.p_value > 0.99
    assert result.never_chosen_p_value == pytest.approx(80 * (79 / 80) ** 1_600)
    assert result.mismatch and result.verdict == MISMATCH


def test_snapshot_check_rejects_bad_input_and_says_when_undefined() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        snapshot_sample_ratio_check([0], [0], [[0.5, 0.4]])
    with pytest.raises(ValueError, match="out of range"):
        snapshot_sample_ratio_check([0], [1], [[0.5, 0.5]])
    empty = snapshot_sample_ratio_check([], [], np.zeros((0, 2)))
    assert empty.verdict == UNRELIABLE and empty.p_value is None and empty.decisions == 0
    single = snapshot_sample_ratio_check([0, 0], [0, 0], [[1.0, 0.0]])
    assert single.statistic is None and single.verdict == UNRELIABLE and "undefined" in single.note
