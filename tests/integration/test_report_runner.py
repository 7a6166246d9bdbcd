"""GetArmReport through a real in-process grpc.aio server whose reports run in real child
processes (`report_runner`), against a real PostgreSQL.

Nothing here is timed: a report is held in PostgreSQL by a lock another connection takes on the
decisions, and the tests look at what can be counted (pg_stat_activity, the runner's slots and
counts, the children's log lines).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
import grpc
import pytest
from google.protobuf import timestamp_pb2
from nudge.v1 import report_pb2, report_pb2_grpc
from nudge_server.config_store import ConfigStore
from nudge_server.errors import ReportFailed, ResourceExhausted
from nudge_server.model import App, Arm, Campaign, Prompt
from nudge_server.report import validate_query
from nudge_server.report_api import ReportServicer
from nudge_server.report_runner import APPLICATION_NAME, ReportRunner
from nudge_server.settings import PostgresSettings, ReportSettings
from nudge_server.wire import DecodeErrors

DECISIONS = 40
#: The report's first query on the decisions, as pg_stat_activity shows it.
BLOCKED = """
SELECT count(*) FROM pg_stat_activity
WHERE application_name = $1 AND wait_event_type = 'Lock' AND query LIKE '%FROM decisions%'
"""
REPORT_CONNECTIONS = "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1"
FILL = """
INSERT INTO decisions (decision_id, app_id, user_id, decided_at, received_at, event_name,
  requested_channel, time_zone, show, reason, campaign_id, arm_id, propensity)
SELECT gen_random_uuid(), 'shop', 'u' || i, $2::timestamptz + i * interval '1 hour', now(),
  'workout_finished', 'in_app', 'UTC', true, 'shown', 'streak',
  CASE WHEN i % 2 = 0 THEN 'a' ELSE 'b' END, 0.5
FROM generate_series(1, $1::int) AS i
"""


@dataclass
class Reports:
    runner: ReportRunner
    stub: report_pb2_grpc.ReportServiceStub


@asynccontextmanager
async def serving(dsn: str, **settings: float) -> AsyncIterator[Reports]:
    """ReportService on a loopback port, its reports computed by a ReportRunner."""
    runner = ReportRunner(PostgresSettings(dsn=dsn), ReportSettings(**settings))  # type: ignore[arg-type]
    server = grpc.aio.server(interceptors=[DecodeErrors()])
    report_pb2_grpc.add_ReportServiceServicer_to_server(
        ReportServicer(runner, max_send_bytes=16 * 1024 * 1024), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    async with runner:
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                yield Reports(runner, report_pb2_grpc.ReportServiceStub(channel))
        finally:
            await server.stop(None)


@pytest.fixture
async def campaign(pg_pool: asyncpg.Pool) -> None:
    store = ConfigStore(pg_pool)
    await store.put_app(App("shop"))
    await store.put_campaign(
        Campaign(
            app_id="shop",
            campaign_id="streak",
            arms=(Arm("a", Prompt(title="A")), Arm("b", Prompt(title="B"))),
            trigger_events=frozenset({"workout_finished"}),
        )
    )
    await pg_pool.execute(FILL, DECISIONS, dt.datetime(2026, 5, 1, tzinfo=dt.UTC))


@asynccontextmanager
async def decisions_locked(dsn: str) -> AsyncIterator[None]:
    """Holds an ACCESS EXCLUSIVE lock on the decisions: every report waits in PostgreSQL."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("LOCK TABLE decisions IN ACCESS EXCLUSIVE MODE")
            yield
    finally:
        await conn.close()


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Polls `check` until it holds (at most 20 s: a bound on a hang, not a measurement)."""
    for _ in range(400):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


@pytest.fixture
def info_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Logs at INFO: the children take the server's level, and their report_* events are INFO."""
    caplog.set_level(logging.INFO)


async def until_blocked(pg_pool: asyncpg.Pool) -> None:
    """Until a report's query waits for the lock of `decisions_locked` (it is running)."""

    async def blocked() -> bool:
        return bool(await pg_pool.fetchval(BLOCKED, APPLICATION_NAME))

    await eventually(blocked, "a report's query waits for the lock")


async def until_waiting(runner: ReportRunner) -> None:
    """Until one report waits for a free worker."""

    async def one_waits() -> bool:
        return runner.waiting == 1

    await eventually(one_waits, "a report waits for a worker")


def child_events(output: str) -> list[dict[str, object]]:
    """The report_* log lines (JSON) the children wrote to the inherited stderr."""
    events = []
    for line in output.splitlines():
        if line.startswith("{"):
            doc = json.loads(line)
            if str(doc.get("event", "")).startswith("report_"):
                events.append(doc)
    return events


def request(**fields: object) -> report_pb2.GetArmReportRequest:
    return report_pb2.GetArmReportRequest(app_id="shop", campaign_id="streak", **fields)  # type: ignore[arg-type]


