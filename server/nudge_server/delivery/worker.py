"""The delivery worker: claims due push jobs and sends each to the user's devices, at most once.

One job at a time per claim, many jobs at once per worker (`max_jobs_in_flight`), and at most
`concurrency` sends in flight per provider. For each job:

1. expired (past expires_at): final 'expired'.
2. inside the user's quiet hours now (their zone, the app's policy as the config store has it):
   'dropped' when the campaign says drop, else 'deferred' to the end of the quiet hours. The
   decision already deferred the job; this catches a job that is late, or an arm's delay that
   ends at night.
3. its deliveries (one per active device, fixed at the first claim); any left in 'sending' by
   a worker that died become 'unknown' and are not sent again (see `jobs`).
4. each due delivery: a provider slot, the committed 'sending' mark, the request (under a
   timeout), the result. Transient failures come back with exponential back-off and jitter
   (never earlier than a Retry-After); after `max_attempts` requests a delivery is
   dead-lettered; a token reported gone is retired.
5. the job's next status: 'retrying' at the earliest back-off when some delivery waits, else
   final (`jobs.job_status_of`).

The worker never reports an impression: an undelivered push cannot be displayed, so the bandit,
which counts a pull only when an outcome is reported, never counts one.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import random
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import asyncpg

from ..config_store import ConfigCache, ConfigSnapshot, ConfigStore
from ..devices import AppEnvironment
from ..errors import StoreUnavailable
from ..local_time import quiet_hours, zone
from ..logs import configure_logging
from ..model import Platform, QuietHoursPolicy
from ..postgres import PG_UNAVAILABLE
from ..settings import DecisionSettings, PostgresSettings
from .apns import ApnsSender
from .fcm import FcmSender
from .jobs import Delivery, Job, JobStore, job_status_of
from .payload import PushContent
from .results import SendResult, SendStatus, retry_delay
from .settings import DeliverySettings

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]

#: How long a result is retried into an unavailable PostgreSQL before it is given up (loudly):
#: the delivery then stays 'sending' and becomes 'unknown', never sent twice.
RECORD_PATIENCE_S = 30.0
#: What a store call raises when PostgreSQL is away (the job is then taken again later).
_STORE_DOWN: tuple[type[BaseException], ...] = (StoreUnavailable, *PG_UNAVAILABLE)
#: At most one "PostgreSQL unavailable" warning per this many seconds.
WARN_INTERVAL_S = 10.0


def utc_now() -> dt.datetime:
    """The worker's clock."""
    return dt.datetime.now(dt.UTC)


class Sender(Protocol):
    """What the worker needs of a provider (ApnsSender, FcmSender, DisabledSender)."""

    name: str

    def slot(self) -> contextlib.AbstractAsyncContextManager[None]: ...

    async def send(
        self,
        *,
        token: str,
        environment: AppEnvironment,
        content: PushContent,
        notification_id: uuid.UUID,
        ttl_s: int,
    ) -> SendResult: ...


