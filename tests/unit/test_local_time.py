"""Local days and quiet hours across DST changes and midnight."""

import datetime as dt
import time
from zoneinfo import ZoneInfo

import pytest
from nudge_server.local_time import first_instant_of, from_ms, local_day, quiet_hours, to_ms, zone

UTC = dt.UTC
LA = ZoneInfo("America/Los_Angeles")
SANTIAGO = ZoneInfo("America/Santiago")
BERLIN = ZoneInfo("Europe/Berlin")
QUIET = (dt.time(22, 0), dt.time(8, 0))


def local(tz: ZoneInfo, *args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=tz).astimezone(UTC)


def test_los_angeles_evening_belongs_to_the_local_day_not_the_utc_one() -> None:
    # 21:00 PST on 2026-01-15 is already 2026-01-16 in UTC.
    now = local(LA, 2026, 1, 15, 21, 0)
    assert now.date() == dt.date(2026, 1, 16)
    day = local_day(now, LA)
    assert day.day_id == "2026-01-15"
    assert day.ends_at == dt.datetime(2026, 1, 16, 8, 0, tzinfo=UTC)  # local midnight, PST


def test_los_angeles_spring_forward_day_is_23_hours() -> None:
    day = local_day(local(LA, 2026, 3, 8, 20, 0), LA)
    assert day.day_id == "2026-03-08"
    start = first_instant_of(dt.date(2026, 3, 8), LA)
    assert day.ends_at - start == dt.timedelta(hours=23)
    assert day.ends_at == dt.datetime(2026, 3, 9, 7, 0, tzinfo=UTC)  # midnight PDT


def test_los_angeles_fall_back_day_is_25_hours() -> None:
    day = local_day(local(LA, 2026, 11, 1, 23, 30), LA)
    assert day.day_id == "2026-11-01"
    assert day.ends_at - first_instant_of(dt.date(2026, 11, 1), LA) == dt.timedelta(hours=25)


def test_skipped_midnight_the_day_starts_at_one_in_the_morning() -> None:
    # Chile springs forward at 24:00 on 2026-09-05: 2026-09-06 00:00 never happens.
    start = first_instant_of(dt.date(2026, 9, 6), SANTIAGO)
    assert start == dt.datetime(2026, 9, 6, 4, 0, tzinfo=UTC)
    assert start.astimezone(SANTIAGO).time() == dt.time(1, 0)
    assert (start - dt.timedelta(seconds=1)).astimezone(SANTIAGO).date() == dt.date(2026, 9, 5)
    day = local_day(local(SANTIAGO, 2026, 9, 5, 23, 59), SANTIAGO)
    assert day.day_id == "2026-09-05" and day.ends_at == start
    # The short day itself has 23 hours.
    after = local_day(start, SANTIAGO)
    assert after.day_id == "2026-09-06"
    assert after.ends_at - start == dt.timedelta(hours=23)


@pytest.mark.parametrize(
    ("wall", "active", "ends"),
    [
        ((2026, 6, 1, 23, 30), True, (2026, 6, 2, 8, 0)),
        ((2026, 6, 2, 7, 59), True, (2026, 6, 2, 8, 0)),
        ((2026, 6, 2, 8, 0), False, None),
        ((2026, 6, 1, 21, 59), False, None),
        ((2026, 6, 1, 22, 0), True, (2026, 6, 2, 8, 0)),
        ((2026, 6, 2, 0, 0), True, (2026, 6, 2, 8, 0)),
    ],
)
def test_quiet_hours_spanning_midnight(
    wall: tuple[int, ...], active: bool, ends: tuple[int, ...] | None
) -> None:
    q = quiet_hours(local(BERLIN, *wall), BERLIN, *QUIET)
    assert q.active is active
    assert q.ends_at == (local(BERLIN, *ends) if ends else None)


def test_quiet_hours_within_one_day() -> None:
    start, end = dt.time(13, 0), dt.time(14, 30)
    assert quiet_hours(local(BERLIN, 2026, 6, 1, 13, 0), BERLIN, start, end).active
    assert not quiet_hours(local(BERLIN, 2026, 6, 1, 14, 30), BERLIN, start, end).active
    assert not quiet_hours(local(BERLIN, 2026, 6, 1, 23, 0), BERLIN, start, end).active


def test_equal_start_and_end_means_no_quiet_hours() -> None:
    t = dt.time(22, 0)
    for hour in range(24):
        assert not quiet_hours(local(BERLIN, 2026, 6, 1, hour, 0), BERLIN, t, t).active


def test_quiet_hours_ending_after_a_dst_change_end_at_local_eight() -> None:
    # The night of the spring-forward change in Los Angeles: 23:30 PST to 08:00 PDT.
    q = quiet_hours(local(LA, 2026, 3, 7, 23, 30), LA, *QUIET)
    assert q.active and q.ends_at == dt.datetime(2026, 3, 8, 15, 0, tzinfo=UTC)


def test_zone_names() -> None:
    assert zone("Asia/Tokyo") is not None
    for bad in ("", "Mars/Olympus", "../../etc/passwd", "/etc/localtime", "x" * 100):
        assert zone(bad) is None


@pytest.mark.parametrize(
    "name", ["localtime", "posixrules", "Factory", "right/UTC", "posix/Europe/Berlin", "Europe/"]
)
def test_files_of_the_zone_database_that_are_not_iana_zones_are_refused(name: str) -> None:
    # "localtime" would be the host's own zone; the others are copies or placeholders.
    assert zone(name) is None


