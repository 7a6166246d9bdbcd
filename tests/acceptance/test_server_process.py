"""The server started as a process and called through the generated client over real gRPC."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from conftest import ServerProcess
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from nudge.v1 import admin_pb2, decision_pb2
from nudge_client import NudgeClient

UTC = dt.UTC
TIME_ZONE = "Europe/Berlin"


async def configure(client: NudgeClient, channel: int = decision_pb2.CHANNEL_IN_APP) -> None:
    await client.admin.PutApp(
        admin_pb2.PutAppRequest(app=admin_pb2.App(app_id="shop", display_name="Shop")),
        timeout=5,
    )
    await client.admin.PutCampaign(
        admin_pb2.PutCampaignRequest(
            campaign=admin_pb2.Campaign(
                app_id="shop",
                campaign_id="streak",
                trigger_events=["workout_finished"],
                channel=channel,
                arms=[
                    admin_pb2.Arm(arm_id="short", prompt=decision_pb2.Prompt(title="Nice!")),
                    admin_pb2.Arm(arm_id="long", prompt=decision_pb2.Prompt(title="Great run")),
                ],
                attribution_window=duration_pb2.Duration(seconds=86400),
            )
        ),
        timeout=5,
    )


MORNING = dt.datetime(2026, 6, 1, 7, 0, tzinfo=UTC)  # 09:00 in Berlin


async def test_decide_caps_explains_and_logs_every_decision(server: ServerProcess) -> None:
    async with NudgeClient(server.target, timeout_s=5, api_key=await server.key("shop")) as client:
        await configure(client)
        replies = []
        for i in range(5):
            replies.append(
                await client.decide(
                    "shop",
                    "runner-1",
                    "workout_finished",
                    time_zone=TIME_ZONE,
                    event_time=MORNING + dt.timedelta(hours=2 * i),
                    properties={"km": 5},
                )
            )
        shown = [r for r in replies if r.show]
        assert len(shown) == 3
        assert [r.reason for r in replies[3:]] == [decision_pb2.REASON_DAILY_CAP] * 2
        for reply in shown:
            assert reply.campaign_id == "streak" and reply.arm_id in ("short", "long")
            assert reply.prompt.title in ("Nice!", "Great run")
            assert reply.propensity == pytest.approx(0.5)
        # The cap resets at local midnight, inside quiet hours: next eligible at 08:00 Berlin.
        assert replies[4].next_eligible_at.ToDatetime(UTC) == dt.datetime(
            2026, 6, 2, 6, 0, tzinfo=UTC
        )
        tap = await client.report_outcome(
            "shop",
            "runner-1",
            shown[0].decision_id,
            "tap",
            occurred_at=MORNING + dt.timedelta(minutes=1),
        )
        assert tap.recorded and tap.rewarded
        again = await client.report_outcome(
            "shop",
            "runner-1",
            shown[0].decision_id,
            "tap",
            occurred_at=MORNING + dt.timedelta(minutes=1),
        )
        assert not again.recorded
    assert await server.stop() == 0
    conn = await asyncpg.connect(server.dsn)
    try:
        decisions = await conn.fetch("SELECT show, reason FROM decisions WHERE app_id = 'shop'")
        outcomes = await conn.fetchval("SELECT count(*) FROM outcomes")
    finally:
        await conn.close()
    assert len(decisions) == 5
    assert sorted(r["reason"] for r in decisions) == ["daily_cap"] * 2 + ["ok"] * 3
    assert outcomes == 1


async def test_a_retried_request_id_returns_the_same_decision(server: ServerProcess) -> None:
    async with NudgeClient(server.target, timeout_s=5, api_key=await server.key("shop")) as client:
        await configure(client)
        first = await client.decide(
            "shop",
            "u",
            "workout_finished",
            time_zone=TIME_ZONE,
            client_request_id="req-1",
            event_time=MORNING,
        )
        again = await client.decide(
            "shop",
            "u",
            "workout_finished",
            time_zone=TIME_ZONE,
            client_request_id="req-1",
            event_time=MORNING,
        )
        assert first.show and again.replayed
        assert (again.decision_id, again.arm_id) == (first.decision_id, first.arm_id)
        assert again.prompt.title == first.prompt.title
    await server.stop()
    conn = await asyncpg.connect(server.dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM decisions") == 1
    finally:
        await conn.close()


async def test_bad_input_is_rejected_naming_the_field(server: ServerProcess) -> None:
    async with NudgeClient(server.target, timeout_s=5, api_key=await server.key("shop")) as client:
        await configure(client)
        stub = client.decisions
        good = decision_pb2.DecideRequest(
            app_id="shop",
            user_id="u",
            event=decision_pb2.Event(name="workout_finished"),
            time_zone=TIME_ZONE,
        )
        cases: list[tuple[decision_pb2.DecideRequest, grpc.StatusCode, str]] = []
        for change, code, field in [
            ({"user_id": ""}, grpc.StatusCode.INVALID_ARGUMENT, "user_id"),
            ({"user_id": "x" * 200}, grpc.StatusCode.INVALID_ARGUMENT, "user_id"),
            ({"time_zone": "Moon/Crater"}, grpc.StatusCode.INVALID_ARGUMENT, "time_zone"),
            ({"app_id": "ghost"}, grpc.StatusCode.PERMISSION_DENIED, "app_id"),
            ({"user_id": "nul\x00"}, grpc.StatusCode.INVALID_ARGUMENT, "user_id"),
            ({"channel": 42}, grpc.StatusCode.INVALID_ARGUMENT, "channel"),
        ]:
            request = decision_pb2.DecideRequest()
            request.CopyFrom(good)
            for key, value in change.items():
                setattr(request, key, value)
            cases.append((request, code, field))
        huge = decision_pb2.DecideRequest()
        huge.CopyFrom(good)
        for i in range(100):
            huge.event.properties[f"k{i}"] = i
        cases.append((huge, grpc.StatusCode.INVALID_ARGUMENT, "event.properties"))
        nul_property = decision_pb2.DecideRequest()
        nul_property.CopyFrom(good)
        nul_property.event.properties["note"] = "a\x00b"
        cases.append((nul_property, grpc.StatusCode.INVALID_ARGUMENT, "event.properties.note"))
        for request, code, field in cases:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Decide(request, timeout=5)
            assert caught.value.code() == code, (field, caught.value.details())
            assert field in (caught.value.details() or ""), caught.value.details()

        shown = await client.decide(
            "shop", "owner", "workout_finished", time_zone=TIME_ZONE, event_time=MORNING
        )
        assert shown.show
        for user, kind, code in [
            ("someone-else", "tap", grpc.StatusCode.INVALID_ARGUMENT),
            ("owner", "tap", None),
        ]:
            if code is None:
                assert (
                    await client.report_outcome(
                        "shop", user, shown.decision_id, kind, occurred_at=MORNING
                    )
                ).recorded
                continue
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await client.report_outcome("shop", user, shown.decision_id, kind)
            assert caught.value.code() == code
            assert "decision_id" in (caught.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.report_outcome(
                "shop", "owner", "00000000-0000-4000-8000-000000000000", "tap"
            )
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    await server.stop()
    conn = await asyncpg.connect(server.dsn)
    try:
        # Only the one valid decision was logged: nothing half-written for the rejected ones.
        assert await conn.fetchval("SELECT count(*) FROM decisions") == 1
    finally:
        await conn.close()


async def test_health_needs_no_key_and_reflection_needs_one(server: ServerProcess) -> None:
    async with grpc.aio.insecure_channel(server.target) as channel:  # no key
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "nudge.v1.DecisionService", "nudge.v1.AdminService"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)

        async def requests() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for _ in stub.ServerReflectionInfo(requests(), timeout=5):
                pass
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

        key = await server.key("shop", ("report",))  # any scope will do
        names = set()
        async for reply in stub.ServerReflectionInfo(
            requests(), timeout=5, metadata=(("authorization", f"Bearer {key}"),)
        ):
            names |= {s.name for s in reply.list_services_response.service}
        assert {
            "nudge.v1.DecisionService",
            "nudge.v1.AdminService",
            "nudge.v1.KeyService",
            "grpc.health.v1.Health",
        } <= names


async def test_config_changes_apply_without_a_restart(server: ServerProcess) -> None:
    async with NudgeClient(server.target, timeout_s=5, api_key=await server.key("shop")) as client:
        await configure(client)
        before = await client.decide(
            "shop", "u", "app_opened", time_zone=TIME_ZONE, event_time=MORNING
        )
        assert before.reason == decision_pb2.REASON_NO_ELIGIBLE_CAMPAIGN
        # Another writer (the CLI, another server) changes the database directly.
        conn = await asyncpg.connect(server.dsn)
        try:
            await conn.execute(
                """UPDATE campaigns SET spec = jsonb_set(spec, '{trigger_events}',
                                                  '["workout_finished", "app_opened"]')"""
            )
            await conn.execute("UPDATE config_revision SET revision = revision + 1")
        finally:
            await conn.close()
        for _ in range(50):
            after = await client.decide(
                "shop", "u", "app_opened", time_zone=TIME_ZONE, event_time=MORNING
            )
            if after.show:
                break
            await asyncio.sleep(0.1)
        assert after.show and after.campaign_id == "streak"


async def test_a_granted_push_enqueues_a_push_job_deferred_past_quiet_hours(
    server: ServerProcess,
) -> None:
    night = dt.datetime(2026, 6, 1, 21, 30, tzinfo=UTC)  # 23:30 in Berlin
    async with NudgeClient(server.target, timeout_s=5, api_key=await server.key("shop")) as client:
        await configure(client, channel=decision_pb2.CHANNEL_PUSH)
        reply = await client.decide(
            "shop",
            "sleepy",
            "workout_finished",
            time_zone=TIME_ZONE,
            channel="push",
            locale="de-DE",
            event_time=night,
        )
        assert reply.show and reply.channel == decision_pb2.CHANNEL_PUSH
        assert reply.deliver_at.ToDatetime(UTC) == dt.datetime(2026, 6, 2, 6, 0, tzinfo=UTC)
        in_app = await client.decide(
            "shop", "sleepy", "workout_finished", time_zone=TIME_ZONE, event_time=night
        )
        assert in_app.reason == decision_pb2.REASON_NO_ELIGIBLE_CAMPAIGN
    await server.stop()
    conn = await asyncpg.connect(server.dsn)
    try:
        job = await conn.fetchrow("SELECT * FROM push_jobs")
    finally:
        await conn.close()
    assert str(job["job_id"]) == reply.decision_id
    assert job["deliver_at"] == dt.datetime(2026, 6, 2, 6, 0, tzinfo=UTC)
    assert job["status"] == "queued" and job["user_id"] == "sleepy"
    payload = json.loads(job["payload"]) if isinstance(job["payload"], str) else job["payload"]
    assert payload["title"] == reply.prompt.title and payload["locale"] == "de-DE"
