"""Erasing a user against real Redis and PostgreSQL: state made by the real decision path, then
erased; what must go is gone, what the reports count is unchanged, other users are untouched,
rows that land late are pseudonymised by the database, and a later Decide sees a new user."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from nudge_server import keys
from nudge_server.arm_stats import PolicyCache
from nudge_server.cli import main
from nudge_server.config_store import ConfigSnapshot, ConfigStore
from nudge_server.decision_log import LogWriter
from nudge_server.decisions import Decision, DecisionEngine
from nudge_server.devices import AppEnvironment, DeviceStore, registration
from nudge_server.erasure import (
    CLOCK_SKEW_MARGIN,
    PSEUDONYM_LINK_TTL,
    PSEUDONYM_PREFIX,
    ErasureCounts,
    UserEraser,
    subject_hash,
)
from nudge_server.errors import InvalidArgument, NotFound
from nudge_server.ids import new_decision_id
from nudge_server.log_rows import DecisionRow, OutcomeRow, PushJobRow
from nudge_server.model import (
    App,
    Arm,
    Campaign,
    Channel,
    OutcomeType,
    Platform,
    Prompt,
    Reason,
    ThrottlePolicy,
)
from nudge_server.outcome_store import OutcomeStore
from nudge_server.outcomes import OutcomeRecorder
from nudge_server.report import to_document, validate_query
from nudge_server.report_store import ReportStore
from nudge_server.requests import decide_input, outcome_input
from nudge_server.settings import DecisionSettings, LogSettings, RedisSettings
from nudge_server.throttle import in_holdout
from nudge_server.throttle_store import ThrottleStore

UTC = dt.UTC
#: The service's clock: ahead of the real one, so that the erasure is dated by it too.
START = (dt.datetime.now(UTC) + dt.timedelta(days=2)).replace(
    hour=12, minute=0, second=0, microsecond=0
)
NO_QUIET = {"quiet_start": dt.time(0, 0), "quiet_end": dt.time(0, 0), "min_interval_s": 0}
SHARE = 0.3
IOS_TOKENS = ("a1" * 32, "b2" * 32, "c3" * 32, "d4" * 32)
ANDROID_TOKEN = "fcm-token-of-alice-0123456789"

#: A user of app fit held out of `streak`, and one who is not: the report's holdout section
#: counts both, and re-derives membership from the user id.
ALICE = next(f"alice-{i}" for i in range(1000) if in_holdout("fit", "streak", f"alice-{i}", SHARE))
BOB = next(f"bob-{i}" for i in range(1000) if not in_holdout("fit", "streak", f"bob-{i}", SHARE))


def campaigns(app_id: str) -> list[Campaign]:
    return [
        Campaign(
            app_id=app_id,
            campaign_id="streak",
            arms=(Arm("a", Prompt(title="A")), Arm("b", Prompt(title="B"))),
            trigger_events=frozenset({"workout_finished"}),
            holdout_share=SHARE,
            control_arm_id="a",
        ),
        Campaign(
            app_id=app_id,
            campaign_id="welcome",
            arms=(Arm("x", Prompt(title="X")), Arm("y", Prompt(title="Y"))),
            trigger_events=frozenset({"app_opened"}),
        ),
        Campaign(
            app_id=app_id,
            campaign_id="comeback",
            arms=(Arm("p", Prompt(title="Come back", body="We miss you")),),
            trigger_events=frozenset({"session_end"}),
            channel=Channel.PUSH,
        ),
    ]


APPS = [
    App("fit", ThrottlePolicy(daily_cap=2, **NO_QUIET)),  # type: ignore[arg-type]
    App("other", ThrottlePolicy(daily_cap=1, **NO_QUIET)),  # type: ignore[arg-type]
]
CAMPAIGNS = [*campaigns("fit"), *campaigns("other")]


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def tick(self, seconds: float = 1.0) -> None:
        self.now += dt.timedelta(seconds=seconds)


@dataclass
class Service:
    engine: DecisionEngine
    outcomes: OutcomeRecorder
    log: LogWriter
    devices: DeviceStore
    eraser: UserEraser
    clock: Clock
    pool: asyncpg.Pool
    redis: aioredis.Redis

    async def decide(
        self, user: str, event: str, *, app: str = "fit", channel: Channel = Channel.IN_APP
    ) -> Decision:
        self.clock.tick()
        return await self.engine.decide(
            decide_input(
                app=app,
                user=user,
                event_name=event,
                event_properties={"email": f"{user}@example.com", "plan": "gold"},
                channel=channel,
                surface="home_screen",
                tz_name="Europe/Berlin",
                locale="de-DE",
                platform=Platform.IOS,
                client_request_id=f"req-{uuid.uuid4().hex}",
                event_time=self.clock() - dt.timedelta(seconds=1),
                now=self.clock(),
            )
        )

    async def outcome(
        self, user: str, decision: Decision, kind: OutcomeType, value: float = 0.0
    ) -> None:
        self.clock.tick()
        await self.outcomes.report(
            outcome_input(
                app="fit",
                user=user,
                decision_id=decision.decision_id,
                kind=kind,
                value=value,
                occurred_at=None,
                now=self.clock(),
            )
        )

    async def device(self, user: str, token: str, platform: Platform = Platform.IOS) -> uuid.UUID:
        return await self.device_of("fit", user, token, platform)

    async def device_of(
        self, app: str, user: str, token: str, platform: Platform = Platform.IOS
    ) -> uuid.UUID:
        device, _ = await self.devices.register(
            registration(
                app=app,
                user=user,
                platform=platform,
                token=token,
                environment=AppEnvironment.PRODUCTION,
            )
        )
        return device.device_id


@pytest.fixture
async def service(pg_pool: asyncpg.Pool, redis_client: aioredis.Redis) -> AsyncIterator[Service]:
    await ConfigStore(pg_pool).apply(APPS, CAMPAIGNS)
    snapshot = ConfigSnapshot.build(1, APPS, CAMPAIGNS)
    clock = Clock(START)
    redis_settings = RedisSettings(decision_timeout_s=2.0)
    store = ThrottleStore(redis_client, redis_settings)
    settings = DecisionSettings(seed=5)
    async with LogWriter(pg_pool, LogSettings(flush_interval_s=0.05)) as log_writer:
        yield Service(
            DecisionEngine(
                lambda: snapshot,
                PolicyCache(store, list, refresh_s=3600),
                store,
                log_writer,
                settings,
                clock=clock,
            ),
            OutcomeRecorder(
                lambda: snapshot.apps, store, OutcomeStore(pg_pool), settings, clock=clock
            ),
            log_writer,
            DeviceStore(pg_pool),
            UserEraser(pg_pool, redis_client, redis_settings, clock=clock),
            clock,
            pg_pool,
            redis_client,
        )


async def user_keys(redis_client: aioredis.Redis, app: str, user: str) -> set[bytes]:
    pattern = keys.user_keys_pattern(keys.user_tag(app, user))
    return {k async for k in redis_client.scan_iter(match=pattern, count=1000)}


async def all_keys(redis_client: aioredis.Redis) -> set[bytes]:
    return {k async for k in redis_client.scan_iter(count=1000)}


async def reports(pool: asyncpg.Pool) -> dict[str, Any]:
    """Every campaign's arm report of app fit, as documents."""
    store = ReportStore(pool)
    return {
        c: to_document(await store.report(validate_query("fit", c)))
        for c in ("streak", "welcome", "comeback")
    }


