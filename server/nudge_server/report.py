"""The experimenter's arm report, assembled from plain rows: pure, no I/O.

`report_store.ReportStore` fetches the rows (`ReportData`) for a `ReportQuery`; `build_report`
turns them into an `ArmReport`. Definitions (also in the README's "Arm reports" section):

- A campaign's *decisions* are its shown (granted) decisions in [start, end) that match the
  segment; an arm's decisions are those in which the bandit chose it. Impressions, taps,
  dismissals, conversions and ignores count the decisions with that outcome (outcomes are
  exactly-once per decision and type); those rates are per shown decision.
- A decision is *resolved* once it has any outcome (an impression, tap, dismissal, conversion,
  or the sweeper's ignore when its response window closed): that is when the bandit counts it
  as a pull. *Unresolved* decisions have no outcome yet (for ever, when nobody reports one and
  the campaign has no response window); they are not trials.
- *Rewards* are the outcomes the service counted as the bandit's reward (`outcomes.rewarded`:
  the campaign's reward metric within its attribution window, once per decision). The reward
  rate is rewards per resolved decision; its posterior is Beta(1 + rewards, 1 + resolved -
  rewards), the bandit's own. The chi-square test, the comparisons with the control and
  probability-best use the same counts.
- The *sample-ratio check* compares each arm's shown decisions with the count the logged policy
  implies. Decisions logged with a policy snapshot (the full distribution their arm was drawn
  from) give the expected count of arm k, sum_i pi_i(k), and Pearson's goodness of fit
  (`stats.snapshot_sample_ratio_check`); older decisions, with only the chosen arm's
  propensity, get the inverse-propensity check (`stats.sample_ratio_check`), reported apart.
- *Users* of the campaign are those who triggered it (one of its trigger events on its channel)
  in the range and segment. The stable hash of `throttle.in_holdout` splits them into the
  holdout (never shown the campaign) and the treated group (eligible: an intention-to-treat
  comparison, whether or not they were shown a prompt). A user's *first decision* is their first
  triggering decision in the range; they are *retained after d days* when they made any Decide
  of the app at or after first + d days, before the data's end. Only users whose first decision
  is at least d days before the data's end are measurable for d.
- The data's end is the end of the range or, when earlier (or no end is given), the time of the
  app's latest logged decision.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from . import ope, requests
from .errors import MAX_SHOWN, InvalidArgument, shown
from .model import Campaign, Channel, Platform
from .stats import (
    DEFAULT_DRAWS,
    DEFAULT_SEED,
    BetaPosterior,
    ChiSquare,
    Difference,
    Interval,
    SampleRatio,
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
from .throttle import in_holdout

#: The decision columns a segment may filter on (equality).
SEGMENT_KEYS = ("platform", "locale", "surface", "time_zone", "requested_channel")
#: Retention horizons of the holdout comparison, in days.
RETENTION_DAYS = (1, 7, 30, 90)
#: Retention horizons of the cohort view, in days (all after its first week).
COHORT_RETENTION_DAYS = (7, 30, 90)
#: The cohort view groups users by their engagement in this many days after their first decision.
COHORT_WINDOW_DAYS = 7
#: Cohort groups: (label, fewest engaged prompts, most engaged prompts or None for no limit).
COHORT_GROUPS: tuple[tuple[str, int, int | None], ...] = (
    ("0", 0, 0),
    ("1", 1, 1),
    ("2", 2, 2),
    ("3+", 3, None),
)
#: The timeline has at most this many buckets: UTC days while they fit, else the first of ISO
#: weeks, calendar months, quarters or years that fits (see `_timeline`).
TIMELINE_MAX_BUCKETS = 120
#: Bucket sizes, finest first.
TIMELINE_BUCKETS = ("day", "week", "month", "quarter", "year")
#: Probability-best over time: Monte Carlo draws per bucket are at most this budget / arms, and
#: at most TIMELINE_MAX_DRAWS ...
TIMELINE_SAMPLE_BUDGET = 400_000
TIMELINE_MAX_DRAWS = 20_000
#: ... and all buckets together draw at most this many samples (buckets x arms x draws): many
#: buckets or many arms mean fewer draws per bucket (timeline_draws says how many).
TIMELINE_TOTAL_SAMPLES = 40_000_000

CORRELATION_NOTE = (
    "This is correlation, not causation: users who engage in their first week may be the users "
    "who would have come back anyway. The holdout comparison is the causal one."
)
HOLDOUT_METRIC_NOTE = (
    "The reward metric per user counts the user's {metric} outcomes on any prompt of the app in "
    "the range: held-out users never see this campaign, so within it they have none by "
    "construction; the comparison shows the campaign's net effect on the app's {metric}s."
)


ADAPTIVE_NOTE = (
    "the allocation was adaptive (the logged propensities changed over the range): per-arm rates "
    "and the chi-square and z tests assume a fixed split, so read their p-values as approximate; "
    "the sample-ratio check, the off-policy estimates and the holdout allow for it"
)

DAY = dt.timedelta(days=1)


# --- the query ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportQuery:
    """What to report on: a campaign of an app, an optional range [start, end) and segment."""

    app_id: str
    campaign_id: str
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    segment: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def segment_value(self, key: str) -> str | None:
        """The segment's value for a column, or None when it does not filter on it."""
        return self.segment.get(key)

    def __reduce__(self) -> tuple[Any, ...]:
        # Picklable (the server sends queries to a child process; a mappingproxy is not):
        # rebuilt, and checked again, by validate_query.
        return validate_query, (
            self.app_id,
            self.campaign_id,
            self.start,
            self.end,
            dict(self.segment),
        )


