"""The `nudge` command as a subprocess: apply validates whole files, push jobs are inspectable."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg

GOOD = """
apps:
  - app_id: fit
    policy: {daily_cap: 2, quiet_hours_start: "23:00", quiet_hours_end: "07:00"}
campaigns:
  - app_id: fit
    campaign_id: comeback
    trigger_events: [dormant_7d]
    channel: push
    arms:
      - arm_id: friendly
        prompt: {title: We miss you, body: "Your streak is waiting"}
"""


def nudge(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NUDGE_DATABASE_URL": dsn}
    return subprocess.run(
        [sys.executable, "-m", "nudge_server", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_apply_rejects_a_bad_file_whole_and_names_the_field(
    pg_dsn: str, pg_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("arm_id: friendly", "arm_id: 'not ok!'"))
    result = nudge(pg_dsn, "apply", str(bad))
    assert result.returncode == 2
    assert "campaigns[0].arms[0].arm_id" in result.stderr
    assert "Traceback" not in result.stderr
    # Nothing half-written: not even the valid app.
    assert await pg_pool.fetchval("SELECT count(*) FROM apps") == 0

    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    applied = nudge(pg_dsn, "apply", str(good))
    assert applied.returncode == 0, applied.stderr
    assert await pg_pool.fetchval("SELECT count(*) FROM campaigns") == 1
    listed = nudge(pg_dsn, "campaigns", "list", "--app", "fit", "--json")
    assert listed.returncode == 0 and "comeback" in listed.stdout


async def test_push_list_shows_queued_jobs(pg_dsn: str, pg_pool: asyncpg.Pool) -> None:
    job_id = uuid.uuid4()
    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    await pg_pool.execute(
        """INSERT INTO push_jobs (job_id, app_id, user_id, campaign_id, arm_id, payload,
                                  deliver_at, expires_at, time_zone)
           VALUES ($1, 'fit', 'u1', 'comeback', 'friendly', '{"title": "We miss you"}',
                   $2, $3, 'Europe/Berlin')""",
        job_id,
        now,
        now + dt.timedelta(days=1),
    )
    result = nudge(pg_dsn, "push", "list", "--app", "fit", "--json")
    assert result.returncode == 0, result.stderr
    jobs = json.loads(result.stdout)
    assert [(j["job_id"], j["status"]) for j in jobs] == [(str(job_id), "queued")]
    table = nudge(pg_dsn, "push", "list")
    assert str(job_id) in table.stdout and "queued" in table.stdout


def test_an_unreachable_database_is_one_clear_line() -> None:
    result = nudge("postgresql://postgres@127.0.0.1:1/nope", "migrate")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and result.stderr.strip()
