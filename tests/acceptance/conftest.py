"""The server as a process of its own, on a fresh database and Redis, for acceptance tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
import pytest
import redis.asyncio as aioredis
from fakes.ports import free_port
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nudge_client import bearer_interceptors
from nudge_server.api_keys import SCOPES, ApiKeyStore


async def create_key(dsn: str, app_id: str, scopes: Sequence[str] = SCOPES) -> str:
    """A new API key of `app_id` with `scopes`, made in the database at `dsn`."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        return (await ApiKeyStore(pool).create(app_id, scopes, "tests")).token
    finally:
        await pool.close()


@dataclass
class ServerProcess:
    """A running `nudge serve` process."""

    process: subprocess.Popen[bytes]
    target: str
    dsn: str
    log_path: Path
    #: The environment it was started with.
    env: dict[str, str] = field(default_factory=dict)
    _keys: dict[tuple[str, tuple[str, ...]], str] = field(default_factory=dict)

    async def stop(self) -> int:
        """SIGTERM, then wait for the process to exit; returns its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.process.wait, 30)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    async def key(self, app_id: str, scopes: Sequence[str] = SCOPES) -> str:
        """An API key of `app_id` (all scopes unless told), made once per app and scopes."""
        wanted = (app_id, tuple(sorted(scopes)))
        if wanted not in self._keys:
            self._keys[wanted] = await create_key(self.dsn, app_id, scopes)
        return self._keys[wanted]

    @contextlib.asynccontextmanager
    async def channel(
        self, app_id: str, scopes: Sequence[str] = SCOPES
    ) -> AsyncIterator[grpc.aio.Channel]:
        """A channel whose every call carries an API key of `app_id` with `scopes`."""
        key = await self.key(app_id, scopes)
        async with grpc.aio.insecure_channel(
            self.target, interceptors=bearer_interceptors(key)
        ) as channel:
            yield channel


def launch(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Starts `python -m nudge_server serve` with its output in `log_path`."""
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "nudge_server", "serve"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )


async def wait_serving(target: str, process: subprocess.Popen[bytes]) -> None:
    """Waits until the health service answers SERVING (or the process dies)."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(150):
            if process.poll() is not None:
                raise AssertionError(f"server exited with {process.returncode}")
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("server did not become SERVING")


@pytest.fixture
def server_env() -> dict[str, str]:
    """More environment for the `server` fixture's process: a test module overrides it."""
    return {}


@contextlib.asynccontextmanager
async def server_process(
    env: dict[str, str], dsn: str, log_path: Path
) -> AsyncIterator[ServerProcess]:
    """`nudge serve` with `env` on a free port, SERVING; killed on exit if still running."""
    port = free_port()
    env = {**env, "NUDGE_LISTEN": f"127.0.0.1:{port}"}
    handle = ServerProcess(launch(env, log_path), f"127.0.0.1:{port}", dsn, log_path, env)
    try:
        await wait_serving(handle.target, handle.process)
        yield handle
    finally:
        if handle.process.poll() is None:
            handle.process.kill()
            handle.process.wait(10)


@pytest.fixture
async def server(
    pg_dsn: str,
    redis_url: str,
    redis_client: aioredis.Redis,
    tmp_path: Path,
    server_env: dict[str, str],
) -> AsyncIterator[ServerProcess]:
    """A server on this test's database and Redis, trusting event times (like a replay)."""
    env = {
        **os.environ,
        "NUDGE_DATABASE_URL": pg_dsn,
        "NUDGE_REDIS_URL": redis_url,
        "NUDGE_TRUST_EVENT_TIME": "1",
        "NUDGE_REDIS_DECISION_TIMEOUT": "1.0",
        "NUDGE_SPOOL_DIR": str(tmp_path / "spool"),
        **server_env,
    }
    log_path = tmp_path / "server.log"
    try:
        async with server_process(env, pg_dsn, log_path) as handle:
            yield handle
    finally:
        if log_path.exists():
            sys.stderr.write(log_path.read_text(errors="replace")[-4000:])


# --- the push delivery worker as a process ------------------------------------------------------


@dataclass
class WorkerProcess:
    """A running `nudge worker` process; `kill` is SIGKILL (no chance to clean up)."""

    process: subprocess.Popen[bytes]
    health_target: str
    log_path: Path

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)

    async def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.process.wait, 30)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


def launch_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Starts `python -m nudge_server worker`, its output appended to `log_path`."""
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "nudge_server", "worker"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )


async def start_worker(env: dict[str, str], log_path: Path) -> WorkerProcess:
    """Starts `python -m nudge_server worker` with `env` over os.environ (its health service on
    a free port) and waits until it reports SERVING."""
    port = free_port()
    full = {**os.environ, "NUDGE_WORKER_HEALTH_LISTEN": f"127.0.0.1:{port}", **env}
    process = launch_worker(full, log_path)
    handle = WorkerProcess(process, f"127.0.0.1:{port}", log_path)
    try:
        await wait_serving(handle.health_target, process)
    except AssertionError:
        handle.kill()
        sys.stderr.write(handle.log_tail())
        raise
    return handle
