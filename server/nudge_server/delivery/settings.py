"""Frozen settings of the delivery worker and its two providers, validated on construction.

Only the CLI calls `DeliverySettings.from_env`. A provider whose credentials are not configured
is off: its deliveries are dead-lettered (replayable once it is configured), never dropped.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ..errors import ConfigError
from ..settings import Env, _float, _int, _positive

APNS_PRODUCTION_URL = "https://api.push.apple.com:443"
APNS_SANDBOX_URL = "https://api.sandbox.push.apple.com:443"
FCM_URL = "https://fcm.googleapis.com"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"


def _url(name: str, value: str, schemes: tuple[str, ...]) -> None:
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.hostname:
        raise ConfigError(name, f"must be a {' or '.join(schemes)} URL, got {value!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ConfigError(name, f"has an invalid port: {value!r}") from None


def _worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class ApnsSettings:
    """APNs with token (JWT, .p8 key) authentication. Off when `key_file` is empty."""

    key_file: str = ""
    key_id: str = ""
    team_id: str = ""
    #: The apns-topic: the app's bundle id.
    topic: str = ""
    production_url: str = APNS_PRODUCTION_URL
    sandbox_url: str = APNS_SANDBOX_URL
    #: A PEM bundle of CAs to trust instead of the system's (for a private or test endpoint).
    ca_file: str = ""
    #: Sends in flight at once, all connections together.
    concurrency: int = 100
    #: HTTP/2 connections per environment.
    max_connections: int = 2
    #: The provider token is re-signed after this long (APNs rejects tokens older than an hour
    #: and refreshes more often than every 20 minutes).
    token_refresh_s: float = 40 * 60

    @property
    def enabled(self) -> bool:
        return bool(self.key_file)

    def __post_init__(self) -> None:
        if self.enabled:
            for name, value in (
                ("NUDGE_APNS_KEY_ID", self.key_id),
                ("NUDGE_APNS_TEAM_ID", self.team_id),
                ("NUDGE_APNS_TOPIC", self.topic),
            ):
                if not value:
                    raise ConfigError(name, "is required when NUDGE_APNS_KEY_FILE is set")
        _url("NUDGE_APNS_PRODUCTION_URL", self.production_url, ("https",))
        _url("NUDGE_APNS_SANDBOX_URL", self.sandbox_url, ("https",))
        _positive("NUDGE_APNS_CONCURRENCY", self.concurrency)
        _positive("NUDGE_APNS_MAX_CONNECTIONS", self.max_connections)
        if not 60 <= self.token_refresh_s <= 55 * 60:
            raise ConfigError(
                "NUDGE_APNS_TOKEN_REFRESH",
                f"must be 60 to 3300 seconds, got {self.token_refresh_s}",
            )

    @classmethod
    def from_env(cls, env: Env = os.environ) -> ApnsSettings:
        return cls(
            key_file=env.get("NUDGE_APNS_KEY_FILE", ""),
            key_id=env.get("NUDGE_APNS_KEY_ID", ""),
            team_id=env.get("NUDGE_APNS_TEAM_ID", ""),
            topic=env.get("NUDGE_APNS_TOPIC", ""),
            production_url=env.get("NUDGE_APNS_PRODUCTION_URL") or cls.production_url,
            sandbox_url=env.get("NUDGE_APNS_SANDBOX_URL") or cls.sandbox_url,
            ca_file=env.get("NUDGE_APNS_CA_FILE", ""),
            concurrency=_int(env, "NUDGE_APNS_CONCURRENCY", cls.concurrency),
            max_connections=_int(env, "NUDGE_APNS_MAX_CONNECTIONS", cls.max_connections),
            token_refresh_s=_float(env, "NUDGE_APNS_TOKEN_REFRESH", cls.token_refresh_s),
        )


@dataclass(frozen=True)
class FcmSettings:
    """FCM HTTP v1 with service-account credentials. Off when `credentials_file` is empty."""

    credentials_file: str = ""
    #: The Firebase project; empty means the project_id of the credentials file.
    project_id: str = ""
    url: str = FCM_URL
    #: The OAuth2 token endpoint; empty means the token_uri of the credentials file.
    token_uri: str = ""
    #: A PEM bundle of CAs to trust instead of the system's.
    ca_file: str = ""
    concurrency: int = 100
    #: An access token is refreshed this long before it expires.
    token_refresh_margin_s: float = 300.0

    @property
    def enabled(self) -> bool:
        return bool(self.credentials_file)

    def __post_init__(self) -> None:
        _url("NUDGE_FCM_URL", self.url, ("https", "http"))
        if self.token_uri:
            _url("NUDGE_FCM_TOKEN_URI", self.token_uri, ("https", "http"))
        _positive("NUDGE_FCM_CONCURRENCY", self.concurrency)
        if self.token_refresh_margin_s < 0:
            raise ConfigError("NUDGE_FCM_TOKEN_REFRESH_MARGIN", "must not be negative")

    @classmethod
    def from_env(cls, env: Env = os.environ) -> FcmSettings:
        return cls(
            credentials_file=env.get("NUDGE_FCM_CREDENTIALS_FILE", ""),
            project_id=env.get("NUDGE_FCM_PROJECT_ID", ""),
            url=env.get("NUDGE_FCM_URL") or cls.url,
            token_uri=env.get("NUDGE_FCM_TOKEN_URI", ""),
            ca_file=env.get("NUDGE_FCM_CA_FILE", ""),
            concurrency=_int(env, "NUDGE_FCM_CONCURRENCY", cls.concurrency),
            token_refresh_margin_s=_float(
                env, "NUDGE_FCM_TOKEN_REFRESH_MARGIN", cls.token_refresh_margin_s
            ),
        )


@dataclass(frozen=True)
class DeliverySettings:
    """How the worker claims, times, retries and reports push jobs (durations in seconds)."""

    apns: ApnsSettings = field(default_factory=ApnsSettings)
    fcm: FcmSettings = field(default_factory=FcmSettings)
    #: Names this worker in leases and logs; unique per process.
    worker_id: str = field(default_factory=_worker_id)
    #: How often the queue is polled when there is nothing to do.
    poll_interval_s: float = 0.5
    #: Jobs claimed by one poll, and jobs in progress at once.
    batch_size: int = 50
    max_jobs_in_flight: int = 200
    #: A claimed job is this worker's for this long, renewed while it works on it; a worker
    #: that dies loses its jobs to the others when the lease runs out.
    lease_s: float = 60.0
    #: Requests per (job, device) before it is dead-lettered.
    max_attempts: int = 6
    backoff_base_s: float = 2.0
    backoff_max_s: float = 600.0
    #: A Retry-After longer than this is cut to it.
    max_retry_after_s: float = 3600.0
    #: Connecting (TCP, TLS) and the whole request: past either the send counts as failed.
    connect_timeout_s: float = 5.0
    send_timeout_s: float = 10.0
    #: On SIGTERM, jobs in progress get this long to finish.
    shutdown_grace_s: float = 15.0
    #: The worker's gRPC health service, HOST:PORT; empty turns it off.
    health_listen: str = "127.0.0.1:50052"
    #: How often apps and campaigns (quiet hours) are re-read.
    config_refresh_s: float = 5.0

    def __post_init__(self) -> None:
        if not self.worker_id or len(self.worker_id) > 200:
            raise ConfigError("NUDGE_WORKER_ID", "must be 1 to 200 characters")
        for name, value in (
            ("NUDGE_WORKER_POLL_INTERVAL", self.poll_interval_s),
            ("NUDGE_WORKER_BATCH_SIZE", self.batch_size),
            ("NUDGE_WORKER_MAX_IN_FLIGHT", self.max_jobs_in_flight),
            ("NUDGE_WORKER_LEASE", self.lease_s),
            ("NUDGE_PUSH_MAX_ATTEMPTS", self.max_attempts),
            ("NUDGE_PUSH_BACKOFF_BASE", self.backoff_base_s),
            ("NUDGE_PUSH_BACKOFF_MAX", self.backoff_max_s),
            ("NUDGE_PUSH_MAX_RETRY_AFTER", self.max_retry_after_s),
            ("NUDGE_PUSH_CONNECT_TIMEOUT", self.connect_timeout_s),
            ("NUDGE_PUSH_SEND_TIMEOUT", self.send_timeout_s),
            ("NUDGE_WORKER_SHUTDOWN_GRACE", self.shutdown_grace_s),
            ("NUDGE_WORKER_CONFIG_REFRESH", self.config_refresh_s),
        ):
            _positive(name, value)
        if self.backoff_max_s < self.backoff_base_s:
            raise ConfigError("NUDGE_PUSH_BACKOFF_MAX", "must not be less than the base")
        # The lease must outlast a send, or a slow send would lose its job to another worker.
        if self.lease_s < 2 * (self.connect_timeout_s + self.send_timeout_s):
            raise ConfigError(
                "NUDGE_WORKER_LEASE",
                f"must be at least twice the connect and send timeouts together "
                f"({2 * (self.connect_timeout_s + self.send_timeout_s)} s), got {self.lease_s}",
            )
        if self.health_listen and ":" not in self.health_listen:
            raise ConfigError(
                "NUDGE_WORKER_HEALTH_LISTEN", f"must be HOST:PORT, got {self.health_listen!r}"
            )

    @classmethod
    def from_env(cls, env: Env = os.environ) -> DeliverySettings:
        return cls(
            apns=ApnsSettings.from_env(env),
            fcm=FcmSettings.from_env(env),
            worker_id=env.get("NUDGE_WORKER_ID") or _worker_id(),
            poll_interval_s=_float(env, "NUDGE_WORKER_POLL_INTERVAL", cls.poll_interval_s),
            batch_size=_int(env, "NUDGE_WORKER_BATCH_SIZE", cls.batch_size),
            max_jobs_in_flight=_int(env, "NUDGE_WORKER_MAX_IN_FLIGHT", cls.max_jobs_in_flight),
            lease_s=_float(env, "NUDGE_WORKER_LEASE", cls.lease_s),
            max_attempts=_int(env, "NUDGE_PUSH_MAX_ATTEMPTS", cls.max_attempts),
            backoff_base_s=_float(env, "NUDGE_PUSH_BACKOFF_BASE", cls.backoff_base_s),
            backoff_max_s=_float(env, "NUDGE_PUSH_BACKOFF_MAX", cls.backoff_max_s),
            max_retry_after_s=_float(env, "NUDGE_PUSH_MAX_RETRY_AFTER", cls.max_retry_after_s),
            connect_timeout_s=_float(env, "NUDGE_PUSH_CONNECT_TIMEOUT", cls.connect_timeout_s),
            send_timeout_s=_float(env, "NUDGE_PUSH_SEND_TIMEOUT", cls.send_timeout_s),
            shutdown_grace_s=_float(env, "NUDGE_WORKER_SHUTDOWN_GRACE", cls.shutdown_grace_s),
            health_listen=env.get("NUDGE_WORKER_HEALTH_LISTEN", cls.health_listen),
            config_refresh_s=_float(env, "NUDGE_WORKER_CONFIG_REFRESH", cls.config_refresh_s),
        )
