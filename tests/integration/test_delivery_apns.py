"""The worker and the real APNs client (aioapns) against the fake APNs over HTTP/2 and TLS."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from fakes.apns import Reply, SilentServer
from fakes.harness import (
    IOS_TOKEN,
    IOS_TOKEN_2,
    Providers,
    add_app,
    add_device,
    add_job,
    deliveries,
    events,
    in_process_worker,
    job_row,
    providers,
)
from nudge_server.delivery.payload import APNS_MAX_BYTES, ELLIPSIS
from nudge_server.devices import AppEnvironment, DeviceStatus, DeviceStore
from nudge_server.model import Platform


@pytest.fixture
async def fakes(tmp_path: Path, pg_pool: asyncpg.Pool) -> AsyncIterator[Providers]:
    async with providers(tmp_path) as started:
        await add_app(pg_pool)
        yield started


async def test_a_push_reaches_each_device_once_on_its_environments_endpoint(
    pg_pool: asyncpg.Pool, fakes: Providers
) -> None:
    await add_device(pg_pool, "u", Platform.IOS, IOS_TOKEN)
    await add_device(pg_pool, "u", Platform.IOS, IOS_TOKEN_2, AppEnvironment.SANDBOX)
    job = await add_job(pg_pool, "u", title="Nice!", body="You ran 5 km.")
    async with in_process_worker(pg_pool, fakes) as worker:
        assert await worker.run_once() == 1
        assert await worker.run_once() == 0  # nothing left
    [production] = fakes.apns.requests
    [sandbox] = fakes.apns_sandbox.requests
    assert (production.token, production.status) == (IOS_TOKEN, 200)
    assert (sandbox.token, sandbox.status) == (IOS_TOKEN_2, 200)
    # What APNs checks passed (else the fake would not answer 200); what we promise, too:
    assert production.claims is not None and production.claims["iss"] == "TEAM456789"
    assert production.headers["apns-topic"] == "dev.nudge.example"
    assert production.headers["apns-push-type"] == "alert"
    assert production.headers["apns-collapse-id"] == str(job)
    assert production.payload["aps"]["alert"] == {"title": "Nice!", "body": "You ran 5 km."}
    assert production.payload["decision_id"] == str(job)
    rows = await deliveries(pg_pool, job)
    assert {k: (r["status"], r["attempts"]) for k, r in rows.items()} == {
        "ios": ("sent", 1),
        "ios2": ("sent", 1),
    }
    assert (await job_row(pg_pool, job))["status"] == "sent"
    assert (None, "sent") in await events(pg_pool, job)


@pytest.mark.parametrize(("status", "reason"), [(410, "Unregistered"), (400, "BadDeviceToken")])
async def test_a_token_apns_reports_gone_is_retired_and_never_used_again(
    pg_pool: asyncpg.Pool, fakes: Providers, status: int, reason: str
) -> None:
    device = await add_device(pg_pool, "u", Platform.IOS, IOS_TOKEN)
    fakes.apns.script(IOS_TOKEN, Reply(status, reason))
    first = await add_job(pg_pool, "u")
    async with in_process_worker(pg_pool, fakes) as worker:
        await worker.run_once()
        assert (await deliveries(pg_pool, first))["ios"]["status"] == "token_retired"
        assert (await job_row(pg_pool, first))["status"] == "failed"
        retired = await DeviceStore(pg_pool).get(device)
        assert retired is not None and retired.status is DeviceStatus.RETIRED
        assert reason in retired.status_reason
        second = await add_job(pg_pool, "u")
        await worker.run_once()
    assert len(fakes.apns.for_token(IOS_TOKEN)) == 1
    assert (await job_row(pg_pool, second))["status"] == "failed"
    assert (await job_row(pg_pool, second))["last_error"] == "the user has no active device"


async def test_a_bare_404_or_a_bad_payload_does_not_retire_the_token(
    pg_pool: asyncpg.Pool, fakes: Providers
) -> None:
    device = await add_device(pg_pool, "u", Platform.IOS, IOS_TOKEN)
    fakes.apns.script(IOS_TOKEN, Reply(404, "BadPath"), Reply(400, "PayloadEmpty"))
    first, second = await add_job(pg_pool, "u"), await add_job(pg_pool, "u")
    async with in_process_worker(pg_pool, fakes) as worker:
        await worker.run_once()
    statuses = {(await deliveries(pg_pool, job))["ios"]["status"] for job in (first, second)}
    assert statuses == {"dead_lettered", "failed"}
    stored = await DeviceStore(pg_pool).get(device)
    assert stored is not None and stored.status is DeviceStatus.ACTIVE


async def test_429_waits_at_least_its_retry_after(pg_pool: asyncpg.Pool, fakes: Providers) -> None:
    await add_device(pg_pool, "u", Platform.IOS, IOS_TOKEN)
    fakes.apns.script(IOS_TOKEN, Reply(429, "TooManyRequests", headers=(("retry-after", "30"),)))
    job = await add_job(pg_pool, "u")
    async with in_process_worker(pg_pool, fakes) as worker:
        before = fakes.clock.utc()
        await worker.run_once()
        row = (await deliveries(pg_pool, job))["ios"]
        assert row["status"] == "retrying"
        assert (row["run_after"] - before).total_seconds() >= 30
        fakes.clock.advance(20)
        assert await worker.run_once() == 0  # not yet
        fakes.clock.advance(11)
        assert await worker.run_once() == 1
    assert (await deliveries(pg_pool, job))["ios"]["status"] == "sent"
    assert [r.status for r in fakes.apns.requests] == [429, 200]


async def test_500_then_success(pg_pool: asyncpg.Pool, fakes: Providers) -> None:
    await add_device(pg_pool, "u", Platform.IOS, IOS_TOKEN)
    fakes.apns.script(
        IOS_TOKEN, Reply(500, "InternalServerError"), Reply(503, "ServiceUnavailable")
    )
    job = await add_job(pg_pool, "u")
    async with in_process_worker(pg_pool, fakes) as worker:
        for _ in range(3):
            await worker.run_once()
            fakes.clock.advance(2)  # past the back-off (base 0.2 s, at most 1 s)
    row = (await deliveries(pg_pool, job))["ios"]
    assert (row["status"], row["attempts"]) == ("sent", 3)
    assert [r.status for r in fakes.apns.requests] == [500, 503, 200]
    assert len(fakes.apns.delivered()) == 1


async def test_transient_errors_end_in_the_dead_letter_list_then_replay(
    pg_pool: asyncpg.Pool, fakes: Providers
) -> None:
    from nudge_server.delivery.jobs import JobStore

    await add_device(pg_pool, "u", Platform.IOS, IOS_TOKEN)
    fakes.apns.script(IOS_TOKEN, *[Reply(503, "ServiceUnavailable")] * 3)
    job = await add_job(pg_pool, "u")
    async with in_process_worker(pg_pool, fakes, max_attempts=3) as worker:
        for _ in range(4):
            await worker.run_once()
            fakes.clock.advance(2)
        row = (await deliveries(pg_pool, job))["ios"]
        assert (row["status"], row["attempts"]) == ("dead_lettered", 3)
        assert (await job_row(pg_pool, job))["status"] == "dead_lettered"
        store = JobStore(pg_pool, "cli")
        [letter] = await store.dead_letters()
        assert letter["job_id"] == job and "503" in letter["error"]
        assert await store.replay(fakes.clock.utc(), job_id=job) == (1, 0)
        await worker.run_once()
    assert (await deliveries(pg_pool, job))["ios"]["status"] == "sent"
    assert len(fakes.apns.delivered()) == 1
    assert ("ios", "replayed") in await events(pg_pool, job)


async def test_a_provider_that_never_answers_does_not_stall_the_worker(
    pg_pool: asyncpg.Pool, fakes: Providers
) -> None:
    await add_device(pg_pool, "sleepy", Platform.IOS, IOS_TOKEN)
    await add_device(pg_pool, "awake", Platform.IOS, IOS_TOKEN_2)
    fakes.apns.script(IOS_TOKEN, Reply(hang=True))
    hung = await add_job(pg_pool, "sleepy")
    fine = await add_job(pg_pool, "awake")
    async with in_process_worker(pg_pool, fakes, send_timeout_s=1.0) as worker:
        started = time.monotonic()
        assert await worker.run_once() == 2
        assert time.monotonic() - started < 5
        # A request that got no answer may have been delivered: never sent again.
        assert (await deliveries(pg_pool, hung))["ios"]["status"] == "unknown"
        assert (await job_row(pg_pool, hung))["status"] == "unknown"
        assert (await deliveries(pg_pool, fine))["ios"]["status"] == "sent"
        fakes.clock.advance(60)
        third = await add_job(pg_pool, "awake")
        await worker.run_once()
        assert (await deliveries(pg_pool, third))["ios"]["status"] == "sent"
    assert len(fakes.apns.for_token(IOS_TOKEN)) == 1
    assert worker.counts["unknown"] == 1


async def test_an_endpoint_that_hangs_before_tls_is_retried_as_not_sent(
    pg_pool: asyncpg.Pool, fakes: Providers
) -> None:
    import dataclasses

    await add_device(pg_pool, "u", Platform.IOS, IOS_TOKEN)
    job = await add_job(pg_pool, "u")
    async with SilentServer() as silent:
        settings = fakes.settings()
        apns = dataclasses.replace(settings.apns, production_url=silent.url)
        async with in_process_worker(pg_pool, fakes, apns=apns) as worker:
            started = time.monotonic()
            await worker.run_once()
            assert time.monotonic() - started < 4
        assert silent.accepted >= 1
    row = (await deliveries(pg_pool, job))["ios"]
    assert row["status"] == "retrying" and "no connection" in row["error"]
    fakes.clock.advance(2)
    async with in_process_worker(pg_pool, fakes) as worker:
        await worker.run_once()
    assert (await deliveries(pg_pool, job))["ios"]["status"] == "sent"


async def test_goaway_refusing_a_stream_is_retried_on_a_new_connection(
    pg_pool: asyncpg.Pool, fakes: Providers
) -> None:
    await add_device(pg_pool, "u", Platform.IOS, IOS_TOKEN)
    await add_device(pg_pool, "v", Platform.IOS, IOS_TOKEN_2)
    first = await add_job(pg_pool, "u")
    async with in_process_worker(pg_pool, fakes) as worker:
        await worker.run_once()
        fakes.apns.script(IOS_TOKEN_2, Reply(goaway=True))
        second = await add_job(pg_pool, "v")
        await worker.run_once()
        # Refused by the GOAWAY, so surely not delivered: retried, on a new connection.
        assert (await deliveries(pg_pool, second))["ios"]["status"] == "retrying"
        fakes.clock.advance(2)
        await worker.run_once()
    assert (await deliveries(pg_pool, first))["ios"]["status"] == "sent"
    assert (await deliveries(pg_pool, second))["ios"]["status"] == "sent"
    assert len(fakes.apns.delivered(IOS_TOKEN_2)) == 1
    assert fakes.apns.connections_made == 2
    assert {r.connection for r in fakes.apns.delivered()} == {1, 2}


async def test_goaway_after_an_answer_needs_no_restart(
    pg_pool: asyncpg.Pool, fakes: Providers
) -> None:
    await add_device(pg_pool, "u", Platform.IOS, IOS_TOKEN)
    fakes.apns.script(IOS_TOKEN, Reply(goaway_after=True))
    async with in_process_worker(pg_pool, fakes) as worker:
        jobs = []
        for _ in range(3):
            jobs.append(await add_job(pg_pool, "u"))
            await worker.run_once()
            await asyncio.sleep(0.05)
        fakes.apns.close_connections()  # and a plain TCP drop between sends
        await asyncio.sleep(0.05)
        jobs.append(await add_job(pg_pool, "u"))
        await worker.run_once()
    for job in jobs:
        assert (await deliveries(pg_pool, job))["ios"]["status"] == "sent"
    assert len(fakes.apns.delivered(IOS_TOKEN)) == 4
    assert fakes.apns.connections_made == 3


async def test_a_connection_lost_with_the_request_in_flight_is_unknown(
    pg_pool: asyncpg.Pool, fakes: Providers
) -> None:
    await add_device(pg_pool, "u", Platform.IOS, IOS_TOKEN)
    fakes.apns.script(IOS_TOKEN, Reply(delay=5))
    job = await add_job(pg_pool, "u")
    async with in_process_worker(pg_pool, fakes, send_timeout_s=3.0, lease_s=10) as worker:
        run = asyncio.create_task(worker.run_once())
        await fakes.apns.wait_for(lambda: len(fakes.apns.requests) == 1)
        fakes.apns.close_connections()
        await run
    assert (await deliveries(pg_pool, job))["ios"]["status"] == "unknown"
    assert len(fakes.apns.requests) == 1


async def test_the_provider_token_is_renewed_after_expired_and_before_it_gets_old(
    pg_pool: asyncpg.Pool, fakes: Providers
) -> None:
    await add_device(pg_pool, "u", Platform.IOS, IOS_TOKEN)
    async with in_process_worker(pg_pool, fakes) as worker:
        apns = worker._senders[Platform.IOS]
        token = apns.token  # type: ignore[attr-defined]
        await add_job(pg_pool, "u")
        await worker.run_once()
        assert token.mints == 1
        # APNs stops accepting the current token (say, the clocks disagree).
        fakes.apns.tokens_expired_before = fakes.clock() + 1
        fakes.clock.advance(120)
        expired = await add_job(pg_pool, "u")
        await worker.run_once()
        assert (await deliveries(pg_pool, expired))["ios"]["status"] == "sent"
        assert token.mints == 2
        assert [r.status for r in fakes.apns.requests] == [200, 403, 200]
        assert fakes.apns.requests[1].reason == "ExpiredProviderToken"
        # Not on every send:
        for _ in range(3):
            await add_job(pg_pool, "u")
            await worker.run_once()
        assert token.mints == 2
        # Before it gets old (APNs refuses tokens older than an hour): no 403 needed.
        fakes.clock.advance(41 * 60)
        await add_job(pg_pool, "u")
        await worker.run_once()
        assert token.mints == 3
    assert [r.status for r in fakes.apns.requests].count(403) == 1
    assert len({r.authorization for r in fakes.apns.requests}) == 3


async def test_a_payload_over_the_limit_with_multibyte_text_is_shortened(
    pg_pool: asyncpg.Pool, fakes: Providers
) -> None:
    await add_device(pg_pool, "u", Platform.IOS, IOS_TOKEN)
    body = "Schön, dass du läufst! 🏃‍♀️🇩🇪 " * 300
    job = await add_job(pg_pool, "u", title="Glückwunsch", body=body)
    async with in_process_worker(pg_pool, fakes) as worker:
        await worker.run_once()
    [request] = fakes.apns.requests
    assert request.status == 200
    assert len(request.body) <= APNS_MAX_BYTES
    sent = request.payload["aps"]["alert"]["body"]
    assert sent.endswith(ELLIPSIS) and body.startswith(sent.removesuffix(ELLIPSIS))
    assert request.payload["aps"]["alert"]["title"] == "Glückwunsch"
    assert (await deliveries(pg_pool, job))["ios"]["status"] == "sent"
