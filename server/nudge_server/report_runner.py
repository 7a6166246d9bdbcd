"""Arm reports computed in child processes, so that a report never slows the decisions.

A report reads and decodes every shown decision of its range (hundreds of thousands of rows),
then computes its statistics: seconds of CPU. On the server's event loop, or in a thread of the
server's process (which holds the GIL as it goes), that work stalls Decide. So the server hands
each report to a child process: a `ProcessPoolExecutor` of `ReportSettings.workers` processes,
spawned (never forked from a process with an event loop, grpc threads and open sockets) at the
first report and stopped with the server. The child opens its own PostgreSQL pool from the DSN
(with the report's command timeout), fetches, builds the report, converts it to its proto message
and sends back the serialized bytes: cheap to pickle, and all the server does with them is parse.

Admission: at most `workers` reports run at once; up to `max_waiting` more wait for a worker, in
the order they came; beyond that a report is refused at once (ResourceExhausted), as is one of
an app that has `max_per_app` reports running or waiting already.

Cancellation (the RPC cancelled, or past its deadline): a waiting report just leaves the queue,
and one handed to the pool but not started is dropped. A running one is told to stop through a
flag its child shares with the server: a query in flight is cancelled (asyncpg cancels it in
PostgreSQL), and the computation stops at its next checkpoint (between the report's stages and
between the timeline's buckets; only the decoding of rows that have arrived runs to its end).
Its worker stays taken until its child has stopped, so the next report waits for that: a slot is
freed only when its child is free again, and cancelled reports never pile up behind busy workers.

On exit (after the server has stopped serving) running reports are told to stop, queued ones are
dropped, and a child that has not stopped within STOP_GRACE_S is terminated.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from types import TracebackType
from typing import Any, Self

from .errors import NudgeError, ReportFailed, ResourceExhausted
from .logs import configure_logging
from .postgres import open_pool
from .report import ReportQuery, build_report
from .report_api import report_to_proto
from .report_store import ReportStore
from .settings import PostgresSettings, ReportSettings

log = logging.getLogger(__name__)

#: On exit, a child still computing after this long is terminated.
STOP_GRACE_S = 5.0
#: How often a child looks at its cancel flag while it waits for PostgreSQL.
WATCH_INTERVAL_S = 0.05
#: The application_name of a report's PostgreSQL connection (pg_stat_activity shows it).
APPLICATION_NAME = "nudge-report"


class ReportCancelled(Exception):
    """Raised in a child whose report was cancelled: it stopped early. No caller sees it (the
    caller has gone); the runner counts it."""


# --- in the child ------------------------------------------------------------------------------


class _Child:
    """The state of a child process, set by its initializer."""

    #: The cancel flags shared with the server, one byte per slot.
    flags: Any = None


def _start_child(flags: Any, log_level: int) -> None:
    """The initializer of each child process."""
    _Child.flags = flags
    # Ctrl-C in a terminal reaches the whole process group: the server decides when to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    configure_logging(logging.getLevelName(log_level))


PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """On Linux, asks the kernel to SIGTERM this child when the server dies (kill -9 included),
    so that no report process outlives it holding a PostgreSQL connection."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the server died before the request took effect
        os._exit(1)


def _checkpoint(slot: int) -> Callable[[], None]:
    def check() -> None:
        if _Child.flags[slot]:
            raise ReportCancelled

    return check


async def _watch(slot: int, task: asyncio.Task[Any]) -> None:
    """Cancels `task` (the report, waiting for PostgreSQL) once its slot's flag is set."""
    while not _Child.flags[slot]:
        await asyncio.sleep(WATCH_INTERVAL_S)
    task.cancel()


def compute_report(postgres: PostgresSettings, query: ReportQuery, slot: int) -> bytes:
    """Runs in a child process: the report of `query` as its serialized ArmReport message.

    Raises the report's domain errors (NotFound, StoreUnavailable, StoreTimeout), which pickle;
    ReportCancelled when `slot`'s flag was set; ReportFailed for anything else (logged here)."""
    return asyncio.run(_compute(postgres, query, slot))


