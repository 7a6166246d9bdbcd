"""PostgreSQL I/O of the delivery worker: claiming push jobs, marking deliveries, dead letters.

A job is claimed with `SELECT ... FOR UPDATE SKIP LOCKED` and held by a lease (claimed_by,
lease_until) that its worker renews; two workers never hold one job, and the jobs of a worker
that died are taken over when its lease runs out.

The unit of delivery is a (job, device) row of push_deliveries, delivered at most once:

    pending/retrying --mark_sending (committed BEFORE the request)--> sending
    sending --record (after the answer)--> sent | retrying | failed | token_retired |
                                           dead_lettered | unknown

`mark_sending` is a conditional UPDATE (from pending or retrying only, the device still active,
the job still this worker's), so no two attempts can both pass it. A row that a worker finds in
'sending' when it claims a job belongs to an attempt that never reported back (its worker was
killed between the request and the mark): the request may have reached the provider, so the
row becomes 'unknown' and is never sent again. Every transition is also appended to
push_delivery_events against the decision (job_id = decision_id).

All times come from the worker's clock (passed in as `now`), so that one clock rules claims,
leases, back-off and quiet hours.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from ..devices import RETIRE_SQL, AppEnvironment
from ..errors import InvalidArgument
from ..model import Platform
from ..postgres import connection

#: Job statuses a worker may claim (a 'sending' job only once its lease ran out).
WAITING = ("queued", "deferred", "retrying")
#: Final job statuses.
FINAL = ("sent", "unknown", "dead_lettered", "failed", "expired", "dropped")

_JOB_COLUMNS = (
    "job_id, app_id, user_id, campaign_id, arm_id, payload, deliver_at, expires_at, time_zone, "
    "status, attempts"
)
_CLAIM = f"""
WITH due AS (
    SELECT job_id, status AS previous FROM push_jobs
    WHERE status IN ('queued', 'deferred', 'retrying', 'sending')
      AND coalesce(run_after, deliver_at) <= $1
      AND (status <> 'sending' OR lease_until IS NULL OR lease_until < $1)
    ORDER BY coalesce(run_after, deliver_at)
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE push_jobs j
SET status = 'sending', claimed_by = $3, lease_until = $1 + make_interval(secs => $4),
    attempts = j.attempts + 1, updated_at = $1
FROM due WHERE j.job_id = due.job_id
RETURNING {", ".join("j." + c.strip() for c in _JOB_COLUMNS.split(","))}, due.previous
"""
_RENEW = """
UPDATE push_jobs SET lease_until = $2 + make_interval(secs => $3)
WHERE job_id = ANY($1::uuid[]) AND claimed_by = $4 AND status = 'sending'
"""
_HELD = "push_jobs.job_id = $1 AND push_jobs.claimed_by = $2 AND push_jobs.status = 'sending'"
_RELEASE = f"""
UPDATE push_jobs SET status = $3, run_after = $4, claimed_by = NULL, lease_until = NULL,
                     last_error = $5, updated_at = $6
WHERE {_HELD}
"""
_CREATE_DELIVERIES = """
INSERT INTO push_deliveries (job_id, device_id, created_at, updated_at)
SELECT $1, d.device_id, $4, $4 FROM devices d
WHERE d.app_id = $2 AND d.user_id = $3 AND d.status = 'active'
  AND NOT EXISTS (SELECT 1 FROM push_deliveries p WHERE p.job_id = $1)
ON CONFLICT DO NOTHING
"""
_DELIVERIES = """
SELECT p.job_id, p.device_id, p.status, p.attempts, p.run_after, p.attempt_id, p.worker,
       d.platform, d.token, d.environment, d.status AS device_status
FROM push_deliveries p JOIN devices d USING (device_id)
WHERE p.job_id = $1
ORDER BY d.platform, p.device_id
"""
_ORPHAN_TO_UNKNOWN = """
UPDATE push_deliveries SET status = 'unknown', error = $4, updated_at = $5
WHERE job_id = $1 AND device_id = $2 AND status = 'sending' AND attempt_id IS NOT DISTINCT FROM $3
"""
# A device is sent to only while it is active AND still registered to the job's user: a token
# that moved to another user (a resold phone) must never get the previous user's prompt.
_MARK_SENDING = f"""
UPDATE push_deliveries p
SET status = 'sending', attempt_id = $3, worker = $4, attempts = p.attempts + 1, updated_at = $5
FROM devices d
WHERE p.job_id = $1 AND p.device_id = $2 AND p.status IN ('pending', 'retrying')
  AND d.device_id = p.device_id AND d.status = 'active'
  AND EXISTS (SELECT 1 FROM push_jobs WHERE {_HELD.replace("$2", "$4")}
              AND push_jobs.app_id = d.app_id AND push_jobs.user_id = d.user_id)
RETURNING p.attempts
"""
_SKIP_INACTIVE = """
UPDATE push_deliveries p
SET status = 'skipped', updated_at = $3,
    error = CASE WHEN d.status <> 'active' THEN 'device ' || d.status
                 ELSE 'device moved to another user' END
FROM devices d, push_jobs j
WHERE p.job_id = $1 AND p.device_id = $2 AND p.status IN ('pending', 'retrying')
  AND d.device_id = p.device_id AND j.job_id = p.job_id
  AND (d.status <> 'active' OR d.app_id <> j.app_id OR d.user_id <> j.user_id)
RETURNING CASE WHEN d.status <> 'active' THEN d.status ELSE 'moved to another user' END
"""
_RECORD = """
UPDATE push_deliveries
SET status = $4, error = $5, provider_id = CASE WHEN $6 = '' THEN provider_id ELSE $6 END,
    run_after = $7, updated_at = $8, sent_at = CASE WHEN $4 = 'sent' THEN $8 ELSE sent_at END
WHERE job_id = $1 AND device_id = $2 AND attempt_id = $3 AND status IN ('sending', 'unknown')
"""
_UNATTEMPTED = """
UPDATE push_deliveries SET status = $3, run_after = $4, error = $5, updated_at = $6
WHERE job_id = $1 AND device_id = $2 AND status IN ('pending', 'retrying')
"""
_EVENT = """
INSERT INTO push_delivery_events (job_id, device_id, status, detail, worker, at)
VALUES ($1, $2, $3, $4, $5, $6)
"""
_DEAD_LETTERS = """
SELECT p.job_id, p.device_id, p.attempts, p.error, p.updated_at, j.app_id, j.user_id,
       j.campaign_id, j.arm_id, j.expires_at, d.platform, d.environment, d.status AS device_status
FROM push_deliveries p JOIN push_jobs j USING (job_id) JOIN devices d USING (device_id)
WHERE p.status = 'dead_lettered' AND ($1::text IS NULL OR j.app_id = $1)
ORDER BY p.updated_at DESC, p.job_id, p.device_id
LIMIT $2
"""
_REPLAY = """
WITH replayed AS (
    UPDATE push_deliveries p
    SET status = 'retrying', attempts = 0, run_after = $3, attempt_id = NULL, updated_at = $3
    FROM push_jobs j
    WHERE p.job_id = j.job_id AND p.status = 'dead_lettered' AND j.expires_at > $3
      AND ($1::uuid IS NULL OR p.job_id = $1) AND ($2::text IS NULL OR j.app_id = $2)
    RETURNING p.job_id, p.device_id
), jobs AS (
    UPDATE push_jobs SET status = 'retrying', run_after = $3, claimed_by = NULL,
                         lease_until = NULL, updated_at = $3
    WHERE job_id IN (SELECT job_id FROM replayed) AND status <> 'sending'
    RETURNING job_id
), events AS (
    INSERT INTO push_delivery_events (job_id, device_id, status, detail, worker, at)
    SELECT job_id, device_id, 'replayed', 'from the dead-letter list', 'cli', $3 FROM replayed
)
SELECT count(*) FROM replayed
"""
_EXPIRED_DEAD = """
SELECT count(*) FROM push_deliveries p JOIN push_jobs j USING (job_id)
WHERE p.status = 'dead_lettered' AND j.expires_at <= $3
  AND ($1::uuid IS NULL OR p.job_id = $1) AND ($2::text IS NULL OR j.app_id = $2)
"""


@dataclass(frozen=True)
class Job:
    """A claimed push job."""

    job_id: uuid.UUID
    app_id: str
    user_id: str
    campaign_id: str
    arm_id: str
    payload: dict[str, Any]
    deliver_at: dt.datetime
    expires_at: dt.datetime
    time_zone: str
    #: The status it had before this claim ('sending' when taken over from another worker).
    previous_status: str
    #: Claims so far, this one included.
    attempts: int


@dataclass(frozen=True)
class Delivery:
    """A (job, device) delivery and the device it goes to."""

    job_id: uuid.UUID
    device_id: uuid.UUID
    status: str
    attempts: int
    run_after: dt.datetime | None
    attempt_id: uuid.UUID | None
    worker: str
    platform: Platform
    token: str
    environment: AppEnvironment
    device_status: str


def _job(row: Mapping[str, Any]) -> Job:
    payload = row["payload"]
    if isinstance(payload, str):
        payload = json.loads(payload)
    return Job(
        job_id=row["job_id"],
        app_id=row["app_id"],
        user_id=row["user_id"],
        campaign_id=row["campaign_id"],
        arm_id=row["arm_id"],
        payload=dict(payload or {}),
        deliver_at=row["deliver_at"],
        expires_at=row["expires_at"],
        time_zone=row["time_zone"],
        previous_status=row["previous"],
        attempts=row["attempts"],
    )


def _delivery(row: Mapping[str, Any]) -> Delivery:
    return Delivery(
        job_id=row["job_id"],
        device_id=row["device_id"],
        status=row["status"],
        attempts=row["attempts"],
        run_after=row["run_after"],
        attempt_id=row["attempt_id"],
        worker=row["worker"],
        platform=Platform(row["platform"]),
        token=row["token"],
        environment=AppEnvironment(row["environment"]),
        device_status=row["device_status"],
    )


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


def job_status_of(statuses: Sequence[str]) -> str:
    """The final status of a job from the final statuses of its deliveries: 'sent' when any
    device got it, else 'unknown' when any possibly did, else 'dead_lettered' when any waits in
    the dead-letter list, else 'failed' (failed, retired, skipped, or no device at all)."""
    for status in ("sent", "unknown", "dead_lettered"):
        if status in statuses:
            return status
    return "failed"


class JobStore:
    """Claims and marks push jobs for one worker. Handed a pool; never closes it."""

    def __init__(self, pool: asyncpg.Pool, worker_id: str) -> None:
        self._pool = pool
        self.worker_id = worker_id

    # --- jobs ----------------------------------------------------------------------------------

    async def claim(self, now: dt.datetime, limit: int, lease_s: float) -> list[Job]:
        """Claims up to `limit` due jobs, oldest due first, for `lease_s` seconds."""
        async with connection(self._pool) as conn:
            rows = await conn.fetch(_CLAIM, now, limit, self.worker_id, float(lease_s))
        return [_job(row) for row in rows]

    async def renew(self, job_ids: Sequence[uuid.UUID], now: dt.datetime, lease_s: float) -> int:
        """Extends the leases of jobs this worker still holds; returns how many."""
        if not job_ids:
            return 0
        async with connection(self._pool) as conn:
            status = await conn.execute(_RENEW, list(job_ids), now, float(lease_s), self.worker_id)
        return _count(status)

    async def release(
        self,
        job: Job,
        status: str,
        now: dt.datetime,
        *,
        run_after: dt.datetime | None = None,
        detail: str = "",
        event: bool = True,
    ) -> bool:
        """Gives a held job its next status (waiting or final) and ends the lease; the event is
        logged against the decision. False when the job was no longer this worker's."""
        async with connection(self._pool) as conn, conn.transaction():
            done = _count(
                await conn.execute(
                    _RELEASE, job.job_id, self.worker_id, status, run_after, detail, now
                )
            )
            if done and event:
                await conn.execute(_EVENT, job.job_id, None, status, detail, self.worker_id, now)
        return bool(done)

    # --- deliveries ----------------------------------------------------------------------------

    async def deliveries(self, job: Job, now: dt.datetime) -> list[Delivery]:
        """The job's deliveries; on its first claim, one is created for each active device of
        the user (later registrations do not join a job already started)."""
        async with connection(self._pool) as conn, conn.transaction():
            await conn.execute(_CREATE_DELIVERIES, job.job_id, job.app_id, job.user_id, now)
            rows = await conn.fetch(_DELIVERIES, job.job_id)
        return [_delivery(row) for row in rows]

    async def orphan_to_unknown(self, delivery: Delivery, now: dt.datetime) -> bool:
        """A 'sending' row left by an attempt that never reported back becomes 'unknown'."""
        detail = (
            f"possibly sent: attempt {delivery.attempt_id} of worker {delivery.worker or '?'} "
            "never reported back"
        )
        async with connection(self._pool) as conn, conn.transaction():
            done = _count(
                await conn.execute(
                    _ORPHAN_TO_UNKNOWN,
                    delivery.job_id,
                    delivery.device_id,
                    delivery.attempt_id,
                    detail,
                    now,
                )
            )
            if done:
                await conn.execute(
                    _EVENT,
                    delivery.job_id,
                    delivery.device_id,
                    "unknown",
                    detail,
                    self.worker_id,
                    now,
                )
        return bool(done)

    async def mark_sending(
        self, delivery: Delivery, attempt_id: uuid.UUID, now: dt.datetime
    ) -> int | str:
        """Commits the 'sending' mark of one attempt. Returns the attempt's number, or why it
        must not be sent: 'skipped' (the device is no longer active; the row says so) or
        'taken' (another attempt or worker has it)."""
        async with connection(self._pool) as conn, conn.transaction():
            attempts = await conn.fetchval(
                _MARK_SENDING,
                delivery.job_id,
                delivery.device_id,
                attempt_id,
                self.worker_id,
                now,
            )
            if attempts is not None:
                await conn.execute(
                    _EVENT,
                    delivery.job_id,
                    delivery.device_id,
                    "sending",
                    f"attempt {attempts}",
                    self.worker_id,
                    now,
                )
                return int(attempts)
            device_status = await conn.fetchval(
                _SKIP_INACTIVE, delivery.job_id, delivery.device_id, now
            )
            if device_status is not None:
                await conn.execute(
                    _EVENT,
                    delivery.job_id,
                    delivery.device_id,
                    "skipped",
                    f"device {device_status}",
                    self.worker_id,
                    now,
                )
                return "skipped"
        return "taken"

    async def record(
        self,
        delivery: Delivery,
        attempt_id: uuid.UUID,
        status: str,
        now: dt.datetime,
        *,
        detail: str = "",
        provider_id: str = "",
        run_after: dt.datetime | None = None,
        retire_reason: str | None = None,
        gone_since: dt.datetime | None = None,
    ) -> bool:
        """Records the result of an attempt (also over an 'unknown' that a worker that took
        the job over wrote meanwhile: this attempt knows better). With `retire_reason` the
        device is retired in the same transaction. False when the attempt's mark is gone."""
        async with connection(self._pool) as conn, conn.transaction():
            done = _count(
                await conn.execute(
                    _RECORD,
                    delivery.job_id,
                    delivery.device_id,
                    attempt_id,
                    status,
                    detail,
                    provider_id,
                    run_after,
                    now,
                )
            )
            if done:
                await conn.execute(
                    _EVENT,
                    delivery.job_id,
                    delivery.device_id,
                    status,
                    detail,
                    self.worker_id,
                    now,
                )
                if retire_reason is not None:
                    await conn.execute(RETIRE_SQL, delivery.device_id, retire_reason, gone_since)
        return bool(done)

    async def settle_unattempted(
        self,
        delivery: Delivery,
        status: str,
        detail: str,
        now: dt.datetime,
        run_after: dt.datetime | None = None,
    ) -> bool:
        """Gives a delivery that was not attempted (no request, no attempt counted) a new
        status, e.g. dead_lettered when its provider is not configured."""
        async with connection(self._pool) as conn, conn.transaction():
            done = _count(
                await conn.execute(
                    _UNATTEMPTED,
                    delivery.job_id,
                    delivery.device_id,
                    status,
                    run_after,
                    detail,
                    now,
                )
            )
            if done:
                await conn.execute(
                    _EVENT, delivery.job_id, delivery.device_id, status, detail, self.worker_id, now
                )
        return bool(done)

    # --- dead letters --------------------------------------------------------------------------

    async def dead_letters(
        self, app_id: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        """Dead-lettered deliveries, newest first, each a dict of its columns."""
        if not 1 <= limit <= 1000:
            raise InvalidArgument("limit", f"must be between 1 and 1000, got {limit}")
        async with connection(self._pool) as conn:
            rows = await conn.fetch(_DEAD_LETTERS, app_id, limit)
        return [dict(row) for row in rows]

    async def replay(
        self, now: dt.datetime, job_id: uuid.UUID | None = None, app_id: str | None = None
    ) -> tuple[int, int]:
        """Puts dead-lettered deliveries back in the queue with fresh attempts, due now (one
        job's, an app's, or all). Deliveries whose job has expired stay where they are.
        Returns (replayed, left because expired)."""
        async with connection(self._pool) as conn, conn.transaction():
            expired = await conn.fetchval(_EXPIRED_DEAD, job_id, app_id, now)
            replayed = await conn.fetchval(_REPLAY, job_id, app_id, now)
        return int(replayed), int(expired)
