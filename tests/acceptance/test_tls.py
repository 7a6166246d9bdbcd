"""TLS and mTLS of the server process, with certificates the tests make.

A server given NUDGE_TLS_CERT and NUDGE_TLS_KEY answers only TLS clients that trust its CA; with
NUDGE_TLS_CLIENT_CA it also wants a client certificate signed by that CA. A bad file stops it at
start, with the variable and the file named, and it never falls back to plaintext.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import grpc.aio
import pytest
import redis.asyncio as aioredis
from conftest import ServerProcess, free_port, launch
from fakes.keys import TlsFiles, make_tls_files
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nudge.v1 import admin_pb2
from nudge_client import NudgeClient, TlsOptions, open_channel

APP = "tls-app"

StartServer = Callable[[dict[str, str], TlsOptions], Awaitable[ServerProcess]]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("pki"))


def _base_env(pg_dsn: str, redis_url: str, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "NUDGE_DATABASE_URL": pg_dsn,
        "NUDGE_REDIS_URL": redis_url,
        "NUDGE_LISTEN": f"127.0.0.1:{port}",
    }


async def _wait_serving(handle: ServerProcess, tls: TlsOptions) -> None:
    async with open_channel(handle.target, tls=tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(150):
            if handle.process.poll() is not None:
                raise AssertionError(f"server exited with {handle.process.returncode}")
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.1)
                continue
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
            await asyncio.sleep(0.1)
    raise AssertionError("server did not become SERVING over TLS")


@pytest.fixture
async def start_server(
    pg_dsn: str, redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> AsyncIterator[StartServer]:
    """Starts a server with more environment and waits until it is SERVING to a client with
    `tls`; killed at teardown."""
    started: list[ServerProcess] = []

    async def start(env: dict[str, str], tls: TlsOptions) -> ServerProcess:
        port = free_port()
        log_path = tmp_path / "server.log"
        process = launch({**_base_env(pg_dsn, redis_url, port), **env}, log_path)
        handle = ServerProcess(process, f"127.0.0.1:{port}", pg_dsn, log_path)
        started.append(handle)
        await _wait_serving(handle, tls)
        return handle

    yield start
    for handle in started:
        if handle.process.poll() is None:
            handle.process.kill()
            handle.process.wait(10)
        sys.stderr.write(handle.log_tail())


async def _put_and_get_app(
    server: ServerProcess, tls: bool | TlsOptions, target: str | None = None
) -> str:
    """An authenticated round trip: stores the app, reads it back; its display name."""
    key = await server.key(APP)
    async with NudgeClient(target or server.target, tls=tls, api_key=key, timeout_s=5) as client:
        await client.admin.PutApp(
            admin_pb2.PutAppRequest(app=admin_pb2.App(app_id=APP, display_name="over TLS")),
            timeout=5,
        )
        answer = await client.admin.GetApp(admin_pb2.GetAppRequest(app_id=APP), timeout=5)
    name: str = answer.app.display_name
    return name


async def _refused(server: ServerProcess, tls: bool | TlsOptions) -> grpc.StatusCode:
    """The code of a health check made with `tls` (the handshake's failure is UNAVAILABLE)."""
    async with open_channel(server.target, tls=tls) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=3
            )
    code: grpc.StatusCode = failure.value.code()
    return code


def _probe(server: ServerProcess, env: dict[str, str]) -> int:
    """Exit code of `python -m nudge_server.healthcheck` against `server`."""
    return subprocess.run(
        [sys.executable, "-m", "nudge_server.healthcheck", "--target", server.target],
        env={**os.environ, **env},
        capture_output=True,
        timeout=30,
        check=False,
    ).returncode


