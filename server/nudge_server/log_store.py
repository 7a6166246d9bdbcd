"""PostgreSQL I/O of the decision log: batches of entries, one transaction each.

Each kind of row is COPYed into a temporary table and moved with `INSERT ... SELECT ... ON
CONFLICT`, so that a batch written twice (replayed after an uncertain commit, or from the spool
after a crash between commit and delete) stores every row once. A batch that PostgreSQL refuses
for a data reason is bisected, so that the bad row is isolated, logged and counted while the
others land.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncpg

from .errors import StoreUnavailable
from .log_buffer import LogBuffer
from .log_encoding import EncodedEntry, describe_entry, encode_entry
from .log_rows import (
    DECISION_COLUMNS,
    OUTCOME_COLUMNS,
    PUSH_JOB_COLUMNS,
    SNAPSHOT_COLUMNS,
    LogEntry,
)
from .postgres import PG_UNAVAILABLE

# The writer's events keep the name they have always had.
log = logging.getLogger("nudge_server.decision_log")


def _temp_table(temp: str, table: str, columns: Sequence[str]) -> str:
    # CREATE TABLE AS copies no NOT NULL constraint: a bad row fails at the INSERT, where the
    # batch is bisected, not inside COPY.
    return (
        f"CREATE TEMPORARY TABLE {temp} ON COMMIT DROP AS "
        f"SELECT {', '.join(columns)} FROM {table} WITH NO DATA"
    )


def _select(columns: Sequence[str], defaulted: Sequence[str] = ()) -> str:
    """The select list of an INSERT: the columns, those in `defaulted` as now() when null."""
    return ", ".join(f"coalesce({c}, now())" if c in defaulted else c for c in columns)


@dataclass(frozen=True)
class _Table:
    """How one kind of row is stored: COPY into `temp`, then `insert` from it."""

    record_of: Callable[[EncodedEntry], tuple[object, ...] | None]  # None: the entry has none
    temp: str
    columns: tuple[str, ...]
    create: str
    insert: str


# Table and column names below are constants of this module, never values: the values travel
# through COPY only.
_SNAPSHOTS = _Table(
    record_of=lambda e: e.snapshot,
    temp="nudge_log_policy_snapshots",
    columns=SNAPSHOT_COLUMNS,
    create=_temp_table("nudge_log_policy_snapshots", "policy_snapshots", SNAPSHOT_COLUMNS),
    # Equal snapshots from several servers (or writes) share one row: the first one stays.
    insert=(
        f"INSERT INTO policy_snapshots ({', '.join(SNAPSHOT_COLUMNS)}) "
        f"SELECT {_select(SNAPSHOT_COLUMNS, ['created_at'])} FROM nudge_log_policy_snapshots "
        "ON CONFLICT (snapshot_id) DO NOTHING"
    ),
)
_DECISIONS = _Table(
    record_of=lambda e: e.decision,
    temp="nudge_log_decisions",
    columns=DECISION_COLUMNS,
    create=_temp_table("nudge_log_decisions", "decisions", DECISION_COLUMNS),
    # A decision first logged as "unavailable" (the Redis call timed out) whose script did run
    # is corrected when a retry with its client_request_id returns the stored grant; any other
    # repeat of a decision id changes nothing.
    insert=(
        f"INSERT INTO decisions ({', '.join(DECISION_COLUMNS)}) "
        f"SELECT DISTINCT ON (decision_id) {', '.join(DECISION_COLUMNS)} FROM nudge_log_decisions "
        "ORDER BY decision_id, (reason = 'unavailable') "
        "ON CONFLICT (decision_id) DO UPDATE SET "
        + ", ".join(f"{c} = EXCLUDED.{c}" for c in DECISION_COLUMNS if c != "decision_id")
        + " WHERE decisions.reason = 'unavailable' AND EXCLUDED.reason <> 'unavailable'"
        # Never across apps, should two ids ever collide. (Not the user: an erasure may have
        # given the stored row and the correction different pseudonyms.)
        " AND decisions.app_id = EXCLUDED.app_id"
    ),
)
_PUSH_JOBS = _Table(
    record_of=lambda e: e.push_job,
    temp="nudge_log_push_jobs",
    columns=PUSH_JOB_COLUMNS,
    create=_temp_table("nudge_log_push_jobs", "push_jobs", PUSH_JOB_COLUMNS),
    insert=(
        f"INSERT INTO push_jobs ({', '.join(PUSH_JOB_COLUMNS)}) "
        f"SELECT {_select(PUSH_JOB_COLUMNS, ['created_at', 'updated_at'])} "
        "FROM nudge_log_push_jobs ON CONFLICT DO NOTHING"
    ),
)
_OUTCOMES = _Table(
    record_of=lambda e: e.outcome,
    temp="nudge_log_outcomes",
    columns=OUTCOME_COLUMNS,
    create=_temp_table("nudge_log_outcomes", "outcomes", OUTCOME_COLUMNS),
    insert=(
        f"INSERT INTO outcomes ({', '.join(OUTCOME_COLUMNS)}) "
        f"SELECT {', '.join(OUTCOME_COLUMNS)} FROM nudge_log_outcomes "
        "ON CONFLICT (decision_id, type) DO NOTHING"
    ),
)
#: In the order a batch writes them. No foreign key joins them: decisions name their snapshot
#: by id, and reports look it up when they run.
_TABLES = (_SNAPSHOTS, _DECISIONS, _PUSH_JOBS, _OUTCOMES)


async def write_batch(
    pool: asyncpg.Pool, batch: Sequence[EncodedEntry], timeout_s: float
) -> tuple[int, int]:
    """Writes the entries in one transaction; returns (rows inserted, rows already there).
    Raises what PostgreSQL (or the client) raised, and TimeoutError after `timeout_s`."""
    inserted = total = 0
    async with asyncio.timeout(timeout_s):
        async with pool.acquire() as conn, conn.transaction():
            for table in _TABLES:
                records = [r for e in batch if (r := table.record_of(e)) is not None]
                if not records:
                    continue
                total += len(records)
                await conn.execute(table.create)
                await conn.copy_records_to_table(table.temp, records=records, columns=table.columns)
                inserted += _inserted(await conn.execute(table.insert))
    return inserted, total - inserted


class LogStore:
    """Writes log entries to PostgreSQL and settles them in the buffer they came from.

    Counters: `rows_written` (new rows stored), `rows_duplicate` (rows already stored,
    skipped), `rows_rejected` (refused by PostgreSQL for a data reason, or not encodable).
    """

    def __init__(self, pool: asyncpg.Pool, buffer: LogBuffer, attempt_timeout_s: float) -> None:
        self._pool = pool
        self._buffer = buffer
        self._attempt_timeout_s = attempt_timeout_s
        #: One PostgreSQL write at a time: whoever calls `write_entries` holds it.
        self.lock = asyncio.Lock()
        self.rows_written = 0
        self.rows_duplicate = 0
        self.rows_rejected = 0

    async def write_entries(self, entries: list[LogEntry]) -> None:
        """Writes entries to PostgreSQL, isolating rows it refuses. Raises on a connection
        problem or a timeout; the entries written by then are settled."""
        encoded: list[EncodedEntry] = []
        for entry in entries:
            try:
                encoded.append(encode_entry(entry))
            except (ValueError, TypeError, RecursionError) as exc:
                self.reject(entry, exc)
        await self._write_isolating(encoded)

    async def _write_isolating(self, batch: list[EncodedEntry]) -> None:
        if not batch:
            return
        try:
            written, duplicate = await write_batch(self._pool, batch, self._attempt_timeout_s)
        except Exception as exc:
            if not is_data_error(exc):
                raise
            if len(batch) == 1:
                self.reject(batch[0].entry, exc)
                return
            middle = len(batch) // 2
            await self._write_isolating(batch[:middle])
            await self._write_isolating(batch[middle:])
            return
        for item in batch:
            self._buffer.settle(item.entry)
        self.rows_written += written
        self.rows_duplicate += duplicate

    def reject(self, entry: LogEntry, exc: BaseException) -> None:
        """Settles an entry that cannot be stored, counted and logged with its content."""
        self._buffer.settle(entry)
        self.rows_rejected += entry.rows
        log.error(
            "decision_log_row_rejected",
            extra={
                **entry.identity(),
                "error": f"{type(exc).__name__}: {exc}",
                "row": describe_entry(entry),
            },
        )

    async def probe(self) -> None:
        """One cheap round trip; raises what a write would."""
        async with asyncio.timeout(self._attempt_timeout_s):
            async with self._pool.acquire() as conn:
                await conn.execute("SELECT 1")


def _inserted(status: str) -> int:
    # The command tag of INSERT is "INSERT 0 <rows>".
    return int(status.rsplit(" ", 1)[-1])


def is_data_error(exc: BaseException) -> bool:
    """Whether PostgreSQL (or the client encoding rows for it) refused the rows themselves, as
    opposed to being unavailable. Only these make a batch bisected; anything else is retried."""
    if isinstance(exc, asyncpg.exceptions.ClientConfigurationError):
        return False  # a ValueError too, but about the connection, not the rows
    return isinstance(
        exc,
        (
            asyncpg.exceptions.DataError,  # SQLSTATE class 22
            asyncpg.exceptions.IntegrityConstraintViolationError,  # class 23
            asyncpg.exceptions.ProgramLimitExceededError,  # 54000, e.g. an index row too large
            ValueError,  # includes asyncpg's client-side DataError while encoding COPY data
            TypeError,
            OverflowError,
        ),
    )


async def database_identity(pool: asyncpg.Pool) -> str:
    """A directory name for the database the log goes to: its name and the cluster's system
    identifier (which a promoted replica keeps; a host or port change does not alter it). The
    server spools under it, so that rows are only ever written to the database they were made
    for, whoever shares the spool directory. Without the right to read the identifier (some
    managed services), the name alone."""
    try:
        async with pool.acquire() as conn:
            name = str(await conn.fetchval("SELECT current_database()"))
            try:
                system = await conn.fetchval("SELECT system_identifier FROM pg_control_system()")
            except asyncpg.PostgresError:
                system = None
    except PG_UNAVAILABLE as exc:
        raise StoreUnavailable(f"postgresql: cannot read the database's identity: {exc}") from exc
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:64]
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]  # names that clean to the same
    return f"{safe}-{digest}" + ("" if system is None else f"-{system}")
