"""PostgreSQL I/O of policy snapshots: the full arm-choice distributions decisions are drawn
from, written in the background by the policy cache (never on the request path)."""

from __future__ import annotations

import asyncpg

from .arm_stats import PolicySnapshot, SnapshotWriter
from .errors import StoreUnavailable

INSERT_SNAPSHOT = """
INSERT INTO policy_snapshots (snapshot_id, app_id, campaign_id, arm_ids, probabilities)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (snapshot_id) DO NOTHING
"""


def snapshot_writer(pool: asyncpg.Pool) -> SnapshotWriter:
    """Writes snapshots once each (equal snapshots from several servers share one row)."""

    async def write(snapshots: list[PolicySnapshot]) -> None:
        try:
            await pool.executemany(
                INSERT_SNAPSHOT,
                [
                    (s.snapshot_id, s.app_id, s.campaign_id, list(s.arm_ids), list(s.probabilities))
                    for s in snapshots
                ],
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreUnavailable(f"postgresql: {exc}") from exc

    return write
