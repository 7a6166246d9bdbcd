"""iOS pushes through APNs, with aioapns (HTTP/2 over TLS, token authentication).

aioapns 4.0 gives the HTTP/2 protocol and the connection pool; this module adds what delivery
needs and aioapns leaves out, through its own extension points (the protocol class of a pool,
and `create_connection`):

- endpoints from configuration (host and port per environment; a CA bundle for private ones);
- one provider token (JWT, ES256) shared by every connection, re-signed before it gets old and
  after an ExpiredProviderToken answer, never on every send;
- a precise account of what a lost connection did to each request: a stream that a GOAWAY
  refused (its id above the GOAWAY's last stream id) surely was not processed and is retried;
  a request in flight when the connection died may have been, and is reported UNKNOWN;
- Retry-After headers, answers without a body, HTTP/2 flow-control credit for response bodies
  and futures cancelled by our timeouts, none of which aioapns handles;
- a connection that let a request time out takes no new requests and is closed soon after.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import jwt
from aioapns.common import NotificationRequest, NotificationResult, PushType
from aioapns.connection import (
    APNsKeyConnectionPool,
    APNsTLSClientProtocol,
    AuthorizationHeaderProvider,
)
from aioapns.exceptions import ConnectionClosed
from aioapns.exceptions import ConnectionError as ApnsConnectionError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from h2.events import ConnectionTerminated
from h2.exceptions import H2Error

from ..devices import AppEnvironment
from ..errors import ConfigError
from .payload import PayloadTooLarge, PushContent, apns_message
from .results import SendResult, SendStatus, parse_retry_after
from .settings import ApnsSettings

log = logging.getLogger(__name__)

Clock = Callable[[], float]

#: APNs reasons that mean the token is gone for good.
TOKEN_GONE_REASONS = frozenset({"BadDeviceToken", "Unregistered", "ExpiredToken"})
#: APNs reasons that mean our configuration is wrong, not the message.
MISCONFIGURED_REASONS = frozenset(
    {
        "BadCertificate",
        "BadCertificateEnvironment",
        "BadPath",
        "BadTopic",
        "Forbidden",
        "InvalidProviderToken",
        "MethodNotAllowed",
        "MissingProviderToken",
        "MissingTopic",
        "TopicDisallowed",
    }
)


def load_signing_key(path: str) -> ec.EllipticCurvePrivateKey:
    """The P-256 key of an APNs .p8 file; ConfigError when it is not one."""
    try:
        pem = Path(path).read_bytes()
        key = serialization.load_pem_private_key(pem, password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(
            "NUDGE_APNS_KEY_FILE", f"cannot read a .p8 key from {path}: {exc}"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ConfigError("NUDGE_APNS_KEY_FILE", f"{path} is not an ES256 (P-256) key")
    return key


class ProviderToken(AuthorizationHeaderProvider):
    """The APNs provider token (a JWT signed with the team's key), shared by all connections.

    It is signed again when older than `refresh_after_s` (APNs refuses tokens older than an
    hour, and TooManyProviderTokenUpdates when they change more often than every 20 minutes),
    when the clock went back, and when `invalidate` is called for the current generation after
    an ExpiredProviderToken answer. `mints` counts signatures.
    """

    def __init__(
        self,
        key: ec.EllipticCurvePrivateKey,
        key_id: str,
        team_id: str,
        *,
        refresh_after_s: float,
        clock: Clock = time.time,
    ) -> None:
        self._key = key
        self._key_id = key_id
        self._team_id = team_id
        self._refresh_after_s = refresh_after_s
        self._clock = clock
        self._header: str | None = None
        self._issued_at = 0.0
        self.generation = 0
        self.mints = 0

    def get_header(self) -> str:
        now = self._clock()
        if (
            self._header is None
            or now - self._issued_at >= self._refresh_after_s
            or now < self._issued_at - 60
        ):
            issued_at = int(now)
            token = jwt.encode(
                {"iss": self._team_id, "iat": issued_at},
                self._key,
                algorithm="ES256",
                headers={"kid": self._key_id},
            )
            self._header = f"bearer {token}"
            self._issued_at = float(issued_at)
            self.generation += 1
            self.mints += 1
            log.info("apns_provider_token_signed", extra={"iat": issued_at})
        return self._header

    def invalidate(self, generation: int) -> None:
        """Forgets the token of `generation` (APNs said it expired); a token already newer is
        kept, so that many failed sends cause one new signature."""
        if generation == self.generation:
            self._header = None


class StreamRefused(ConnectionClosed):
    """A GOAWAY named a last stream id below this request's stream: it was not processed."""


class LostInFlight(ConnectionClosed):
    """The connection closed while this request was in flight: it may have been processed."""


class ApnsProtocol(APNsTLSClientProtocol):
    """aioapns's HTTP/2 client protocol with the additions listed in the module docstring.
    `APNS_SERVER` (also the host header) and `APNS_PORT` are set per endpoint by subclassing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.draining = False
        self.goaway_last_stream_id: int | None = None
        self.retry_after: dict[str, bytes] = {}

    @property
    def is_busy(self) -> bool:
        return self.draining or super().is_busy

    def written(self, notification_id: str) -> bool:
        """Whether the request was written and waits for its answer."""
        return notification_id in self.requests

    def forget(self, notification_id: str) -> bool:
        """Drops a request whose waiter gave up; True when it had been written."""
        future = self.requests.pop(notification_id, None)
        self.request_statuses.pop(notification_id, None)
        self.retry_after.pop(notification_id, None)
        for stream_id, nid in list(self.request_streams.items()):
            if nid == notification_id:
                del self.request_streams[stream_id]
        return future is not None

    def retire_soon(self, delay_s: float) -> None:
        """Takes no new requests; closes after `delay_s` (answers may still come until then)."""
        if not self.draining:
            self.draining = True
            self.loop.call_later(delay_s, self.close)

    def _drop_cancelled(self, notification_id: str | None) -> None:
        if notification_id is None:
            return
        future = self.requests.get(notification_id)
        if future is not None and future.done():
            del self.requests[notification_id]

    def on_response_received(self, headers: dict[bytes, bytes]) -> None:
        notification_id = headers.get(b"apns-id", b"").decode("utf8", "replace")
        self._drop_cancelled(notification_id)
        retry_after = headers.get(b"retry-after")
        if retry_after is not None:
            self.retry_after[notification_id] = retry_after
        super().on_response_received(headers)

    def on_data_received(self, data: bytes, stream_id: int) -> None:
        # aioapns never returns flow-control credit: without this, a long-lived connection
        # stops receiving error bodies once 64 KiB of them have arrived.
        with contextlib.suppress(H2Error):
            self.conn.acknowledge_received_data(len(data), stream_id)
        self._drop_cancelled(self.request_streams.get(stream_id))
        try:
            super().on_data_received(data, stream_id)
        except (ValueError, KeyError):
            log.warning("apns_unreadable_response_body", extra={"stream_id": stream_id})

    def on_stream_ended(self, stream_id: int) -> None:
        # Settles an answer that had no JSON reason (aioapns would wait for it forever), and
        # forgets the stream of a 200 (aioapns keeps it for the connection's lifetime).
        notification_id = self.request_streams.pop(stream_id, None)
        if notification_id is not None:
            future = self.requests.pop(notification_id, None)
            status = self.request_statuses.pop(notification_id, None)
            if future is not None and not future.done():
                future.set_result(NotificationResult(notification_id, status or "", ""))
        super().on_stream_ended(stream_id)

    def on_connection_terminated(self, event: ConnectionTerminated) -> None:
        self.goaway_last_stream_id = event.last_stream_id
        self.draining = True
        super().on_connection_terminated(event)

    def connection_lost(self, exc: Exception | None) -> None:
        # Replaces aioapns's: it failed every waiting request alike, and raised on futures
        # that our timeouts had cancelled.
        if self.inactivity_timer:
            self.inactivity_timer.cancel()
        if self.on_connection_lost:
            with contextlib.suppress(ValueError):  # lost before it joined the pool
                self.on_connection_lost(self)
        streams = {nid: sid for sid, nid in self.request_streams.items()}
        last = self.goaway_last_stream_id
        for notification_id, future in self.requests.items():
            if future.done():
                continue
            stream_id = streams.get(notification_id)
            if last is not None and stream_id is not None and stream_id > last:
                future.set_exception(StreamRefused(f"refused by GOAWAY (last stream {last})"))
            else:
                future.set_exception(LostInFlight(f"connection lost: {exc}"))
        self.requests.clear()
        self.request_streams.clear()
        self.free_channels.destroy(ConnectionClosed(str(exc)))


class ApnsPool(APNsKeyConnectionPool):
    """aioapns's token-authenticated pool, connecting to a configured endpoint with the shared
    provider token. Connections that are draining do not count against `max_connections`."""

    def __init__(
        self,
        *,
        url: str,
        topic: str,
        token: ProviderToken,
        max_connections: int,
        ssl_context: ssl.SSLContext,
        sandbox: bool,
    ) -> None:
        super().__init__(
            key="unused: the shared ProviderToken signs",
            key_id="-",
            team_id="-",
            topic=topic,
            max_connections=max_connections,
            max_connection_attempts=1,
            use_sandbox=sandbox,
            ssl_context=ssl_context,
        )
        parts = urlsplit(url)
        assert parts.hostname is not None
        self.host = parts.hostname
        self.port = parts.port or 443
        self.protocol_class = type(
            "ApnsProtocolFor" + ("Sandbox" if sandbox else "Production"),
            (ApnsProtocol,),
            {"APNS_SERVER": self.host, "APNS_PORT": self.port},
        )
        self._token = token

    async def create_connection(self) -> ApnsProtocol:
        factory = partial(
            self.protocol_class,
            str(self.apns_topic),
            self.loop,
            self.discard_connection,  # type: ignore[arg-type]
            self._token,
        )
        _, protocol = await self.loop.create_connection(
            factory, host=self.host, port=self.port, ssl=self.ssl_context
        )
        assert isinstance(protocol, ApnsProtocol)
        return protocol

    async def acquire(self) -> ApnsProtocol:
        while True:
            for connection in self.connections:
                if not connection.is_busy:
                    return connection  # type: ignore[return-value]
            async with self._lock:
                for connection in self.connections:
                    if not connection.is_busy:
                        return connection  # type: ignore[return-value]
                live = [c for c in self.connections if not getattr(c, "draining", False)]
                if len(live) < self.max_connections:
                    try:
                        created = await self.create_connection()
                    except (OSError, ssl.SSLError) as exc:
                        raise ApnsConnectionError(f"{type(exc).__name__}: {exc}") from exc
                    self.connections.append(created)
                    return created
            await asyncio.sleep(0.01)


def classify(
    status: str,
    reason: str,
    *,
    retry_after: bytes | None = None,
    timestamp_ms: int | None = None,
    now: dt.datetime | None = None,
) -> SendResult:
    """The result of an APNs answer (HTTP status and JSON reason)."""
    detail = f"apns {status} {reason}".strip()
    if status == "200":
        return SendResult(SendStatus.SENT, detail)
    if reason in TOKEN_GONE_REASONS and status in ("400", "410"):
        gone_since = None
        if timestamp_ms:
            gone_since = dt.datetime.fromtimestamp(timestamp_ms / 1000, dt.UTC)
        return SendResult(SendStatus.TOKEN_GONE, detail, gone_since=gone_since)
    if status == "429" or status.startswith("5"):
        wait = parse_retry_after(retry_after, now or dt.datetime.now(dt.UTC))
        return SendResult(SendStatus.RETRY, detail, retry_after_s=wait)
    if reason in MISCONFIGURED_REASONS or status in ("403", "404", "405"):
        return SendResult(SendStatus.MISCONFIGURED, detail)
    if status.startswith("4"):
        return SendResult(SendStatus.REJECTED, detail)
    # No status at all (a malformed answer): the provider did answer, so it did not hang, but
    # we cannot tell what it did with the message.
    return SendResult(SendStatus.UNKNOWN, detail or "apns: answer without a status")


class ApnsSender:
    """Sends iOS pushes, with at most `concurrency` in flight (take a `slot` first).

    An async context manager: leaving it closes its connections.
    """

    name = "apns"

    def __init__(
        self,
        settings: ApnsSettings,
        *,
        connect_timeout_s: float,
        send_timeout_s: float,
        clock: Clock = time.time,
    ) -> None:
        self._settings = settings
        self._connect_timeout_s = connect_timeout_s
        self._send_timeout_s = send_timeout_s
        self.token = ProviderToken(
            load_signing_key(settings.key_file),
            settings.key_id,
            settings.team_id,
            refresh_after_s=settings.token_refresh_s,
            clock=clock,
        )
        try:
            self._ssl = ssl.create_default_context(cafile=settings.ca_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                "NUDGE_APNS_CA_FILE", f"cannot load {settings.ca_file}: {exc}"
            ) from exc
        self._ssl.set_alpn_protocols(["h2"])
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._pools: dict[AppEnvironment, ApnsPool] = {}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        await asyncio.sleep(0)  # let the transports run their close callbacks

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """One of the `concurrency` sends allowed at once."""
        async with self._slots:
            yield

    def _pool(self, environment: AppEnvironment) -> ApnsPool:
        pool = self._pools.get(environment)
        if pool is None:
            sandbox = environment is AppEnvironment.SANDBOX
            pool = ApnsPool(
                url=self._settings.sandbox_url if sandbox else self._settings.production_url,
                topic=self._settings.topic,
                token=self.token,
                max_connections=self._settings.max_connections,
                ssl_context=self._ssl,
                sandbox=sandbox,
            )
            self._pools[environment] = pool
        return pool

    async def send(
        self,
        *,
        token: str,
        environment: AppEnvironment,
        content: PushContent,
        notification_id: uuid.UUID,
        ttl_s: int,
    ) -> SendResult:
        """Sends one notification; never raises for a provider or network failure."""
        try:
            message = apns_message(content)
        except PayloadTooLarge as exc:
            return SendResult(SendStatus.REJECTED, f"apns: {exc}")
        request = NotificationRequest(
            device_token=token,
            message=message,
            notification_id=str(notification_id),
            time_to_live=max(0, ttl_s),
            priority=10,
            # Should a duplicate ever reach the device, it replaces the first one.
            collapse_key=content.decision_id[:64],
            push_type=PushType.ALERT,
        )
        pool = self._pool(environment)
        result = await self._send_once(pool, request)
        if result is None:  # ExpiredProviderToken: the token was renewed, try once more
            result = await self._send_once(pool, request)
            if result is None:
                result = SendResult(SendStatus.RETRY, "apns 403 ExpiredProviderToken")
        return result

    async def _send_once(self, pool: ApnsPool, request: NotificationRequest) -> SendResult | None:
        nid = request.notification_id
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                connection = await pool.acquire()
        except TimeoutError:
            return SendResult(
                SendStatus.RETRY, f"apns: no connection within {self._connect_timeout_s} s"
            )
        except ApnsConnectionError as exc:
            return SendResult(SendStatus.RETRY, f"apns: cannot connect: {exc}")
        generation = self.token.generation
        try:
            async with asyncio.timeout(self._send_timeout_s):
                answer = await connection.send_notification(request)
        except TimeoutError:
            if connection.forget(nid):
                connection.retire_soon(self._send_timeout_s)
                return SendResult(
                    SendStatus.UNKNOWN, f"apns: no answer within {self._send_timeout_s} s"
                )
            return SendResult(SendStatus.RETRY, "apns: timed out before the request was written")
        except StreamRefused as exc:
            return SendResult(SendStatus.RETRY, f"apns: {exc}")
        except LostInFlight as exc:
            return SendResult(SendStatus.UNKNOWN, f"apns: {exc}")
        except (ConnectionClosed, H2Error, OSError) as exc:
            # Raised before the request was written (a closed connection, no stream id left).
            return SendResult(SendStatus.RETRY, f"apns: {type(exc).__name__}: {exc}")
        retry_after = connection.retry_after.pop(nid, None)
        reason = answer.description or ""
        if answer.status == "403" and reason == "ExpiredProviderToken":
            log.warning("apns_provider_token_expired", extra={"generation": generation})
            self.token.invalidate(generation)
            return None
        result = classify(
            answer.status,
            reason,
            retry_after=retry_after,
            timestamp_ms=answer.timestamp if isinstance(answer.timestamp, int) else None,
        )
        return SendResult(
            result.status,
            result.detail,
            provider_id=nid if result.status is SendStatus.SENT else "",
            retry_after_s=result.retry_after_s,
            gone_since=result.gone_since,
        )
