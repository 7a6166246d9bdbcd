"""Wiring for delivery tests: both fakes with their keys, settings and environment pointing the
real clients at them, a controllable clock, and rows for the worker to consume."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg
from nudge_server.config_store import ConfigStore
from nudge_server.delivery.apns import ApnsSender
from nudge_server.delivery.fcm import FcmSender
from nudge_server.delivery.jobs import JobStore
from nudge_server.delivery.settings import ApnsSettings, DeliverySettings, FcmSettings
from nudge_server.delivery.worker import Worker
from nudge_server.devices import AppEnvironment, DeviceStore, registration
from nudge_server.model import (
    App,
    Arm,
    Campaign,
    Channel,
    Platform,
    Prompt,
    QuietHoursPolicy,
    ThrottlePolicy,
)

from .apns import FakeApns
from .fcm import FakeFcm
from .keys import Pki, make_apns_key, make_pki, make_service_account

KEY_ID = "ABC123DEFG"
TEAM_ID = "TEAM456789"
TOPIC = "dev.nudge.example"
PROJECT = "nudge-test"


class Clock:
    """A clock that runs with real time from an offset the test may move (`advance`)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds

    def utc(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self(), dt.UTC)


@dataclass
class Providers:
    """The two fakes (APNs production and sandbox share a key), their files and a clock."""

    pki: Pki
    apns: FakeApns
    apns_sandbox: FakeApns
    fcm: FakeFcm
    apns_key_file: Path
    fcm_credentials: Path
    clock: Clock

    def settings(self, **changes: Any) -> DeliverySettings:
        """Delivery settings that point the real clients at the fakes, with short timers."""
        base = DeliverySettings(
            apns=ApnsSettings(
                key_file=str(self.apns_key_file),
                key_id=KEY_ID,
                team_id=TEAM_ID,
                topic=TOPIC,
                production_url=self.apns.url,
                sandbox_url=self.apns_sandbox.url,
                ca_file=str(self.pki.ca_file),
            ),
            fcm=FcmSettings(
                credentials_file=str(self.fcm_credentials), url=self.fcm.url, project_id=PROJECT
            ),
            worker_id=f"test-{uuid.uuid4().hex[:6]}",
            poll_interval_s=0.05,
            lease_s=6.0,
            connect_timeout_s=1.0,
            send_timeout_s=2.0,
            backoff_base_s=0.2,
            backoff_max_s=1.0,
            shutdown_grace_s=3.0,
            health_listen="",
        )
        return replace(base, **changes)

    def env(self, **extra: str) -> dict[str, str]:
        """The same as environment variables, for a worker process."""
        return {
            "NUDGE_APNS_KEY_FILE": str(self.apns_key_file),
            "NUDGE_APNS_KEY_ID": KEY_ID,
            "NUDGE_APNS_TEAM_ID": TEAM_ID,
            "NUDGE_APNS_TOPIC": TOPIC,
            "NUDGE_APNS_PRODUCTION_URL": self.apns.url,
            "NUDGE_APNS_SANDBOX_URL": self.apns_sandbox.url,
            "NUDGE_APNS_CA_FILE": str(self.pki.ca_file),
            "NUDGE_FCM_CREDENTIALS_FILE": str(self.fcm_credentials),
            "NUDGE_FCM_URL": self.fcm.url,
            "NUDGE_WORKER_POLL_INTERVAL": "0.05",
            "NUDGE_WORKER_LEASE": "6",
            "NUDGE_PUSH_CONNECT_TIMEOUT": "1",
            "NUDGE_PUSH_SEND_TIMEOUT": "2",
            "NUDGE_PUSH_BACKOFF_BASE": "0.2",
            "NUDGE_PUSH_BACKOFF_MAX": "1",
            "NUDGE_WORKER_CONFIG_REFRESH": "0.5",
            **extra,
        }


@contextlib.asynccontextmanager
async def providers(directory: Path) -> AsyncIterator[Providers]:
    """Starts both fakes on loopback with fresh keys in `directory`."""
    clock = Clock()
    pki = make_pki(directory / "pki")
    apns_key_file = directory / "AuthKey_ABC123DEFG.p8"
    apns_public = make_apns_key(apns_key_file)
    credentials = directory / "service-account.json"
    async with contextlib.AsyncExitStack() as stack:
        fcm = FakeFcm(public_key=_placeholder(), project_id=PROJECT, clock=clock)
        await stack.enter_async_context(fcm)
        fcm._public_key = make_service_account(
            credentials, token_uri=fcm.token_uri, project_id=PROJECT
        )
        apns = await stack.enter_async_context(
            FakeApns(
                pki,
                public_key=apns_public,
                key_id=KEY_ID,
                team_id=TEAM_ID,
                topic=TOPIC,
                clock=clock,
            )
        )
        sandbox = await stack.enter_async_context(
            FakeApns(
                pki,
                public_key=apns_public,
                key_id=KEY_ID,
                team_id=TEAM_ID,
                topic=TOPIC,
                clock=clock,
            )
        )
        yield Providers(pki, apns, sandbox, fcm, apns_key_file, credentials, clock)


def _placeholder() -> Any:
    return None  # replaced once the fake's token URI (its port) is known


# --- rows ----------------------------------------------------------------------------------------

IOS_TOKEN = "a1" * 32
IOS_TOKEN_2 = "b2" * 32
ANDROID_TOKEN = "fcm-token-" + "x" * 140