async def _compute(postgres: PostgresSettings, query: ReportQuery, slot: int) -> bytes:
    started = time.monotonic()
    fields = {
        "app_id": query.app_id,
        "campaign_id": query.campaign_id,
        "slot": slot,
        "pid": os.getpid(),
    }
    log.info("report_started", extra=fields)
    check = _checkpoint(slot)
    current = asyncio.current_task()
    assert current is not None
    watcher = asyncio.create_task(_watch(slot, current))
    stage = "fetch"
    try:
        check()  # cancelled while it waited in the pool's queue
        async with open_pool(postgres, max_size=1, application_name=APPLICATION_NAME) as pool:
            store = ReportStore(pool)
            campaign = await store.campaign(query)
            data = await store.fetch(campaign, query)
        # From here the work does not yield to the event loop: only checkpoints stop it.
        watcher.cancel()
        stage = "compute"
        report = build_report(campaign, query, data, checkpoint=check)
        check()
        payload: bytes = report_to_proto(report).SerializeToString()
    except (ReportCancelled, asyncio.CancelledError):
        if not _Child.flags[slot]:
            raise
        log.info(
            "report_cancelled",
            extra={**fields, "stage": stage, "seconds": round(time.monotonic() - started, 3)},
        )
        raise ReportCancelled from None
    except NudgeError as exc:
        log.info("report_refused", extra={**fields, "error": str(exc)})
        raise
    except Exception as exc:
        log.exception("report_crashed", extra=fields)
        raise ReportFailed(
            f"the report failed ({type(exc).__name__}); the server log has the details"
        ) from None
    finally:
        watcher.cancel()
    log.info(
        "report_finished",
        extra={
            **fields,
            "decisions": report.decisions,
            "bytes": len(payload),
            "seconds": round(time.monotonic() - started, 3),
        },
    )
    return payload


# --- in the server -----------------------------------------------------------------------------


