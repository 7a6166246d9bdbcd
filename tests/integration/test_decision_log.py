"""The batched decision-log writer against a real PostgreSQL, outages included."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from fakes.ports import free_port
from nudge_server.decision_log import LogWriter
from nudge_server.errors import StoreUnavailable
from nudge_server.log_encoding import clean_json, clean_text
from nudge_server.log_rows import DecisionRow, OutcomeRow, PushJobRow
from nudge_server.settings import LogSettings

ADMIN_URL = os.environ.get(
    "NUDGE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
NOW = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
# Only explicit flushes (or aexit) write, unless a test says otherwise.
MANUAL = LogSettings(batch_size=500, flush_interval_s=3600.0)
FAST = LogSettings(batch_size=500, flush_interval_s=0.05)


def decision(**overrides: Any) -> DecisionRow:
    fields: dict[str, Any] = {
        "decision_id": uuid.uuid4(),
        "app_id": "fit-app",
        "user_id": "user-1",
        "decided_at": NOW,
        "received_at": NOW,
        "event_name": "workout_finished",
        "event_properties": {"minutes": 30},
        "requested_channel": "in_app",
        "time_zone": "Europe/Berlin",
        "show": True,
        "reason": "ok",
        "campaign_id": "streak",
        "arm_id": "a",
        "channel": "in_app",
        "propensity": 0.5,
        "candidates": {"considered": [{"campaign_id": "streak", "arm_id": "a"}]},
    }
    fields.update(overrides)
    return DecisionRow(**fields)


def push_job(row: DecisionRow, **overrides: Any) -> PushJobRow:
    fields: dict[str, Any] = {
        "job_id": row.decision_id,
        "app_id": row.app_id,
        "user_id": row.user_id,
        "campaign_id": "streak",
        "arm_id": "a",
        "payload": {"title": "Keep going", "body": "Day 3"},
        "deliver_at": NOW,
        "expires_at": NOW + dt.timedelta(hours=24),
        "time_zone": row.time_zone,
    }
    fields.update(overrides)
    return PushJobRow(**fields)


def outcome(row: DecisionRow, type_: str = "tap", **overrides: Any) -> OutcomeRow:
    fields: dict[str, Any] = {
        "decision_id": row.decision_id,
        "app_id": row.app_id,
        "user_id": row.user_id,
        "campaign_id": row.campaign_id,
        "arm_id": row.arm_id,
        "type": type_,
        "occurred_at": NOW,
        "received_at": NOW,
        "rewarded": True,
    }
    fields.update(overrides)
    return OutcomeRow(**fields)


async def count(pool: asyncpg.Pool, table: str) -> int:
    assert table in ("decisions", "outcomes", "push_jobs")
    return int(await pool.fetchval(f"SELECT count(*) FROM {table}"))


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def messages(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == event]


# --- happy path ----------------------------------------------------------------------------


async def test_rows_land_with_their_values(pg_pool: asyncpg.Pool) -> None:
    writer = LogWriter(pg_pool, MANUAL)
    shown = decision(
        event_time=NOW - dt.timedelta(seconds=5),
        surface="home_banner",
        locale="de-DE",
        platform="ios",
        client_request_id="req-1",
        next_eligible_at=NOW + dt.timedelta(hours=1),
    )
    not_shown = decision(
        show=False,
        reason="daily_cap",
        campaign_id=None,
        arm_id=None,
        channel=None,
        propensity=None,
        event_properties=None,
        candidates=None,
    )
    writer.add_decision(shown)
    writer.add_decision(not_shown)
    writer.add_outcome(outcome(shown, "tap", value=None))
    writer.add_outcome(outcome(shown, "conversion", value=9.5))
    assert writer.pending == 4
    await writer.flush()
    assert writer.pending == 0
    assert writer.rows_written == 4

    row = await pg_pool.fetchrow(
        "SELECT * FROM decisions WHERE decision_id = $1", shown.decision_id
    )
    assert row is not None
    assert row["user_id"] == "user-1"
    assert row["surface"] == "home_banner"
    assert row["platform"] == "ios"
    assert row["client_request_id"] == "req-1"
    assert row["event_time"] == NOW - dt.timedelta(seconds=5)
    assert row["next_eligible_at"] == NOW + dt.timedelta(hours=1)
    assert json.loads(row["event_properties"]) == {"minutes": 30}
    assert json.loads(row["candidates"]) == {
        "considered": [{"campaign_id": "streak", "arm_id": "a"}]
    }
    row = await pg_pool.fetchrow(
        "SELECT * FROM decisions WHERE decision_id = $1", not_shown.decision_id
    )
    assert row is not None
    assert (row["show"], row["reason"], row["campaign_id"], row["event_properties"]) == (
        False,
        "daily_cap",
        None,
        None,
    )
    outcomes = await pg_pool.fetch("SELECT type, value, rewarded FROM outcomes ORDER BY type")
    assert [(r["type"], r["value"], r["rewarded"]) for r in outcomes] == [
        ("conversion", 9.5, True),
        ("tap", None, True),
    ]


async def test_a_decision_and_its_push_job_land_together(pg_pool: asyncpg.Pool) -> None:
    writer = LogWriter(pg_pool, MANUAL)
    row = decision(channel="push", requested_channel="push")
    writer.add_decision(row, push_job(row, created_at=None))
    assert writer.pending == 2
    await writer.flush()
    job = await pg_pool.fetchrow("SELECT * FROM push_jobs WHERE job_id = $1", row.decision_id)
    assert job is not None
    assert job["status"] == "queued"
    assert job["attempts"] == 0
    assert job["created_at"] is not None  # the database's now() for a missing time
    assert json.loads(job["payload"]) == {"title": "Keep going", "body": "Day 3"}
    assert await count(pg_pool, "decisions") == 1
    assert writer.rows_written == 2


async def test_a_bad_push_job_takes_its_decision_with_it(
    pg_pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    writer = LogWriter(pg_pool, MANUAL)
    good = decision()
    bad = decision()
    writer.add_decision(good)
    writer.add_decision(bad, push_job(bad, campaign_id=None))  # NOT NULL in push_jobs
    await writer.flush()
    ids = {r["decision_id"] for r in await pg_pool.fetch("SELECT decision_id FROM decisions")}
    assert ids == {good.decision_id}
    assert await count(pg_pool, "push_jobs") == 0
    assert writer.rows_rejected == 2
    assert [r.decision_id for r in messages(caplog, "decision_log_row_rejected")] == [
        str(bad.decision_id)
    ]


async def test_the_same_row_added_twice_lands_once(pg_pool: asyncpg.Pool) -> None:
    writer = LogWriter(pg_pool, MANUAL)
    row = decision(channel="push")
    job = push_job(row)
    tap = outcome(row, "tap")
    for _ in range(2):  # twice in one batch
        writer.add_decision(row, job)
        writer.add_outcome(tap)
    await writer.flush()
    writer.add_decision(row, job)  # and again in a later batch (a replay)
    writer.add_outcome(tap)
    await writer.flush()
    assert await count(pg_pool, "decisions") == 1
    assert await count(pg_pool, "push_jobs") == 1
    assert await count(pg_pool, "outcomes") == 1
    assert writer.rows_written == 3
    assert writer.rows_duplicate == 6
    assert writer.rows_rejected == 0
    assert writer.pending == 0


async def test_other_outcome_types_of_one_decision_all_land(pg_pool: asyncpg.Pool) -> None:
    writer = LogWriter(pg_pool, MANUAL)
    row = decision()
    for type_ in ("impression", "tap", "dismiss", "conversion"):
        writer.add_outcome(outcome(row, type_))
    await writer.flush()
    assert await count(pg_pool, "outcomes") == 4


# --- data PostgreSQL cannot store ----------------------------------------------------------


def test_cleaning_replaces_unstorable_characters() -> None:
    assert clean_text("a\x00b") == "a\ufffdb"
    assert clean_text("lone \ud800 surrogate") == "lone \ufffd surrogate"
    assert clean_text("fine ü 🏃") == "fine ü 🏃"
    assert clean_json({"k\x00": ["v\x00", 1, None, True, float("nan"), {"n": "\x00"}]}) == {
        "k\ufffd": ["v\ufffd", 1, None, True, None, {"n": "\ufffd"}]
    }
    assert clean_json({"when": NOW}) == {"when": str(NOW)}


async def test_nul_in_text_and_jsonb_is_cleaned(pg_pool: asyncpg.Pool) -> None:
    writer = LogWriter(pg_pool, MANUAL)
    row = decision(
        user_id="us\x00er",
        event_name="ev\x00ent",
        surface="\ud83d",  # a lone surrogate cannot even be encoded
        event_properties={"k\x00ey": "va\x00lue", "list": ["\x00", {"deep\x00": "x\x00"}]},
        candidates=[{"note": "a\x00b"}],
        channel="push",
    )
    writer.add_decision(row, push_job(row, payload={"title": "T\x00", "data": {"\x00": "\x00"}}))
    writer.add_outcome(outcome(row, "tap\x00"))
    await writer.flush()
    assert writer.rows_rejected == 0
    stored = await pg_pool.fetchrow(
        "SELECT * FROM decisions WHERE decision_id = $1", row.decision_id
    )
    assert stored is not None
    assert stored["user_id"] == "us\ufffder"
    assert stored["event_name"] == "ev\ufffdent"
    assert stored["surface"] == "\ufffd"
    assert json.loads(stored["event_properties"]) == {
        "k\ufffdey": "va\ufffdlue",
        "list": ["\ufffd", {"deep\ufffd": "x\ufffd"}],
    }
    assert json.loads(stored["candidates"]) == [{"note": "a\ufffdb"}]
    payload = await pg_pool.fetchval(
        "SELECT payload FROM push_jobs WHERE job_id = $1", row.decision_id
    )
    assert json.loads(payload) == {"title": "T\ufffd", "data": {"\ufffd": "\ufffd"}}
    assert await pg_pool.fetchval("SELECT type FROM outcomes") == "tap\ufffd"


async def test_a_bad_row_is_isolated_and_the_others_land(
    pg_pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    writer = LogWriter(pg_pool, MANUAL)
    good = [decision() for _ in range(20)]
    missing_time = decision(decided_at=None)  # NOT NULL violation in PostgreSQL
    wrong_type = decision(propensity="high")  # refused by the client-side encoder
    # Too large for the (app_id, user_id, decided_at) index, even compressed.
    huge = decision(user_id=secrets.token_urlsafe(8000))
    for row in good[:7]:
        writer.add_decision(row)
    writer.add_decision(missing_time)
    for row in good[7:15]:
        writer.add_decision(row)
    writer.add_decision(wrong_type)
    writer.add_decision(huge)
    for row in good[15:]:
        writer.add_decision(row)
        writer.add_outcome(outcome(row))
    await writer.flush()

    ids = {r["decision_id"] for r in await pg_pool.fetch("SELECT decision_id FROM decisions")}
    assert ids == {row.decision_id for row in good}
    assert await count(pg_pool, "outcomes") == 5
    assert writer.rows_rejected == 3
    assert writer.rows_written == 25
    assert writer.pending == 0
    rejected = messages(caplog, "decision_log_row_rejected")
    assert {r.decision_id for r in rejected} == {
        str(missing_time.decision_id),
        str(wrong_type.decision_id),
        str(huge.decision_id),
    }
    assert all(r.levelno == logging.ERROR for r in rejected)


# --- the background task -------------------------------------------------------------------


async def test_rows_are_flushed_in_the_background(pg_pool: asyncpg.Pool) -> None:
    async with LogWriter(pg_pool, FAST) as writer:
        rows = [decision() for _ in range(3)]
        for row in rows:
            writer.add_decision(row)

        async def landed() -> bool:
            # The rows are visible once the COPY commits, a moment before the writer counts
            # them as written: wait for both.
            return await count(pg_pool, "decisions") == 3 and writer.pending == 0

        await eventually(landed, timeout=5)
        assert writer.pending == 0


async def test_a_full_batch_is_written_without_waiting_for_the_interval(
    pg_pool: asyncpg.Pool,
) -> None:
    settings = LogSettings(batch_size=10, flush_interval_s=3600.0)
    async with LogWriter(pg_pool, settings) as writer:
        await asyncio.sleep(0.05)  # the task is waiting for its (hour-long) interval
        for _ in range(9):
            writer.add_decision(decision())
        await asyncio.sleep(0.3)
        assert await count(pg_pool, "decisions") == 0
        writer.add_decision(decision())

        async def landed() -> bool:
            return await count(pg_pool, "decisions") == 10

        await eventually(landed, timeout=5)


async def test_aexit_flushes_everything(pg_pool: asyncpg.Pool) -> None:
    async with LogWriter(pg_pool, LogSettings(batch_size=7, flush_interval_s=3600.0)) as writer:
        for _ in range(5):
            row = decision(channel="push")
            writer.add_decision(row, push_job(row))
            writer.add_outcome(outcome(row))
    assert await count(pg_pool, "decisions") == 5
    assert await count(pg_pool, "push_jobs") == 5
    assert await count(pg_pool, "outcomes") == 5
    assert writer.pending == 0
    assert writer.rows_written == 15


async def test_the_writer_does_not_close_the_pool_it_was_handed(pg_pool: asyncpg.Pool) -> None:
    async with LogWriter(pg_pool, FAST) as writer:
        writer.add_decision(decision())
    assert not pg_pool.is_closing()
    assert await pg_pool.fetchval("SELECT 1") == 1


# --- outages -------------------------------------------------------------------------------


class TcpProxy:
    """A TCP forwarder to PostgreSQL that a test can take down and bring back on one port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                w.close()
                self._writers.discard(w)
            self._tasks.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.CancelledError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