# The counts the reports are made of, straight from the tables.
COUNTS = {
    "decisions": """
        SELECT app_id, campaign_id, arm_id, show, reason, event_name, requested_channel,
               platform, count(*) AS n, count(DISTINCT user_id) AS users
        FROM decisions GROUP BY 1, 2, 3, 4, 5, 6, 7, 8 ORDER BY 1, 2, 3, 4, 5, 6, 7, 8""",
    "outcomes": """
        SELECT app_id, campaign_id, arm_id, type, rewarded, count(*) AS n,
               count(DISTINCT user_id) AS users
        FROM outcomes GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5""",
    "users": "SELECT app_id, count(DISTINCT user_id) AS n FROM decisions GROUP BY 1 ORDER BY 1",
}


async def counts(pool: asyncpg.Pool) -> dict[str, list[dict[str, Any]]]:
    return {name: [dict(r) for r in await pool.fetch(sql)] for name, sql in COUNTS.items()}


async def rows_of(pool: asyncpg.Pool, app: str, user: str) -> dict[str, int]:
    """How many rows of each table carry this user id."""
    out = {}
    for table in ("decisions", "outcomes", "push_jobs", "devices"):
        out[table] = await pool.fetchval(
            f"SELECT count(*) FROM {table} WHERE app_id = $1 AND user_id = $2", app, user
        )
    return out


