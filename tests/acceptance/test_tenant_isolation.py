"""Tenant isolation, on the server as a process: app A's keys can neither read nor change app B's
data, and their errors never tell whether B, or anything of B's, exists.

Both apps are configured through the AdminService with their own admin keys; each has a campaign
on the same event and a user with the same id, and B's user has a decision, an outcome, a device
and keys. Every attack from A is bracketed by a picture of everything B has: its rows in every
PostgreSQL table with an `app_id` column, every Redis key (B's must be unchanged, and every key
that did change must be A's) and B's arm report.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import pytest
import redis.asyncio as aioredis
from conftest import ServerProcess
from google.protobuf import timestamp_pb2
from nudge.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    decision_pb2,
    decision_pb2_grpc,
    devices_pb2,
    devices_pb2_grpc,
    keys_pb2,
    keys_pb2_grpc,
    report_pb2,
    report_pb2_grpc,
    status_pb2,
)
from nudge_client import bearer_interceptors
from nudge_server import keys
from nudge_server.auth import RULES
from nudge_server.ids import Owner, new_decision_id, owner_of

APP_A = "tenant-a"
APP_B = "tenant-b"
#: An app that exists nowhere, as long as APP_B: its errors must read like B's.
NO_SUCH_APP = "tenant-x"
#: A campaign id both apps have, with the same arm ids: shared names must not share state.
CAMPAIGN = "streak"
#: A campaign only B has, on an event nobody sends.
B_ONLY_CAMPAIGN = "b-welcome"
#: A user id both apps have.
SHARED_USER = "shared-user"
#: The client_request_id B's user decided with; A's same-named user uses it too.
REQUEST_ID = "req-shared"
EVENT = "workout_finished"
TIME_ZONE = "UTC"
#: The day of every event: half a year from the server's clock, so that the ignore sweeper (it
#: looks at response windows that closed in the last three days) never touches these decisions.
DAY = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
TOKEN_B = "ab" * 32  # an APNs token of B's user
DAILY_CAP = 2
ALL_SCOPES = ("decide", "report", "admin")

PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
NOT_FOUND = grpc.StatusCode.NOT_FOUND


def at(hour: int, minute: int = 0) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(DAY.replace(hour=hour, minute=minute))
    return stamp


def app_request(app_id: str, daily_cap: int = DAILY_CAP) -> admin_pb2.PutAppRequest:
    """An app with a daily cap and no quiet hours (start = end)."""
    return admin_pb2.PutAppRequest(
        app=admin_pb2.App(
            app_id=app_id,
            display_name=f"App {app_id}",
            policy=admin_pb2.ThrottlePolicy(
                daily_cap=daily_cap, quiet_hours_start="00:00", quiet_hours_end="00:00"
            ),
        )
    )


def campaign_request(
    app_id: str,
    campaign_id: str,
    arm_ids: Sequence[str] = ("short", "long"),
    event: str = EVENT,
) -> admin_pb2.PutCampaignRequest:
    return admin_pb2.PutCampaignRequest(
        campaign=admin_pb2.Campaign(
            app_id=app_id,
            campaign_id=campaign_id,
            trigger_events=[event],
            channel=decision_pb2.CHANNEL_IN_APP,
            arms=[
                admin_pb2.Arm(arm_id=arm, prompt=decision_pb2.Prompt(title=f"{app_id} {arm}"))
                for arm in arm_ids
            ],
        )
    )


def decide_request(
    app_id: str, user_id: str, hour: int, client_request_id: str = ""
) -> decision_pb2.DecideRequest:
    return decision_pb2.DecideRequest(
        app_id=app_id,
        user_id=user_id,
        event=decision_pb2.Event(name=EVENT),
        channel=decision_pb2.CHANNEL_IN_APP,
        time_zone=TIME_ZONE,
        client_request_id=client_request_id,
        event_time=at(hour),
    )


def outcome_request(
    app_id: str, user_id: str, decision_id: str, kind: int, hour: int = 9, minute: int = 5
) -> decision_pb2.ReportOutcomeRequest:
    return decision_pb2.ReportOutcomeRequest(
        app_id=app_id,
        user_id=user_id,
        decision_id=decision_id,
        type=kind,
        occurred_at=at(hour, minute),
    )


def device_request(app_id: str, user_id: str = SHARED_USER) -> devices_pb2.RegisterDeviceRequest:
    return devices_pb2.RegisterDeviceRequest(
        app_id=app_id, user_id=user_id, platform=decision_pb2.PLATFORM_IOS, token=TOKEN_B
    )


def unregister_request(app_id: str) -> devices_pb2.UnregisterDeviceRequest:
    return devices_pb2.UnregisterDeviceRequest(
        app_id=app_id, user_id=SHARED_USER, platform=decision_pb2.PLATFORM_IOS, token=TOKEN_B
    )


async def refused(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    """The error of a call that must fail."""
    try:
        reply = await call
    except grpc.aio.AioRpcError as exc:
        return exc
    raise AssertionError(f"the call succeeded: {reply}")


@dataclass
class Stubs:
    """Every service of the API on one channel (one app's key)."""

    admin: admin_pb2_grpc.AdminServiceStub
    decisions: decision_pb2_grpc.DecisionServiceStub
    devices: devices_pb2_grpc.DeviceServiceStub
    keys: keys_pb2_grpc.KeyServiceStub
    reports: report_pb2_grpc.ReportServiceStub

    @classmethod
    def on(cls, channel: grpc.aio.Channel) -> Stubs:
        return cls(
            admin_pb2_grpc.AdminServiceStub(channel),
            decision_pb2_grpc.DecisionServiceStub(channel),
            devices_pb2_grpc.DeviceServiceStub(channel),
            keys_pb2_grpc.KeyServiceStub(channel),
            report_pb2_grpc.ReportServiceStub(channel),
        )


@dataclass(frozen=True)
class TenantState:
    """Everything one app has, as far as anyone can see."""

    #: table -> the app's rows, each as a sorted repr of its columns.
    rows: dict[str, list[str]]
    #: Every Redis key -> (type, value).
    redis: dict[bytes, tuple[bytes, Any]]
    #: The arm report of the app's campaign: decisions and per-arm counts.
    report: tuple[Any, ...]


async def rows_of(dsn: str, app_id: str) -> dict[str, list[str]]:
    """The app's rows in every table that has an app_id column."""
    conn = await asyncpg.connect(dsn)
    try:
        tables = await conn.fetch(
            "SELECT table_name FROM information_schema.columns"
            " WHERE table_schema = 'public' AND column_name = 'app_id' ORDER BY table_name"
        )
        found = {}
        for (table,) in tables:
            # Table names come from the catalog, never from a request.
            rows = await conn.fetch(f'SELECT * FROM "{table}" WHERE app_id = $1', app_id)
            found[table] = sorted(repr(sorted(dict(row).items())) for row in rows)
        return found
    finally:
        await conn.close()


async def redis_dump(client: aioredis.Redis) -> dict[bytes, tuple[bytes, Any]]:
    """Every key with its type and value (TTLs left out: they tick)."""
    dump: dict[bytes, tuple[bytes, Any]] = {}
    async for key in client.scan_iter(count=1000):
        kind = await client.type(key)
        value: Any
        if kind == b"hash":
            value = await client.hgetall(key)
        elif kind == b"list":
            value = await client.lrange(key, 0, -1)
        elif kind == b"set":
            value = await client.smembers(key)
        elif kind == b"zset":
            value = await client.zrange(key, 0, -1, withscores=True)
        else:
            value = await client.get(key)
        dump[key] = (kind, value)
    return dump


def key_owner(key: bytes, users: dict[str, Iterable[str]]) -> str | None:
    """The app a Redis key belongs to, judged by its user hash tag or its campaign tag."""
    text = key.decode()
    for app_id, app_users in users.items():
        if text.startswith(f"{keys.PREFIX}:arms:{{{app_id}:"):
            return app_id
        if any(keys.user_tag(app_id, user) in text for user in app_users):
            return app_id
    return None


async def report_of(stub: report_pb2_grpc.ReportServiceStub, app_id: str, campaign_id: str) -> Any:
    reply = await stub.GetArmReport(
        report_pb2.GetArmReportRequest(app_id=app_id, campaign_id=campaign_id), timeout=60
    )
    report = reply.report
    return (
        report.decisions,
        tuple(
            (a.arm_id, a.decisions, a.impressions, a.taps, a.dismissals, a.conversions, a.rewards)
            for a in report.arms
        ),
    )


@dataclass
class World:
    """Apps A and `other` (B unless told), set up; A's and the other's stubs (all scopes)."""

    server: ServerProcess
    redis: aioredis.Redis
    other: str
    a: Stubs
    b: Stubs
    #: B's user's decision (shown, an impression reported) and the key B made over KeyService.
    b_decision_id: str
    b_key_id: str
    b_key: str

    async def state(self) -> TenantState:
        """The other app's picture."""
        return TenantState(
            rows=await rows_of(self.server.dsn, self.other),
            redis=await redis_dump(self.redis),
            report=await report_of(self.b.reports, self.other, CAMPAIGN),
        )

    def assert_unchanged(
        self, before: TenantState, after: TenantState, a_users: Iterable[str] = (SHARED_USER,)
    ) -> None:
        """B's rows, keys and report are as they were; every Redis key that changed is A's."""
        assert after.rows == before.rows
        assert after.report == before.report
        users = {self.other: (SHARED_USER,), APP_A: tuple(a_users)}
        b_keys = {k: v for k, v in before.redis.items() if key_owner(k, users) == self.other}
        assert b_keys, "B has no Redis keys: nothing to compare"
        assert {k: v for k, v in after.redis.items() if key_owner(k, users) == self.other} == b_keys
        changed = {
            k
            for k in before.redis.keys() | after.redis.keys()
            if before.redis.get(k) != after.redis.get(k)
        }
        assert {k: key_owner(k, users) for k in changed} == dict.fromkeys(changed, APP_A)


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Polls `check` (at most 400 times, 50 ms apart: a bound on a hang, not a timing)."""
    for _ in range(400):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


@contextlib.asynccontextmanager
async def world_of(
    server: ServerProcess, redis: aioredis.Redis, other: str = APP_B
) -> AsyncIterator[World]:
    """Sets up A and `other`, each through its own admin key, and waits until `other`'s rows
    are all in PostgreSQL (the log is written in the background)."""
    async with server.channel(APP_A) as a_channel, server.channel(other) as b_channel:
        a, b = Stubs.on(a_channel), Stubs.on(b_channel)
        for stubs, app_id in ((a, APP_A), (b, other)):
            await stubs.admin.PutApp(app_request(app_id), timeout=10)
            await stubs.admin.PutCampaign(campaign_request(app_id, CAMPAIGN), timeout=10)
        await b.admin.PutCampaign(
            campaign_request(other, B_ONLY_CAMPAIGN, event="never_sent"), timeout=10
        )
        decision = await b.decisions.Decide(
            decide_request(other, SHARED_USER, 9, REQUEST_ID), timeout=10
        )
        assert decision.show, decision
        seen = await b.decisions.ReportOutcome(
            outcome_request(
                other, SHARED_USER, decision.decision_id, decision_pb2.OUTCOME_TYPE_IMPRESSION
            ),
            timeout=10,
        )
        assert seen.recorded
        await b.devices.RegisterDevice(device_request(other), timeout=10)
        made = await b.keys.CreateKey(
            keys_pb2.CreateKeyRequest(app_id=other, name="backend", scopes=[keys_pb2.SCOPE_DECIDE]),
            timeout=10,
        )

        async def settled() -> bool:
            # The decision's row, and B's three policy snapshots: of the decided campaign the
            # uniform one it was drawn from and the one rebuilt after the impression's pull, and
            # the uniform one of the other campaign.
            rows = await rows_of(server.dsn, other)
            return len(rows["decisions"]) == 1 and len(rows["policy_snapshots"]) == 3

        await eventually(settled, f"{other}'s decision and policy snapshots in PostgreSQL")
        yield World(server, redis, other, a, b, decision.decision_id, made.api_key.key_id, made.key)


@pytest.fixture
async def world(server: ServerProcess, redis_client: aioredis.Redis) -> AsyncIterator[World]:
    async with world_of(server, redis_client) as ready:
        yield ready


# --- reading and changing B's configuration and report ----------------------------------------


async def test_a_cannot_read_or_change_b_campaigns_policy_or_report(world: World) -> None:
    a = world.a
    before = await world.state()

    # Naming app B: refused before anything runs.
    attempts: list[Callable[[], Awaitable[Any]]] = [
        lambda: a.reports.GetArmReport(
            report_pb2.GetArmReportRequest(app_id=APP_B, campaign_id=CAMPAIGN)
        ),
        lambda: a.admin.PutCampaign(campaign_request(APP_B, CAMPAIGN, ("hijacked",))),
        lambda: a.admin.PutApp(app_request(APP_B, daily_cap=50)),
        lambda: a.admin.GetApp(admin_pb2.GetAppRequest(app_id=APP_B)),
        lambda: a.admin.GetCampaign(
            admin_pb2.GetCampaignRequest(app_id=APP_B, campaign_id=CAMPAIGN)
        ),
        lambda: a.admin.ListCampaigns(admin_pb2.ListCampaignsRequest(app_id=APP_B)),
    ]
    for attempt in attempts:
        assert (await refused(attempt())).code() == PERMISSION_DENIED

    # Naming app A with B's campaign id: A has no such campaign, and B's is not shown.
    for attempt in (
        lambda: a.admin.GetCampaign(
            admin_pb2.GetCampaignRequest(app_id=APP_A, campaign_id=B_ONLY_CAMPAIGN)
        ),
        lambda: a.reports.GetArmReport(
            report_pb2.GetArmReportRequest(app_id=APP_A, campaign_id=B_ONLY_CAMPAIGN)
        ),
    ):
        assert (await refused(attempt())).code() == NOT_FOUND
    listed = await a.admin.ListCampaigns(admin_pb2.ListCampaignsRequest(app_id=APP_A))
    assert [(c.app_id, c.campaign_id) for c in listed.campaigns] == [(APP_A, CAMPAIGN)]
    # Writing a campaign with B's id into A makes A's own, beside B's.
    made = await a.admin.PutCampaign(campaign_request(APP_A, B_ONLY_CAMPAIGN, ("mine",)))
    assert made.campaign.app_id == APP_A

    world.assert_unchanged(before, await world.state())
    b_campaign = await world.b.admin.GetCampaign(
        admin_pb2.GetCampaignRequest(app_id=APP_B, campaign_id=CAMPAIGN)
    )
    assert [arm.arm_id for arm in b_campaign.campaign.arms] == ["short", "long"]
    b_app = await world.b.admin.GetApp(admin_pb2.GetAppRequest(app_id=APP_B))
    assert b_app.app.policy.daily_cap == DAILY_CAP


# --- outcomes on B's decisions ----------------------------------------------------------------


async def test_a_cannot_report_an_outcome_on_b_decision(world: World) -> None:
    a, decision_id = world.a, world.b_decision_id
    before = await world.state()
    kinds = (
        decision_pb2.OUTCOME_TYPE_TAP,
        decision_pb2.OUTCOME_TYPE_DISMISS,
        decision_pb2.OUTCOME_TYPE_CONVERSION,
    )
    for kind in kinds:
        named_b = outcome_request(APP_B, SHARED_USER, decision_id, kind)
        assert (await refused(a.decisions.ReportOutcome(named_b))).code() == (PERMISSION_DENIED)
        named_a = outcome_request(APP_A, SHARED_USER, decision_id, kind)
        assert (await refused(a.decisions.ReportOutcome(named_a))).code() == NOT_FOUND

    after = await world.state()
    world.assert_unchanged(before, after)
    assert (await rows_of(world.server.dsn, APP_A))["outcomes"] == []

    # The decision was live: B's own dismissal counts, and the picture shows it (backoff,
    # arm statistics and the outcome row all live in what is compared).
    dismissed = await world.b.decisions.ReportOutcome(
        outcome_request(APP_B, SHARED_USER, decision_id, decision_pb2.OUTCOME_TYPE_DISMISS)
    )
    assert dismissed.recorded
    later = await world.state()
    assert later.rows["outcomes"] != after.rows["outcomes"]
    state_key = keys.user_state(keys.user_tag(APP_B, SHARED_USER)).encode()
    assert later.redis[state_key] != after.redis[state_key]


def twin_of(app_id: str) -> str:
    """An app id whose decision ids carry the same app fingerprint as `app_id`'s."""
    sample = new_decision_id(app_id, "anyone", DAY)
    for n in range(1_000_000):
        candidate = f"tenant-twin-{n}"
        if owner_of(sample, candidate, "anyone") is not Owner.OTHER_APP:
            return candidate
    raise AssertionError("no twin found")


def probe_user(decision_id: str, app_id: str) -> str:
    """A user id of `app_id` that the fingerprints of `decision_id` (another app's) fit."""
    for n in range(10_000_000):
        user = f"probe-{n}"
        if owner_of(decision_id, app_id, user) is Owner.MAYBE_THIS_USER:
            return user
    raise AssertionError("no probe user found")


async def test_an_outcome_on_another_apps_decision_fails_even_when_the_fingerprints_match(
    server: ServerProcess, redis_client: aioredis.Redis
) -> None:
    # The fingerprints in decision ids are two bytes: among many apps some pairs share one, and
    # a caller can pick a user id that matches the rest. Past that check, the Redis record and
    # the log lookup must still be A's alone.
    twin = twin_of(APP_A)
    async with world_of(server, redis_client, other=twin) as world:
        decision_id = world.b_decision_id
        probe = probe_user(decision_id, APP_A)
        # A forged id: the same fingerprints and issue time, other random bits.
        raw = bytearray(uuid.UUID(decision_id).bytes)
        raw[4] ^= 0xFF
        forged = str(uuid.UUID(bytes=bytes(raw)))
        before = await world.state()
        for kind in (decision_pb2.OUTCOME_TYPE_TAP, decision_pb2.OUTCOME_TYPE_DISMISS):
            real = await refused(
                world.a.decisions.ReportOutcome(outcome_request(APP_A, probe, decision_id, kind))
            )
            fake = await refused(
                world.a.decisions.ReportOutcome(outcome_request(APP_A, probe, forged, kind))
            )
            # Unknown to A (NOT_FOUND, or UNAVAILABLE: "not in the log yet", as for any id
            # issued moments ago), exactly as for an id that never existed.
            assert real.code() in (NOT_FOUND, grpc.StatusCode.UNAVAILABLE)
            assert (fake.code(), fake.details()) == (
                real.code(),
                real.details().replace(decision_id, forged),
            )
        world.assert_unchanged(before, await world.state(), a_users=(SHARED_USER, probe))
        assert (await rows_of(server.dsn, APP_A))["outcomes"] == []


# --- devices and keys -------------------------------------------------------------------------


async def test_a_cannot_touch_b_devices_or_keys(world: World) -> None:
    a = world.a
    before = await world.state()

    # Naming app B.
    for attempt in (
        lambda: a.devices.RegisterDevice(device_request(APP_B)),
        lambda: a.devices.ListDevices(
            devices_pb2.ListDevicesRequest(app_id=APP_B, user_id=SHARED_USER, include_inactive=True)
        ),
        lambda: a.devices.UnregisterDevice(unregister_request(APP_B)),
        lambda: a.keys.CreateKey(
            keys_pb2.CreateKeyRequest(app_id=APP_B, scopes=[keys_pb2.SCOPE_ADMIN])
        ),
        lambda: a.keys.ListKeys(keys_pb2.ListKeysRequest(app_id=APP_B, include_revoked=True)),
        lambda: a.keys.RevokeKey(keys_pb2.RevokeKeyRequest(app_id=APP_B, key_id=world.b_key_id)),
    ):
        assert (await refused(attempt())).code() == PERMISSION_DENIED

    # Naming app A with B's user, token and key id: A's own (empty) world.
    listed = await a.devices.ListDevices(
        devices_pb2.ListDevicesRequest(app_id=APP_A, user_id=SHARED_USER, include_inactive=True)
    )
    assert list(listed.devices) == []
    gone = await a.devices.UnregisterDevice(unregister_request(APP_A))
    assert not gone.unregistered
    revoke = keys_pb2.RevokeKeyRequest(app_id=APP_A, key_id=world.b_key_id)
    assert (await refused(a.keys.RevokeKey(revoke))).code() == NOT_FOUND
    a_keys = await a.keys.ListKeys(keys_pb2.ListKeysRequest(app_id=APP_A, include_revoked=True))
    assert {k.app_id for k in a_keys.api_keys} == {APP_A}
    assert world.b_key_id not in {k.key_id for k in a_keys.api_keys}
    # The same token registered in A is A's own device, apart from B's.
    mine = await a.devices.RegisterDevice(device_request(APP_A))
    assert mine.created and mine.device.app_id == APP_A
    assert (await a.devices.UnregisterDevice(unregister_request(APP_A))).unregistered

    world.assert_unchanged(before, await world.state())
    # B's key made over KeyService still works, and B's device is still active.
    async with grpc.aio.insecure_channel(
        world.server.target, interceptors=bearer_interceptors(world.b_key)
    ) as channel:
        devices = await devices_pb2_grpc.DeviceServiceStub(channel).ListDevices(
            devices_pb2.ListDevicesRequest(app_id=APP_B, user_id=SHARED_USER)
        )
    assert [(d.app_id, d.token, d.status) for d in devices.devices] == [
        (APP_B, TOKEN_B, devices_pb2.DEVICE_STATUS_ACTIVE)
    ]


# --- one user id in two apps ------------------------------------------------------------------


async def test_a_user_id_that_both_apps_have_has_independent_throttle_state(world: World) -> None:
    a = world.a
    before = await world.state()
    # B's user got a prompt at 09:00 (with REQUEST_ID); A's same-named user gets A's whole cap
    # that day, and the same request id is a new request in A, not B's stored decision.
    first = await a.decisions.Decide(decide_request(APP_A, SHARED_USER, 9, REQUEST_ID))
    assert first.show and not first.replayed
    assert first.decision_id != world.b_decision_id and first.campaign_id == CAMPAIGN
    second = await a.decisions.Decide(decide_request(APP_A, SHARED_USER, 11))
    assert second.show
    capped = await a.decisions.Decide(decide_request(APP_A, SHARED_USER, 13))
    assert (capped.show, capped.reason) == (False, decision_pb2.REASON_DAILY_CAP)
    # A's campaign has B's campaign's id and arm ids: A's tap is learned by A's arms alone.
    tap = outcome_request(APP_A, SHARED_USER, first.decision_id, decision_pb2.OUTCOME_TYPE_TAP)
    assert (await a.decisions.ReportOutcome(tap)).rewarded

    async def a_logged() -> bool:
        return len((await rows_of(world.server.dsn, APP_A))["decisions"]) == 3

    await eventually(a_logged, "A's decisions in PostgreSQL")
    a_report = await report_of(a.reports, APP_A, CAMPAIGN)
    assert a_report[0] == 2 and sum(arm[3] for arm in a_report[1]) == 1  # shown, taps

    # Erasing A's user erases A's alone; B may not be asked to erase.
    erase_b = admin_pb2.DeleteUserRequest(app_id=APP_B, user_id=SHARED_USER)
    assert (await refused(a.admin.DeleteUser(erase_b))).code() == PERMISSION_DENIED
    erased = await a.admin.DeleteUser(
        admin_pb2.DeleteUserRequest(app_id=APP_A, user_id=SHARED_USER)
    )
    assert erased.redis_keys_deleted > 0 and erased.decisions_pseudonymised == 3

    # B's counters, arm statistics and report are untouched...
    world.assert_unchanged(before, await world.state())
    # ...and B's user still has the rest of B's cap.
    granted = await world.b.decisions.Decide(decide_request(APP_B, SHARED_USER, 13))
    assert granted.show and granted.campaign_id == CAMPAIGN


# --- scopes and errors ------------------------------------------------------------------------


async def test_a_key_without_the_scope_is_refused(world: World) -> None:
    server = world.server
    own_report = report_pb2.GetArmReportRequest(app_id=APP_A, campaign_id=CAMPAIGN)
    b_report = report_pb2.GetArmReportRequest(app_id=APP_B, campaign_id=CAMPAIGN)
    own_campaign = admin_pb2.GetCampaignRequest(app_id=APP_A, campaign_id=CAMPAIGN)
    before = await world.state()
    async with (
        server.channel(APP_A, scopes=("decide",)) as decide_only,
        server.channel(APP_A, scopes=("report",)) as report_only,
        server.channel(APP_A, scopes=("admin",)) as admin_only,
    ):
        decide, report, admin = Stubs.on(decide_only), Stubs.on(report_only), Stubs.on(admin_only)
        denied: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("report", lambda: decide.reports.GetArmReport(own_report)),
            ("admin", lambda: decide.admin.GetCampaign(own_campaign)),
            ("admin", lambda: decide.admin.PutApp(app_request(APP_A, daily_cap=9))),
            ("admin", lambda: decide.keys.ListKeys(keys_pb2.ListKeysRequest(app_id=APP_A))),
            ("decide", lambda: report.decisions.Decide(decide_request(APP_A, "u", 9))),
            (
                "decide",
                lambda: report.devices.ListDevices(
                    devices_pb2.ListDevicesRequest(app_id=APP_A, user_id="u")
                ),
            ),
            ("admin", lambda: report.admin.PutCampaign(campaign_request(APP_A, "new"))),
            ("decide", lambda: admin.decisions.Decide(decide_request(APP_A, "u", 9))),
            ("report", lambda: admin.reports.GetArmReport(own_report)),
        ]
        for scope, attempt in denied:
            error = await refused(attempt())
            assert (error.code(), error.details()) == (
                PERMISSION_DENIED,
                f"this API key lacks the {scope!r} scope",
            )
        # Another app's report with a key lacking the scope: the same answer, nothing of B's.
        error = await refused(decide.reports.GetArmReport(b_report))
        assert error.details() == "this API key lacks the 'report' scope"

        # Each key does what its scope allows.
        assert (await decide.decisions.Decide(decide_request(APP_A, "u", 9))).show
        assert (await report.reports.GetArmReport(own_report)).report.campaign_id == CAMPAIGN
        assert (await admin.admin.GetCampaign(own_campaign)).campaign.campaign_id == CAMPAIGN
    world.assert_unchanged(before, await world.state(), a_users=("u",))


