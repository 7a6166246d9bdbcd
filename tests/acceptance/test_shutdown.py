"""SIGTERM with hundreds of calls in flight: each completes or gets UNAVAILABLE, and every
decision and outcome that was answered is in PostgreSQL afterwards."""

from __future__ import annotations

import asyncio
import collections
import signal
from collections.abc import Awaitable, Callable

import asyncpg
import grpc
import pytest
from conftest import ServerProcess
from fakes.tcp_proxy import TcpProxy
from nudge_client import NudgeClient
from test_server_process import MORNING, TIME_ZONE, configure

CALLS = 300
#: Each chunk to or from Redis is held this long (a round trip: twice), so that the calls are
#: all in flight at the SIGTERM.
REDIS_DELAY_S = 0.5


@pytest.fixture
async def redis_proxy(tcp_proxy: Callable[[str], Awaitable[TcpProxy]], redis_url: str) -> TcpProxy:
    return await tcp_proxy(redis_url)


@pytest.fixture
def server_env(redis_proxy: TcpProxy, redis_url: str) -> dict[str, str]:
    return {
        "NUDGE_REDIS_URL": redis_proxy.url_for(redis_url),
        "NUDGE_REDIS_DECISION_TIMEOUT": "3.0",
        "NUDGE_REDIS_COMMAND_TIMEOUT": "3.0",
        "NUDGE_SHUTDOWN_DRAIN": "1.0",
    }


async def test_sigterm_with_hundreds_of_calls_in_flight_loses_nothing_answered(
    server: ServerProcess, redis_proxy: TcpProxy
) -> None:
    key = await server.key("shop")
    async with NudgeClient(server.target, timeout_s=10, api_key=key) as client:
        await configure(client)
        # Decisions to report outcomes on during the shutdown.
        earlier = [
            await client.decide(
                "shop", f"early-{i}", "workout_finished", time_zone=TIME_ZONE, event_time=MORNING
            )
            for i in range(40)
        ]
        assert all(reply.show for reply in earlier)
        redis_proxy.set_delay(REDIS_DELAY_S)

        async def decide(i: int) -> tuple[str, str]:
            try:
                reply = await client.decide(
                    "shop",
                    f"user-{i}",
                    "workout_finished",
                    time_zone=TIME_ZONE,
                    event_time=MORNING,
                )
            except grpc.aio.AioRpcError as exc:
                return "decide", exc.code().name
            return "decide", reply.decision_id

        async def outcome(i: int) -> tuple[str, str]:
            reply = earlier[i]
            try:
                await client.report_outcome("shop", f"early-{i}", reply.decision_id, "impression")
            except grpc.aio.AioRpcError as exc:
                return "outcome", exc.code().name
            return "outcome", reply.decision_id

        calls = [asyncio.create_task(decide(i)) for i in range(CALLS)]
        calls += [asyncio.create_task(outcome(i)) for i in range(len(earlier))]
        await asyncio.sleep(REDIS_DELAY_S * 1.5)  # every call sent, none answered yet
        server.process.send_signal(signal.SIGTERM)
        results = await asyncio.gather(*calls)
        assert await asyncio.to_thread(server.process.wait, 30) == 0

    codes = collections.Counter(value if value.isupper() else "OK" for _, value in results)
    assert set(codes) <= {"OK", "UNAVAILABLE"}, (codes, server.log_tail(2000))
    decided = {value for kind, value in results if kind == "decide" and not value.isupper()}
    reported = {value for kind, value in results if kind == "outcome" and not value.isupper()}
    # Hundreds were in flight at the signal and were allowed to finish.
    assert len(decided) >= CALLS * 2 // 3, codes
    conn = await asyncpg.connect(server.dsn)
    try:
        logged = {
            str(r["decision_id"]) for r in await conn.fetch("SELECT decision_id FROM decisions")
        }
        with_outcome = {
            str(r["decision_id"])
            for r in await conn.fetch("SELECT decision_id FROM outcomes WHERE type = 'impression'")
        }
    finally:
        await conn.close()
    assert decided <= logged, len(decided - logged)
    assert reported <= with_outcome, len(reported - with_outcome)
