"""Erasing one user of one app (AdminService.DeleteUser, `nudge users delete`).

What goes and what stays:

- Redis: every key of the user (they share the user's hash tag: state, day, grants, stored
  answers to request ids, decision records). Arm statistics are not per user and stay.
- PostgreSQL, deleted: the user's devices, the push deliveries of their jobs and devices, and
  the delivery events of their jobs.
- PostgreSQL, pseudonymised: decisions, outcomes and push jobs keep what the reports count with;
  the user id becomes a random pseudonym and every other column that could describe the user
  is cleared (the SQL functions `pseudonymise_*` of migrations/0007_user_erasure.sql). Push jobs
  not delivered yet are cancelled.

The pseudonym is drawn so that it falls on the same side of every holdout the user's rows count
in as the user id did (reports re-derive holdout membership from the id), and is the same for
all rows of one erasure, so per-user counts hold too.

Rows still on their way (a server's log buffer or spool, an outcome being written) land after the
erasure with the real id: the triggers of migration 0007 pseudonymise, on arrival, every row of an
erased user whose decision was issued by the erasure's time. `user_erasures` holds a hash of the
ids for that, and the pseudonym for `PSEUDONYM_LINK_TTL` only (see there).

Order: Redis first, then one PostgreSQL transaction, so that the time of the erasure comes after
the last moment the erased state could be used. Each step is idempotent: a retry after a failure
in between finishes the job.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from . import keys, requests
from .background import Periodic, periodic
from .config_store import ConfigStore
from .errors import StoreUnavailable
from .local_time import utc_now
from .model import Campaign
from .postgres import connection
from .settings import RedisSettings
from .throttle import in_holdout

log = logging.getLogger(__name__)

PSEUDONYM_PREFIX = "erased:"
#: How long an erasure keeps its pseudonym for rows that arrive late. Whoever knows a user id can
#: hash it and find the erasure, so while the pseudonym is kept the pseudonymised rows can be
#: found from the id; after this (longer than rows normally wait in a buffer or spool) it is
#: forgotten, and a row that arrives later still gets a pseudonym, a fresh one.
PSEUDONYM_LINK_TTL = dt.timedelta(days=7)
#: Decision ids are dated by the clock of the server that made them. Rows dated up to this
#: long after the erasure still count as before it, so that a server whose clock runs ahead
#: (by less than this) cannot land the erased user's rows with the real id.
CLOCK_SKEW_MARGIN = dt.timedelta(minutes=5)
#: How often a server forgets the pseudonyms older than PSEUDONYM_LINK_TTL.
LINK_SWEEP_INTERVAL_S = 3600.0
#: Candidates tried for a pseudonym on the user's side of every holdout; a user held out of
#: several campaigns with small shares needs many. Beyond, the best one is taken (and logged).
MAX_PSEUDONYM_DRAWS = 200_000
#: Keys per SCAN step.
SCAN_COUNT = 1000
#: Attempts of the PostgreSQL transaction when it meets a concurrent writer (a deadlock, or a
#: delivery the push worker added to a device being deleted).
PG_ATTEMPTS = 3

# --- pure -------------------------------------------------------------------------------------


def subject_hash(app_id: str, user_id: str) -> bytes:
    """The key of an erasure: SHA-256 of app id, NUL, user id (the SQL function
    user_erasure_subject computes the same)."""
    return hashlib.sha256(f"{app_id}\x00{user_id}".encode()).digest()


def new_pseudonym() -> str:
    """A random pseudonym: unrelated to any id, so nothing leads from it back to the user."""
    return PSEUDONYM_PREFIX + secrets.token_hex(16)


@dataclass(frozen=True)
class Holdout:
    """A campaign whose holdout the user counts in, and its share."""

    campaign_id: str
    share: float


def holdouts_counted(
    campaigns: Iterable[Campaign], triggered: Iterable[tuple[str, str]]
) -> list[Holdout]:
    """The campaigns with a holdout whose report counts the user: those the user triggered
    (one of its events, on its channel; `triggered` holds (event name, requested channel)
    pairs), whatever their status."""
    pairs = set(triggered)
    return [
        Holdout(c.campaign_id, c.holdout_share)
        for c in campaigns
        if c.holdout_share > 0
        and any((event, c.channel.value) in pairs for event in c.trigger_events)
    ]


@dataclass(frozen=True)
class PseudonymChoice:
    """A pseudonym, and how many of the user's holdouts it falls on the user's side of."""

    pseudonym: str
    holdouts_kept: int
    holdouts: int


def choose_pseudonym(
    app_id: str,
    user_id: str,
    holdouts: Sequence[Holdout],
    *,
    max_draws: int = MAX_PSEUDONYM_DRAWS,
    draw: Callable[[], str] = new_pseudonym,
) -> PseudonymChoice:
    """A random pseudonym that each holdout puts on the same side as `user_id`: reports
    re-derive membership from the id they see, and must find the same groups after the erasure.

    Candidates are drawn until one fits (expected draws: 1 / the product of the chances of each
    side); after `max_draws` the best one seen is taken, checked rarest side first.
    """
    wanted = [(h, in_holdout(app_id, h.campaign_id, user_id, h.share)) for h in holdouts]
    # The least likely side first: most candidates are rejected by the first check.
    wanted.sort(key=lambda item: item[0].share if item[1] else 1 - item[0].share)
    best = PseudonymChoice("", -1, len(wanted))
    for _ in range(max(1, max_draws)):
        candidate = draw()
        kept = 0
        for holdout, held in wanted:
            if in_holdout(app_id, holdout.campaign_id, candidate, holdout.share) != held:
                break
            kept += 1
        if kept == len(wanted):
            return PseudonymChoice(candidate, kept, len(wanted))
        if kept > best.holdouts_kept:
            best = PseudonymChoice(candidate, kept, len(wanted))
    return best


@dataclass(frozen=True)
class ErasureCounts:
    """What one erasure changed (DeleteUserResponse)."""

    redis_keys_deleted: int
    devices_deleted: int
    push_deliveries_deleted: int
    decisions_pseudonymised: int
    outcomes_pseudonymised: int
    push_jobs_pseudonymised: int
    push_jobs_cancelled: int
    #: Rows of decisions issued until then are the erased user's, also when they arrive later.
    erased_at: dt.datetime


# --- I/O --------------------------------------------------------------------------------------

_TRIGGERED = """
SELECT DISTINCT event_name, requested_channel FROM decisions WHERE app_id = $1 AND user_id = $2
"""
_LOCK = "SELECT user_erasure_lock($1)"
# The later of the database's clock and the caller's: a clock behind never dates an erasure
# before rows it has already seen.
_RECORD = """
INSERT INTO user_erasures AS e (subject_hash, app_id, erased_at, pseudonym)
VALUES ($1, $2, greatest(clock_timestamp(), $3::timestamptz), $4)
ON CONFLICT (subject_hash) DO UPDATE
    SET erased_at = greatest(e.erased_at, EXCLUDED.erased_at), pseudonym = EXCLUDED.pseudonym