_SEGMENT_VALUES: Mapping[str, tuple[str, ...]] = {
    "platform": tuple(p.value for p in Platform),
    "requested_channel": tuple(c.value for c in Channel),
}


def validate_query(
    app_id: str,
    campaign_id: str,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    segment: Mapping[str, str] | None = None,
) -> ReportQuery:
    """A checked ReportQuery. InvalidArgument names the field: app_id, campaign_id, start_time,
    end_time (times must carry a UTC offset and lie in years 1 to 9999 in UTC; the end must be
    after the start) or segment.<key>
    (only the keys of SEGMENT_KEYS; platform and requested_channel take their enum values)."""
    if not app_id:
        raise InvalidArgument("app_id", "is required")
    if not campaign_id:
        raise InvalidArgument("campaign_id", "is required")
    requests.app_id(app_id, "app_id")
    requests.app_id(campaign_id, "campaign_id")
    for name, moment in (("start_time", start), ("end_time", end)):
        if moment is None:
            continue
        if moment.utcoffset() is None:
            raise InvalidArgument(name, "must carry a time zone (UTC offset)")
        try:
            moment.astimezone(dt.UTC)
        except OverflowError:
            raise InvalidArgument(
                name,
                f"{moment.isoformat()} is outside the range of times "
                "(0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z)",
            ) from None
    if start is not None and end is not None and not start < end:
        raise InvalidArgument(
            "end_time", f"must be after start_time ({start.isoformat()}), got {end.isoformat()}"
        )
    checked: dict[str, str] = {}
    for key, value in (segment or {}).items():
        if key not in SEGMENT_KEYS:
            raise InvalidArgument(
                f"segment.{key[:MAX_SHOWN]}",
                f"unknown segment key {shown(key)}; segments filter on {', '.join(SEGMENT_KEYS)}",
            )
        allowed = _SEGMENT_VALUES.get(key)
        if allowed is not None and value not in allowed:
            raise InvalidArgument(
                f"segment.{key}", f"must be one of {', '.join(allowed)}, got {shown(value)}"
            )
        if not value.isprintable():
            # PostgreSQL refuses a NUL; no logged value holds a control character.
            raise InvalidArgument(f"segment.{key}", "must not contain control characters")
        checked[key] = value
    return ReportQuery(
        app_id=app_id,
        campaign_id=campaign_id,
        start=start,
        end=end,
        segment=MappingProxyType(checked),
    )


def parse_segment(pairs: Iterable[str]) -> dict[str, str]:
    """`key=value` strings (the CLI's --segment) as a mapping; InvalidArgument on a malformed or
    repeated pair. Keys are checked by `validate_query`."""
    segment: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidArgument("segment", f"must be key=value, got {shown(pair)}")
        if key in segment:
            raise InvalidArgument(f"segment.{key[:MAX_SHOWN]}", "is given twice")
        segment[key] = value
    return segment


# --- the rows ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShownDecision:
    """One shown decision of the campaign, with the outcomes recorded for it."""

    decision_id: str
    user_id: str
    arm_id: str
    propensity: float | None
    decided_at: dt.datetime
    impression: bool = False
    tap: bool = False
    dismiss: bool = False
    conversion: bool = False
    ignore: bool = False
    rewarded: bool = False
    #: The policy snapshot the arm was drawn from (None for decisions logged before snapshots).
    policy_snapshot: str | None = None

    @property
    def resolved(self) -> bool:
        """Whether the decision has any outcome: the bandit has counted it as a pull."""
        return self.impression or self.tap or self.dismiss or self.conversion or self.ignore


@dataclass(frozen=True)
class PolicyDistribution:
    """One policy snapshot: the probability with which each arm was drawn."""

    snapshot_id: str
    arm_ids: tuple[str, ...]
    probabilities: tuple[float, ...]

    def problem(self) -> str | None:
        """Why the snapshot cannot be used (None when it can)."""
        if len(self.arm_ids) != len(self.probabilities) or not self.arm_ids:
            return "its arm ids and probabilities do not match"
        if len(set(self.arm_ids)) != len(self.arm_ids):
            return "it names an arm twice"
        if any(not math.isfinite(p) or not 0 <= p <= 1 for p in self.probabilities):
            return "a probability is not in [0, 1]"
        if not math.isclose(math.fsum(self.probabilities), 1.0, abs_tol=1e-6):
            return "its probabilities do not sum to 1"
        return None


