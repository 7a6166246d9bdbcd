"""Outcome semantics against real Redis and PostgreSQL: once per decision, ignores, rewards."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest
import redis.asyncio as aioredis
from nudge_server.arm_stats import PolicyCache
from nudge_server.config_store import ConfigSnapshot
from nudge_server.decision_log import LogWriter
from nudge_server.decisions import Decision, DecisionEngine
from nudge_server.errors import FailedPrecondition, InvalidArgument, NotFound, StoreUnavailable
from nudge_server.ids import new_decision_id
from nudge_server.model import (
    App,
    Arm,
    Campaign,
    Channel,
    OutcomeType,
    Platform,
    Prompt,
    Reason,
    RewardMetric,
    ThrottlePolicy,
)
from nudge_server.outcome_store import OutcomeStore
from nudge_server.outcomes import OutcomeRecorder
from nudge_server.requests import decide_input, outcome_input
from nudge_server.settings import DecisionSettings, LogSettings, RedisSettings
from nudge_server.sweeper import IgnoreSweeper
from nudge_server.throttle_store import ThrottleStore

UTC = dt.UTC
START = dt.datetime(2026, 6, 1, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def config(holdout: float = 0.0, metric: RewardMetric = RewardMetric.TAP) -> ConfigSnapshot:
    campaign = Campaign(
        app_id="app",
        campaign_id="quiz",
        trigger_events=frozenset({"lesson_done"}),
        arms=(Arm("a", Prompt(title="A")), Arm("b", Prompt(title="B"))),
        response_window_s=1800,
        attribution_window_s=86400,
        holdout_share=holdout,
        reward_metric=metric,
    )
    return ConfigSnapshot.build(1, [App("app", ThrottlePolicy(daily_cap=10))], [campaign])


@dataclass
class Service:
    engine: DecisionEngine
    outcomes: OutcomeRecorder
    log: LogWriter
    sweeper: IgnoreSweeper
    clock: Clock
    pool: asyncpg.Pool
    redis: aioredis.Redis

    async def decide(self, user: str) -> Decision:
        return await self.engine.decide(
            decide_input(
                app="app",
                user=user,
                event_name="lesson_done",
                event_properties={},
                channel=Channel.IN_APP,
                surface="",
                tz_name="Asia/Tokyo",
                locale="",
                platform=Platform.IOS,
                client_request_id="",
                event_time=None,
                now=self.clock(),
            )
        )

    async def report(self, user: str, decision_id: str, kind: OutcomeType):  # type: ignore[no-untyped-def]
        return await self.outcomes.report(
            outcome_input(
                app="app",
                user=user,
                decision_id=decision_id,
                kind=kind,
                value=0.0,
                occurred_at=None,
                now=self.clock(),
            )
        )


async def make_service(
    pool: asyncpg.Pool, redis_client: aioredis.Redis, snapshot: ConfigSnapshot
) -> AsyncIterator[Service]:
    clock = Clock(START)
    store = ThrottleStore(redis_client, RedisSettings(decision_timeout_s=2.0))
    policies = PolicyCache(store, list, refresh_s=3600)
    settings = DecisionSettings(seed=3)
    async with LogWriter(pool, LogSettings(flush_interval_s=0.05)) as log_writer:
        yield Service(
            DecisionEngine(lambda: snapshot, policies, store, log_writer, settings, clock=clock),
            OutcomeRecorder(
                lambda: snapshot.apps, store, OutcomeStore(pool), settings, clock=clock
            ),
            log_writer,
            IgnoreSweeper(pool, store, clock=clock),
            clock,
            pool,
            redis_client,
        )


@pytest.fixture
async def service(pg_pool: asyncpg.Pool, redis_client: aioredis.Redis) -> AsyncIterator[Service]:
    async for s in make_service(pg_pool, redis_client, config()):
        yield s


async def test_ten_concurrent_retries_give_one_row_and_one_reward(service: Service) -> None:
    shown = await service.decide("learner")
    assert shown.show
    results = await asyncio.gather(
        *(service.report("learner", shown.decision_id, OutcomeType.TAP) for _ in range(10))
    )
    assert sum(r.recorded for r in results) == 1
    # Every answer says the tap is the reward; it was learned once (the statistics below).
    assert all(r.rewarded for r in results)
    await service.log.flush()
    rows = await service.pool.fetch("SELECT type, rewarded FROM outcomes")
    assert [(r["type"], r["rewarded"]) for r in rows] == [("tap", True)]
    stats = await service.redis.hgetall("nudge:arms:{app:quiz}")
    assert stats == {f"{shown.arm_id}:n".encode(): b"1", f"{shown.arm_id}:r".encode(): b"1"}


async def test_a_prompt_with_no_response_becomes_ignored_and_the_interval_grows(
    service: Service,
) -> None:
    shown = await service.decide("quiet-user")
    assert shown.show and shown.next_eligible_at == START + dt.timedelta(hours=1)
    await service.log.flush()
    # The 30-minute response window is still open: nothing to sweep.
    service.clock.now = START + dt.timedelta(minutes=29)
    assert await service.sweeper.sweep_once() == 0
    service.clock.now = START + dt.timedelta(minutes=31)
    assert await service.sweeper.sweep_once() == 1
    assert await service.sweeper.sweep_once() == 0  # once only
    row = await service.pool.fetchrow("SELECT type, occurred_at, rewarded FROM outcomes")
    assert row["type"] == "ignore" and not row["rewarded"]
    assert row["occurred_at"] == START + dt.timedelta(minutes=30)
    # One negative response: the one-hour interval doubled.
    service.clock.now = START + dt.timedelta(minutes=90)
    blocked = await service.decide("quiet-user")
    assert blocked.reason is Reason.BACKOFF
    assert blocked.next_eligible_at == START + dt.timedelta(hours=2)
    # The ignore was a pull with no reward for the bandit.
    stats = await service.redis.hgetall("nudge:arms:{app:quiz}")
    assert stats == {f"{shown.arm_id}:n".encode(): b"1"}


async def test_a_tap_within_the_window_prevents_the_ignore(service: Service) -> None:
    shown = await service.decide("fast")
    service.clock.now = START + dt.timedelta(minutes=5)
    assert (await service.report("fast", shown.decision_id, OutcomeType.TAP)).rewarded
    await service.log.flush()
    service.clock.now = START + dt.timedelta(hours=1)
    assert await service.sweeper.sweep_once() == 0


async def test_a_tap_on_a_no_is_refused_and_unknown_decisions_are_not_found(
    service: Service,
) -> None:
    await service.decide("busy")
    no = await service.decide("busy")  # within the minimum interval
    assert no.reason is Reason.COOLDOWN
    await service.log.flush()
    with pytest.raises(FailedPrecondition, match="showed nothing"):
        await service.report("busy", no.decision_id, OutcomeType.TAP)
    old_unknown = new_decision_id("app", "busy", START - dt.timedelta(minutes=5))
    with pytest.raises(NotFound):
        await service.report("busy", old_unknown, OutcomeType.TAP)
    # An unknown id issued a moment ago may still be in a log buffer: retry, not "not found".
    with pytest.raises(StoreUnavailable, match="retry"):
        await service.report("busy", new_decision_id("app", "busy", START), OutcomeType.TAP)
    future = new_decision_id("app", "busy", START + dt.timedelta(hours=1))
    with pytest.raises(NotFound):
        await service.report("busy", future, OutcomeType.TAP)
    with pytest.raises(InvalidArgument, match="another user"):
        await service.report("someone-else", no.decision_id, OutcomeType.TAP)


async def test_outcome_before_the_decision_is_invalid(service: Service) -> None:
    shown = await service.decide("early-bird")
    service.clock.now = START - dt.timedelta(minutes=1)
    with pytest.raises(InvalidArgument, match="occurred_at"):
        await service.report("early-bird", shown.decision_id, OutcomeType.TAP)


async def test_a_late_reward_is_logged_not_learned(service: Service) -> None:
    shown = await service.decide("slow")
    service.clock.now = START + dt.timedelta(days=2)  # past the one-day attribution window
    late = await service.report("slow", shown.decision_id, OutcomeType.TAP)
    assert late.recorded and not late.rewarded
    await service.log.flush()
    assert await service.pool.fetchval("SELECT rewarded FROM outcomes") is False
    assert await service.redis.hget("nudge:arms:{app:quiz}", f"{shown.arm_id}:r") is None


async def test_a_held_out_users_conversion_is_recorded_for_the_holdout_comparison(
    pg_pool: asyncpg.Pool, redis_client: aioredis.Redis
) -> None:
    async for service in make_service(
        pg_pool, redis_client, config(holdout=0.5, metric=RewardMetric.CONVERSION)
    ):
        held = None
        for i in range(50):
            decision = await service.decide(f"user-{i}")
            if decision.reason is Reason.HOLDOUT:
                held = (f"user-{i}", decision)
                break
        assert held is not None
        await service.log.flush()
        user, decision = held
        first = await service.report(user, decision.decision_id, OutcomeType.CONVERSION)
        again = await service.report(user, decision.decision_id, OutcomeType.CONVERSION)
        assert first.recorded and not first.rewarded and not again.recorded
        with pytest.raises(FailedPrecondition):
            await service.report(user, decision.decision_id, OutcomeType.TAP)
        count = await pg_pool.fetchval("SELECT count(*) FROM outcomes WHERE type = 'conversion'")
        assert count == 1


async def test_the_report_from_postgresql_equals_the_live_counters_in_redis(
    service: Service,
) -> None:
    import random

    from nudge_server.config_store import ConfigStore
    from nudge_server.report import validate_query
    from nudge_server.report_store import ReportStore

    snapshot = config()
    await ConfigStore(service.pool).apply(
        snapshot.apps.values(), [c for cs in snapshot.campaigns.values() for c in cs]
    )
    rng = random.Random(5)
    kinds = [None, OutcomeType.IMPRESSION, OutcomeType.TAP, OutcomeType.DISMISS]
    shown_count = 0
    for round_ in range(3):
        service.clock.now = START + dt.timedelta(hours=2 * round_)
        for i in range(30):
            decision = await service.decide(f"user-{i}")
            if not decision.show:
                continue
            shown_count += 1
            kind = rng.choice(kinds)
            if kind is not None:
                await service.report(f"user-{i}", decision.decision_id, kind)
                if kind is OutcomeType.IMPRESSION and rng.random() < 0.5:
                    await service.report(f"user-{i}", decision.decision_id, OutcomeType.TAP)
    await service.log.flush()

    async def live_counts() -> dict[str, int]:
        stats = await service.redis.hgetall("nudge:arms:{app:quiz}")
        return {key.decode(): int(value) for key, value in stats.items()}

    # Before any response window closes, the decisions nobody reported on are unresolved: not
    # pulls for the bandit, not trials for the report.
    early = await ReportStore(service.pool).report(validate_query("app", "quiz"))
    counts = await live_counts()
    assert 0 < early.resolved < early.decisions == shown_count
    for arm in early.arms:
        assert arm.resolved == counts.get(f"{arm.arm_id}:n", 0), arm.arm_id
        assert arm.rewards == counts.get(f"{arm.arm_id}:r", 0), arm.arm_id
    # Every response window closes; the sweeper records the ignores.
    service.clock.now = START + dt.timedelta(hours=8)
    while await service.sweeper.sweep_once():
        pass
    await service.log.flush()
    assert shown_count > 30

    report = await ReportStore(service.pool).report(validate_query("app", "quiz"))
    live = await live_counts()
    assert sum(arm.decisions for arm in report.arms) == shown_count
    for arm in report.arms:
        # After the log drained and every window closed, each resolved decision (one with an
        # outcome, the sweeper's ignore included) is one pull, and every shown one is resolved.
        assert arm.resolved == live.get(f"{arm.arm_id}:n", 0), arm.arm_id
        assert arm.rewards == live.get(f"{arm.arm_id}:r", 0), arm.arm_id
        assert arm.posterior.alpha == 1 + arm.rewards
        assert arm.posterior.beta == 1 + arm.resolved - arm.rewards
        assert (arm.resolved, arm.unresolved) == (arm.decisions, 0), arm.arm_id
        assert arm.taps == arm.rewards
    assert sum(arm.ignores for arm in report.arms) > 0
