"""The decision log writer: decisions, outcomes, push jobs and policy snapshots, batched into
PostgreSQL.

The request path only appends to an in-memory buffer (`add_decision`, `add_outcome`,
`add_snapshot`: never blocking, never raising). A background task writes the buffer in batches,
one transaction per batch: rows are COPYed into temporary tables and moved with `INSERT ...
SELECT ... ON CONFLICT DO NOTHING`, so that a batch replayed after an uncertain commit never
duplicates a row (log_store.py).

When PostgreSQL is down or hangs, rows go to a bounded on-disk spool (`spool.Spool`, when the
writer has one; log_spooling.py) and are written from there, oldest segment first, once
PostgreSQL answers again, by this process or, after a restart, by the next one using the same
spool directory. Without a spool, or when it is full, rows stay in memory (up to
`LogSettings.max_buffered_rows`; beyond that the newest are dropped, counted and logged). The
writer retries with exponential back-off. A batch that PostgreSQL refuses for a data reason is
bisected, so that the bad row is isolated, logged and counted in `rows_rejected` while the
others land.

What a kill -9 can lose: the rows in memory, that is rows added in the last `spill_after_s`
(default 1 s) while PostgreSQL answers slowly or not at all, or in the last flush interval (0.2
s) once the writer has seen it fail, plus, while PostgreSQL answers, the rows not yet committed
(at most one flush interval's worth and one batch). Everything in the spool survives (records
are fsynced; a torn last record is detected by its checksum and skipped).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import asyncpg

from .errors import StoreUnavailable
from .log_buffer import InFlight, LogBuffer
from .log_encoding import describe_entry
from .log_rows import DecisionRow, LogEntry, OutcomeRow, PolicySnapshotRow, PushJobRow
from .log_spooling import LogSpooler
from .log_store import LogStore
from .logs import EveryFewSeconds
from .settings import LogSettings
from .spool import Spool, SpoolStats

log = logging.getLogger(__name__)

#: One write attempt (acquire, COPY, INSERT, COMMIT) may take this long before it counts as a
#: connection problem; a PostgreSQL that hangs must not hold the queue forever.
ATTEMPT_TIMEOUT_S = 15.0
#: How long `__aexit__` keeps retrying to write what is left before giving up loudly.
DRAIN_TIMEOUT_S = 10.0
BACKOFF_INITIAL_S = 0.1
BACKOFF_MAX_S = 5.0
#: At most one "buffer full" error line per this many seconds (the count says how many).
DROP_LOG_INTERVAL_S = 5.0
#: How often a running writer looks for spool directories of dead processes to adopt.
ADOPT_INTERVAL_S = 30.0
#: How long a cancelled write may take to clean up at shutdown before it is left behind.
CANCEL_GRACE_S = 1.0
SPILLER_TASK = "nudge-decision-log-spill"


@dataclass(frozen=True)
class LogStatus:
    """The log writer's figures at one moment (what `nudge status` shows)."""

    #: Rows in memory, not yet in PostgreSQL nor in the spool (a kill -9 loses these).
    rows_in_memory: int
    rows_written: int
    rows_duplicate: int
    rows_dropped: int
    rows_rejected: int
    #: Rows moved to the spool since start, and rows of spool segments written to PostgreSQL.
    rows_spooled: int
    rows_replayed: int
    #: The last write to PostgreSQL failed (a connection problem or a timeout).
    postgres_failing: bool
    last_error: str | None
    #: The oldest row this process has not stored in PostgreSQL yet (memory or spool).
    oldest_pending_at: dt.datetime | None
    #: None when the writer has no spool.
    spool: SpoolStats | None