async def test_tls_answers_clients_that_trust_its_ca(
    start_server: StartServer, pki: TlsFiles
) -> None:
    trusting = TlsOptions(ca_file=pki.ca)
    server = await start_server(
        {"NUDGE_TLS_CERT": str(pki.server_cert), "NUDGE_TLS_KEY": str(pki.server_key)}, trusting
    )
    assert await _put_and_get_app(server, trusting) == "over TLS"
    # The certificate names localhost too.
    port = server.target.rpartition(":")[2]
    assert await _put_and_get_app(server, trusting, f"localhost:{port}") == "over TLS"

    assert await _refused(server, TlsOptions(ca_file=pki.other_ca)) == grpc.StatusCode.UNAVAILABLE
    assert await _refused(server, False) == grpc.StatusCode.UNAVAILABLE  # plaintext
    # The container probe speaks TLS when told which CA to trust.
    ca_env = {"NUDGE_TLS_CA": str(pki.ca)}
    assert await asyncio.to_thread(_probe, server, ca_env) == 0
    assert await asyncio.to_thread(_probe, server, {}) == 1
    assert await server.stop() == 0


async def test_mtls_wants_a_client_certificate_from_its_client_ca(
    start_server: StartServer, pki: TlsFiles
) -> None:
    with_cert = TlsOptions(ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key)
    server = await start_server(
        {
            "NUDGE_TLS_CERT": str(pki.server_cert),
            "NUDGE_TLS_KEY": str(pki.server_key),
            "NUDGE_TLS_CLIENT_CA": str(pki.ca),
        },
        with_cert,
    )
    assert await _put_and_get_app(server, with_cert) == "over TLS"

    no_cert = TlsOptions(ca_file=pki.ca)
    stranger = TlsOptions(
        ca_file=pki.ca, cert_file=pki.other_client_cert, key_file=pki.other_client_key
    )
    assert await _refused(server, no_cert) == grpc.StatusCode.UNAVAILABLE
    assert await _refused(server, stranger) == grpc.StatusCode.UNAVAILABLE
    assert await _refused(server, False) == grpc.StatusCode.UNAVAILABLE
    probe_env = {
        "NUDGE_TLS_CA": str(pki.ca),
        "NUDGE_TLS_CLIENT_CERT": str(pki.client_cert),
        "NUDGE_TLS_CLIENT_KEY": str(pki.client_key),
    }
    assert await asyncio.to_thread(_probe, server, probe_env) == 0
    assert await asyncio.to_thread(_probe, server, {"NUDGE_TLS_CA": str(pki.ca)}) == 1


@pytest.mark.parametrize(
    ("files", "message"),
    [
        pytest.param(
            {"NUDGE_TLS_CERT": "{missing}", "NUDGE_TLS_KEY": "{server_key}"},
            "nudge: NUDGE_TLS_CERT: cannot read {missing}: No such file or directory",
            id="missing-cert",
        ),
        pytest.param(
            {"NUDGE_TLS_CERT": "{server_cert}", "NUDGE_TLS_KEY": "{client_key}"},
            "nudge: NUDGE_TLS_KEY: {client_key} does not match the certificate in {server_cert}",
            id="mismatched-key",
        ),
        pytest.param(
            {"NUDGE_TLS_CERT": "{server_cert}"},
            "nudge: NUDGE_TLS_KEY: must be set when NUDGE_TLS_CERT is",
            id="cert-without-key",
        ),
        pytest.param(
            {
                "NUDGE_TLS_CERT": "{server_cert}",
                "NUDGE_TLS_KEY": "{server_key}",
                "NUDGE_TLS_CLIENT_CA": "{missing}",
            },
            "nudge: NUDGE_TLS_CLIENT_CA: cannot read {missing}",
            id="missing-client-ca",
        ),
    ],
)
async def test_bad_tls_files_stop_the_start(
    pg_dsn: str,
    redis_url: str,
    tmp_path: Path,
    pki: TlsFiles,
    files: dict[str, str],
    message: str,
) -> None:
    paths = {
        "missing": str(tmp_path / "missing.pem"),
        "server_cert": str(pki.server_cert),
        "server_key": str(pki.server_key),
        "client_key": str(pki.client_key),
    }
    env = {
        **_base_env(pg_dsn, redis_url, free_port()),
        **{name: value.format(**paths) for name, value in files.items()},
    }
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "nudge_server", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert message.format(**paths) in result.stderr
    assert "server_started" not in result.stderr