class ReportRunner:
    """Computes reports in child processes (see the module docstring). An async context
    manager: the processes start with the first report and stop on exit."""

    def __init__(self, postgres: PostgresSettings, settings: ReportSettings) -> None:
        self._postgres = dataclasses.replace(postgres, command_timeout_s=settings.command_timeout_s)
        self._settings = settings
        self._context = multiprocessing.get_context("spawn")
        self._flags: Any = self._context.RawArray(ctypes.c_byte, settings.workers)
        self._slots = asyncio.Semaphore(settings.workers)
        self._free = list(range(settings.workers))
        self._waiting = 0
        #: Reports running or waiting, by app (at most `max_per_app` each).
        self._by_app: Counter[str] = Counter()
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None
        self._closed = False
        #: Reports by how they ended: finished, cancelled (stopped early in a child), refused
        #: (too many), failed (domain errors included).
        self.counts: Counter[str] = Counter()

    @property
    def running(self) -> int:
        """Slots taken: reports running, or cancelled ones whose child has not stopped yet."""
        return self._settings.workers - len(self._free)

    @property
    def waiting(self) -> int:
        """Reports waiting for a free slot."""
        return self._waiting

    async def report(self, query: ReportQuery) -> bytes:
        """The serialized ArmReport message of a validated query, computed in a child process.
        ResourceExhausted when all workers are taken and `max_waiting` reports wait already;
        the report's own errors (NotFound, StoreUnavailable, StoreTimeout) as they are."""
        if self._closed:
            raise ReportFailed("the server is stopping: no more reports")
        if self._slots.locked() and self._waiting >= self._settings.max_waiting:
            self.counts["refused"] += 1
            raise ResourceExhausted(
                f"{self.running} reports are running and {self._waiting} waiting, as many as "
                "this server takes (NUDGE_REPORT_WORKERS, NUDGE_REPORT_MAX_WAITING): retry later"
            )
        if self._by_app[query.app_id] >= self._settings.max_per_app:
            self.counts["refused"] += 1
            raise ResourceExhausted(
                f"app {query.app_id!r} has {self._by_app[query.app_id]} reports running or "
                "waiting, as many as one app may (NUDGE_REPORT_MAX_PER_APP): retry later"
            )
        self._by_app[query.app_id] += 1
        try:
            return await self._admitted(query)
        finally:
            self._by_app[query.app_id] -= 1
            if not self._by_app[query.app_id]:
                del self._by_app[query.app_id]

    async def _admitted(self, query: ReportQuery) -> bytes:
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        slot = self._free.pop()
        try:
            future = self._submit(query, slot)
        except BaseException:
            self._release(slot, None)
            raise
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            # The caller gave up. Not started yet: wrap_future cancelled it. Started: its child
            # stops at its next checkpoint, and the slot frees when it has.
            self._flags[slot] = 1
            raise
        except BrokenProcessPool as exc:
            raise ReportFailed(
                "the report process died (out of memory, or killed); the next report starts a "
                "new one"
            ) from exc
        except ReportCancelled as exc:  # not by this caller: the runner is closing
            raise ReportFailed("the report was stopped: the server is shutting down") from exc

    def _submit(self, query: ReportQuery, slot: int) -> concurrent.futures.Future[bytes]:
        self._flags[slot] = 0
        if self._executor is None:
            self._executor = concurrent.futures.ProcessPoolExecutor(
                max_workers=self._settings.workers,
                mp_context=self._context,
                initializer=_start_child,
                initargs=(self._flags, logging.getLogger().getEffectiveLevel()),
            )
        try:
            future = self._executor.submit(compute_report, self._postgres, query, slot)
        except BrokenProcessPool as exc:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
            raise ReportFailed(
                "the report process had died; the next report starts a new one"
            ) from exc
        loop = asyncio.get_running_loop()
        executor = self._executor

        def settled(done: concurrent.futures.Future[bytes]) -> None:
            # Runs in the pool's thread, or here when the future was cancelled before it ran.
            try:
                loop.call_soon_threadsafe(self._release, slot, done, executor)
            except RuntimeError:  # the loop has closed: nothing waits for the slot any more
                pass

        future.add_done_callback(settled)
        return future

    def _release(
        self,
        slot: int,
        done: concurrent.futures.Future[bytes] | None,
        executor: concurrent.futures.ProcessPoolExecutor | None = None,
    ) -> None:
        if done is not None:
            if done.cancelled():
                self.counts["cancelled"] += 1
            else:
                error = done.exception()
                if error is None:
                    self.counts["finished"] += 1
                elif isinstance(error, ReportCancelled):
                    self.counts["cancelled"] += 1
                else:
                    self.counts["failed"] += 1
                    if isinstance(error, BrokenProcessPool) and self._executor is executor:
                        # The pool is unusable: the next report starts a new one.
                        if executor is not None:
                            executor.shutdown(wait=False, cancel_futures=True)
                        self._executor = None
        self._free.append(slot)
        self._slots.release()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stops the children: running reports are told to stop, queued ones are dropped, and a
        child still busy after STOP_GRACE_S is terminated."""
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is None:
            return
        for slot in range(self._settings.workers):
            self._flags[slot] = 1
        # The pool's processes; `shutdown` forgets them (and 3.11 has no public handle on them).
        processes = list((executor._processes or {}).values())
        executor.shutdown(wait=False, cancel_futures=True)
        alive = {p.sentinel: p for p in processes}
        deadline = time.monotonic() + STOP_GRACE_S
        while alive and (remaining := deadline - time.monotonic()) > 0:
            ended: list[Any] = await asyncio.to_thread(
                multiprocessing.connection.wait, list(alive), remaining
            )
            for sentinel in ended:
                alive.pop(sentinel, None)
        for process in alive.values():
            log.warning("report_process_terminated", extra={"pid": process.pid})
            process.terminate()
        await asyncio.to_thread(executor.shutdown, wait=True)
