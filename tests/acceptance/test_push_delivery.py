"""Push delivery end to end: the server and the worker as processes, the fake APNs and FCM on
loopback, devices registered and decisions made through the generated client.

Checked: a granted push reaches each of the user's devices with exactly one correct request;
killing the worker at any point and restarting it never delivers a job twice; a token answered
410 is retired and never used again.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from conftest import ServerProcess, WorkerProcess, start_worker
from fakes import apns as fake_apns
from fakes import fcm as fake_fcm
from fakes.harness import ANDROID_TOKEN, IOS_TOKEN, Providers, providers
from google.protobuf import duration_pb2
from nudge.v1 import admin_pb2, decision_pb2, devices_pb2, devices_pb2_grpc
from nudge_client import NudgeClient

TIME_ZONE = "Europe/Berlin"


@pytest.fixture
async def fakes(tmp_path: Path) -> AsyncIterator[Providers]:
    async with providers(tmp_path / "fakes") as started:
        yield started


@pytest.fixture
async def workers(
    server: ServerProcess, fakes: Providers, tmp_path: Path
) -> AsyncIterator[Callable[[], Any]]:
    """Starts worker processes on the server's database and the fakes; all killed at the end."""
    started: list[WorkerProcess] = []
    log_path = tmp_path / "worker.log"

    async def start() -> WorkerProcess:
        worker = await start_worker(fakes.env(NUDGE_DATABASE_URL=server.dsn), log_path)
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.kill()
        if log_path.exists():
            print(log_path.read_text(errors="replace")[-3000:])


async def configure(client: NudgeClient) -> None:
    await client.admin.PutApp(
        admin_pb2.PutAppRequest(
            app=admin_pb2.App(
                app_id="shop",
                policy=admin_pb2.ThrottlePolicy(
                    daily_cap=50,
                    min_interval=duration_pb2.Duration(seconds=1),
                    quiet_hours_start="00:00",  # no quiet hours: the test runs at any time
                    quiet_hours_end="00:00",
                ),
            )
        ),
        timeout=5,
    )
    await client.admin.PutCampaign(
        admin_pb2.PutCampaignRequest(
            campaign=admin_pb2.Campaign(
                app_id="shop",
                campaign_id="streak",
                trigger_events=["workout_finished"],
                channel=decision_pb2.CHANNEL_PUSH,
                arms=[
                    admin_pb2.Arm(
                        arm_id="only",
                        prompt=decision_pb2.Prompt(
                            title="Nice run!", body="Keep the streak going.", data={"k": "v"}
                        ),
                    )
                ],
            )
        ),
        timeout=5,
    )


async def register(
    channel: grpc.aio.Channel,
    user: str,
    ios: str | None = IOS_TOKEN,
    android: str | None = ANDROID_TOKEN,
) -> None:
    stub = devices_pb2_grpc.DeviceServiceStub(channel)
    if ios:
        await stub.RegisterDevice(
            devices_pb2.RegisterDeviceRequest(
                app_id="shop", user_id=user, platform=decision_pb2.PLATFORM_IOS, token=ios
            ),
            timeout=5,
        )
    if android:
        await stub.RegisterDevice(
            devices_pb2.RegisterDeviceRequest(
                app_id="shop", user_id=user, platform=decision_pb2.PLATFORM_ANDROID, token=android
            ),
            timeout=5,
        )


async def push(client: NudgeClient, user: str) -> str:
    reply = await client.decide(
        "shop", user, "workout_finished", time_zone=TIME_ZONE, channel="push"
    )
    assert reply.show and reply.channel == decision_pb2.CHANNEL_PUSH, reply
    return reply.decision_id


async def delivery_rows(dsn: str, job_id: str | None = None) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """SELECT p.job_id, p.status, p.attempts, d.platform, d.token
               FROM push_deliveries p JOIN devices d USING (device_id)
               WHERE $1::uuid IS NULL OR p.job_id = $1 ORDER BY p.job_id, d.platform""",
            uuid.UUID(job_id) if job_id else None,
        )
    finally:
        await conn.close()
    return [dict(r) for r in rows]