RETURNING erased_at
"""
_PSEUDONYMISE_DECISIONS = """
SELECT pseudonymise_decisions(coalesce(array_agg(decision_id), '{}'),
                              coalesce(array_agg($3::text), '{}'))
FROM decisions WHERE app_id = $1 AND user_id = $2
"""
_PSEUDONYMISE_OUTCOMES = """
SELECT pseudonymise_outcomes(coalesce(array_agg(outcome_id), '{}'),
                             coalesce(array_agg($3::text), '{}'))
FROM outcomes WHERE app_id = $1 AND user_id = $2
"""
_USER_JOBS = "SELECT job_id FROM push_jobs WHERE app_id = $1 AND user_id = $2"
_USER_DEVICES = "SELECT device_id FROM devices WHERE app_id = $1 AND user_id = $2"
# Jobs first: a cancelled job is one no worker sends to a device any more.
_PSEUDONYMISE_JOBS = "SELECT pseudonymised, cancelled FROM pseudonymise_push_jobs($1, $2)"
_DELETE_DELIVERIES = (
    "DELETE FROM push_deliveries WHERE job_id = ANY ($1::uuid[]) OR device_id = ANY ($2::uuid[])"
)
_DELETE_EVENTS = "DELETE FROM push_delivery_events WHERE job_id = ANY ($1::uuid[])"
_DELETE_DEVICES = "DELETE FROM devices WHERE device_id = ANY ($1::uuid[])"
_FORGET_LINKS = """
UPDATE user_erasures SET pseudonym = NULL WHERE pseudonym IS NOT NULL AND erased_at < $1
"""
#: Errors of a transaction that met a concurrent writer: worth another attempt.
_RETRYABLE = (
    asyncpg.exceptions.TransactionRollbackError,  # deadlock, serialization failure
    asyncpg.exceptions.ForeignKeyViolationError,  # a delivery added to a device being deleted
)


def _count(status: str) -> int:
    # The command tag of DELETE is "DELETE <rows>".
    return int(status.rsplit(" ", 1)[-1])


class UserEraser:
    """Erases users (see the module docstring). Handed a pool and a Redis client; closes
    neither. `clock` dates the erasure (the servers' clock, which also dates decision ids)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        redis_client: aioredis.Redis,
        redis_settings: RedisSettings,
        *,
        clock: Callable[[], dt.datetime] = utc_now,
        max_pseudonym_draws: int = MAX_PSEUDONYM_DRAWS,
    ) -> None:
        self._pool = pool
        self._redis = redis_client
        self._redis_timeout_s = redis_settings.command_timeout_s
        self._clock = clock
        self._max_draws = max_pseudonym_draws
        self._config = ConfigStore(pool)

    async def erase(self, app_id: str, user_id: str) -> ErasureCounts:
        """Erases the user. InvalidArgument for a malformed id, NotFound for an unknown app,
        StoreUnavailable (or StoreTimeout) when Redis or PostgreSQL does not answer."""
        app_id = requests.app_id(app_id)
        user_id = requests.printable(user_id, "user_id", 128, required=True)
        campaigns = await self._config.list_campaigns(app_id)  # NotFound for an unknown app
        async with connection(self._pool) as conn:
            triggered = [(r[0], r[1]) for r in await conn.fetch(_TRIGGERED, app_id, user_id)]
        holdouts = holdouts_counted(campaigns, triggered)
        choice = await asyncio.to_thread(
            choose_pseudonym, app_id, user_id, holdouts, max_draws=self._max_draws
        )
        if choice.holdouts_kept < choice.holdouts:
            log.warning(
                "erasure_holdout_not_kept",
                extra={"app": app_id, "kept": choice.holdouts_kept, "holdouts": choice.holdouts},
            )
        redis_keys = await self._erase_redis(keys.user_tag(app_id, user_id))
        attempt = 1
        while True:
            try:
                counts = await self._erase_rows(app_id, user_id, choice.pseudonym, redis_keys)
                break
            except _RETRYABLE as exc:
                if attempt >= PG_ATTEMPTS:
                    raise StoreUnavailable(
                        f"PostgreSQL: the erasure met concurrent writes {attempt} times "
                        f"({type(exc).__name__}); retry"
                    ) from exc
                attempt += 1
        # Never the user id: the log must not keep what was erased.
        log.info("user_erased", extra={"app": app_id, **_loggable(counts)})
        return counts

    async def _erase_redis(self, tag: str) -> int:
        """Deletes every key of the user's tag; returns how many there were.

        SCAN visits the whole database (an erasure is rare; each step is short and Redis keeps
        serving between them), and finds every key that exists throughout. Every key of one tag
        lives in one slot, so each DEL is a single-slot command: on Redis Cluster the scan runs
        on the node that owns the slot (where CLUSTER GETKEYSINSLOT could replace it).
        """
        pattern = keys.user_keys_pattern(tag)
        deleted = 0
        cursor = 0
        try:
            while True:
                async with asyncio.timeout(self._redis_timeout_s):
                    cursor, found = await self._redis.scan(
                        cursor=cursor, match=pattern, count=SCAN_COUNT
                    )
                    if found:
                        deleted += int(await self._redis.delete(*found))
                if cursor == 0:
                    return deleted
        except (RedisError, OSError, TimeoutError) as exc:
            detail = str(exc) or f"no answer within {self._redis_timeout_s:g} s"
            raise StoreUnavailable(
                f"redis is unavailable (erasing the user's state: {type(exc).__name__}: "
                f"{detail}); retry later"
            ) from exc

    async def _erase_rows(
        self, app_id: str, user_id: str, pseudonym: str, redis_keys: int
    ) -> ErasureCounts:
        """The PostgreSQL part, in one transaction under the app's erasure lock (no row of the
        app is written meanwhile; see migration 0007)."""
        async with connection(self._pool) as conn, conn.transaction():
            await conn.execute(_LOCK, app_id)
            erased_at: dt.datetime = await conn.fetchval(
                _RECORD,
                subject_hash(app_id, user_id),
                app_id,
                self._clock() + CLOCK_SKEW_MARGIN,
                pseudonym,
            )
            decisions = await conn.fetchval(_PSEUDONYMISE_DECISIONS, app_id, user_id, pseudonym)
            outcomes = await conn.fetchval(_PSEUDONYMISE_OUTCOMES, app_id, user_id, pseudonym)
            jobs = [r[0] for r in await conn.fetch(_USER_JOBS, app_id, user_id)]
            devices = [r[0] for r in await conn.fetch(_USER_DEVICES, app_id, user_id)]
            jobs_changed = await conn.fetchrow(_PSEUDONYMISE_JOBS, jobs, [pseudonym] * len(jobs))
            deliveries = _count(await conn.execute(_DELETE_DELIVERIES, jobs, devices))
            await conn.execute(_DELETE_EVENTS, jobs)
            devices_deleted = _count(await conn.execute(_DELETE_DEVICES, devices))
            await conn.execute(_FORGET_LINKS, erased_at - PSEUDONYM_LINK_TTL)
        return ErasureCounts(
            redis_keys_deleted=redis_keys,
            devices_deleted=devices_deleted,
            push_deliveries_deleted=deliveries,
            decisions_pseudonymised=int(decisions),
            outcomes_pseudonymised=int(outcomes),
            push_jobs_pseudonymised=int(jobs_changed["pseudonymised"]),
            push_jobs_cancelled=int(jobs_changed["cancelled"]),
            erased_at=erased_at,
        )

    async def forget_links(self) -> int:
        """Forgets the pseudonyms of erasures older than PSEUDONYM_LINK_TTL; returns how many."""
        async with connection(self._pool) as conn:
            status = await conn.execute(_FORGET_LINKS, self._clock() - PSEUDONYM_LINK_TTL)
        return _count(status)

    def link_janitor(self, interval_s: float = LINK_SWEEP_INTERVAL_S) -> Periodic:
        """A background task (an async context manager) that runs `forget_links` every
        `interval_s`, so that links are forgotten when nobody erases anyone for a while."""
        return periodic(
            "nudge-erasure-links",
            interval_s,
            self._forget_links_logged,
            crash_event="erasure_links_crashed",
            immediately=True,
        )

    async def _forget_links_logged(self) -> None:
        try:
            forgotten = await self.forget_links()
        except StoreUnavailable as exc:
            log.warning("erasure_links_failed", extra={"error": str(exc)})
            return
        if forgotten:
            log.info("erasure_links_forgotten", extra={"count": forgotten})


def _loggable(counts: ErasureCounts) -> dict[str, object]:
    return {
        "redis_keys_deleted": counts.redis_keys_deleted,
        "devices_deleted": counts.devices_deleted,
        "push_deliveries_deleted": counts.push_deliveries_deleted,
        "decisions_pseudonymised": counts.decisions_pseudonymised,
        "outcomes_pseudonymised": counts.outcomes_pseudonymised,
        "push_jobs_pseudonymised": counts.push_jobs_pseudonymised,
        "push_jobs_cancelled": counts.push_jobs_cancelled,
        "erased_at": counts.erased_at.isoformat(),
    }
