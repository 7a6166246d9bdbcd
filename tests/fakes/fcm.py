"""A fake FCM HTTP v1 endpoint and OAuth2 token endpoint, on loopback (HTTP/1.1, with h11).

`POST /token` checks the signed assertion (RS256 with the service account's key, issuer, audience,
scope, expiry) and hands out an access token valid `token_lifetime_s` seconds (of `clock`).
`POST /v1/projects/{project}/messages:send` checks the bearer token (401 UNAUTHENTICATED when
unknown or expired) and the message (a token, string data, at most 4096 bytes of notification
and data), and answers like FCM: `{"name": ...}` or a google.rpc.Status error with FcmError
details. Tests script the answers per registration token (`script`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import secrets
import time
import urllib.parse
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self

import h11
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
MAX_PAYLOAD = 4096


@dataclass(frozen=True)
class Reply:
    """How the fake answers one send."""

    status: int = 200
    #: google.rpc status ("NOT_FOUND", "INVALID_ARGUMENT", ...); for errors.
    error_status: str = ""
    #: FcmError errorCodes in the details ("UNREGISTERED", ...); empty: a bare error.
    error_codes: tuple[str, ...] = ()
    message: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    #: Never answer.
    hang: bool = False


@dataclass
class Send:
    """A send request as the fake received it."""

    token: str
    message: Any
    body: bytes
    authorization: str
    status: int | None = None


def error_body(status: int, error_status: str, codes: tuple[str, ...], message: str) -> bytes:
    details = [{"@type": FCM_ERROR, "errorCode": code} for code in codes]
    error: dict[str, Any] = {
        "code": status,
        "message": message or error_status,
        "status": error_status,
    }
    if details:
        error["details"] = details
    return json.dumps({"error": error}).encode()


class FakeFcm:
    """The fake. Use `async with FakeFcm(...) as fake:`; `url` and `token_uri` are its
    endpoints."""

    def __init__(
        self,
        *,
        public_key: rsa.RSAPublicKey,
        client_email: str = "push@nudge-test.iam",
        project_id: str = "nudge-test",
        clock: Callable[[], float] = time.time,
        token_lifetime_s: int = 3600,
    ) -> None:
        self._public_key = public_key
        self.client_email = client_email
        self.project_id = project_id
        self.clock = clock
        self.token_lifetime_s = token_lifetime_s
        self.sends: list[Send] = []
        self.token_requests = 0
        self.rejected_assertions: list[str] = []
        #: Answers of the token endpoint to come (status codes); then 200s.
        self.token_replies: deque[int] = deque()
        self._issued: dict[str, float] = {}
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._event = asyncio.Event()
        self._ids = itertools.count(1)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await self._server.wait_closed()

    # --- scripting and inspection --------------------------------------------------------------

    def script(self, token: str, *replies: Reply) -> None:
        self._scripts[token].extend(replies)

    def delivered(self, token: str | None = None) -> list[Send]:
        return [s for s in self.sends if s.status == 200 and (token is None or s.token == token)]

    def for_token(self, token: str) -> list[Send]:
        return [s for s in self.sends if s.token == token]

    def expire_access_tokens(self) -> None:
        """Every access token handed out so far stops working (as if revoked)."""
        self._issued = dict.fromkeys(self._issued, 0.0)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._event.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await self._event.wait()

    # --- HTTP ----------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    conn.receive_data(data)
                    if not data:
                        return
                    continue
                if isinstance(event, h11.Request):
                    body = bytearray()
                    while True:
                        part = conn.next_event()
                        if part is h11.NEED_DATA:
                            conn.receive_data(await reader.read(65536))
                            continue
                        if isinstance(part, h11.Data):
                            body += part.data
                            continue
                        break  # EndOfMessage (or a ConnectionClosed)
                    headers = {k.decode().lower(): v.decode() for k, v in event.headers}
                    answer = await self._handle(
                        event.method.decode(), event.target.decode(), headers, bytes(body)
                    )
                    if answer is None:  # hang
                        await asyncio.Event().wait()
                        return
                    status, extra, payload = answer
                    writer.write(
                        conn.send(
                            h11.Response(
                                status_code=status,
                                headers=[
                                    ("content-type", "application/json"),
                                    ("content-length", str(len(payload))),
                                    *extra,
                                ],
                            )
                        )
                        or b""
                    )
                    writer.write(conn.send(h11.Data(data=payload)) or b"")
                    writer.write(conn.send(h11.EndOfMessage()) or b"")
                    await writer.drain()
                    self._event.set()
                    if conn.our_state is h11.MUST_CLOSE:
                        return
                    conn.start_next_cycle()
                    continue
                return
        except (ConnectionError, h11.ProtocolError, asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes] | None:
        if method == "POST" and target == "/token":
            return self._token(headers, body)
        prefix = f"/v1/projects/{self.project_id}/messages:send"
        if method == "POST" and target == prefix:
            return await self._send(headers, body)
        return 404, [], b"<html>Not Found</html>"

    def _token(
        self, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        self.token_requests += 1
        self._event.set()
        if self.token_replies:
            status = self.token_replies.popleft()
            if status != 200:
                return status, [], json.dumps({"error": "backend_error"}).encode()
        form = urllib.parse.parse_qs(body.decode())
        if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
            return 400, [], json.dumps({"error": "unsupported_grant_type"}).encode()
        assertion = (form.get("assertion") or [""])[0]
        now = self.clock()
        try:
            claims = jwt.decode(
                assertion,
                self._public_key,
                algorithms=["RS256"],
                audience=self.token_uri,
                options={"verify_exp": False, "verify_iat": False, "require": ["exp", "iat"]},
            )
        except jwt.PyJWTError as exc:
            self.rejected_assertions.append(str(exc))
            return (
                400,
                [],
                json.dumps({"error": "invalid_grant", "error_description": str(exc)}).encode(),
            )
        problem = ""
        if claims.get("iss") != self.client_email:
            problem = "wrong issuer"
        elif claims.get("scope") != SCOPE:
            problem = "wrong scope"
        elif not claims["iat"] - 60 <= now < claims["exp"] or claims["exp"] - claims["iat"] > 3600:
            problem = "assertion not valid now"
        if problem:
            self.rejected_assertions.append(problem)
            return (
                400,
                [],
                json.dumps({"error": "invalid_grant", "error_description": problem}).encode(),
            )
        token = "ya29." + secrets.token_urlsafe(24)
        self._issued[token] = now + self.token_lifetime_s
        return (
            200,
            [],
            json.dumps(
                {"access_token": token, "expires_in": self.token_lifetime_s, "token_type": "Bearer"}
            ).encode(),
        )

    async def _send(
        self, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes] | None:
        authorization = headers.get("authorization", "")
        try:
            doc = json.loads(body.decode("utf-8", errors="strict"))
        except (UnicodeDecodeError, ValueError):
            doc = None
        message = doc.get("message") if isinstance(doc, dict) else None
        token = message.get("token", "") if isinstance(message, dict) else ""
        send = Send(token=token, message=message, body=body, authorization=authorization)
        self.sends.append(send)
        self._event.set()
        bearer = authorization.removeprefix("Bearer ")
        if not authorization.startswith("Bearer ") or self._issued.get(bearer, 0.0) <= self.clock():
            send.status = 401
            return (
                401,
                [],
                error_body(
                    401, "UNAUTHENTICATED", (), "Request had invalid authentication credentials."
                ),
            )
        problem = _check_message(message)
        if problem:
            send.status = 400
            return 400, [], error_body(400, "INVALID_ARGUMENT", ("INVALID_ARGUMENT",), problem)
        queue = self._scripts.get(token)
        reply = queue.popleft() if queue else Reply()
        if reply.hang:
            return None
        if reply.delay:
            await asyncio.sleep(reply.delay)
        send.status = reply.status
        if reply.status == 200:
            name = f"projects/{self.project_id}/messages/0:{next(self._ids)}"
            return 200, list(reply.headers), json.dumps({"name": name}).encode()
        return (
            reply.status,
            list(reply.headers),
            error_body(reply.status, reply.error_status, reply.error_codes, reply.message),
        )


def _check_message(message: Any) -> str:
    if not isinstance(message, dict):
        return "Invalid JSON payload received."
    if not message.get("token"):
        return "The registration token is not a valid FCM registration token"
    data = message.get("data", {})
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        return "Invalid value at 'message.data': values must be strings"
    size = len(
        json.dumps(
            {"notification": message.get("notification", {}), "data": data},
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
    )
    if size > MAX_PAYLOAD:
        return f"Message is too big ({size} bytes)"
    return ""
