"""The worker and the real FCM client (httpx, OAuth2 with a service account) against the fake
FCM and its token endpoint."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from fakes.fcm import Reply
from fakes.harness import (
    ANDROID_TOKEN,
    Providers,
    add_app,
    add_device,
    add_job,
    deliveries,
    in_process_worker,
    job_row,
    providers,
)
from nudge_server.delivery.payload import ELLIPSIS, FCM_MAX_BYTES
from nudge_server.devices import DeviceStatus, DeviceStore
from nudge_server.model import Platform

OTHER_TOKEN = "fcm-other-" + "y" * 140


@pytest.fixture
async def fakes(tmp_path: Path, pg_pool: asyncpg.Pool) -> AsyncIterator[Providers]:
    async with providers(tmp_path) as started:
        await add_app(pg_pool)
        yield started


async def test_a_push_is_sent_once_with_a_cached_access_token(
    pg_pool: asyncpg.Pool, fakes: Providers
) -> None:
    await add_device(pg_pool, "u", Platform.ANDROID, ANDROID_TOKEN)
    jobs = [await add_job(pg_pool, "u", data={"quiz": "7"}) for _ in range(3)]
    async with in_process_worker(pg_pool, fakes) as worker:
        assert await worker.run_once() == 3
    assert fakes.fcm.token_requests == 1  # one exchange, cached for the other sends
    assert len(fakes.fcm.delivered(ANDROID_TOKEN)) == 3
    message = fakes.fcm.sends[0].message
    assert message["notification"]["title"] == "Nice!"
    assert message["data"]["quiz"] == "7"
    assert message["data"]["decision_id"] in {str(j) for j in jobs}
    for job in jobs:
        row = (await deliveries(pg_pool, job))["android"]
        assert row["status"] == "sent" and row["provider_id"].startswith("projects/nudge-test/")


async def test_the_access_token_is_refreshed_before_it_expires_and_after_a_401(
    pg_pool: asyncpg.Pool, fakes: Providers
) -> None:
    fakes.fcm.token_lifetime_s = 900  # the refresh margin is 300 s
    await add_device(pg_pool, "u", Platform.ANDROID, ANDROID_TOKEN)
    async with in_process_worker(pg_pool, fakes) as worker:
        await add_job(pg_pool, "u")
        await worker.run_once()
        fakes.clock.advance(500)  # 400 s left: still used
        await add_job(pg_pool, "u")
        await worker.run_once()
        assert fakes.fcm.token_requests == 1
        fakes.clock.advance(101)  # 299 s left: refreshed before it runs out
        await add_job(pg_pool, "u")
        await worker.run_once()
        assert fakes.fcm.token_requests == 2
        fakes.fcm.expire_access_tokens()  # revoked: FCM answers 401
        revoked = await add_job(pg_pool, "u")
        await worker.run_once()
        assert fakes.fcm.token_requests == 3
        assert (await deliveries(pg_pool, revoked))["android"]["status"] == "sent"
    assert [s.status for s in fakes.fcm.sends] == [200, 200, 200, 401, 200]
    assert fakes.fcm.rejected_assertions == []


async def test_unregistered_retires_the_token_and_it_is_never_used_again(
    pg_pool: asyncpg.Pool, fakes: Providers
) -> None:
    device = await add_device(pg_pool, "u", Platform.ANDROID, ANDROID_TOKEN)
    fakes.fcm.script(ANDROID_TOKEN, Reply(404, "NOT_FOUND", ("UNREGISTERED",)))
    first = await add_job(pg_pool, "u")
    async with in_process_worker(pg_pool, fakes) as worker:
        await worker.run_once()
        await add_job(pg_pool, "u")
        await worker.run_once()
    assert (await deliveries(pg_pool, first))["android"]["status"] == "token_retired"
    stored = await DeviceStore(pg_pool).get(device)
    assert stored is not None and stored.status is DeviceStatus.RETIRED
    assert "UNREGISTERED" in stored.status_reason
    assert len(fakes.fcm.for_token(ANDROID_TOKEN)) == 1


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (Reply(404, "NOT_FOUND"), "dead_lettered"),  # a bare 404: a wrong project, not the token
        (Reply(400, "INVALID_ARGUMENT", ("INVALID_ARGUMENT",), "bad data key"), "failed"),
    ],
)
async def test_a_bare_404_or_invalid_argument_does_not_retire_the_token(
    pg_pool: asyncpg.Pool, fakes: Providers, reply: Reply, expected: str
) -> None:
    device = await add_device(pg_pool, "u", Platform.ANDROID, ANDROID_TOKEN)
    fakes.fcm.script(ANDROID_TOKEN, reply)
    job = await add_job(pg_pool, "u")
    async with in_process_worker(pg_pool, fakes) as worker:
        await worker.run_once()
    assert (await deliveries(pg_pool, job))["android"]["status"] == expected
    stored = await DeviceStore(pg_pool).get(device)
    assert stored is not None and stored.status is DeviceStatus.ACTIVE


async def test_429_with_retry_after_then_503_then_success(
    pg_pool: asyncpg.Pool, fakes: Providers
) -> None:
    await add_device(pg_pool, "u", Platform.ANDROID, ANDROID_TOKEN)
    fakes.fcm.script(
        ANDROID_TOKEN,
        Reply(429, "RESOURCE_EXHAUSTED", ("QUOTA_EXCEEDED",), headers=(("Retry-After", "45"),)),
        Reply(503, "UNAVAILABLE"),
    )
    job = await add_job(pg_pool, "u")
    async with in_process_worker(pg_pool, fakes) as worker:
        before = fakes.clock.utc()
        await worker.run_once()
        row = (await deliveries(pg_pool, job))["android"]
        assert row["status"] == "retrying"
        assert (row["run_after"] - before).total_seconds() >= 45
        fakes.clock.advance(30)
        assert await worker.run_once() == 0
        fakes.clock.advance(16)
        await worker.run_once()
        fakes.clock.advance(2)
        await worker.run_once()
    assert [s.status for s in fakes.fcm.sends] == [429, 503, 200]
    assert (await deliveries(pg_pool, job))["android"]["status"] == "sent"


async def test_a_token_endpoint_that_fails_delays_the_send_without_sending(
    pg_pool: asyncpg.Pool, fakes: Providers
) -> None:
    await add_device(pg_pool, "u", Platform.ANDROID, ANDROID_TOKEN)
    fakes.fcm.token_replies.extend([500])
    job = await add_job(pg_pool, "u")
    async with in_process_worker(pg_pool, fakes) as worker:
        await worker.run_once()
        assert (await deliveries(pg_pool, job))["android"]["status"] == "retrying"
        assert fakes.fcm.sends == []
        fakes.clock.advance(2)
        await worker.run_once()
    assert (await deliveries(pg_pool, job))["android"]["status"] == "sent"


async def test_an_fcm_that_never_answers_is_unknown_within_the_timeout(
    pg_pool: asyncpg.Pool, fakes: Providers
) -> None:
    await add_device(pg_pool, "u", Platform.ANDROID, ANDROID_TOKEN)
    await add_device(pg_pool, "v", Platform.ANDROID, OTHER_TOKEN)
    fakes.fcm.script(ANDROID_TOKEN, Reply(hang=True))
    hung, fine = await add_job(pg_pool, "u"), await add_job(pg_pool, "v")
    async with in_process_worker(pg_pool, fakes, send_timeout_s=1.0) as worker:
        started = time.monotonic()
        await worker.run_once()
        assert time.monotonic() - started < 5
        fakes.clock.advance(60)
        await worker.run_once()
    assert (await deliveries(pg_pool, hung))["android"]["status"] == "unknown"
    assert (await job_row(pg_pool, hung))["status"] == "unknown"
    assert (await deliveries(pg_pool, fine))["android"]["status"] == "sent"
    assert len(fakes.fcm.for_token(ANDROID_TOKEN)) == 1


async def test_fcm_text_over_the_limit_is_shortened(
    pg_pool: asyncpg.Pool, fakes: Providers
) -> None:
    await add_device(pg_pool, "u", Platform.ANDROID, ANDROID_TOKEN)
    body = "Привет, бегун! 🏃 " * 400
    await add_job(pg_pool, "u", body=body)
    async with in_process_worker(pg_pool, fakes) as worker:
        await worker.run_once()
    [send] = fakes.fcm.sends
    assert send.status == 200  # the fake refuses more than 4096 bytes
    sent = send.message["notification"]["body"]
    assert sent.endswith(ELLIPSIS) and body.startswith(sent.removesuffix(ELLIPSIS))
    assert len(sent.encode()) < FCM_MAX_BYTES
