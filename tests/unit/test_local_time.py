"""Local days and quiet hours across DST changes and midnight."""

import datetime as dt
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


def test_millisecond_round_trip() -> None:
    t = dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert from_ms(to_ms(t)) == t
