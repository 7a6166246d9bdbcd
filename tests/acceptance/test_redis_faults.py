"""The server process while its Redis is down, hung, slow or restarted, and while clients cancel
calls in the middle of their Redis round trip.

The server talks to a private redis-server of each test through a TCP proxy (cut: down;
blackhole: hung; delay: slow); the test reads and restarts that Redis directly.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import asyncpg
import grpc
import pytest
import redis.asyncio as aioredis
from conftest import ServerProcess
from fakes.redis_process import RedisProcess
from fakes.tcp_proxy import TcpProxy
from google.protobuf import duration_pb2, timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nudge.v1 import admin_pb2, admin_pb2_grpc, decision_pb2, decision_pb2_grpc
from nudge_server import keys
from nudge_server.settings import RedisSettings
from nudge_server.throttle_store import open_redis

UTC = dt.UTC
TIME_ZONE = "Europe/Berlin"
MORNING = dt.datetime(2026, 6, 1, 7, 0, tzinfo=UTC)  # 09:00 in Berlin
#: The server's deadline for the one Redis call of a Decide.
DECISION_TIMEOUT_S = 0.25
#: The callers' deadline: an answer later than this would be a failure to fail safe.
CLIENT_DEADLINE_S = 2.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

ProxyFactory = Callable[[str], Awaitable[TcpProxy]]


@pytest.fixture
def private_redis() -> Iterator[RedisProcess]:
    with RedisProcess() as process:
        yield process


@pytest.fixture
async def redis_proxy(private_redis: RedisProcess, tcp_proxy: ProxyFactory) -> TcpProxy:
    return await tcp_proxy(private_redis.url)


@pytest.fixture
def server_env(private_redis: RedisProcess, redis_proxy: TcpProxy) -> dict[str, str]:
    return {
        "NUDGE_REDIS_URL": redis_proxy.url_for(private_redis.url),
        "NUDGE_REDIS_DECISION_TIMEOUT": str(DECISION_TIMEOUT_S),
        "NUDGE_REDIS_COMMAND_TIMEOUT": "0.5",
    }


@pytest.fixture
async def direct_redis(private_redis: RedisProcess) -> AsyncIterator[aioredis.Redis]:
    """A client of the private Redis that bypasses the proxy."""
    client = open_redis(RedisSettings(private_redis.url))  # retries once after a restart
    try:
        yield client
    finally:
        await client.aclose()


class Api:
    """The stubs of one app's channel."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.decisions = decision_pb2_grpc.DecisionServiceStub(channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)

    async def configure(self) -> None:
        await self.admin.PutApp(
            admin_pb2.PutAppRequest(app=admin_pb2.App(app_id="shop", display_name="Shop")),
            timeout=5,
        )
        await self.admin.PutCampaign(
            admin_pb2.PutCampaignRequest(
                campaign=admin_pb2.Campaign(
                    app_id="shop",
                    campaign_id="streak",
                    trigger_events=["workout_finished"],
                    channel=decision_pb2.CHANNEL_IN_APP,
                    arms=[admin_pb2.Arm(arm_id="nice", prompt=decision_pb2.Prompt(title="Nice!"))],
                    attribution_window=duration_pb2.Duration(seconds=86400),
                )
            ),
            timeout=5,
        )

    def decide(
        self, user: str, at: dt.datetime = MORNING
    ) -> grpc.aio.UnaryUnaryCall[decision_pb2.DecideRequest, decision_pb2.DecideResponse]:
        return self.decisions.Decide(
            decision_pb2.DecideRequest(
                app_id="shop",
                user_id=user,
                event=decision_pb2.Event(name="workout_finished"),
                channel=decision_pb2.CHANNEL_IN_APP,
                time_zone=TIME_ZONE,
                event_time=timestamp(at),
            ),
            timeout=CLIENT_DEADLINE_S,
        )

    async def impression(self, user: str, decision_id: str) -> decision_pb2.ReportOutcomeResponse:
        response: decision_pb2.ReportOutcomeResponse = await self.decisions.ReportOutcome(
            decision_pb2.ReportOutcomeRequest(
                app_id="shop",
                user_id=user,
                decision_id=decision_id,
                type=decision_pb2.OUTCOME_TYPE_IMPRESSION,
                occurred_at=timestamp(MORNING + dt.timedelta(minutes=1)),
            ),
            timeout=CLIENT_DEADLINE_S,
        )
        return response

    async def health_status(self) -> int:
        reply = await self.health.Check(health_pb2.HealthCheckRequest(), timeout=CLIENT_DEADLINE_S)
        return int(reply.status)

    async def wait_health(self, wanted: int) -> None:
        """Polls health (at most 10 s) until it says `wanted`."""
        for _ in range(100):
            if await self.health_status() == wanted:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(
            f"health never became {health_pb2.HealthCheckResponse.ServingStatus.Name(wanted)}"
        )


def timestamp(at: dt.datetime) -> timestamp_pb2.Timestamp:
    value = timestamp_pb2.Timestamp()
    value.FromDatetime(at)
    return value


async def pulls(client: aioredis.Redis, arm_id: str = "nice") -> int:
    return int(await client.hget(keys.arm_stats("shop", "streak"), f"{arm_id}:n") or 0)


async def outcome_rows(dsn: str, decision_id: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM outcomes WHERE decision_id = $1::uuid", decision_id
            )
        )
    finally:
        await conn.close()


