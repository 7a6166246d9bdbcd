"""Statistics of the arm report: pure functions of counts, no I/O.

Every function returns a frozen dataclass that carries its numbers and, where a test can be
misleading, a `reliable` flag and a `note` a person can read. The methods (formulas in each
docstring):

- Beta posterior of a reward rate: prior Beta(1, 1), posterior Beta(1 + rewards,
  1 + trials - rewards), mean alpha / (alpha + beta), equal-tailed 95% credible interval from the
  Beta quantile function.
- Probability best and expected loss of each arm under independent Beta posteriors: exact for
  two arms (Evan Miller's closed form for integer parameters), Monte Carlo with a fixed seed
  otherwise. Expected loss of arm k is E[max_j p_j - p_k].
- Chi-square test of independence (Pearson, no continuity correction).
- Difference of two proportions: Newcombe's hybrid score interval (his method 10, built from
  two Wilson intervals) and the pooled two-proportion z test.
- Sample-ratio check of an adaptive (bandit) allocation: Pearson's goodness of fit against the
  expected counts of the full allocation (policy snapshots), or, for decisions logged without
  one, a Wald test of the inverse-propensity counts.
- Wilson score interval of a proportion.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

import numpy as np

#: Every interval of the report is a 95% interval.
LEVEL = 0.95
#: Beta(1, 1) prior, as the bandit uses (`bandit.PRIOR_ALPHA`, `bandit.PRIOR_BETA`).
PRIOR_ALPHA = 1.0
PRIOR_BETA = 1.0
#: The seed of every Monte Carlo estimate, so that the same data always gives the same report.
DEFAULT_SEED = 20240601
#: Monte Carlo draws for probability-best and expected loss (more than two arms).
DEFAULT_DRAWS = 100_000
#: At most this many Beta samples are drawn in one numpy call (draws x arms per chunk): bounds
#: the memory, and how long one call holds the GIL when a report runs in a server's thread.
_CHUNK_SAMPLES = 250_000
#: Usual sample-ratio-mismatch threshold: a p-value below it is flagged.
SRM_THRESHOLD = 0.001
#: Cochran's rule: expected counts below this make a chi-square approximation unreliable.
MIN_EXPECTED = 5.0
#: The inverse-propensity sample-ratio check is unreliable when an arm's 1/p weights have a
#: Kish effective sample size below this (or below its count): in simulated bandit logs with
#: exploration floors down to 0.05 / 80 arms, its p-values were then far too small.
MIN_IPS_ESS = 30.0
#: ... or when the allocation changed and one draw at the exploration floor would move its
#: statistic by more than this (in those simulations, its p-values were then too small).
MAX_FLOOR_JUMP = 1.0
#: The two arms' exact formula sums this many terms at most; beyond, Monte Carlo.
_EXACT_MAX_TERMS = 5_000_000


def _sps() -> ModuleType:
    # scipy.stats takes over a second to import: only pay for it when a report is computed,
    # not at every server or CLI start.
    return importlib.import_module("scipy.stats")


def _special() -> ModuleType:
    return importlib.import_module("scipy.special")


def z_quantile(level: float = LEVEL) -> float:
    """The two-sided standard normal quantile of a confidence level (1.959964 for 95%)."""
    return float(_special().ndtri(0.5 + level / 2))


@dataclass(frozen=True)
class Interval:
    """A two-sided interval [low, high]."""

    low: float
    high: float


# --- proportions -------------------------------------------------------------------------------


def wilson_interval(successes: int, trials: int, level: float = LEVEL) -> Interval:
    """The Wilson score interval of a binomial proportion.

    With p = x / n and z the normal quantile:
    (p + z^2/2n -/+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n). [0, 1] when n = 0.
    """
    if not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")
    if trials == 0:
        return Interval(0.0, 1.0)
    z = z_quantile(level)
    n = float(trials)
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return Interval(low, high)


@dataclass(frozen=True)
class BetaPosterior:
    """The posterior Beta(alpha, beta) of a reward rate, its mean and credible interval."""

    alpha: float
    beta: float
    mean: float
    interval: Interval


def beta_posterior(
    rewards: int,
    trials: int,
    *,
    level: float = LEVEL,
    prior_alpha: float = PRIOR_ALPHA,
    prior_beta: float = PRIOR_BETA,
) -> BetaPosterior:
    """Posterior of a Bernoulli rate: alpha = prior_alpha + rewards, beta = prior_beta + trials -
    rewards; mean alpha / (alpha + beta); the equal-tailed interval's ends are the Beta
    quantiles at (1 - level) / 2 and (1 + level) / 2."""
    if not 0 <= rewards <= trials:
        raise ValueError(f"need 0 <= rewards <= trials, got {rewards} of {trials}")
    alpha = prior_alpha + rewards
    beta = prior_beta + trials - rewards
    tail = (1 - level) / 2
    low, high = _sps().beta.ppf([tail, 1 - tail], alpha, beta)
    return BetaPosterior(alpha, beta, alpha / (alpha + beta), Interval(float(low), float(high)))


# --- probability best and expected loss --------------------------------------------------------


@dataclass(frozen=True)
class BestArm:
    """P(arm k has the highest rate) and the expected loss E[max_j p_j - p_k] of each arm.

    `method` is "exact" (one or two arms) or "monte_carlo"; `draws` and `seed` say how the Monte
    Carlo estimate was made, `monte_carlo_error` is the largest standard error of its
    probabilities, sqrt(p (1 - p) / draws) (0 when exact).
    """

    probability_best: tuple[float, ...]
    expected_loss: tuple[float, ...]
    method: str
    draws: int
    seed: int | None
    monte_carlo_error: float


def _prob_greater(a: float, b: float, c: float, d: float) -> float | None:
    """P(Y > X) for X ~ Beta(a, b), Y ~ Beta(c, d), exactly, when c or a is a whole number.

    Evan Miller's formula for whole c: sum_{i=0}^{c-1} B(a+i, b+d) / ((d+i) B(1+i, d) B(a, b)),
    evaluated in log space. With a whole instead, P(Y > X) = 1 - P(X > Y) by the same formula.
    The shorter of the two sums is used. None when neither parameter is whole (or both sums are
    too long).
    """
    candidates: list[tuple[float, bool]] = []
    if float(c).is_integer() and c <= _EXACT_MAX_TERMS:
        candidates.append((c, False))
    if float(a).is_integer() and a <= _EXACT_MAX_TERMS:
        candidates.append((a, True))
    if not candidates:
        return None
    terms, flipped = min(candidates)
    if flipped:  # P(X > Y), X playing Y's part
        a, b, c, d = c, d, a, b
    special = _special()
    i = np.arange(int(terms), dtype=float)
    log_terms = (
        special.betaln(a + i, b + d)
        - np.log(d + i)
        - special.betaln(1 + i, d)
        - special.betaln(a, b)
    )
    p = float(np.exp(special.logsumexp(log_terms)))
    p = min(1.0, max(0.0, p))
    return 1.0 - p if flipped else p


def probability_greater(a: tuple[float, float], b: tuple[float, float]) -> float | None:
    """P(p_a > p_b) for independent p_a ~ Beta(*a), p_b ~ Beta(*b), exactly (Evan Miller's
    closed form); None when neither posterior has a whole alpha."""
    return _prob_greater(b[0], b[1], a[0], a[1])


def _best_of_two(
    a1: float, b1: float, a2: float, b2: float
) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """Exact probability-best and expected loss of two arms (None when not computable).

    Loss of arm 1 is E[(p2 - p1)+] = E[p2] P(p2' > p1) - E[p1] P(p2 > p1'), where p2' ~
    Beta(a2 + 1, b2) and p1' ~ Beta(a1 + 1, b1) are the size-biased posteriors (Chris Stucchio's
    derivation); loss of arm 2 follows from E[(p2 - p1)+] - E[(p1 - p2)+] = E[p2] - E[p1].
    """
    p2_best = _prob_greater(a1, b1, a2, b2)
    up = _prob_greater(a1, b1, a2 + 1, b2)
    down = _prob_greater(a1 + 1, b1, a2, b2)
    if p2_best is None or up is None or down is None:
        return None
    mean1 = a1 / (a1 + b1)
    mean2 = a2 / (a2 + b2)
    loss1 = max(0.0, mean2 * up - mean1 * down)
    loss2 = max(0.0, loss1 - mean2 + mean1)
    return (1.0 - p2_best, p2_best), (loss1, loss2)


def best_arm(
    posteriors: Sequence[tuple[float, float]],
    *,
    draws: int = DEFAULT_DRAWS,
    seed: int = DEFAULT_SEED,
) -> BestArm:
    """Probability best and expected loss of each arm, from its posterior (alpha, beta).

    One arm: it is best, with no loss. Two arms with whole parameters: exact. Otherwise Monte
    Carlo: `draws` joint samples of all arms from a generator seeded with `seed`; P(best) is the
    share of draws in which the arm's sample is the largest, the loss the mean of (largest
    sample - the arm's sample).
    """
    k = len(posteriors)
    if k == 0:
        return BestArm((), (), "exact", 0, None, 0.0)
    if k == 1:
        return BestArm((1.0,), (0.0,), "exact", 0, None, 0.0)
    if k == 2:
        (a1, b1), (a2, b2) = posteriors
        exact = _best_of_two(a1, b1, a2, b2)
        if exact is not None:
            return BestArm(exact[0], exact[1], "exact", 0, None, 0.0)
    if draws < 1:
        raise ValueError(f"draws must be positive, got {draws}")
    alpha = np.array([p[0] for p in posteriors], dtype=float)[:, None]
    beta = np.array([p[1] for p in posteriors], dtype=float)[:, None]
    rng = np.random.default_rng(seed)
    wins = np.zeros(k)
    loss = np.zeros(k)
    chunk = max(1, _CHUNK_SAMPLES // k)
    done = 0
    while done < draws:
        size = min(chunk, draws - done)
        samples = rng.beta(alpha, beta, size=(k, size))
        wins += np.bincount(samples.argmax(axis=0), minlength=k)
        loss += (samples.max(axis=0)[None, :] - samples).sum(axis=1)
        done += size
    p_best = wins / draws
    error = float(np.sqrt(p_best * (1 - p_best) / draws).max())
    return BestArm(
        tuple(float(p) for p in p_best),
        tuple(float(x) for x in loss / draws),
        "monte_carlo",
        draws,
        seed,
        error,
    )


# --- chi-square tests --------------------------------------------------------------------------


@dataclass(frozen=True)
class ChiSquare:
    """A chi-square test. `statistic` and `p_value` are None when the test is undefined (a
    column or all rows empty, fewer than two rows); `reliable` is False then, and also when an
    expected count is below 5; `note` says why in words."""

    statistic: float | None
    dof: int
    p_value: float | None
    reliable: bool
    note: str


def chi_square_independence(
    table: Sequence[Sequence[int]],
    row_names: Sequence[str] | None = None,
    column_names: Sequence[str] | None = None,
) -> ChiSquare:
    """Pearson's chi-square test of independence of a table of counts (rows x columns).

    X^2 = sum (O - E)^2 / E with E = row total x column total / grand total, df = (r-1)(c-1),
    no continuity correction. Empty rows are left out (and named in the note). The test is
    undefined when a column is empty (no variation to test) or fewer than two rows are left.
    """
    counts = np.asarray(table, dtype=float)
    if counts.ndim != 2 or counts.shape[1] < 2:
        raise ValueError("need a table with at least two columns")
    if (counts < 0).any():
        raise ValueError("counts must not be negative")
    rows = row_names or [f"row {i}" for i in range(counts.shape[0])]
    columns = column_names or [f"column {j}" for j in range(counts.shape[1])]
    notes: list[str] = []
    empty_rows = [rows[i] for i in range(counts.shape[0]) if counts[i].sum() == 0]
    if empty_rows:
        notes.append(f"left out (no observations): {', '.join(empty_rows)}")
    counts = counts[counts.sum(axis=1) > 0]
    if counts.shape[0] < 2:
        notes.insert(0, "undefined: fewer than two rows have observations")
        return ChiSquare(None, 0, None, False, "; ".join(notes))
    dof = (counts.shape[0] - 1) * (counts.shape[1] - 1)
    empty_columns = [columns[j] for j in range(counts.shape[1]) if counts[:, j].sum() == 0]
    if empty_columns:
        notes.insert(
            0,
            f"undefined: no observation has {' or '.join(empty_columns)}, so there is no "
            "difference to test",
        )
        return ChiSquare(None, dof, None, False, "; ".join(notes))
    statistic, p_value, dof_found, expected = _sps().chi2_contingency(counts, correction=False)
    small = int((expected < MIN_EXPECTED).sum())
    reliable = small == 0
    if not reliable:
        notes.insert(
            0,
            f"unreliable: {small} of {expected.size} expected counts are below "
            f"{MIN_EXPECTED:g}, so the chi-square approximation does not hold",
        )
    return ChiSquare(float(statistic), int(dof_found), float(p_value), reliable, "; ".join(notes))


def reward_independence(rewards: Sequence[int], trials: Sequence[int]) -> ChiSquare:
    """The chi-square test of independence on the arms x (reward, no reward) table."""
    table = [[r, t - r] for r, t in zip(rewards, trials, strict=True)]
    return chi_square_independence(table, None, ("a reward", "no reward"))


# --- two proportions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    """p_a - p_b with a 95% interval, and the test of p_a = p_b.

    `interval` is Newcombe's hybrid score interval; `p_value` is the two-sided pooled
    two-proportion z test (None when a group is empty); `relative` is (p_a - p_b) / p_b (None
    when p_b is 0). `reliable` is False when a group is empty or an expected count is below 5.
    """

    rate_a: float | None
    rate_b: float | None
    difference: float | None
    interval: Interval | None
    z: float | None
    p_value: float | None
    relative: float | None
    reliable: bool
    note: str
    method: str = "Newcombe hybrid score interval; pooled two-proportion z test"


def difference_of_proportions(
    successes_a: int, trials_a: int, successes_b: int, trials_b: int, level: float = LEVEL
) -> Difference:
    """The difference p_a - p_b of two independent proportions.

    Interval (Newcombe 1998, method 10): with Wilson intervals (l_a, u_a) and (l_b, u_b),
    low = d - sqrt((p_a - l_a)^2 + (u_b - p_b)^2), high = d + sqrt((u_a - p_a)^2 + (p_b - l_b)^2).
    Test: z = d / sqrt(p (1 - p) (1/n_a + 1/n_b)) with the pooled p, two-sided normal p-value
    (the same as Pearson's chi-square on the 2 x 2 table); when p is 0 or 1 both groups are
    identical and the p-value is 1.
    """
    if trials_a == 0 or trials_b == 0:
        empty = " and ".join(
            name for name, n in (("the arm", trials_a), ("the comparison", trials_b)) if n == 0
        )
        return Difference(
            successes_a / trials_a if trials_a else None,
            successes_b / trials_b if trials_b else None,
            None,
            None,
            None,
            None,
            None,
            False,
            f"undefined: {empty} has no observations",
        )
    p_a = successes_a / trials_a
    p_b = successes_b / trials_b
    d = p_a - p_b
    wa = wilson_interval(successes_a, trials_a, level)
    wb = wilson_interval(successes_b, trials_b, level)
    low = d - math.sqrt((p_a - wa.low) ** 2 + (wb.high - p_b) ** 2)
    high = d + math.sqrt((wa.high - p_a) ** 2 + (p_b - wb.low) ** 2)
    pooled = (successes_a + successes_b) / (trials_a + trials_b)
    notes: list[str] = []
    if pooled in (0.0, 1.0):
        z = 0.0
        p_value = 1.0
        notes.append("both groups have the same rate (all or none): nothing to test")
    else:
        se = math.sqrt(pooled * (1 - pooled) * (1 / trials_a + 1 / trials_b))
        z = d / se
        p_value = float(2 * _sps().norm.sf(abs(z)))
    expected = [n * q for n in (trials_a, trials_b) for q in (pooled, 1 - pooled)]
    reliable = min(expected) >= MIN_EXPECTED
    if not reliable:
        notes.insert(
            0,
            f"unreliable: an expected count is below {MIN_EXPECTED:g} "
            f"({min(expected):.2f}), so the z test's normal approximation does not hold",
        )
    return Difference(
        p_a,
        p_b,
        d,
        Interval(max(-1.0, low), min(1.0, high)),
        z,
        p_value,
        d / p_b if p_b > 0 else None,
        reliable,
        "; ".join(notes),
    )


# --- sample ratio ------------------------------------------------------------------------------

#: The verdicts of a sample-ratio check.
MISMATCH = "mismatch"
NO_MISMATCH = "no mismatch"
UNRELIABLE = "unreliable"
#: The methods of a sample-ratio check (`SampleRatio.kind`).
POLICY_SNAPSHOTS = "policy_snapshots"
INVERSE_PROPENSITY = "inverse_propensity"

SNAPSHOT_METHOD = (
    "Pearson goodness of fit of each arm's decisions against its expected count, the sum over "
    "the decisions of the probability their policy snapshot gave the arm (df = arms with a "
    "positive expected count - 1); when the probabilities change over the range the "
    "chi-square p-value is conservative"
)
INVERSE_PROPENSITY_METHOD = (
    "chi-square (Wald) test of the inverse-propensity allocation: for every arm k, the sum "
    "of 1/propensity over its decisions must estimate the number of decisions N (for decisions "
    "logged without a policy snapshot: only the chosen arm's probability is known)"
)
_MISMATCH_NOTE = (
    "SAMPLE RATIO MISMATCH: the allocation does not match the logged {what} (lost or "
    "duplicated log rows, wrong probabilities, or a broken assignment); do not trust the "
    "comparisons until it is explained"
)


@dataclass(frozen=True)
class SampleRatio:
    """Whether the logged allocation of decisions to arms matches the logged policy.

    Per arm: `observed` decisions and `expected` decisions. `verdict` is MISMATCH when
    `mismatch`, else NO_MISMATCH when `reliable`, else UNRELIABLE (the statistic and p-value
    are still given, but a small p-value is not flagged; `note` says why). `mismatch` is True
    when the test is reliable and its p-value is below `threshold` (0.001), when an exact
    never-chosen probability is below it, or when a decision chose an arm its policy gave no
    chance. `kind` is POLICY_SNAPSHOTS or INVERSE_PROPENSITY (see the two functions below);
    `ips_total` (the sum of 1 / propensity per arm) is empty for POLICY_SNAPSHOTS.
    """

    kind: str
    observed: tuple[int, ...]
    expected: tuple[float | None, ...]
    ips_total: tuple[float, ...]
    decisions: int
    statistic: float | None
    dof: int
    p_value: float | None
    never_chosen_p_value: float | None
    mismatch: bool
    reliable: bool
    verdict: str
    note: str
    method: str
    threshold: float = SRM_THRESHOLD


def _verdict(mismatch: bool, reliable: bool) -> str:
    if mismatch:
        return MISMATCH
    return NO_MISMATCH if reliable else UNRELIABLE


def snapshot_sample_ratio_check(
    arms: Sequence[int] | np.ndarray,
    snapshot_of_row: Sequence[int] | np.ndarray,
    probabilities: Sequence[Sequence[float]] | np.ndarray,
    *,
    threshold: float = SRM_THRESHOLD,
) -> SampleRatio:
    """The sample-ratio check of decisions whose full arm distribution was logged.

    Row i chose arm A_i, drawn from the distribution pi_i = probabilities[snapshot_of_row[i]]
    (one row per policy snapshot, one column per arm; an arm missing from a snapshot has
    probability 0 in it). The expected count of arm k is E_k = sum_i pi_i(k), the observed O_k
    the rows that chose k. Pearson's X^2 = sum (O_k - E_k)^2 / E_k over the m arms with
    E_k > 0, with m - 1 degrees of freedom.

    O - E is a sum of martingale differences whose covariance, diag(E) - sum_i pi_i pi_i', is at
    most (in the positive semi-definite order) the fixed-split one, diag(E) - E E' / N, so
    X^2 is asymptotically at most chi-square(m - 1): exact for a fixed split, conservative when
    the probabilities change. With an expected count below 5 the approximation fails: the
    check is then UNRELIABLE, never MISMATCH on its p-value alone.

    Two exact checks flag a mismatch whatever the expected counts: a row that chose an arm its
    own distribution gave probability 0, and an arm never chosen although P(never) =
    prod_i (1 - pi_i(k)) is tiny (Bonferroni over the m arms: `never_chosen_p_value` =
    min(1, m x the smallest such probability)).
    """
    a = np.asarray(arms, dtype=int)
    s = np.asarray(snapshot_of_row, dtype=int)
    p = np.asarray(probabilities, dtype=float)
    if a.shape != s.shape or a.ndim != 1:
        raise ValueError("arms and snapshot_of_row must be 1-d and of the same length")
    if p.ndim != 2 or p.shape[1] < 1:
        raise ValueError("probabilities must be a (snapshots x arms) table")
    n_snapshots, n_arms = p.shape
    if a.size and (a.min() < 0 or a.max() >= n_arms):
        raise ValueError("arm index out of range")
    if s.size and (s.min() < 0 or s.max() >= n_snapshots):
        raise ValueError("snapshot index out of range")
    if (~np.isfinite(p)).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("probabilities must be in [0, 1]")
    if n_snapshots and not np.allclose(p.sum(axis=1), 1.0, rtol=0, atol=1e-6):
        raise ValueError("each snapshot's probabilities must sum to 1")
    n = int(a.size)
    observed = np.bincount(a, minlength=n_arms)
    rows_per_snapshot = np.bincount(s, minlength=n_snapshots).astype(float)
    expected = rows_per_snapshot @ p if n_snapshots else np.zeros(n_arms)

    def result(
        statistic: float | None,
        dof: int,
        p_value: float | None,
        never_p: float | None,
        mismatch: bool,
        reliable: bool,
        notes: list[str],
    ) -> SampleRatio:
        return SampleRatio(
            kind=POLICY_SNAPSHOTS,
            observed=tuple(int(c) for c in observed),
            expected=tuple(float(e) for e in expected),
            ips_total=(),
            decisions=n,
            statistic=statistic,
            dof=dof,
            p_value=p_value,
            never_chosen_p_value=never_p,
            mismatch=mismatch,
            reliable=reliable,
            verdict=_verdict(mismatch, reliable),
            note="; ".join(notes),
            method=SNAPSHOT_METHOD,
            threshold=threshold,
        )

    if n == 0:
        return result(None, 0, None, None, False, False, ["undefined: no decisions"])
    notes: list[str] = []
    impossible = int((p[s, a] <= 0).sum())
    if impossible:
        notes.append(
            f"{impossible} decision(s) chose an arm their policy snapshot gave probability 0"
        )
    support = expected > 0
    m = int(support.sum())
    never = support & (observed == 0)
    never_p: float | None = None
    if never.any():
        used = p[rows_per_snapshot > 0]
        with np.errstate(divide="ignore"):  # log(0) = -inf: an arm drawn with certainty
            log_never = (rows_per_snapshot[rows_per_snapshot > 0] @ np.log1p(-used))[never]
        never_p = float(min(1.0, m * float(np.exp(log_never.max()))))
        notes.append(
            f"{int(never.sum())} arm(s) never chosen in {n} decisions; the chance of that for "
            f"the likeliest of them, times {m} arms, is {never_p:.3g}"
        )
    statistic: float | None = None
    p_value: float | None = None
    dof = m - 1
    reliable = False
    if dof < 1:
        notes.insert(0, "undefined: only one arm had any probability, so there is no split")
    else:
        o, e = observed[support], expected[support]
        statistic = float(((o - e) ** 2 / e).sum())
        p_value = float(_sps().chi2.sf(statistic, dof))
        small = int((e < MIN_EXPECTED).sum())
        reliable = small == 0
        if not reliable:
            notes.insert(
                0,
                f"unreliable: {small} of {m} arms have an expected count below "
                f"{MIN_EXPECTED:g} (the smallest is {float(e.min()):.3g}), so the chi-square "
                f"approximation does not hold: p = {p_value:.3g} is shown, not flagged",
            )
    mismatch = (
        impossible > 0
        or (reliable and p_value is not None and p_value < threshold)
        or (never_p is not None and never_p < threshold)
    )
    if mismatch:
        notes.insert(0, _MISMATCH_NOTE.format(what="policy snapshots"))
    return result(statistic, max(dof, 0), p_value, never_p, mismatch, reliable, notes)


def sample_ratio_check(
    arms: Sequence[int] | np.ndarray,
    propensities: Sequence[float] | np.ndarray,
    n_arms: int,
    *,
    min_propensity: float = 0.0,
    threshold: float = SRM_THRESHOLD,
) -> SampleRatio:
    """The sample-ratio check of decisions for which only the chosen arm's probability was
    logged (made before policy snapshots): an inverse-propensity test.

    Row i chose arm A_i with logged probability p_i. If the log is complete and the
    propensities are right, every arm k satisfies E[1{A_i = k} / p_i] = 1 for every row, so
    X_i = (1{A_i = k} / p_i - 1)_k is a martingale difference and d = sum_i X_i = (S_k - N)_k,
    with S_k = sum_{A_i = k} 1 / p_i, is centred at zero. The statistic is the Wald form
    T = d' C+ d with C = sum_i X_i X_i' (its unbiased estimate of covariance, always
    positive semi-definite; C+ the pseudo-inverse), asymptotically chi-square with
    rank(C) degrees of freedom. For a fixed split (every p_i of arm k equal to q_k) it is the
    textbook test: with two arms T equals Pearson's goodness of fit of the counts against N q_k
    exactly. `expected` is N x the harmonic mean of the arm's logged propensities.

    Small propensities make 1 / p heavy-tailed and the approximation poor: the check is
    UNRELIABLE (its p-value shown, not flagged) when an arm has fewer than 5 decisions, or when
    the Kish effective sample size (sum 1/p)^2 / sum 1/p^2 of an arm's weights is below
    min(MIN_IPS_ESS, its decisions), or when the propensities changed (an adaptive policy) and
    one draw at `min_propensity`, of weight 1 / min_propensity, would move T by more than
    MAX_FLOOR_JUMP: the rows that decide the test are then the rare draws at the floor, and
    they are too few for the normal approximation. Use the policy-snapshot check when you can.
    Arms never chosen carry no logged propensity and are left out of T; with `min_propensity`
    (the policy's guaranteed floor, e.g. exploration_floor / K) the chance of never choosing an
    arm in N rows is at most (1 - min_propensity)^N, and that bound is reported and flagged too.
    """
    arm_index = np.asarray(arms, dtype=int)
    p = np.asarray(propensities, dtype=float)
    if arm_index.shape != p.shape:
        raise ValueError("arms and propensities must have the same length")
    if n_arms < 1:
        raise ValueError("need at least one arm")
    if arm_index.size and (arm_index.min() < 0 or arm_index.max() >= n_arms):
        raise ValueError("arm index out of range")
    if (~np.isfinite(p)).any() or (p <= 0).any() or (p > 1).any():
        raise ValueError("propensities must be in (0, 1]; drop the others first")
    n = int(arm_index.size)
    observed = np.bincount(arm_index, minlength=n_arms)
    s1 = np.bincount(arm_index, weights=1 / p, minlength=n_arms)
    s2 = np.bincount(arm_index, weights=1 / p**2, minlength=n_arms)
    expected = tuple(float(n * observed[k] / s1[k]) if observed[k] else None for k in range(n_arms))

    def result(
        statistic: float | None,
        dof: int,
        p_value: float | None,
        never_p: float | None,
        mismatch: bool,
        reliable: bool,
        notes: list[str],
    ) -> SampleRatio:
        return SampleRatio(
            kind=INVERSE_PROPENSITY,
            observed=tuple(int(c) for c in observed),
            expected=expected,
            ips_total=tuple(float(x) for x in s1),
            decisions=n,
            statistic=statistic,
            dof=dof,
            p_value=p_value,
            never_chosen_p_value=never_p,
            mismatch=mismatch,
            reliable=reliable,
            verdict=_verdict(mismatch, reliable),
            note="; ".join(notes),
            method=INVERSE_PROPENSITY_METHOD,
            threshold=threshold,
        )

    if n == 0:
        return result(None, 0, None, None, False, False, ["undefined: no decisions"])
    notes: list[str] = []
    chosen = observed > 0
    never = [k for k in range(n_arms) if not chosen[k]]
    never_p: float | None = None
    if never:
        if min_propensity > 0:
            never_p = float(np.exp(n * np.log1p(-min(min_propensity, 1.0))))
            notes.append(
                f"{len(never)} arm(s) never chosen in {n} decisions; with every propensity at "
                f"least {min_propensity:.4g} that has probability at most {never_p:.3g}"
            )
        else:
            notes.append(f"{len(never)} arm(s) never chosen: left out of the test")
    d = (s1 - n)[chosen]
    ones = np.ones(n_arms)
    cov = (np.diag(s2) - np.outer(s1, ones) - np.outer(ones, s1) + n)[np.ix_(chosen, chosen)]
    eigenvalues, vectors = np.linalg.eigh(cov)
    top = float(eigenvalues.max()) if eigenvalues.size else 0.0
    keep = eigenvalues > max(top, 1.0) * 1e-9
    dof = int(keep.sum())
    statistic: float | None = None
    p_value: float | None = None
    if dof == 0:
        notes.insert(0, "undefined: a single arm was chosen, so there is no split to check")
    else:
        projected = vectors[:, keep].T @ d
        statistic = float(np.sum(projected**2 / eigenvalues[keep]))
        p_value = float(_sps().chi2.sf(statistic, dof))
    few = int((observed < MIN_EXPECTED).sum())
    # Kish's effective size of each arm's 1/p weights: its count for a fixed split, far less
    # when a few rows drawn with a tiny propensity dominate the arm's sum.
    ess = np.where(s2 > 0, s1**2 / np.where(s2 > 0, s2, 1.0), 0.0)
    heavy = int((chosen & (ess < np.minimum(MIN_IPS_ESS, observed) * (1 - 1e-9))).sum())
    # Under an adaptive policy an arm's rare draws at the floor carry weight 1/floor: when one
    # more (or one fewer) of them would move the statistic by more than 1, whether those rare
    # rows happened decides the verdict. C's diagonal is sum_i (1{A_i = k}/p_i - 1)^2.
    floor_jump = 0.0
    # (sum p)(sum 1/p) >= count^2 per arm, with equality exactly when its propensities are equal.
    sum_p = np.bincount(arm_index, weights=p, minlength=n_arms)
    varies = bool((sum_p * s1 > observed**2 * (1 + 1e-9) + 1e-9).any())
    if min_propensity > 0 and varies:
        diagonal = s2 - 2 * s1 + n
        jumps = (1 / min(min_propensity, 1.0) - 1) ** 2 / np.where(diagonal > 0, diagonal, np.inf)
        floor_jump = float(jumps[chosen].max()) if chosen.any() else 0.0
    # An arm chosen rarely (or never) makes the self-normalised variance of the rows that did
    # not choose it far too small, and heavy-tailed weights make the normal approximation
    # fail, so a small p-value then means little: report, don't flag.
    reliable = p_value is not None and few == 0 and heavy == 0 and floor_jump <= MAX_FLOOR_JUMP
    shown = "" if p_value is None else f": p = {p_value:.3g} is shown, not flagged"
    if floor_jump > MAX_FLOOR_JUMP:
        notes.insert(
            0,
            f"unreliable: the propensities changed and one draw at the exploration floor "
            f"({min_propensity:.4g}, weight {1 / min_propensity:.4g}) would move the statistic "
            f"by about {floor_jump:.3g}, so the rare draws at the floor decide the test{shown}",
        )
    if heavy:
        notes.insert(
            0,
            f"unreliable: the 1/propensity weights of {heavy} arm(s) are heavy-tailed (an "
            f"effective sample size below {MIN_IPS_ESS:g}), so the chi-square approximation "
            f"does not hold{shown}",
        )
    if few:
        notes.insert(
            0,
            f"unreliable: {few} arm(s) have fewer than {MIN_EXPECTED:g} decisions, so the "
            f"chi-square approximation does not hold{shown}",
        )
    mismatch = (reliable and p_value is not None and p_value < threshold) or (
        never_p is not None and never_p < threshold
    )
    if mismatch:
        notes.insert(0, _MISMATCH_NOTE.format(what="propensities"))
    return result(statistic, dof, p_value, never_p, mismatch, reliable, notes)
