"""A thin async Python client for the nudge decisioning service.

It wraps the generated `nudge.v1` stubs: plain Python strings for the enums ("in_app", "web",
"tap"), keyword arguments for the optional fields, a default deadline on every call, and the
raw stubs (`admin`, `decisions`) for everything else::

    async with NudgeClient("127.0.0.1:50051") as client:
        answer = await client.decide("my-app", "user-1", "workout_finished",
                                     time_zone="Europe/Berlin")
        if answer.show:
            await client.report_outcome("my-app", "user-1", answer.decision_id, "impression")

Over TLS, with an API key (sent as `authorization: Bearer <key>` on every call, the raw stubs'
included)::

    tls = TlsOptions(ca_file="ca.pem", cert_file="client.pem", key_file="client.key")
    async with NudgeClient("nudge.internal:50051", tls=tls, api_key=key) as client: ...

`tls=True` trusts the default roots. `channel_from_env` builds a channel from NUDGE_TLS_* and
NUDGE_API_KEY, for tools. `wait_until_serving` is a synchronous helper for scripts: it polls the
standard gRPC health service until the server answers SERVING.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc
import grpc.aio
from google.protobuf import struct_pb2, timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nudge.v1 import admin_pb2_grpc, decision_pb2, decision_pb2_grpc

from .channels import (
    TlsOptions,
    api_key_from_env,
    bearer_interceptors,
    bearer_metadata,
    channel_from_env,
    open_channel,
    open_sync_channel,
)

__all__ = [
    "CHANNELS",
    "OUTCOME_TYPES",
    "PLATFORMS",
    "NudgeClient",
    "TlsOptions",
    "api_key_from_env",
    "bearer_interceptors",
    "bearer_metadata",
    "channel_from_env",
    "channel_value",
    "open_channel",
    "open_sync_channel",
    "outcome_type_value",
    "platform_value",
    "reason_name",
    "wait_until_serving",
]

#: Channel names accepted by `NudgeClient.decide` and their proto values.
CHANNELS: Mapping[str, decision_pb2.Channel] = {
    "in_app": decision_pb2.CHANNEL_IN_APP,
    "push": decision_pb2.CHANNEL_PUSH,
    "email": decision_pb2.CHANNEL_EMAIL,
}

#: Platform names accepted by `NudgeClient.decide` and their proto values.
PLATFORMS: Mapping[str, decision_pb2.Platform] = {
    "unspecified": decision_pb2.PLATFORM_UNSPECIFIED,
    "ios": decision_pb2.PLATFORM_IOS,
    "android": decision_pb2.PLATFORM_ANDROID,
    "web": decision_pb2.PLATFORM_WEB,
}

#: Outcome names accepted by `NudgeClient.report_outcome` and their proto values.
OUTCOME_TYPES: Mapping[str, decision_pb2.OutcomeType] = {
    "impression": decision_pb2.OUTCOME_TYPE_IMPRESSION,
    "tap": decision_pb2.OUTCOME_TYPE_TAP,
    "dismiss": decision_pb2.OUTCOME_TYPE_DISMISS,
    "conversion": decision_pb2.OUTCOME_TYPE_CONVERSION,
}


_E = TypeVar("_E", bound=int)


def _lookup(table: Mapping[str, _E], kind: str, name: str) -> _E:
    try:
        return table[name]
    except (KeyError, TypeError):
        allowed = ", ".join(repr(key) for key in table)
        raise ValueError(f"unknown {kind} {name!r}; expected one of {allowed}") from None


def channel_value(name: str) -> decision_pb2.Channel:
    """The `nudge.v1.Channel` value of a channel name ("in_app", "push", "email")."""
    return _lookup(CHANNELS, "channel", name)


def platform_value(name: str) -> decision_pb2.Platform:
    """The `nudge.v1.Platform` value of a platform name ("unspecified", "ios", "android", "web")."""
    return _lookup(PLATFORMS, "platform", name)


def outcome_type_value(name: str) -> decision_pb2.OutcomeType:
    """The `nudge.v1.OutcomeType` value of an outcome name ("impression", "tap", ...)."""
    return _lookup(OUTCOME_TYPES, "outcome type", name)


def reason_name(value: int) -> str:
    """The lower-case name of a `nudge.v1.Reason` value: REASON_DAILY_CAP -> "daily_cap".

    Values this client's stubs do not know (a newer server) come back as "reason_<number>".
    """
    try:
        name = decision_pb2.Reason.Name(value)
    except ValueError:
        return f"reason_{value}"
    return str(name).removeprefix("REASON_").lower()


def _timestamp(value: dt.datetime, field: str) -> timestamp_pb2.Timestamp:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{field} must be timezone-aware, got the naive datetime {value!r}")
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value.astimezone(dt.UTC))
    return stamp


class NudgeClient:
    """An async client of one nudge server; use it as an async context manager.

    The channel is opened on entry and closed on exit. `timeout_s` is the default deadline of
    every call made through `decide` and `report_outcome`; each also takes its own `timeout_s`.
    `tls` is False (plaintext), True (TLS, default roots) or `TlsOptions` (own roots, a client
    certificate for mTLS, a server name override); `api_key` is sent on every call.
    """

    def __init__(
        self,
        target: str,
        timeout_s: float = 1.0,
        *,
        tls: bool | TlsOptions = False,
        api_key: str | None = None,
        options: tuple[tuple[str, Any], ...] = (),
    ) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be greater than 0, got {timeout_s}")
        if api_key is not None:
            bearer_metadata(api_key)  # a malformed key fails here, not on the first call
        self.target = target
        self.timeout_s = timeout_s
        self.tls = tls
        self._api_key = api_key
        self._options = options
        self._channel: grpc.aio.Channel | None = None
        self._decisions: decision_pb2_grpc.DecisionServiceStub | None = None
        self._admin: admin_pb2_grpc.AdminServiceStub | None = None

    @classmethod
    def from_env(
        cls, target: str, timeout_s: float = 1.0, env: Mapping[str, str] | None = None
    ) -> NudgeClient:
        """A client configured like `channel_from_env`: TLS from NUDGE_TLS_CA,
        NUDGE_TLS_CLIENT_CERT, NUDGE_TLS_CLIENT_KEY and NUDGE_TLS_SERVER_NAME (plaintext when
        none is set), the API key from NUDGE_API_KEY."""
        env = os.environ if env is None else env
        return cls(
            target,
            timeout_s,
            tls=TlsOptions.from_env(env) or False,
            api_key=api_key_from_env(env),
        )

    async def __aenter__(self) -> Self:
        if self._channel is not None:
            raise RuntimeError("NudgeClient is already open")
        self._channel = open_channel(
            self.target, tls=self.tls, api_key=self._api_key, options=self._options
        )
        self._decisions = decision_pb2_grpc.DecisionServiceStub(self._channel)
        self._admin = admin_pb2_grpc.AdminServiceStub(self._channel)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the channel; calls still in flight are cancelled."""
        channel, self._channel = self._channel, None
        self._decisions = self._admin = None
        if channel is not None:
            await channel.close()

    @property
    def decisions(self) -> decision_pb2_grpc.DecisionServiceStub:
        """The raw `nudge.v1.DecisionService` stub (no default deadline)."""
        if self._decisions is None:
            raise RuntimeError("NudgeClient is not open; use it as `async with NudgeClient(...)`")
        return self._decisions

    @property
    def admin(self) -> admin_pb2_grpc.AdminServiceStub:
        """The raw `nudge.v1.AdminService` stub (no default deadline)."""
        if self._admin is None:
            raise RuntimeError("NudgeClient is not open; use it as `async with NudgeClient(...)`")
        return self._admin

    async def decide(
        self,
        app_id: str,
        user_id: str,
        event_name: str,
        *,
        properties: Mapping[str, Any] | None = None,
        channel: str = "in_app",
        surface: str = "",
        time_zone: str,
        locale: str = "",
        platform: str = "unspecified",
        client_request_id: str = "",
        event_time: dt.datetime | None = None,
        timeout_s: float | None = None,
    ) -> decision_pb2.DecideResponse:
        """Asks whether to show `user_id` a prompt for the event that just happened.

        `properties` must be JSON-like (str, number, bool, None, lists and dicts of those).
        `event_time` must be timezone-aware. Raises ValueError for an unknown channel or
        platform name and `grpc.aio.AioRpcError` when the call fails.
        """
        request = decision_pb2.DecideRequest(
            app_id=app_id,
            user_id=user_id,
            event=decision_pb2.Event(name=event_name),
            channel=channel_value(channel),
            surface=surface,
            time_zone=time_zone,
            locale=locale,
            platform=platform_value(platform),
            client_request_id=client_request_id,
        )
        if properties:
            struct = struct_pb2.Struct()
            struct.update(properties)
            request.event.properties.CopyFrom(struct)
        if event_time is not None:
            request.event_time.CopyFrom(_timestamp(event_time, "event_time"))
        response: decision_pb2.DecideResponse = await self.decisions.Decide(
            request, timeout=self.timeout_s if timeout_s is None else timeout_s
        )
        return response

    async def report_outcome(
        self,
        app_id: str,
        user_id: str,
        decision_id: str,
        type: str,
        *,
        value: float = 0.0,
        occurred_at: dt.datetime | None = None,
        timeout_s: float | None = None,
    ) -> decision_pb2.ReportOutcomeResponse:
        """Reports what the user did with the prompt of `decision_id`.

        `type` is "impression", "tap", "dismiss" or "conversion" (ValueError otherwise);
        `value` is the converted value of a conversion; `occurred_at` (timezone-aware) defaults
        to the server's now. Raises `grpc.aio.AioRpcError` when the call fails.
        """
        request = decision_pb2.ReportOutcomeRequest(
            app_id=app_id,
            user_id=user_id,
            decision_id=decision_id,
            type=outcome_type_value(type),
            value=value,
        )
        if occurred_at is not None:
            request.occurred_at.CopyFrom(_timestamp(occurred_at, "occurred_at"))
        response: decision_pb2.ReportOutcomeResponse = await self.decisions.ReportOutcome(
            request, timeout=self.timeout_s if timeout_s is None else timeout_s
        )
        return response


def wait_until_serving(
    target: str, timeout_s: float, *, service: str = "", tls: bool | TlsOptions | None = None
) -> None:
    """Blocks until the server at `target` reports SERVING on the gRPC health service.

    `service` is the health service name to check ("" is the server as a whole); `tls` as for
    `NudgeClient` (the health service needs no API key). Raises TimeoutError, with the last
    status or error seen, when `timeout_s` passes first.
    """
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    with open_sync_channel(target, tls=tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{target} is not SERVING after {timeout_s:g} s ({last})")
            try:
                answer = stub.Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=min(remaining, 1.0)
                )
            except grpc.RpcError as exc:
                code = exc.code() if isinstance(exc, grpc.Call) else None
                last = f"health check failed: {code.name if code else exc}"
            else:
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = f"status {status}"
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