def via_port(dsn: str, port: int) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(netloc=f"{parts.username or 'postgres'}@127.0.0.1:{port}"))


@pytest.fixture
async def proxy(pg_dsn: str) -> AsyncIterator[TcpProxy]:
    parts = urlsplit(pg_dsn)
    forwarder = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    try:
        yield forwarder
    finally:
        await forwarder.stop()


@pytest.fixture
async def proxied_pool(pg_dsn: str, proxy: TcpProxy) -> AsyncIterator[asyncpg.Pool]:
    """A pool whose connections go through `proxy` (which starts down)."""
    pool = await asyncpg.create_pool(
        via_port(pg_dsn, proxy.port), min_size=0, max_size=2, timeout=2
    )
    try:
        yield pool
    finally:
        await pool.close()


async def test_rows_added_while_postgres_is_unreachable_are_written_once_it_is_back(
    pg_pool: asyncpg.Pool,
    proxied_pool: asyncpg.Pool,
    proxy: TcpProxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with LogWriter(proxied_pool, FAST) as writer:
        rows = [decision() for _ in range(30)]
        for row in rows[:10]:
            writer.add_decision(row)
        with pytest.raises(StoreUnavailable):
            await writer.flush()
        assert writer.pending == 10
        await asyncio.sleep(0.5)  # the background task fails and backs off meanwhile
        for row in rows[10:]:
            writer.add_decision(row)
        assert writer.pending == 30
        assert writer.rows_rejected == 0
        assert messages(caplog, "decision_log_write_failed")

        await proxy.start()

        async def landed() -> bool:
            # Visible once committed, a moment before the writer counts them: wait for both.
            return await count(pg_pool, "decisions") == 30 and writer.pending == 0

        await eventually(landed)
        assert writer.rows_written == 30
        assert writer.rows_dropped == 0


async def test_a_connection_cut_mid_way_loses_nothing(
    pg_pool: asyncpg.Pool, proxied_pool: asyncpg.Pool, proxy: TcpProxy
) -> None:
    await proxy.start()
    async with LogWriter(proxied_pool, FAST) as writer:
        writer.add_decision(decision())
        await writer.flush()  # the pool now holds a live connection through the proxy
        await proxy.stop()
        for _ in range(10):
            writer.add_decision(decision())
        await asyncio.sleep(0.5)
        assert writer.pending == 10
        await proxy.start()

        async def landed() -> bool:
            return await count(pg_pool, "decisions") == 11

        await eventually(landed)
    assert writer.rows_written == 11


async def test_rows_survive_the_database_being_dropped_and_recreated(
    pg_dsn: str, pg_template: str
) -> None:
    name = urlsplit(pg_dsn).path.lstrip("/")
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2, timeout=2)
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        async with LogWriter(pool, FAST) as writer:
            writer.add_decision(decision())
            await writer.flush()
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            rows = [decision() for _ in range(5)]
            for row in rows:
                writer.add_decision(row)
            await asyncio.sleep(0.5)
            assert writer.pending == 5
            await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')

            async def landed() -> bool:
                return writer.pending == 0

            await eventually(landed)
        check = await asyncpg.connect(pg_dsn)
        try:
            ids = {r["decision_id"] for r in await check.fetch("SELECT decision_id FROM decisions")}
        finally:
            await check.close()
        assert ids == {row.decision_id for row in rows}  # the first row went with the old database
        assert writer.rows_rejected == 0
    finally:
        await admin.close()
        await pool.close()


