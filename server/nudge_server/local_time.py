"""The user's local calendar: local days and quiet hours, correct across DST changes.

Pure functions of an instant (an aware UTC datetime) and an IANA zone.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cache, lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

UTC = dt.UTC
_STEP = dt.timedelta(minutes=1)
_SECOND = dt.timedelta(seconds=1)
_MAX_GAP = dt.timedelta(hours=3)  # no DST gap in the tz database is longer
#: Files of the zone database that are not zones a user can live in: the host's own zone
#: ("localtime" is a link to it), the template of POSIX TZ rules, and the "-00" placeholder
#: of an unset zone.
_NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})


@cache
def _zone_names() -> frozenset[str]:
    """The IANA zone names (canonical and links) of the installed databases, read once
    (about 25 ms): the host's zoneinfo directory and the tzdata package, without the posix/
    and right/ copies and without _NOT_ZONES."""
    return frozenset(available_timezones()) - _NOT_ZONES


@lru_cache(maxsize=4096)
def zone(name: str) -> ZoneInfo | None:
    """The zone of this IANA name, or None when it is not a known zone."""
    if name not in _zone_names():
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


def _gap_end(before: dt.datetime, after: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    """The instant of the transition between `before` (UTC, with the offset from before a DST
    gap) and `after` (with the offset from after it), to the second: where the clock jumps."""
    low, high = int(before.timestamp()), int(after.timestamp())
    offset = after.astimezone(tz).utcoffset()
    while high - low > 1:
        middle = (low + high) // 2
        if dt.datetime.fromtimestamp(middle, tz).utcoffset() == offset:
            high = middle
        else:
            low = middle
    return dt.datetime.fromtimestamp(high, UTC)


def _at_wall_time(day: dt.date, wall: dt.time, fold: int, tz: ZoneInfo) -> dt.datetime:
    """The instant (UTC) the local clock shows `wall` on `day`: with fold 0 the first of two
    (a DST fall-back repeats an hour), with fold 1 the second. Where DST skips the wall time,
    the instant the clock jumps past it, whatever the fold."""
    local = dt.datetime.combine(day, wall.replace(fold=fold), tz)
    instant = local.astimezone(UTC)
    if instant.astimezone(tz).replace(tzinfo=None) == local.replace(tzinfo=None):
        return instant
    # In a gap, fold 0 maps with the offset from before it (to past the gap), fold 1 with the
    # one from after it (to before the gap): the jump lies between the two.
    past = dt.datetime.combine(day, wall.replace(fold=0), tz).astimezone(UTC)
    early = dt.datetime.combine(day, wall.replace(fold=1), tz).astimezone(UTC)
    return _gap_end(early, past, tz)


def next_wall_time(now: dt.datetime, wall: dt.time, tz: ZoneInfo) -> dt.datetime:
    """The first instant (UTC) at or after `now` at which the local clock shows `wall`, or,
    where DST skips `wall`, jumps past it. On a fall-back night a wall time in the repeated
    hour comes twice, and which one is next depends on which pass of the hour `now` is in."""
    today = now.astimezone(tz).date()
    tomorrow = today + dt.timedelta(days=1)
    for day in (today, tomorrow):
        for fold in (0, 1):
            candidate = _at_wall_time(day, wall, fold, tz)
            if candidate >= now:
                return candidate
    # Unreachable: tomorrow's wall time is later than any instant of today.
    return _at_wall_time(tomorrow, wall, 1, tz)


@dataclass(frozen=True)
class QuietHours:
    """Whether an instant is inside the user's quiet hours, and when they end."""

    active: bool
    ends_at: dt.datetime | None  # UTC; set when active


def quiet_hours(now: dt.datetime, tz: ZoneInfo, start: dt.time, end: dt.time) -> QuietHours:
    """Quiet hours [start, end) in local wall time; start > end spans midnight; start == end
    means there are no quiet hours."""
    if start == end or not _in_quiet_hours(now, tz, start, end):
        return QuietHours(False, None)
    # They end the next time the local clock shows `end` (or jumps past it), which is never
    # before now: on a fall-back night, in the second pass of the repeated hour, today's first
    # `end` may already be over.
    ends_at = next_wall_time(now, end, tz)
    # A DST gap can skip all of [end, start) (quiet 02:40-02:10, clocks jumping from 02:00 to
    # 03:00): then they go on to the next `end`.
    for _ in range(2):
        if not _in_quiet_hours(ends_at, tz, start, end):
            break
        ends_at = next_wall_time(ends_at + _SECOND, end, tz)
    return QuietHours(True, ends_at)


def _in_quiet_hours(now: dt.datetime, tz: ZoneInfo, start: dt.time, end: dt.time) -> bool:
    wall = now.astimezone(tz).time().replace(tzinfo=None, fold=0)
    return start <= wall < end if start < end else (wall >= start or wall < end)


def utc_now() -> dt.datetime:
    """The server's clock, as an aware UTC datetime."""
    return dt.datetime.now(UTC)


def to_ms(instant: dt.datetime) -> int:
    """Milliseconds since the Unix epoch."""
    return int(instant.timestamp() * 1000)


def from_ms(ms: int) -> dt.datetime:
    """An aware UTC datetime from milliseconds since the Unix epoch."""
    return dt.datetime.fromtimestamp(ms / 1000, UTC)
