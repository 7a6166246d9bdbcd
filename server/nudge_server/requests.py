"""Validated requests: plain values in, domain request types out, with errors naming the field."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from .errors import MAX_SHOWN, InvalidArgument
from .local_time import zone
from .model import Channel, OutcomeType, Platform

_ID = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_LOCALE = re.compile(r"[A-Za-z0-9_\-]{1,35}")
MAX_PROPERTIES = 64
MAX_PROPERTIES_BYTES = 16 * 1024
MAX_PROPERTY_DEPTH = 8
MAX_CLOCK_DISTANCE = dt.timedelta(days=3653)


def app_id(value: str, field: str = "app_id") -> str:
    """An app or campaign id: 1 to 64 letters, digits, '-', '_' or '.'."""
    if not _ID.fullmatch(value):
        raise InvalidArgument(
            field, f"must be 1 to 64 letters, digits, '-', '_' or '.', got {value[:80]!r}"
        )
    return value


def printable(value: str, field: str, max_len: int, *, required: bool) -> str:
    """A text id: printable characters only (no control characters), bounded length."""
    if not value:
        if required:
            raise InvalidArgument(field, "is required")
        return value
    if len(value) > max_len:
        raise InvalidArgument(field, f"is {len(value)} characters long; at most {max_len}")
    if not value.isprintable():
        raise InvalidArgument(field, "must not contain control or non-printable characters")
    return value


def _check_property(value: Any, field: str, depth: int) -> None:
    if depth > MAX_PROPERTY_DEPTH:
        raise InvalidArgument(field, f"nests deeper than {MAX_PROPERTY_DEPTH} levels")
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidArgument(field, "must not contain NUL characters")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidArgument(field, "must be a finite number")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if "\x00" in key:
                raise InvalidArgument(field, "has a key with a NUL character")
            _check_property(item, f"{field}.{key[:MAX_SHOWN]}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_property(item, f"{field}[{index}]", depth + 1)


def properties(value: Mapping[str, Any], field: str = "event.properties") -> dict[str, Any]:
    """Event properties: at most 64 keys and 16 KiB as JSON, no NUL, finite numbers."""
    if len(value) > MAX_PROPERTIES:
        raise InvalidArgument(field, f"has {len(value)} keys; at most {MAX_PROPERTIES}")
    for key, item in value.items():
        if "\x00" in key:
            raise InvalidArgument(field, "has a key with a NUL character")
        _check_property(item, f"{field}.{key[:MAX_SHOWN]}", 1)
    size = len(json.dumps(value, separators=(",", ":")).encode())
    if size > MAX_PROPERTIES_BYTES:
        raise InvalidArgument(field, f"is {size} bytes as JSON; at most {MAX_PROPERTIES_BYTES}")
    return dict(value)


def time_zone(value: str, field: str = "time_zone") -> ZoneInfo:
    """An IANA time zone name."""
    if not value:
        raise InvalidArgument(field, "is required (an IANA name such as 'Europe/Berlin')")
    tz = zone(value)
    if tz is None:
        raise InvalidArgument(field, f"{value[:80]!r} is not a known IANA time zone")
    return tz


def instant(value: dt.datetime | None, field: str, now: dt.datetime) -> dt.datetime | None:
    """An optional timestamp, within 10 years of now."""
    if value is None:
        return None
    if abs(value - now) > MAX_CLOCK_DISTANCE:
        raise InvalidArgument(field, f"{value.isoformat()} is more than 10 years from now")
    return value


@dataclass(frozen=True)
class DecideInput:
    """A validated Decide request."""

    app_id: str
    user_id: str
    event_name: str
    properties: dict[str, Any]
    channel: Channel
    surface: str
    time_zone: str
    tz: ZoneInfo
    locale: str
    platform: Platform
    client_request_id: str
    event_time: dt.datetime | None


def decide_input(
    *,
    app: str,
    user: str,
    event_name: str,
    event_properties: Mapping[str, Any],
    channel: Channel,
    surface: str,
    tz_name: str,
    locale: str,
    platform: Platform,
    client_request_id: str,
    event_time: dt.datetime | None,
    now: dt.datetime,
) -> DecideInput:
    """Validates every field of a Decide request; the first bad field raises InvalidArgument."""
    if locale and not _LOCALE.fullmatch(locale):
        raise InvalidArgument("locale", "must be a BCP 47 tag such as 'de-DE' (at most 35 chars)")
    return DecideInput(
        app_id=app_id(app),
        user_id=printable(user, "user_id", 128, required=True),
        event_name=printable(event_name, "event.name", 128, required=True),
        properties=properties(event_properties),
        channel=channel,
        surface=printable(surface, "surface", 64, required=False),
        time_zone=tz_name,
        tz=time_zone(tz_name),
        locale=locale,
        platform=platform,
        client_request_id=printable(client_request_id, "client_request_id", 128, required=False),
        event_time=instant(event_time, "event_time", now),
    )


@dataclass(frozen=True)
class OutcomeInput:
    """A validated ReportOutcome request."""

    app_id: str
    user_id: str
    decision_id: str
    type: OutcomeType
    value: float | None
    occurred_at: dt.datetime | None


def outcome_input(
    *,
    app: str,
    user: str,
    decision_id: str,
    kind: OutcomeType,
    value: float,
    occurred_at: dt.datetime | None,
    now: dt.datetime,
) -> OutcomeInput:
    """Validates every field of a ReportOutcome request."""
    if not decision_id:
        raise InvalidArgument("decision_id", "is required")
    try:
        parsed = uuid.UUID(decision_id)
    except ValueError:
        raise InvalidArgument("decision_id", f"{decision_id[:80]!r} is not a decision id") from None
    if not math.isfinite(value):
        raise InvalidArgument("value", "must be a finite number")
    return OutcomeInput(
        app_id=app_id(app),
        user_id=printable(user, "user_id", 128, required=True),
        decision_id=str(parsed),
        type=kind,
        value=value if kind is OutcomeType.CONVERSION else None,
        occurred_at=instant(occurred_at, "occurred_at", now),
    )
