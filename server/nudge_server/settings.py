"""Frozen settings, one dataclass per resource, validated on construction.

Only the CLI calls the `from_env` constructors; everything else is handed its settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .errors import ConfigError

Env = Mapping[str, str]


def _float(env: Env, name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(name, f"must be a number, got {raw!r}") from None


def _int(env: Env, name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(name, f"must be a whole number, got {raw!r}") from None


def _bool(env: Env, name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(name, f"must be true or false, got {raw!r}")


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(name, f"must be greater than 0, got {value}")


@dataclass(frozen=True)
class RedisSettings:
    """Where Redis is and how long the hot path waits for it."""

    url: str = "redis://127.0.0.1:6379/0"
    #: Deadline of the one Redis call of a decision; past it the answer is "unavailable".
    decision_timeout_s: float = 0.25
    #: Timeout of other Redis calls (outcomes, statistics refresh).
    command_timeout_s: float = 1.0
    max_connections: int = 64

    def __post_init__(self) -> None:
        if urlsplit(self.url).scheme not in ("redis", "rediss", "unix"):
            raise ConfigError("NUDGE_REDIS_URL", f"must be a redis:// URL, got {self.url!r}")
        _positive("NUDGE_REDIS_DECISION_TIMEOUT", self.decision_timeout_s)
        _positive("NUDGE_REDIS_COMMAND_TIMEOUT", self.command_timeout_s)
        _positive("NUDGE_REDIS_MAX_CONNECTIONS", self.max_connections)

    @classmethod
    def from_env(cls, env: Env = os.environ) -> RedisSettings:
        return cls(
            url=env.get("NUDGE_REDIS_URL") or cls.url,
            decision_timeout_s=_float(env, "NUDGE_REDIS_DECISION_TIMEOUT", cls.decision_timeout_s),
            command_timeout_s=_float(env, "NUDGE_REDIS_COMMAND_TIMEOUT", cls.command_timeout_s),
            max_connections=_int(env, "NUDGE_REDIS_MAX_CONNECTIONS", cls.max_connections),
        )


@dataclass(frozen=True)
class PostgresSettings:
    """Where PostgreSQL is and how the pool is sized."""

    dsn: str = "postgresql://postgres@127.0.0.1:5432/nudge"
    min_connections: int = 1
    max_connections: int = 8
    command_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if urlsplit(self.dsn).scheme not in ("postgres", "postgresql"):
            raise ConfigError(
                "NUDGE_DATABASE_URL", f"must be a postgresql:// URL, got {self.dsn!r}"
            )
        _positive("NUDGE_DATABASE_MAX_CONNECTIONS", self.max_connections)
        if not 0 <= self.min_connections <= self.max_connections:
            raise ConfigError("NUDGE_DATABASE_MIN_CONNECTIONS", "must be between 0 and the maximum")
        _positive("NUDGE_DATABASE_COMMAND_TIMEOUT", self.command_timeout_s)

    @classmethod
    def from_env(cls, env: Env = os.environ) -> PostgresSettings:
        return cls(
            dsn=env.get("NUDGE_DATABASE_URL") or cls.dsn,
            min_connections=_int(env, "NUDGE_DATABASE_MIN_CONNECTIONS", cls.min_connections),
            max_connections=_int(env, "NUDGE_DATABASE_MAX_CONNECTIONS", cls.max_connections),
            command_timeout_s=_float(env, "NUDGE_DATABASE_COMMAND_TIMEOUT", cls.command_timeout_s),
        )


@dataclass(frozen=True)
class GrpcSettings:
    """How the gRPC server listens and shuts down."""

    listen: str = "127.0.0.1:50051"
    #: On SIGTERM, in-flight RPCs get this long to finish.
    shutdown_grace_s: float = 10.0
    #: On SIGTERM, first this long answering new calls UNAVAILABLE (health NOT_SERVING), so that
    #: callers and balancers move on, while calls in flight go on; then the server stops.
    shutdown_drain_s: float = 1.0
    #: Connections older than this are asked to reconnect (GOAWAY), so that TLS changes (a
    #: renewed certificate, a removed client CA) reach every client within this time.
    max_connection_age_s: float = 3600.0
    #: Largest request the server accepts.
    max_message_bytes: int = 256 * 1024
    #: Largest response the server sends. Larger than what it accepts: an answer carries more
    #: than its request (defaults filled in, several campaigns, an arm report).
    max_send_message_bytes: int = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        if ":" not in self.listen:
            raise ConfigError("NUDGE_LISTEN", f"must be HOST:PORT, got {self.listen!r}")
        _positive("NUDGE_SHUTDOWN_GRACE", self.shutdown_grace_s)
        _positive("NUDGE_MAX_CONNECTION_AGE", self.max_connection_age_s)
        if not 0 <= self.shutdown_drain_s <= 600:
            raise ConfigError(
                "NUDGE_SHUTDOWN_DRAIN", f"must be 0 to 600 seconds, got {self.shutdown_drain_s}"
            )
        _positive("NUDGE_MAX_MESSAGE_BYTES", self.max_message_bytes)
        if self.max_send_message_bytes < self.max_message_bytes:
            raise ConfigError(
                "NUDGE_MAX_SEND_MESSAGE_BYTES",
                f"must be at least NUDGE_MAX_MESSAGE_BYTES ({self.max_message_bytes}), "
                f"got {self.max_send_message_bytes}",
            )

    @classmethod
    def from_env(cls, env: Env = os.environ) -> GrpcSettings:
        return cls(
            listen=env.get("NUDGE_LISTEN") or cls.listen,
            shutdown_grace_s=_float(env, "NUDGE_SHUTDOWN_GRACE", cls.shutdown_grace_s),
            shutdown_drain_s=_float(env, "NUDGE_SHUTDOWN_DRAIN", cls.shutdown_drain_s),
            max_connection_age_s=_float(env, "NUDGE_MAX_CONNECTION_AGE", cls.max_connection_age_s),
            max_message_bytes=_int(env, "NUDGE_MAX_MESSAGE_BYTES", cls.max_message_bytes),
            max_send_message_bytes=_int(
                env, "NUDGE_MAX_SEND_MESSAGE_BYTES", cls.max_send_message_bytes
            ),
        )


@dataclass(frozen=True)
class TlsSettings:
    """The server's TLS: its certificate chain and key, and the CA bundle whose client
    certificates it then requires (mTLS). No certificate means plaintext.

    Only the paths are checked here; `tls.server_credentials` reads and checks the files.
    """

    #: PEM certificate chain, the server's own certificate first (NUDGE_TLS_CERT).
    cert_file: Path | None = None
    #: PEM private key of that certificate, unencrypted (NUDGE_TLS_KEY).
    key_file: Path | None = None
    #: PEM bundle of the CAs that sign client certificates; set, a client without a valid
    #: certificate is refused during the handshake (NUDGE_TLS_CLIENT_CA).
    client_ca_file: Path | None = None

    def __post_init__(self) -> None:
        if self.cert_file is None and self.key_file is not None:
            raise ConfigError(
                "NUDGE_TLS_CERT", "must be set when NUDGE_TLS_KEY is (both or neither)"
            )
        if self.key_file is None and self.cert_file is not None:
            raise ConfigError(
                "NUDGE_TLS_KEY", "must be set when NUDGE_TLS_CERT is (both or neither)"
            )
        if self.client_ca_file is not None and self.cert_file is None:
            raise ConfigError(
                "NUDGE_TLS_CLIENT_CA",
                "needs NUDGE_TLS_CERT and NUDGE_TLS_KEY: client certificates are checked only "
                "over TLS",
            )

    @property
    def enabled(self) -> bool:
        """True when the server serves TLS."""
        return self.cert_file is not None

    @classmethod
    def from_env(cls, env: Env = os.environ) -> TlsSettings:
        def path(name: str) -> Path | None:
            raw = env.get(name)
            return Path(raw) if raw else None

        return cls(
            cert_file=path("NUDGE_TLS_CERT"),
            key_file=path("NUDGE_TLS_KEY"),
            client_ca_file=path("NUDGE_TLS_CLIENT_CA"),
        )


@dataclass(frozen=True)
class LogSettings:
    """How the decision log is batched into PostgreSQL."""

    batch_size: int = 500
    flush_interval_s: float = 0.2
    #: Rows kept in memory while PostgreSQL is unavailable and the spool cannot take them;
    #: past it new rows are dropped loudly.
    max_buffered_rows: int = 200_000
    #: Where rows wait on disk while PostgreSQL is away (relative: to the working directory).
    #: Processes may share it (each writes a subdirectory of its own; see `spool.py`).
    spool_dir: Path = Path(".run/spool")
    #: Bytes the spool may hold on disk; 0 means no spool (rows wait in memory only).
    spool_max_bytes: int = 1024**3
    #: A row not yet written after this many seconds goes to the spool (a hung PostgreSQL):
    #: bounds what a kill -9 loses.
    spill_after_s: float = 1.0

    def __post_init__(self) -> None:
        _positive("NUDGE_LOG_BATCH_SIZE", self.batch_size)
        _positive("NUDGE_LOG_FLUSH_INTERVAL", self.flush_interval_s)
        _positive("NUDGE_LOG_MAX_BUFFERED_ROWS", self.max_buffered_rows)
        if self.spool_max_bytes < 0:
            raise ConfigError(
                "NUDGE_SPOOL_MAX_BYTES", f"must be 0 (no spool) or more, got {self.spool_max_bytes}"
            )
        if 0 < self.spool_max_bytes < 1024 * 1024:
            raise ConfigError(
                "NUDGE_SPOOL_MAX_BYTES",
                f"must be 0 (no spool) or at least 1 MiB (1048576), got {self.spool_max_bytes}",
            )
        if str(self.spool_dir) == "":
            raise ConfigError("NUDGE_SPOOL_DIR", "must not be empty")
        _positive("NUDGE_LOG_SPILL_AFTER", self.spill_after_s)

    @property
    def spool_enabled(self) -> bool:
        """Whether rows go to an on-disk spool while PostgreSQL is away."""
        return self.spool_max_bytes > 0

    @classmethod
    def from_env(cls, env: Env = os.environ) -> LogSettings:
        return cls(
            batch_size=_int(env, "NUDGE_LOG_BATCH_SIZE", cls.batch_size),
            flush_interval_s=_float(env, "NUDGE_LOG_FLUSH_INTERVAL", cls.flush_interval_s),
            max_buffered_rows=_int(env, "NUDGE_LOG_MAX_BUFFERED_ROWS", cls.max_buffered_rows),
            spool_dir=Path(env.get("NUDGE_SPOOL_DIR") or cls.spool_dir),
            spool_max_bytes=_int(env, "NUDGE_SPOOL_MAX_BYTES", cls.spool_max_bytes),
            spill_after_s=_float(env, "NUDGE_LOG_SPILL_AFTER", cls.spill_after_s),
        )


@dataclass(frozen=True)
class DecisionSettings:
    """How decisions are made."""

    #: Use the client's event_time as the decision time. Only for replays of logged traffic.
    trust_event_time: bool = False
    #: How often configuration (apps, campaigns) is re-read from PostgreSQL.
    config_refresh_s: float = 1.0
    #: How often arm statistics are re-read from Redis.
    stats_refresh_s: float = 0.5
    #: Seed of the bandit's random draws; None means fresh entropy.
    seed: int | None = None
    #: How often the ignore sweeper looks for response windows that closed with no response.
    sweep_interval_s: float = 5.0

    def __post_init__(self) -> None:
        _positive("NUDGE_CONFIG_REFRESH", self.config_refresh_s)
        _positive("NUDGE_STATS_REFRESH", self.stats_refresh_s)
        _positive("NUDGE_SWEEP_INTERVAL", self.sweep_interval_s)

    @classmethod
    def from_env(cls, env: Env = os.environ) -> DecisionSettings:
        seed = env.get("NUDGE_SEED")
        return cls(
            trust_event_time=_bool(env, "NUDGE_TRUST_EVENT_TIME", cls.trust_event_time),
            config_refresh_s=_float(env, "NUDGE_CONFIG_REFRESH", cls.config_refresh_s),
            stats_refresh_s=_float(env, "NUDGE_STATS_REFRESH", cls.stats_refresh_s),
            seed=_int(env, "NUDGE_SEED", 0) if seed else None,
            sweep_interval_s=_float(env, "NUDGE_SWEEP_INTERVAL", cls.sweep_interval_s),
        )


@dataclass(frozen=True)
class ReportSettings:
    """How the server computes arm reports: in child processes, apart from its event loop."""

    #: Child processes computing reports; at most this many reports run at once. Each keeps a
    #: CPU busy while it computes: leave the server one.
    workers: int = 1
    #: Reports waiting for a free worker; past it a report is refused (RESOURCE_EXHAUSTED).
    max_waiting: int = 4
    #: Reports one app may have running and waiting at once, so that it cannot keep the other
    #: apps' reports out; past it, RESOURCE_EXHAUSTED for that app only.
    max_per_app: int = 3
    #: The command timeout of a report's queries (its own PostgreSQL connection). Longer than
    #: the pool's: a report over a long range reads many rows.
    command_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        _positive("NUDGE_REPORT_WORKERS", self.workers)
        if self.max_waiting < 0:
            raise ConfigError(
                "NUDGE_REPORT_MAX_WAITING", f"must be 0 or more, got {self.max_waiting}"
            )
        _positive("NUDGE_REPORT_COMMAND_TIMEOUT", self.command_timeout_s)
        _positive("NUDGE_REPORT_MAX_PER_APP", self.max_per_app)

    @classmethod
    def from_env(cls, env: Env = os.environ) -> ReportSettings:
        return cls(
            workers=_int(env, "NUDGE_REPORT_WORKERS", cls.workers),
            max_waiting=_int(env, "NUDGE_REPORT_MAX_WAITING", cls.max_waiting),
            max_per_app=_int(env, "NUDGE_REPORT_MAX_PER_APP", cls.max_per_app),
            command_timeout_s=_float(env, "NUDGE_REPORT_COMMAND_TIMEOUT", cls.command_timeout_s),
        )


@dataclass(frozen=True)
class AuthSettings:
    """How API keys are checked and how fast each app may call."""

    #: How often every server reloads the live keys; a revoked key works at most this long.
    refresh_s: float = 2.0
    #: PostgreSQL lookups per second, for all callers together, of keys not yet in memory.
    lookups_per_s: float = 20.0
    #: Requests per second each app may make to one server process (all RPCs together);
    #: beyond it (after the burst) calls get RESOURCE_EXHAUSTED. "inf" turns the limit off.
    app_rate_per_s: float = 2000.0
    #: Requests an app may make at once above its rate.
    app_burst: float = 4000.0

    def __post_init__(self) -> None:
        _positive("NUDGE_KEY_REFRESH", self.refresh_s)
        _positive("NUDGE_KEY_LOOKUPS_PER_S", self.lookups_per_s)
        _positive("NUDGE_APP_RATE", self.app_rate_per_s)
        if not self.app_burst >= 1:
            raise ConfigError("NUDGE_APP_BURST", f"must be at least 1, got {self.app_burst}")

    @classmethod
    def from_env(cls, env: Env = os.environ) -> AuthSettings:
        return cls(
            refresh_s=_float(env, "NUDGE_KEY_REFRESH", cls.refresh_s),
            lookups_per_s=_float(env, "NUDGE_KEY_LOOKUPS_PER_S", cls.lookups_per_s),
            app_rate_per_s=_float(env, "NUDGE_APP_RATE", cls.app_rate_per_s),
            app_burst=_float(env, "NUDGE_APP_BURST", cls.app_burst),
        )


@dataclass(frozen=True)
class ServerSettings:
    """Everything the server process needs."""

    redis: RedisSettings = field(default_factory=RedisSettings)
    postgres: PostgresSettings = field(default_factory=PostgresSettings)
    grpc: GrpcSettings = field(default_factory=GrpcSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    log: LogSettings = field(default_factory=LogSettings)
    decision: DecisionSettings = field(default_factory=DecisionSettings)
    report: ReportSettings = field(default_factory=ReportSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)

    @classmethod
    def from_env(cls, env: Env = os.environ) -> ServerSettings:
        return cls(
            redis=RedisSettings.from_env(env),
            postgres=PostgresSettings.from_env(env),
            grpc=GrpcSettings.from_env(env),
            tls=TlsSettings.from_env(env),
            log=LogSettings.from_env(env),
            decision=DecisionSettings.from_env(env),
            report=ReportSettings.from_env(env),
            auth=AuthSettings.from_env(env),
        )
