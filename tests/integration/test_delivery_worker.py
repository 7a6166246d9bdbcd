"""The worker's queue: claims, leases, two workers, take-over after a crash, timing (deliver_at,
quiet hours, expiry), and what an undelivered push leaves for the bandit."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest
import redis.asyncio as aioredis
from fakes.apns import Reply
from fakes.harness import (
    ANDROID_TOKEN,
    IOS_TOKEN,
    Providers,
    add_app,
    add_device,
    add_job,
    deliveries,
    events,
    in_process_worker,
    job_row,
    providers,
)
from nudge_server.delivery.jobs import JobStore
from nudge_server.model import Platform, QuietHoursPolicy
from nudge_server.settings import RedisSettings
from nudge_server.sweeper import IgnoreSweeper
from nudge_server.throttle_store import ThrottleStore

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture
async def fakes(tmp_path: Path) -> AsyncIterator[Providers]:
    async with providers(tmp_path) as started:
        yield started


def set_clock_to(fakes: Providers, local: dt.datetime) -> None:
    """Moves the shared clock so that it reads `local` (an aware datetime) now."""
    fakes.clock.advance((local - fakes.clock.utc()).total_seconds())


async def test_two_workers_never_send_one_job_twice(
    pg_pool: asyncpg.Pool, fakes: Providers
) -> None:
    await add_app(pg_pool)
    users = [f"user-{i}" for i in range(15)]
    for i, user in enumerate(users):
        await add_device(pg_pool, user, Platform.IOS, f"{i:02x}" * 32)
        await add_device(pg_pool, user, Platform.ANDROID, f"android-{i}-" + "z" * 40)
    jobs = [await add_job(pg_pool, user) for user in users for _ in range(2)]
    async with (
        in_process_worker(pg_pool, fakes, batch_size=3) as one,
        in_process_worker(pg_pool, fakes, batch_size=3) as two,
    ):
        runs = [asyncio.create_task(w.run()) for w in (one, two)]
        await fakes.apns.wait_for(lambda: len(fakes.apns.requests) == 30, timeout=30)
        await fakes.fcm.wait_for(lambda: len(fakes.fcm.sends) == 30, timeout=30)
        one.stop()
        two.stop()
        await asyncio.gather(*runs)
    per_delivery = Counter(r.headers["apns-id"] for r in fakes.apns.requests)
    assert len(per_delivery) == 30 and set(per_delivery.values()) == {1}
    per_fcm = Counter((s.token, s.message["data"]["decision_id"]) for s in fakes.fcm.sends)
    assert len(per_fcm) == 30 and set(per_fcm.values()) == {1}
    assert one.counts["sent"] > 0 and two.counts["sent"] > 0  # both took part
    for job in jobs:
        assert (await job_row(pg_pool, job))["status"] == "sent"


async def test_a_job_left_sending_by_a_dead_worker_is_unknown_not_resent(
    pg_pool: asyncpg.Pool, fakes: Providers
) -> None:
    await add_app(pg_pool)
    await add_device(pg_pool, "u", Platform.IOS, IOS_TOKEN)
    await add_device(pg_pool, "u", Platform.ANDROID, ANDROID_TOKEN)
    job = await add_job(pg_pool, "u")
    # A worker claims the job and commits 'sending' for the iOS device, then dies.
    dead = JobStore(pg_pool, "dead-worker")
    now = fakes.clock.utc()
    [claimed] = await dead.claim(now, 10, lease_s=5)
    rows = await dead.deliveries(claimed, now)
    ios = next(d for d in rows if d.platform is Platform.IOS)
    assert isinstance(await dead.mark_sending(ios, uuid.uuid4(), now), int)
    async with in_process_worker(pg_pool, fakes) as worker:
        assert await worker.run_once() == 0  # the lease still holds
        fakes.clock.advance(6)
        assert await worker.run_once() == 1
    rows_after = await deliveries(pg_pool, job)
    assert rows_after["ios"]["status"] == "unknown"
    assert "dead-worker" in rows_after["ios"]["error"]
    assert rows_after["android"]["status"] == "sent"
    assert fakes.apns.requests == []  # possibly sent already: never again
    assert (await job_row(pg_pool, job))["status"] == "sent"
    assert ("ios", "unknown") in await events(pg_pool, job)


async def test_a_late_result_corrects_an_unknown(pg_pool: asyncpg.Pool) -> None:
    await add_app(pg_pool)
    await add_device(pg_pool, "u", Platform.IOS, IOS_TOKEN)
    job = await add_job(pg_pool, "u")
    slow, other = JobStore(pg_pool, "slow"), JobStore(pg_pool, "other")
    now = dt.datetime.now(dt.UTC)
    [claimed] = await slow.claim(now, 1, lease_s=1)
    [delivery] = await slow.deliveries(claimed, now)
    attempt = uuid.uuid4()
    assert await slow.mark_sending(delivery, attempt, now) == 1
    later = now + dt.timedelta(seconds=2)
    [taken] = await other.claim(later, 1, lease_s=10)  # the slow worker's lease ran out
    [left] = await other.deliveries(taken, later)
    assert await other.orphan_to_unknown(left, later)
    # ...and a second 'sending' mark is impossible:
    assert await other.mark_sending(left, uuid.uuid4(), later) == "taken"
    assert await slow.record(delivery, attempt, "sent", later, detail="apns 200")
    assert (await deliveries(pg_pool, job))["ios"]["status"] == "sent"


async def test_nothing_is_sent_before_deliver_at(pg_pool: asyncpg.Pool, fakes: Providers) -> None:
    await add_app(pg_pool)
    await add_device(pg_pool, "u", Platform.IOS, IOS_TOKEN)
    job = await add_job(pg_pool, "u", deliver_at=fakes.clock.utc() + dt.timedelta(minutes=10))
    async with in_process_worker(pg_pool, fakes) as worker:
        assert await worker.run_once() == 0
        fakes.clock.advance(9 * 60)
        assert await worker.run_once() == 0
        fakes.clock.advance(61)
        assert await worker.run_once() == 1
    assert (await job_row(pg_pool, job))["status"] == "sent"


async def test_a_push_due_at_night_waits_for_the_morning_even_across_a_restart(
    pg_pool: asyncpg.Pool, fakes: Providers
) -> None:
    await add_app(pg_pool, quiet=("22:00", "08:00"))
    await add_device(pg_pool, "u", Platform.IOS, IOS_TOKEN)
    tomorrow = (fakes.clock.utc().astimezone(BERLIN) + dt.timedelta(days=1)).date()
    set_clock_to(fakes, dt.datetime.combine(tomorrow, dt.time(23, 30), BERLIN))
    job = await add_job(pg_pool, "u", deliver_at=fakes.clock.utc())  # say, an arm's delay
    morning = dt.datetime.combine(tomorrow + dt.timedelta(days=1), dt.time(8, 0), BERLIN)
    async with in_process_worker(pg_pool, fakes) as worker:
        assert await worker.run_once() == 1
    row = await job_row(pg_pool, job)
    assert row["status"] == "deferred" and row["run_after"] == morning
    assert fakes.apns.requests == []
    set_clock_to(fakes, morning - dt.timedelta(seconds=5))
    async with in_process_worker(pg_pool, fakes) as restarted:
        assert await restarted.run_once() == 0
        fakes.clock.advance(6)
        assert await restarted.run_once() == 1
    assert (await job_row(pg_pool, job))["status"] == "sent"
    assert len(fakes.apns.delivered()) == 1


async def test_a_campaign_that_drops_at_night_drops(
    pg_pool: asyncpg.Pool, fakes: Providers
) -> None:
    await add_app(pg_pool, quiet=("22:00", "08:00"), campaigns={"nightly": QuietHoursPolicy.DROP})
    await add_device(pg_pool, "u", Platform.IOS, IOS_TOKEN)
    today = fakes.clock.utc().astimezone(BERLIN).date()
    set_clock_to(fakes, dt.datetime.combine(today + dt.timedelta(days=1), dt.time(3, 0), BERLIN))
    job = await add_job(pg_pool, "u", campaign_id="nightly", deliver_at=fakes.clock.utc())
    async with in_process_worker(pg_pool, fakes) as worker:
        await worker.run_once()
    assert (await job_row(pg_pool, job))["status"] == "dropped"
    assert fakes.apns.requests == []


async def test_expired_jobs_and_users_without_devices_fail_without_a_send(
    pg_pool: asyncpg.Pool, fakes: Providers
) -> None:
    await add_app(pg_pool)
    await add_device(pg_pool, "u", Platform.IOS, IOS_TOKEN)
    stale = await add_job(
        pg_pool,
        "u",
        deliver_at=fakes.clock.utc() - dt.timedelta(hours=2),
        expires_in=dt.timedelta(hours=1),
    )
    lonely = await add_job(pg_pool, "nobody")
    async with in_process_worker(pg_pool, fakes) as worker:
        assert await worker.run_once() == 2
    assert (await job_row(pg_pool, stale))["status"] == "expired"
    assert (await job_row(pg_pool, lonely))["status"] == "failed"
    assert fakes.apns.requests == []


async def test_an_undelivered_push_never_counts_as_shown(
    pg_pool: asyncpg.Pool, fakes: Providers, redis_client: aioredis.Redis
) -> None:
    """The ignore sweeper counts a shown prompt without a response as ignored (a pull for the
    bandit) after its response window: a push that reached no device is never ignored, and a
    sent one's window starts when it was sent."""
    await add_app(pg_pool)
    await add_device(pg_pool, "has-phone", Platform.IOS, IOS_TOKEN)
    late_at = fakes.clock.utc() - dt.timedelta(hours=1)
    sent = await add_job(pg_pool, "has-phone", deliver_at=late_at)
    lonely = await add_job(pg_pool, "nobody")
    async with in_process_worker(pg_pool, fakes) as worker:
        await worker.run_once()
    sent_at = (await deliveries(pg_pool, sent))["ios"]["sent_at"]
    store = ThrottleStore(redis_client, RedisSettings())
    window_closes = sent_at + dt.timedelta(hours=24)

    async def sweep_at(now: dt.datetime) -> set[uuid.UUID]:
        await IgnoreSweeper(pg_pool, store, clock=lambda: now).sweep_once()
        rows = await pg_pool.fetch("SELECT decision_id FROM outcomes WHERE type = 'ignore'")
        return {r["decision_id"] for r in rows}

    assert await sweep_at(window_closes - dt.timedelta(seconds=1)) == set()
    assert await sweep_at(window_closes + dt.timedelta(days=2)) == {sent}
    assert lonely not in await sweep_at(window_closes + dt.timedelta(days=2))