class DisabledSender:
    """A provider that is not configured: its deliveries are dead-lettered without a request,
    to be replayed once it is."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        yield

    async def send(
        self,
        *,
        token: str,
        environment: AppEnvironment,
        content: PushContent,
        notification_id: uuid.UUID,
        ttl_s: int,
    ) -> SendResult:
        return SendResult(SendStatus.MISCONFIGURED, self.reason)


def notification_id(job_id: uuid.UUID, device_id: uuid.UUID) -> uuid.UUID:
    """The apns-id of a (job, device): the same for every attempt, to follow it in logs."""
    return uuid.uuid5(job_id, str(device_id))


class Worker:
    """Consumes push jobs until `stop()`. It owns none of the resources it is handed.

    `counts` counts outcomes by name (sent, unknown, retrying, failed, token_retired,
    dead_lettered, deferred, dropped, expired, skipped); `last_poll_ok` is the monotonic time of
    the last successful poll (the health check reads it).
    """

    def __init__(
        self,
        store: JobStore,
        settings: DeliverySettings,
        config: Callable[[], ConfigSnapshot],
        senders: Mapping[Platform, Sender],
        *,
        clock: Clock = utc_now,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        self._config = config
        self._senders = senders
        self._clock = clock
        self._rng = rng or random.Random()
        self._tasks: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._last_warning = -float("inf")
        self.counts: Counter[str] = Counter()
        self.last_poll_ok = time.monotonic()

    # --- the loop ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Asks `run` to stop claiming and to finish (see `run`)."""
        self._stopping = True
        self._wakeup.set()

    @property
    def in_flight(self) -> int:
        """Jobs being processed now."""
        return len(self._tasks)

    async def run(self) -> None:
        """Polls and processes until `stop()`; then gives jobs in progress the shutdown grace,
        cancels what is left and gives those jobs back to the queue."""
        renewer = asyncio.create_task(self._renew_leases(), name="nudge-push-leases")
        try:
            while not self._stopping:
                claimed, asked = await self._poll()
                if claimed and claimed == asked:
                    await asyncio.sleep(0)  # more may be due: poll again at once
                    continue
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self._settings.poll_interval_s)
        finally:
            await self._drain()
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer

    async def run_once(self) -> int:
        """Claims one batch and processes it to the end; returns the number of jobs claimed.
        For tests and one-shot runs."""
        claimed, _ = await self._poll()
        if self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        return claimed

    async def _poll(self) -> tuple[int, int]:
        free = min(self._settings.batch_size, self._settings.max_jobs_in_flight - len(self._tasks))
        if free <= 0:
            return 0, 0
        try:
            jobs = await self._store.claim(self._clock(), free, self._settings.lease_s)
        except _STORE_DOWN as exc:
            self._warn("push_poll_failed", exc)
            return 0, free
        self.last_poll_ok = time.monotonic()
        for job in jobs:
            task = asyncio.create_task(self._process(job), name=f"nudge-push-{job.job_id}")
            self._tasks[job.job_id] = task
            task.add_done_callback(functools.partial(self._done, job.job_id))
        return len(jobs), free

    def _done(self, job_id: uuid.UUID, _task: asyncio.Task[None]) -> None:
        self._tasks.pop(job_id, None)
        self._wakeup.set()

    async def _drain(self) -> None:
        if not self._tasks:
            return
        log.info("push_worker_draining", extra={"jobs": len(self._tasks)})
        _, pending = await asyncio.wait(
            list(self._tasks.values()), timeout=self._settings.shutdown_grace_s
        )
        if not pending:
            return
        left = [job_id for job_id, task in self._tasks.items() if task in pending]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        log.warning("push_worker_cancelled_jobs", extra={"jobs": len(left)})

    async def _renew_leases(self) -> None:
        interval = self._settings.lease_s / 3
        while True:
            await asyncio.sleep(interval)
            held = list(self._tasks)
            try:
                renewed = await self._store.renew(held, self._clock(), self._settings.lease_s)
            except _STORE_DOWN as exc:
                self._warn("push_lease_renewal_failed", exc)
                continue
            if renewed < len(held):
                log.warning("push_leases_lost", extra={"held": len(held), "renewed": renewed})

    def _warn(self, event: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_warning >= WARN_INTERVAL_S:
            self._last_warning = now
            log.warning(event, extra={"error": f"{type(exc).__name__}: {exc}"})

    # --- one job -------------------------------------------------------------------------------

    async def _process(self, job: Job) -> None:
        try:
            await self._process_job(job)
        except asyncio.CancelledError:
            # Shutting down: whatever was marked 'sending' stays so (and becomes 'unknown');
            # the rest goes back to the queue for the next worker.
            with contextlib.suppress(Exception):
                await asyncio.shield(
                    self._store.release(
                        job,
                        "retrying",
                        self._clock(),
                        run_after=self._clock(),
                        detail="worker shut down",
                        event=False,
                    )
                )
            raise
        except _STORE_DOWN as exc:
            # The lease runs out and the job is taken again; nothing was lost.
            self._warn("push_job_store_unavailable", exc)
        except Exception:
            log.exception("push_job_failed", extra={"job_id": str(job.job_id)})

    async def _process_job(self, job: Job) -> None:
        now = self._clock()
        if now >= job.expires_at:
            await self._finish(job, "expired", now, f"expired at {job.expires_at.isoformat()}")
            return
        if await self._quiet_hours(job, now):
            return
        deliveries = await self._store.deliveries(job, now)
        if not deliveries:
            await self._finish(job, "failed", now, "the user has no active device")
            return
        for delivery in deliveries:
            if delivery.status == "sending" and await self._store.orphan_to_unknown(delivery, now):
                self.counts["unknown"] += 1
                log.error(
                    "push_delivery_unknown",
                    extra={
                        "job_id": str(job.job_id),
                        "device_id": str(delivery.device_id),
                        "why": "a previous attempt never reported back; not sent again",
                        "previous_worker": delivery.worker,
                    },
                )
        due = [
            d
            for d in deliveries
            if d.status in ("pending", "retrying") and (d.run_after is None or d.run_after <= now)
        ]
        await asyncio.gather(*(self._deliver(job, d) for d in due))
        await self._settle(job)

    async def _quiet_hours(self, job: Job, now: dt.datetime) -> bool:
        """Defers (or drops) a job that is due inside the user's quiet hours; True if it did."""
        snapshot = self._config()
        app = snapshot.apps.get(job.app_id)
        tz = zone(job.time_zone)
        if app is None or tz is None:
            return False
        quiet = quiet_hours(now, tz, app.policy.quiet_start, app.policy.quiet_end)
        if not quiet.active or quiet.ends_at is None:
            return False
        campaign = snapshot.campaign(job.app_id, job.campaign_id)
        if campaign is not None and campaign.quiet_hours_policy is QuietHoursPolicy.DROP:
            await self._finish(job, "dropped", now, "inside quiet hours; the campaign drops")
            return True
        if quiet.ends_at >= job.expires_at:
            await self._finish(job, "expired", now, "quiet hours end after the job expires")
            return True
        detail = f"inside quiet hours; deferred to {quiet.ends_at.isoformat()}"
        if await self._store.release(job, "deferred", now, run_after=quiet.ends_at, detail=detail):
            self.counts["deferred"] += 1
            log.info("push_deferred", extra={"job_id": str(job.job_id), "until": quiet.ends_at})
        return True

    async def _finish(self, job: Job, status: str, now: dt.datetime, detail: str) -> None:
        if await self._store.release(job, status, now, detail=detail):
            self.counts[status] += 1
            log.info(f"push_job_{status}", extra={"job_id": str(job.job_id), "detail": detail})

    async def _settle(self, job: Job) -> None:
        now = self._clock()
        deliveries = await self._store.deliveries(job, now)
        statuses = [d.status for d in deliveries]
        if "sending" in statuses:
            # A result could not be recorded: keep the lease until it runs out; whoever takes
            # the job then turns the row into 'unknown'.
            return
        waiting = [d for d in deliveries if d.status in ("pending", "retrying")]
        if waiting:
            next_at = min(d.run_after or now for d in waiting)
            await self._store.release(job, "retrying", now, run_after=next_at, event=False)
            return
        final = job_status_of(statuses)
        summary = ", ".join(f"{s} {n}" for s, n in sorted(Counter(statuses).items()))
        await self._store.release(job, final, now, detail=summary)

    # --- one delivery --------------------------------------------------------------------------

    async def _deliver(self, job: Job, delivery: Delivery) -> None:
        sender = self._senders.get(delivery.platform)
        if sender is None or isinstance(sender, DisabledSender):
            reason = sender.reason if sender else f"no provider for {delivery.platform.value}"
            await self._store.settle_unattempted(delivery, "dead_lettered", reason, self._clock())
            self.counts["dead_lettered"] += 1
            log.error(
                "push_dead_lettered",
                extra={
                    "job_id": str(job.job_id),
                    "device_id": str(delivery.device_id),
                    "detail": reason,
                },
            )
            return
        content = PushContent.from_job(str(job.job_id), job.payload)
        async with sender.slot():
            now = self._clock()
            attempt_id = uuid.uuid4()
            mark = await self._store.mark_sending(delivery, attempt_id, now)
            if isinstance(mark, str):
                if mark == "skipped":
                    self.counts["skipped"] += 1
                return
            result = await sender.send(
                token=delivery.token,
                environment=delivery.environment,
                content=content,
                notification_id=notification_id(job.job_id, delivery.device_id),
                ttl_s=int((job.expires_at - now).total_seconds()),
            )
        await self._record(job, delivery, attempt_id, mark, result)

    async def _record(
        self,
        job: Job,
        delivery: Delivery,
        attempt_id: uuid.UUID,
        attempt: int,
        result: SendResult,
    ) -> None:
        now = self._clock()
        run_after: dt.datetime | None = None
        retire: str | None = None
        detail = result.detail
        if result.status is SendStatus.SENT:
            status = "sent"
        elif result.status is SendStatus.TOKEN_GONE:
            status, retire = "token_retired", result.detail
        elif result.status is SendStatus.REJECTED:
            status = "failed"
        elif result.status is SendStatus.MISCONFIGURED:
            status = "dead_lettered"
        elif result.status is SendStatus.UNKNOWN:
            status = "unknown"
        elif attempt >= self._settings.max_attempts:
            status, detail = "dead_lettered", f"{detail} (after {attempt} attempts)"
        else:
            delay = retry_delay(
                attempt,
                base_s=self._settings.backoff_base_s,
                max_s=self._settings.backoff_max_s,
                retry_after_s=result.retry_after_s,
                max_retry_after_s=self._settings.max_retry_after_s,
                rng=self._rng,
            )
            run_after = now + dt.timedelta(seconds=delay)
            status = "retrying"
            if run_after >= job.expires_at:
                status, run_after = "dead_lettered", None
                detail = f"{detail} (the next attempt would come after the job expires)"
        fields = {
            "job_id": str(job.job_id),
            "device_id": str(delivery.device_id),
            "platform": delivery.platform.value,
            "attempt": attempt,
            "detail": detail,
        }
        deadline = time.monotonic() + RECORD_PATIENCE_S
        pause = 0.1
        while True:
            try:
                recorded = await self._store.record(
                    delivery,
                    attempt_id,
                    status,
                    now,
                    detail=detail,
                    provider_id=result.provider_id,
                    run_after=run_after,
                    retire_reason=retire,
                    gone_since=result.gone_since,
                )
                break
            except _STORE_DOWN as exc:
                if time.monotonic() >= deadline:
                    log.error(
                        "push_result_not_recorded",
                        extra={**fields, "status": status, "error": str(exc)},
                    )
                    return
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)
        if not recorded:
            log.warning("push_result_superseded", extra={**fields, "status": status})
            return
        self.counts[status] += 1
        if status == "unknown":
            log.error("push_delivery_unknown", extra={**fields, "why": "possibly sent"})
        elif status in ("dead_lettered", "failed", "token_retired"):
            log.warning(f"push_{status}", extra=fields)
        else:
            log.info(f"push_{status}", extra={**fields, "run_after": run_after})


