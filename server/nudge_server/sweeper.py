"""The ignore sweeper: a shown prompt with no tap, dismissal or conversion within its response
window counts as ignored. Nobody reports an ignore, so this notices the window closing.

It scans the decision log (PostgreSQL, the source of truth) on the server clock, applies each
ignore to Redis first (idempotent: the decision record remembers it) and then inserts the
'ignore' outcome row (idempotent: one per decision and type), so a crash between the two steps
is repaired by the next sweep without counting anything twice. One sweeper runs at a time across
all server processes (an advisory lock).
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from types import TracebackType
from typing import Self

import asyncpg

from .background import periodic
from .decisions import Clock
from .errors import StoreUnavailable
from .local_time import to_ms, utc_now
from .log_rows import OutcomeRow
from .outcome_store import SWEEPER_LOCK_ID, OutcomeStore
from .throttle_store import ThrottleStore

log = logging.getLogger(__name__)


class IgnoreSweeper:
    """Records ignores for closed response windows, every `interval_s`."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        store: ThrottleStore,
        *,
        interval_s: float = 5.0,
        lookback: dt.timedelta = dt.timedelta(days=3),
        batch_size: int = 500,
        clock: Clock = utc_now,
    ) -> None:
        self._pool = pool
        self._outcomes = OutcomeStore(pool)
        self._store = store
        self._lookback = lookback
        self._batch_size = batch_size
        self._clock = clock
        self._sweeper = periodic(
            "ignore-sweeper", interval_s, self._sweep_logged, crash_event="ignore_sweep_crashed"
        )

    async def sweep_once(self) -> int:
        """One pass; returns how many ignores it recorded. Skips when another sweeper runs."""
        async with self._pool.acquire() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", SWEEPER_LOCK_ID):
                return 0
            try:
                return await self._sweep(conn)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", SWEEPER_LOCK_ID)

    async def _sweep(self, conn: asyncpg.Connection) -> int:
        now = self._clock()
        due = await self._outcomes.due_for_ignore(conn, now, self._lookback, self._batch_size)
        rows: list[OutcomeRow] = []
        for decision in due:
            effect = await self._store.record_outcome(
                decision.app_id,
                decision.user_id,
                decision.decision_id,
                "ignore",
                to_ms(decision.response_deadline),
            )
            if effect.status == "responded":
                continue  # a response reached Redis; its row is on its way to the log
            if effect.status in ("ok", "duplicate"):
                await self._store.learn(decision.app_id, decision.decision_id, effect)
            rows.append(
                OutcomeRow(
                    decision_id=uuid.UUID(decision.decision_id),
                    app_id=decision.app_id,
                    user_id=decision.user_id,
                    campaign_id=decision.campaign_id,
                    arm_id=decision.arm_id,
                    type="ignore",
                    occurred_at=decision.response_deadline,
                    received_at=now,
                    rewarded=False,
                )
            )
        await self._outcomes.insert_outcomes(conn, rows)
        if rows:
            log.info("ignores_recorded", extra={"count": len(rows)})
        return len(rows)

    async def _sweep_logged(self) -> None:
        """One background sweep; an unavailable store is logged and retried at the next one."""
        try:
            await self.sweep_once()
        except (
            StoreUnavailable,
            OSError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
        ) as exc:
            log.warning("ignore_sweep_failed", extra={"error": str(exc)})

    async def __aenter__(self) -> Self:
        self._sweeper.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._sweeper.stop()
