"""The stateless throttle rules and the arguments handed to decide.lua."""

import datetime as dt
import json
from zoneinfo import ZoneInfo

from nudge_server.local_time import to_ms
from nudge_server.model import (
    Arm,
    Campaign,
    Channel,
    Prompt,
    QuietHoursPolicy,
    Reason,
    ThrottlePolicy,
)
from nudge_server.throttle import (
    Candidate,
    build_call,
    deliver_time,
    in_holdout,
    push_back_from_quiet_hours,
    request_fingerprint,
    screen,
)

UTC = dt.UTC
TOKYO = ZoneInfo("Asia/Tokyo")
NIGHT = dt.datetime(2026, 6, 1, 14, 30, tzinfo=UTC)  # 23:30 JST
DAY = dt.datetime(2026, 6, 1, 3, 0, tzinfo=UTC)  # 12:00 JST
QUIET_END = dt.datetime(2026, 6, 1, 23, 0, tzinfo=UTC)  # 08:00 JST


def campaign(cid: str, **kwargs: object) -> Campaign:
    return Campaign(
        app_id="app",
        campaign_id=cid,
        arms=(Arm("a", Prompt()),),
        trigger_events=frozenset({"e"}),
        **kwargs,
    )  # type: ignore[arg-type]


def run(campaigns: tuple[Campaign, ...], now: dt.datetime, user: str = "u"):  # type: ignore[no-untyped-def]
    return screen(campaigns, app_id="app", user_id=user, now=now, tz=TOKYO, policy=ThrottlePolicy())


def test_no_campaign_means_no_eligible_campaign() -> None:
    assert run((), DAY).reason is Reason.NO_ELIGIBLE_CAMPAIGN


def test_quiet_hours_block_in_app_defer_push_and_drop_when_asked() -> None:
    in_app = run((campaign("c"),), NIGHT)
    assert in_app.reason is Reason.QUIET_HOURS and in_app.reason_next == QUIET_END
    deferred = run((campaign("p", channel=Channel.PUSH),), NIGHT)
    assert deferred.eligible[0].not_before == QUIET_END
    dropped = run(
        (campaign("p", channel=Channel.PUSH, quiet_hours_policy=QuietHoursPolicy.DROP),), NIGHT
    )
    assert dropped.reason is Reason.QUIET_HOURS and dropped.reason_campaign == "p"
    assert run((campaign("c"),), DAY).eligible[0].not_before is None


def test_holdout_is_sticky_and_close_to_its_share() -> None:
    held = [in_holdout("app", "c", f"user-{i}", 0.2) for i in range(10_000)]
    assert 0.18 < sum(held) / len(held) < 0.22
    assert held == [in_holdout("app", "c", f"user-{i}", 0.2) for i in range(10_000)]
    assert not any(in_holdout("app", "c", f"user-{i}", 0.0) for i in range(1000))
    # Independent across campaigns.
    other = [in_holdout("app", "d", f"user-{i}", 0.2) for i in range(10_000)]
    assert held != other


def test_the_first_campaigns_reason_explains_an_empty_screening() -> None:
    users = [f"user-{i}" for i in range(200)]
    user = next(u for u in users if in_holdout("app", "held", u, 0.5))
    result = run((campaign("held", holdout_share=0.5), campaign("later")), NIGHT, user)
    assert result.reason is Reason.HOLDOUT and result.reason_campaign == "held"


def test_deliver_time_takes_the_later_of_delay_and_quiet_end() -> None:
    arm = Arm("a", Prompt(), delay_s=600)
    assert deliver_time(DAY, arm, None) == DAY + dt.timedelta(minutes=10)
    assert deliver_time(NIGHT, arm, QUIET_END) == QUIET_END
    assert deliver_time(DAY, Arm("now", Prompt()), None) is None


def test_next_eligible_in_quiet_hours_moves_to_their_end() -> None:
    policy = ThrottlePolicy()
    assert push_back_from_quiet_hours(NIGHT, TOKYO, policy) == QUIET_END
    assert push_back_from_quiet_hours(DAY, TOKYO, policy) == DAY
    assert push_back_from_quiet_hours(None, TOKYO, policy) is None


def test_build_call_keys_share_one_hash_tag_and_carry_the_candidates() -> None:
    c = campaign("c", cap_per_day=2, cap_lifetime=5, cap_min_interval_s=60)
    screening = run((c,), DAY)
    deferred = DAY + dt.timedelta(hours=20)  # 08:00 JST the next day
    call = build_call(
        app_id="app",
        user_id="u{weird}",
        decision_id="d",
        client_request_id="r",
        fingerprint="f",
        now=DAY,
        tz=TOKYO,
        policy=ThrottlePolicy(),
        channel=Channel.IN_APP,
        candidates=[Candidate(c, c.arms[0], 0.25, None), Candidate(c, c.arms[0], 0.5, deferred)],
        screening=screening,
    )
    tags = {key[key.index("{") : key.index("}") + 1] for key in call.keys}
    assert len(tags) == 1 and "weird" not in next(iter(tags))
    # The local day of the request: 2026-06-01 in Tokyo is [15:00 UTC the day before, 15:00).
    day_start = dt.datetime(2026, 5, 31, 15, 0, tzinfo=UTC)
    assert call.args[1:3] == (to_ms(day_start), to_ms(day_start + dt.timedelta(days=1)))
    first, second = json.loads(call.args[8])
    assert first == {
        "c": "c",
        "a": "a",
        "pd": 2,
        "lt": 5,
        "mi": 60_000,
        "p": 0.25,
        "da": 0,
        "aw": 7 * 86400 * 1000,
        "m": "tap",
        "ds": 0,
        "de": 0,
    }
    # A push deferred into the next local day carries that day's bounds.
    assert (second["da"], second["ds"], second["de"]) == (
        to_ms(deferred),
        to_ms(day_start + dt.timedelta(days=1)),
        to_ms(day_start + dt.timedelta(days=2)),
    )
    assert json.loads(call.args[9])["fp"] == "f"


def test_the_request_fingerprint_changes_with_the_event_channel_and_zone() -> None:
    base = request_fingerprint("opened", Channel.IN_APP, "Asia/Tokyo")
    assert base == request_fingerprint("opened", Channel.IN_APP, "Asia/Tokyo")
    assert base != request_fingerprint("closed", Channel.IN_APP, "Asia/Tokyo")
    assert base != request_fingerprint("opened", Channel.PUSH, "Asia/Tokyo")
    assert base != request_fingerprint("opened", Channel.IN_APP, "UTC")
