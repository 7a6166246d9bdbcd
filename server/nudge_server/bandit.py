"""Thompson sampling over Beta posteriors, with an exploration floor and exact propensities.

Thompson sampling chooses arm k with the probability that k is the best arm under the current
posteriors. We estimate those probabilities once per statistics snapshot (Monte Carlo, in the
background), mix in a uniform exploration floor, and then draw each decision's arm from that
distribution. The policy that runs is therefore known exactly: the logged propensity is the very
probability with which the arm was drawn, so off-policy estimates from the log are unbiased.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Beta(1, 1) prior: no opinion about an arm before it is shown.
PRIOR_ALPHA = 1.0
PRIOR_BETA = 1.0
#: Monte Carlo budget per snapshot (draws × arms), so large campaigns stay cheap to refresh.
_SAMPLE_BUDGET = 400_000
_MIN_DRAWS = 2_000
_MAX_DRAWS = 20_000


@dataclass(frozen=True)
class ArmStats:
    """What an arm has earned: times shown (pulls) and rewards."""

    pulls: int = 0
    rewards: int = 0

    @property
    def alpha(self) -> float:
        return PRIOR_ALPHA + self.rewards

    @property
    def beta(self) -> float:
        return PRIOR_BETA + max(self.pulls - self.rewards, 0)


def probability_best(
    stats: Sequence[ArmStats], rng: np.random.Generator, draws: int | None = None
) -> np.ndarray:
    """Monte Carlo estimate of P(arm k has the highest reward rate) under Beta posteriors."""
    k = len(stats)
    if k == 1:
        return np.ones(1)
    if draws is None:
        draws = int(min(_MAX_DRAWS, max(_MIN_DRAWS, _SAMPLE_BUDGET // k)))
    alpha = np.array([s.alpha for s in stats])[:, None]
    beta = np.array([s.beta for s in stats])[:, None]
    samples = rng.beta(alpha, beta, size=(k, draws))
    wins = np.bincount(samples.argmax(axis=0), minlength=k)
    return wins / draws


def policy_probabilities(p_best: np.ndarray, exploration_floor: float) -> tuple[float, ...]:
    """The probability of drawing each arm: a floor shared uniformly, the rest by p_best."""
    k = len(p_best)
    mixed = exploration_floor / k + (1.0 - exploration_floor) * p_best
    return tuple(float(p) for p in mixed / mixed.sum())


@dataclass(frozen=True)
class CampaignPolicy:
    """One campaign's arm-choice distribution under one statistics snapshot."""

    arm_ids: tuple[str, ...]
    stats: tuple[ArmStats, ...]
    probabilities: tuple[float, ...]
    #: Names this distribution in the log (policy_snapshots); set by whoever owns the policy.
    snapshot_id: str = ""

    def __post_init__(self) -> None:
        cumulative: list[float] = []
        total = 0.0
        for p in self.probabilities:
            total += p
            cumulative.append(total)
        object.__setattr__(self, "_cumulative", tuple(cumulative))

    @classmethod
    def build(
        cls,
        arm_ids: Sequence[str],
        stats: Sequence[ArmStats],
        exploration_floor: float,
        rng: np.random.Generator,
    ) -> CampaignPolicy:
        """The policy for these arms and their statistics."""
        p_best = probability_best(stats, rng)
        return cls(tuple(arm_ids), tuple(stats), policy_probabilities(p_best, exploration_floor))

    def choose(self, rng: random.Random) -> tuple[int, float]:
        """Draws an arm: its index and the probability with which it was drawn."""
        cumulative: tuple[float, ...] = self._cumulative  # type: ignore[attr-defined]
        index = bisect.bisect_right(cumulative, rng.random() * cumulative[-1])
        index = min(index, len(self.arm_ids) - 1)
        return index, self.probabilities[index]