@pytest.mark.parametrize("fault", ["cut", "blackhole", "slow"])
async def test_decide_fails_safe_while_redis_is_down_and_recovers_without_a_restart(
    server: ServerProcess, redis_proxy: TcpProxy, direct_redis: aioredis.Redis, fault: str
) -> None:
    async with server.channel("shop") as channel:
        api = Api(channel)
        await api.configure()
        first = await api.decide("before")
        assert first.show
        if fault == "cut":
            await redis_proxy.cut()
        elif fault == "blackhole":
            redis_proxy.blackhole()
        else:
            redis_proxy.set_delay(1.0)  # four times the decision deadline, each way
        # On a pooled connection, a hung or slow Redis still gets the script (later): the
        # outcome may be recorded there though the call answers UNAVAILABLE.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await api.impression("before", first.decision_id)
        await api.wait_health(NOT_SERVING)

        answers: Counter[str] = Counter()
        health_during: Counter[int] = Counter()
        for wave in range(3):
            replies = await asyncio.gather(
                *(api.decide(f"during-{wave}-{i}") for i in range(20)), return_exceptions=True
            )
            for reply in replies:
                if isinstance(reply, grpc.aio.AioRpcError):
                    answers[reply.code().name] += 1
                else:
                    assert isinstance(reply, decision_pb2.DecideResponse)
                    answers["show" if reply.show else decision_pb2.Reason.Name(reply.reason)] += 1
            health_during[await api.health_status()] += 1

        # Every call answered "no, unavailable" in time; none errored or ran past its deadline.
        assert answers == {"REASON_UNAVAILABLE": 60}
        assert health_during == {NOT_SERVING: 3}
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "redis is unavailable" in (refused.value.details() or "")

        redis_proxy.set_delay(0)
        redis_proxy.restore()
        await api.wait_health(SERVING)
        after = await asyncio.gather(*(api.decide(f"after-{i}") for i in range(5)))
        assert [a.show for a in after] == [True] * 5
        # The refused outcome, retried: recorded once, learned once, nothing half-written.
        retried = await api.impression("before", first.decision_id)
        assert retried.recorded
        again = await api.impression("before", first.decision_id)
        assert not again.recorded
    assert await outcome_rows(server.dsn, first.decision_id) == 1
    assert await pulls(direct_redis) == 1


async def test_the_service_recovers_by_itself_after_redis_forgets_its_scripts_or_restarts(
    server: ServerProcess, private_redis: RedisProcess, direct_redis: aioredis.Redis
) -> None:
    async with server.channel("shop") as channel:
        api = Api(channel)
        await api.configure()
        first = await api.decide("u1")
        assert first.show and (await api.impression("u1", first.decision_id)).recorded

        await direct_redis.script_flush()
        await direct_redis.config_resetstat()
        flushed = await api.decide("u2")
        assert flushed.show and (await api.impression("u2", flushed.decision_id)).recorded
        stats = await direct_redis.info("commandstats")
        # decide, outcome and learn each met NOSCRIPT once and were sent in full.
        assert stats["cmdstat_eval"]["calls"] == 3
        assert await pulls(direct_redis) == 2

        private_redis.restart()  # every key and script gone, every connection broken
        # The first call after the restart is granted, and each script is sent in full once.
        restarted = [await api.decide(f"v{i}") for i in range(5)]
        assert [r.show for r in restarted] == [True] * 5
        assert (await api.impression("v0", restarted[0].decision_id)).recorded
        stats = await direct_redis.info("commandstats")
        assert stats["cmdstat_eval"]["calls"] == 3
        assert await pulls(direct_redis) == 1
        assert await api.health_status() == SERVING
    assert "redis_reply_mismatch" not in server.log_path.read_text()


async def test_decides_cancelled_mid_redis_call_never_answer_for_the_wrong_user(
    server: ServerProcess, redis_proxy: TcpProxy
) -> None:
    users = [f"user-{i}" for i in range(40)]
    # Each user granted once, at a minute of their own: their "next eligible" is theirs alone.
    granted_at = {u: MORNING + dt.timedelta(minutes=i) for i, u in enumerate(users)}
    expected = {u: at + dt.timedelta(hours=1) for u, at in granted_at.items()}
    rng = random.Random(7)

    async with server.channel("shop") as channel:
        api = Api(channel)
        await api.configure()
        for user in users:
            assert (await api.decide(user, granted_at[user])).show

        def answer(reply: decision_pb2.DecideResponse) -> tuple[str, dt.datetime]:
            return (
                decision_pb2.Reason.Name(reply.reason),
                reply.next_eligible_at.ToDatetime(UTC),
            )

        async def cancelled_call(user: str) -> tuple[str, tuple[str, dt.datetime] | None]:
            call = api.decide(user, granted_at[user] + dt.timedelta(minutes=1))
            await asyncio.sleep(rng.uniform(0, 0.12))
            call.cancel()
            try:
                return user, answer(await call)
            except asyncio.CancelledError:
                return user, None

        # Each Redis round trip takes some 20 ms: many cancellations land in the middle of one.
        redis_proxy.set_delay(0.005)
        accepted = redis_proxy.accepted
        storm = []
        for _ in range(10):
            storm += await asyncio.gather(*(cancelled_call(rng.choice(users)) for _ in range(40)))
        redis_proxy.set_delay(0)
        cancelled = sum(1 for _, reply in storm if reply is None)
        assert 100 <= cancelled < len(storm), cancelled
        # The server closed the connection of every call cancelled in flight, and opened others.
        assert redis_proxy.accepted - accepted >= 20, redis_proxy.accepted - accepted
        wrong = [
            (u, reply)
            for u, reply in storm
            if reply is not None and reply != ("REASON_COOLDOWN", expected[u])
        ]
        assert wrong == []

        later = await asyncio.gather(
            *(api.decide(u, granted_at[u] + dt.timedelta(minutes=2)) for u in users * 3)
        )
        assert [answer(r) for r in later] == [("REASON_COOLDOWN", expected[u]) for u in users * 3]
    assert "redis_reply_mismatch" not in server.log_path.read_text()