@dataclass
class Scenario:
    alice_welcome: Decision
    alice_push: Decision
    bob_push: Decision
    alice_devices: list[uuid.UUID]
    bob_device: uuid.UUID


async def scenario(service: Service) -> Scenario:
    """Alice (held out of streak) and Bob in app fit, each at the daily cap (2) with a push job
    and devices; Alice also in app other, at its cap (1)."""
    assert (await service.decide(ALICE, "workout_finished")).reason is Reason.HOLDOUT
    welcome = await service.decide(ALICE, "app_opened")
    alice_push = await service.decide(ALICE, "session_end", channel=Channel.PUSH)
    assert welcome.show and alice_push.show
    assert (await service.decide(ALICE, "app_opened")).reason is Reason.DAILY_CAP

    streak = await service.decide(BOB, "workout_finished")
    bob_push = await service.decide(BOB, "session_end", channel=Channel.PUSH)
    assert streak.show and bob_push.show
    assert (await service.decide(BOB, "app_opened")).reason is Reason.DAILY_CAP

    assert (await service.decide(ALICE, "app_opened", app="other")).show
    assert (await service.decide(ALICE, "app_opened", app="other")).reason is Reason.DAILY_CAP

    await service.outcome(ALICE, welcome, OutcomeType.IMPRESSION)
    await service.outcome(ALICE, welcome, OutcomeType.TAP)
    await service.outcome(ALICE, welcome, OutcomeType.CONVERSION, 9.99)
    await service.outcome(BOB, streak, OutcomeType.IMPRESSION)
    await service.outcome(BOB, streak, OutcomeType.TAP)

    alice_devices = [
        await service.device(ALICE, IOS_TOKENS[0]),
        await service.device(ALICE, ANDROID_TOKEN, Platform.ANDROID),
    ]
    bob_device = await service.device(BOB, IOS_TOKENS[1])
    await service.device_of("other", ALICE, IOS_TOKENS[0])
    await service.log.flush()
    for job, device in ((alice_push, alice_devices[0]), (bob_push, bob_device)):
        await service.pool.execute(
            "INSERT INTO push_deliveries (job_id, device_id) VALUES ($1, $2)",
            uuid.UUID(job.decision_id),
            device,
        )
        await service.pool.execute(
            "INSERT INTO push_delivery_events (job_id, device_id, status, detail) "
            "VALUES ($1, $2, 'pending', 'created')",
            uuid.UUID(job.decision_id),
            device,
        )
    return Scenario(welcome, alice_push, bob_push, alice_devices, bob_device)


