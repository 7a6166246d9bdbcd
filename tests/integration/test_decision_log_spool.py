"""The log writer with its on-disk spool against a real PostgreSQL reached through a proxy that
the tests cut, hang and restore: rows wait on disk and land exactly once, across writers."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis.asyncio as aioredis
from fakes.tcp_proxy import TcpProxy
from nudge_server.arm_stats import PolicyCache
from nudge_server.config_store import ConfigSnapshot
from nudge_server.decision_log import CANCEL_GRACE_S, LogWriter
from nudge_server.decisions import DecisionEngine
from nudge_server.errors import FailedPrecondition, NotFound, StoreUnavailable
from nudge_server.local_time import utc_now
from nudge_server.log_rows import DecisionRow, OutcomeRow, PolicySnapshotRow, PushJobRow
from nudge_server.log_store import database_identity
from nudge_server.model import (
    App,
    Arm,
    Campaign,
    Channel,
    OutcomeType,
    Platform,
    Prompt,
    ThrottlePolicy,
)
from nudge_server.outcome_store import OutcomeStore
from nudge_server.outcomes import OutcomeRecorder
from nudge_server.requests import decide_input, outcome_input
from nudge_server.settings import DecisionSettings, LogSettings, RedisSettings
from nudge_server.spool import Spool
from nudge_server.throttle_store import ThrottleStore

NOW = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
SETTINGS = LogSettings(batch_size=100, flush_interval_s=0.05, spill_after_s=0.2)
ROOT = Path(__file__).resolve().parents[2]


def decision(**overrides: Any) -> DecisionRow:
    fields: dict[str, Any] = {
        "decision_id": uuid.uuid4(),
        "app_id": "fit-app",
        "user_id": "user-\x00ü",  # cleaned when written, whatever the spool did with it
        "decided_at": NOW,
        "received_at": NOW,
        "event_name": "workout_finished",
        "event_properties": {"minutes": 30, "nested": [1.5, None, "\ud800"]},
        "requested_channel": "push",
        "time_zone": "Europe/Berlin",
        "show": True,
        "reason": "ok",
        "campaign_id": "streak",
        "arm_id": "a",
        "channel": "push",
        "propensity": 0.5,
        "response_deadline": NOW + dt.timedelta(hours=24),
    }
    fields.update(overrides)
    return DecisionRow(**fields)


def push_job(row: DecisionRow) -> PushJobRow:
    return PushJobRow(
        job_id=row.decision_id,
        app_id=row.app_id,
        user_id=row.user_id,
        campaign_id="streak",
        arm_id="a",
        payload={"title": "Keep going"},
        deliver_at=NOW,
        expires_at=NOW + dt.timedelta(hours=24),
        time_zone=row.time_zone,
    )


def tap(row: DecisionRow) -> OutcomeRow:
    return OutcomeRow(
        decision_id=row.decision_id,
        app_id=row.app_id,
        user_id=row.user_id,
        type="tap",
        occurred_at=NOW,
        received_at=NOW,
        rewarded=True,
    )


def policy_snapshot(name: str = "streak-1") -> PolicySnapshotRow:
    return PolicySnapshotRow(
        snapshot_id=name,
        app_id="fit-app",
        campaign_id="streak",
        arm_ids=("a", "b\x00"),  # cleaned when written, like every string
        probabilities=(1 / 3, 2 / 3),
        created_at=NOW,
    )


def add_mixed(writer: LogWriter, n: int) -> tuple[list[DecisionRow], int]:
    """n decisions, every third with a push job and every fifth with a tap; (decisions, rows)."""
    rows = [decision() for _ in range(n)]
    total = 0
    for i, row in enumerate(rows):
        writer.add_decision(row, push_job(row) if i % 3 == 0 else None)
        total += 2 if i % 3 == 0 else 1
        if i % 5 == 0:
            writer.add_outcome(tap(row))
            total += 1
    return rows, total


async def stored_ids(pool: asyncpg.Pool) -> list[uuid.UUID]:
    return [r["decision_id"] for r in await pool.fetch("SELECT decision_id FROM decisions")]


async def count(pool: asyncpg.Pool, table: str) -> int:
    assert table in ("decisions", "outcomes", "push_jobs", "policy_snapshots")
    return int(await pool.fetchval(f"SELECT count(*) FROM {table}"))


async def eventually(check: Callable[[], Awaitable[bool] | bool], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def spool_rows(writer: LogWriter) -> int:
    stats = writer.status().spool
    assert stats is not None
    return stats.rows


@pytest.fixture
async def proxy(tcp_proxy: Callable[[str], Awaitable[TcpProxy]], pg_dsn: str) -> TcpProxy:
    return await tcp_proxy(pg_dsn)


@pytest.fixture
async def proxied_pool(pg_dsn: str, proxy: TcpProxy) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(proxy.url_for(pg_dsn), min_size=0, max_size=2, timeout=2)
    try:
        yield pool
    finally:
        await pool.close()


async def test_rows_made_while_postgres_is_cut_are_spooled_then_stored_once(
    pg_pool: asyncpg.Pool, proxied_pool: asyncpg.Pool, proxy: TcpProxy, tmp_path: Path
) -> None:
    with Spool(tmp_path, 10_000_000, segment_bytes=20_000) as spool:
        async with LogWriter(proxied_pool, SETTINGS, spool=spool) as writer:
            before, before_rows = add_mixed(writer, 10)
            await writer.flush()
            await proxy.cut()
            writer.add_snapshot(policy_snapshot())  # made while PostgreSQL is away
            during, during_rows = add_mixed(writer, 300)
            during_rows += 1
            await eventually(lambda: writer.pending == 0)
            # At least: a batch whose write outlived spill_after_s (a slow machine) was copied
            # to the spool too, and that copy is a harmless duplicate.
            assert spool_rows(writer) >= during_rows
            status = writer.status()
            assert status.postgres_failing and status.rows_spooled >= during_rows
            assert status.spool is not None and status.spool.segments > 1
            assert await count(pg_pool, "decisions") == 10

            proxy.restore()
            await eventually(lambda: spool_rows(writer) == 0 and writer.pending == 0)
            assert not writer.status().postgres_failing
        assert sorted(await stored_ids(pg_pool)) == sorted(r.decision_id for r in before + during)
        assert await count(pg_pool, "push_jobs") == 4 + 100
        assert await count(pg_pool, "outcomes") == 2 + 60
        snapshot = await pg_pool.fetchrow("SELECT * FROM policy_snapshots")
        assert await count(pg_pool, "policy_snapshots") == 1
        assert snapshot["arm_ids"] == ["a", "b\ufffd"] and snapshot["probabilities"] == [
            1 / 3,
            2 / 3,
        ]
        assert snapshot["created_at"] == NOW  # when it was made, not when it landed
        assert writer.rows_written == before_rows + during_rows
        assert writer.rows_replayed >= during_rows
        assert writer.rows_dropped == writer.rows_rejected == 0
        assert list(spool.stats().directory.glob("*.seg")) == []
    stored = await pg_pool.fetchrow("SELECT user_id, event_properties FROM decisions LIMIT 1")
    assert stored["user_id"] == "user-\ufffdü"


async def test_a_hung_postgres_sends_rows_to_the_spool_in_flight_batch_included(
    pg_pool: asyncpg.Pool, proxied_pool: asyncpg.Pool, proxy: TcpProxy, tmp_path: Path
) -> None:
    with Spool(tmp_path, 10_000_000) as spool:
        async with LogWriter(proxied_pool, SETTINGS, spool=spool, attempt_timeout_s=60) as writer:
            writer.add_decision(decision())
            await writer.flush()  # a live connection through the proxy, which now hangs
            proxy.blackhole()
            writer.add_snapshot(policy_snapshot())
            _, total = add_mixed(writer, 50)
            total += 1
            # The write of these rows hangs; after spill_after_s they are on disk all the same.
            await eventually(lambda: writer.pending == 0)
            assert spool_rows(writer) >= total
            assert writer.rows_written == 1
            proxy.restore()
            await eventually(lambda: spool_rows(writer) == 0)
            await eventually(lambda: writer.rows_written == 1 + total)
        assert len(await stored_ids(pg_pool)) == 51
        assert await count(pg_pool, "policy_snapshots") == 1
        # The batch that hung was committed and spooled: its copy came back as duplicates.
        assert writer.rows_duplicate > 0
        assert writer.rows_written == 1 + total


async def test_a_writer_closed_while_postgres_is_down_leaves_its_rows_to_the_next(
    pg_pool: asyncpg.Pool, proxied_pool: asyncpg.Pool, proxy: TcpProxy, tmp_path: Path
) -> None:
    await proxy.cut()
    with Spool(tmp_path, 10_000_000) as spool:
        started = asyncio.get_running_loop().time()
        async with LogWriter(proxied_pool, SETTINGS, spool=spool) as writer:
            writer.add_snapshot(policy_snapshot())
            rows, total = add_mixed(writer, 40)  # closed before the writer ever tried
            total += 1
        assert asyncio.get_running_loop().time() - started < 5
        assert writer.rows_dropped == 0
        assert writer.rows_spooled == total
    assert await count(pg_pool, "decisions") == 0
    assert await count(pg_pool, "policy_snapshots") == 0

    with Spool(tmp_path, 10_000_000) as spool:  # a new process's spool on the same directory
        assert spool.stats().rows == total
        async with LogWriter(pg_pool, SETTINGS, spool=spool) as second:
            await eventually(lambda: spool_rows(second) == 0)
            second.add_snapshot(policy_snapshot())  # the same snapshot made again: one row
        assert second.rows_replayed == total
        assert second.rows_duplicate == 1
    assert sorted(await stored_ids(pg_pool)) == sorted(r.decision_id for r in rows)
    assert await count(pg_pool, "policy_snapshots") == 1
    assert not tmp_path.exists()  # an unused spool directory goes too


async def test_closing_while_postgres_hangs_is_bounded_and_spools_everything(
    pg_pool: asyncpg.Pool, proxied_pool: asyncpg.Pool, proxy: TcpProxy, tmp_path: Path
) -> None:
    settings = LogSettings(flush_interval_s=0.05, spill_after_s=60)  # only close() spills
    loop = asyncio.get_running_loop()
    with Spool(tmp_path, 10_000_000) as spool:
        writer = LogWriter(
            proxied_pool, settings, spool=spool, drain_timeout_s=1.0, attempt_timeout_s=600
        )
        async with writer:
            writer.add_decision(decision())
            await writer.flush()
            proxy.blackhole()
            rows, total = add_mixed(writer, 20)
            await eventually(lambda: writer.status().oldest_pending_at is not None)
            await asyncio.sleep(0.3)  # the writer is in a write that will never answer
            assert spool_rows(writer) == 0
            started = loop.time()
        assert loop.time() - started < 1.0 + 2 * CANCEL_GRACE_S + 1.0
        assert writer.rows_dropped == 0
        assert spool_rows(writer) == total
    proxy.restore()
    with Spool(tmp_path, 10_000_000) as spool:
        async with LogWriter(pg_pool, SETTINGS, spool=spool) as second:
            await eventually(lambda: spool_rows(second) == 0)
    assert len(await stored_ids(pg_pool)) == 1 + len(rows)


async def test_a_full_spool_drops_rows_counted_and_loudly(
    pg_pool: asyncpg.Pool,
    proxied_pool: asyncpg.Pool,
    proxy: TcpProxy,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await proxy.cut()
    settings = LogSettings(
        batch_size=50, flush_interval_s=0.05, spill_after_s=0.1, max_buffered_rows=100
    )
    with Spool(tmp_path, 60_000) as spool:  # room for roughly a hundred rows
        async with LogWriter(proxied_pool, settings, spool=spool) as writer:
            rows = [decision() for _ in range(600)]
            for i, row in enumerate(rows):
                writer.add_decision(row)  # never raises, never waits
                if i % 50 == 0:
                    await asyncio.sleep(0.15)  # let the spiller run between bursts
            await eventually(lambda: (s := writer.status().spool) is not None and s.full)
            status = writer.status()
            assert status.spool is not None and status.spool.full
            assert 0 < status.spool.rows < 600 - 100
            assert writer.pending == 100  # memory holds its bound
            assert writer.rows_dropped == 600 - 100 - status.spool.rows
            full = [r for r in caplog.records if r.getMessage() == "decision_log_spool_full"]
            assert full and all(r.levelno == logging.ERROR for r in full)
            assert [r for r in caplog.records if r.getMessage() == "decision_log_buffer_full"]

            proxy.restore()
            await eventually(lambda: writer.pending == 0 and spool_rows(writer) == 0)
    stored = len(await stored_ids(pg_pool))
    assert stored + writer.rows_dropped == 600
    assert writer.rows_written == stored


CRASHING_WRITER = """
import asyncio, datetime as dt, sys, uuid
import asyncpg
from nudge_server.decision_log import LogWriter
from nudge_server.log_rows import DecisionRow
from nudge_server.settings import LogSettings
from nudge_server.spool import Spool

