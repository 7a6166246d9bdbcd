"""Off-policy estimates from logged bandit feedback: pure functions of arrays, no I/O.

The log has one row per decision: the arm the logging policy chose (an index 0..K-1), the
reward that followed, and the logged propensity p_i (the probability with which the logging
policy chose that arm). A target policy gives each arm a probability pi(a), the same for every
row (the report's policies have no context). With importance weights w_i = pi(a_i) / p_i:

- IPS (inverse propensity scoring): V = (1/n) sum w_i r_i; SE = sd(w_i r_i) / sqrt(n).
- SNIPS (self-normalised IPS): V = sum w_i r_i / sum w_i; SE by the delta method,
  SE^2 = n / (n - 1) x sum (w_i (r_i - V))^2 / (sum w_i)^2.
- DR (doubly robust) with a deliberately simple reward model: q(a) = the mean logged reward of
  arm a (the overall mean for an arm never logged), fitted on the same rows; V = (1/n) sum_i
  [sum_a pi(a) q(a) + w_i (r_i - q(a_i))]; SE = sd of the summands / sqrt(n).
- ESS (effective sample size of the weights, Kish): (sum w_i)^2 / sum w_i^2.

Every interval is the estimate -/+ 1.96 SE (normal approximation). Rows whose propensity is
missing, not a number, zero or above one, or whose arm is unknown, are excluded and counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .stats import Interval, z_quantile

#: Warn when the effective sample size is below this many rows ...
MIN_ESS = 100.0
#: ... or below this share of the rows used.
MIN_ESS_SHARE = 0.01
#: Warn when one row's importance weight exceeds this.
MAX_WEIGHT = 100.0

#: Short codes of the per-policy warnings (`PolicyEstimate.warning_codes`), with their meaning.
NO_ROWS = "no-rows"
NO_WEIGHT = "no-weight"
LOW_ESS = "ess<100"
LOW_ESS_SHARE = "ess<1%"
BIG_WEIGHT = "w>100"
CONSTANT_REWARD = "const"
UNSUPPORTED = "unsupported"
WARNING_CODES: tuple[tuple[str, str], ...] = (
    (NO_ROWS, "no usable rows: nothing can be estimated"),
    (NO_WEIGHT, "no logged row has a positive weight: SNIPS is undefined"),
    (LOW_ESS, f"effective sample size below {MIN_ESS:g}"),
    (LOW_ESS_SHARE, f"effective sample size below {MIN_ESS_SHARE:.0%} of the rows"),
    (BIG_WEIGHT, f"an importance weight above {MAX_WEIGHT:g}: a few rows dominate"),
    (CONSTANT_REWARD, "every weighted row has the same reward: the standard errors say nothing"),
    (UNSUPPORTED, "the policy chooses arms never logged: no estimator sees them"),
)

REWARD_MODEL = (
    "per-arm mean of the logged rewards (overall mean for an arm never logged), fitted on the "
    "same rows, no cross-fitting"
)


@dataclass(frozen=True)
class TargetPolicy:
    """A context-free policy to evaluate: `probabilities[a]` is its chance of choosing arm a."""

    name: str
    probabilities: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.probabilities:
            raise ValueError(f"policy {self.name!r} has no arms")
        if any(not math.isfinite(p) or p < 0 for p in self.probabilities):
            raise ValueError(f"policy {self.name!r}: probabilities must be finite and >= 0")
        if not math.isclose(sum(self.probabilities), 1.0, abs_tol=1e-9):
            raise ValueError(f"policy {self.name!r}: probabilities must sum to 1")


def always(arm: int, n_arms: int, name: str | None = None) -> TargetPolicy:
    """The policy that always chooses `arm`."""
    if not 0 <= arm < n_arms:
        raise ValueError(f"arm {arm} out of range for {n_arms} arms")
    probabilities = [0.0] * n_arms
    probabilities[arm] = 1.0
    return TargetPolicy(name or f"always arm {arm}", tuple(probabilities))


def uniform(n_arms: int, name: str = "uniform") -> TargetPolicy:
    """The policy that chooses each of the arms with probability 1 / n_arms."""
    if n_arms < 1:
        raise ValueError("need at least one arm")
    return TargetPolicy(name, tuple(1.0 / n_arms for _ in range(n_arms)))


@dataclass(frozen=True)
class Estimate:
    """An estimated value with its standard error and 95% normal interval."""

    value: float
    standard_error: float
    interval: Interval


def _estimate(value: float, se: float) -> Estimate:
    z = z_quantile()
    return Estimate(float(value), float(se), Interval(float(value - z * se), float(value + z * se)))


@dataclass(frozen=True)
class PolicyEstimate:
    """The estimates of one target policy's value (its mean reward per decision)."""

    policy: str
    ips: Estimate | None
    snips: Estimate | None
    dr: Estimate | None
    effective_sample_size: float
    max_weight: float
    #: Probability the policy puts on arms that never appear in the log (unsupported).
    unsupported_mass: float
    warnings: tuple[str, ...]
    #: One short code per warning, in the same order (see WARNING_CODES).
    warning_codes: tuple[str, ...] = ()


@dataclass(frozen=True)
class OffPolicyReport:
    """Off-policy estimates of several target policies from one log."""

    rows: int
    rows_used: int
    rows_excluded: int
    #: Why rows were excluded: "missing propensity", "propensity out of (0, 1]", "unknown arm".
    excluded_by_reason: tuple[tuple[str, int], ...]
    #: The mean reward of the rows used: the logging policy's own value.
    logged_value: float | None
    estimates: tuple[PolicyEstimate, ...]
    warnings: tuple[str, ...]
    reward_model: str = REWARD_MODEL