async def test_erasing_a_user_removes_their_data_and_keeps_every_count(service: Service) -> None:
    made = await scenario(service)
    alice_keys = await user_keys(service.redis, "fit", ALICE)
    others_keys = (await all_keys(service.redis)) - alice_keys
    assert len(alice_keys) >= 5  # state, day, grants, two decision records, request results
    reports_before = await reports(service.pool)
    counts_before = await counts(service.pool)
    other_app_before = await rows_of(service.pool, "other", ALICE)
    bob_before = await rows_of(service.pool, "fit", BOB)
    assert await rows_of(service.pool, "fit", ALICE) == {
        "decisions": 4,
        "outcomes": 3,
        "push_jobs": 1,
        "devices": 2,
    }

    service.clock.tick()
    erased = await service.eraser.erase("fit", ALICE)

    assert dataclasses.replace(erased, erased_at=START) == ErasureCounts(
        redis_keys_deleted=len(alice_keys),
        devices_deleted=2,
        push_deliveries_deleted=1,
        decisions_pseudonymised=4,
        outcomes_pseudonymised=3,
        push_jobs_pseudonymised=1,
        push_jobs_cancelled=1,
        erased_at=START,
    )
    # The service's clock (ahead of the database's here), plus the margin for clock skew.
    assert erased.erased_at == service.clock() + CLOCK_SKEW_MARGIN

    # Redis: nothing of Alice in app fit; everything else (other users, the same id in another
    # app, the arm statistics) as it was.
    assert await user_keys(service.redis, "fit", ALICE) == set()
    assert await all_keys(service.redis) == others_keys
    assert await user_keys(service.redis, "other", ALICE)

    # PostgreSQL: no row carries her id; the reports and the counts they use are unchanged.
    assert await rows_of(service.pool, "fit", ALICE) == dict.fromkeys(
        ("decisions", "outcomes", "push_jobs", "devices"), 0
    )
    assert await reports(service.pool) == reports_before
    assert await counts(service.pool) == counts_before
    assert await rows_of(service.pool, "other", ALICE) == other_app_before
    assert await rows_of(service.pool, "fit", BOB) == bob_before

    # One pseudonym for all her rows, and nothing personal left beside it.
    pseudonyms = await service.pool.fetch(
        "SELECT DISTINCT user_id FROM decisions WHERE app_id = 'fit' AND user_id LIKE 'erased:%'"
    )
    assert len(pseudonyms) == 1
    pseudonym = pseudonyms[0]["user_id"]
    scrubbed = await service.pool.fetch(
        "SELECT * FROM decisions WHERE app_id = 'fit' AND user_id = $1", pseudonym
    )
    assert len(scrubbed) == 4
    for row in scrubbed:
        assert row["event_properties"] is None and row["candidates"] is None
        assert (row["locale"], row["surface"], row["time_zone"]) == ("", "", "")
        assert row["client_request_id"] is None and row["event_time"] is None
        assert row["next_eligible_at"] is None and row["response_deadline"] is None
        assert row["platform"] == "ios" and row["event_name"]
    outcomes = await service.pool.fetch(
        "SELECT type, value FROM outcomes WHERE user_id = $1 ORDER BY type", pseudonym
    )
    assert [(o["type"], o["value"]) for o in outcomes] == [
        ("conversion", None),
        ("impression", None),
        ("tap", None),
    ]
    job = await service.pool.fetchrow(
        "SELECT * FROM push_jobs WHERE job_id = $1", uuid.UUID(made.alice_push.decision_id)
    )
    assert (job["user_id"], job["status"], json.loads(job["payload"]), job["time_zone"]) == (
        pseudonym,
        "erased",
        {},
        "",
    )
    bob_job = await service.pool.fetchrow(
        "SELECT user_id, status FROM push_jobs WHERE job_id = $1",
        uuid.UUID(made.bob_push.decision_id),
    )
    assert (bob_job["user_id"], bob_job["status"]) == (BOB, "queued")
    assert await service.pool.fetchval("SELECT count(*) FROM push_deliveries") == 1
    assert await service.pool.fetchval("SELECT count(*) FROM push_delivery_events") == 1
    assert await service.pool.fetchval(
        "SELECT count(*) FROM devices WHERE device_id = $1", made.bob_device
    )

    # The erasure keeps a hash of the ids, never the ids.
    erasure = await service.pool.fetchrow("SELECT * FROM user_erasures")
    assert erasure["subject_hash"] == subject_hash("fit", ALICE)
    assert ALICE not in json.dumps({k: str(v) for k, v in dict(erasure).items()})

    # An outcome for one of her erased decisions finds no decision of hers.
    with pytest.raises(NotFound):
        await service.outcome(ALICE, made.alice_welcome, OutcomeType.DISMISS)

    # A later Decide sees a new user: a fresh daily cap. Bob and Alice of app other are still
    # at theirs. (Past the margin for clock skew: rows dated within it count as hers before.)
    service.clock.now = erased.erased_at + dt.timedelta(seconds=1)
    again = await service.decide(ALICE, "app_opened")
    assert again.show
    assert (await service.decide(ALICE, "app_opened")).show
    assert (await service.decide(ALICE, "app_opened")).reason is Reason.DAILY_CAP
    assert (await service.decide(BOB, "app_opened")).reason is Reason.DAILY_CAP
    assert (await service.decide(ALICE, "app_opened", app="other")).reason is Reason.DAILY_CAP
    # Made after the erasure: her new rows keep her id, and so does a device she registers.
    await service.device(ALICE, IOS_TOKENS[2])
    await service.log.flush()
    assert await rows_of(service.pool, "fit", ALICE) == {
        "decisions": 3,
        "outcomes": 0,
        "push_jobs": 0,
        "devices": 1,
    }


