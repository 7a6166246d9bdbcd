"""The StatusService servicer: checks Redis and PostgreSQL, judges the decision log's figures,
and converts both to proto messages. The judging (`decision_log_health`) is pure."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

import asyncpg
import grpc
from google.protobuf import duration_pb2
from nudge.v1 import status_pb2, status_pb2_grpc

from . import wire
from .api_errors import grpc_errors
from .decision_log import LogStatus, LogWriter
from .local_time import utc_now
from .postgres import PG_UNAVAILABLE

#: Each store gets this long to answer a status check.
CHECK_TIMEOUT_S = 1.0


class Health(StrEnum):
    """How a component is doing (`nudge.v1.Health`)."""

    OK = "ok"
    DEGRADED = "degraded"
    FAILING = "failing"


@dataclass(frozen=True)
class ComponentCheck:
    """The health of one component, with a line for a person."""

    name: str
    health: Health
    detail: str
    latency_s: float | None = None


def decision_log_health(status: LogStatus, max_buffered_rows: int) -> ComponentCheck:
    """FAILING while rows are being dropped (spool full or failing, or memory full without a
    spool), DEGRADED while rows wait (PostgreSQL failing, rows in the spool), OK otherwise."""
    spool = status.spool
    dropped = f"{status.rows_dropped} rows dropped since start"
    if spool is not None and spool.full:
        return ComponentCheck(
            "decision_log",
            Health.FAILING,
            f"spool full ({spool.bytes} of {spool.capacity_bytes} bytes, {spool.rows} rows): "
            f"new rows wait in memory ({status.rows_in_memory} of {max_buffered_rows}), then "
            f"are dropped; {dropped}",
        )
    if spool is not None and spool.error is not None:
        return ComponentCheck(
            "decision_log",
            Health.FAILING,
            f"the spool's disk refused a write ({spool.error}): rows wait in memory "
            f"({status.rows_in_memory} of {max_buffered_rows}); {dropped}",
        )
    if spool is None and status.rows_in_memory >= max_buffered_rows:
        return ComponentCheck(
            "decision_log",
            Health.FAILING,
            f"memory full ({status.rows_in_memory} rows) and no spool: new rows are dropped; "
            f"{dropped}",
        )
    waiting = status.rows_in_memory + (spool.rows if spool is not None else 0)
    if status.postgres_failing or (spool is not None and spool.rows):
        reason = (
            f"PostgreSQL writes fail ({status.last_error})"
            if status.postgres_failing
            else "writing the spool to PostgreSQL"
        )
        return ComponentCheck(
            "decision_log",
            Health.DEGRADED,
            f"{reason}: {waiting} rows waiting "
            f"({status.rows_in_memory} in memory, "
            f"{spool.rows if spool is not None else 0} in the spool)",
        )
    return ComponentCheck(
        "decision_log",
        Health.OK,
        f"{status.rows_written} rows written, {status.rows_in_memory} waiting in memory",
    )


async def timed_check(name: str, check: Callable[[], Awaitable[bool]]) -> ComponentCheck:
    """Runs one store's check within CHECK_TIMEOUT_S."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            ok = await check()
        detail = "answered" if ok else "did not answer"
    except TimeoutError:
        ok, detail = False, f"did not answer within {CHECK_TIMEOUT_S} s"
    except PG_UNAVAILABLE as exc:
        ok, detail = False, f"unreachable: {type(exc).__name__}: {exc}"
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        ok, detail = False, f"refused the check: {type(exc).__name__}: {exc}"
    latency = time.monotonic() - started
    return ComponentCheck(name, Health.OK if ok else Health.FAILING, detail, latency)


HEALTH_PROTO = {
    Health.OK: status_pb2.HEALTH_OK,
    Health.DEGRADED: status_pb2.HEALTH_DEGRADED,
    Health.FAILING: status_pb2.HEALTH_FAILING,
}


def _duration(seconds: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromTimedelta(dt.timedelta(seconds=max(0.0, seconds)))
    return out


def decision_log_proto(status: LogStatus, now: dt.datetime) -> status_pb2.DecisionLogStatus:
    """The writer's figures as a message."""
    spool = status.spool
    out = status_pb2.DecisionLogStatus(
        rows_in_memory=status.rows_in_memory,
        rows_dropped=status.rows_dropped,
        rows_written=status.rows_written,
        rows_rejected=status.rows_rejected,
        rows_duplicate=status.rows_duplicate,
        rows_spooled=status.rows_spooled,
        rows_replayed=status.rows_replayed,
        postgresql_failing=status.postgres_failing,
        last_error=status.last_error or "",
    )
    if spool is not None:
        out.rows_in_spool = spool.rows
        out.spool_bytes = spool.bytes
        out.spool_capacity_bytes = spool.capacity_bytes
        out.spool_full = spool.full
        out.spool_directory = str(spool.directory)
        out.spool_error = spool.error or ""
        if spool.oldest_stamp_ms is not None:
            age = now.timestamp() - spool.oldest_stamp_ms / 1000
            out.oldest_spooled_row_age.CopyFrom(_duration(age))
    return out


class StatusServicer(status_pb2_grpc.StatusServiceServicer):
    """Serves nudge.v1.StatusService. It owns none of the resources it is handed."""

    def __init__(
        self,
        redis_ping: Callable[[], Awaitable[bool]],
        pool: asyncpg.Pool,
        log_writer: LogWriter,
        max_buffered_rows: int,
        clock: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        self._redis_ping = redis_ping
        self._pool = pool
        self._log = log_writer
        self._max_buffered_rows = max_buffered_rows
        self._clock = clock

    async def _postgres_answers(self) -> bool:
        async with self._pool.acquire() as conn:
            return bool(await conn.fetchval("SELECT true"))

    @grpc_errors
    async def GetStatus(
        self, request: status_pb2.GetStatusRequest, context: grpc.aio.ServicerContext
    ) -> status_pb2.GetStatusResponse:
        redis, postgres = await asyncio.gather(
            timed_check("redis", self._redis_ping),
            timed_check("postgresql", self._postgres_answers),
        )
        now = self._clock()
        log_status = self._log.status()
        components = [redis, postgres, decision_log_health(log_status, self._max_buffered_rows)]
        response = status_pb2.GetStatusResponse(
            decision_log=decision_log_proto(log_status, now),
            checked_at=wire.to_timestamp(now),
        )
        for check in components:
            message = response.components.add(
                name=check.name, health=HEALTH_PROTO[check.health], detail=check.detail
            )
            if check.latency_s is not None:
                message.latency.CopyFrom(_duration(check.latency_s))
        return response
