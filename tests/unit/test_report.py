"""The arm report assembled from synthetic rows with known answers."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from collections.abc import Iterator

import pytest
from nudge.v1 import report_pb2
from nudge_server.errors import InvalidArgument
from nudge_server.model import Arm, Campaign, Prompt, RewardMetric
from nudge_server.report import (
    TIMELINE_MAX_BUCKETS,
    TIMELINE_MAX_DRAWS,
    TIMELINE_SAMPLE_BUDGET,
    TIMELINE_TOTAL_SAMPLES,
    PolicyDistribution,
    ReportData,
    ShownDecision,
    UserFact,
    build_report,
    parse_segment,
    timeline_bucket_size,
    timeline_draws,
    to_document,
    validate_query,
)
from nudge_server.report_api import report_to_proto
from nudge_server.settings import GrpcSettings
from nudge_server.stats import (
    INVERSE_PROPENSITY,
    MISMATCH,
    NO_MISMATCH,
    POLICY_SNAPSHOTS,
    UNRELIABLE,
    best_arm,
    beta_posterior,
    difference_of_proportions,
    reward_independence,
)
from nudge_server.throttle import in_holdout

START = dt.datetime(2026, 6, 1, 8, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
DATA_END = START + 100 * DAY
HOLDOUT_SHARE = 0.3


def campaign(**overrides: object) -> Campaign:
    fields: dict[str, object] = {
        "app_id": "shop",
        "campaign_id": "streak",
        "arms": (Arm("a", Prompt(title="A")), Arm("b", Prompt(title="B"))),
        "trigger_events": frozenset({"workout_finished"}),
        "control_arm_id": "a",
        "holdout_share": HOLDOUT_SHARE,
        "reward_metric": RewardMetric.TAP,
        "attribution_window_s": 86400,
    }
    fields.update(overrides)
    return Campaign(**fields)  # type: ignore[arg-type]


def decisions(
    arm: str,
    n: int,
    taps: int,
    *,
    dismissals: int = 0,
    conversions: int = 0,
    ignores: int = 0,
    unresolved: int = 0,
    propensity: float | None = 0.5,
    snapshot: str | None = None,
    start: dt.datetime = START,
    tag: str = "",
) -> list[ShownDecision]:
    """n shown decisions of an arm, one per 6 hours from `start`; the first `taps` were tapped
    (and rewarded), then dismissals, conversions and ignores follow in that order; all have an
    impression but the last `unresolved`, which have no outcome at all."""
    rows = []
    for i in range(n):
        rows.append(
            ShownDecision(
                decision_id=f"{arm}-{tag}{i}",
                user_id=f"user-{arm}-{tag}{i}",
                arm_id=arm,
                propensity=propensity,
                policy_snapshot=snapshot,
                decided_at=start + i * dt.timedelta(hours=6),
                impression=i < n - unresolved,
                tap=i < taps,
                rewarded=i < taps,
                dismiss=taps <= i < taps + dismissals,
                conversion=taps + dismissals <= i < taps + dismissals + conversions,
                ignore=taps + dismissals + conversions
                <= i
                < taps + dismissals + conversions + ignores,
            )
        )
    return rows


def base_rows() -> list[ShownDecision]:
    return decisions("a", 100, 10, dismissals=5) + decisions("b", 100, 25, conversions=3, ignores=2)


def user_ids(held: bool) -> Iterator[str]:
    """User ids the stable hash puts in (or out of) the holdout."""
    i = 0
    while True:
        user = f"person-{i}"
        if in_holdout("shop", "streak", user, HOLDOUT_SHARE) == held:
            yield user
        i += 1


def known_users() -> list[UserFact]:
    treated, held = user_ids(False), user_ids(True)
    t1, t2, t3 = next(treated), next(treated), next(treated)
    h1, h2, h3 = next(held), next(held), next(held)
    return [
        UserFact(t1, START, START + 95 * DAY, reward_events=2, engaged_first_week=3),
        UserFact(t2, START, START + 3 * DAY, reward_events=0, engaged_first_week=0),
        UserFact(
            t3,
            DATA_END - 5 * DAY,
            DATA_END - dt.timedelta(hours=1),
            reward_events=1,
            engaged_first_week=1,
        ),
        UserFact(h1, START, START, reward_events=1),
        UserFact(h2, START, START + 10 * DAY),
        UserFact(h3, START + 20 * DAY, START + 50 * DAY),
    ]


def report_of(  # type: ignore[no-untyped-def]
    rows: list[ShownDecision],
    users: list[UserFact] | None = None,
    snapshots: list[PolicyDistribution] | None = None,
    **kw: object,
):
    query = validate_query("shop", "streak")
    data = ReportData(
        rows,
        known_users() if users is None else users,
        DATA_END,
        {s.snapshot_id: s for s in snapshots or []},
    )
    return build_report(campaign(**kw), query, data)


# --- arms --------------------------------------------------------------------------------------


def test_per_arm_counts_rates_and_posteriors() -> None:
    report = report_of(base_rows())
    a, b = report.arms
    assert report.decisions == 200
    assert (a.arm_id, a.is_control, b.is_control) == ("a", True, False)
    assert (a.decisions, a.impressions, a.taps, a.dismissals, a.conversions, a.ignores) == (
        100,
        100,
        10,
        5,
        0,
        0,
    )
    assert (b.decisions, b.taps, b.dismissals, b.conversions, b.ignores) == (100, 25, 0, 3, 2)
    assert a.tap_rate == pytest.approx(0.10) and b.tap_rate == pytest.approx(0.25)
    assert a.dismiss_rate == pytest.approx(0.05) and b.ignore_rate == pytest.approx(0.02)
    assert b.conversion_rate == pytest.approx(0.03) and a.share_of_decisions == 0.5
    assert (a.rewards, b.rewards) == (10, 25)
    assert (a.posterior.alpha, a.posterior.beta) == (11, 91)
    assert (b.posterior.alpha, b.posterior.beta) == (26, 76)
    assert a.pending == 0 and b.pending == 0
    assert (a.resolved, a.unresolved, report.resolved) == (100, 0, 200)
    # Two arms: exact; they match the stats module's two-arm answer.
    expected = best_arm([(11, 91), (26, 76)])
    assert report.best_arm_method == "exact"
    assert (a.probability_best, b.probability_best) == expected.probability_best
    assert (a.expected_loss, b.expected_loss) == expected.expected_loss
    assert b.probability_best > 0.99


def test_tests_across_arms_and_against_the_control() -> None:
    report = report_of(base_rows())
    # Pearson on [[10, 90], [25, 75]]: N (ad - bc)^2 / (r1 r2 c1 c2).
    x2 = 200 * (10 * 75 - 90 * 25) ** 2 / (100 * 100 * 35 * 165)
    assert report.independence.statistic == pytest.approx(x2)
    assert report.independence.p_value == pytest.approx(math.erfc(math.sqrt(x2 / 2)))
    (versus,) = report.versus_control
    assert (versus.arm_id, versus.control_arm_id) == ("b", "a")
    assert versus.difference.difference == pytest.approx(0.15)
    assert versus.difference == difference_of_proportions(25, 100, 10, 100)
    assert versus.difference.interval is not None and versus.difference.interval.low > 0
    assert versus.probability_better == pytest.approx(report.arms[1].probability_best)


def test_no_control_arm_means_no_comparison() -> None:
    assert report_of(base_rows(), control_arm_id="").versus_control == ()


def test_a_balanced_allocation_passes_the_sample_ratio_check() -> None:
    report = report_of(base_rows())
    assert not report.sample_ratio.mismatch and report.sample_ratio.reliable
    # No decision has a policy snapshot: the inverse-propensity check, and only it.
    assert report.sample_ratio.kind == INVERSE_PROPENSITY
    assert report.sample_ratio.verdict == NO_MISMATCH
    assert report.sample_ratio_without_snapshots is None
    assert report.sample_ratio.observed == (100, 100)
    assert [a.expected_decisions for a in report.arms] == [100.0, 100.0]
    assert report.sample_ratio.statistic == pytest.approx(0.0)
    assert not any("MISMATCH" in w for w in report.warnings)


def test_an_unbalanced_allocation_is_a_sample_ratio_mismatch() -> None:
    rows = decisions("a", 150, 15) + decisions("b", 50, 12)
    report = report_of(rows)
    # Logged 50/50 but 150/50: Pearson's X^2 = 2 x 50^2 / 100 = 50.
    assert report.sample_ratio.statistic == pytest.approx(50.0)
    assert report.sample_ratio.mismatch
    assert any("SAMPLE RATIO MISMATCH" in w for w in report.warnings)


def test_an_adaptive_allocation_is_said_to_be() -> None:
    assert not any("allocation was adaptive" in w for w in report_of(base_rows()).warnings)
    rows = base_rows() + decisions("b", 10, 3, propensity=0.8, start=START + 40 * DAY)
    assert any("allocation was adaptive" in w for w in report_of(rows).warnings)


# --- the sample-ratio check from policy snapshots ----------------------------------------------


def halves() -> list[PolicyDistribution]:
    """A policy that drew 50/50, then (after the bandit learned) 20/80."""
    return [
        PolicyDistribution("even", ("a", "b"), (0.5, 0.5)),
        PolicyDistribution("later", ("a", "b"), (0.2, 0.8)),
    ]


def adaptive_rows(a_late: int, b_late: int) -> list[ShownDecision]:
    """100 decisions at 50/50 (50 each), then a_late + b_late decisions at 20/80."""
    later = START + 30 * DAY
    return (
        decisions("a", 50, 5, snapshot="even", propensity=0.5)
        + decisions("b", 50, 5, snapshot="even", propensity=0.5)
        + decisions("a", a_late, 4, snapshot="later", propensity=0.2, start=later, tag="l")
        + decisions("b", b_late, 16, snapshot="later", propensity=0.8, start=later, tag="l")
    )


def test_a_fair_adaptive_log_passes_the_snapshot_check() -> None:
    report = report_of(adaptive_rows(20, 80), snapshots=halves())
    srm = report.sample_ratio
    # E = (50 + 20, 50 + 80) = (70, 130), exactly what was observed.
    assert (srm.kind, srm.verdict) == (POLICY_SNAPSHOTS, NO_MISMATCH)
    assert srm.observed == (70, 130) and srm.expected == pytest.approx((70.0, 130.0))
    assert srm.statistic == pytest.approx(0.0) and srm.dof == 1
    assert [a.expected_decisions for a in report.arms] == pytest.approx([70.0, 130.0])
    assert report.sample_ratio_without_snapshots is None
    assert not any("SAMPLE RATIO" in w or "snapshot" in w for w in report.warnings)
    # The inverse-propensity check on the same (fair) log sees the same thing.
    assert not report_of(adaptive_rows(20, 80)).sample_ratio.mismatch


def test_an_adaptive_log_computed_by_hand() -> None:
    # After the switch to 20/80, arm a got 40 and b 60 of 100: E = (70, 130), O = (90, 110),
    # X^2 = 20^2/70 + 20^2/130 = 8.7912 (1 df), p = erfc(sqrt(X^2 / 2)) = 0.0030: not flagged.
    report = report_of(adaptive_rows(40, 60), snapshots=halves())
    srm = report.sample_ratio
    x2 = 20**2 / 70 + 20**2 / 130
    assert srm.observed == (90, 110) and srm.expected == pytest.approx((70.0, 130.0))
    assert srm.statistic == pytest.approx(x2) and srm.dof == 1
    assert srm.p_value == pytest.approx(math.erfc(math.sqrt(x2 / 2)))
    assert srm.verdict == NO_MISMATCH and srm.p_value > srm.threshold


def test_rows_dropped_from_one_arm_are_a_snapshot_mismatch() -> None:
    # 50/50 throughout, but half of arm b's rows were lost: E = (75, 75), O = (100, 50),
    # X^2 = 2 x 25^2 / 75 = 16.67, p = 4.5e-5.
    snapshot = PolicyDistribution("even", ("a", "b"), (0.5, 0.5))
    rows = decisions("a", 100, 10, snapshot="even") + decisions("b", 50, 5, snapshot="even")
    report = report_of(rows, snapshots=[snapshot])
    assert report.sample_ratio.statistic == pytest.approx(2 * 25**2 / 75)
    assert report.sample_ratio.verdict == MISMATCH
    assert any("SAMPLE RATIO MISMATCH" in w for w in report.warnings)


def test_small_expected_counts_are_unreliable_and_say_the_p_value() -> None:
    # Arm b had probability 0.02: E = (196, 4) but O = (180, 20). The p-value is tiny, but an
    # expected count below 5 makes it unreliable: no "ok", no mismatch, a warning with p.
    snapshot = PolicyDistribution("skewed", ("a", "b"), (0.98, 0.02))
    rows = decisions("a", 180, 10, snapshot="skewed", propensity=0.98) + decisions(
        "b", 20, 5, snapshot="skewed", propensity=0.02
    )
    report = report_of(rows, snapshots=[snapshot])
    srm = report.sample_ratio
    assert srm.statistic == pytest.approx(16**2 / 196 + 16**2 / 4)
    assert srm.verdict == UNRELIABLE and not srm.mismatch
    assert srm.p_value is not None and srm.p_value < 1e-10
    assert any("but the test is unreliable" in w and "p = " in w for w in report.warnings)


def test_older_decisions_without_a_snapshot_get_the_inverse_propensity_check_apart() -> None:
    older = decisions("a", 30, 3, start=START - 20 * DAY, tag="o") + decisions(
        "b", 30, 3, start=START - 20 * DAY, tag="o"
    )
    report = report_of(older + adaptive_rows(20, 80), snapshots=halves())
    assert report.decisions == 260
    assert report.sample_ratio.kind == POLICY_SNAPSHOTS and report.sample_ratio.decisions == 200
    fallback = report.sample_ratio_without_snapshots
    assert fallback is not None and fallback.kind == INVERSE_PROPENSITY
    assert fallback.decisions == 60 and fallback.observed == (30, 30)
    assert fallback.verdict == NO_MISMATCH
    assert any("60 shown decisions have no usable policy snapshot" in w for w in report.warnings)


def test_a_snapshot_missing_from_the_log_falls_back_and_is_said() -> None:
    rows = adaptive_rows(20, 80) + decisions("a", 10, 1, snapshot="lost", start=START + 60 * DAY)
    report = report_of(rows, snapshots=halves())
    assert report.sample_ratio.decisions == 200
    fallback = report.sample_ratio_without_snapshots
    assert fallback is not None and fallback.decisions == 10
    assert any(
        "10 shown decisions name a policy snapshot that cannot be used (it is not in the log)" in w
        for w in report.warnings
    )


def test_a_propensity_that_disagrees_with_its_snapshot_is_said() -> None:
    rows = adaptive_rows(20, 80)
    rows[0] = dataclasses.replace(rows[0], propensity=0.3)
    report = report_of(rows, snapshots=halves())
    assert any("1 shown decisions logged a propensity that differs" in w for w in report.warnings)


def test_an_arm_missing_from_a_snapshot_has_no_chance_in_it() -> None:
    # Arm b was added later: the first snapshot names only a. Only the second half has any
    # expected count for b.
    arms = (Arm("a", Prompt(title="A")), Arm("b", Prompt(title="B")))
    snapshots = [
        PolicyDistribution("only-a", ("a",), (1.0,)),
        PolicyDistribution("both", ("a", "b"), (0.5, 0.5)),
    ]
    later = START + 30 * DAY
    rows = (
        decisions("a", 40, 4, snapshot="only-a", propensity=1.0)
        + decisions("a", 30, 3, snapshot="both", start=later, tag="l")
        + decisions("b", 30, 3, snapshot="both", start=later, tag="l")
    )
    report = report_of(rows, snapshots=snapshots, arms=arms)
    srm = report.sample_ratio
    assert srm.expected == pytest.approx((70.0, 30.0)) and srm.observed == (70, 30)
    assert srm.verdict == NO_MISMATCH


# --- resolved decisions: the bandit's pulls ----------------------------------------------------


def test_posteriors_and_tests_count_resolved_decisions_like_the_bandit() -> None:
    # Arm a: 100 shown, only 40 with an outcome (10 taps); arm b: 100 shown, all resolved
    # (25 taps). Per resolved decision both have a 25% rate; per shown decision a would look
    # worse (10%).
    rows = decisions("a", 100, 10, unresolved=60) + decisions("b", 100, 25)
    report = report_of(rows)
    a, b = report.arms
    assert (a.decisions, a.resolved, a.unresolved) == (100, 40, 60)
    assert (b.decisions, b.resolved, b.unresolved) == (100, 100, 0)
    assert report.resolved == 140 and report.decisions == 200
    assert a.reward_rate == pytest.approx(0.25) and b.reward_rate == pytest.approx(0.25)
    assert a.tap_rate == pytest.approx(0.10)  # outcome rates stay per shown decision
    assert (a.posterior.alpha, a.posterior.beta) == (11, 31)
    assert a.posterior == beta_posterior(10, 40)
    assert report.independence == reward_independence([10, 25], [40, 100])
    assert report.independence.statistic == pytest.approx(0.0)
    (versus,) = report.versus_control
    assert versus.difference == difference_of_proportions(25, 100, 10, 40)
    expected = best_arm([(11, 31), (26, 76)])
    assert (a.probability_best, b.probability_best) == expected.probability_best
    # The timeline's last day has the same cumulative counts, hence the same P(best).
    assert report.timeline[-1].probability_best == pytest.approx(expected.probability_best)
    assert sum(bucket.resolved[0] for bucket in report.timeline) == 40
    # Shown decisions stay the base of the shares and the sample-ratio check.
    assert a.share_of_decisions == 0.5 and report.sample_ratio.observed == (100, 100)
    assert any("60 of 200 shown decisions (30%) have no outcome yet" in w for w in report.warnings)


def test_off_policy_estimates_of_each_arm_and_uniform() -> None:
    report = report_of(base_rows())
    by_name = {e.policy: e for e in report.off_policy.estimates}
    assert set(by_name) == {"always a", "always b", "uniform over 2 arms"}
    # Always b: weights 1/0.5 = 2 on b's rows; IPS = 2 x 25 / 200, SNIPS = 25 / 100.
    always_b = by_name["always b"]
    assert always_b.ips is not None and always_b.ips.value == pytest.approx(0.25)
    assert always_b.snips is not None and always_b.snips.value == pytest.approx(0.25)
    uniform = by_name["uniform over 2 arms"]
    assert uniform.ips is not None and uniform.ips.value == pytest.approx(35 / 200)
    assert report.off_policy.logged_value == pytest.approx(35 / 200)


def test_rows_without_a_propensity_are_left_out_and_said_so() -> None:
    rows = base_rows() + decisions("a", 3, 0, propensity=None, start=START + 40 * DAY)
    report = report_of(rows)
    assert report.arms[0].decisions == 103
    assert report.rows_without_propensity == 3
    assert report.sample_ratio.decisions == 200
    assert report.off_policy.rows_excluded == 3
    assert any(
        "no usable propensity" in w and "and the sample-ratio check" in w for w in report.warnings
    )


def test_arms_no_longer_configured_are_reported_last() -> None:
    rows = base_rows() + decisions("retired", 4, 1)
    report = report_of(rows)
    assert [a.arm_id for a in report.arms] == ["a", "b", "retired"]
    assert not report.arms[2].configured and report.arms[2].decisions == 4
    assert any("no longer configured" in w for w in report.warnings)
    # An arm only a policy snapshot names (no decision in the range) is reported too: it had
    # an expected count.
    snapshot = PolicyDistribution("s", ("a", "b", "gone"), (0.25, 0.25, 0.5))
    rows = decisions("a", 50, 5, snapshot="s", propensity=0.25) + decisions(
        "b", 50, 5, snapshot="s", propensity=0.25
    )
    gone = report_of(rows, snapshots=[snapshot])
    assert [a.arm_id for a in gone.arms] == ["a", "b", "gone"]
    assert gone.arms[2].decisions == 0 and gone.arms[2].expected_decisions == 50.0
    assert gone.sample_ratio.mismatch  # 50 expected, none chosen


def test_recent_decisions_are_pending() -> None:
    rows = base_rows() + decisions("b", 4, 0, start=DATA_END - dt.timedelta(hours=30))
    report = report_of(rows)
    # Decisions at end-30h, -24h, -18h, -12h: the last two are inside the 24 h window.
    assert report.arms[1].pending == 2
    assert any("younger than the attribution window" in w for w in report.warnings)


def test_an_empty_report_is_honest() -> None:
    report = report_of([], users=[])
    assert report.decisions == 0 and all(a.decisions == 0 for a in report.arms)
    assert report.independence.p_value is None
    assert report.arms[0].probability_best == pytest.approx(0.5)
    assert any("no shown decisions" in w for w in report.warnings)
    assert report.timeline == ()


# --- holdout and cohorts -----------------------------------------------------------------------


def test_holdout_compares_reward_users_and_retention_with_measurable_users() -> None:
    holdout = report_of(base_rows()).holdout
    assert (holdout.users, holdout.treated_users, holdout.holdout_users) == (6, 3, 3)
    by_metric = {c.metric: c for c in holdout.comparisons}
    rewarded = by_metric["users with a tap"]
    assert (rewarded.treated_successes, rewarded.treated_users) == (2, 3)
    assert (rewarded.holdout_successes, rewarded.holdout_users) == (1, 3)
    assert rewarded.lift.difference == pytest.approx(1 / 3)
    expected = {  # days: (treated retained, measurable, holdout retained, measurable)
        1: (3, 3, 2, 3),
        7: (1, 2, 2, 3),
        30: (1, 2, 1, 3),
        90: (1, 2, 0, 2),
    }
    for days, (tx, tn, hx, hn) in expected.items():
        c = by_metric[f"retained after {days} day{'' if days == 1 else 's'}"]
        assert (c.treated_successes, c.treated_users, c.holdout_successes, c.holdout_users) == (
            tx,
            tn,
            hx,
            hn,
        ), days
        assert c.unmeasurable_users == 6 - tn - hn
        assert c.lift == difference_of_proportions(tx, tn, hx, hn)
    assert not rewarded.lift.reliable  # three users a side: the z test cannot be trusted


def test_a_campaign_without_holdout_says_so() -> None:
    report = report_of(base_rows(), holdout_share=0.0)
    assert report.holdout.holdout_users == 0 and report.holdout.treated_users == 6
    assert "no holdout" in report.holdout.note


def test_cohorts_group_by_first_week_engagement_and_say_it_is_correlation() -> None:
    cohorts = report_of(base_rows()).cohorts
    # Treated users with a complete first week: t1 (3 engaged) and t2 (0); t3 is too recent.
    assert cohorts.users == 2
    groups = {g.label: g for g in cohorts.groups}
    assert [g.label for g in cohorts.groups] == ["0", "1", "2", "3+"]
    assert (groups["0"].users, groups["1"].users, groups["3+"].users) == (1, 0, 1)
    seven = {g.label: g.retention[0] for g in cohorts.groups}
    assert (seven["0"].retained, seven["0"].measurable) == (0, 1)
    assert (seven["3+"].retained, seven["3+"].measurable) == (1, 1)
    assert seven["1"].rate is None
    assert [t.days for t in cohorts.tests] == [7, 30, 90]
    assert not cohorts.tests[0].test.reliable
    assert "correlation, not causation" in cohorts.note and "holdout" in cohorts.note


# --- the timeline ------------------------------------------------------------------------------


def test_timeline_has_daily_shares_and_cumulative_probability_best() -> None:
    report = report_of(base_rows())
    timeline = report.timeline
    # 100 decisions per arm, 4 a day, from June 1st 08:00 UTC: 26 UTC days.
    assert len(timeline) == 26 and timeline[0].day == dt.date(2026, 6, 1)
    assert timeline[0].decisions == (3, 3) and timeline[0].share == (0.5, 0.5)
    assert sum(sum(b.decisions) for b in timeline) == 200
    assert sum(b.rewards[1] for b in timeline) == 25
    # The last bucket's cumulative counts are the whole data: the same probability best.
    assert timeline[-1].probability_best == pytest.approx(
        tuple(a.probability_best for a in report.arms)
    )
    first = best_arm([(1 + 3, 1 + 0), (1 + 3, 1 + 0)])  # day 1: 3 of 3 tapped on both arms
    assert timeline[0].probability_best == pytest.approx(first.probability_best)


def test_the_bucket_size_is_the_finest_that_keeps_the_timeline_short() -> None:
    day = dt.date(2026, 6, 1)
    assert TIMELINE_MAX_BUCKETS == 120
    for span_days, size in [
        (0, "day"),
        (119, "day"),  # 120 days
        (120, "week"),
        (7 * 119, "week"),
        (7 * 121, "month"),
        (3600, "month"),  # 119 or 120 months
        (3653 * 2, "quarter"),
        (365 * 40, "year"),
    ]:
        assert timeline_bucket_size(day - dt.timedelta(days=span_days), day) == size, span_days


def test_the_timeline_draws_stay_within_the_total_budget() -> None:
    assert timeline_draws(26, 2) == TIMELINE_MAX_DRAWS
    assert timeline_draws(1, 200) == TIMELINE_SAMPLE_BUDGET // 200
    for buckets, arms in [(120, 200), (120, 1000), (3600, 200), (120, 100_000)]:
        draws = timeline_draws(buckets, arms)
        assert 1 <= draws and buckets * arms * draws <= max(TIMELINE_TOTAL_SAMPLES, buckets * arms)


def many_arms(k: int, *, id_length: int = 8) -> tuple[Arm, ...]:
    return tuple(Arm(f"arm-{i:0{id_length - 4}d}", Prompt()) for i in range(k))


def spread(arms: tuple[Arm, ...], days: int, per_arm: int = 3) -> list[ShownDecision]:
    """`per_arm` decisions of each arm, spread from `days` days before START to START."""
    rows = []
    step = dt.timedelta(days=days) / max(1, per_arm * len(arms) - 1)
    for i in range(per_arm * len(arms)):
        arm = arms[i % len(arms)].arm_id
        at = START - dt.timedelta(days=days) + i * step
        rows.append(
            ShownDecision(
                decision_id=f"d{i}",
                user_id=f"u{i}",
                arm_id=arm,
                propensity=1 / len(arms),
                decided_at=at,
                impression=True,
                tap=i % 7 == 0,
                rewarded=i % 7 == 0,
            )
        )
    return rows


def test_a_decades_long_range_of_200_arms_has_monthly_buckets_within_budget() -> None:
    arms = many_arms(200, id_length=64)  # the longest ids: the largest report of 200 arms
    rows = spread(arms, days=0)
    rows.append(dataclasses.replace(rows[0], decision_id="old", decided_at=START - 3600 * DAY))
    report = report_of(rows, users=[], arms=arms, control_arm_id=arms[0].arm_id)
    timeline = report.timeline
    assert report.timeline_bucket == "month"
    assert 2 <= len(timeline) <= TIMELINE_MAX_BUCKETS
    assert all(b.day.day == 1 for b in timeline)
    assert timeline[0].day == (START - 3600 * DAY).date().replace(day=1)
    assert sum(sum(b.decisions) for b in timeline) == len(rows)
    assert 0 < report.timeline_draws
    assert len(timeline) * len(arms) * report.timeline_draws <= TIMELINE_TOTAL_SAMPLES
    # Bounded output: the JSON document and the proto message.
    assert len(json.dumps(to_document(report))) < 4 * 1024 * 1024
    size = report_to_proto(report).ByteSize()
    assert size < 4 * 1024 * 1024 < GrpcSettings().max_send_message_bytes


def test_200_arms_over_60_days_fit_the_send_limit() -> None:
    arms = many_arms(200)
    report = report_of(spread(arms, days=59), users=[], arms=arms, control_arm_id="arm-0000")
    assert report.timeline_bucket == "day" and len(report.timeline) == 60
    message = report_pb2.GetArmReportResponse(report=report_to_proto(report))
    assert message.ByteSize() < GrpcSettings().max_send_message_bytes
    assert message.ByteSize() > GrpcSettings().max_message_bytes  # larger than what it accepts


def test_a_weekly_timeline_starts_on_mondays_and_ends_with_the_whole_data() -> None:
    rows = decisions("a", 600, 60) + decisions("b", 600, 120)  # 4 a day: 150 days
    report = report_of(rows)
    assert report.timeline_bucket == "week"
    assert all(b.day.weekday() == 0 for b in report.timeline)
    assert report.timeline[0].day == dt.date(2026, 6, 1)  # a Monday
    assert sum(sum(b.decisions) for b in report.timeline) == 1200
    assert report.timeline[-1].probability_best == pytest.approx(
        tuple(a.probability_best for a in report.arms)
    )
    assert report_to_proto(report).timeline_bucket == report_pb2.TIMELINE_BUCKET_SIZE_WEEK


def test_more_than_120_years_of_data_show_the_last_120() -> None:
    rows = decisions("a", 10, 2) + decisions("b", 10, 5)
    rows.append(
        dataclasses.replace(rows[0], decision_id="ancient", decided_at=START - 200 * 365 * DAY)
    )
    report = report_of(rows)
    assert report.timeline_bucket == "year"
    assert len(report.timeline) == TIMELINE_MAX_BUCKETS
    assert report.timeline[-1].day == dt.date(2026, 1, 1)
    assert sum(sum(b.decisions) for b in report.timeline) == len(rows) - 1
    # The ancient decision still counts in the cumulative probability best.
    assert report.timeline[-1].probability_best == pytest.approx(
        tuple(a.probability_best for a in report.arms)
    )
    assert any("the timeline shows the last 120 years" in w for w in report.warnings)


def test_a_checkpoint_stops_the_report() -> None:
    calls = 0

    class Stop(Exception):
        pass

    def checkpoint() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise Stop

    with pytest.raises(Stop):
        build_report(
            campaign(),
            validate_query("shop", "streak"),
            ReportData(base_rows(), [], DATA_END),
            checkpoint=checkpoint,
        )
    counted = 0

    def count() -> None:
        nonlocal counted
        counted += 1

    build_report(
        campaign(),
        validate_query("shop", "streak"),
        ReportData(base_rows(), [], DATA_END),
        checkpoint=count,
    )
    assert counted > 26  # the stages, and every bucket of the timeline


def test_many_arms_use_a_seeded_monte_carlo() -> None:
    arms = tuple(Arm(f"arm-{i}", Prompt()) for i in range(5))
    rows = [r for i in range(5) for r in decisions(f"arm-{i}", 40, 2 * i, propensity=0.2)]
    report = report_of(rows, arms=arms, control_arm_id="arm-0")
    assert report.best_arm_method == "monte_carlo" and report.best_arm_seed is not None
    assert sum(a.probability_best for a in report.arms) == pytest.approx(1.0)
    assert report.arms[4].probability_best == max(a.probability_best for a in report.arms)
    assert len(report.versus_control) == 4
    again = report_of(rows, arms=arms, control_arm_id="arm-0")
    assert again.arms == report.arms


def test_the_report_is_json_serialisable() -> None:
    doc = to_document(report_of(base_rows()))
    text = json.dumps(doc, allow_nan=False)
    back = json.loads(text)
    assert back["arms"][1]["taps"] == 25
    assert back["timeline"][0]["day"] == "2026-06-01"
    assert back["sample_ratio"]["expected"] == [100.0, 100.0]
    assert back["sample_ratio"]["verdict"] == "no mismatch"
    assert back["arms"][0]["expected_decisions"] == 100.0
    assert (back["arms"][0]["resolved"], back["arms"][0]["unresolved"]) == (100, 0)
    assert back["off_policy"]["estimates"][0]["warning_codes"] == []


# --- the query ---------------------------------------------------------------------------------


def test_query_validation_names_the_field() -> None:
    with pytest.raises(InvalidArgument) as bad_key:
        validate_query("shop", "streak", segment={"country": "DE"})
    assert bad_key.value.field == "segment.country"
    assert "platform, locale, surface, time_zone, requested_channel" in bad_key.value.message
    with pytest.raises(InvalidArgument) as bad_platform:
        validate_query("shop", "streak", segment={"platform": "symbian"})
    assert bad_platform.value.field == "segment.platform"
    with pytest.raises(InvalidArgument) as bad_range:
        validate_query("shop", "streak", START, START)
    assert bad_range.value.field == "end_time"
    with pytest.raises(InvalidArgument) as naive:
        validate_query("shop", "streak", dt.datetime(2026, 6, 1))
    assert naive.value.field == "start_time"
    with pytest.raises(InvalidArgument) as no_app:
        validate_query("", "streak")
    assert no_app.value.field == "app_id"
    query = validate_query(
        "shop", "streak", START, START + DAY, {"platform": "ios", "requested_channel": "push"}
    )
    assert dict(query.segment) == {"platform": "ios", "requested_channel": "push"}


def test_query_ids_and_segments_are_checked_and_never_echoed_whole() -> None:
    long = "x" * 100_000
    for app_id, campaign_id, segment, field in (
        ("sh\x00op", "streak", {}, "app_id"),
        ("shop", long, {}, "campaign_id"),
        ("shop", "streak", {long: "1"}, "segment." + "x" * 80),
        ("shop", "streak", {"platform": long}, "segment.platform"),
        ("shop", "streak", {"surface": "home\x00"}, "segment.surface"),
    ):
        with pytest.raises(InvalidArgument) as info:
            validate_query(app_id, campaign_id, segment=segment)
        assert info.value.field == field
        assert len(str(info.value)) < 400


def test_segment_pairs_are_parsed() -> None:
    assert parse_segment(["platform=ios", "locale=de-DE", "surface="]) == {
        "platform": "ios",
        "locale": "de-DE",
        "surface": "",
    }
    with pytest.raises(InvalidArgument):
        parse_segment(["platform"])
    with pytest.raises(InvalidArgument) as twice:
        parse_segment(["locale=a", "locale=b"])
    assert twice.value.field == "segment.locale"