@dataclass(frozen=True)
class UserFact:
    """One user who triggered the campaign in the range (and segment)."""

    user_id: str
    #: Their first triggering decision in the range.
    first_at: dt.datetime
    #: Their latest decision of the app (any event) before the data's end.
    last_at: dt.datetime
    #: Their outcomes of the campaign's reward metric type, on any prompt of the app, in range.
    reward_events: int = 0
    #: This campaign's prompts they tapped or converted on, decided in their first week.
    engaged_first_week: int = 0


@dataclass(frozen=True)
class ReportData:
    """Everything the report is computed from."""

    decisions: Sequence[ShownDecision]
    users: Sequence[UserFact]
    #: The data's end (see the module docstring); None when the app has no decisions at all.
    data_end: dt.datetime | None
    #: The policy snapshots the decisions name, by snapshot id.
    snapshots: Mapping[str, PolicyDistribution] = field(
        default_factory=lambda: MappingProxyType({})
    )


# --- the report --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmRow:
    """One arm's counts, rates and posterior."""

    arm_id: str
    configured: bool
    is_control: bool
    #: Shown decisions.
    decisions: int
    share_of_decisions: float | None
    #: The decisions the sample-ratio check expects of the arm (see `ArmReport.sample_ratio`).
    expected_decisions: float | None
    #: Shown decisions with at least one outcome: the bandit's pulls, the posterior's trials.
    resolved: int
    #: Shown decisions without any outcome yet.
    unresolved: int
    impressions: int
    taps: int
    dismissals: int
    conversions: int
    ignores: int
    impression_rate: float | None
    tap_rate: float | None
    dismiss_rate: float | None
    conversion_rate: float | None
    ignore_rate: float | None
    rewards: int
    #: rewards / resolved, with its Wilson interval.
    reward_rate: float | None
    reward_rate_interval: Interval
    #: Beta(1 + rewards, 1 + resolved - rewards).
    posterior: BetaPosterior
    probability_best: float
    expected_loss: float
    #: Shown decisions whose attribution window was still open at the data's end.
    pending: int


@dataclass(frozen=True)
class ControlComparison:
    """One arm against the control arm: reward rate difference (arm - control)."""

    arm_id: str
    control_arm_id: str
    difference: Difference
    #: P(arm's rate > control's rate) under the posteriors.
    probability_better: float | None


@dataclass(frozen=True)
class GroupComparison:
    """Treated (eligible) users against held-out users on one per-user yes/no metric."""

    metric: str
    days: int
    treated_users: int
    treated_successes: int
    holdout_users: int
    holdout_successes: int
    treated_interval: Interval
    holdout_interval: Interval
    #: treated - holdout, Newcombe interval, z test.
    lift: Difference
    #: Users of both groups left out because their first decision is too recent.
    unmeasurable_users: int


@dataclass(frozen=True)
class Holdout:
    """The holdout comparison (causal: the split is random)."""

    share: float
    users: int
    treated_users: int
    holdout_users: int
    comparisons: tuple[GroupComparison, ...]
    note: str


@dataclass(frozen=True)
class CohortRetention:
    """Retention of one cohort group after `days`."""

    days: int
    measurable: int
    retained: int
    rate: float | None
    interval: Interval


@dataclass(frozen=True)
class CohortGroup:
    """Users who engaged with this many of the campaign's prompts in their first week."""

    label: str
    min_engaged: int
    max_engaged: int | None
    users: int
    retention: tuple[CohortRetention, ...]


@dataclass(frozen=True)
class CohortTest:
    """Chi-square test of retention after `days` across the cohort groups."""

    days: int
    test: ChiSquare


@dataclass(frozen=True)
class Cohorts:
    """Retention by first-week engagement (treated users whose first week is complete)."""

    users: int
    groups: tuple[CohortGroup, ...]
    tests: tuple[CohortTest, ...]
    note: str


@dataclass(frozen=True)
class TimelineBucket:
    """One bucket of the timeline (a UTC day, or a week, month, quarter or year of UTC days, as
    `ArmReport.timeline_bucket` says): each arm's decisions in it, its share of them, and its
    probability of being best given the cumulative counts up to the end of the bucket."""

    #: The bucket's first day (a Monday for weeks, the 1st for months, quarters and years).
    day: dt.date
    decisions: tuple[int, ...]
    #: Of them, resolved (probability best uses the cumulative resolved and rewards).
    resolved: tuple[int, ...]
    rewards: tuple[int, ...]
    share: tuple[float | None, ...]
    probability_best: tuple[float, ...]


