"""Redis I/O of per-user throttle state and arm statistics.

All Redis access of the `Decide` hot path goes through `ThrottleStore.decide`: one EVALSHA.

Every script runs on a connection taken from the pool for that one call, and every script
echoes a token of the call as the first element of its reply. A connection goes back to the
pool in step only after a complete reply carrying its own token; one whose command failed, timed
out or was cancelled midway (the reply may still be on its way) is closed first, so that no later
call can read a reply that is not its own. A reply with another call's token means a connection
got out of step anyway: it is closed, logged as an error and answered as "unavailable".
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError, NoScriptError, RedisError

from . import keys
from .errors import FailedPrecondition, StoreUnavailable
from .local_time import from_ms, to_ms, utc_now
from .settings import RedisSettings
from .throttle import CONFLICT, ThrottleCall, Verdict, parse_verdict

log = logging.getLogger(__name__)

_HERE = Path(__file__).resolve().parent
#: Weight of the newest response in a user's responsiveness average.
RESPONSIVENESS_WEIGHT = 0.3
#: How much of an unexpected reply an error log repeats.
MAX_LOGGED_REPLY = 200


@dataclass(frozen=True)
class LuaScript:
    """One Lua script beside this module: sent as EVALSHA, or in full once Redis forgot it."""

    name: str
    source: str
    sha: str

    @classmethod
    def named(cls, name: str) -> LuaScript:
        source = (_HERE / f"{name}.lua").read_text()
        return cls(name, source, hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest())


DECIDE = LuaScript.named("decide")
OUTCOME = LuaScript.named("outcome")
LEARN = LuaScript.named("learn")
SCRIPTS = (DECIDE, OUTCOME, LEARN)


class ReplyMismatch(StoreUnavailable):
    """A script's reply did not carry the token of the call that read it: the connection was
    out of step (it was closed). Never expected; logged as an error where it is found."""


def open_redis(settings: RedisSettings) -> aioredis.Redis:
    """The service's Redis client (its caller closes it).

    Every command other than the scripts (ping, statistics reads, script loads) gets one
    immediate retry on a new connection when its pooled one turns out to be closed, as all of
    them are after a Redis restart: `from_url` alone gives no retry, and the first use of each
    stale connection would fail. Timeouts are not retried: the callers bound the time.
    """
    return aioredis.Redis.from_url(
        settings.url,
        max_connections=settings.max_connections,
        socket_connect_timeout=settings.command_timeout_s,
        health_check_interval=30,
        retry=Retry(NoBackoff(), 1),
    )


def _echoes(reply: Any, token: str) -> TypeGuard[list[Any]]:
    """Whether a script's reply starts with `token` (bytes, or str on a decoding client)."""
    if not (isinstance(reply, list) and reply):
        return False
    echoed = reply[0]
    return bool(echoed == token or echoed == token.encode())


def _unavailable(what: str, exc: BaseException, timeout_s: float) -> StoreUnavailable:
    if isinstance(exc, TimeoutError) and not str(exc):
        detail = f"no answer within {timeout_s:g} s"
    else:
        detail = f"{type(exc).__name__}: {exc}"
    return StoreUnavailable(f"redis is unavailable ({what}: {detail}); retry later")


@dataclass(frozen=True)
class OutcomeEffect:
    """What outcome.lua did: status (ok, duplicate, missing, early) and what to learn."""

    status: str
    campaign_id: str = ""
    arm_id: str = ""
    decided_at_ms: int = 0
    window_ms: int = 0
    pull: bool = False
    reward: bool = False
    late: bool = False


