"""Read-only inspection of push jobs (the delivery worker owns their life cycle)."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from .errors import InvalidArgument
from .postgres import connection

MAX_LIMIT = 1000

_LIST = """
SELECT job_id, app_id, user_id, campaign_id, arm_id, payload, deliver_at, expires_at, time_zone,
       status, attempts, created_at, updated_at
FROM push_jobs
WHERE ($1::text IS NULL OR app_id = $1) AND ($2::text IS NULL OR status = $2)
ORDER BY created_at DESC, job_id
LIMIT $3
"""


async def list_push_jobs(
    pool: asyncpg.Pool,
    app_id: str | None = None,
    status: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """The newest push jobs, optionally of one app and/or one status, newest first.

    Each job is a dict of its columns (`job_id` a UUID, times as aware datetimes, `payload` a
    dict). `limit` is 1 to 1000.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidArgument("limit", f"must be between 1 and {MAX_LIMIT}, got {limit}")
    async with connection(pool) as conn:
        rows = await conn.fetch(_LIST, app_id, status, limit)
    jobs: list[dict[str, Any]] = []
    for row in rows:
        job = dict(row)
        job["payload"] = json.loads(job["payload"])
        jobs.append(job)
    return jobs