@dataclass(frozen=True)
class ArmReport:
    """The whole report of one campaign."""

    app_id: str
    campaign_id: str
    display_name: str
    reward_metric: str
    control_arm_id: str
    start: dt.datetime | None
    end: dt.datetime | None
    segment: Mapping[str, str]
    data_end: dt.datetime | None
    decisions: int
    #: Of them, resolved (with an outcome).
    resolved: int
    arms: tuple[ArmRow, ...]
    best_arm_method: str
    best_arm_draws: int
    best_arm_seed: int | None
    best_arm_error: float
    independence: ChiSquare
    versus_control: tuple[ControlComparison, ...]
    #: Over the shown decisions with a policy snapshot (Pearson); when none has one, over those
    #: with a usable propensity (inverse-propensity check).
    sample_ratio: SampleRatio
    #: When some decisions have a snapshot and others do not: the inverse-propensity check of
    #: those without (older decisions); None otherwise.
    sample_ratio_without_snapshots: SampleRatio | None
    #: Shown decisions without a usable propensity, left out of the off-policy estimates (and of
    #: the sample-ratio check unless they have a policy snapshot).
    rows_without_propensity: int
    holdout: Holdout
    cohorts: Cohorts
    off_policy: ope.OffPolicyReport
    timeline: tuple[TimelineBucket, ...]
    timeline_draws: int
    warnings: tuple[str, ...]
    #: The size of the timeline's buckets: one of TIMELINE_BUCKETS.
    timeline_bucket: str = "day"


def _rate(count: int, total: int) -> float | None:
    return count / total if total else None


def _valid_propensity(p: float | None) -> bool:
    return p is not None and math.isfinite(p) and 0 < p <= 1


def _no_checkpoint() -> None:
    pass


