"""DeviceService over real gRPC (an in-process server on loopback) and PostgreSQL; the dead-letter
CLI and the worker's health service."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from fakes.apns import Reply
from fakes.harness import (
    IOS_TOKEN,
    add_app,
    add_device,
    add_job,
    deliveries,
    in_process_worker,
    providers,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nudge.v1 import decision_pb2, devices_pb2, devices_pb2_grpc
from nudge_server.delivery.health import WorkerHealth
from nudge_server.device_api import DeviceServicer
from nudge_server.devices import DeviceStore
from nudge_server.model import Platform

IOS = decision_pb2.PLATFORM_IOS
ANDROID = decision_pb2.PLATFORM_ANDROID


@pytest.fixture
async def stub(pg_pool: asyncpg.Pool) -> AsyncIterator[devices_pb2_grpc.DeviceServiceStub]:
    await add_app(pg_pool)
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    devices_pb2_grpc.add_DeviceServiceServicer_to_server(
        DeviceServicer(DeviceStore(pg_pool)), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield devices_pb2_grpc.DeviceServiceStub(channel)
    finally:
        await server.stop(None)


def register(
    user: str, platform: int, token: str, environment: int = 0
) -> devices_pb2.RegisterDeviceRequest:
    return devices_pb2.RegisterDeviceRequest(
        app_id="shop", user_id=user, platform=platform, token=token, environment=environment
    )


async def test_register_list_and_unregister(stub: devices_pb2_grpc.DeviceServiceStub) -> None:
    first = await stub.RegisterDevice(
        register("u", IOS, "AB" * 32, devices_pb2.APP_ENVIRONMENT_SANDBOX), timeout=5
    )
    assert first.created and first.device.token == "ab" * 32
    assert first.device.environment == devices_pb2.APP_ENVIRONMENT_SANDBOX
    assert first.device.status == devices_pb2.DEVICE_STATUS_ACTIVE
    again = await stub.RegisterDevice(register("u", IOS, "ab" * 32), timeout=5)
    assert not again.created and again.device.device_id == first.device.device_id
    assert again.device.environment == devices_pb2.APP_ENVIRONMENT_PRODUCTION
    await stub.RegisterDevice(register("u", ANDROID, "fcm-" + "t" * 60), timeout=5)
    listed = await stub.ListDevices(
        devices_pb2.ListDevicesRequest(app_id="shop", user_id="u"), timeout=5
    )
    assert {d.platform for d in listed.devices} == {IOS, ANDROID}
    gone = await stub.UnregisterDevice(
        devices_pb2.UnregisterDeviceRequest(
            app_id="shop", user_id="u", platform=IOS, token="ab" * 32
        ),
        timeout=5,
    )
    assert gone.unregistered
    repeat = await stub.UnregisterDevice(
        devices_pb2.UnregisterDeviceRequest(
            app_id="shop", user_id="u", platform=IOS, token="ab" * 32
        ),
        timeout=5,
    )
    assert not repeat.unregistered
    active = await stub.ListDevices(
        devices_pb2.ListDevicesRequest(app_id="shop", user_id="u"), timeout=5
    )
    assert [d.platform for d in active.devices] == [ANDROID]
    everything = await stub.ListDevices(
        devices_pb2.ListDevicesRequest(app_id="shop", user_id="u", include_inactive=True), timeout=5
    )
    assert {d.status for d in everything.devices} == {
        devices_pb2.DEVICE_STATUS_ACTIVE,
        devices_pb2.DEVICE_STATUS_UNREGISTERED,
    }


async def test_a_token_registered_by_another_user_moves_to_them(
    stub: devices_pb2_grpc.DeviceServiceStub,
) -> None:
    await stub.RegisterDevice(register("alice", IOS, "cd" * 32), timeout=5)
    await stub.RegisterDevice(register("bob", IOS, "cd" * 32), timeout=5)
    alice = await stub.ListDevices(
        devices_pb2.ListDevicesRequest(app_id="shop", user_id="alice"), timeout=5
    )
    bob = await stub.ListDevices(
        devices_pb2.ListDevicesRequest(app_id="shop", user_id="bob"), timeout=5
    )
    assert list(alice.devices) == [] and len(bob.devices) == 1


@pytest.mark.parametrize(
    ("request_", "code", "field"),
    [
        (register("u", IOS, "not-hex"), grpc.StatusCode.INVALID_ARGUMENT, "token"),
        (register("u", IOS, ""), grpc.StatusCode.INVALID_ARGUMENT, "token"),
        (register("u", ANDROID, "short"), grpc.StatusCode.INVALID_ARGUMENT, "token"),
        (
            register("u", decision_pb2.PLATFORM_WEB, "ab" * 32),
            grpc.StatusCode.INVALID_ARGUMENT,
            "platform",
        ),
        (
            register("u", decision_pb2.PLATFORM_UNSPECIFIED, "ab" * 32),
            grpc.StatusCode.INVALID_ARGUMENT,
            "platform",
        ),
        (register("u", 42, "ab" * 32), grpc.StatusCode.INVALID_ARGUMENT, "platform"),
        (register("u", IOS, "ab" * 32, 9), grpc.StatusCode.INVALID_ARGUMENT, "environment"),
        (register("", IOS, "ab" * 32), grpc.StatusCode.INVALID_ARGUMENT, "user_id"),
        (
            devices_pb2.RegisterDeviceRequest(
                app_id="ghost", user_id="u", platform=IOS, token="ab" * 32
            ),
            grpc.StatusCode.NOT_FOUND,
            "app_id",
        ),
    ],
)
async def test_bad_registrations_are_refused_naming_the_field(
    stub: devices_pb2_grpc.DeviceServiceStub,
    request_: devices_pb2.RegisterDeviceRequest,
    code: grpc.StatusCode,
    field: str,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RegisterDevice(request_, timeout=5)
    assert caught.value.code() == code
    assert field in (caught.value.details() or "")


async def test_a_retired_token_comes_back_only_by_registering_again(
    pg_pool: asyncpg.Pool, stub: devices_pb2_grpc.DeviceServiceStub
) -> None:
    reply = await stub.RegisterDevice(register("u", IOS, IOS_TOKEN), timeout=5)
    store = DeviceStore(pg_pool)
    import uuid

    device_id = uuid.UUID(reply.device.device_id)
    assert await store.retire(device_id, "apns 410 Unregistered")
    listed = await stub.ListDevices(
        devices_pb2.ListDevicesRequest(app_id="shop", user_id="u"), timeout=5
    )
    assert list(listed.devices) == []
    again = await stub.RegisterDevice(register("u", IOS, IOS_TOKEN), timeout=5)
    assert again.device.status == devices_pb2.DEVICE_STATUS_ACTIVE and not again.created


def run_cli(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nudge_server", *args],
        env={**os.environ, "NUDGE_DATABASE_URL": dsn},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_deadletter_commands(pg_dsn: str, pg_pool: asyncpg.Pool, tmp_path: Path) -> None:
    async with providers(tmp_path) as fakes:
        await add_app(pg_pool)
        await add_device(pg_pool, "u", Platform.IOS, IOS_TOKEN)
        fakes.apns.script(IOS_TOKEN, Reply(403, "InvalidProviderToken"))  # misconfigured
        job = await add_job(pg_pool, "u")
        async with in_process_worker(pg_pool, fakes) as worker:
            await worker.run_once()
        assert (await deliveries(pg_pool, job))["ios"]["status"] == "dead_lettered"
        listed = await asyncio.to_thread(run_cli, pg_dsn, "deadletter", "list")
        assert listed.returncode == 0, listed.stderr
        assert str(job) in listed.stdout and "InvalidProviderToken" in listed.stdout
        bad = await asyncio.to_thread(run_cli, pg_dsn, "deadletter", "replay")
        assert bad.returncode == 2 and "JOB_ID" in bad.stderr
        replayed = await asyncio.to_thread(run_cli, pg_dsn, "deadletter", "replay", str(job))
        assert replayed.returncode == 0, replayed.stderr
        assert "replayed 1" in replayed.stdout
        async with in_process_worker(pg_pool, fakes) as worker:
            await worker.run_once()
        assert (await deliveries(pg_pool, job))["ios"]["status"] == "sent"
        empty = await asyncio.to_thread(run_cli, pg_dsn, "deadletter", "list", "--json")
        assert empty.returncode == 0 and empty.stdout.strip() == "[]"


async def test_the_worker_health_service(pg_pool: asyncpg.Pool, tmp_path: Path) -> None:
    async with (
        providers(tmp_path) as fakes,
        in_process_worker(pg_pool, fakes) as worker,
        WorkerHealth(worker, "127.0.0.1:0", 0.05) as health,
    ):
        target = f"127.0.0.1:{health.port}"
        async with grpc.aio.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            await asyncio.sleep(0.1)
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            worker.last_poll_ok = time.monotonic() - 60  # as if polls kept failing
            await asyncio.sleep(1.2)
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        probe = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "nudge_server.delivery.health"],
            env={**os.environ, "NUDGE_WORKER_HEALTH_LISTEN": target},
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert probe.returncode == 1  # NOT_SERVING
