"""The arm report end to end: decisions and outcomes through the running server, the report
through ReportService and through the `nudge report` command."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import grpc
import pytest
from conftest import ServerProcess
from google.protobuf import duration_pb2, timestamp_pb2
from nudge.v1 import admin_pb2, decision_pb2, report_pb2, report_pb2_grpc
from nudge_client import NudgeClient
from nudge_server.throttle import in_holdout

UTC = dt.UTC
TIME_ZONE = "Europe/Berlin"
MORNING = dt.datetime(2026, 6, 1, 7, 0, tzinfo=UTC)  # 09:00 in Berlin
USERS = 24
SHARE = 0.25


async def configure(client: NudgeClient) -> None:
    await client.admin.PutApp(
        admin_pb2.PutAppRequest(app=admin_pb2.App(app_id="shop", display_name="Shop")),
        timeout=5,
    )
    await client.admin.PutCampaign(
        admin_pb2.PutCampaignRequest(
            campaign=admin_pb2.Campaign(
                app_id="shop",
                campaign_id="streak",
                display_name="Streak nudge",
                trigger_events=["workout_finished"],
                channel=decision_pb2.CHANNEL_IN_APP,
                arms=[
                    admin_pb2.Arm(arm_id="short", prompt=decision_pb2.Prompt(title="Nice!")),
                    admin_pb2.Arm(arm_id="long", prompt=decision_pb2.Prompt(title="Great run")),
                ],
                control_arm_id="short",
                holdout_share=SHARE,
                attribution_window=duration_pb2.Duration(seconds=86400),
            )
        ),
        timeout=5,
    )


async def wait_for_rows(dsn: str, decisions: int, outcomes: int) -> None:
    """Polls PostgreSQL until the log writer has flushed every decision and outcome."""
    conn = await asyncpg.connect(dsn)
    try:
        for _ in range(200):
            got_decisions = await conn.fetchval("SELECT count(*) FROM decisions")
            got_outcomes = await conn.fetchval(
                "SELECT count(*) FROM outcomes WHERE type <> 'ignore'"
            )
            if (got_decisions, got_outcomes) == (decisions, outcomes):
                return
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    raise AssertionError(f"rows did not arrive: {got_decisions} decisions, {got_outcomes} outcomes")


async def wait_for_snapshots(dsn: str) -> None:
    """Polls PostgreSQL until every policy snapshot a decision names is in the log (the server
    writes them in the background)."""
    conn = await asyncpg.connect(dsn)
    try:
        for _ in range(200):
            missing = await conn.fetchval(
                """
                SELECT count(*) FROM decisions d
                WHERE d.policy_snapshot IS NOT NULL AND NOT EXISTS (
                    SELECT 1 FROM policy_snapshots s WHERE s.snapshot_id = d.policy_snapshot)
                """
            )
            if missing == 0:
                return
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    raise AssertionError(f"{missing} decisions name a policy snapshot that never arrived")


def stamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    result = timestamp_pb2.Timestamp()
    result.FromDatetime(value)
    return result


def run_cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NUDGE_DATABASE_URL": server.dsn}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "nudge_server",
            "report",
            "--app",
            "shop",
            "--campaign",
            "streak",
            *args,
        ],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_arm_report_over_rpc_and_cli(server: ServerProcess, tmp_path: Path) -> None:
    shown: list[tuple[str, decision_pb2.DecideResponse, str]] = []
    calls = 0
    outcomes = 0
    async with NudgeClient(server.target, timeout_s=5, api_key=await server.key("shop")) as client:
        await configure(client)
        for i in range(USERS):
            user = f"runner-{i}"
            platform = "ios" if i < 12 else "android"
            first = await client.decide(
                "shop",
                user,
                "workout_finished",
                time_zone=TIME_ZONE,
                platform=platform,
                event_time=MORNING + dt.timedelta(minutes=i),
            )
            calls += 1
            assert first.show != in_holdout("shop", "streak", user, SHARE)
            if first.show:
                shown.append((user, first, platform))
                at = MORNING + dt.timedelta(minutes=i + 1)
                await client.report_outcome(
                    "shop", user, first.decision_id, "impression", occurred_at=at
                )
                outcomes += 1
                if i % 2 == 0:
                    await client.report_outcome(
                        "shop", user, first.decision_id, "tap", occurred_at=at
                    )
                    outcomes += 1
            if i % 3 == 0:  # comes back two days later
                again = await client.decide(
                    "shop",
                    user,
                    "workout_finished",
                    time_zone=TIME_ZONE,
                    platform=platform,
                    event_time=MORNING + 2 * dt.timedelta(days=1) + dt.timedelta(minutes=i),
                )
                calls += 1
                if again.show:
                    shown.append((user, again, platform))
    await wait_for_rows(server.dsn, calls, outcomes)
    await wait_for_snapshots(server.dsn)

    # Impressions (and taps, for even users) were reported for each user's first decision.
    first_ids: set[str] = set()
    seen_users: set[str] = set()
    for user, reply, _ in shown:
        if user not in seen_users:
            first_ids.add(reply.decision_id)
            seen_users.add(user)
    tap_ids = {
        r.decision_id
        for u, r, _ in shown
        if r.decision_id in first_ids and int(u.split("-")[1]) % 2 == 0
    }

    async with server.channel("shop") as channel:
        stub = report_pb2_grpc.ReportServiceStub(channel)
        reply = await stub.GetArmReport(
            report_pb2.GetArmReportRequest(app_id="shop", campaign_id="streak"), timeout=30
        )
        report = reply.report
        assert report.decisions == len(shown)
        assert report.display_name == "Streak nudge"
        assert report.reward_metric == admin_pb2.REWARD_METRIC_TAP
        rows = {arm.arm_id: arm for arm in report.arms}
        assert list(rows) == ["short", "long"] and rows["short"].is_control
        for arm_id, row in rows.items():
            ids = {r.decision_id for _, r, _ in shown if r.arm_id == arm_id}
            assert row.decisions == len(ids)
            assert row.impressions == len(ids & first_ids)
            assert row.taps == len(ids & tap_ids) == row.rewards
            # Only first decisions got outcomes: the return visits stay unresolved.
            assert (row.resolved, row.unresolved) == (len(ids & first_ids), len(ids - first_ids))
            assert row.posterior_alpha == 1 + row.rewards
            assert row.posterior_beta == 1 + row.resolved - row.rewards
            assert row.credible_interval.low < row.posterior_mean < row.credible_interval.high
            assert row.ignores <= row.decisions - row.taps
        assert sum(r.probability_best for r in report.arms) == pytest.approx(1.0)
        assert report.best_arm_method == report_pb2.BEST_ARM_METHOD_EXACT
        assert len(report.versus_control) == 1
        assert report.versus_control[0].arm_id == "long"
        assert report.resolved == len(first_ids) < report.decisions
        # Every decision names the policy snapshot it was drawn from: the Pearson check.
        srm = report.sample_ratio
        assert srm.decisions == len(shown)
        assert srm.kind == report_pb2.SAMPLE_RATIO_METHOD_POLICY_SNAPSHOTS
        assert srm.verdict != report_pb2.SAMPLE_RATIO_VERDICT_UNSPECIFIED
        assert not report.HasField("sample_ratio_without_snapshots")
        assert [a.arm_id for a in srm.arms] == ["short", "long"]
        assert sum(a.expected for a in srm.arms) == pytest.approx(len(shown))
        assert [r.expected_decisions for r in report.arms] == [a.expected for a in srm.arms]
        held = sum(1 for i in range(USERS) if in_holdout("shop", "streak", f"runner-{i}", SHARE))
        assert (report.holdout.users, report.holdout.holdout_users) == (USERS, held)
        assert [c.days for c in report.holdout.comparisons] == [0, 1, 7, 30, 90]
        one_day = report.holdout.comparisons[1]
        back = {f"runner-{i}" for i in range(USERS) if i % 3 == 0}
        measurable = one_day.treated_users + one_day.holdout_users
        assert measurable == USERS  # every first decision is two days before the data's end
        assert one_day.treated_successes + one_day.holdout_successes == len(back)
        assert "correlation" in report.cohorts.note
        assert len(report.off_policy.estimates) == 3
        assert report.off_policy.rows_used == len(shown)
        assert report.timeline and sum(sum(b.decisions) for b in report.timeline) == len(shown)
        assert report.timeline_bucket == report_pb2.TIMELINE_BUCKET_SIZE_DAY
        assert report.data_end.ToDatetime(UTC) == MORNING + dt.timedelta(days=2, minutes=21)

        ios = await stub.GetArmReport(
            report_pb2.GetArmReportRequest(
                app_id="shop", campaign_id="streak", segment={"platform": "ios"}
            ),
            timeout=30,
        )
        assert ios.report.decisions == sum(1 for _, _, p in shown if p == "ios")
        ranged = await stub.GetArmReport(
            report_pb2.GetArmReportRequest(
                app_id="shop",
                campaign_id="streak",
                start_time=stamp(MORNING + dt.timedelta(days=1)),
            ),
            timeout=30,
        )
        assert ranged.report.decisions == sum(
            1 for _, r, _ in shown if r.decision_id not in first_ids
        )

        for request, code, field in [
            (
                report_pb2.GetArmReportRequest(
                    app_id="shop", campaign_id="streak", segment={"country": "DE"}
                ),
                grpc.StatusCode.INVALID_ARGUMENT,
                "segment.country",
            ),
            (
                report_pb2.GetArmReportRequest(
                    app_id="shop",
                    campaign_id="streak",
                    start_time=stamp(MORNING),
                    end_time=stamp(MORNING - dt.timedelta(hours=1)),
                ),
                grpc.StatusCode.INVALID_ARGUMENT,
                "end_time",
            ),
            (
                report_pb2.GetArmReportRequest(app_id="shop", campaign_id="nope"),
                grpc.StatusCode.NOT_FOUND,
                "nope",
            ),
            (
                report_pb2.GetArmReportRequest(app_id="shop"),
                grpc.StatusCode.INVALID_ARGUMENT,
                "campaign_id",
            ),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetArmReport(request, timeout=30)
            assert caught.value.code() == code, caught.value.details()
            assert field in (caught.value.details() or ""), caught.value.details()

    # The same report through the command line, in every format and picture.
    png, page = tmp_path / "report.png", tmp_path / "report.html"
    table = await asyncio.to_thread(run_cli, server, "--png", str(png), "--html", str(page))
    assert table.returncode == 0, table.stderr
    assert "Arm report: app shop, campaign streak (Streak nudge)" in table.stdout
    for section in ("Tests", "Sample ratio", "Holdout", "Cohorts", "Off-policy", "Warnings"):
        assert section in table.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    html_text = page.read_text(encoding="utf-8")
    assert "<svg" in html_text and "Streak nudge" in html_text and len(html_text) > 20_000

    as_json = await asyncio.to_thread(run_cli, server, "--format", "json")
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    assert doc["decisions"] == report.decisions
    assert [a["taps"] for a in doc["arms"]] == [r.taps for r in report.arms]
    assert [a["resolved"] for a in doc["arms"]] == [r.resolved for r in report.arms]
    assert doc["sample_ratio"]["kind"] == "policy_snapshots"
    assert [a["probability_best"] for a in doc["arms"]] == pytest.approx(
        [r.probability_best for r in report.arms]
    )

    as_csv = await asyncio.to_thread(
        run_cli, server, "--format", "csv", "--segment", "platform=ios"
    )
    assert as_csv.returncode == 0, as_csv.stderr
    csv_rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [r["arm_id"] for r in csv_rows] == ["short", "long"]
    assert sum(int(r["decisions"]) for r in csv_rows) == ios.report.decisions
    assert sum(int(r["resolved"]) + int(r["unresolved"]) for r in csv_rows) == ios.report.decisions

    bad = await asyncio.to_thread(run_cli, server, "--segment", "country=DE")
    assert bad.returncode == 2 and "--segment country" in bad.stderr
    backwards = await asyncio.to_thread(
        run_cli, server, "--from", "2026-06-02", "--to", "2026-06-01"
    )
    assert backwards.returncode == 2 and "--to" in backwards.stderr
    # A time past year 9999 in UTC is refused up front, naming its flag (not a DataError).
    beyond = await asyncio.to_thread(run_cli, server, "--to", "9999-12-31T23:59:59.999999-01:00")
    assert beyond.returncode == 2 and beyond.stderr.startswith("nudge: --to: "), beyond.stderr
    assert await server.stop() == 0