def build_report(
    campaign: Campaign,
    query: ReportQuery,
    data: ReportData,
    *,
    draws: int = DEFAULT_DRAWS,
    seed: int = DEFAULT_SEED,
    checkpoint: Callable[[], None] = _no_checkpoint,
) -> ArmReport:
    """Assembles the arm report of `campaign` from `data` (fetched for `query`).

    `checkpoint` is called between the stages of the computation (and between the timeline's
    buckets): whatever it raises stops the report there (how a cancelled report stops)."""
    warnings: list[str] = []
    decisions = list(data.decisions)
    snapshots, snapshot_problems = _usable_snapshots(decisions, data.snapshots)
    configured = [arm.arm_id for arm in campaign.arms]
    chosen_ids = {d.arm_id for d in decisions}
    drawn_ids = {arm_id for s in snapshots.values() for arm_id in s.arm_ids}
    extra = sorted((chosen_ids | drawn_ids) - set(configured))
    arm_ids = configured + extra
    if extra:
        warnings.append(
            f"arms no longer configured, with decisions or a policy probability in the range: "
            f"{', '.join(extra)} (reported at the end)"
        )
    index = {arm_id: i for i, arm_id in enumerate(arm_ids)}
    k = len(arm_ids)
    total = len(decisions)
    chosen = np.array([index[d.arm_id] for d in decisions], dtype=int)

    def per_arm(values: Iterable[bool]) -> np.ndarray:
        weights = np.fromiter(values, dtype=float, count=total)
        return np.bincount(chosen, weights=weights, minlength=k).astype(int)

    n = np.bincount(chosen, minlength=k).astype(int)
    resolved = per_arm(d.resolved for d in decisions)
    impressions, taps = per_arm(d.impression for d in decisions), per_arm(d.tap for d in decisions)
    dismissals = per_arm(d.dismiss for d in decisions)
    conversions = per_arm(d.conversion for d in decisions)
    ignores, rewards = per_arm(d.ignore for d in decisions), per_arm(d.rewarded for d in decisions)
    pending = np.zeros(k, dtype=int)
    if data.data_end is not None:
        window = dt.timedelta(seconds=campaign.attribution_window_s)
        for d in decisions:
            if d.decided_at + window > data.data_end:
                pending[index[d.arm_id]] += 1
    posteriors = [beta_posterior(int(rewards[i]), int(resolved[i])) for i in range(k)]
    checkpoint()
    best = best_arm([(p.alpha, p.beta) for p in posteriors], draws=draws, seed=seed)
    checkpoint()

    if total == 0:
        warnings.append("no shown decisions in the range and segment: nothing to compare")
    unresolved_total = total - int(resolved.sum())
    if unresolved_total:
        warnings.append(
            f"{unresolved_total} of {total} shown decisions ({unresolved_total / total:.0%}) "
            "have no outcome yet: like the bandit, the reward rates, posteriors and tests count "
            f"only the {int(resolved.sum())} resolved ones (a decision resolves at its first "
            "outcome, or with an ignore once its response window closes)"
        )
    if int(pending.sum()):
        warnings.append(
            f"{int(pending.sum())} decisions are younger than the attribution window "
            f"({campaign.attribution_window_s} s) at the data's end: their rewards may still "
            "arrive, so recent rates are low"
        )

    independence = reward_independence([int(x) for x in rewards], [int(x) for x in resolved])
    if independence.p_value is not None and not independence.reliable:
        warnings.append(f"chi-square test across arms: {independence.note}")

    versus = _versus_control(campaign.control_arm_id, arm_ids, resolved, rewards, posteriors)
    if campaign.control_arm_id and campaign.control_arm_id not in index:
        warnings.append(f"control arm {campaign.control_arm_id!r} is not among the arms")

    valid = np.array([_valid_propensity(d.propensity) for d in decisions], dtype=bool)
    props = np.array(
        [d.propensity if _valid_propensity(d.propensity) else 1.0 for d in decisions],
        dtype=float,
    )
    if total and _adaptive(chosen[valid], props[valid], k):
        warnings.append(ADAPTIVE_NOTE)
    floor = campaign.exploration_floor / len(configured) if configured and not extra else 0.0
    srm, older_srm = _sample_ratio(
        decisions, chosen, valid, props, snapshots, snapshot_problems, index, floor, warnings
    )
    without = int((~valid).sum()) if total else 0
    if without:
        has_snapshot = sum(
            1
            for d, ok in zip(decisions, valid, strict=True)
            if not ok and _snapshot(d, snapshots) is not None
        )
        if has_snapshot == 0:
            checked = " and the sample-ratio check"
        elif has_snapshot == without:
            checked = " (their policy snapshots still count in the sample-ratio check)"
        else:
            checked = (
                f"; the {without - has_snapshot} of them without a policy snapshot are left out "
                "of the sample-ratio check too"
            )
        warnings.append(
            f"{without} shown decisions have no usable propensity (missing, 0 or above 1): "
            f"left out of the off-policy estimates{checked}"
        )
    expected = srm.expected
    checkpoint()

    arms = tuple(
        ArmRow(
            arm_id=arm_id,
            configured=arm_id in configured,
            is_control=arm_id == campaign.control_arm_id,
            decisions=int(n[i]),
            share_of_decisions=_rate(int(n[i]), total),
            expected_decisions=expected[i],
            resolved=int(resolved[i]),
            unresolved=int(n[i] - resolved[i]),
            impressions=int(impressions[i]),
            taps=int(taps[i]),
            dismissals=int(dismissals[i]),
            conversions=int(conversions[i]),
            ignores=int(ignores[i]),
            impression_rate=_rate(int(impressions[i]), int(n[i])),
            tap_rate=_rate(int(taps[i]), int(n[i])),
            dismiss_rate=_rate(int(dismissals[i]), int(n[i])),
            conversion_rate=_rate(int(conversions[i]), int(n[i])),
            ignore_rate=_rate(int(ignores[i]), int(n[i])),
            rewards=int(rewards[i]),
            reward_rate=_rate(int(rewards[i]), int(resolved[i])),
            reward_rate_interval=wilson_interval(int(rewards[i]), int(resolved[i])),
            posterior=posteriors[i],
            probability_best=best.probability_best[i],
            expected_loss=best.expected_loss[i],
            pending=int(pending[i]),
        )
        for i, arm_id in enumerate(arm_ids)
    )

    holdout = _holdout(campaign, query, data)
    cohorts = _cohorts(campaign, query, data)
    checkpoint()

    policies = [ope.always(i, k, f"always {arm_id}") for i, arm_id in enumerate(arm_ids)]
    policies.append(ope.uniform(k, f"uniform over {k} arms"))
    off_policy = ope.evaluate(
        chosen,
        [1.0 if d.rewarded else 0.0 for d in decisions],
        [d.propensity for d in decisions],
        policies,
        k,
    )
    flagged = [e.policy for e in off_policy.estimates if e.warnings]
    if flagged:
        warnings.append(
            f"off-policy estimates with warnings: {len(flagged)} of {len(policies)} policies "
            "(see the off-policy section)"
        )

    checkpoint()
    timeline = _timeline(decisions, chosen, k, seed, checkpoint)
    if timeline.left_out:
        warnings.append(
            f"the timeline shows the last {len(timeline.buckets)} years; the "
            f"{timeline.left_out} decisions before them count only in its cumulative "
            "probability of being best"
        )
    return ArmReport(
        app_id=query.app_id,
        campaign_id=campaign.campaign_id,
        display_name=campaign.display_name,
        reward_metric=campaign.reward_metric.value,
        control_arm_id=campaign.control_arm_id,
        start=query.start,
        end=query.end,
        segment=query.segment,
        data_end=data.data_end,
        decisions=total,
        resolved=int(resolved.sum()),
        arms=arms,
        best_arm_method=best.method,
        best_arm_draws=best.draws,
        best_arm_seed=best.seed,
        best_arm_error=best.monte_carlo_error,
        independence=independence,
        versus_control=versus,
        sample_ratio=srm,
        sample_ratio_without_snapshots=older_srm,
        rows_without_propensity=without,
        holdout=holdout,
        cohorts=cohorts,
        off_policy=off_policy,
        timeline=timeline.buckets,
        timeline_draws=timeline.draws,
        timeline_bucket=timeline.size,
        warnings=tuple(warnings),
    )


