"""Who may call what: API keys checked in memory, scopes per RPC, each app held to its own rate.

Every RPC but the health service's carries `authorization: Bearer <key>`. The server keeps the
credentials of every live key in memory (`KeyCache`, reloaded from PostgreSQL every few seconds,
so that a revoked key stops working within that time on every process), so checking a key never
waits for PostgreSQL on the hot path. A key the cache does not know yet (made a moment ago) is
looked up once, with a budget, so strangers sending random keys cannot flood PostgreSQL.

Answers: no key or a key that is malformed, unknown or revoked -> UNAUTHENTICATED, always with
the same words; a key without the RPC's scope, or for another app than the request names ->
PERMISSION_DENIED; an app over its request rate -> RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Self

import grpc

from .api_keys import ApiKeyStore, Credential, parse_token, secret_matches
from .background import Periodic
from .errors import StoreUnavailable
from .settings import AuthSettings

log = logging.getLogger(__name__)

METADATA_KEY = "authorization"
BEARER = "bearer "
MISSING_KEY = "missing API key: send the metadata 'authorization: Bearer <key>'"
INVALID_KEY = "invalid API key"
#: Unknown key ids remembered as unknown, so one stranger's key is looked up once a while.
NEGATIVE_CACHE_SIZE = 10_000

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


@dataclass(frozen=True, slots=True)
class Rule:
    """What one RPC needs: a scope, and the field of its request that names the app (a dotted
    path; empty when the RPC names no app)."""

    scope: str | None
    app_field: str = ""

    def app_of(self, request: Any) -> str:
        value = request
        for name in self.app_field.split("."):
            value = getattr(value, name)
        return str(value)


#: Scope and app field of every RPC. An RPC missing here needs a valid key and no scope (it is
#: answered UNIMPLEMENTED by gRPC, or is reflection, which shows the public schema).
RULES: dict[str, Rule] = {
    "/nudge.v1.DecisionService/Decide": Rule("decide", "app_id"),
    "/nudge.v1.DecisionService/ReportOutcome": Rule("decide", "app_id"),
    "/nudge.v1.DeviceService/RegisterDevice": Rule("decide", "app_id"),
    "/nudge.v1.DeviceService/UnregisterDevice": Rule("decide", "app_id"),
    "/nudge.v1.DeviceService/ListDevices": Rule("decide", "app_id"),
    "/nudge.v1.ReportService/GetArmReport": Rule("report", "app_id"),
    "/nudge.v1.AdminService/PutApp": Rule("admin", "app.app_id"),
    "/nudge.v1.AdminService/GetApp": Rule("admin", "app_id"),
    "/nudge.v1.AdminService/PutCampaign": Rule("admin", "campaign.app_id"),
    "/nudge.v1.AdminService/GetCampaign": Rule("admin", "app_id"),
    "/nudge.v1.AdminService/ListCampaigns": Rule("admin", "app_id"),
    "/nudge.v1.AdminService/DeleteUser": Rule("admin", "app_id"),
    "/nudge.v1.KeyService/CreateKey": Rule("admin", "app_id"),
    "/nudge.v1.KeyService/ListKeys": Rule("admin", "app_id"),
    "/nudge.v1.KeyService/RevokeKey": Rule("admin", "app_id"),
    "/nudge.v1.StatusService/GetStatus": Rule("admin"),
}
OPEN_PREFIX = "/grpc.health.v1.Health/"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a call is refused before it runs."""

    code: grpc.StatusCode
    message: str
    app_id: str = ""