async def main() -> None:
    now = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    pool = await asyncpg.create_pool(sys.argv[2], min_size=0, max_size=1, timeout=1)
    spool = Spool(sys.argv[1], 10_000_000)
    spool.open()
    writer = LogWriter(pool, LogSettings(flush_interval_s=0.05, spill_after_s=0.2), spool=spool)
    await writer.__aenter__()
    for i in range(int(sys.argv[3])):
        writer.add_decision(DecisionRow(
            decision_id=uuid.UUID(int=i + 1), app_id="fit-app", user_id="u", decided_at=now,
            received_at=now, event_name="e", requested_channel="in_app", time_zone="UTC",
            show=False, reason="daily_cap"))
    while writer.pending:
        await asyncio.sleep(0.05)
    print("spooled", flush=True)
    await asyncio.sleep(60)  # killed meanwhile

asyncio.run(main())
"""


async def test_rows_spooled_before_a_kill_9_are_written_by_the_next_writer(
    pg_pool: asyncpg.Pool, proxy: TcpProxy, pg_dsn: str, tmp_path: Path
) -> None:
    await proxy.cut()
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASHING_WRITER,
        str(tmp_path),
        proxy.url_for(pg_dsn),
        "250",
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT / "server")},
    )
    try:
        assert child.stdout is not None
        assert await asyncio.wait_for(child.stdout.readline(), 30) == b"spooled\n"
    finally:
        child.kill()  # SIGKILL: no clean-up of any kind
        await child.wait()
    assert child.returncode == -signal.SIGKILL
    with Spool(tmp_path, 10_000_000) as spool:
        assert spool.stats().rows == 250
        async with LogWriter(pg_pool, SETTINGS, spool=spool) as writer:
            await eventually(lambda: spool_rows(writer) == 0)
    assert sorted(await stored_ids(pg_pool)) == [uuid.UUID(int=i + 1) for i in range(250)]


# --- outcomes for decisions still in the spool -------------------------------------------------


def snapshot() -> ConfigSnapshot:
    campaign = Campaign(
        app_id="app",
        campaign_id="quiz",
        trigger_events=frozenset({"lesson_done"}),
        arms=(Arm("a", Prompt(title="A")),),
        response_window_s=1800,
    )
    return ConfigSnapshot.build(1, [App("app", ThrottlePolicy(daily_cap=10))], [campaign])


async def test_an_outcome_for_a_spooled_decision_says_retry_never_not_found(
    pg_pool: asyncpg.Pool,
    proxied_pool: asyncpg.Pool,
    proxy: TcpProxy,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    config = snapshot()
    store = ThrottleStore(redis_client, RedisSettings(decision_timeout_s=2.0))
    settings = DecisionSettings(seed=1)
    later = utc_now() + dt.timedelta(minutes=10)  # far past LOG_LAG for a decision made now

    def report_at(recorder: OutcomeRecorder, decision_id: str) -> Awaitable[Any]:
        return recorder.report(
            outcome_input(
                app="app",
                user="learner",
                decision_id=decision_id,
                kind=OutcomeType.IMPRESSION,
                value=0.0,
                occurred_at=None,
                now=later,
            )
        )

    await proxy.cut()
    with Spool(tmp_path, 10_000_000) as spool:
        async with LogWriter(proxied_pool, SETTINGS, spool=spool) as writer:
            engine = DecisionEngine(
                lambda: config, PolicyCache(store, list, refresh_s=3600), store, writer, settings
            )
            # An event no campaign has: a "no" that Redis keeps no record of; only the log can
            # say whether the decision exists.
            made = await engine.decide(
                decide_input(
                    app="app",
                    user="learner",
                    event_name="other_event",
                    event_properties={},
                    channel=Channel.IN_APP,
                    surface="",
                    tz_name="Asia/Tokyo",
                    locale="",
                    platform=Platform.IOS,
                    client_request_id="",
                    event_time=None,
                    now=utc_now(),
                )
            )
            assert not made.show
            await eventually(lambda: spool_rows(writer) == 1)
            # PostgreSQL answers the outcome's lookup (its own pool), but the row is on disk.
            aware = OutcomeRecorder(
                lambda: config.apps,
                store,
                OutcomeStore(pg_pool),
                settings,
                clock=lambda: later,
                log_backlog_since=writer.oldest_pending_at,
            )
            unaware = OutcomeRecorder(
                lambda: config.apps, store, OutcomeStore(pg_pool), settings, clock=lambda: later
            )
            with pytest.raises(StoreUnavailable, match="retry"):
                await report_at(aware, made.decision_id)
            with pytest.raises(NotFound):  # what the 30-second heuristic alone answers
                await report_at(unaware, made.decision_id)

            proxy.restore()
            await eventually(lambda: spool_rows(writer) == 0)
            assert writer.oldest_pending_at() is None
            with pytest.raises(FailedPrecondition, match="showed nothing"):
                await report_at(aware, made.decision_id)


async def test_each_database_has_a_spool_directory_of_its_own(
    pg_pool: asyncpg.Pool, proxied_pool: asyncpg.Pool, pg_dsn: str, pg_template: str
) -> None:
    here = await database_identity(pg_pool)
    assert await database_identity(proxied_pool) == here  # another address, the same database
    other_dsn = urlunsplit(urlsplit(pg_dsn)._replace(path=f"/{pg_template}"))
    other = await asyncpg.create_pool(other_dsn, min_size=1, max_size=1)
    try:
        there = await database_identity(other)
    finally:
        await other.close()
    assert there != here
    assert here.startswith("nudge_test_") and there.startswith("nudge_test_template_")
    assert "/" not in here and len(here.split("-")) == 3  # name, digest, system identifier