def _usable_snapshots(
    decisions: Sequence[ShownDecision], snapshots: Mapping[str, PolicyDistribution]
) -> tuple[dict[str, PolicyDistribution], dict[str, str]]:
    """The snapshots the decisions name that can be used, and why the others cannot."""
    usable: dict[str, PolicyDistribution] = {}
    problems: dict[str, str] = {}
    for name in {d.policy_snapshot for d in decisions if d.policy_snapshot}:
        snapshot = snapshots.get(name)
        problem = "it is not in the log" if snapshot is None else snapshot.problem()
        if snapshot is None or problem is not None:
            problems[name] = problem or ""
        else:
            usable[name] = snapshot
    return usable, problems


def _snapshot(
    decision: ShownDecision, snapshots: Mapping[str, PolicyDistribution]
) -> PolicyDistribution | None:
    return snapshots.get(decision.policy_snapshot) if decision.policy_snapshot else None


def _sample_ratio(
    decisions: Sequence[ShownDecision],
    chosen: np.ndarray,
    valid: np.ndarray,
    propensities: np.ndarray,
    snapshots: Mapping[str, PolicyDistribution],
    problems: Mapping[str, str],
    index: Mapping[str, int],
    floor: float,
    warnings: list[str],
) -> tuple[SampleRatio, SampleRatio | None]:
    """The sample-ratio check of the decisions with a usable policy snapshot and, apart, the
    inverse-propensity check of the others (appending to `warnings` what a reader must know).
    When no decision has a snapshot, the inverse-propensity check is the only one."""
    k = len(index)
    names = sorted(snapshots)
    row_of = {name: i for i, name in enumerate(names)}
    table = np.zeros((len(names), k))
    for name in names:
        snapshot = snapshots[name]
        for arm_id, probability in zip(snapshot.arm_ids, snapshot.probabilities, strict=True):
            table[row_of[name], index[arm_id]] = probability
    with_snapshot = np.array(
        [d.policy_snapshot in row_of if d.policy_snapshot else False for d in decisions],
        dtype=bool,
    )
    snapshot_rows = np.array(
        [row_of[d.policy_snapshot] for d in decisions if d.policy_snapshot in row_of], dtype=int
    )
    unusable = sum(1 for d in decisions if d.policy_snapshot and d.policy_snapshot in problems)
    if unusable:
        reasons = sorted(set(problems.values()))
        warnings.append(
            f"{unusable} shown decisions name a policy snapshot that cannot be used "
            f"({'; '.join(reasons)}): they are checked by the inverse-propensity method instead"
        )
    older = ~with_snapshot & valid
    inverse = sample_ratio_check(chosen[older], propensities[older], k, min_propensity=floor)
    if not with_snapshot.any():
        _warn_sample_ratio(inverse, "sample-ratio check", warnings)
        return inverse, None
    srm = snapshot_sample_ratio_check(chosen[with_snapshot], snapshot_rows, table)
    _warn_sample_ratio(srm, "sample-ratio check", warnings)
    drawn = table[snapshot_rows, chosen[with_snapshot]]
    logged = propensities[with_snapshot]
    same = np.isclose(logged, drawn, rtol=1e-9, atol=1e-12)
    disagree = int((valid[with_snapshot] & ~same).sum())
    if disagree:
        warnings.append(
            f"{disagree} shown decisions logged a propensity that differs from their policy "
            "snapshot's probability of the chosen arm: the log is inconsistent (the off-policy "
            "estimates use the logged propensity)"
        )
    if not (~with_snapshot).any():
        return srm, None
    warnings.append(
        f"{int((~with_snapshot).sum())} shown decisions have no usable policy snapshot (logged "
        "before snapshots, or the snapshot is missing): the sample-ratio check covers the "
        f"{int(with_snapshot.sum())} with one; the others get the inverse-propensity check, "
        "reported apart"
    )
    _warn_sample_ratio(inverse, "inverse-propensity check (decisions without a snapshot)", warnings)
    return srm, inverse


def _warn_sample_ratio(check: SampleRatio, name: str, warnings: list[str]) -> None:
    if check.mismatch:
        warnings.append(f"{name}: {check.note.split('; ')[0]}")
    elif check.p_value is not None and check.p_value < check.threshold:
        warnings.append(
            f"{name}: p = {check.p_value:.3g} is below {check.threshold:g}, but the test is "
            f"unreliable ({check.note.split('; ')[0].removeprefix('unreliable: ')}); look at "
            "the per-arm observed and expected counts before trusting the comparisons"
        )


def _adaptive(chosen: np.ndarray, propensities: np.ndarray, k: int) -> bool:
    """Whether some arm was chosen with different propensities over the range."""
    for arm in range(k):
        mine = propensities[chosen == arm]
        if mine.size and float(mine.max() - mine.min()) > 1e-9:
            return True
    return False