async def test_an_empty_app_id_is_refused_never_read_as_any_app(world: World) -> None:
    a = world.a
    before = await world.state()
    attempts: list[Callable[[], Awaitable[Any]]] = [
        lambda: a.decisions.Decide(decide_request("", SHARED_USER, 9)),
        lambda: a.decisions.ReportOutcome(
            outcome_request("", SHARED_USER, world.b_decision_id, decision_pb2.OUTCOME_TYPE_TAP)
        ),
        lambda: a.devices.RegisterDevice(device_request("")),
        lambda: a.devices.UnregisterDevice(unregister_request("")),
        lambda: a.devices.ListDevices(devices_pb2.ListDevicesRequest(user_id=SHARED_USER)),
        lambda: a.reports.GetArmReport(report_pb2.GetArmReportRequest(campaign_id=CAMPAIGN)),
        lambda: a.admin.PutApp(admin_pb2.PutAppRequest()),
        lambda: a.admin.GetApp(admin_pb2.GetAppRequest()),
        lambda: a.admin.PutCampaign(campaign_request("", CAMPAIGN)),
        lambda: a.admin.GetCampaign(admin_pb2.GetCampaignRequest(campaign_id=CAMPAIGN)),
        lambda: a.admin.ListCampaigns(admin_pb2.ListCampaignsRequest()),
        lambda: a.keys.CreateKey(keys_pb2.CreateKeyRequest(scopes=[keys_pb2.SCOPE_ADMIN])),
        lambda: a.keys.ListKeys(keys_pb2.ListKeysRequest()),
        lambda: a.admin.DeleteUser(admin_pb2.DeleteUserRequest(user_id=SHARED_USER)),
        lambda: a.keys.RevokeKey(keys_pb2.RevokeKeyRequest(key_id=world.b_key_id)),
    ]
    for attempt in attempts:
        error = await refused(attempt())
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert "app_id" in error.details()
    world.assert_unchanged(before, await world.state())