async def test_erasing_again_or_an_unknown_user_changes_nothing(service: Service) -> None:
    await scenario(service)
    first = await service.eraser.erase("fit", ALICE)
    reports_after = await reports(service.pool)
    service.clock.tick()
    for user in (ALICE, "never-seen"):
        again = await service.eraser.erase("fit", user)
        assert again == ErasureCounts(
            0, 0, 0, 0, 0, 0, 0, erased_at=service.clock() + CLOCK_SKEW_MARGIN
        )
        assert again.erased_at > first.erased_at
    assert await reports(service.pool) == reports_after
    assert await service.pool.fetchval("SELECT count(*) FROM user_erasures") == 2


@pytest.mark.parametrize(
    ("app", "user", "field"),
    [
        ("", "alice", "app_id"),
        ("fit app", "alice", "app_id"),
        ("fit", "", "user_id"),
        ("fit", "al\x00ice", "user_id"),
        ("fit", "x" * 129, "user_id"),
    ],
)
async def test_malformed_ids_are_refused_naming_the_field(
    service: Service, app: str, user: str, field: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await service.eraser.erase(app, user)
    assert caught.value.field == field
    assert await service.pool.fetchval("SELECT count(*) FROM user_erasures") == 0


async def test_an_unknown_app_is_not_found(service: Service) -> None:
    with pytest.raises(NotFound):
        await service.eraser.erase("ghost", "alice")
    assert await service.pool.fetchval("SELECT count(*) FROM user_erasures") == 0


def late_decision(user: str, issued_at: dt.datetime, **changes: Any) -> DecisionRow:
    row = DecisionRow(
        decision_id=uuid.UUID(new_decision_id("fit", user, issued_at)),
        app_id="fit",
        user_id=user,
        decided_at=issued_at,
        received_at=issued_at,
        event_time=issued_at,
        event_name="session_end",
        event_properties={"email": "alice@example.com"},
        requested_channel="push",
        surface="lock_screen",
        time_zone="Europe/Berlin",
        locale="de-DE",
        platform="android",
        client_request_id="late-1",
        show=True,
        reason="ok",
        campaign_id="comeback",
        arm_id="p",
        channel="push",
        propensity=1.0,
        deliver_at=issued_at,
        candidates=[{"campaign": "comeback"}],
        response_deadline=issued_at + dt.timedelta(days=1),
    )
    return dataclasses.replace(row, **changes)


def late_push_job(decision: DecisionRow) -> PushJobRow:
    return PushJobRow(
        job_id=decision.decision_id,
        app_id="fit",
        user_id=decision.user_id,
        campaign_id="comeback",
        arm_id="p",
        payload={"title": "Come back", "locale": "de-DE"},
        deliver_at=decision.decided_at,
        expires_at=decision.decided_at + dt.timedelta(days=1),
        time_zone="Europe/Berlin",
    )


def late_outcome(decision: DecisionRow) -> OutcomeRow:
    return OutcomeRow(
        decision_id=decision.decision_id,
        app_id="fit",
        user_id=decision.user_id,
        campaign_id="comeback",
        arm_id="p",
        type="conversion",
        value=42.0,
        occurred_at=decision.decided_at,
        received_at=decision.decided_at,
    )


async def test_rows_that_land_after_the_erasure_are_pseudonymised_by_the_database(
    service: Service,
) -> None:
    await scenario(service)
    # Logged as "unavailable" before the erasure; its correction arrives after it.
    unavailable = late_decision(
        ALICE, START - dt.timedelta(minutes=5), show=False, reason="unavailable", arm_id=None
    )
    service.log.add_decision(unavailable)
    await service.log.flush()
    erased = await service.eraser.erase("fit", ALICE)
    pseudonym = await service.pool.fetchval(
        "SELECT user_id FROM decisions WHERE decision_id = $1", unavailable.decision_id
    )
    assert pseudonym.startswith(PSEUDONYM_PREFIX)

    before = late_decision(ALICE, erased.erased_at - dt.timedelta(seconds=1))
    after = late_decision(ALICE, erased.erased_at + dt.timedelta(seconds=1))
    corrected = dataclasses.replace(unavailable, show=True, reason="ok", arm_id="p")
    for row in (before, after):
        service.log.add_decision(row, late_push_job(row))
        service.log.add_outcome(late_outcome(row))
    service.log.add_decision(corrected)
    await service.log.flush()

    rows = {
        r["decision_id"]: r
        for r in await service.pool.fetch(
            "SELECT * FROM decisions WHERE decision_id = ANY ($1::uuid[])",
            [before.decision_id, after.decision_id, corrected.decision_id],
        )
    }
    # Issued before the erasure: the erasure's own pseudonym, nothing personal, no ignore due.
    late = rows[before.decision_id]
    assert late["user_id"] == pseudonym
    assert late["event_properties"] is None and late["candidates"] is None
    assert (late["locale"], late["surface"], late["time_zone"]) == ("", "", "")
    assert late["client_request_id"] is None and late["event_time"] is None
    assert late["deliver_at"] is None and late["response_deadline"] is None
    assert (late["event_name"], late["arm_id"], late["platform"]) == ("session_end", "p", "android")
    # The correction of a decision made before the erasure keeps the pseudonym.
    assert (rows[corrected.decision_id]["user_id"], rows[corrected.decision_id]["reason"]) == (
        pseudonym,
        "ok",
    )
    # Issued after it: the user who came back, untouched.
    assert rows[after.decision_id]["user_id"] == ALICE
    assert rows[after.decision_id]["locale"] == "de-DE"

    outcomes = {
        r["decision_id"]: (r["user_id"], r["value"])
        for r in await service.pool.fetch("SELECT * FROM outcomes WHERE type = 'conversion'")
    }
    assert outcomes[before.decision_id] == (pseudonym, None)
    assert outcomes[after.decision_id] == (ALICE, 42.0)
    jobs = {
        r["job_id"]: (r["user_id"], r["status"], json.loads(r["payload"]))
        for r in await service.pool.fetch(
            "SELECT * FROM push_jobs WHERE job_id = ANY ($1::uuid[])",
            [before.decision_id, after.decision_id],
        )
    }
    assert jobs[before.decision_id] == (pseudonym, "erased", {})
    assert jobs[after.decision_id][:2] == (ALICE, "queued")


async def test_once_the_link_is_forgotten_late_rows_get_a_fresh_pseudonym(
    service: Service,
) -> None:
    await scenario(service)
    erased = await service.eraser.erase("fit", ALICE)
    service.clock.now = erased.erased_at + PSEUDONYM_LINK_TTL - dt.timedelta(seconds=1)
    assert await service.eraser.forget_links() == 0
    service.clock.now = erased.erased_at + PSEUDONYM_LINK_TTL + dt.timedelta(seconds=1)
    assert await service.eraser.forget_links() == 1
    assert await service.pool.fetchval("SELECT pseudonym FROM user_erasures") is None

    old = await service.pool.fetchval(
        "SELECT DISTINCT user_id FROM decisions WHERE user_id LIKE 'erased:%'"
    )
    late = late_decision(ALICE, erased.erased_at - dt.timedelta(seconds=1))
    service.log.add_decision(late)
    await service.log.flush()
    user = await service.pool.fetchval(
        "SELECT user_id FROM decisions WHERE decision_id = $1", late.decision_id
    )
    assert user.startswith(PSEUDONYM_PREFIX) and user != old


async def waiting_for_lock(pool: asyncpg.Pool, count: int = 1) -> None:
    """Waits until `count` sessions wait for an advisory lock (the erasure lock: no other one is
    held in this database). A bound of 20 s stands for a hang."""
    for _ in range(400):
        waiting = await pool.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        )
        if waiting >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("nobody waits for the erasure lock")