def _versus_control(
    control: str,
    arm_ids: Sequence[str],
    n: np.ndarray,
    rewards: np.ndarray,
    posteriors: Sequence[BetaPosterior],
) -> tuple[ControlComparison, ...]:
    """Each arm against the control: `n` are the trials (resolved decisions)."""
    if not control or control not in arm_ids:
        return ()
    c = arm_ids.index(control)
    return tuple(
        ControlComparison(
            arm_id=arm_id,
            control_arm_id=control,
            difference=difference_of_proportions(
                int(rewards[i]), int(n[i]), int(rewards[c]), int(n[c])
            ),
            probability_better=probability_greater(
                (posteriors[i].alpha, posteriors[i].beta),
                (posteriors[c].alpha, posteriors[c].beta),
            ),
        )
        for i, arm_id in enumerate(arm_ids)
        if i != c
    )


def _retained(user: UserFact, days: int) -> bool:
    return user.last_at >= user.first_at + days * DAY


def _measurable(user: UserFact, days: int, data_end: dt.datetime | None) -> bool:
    return data_end is not None and user.first_at + days * DAY <= data_end


def _comparison(
    metric: str,
    days: int,
    treated: Sequence[UserFact],
    held: Sequence[UserFact],
    success: str,
    data_end: dt.datetime | None,
) -> GroupComparison:
    def count(users: Sequence[UserFact]) -> tuple[int, int, int]:
        if success == "reward":
            return len(users), sum(1 for u in users if u.reward_events > 0), 0
        measurable = [u for u in users if _measurable(u, days, data_end)]
        retained = sum(1 for u in measurable if _retained(u, days))
        return len(measurable), retained, len(users) - len(measurable)

    t_n, t_x, t_out = count(treated)
    h_n, h_x, h_out = count(held)
    return GroupComparison(
        metric=metric,
        days=days,
        treated_users=t_n,
        treated_successes=t_x,
        holdout_users=h_n,
        holdout_successes=h_x,
        treated_interval=wilson_interval(t_x, t_n),
        holdout_interval=wilson_interval(h_x, h_n),
        lift=difference_of_proportions(t_x, t_n, h_x, h_n),
        unmeasurable_users=t_out + h_out,
    )


def _holdout(campaign: Campaign, query: ReportQuery, data: ReportData) -> Holdout:
    share = campaign.holdout_share
    users = list(data.users)
    held = [u for u in users if in_holdout(query.app_id, campaign.campaign_id, u.user_id, share)]
    held_ids = {u.user_id for u in held}
    treated = [u for u in users if u.user_id not in held_ids]
    metric = campaign.reward_metric.value
    comparisons = [_comparison(f"users with a {metric}", 0, treated, held, "reward", None)]
    comparisons += [
        _comparison(
            f"retained after {d} day{'' if d == 1 else 's'}",
            d,
            treated,
            held,
            "retention",
            data.data_end,
        )
        for d in RETENTION_DAYS
    ]
    notes = [
        (
            "Treated = every user who triggered the campaign and is not held out (intention "
            "to treat); membership is the stable hash of the current holdout_share."
        ),
        HOLDOUT_METRIC_NOTE.format(metric=metric),
    ]
    if share <= 0:
        notes.insert(0, "The campaign has no holdout (holdout_share 0): nothing to compare.")
    elif not held:
        notes.insert(0, "No user of the range falls in the holdout yet.")
    return Holdout(share, len(users), len(treated), len(held), tuple(comparisons), " ".join(notes))


def _cohorts(campaign: Campaign, query: ReportQuery, data: ReportData) -> Cohorts:
    share = campaign.holdout_share
    users = [
        u
        for u in data.users
        if not in_holdout(query.app_id, campaign.campaign_id, u.user_id, share)
        and _measurable(u, COHORT_WINDOW_DAYS, data.data_end)
    ]
    groups: list[CohortGroup] = []
    tables: dict[int, list[list[int]]] = {d: [] for d in COHORT_RETENTION_DAYS}
    labels: list[str] = []
    for label, low, high in COHORT_GROUPS:
        members = [
            u
            for u in users
            if u.engaged_first_week >= low and (high is None or u.engaged_first_week <= high)
        ]
        retention = []
        for d in COHORT_RETENTION_DAYS:
            measurable = [u for u in members if _measurable(u, d, data.data_end)]
            retained = sum(1 for u in measurable if _retained(u, d))
            retention.append(
                CohortRetention(
                    d,
                    len(measurable),
                    retained,
                    _rate(retained, len(measurable)),
                    wilson_interval(retained, len(measurable)),
                )
            )
            tables[d].append([retained, len(measurable) - retained])
        labels.append(label)
        groups.append(CohortGroup(label, low, high, len(members), tuple(retention)))
    tests = tuple(
        CohortTest(
            d,
            chi_square_independence(
                tables[d], [f"group {x}" for x in labels], ("retained", "not retained")
            ),
        )
        for d in COHORT_RETENTION_DAYS
    )
    note = (
        f"treated users whose first {COHORT_WINDOW_DAYS} days are complete, grouped by how many "
        f"of this campaign's prompts they tapped or converted on in those days. " + CORRELATION_NOTE
    )
    return Cohorts(len(users), tuple(groups), tests, note)


