"""The user's local calendar: local days and quiet hours, correct across DST changes.

Pure functions of an instant (an aware UTC datetime) and an IANA zone.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = dt.UTC
_STEP = dt.timedelta(minutes=1)
_MAX_GAP = dt.timedelta(hours=3)  # no DST gap in the tz database is longer


@lru_cache(maxsize=4096)
def zone(name: str) -> ZoneInfo | None:
    """The zone of this IANA name, or None when it is not a known zone."""
    if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def first_instant_of(day: dt.date, tz: ZoneInfo) -> dt.datetime:
    """The first instant (UTC) whose local date is `day`.

    Local midnight may not exist: where DST starts at 00:00 the day begins at 01:00. zoneinfo
    maps a wall time in a gap with the offset from before the gap, which lands at or after the
    gap's start; stepping back while the local date is still `day` finds the true first instant.
    """
    guess = dt.datetime.combine(day, dt.time(0), tz).astimezone(UTC)
    if guess.astimezone(tz).time() == dt.time(0):
        # Midnight exists; with a fold it is the earlier of the two.
        return min(guess, dt.datetime.combine(day, dt.time(0, fold=1), tz).astimezone(UTC))
    limit = guess - _MAX_GAP
    while guess > limit and (guess - _STEP).astimezone(tz).date() == day:
        guess -= _STEP
    return guess


@dataclass(frozen=True)
class LocalDay:
    """A user's local calendar day: its id and the instant the next one starts."""

    day_id: str  # ISO date, e.g. "2026-03-08"
    ends_at: dt.datetime  # UTC

    @property
    def date(self) -> dt.date:
        return dt.date.fromisoformat(self.day_id)


def local_day(now: dt.datetime, tz: ZoneInfo) -> LocalDay:
    """The local day `now` falls in, and when it ends."""
    today = now.astimezone(tz).date()
    return LocalDay(today.isoformat(), first_instant_of(today + dt.timedelta(days=1), tz))


def _at_wall_time(day: dt.date, wall: dt.time, tz: ZoneInfo) -> dt.datetime:
    """The instant (UTC) of a local wall time; a wall time inside a DST gap maps past the gap."""
    return dt.datetime.combine(day, wall, tz).astimezone(UTC)


@dataclass(frozen=True)
class QuietHours:
    """Whether an instant is inside the user's quiet hours, and when they end."""

    active: bool
    ends_at: dt.datetime | None  # UTC; set when active


def quiet_hours(now: dt.datetime, tz: ZoneInfo, start: dt.time, end: dt.time) -> QuietHours:
    """Quiet hours [start, end) in local wall time; start > end spans midnight; start == end
    means there are no quiet hours."""
    if start == end:
        return QuietHours(False, None)
    local = now.astimezone(tz)
    wall = local.time().replace(tzinfo=None)
    today = local.date()
    if start < end:
        if start <= wall < end:
            return QuietHours(True, _at_wall_time(today, end, tz))
        return QuietHours(False, None)
    if wall >= start:
        return QuietHours(True, _at_wall_time(today + dt.timedelta(days=1), end, tz))
    if wall < end:
        return QuietHours(True, _at_wall_time(today, end, tz))
    return QuietHours(False, None)


def utc_now() -> dt.datetime:
    """The server's clock, as an aware UTC datetime."""
    return dt.datetime.now(UTC)


def to_ms(instant: dt.datetime) -> int:
    """Milliseconds since the Unix epoch."""
    return int(instant.timestamp() * 1000)


def from_ms(ms: int) -> dt.datetime:
    """An aware UTC datetime from milliseconds since the Unix epoch."""
    return dt.datetime.fromtimestamp(ms / 1000, UTC)
