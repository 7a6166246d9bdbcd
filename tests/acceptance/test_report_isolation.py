"""Reports beside decisions, on the server as a process: a heavy report runs in a child process,
Decide keeps answering while it runs, and a report whose call is cancelled stops and frees its
worker.

Nothing is timed. The test counts the Decide calls answered within their (generous) deadline
while the report runs, and reads the server's log for where the report ran (the child's pid)
and how it ended.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import asyncpg
import grpc
import pytest
from conftest import ServerProcess
from nudge.v1 import admin_pb2, decision_pb2, report_pb2, report_pb2_grpc
from nudge_client import NudgeClient

#: Shown decisions of the heavy campaign: a report over them takes seconds of a CPU.
DECISIONS = 100_000
#: Each Decide call's deadline while the report runs: a hundred times what one takes.
DECIDE_DEADLINE_S = 0.5
#: The deadline of the report that is cancelled: a fraction of what the whole report takes.
CANCEL_AFTER_S = 1.0
FILL = """
INSERT INTO decisions (decision_id, app_id, user_id, decided_at, received_at, event_name,
  requested_channel, time_zone, show, reason, campaign_id, arm_id, propensity)
SELECT gen_random_uuid(), 'shop', 'u' || (i % 5000), $2::timestamptz + i * interval '1 second',
  now(), 'workout_finished', 'in_app', 'UTC', true, 'shown', 'streak', 'arm-' || (i % 4), 0.25
FROM generate_series(1, $1::int) AS i
"""
REWARDS = """
INSERT INTO outcomes (decision_id, app_id, user_id, campaign_id, arm_id, type, occurred_at,
  received_at, rewarded)
SELECT decision_id, app_id, user_id, campaign_id, arm_id, 'tap', decided_at, now(), true
FROM decisions WHERE get_byte(uuid_send(decision_id), 0) % 5 = 0
"""


@pytest.fixture
def server_env() -> dict[str, str]:
    """One report worker; two reports may wait for it."""
    return {
        "NUDGE_REPORT_WORKERS": "1",
        "NUDGE_REPORT_MAX_WAITING": "2",
        "NUDGE_LOG_LEVEL": "INFO",
    }


def campaign(campaign_id: str, event: str, arms: int) -> admin_pb2.PutCampaignRequest:
    return admin_pb2.PutCampaignRequest(
        campaign=admin_pb2.Campaign(
            app_id="shop",
            campaign_id=campaign_id,
            trigger_events=[event],
            channel=decision_pb2.CHANNEL_IN_APP,
            arms=[
                admin_pb2.Arm(arm_id=f"arm-{i}", prompt=decision_pb2.Prompt(title=f"Prompt {i}"))
                for i in range(arms)
            ],
        )
    )


async def prepare(server: ServerProcess) -> None:
    """The app, a heavy campaign with DECISIONS logged decisions, one to decide on, and one
    without decisions (a quick report)."""
    async with NudgeClient(server.target, timeout_s=10, api_key=await server.key("shop")) as client:
        await client.admin.PutApp(admin_pb2.PutAppRequest(app=admin_pb2.App(app_id="shop")))
        await client.admin.PutCampaign(campaign("streak", "workout_finished", 4))
        await client.admin.PutCampaign(campaign("welcome", "app_opened", 1))
        await client.admin.PutCampaign(campaign("quiet", "never_happens", 2))
    conn = await asyncpg.connect(server.dsn)
    try:
        await conn.execute(FILL, DECISIONS, dt.datetime(2026, 1, 5, tzinfo=dt.UTC))
        await conn.execute(REWARDS)
        await conn.execute("ANALYZE decisions, outcomes")
    finally:
        await conn.close()


def events(server: ServerProcess, name: str) -> list[dict[str, Any]]:
    """The server's log lines (the children's included) of one event."""
    found = []
    for line in server.log_path.read_text(errors="replace").splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("event") == name:
            found.append(doc)
    return found


async def eventually_logged(server: ServerProcess, name: str) -> list[dict[str, Any]]:
    """The log lines of `name`, once there is one (at most 20 s: a bound on a hang)."""
    for _ in range(400):
        if found := events(server, name):
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"the server never logged {name}")


def report_request(campaign_id: str) -> report_pb2.GetArmReportRequest:
    return report_pb2.GetArmReportRequest(app_id="shop", campaign_id=campaign_id)


async def test_a_heavy_report_runs_in_a_child_process_and_never_holds_up_decide(
    server: ServerProcess,
) -> None:
    await prepare(server)
    async with server.channel("shop") as channel:
        stub = report_pb2_grpc.ReportServiceStub(channel)

        # A heavy report, and Decide calls one after the other for as long as it runs.
        async def heavy_report() -> report_pb2.GetArmReportResponse:
            reply: report_pb2.GetArmReportResponse = await stub.GetArmReport(
                report_request("streak"), timeout=120
            )
            return reply

        report = asyncio.create_task(heavy_report())
        answered, failed = 0, []
        async with NudgeClient(
            server.target, timeout_s=DECIDE_DEADLINE_S, api_key=await server.key("shop")
        ) as client:
            user = 0
            while not report.done():
                try:
                    await client.decide("shop", f"visitor-{user}", "app_opened", time_zone="UTC")
                    answered += 1
                except grpc.aio.AioRpcError as exc:
                    failed.append(exc.code())
                user += 1
                await asyncio.sleep(0.01)
        reply = await report
        assert reply.report.decisions == DECISIONS
        assert sum(a.decisions for a in reply.report.arms) == DECISIONS
        assert failed == [], f"{len(failed)} of {answered + len(failed)} Decide calls failed"
        assert answered >= 50  # the calls overlapped the report

        # The report ran in a process of its own.
        started = events(server, "report_started")
        finished = events(server, "report_finished")
        assert [e["campaign_id"] for e in started] == ["streak"]
        assert [e["campaign_id"] for e in finished] == ["streak"]
        child = started[0]["pid"]
        assert child != server.process.pid and finished[0]["pid"] == child

        # A report whose call gives up stops in its child, and frees the only worker.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetArmReport(report_request("streak"), timeout=CANCEL_AFTER_S)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        cancelled = await eventually_logged(server, "report_cancelled")
        assert [(e["campaign_id"], e["pid"]) for e in cancelled] == [("streak", child)]
        quick = await stub.GetArmReport(report_request("quiet"), timeout=60)
        assert quick.report.decisions == 0
        # The cancelled report never finished; the worker went on to the next one.
        assert [e["campaign_id"] for e in events(server, "report_finished")] == [
            "streak",
            "quiet",
        ]
    assert await server.stop() == 0