def _bucket_index(day: dt.date, size: str) -> int:
    """The number of the bucket of `size` that holds `day`; consecutive buckets, consecutive
    numbers."""
    if size == "day":
        return day.toordinal()
    if size == "week":
        return (day.toordinal() - 1) // 7  # 0001-01-01 is a Monday
    if size == "month":
        return day.year * 12 + day.month - 1
    if size == "quarter":
        return day.year * 4 + (day.month - 1) // 3
    return day.year


def _bucket_start(index: int, size: str) -> dt.date:
    """The first day of bucket number `index` of `size`."""
    if size == "day":
        return dt.date.fromordinal(index)
    if size == "week":
        return dt.date.fromordinal(index * 7 + 1)
    if size == "month":
        return dt.date(index // 12, index % 12 + 1, 1)
    if size == "quarter":
        return dt.date(index // 4, index % 4 * 3 + 1, 1)
    return dt.date(index, 1, 1)


def timeline_bucket_size(first: dt.date, last: dt.date) -> str:
    """The finest bucket size with at most TIMELINE_MAX_BUCKETS buckets from `first` to `last`
    (years when none fits)."""
    for size in TIMELINE_BUCKETS:
        if _bucket_index(last, size) - _bucket_index(first, size) < TIMELINE_MAX_BUCKETS:
            return size
    return "year"


def timeline_draws(buckets: int, k: int) -> int:
    """Monte Carlo draws per bucket for `buckets` buckets of `k` arms: within the per-bucket
    budget, TIMELINE_MAX_DRAWS and, for all buckets together, TIMELINE_TOTAL_SAMPLES."""
    if buckets == 0 or k == 0:
        return 1
    return max(
        1,
        min(
            TIMELINE_MAX_DRAWS,
            TIMELINE_SAMPLE_BUDGET // k,
            TIMELINE_TOTAL_SAMPLES // (buckets * k),
        ),
    )


@dataclass(frozen=True)
class _Timeline:
    buckets: tuple[TimelineBucket, ...]
    #: Monte Carlo draws per bucket (0 when exact).
    draws: int
    size: str
    #: Decisions before the first bucket shown (only past TIMELINE_MAX_BUCKETS years of data).
    left_out: int


def _timeline(
    decisions: Sequence[ShownDecision],
    chosen: np.ndarray,
    k: int,
    seed: int,
    checkpoint: Callable[[], None] = _no_checkpoint,
) -> _Timeline:
    if not decisions:
        return _Timeline((), 0, "day", 0)
    days = [d.decided_at.astimezone(dt.UTC).date() for d in decisions]
    size = timeline_bucket_size(min(days), max(days))
    numbers = np.array([_bucket_index(day, size) for day in days], dtype=np.int64)
    first = int(numbers.min())
    n_buckets = int(numbers.max()) - first + 1
    flat = (numbers - first) * k + chosen

    def per_bucket(flags: Iterable[bool]) -> np.ndarray:
        weights = np.fromiter(flags, dtype=float, count=len(decisions))
        counts = np.bincount(flat, weights=weights, minlength=n_buckets * k)
        return counts.reshape(n_buckets, k).astype(int)

    counts = np.bincount(flat, minlength=n_buckets * k).reshape(n_buckets, k)
    resolved = per_bucket(d.resolved for d in decisions)
    rewards = per_bucket(d.rewarded for d in decisions)
    cumulative_n = np.cumsum(resolved, axis=0)
    cumulative_r = np.cumsum(rewards, axis=0)
    # Only past TIMELINE_MAX_BUCKETS years of data: the last buckets are shown, the earlier
    # decisions still count in the cumulative sums.
    shown_from = max(0, n_buckets - TIMELINE_MAX_BUCKETS)
    draws = timeline_draws(n_buckets - shown_from, k)
    buckets = []
    used_draws = 0
    for i in range(shown_from, n_buckets):
        checkpoint()
        posteriors = [
            (1.0 + cumulative_r[i, a], 1.0 + cumulative_n[i, a] - cumulative_r[i, a])
            for a in range(k)
        ]
        best = best_arm(posteriors, draws=draws, seed=seed)
        used_draws = max(used_draws, best.draws)
        total = int(counts[i].sum())
        buckets.append(
            TimelineBucket(
                day=_bucket_start(first + i, size),
                decisions=tuple(int(x) for x in counts[i]),
                resolved=tuple(int(x) for x in resolved[i]),
                rewards=tuple(int(x) for x in rewards[i]),
                share=tuple(_rate(int(x), total) for x in counts[i]),
                probability_best=best.probability_best,
            )
        )
    left_out = int(counts[:shown_from].sum())
    return _Timeline(tuple(buckets), used_draws, size, left_out)


def to_document(value: object) -> Any:
    """A report (or any part of it) as JSON-serialisable data: dataclasses as objects, times in
    ISO 8601, non-finite numbers as null."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_document(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_document(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_document(v) for v in value]
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (np.integer, np.floating)):
        return to_document(value.item())
    return value
