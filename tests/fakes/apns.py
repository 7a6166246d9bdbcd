"""A fake APNs: HTTP/2 over TLS on loopback, speaking the provider API as Apple documents it.

It checks what APNs checks: ALPN h2, the provider token (an ES256 JWT with the team as issuer,
the key id as kid, not older than an hour), the method, path and headers (apns-topic,
apns-push-type, apns-id, apns-priority, apns-expiration), and a payload of at most 4096 bytes of
valid UTF-8 JSON with an "aps" dictionary. Answers are 200 with the apns-id, or the status and
JSON reason APNs would send.

Tests script the answers per device token (`script`): an error status, a delay, no answer at
all (`hang`), or a GOAWAY that refuses the stream (`goaway`), or one sent after answering
(`goaway_after`). Every request is recorded in `requests`; those that APNs would have taken
(answered 200) are `delivered`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import ssl
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import ConnectionTerminated, DataReceived, RequestReceived, StreamEnded
from h2.exceptions import H2Error

from .keys import Pki

MAX_PAYLOAD = 4096
_TOKEN = re.compile(r"[0-9a-f]{64,200}")


@dataclass(frozen=True)
class Reply:
    """How the fake answers one request."""

    status: int = 200
    reason: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    #: Seconds before the answer.
    delay: float = 0.0
    #: Never answer (the connection stays open).
    hang: bool = False
    #: Refuse the stream: a GOAWAY whose last stream id is below it, then close.
    goaway: bool = False
    #: Answer, then send a GOAWAY (last stream = this one) and close.
    goaway_after: bool = False
    #: For 410: when APNs learnt the token was invalid (ms since the epoch).
    timestamp_ms: int | None = None


@dataclass
class Request:
    """A request as the fake received it."""

    token: str
    headers: dict[str, str]
    body: bytes
    payload: Any
    claims: dict[str, Any] | None
    authorization: str
    connection: int
    stream_id: int
    status: int | None = None
    reason: str = ""


@dataclass
class _Stream:
    headers: dict[str, str]
    body: bytearray = field(default_factory=bytearray)


class _Connection(asyncio.Protocol):
    def __init__(self, fake: FakeApns, number: int) -> None:
        self.fake = fake
        self.number = number
        self.conn = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, _Stream] = {}
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
            self.fake.protocol_errors.append("no ALPN h2")
            transport.close()
            return
        self.fake.connections_made += 1
        self.fake._live.add(self)
        self.conn.initiate_connection()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.fake._live.discard(self)

    def flush(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except H2Error as exc:
            self.fake.protocol_errors.append(f"h2: {exc}")
            self.flush()
            if self.transport is not None:
                self.transport.close()
            return
        for event in events:
            if isinstance(event, RequestReceived):
                self.streams[event.stream_id] = _Stream(dict(event.headers))  # type: ignore[arg-type]
            elif isinstance(event, DataReceived):
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream.body += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, StreamEnded):
                stream = self.streams.pop(event.stream_id, None)
                if stream is not None:
                    self.fake._tasks.add(
                        asyncio.ensure_future(self.handle(event.stream_id, stream))
                    )
            elif isinstance(event, ConnectionTerminated) and self.transport is not None:
                self.transport.close()
        self.flush()

    async def handle(self, stream_id: int, stream: _Stream) -> None:
        fake = self.fake
        headers = stream.headers
        path = headers.get(":path", "")
        token = path.removeprefix("/3/device/")
        authorization = headers.get("authorization", "")
        claims = fake._verify_jwt(authorization)
        try:
            payload: Any = json.loads(bytes(stream.body).decode("utf-8", errors="strict"))
        except (UnicodeDecodeError, ValueError):
            payload = None
        request = Request(
            token=token,
            headers=headers,
            body=bytes(stream.body),
            payload=payload,
            claims=claims if isinstance(claims, dict) else None,
            authorization=authorization,
            connection=self.number,
            stream_id=stream_id,
        )
        fake.requests.append(request)
        fake._changed()
        check = fake._check(request, claims)
        reply = Reply(status=check[0], reason=check[1]) if check else fake._next_reply(token)
        if reply.goaway:
            request.status, request.reason = None, "refused by GOAWAY"
            self.conn.close_connection(last_stream_id=max(0, stream_id - 2))
            self.flush()
            if self.transport is not None:
                self.transport.close()
            fake._changed()
            return
        if reply.hang:
            request.reason = "hung"
            return
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if self.closed:
            request.reason = "connection closed before the answer"
            fake._changed()
            return
        request.status, request.reason = reply.status, reply.reason
        response = [(":status", str(reply.status)), ("apns-id", headers.get("apns-id", ""))]
        response += list(reply.headers)
        try:
            if reply.status == 200:
                self.conn.send_headers(stream_id, response, end_stream=True)
            else:
                body: dict[str, Any] = {"reason": reply.reason}
                if reply.timestamp_ms is not None:
                    body["timestamp"] = reply.timestamp_ms
                data = json.dumps(body).encode()
                response.append(("content-length", str(len(data))))
                self.conn.send_headers(stream_id, response)
                self.conn.send_data(stream_id, data, end_stream=True)
            if reply.goaway_after:
                self.conn.close_connection(last_stream_id=stream_id)
            self.flush()
            if reply.goaway_after and self.transport is not None:
                self.transport.close()
        except H2Error as exc:
            fake.protocol_errors.append(f"h2 while answering: {exc}")
        fake._changed()


class FakeApns:
    """The fake APNs server. Use `async with FakeApns(...) as fake:`; `url` is its endpoint."""

    def __init__(
        self,
        pki: Pki,
        *,
        public_key: ec.EllipticCurvePublicKey,
        key_id: str,
        team_id: str,
        topic: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._pki = pki
        self._public_key = public_key
        self.key_id = key_id
        self.team_id = team_id
        self.topic = topic
        self.clock = clock
        self.requests: list[Request] = []
        self.protocol_errors: list[str] = []
        self.connections_made = 0
        #: Provider tokens issued before this (epoch seconds) are answered ExpiredProviderToken.
        self.tokens_expired_before: float | None = None
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self._server: asyncio.Server | None = None
        self._live: set[_Connection] = set()
        self._tasks: set[asyncio.Future[None]] = set()
        self._numbers = itertools.count(1)
        self._event = asyncio.Event()
        self.port = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self, next(self._numbers)),
            "127.0.0.1",
            0,
            ssl=self._pki.server_context(),
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for connection in list(self._live):
            if connection.transport is not None:
                connection.transport.abort()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await self._server.wait_closed()

    # --- scripting and inspection --------------------------------------------------------------

    def script(self, token: str, *replies: Reply) -> None:
        """Answers the next requests for `token` with `replies`, in order (then 200s)."""
        self._scripts[token].extend(replies)

    def delivered(self, token: str | None = None) -> list[Request]:
        """Requests answered 200 (what APNs would have delivered), optionally for one token."""
        return [r for r in self.requests if r.status == 200 and (token is None or r.token == token)]

    def for_token(self, token: str) -> list[Request]:
        return [r for r in self.requests if r.token == token]

    def close_connections(self) -> None:
        """Drops every connection at the TCP level (no GOAWAY)."""
        for connection in list(self._live):
            if connection.transport is not None:
                connection.transport.abort()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Waits until `predicate()` holds (re-checked whenever a request arrives or ends)."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._event.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await self._event.wait()

    def _changed(self) -> None:
        self._event.set()

    def _next_reply(self, token: str) -> Reply:
        queue = self._scripts.get(token)
        return queue.popleft() if queue else Reply()

    # --- APNs's checks -------------------------------------------------------------------------

    def _verify_jwt(self, authorization: str) -> dict[str, Any] | str:
        if not authorization.startswith("bearer "):
            return "MissingProviderToken"
        token = authorization.removeprefix("bearer ")
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(
                token,
                self._public_key,
                algorithms=["ES256"],
                options={"verify_iat": False, "require": ["iss", "iat"]},
            )
        except jwt.PyJWTError:
            return "InvalidProviderToken"
        if header.get("kid") != self.key_id or claims.get("iss") != self.team_id:
            return "InvalidProviderToken"
        iat = claims.get("iat")
        if not isinstance(iat, int):
            return "InvalidProviderToken"
        now = self.clock()
        if iat > now + 60:
            return "InvalidProviderToken"
        if now - iat > 3600:
            return "ExpiredProviderToken"
        if self.tokens_expired_before is not None and iat < self.tokens_expired_before:
            return "ExpiredProviderToken"
        return dict(claims)

    def _check(self, request: Request, claims: dict[str, Any] | str) -> tuple[int, str] | None:
        headers = request.headers
        if isinstance(claims, str):
            return 403, claims
        if headers.get(":method") != "POST":
            return 405, "MethodNotAllowed"
        if not _TOKEN.fullmatch(request.token):
            return 400, "BadDeviceToken"
        if headers.get("host") not in ("127.0.0.1", f"127.0.0.1:{self.port}"):
            return 400, "BadPath"
        if not headers.get("apns-topic"):
            return 400, "MissingTopic"
        if headers.get("apns-topic") != self.topic:
            return 400, "DeviceTokenNotForTopic"
        if headers.get("apns-push-type") != "alert":
            return 400, "InvalidPushType"
        try:
            uuid.UUID(headers.get("apns-id", ""))
        except ValueError:
            return 400, "BadMessageId"
        if headers.get("apns-priority", "10") not in ("5", "10"):
            return 400, "BadPriority"
        if not headers.get("apns-expiration", "0").isdigit():
            return 400, "BadExpirationDate"
        if len(request.body) > MAX_PAYLOAD:
            return 413, "PayloadTooLarge"
        if not isinstance(request.payload, dict) or not isinstance(
            request.payload.get("aps"), dict
        ):
            return 400, "PayloadEmpty"
        return None


class SilentServer:
    """A TCP server that accepts connections and never says a word (not even TLS)."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.accepted = 0
        self.port = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.append(writer)

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for writer in self._writers:
            writer.transport.abort()
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await self._server.wait_closed()


def ssl_context_for(pki: Pki) -> ssl.SSLContext:
    """A client context that trusts the test CA (for tests that talk to the fake directly)."""
    context = ssl.create_default_context(cafile=str(pki.ca_file))
    context.set_alpn_protocols(["h2"])
    return context