@dataclass
class RunningWorker:
    """A started worker and what tests and the CLI may look at."""

    worker: Worker
    config: ConfigCache
    senders: Mapping[Platform, Sender]
    health_port: int | None


@contextlib.asynccontextmanager
async def running_worker(
    settings: DeliverySettings, postgres: PostgresSettings
) -> AsyncIterator[RunningWorker]:
    """Opens PostgreSQL, the configuration cache, the providers and the health service, and
    runs the worker until exit; on exit it stops claiming, lets jobs in progress finish (the
    shutdown grace) and closes everything in reverse order."""
    from .health import WorkerHealth  # a grpc server: loaded only by the worker process

    async with contextlib.AsyncExitStack() as stack:
        try:
            pool = await asyncpg.create_pool(
                postgres.dsn,
                min_size=postgres.min_connections,
                max_size=postgres.max_connections,
                command_timeout=postgres.command_timeout_s,
            )
        except (OSError, asyncpg.PostgresError) as exc:
            raise StoreUnavailable(f"postgresql: cannot connect: {exc}") from exc
        stack.push_async_callback(pool.close)
        config = await stack.enter_async_context(
            ConfigCache(
                ConfigStore(pool), DecisionSettings(config_refresh_s=settings.config_refresh_s)
            )
        )
        senders: dict[Platform, Sender] = {}
        if settings.apns.enabled:
            senders[Platform.IOS] = await stack.enter_async_context(
                ApnsSender(
                    settings.apns,
                    connect_timeout_s=settings.connect_timeout_s,
                    send_timeout_s=settings.send_timeout_s,
                )
            )
        else:
            senders[Platform.IOS] = DisabledSender("apns", "apns is not configured")
        if settings.fcm.enabled:
            senders[Platform.ANDROID] = await stack.enter_async_context(
                FcmSender(
                    settings.fcm,
                    connect_timeout_s=settings.connect_timeout_s,
                    send_timeout_s=settings.send_timeout_s,
                )
            )
        else:
            senders[Platform.ANDROID] = DisabledSender("fcm", "fcm is not configured")
        worker = Worker(
            JobStore(pool, settings.worker_id), settings, lambda: config.snapshot, senders
        )
        health_port: int | None = None
        if settings.health_listen:
            health = await stack.enter_async_context(
                WorkerHealth(worker, settings.health_listen, settings.poll_interval_s)
            )
            health_port = health.port
        task = asyncio.create_task(worker.run(), name="nudge-push-worker")

        async def stop() -> None:
            worker.stop()
            await task

        stack.push_async_callback(stop)
        log.info(
            "push_worker_started",
            extra={
                "worker_id": settings.worker_id,
                "apns": settings.apns.enabled,
                "fcm": settings.fcm.enabled,
                "health_port": health_port,
            },
        )
        yield RunningWorker(worker, config, senders, health_port)
    log.info("push_worker_stopped", extra={"counts": dict(worker.counts)})


async def serve_worker(settings: DeliverySettings, postgres: PostgresSettings) -> None:
    """Runs the worker until SIGTERM or SIGINT, then shuts down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with running_worker(settings, postgres):
        await stop.wait()
        log.info("push_worker_stopping")


def run_worker(settings: DeliverySettings, postgres: PostgresSettings) -> None:
    """The `nudge worker` entry point."""
    configure_logging()
    asyncio.run(serve_worker(settings, postgres))
