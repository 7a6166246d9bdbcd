"""Android pushes through FCM HTTP v1, with httpx.

Authentication is OAuth2 with a service account: a JWT (RS256) signed with the account's key is
exchanged at the token URI for an access token, which is cached and refreshed a margin before
it expires (one refresh at a time, whatever the number of sends waiting for it), and after a
401 answer.

Errors are read from the answer's `google.rpc.Status`: a token is retired only when the details
carry an FcmError with errorCode UNREGISTERED. A bare 404, or INVALID_ARGUMENT about the
payload, never retires a token.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ..devices import AppEnvironment
from ..errors import ConfigError
from .payload import PayloadTooLarge, PushContent, fcm_encode, fcm_message
from .results import SendResult, SendStatus, parse_retry_after
from .settings import GOOGLE_TOKEN_URI, FcmSettings

log = logging.getLogger(__name__)

Clock = Callable[[], float]

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
#: Lifetime asked for in the signed assertion (Google's maximum).
ASSERTION_LIFETIME_S = 3600


class TokenUnavailable(Exception):
    """No access token now (the token endpoint is down or slow): retry later."""


class TokenRejected(Exception):
    """The token endpoint refused the credentials: the configuration is wrong."""


@dataclass(frozen=True)
class ServiceAccount:
    """The parts of a Google service-account JSON file that matter here."""

    client_email: str
    private_key: rsa.RSAPrivateKey
    private_key_id: str
    project_id: str
    token_uri: str

    @classmethod
    def from_file(cls, path: str) -> ServiceAccount:
        """Reads a service-account key file; ConfigError naming the variable when it is not."""
        name = "NUDGE_FCM_CREDENTIALS_FILE"
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(name, f"cannot read {path}: {exc}") from exc
        if not isinstance(doc, Mapping) or doc.get("type") != "service_account":
            raise ConfigError(name, f"{path} is not a service-account key file")
        try:
            key = serialization.load_pem_private_key(
                str(doc["private_key"]).encode(), password=None
            )
            email = str(doc["client_email"])
        except (KeyError, ValueError, TypeError) as exc:
            raise ConfigError(name, f"{path}: bad client_email or private_key: {exc}") from exc
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ConfigError(name, f"{path}: private_key is not an RSA key")
        return cls(
            client_email=email,
            private_key=key,
            private_key_id=str(doc.get("private_key_id") or ""),
            project_id=str(doc.get("project_id") or ""),
            token_uri=str(doc.get("token_uri") or GOOGLE_TOKEN_URI),
        )


class AccessTokens:
    """OAuth2 access tokens for FCM, cached until `refresh_margin_s` before they expire.

    `fetches` counts exchanges at the token URI.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        account: ServiceAccount,
        token_uri: str,
        *,
        refresh_margin_s: float,
        timeout_s: float,
        clock: Clock = time.time,
    ) -> None:
        self._client = client
        self._account = account
        self._token_uri = token_uri
        self._margin_s = refresh_margin_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self.fetches = 0

    def _fresh(self) -> str | None:
        if self._token is not None and self._clock() < self._expires_at - self._margin_s:
            return self._token
        return None

    async def get(self) -> str:
        """A valid access token. TokenUnavailable or TokenRejected when none can be had."""
        token = self._fresh()
        if token is not None:
            return token
        async with self._lock:
            token = self._fresh()  # another send refreshed it while this one waited
            if token is not None:
                return token
            return await self._fetch()

    def invalidate(self, token: str) -> None:
        """Forgets `token` (FCM answered 401), unless it was already replaced."""
        if token == self._token:
            self._token = None

    async def _fetch(self) -> str:
        now = self._clock()
        assertion = jwt.encode(
            {
                "iss": self._account.client_email,
                "scope": SCOPE,
                "aud": self._token_uri,
                "iat": int(now),
                "exp": int(now) + ASSERTION_LIFETIME_S,
            },
            self._account.private_key,
            algorithm="RS256",
            headers={"kid": self._account.private_key_id} if self._account.private_key_id else None,
        )
        self.fetches += 1
        try:
            answer = await self._client.post(
                self._token_uri,
                data={
                    "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                    "assertion": assertion,
                },
                timeout=self._timeout_s,
            )
        except httpx.HTTPError as exc:
            raise TokenUnavailable(f"token endpoint: {type(exc).__name__}: {exc}") from exc
        if answer.status_code >= 500 or answer.status_code == 429:
            raise TokenUnavailable(f"token endpoint answered {answer.status_code}")
        try:
            doc = answer.json()
        except ValueError:
            doc = {}
        if answer.status_code != 200 or not isinstance(doc, Mapping):
            raise TokenRejected(
                f"token endpoint answered {answer.status_code}: {answer.text[:200]}"
            )
        token = doc.get("access_token")
        expires_in = doc.get("expires_in", 3600)
        if not isinstance(token, str) or not token or not isinstance(expires_in, (int, float)):
            raise TokenRejected("token endpoint answered without an access token")
        self._token = token
        self._expires_at = now + float(expires_in)
        log.info("fcm_access_token_fetched", extra={"expires_in": expires_in})
        return token


def fcm_error_codes(doc: object) -> tuple[str, list[str]]:
    """(status, FcmError errorCodes) of an FCM error answer's JSON; empty when absent."""
    if not isinstance(doc, Mapping):
        return "", []
    error = doc.get("error")
    if not isinstance(error, Mapping):
        return "", []
    status = str(error.get("status") or "")
    codes: list[str] = []
    details = error.get("details")
    if isinstance(details, list):
        for item in details:
            if isinstance(item, Mapping) and item.get("@type") == FCM_ERROR_TYPE:
                code = item.get("errorCode")
                if isinstance(code, str):
                    codes.append(code)
    return status, codes


