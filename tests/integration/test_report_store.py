"""The report's queries against a real PostgreSQL: rows inserted, report read back."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from dataclasses import dataclass

import asyncpg
import pytest
from nudge_server.config_store import ConfigStore
from nudge_server.errors import NotFound
from nudge_server.model import App, Arm, Campaign, Prompt
from nudge_server.report import validate_query
from nudge_server.report_store import ReportStore
from nudge_server.throttle import in_holdout

START = dt.datetime(2026, 5, 4, 9, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
SHARE = 0.4
USERS = 30


@dataclass(frozen=True)
class Decision:
    decision_id: uuid.UUID
    app_id: str
    user_id: str
    decided_at: dt.datetime
    event_name: str
    show: bool
    reason: str
    campaign_id: str | None
    arm_id: str | None
    propensity: float | None
    platform: str
    requested_channel: str = "in_app"
    policy_snapshot: str | None = None


@dataclass(frozen=True)
class Outcome:
    decision: Decision
    type: str
    rewarded: bool


def streak(app_id: str) -> Campaign:
    return Campaign(
        app_id=app_id,
        campaign_id="streak",
        arms=(Arm("a", Prompt(title="A")), Arm("b", Prompt(title="B"))),
        trigger_events=frozenset({"workout_finished"}),
        control_arm_id="a",
        holdout_share=SHARE,
    )


def scenario() -> tuple[list[Decision], list[Outcome]]:
    """Users u0..u29 of app shop trigger the campaign on day i % 3; the holdout's are not shown,
    the others get arm a (even i) or b (odd i). Odd users tap when i % 4 == 1, even users when
    i % 6 == 0. Users with i % 5 == 0 come back 10 days later. App `other` has its own rows
    with the same user and campaign ids."""
    decisions: list[Decision] = []
    outcomes: list[Outcome] = []
    for i in range(USERS):
        user = f"u{i}"
        platform = "ios" if i < 10 else "android"
        at = START + (i % 3) * DAY + i * dt.timedelta(minutes=7)
        held = in_holdout("shop", "streak", user, SHARE)
        arm = "a" if i % 2 == 0 else "b"
        d = Decision(
            uuid.uuid4(),
            "shop",
            user,
            at,
            "workout_finished",
            not held,
            "holdout" if held else "ok",
            "streak",
            None if held else arm,
            None if held else 0.5,
            platform,
        )
        decisions.append(d)
        if not held:
            outcomes.append(Outcome(d, "impression", False))
            if (i % 2 == 1 and i % 4 == 1) or (i % 2 == 0 and i % 6 == 0):
                outcomes.append(Outcome(d, "tap", True))
            elif i % 7 == 3:
                outcomes.append(Outcome(d, "dismiss", False))
        if i % 5 == 0:
            decisions.append(
                Decision(
                    uuid.uuid4(),
                    "shop",
                    user,
                    at + 10 * DAY,
                    "app_open",
                    False,
                    "no_eligible_campaign",
                    None,
                    None,
                    None,
                    platform,
                )
            )
    for i in range(5):
        d = Decision(
            uuid.uuid4(),
            "other",
            f"u{i}",
            START + i * DAY,
            "workout_finished",
            True,
            "ok",
            "streak",
            "b",
            0.5,
            "ios",
        )
        decisions.append(d)
        outcomes.append(Outcome(d, "tap", True))
    return decisions, outcomes


async def insert(pool: asyncpg.Pool, decisions: list[Decision], outcomes: list[Outcome]) -> None:
    store = ConfigStore(pool)
    for app_id in ("shop", "other"):
        await store.put_app(App(app_id))
        await store.put_campaign(streak(app_id))
    async with pool.acquire() as conn:
        await conn.executemany(
            """
            INSERT INTO decisions (decision_id, app_id, user_id, decided_at, received_at,
                event_name, requested_channel, time_zone, platform, show, reason, campaign_id,
                arm_id, propensity, policy_snapshot)
            VALUES ($1, $2, $3, $4, $4, $5, $6, 'Europe/Berlin', $7, $8, $9, $10, $11, $12, $13)
            """,
            [
                (
                    d.decision_id,
                    d.app_id,
                    d.user_id,
                    d.decided_at,
                    d.event_name,
                    d.requested_channel,
                    d.platform,
                    d.show,
                    d.reason,
                    d.campaign_id,
                    d.arm_id,
                    d.propensity,
                    d.policy_snapshot,
                )
                for d in decisions
            ],
        )
        await conn.executemany(
            """
            INSERT INTO outcomes (decision_id, app_id, user_id, campaign_id, arm_id, type,
                occurred_at, received_at, rewarded)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8)
            """,
            [
                (
                    o.decision.decision_id,
                    o.decision.app_id,
                    o.decision.user_id,
                    o.decision.campaign_id,
                    o.decision.arm_id,
                    o.type,
                    o.decision.decided_at + dt.timedelta(minutes=1),
                    o.rewarded,
                )
                for o in outcomes
            ],
        )


def shown(decisions: list[Decision], app_id: str = "shop") -> list[Decision]:
    return [d for d in decisions if d.app_id == app_id and d.show]


async def test_the_report_counts_what_was_inserted(pg_pool: asyncpg.Pool) -> None:
    decisions, outcomes = scenario()
    await insert(pg_pool, decisions, outcomes)
    report = await ReportStore(pg_pool).report(validate_query("shop", "streak"))
    expected_shown = shown(decisions)
    assert report.decisions == len(expected_shown)
    by_arm = {a.arm_id: a for a in report.arms}
    for arm in ("a", "b"):
        rows = [d for d in expected_shown if d.arm_id == arm]
        ids = {d.decision_id for d in rows}
        taps = sum(1 for o in outcomes if o.decision.decision_id in ids and o.type == "tap")
        dismissals = sum(
            1 for o in outcomes if o.decision.decision_id in ids and o.type == "dismiss"
        )
        assert by_arm[arm].decisions == len(rows)
        assert by_arm[arm].impressions == len(rows)
        assert by_arm[arm].taps == taps and by_arm[arm].rewards == taps
        assert by_arm[arm].dismissals == dismissals
        assert by_arm[arm].posterior.alpha == 1 + taps
    # The data's end is the app's latest decision (a return visit).
    assert report.data_end == max(d.decided_at for d in decisions if d.app_id == "shop")
    # Holdout: every user triggered the campaign; the hash splits them.
    held = {f"u{i}" for i in range(USERS) if in_holdout("shop", "streak", f"u{i}", SHARE)}
    assert 0 < len(held) < USERS
    assert (report.holdout.users, report.holdout.holdout_users) == (USERS, len(held))
    seven = next(c for c in report.holdout.comparisons if c.days == 7)
    back = {f"u{i}" for i in range(USERS) if i % 5 == 0}
    assert seven.treated_successes == len(back - held)
    assert seven.holdout_successes == len(back & held)
    assert seven.treated_users + seven.holdout_users + seven.unmeasurable_users == USERS
    tapped = next(c for c in report.holdout.comparisons if c.days == 0)
    tap_users = {
        o.decision.user_id for o in outcomes if o.type == "tap" and o.decision.app_id == "shop"
    }
    assert tapped.treated_successes == len(tap_users) and tapped.holdout_successes == 0
    # Cohorts: engaged users are those who tapped on their first decision.
    cohorts = {g.label: g.users for g in report.cohorts.groups}
    assert cohorts["1"] == len(tap_users)
    assert cohorts["0"] + cohorts["1"] == USERS - len(held)
    assert not report.sample_ratio.mismatch


async def test_the_report_is_scoped_by_app(pg_pool: asyncpg.Pool) -> None:
    decisions, outcomes = scenario()
    await insert(pg_pool, decisions, outcomes)
    other = await ReportStore(pg_pool).report(validate_query("other", "streak"))
    assert other.decisions == 5
    assert {a.arm_id: (a.decisions, a.taps) for a in other.arms} == {"a": (0, 0), "b": (5, 5)}
    assert other.holdout.users == 5
    assert other.data_end == START + 4 * DAY


async def test_segment_and_range_filters(pg_pool: asyncpg.Pool) -> None:
    decisions, outcomes = scenario()
    await insert(pg_pool, decisions, outcomes)
    store = ReportStore(pg_pool)
    ios = await store.report(validate_query("shop", "streak", segment={"platform": "ios"}))
    assert ios.decisions == sum(1 for d in shown(decisions) if d.platform == "ios")
    assert ios.holdout.users == 10
    assert dict(ios.segment) == {"platform": "ios"}

    start, end = START + DAY, START + 2 * DAY
    ranged = await store.report(validate_query("shop", "streak", start, end))
    in_range = [d for d in shown(decisions) if start <= d.decided_at < end]
    assert 0 < ranged.decisions == len(in_range) < len(shown(decisions))
    assert ranged.data_end == max(
        d.decided_at for d in decisions if d.app_id == "shop" and d.decided_at < end
    )
    assert ranged.holdout.users == sum(
        1
        for d in decisions
        if d.app_id == "shop" and d.event_name == "workout_finished" and start <= d.decided_at < end
    )

    push = await store.report(
        validate_query("shop", "streak", segment={"requested_channel": "push"})
    )
    assert push.decisions == 0 and push.holdout.users == 0


async def test_unknown_campaign_or_app_is_not_found(pg_pool: asyncpg.Pool) -> None:
    decisions, outcomes = scenario()
    await insert(pg_pool, decisions, outcomes)
    store = ReportStore(pg_pool)
    with pytest.raises(NotFound):
        await store.report(validate_query("shop", "nope"))
    with pytest.raises(NotFound):
        await store.report(validate_query("ghost", "streak"))


async def test_an_app_without_decisions_reports_nothing(pg_pool: asyncpg.Pool) -> None:
    store = ConfigStore(pg_pool)
    await store.put_app(App("empty"))
    await store.put_campaign(streak("empty"))
    report = await ReportStore(pg_pool).report(validate_query("empty", "streak"))
    assert report.decisions == 0 and report.data_end is None and report.holdout.users == 0


async def test_resolved_decisions_are_those_with_an_outcome(pg_pool: asyncpg.Pool) -> None:
    decisions, outcomes = scenario()
    # Keep the outcomes of every third shown decision of app shop only: the others stay
    # unresolved (no outcome at all).
    shop = shown(decisions)
    kept = {d.decision_id for d in shop[::3]}
    outcomes = [
        o for o in outcomes if o.decision.app_id != "shop" or o.decision.decision_id in kept
    ]
    await insert(pg_pool, decisions, outcomes)
    report = await ReportStore(pg_pool).report(validate_query("shop", "streak"))
    assert report.decisions == len(shop) and report.resolved == len(kept)
    for arm in report.arms:
        ids = {d.decision_id for d in shop if d.arm_id == arm.arm_id}
        taps = sum(1 for o in outcomes if o.decision.decision_id in ids and o.type == "tap")
        assert (arm.decisions, arm.resolved) == (len(ids), len(ids & kept))
        assert arm.unresolved == len(ids - kept)
        assert (arm.posterior.alpha, arm.posterior.beta) == (1 + taps, 1 + len(ids & kept) - taps)


async def _put_snapshot(
    pool: asyncpg.Pool, snapshot_id: str, app_id: str, arms: list[str], probabilities: list[float]
) -> None:
    await pool.execute(
        """
        INSERT INTO policy_snapshots (snapshot_id, app_id, campaign_id, arm_ids, probabilities)
        VALUES ($1, $2, 'streak', $3, $4)
        """,
        snapshot_id,
        app_id,
        arms,
        probabilities,
    )


async def test_the_sample_ratio_check_reads_the_policy_snapshots(pg_pool: asyncpg.Pool) -> None:
    decisions, outcomes = scenario()
    # Shop's first shown decisions were drawn from (0.5, 0.5), the later ones from (0.2, 0.8);
    # one names a snapshot that only app other has (not this app's: missing), and the
    # oldest ones have none.
    order = {d.decision_id: j for j, d in enumerate(shown(decisions))}

    def snapshot_of(d: Decision) -> str | None:
        j = order.get(d.decision_id, -1)
        return None if j < 4 else "even" if j < 10 else "theirs" if j == 10 else "later"

    named = [dataclasses.replace(d, policy_snapshot=snapshot_of(d)) for d in decisions]
    shop = shown(named)
    by_id = {d.decision_id: d for d in named}
    outcomes = [dataclasses.replace(o, decision=by_id[o.decision.decision_id]) for o in outcomes]
    await insert(pg_pool, named, outcomes)
    await _put_snapshot(pg_pool, "even", "shop", ["a", "b"], [0.5, 0.5])
    await _put_snapshot(pg_pool, "later", "shop", ["a", "b"], [0.2, 0.8])
    await _put_snapshot(pg_pool, "theirs", "other", ["a", "b"], [0.9, 0.1])
    report = await ReportStore(pg_pool).report(validate_query("shop", "streak"))

    with_snapshot = [d for d in named if d.app_id == "shop" and d.show and d.policy_snapshot]
    usable = [d for d in with_snapshot if d.policy_snapshot != "theirs"]
    srm = report.sample_ratio
    assert srm.kind == "policy_snapshots" and srm.decisions == len(usable)
    probability: dict[str | None, tuple[float, float]] = {"even": (0.5, 0.5), "later": (0.2, 0.8)}
    expected = [sum(probability[d.policy_snapshot][k] for d in usable) for k in (0, 1)]
    assert srm.expected == pytest.approx(expected)
    assert [a.expected_decisions for a in report.arms] == pytest.approx(expected)
    assert srm.observed == tuple(sum(1 for d in usable if d.arm_id == arm) for arm in ("a", "b"))
    fallback = report.sample_ratio_without_snapshots
    assert fallback is not None and fallback.kind == "inverse_propensity"
    assert fallback.decisions == len(shop) - len(usable)
    assert any("name a policy snapshot that cannot be used" in w for w in report.warnings)
