"""ThrottleStore against a Redis in trouble: forgotten scripts, a restart, cut and hung
connections, cancelled calls, and a connection that got out of step."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from zoneinfo import ZoneInfo

import pytest
import redis.asyncio as aioredis
from fakes.redis_process import RedisProcess
from fakes.tcp_proxy import TcpProxy
from nudge_server import keys
from nudge_server.errors import StoreUnavailable
from nudge_server.local_time import to_ms
from nudge_server.model import Arm, Campaign, Channel, Prompt, Reason, ThrottlePolicy
from nudge_server.settings import RedisSettings
from nudge_server.throttle import (
    Candidate,
    ThrottleCall,
    Verdict,
    build_call,
    request_fingerprint,
    screen,
)
from nudge_server.throttle_store import DECIDE, ReplyMismatch, ThrottleStore, open_redis

ProxyFactory = Callable[[str], Awaitable[TcpProxy]]
TOKYO = ZoneInfo("Asia/Tokyo")
MORNING = dt.datetime(2026, 6, 1, 1, 0, tzinfo=dt.UTC)  # 10:00 in Tokyo
POLICY = ThrottlePolicy()  # one hour between two prompts
CAMPAIGN = Campaign(
    app_id="app",
    campaign_id="welcome",
    arms=(Arm("a", Prompt(title="A")),),
    trigger_events=frozenset({"opened"}),
)


def decide_call(user: str, now: dt.datetime) -> ThrottleCall:
    screening = screen((CAMPAIGN,), app_id="app", user_id=user, now=now, tz=TOKYO, policy=POLICY)
    candidates = [Candidate(e.campaign, e.campaign.arms[0], 1.0, None) for e in screening.eligible]
    return build_call(
        app_id="app",
        user_id=user,
        decision_id=str(uuid.uuid4()),
        client_request_id="",
        fingerprint=request_fingerprint("opened", Channel.IN_APP, TOKYO.key),
        now=now,
        tz=TOKYO,
        policy=POLICY,
        channel=Channel.IN_APP,
        candidates=candidates,
        screening=screening,
    )


async def grant_and_learn(store: ThrottleStore, user: str, now: dt.datetime) -> Verdict:
    """Runs all three scripts once: a granted decision, its impression, and its learning."""
    granted = await store.decide(decide_call(user, now))
    assert granted.show, granted
    effect = await store.record_outcome("app", user, granted.decision_id, "impression", to_ms(now))
    assert effect.status == "ok" and effect.pull
    await store.learn("app", granted.decision_id, effect)
    return granted


async def pulls(client: aioredis.Redis) -> int:
    return int(await client.hget(keys.arm_stats("app", "welcome"), "a:n") or 0)


async def eval_calls(client: aioredis.Redis) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_eval", {}).get("calls", 0))


@pytest.fixture
async def private_redis() -> AsyncIterator[RedisProcess]:
    with RedisProcess() as process:
        yield process


async def test_every_script_is_sent_again_after_redis_forgets_it(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    client = aioredis.Redis.from_url(redis_url)
    store = ThrottleStore(client, RedisSettings(decision_timeout_s=2.0))
    try:
        await store.load_scripts()
        await grant_and_learn(store, "u1", MORNING)
        await redis_client.script_flush()
        await redis_client.config_resetstat()
        # Each script meets NOSCRIPT once and is sent in full (EVAL), which caches it again.
        await grant_and_learn(store, "u2", MORNING)
        assert await eval_calls(redis_client) == 3
        await grant_and_learn(store, "u3", MORNING)
        assert await eval_calls(redis_client) == 3
        assert await pulls(redis_client) == 3
    finally:
        await client.aclose()


async def test_the_store_recovers_by_itself_after_redis_restarts(
    private_redis: RedisProcess,
) -> None:
    settings = RedisSettings(private_redis.url, decision_timeout_s=2.0)
    client = open_redis(settings)
    store = ThrottleStore(client, settings)
    try:
        await store.load_scripts()
        # Several pooled connections, all of which the restart breaks.
        await asyncio.gather(*(grant_and_learn(store, f"u{i}", MORNING) for i in range(4)))
        private_redis.restart()
        # The very first calls after the restart succeed: no error reaches the caller.
        await asyncio.gather(*(grant_and_learn(store, f"v{i}", MORNING) for i in range(4)))
        assert await store.ping()
        assert await pulls(client) == 4  # the restart forgot the first four
    finally:
        await client.aclose()


@pytest.mark.parametrize("fault", ["cut", "blackhole", "slow"])
async def test_redis_down_or_hung_is_unavailable_within_the_deadline(
    redis_client: aioredis.Redis, redis_url: str, tcp_proxy: ProxyFactory, fault: str
) -> None:
    proxy = await tcp_proxy(redis_url)
    client = aioredis.Redis.from_url(proxy.url_for(redis_url), socket_connect_timeout=0.5)
    settings = RedisSettings(decision_timeout_s=0.2, command_timeout_s=0.3)
    store = ThrottleStore(client, settings)
    try:
        granted = await grant_and_learn(store, "u1", MORNING)
        if fault == "cut":
            await proxy.cut()
        elif fault == "blackhole":
            proxy.blackhole()
        else:
            proxy.set_delay(1.0)
        loop = asyncio.get_running_loop()
        started = loop.time()
        failures = []
        for i in range(5):
            with pytest.raises(StoreUnavailable) as decided:
                await store.decide(decide_call(f"w{i}", MORNING))
            failures.append(str(decided.value))
        with pytest.raises(StoreUnavailable) as outcome:
            await store.record_outcome("app", "u1", granted.decision_id, "tap", to_ms(MORNING))
        assert not await store.ping()
        # Seven calls, each bounded by its own timeout (and some slack for a loaded machine).
        assert loop.time() - started < 5 * 0.2 + 2 * 0.3 + 1.0
        assert all(f.startswith("redis is unavailable (decide: ") for f in failures), failures
        assert "retry later" in str(outcome.value)
        proxy.restore()
        proxy.set_delay(0)
        assert await store.ping()
        assert (await store.decide(decide_call("w9", MORNING))).show
    finally:
        await client.aclose()


async def test_a_reply_that_is_not_the_calls_own_is_refused_and_its_connection_closed(
    redis_client: aioredis.Redis, redis_url: str, tcp_proxy: ProxyFactory
) -> None:
    proxy = await tcp_proxy(redis_url)
    # One connection, so that the out-of-step connection is the one the next call gets.
    client = aioredis.Redis.from_url(proxy.url_for(redis_url), max_connections=1)
    store = ThrottleStore(client, RedisSettings(decision_timeout_s=2.0))
    try:
        await store.load_scripts()
        first = await store.decide(decide_call("alice", MORNING))
        assert first.show
        # What a client bug would do: send a command for another user, then hand the connection
        # back without reading its reply (slowed down, so the pool cannot see it pending).
        proxy.set_delay(0.2)
        pool = client.connection_pool
        stray = await pool.get_connection()
        bob = decide_call("bob", MORNING)
        await stray.send_command(
            "EVALSHA", DECIDE.sha, len(bob.keys), *bob.keys, *bob.args, "another-calls-token"
        )
        await pool.release(stray)
        accepted = proxy.accepted
        with pytest.raises(ReplyMismatch):
            await store.decide(decide_call("alice", MORNING + dt.timedelta(minutes=1)))
        proxy.set_delay(0)
        # The connection was closed: the next call opens a new one and gets its own reply.
        again = await store.decide(decide_call("alice", MORNING + dt.timedelta(minutes=2)))
        assert proxy.accepted == accepted + 1
        assert again.reason is Reason.COOLDOWN
        assert again.next_eligible_at == MORNING + dt.timedelta(hours=1)
    finally:
        await client.aclose()


async def test_calls_cancelled_mid_command_leave_no_connection_out_of_step(
    redis_client: aioredis.Redis, redis_url: str, tcp_proxy: ProxyFactory
) -> None:
    proxy = await tcp_proxy(redis_url)
    client = aioredis.Redis.from_url(proxy.url_for(redis_url))
    store = ThrottleStore(client, RedisSettings(decision_timeout_s=5.0))
    users = [f"user-{i}" for i in range(30)]
    # Each user granted at a time of their own: their "next eligible" is theirs alone.
    granted_at = {u: MORNING + dt.timedelta(minutes=i) for i, u in enumerate(users)}
    expected = {u: at + dt.timedelta(hours=1) for u, at in granted_at.items()}
    rng = random.Random(5)

    async def cooldown(user: str, minutes: int) -> tuple[Reason, dt.datetime | None]:
        verdict = await store.decide(
            decide_call(user, granted_at[user] + dt.timedelta(minutes=minutes))
        )
        return verdict.reason, verdict.next_eligible_at

    async def cancelled_call(user: str) -> tuple[str, tuple[Reason, dt.datetime | None] | None]:
        task = asyncio.create_task(cooldown(user, 1))
        await asyncio.sleep(rng.uniform(0, 0.03))
        task.cancel()
        try:
            return user, await task
        except asyncio.CancelledError:
            return user, None

    try:
        await store.load_scripts()
        for user in users:
            assert (await store.decide(decide_call(user, granted_at[user]))).show
        proxy.set_delay(0.005)
        accepted = proxy.accepted
        storm = []
        for _ in range(20):  # 400 calls, 20 at a time (well within the pool)
            storm += await asyncio.gather(*(cancelled_call(rng.choice(users)) for _ in range(20)))
        cancelled = sum(1 for _, answer in storm if answer is None)
        assert cancelled >= 100, cancelled
        # Calls cancelled with their command in flight had their connections closed.
        assert proxy.accepted - accepted >= 20, proxy.accepted - accepted
        wrong = [(u, a) for u, a in storm if a is not None and a != (Reason.COOLDOWN, expected[u])]
        assert wrong == []
        proxy.set_delay(0)
        later = await asyncio.gather(*(cooldown(user, 2) for user in users * 3))
        assert later == [(Reason.COOLDOWN, expected[u]) for u in users * 3]
    finally:
        await client.aclose()
