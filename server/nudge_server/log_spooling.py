"""The log writer's side of its on-disk spool: entries waiting too long in memory go to disk, and
spool segments go to PostgreSQL, oldest first, once it answers again.

One spool operation at a time, each in a worker thread (the spool's file I/O blocks). A segment
is deleted only after its rows are committed; rows are idempotent (ON CONFLICT), so a segment
written twice (a crash between commit and delete) stores every row once.
"""

from __future__ import annotations

import asyncio
import logging
import time

from .log_buffer import LogBuffer
from .log_encoding import append_entries, read_segment
from .log_rows import LogEntry
from .log_store import LogStore
from .logs import EveryFewSeconds
from .settings import LogSettings
from .spool import Spool, SpoolError, SpoolStats

# The writer's events keep the name they have always had.
log = logging.getLogger("nudge_server.decision_log")

#: At most one "spool full" (or "spool failed") error line per this many seconds.
TROUBLE_LOG_INTERVAL_S = 5.0


class LogSpooler:
    """Moves a writer's entries between its memory (`buffer`), the spool and PostgreSQL
    (`store`). Never closes the spool it was handed.

    Counters: `rows_replayed` (rows of spool segments written to PostgreSQL), `rows_unreadable`
    (spool records that could not be decoded). `stats` is the spool's last known state.
    """

    def __init__(
        self, spool: Spool, buffer: LogBuffer, store: LogStore, settings: LogSettings
    ) -> None:
        self._spool = spool
        self._buffer = buffer
        self._store = store
        self._settings = settings
        self._lock = asyncio.Lock()  # one spool operation at a time, each in a thread
        self.stats: SpoolStats | None = None
        self._trouble_log = EveryFewSeconds(TROUBLE_LOG_INTERVAL_S)
        self._read_error_log = EveryFewSeconds(TROUBLE_LOG_INTERVAL_S)
        self.rows_replayed = 0
        self.rows_unreadable = 0

    async def load(self) -> None:
        """Reads the spool's state (what an earlier process left in it)."""
        self.stats = await asyncio.to_thread(self._spool.stats)
        if self.stats.rows:
            log.info(
                "decision_log_spool_found",
                extra={
                    "rows": self.stats.rows,
                    "bytes": self.stats.bytes,
                    "directory": str(self.stats.directory),
                },
            )

    def backlog(self) -> bool:
        """Whether the spool holds rows (as far as the last operation saw)."""
        return self.stats is not None and self.stats.rows > 0

    async def spill(self, *, everything: bool, even_if_full: bool = False) -> None:
        """Moves to the spool the entries in memory that waited longer than `spill_after_s`
        (all of them when `everything`), the batch in flight to PostgreSQL included (copied:
        should its write succeed, the spool's copy is a harmless duplicate). A full spool is not
        tried again until a segment has been written out, unless `even_if_full`."""
        async with self._lock:
            stats = self.stats
            if stats is not None and stats.full and not even_if_full:
                return
            cutoff = time.monotonic() - (0.0 if everything else self._settings.spill_after_s)
            flight = self._buffer.in_flight
            if flight is not None and flight.started <= cutoff:
                todo = [e for e in flight.entries if not e.settled and not e.spooled]
                if todo and (await self._spool_now(todo)):
                    return
            while self._buffer.stale(cutoff):
                chunk = self._buffer.take_stale(cutoff, self._settings.batch_size)
                self._buffer.spilling = chunk
                try:
                    refused = await self._spool_now(chunk)
                except BaseException:
                    self._buffer.put_back(chunk)
                    raise
                finally:
                    self._buffer.spilling = []
                if refused:
                    self._buffer.put_back(refused)
                    return

    async def _spool_now(self, entries: list[LogEntry]) -> list[LogEntry]:
        """Writes entries to the spool (in a worker thread); returns those it had no room for."""
        try:
            result = await asyncio.to_thread(append_entries, self._spool, entries)
        except (OSError, SpoolError) as exc:
            self.log_trouble("decision_log_spool_failed", f"{type(exc).__name__}: {exc}")
            return entries
        self.stats = result.stats
        for entry in result.spooled:
            self._buffer.mark_spooled(entry)
        for entry, error in result.unencodable:
            self._store.reject(entry, error)
        if result.refused:
            if result.stats.error is not None and not result.stats.full:
                self.log_trouble("decision_log_spool_failed", result.stats.error)
            else:
                self.log_trouble("decision_log_spool_full", None)
        return result.refused

    def log_trouble(self, event: str, error: str | None) -> None:
        """Logs a spool that takes no more rows: at ERROR, at most every
        TROUBLE_LOG_INTERVAL_S."""
        if self._trouble_log.due() is None:
            return
        stats = self.stats
        log.error(
            event,
            extra={
                "error": error,
                "spool_bytes": stats.bytes if stats else None,
                "spool_capacity_bytes": stats.capacity_bytes if stats else None,
                "spool_rows": stats.rows if stats else None,
                "pending": self._buffer.pending,
                "max_buffered_rows": self._settings.max_buffered_rows,
                "rows_dropped": self._buffer.rows_dropped,
            },
        )

    async def replay_next_segment(self) -> bool:
        """Writes the oldest spool segment to PostgreSQL and deletes it; False when there is
        none. Raises (the segment stays) when PostgreSQL does not take it."""
        spool = self._spool
        if not self.backlog():
            return False
        try:
            async with self._lock:
                seq = await asyncio.to_thread(spool.oldest)
                if seq is None:
                    self.stats = await asyncio.to_thread(spool.stats)
                    return False
                read = await asyncio.to_thread(read_segment, spool, seq)
        except (OSError, SpoolError) as exc:
            self._read_failed(exc)
            return False
        if read.torn_bytes:
            log.warning(
                "decision_log_spool_torn_record",
                extra={"segment": seq, "torn_bytes": read.torn_bytes, "rows": len(read.entries)},
            )
        for reason in read.undecodable:
            self.rows_unreadable += 1
            log.error(
                "decision_log_spool_record_unreadable", extra={"segment": seq, "error": reason}
            )
        batch: list[LogEntry] = []
        rows = 0
        for entry in [*read.entries, None]:
            if batch and (entry is None or rows + entry.rows > self._settings.batch_size):
                async with self._store.lock:
                    await self._store.write_entries(batch)
                batch, rows = [], 0
            if entry is not None:
                batch.append(entry)
                rows += entry.rows
        try:
            async with self._lock:
                await asyncio.to_thread(spool.remove, seq)
                self.stats = await asyncio.to_thread(spool.stats)
        except (OSError, SpoolError) as exc:
            self._read_failed(exc)
            return False
        self.rows_replayed += sum(e.rows for e in read.entries)
        log.info(
            "decision_log_spool_segment_written",
            extra={"segment": seq, "rows": sum(e.rows for e in read.entries)},
        )
        return True

    def _read_failed(self, exc: BaseException) -> None:
        if self._read_error_log.due() is not None:
            log.error(
                "decision_log_spool_read_failed", extra={"error": f"{type(exc).__name__}: {exc}"}
            )

    async def adopt_orphans(self) -> None:
        """Takes over the segments that dead processes left in the spool's directory."""
        try:
            async with self._lock:
                if await asyncio.to_thread(self._spool.adopt_orphans):
                    self.stats = await asyncio.to_thread(self._spool.stats)
        except (OSError, SpoolError) as exc:
            self._read_failed(exc)