async def eventually(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Polls the async `check` until it returns something truthy."""
    async with asyncio.timeout(timeout):
        while True:
            result = await check()
            if result:
                return result
            await asyncio.sleep(0.1)


async def test_a_granted_push_reaches_the_ios_and_the_android_device_once(
    server: ServerProcess, fakes: Providers, workers: Callable[[], Any]
) -> None:
    async with NudgeClient(server.target, timeout_s=5, api_key=await server.key("shop")) as client:
        await configure(client)
        async with server.channel("shop") as channel:
            await register(channel, "runner")
        await workers()
        decision_id = await push(client, "runner")

    async def both_sent() -> bool:
        rows = await delivery_rows(server.dsn, decision_id)
        return len(rows) == 2 and all(r["status"] == "sent" for r in rows)

    await eventually(both_sent)
    await asyncio.sleep(1.0)  # time enough for a second request, if there were one
    [ios] = fakes.apns.requests
    [android] = fakes.fcm.sends
    assert (ios.token, ios.status) == (IOS_TOKEN, 200)
    assert ios.payload["aps"]["alert"] == {"title": "Nice run!", "body": "Keep the streak going."}
    assert ios.payload["decision_id"] == decision_id and ios.payload["data"] == {"k": "v"}
    assert ios.headers["apns-topic"] == "dev.nudge.example"
    assert (android.token, android.status) == (ANDROID_TOKEN, 200)
    assert android.message["notification"]["title"] == "Nice run!"
    assert android.message["data"] == {"k": "v", "decision_id": decision_id}
    conn = await asyncpg.connect(server.dsn)
    try:
        job = await conn.fetchrow(
            "SELECT status FROM push_jobs WHERE job_id = $1", uuid.UUID(decision_id)
        )
        logged = await conn.fetch(
            "SELECT status FROM push_delivery_events WHERE job_id = $1 ORDER BY event_id",
            uuid.UUID(decision_id),
        )
    finally:
        await conn.close()
    assert job["status"] == "sent"
    assert Counter(r["status"] for r in logged) == {"sending": 2, "sent": 3}


async def test_a_worker_killed_between_the_send_and_the_mark_never_sends_again(
    server: ServerProcess, fakes: Providers, workers: Callable[[], Any]
) -> None:
    fakes.apns.script(IOS_TOKEN, fake_apns.Reply(delay=60))  # the answer never comes in time
    async with NudgeClient(server.target, timeout_s=5, api_key=await server.key("shop")) as client:
        await configure(client)
        async with server.channel("shop") as channel:
            await register(channel, "runner")
        first = await workers()
        decision_id = await push(client, "runner")
        await fakes.apns.wait_for(lambda: len(fakes.apns.requests) == 1, timeout=20)

        async def android_marked() -> bool:
            rows = await delivery_rows(server.dsn, decision_id)
            return ("android", "sent") in [(r["platform"], r["status"]) for r in rows]

        await eventually(android_marked)
        first.kill()  # the iOS request is in flight: sent, not yet marked
        await workers()

        async def settled() -> list[dict[str, Any]]:
            rows = await delivery_rows(server.dsn, decision_id)
            return rows if {r["status"] for r in rows} <= {"sent", "unknown"} else []

        rows = await eventually(settled)
    assert {r["platform"]: r["status"] for r in rows} == {"ios": "unknown", "android": "sent"}
    await asyncio.sleep(1.0)
    assert len(fakes.apns.requests) == 1
    assert len(fakes.fcm.sends) == 1


async def test_killing_the_worker_at_random_points_never_delivers_twice(
    server: ServerProcess, fakes: Providers, workers: Callable[[], Any]
) -> None:
    rng = random.Random(7)
    users = [f"runner-{i}" for i in range(8)]
    ios_tokens = {u: f"{i + 16:02x}" * 32 for i, u in enumerate(users)}
    android_tokens = {u: f"android-{u}-" + "q" * 40 for u in users}
    for user in users:  # answers that take a while, so that kills land mid-request too
        fakes.apns.script(ios_tokens[user], fake_apns.Reply(delay=rng.uniform(0.1, 0.8)))
        fakes.fcm.script(android_tokens[user], fake_fcm.Reply(delay=rng.uniform(0.1, 0.8)))
    async with NudgeClient(server.target, timeout_s=5, api_key=await server.key("shop")) as client:
        await configure(client)
        async with server.channel("shop") as channel:
            for user in users:
                await register(channel, user, ios_tokens[user], android_tokens[user])
        decisions = [await push(client, user) for user in users]
    for _ in range(4):
        worker = await workers()
        await asyncio.sleep(rng.uniform(0.2, 1.2))
        worker.kill()
    await workers()

    async def all_final() -> list[dict[str, Any]]:
        rows = await delivery_rows(server.dsn)
        done = len(rows) == 16 and all(r["status"] in ("sent", "unknown") for r in rows)
        return rows if done else []

    rows = await eventually(all_final, timeout=60)
    await asyncio.sleep(1.0)
    apns_ids = Counter(r.headers["apns-id"] for r in fakes.apns.requests)
    fcm_ids = Counter((s.token, s.message["data"]["decision_id"]) for s in fakes.fcm.sends)
    assert max(apns_ids.values()) == 1, apns_ids
    assert max(fcm_ids.values()) == 1, fcm_ids
    # Every 'sent' was delivered exactly once; an 'unknown' was requested at most once.
    sent_fcm = {(s.token, s.message["data"]["decision_id"]) for s in fakes.fcm.delivered()}
    for row in rows:
        if row["platform"] == "android" and row["status"] == "sent":
            assert (row["token"], str(row["job_id"])) in sent_fcm
    delivered_ios = Counter(r.token for r in fakes.apns.delivered())
    sent_ios = Counter(r["token"] for r in rows if r["platform"] == "ios" and r["status"] == "sent")
    assert sent_ios <= delivered_ios
    assert {str(r["job_id"]) for r in rows} == set(decisions)


async def test_a_token_answered_410_is_retired_and_never_used_again(
    server: ServerProcess, fakes: Providers, workers: Callable[[], Any]
) -> None:
    fakes.apns.script(IOS_TOKEN, fake_apns.Reply(410, "Unregistered"))
    async with NudgeClient(server.target, timeout_s=5, api_key=await server.key("shop")) as client:
        await configure(client)
        async with server.channel("shop") as channel:
            await register(channel, "runner")
            await workers()
            first = await push(client, "runner")

            async def retired() -> bool:
                rows = await delivery_rows(server.dsn, first)
                return {r["platform"]: r["status"] for r in rows} == {
                    "ios": "token_retired",
                    "android": "sent",
                }

            await eventually(retired)
            listed = await devices_pb2_grpc.DeviceServiceStub(channel).ListDevices(
                devices_pb2.ListDevicesRequest(
                    app_id="shop", user_id="runner", include_inactive=True
                ),
                timeout=5,
            )
            status = {d.platform: d.status for d in listed.devices}
            assert status[decision_pb2.PLATFORM_IOS] == devices_pb2.DEVICE_STATUS_RETIRED
            assert status[decision_pb2.PLATFORM_ANDROID] == devices_pb2.DEVICE_STATUS_ACTIVE
            await asyncio.sleep(1.1)  # the app's minimum interval
            second = await push(client, "runner")

            async def second_sent() -> bool:
                rows = await delivery_rows(server.dsn, second)
                return [(r["platform"], r["status"]) for r in rows] == [("android", "sent")]

            await eventually(second_sent)
    await asyncio.sleep(0.5)
    assert len(fakes.apns.for_token(IOS_TOKEN)) == 1
    assert len(fakes.fcm.delivered(ANDROID_TOKEN)) == 2
