"""API keys against the running server: no key or a bad key gets nothing, scopes hold, a revoked
key stops working within seconds on every server process, each app is held to its own rate."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from conftest import ServerProcess, server_process
from google.protobuf import descriptor_pool
from nudge.v1 import admin_pb2, admin_pb2_grpc, keys_pb2, keys_pb2_grpc, report_pb2, report_pb2_grpc
from nudge_client import bearer_interceptors
from nudge_server.auth import INVALID_KEY, MISSING_KEY
from nudge_server.server import SERVICE_NAMES

METHODS = [
    f"/{name}/{method.name}"
    for name in SERVICE_NAMES
    for method in descriptor_pool.Default().FindServiceByName(name).methods
]


async def raw_status(
    target: str, method: str, metadata: tuple[tuple[str, str], ...] | None
) -> tuple[grpc.StatusCode, str]:
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(method)  # bytes in, bytes out: an empty request
        try:
            await call(b"", timeout=5, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or ""
        return grpc.StatusCode.OK, ""


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def nudge(*args: str, dsn: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nudge_server", *args],
        env={**os.environ, "NUDGE_DATABASE_URL": dsn},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_every_rpc_refuses_a_caller_without_a_valid_key(server: ServerProcess) -> None:
    assert len(METHODS) >= 16
    good = await server.key("shop")
    key_id = good[3:19]
    revoked = await server.key("shop", ("decide",))
    done = nudge("keys", "revoke", "--app", "shop", revoked[3:19], dsn=server.dsn)
    assert done.returncode == 0, done.stderr
    await asyncio.sleep(3)  # past the key refresh interval
    bad_keys = [
        "",
        "nk_",
        "not-a-key",
        f"nk_{key_id}_{'A' * 43}",  # a real key id, a wrong secret
        f"nk_{'0' * 16}_{good[20:]}",  # an unknown key id, a real secret
        good + "x",
        revoked,
    ]
    for method in METHODS:
        assert await raw_status(server.target, method, None) == (
            grpc.StatusCode.UNAUTHENTICATED,
            MISSING_KEY,
        ), method
        assert await raw_status(server.target, method, (("authorization", good),)) == (
            grpc.StatusCode.UNAUTHENTICATED,
            MISSING_KEY,
        ), method  # no "Bearer"
        for bad in bad_keys:
            # The same answer for every bad key: it tells nothing of which keys exist.
            assert await raw_status(server.target, method, bearer(bad)) == (
                grpc.StatusCode.UNAUTHENTICATED,
                INVALID_KEY,
            ), (method, bad)
    # With the good key, the same empty requests get past the door (and are then judged).
    for method in METHODS:
        code, _ = await raw_status(server.target, method, bearer(good))
        assert code not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


async def test_each_scope_opens_only_its_own_rpcs(server: ServerProcess) -> None:
    scope_of = {
        "/nudge.v1.DecisionService/": "decide",
        "/nudge.v1.DeviceService/": "decide",
        "/nudge.v1.ReportService/": "report",
        "/nudge.v1.AdminService/": "admin",
        "/nudge.v1.KeyService/": "admin",
        "/nudge.v1.StatusService/": "admin",
    }
    for scope in ("decide", "report", "admin"):
        key = await server.key("shop", (scope,))
        for method in METHODS:
            needed = next(s for prefix, s in scope_of.items() if method.startswith(prefix))
            code, details = await raw_status(server.target, method, bearer(key))
            if needed == scope:
                assert code != grpc.StatusCode.PERMISSION_DENIED, (scope, method, details)
            else:
                assert (code, details) == (
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"this API key lacks the {needed!r} scope",
                ), (scope, method)


async def test_a_key_works_only_for_its_own_app(server: ServerProcess) -> None:
    async with server.channel("shop") as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        await admin.PutApp(admin_pb2.PutAppRequest(app=admin_pb2.App(app_id="shop")), timeout=5)
        for app_id in ("other", "never-made"):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await admin.GetApp(admin_pb2.GetAppRequest(app_id=app_id), timeout=5)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert refused.value.details() == (
                f"app_id: this API key is not valid for app {app_id!r}"
            )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await admin.PutApp(admin_pb2.PutAppRequest(app=admin_pb2.App(app_id="x")), timeout=5)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "app.app_id" in (refused.value.details() or "")
        reports = report_pb2_grpc.ReportServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await reports.GetArmReport(
                report_pb2.GetArmReportRequest(app_id="other", campaign_id="c"), timeout=5
            )
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.fixture
async def second_server(
    server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ServerProcess]:
    """Another server process on the same database (and Redis) as `server`."""
    log_path = tmp_path_factory.mktemp("second") / "server.log"
    async with server_process(server.env, server.dsn, log_path) as handle:
        yield handle


async def test_a_revoked_key_stops_working_within_seconds_on_every_server(
    server: ServerProcess, second_server: ServerProcess
) -> None:
    made = nudge("keys", "create", "--app", "shop", "--scopes", "admin", dsn=server.dsn)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("nk_") and key not in made.stderr  # printed once, on stdout
    method = "/nudge.v1.AdminService/GetApp"
    request = admin_pb2.GetAppRequest(app_id="shop").SerializeToString()

    async def code_on(target: str) -> grpc.StatusCode:
        async with grpc.aio.insecure_channel(target) as channel:
            try:
                await channel.unary_unary(method)(request, timeout=5, metadata=bearer(key))
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

    # A key made a moment ago works at once on both (looked up on first sight).
    for target in (server.target, second_server.target):
        assert await code_on(target) == grpc.StatusCode.NOT_FOUND  # past auth: no app yet

    listed = nudge("keys", "list", "--app", "shop", dsn=server.dsn)
    assert key[3:19] in listed.stdout and key[20:] not in listed.stdout
    revoked = nudge("keys", "revoke", "--app", "shop", key[3:19], dsn=server.dsn)
    assert revoked.returncode == 0, revoked.stderr
    started = time.monotonic()
    pending = {server.target, second_server.target}
    while pending and time.monotonic() - started < 10:
        for target in sorted(pending):
            if await code_on(target) == grpc.StatusCode.UNAUTHENTICATED:
                pending.discard(target)
        await asyncio.sleep(0.1)
    assert not pending, f"still accepted after 10 s on {pending}"
    # The default refresh interval is 2 s; allow for the query and the processes' load.
    assert time.monotonic() - started < 5


async def test_keys_are_managed_through_the_key_service(server: ServerProcess) -> None:
    async with server.channel("shop", ("admin",)) as channel:
        keys = keys_pb2_grpc.KeyServiceStub(channel)
        made = await keys.CreateKey(
            keys_pb2.CreateKeyRequest(
                app_id="shop", name="ios backend", scopes=[keys_pb2.SCOPE_DECIDE]
            ),
            timeout=5,
        )
        assert made.key.startswith(f"nk_{made.api_key.key_id}_")
        assert list(made.api_key.scopes) == [keys_pb2.SCOPE_DECIDE]
        listed = await keys.ListKeys(keys_pb2.ListKeysRequest(app_id="shop"), timeout=5)
        assert made.api_key.key_id in {k.key_id for k in listed.api_keys}
        assert all(made.key[20:] not in str(k) for k in listed.api_keys)
        for bad, field in [
            (keys_pb2.CreateKeyRequest(app_id="shop"), "scopes"),
            (keys_pb2.CreateKeyRequest(app_id="shop", scopes=[99]), "scopes"),
            (keys_pb2.CreateKeyRequest(app_id="shop", scopes=[1], name="x\x00"), "name"),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await keys.CreateKey(bad, timeout=5)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert field in (refused.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await keys.RevokeKey(keys_pb2.RevokeKeyRequest(app_id="shop", key_id="f" * 16))
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND

        # The new key decides but cannot administer.
        async with grpc.aio.insecure_channel(
            server.target, interceptors=bearer_interceptors(made.key)
        ) as limited:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await keys_pb2_grpc.KeyServiceStub(limited).ListKeys(
                    keys_pb2.ListKeysRequest(app_id="shop"), timeout=5
                )
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        revoked = await keys.RevokeKey(
            keys_pb2.RevokeKeyRequest(app_id="shop", key_id=made.api_key.key_id), timeout=5
        )
        assert revoked.api_key.HasField("revoked_at")
        again = await keys.RevokeKey(
            keys_pb2.RevokeKeyRequest(app_id="shop", key_id=made.api_key.key_id), timeout=5
        )
        assert again.api_key.revoked_at == revoked.api_key.revoked_at  # idempotent


@pytest.fixture
def server_env(request: pytest.FixtureRequest) -> dict[str, str]:
    marker = request.node.get_closest_marker("server_env")
    return dict(marker.args[0]) if marker else {}


@pytest.mark.server_env({"NUDGE_APP_RATE": "5", "NUDGE_APP_BURST": "10"})
async def test_an_app_over_its_rate_is_held_back_and_the_others_are_not(
    server: ServerProcess,
) -> None:
    request = admin_pb2.GetAppRequest(app_id="noisy")
    codes: dict[grpc.StatusCode, int] = {}
    async with server.channel("noisy", ("admin",)) as noisy, server.channel("calm") as calm:
        stub = admin_pb2_grpc.AdminServiceStub(noisy)

        async def one() -> None:
            try:
                await stub.GetApp(request, timeout=5)
                code = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    assert "'noisy' is over its request rate" in (exc.details() or "")
            codes[code] = codes.get(code, 0) + 1

        await asyncio.gather(*(one() for _ in range(60)))
        # The calm app's calls in the meantime all get through.
        calm_stub = admin_pb2_grpc.AdminServiceStub(calm)
        for _ in range(5):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await calm_stub.GetApp(admin_pb2.GetAppRequest(app_id="calm"), timeout=5)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND  # past the limiter
    assert codes.get(grpc.StatusCode.RESOURCE_EXHAUSTED, 0) >= 40, codes
    assert 10 <= codes.get(grpc.StatusCode.NOT_FOUND, 0) <= 20, codes  # the burst, then 5/s