async def ask(reports: Reports) -> report_pb2.GetArmReportResponse:
    reply: report_pb2.GetArmReportResponse = await reports.stub.GetArmReport(request(), timeout=60)
    return reply


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"start_time": timestamp_pb2.Timestamp(seconds=253402300800)}, "start_time"),
        ({"start_time": timestamp_pb2.Timestamp(seconds=-62135596801)}, "start_time"),
        ({"end_time": timestamp_pb2.Timestamp(seconds=1_700_000_000, nanos=-5)}, "end_time"),
        ({"end_time": timestamp_pb2.Timestamp(seconds=1_700_000_000, nanos=10**9)}, "end_time"),
        ({"segment": {"locale": "de\x00"}}, "segment.locale"),
        ({"segment": {"surface": "home\x00"}}, "segment.surface"),
        ({"campaign_id": "streak\x00"}, "campaign_id"),
    ],
)
async def test_invalid_times_and_nul_characters_are_invalid_arguments(
    pg_dsn: str, fields: dict[str, object], field: str
) -> None:
    async with serving(pg_dsn) as reports:
        message = report_pb2.GetArmReportRequest(app_id="shop", campaign_id="streak")
        for name, value in fields.items():
            if isinstance(value, timestamp_pb2.Timestamp):
                getattr(message, name).CopyFrom(value)
            elif isinstance(value, dict):
                message.segment.update(value)
            else:
                setattr(message, name, value)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await reports.stub.GetArmReport(message, timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
        assert (caught.value.details() or "").startswith(field), caught.value.details()
        # Refused before any work: no child process was started for it.
        assert reports.runner.counts.total() == 0


@pytest.mark.usefixtures("campaign", "info_logs")
async def test_a_report_runs_in_a_child_process(
    pg_dsn: str, capfd: pytest.CaptureFixture[str]
) -> None:
    async with serving(pg_dsn) as reports:
        reply = await reports.stub.GetArmReport(request(), timeout=60)
        assert reply.report.decisions == DECISIONS
        assert [a.decisions for a in reply.report.arms] == [DECISIONS // 2, DECISIONS // 2]
        assert reply.report.timeline_bucket == report_pb2.TIMELINE_BUCKET_SIZE_DAY
        assert reports.runner.counts == {"finished": 1}
        assert reports.runner.running == 0
    events = child_events(capfd.readouterr().err)
    started = [e for e in events if e["event"] == "report_started"]
    finished = [e for e in events if e["event"] == "report_finished"]
    assert len(started) == len(finished) == 1
    assert started[0]["pid"] == finished[0]["pid"] != os.getpid()


@pytest.mark.usefixtures("campaign")
async def test_a_query_past_the_command_timeout_is_deadline_exceeded(pg_dsn: str) -> None:
    async with serving(pg_dsn, command_timeout_s=0.5) as reports:
        async with decisions_locked(pg_dsn):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await reports.stub.GetArmReport(request(), timeout=60)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, caught.value.details()
        assert "timed out" in (caught.value.details() or "")
        assert reports.runner.counts == {"failed": 1}
        # The worker is free again: the next report runs.
        reply = await reports.stub.GetArmReport(request(), timeout=60)
        assert reply.report.decisions == DECISIONS


@pytest.mark.usefixtures("campaign", "info_logs")
async def test_cancelling_a_running_report_stops_its_query_and_frees_its_slot(
    pg_dsn: str, pg_pool: asyncpg.Pool, capfd: pytest.CaptureFixture[str]
) -> None:
    async with serving(pg_dsn, workers=1, max_waiting=0) as reports:
        runner = reports.runner
        query = validate_query("shop", "streak")
        async with decisions_locked(pg_dsn):
            running = asyncio.create_task(runner.report(query))

            await until_blocked(pg_pool)
            assert runner.running == 1
            # The only worker is taken and nothing may wait: the next report is refused.
            with pytest.raises(ResourceExhausted):
                await runner.report(query)

            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running

            async def stopped() -> bool:
                return (
                    runner.running == 0
                    and await pg_pool.fetchval(REPORT_CONNECTIONS, APPLICATION_NAME) == 0
                )

            # While the lock is still held: the query was cancelled in PostgreSQL, not left to
            # finish, and the child closed its connection.
            await eventually(stopped, "the child stops and frees its slot")
        assert runner.counts == {"refused": 1, "cancelled": 1}
        report = report_pb2.ArmReport.FromString(await runner.report(query))
        assert report.decisions == DECISIONS
        assert runner.counts["finished"] == 1
    events = child_events(capfd.readouterr().err)
    cancelled = [e for e in events if e["event"] == "report_cancelled"]
    assert len(cancelled) == 1 and cancelled[0]["stage"] == "fetch"
    assert cancelled[0]["pid"] != os.getpid()


@pytest.mark.usefixtures("campaign")
async def test_reports_beyond_the_workers_wait_and_beyond_the_queue_are_refused(
    pg_dsn: str, pg_pool: asyncpg.Pool
) -> None:
    async with serving(pg_dsn, workers=1, max_waiting=1) as reports:
        runner = reports.runner
        async with decisions_locked(pg_dsn):
            first = asyncio.create_task(ask(reports))

            await until_blocked(pg_pool)
            second = asyncio.create_task(ask(reports))

            await until_waiting(runner)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await reports.stub.GetArmReport(request(), timeout=60)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "NUDGE_REPORT_MAX_WAITING" in (caught.value.details() or "")
        replies = await asyncio.gather(first, second)
        assert [r.report.decisions for r in replies] == [DECISIONS, DECISIONS]
        assert runner.counts == {"finished": 2, "refused": 1}
        assert (runner.running, runner.waiting) == (0, 0)


@pytest.mark.usefixtures("campaign")
async def test_a_waiting_report_cancelled_leaves_the_queue(
    pg_dsn: str, pg_pool: asyncpg.Pool
) -> None:
    async with serving(pg_dsn, workers=1, max_waiting=1) as reports:
        runner = reports.runner
        query = validate_query("shop", "streak")
        async with decisions_locked(pg_dsn):
            first = asyncio.create_task(runner.report(query))

            await until_blocked(pg_pool)
            waiting = asyncio.create_task(runner.report(query))

            await until_waiting(runner)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert runner.waiting == 0
        assert report_pb2.ArmReport.FromString(await first).decisions == DECISIONS
        # Only the first report ever reached a child.
        assert runner.counts == {"finished": 1}
        assert runner.running == 0


@pytest.mark.usefixtures("campaign")
async def test_closing_the_runner_stops_a_running_report(
    pg_dsn: str, pg_pool: asyncpg.Pool
) -> None:
    runner = ReportRunner(PostgresSettings(dsn=pg_dsn), ReportSettings(workers=1))
    async with decisions_locked(pg_dsn):
        async with runner:
            running = asyncio.create_task(runner.report(validate_query("shop", "streak")))

            await until_blocked(pg_pool)
        # Closed while the lock is still held: the child stopped its query and went away.
        with pytest.raises(ReportFailed, match="shutting down"):
            await running
        assert await pg_pool.fetchval(REPORT_CONNECTIONS, APPLICATION_NAME) == 0
        assert runner.counts == {"cancelled": 1}
        with pytest.raises(ReportFailed, match="stopping"):
            await runner.report(validate_query("shop", "streak"))


@pytest.mark.usefixtures("campaign", "info_logs")
async def test_a_report_process_that_dies_fails_its_report_and_the_next_one_gets_a_new_one(
    pg_dsn: str, pg_pool: asyncpg.Pool, capfd: pytest.CaptureFixture[str]
) -> None:
    async with serving(pg_dsn, workers=1) as reports:
        runner = reports.runner
        query = validate_query("shop", "streak")
        async with decisions_locked(pg_dsn):
            running = asyncio.create_task(runner.report(query))
            await until_blocked(pg_pool)
            (started,) = [
                e for e in child_events(capfd.readouterr().err) if e["event"] == "report_started"
            ]
            os.kill(int(str(started["pid"])), signal.SIGKILL)  # as the OOM killer would
            with pytest.raises(ReportFailed, match="died"):
                await running
        report = report_pb2.ArmReport.FromString(await runner.report(query))
        assert report.decisions == DECISIONS
        assert runner.counts == {"failed": 1, "finished": 1}
    (again,) = [e for e in child_events(capfd.readouterr().err) if e["event"] == "report_started"]
    assert again["pid"] != started["pid"]


@pytest.mark.usefixtures("campaign")
async def test_one_app_cannot_take_every_place_of_the_queue(
    pg_dsn: str, pg_pool: asyncpg.Pool
) -> None:
    async with serving(pg_dsn, workers=1, max_waiting=3, max_per_app=2) as reports:
        runner = reports.runner
        query = validate_query("shop", "streak")
        async with decisions_locked(pg_dsn):
            first = asyncio.create_task(runner.report(query))
            await until_blocked(pg_pool)
            second = asyncio.create_task(runner.report(query))
            await until_waiting(runner)
            with pytest.raises(ResourceExhausted, match="NUDGE_REPORT_MAX_PER_APP"):
                await runner.report(query)
            # Another app still gets a place (it waits, and finds no such campaign).
            other = asyncio.create_task(runner.report(validate_query("other", "streak")))
            while runner.waiting < 2:
                await asyncio.sleep(0.01)
        results = await asyncio.gather(first, second, other, return_exceptions=True)
        assert [type(r).__name__ for r in results] == ["bytes", "bytes", "NotFound"]
        assert runner.counts["refused"] == 1