class TokenBucket:
    """`rate` per second on average, up to `burst` at once. Pure: the caller passes the time."""

    __slots__ = ("_burst", "_rate", "_tokens", "_updated")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._updated = now

    def take(self, now: float) -> bool:
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class RateLimiter:
    """One token bucket per app."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic):
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def allow(self, app_id: str) -> bool:
        if math.isinf(self._rate):
            return True
        now = self._clock()
        bucket = self._buckets.get(app_id)
        if bucket is None:
            bucket = self._buckets[app_id] = TokenBucket(self._rate, self._burst, now)
        return bucket.take(now)


class KeyCache:
    """The credentials of every live key, by key id, reloaded every `refresh_s` seconds.

    An async context manager: entering loads the keys (PostgreSQL must answer then), then a
    background task reloads them; while PostgreSQL is down the last load stays in force.
    """

    def __init__(self, store: ApiKeyStore, settings: AuthSettings) -> None:
        self._store = store
        self._settings = settings
        self._keys: dict[str, Credential] = {}
        self._unknown: OrderedDict[str, float] = OrderedDict()
        self._lookups = TokenBucket(
            settings.lookups_per_s, settings.lookups_per_s, time.monotonic()
        )
        self._refresher = Periodic(
            "nudge-key-refresh", settings.refresh_s, self.refresh, crash_event="key_refresh_crashed"
        )

    async def __aenter__(self) -> Self:
        self._keys = await self._store.active_credentials()
        self._refresher.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._refresher.stop()

    async def refresh(self) -> None:
        try:
            self._keys = await self._store.active_credentials()
        except StoreUnavailable as exc:
            log.warning("key_refresh_failed", extra={"error": str(exc)})
            return
        self._unknown.clear()

    async def credential(self, key_id: str) -> Credential | None:
        """The credential of a live key, or None. A key id not in memory is looked up in
        PostgreSQL at most once per refresh interval, within a global budget."""
        found = self._keys.get(key_id)
        if found is not None:
            return found
        now = time.monotonic()
        seen = self._unknown.get(key_id)
        if seen is not None and now - seen < self._settings.refresh_s:
            return None
        if not self._lookups.take(now):
            return None
        self._remember_unknown(key_id, now)
        try:
            found = await self._store.credential(key_id)
        except StoreUnavailable as exc:
            log.warning("key_lookup_failed", extra={"key_id": key_id, "error": str(exc)})
            return None
        if found is not None:
            self._unknown.pop(key_id, None)
            self._keys = {**self._keys, key_id: found}
        return found

    def _remember_unknown(self, key_id: str, now: float) -> None:
        self._unknown[key_id] = now
        self._unknown.move_to_end(key_id)
        while len(self._unknown) > NEGATIVE_CACHE_SIZE:
            self._unknown.popitem(last=False)


def bearer_token(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str | None:
    """The key of an `authorization: Bearer <key>` entry, or None."""
    for key, value in metadata or ():
        if key == METADATA_KEY and isinstance(value, str):
            if value[: len(BEARER)].lower() == BEARER:
                return value[len(BEARER) :].strip()
            return None
    return None


def refusal(handler: grpc.RpcMethodHandler | None, code: grpc.StatusCode, message: str) -> Any:
    """A handler of the same shape as `handler` that only aborts: the request is never decoded."""

    async def unary(request: object, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)

    async def streaming(request: object, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await context.abort(code, message)
        yield None  # pragma: no cover - abort raises

    if handler is not None and handler.response_streaming:
        if handler.request_streaming:
            return grpc.stream_stream_rpc_method_handler(streaming)
        return grpc.unary_stream_rpc_method_handler(streaming)
    if handler is not None and handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary)
    return grpc.unary_unary_rpc_method_handler(unary)


def _app_checked(handler: grpc.RpcMethodHandler, rule: Rule, app_id: str) -> Any:
    """`handler` with a check, once the request is decoded, that it names the key's app. (An
    empty app id goes on to the servicer, which rejects it as INVALID_ARGUMENT.)"""
    behavior = handler.unary_unary

    async def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
        named = rule.app_of(request)
        if named and named != app_id:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{rule.app_field}: this API key is not valid for app {named[:64]!r}",
            )
        return await behavior(request, context)

    return grpc.unary_unary_rpc_method_handler(
        checked,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class Authorize(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Checks the key, the scope and the app's rate before an RPC runs, and, once its request
    is decoded, that the request names the key's app. Listed after `DecodeErrors`, so that a
    refused call is never decoded."""

    def __init__(self, keys: KeyCache, limiter: RateLimiter) -> None:
        self._keys = keys
        self._limiter = limiter
        self.refused: dict[str, int] = {}

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        method: str = details.method
        if method.startswith(OPEN_PREFIX):
            return await continuation(details)
        rule = RULES.get(method, Rule(None))
        outcome = await self._check(details, rule)
        handler = await continuation(details)
        if isinstance(outcome, Refusal):
            self.refused[outcome.code.name] = self.refused.get(outcome.code.name, 0) + 1
            if outcome.app_id:
                log.info(
                    "rpc_refused",
                    extra={"rpc": method, "code": outcome.code.name, "app": outcome.app_id},
                )
            return refusal(handler, outcome.code, outcome.message)
        if handler is None or not rule.app_field:
            return handler
        if handler.unary_unary is None:
            # Only unary requests are checked for their app: a streaming RPC that names one
            # is refused rather than let through unchecked.
            log.error("rpc_app_check_unsupported", extra={"rpc": method})
            return refusal(handler, grpc.StatusCode.UNIMPLEMENTED, "not supported")
        return _app_checked(handler, rule, outcome.app_id)

    async def _check(self, details: grpc.HandlerCallDetails, rule: Rule) -> Refusal | Credential:
        token = bearer_token(details.invocation_metadata)
        if token is None:
            return Refusal(grpc.StatusCode.UNAUTHENTICATED, MISSING_KEY)
        parsed = parse_token(token)
        if parsed is None:
            return Refusal(grpc.StatusCode.UNAUTHENTICATED, INVALID_KEY)
        key_id, secret = parsed
        credential = await self._keys.credential(key_id)
        if credential is None or not secret_matches(secret, credential):
            return Refusal(grpc.StatusCode.UNAUTHENTICATED, INVALID_KEY)
        if rule.scope is not None and rule.scope not in credential.scopes:
            return Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                f"this API key lacks the {rule.scope!r} scope",
                credential.app_id,
            )
        if not self._limiter.allow(credential.app_id):
            return Refusal(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"app {credential.app_id!r} is over its request rate; retry with back-off",
                credential.app_id,
            )
        return credential