async def test_a_full_buffer_drops_the_newest_rows_loudly(
    pg_pool: asyncpg.Pool,
    proxied_pool: asyncpg.Pool,
    proxy: TcpProxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = LogSettings(batch_size=500, flush_interval_s=0.05, max_buffered_rows=5)
    async with LogWriter(proxied_pool, settings) as writer:
        kept = [decision() for _ in range(3)]
        for row in kept:
            writer.add_decision(row)
        with_job = decision()
        writer.add_decision(with_job, push_job(with_job))  # 2 rows: 5 in all
        dropped = [decision() for _ in range(3)]
        for row in dropped:
            writer.add_decision(row)  # never raises
        assert writer.pending == 5
        assert writer.rows_dropped == 3
        errors = messages(caplog, "decision_log_buffer_full")
        assert errors and errors[0].levelno == logging.ERROR

        await proxy.start()

        async def landed() -> bool:
            return writer.pending == 0

        await eventually(landed)
    ids = {r["decision_id"] for r in await pg_pool.fetch("SELECT decision_id FROM decisions")}
    assert ids == {row.decision_id for row in [*kept, with_job]}
    assert await count(pg_pool, "push_jobs") == 1


async def test_aexit_gives_up_loudly_after_its_drain_time(
    proxied_pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [decision() for _ in range(3)]
    started = asyncio.get_running_loop().time()
    async with LogWriter(proxied_pool, FAST, drain_timeout_s=0.5) as writer:
        for row in rows:
            writer.add_decision(row)
    assert asyncio.get_running_loop().time() - started < 5
    assert writer.pending == 0
    assert writer.rows_dropped == 3
    assert writer.rows_written == 0
    lost = messages(caplog, "decision_log_row_lost")
    assert {r.decision_id for r in lost} == {str(row.decision_id) for row in rows}
    assert all(r.levelno == logging.ERROR for r in lost)
    assert messages(caplog, "decision_log_rows_lost")


async def test_rows_added_after_close_are_counted_as_dropped(pg_pool: asyncpg.Pool) -> None:
    async with LogWriter(pg_pool, FAST) as writer:
        pass
    writer.add_decision(decision())  # never raises
    writer.add_outcome(outcome(decision()))
    assert writer.rows_dropped == 2
    assert writer.pending == 0
    assert await count(pg_pool, "decisions") == 0
