"""PostgreSQL cut away from a running server: decisions keep being answered, their log rows wait
in the on-disk spool through a SIGTERM, and a new server on the same spool directory writes
every one of them, once."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import grpc
import pytest
from conftest import ServerProcess, free_port, launch, wait_serving
from fakes.tcp_proxy import TcpProxy
from google.protobuf import duration_pb2
from nudge.v1 import admin_pb2, decision_pb2, status_pb2, status_pb2_grpc
from nudge_client import NudgeClient

MORNING = dt.datetime(2026, 6, 1, 7, 0, tzinfo=dt.UTC)  # 09:00 in Berlin


@pytest.fixture
async def pg_proxy(tcp_proxy: Callable[[str], Awaitable[TcpProxy]], pg_dsn: str) -> TcpProxy:
    return await tcp_proxy(pg_dsn)


@pytest.fixture
def server_env(pg_proxy: TcpProxy, pg_dsn: str, tmp_path: Path) -> dict[str, str]:
    return {
        "NUDGE_DATABASE_URL": pg_proxy.url_for(pg_dsn),
        "NUDGE_DATABASE_COMMAND_TIMEOUT": "2",
        "NUDGE_SPOOL_DIR": str(tmp_path / "spool"),
        "NUDGE_LOG_SPILL_AFTER": "0.2",
        "NUDGE_SHUTDOWN_GRACE": "2",
    }


async def configure(client: NudgeClient) -> None:
    await client.admin.PutApp(
        admin_pb2.PutAppRequest(app=admin_pb2.App(app_id="shop", display_name="Shop")), timeout=5
    )
    await client.admin.PutCampaign(
        admin_pb2.PutCampaignRequest(
            campaign=admin_pb2.Campaign(
                app_id="shop",
                campaign_id="streak",
                trigger_events=["workout_finished"],
                channel=decision_pb2.CHANNEL_PUSH,
                arms=[admin_pb2.Arm(arm_id="a", prompt=decision_pb2.Prompt(title="Nice!"))],
                attribution_window=duration_pb2.Duration(seconds=86400),
            )
        ),
        timeout=5,
    )


async def decide_many(client: NudgeClient, first: int, count: int) -> list[str]:
    """One Decide for each of `count` users (push: a granted one also makes a push job)."""
    replies = await asyncio.gather(
        *(
            client.decide(
                "shop",
                f"runner-{i}",
                "workout_finished",
                channel="push",
                time_zone="Europe/Berlin",
                event_time=MORNING,
                client_request_id=f"req-{i}",
            )
            for i in range(first, first + count)
        )
    )
    assert all(r.decision_id for r in replies)
    return [r.decision_id for r in replies]


async def status(client: NudgeClient, server: ServerProcess) -> status_pb2.GetStatusResponse:
    async with server.channel("shop") as channel:
        return await status_pb2_grpc.StatusServiceStub(channel).GetStatus(
            status_pb2.GetStatusRequest(), timeout=5
        )


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.1)


async def logged(dsn: str, ids: list[str]) -> dict[uuid.UUID, int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT decision_id, count(*) AS n FROM decisions WHERE decision_id = ANY($1) "
            "GROUP BY decision_id",
            [uuid.UUID(i) for i in ids],
        )
        jobs = await conn.fetchval(
            "SELECT count(*) FROM push_jobs WHERE job_id = ANY($1)", [uuid.UUID(i) for i in ids]
        )
    finally:
        await conn.close()
    assert jobs <= len(ids)
    return {r["decision_id"]: r["n"] for r in rows}


async def test_decisions_made_while_postgres_is_down_survive_a_restart_logged_once(
    server: ServerProcess, pg_proxy: TcpProxy, tmp_path: Path
) -> None:
    async with NudgeClient(server.target, timeout_s=5, api_key=await server.key("shop")) as client:
        await configure(client)
        before = await decide_many(client, 0, 5)
        await until(lambda: _all_logged(server.dsn, before))

        await pg_proxy.cut()
        spooled = await decide_many(client, 100, 60)

        async def in_spool() -> bool:
            log = (await status(client, server)).decision_log
            return log.rows_in_memory == 0 and log.rows_in_spool >= 60

        await until(in_spool)
        answer = await status(client, server)
        health = {c.name: c.health for c in answer.components}
        assert health == {
            "redis": status_pb2.HEALTH_OK,
            "postgresql": status_pb2.HEALTH_FAILING,
            "decision_log": status_pb2.HEALTH_DEGRADED,
        }
        assert answer.decision_log.postgresql_failing
        assert answer.decision_log.HasField("oldest_spooled_row_age")
        assert answer.decision_log.rows_dropped == 0
        shown = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "nudge_server",
            "status",
            "--target",
            server.target,
            env={**os.environ, "NUDGE_API_KEY": await server.key("shop")},
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await shown.communicate()
        assert shown.returncode == 1  # a component is failing
        text = out.decode()
        assert "postgresql    failing" in text and "decision_log  degraded" in text
        assert "rows in spool" in text

        # An outcome needs PostgreSQL now: the client is told to retry.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.report_outcome("shop", "runner-100", spooled[0], "impression")
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

        # Answered just before the SIGTERM: in memory still, or spooled by the shutdown.
        last = await decide_many(client, 200, 40)
    assert await server.stop() == 0
    assert "decision_log_row" not in server.log_path.read_text()  # neither lost nor rejected

    # The rows wait in the directory of their database, under NUDGE_SPOOL_DIR.
    (database,) = (tmp_path / "spool").iterdir()
    assert database.name.startswith(server.dsn.rsplit("/", 1)[1] + "-")
    assert list(database.rglob("*.seg"))

    pg_proxy.restore()
    answered = before + spooled + last
    assert set(await logged(server.dsn, answered)) == {uuid.UUID(i) for i in before}

    env = {**server.env, "NUDGE_LISTEN": f"127.0.0.1:{free_port()}"}
    second_log = tmp_path / "second.log"
    second = ServerProcess(launch(env, second_log), env["NUDGE_LISTEN"], server.dsn, second_log)
    try:
        await wait_serving(second.target, second.process)
        await until(lambda: _all_logged(server.dsn, answered))
        counts = await logged(server.dsn, answered)
        assert counts == {uuid.UUID(i): 1 for i in answered}
        async with NudgeClient(
            second.target, timeout_s=5, api_key=await server.key("shop")
        ) as client:
            await until(lambda: _spool_empty(client, second))
    finally:
        assert await second.stop() == 0
    assert not list((tmp_path / "spool").rglob("*.seg"))


async def _all_logged(dsn: str, ids: list[str]) -> bool:
    return len(await logged(dsn, ids)) == len(ids)


async def _spool_empty(client: NudgeClient, server: ServerProcess) -> bool:
    log = (await status(client, server)).decision_log
    return log.rows_in_spool == 0 and log.rows_replayed > 0
