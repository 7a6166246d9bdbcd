"""Device tokens: validation (pure) and the PostgreSQL store.

A registration is unique per (app, platform, token). Registering a token that another user of
the app holds moves it to the new user, so that a phone that changed hands never gets the
previous user's prompts. The delivery worker retires a token the provider reports gone; only a
new registration revives it.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import asyncpg

from . import requests
from .errors import InvalidArgument, NotFound
from .model import Platform
from .postgres import connection


class AppEnvironment(StrEnum):
    """The APNs environment an iOS build registered its token with."""

    PRODUCTION = "production"
    SANDBOX = "sandbox"


class DeviceStatus(StrEnum):
    """Whether a device receives pushes."""

    ACTIVE = "active"
    RETIRED = "retired"
    UNREGISTERED = "unregistered"


PUSH_PLATFORMS = (Platform.IOS, Platform.ANDROID)
_APNS_TOKEN = re.compile(r"(?:[0-9a-fA-F]{2}){32,100}")
_FCM_TOKEN = re.compile(r"[A-Za-z0-9_\-:.]{16,4096}")


@dataclass(frozen=True)
class Registration:
    """A validated RegisterDevice request."""

    app_id: str
    user_id: str
    platform: Platform
    token: str
    environment: AppEnvironment


@dataclass(frozen=True)
class Device:
    """One registered token."""

    device_id: uuid.UUID
    app_id: str
    user_id: str
    platform: Platform
    token: str
    environment: AppEnvironment
    status: DeviceStatus
    status_reason: str
    created_at: dt.datetime
    updated_at: dt.datetime
    retired_at: dt.datetime | None


def push_platform(value: Platform, field: str = "platform") -> Platform:
    """iOS or Android; anything else cannot receive pushes."""
    if value not in PUSH_PLATFORMS:
        raise InvalidArgument(field, f"must be PLATFORM_IOS or PLATFORM_ANDROID, got {value.value}")
    return value


def device_token(platform: Platform, value: str, field: str = "token") -> str:
    """A token in its stored form: APNs tokens as lower-case hex (64 to 200 digits), FCM tokens
    as given (16 to 4096 characters of letters, digits, '-', '_', ':', '.')."""
    if not value:
        raise InvalidArgument(field, "is required")
    if platform is Platform.IOS:
        if not _APNS_TOKEN.fullmatch(value):
            raise InvalidArgument(
                field, f"must be an APNs device token: 64 to 200 hex digits, got {value[:80]!r}"
            )
        return value.lower()
    if not _FCM_TOKEN.fullmatch(value):
        raise InvalidArgument(
            field,
            "must be an FCM registration token: 16 to 4096 letters, digits, '-', '_', ':' or "
            f"'.', got {value[:80]!r}",
        )
    return value


def registration(
    *, app: str, user: str, platform: Platform, token: str, environment: AppEnvironment
) -> Registration:
    """A validated registration; InvalidArgument names the bad field."""
    app_id = requests.app_id(app)
    user_id = requests.printable(user, "user_id", 128, required=True)
    checked = push_platform(platform)
    return Registration(
        app_id=app_id,
        user_id=user_id,
        platform=checked,
        token=device_token(checked, token),
        # APNs environments mean nothing to FCM: store Android tokens as production.
        environment=environment if checked is Platform.IOS else AppEnvironment.PRODUCTION,
    )


_COLUMNS = (
    "device_id, app_id, user_id, platform, token, environment, status, status_reason, "
    "created_at, updated_at, retired_at"
)
_APP_EXISTS = "SELECT 1 FROM apps WHERE app_id = $1"
_REGISTER = f"""
INSERT INTO devices AS d (app_id, user_id, platform, token, environment)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (app_id, platform, token) DO UPDATE
    SET user_id = EXCLUDED.user_id, environment = EXCLUDED.environment, status = 'active',
        status_reason = '', retired_at = NULL, updated_at = now()
RETURNING {_COLUMNS}, (xmax = 0) AS created
"""
_UNREGISTER = """
UPDATE devices SET status = 'unregistered', status_reason = 'unregistered by the app',
                   updated_at = now()
WHERE app_id = $1 AND user_id = $2 AND platform = $3 AND token = $4 AND status = 'active'
"""
_LIST = f"""
SELECT {_COLUMNS} FROM devices
WHERE app_id = $1 AND user_id = $2 AND ($3 OR status = 'active')
ORDER BY updated_at DESC, device_id
"""
_GET = f"SELECT {_COLUMNS} FROM devices WHERE device_id = $1"
RETIRE_SQL = """
UPDATE devices SET status = 'retired', status_reason = $2, retired_at = now(), updated_at = now()
WHERE device_id = $1 AND status = 'active' AND ($3::timestamptz IS NULL OR updated_at <= $3)
"""


def device_from_row(row: Mapping[str, Any]) -> Device:
    """A Device from a row holding the columns of `devices`."""
    return Device(
        device_id=row["device_id"],
        app_id=row["app_id"],
        user_id=row["user_id"],
        platform=Platform(row["platform"]),
        token=row["token"],
        environment=AppEnvironment(row["environment"]),
        status=DeviceStatus(row["status"]),
        status_reason=row["status_reason"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        retired_at=row["retired_at"],
    )


class DeviceStore:
    """Reads and writes device registrations. Handed a pool; never closes it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def register(self, reg: Registration) -> tuple[Device, bool]:
        """Stores the registration; returns the device and whether it is new. NotFound when the
        app does not exist."""
        async with connection(self._pool) as conn, conn.transaction():
            if await conn.fetchval(_APP_EXISTS, reg.app_id) is None:
                raise NotFound(f"app_id: app {reg.app_id!r} does not exist")
            row = await conn.fetchrow(
                _REGISTER,
                reg.app_id,
                reg.user_id,
                reg.platform.value,
                reg.token,
                reg.environment.value,
            )
        assert row is not None
        return device_from_row(row), bool(row["created"])

    async def unregister(self, app_id: str, user_id: str, platform: Platform, token: str) -> bool:
        """Unregisters an active token of this user; False when there was none."""
        async with connection(self._pool) as conn:
            status = await conn.execute(_UNREGISTER, app_id, user_id, platform.value, token)
        return bool(status.rsplit(" ", 1)[-1] != "0")

    async def list(self, app_id: str, user_id: str, include_inactive: bool = False) -> list[Device]:
        """The user's devices, newest registration first."""
        async with connection(self._pool) as conn:
            rows = await conn.fetch(_LIST, app_id, user_id, include_inactive)
        return [device_from_row(row) for row in rows]

    async def get(self, device_id: uuid.UUID) -> Device | None:
        """One device, or None."""
        async with connection(self._pool) as conn:
            row = await conn.fetchrow(_GET, device_id)
        return None if row is None else device_from_row(row)

    async def retire(
        self, device_id: uuid.UUID, reason: str, gone_since: dt.datetime | None = None
    ) -> bool:
        """Retires an active token the provider reported gone. With `gone_since` (APNs tells
        when it learnt the token was invalid), a token registered again after that instant is
        left active. Returns whether the token was retired."""
        async with connection(self._pool) as conn:
            status = await conn.execute(RETIRE_SQL, device_id, reason, gone_since)
        return bool(status.rsplit(" ", 1)[-1] != "0")
