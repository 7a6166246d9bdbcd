"""PostgreSQL I/O of outcomes off the log writer's batches: lookups of decisions that Redis no
longer (or never) knew, direct outcome inserts, and the ignore sweeper's scan."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from .errors import StoreUnavailable
from .log_rows import OutcomeRow

FIND_DECISION = """
SELECT decision_id, user_id, show, reason, campaign_id, arm_id, decided_at
FROM decisions WHERE app_id = $1 AND decision_id = $2
"""
INSERT_OUTCOME = """
INSERT INTO outcomes (decision_id, app_id, user_id, campaign_id, arm_id, type, value,
                      occurred_at, received_at, rewarded)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (decision_id, type) DO NOTHING
"""
# Shown decisions whose response window has closed with no response and no ignore yet. A push
# counts as shown only once it reached a device ('sent', or 'unknown': possibly sent), and its
# window starts at its first send; a push that reached no device is never ignored. Only
# deadlines within the lookback are scanned, so the scan stays bounded as the log grows.
DUE_FOR_IGNORE = """
SELECT d.decision_id, d.app_id, d.user_id, d.campaign_id, d.arm_id, w.closes_at
FROM decisions d
LEFT JOIN LATERAL (
    SELECT min(coalesce(p.sent_at, p.updated_at)) AS first_sent
    FROM push_deliveries p
    WHERE p.job_id = d.decision_id AND p.status IN ('sent', 'unknown')
) s ON d.channel = 'push'
CROSS JOIN LATERAL (
    SELECT CASE WHEN d.channel = 'push'
                THEN s.first_sent + (d.response_deadline - coalesce(d.deliver_at, d.decided_at))
                ELSE d.response_deadline END AS closes_at
) w
WHERE d.show AND d.response_deadline <= $1 AND d.response_deadline > $2
  AND w.closes_at <= $1
  AND NOT EXISTS (
      SELECT 1 FROM outcomes o
      WHERE o.decision_id = d.decision_id AND o.type IN ('tap', 'dismiss', 'conversion', 'ignore'))
ORDER BY d.response_deadline
LIMIT $3
"""
#: The advisory lock that lets one sweeper at a time run across all server processes.
SWEEPER_LOCK_ID = 0x6E75_6467_6501


@dataclass(frozen=True)
class LoggedDecision:
    """A decision as the log has it."""

    decision_id: str
    user_id: str
    show: bool
    reason: str
    campaign_id: str | None
    arm_id: str | None
    decided_at: dt.datetime


@dataclass(frozen=True)
class DueDecision:
    """A shown decision whose response window has closed with no response."""

    decision_id: str
    app_id: str
    user_id: str
    campaign_id: str | None
    arm_id: str | None
    response_deadline: dt.datetime


def _outcome_args(row: OutcomeRow) -> tuple[object, ...]:
    return (
        row.decision_id,
        row.app_id,
        row.user_id,
        row.campaign_id,
        row.arm_id,
        row.type,
        row.value,
        row.occurred_at,
        row.received_at,
        row.rewarded,
    )


class OutcomeStore:
    """Outcome queries. It does not own the pool it is handed."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def find_decision(self, app_id: str, decision_id: str) -> LoggedDecision | None:
        """The logged decision, or None (unknown, or not flushed yet)."""
        try:
            row = await self._pool.fetchrow(FIND_DECISION, app_id, uuid.UUID(decision_id))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreUnavailable(f"postgresql: {exc}") from exc
        if row is None:
            return None
        return LoggedDecision(
            str(row["decision_id"]),
            row["user_id"],
            row["show"],
            row["reason"],
            row["campaign_id"],
            row["arm_id"],
            row["decided_at"],
        )

    async def insert_outcome(self, row: OutcomeRow) -> bool:
        """Inserts one outcome now; False when that decision already has one of that type."""
        try:
            status = await self._pool.execute(INSERT_OUTCOME, *_outcome_args(row))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreUnavailable(f"postgresql: {exc}") from exc
        return bool(status.endswith(" 1"))

    async def due_for_ignore(
        self, conn: asyncpg.Connection, now: dt.datetime, lookback: dt.timedelta, limit: int
    ) -> list[DueDecision]:
        """Shown decisions whose response window closed in (now - lookback, now]."""
        rows = await conn.fetch(DUE_FOR_IGNORE, now, now - lookback, limit)
        return [
            DueDecision(
                str(r["decision_id"]),
                r["app_id"],
                r["user_id"],
                r["campaign_id"],
                r["arm_id"],
                r["closes_at"],
            )
            for r in rows
        ]

    @staticmethod
    async def insert_outcomes(conn: asyncpg.Connection, rows: Sequence[OutcomeRow]) -> None:
        """Inserts outcomes, skipping any (decision, type) already there."""
        if rows:
            await conn.executemany(INSERT_OUTCOME, [_outcome_args(r) for r in rows])