def _sd(values: np.ndarray) -> float:
    return float(values.std(ddof=1)) if values.size > 1 else 0.0


def evaluate(
    arms: Sequence[int] | np.ndarray,
    rewards: Sequence[float] | np.ndarray,
    propensities: Sequence[float | None] | np.ndarray,
    policies: Sequence[TargetPolicy],
    n_arms: int,
) -> OffPolicyReport:
    """IPS, SNIPS and DR estimates of each target policy, with warnings.

    `propensities` may hold None or NaN (a decision logged without one): those rows are
    excluded and counted, like zero, negative or >1 propensities and arms outside 0..n_arms-1.
    """
    a = np.asarray(arms, dtype=float)
    r = np.asarray(rewards, dtype=float)
    p = np.array([np.nan if x is None else x for x in propensities], dtype=float)
    if not (a.shape == r.shape == p.shape) or a.ndim != 1:
        raise ValueError("arms, rewards and propensities must be 1-d and of the same length")
    if (~np.isfinite(r)).any():
        raise ValueError("rewards must be finite")
    for policy in policies:
        if len(policy.probabilities) != n_arms:
            raise ValueError(f"policy {policy.name!r} has {len(policy.probabilities)} arms")
    total = int(a.size)
    missing = ~np.isfinite(p)
    out_of_range = ~missing & ((p <= 0) | (p > 1))
    bad_arm = ~missing & ~out_of_range & ((a < 0) | (a >= n_arms) | (a != np.round(a)))
    keep = ~(missing | out_of_range | bad_arm)
    reasons = (
        ("missing propensity", int(missing.sum())),
        ("propensity out of (0, 1]", int(out_of_range.sum())),
        ("unknown arm", int(bad_arm.sum())),
    )
    excluded = tuple((reason, count) for reason, count in reasons if count)
    a_used = a[keep].astype(int)
    r_used = r[keep]
    p_used = p[keep]
    n = int(a_used.size)
    warnings: list[str] = []
    n_excluded = total - n
    if n_excluded:
        detail = ", ".join(f"{count} {reason}" for reason, count in excluded)
        warnings.append(f"{n_excluded} of {total} rows excluded ({detail})")
    if n == 0:
        warnings.append("no usable rows: nothing can be estimated")
        empty = tuple(
            PolicyEstimate(
                pol.name, None, None, None, 0.0, 0.0, 1.0, ("no usable rows",), (NO_ROWS,)
            )
            for pol in policies
        )
        return OffPolicyReport(total, 0, n_excluded, excluded, None, empty, tuple(warnings))

    counts = np.bincount(a_used, minlength=n_arms)
    sums = np.bincount(a_used, weights=r_used, minlength=n_arms)
    overall = float(r_used.mean())
    q = np.where(counts > 0, sums / np.maximum(counts, 1), overall)
    estimates = [_evaluate_one(policy, a_used, r_used, p_used, q, counts) for policy in policies]
    return OffPolicyReport(
        total, n, n_excluded, excluded, overall, tuple(estimates), tuple(warnings)
    )


def _evaluate_one(
    policy: TargetPolicy,
    a: np.ndarray,
    r: np.ndarray,
    p: np.ndarray,
    q: np.ndarray,
    counts: np.ndarray,
) -> PolicyEstimate:
    n = a.size
    target = np.asarray(policy.probabilities, dtype=float)
    w = target[a] / p
    wr = w * r
    ips = _estimate(wr.mean(), _sd(wr) / math.sqrt(n))

    weight_sum = float(w.sum())
    snips: Estimate | None = None
    if weight_sum > 0:
        value = float(wr.sum() / weight_sum)
        u = w * (r - value)
        correction = n / (n - 1) if n > 1 else 1.0
        snips = _estimate(value, math.sqrt(correction * float((u**2).sum())) / weight_sum)

    direct = float(target @ q)
    dr_terms = direct + w * (r - q[a])
    dr = _estimate(dr_terms.mean(), _sd(dr_terms) / math.sqrt(n))

    square_sum = float((w**2).sum())
    ess = weight_sum**2 / square_sum if square_sum > 0 else 0.0
    max_weight = float(w.max())
    unsupported = float(target[counts == 0].sum())

    warnings: list[str] = []
    codes: list[str] = []

    def warn(code: str, text: str) -> None:
        codes.append(code)
        warnings.append(text)

    if weight_sum == 0:
        warn(NO_WEIGHT, "no logged row has a positive weight: SNIPS is undefined")
    if ess < MIN_ESS:
        warn(LOW_ESS, f"effective sample size {ess:.1f} is below {MIN_ESS:g}")
    if ess < MIN_ESS_SHARE * n:
        warn(
            LOW_ESS_SHARE,
            f"effective sample size {ess:.1f} is below {MIN_ESS_SHARE:.0%} of the {n} rows",
        )
    if max_weight > MAX_WEIGHT:
        warn(
            BIG_WEIGHT,
            f"largest importance weight {max_weight:.1f} exceeds {MAX_WEIGHT:g}: a few rows "
            "dominate the estimate",
        )
    weighted = r[w > 0]
    if weighted.size and (weighted == weighted[0]).all():
        warn(
            CONSTANT_REWARD,
            f"every one of the {weighted.size} rows the policy weights has reward "
            f"{weighted[0]:g}: the standard errors are 0 and the intervals say nothing",
        )
    if unsupported > 0:
        warn(
            UNSUPPORTED,
            f"the policy puts {unsupported:.0%} of its choices on arms never logged: no "
            "estimator sees them (IPS counts them as zero reward, DR as the reward model's guess)",
        )
    return PolicyEstimate(
        policy.name,
        ips,
        snips,
        dr,
        ess,
        max_weight,
        unsupported,
        tuple(warnings),
        tuple(codes),
    )
