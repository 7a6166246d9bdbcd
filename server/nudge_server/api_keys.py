"""API keys: their format, their hashes, and their rows in PostgreSQL.

A key reads `nk_<key id>_<secret>`: the key id (16 hex digits) is public and names the row; the
secret (32 random bytes, base64url) is shown once, when the key is made, and only its SHA-256 is
stored. A slow password hash buys nothing for 256 random bits; the comparison is constant-time.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import asyncpg

from .errors import InvalidArgument, NotFound
from .postgres import connection
from .requests import app_id as checked_app_id

#: What a key may do. decide: Decide, ReportOutcome, devices. report: arm reports. admin: apps,
#: campaigns, keys, user deletion, server status.
SCOPES = ("decide", "report", "admin")
KEY_PATTERN = re.compile(r"nk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
MAX_NAME = 128
_KEY_COLUMNS = "key_id, app_id, name, scopes, created_at, revoked_at"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key as stored (never its secret)."""

    key_id: str
    app_id: str
    name: str
    scopes: frozenset[str]
    created_at: dt.datetime
    revoked_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key just made: `token` is the whole key, to be handed over once."""

    key: ApiKey
    token: str


@dataclass(frozen=True, slots=True)
class Credential:
    """What a server keeps in memory to check a key."""

    app_id: str
    scopes: frozenset[str]
    secret_hash: bytes


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("ascii")).digest()


def parse_token(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, None for anything else."""
    match = KEY_PATTERN.fullmatch(token)
    return (match[1], match[2]) if match else None


def secret_matches(secret: str, credential: Credential) -> bool:
    return hmac.compare_digest(hash_secret(secret), credential.secret_hash)


def checked_scopes(values: Iterable[str]) -> frozenset[str]:
    """The scopes named, or InvalidArgument naming an unknown one (or none at all)."""
    scopes = frozenset(value.strip().lower() for value in values if value.strip())
    unknown = sorted(scopes.difference(SCOPES))
    if unknown:
        raise InvalidArgument("scopes", f"unknown scope {unknown[0]!r}; known: {', '.join(SCOPES)}")
    if not scopes:
        raise InvalidArgument("scopes", f"at least one is required; known: {', '.join(SCOPES)}")
    return scopes


def checked_name(name: str) -> str:
    if len(name) > MAX_NAME or not name.isprintable():
        raise InvalidArgument("name", f"must be at most {MAX_NAME} printable characters")
    return name


def new_token() -> tuple[str, str, str]:
    """A fresh (token, key id, secret)."""
    key_id = secrets.token_hex(8)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii").rstrip("=")
    return f"nk_{key_id}_{secret}", key_id, secret


def _key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(
        key_id=row["key_id"],
        app_id=row["app_id"],
        name=row["name"],
        scopes=frozenset(row["scopes"]),
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


class ApiKeyStore:
    """The `api_keys` table. Every query but the servers' bulk load names its app.
    StoreUnavailable when PostgreSQL is not there."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def _fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        async with connection(self._pool) as conn:
            rows: list[asyncpg.Record] = await conn.fetch(query, *args)
            return rows

    async def create(self, app_id: str, scopes: Iterable[str], name: str = "") -> IssuedKey:
        app = checked_app_id(app_id)
        wanted = checked_scopes(scopes)
        label = checked_name(name)
        token, key_id, secret = new_token()
        rows = await self._fetch(
            f"""
            INSERT INTO api_keys (key_id, app_id, name, scopes, secret_hash)
            VALUES ($1, $2, $3, $4, $5) RETURNING {_KEY_COLUMNS}
            """,
            key_id,
            app,
            label,
            sorted(wanted),
            hash_secret(secret),
        )
        return IssuedKey(_key(rows[0]), token)

    async def list(self, app_id: str, *, include_revoked: bool = False) -> list[ApiKey]:
        rows = await self._fetch(
            f"""
            SELECT {_KEY_COLUMNS} FROM api_keys
            WHERE app_id = $1 AND ($2 OR revoked_at IS NULL)
            ORDER BY created_at, key_id
            """,
            checked_app_id(app_id),
            include_revoked,
        )
        return [_key(row) for row in rows]

    async def revoke(self, app_id: str, key_id: str) -> ApiKey:
        """Revokes a key of the app (idempotent); NotFound when the app has no such key."""
        app = checked_app_id(app_id)
        rows = await self._fetch(
            f"""
            UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
            WHERE app_id = $1 AND key_id = $2 RETURNING {_KEY_COLUMNS}
            """,
            app,
            key_id,
        )
        if not rows:
            raise NotFound(f"app {app!r} has no API key {key_id[:64]!r}")
        return _key(rows[0])

    async def active_credentials(self) -> dict[str, Credential]:
        """Every key not revoked, by key id: what each server holds in memory."""
        rows = await self._fetch(
            "SELECT key_id, app_id, scopes, secret_hash FROM api_keys WHERE revoked_at IS NULL"
        )
        return {row["key_id"]: _credential(row) for row in rows}

    async def credential(self, key_id: str) -> Credential | None:
        """One key, when it exists and is not revoked."""
        rows = await self._fetch(
            "SELECT key_id, app_id, scopes, secret_hash FROM api_keys"
            " WHERE key_id = $1 AND revoked_at IS NULL",
            key_id,
        )
        return _credential(rows[0]) if rows else None


def _credential(row: asyncpg.Record) -> Credential:
    return Credential(row["app_id"], frozenset(row["scopes"]), bytes(row["secret_hash"]))


def scope_list(scopes: Sequence[str] | frozenset[str]) -> str:
    """Scopes in their canonical order, comma-separated."""
    return ",".join(scope for scope in SCOPES if scope in scopes)
