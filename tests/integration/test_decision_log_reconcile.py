"""A decision first logged as "unavailable" is corrected when its retry reveals the grant."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

import asyncpg
from nudge_server.decision_log import LogWriter
from nudge_server.log_rows import DecisionRow
from nudge_server.settings import LogSettings

NOW = dt.datetime(2026, 6, 1, 3, 0, tzinfo=dt.UTC)


def row(decision_id: uuid.UUID, reason: str) -> DecisionRow:
    shown = reason == "ok"
    return DecisionRow(
        decision_id=decision_id,
        app_id="app",
        user_id="u",
        decided_at=NOW,
        received_at=NOW,
        event_name="opened",
        requested_channel="in_app",
        time_zone="UTC",
        show=shown,
        reason=reason,
        campaign_id="c" if shown else None,
        arm_id="a" if shown else None,
        channel="in_app" if shown else None,
        propensity=0.5 if shown else None,
    )


async def test_unavailable_then_grant_is_corrected_and_grant_then_anything_is_kept(
    pg_pool: asyncpg.Pool,
) -> None:
    corrected, kept, same_batch = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with LogWriter(pg_pool, LogSettings()) as writer:
        writer.add_decision(row(corrected, "unavailable"))
        writer.add_decision(row(kept, "ok"))
        await writer.flush()
        writer.add_decision(row(corrected, "ok"))
        writer.add_decision(row(kept, "unavailable"))
        writer.add_decision(dataclasses.replace(row(kept, "ok"), arm_id="b"))
        writer.add_decision(row(same_batch, "unavailable"))
        writer.add_decision(row(same_batch, "ok"))
        await writer.flush()
        assert writer.rows_rejected == 0
    rows = {
        r["decision_id"]: (r["reason"], r["arm_id"])
        for r in await pg_pool.fetch("SELECT decision_id, reason, arm_id FROM decisions")
    }
    assert rows == {corrected: ("ok", "a"), kept: ("ok", "a"), same_batch: ("ok", "a")}