@pytest.mark.parametrize("name", ["UTC", "Etc/UTC", "Europe/Berlin", "US/Pacific", "Europe/Kiev"])
def test_iana_names_and_links_are_zones(name: str) -> None:
    tz = zone(name)
    assert tz is not None and tz.key == name


def test_looking_up_a_zone_is_fast_once_the_names_are_read() -> None:
    zone("Europe/Berlin")
    started = time.perf_counter()
    for i in range(10_000):
        zone(f"Nowhere/{i}")  # not cached by lru_cache's hits: each is a set lookup
    assert time.perf_counter() - started < 0.5


# --- quiet hours on the nights the clocks change ------------------------------------------------
# Europe/Berlin: 2026-03-29 02:00 CET -> 03:00 CEST (01:00Z); 2026-10-25 03:00 CEST -> 02:00 CET
# (01:00Z). America/Los_Angeles: 2026-03-08 02:00 PST -> 03:00 PDT (10:00Z); 2026-11-01 02:00 PDT
# -> 01:00 PST (09:00Z).


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("tz", "end", "now", "ends_at"),
    [
        # Berlin fall-back, quiet 22:00-02:30. In the second pass of the repeated hour (02:10
        # CET) the 02:30 of the first pass (00:30Z) is over: they end at 02:30 CET.
        (BERLIN, dt.time(2, 30), utc(2026, 10, 25, 1, 10), utc(2026, 10, 25, 1, 30)),
        # In the first pass (02:10 CEST) they end at 02:30 CEST.
        (BERLIN, dt.time(2, 30), utc(2026, 10, 25, 0, 10), utc(2026, 10, 25, 0, 30)),
        # Before the change (01:00 CEST), the first 02:30 comes first.
        (BERLIN, dt.time(2, 30), utc(2026, 10, 24, 23, 0), utc(2026, 10, 25, 0, 30)),
        # The clock shows 02:00 again at 01:00Z: quiet hours again, until 02:30 CET.
        (BERLIN, dt.time(2, 30), utc(2026, 10, 25, 1, 0), utc(2026, 10, 25, 1, 30)),
        # Los Angeles fall-back, quiet 22:00-01:30: 01:10 PST (second pass) ends at 01:30 PST.
        (LA, dt.time(1, 30), utc(2026, 11, 1, 9, 10), utc(2026, 11, 1, 9, 30)),
        (LA, dt.time(1, 30), utc(2026, 11, 1, 8, 10), utc(2026, 11, 1, 8, 30)),
        # Spring-forward: 02:30 never happens; quiet hours end when the clock jumps past it.
        (BERLIN, dt.time(2, 30), utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 0)),
        (LA, dt.time(2, 30), utc(2026, 3, 8, 9, 30), utc(2026, 3, 8, 10, 0)),
        (LA, dt.time(2, 0), utc(2026, 3, 8, 9, 59, 59), utc(2026, 3, 8, 10, 0)),
    ],
)
def test_quiet_hours_ending_in_the_hour_the_clocks_change(
    tz: ZoneInfo, end: dt.time, now: dt.datetime, ends_at: dt.datetime
) -> None:
    q = quiet_hours(now, tz, dt.time(22, 0), end)
    assert q.active
    assert q.ends_at == ends_at


def test_between_the_two_passes_of_the_end_time_it_is_not_quiet() -> None:
    # 02:40 CEST: past the first 02:30, before the clock goes back to 02:00.
    assert not quiet_hours(utc(2026, 10, 25, 0, 40), BERLIN, dt.time(22, 0), dt.time(2, 30)).active


@pytest.mark.parametrize(
    ("tz", "night"),
    [
        (BERLIN, dt.date(2026, 3, 28)),
        (BERLIN, dt.date(2026, 10, 24)),
        (LA, dt.date(2026, 3, 7)),
        (LA, dt.date(2026, 10, 31)),
    ],
)
@pytest.mark.parametrize(
    ("start", "end"),
    [
        (dt.time(22, 0), dt.time(2, 30)),
        (dt.time(22, 0), dt.time(1, 30)),
        (dt.time(22, 0), dt.time(2, 0)),
        (dt.time(22, 0), dt.time(3, 0)),
        (dt.time(2, 15), dt.time(2, 45)),
        (dt.time(2, 40), dt.time(2, 10)),
    ],
)
def test_quiet_hours_last_exactly_until_they_end_on_dst_nights(
    tz: ZoneInfo, night: dt.date, start: dt.time, end: dt.time
) -> None:
    # Whenever quiet hours are active, they stay active up to the instant they are said to end,
    # and are over at that instant: the end is never in the past, nor later than needed.
    first = dt.datetime.combine(night, dt.time(20, 0), tz).astimezone(UTC)
    for step in range(0, 12 * 60, 5):
        now = first + dt.timedelta(minutes=step)
        q = quiet_hours(now, tz, start, end)
        if not q.active:
            continue
        assert q.ends_at is not None and q.ends_at > now
        assert not quiet_hours(q.ends_at, tz, start, end).active
        probe, stride = now, max(dt.timedelta(minutes=7), (q.ends_at - now) / 30)
        while probe < q.ends_at:
            assert quiet_hours(probe, tz, start, end).active, (now, probe, q.ends_at)
            probe += stride
        assert quiet_hours(q.ends_at - dt.timedelta(seconds=1), tz, start, end).active


def test_millisecond_round_trip() -> None:
    t = dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert from_ms(to_ms(t)) == t