class ThrottleStore:
    """The service's Redis operations. It does not own (or close) the client it is handed."""

    def __init__(self, client: aioredis.Redis, settings: RedisSettings) -> None:
        self._client = client
        self._settings = settings
        # Tokens only need to differ between calls that can share a connection: one process's.
        self._token_prefix = secrets.token_hex(4)
        self._token_counter = itertools.count()

    async def load_scripts(self) -> None:
        """Loads the scripts once at start-up, so the first decision needs no EVAL."""
        try:
            async with asyncio.timeout(self._settings.command_timeout_s):
                for script in SCRIPTS:
                    await self._client.script_load(script.source)
        except (RedisError, OSError, TimeoutError) as exc:
            raise _unavailable("loading scripts", exc, self._settings.command_timeout_s) from exc

    async def _run(
        self, script: LuaScript, script_keys: Sequence[str], args: Sequence[str | int | float]
    ) -> list[Any]:
        """Runs one script; returns its reply after the echo token. The caller bounds the time
        (asyncio.timeout): a timeout cancels the read, which closes the connection."""
        token = f"{self._token_prefix}:{next(self._token_counter)}"
        argv = (*args, token)
        try:
            return await self._run_once(script, script_keys, argv, token)
        except MaxConnectionsError:
            raise
        except RedisConnectionError as exc:
            # A pooled connection that Redis closed (a restart, a failover, an idle timeout)
            # fails on its first use, before the command ran: one more try, on a new
            # connection. Were it lost after the script ran, the script runs twice: a decision
            # then counts twice against the caps (fewer prompts, never more), and outcomes and
            # learning are idempotent.
            log.info("redis_call_retried", extra={"script": script.name, "error": str(exc)})
            return await self._run_once(script, script_keys, argv, token)

    async def _run_once(
        self,
        script: LuaScript,
        script_keys: Sequence[str],
        argv: Sequence[str | int | float],
        token: str,
    ) -> list[Any]:
        """One try of `_run`, on a connection taken from the pool for it alone."""
        pool = self._client.connection_pool
        # get_connection is untyped in redis-py (a deprecation decorator hides its signature).
        connection: AbstractConnection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            try:
                reply = await self._evalsha(connection, script, script_keys, argv)
            except BaseException:
                # Cancelled or failed between sending and reading: never reuse the connection.
                await connection.disconnect(nowait=True)
                raise
            if not _echoes(reply, token):
                await connection.disconnect(nowait=True)
                log.error(
                    "redis_reply_mismatch",
                    extra={
                        "script": script.name,
                        "token": token,
                        "reply": repr(reply)[:MAX_LOGGED_REPLY],
                    },
                )
                raise ReplyMismatch(
                    f"redis: the reply to {script.name}.lua was not this call's; "
                    "its connection was closed"
                )
        finally:
            await pool.release(connection)
        return reply[1:]

    @staticmethod
    async def _evalsha(
        connection: AbstractConnection,
        script: LuaScript,
        script_keys: Sequence[str],
        argv: Sequence[str | int | float],
    ) -> Any:
        try:
            await connection.send_command(
                "EVALSHA", script.sha, len(script_keys), *script_keys, *argv
            )
            return await connection.read_response()
        except NoScriptError:
            # Redis restarted or its scripts were flushed: EVAL sends the source, and Redis
            # caches it again, so the next EVALSHA works. The connection is in step (the error
            # was a complete reply).
            log.warning("redis_script_reloaded", extra={"script": script.name})
            await connection.send_command(
                "EVAL", script.source, len(script_keys), *script_keys, *argv
            )
            return await connection.read_response()

    async def decide(self, call: ThrottleCall) -> Verdict:
        """Checks and records one decision atomically, within the decision deadline."""
        timeout_s = self._settings.decision_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                status, encoded = await self._run(DECIDE, call.keys, call.args)
        except (RedisError, OSError, TimeoutError) as exc:
            raise _unavailable("decide", exc, timeout_s) from exc
        if int(status) == CONFLICT:
            raise FailedPrecondition(
                "client_request_id: already used for a different request (another event, "
                "channel or time zone) within the last 24 hours"
            )
        return parse_verdict(int(status), encoded)

    async def record_outcome(
        self, app_id: str, user_id: str, decision_id: str, kind: str, at_ms: int
    ) -> OutcomeEffect:
        """Applies one outcome to the decision record and the user's backoff, at most once."""
        tag = keys.user_tag(app_id, user_id)
        timeout_s = self._settings.command_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                (encoded,) = await self._run(
                    OUTCOME,
                    (keys.user_state(tag), keys.user_decision(tag, decision_id)),
                    (kind, at_ms, RESPONSIVENESS_WEIGHT, keys.USER_STATE_TTL_S),
                )
        except (RedisError, OSError, TimeoutError) as exc:
            raise _unavailable("recording the outcome", exc, timeout_s) from exc
        doc = json.loads(encoded)
        return OutcomeEffect(
            status=str(doc["s"]),
            campaign_id=str(doc.get("c") or ""),
            arm_id=str(doc.get("a") or ""),
            decided_at_ms=int(doc.get("t") or 0),
            window_ms=int(doc.get("aw") or 0),
            pull=bool(doc.get("pull")),
            reward=bool(doc.get("reward")),
            late=bool(doc.get("late")),
        )

    async def learn(self, app_id: str, decision_id: str, effect: OutcomeEffect) -> None:
        """Adds an outcome's pull and/or reward to its arm's statistics, at most once each."""
        if not (effect.pull or effect.reward):
            return
        decision_day = from_ms(effect.decided_at_ms).date().isoformat()
        learned_ttl = (
            max(0, effect.decided_at_ms + effect.window_ms - to_ms(utc_now())) // 1000
            + keys.LEARNED_TTL_MARGIN_S
        )
        timeout_s = self._settings.command_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                await self._run(
                    LEARN,
                    (
                        keys.arm_stats(app_id, effect.campaign_id),
                        keys.arm_learned(app_id, effect.campaign_id, decision_day),
                    ),
                    (
                        effect.arm_id,
                        decision_id,
                        int(effect.pull),
                        int(effect.reward),
                        keys.ARM_STATS_TTL_S,
                        learned_ttl,
                    ),
                )
        except (RedisError, OSError, TimeoutError) as exc:
            raise _unavailable("learning the outcome", exc, timeout_s) from exc

    async def read_arm_stats(self, campaigns: list[tuple[str, str]]) -> list[dict[bytes, bytes]]:
        """The raw statistics hashes of several campaigns, in one pipelined round trip."""
        if not campaigns:
            return []
        try:
            async with asyncio.timeout(self._settings.command_timeout_s):
                async with self._client.pipeline(transaction=False) as pipe:
                    for app_id, campaign_id in campaigns:
                        pipe.hgetall(keys.arm_stats(app_id, campaign_id))
                    results: list[dict[bytes, bytes]] = await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            raise _unavailable(
                "reading arm statistics", exc, self._settings.command_timeout_s
            ) from exc
        return results

    async def ping(self) -> bool:
        """Whether Redis answers within the command timeout."""
        try:
            async with asyncio.timeout(self._settings.command_timeout_s):
                return bool(await self._client.ping())
        except (RedisError, OSError, TimeoutError):
            return False