async def test_the_worker_stops_gracefully(pg_pool: asyncpg.Pool, fakes: Providers) -> None:
    from fakes.apns import Reply

    await add_app(pg_pool)
    await add_device(pg_pool, "u", Platform.IOS, IOS_TOKEN)
    fakes.apns.script(IOS_TOKEN, Reply(delay=0.5))
    job = await add_job(pg_pool, "u")
    async with in_process_worker(pg_pool, fakes) as worker:
        run = asyncio.create_task(worker.run())
        await fakes.apns.wait_for(lambda: len(fakes.apns.requests) == 1)
        worker.stop()
        await asyncio.wait_for(run, 5)
    # The send in flight was allowed to finish and to be recorded.
    assert (await deliveries(pg_pool, job))["ios"]["status"] == "sent"
    assert (await job_row(pg_pool, job))["claimed_by"] is None


async def test_a_token_that_moved_to_another_user_never_gets_the_previous_users_push(
    pg_pool: asyncpg.Pool, fakes: Providers
) -> None:
    await add_app(pg_pool)
    await add_device(pg_pool, "seller", Platform.IOS, IOS_TOKEN)
    fakes.apns.script(IOS_TOKEN, Reply(503, "ServiceUnavailable"))
    job = await add_job(pg_pool, "seller")
    async with in_process_worker(pg_pool, fakes) as worker:
        await worker.run_once()  # a transient failure: the delivery waits for its retry
        assert (await deliveries(pg_pool, job))["ios"]["status"] == "retrying"
        # The phone is resold: the new owner registers the same token before the retry.
        await add_device(pg_pool, "buyer", Platform.IOS, IOS_TOKEN)
        fakes.clock.advance(2)
        await worker.run_once()
    assert [r.status for r in fakes.apns.requests] == [503]  # never sent again
    row = (await deliveries(pg_pool, job))["ios"]
    assert row["status"] == "skipped" and "another user" in row["error"]