INSERT_DECISION = """
INSERT INTO decisions (decision_id, app_id, user_id, decided_at, received_at, event_name,
                       requested_channel, time_zone, show, reason)
VALUES ($1, 'fit', $2, $3, $3, 'app_opened', 'in_app', 'UTC', false, 'daily_cap')
"""


async def test_a_write_in_progress_is_waited_for_and_then_erased(service: Service) -> None:
    await scenario(service)
    row_id = uuid.UUID(new_decision_id("fit", ALICE, START))
    async with service.pool.acquire() as writer:
        transaction = writer.transaction()
        await transaction.start()
        await writer.execute(INSERT_DECISION, row_id, ALICE, START)
        erasing = asyncio.create_task(service.eraser.erase("fit", ALICE))
        await waiting_for_lock(service.pool)
        assert not erasing.done()
        await transaction.commit()
    erased = await erasing
    assert erased.decisions_pseudonymised == 5  # the four logged and the one written meanwhile
    assert await rows_of(service.pool, "fit", ALICE) == dict.fromkeys(
        ("decisions", "outcomes", "push_jobs", "devices"), 0
    )


async def test_a_write_that_waited_for_an_erasure_sees_it(service: Service) -> None:
    await scenario(service)
    row_id = uuid.UUID(new_decision_id("fit", ALICE, START))
    async with service.pool.acquire() as erasing:
        transaction = erasing.transaction()
        await transaction.start()
        await erasing.execute("SELECT user_erasure_lock('fit')")
        await erasing.execute(
            "INSERT INTO user_erasures (subject_hash, app_id, erased_at, pseudonym) "
            "VALUES ($1, 'fit', $2, 'erased:by-hand')",
            subject_hash("fit", ALICE),
            START + dt.timedelta(minutes=1),
        )
        writing = asyncio.create_task(service.pool.execute(INSERT_DECISION, row_id, ALICE, START))
        await waiting_for_lock(service.pool)
        assert not writing.done()
        await transaction.commit()
    await writing
    user = await service.pool.fetchval(
        "SELECT user_id FROM decisions WHERE decision_id = $1", row_id
    )
    assert user == "erased:by-hand"


async def test_the_cli_erases_a_user(
    service: Service,
    pg_dsn: str,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await scenario(service)
    monkeypatch.setenv("NUDGE_DATABASE_URL", pg_dsn)
    monkeypatch.setenv("NUDGE_REDIS_URL", redis_url)
    # main() runs its own event loop: in a thread, beside this test's.
    code = await asyncio.to_thread(main, ["users", "delete", "--app", "fit", "--user", ALICE])
    out = capsys.readouterr().out
    assert code == 0
    assert "deleted" in out and "2 devices" in out and "4 decisions" in out
    assert ALICE not in out
    assert await user_keys(service.redis, "fit", ALICE) == set()
    assert await rows_of(service.pool, "fit", ALICE) == dict.fromkeys(
        ("decisions", "outcomes", "push_jobs", "devices"), 0
    )

    code = await asyncio.to_thread(
        main, ["users", "delete", "--app", "fit", "--user", ALICE, "--json"]
    )
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["decisions_pseudonymised"] == 0 and doc["redis_keys_deleted"] == 0

    assert await asyncio.to_thread(main, ["users", "delete", "--app", "ghost", "--user", "x"]) == 2
    assert "ghost" in capsys.readouterr().err
