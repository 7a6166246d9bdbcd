"""AdminService through a real in-process grpc.aio server and the generated stub."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg
import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from nudge.v1 import admin_pb2, admin_pb2_grpc, decision_pb2
from nudge_server import config_store
from nudge_server.admin_api import AdminServicer
from nudge_server.config_store import ConfigStore


@dataclass
class Calls:
    """Records the on_change callbacks."""

    count: int = 0
    fail: bool = False
    kinds: list[str] = field(default_factory=list)

    async def async_hook(self) -> None:
        self.count += 1
        self.kinds.append("async")
        if self.fail:
            raise RuntimeError("cache refresh failed")


@dataclass
class Admin:
    stub: admin_pb2_grpc.AdminServiceStub
    store: ConfigStore
    calls: Calls


@pytest.fixture
async def admin(pg_pool: asyncpg.Pool) -> AsyncIterator[Admin]:
    store = ConfigStore(pg_pool)
    calls = Calls()
    server = grpc.aio.server()
    admin_pb2_grpc.add_AdminServiceServicer_to_server(
        AdminServicer(store, on_change=calls.async_hook), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Admin(admin_pb2_grpc.AdminServiceStub(channel), store, calls)
    finally:
        await channel.close()
        await server.stop(None)


def app_message(app_id: str = "fit-app") -> admin_pb2.App:
    message = admin_pb2.App(
        app_id=app_id,
        display_name="Fit App",
        policy=admin_pb2.ThrottlePolicy(
            daily_cap=4,
            quiet_hours_start="23:00",
            channel_daily_caps={"push": 1},
        ),
    )
    message.policy.min_interval.FromSeconds(1800)
    return message


def campaign_message(campaign_id: str = "streak", app_id: str = "fit-app") -> admin_pb2.Campaign:
    message = admin_pb2.Campaign(
        app_id=app_id,
        campaign_id=campaign_id,
        display_name="Streak",
        trigger_events=["workout_finished", "app_opened"],
        channel=decision_pb2.CHANNEL_PUSH,
        priority=2,
        arms=[
            admin_pb2.Arm(
                arm_id="now",
                prompt=decision_pb2.Prompt(title="Go", body="Now", data={"img": "x.png"}),
            ),
            admin_pb2.Arm(arm_id="later", prompt=decision_pb2.Prompt(title="Later")),
        ],
        caps=admin_pb2.CampaignCaps(per_day=1, lifetime=3),
        holdout_share=0.1,
        reward_metric=admin_pb2.REWARD_METRIC_CONVERSION,
        quiet_hours_policy=admin_pb2.QUIET_HOURS_POLICY_DROP,
        control_arm_id="now",
    )
    message.arms[1].delay.FromSeconds(600)
    return message


async def test_put_and_get_an_app(admin: Admin) -> None:
    put = await admin.stub.PutApp(admin_pb2.PutAppRequest(app=app_message()))
    app = put.app
    assert app.app_id == "fit-app"
    assert app.display_name == "Fit App"
    assert app.policy.daily_cap == 4
    assert app.policy.min_interval.seconds == 1800
    assert app.policy.quiet_hours_start == "23:00"
    assert dict(app.policy.channel_daily_caps) == {"push": 1}
    # Defaults are filled in.
    assert app.policy.quiet_hours_end == "08:00"
    assert app.policy.backoff_factor == 2.0
    assert app.policy.backoff_ceiling.seconds == 7 * 86400
    assert app.policy.snooze_after == 8
    assert app.policy.disable_adaptive is False

    got = await admin.stub.GetApp(admin_pb2.GetAppRequest(app_id="fit-app"))
    assert got.app == app
    assert admin.calls.count == 1


async def test_put_and_get_a_campaign(admin: Admin) -> None:
    await admin.stub.PutApp(admin_pb2.PutAppRequest(app=app_message()))
    put = await admin.stub.PutCampaign(admin_pb2.PutCampaignRequest(campaign=campaign_message()))
    campaign = put.campaign
    assert campaign.HasField("updated_at")
    assert campaign.status == admin_pb2.CAMPAIGN_STATUS_ACTIVE  # unspecified means active
    assert campaign.channel == decision_pb2.CHANNEL_PUSH
    assert list(campaign.trigger_events) == ["app_opened", "workout_finished"]
    assert [a.arm_id for a in campaign.arms] == ["now", "later"]
    assert campaign.arms[0].prompt.data["img"] == "x.png"
    assert campaign.arms[1].delay.seconds == 600
    assert campaign.caps.per_day == 1 and campaign.caps.lifetime == 3
    assert campaign.reward_metric == admin_pb2.REWARD_METRIC_CONVERSION
    assert campaign.quiet_hours_policy == admin_pb2.QUIET_HOURS_POLICY_DROP
    assert campaign.attribution_window.seconds == 7 * 86400
    assert campaign.exploration_floor == 0.05
    assert campaign.control_arm_id == "now"
    assert not campaign.HasField("response_window")  # the channel's default

    got = await admin.stub.GetCampaign(
        admin_pb2.GetCampaignRequest(app_id="fit-app", campaign_id="streak")
    )
    assert got.campaign == campaign

    # Writing back what was read changes nothing but updated_at.
    again = await admin.stub.PutCampaign(admin_pb2.PutCampaignRequest(campaign=got.campaign))
    again.campaign.ClearField("updated_at")
    campaign.ClearField("updated_at")
    assert again.campaign == campaign
    assert admin.calls.count == 3


async def test_list_campaigns_in_id_order(admin: Admin) -> None:
    await admin.stub.PutApp(admin_pb2.PutAppRequest(app=app_message()))
    for campaign_id in ("zeta", "alpha", "mid"):
        await admin.stub.PutCampaign(
            admin_pb2.PutCampaignRequest(campaign=campaign_message(campaign_id))
        )
    archived = campaign_message("old")
    archived.status = admin_pb2.CAMPAIGN_STATUS_ARCHIVED
    await admin.stub.PutCampaign(admin_pb2.PutCampaignRequest(campaign=archived))
    listed = await admin.stub.ListCampaigns(admin_pb2.ListCampaignsRequest(app_id="fit-app"))
    assert [c.campaign_id for c in listed.campaigns] == ["alpha", "mid", "old", "zeta"]
    assert listed.campaigns[2].status == admin_pb2.CAMPAIGN_STATUS_ARCHIVED


async def status_of(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value


async def test_invalid_app_names_the_field(admin: Admin) -> None:
    message = app_message()
    message.policy.quiet_hours_start = "25:00"
    error = await status_of(admin.stub.PutApp(admin_pb2.PutAppRequest(app=message)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "app.policy.quiet_hours_start" in (error.details() or "")
    assert "HH:MM" in (error.details() or "")

    message = app_message()
    message.app_id = "not valid!"
    error = await status_of(admin.stub.PutApp(admin_pb2.PutAppRequest(app=message)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "app.app_id" in (error.details() or "")

    error = await status_of(admin.stub.PutApp(admin_pb2.PutAppRequest()))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "app.app_id" in (error.details() or "")

    message = app_message()
    message.policy.min_interval.FromSeconds(-5)
    error = await status_of(admin.stub.PutApp(admin_pb2.PutAppRequest(app=message)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "app.policy.min_interval" in (error.details() or "")

    assert admin.calls.count == 0  # nothing was written
    assert await admin.store.revision() == 0


async def test_invalid_campaign_names_the_field_and_changes_nothing(admin: Admin) -> None:
    await admin.stub.PutApp(admin_pb2.PutAppRequest(app=app_message()))
    revision = await admin.store.revision()

    message = campaign_message()
    message.arms[1].arm_id = "bad id"
    error = await status_of(admin.stub.PutCampaign(admin_pb2.PutCampaignRequest(campaign=message)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "campaign.arms[1].arm_id" in (error.details() or "")

    message = campaign_message()
    message.holdout_share = 0.9
    error = await status_of(admin.stub.PutCampaign(admin_pb2.PutCampaignRequest(campaign=message)))
    assert "campaign.holdout_share" in (error.details() or "")

    message = campaign_message()
    del message.trigger_events[:]
    error = await status_of(admin.stub.PutCampaign(admin_pb2.PutCampaignRequest(campaign=message)))
    assert "campaign.trigger_events" in (error.details() or "")

    message = campaign_message()
    message.channel = 42  # type: ignore[assignment]  # an enum value this server does not know
    error = await status_of(admin.stub.PutCampaign(admin_pb2.PutCampaignRequest(campaign=message)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "campaign.channel" in (error.details() or "")

    assert await admin.store.revision() == revision
    assert admin.calls.count == 1


async def test_not_found(admin: Admin) -> None:
    error = await status_of(admin.stub.GetApp(admin_pb2.GetAppRequest(app_id="ghost")))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "ghost" in (error.details() or "")

    error = await status_of(
        admin.stub.PutCampaign(
            admin_pb2.PutCampaignRequest(campaign=campaign_message(app_id="ghost"))
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND

    await admin.stub.PutApp(admin_pb2.PutAppRequest(app=app_message()))
    error = await status_of(
        admin.stub.GetCampaign(admin_pb2.GetCampaignRequest(app_id="fit-app", campaign_id="nope"))
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    error = await status_of(
        admin.stub.ListCampaigns(admin_pb2.ListCampaignsRequest(app_id="ghost"))
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_missing_ids_are_invalid(admin: Admin) -> None:
    error = await status_of(admin.stub.GetApp(admin_pb2.GetAppRequest()))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "app_id" in (error.details() or "")
    error = await status_of(admin.stub.GetCampaign(admin_pb2.GetCampaignRequest(app_id="fit-app")))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "campaign_id" in (error.details() or "")


async def test_a_failing_on_change_does_not_fail_the_write(admin: Admin) -> None:
    admin.calls.fail = True
    put = await admin.stub.PutApp(admin_pb2.PutAppRequest(app=app_message()))
    assert put.app.app_id == "fit-app"
    assert admin.calls.count == 1
    assert (await admin.store.get_app("fit-app")).policy.daily_cap == 4


async def test_a_plain_function_works_as_on_change(pg_pool: asyncpg.Pool) -> None:
    store = ConfigStore(pg_pool)
    seen: list[int] = []
    server = grpc.aio.server()
    admin_pb2_grpc.add_AdminServiceServicer_to_server(
        AdminServicer(store, on_change=lambda: seen.append(1)), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = admin_pb2_grpc.AdminServiceStub(channel)
            await stub.PutApp(admin_pb2.PutAppRequest(app=app_message()))
    finally:
        await server.stop(None)
    assert seen == [1]


@pytest.mark.parametrize(
    ("call", "field"),
    [
        ("GetApp", "app_id"),
        ("GetCampaign", "app_id"),
        ("GetCampaign", "campaign_id"),
        ("ListCampaigns", "app_id"),
    ],
)
async def test_ids_of_reads_are_checked_before_any_query(
    admin: Admin, call: str, field: str
) -> None:
    await admin.stub.PutApp(admin_pb2.PutAppRequest(app=app_message()))
    request_type = {
        "GetApp": admin_pb2.GetAppRequest,
        "GetCampaign": admin_pb2.GetCampaignRequest,
        "ListCampaigns": admin_pb2.ListCampaignsRequest,
    }[call]
    for bad in ("fit\x00app", "bad id", "x" * 65, "é"):
        ids = {"app_id": "fit-app", "campaign_id": "streak"}
        ids[field] = bad
        request = request_type(
            **{k: v for k, v in ids.items() if k in request_type.DESCRIPTOR.fields_by_name}
        )
        error = await status_of(getattr(admin.stub, call)(request))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (bad, error.details())
        assert (error.details() or "").startswith(f"{field}: must be 1 to 64 characters")


async def test_an_over_long_id_is_refused_without_echoing_it(admin: Admin) -> None:
    # The message once repeated the whole id, which blew the client's metadata limit
    # (RESOURCE_EXHAUSTED "Stream removed").
    requests = [
        admin.stub.GetApp(admin_pb2.GetAppRequest(app_id="a" * 200_000)),
        admin.stub.GetCampaign(
            admin_pb2.GetCampaignRequest(app_id="fit-app", campaign_id="c" * 200_000)
        ),
        admin.stub.ListCampaigns(admin_pb2.ListCampaignsRequest(app_id="a" * 200_000)),
    ]
    for call in requests:
        error = await status_of(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert len(error.details() or "") < 300
        assert "(200000 characters)" in (error.details() or "")
    long_key = admin_pb2.PutCampaignRequest(campaign=campaign_message())
    long_key.campaign.arms[0].prompt.data["k" * 100_000] = "v"
    error = await status_of(admin.stub.PutCampaign(long_key))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith("campaign.arms[0].prompt.data.kkkk")
    assert len(error.details() or "") < 300


def _with_duration(seconds: int, nanos: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=seconds, nanos=nanos)


@pytest.mark.parametrize(
    ("seconds", "nanos", "problem"),
    [
        (0, -1, None),  # -1 ns: valid, and refused by config as negative
        (1, -1, "seconds and nanos must not have opposite signs"),
        (-1, 1, "seconds and nanos must not have opposite signs"),
        (1, 1_000_000_000, "nanos must be between"),
        (0, -1_000_000_000, "nanos must be between"),
        (315_576_000_001, 0, "seconds must be between"),
        (-(10**15), 0, "seconds must be between"),
    ],
)
async def test_invalid_durations_name_the_field(
    admin: Admin, seconds: int, nanos: int, problem: str | None
) -> None:
    app = app_message()
    app.policy.min_interval.CopyFrom(_with_duration(seconds, nanos))
    error = await status_of(admin.stub.PutApp(admin_pb2.PutAppRequest(app=app)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith("app.policy.min_interval: ")
    if problem:
        assert f"is not a valid Duration: {problem}" in (error.details() or "")

    await admin.stub.PutApp(admin_pb2.PutAppRequest(app=app_message()))
    revision = await admin.store.revision()
    for path, set_it in (
        ("campaign.arms[1].delay", lambda c: c.arms[1].delay),
        ("campaign.caps.min_interval", lambda c: c.caps.min_interval),
        ("campaign.attribution_window", lambda c: c.attribution_window),
        ("campaign.response_window", lambda c: c.response_window),
    ):
        campaign = campaign_message()
        set_it(campaign).CopyFrom(_with_duration(seconds, nanos))
        error = await status_of(
            admin.stub.PutCampaign(admin_pb2.PutCampaignRequest(campaign=campaign))
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (error.details() or "").startswith(f"{path}: "), error.details()
    assert await admin.store.revision() == revision


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(0, -1), (0, 1_000_000_000), (253_402_300_800, 0), (-62_135_596_801, 0)],
)
async def test_invalid_timestamps_name_the_field(admin: Admin, seconds: int, nanos: int) -> None:
    await admin.stub.PutApp(admin_pb2.PutAppRequest(app=app_message()))
    campaign = campaign_message()
    campaign.updated_at.CopyFrom(timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos))
    error = await status_of(admin.stub.PutCampaign(admin_pb2.PutCampaignRequest(campaign=campaign)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith("campaign.updated_at: is not a valid Timestamp")


async def test_a_campaign_over_the_size_bound_is_refused(admin: Admin) -> None:
    await admin.stub.PutApp(admin_pb2.PutAppRequest(app=app_message()))
    campaign = campaign_message()
    for i in range(60):
        campaign.arms.add(
            arm_id=f"big{i}",
            prompt=decision_pb2.Prompt(title="t" * 200, body="b" * 2000, action_url="u" * 2048),
        )
    assert 200_000 < campaign.ByteSize() < 256 * 1024
    error = await status_of(admin.stub.PutCampaign(admin_pb2.PutCampaignRequest(campaign=campaign)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith("campaign: is ")
    assert "at most 131072" in (error.details() or "")


async def test_an_app_may_have_only_so_many_live_campaigns(
    admin: Admin, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config_store, "MAX_LIVE_CAMPAIGNS_PER_APP", 2)
    await admin.stub.PutApp(admin_pb2.PutAppRequest(app=app_message()))
    for campaign_id in ("one", "two"):
        message = campaign_message()
        message.campaign_id = campaign_id
        await admin.stub.PutCampaign(admin_pb2.PutCampaignRequest(campaign=message))
    third = campaign_message()
    third.campaign_id = "three"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await admin.stub.PutCampaign(admin_pb2.PutCampaignRequest(campaign=third))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "archive one first" in (refused.value.details() or "")
    # Rewriting a live one still works; archiving one makes room; an archived one is no limit.
    again = campaign_message()
    again.campaign_id = "two"
    await admin.stub.PutCampaign(admin_pb2.PutCampaignRequest(campaign=again))
    again.status = admin_pb2.CAMPAIGN_STATUS_ARCHIVED
    await admin.stub.PutCampaign(admin_pb2.PutCampaignRequest(campaign=again))
    await admin.stub.PutCampaign(admin_pb2.PutCampaignRequest(campaign=third))
    listed = await admin.stub.ListCampaigns(admin_pb2.ListCampaignsRequest(app_id="fit-app"))
    assert [c.campaign_id for c in listed.campaigns] == ["one", "three", "two"]
