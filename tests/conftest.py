"""Shared fixtures: real PostgreSQL and Redis, isolated per test.

PostgreSQL: a template database is built once per session by running the migrations; each test
gets its own copy. Redis: the session starts a private redis-server on a free loopback port (so
test sessions running side by side never flush each other's keys), and each test gets it
flushed. NUDGE_TEST_POSTGRES_URL (an admin connection) and NUDGE_TEST_REDIS_URL override them.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis.asyncio as aioredis
from fakes.redis_process import RedisProcess
from fakes.tcp_proxy import TcpProxy
from nudge_server.migrate import apply_migrations

ROOT = Path(__file__).resolve().parents[1]
ADMIN_URL = os.environ.get(
    "NUDGE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("NUDGE_TEST_REDIS_URL", "")
TEMPLATE = f"nudge_test_template_{os.getpid()}"


def database_url(name: str) -> str:
    """The admin URL with its database replaced by `name`."""
    parts = urlsplit(ADMIN_URL)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
async def pg_template() -> AsyncIterator[str]:
    """A migrated template database, built once per test session."""
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}"')
        await admin.execute(f'CREATE DATABASE "{TEMPLATE}"')
        await apply_migrations(database_url(TEMPLATE), ROOT / "migrations")
        yield TEMPLATE
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def pg_dsn(pg_template: str) -> AsyncIterator[str]:
    """The URL of a fresh, migrated database of this test's own."""
    name = f"nudge_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
        yield database_url(name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def pg_pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """An asyncpg pool on this test's database."""
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """The URL of the session's Redis: a private redis-server, or NUDGE_TEST_REDIS_URL."""
    if REDIS_URL or shutil.which("redis-server") is None:
        yield REDIS_URL or "redis://127.0.0.1:6379/15"
        return
    with RedisProcess() as private:
        yield private.url


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """The URL of this test's Redis database (flushed before and after by `redis_client`)."""
    yield redis_server


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client on a flushed Redis database."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=False)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.flushdb()
        await client.aclose()


@pytest.fixture
async def tcp_proxy() -> AsyncIterator[Callable[[str], Awaitable[TcpProxy]]]:
    """A factory of TCP proxies in front of a redis:// or postgresql:// URL's server (see
    tests/fakes/tcp_proxy.py); every proxy is closed at teardown."""
    proxies: list[TcpProxy] = []

    async def make(url: str) -> TcpProxy:
        parts = urlsplit(url)
        proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 0)
        await proxy.start()
        proxies.append(proxy)
        return proxy

    try:
        yield make
    finally:
        for proxy in proxies:
            await proxy.close()
