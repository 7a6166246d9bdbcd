"""The server process: one lifespan that opens the pools, then serves, then closes in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from nudge.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    decision_pb2,
    decision_pb2_grpc,
    devices_pb2,
    devices_pb2_grpc,
    keys_pb2,
    keys_pb2_grpc,
    report_pb2,
    report_pb2_grpc,
    status_pb2,
    status_pb2_grpc,
)

from .admin_api import AdminServicer
from .api_keys import ApiKeyStore
from .arm_stats import PolicyCache
from .auth import Authorize, KeyCache, RateLimiter
from .background import periodic
from .config_store import ConfigCache, ConfigStore
from .decision_api import DecisionServicer
from .decision_log import LogWriter
from .decisions import DecisionEngine
from .device_api import DeviceServicer
from .devices import DeviceStore
from .erasure import UserEraser
from .errors import StoreUnavailable
from .key_api import KeyServicer
from .log_store import database_identity
from .logs import configure_logging
from .model import Campaign
from .outcome_store import OutcomeStore
from .outcomes import OutcomeRecorder
from .report_api import ReportServicer
from .report_runner import ReportRunner
from .settings import ServerSettings
from .shutdown import Draining
from .spool import Spool
from .status_api import StatusServicer
from .sweeper import IgnoreSweeper
from .throttle_store import ThrottleStore, open_redis
from .tls import server_credentials
from .wire import DecodeErrors

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    decision_pb2.DESCRIPTOR.services_by_name["DecisionService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
    report_pb2.DESCRIPTOR.services_by_name["ReportService"].full_name,
    devices_pb2.DESCRIPTOR.services_by_name["DeviceService"].full_name,
    keys_pb2.DESCRIPTOR.services_by_name["KeyService"].full_name,
    status_pb2.DESCRIPTOR.services_by_name["StatusService"].full_name,
)
#: Calls in flight on a connection past its maximum age get this long before it closes.
CONNECTION_AGE_GRACE_MS = 30_000
#: How long the exit waits for the PostgreSQL pool's connections to be given back.
POOL_CLOSE_S = 5.0
#: How often the health service re-checks Redis.
HEALTH_INTERVAL_S = 1.0


@dataclass
class RunningServer:
    """A started server: its port and the pieces tests and the CLI may look at."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    log_writer: LogWriter
    config: ConfigCache
    policies: PolicyCache


def _health_check(
    store: ThrottleStore, servicer: health.aio.HealthServicer
) -> Callable[[], Awaitable[None]]:
    """One health check: NOT_SERVING while Redis does not answer (decisions would all be
    "unavailable"), SERVING again when it does."""
    serving: bool | None = None

    async def check() -> None:
        nonlocal serving
        ok = await store.ping()
        if ok != serving:
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if ok
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            for name in ("", *SERVICE_NAMES):
                await servicer.set(name, status)
            if serving is not None:
                log.warning("health_changed", extra={"redis_ok": ok})
            serving = ok

    return check


async def _close_pool(pool: asyncpg.Pool) -> None:
    """Closes the pool, waiting for its connections at most POOL_CLOSE_S: a connection still
    held (by a write to a PostgreSQL that hangs) must not keep the process from exiting."""
    try:
        await asyncio.wait_for(pool.close(), POOL_CLOSE_S)
    except TimeoutError:
        log.warning("postgres_pool_terminated", extra={"after_s": POOL_CLOSE_S})
        pool.terminate()


