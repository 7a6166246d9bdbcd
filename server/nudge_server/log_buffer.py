"""The log entries a writer holds in memory, and the count of their rows that nothing else answers
for yet. Pure bookkeeping: no I/O, no asyncio.

An entry's rows are pending from `add` until the entry is settled (stored in PostgreSQL, or
refused by it) or spooled (a copy is on disk), whichever comes first; rows read back from the
spool are never pending. A batch taken out to be written (or spooled) and not finished goes back
to the front with `put_back`, so the queue keeps the order entries were added in.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from .log_rows import LogEntry


@dataclass(slots=True)
class InFlight:
    """A batch taken from memory and being written to PostgreSQL."""

    entries: list[LogEntry]
    started: float  # monotonic
    oldest_ms: int


class LogBuffer:
    """The queue of entries in memory, bounded to `max_rows` pending rows.

    `in_flight` (a batch being written to PostgreSQL) and `spilling` (entries being copied to
    the spool) are out of the queue but still in memory: they count for `oldest_ms` and, the
    batch in flight, for `unstored`.
    """

    def __init__(self, max_rows: int) -> None:
        self._max_rows = max_rows
        self._queue: deque[LogEntry] = deque()
        self._seq = itertools.count(1)
        #: The number of the last entry added (entries are numbered from 1 in order).
        self.last_seq = 0
        #: Rows in memory (queued or being written), neither stored nor spooled.
        self.pending = 0
        self.in_flight: InFlight | None = None
        self.spilling: list[LogEntry] = []
        #: Rows not kept (memory full, the writer closed, or left at shutdown).
        self.rows_dropped = 0
        #: Rows that went to the spool.
        self.rows_spooled = 0

    def __len__(self) -> int:
        """Entries in the queue."""
        return len(self._queue)

    def add(self, entry: LogEntry) -> bool:
        """Numbers, stamps and queues the entry; False (and counted as dropped) when its rows
        would take the pending rows past `max_rows`."""
        rows = entry.rows
        if self.pending + rows > self._max_rows:
            self.rows_dropped += rows
            return False
        entry.seq = self.last_seq = next(self._seq)
        entry.added_ms = time.time_ns() // 1_000_000
        entry.added_at = time.monotonic()
        self._queue.append(entry)
        self.pending += rows
        return True

    def drop(self, entry: LogEntry) -> None:
        """Counts an entry that is not kept."""
        self.rows_dropped += entry.rows

    def oldest_ms(self) -> int | None:
        """The stamp (ms) of the oldest entry in memory, queued, in flight or being spilled."""
        stamps: list[int] = []
        if self._queue:
            stamps.append(self._queue[0].added_ms)
        if self.spilling:
            stamps.append(self.spilling[0].added_ms)
        if self.in_flight is not None:
            stamps.append(self.in_flight.oldest_ms)
        return min(stamps) if stamps else None

    def waiting(self, until_seq: int) -> bool:
        """Whether an entry numbered up to `until_seq` is still queued."""
        return bool(self._queue) and self._queue[0].seq <= until_seq

    def take_batch(self, until_seq: int, max_rows: int) -> list[LogEntry]:
        """Takes from the front the entries numbered up to `until_seq`, at most `max_rows` rows
        (but at least one entry)."""
        batch: list[LogEntry] = []
        rows = 0
        while self._queue and self._queue[0].seq <= until_seq:
            entry = self._queue[0]
            if batch and rows + entry.rows > max_rows:
                break
            batch.append(self._queue.popleft())
            rows += entry.rows
        return batch

    def stale(self, cutoff: float) -> bool:
        """Whether the front entry was added at or before `cutoff` (monotonic)."""
        return bool(self._queue) and self._queue[0].added_at <= cutoff

    def take_stale(self, cutoff: float, max_rows: int) -> list[LogEntry]:
        """Takes from the front the entries added at or before `cutoff`, at most `max_rows` rows
        (but at least one entry), skipping those spooled already."""
        chunk: list[LogEntry] = []
        rows = 0
        while self.stale(cutoff):
            if chunk and rows + self._queue[0].rows > max_rows:
                break
            entry = self._queue.popleft()
            if entry.spooled:
                # Its batch failed and came back while its copy was being spooled.
                continue
            chunk.append(entry)
            rows += entry.rows
        return chunk

    def settle(self, entry: LogEntry) -> None:
        """The entry is stored (or refused) in PostgreSQL."""
        if entry.settled:
            return
        entry.settled = True
        if not entry.from_spool and not entry.spooled:
            self.pending -= entry.rows

    def mark_spooled(self, entry: LogEntry) -> None:
        """A copy of the entry is in the spool."""
        if entry.spooled or entry.from_spool:
            return
        entry.spooled = True
        self.rows_spooled += entry.rows
        if not entry.settled:
            self.pending -= entry.rows

    def put_back(self, entries: Sequence[LogEntry]) -> None:
        """Entries taken out and neither stored nor spooled go back to the front, oldest first
        (a batch whose commit was uncertain is replayed; ON CONFLICT makes that harmless)."""
        self._queue.extendleft(reversed([e for e in entries if not e.settled and not e.spooled]))

    def unstored(self) -> list[LogEntry]:
        """Entries in memory (queued, and the batch in flight) neither stored nor spooled."""
        flight = self.in_flight.entries if self.in_flight is not None else []
        return [e for e in (*self._queue, *flight) if not e.settled and not e.spooled]

    def let_go(self) -> list[LogEntry]:
        """Empties the queue and returns the unstored entries, counted as dropped."""
        lost = self.unstored()
        self._queue.clear()
        rows = sum(e.rows for e in lost)
        self.pending -= rows
        self.rows_dropped += rows
        for entry in lost:
            entry.settled = True  # counted once, should a stuck write still finish
        return lost