class LogWriter:
    """Buffers decision-log rows and writes them to PostgreSQL in batches, spooling them to disk
    while PostgreSQL cannot take them.

    An async context manager: entering starts the background tasks, leaving stops them and
    writes what is left to PostgreSQL or, when it is not answering, to the spool (without a
    spool: retrying for up to `drain_timeout_s`, then logging every row it could not write at
    ERROR). It never closes the pool or the spool it was handed.

    With a spool, a row goes to disk when a write of it fails, when it has waited in memory
    longer than `LogSettings.spill_after_s` (a hung PostgreSQL), or at once while PostgreSQL is
    failing. Spool segments are written to PostgreSQL, oldest first, once it answers again, and
    deleted only after their rows are committed; rows are idempotent (ON CONFLICT), so a segment
    written twice (a crash between commit and delete) stores every row once. When the spool is
    full, rows stay in memory up to `max_buffered_rows`, then new rows are dropped, counted and
    logged; decisions are never held up.

    Counters: `rows_written` (new rows stored), `rows_duplicate` (rows already stored, skipped),
    `rows_dropped` (not kept: memory and spool full, or left at shutdown), `rows_rejected`
    (refused by PostgreSQL for a data reason, or unreadable in the spool), `rows_spooled`,
    `rows_replayed`; `pending` (in memory, waiting to be written).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: LogSettings,
        *,
        spool: Spool | None = None,
        drain_timeout_s: float = DRAIN_TIMEOUT_S,
        attempt_timeout_s: float = ATTEMPT_TIMEOUT_S,
    ) -> None:
        self._settings = settings
        self._drain_timeout_s = drain_timeout_s
        self._buffer = LogBuffer(settings.max_buffered_rows)
        self._store = LogStore(pool, self._buffer, attempt_timeout_s)
        self._spooler = (
            None if spool is None else LogSpooler(spool, self._buffer, self._store, settings)
        )
        self._wakeup = asyncio.Event()
        self._spill_wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._entered = False
        self._closed = False
        self._postgres_failing = False
        self._last_error: str | None = None
        self._drop_log = EveryFewSeconds(DROP_LOG_INTERVAL_S)
        self._drops_unlogged = 0

    # --- the figures ---------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Rows in memory (buffered or being written), neither stored nor spooled."""
        return self._buffer.pending

    @property
    def rows_written(self) -> int:
        return self._store.rows_written

    @property
    def rows_duplicate(self) -> int:
        return self._store.rows_duplicate

    @property
    def rows_dropped(self) -> int:
        return self._buffer.rows_dropped

    @property
    def rows_rejected(self) -> int:
        unreadable = self._spooler.rows_unreadable if self._spooler is not None else 0
        return self._store.rows_rejected + unreadable

    @property
    def rows_spooled(self) -> int:
        return self._buffer.rows_spooled

    @property
    def rows_replayed(self) -> int:
        return self._spooler.rows_replayed if self._spooler is not None else 0

    def _spool_stats(self) -> SpoolStats | None:
        return self._spooler.stats if self._spooler is not None else None

    def oldest_pending_at(self) -> dt.datetime | None:
        """When the oldest row this process still has to store (in memory or in its spool) was
        added; None when it has none. Cheap: no I/O."""
        spool = self._spool_stats()
        stamps = [
            stamp
            for stamp in (self._buffer.oldest_ms(), spool.oldest_stamp_ms if spool else None)
            if stamp is not None
        ]
        if not stamps:
            return None
        return dt.datetime.fromtimestamp(min(stamps) / 1000, dt.UTC)

    def status(self) -> LogStatus:
        """The figures now."""
        return LogStatus(
            rows_in_memory=self._buffer.pending,
            rows_written=self.rows_written,
            rows_duplicate=self.rows_duplicate,
            rows_dropped=self.rows_dropped,
            rows_rejected=self.rows_rejected,
            rows_spooled=self.rows_spooled,
            rows_replayed=self.rows_replayed,
            postgres_failing=self._postgres_failing,
            last_error=self._last_error,
            oldest_pending_at=self.oldest_pending_at(),
            spool=self._spool_stats(),
        )

    # --- the request path: synchronous, never blocks, never raises -----------------------------

    def add_decision(self, row: DecisionRow, push_job: PushJobRow | None = None) -> None:
        """Buffers a decision and, for a granted push, its push job (written in one
        transaction)."""
        self._add(LogEntry(seq=0, decision=row, push_job=push_job))

    def add_outcome(self, row: OutcomeRow) -> None:
        """Buffers an outcome."""
        self._add(LogEntry(seq=0, outcome=row))

    def add_snapshot(self, row: PolicySnapshotRow) -> None:
        """Buffers a policy snapshot. It may land after the decisions that name it (their batch
        is written first, or it waits in the spool longer): reports look snapshots up when they
        run."""
        self._add(LogEntry(seq=0, snapshot=row))

    def _add(self, entry: LogEntry) -> None:
        try:
            if self._closed:
                self._buffer.drop(entry)
            elif self._buffer.add(entry):
                if self._buffer.pending >= self._settings.batch_size:
                    self._wakeup.set()
                return
            self._log_drop(entry)
        except Exception:  # the request path must never fail because of the log
            log.exception("decision_log_add_failed")

    def _log_drop(self, entry: LogEntry) -> None:
        self._drops_unlogged += entry.rows
        if self._drop_log.due() is not None:
            spool = self._spool_stats()
            log.error(
                "decision_log_closed" if self._closed else "decision_log_buffer_full",
                extra={
                    "dropped": self._drops_unlogged,
                    "dropped_total": self.rows_dropped,
                    "pending": self._buffer.pending,
                    "max_buffered_rows": self._settings.max_buffered_rows,
                    "spool_full": bool(spool and spool.full),
                    **entry.identity(),
                },
            )
            self._drops_unlogged = 0

    # --- writing -------------------------------------------------------------------------------

    async def flush(self) -> None:
        """Writes every row buffered in memory at the time of the call to PostgreSQL.

        Raises StoreUnavailable when PostgreSQL cannot be written; the rows then stay in memory
        (and go to the spool in the background, if there is one).
        """
        try:
            await self._drain(self._buffer.last_seq)
        except Exception as exc:
            raise StoreUnavailable(
                f"decision log not written: {type(exc).__name__}: {exc}"
            ) from exc

    async def _drain(self, until_seq: int) -> None:
        """Writes batches until every entry in memory up to `until_seq` is settled. Raises on a
        connection problem (the unwritten entries are back at the front of the buffer)."""
        while True:
            # Check under the lock: a batch in flight elsewhere is out of the buffer until it
            # is either written or put back.
            async with self._store.lock:
                if not self._buffer.waiting(until_seq):
                    return
                await self._write_next_batch(until_seq)

    async def _write_next_batch(self, until_seq: int) -> None:
        batch = self._buffer.take_batch(until_seq, self._settings.batch_size)
        if not batch:
            return
        self._buffer.in_flight = InFlight(batch, time.monotonic(), min(e.added_ms for e in batch))
        try:
            await self._store.write_entries(batch)
        except BaseException:
            self._buffer.put_back(batch)
            raise
        finally:
            self._buffer.in_flight = None

    # --- the background tasks ------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._entered or self._closed:
            raise RuntimeError("a LogWriter can be entered once")
        self._entered = True
        if self._spooler is not None:
            await self._spooler.load()
        self._tasks.append(asyncio.create_task(self._run(), name="nudge-decision-log"))
        if self._spooler is not None:
            self._tasks.append(
                asyncio.create_task(self._run_spiller(self._spooler), name=SPILLER_TASK)
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stops the background tasks and stores everything left (see the class docstring).
        Bounded in time even when PostgreSQL hangs: what it cannot write by the drain deadline
        goes to the spool (or, without one, is logged as lost)."""
        if self._closed:
            return
        deadline = time.monotonic() + self._drain_timeout_s
        self._stopping.set()
        self._wakeup.set()
        self._spill_wakeup.set()
        stuck = False
        for task in self._tasks:
            # The spiller is never cancelled (its worker thread could not be) and never hangs;
            # the writer may be in a write to a PostgreSQL that hangs: past the deadline it is
            # cancelled and, if even that does not end it, left behind.
            spiller = task.get_name() == SPILLER_TASK
            timeout = None if spiller else max(0.0, deadline - time.monotonic())
            if not await _finish(task, timeout):
                stuck = True
                log.error("decision_log_writer_stuck", extra={"pending": self._buffer.pending})
        self._tasks.clear()
        failures = 0
        # A stuck writer holds the write lock: straight to the spool then.
        while self._buffer and not stuck and not (self._spooler and self._postgres_failing):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            drain = asyncio.create_task(self._drain(self._buffer.last_seq))
            try:
                if not await _finish(drain, remaining, reraise=True):
                    stuck = True
                    self._note_failure(TimeoutError("PostgreSQL did not answer in time"))
                    break
            except Exception as exc:  # noqa: BLE001 - unavailable or worse: retry until the deadline
                failures += 1
                self._note_failure(exc)
                log.warning(
                    "decision_log_drain_retry",
                    extra={
                        "error": f"{type(exc).__name__}: {exc}",
                        "pending": self._buffer.pending,
                    },
                )
                if self._spooler is not None:
                    break  # no waiting: the spool keeps them
                delay = min(_backoff(failures), deadline - time.monotonic())
                if delay > 0:
                    await asyncio.sleep(delay)
        if self._spooler is not None and self._buffer.unstored():
            try:
                await self._spooler.spill(everything=True, even_if_full=True)
            except Exception:
                log.exception("decision_log_spill_failed")
            if not self._buffer.unstored():
                stats = self._spooler.stats
                log.warning(
                    "decision_log_spooled_at_shutdown",
                    extra={"spool_rows": stats.rows if stats else None},
                )
        self._closed = True
        self._give_up()

    def _give_up(self) -> None:
        lost = self._buffer.let_go()
        if not lost:
            return
        rows = sum(e.rows for e in lost)
        log.error(
            "decision_log_rows_lost",
            extra={"rows": rows, "entries": len(lost), "drain_timeout_s": self._drain_timeout_s},
        )
        for entry in lost:
            # One line per entry, with its content, so that an operator can replay it.
            log.error(
                "decision_log_row_lost", extra={**entry.identity(), "row": describe_entry(entry)}
            )

    def _note_failure(self, exc: BaseException) -> None:
        self._postgres_failing = True
        self._last_error = f"{type(exc).__name__}: {exc}"
        self._spill_wakeup.set()

    async def _run(self) -> None:
        failures = 0
        next_adoption = time.monotonic() + ADOPT_INTERVAL_S
        spooler = self._spooler
        while not self._stopping.is_set():
            if failures:
                await _wait(self._stopping, _backoff(failures))
            elif self._buffer.pending < self._settings.batch_size and not (
                spooler and spooler.backlog()
            ):
                await _wait(self._wakeup, self._settings.flush_interval_s)
            self._wakeup.clear()
            if self._stopping.is_set():
                return
            try:
                if self._postgres_failing and not self._buffer:
                    await self._store.probe()  # cheaper than reading a spool segment to find out
                await self._drain(self._buffer.last_seq)
                if spooler is not None:
                    # One segment per round, so that rows arriving meanwhile are not held up.
                    await spooler.replay_next_segment()
                    if time.monotonic() >= next_adoption:
                        next_adoption = time.monotonic() + ADOPT_INTERVAL_S
                        await spooler.adopt_orphans()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the task must outlive any failure
                failures += 1
                self._note_failure(exc)
                log.warning(
                    "decision_log_write_failed",
                    extra={
                        "error": f"{type(exc).__name__}: {exc}",
                        "pending": self._buffer.pending,
                        "failures": failures,
                        "retry_in_s": _backoff(failures),
                    },
                )
                continue
            if failures:
                stats = self._spool_stats()
                log.info(
                    "decision_log_recovered",
                    extra={
                        "pending": self._buffer.pending,
                        "spool_rows": stats.rows if stats else 0,
                    },
                )
            failures = 0
            self._postgres_failing = False

    async def _run_spiller(self, spooler: LogSpooler) -> None:
        tick = min(self._settings.flush_interval_s, self._settings.spill_after_s / 2)
        while not self._stopping.is_set():
            await _wait(self._spill_wakeup, tick)
            self._spill_wakeup.clear()
            if self._stopping.is_set():
                return
            stats = spooler.stats
            if stats is not None and stats.full:
                spooler.log_trouble("decision_log_spool_full", None)  # loud while it lasts
            try:
                await spooler.spill(everything=self._postgres_failing)
            except Exception:  # the task must outlive any failure
                log.exception("decision_log_spill_failed")


async def _finish(
    task: asyncio.Task[None], timeout: float | None, *, reraise: bool = False
) -> bool:
    """Waits for a task up to `timeout`, then cancels it and waits CANCEL_GRACE_S more (its
    clean-up may itself wait on a hung connection); False when it still has not ended (it is
    left running). A failure is logged, or raised when `reraise`."""
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=CANCEL_GRACE_S)
        if not done:
            return False
    if task.cancelled():
        return True
    exc = task.exception()
    if exc is not None:
        if reraise:
            raise exc
        log.error("decision_log_task_failed", exc_info=exc)
    return True


def _backoff(failures: int) -> float:
    return float(min(BACKOFF_MAX_S, BACKOFF_INITIAL_S * 2 ** min(failures - 1, 16)))


async def _wait(event: asyncio.Event, timeout: float) -> None:
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        pass