@contextlib.asynccontextmanager
async def running_server(settings: ServerSettings) -> AsyncIterator[RunningServer]:
    """Opens Redis, PostgreSQL, the caches and the log writer, then serves until exit.

    On exit the server stops accepting, in-flight RPCs get the grace period, the log buffer is
    flushed, and the pools close, in that order.
    """
    # Read before anything opens: a bad certificate file stops the start, never falls back.
    credentials = server_credentials(settings.tls)
    async with contextlib.AsyncExitStack() as stack:
        redis_client = open_redis(settings.redis)
        stack.push_async_callback(redis_client.aclose)
        try:
            pool = await asyncpg.create_pool(
                settings.postgres.dsn,
                min_size=settings.postgres.min_connections,
                max_size=settings.postgres.max_connections,
                command_timeout=settings.postgres.command_timeout_s,
            )
        except (OSError, asyncpg.PostgresError) as exc:
            raise StoreUnavailable(f"postgresql: cannot connect: {exc}") from exc
        stack.push_async_callback(_close_pool, pool)

        store = ThrottleStore(redis_client, settings.redis)
        try:
            await store.load_scripts()
        except StoreUnavailable as exc:
            log.warning("redis_unavailable_at_start", extra={"error": str(exc)})

        keys = await stack.enter_async_context(KeyCache(ApiKeyStore(pool), settings.auth))
        authorize = Authorize(
            keys, RateLimiter(settings.auth.app_rate_per_s, settings.auth.app_burst)
        )
        config_store = ConfigStore(pool)
        config = await stack.enter_async_context(ConfigCache(config_store, settings.decision))

        def active_campaigns() -> list[Campaign]:
            return [c for cs in config.snapshot.campaigns.values() for c in cs]

        spool = None
        if settings.log.spool_enabled:
            # One subdirectory per database: rows only ever go to the database they belong to.
            spool_dir = settings.log.spool_dir / await database_identity(pool)
            spool = Spool(spool_dir, settings.log.spool_max_bytes)
            await asyncio.to_thread(spool.open)  # adopts what stopped processes left behind
            stack.callback(spool.close)  # after the log writer has spilled into it
        log_writer = await stack.enter_async_context(LogWriter(pool, settings.log, spool=spool))
        # Opened after the log writer, so closed before it: every snapshot it hands over is in
        # the writer before the writer's last flush.
        policies = await stack.enter_async_context(
            PolicyCache(
                store,
                active_campaigns,
                settings.decision.stats_refresh_s,
                settings.decision.seed,
                add_snapshot=log_writer.add_snapshot,
            )
        )

        engine = DecisionEngine(
            lambda: config.snapshot, policies, store, log_writer, settings.decision
        )
        outcomes = OutcomeRecorder(
            lambda: config.snapshot.apps,
            store,
            OutcomeStore(pool),
            settings.decision,
            log_backlog_since=log_writer.oldest_pending_at,
        )
        await stack.enter_async_context(
            IgnoreSweeper(pool, store, interval_s=settings.decision.sweep_interval_s)
        )
        eraser = UserEraser(pool, redis_client, settings.redis)
        await stack.enter_async_context(eraser.link_janitor())
        # Closed after the server has stopped serving: reports in flight are cancelled by then.
        reports = await stack.enter_async_context(ReportRunner(settings.postgres, settings.report))
        draining = Draining()
        server = grpc.aio.server(
            # Draining first: nothing else runs for a call refused during shutdown. DecodeErrors
            # before Authorize: it decodes inside the call that Authorize has let through.
            interceptors=[draining, DecodeErrors(), authorize],
            options=[
                ("grpc.max_receive_message_length", settings.grpc.max_message_bytes),
                ("grpc.max_send_message_length", settings.grpc.max_send_message_bytes),
                ("grpc.so_reuseport", 0),
                ("grpc.max_connection_age_ms", int(settings.grpc.max_connection_age_s * 1000)),
                ("grpc.max_connection_age_grace_ms", CONNECTION_AGE_GRACE_MS),
            ],
        )
        decision_pb2_grpc.add_DecisionServiceServicer_to_server(
            DecisionServicer(engine, outcomes), server
        )
        admin_pb2_grpc.add_AdminServiceServicer_to_server(
            AdminServicer(config_store, on_change=config.refresh_now, eraser=eraser), server
        )
        report_pb2_grpc.add_ReportServiceServicer_to_server(
            ReportServicer(reports, settings.grpc.max_send_message_bytes), server
        )
        devices_pb2_grpc.add_DeviceServiceServicer_to_server(
            DeviceServicer(DeviceStore(pool)), server
        )
        keys_pb2_grpc.add_KeyServiceServicer_to_server(KeyServicer(ApiKeyStore(pool)), server)
        status_pb2_grpc.add_StatusServiceServicer_to_server(
            StatusServicer(store.ping, pool, log_writer, settings.log.max_buffered_rows), server
        )
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        if credentials is None:
            port = server.add_insecure_port(settings.grpc.listen)
        else:
            port = server.add_secure_port(settings.grpc.listen, credentials)
        if port == 0:
            raise StoreUnavailable(f"grpc: cannot listen on {settings.grpc.listen}")
        await server.start()
        health_watch = periodic(
            "nudge-health",
            HEALTH_INTERVAL_S,
            _health_check(store, health_servicer),
            crash_event="health_check_crashed",
            immediately=True,
        )
        health_watch.start()

        async def stop() -> None:
            await health_watch.stop()
            await health_servicer.enter_graceful_shutdown()
            draining.start()
            await asyncio.sleep(settings.grpc.shutdown_drain_s)
            await server.stop(settings.grpc.shutdown_grace_s)

        # Registered last, so it runs first: stop serving before the log flushes and pools close.
        stack.push_async_callback(stop)
        log.info(
            "server_started",
            extra={"listen": settings.grpc.listen, "port": port, "tls": settings.tls.enabled},
        )
        yield RunningServer(server, port, health_servicer, log_writer, config, policies)
    log.info("server_stopped")


async def serve(settings: ServerSettings) -> None:
    """Serves until SIGTERM or SIGINT, then shuts down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with running_server(settings):
        await stop.wait()
        log.info("server_stopping")


def run_server(settings: ServerSettings) -> None:
    """The `nudge serve` entry point."""
    configure_logging()
    asyncio.run(serve(settings))
