"""AdminService.DeleteUser on the server as a process: a user with state, devices and logged
rows is erased; a later Decide treats them as new; the call is idempotent, checks its ids and
needs the admin scope."""

from __future__ import annotations

import asyncio

import asyncpg
import grpc
import pytest
from conftest import ServerProcess
from google.protobuf import duration_pb2
from nudge.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    decision_pb2,
    decision_pb2_grpc,
    devices_pb2,
    devices_pb2_grpc,
)

IOS = decision_pb2.PLATFORM_IOS
TOKEN = "ab" * 32


def decide(user: str) -> decision_pb2.DecideRequest:
    return decision_pb2.DecideRequest(
        app_id="fit",
        user_id=user,
        event=decision_pb2.Event(name="app_opened", properties={"email": f"{user}@example.com"}),
        channel=decision_pb2.CHANNEL_IN_APP,
        time_zone="Europe/Berlin",
        locale="de-DE",
        platform=IOS,
    )


async def prepare(server: ServerProcess) -> None:
    """App fit (one prompt a day, no quiet hours) with one in-app campaign."""
    async with server.channel("fit") as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        await admin.PutApp(
            admin_pb2.PutAppRequest(
                app=admin_pb2.App(
                    app_id="fit",
                    policy=admin_pb2.ThrottlePolicy(
                        daily_cap=1,
                        min_interval=duration_pb2.Duration(seconds=0),
                        quiet_hours_start="00:00",
                        quiet_hours_end="00:00",
                    ),
                )
            )
        )
        await admin.PutCampaign(
            admin_pb2.PutCampaignRequest(
                campaign=admin_pb2.Campaign(
                    app_id="fit",
                    campaign_id="welcome",
                    trigger_events=["app_opened"],
                    channel=decision_pb2.CHANNEL_IN_APP,
                    arms=[admin_pb2.Arm(arm_id="x", prompt=decision_pb2.Prompt(title="Hi"))],
                )
            )
        )


async def rows_of(dsn: str, user: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return {
            table: await conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE app_id = 'fit' AND user_id = $1", user
            )
            for table in ("decisions", "outcomes", "devices")
        }
    finally:
        await conn.close()


async def pseudonymised_decisions(dsn: str, want: int) -> int:
    """How many decisions of app fit carry a pseudonym, once there are `want` (the log writer
    writes in the background; at most 20 s, a bound on a hang)."""
    conn = await asyncpg.connect(dsn)
    try:
        for _ in range(400):
            found: int = await conn.fetchval(
                "SELECT count(*) FROM decisions WHERE app_id = 'fit' AND user_id LIKE 'erased:%'"
            )
            if found >= want:
                return found
            await asyncio.sleep(0.05)
        return found
    finally:
        await conn.close()


async def test_delete_user_erases_and_a_later_decide_sees_a_new_user(
    server: ServerProcess,
) -> None:
    await prepare(server)
    async with server.channel("fit") as channel:
        decisions = decision_pb2_grpc.DecisionServiceStub(channel)
        devices = devices_pb2_grpc.DeviceServiceStub(channel)
        admin = admin_pb2_grpc.AdminServiceStub(channel)

        shown = await decisions.Decide(decide("alice"))
        assert shown.show
        assert (await decisions.Decide(decide("alice"))).reason == decision_pb2.REASON_DAILY_CAP
        assert (await decisions.Decide(decide("bob"))).show
        await decisions.ReportOutcome(
            decision_pb2.ReportOutcomeRequest(
                app_id="fit",
                user_id="alice",
                decision_id=shown.decision_id,
                type=decision_pb2.OUTCOME_TYPE_IMPRESSION,
            )
        )
        await devices.RegisterDevice(
            devices_pb2.RegisterDeviceRequest(
                app_id="fit", user_id="alice", platform=IOS, token=TOKEN
            )
        )

        erased = await admin.DeleteUser(admin_pb2.DeleteUserRequest(app_id="fit", user_id="alice"))
        assert erased.devices_deleted == 1
        assert erased.redis_keys_deleted >= 3  # state, day, grants, the decision's record
        assert erased.erased_at.seconds > 0
        # Her two decisions are pseudonymised whenever they reach the log, before or after.
        assert await pseudonymised_decisions(server.dsn, 2) == 2
        assert await rows_of(server.dsn, "alice") == {"decisions": 0, "outcomes": 0, "devices": 0}
        assert (await rows_of(server.dsn, "bob"))["decisions"] == 1

        again = await admin.DeleteUser(admin_pb2.DeleteUserRequest(app_id="fit", user_id="alice"))
        assert again.redis_keys_deleted == again.devices_deleted == 0
        assert again.decisions_pseudonymised == again.outcomes_pseudonymised == 0

        listed = await devices.ListDevices(
            devices_pb2.ListDevicesRequest(app_id="fit", user_id="alice", include_inactive=True)
        )
        assert list(listed.devices) == []
        # A new user: a fresh daily cap. Bob keeps his.
        assert (await decisions.Decide(decide("alice"))).show
        assert (await decisions.Decide(decide("bob"))).reason == decision_pb2.REASON_DAILY_CAP


@pytest.mark.parametrize(
    ("app_id", "user_id", "code", "named"),
    [
        ("fit", "", grpc.StatusCode.INVALID_ARGUMENT, "user_id"),
        ("fit", "bad\x07id", grpc.StatusCode.INVALID_ARGUMENT, "user_id"),
        ("ghost", "alice", grpc.StatusCode.NOT_FOUND, "ghost"),
    ],
)
async def test_delete_user_refuses_bad_ids_and_unknown_apps(
    server: ServerProcess, app_id: str, user_id: str, code: grpc.StatusCode, named: str
) -> None:
    await prepare(server)
    async with server.channel(app_id) as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await admin.DeleteUser(admin_pb2.DeleteUserRequest(app_id=app_id, user_id=user_id))
    assert caught.value.code() == code
    assert named in (caught.value.details() or "")


async def test_delete_user_needs_the_admin_scope(server: ServerProcess) -> None:
    await prepare(server)
    async with server.channel("fit", scopes=("decide", "report")) as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await admin.DeleteUser(admin_pb2.DeleteUserRequest(app_id="fit", user_id="alice"))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