async def add_app(
    pool: asyncpg.Pool,
    app_id: str = "shop",
    *,
    quiet: tuple[str, str] | None = None,
    campaigns: Mapping[str, QuietHoursPolicy] | None = None,
) -> None:
    """An app (quiet hours off unless given) and push campaigns (default: 'streak', defer)."""
    start, end = (
        (dt.time.fromisoformat(quiet[0]), dt.time.fromisoformat(quiet[1]))
        if quiet
        else (
            dt.time(0),
            dt.time(0),
        )
    )
    store = ConfigStore(pool)
    await store.put_app(App(app_id, policy=ThrottlePolicy(quiet_start=start, quiet_end=end)))
    for campaign_id, policy in (campaigns or {"streak": QuietHoursPolicy.DEFER}).items():
        await store.put_campaign(
            Campaign(
                app_id=app_id,
                campaign_id=campaign_id,
                arms=(Arm("a", Prompt(title="Nice!")),),
                trigger_events=frozenset({"workout_finished"}),
                channel=Channel.PUSH,
                quiet_hours_policy=policy,
            )
        )


async def add_device(
    pool: asyncpg.Pool,
    user_id: str,
    platform: Platform,
    token: str,
    environment: AppEnvironment = AppEnvironment.PRODUCTION,
    app_id: str = "shop",
) -> uuid.UUID:
    device, _ = await DeviceStore(pool).register(
        registration(
            app=app_id, user=user_id, platform=platform, token=token, environment=environment
        )
    )
    return device.device_id


async def add_job(
    pool: asyncpg.Pool,
    user_id: str,
    *,
    app_id: str = "shop",
    campaign_id: str = "streak",
    deliver_at: dt.datetime | None = None,
    expires_in: dt.timedelta = dt.timedelta(hours=24),
    time_zone: str = "Europe/Berlin",
    title: str = "Nice!",
    body: str = "You finished a workout.",
    data: Mapping[str, str] | None = None,
) -> uuid.UUID:
    """A push job as the server writes it (with its decision row), due at `deliver_at`."""
    job_id = uuid.uuid4()
    at = deliver_at or dt.datetime.now(dt.UTC)
    payload = {
        "title": title,
        "body": body,
        "action_url": "app://streak",
        "data": dict(data or {"k": "v"}),
        "locale": "de-DE",
        "decision_id": str(job_id),
    }
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO decisions (decision_id, app_id, user_id, decided_at, received_at,
                   event_name, requested_channel, time_zone, show, reason, campaign_id, arm_id,
                   channel, deliver_at, response_deadline)
               VALUES ($1, $2, $3, $4::timestamptz, $4, 'workout_finished', 'push', $5, true, 'ok', $6,
                       'a', 'push', $4, $4::timestamptz + interval '24 hours')""",
            job_id,
            app_id,
            user_id,
            at,
            time_zone,
            campaign_id,
        )
        await conn.execute(
            """INSERT INTO push_jobs (job_id, app_id, user_id, campaign_id, arm_id, payload,
                   deliver_at, expires_at, time_zone)
               VALUES ($1, $2, $3, $4, 'a', $5::jsonb, $6, $7, $8)""",
            job_id,
            app_id,
            user_id,
            campaign_id,
            json.dumps(payload),
            at,
            at + expires_in,
            time_zone,
        )
    return job_id


async def deliveries(pool: asyncpg.Pool, job_id: uuid.UUID) -> dict[str, dict[str, Any]]:
    """The job's deliveries by platform ('ios', 'android'; a second of one platform gets a
    numbered key)."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            """SELECT d.platform, d.token, p.* FROM push_deliveries p JOIN devices d USING (device_id)
               WHERE p.job_id = $1 ORDER BY d.platform, d.token""",
            job_id,
        )
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = row["platform"]
        n = 2
        while key in out:
            key = f"{row['platform']}{n}"
            n += 1
        out[key] = dict(row)
    return out


async def job_row(pool: asyncpg.Pool, job_id: uuid.UUID) -> dict[str, Any]:
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM push_jobs WHERE job_id = $1", job_id)
    assert row is not None
    return dict(row)


async def events(pool: asyncpg.Pool, job_id: uuid.UUID) -> list[tuple[str | None, str]]:
    """(platform or None for job events, status) of the job's events, in order."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            """SELECT d.platform, e.status FROM push_delivery_events e
               LEFT JOIN devices d USING (device_id) WHERE e.job_id = $1 ORDER BY e.event_id""",
            job_id,
        )
    return [(r["platform"], r["status"]) for r in rows]


@contextlib.asynccontextmanager
async def in_process_worker(
    pool: asyncpg.Pool, fakes: Providers, **changes: Any
) -> AsyncIterator[Worker]:
    """A Worker with the real senders pointed at the fakes, on the fakes' clock, with the
    configuration as stored now."""
    settings = fakes.settings(**changes)
    timeouts = {
        "connect_timeout_s": settings.connect_timeout_s,
        "send_timeout_s": settings.send_timeout_s,
    }
    async with (
        ApnsSender(settings.apns, clock=fakes.clock, **timeouts) as apns,  # type: ignore[arg-type]
        FcmSender(settings.fcm, clock=fakes.clock, **timeouts) as fcm,  # type: ignore[arg-type]
    ):
        snapshot = await ConfigStore(pool).load_snapshot()
        yield Worker(
            JobStore(pool, settings.worker_id),
            settings,
            lambda: snapshot,
            {Platform.IOS: apns, Platform.ANDROID: fcm},
            clock=fakes.clock.utc,
        )