async def test_errors_never_tell_whether_another_app_or_its_things_exist(world: World) -> None:
    """The answer about B's things reads like the answer about things that never existed:
    only the name the caller sent differs."""
    a = world.a

    async def answer(call: Callable[[], Awaitable[Any]], name: str) -> tuple[Any, str]:
        error = await refused(call())
        return error.code(), error.details().replace(name, "<name>")

    # Another app, B or one that does not exist: PERMISSION_DENIED alike.
    def naming(app_id: str) -> list[Callable[[], Awaitable[Any]]]:
        return [
            lambda: a.admin.GetApp(admin_pb2.GetAppRequest(app_id=app_id)),
            lambda: a.admin.GetCampaign(
                admin_pb2.GetCampaignRequest(app_id=app_id, campaign_id=CAMPAIGN)
            ),
            lambda: a.admin.PutCampaign(campaign_request(app_id, CAMPAIGN)),
            lambda: a.reports.GetArmReport(
                report_pb2.GetArmReportRequest(app_id=app_id, campaign_id=CAMPAIGN)
            ),
            lambda: a.decisions.ReportOutcome(
                outcome_request(
                    app_id, SHARED_USER, world.b_decision_id, decision_pb2.OUTCOME_TYPE_TAP
                )
            ),
            lambda: a.devices.ListDevices(
                devices_pb2.ListDevicesRequest(app_id=app_id, user_id=SHARED_USER)
            ),
            lambda: a.keys.ListKeys(keys_pb2.ListKeysRequest(app_id=app_id)),
            lambda: a.admin.DeleteUser(
                admin_pb2.DeleteUserRequest(app_id=app_id, user_id=SHARED_USER)
            ),
        ]

    for of_b, of_nobody in zip(naming(APP_B), naming(NO_SUCH_APP), strict=True):
        b_answer = await answer(of_b, APP_B)
        assert b_answer[0] == PERMISSION_DENIED
        assert b_answer == await answer(of_nobody, NO_SUCH_APP)
    # B's campaign, or one B does not have, asked with app B: the same words exactly.
    assert await answer(
        lambda: a.admin.GetCampaign(
            admin_pb2.GetCampaignRequest(app_id=APP_B, campaign_id=B_ONLY_CAMPAIGN)
        ),
        B_ONLY_CAMPAIGN,
    ) == await answer(
        lambda: a.admin.GetCampaign(
            admin_pb2.GetCampaignRequest(app_id=APP_B, campaign_id="never-made")
        ),
        "never-made",
    )

    # A's own app with B's campaign, decision or key: NOT_FOUND, as for ones never made.
    never_decided = new_decision_id(NO_SUCH_APP, SHARED_USER, dt.datetime.now(dt.UTC))
    pairs: list[tuple[Callable[[str], Callable[[], Awaitable[Any]]], str, str]] = [
        (
            lambda name: (
                lambda: a.admin.GetCampaign(
                    admin_pb2.GetCampaignRequest(app_id=APP_A, campaign_id=name)
                )
            ),
            B_ONLY_CAMPAIGN,
            "never-made",
        ),
        (
            lambda name: (
                lambda: a.reports.GetArmReport(
                    report_pb2.GetArmReportRequest(app_id=APP_A, campaign_id=name)
                )
            ),
            B_ONLY_CAMPAIGN,
            "never-made",
        ),
        (
            lambda name: (
                lambda: a.decisions.ReportOutcome(
                    outcome_request(APP_A, SHARED_USER, name, decision_pb2.OUTCOME_TYPE_TAP)
                )
            ),
            world.b_decision_id,
            never_decided,
        ),
        (
            lambda name: (
                lambda: a.keys.RevokeKey(keys_pb2.RevokeKeyRequest(app_id=APP_A, key_id=name))
            ),
            world.b_key_id,
            "0123456789abcdef",
        ),
    ]
    for call, of_b, of_nobody in pairs:
        b_answer = await answer(call(of_b), of_b)
        assert b_answer[0] == NOT_FOUND
        assert b_answer == await answer(call(of_nobody), of_nobody)


# --- the interceptor's table ------------------------------------------------------------------


def app_fields(message: Any, prefix: str = "", depth: int = 2) -> set[str]:
    """Dotted paths of the `app_id` fields of a request type (and of its message fields)."""
    found = set()
    for field in message.fields:
        if field.name == "app_id":
            found.add(prefix + field.name)
        elif field.message_type is not None and depth > 1:
            found |= app_fields(field.message_type, f"{prefix}{field.name}.", depth - 1)
    return found


def test_every_rpc_that_names_an_app_is_checked_against_the_key() -> None:
    """An RPC missing from RULES runs for any valid key, whatever its app or scopes; one whose
    rule names no app field serves any app. Both would be holes, so every RPC of the API has a
    scope, and its rule names exactly the request's app field."""
    files = (admin_pb2, decision_pb2, devices_pb2, keys_pb2, report_pb2, status_pb2)
    checked = 0
    for module in files:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                path = f"/{service.full_name}/{method.name}"
                assert path in RULES, f"{path} has no rule"
                rule = RULES[path]
                assert rule.scope is not None, path
                assert {rule.app_field} - {""} == app_fields(method.input_type), path
                checked += 1
    assert checked == len(RULES)