def classify(
    http_status: int,
    doc: object,
    *,
    retry_after: str | None = None,
    now: dt.datetime | None = None,
) -> SendResult:
    """The result of an FCM answer (HTTP status and its JSON body)."""
    status, codes = fcm_error_codes(doc)
    detail = f"fcm {http_status} {status} {','.join(codes)}".strip()
    if 200 <= http_status < 300:
        name = doc.get("name") if isinstance(doc, Mapping) else None
        return SendResult(SendStatus.SENT, detail, provider_id=str(name or ""))
    if "UNREGISTERED" in codes:
        return SendResult(SendStatus.TOKEN_GONE, detail)
    if http_status == 429 or http_status >= 500 or {"QUOTA_EXCEEDED", "UNAVAILABLE"} & set(codes):
        wait = parse_retry_after(retry_after, now or dt.datetime.now(dt.UTC))
        return SendResult(SendStatus.RETRY, detail, retry_after_s=wait)
    if "THIRD_PARTY_AUTH_ERROR" in codes or http_status in (401, 403, 404):
        # 401/403: our credentials or project; a 404 without UNREGISTERED: a wrong project or
        # URL. Either way not this token's fault, and replayable once fixed.
        if "SENDER_ID_MISMATCH" in codes:
            return SendResult(SendStatus.REJECTED, detail)
        return SendResult(SendStatus.MISCONFIGURED, detail)
    return SendResult(SendStatus.REJECTED, detail)


class FcmSender:
    """Sends Android pushes, with at most `concurrency` in flight (take a `slot` first).

    An async context manager: it owns its HTTP client and closes it on exit.
    """

    name = "fcm"

    def __init__(
        self,
        settings: FcmSettings,
        *,
        connect_timeout_s: float,
        send_timeout_s: float,
        clock: Clock = time.time,
    ) -> None:
        self._settings = settings
        self._account = ServiceAccount.from_file(settings.credentials_file)
        project = settings.project_id or self._account.project_id
        if not project:
            raise ConfigError(
                "NUDGE_FCM_PROJECT_ID", "is required when the credentials name no project_id"
            )
        self._send_url = f"{settings.url.rstrip('/')}/v1/projects/{project}/messages:send"
        self._connect_timeout_s = connect_timeout_s
        self._send_timeout_s = send_timeout_s
        verify: ssl.SSLContext | bool = True
        if settings.ca_file:
            try:
                verify = ssl.create_default_context(cafile=settings.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    "NUDGE_FCM_CA_FILE", f"cannot load {settings.ca_file}: {exc}"
                ) from exc
        self._client = httpx.AsyncClient(
            verify=verify,
            timeout=httpx.Timeout(
                send_timeout_s, connect=connect_timeout_s, pool=connect_timeout_s
            ),
            limits=httpx.Limits(
                max_connections=settings.concurrency,
                max_keepalive_connections=settings.concurrency,
            ),
        )
        self.tokens = AccessTokens(
            self._client,
            self._account,
            settings.token_uri or self._account.token_uri,
            refresh_margin_s=settings.token_refresh_margin_s,
            timeout_s=connect_timeout_s + send_timeout_s,
            clock=clock,
        )
        self._slots = asyncio.Semaphore(settings.concurrency)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._client.aclose()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """One of the `concurrency` sends allowed at once."""
        async with self._slots:
            yield

    async def send(
        self,
        *,
        token: str,
        environment: AppEnvironment,
        content: PushContent,
        notification_id: uuid.UUID,
        ttl_s: int,
    ) -> SendResult:
        """Sends one message; never raises for a provider or network failure."""
        try:
            body = fcm_encode({"message": fcm_message(content, token, ttl_s)})
        except PayloadTooLarge as exc:
            return SendResult(SendStatus.REJECTED, f"fcm: {exc}")
        result = await self._send_once(body)
        if result is None:  # 401: the access token was dropped; try once more with a new one
            result = await self._send_once(body)
            if result is None:
                result = SendResult(SendStatus.MISCONFIGURED, "fcm 401 UNAUTHENTICATED")
        return result

    async def _send_once(self, body: bytes) -> SendResult | None:
        try:
            access = await self.tokens.get()
        except TokenUnavailable as exc:
            return SendResult(SendStatus.RETRY, f"fcm: {exc}")
        except TokenRejected as exc:
            return SendResult(SendStatus.MISCONFIGURED, f"fcm: {exc}")
        try:
            # httpx times each phase; the outer bound catches a server that trickles bytes.
            async with asyncio.timeout(self._connect_timeout_s + self._send_timeout_s):
                answer = await self._client.post(
                    self._send_url,
                    content=body,
                    headers={
                        "authorization": f"Bearer {access}",
                        "content-type": "application/json; charset=utf-8",
                    },
                )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            return SendResult(SendStatus.RETRY, f"fcm: cannot connect: {type(exc).__name__}")
        except (httpx.WriteError, httpx.WriteTimeout) as exc:
            # The request did not get out whole, so FCM cannot have acted on it.
            return SendResult(SendStatus.RETRY, f"fcm: request not sent: {type(exc).__name__}")
        except (TimeoutError, httpx.HTTPError) as exc:
            # Read timeouts, a connection closed before the answer: possibly delivered.
            return SendResult(SendStatus.UNKNOWN, f"fcm: no answer: {type(exc).__name__}: {exc}")
        try:
            doc: object = answer.json()
        except ValueError:
            doc = None
        if answer.status_code == 401:
            _, codes = fcm_error_codes(doc)
            if "THIRD_PARTY_AUTH_ERROR" not in codes:
                self.tokens.invalidate(access)
                return None
        return classify(answer.status_code, doc, retry_after=answer.headers.get("retry-after"))
