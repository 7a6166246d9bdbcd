"""PostgreSQL plumbing the stores and the commands share: which errors mean "PostgreSQL is not
there", a pool connection with those errors translated at the store boundary, and the small pool
of one command-line run (or one report in a child process)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg

from .errors import StoreTimeout, StoreUnavailable
from .settings import PostgresSettings

#: asyncpg errors that mean "PostgreSQL is not there or not answering", as opposed to a query
#: that PostgreSQL refused.
PG_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.InvalidCatalogNameError,
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,
)


@contextlib.asynccontextmanager
async def connection(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A connection of `pool` for the block. A query or a connection that outlives the pool's
    timeouts raises StoreTimeout; any other error of PG_UNAVAILABLE, StoreUnavailable. Errors
    of the queries themselves (constraint violations, ...) pass through."""
    try:
        async with pool.acquire() as conn:
            yield conn
    except TimeoutError as exc:  # asyncpg's command timeout, or the connect timeout
        raise StoreTimeout(
            "PostgreSQL timed out: a query took longer than the command timeout, or the "
            "connection could not be made in time"
        ) from exc
    except PG_UNAVAILABLE as exc:
        raise StoreUnavailable(f"PostgreSQL is unavailable: {type(exc).__name__}: {exc}") from exc


@contextlib.asynccontextmanager
async def open_pool(
    settings: PostgresSettings, *, max_size: int = 2, application_name: str | None = None
) -> AsyncIterator[asyncpg.Pool]:
    """A small pool of its own (one command-line run, one report), closed on exit; its
    connections show `application_name` in pg_stat_activity when one is given.
    StoreUnavailable when PostgreSQL cannot be reached within the command timeout."""
    try:
        pool = await asyncpg.create_pool(
            settings.dsn,
            min_size=1,
            max_size=max_size,
            command_timeout=settings.command_timeout_s,
            timeout=settings.command_timeout_s,
            server_settings={"application_name": application_name} if application_name else None,
        )
    except PG_UNAVAILABLE as exc:
        raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
    try:
        yield pool
    finally:
        await pool.close()
