"""decide.lua and outcome.lua against a real Redis: caps, intervals, backoff, idempotency, TTLs."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections import Counter
from zoneinfo import ZoneInfo

import pytest
import redis.asyncio as aioredis
from nudge_server.local_time import to_ms
from nudge_server.model import Arm, Campaign, Channel, Prompt, Reason, ThrottlePolicy
from nudge_server.settings import RedisSettings
from nudge_server.throttle import Candidate, Verdict, build_call, request_fingerprint, screen
from nudge_server.throttle_store import ThrottleStore

UTC = dt.UTC
TOKYO = ZoneInfo("Asia/Tokyo")
LA = ZoneInfo("America/Los_Angeles")
# 10:00 in Tokyo, outside the default quiet hours.
MORNING = dt.datetime(2026, 6, 1, 1, 0, tzinfo=UTC)
DEFAULT_POLICY = ThrottlePolicy()


def campaign(campaign_id: str = "welcome", **kwargs: object) -> Campaign:
    return Campaign(
        app_id="app",
        campaign_id=campaign_id,
        arms=(Arm("a", Prompt(title="A")), Arm("b", Prompt(title="B"))),
        trigger_events=frozenset({"opened"}),
        **kwargs,  # type: ignore[arg-type]
    )


def store_for(client: aioredis.Redis) -> ThrottleStore:
    return ThrottleStore(client, RedisSettings(decision_timeout_s=2.0))


async def decide(
    store: ThrottleStore,
    now: dt.datetime,
    *,
    campaigns: tuple[Campaign, ...] = (campaign(),),
    policy: ThrottlePolicy = DEFAULT_POLICY,
    user: str = "u1",
    tz: ZoneInfo = TOKYO,
    request_id: str = "",
    channel: Channel = Channel.IN_APP,
) -> Verdict:
    screening = screen(campaigns, app_id="app", user_id=user, now=now, tz=tz, policy=policy)
    candidates = [
        Candidate(e.campaign, e.campaign.arms[0], 0.5, e.not_before) for e in screening.eligible
    ]
    call = build_call(
        app_id="app",
        user_id=user,
        decision_id=str(uuid.uuid4()),
        client_request_id=request_id,
        fingerprint=request_fingerprint("opened", channel, tz.key),
        now=now,
        tz=tz,
        policy=policy,
        channel=channel,
        candidates=candidates,
        screening=screening,
    )
    return await store.decide(call)


async def test_five_calls_in_one_day_grant_three_and_say_why(
    redis_client: aioredis.Redis,
) -> None:
    store = store_for(redis_client)
    verdicts = [await decide(store, MORNING + dt.timedelta(hours=2 * i)) for i in range(5)]
    reasons = [v.reason for v in verdicts]
    assert reasons == [Reason.OK] * 3 + [Reason.DAILY_CAP] * 2
    # The next local day in Tokyo starts at 15:00 UTC.
    assert verdicts[3].next_eligible_at == dt.datetime(2026, 6, 1, 15, 0, tzinfo=UTC)
    # The day after, the user is eligible again.
    assert (await decide(store, dt.datetime(2026, 6, 1, 23, 0, tzinfo=UTC))).show


async def test_minimum_interval_says_cooldown_with_the_time_it_ends(
    redis_client: aioredis.Redis,
) -> None:
    store = store_for(redis_client)
    assert (await decide(store, MORNING)).show
    second = await decide(store, MORNING + dt.timedelta(minutes=10))
    assert second.reason is Reason.COOLDOWN
    assert second.next_eligible_at == MORNING + dt.timedelta(hours=1)
    assert (await decide(store, MORNING + dt.timedelta(hours=1))).show


async def test_fifty_concurrent_decides_grant_exactly_the_cap(
    redis_client: aioredis.Redis,
) -> None:
    store = store_for(redis_client)
    policy = ThrottlePolicy(min_interval_s=0)
    verdicts = await asyncio.gather(*(decide(store, MORNING, policy=policy) for _ in range(50)))
    counts = Counter(v.reason for v in verdicts)
    assert counts == {Reason.OK: 3, Reason.DAILY_CAP: 47}


async def test_a_retried_request_returns_the_same_decision_and_counts_once(
    redis_client: aioredis.Redis,
) -> None:
    store = store_for(redis_client)
    policy = ThrottlePolicy(min_interval_s=0, daily_cap=2)
    first = await decide(store, MORNING, policy=policy, request_id="r-1")
    again = await decide(store, MORNING, policy=policy, request_id="r-1")
    assert again.replayed and not first.replayed
    assert again.decision_id == first.decision_id and again.reason is Reason.OK
    # Only one prompt was counted: one more fits under the cap of 2.
    assert (await decide(store, MORNING, policy=policy, request_id="r-2")).show
    assert (await decide(store, MORNING, policy=policy, request_id="r-3")).reason is (
        Reason.DAILY_CAP
    )


async def test_dismissals_double_the_interval_and_a_tap_resets_it(
    redis_client: aioredis.Redis,
) -> None:
    store = store_for(redis_client)
    policy = ThrottlePolicy(daily_cap=100)
    now = MORNING
    granted = await decide(store, now, policy=policy)
    effect = await store.record_outcome("app", "u1", granted.decision_id, "dismiss", to_ms(now))
    assert effect.status == "ok" and effect.pull and not effect.reward
    # One negative response: the interval is 2 h; at 1.5 h the reason is backoff.
    blocked = await decide(store, now + dt.timedelta(minutes=90), policy=policy)
    assert blocked.reason is Reason.BACKOFF
    assert blocked.next_eligible_at == now + dt.timedelta(hours=2)
    now += dt.timedelta(hours=2)
    second = await decide(store, now, policy=policy)
    assert second.show
    await store.record_outcome("app", "u1", second.decision_id, "dismiss", to_ms(now))
    assert (await decide(store, now + dt.timedelta(hours=3), policy=policy)).reason is (
        Reason.BACKOFF
    )
    now += dt.timedelta(hours=4)
    third = await decide(store, now, policy=policy)
    assert third.show
    tap = await store.record_outcome("app", "u1", third.decision_id, "tap", to_ms(now))
    assert tap.reward and tap.pull
    # Reset: back to the one-hour minimum interval.
    assert (await decide(store, now + dt.timedelta(hours=1), policy=policy)).show


async def test_outcomes_count_once_and_respect_the_attribution_window(
    redis_client: aioredis.Redis,
) -> None:
    store = store_for(redis_client)
    granted = await decide(store, MORNING, campaigns=(campaign(attribution_window_s=3600),))
    at = to_ms(MORNING)
    assert (await store.record_outcome("app", "u1", granted.decision_id, "impression", at)).pull
    duplicate = await store.record_outcome("app", "u1", granted.decision_id, "impression", at)
    assert duplicate.status == "duplicate"
    late = await store.record_outcome("app", "u1", granted.decision_id, "tap", at + 2 * 3600 * 1000)
    assert late.status == "ok" and late.late and not late.reward and not late.pull
    early = await store.record_outcome("app", "u1", granted.decision_id, "dismiss", at - 1000)
    assert early.status == "early"
    other_user = await store.record_outcome("app", "u2", granted.decision_id, "tap", at)
    assert other_user.status == "missing"


async def test_campaign_caps_fall_through_to_the_next_candidate(
    redis_client: aioredis.Redis,
) -> None:
    store = store_for(redis_client)
    policy = ThrottlePolicy(min_interval_s=0, daily_cap=10)
    once = campaign("once", cap_lifetime=1, priority=2)
    daily = campaign("daily", cap_per_day=1, priority=1)
    spaced = campaign("spaced", cap_min_interval_s=3600)
    both = (once, daily, spaced)
    first = await decide(store, MORNING, campaigns=both, policy=policy)
    second = await decide(store, MORNING, campaigns=both, policy=policy)
    third = await decide(store, MORNING, campaigns=both, policy=policy)
    fourth = await decide(store, MORNING, campaigns=both, policy=policy)
    assert [v.campaign_id for v in (first, second, third)] == ["once", "daily", "spaced"]
    assert fourth.reason is Reason.CAMPAIGN_CAP and fourth.campaign_id == "once"
    # The earliest any campaign comes back: "spaced", one hour later.
    assert fourth.next_eligible_at == MORNING + dt.timedelta(hours=1)
    later = await decide(store, MORNING + dt.timedelta(hours=1), campaigns=both, policy=policy)
    assert later.campaign_id == "spaced"


async def test_daily_cap_follows_the_local_day_in_los_angeles(
    redis_client: aioredis.Redis,
) -> None:
    store = store_for(redis_client)
    policy = ThrottlePolicy(
        min_interval_s=0, daily_cap=1, quiet_start=dt.time(0), quiet_end=dt.time(0)
    )
    # 17:00 and 23:30 PDT on 2026-06-01 are on different UTC days but the same local day.
    evening = dt.datetime(2026, 6, 2, 0, 0, tzinfo=UTC)
    assert (await decide(store, evening, policy=policy, tz=LA)).show
    late = await decide(store, evening + dt.timedelta(hours=6, minutes=30), policy=policy, tz=LA)
    assert late.reason is Reason.DAILY_CAP
    assert late.next_eligible_at == dt.datetime(2026, 6, 2, 7, 0, tzinfo=UTC)
    assert (await decide(store, evening + dt.timedelta(hours=7), policy=policy, tz=LA)).show


async def test_channel_cap(redis_client: aioredis.Redis) -> None:
    store = store_for(redis_client)
    policy = ThrottlePolicy(min_interval_s=0, channel_daily_caps={Channel.PUSH: 1})
    push = (campaign(channel=Channel.PUSH),)
    assert (await decide(store, MORNING, campaigns=push, policy=policy, channel=Channel.PUSH)).show
    blocked = await decide(store, MORNING, campaigns=push, policy=policy, channel=Channel.PUSH)
    assert blocked.reason is Reason.CHANNEL_CAP
    assert (await decide(store, MORNING, policy=policy)).show  # in-app is not capped


async def test_many_dismissals_snooze_and_shrink_the_cap(redis_client: aioredis.Redis) -> None:
    store = store_for(redis_client)
    policy = ThrottlePolicy(
        min_interval_s=60,
        backoff_factor=1.0,
        snooze_after=3,
        backoff_ceiling_s=86400,
        daily_cap=100,
    )
    now = MORNING
    for _ in range(3):
        granted = await decide(store, now, policy=policy)
        assert granted.show
        await store.record_outcome("app", "u1", granted.decision_id, "dismiss", to_ms(now))
        now += dt.timedelta(minutes=2)
    snoozed = await decide(store, now, policy=policy)
    assert snoozed.reason is Reason.SNOOZED
    assert snoozed.next_eligible_at == now - dt.timedelta(minutes=2) + dt.timedelta(days=1)


async def test_adaptive_suppression_scales_the_cap_down(redis_client: aioredis.Redis) -> None:
    store = store_for(redis_client)
    policy = ThrottlePolicy(min_interval_s=0, daily_cap=4, snooze_after=-1, backoff_factor=1.0)
    for _ in range(2):
        granted = await decide(store, MORNING, policy=policy)
        assert granted.show
        await store.record_outcome("app", "u1", granted.decision_id, "dismiss", to_ms(MORNING))
    # Responsiveness fell from 0.5 to 0.5 * 0.7^2 = 0.245: the cap of 4 is now 2, used up.
    third = await decide(store, MORNING, policy=policy)
    assert third.reason is Reason.DAILY_CAP
    # Another user dismisses, then taps: the tap lifts responsiveness (to 0.545), full cap.
    fresh = await decide(store, MORNING, user="u2", policy=policy)
    await store.record_outcome("app", "u2", fresh.decision_id, "dismiss", to_ms(MORNING))
    await store.record_outcome("app", "u2", fresh.decision_id, "tap", to_ms(MORNING))
    assert [(await decide(store, MORNING, user="u2", policy=policy)).show for _ in range(4)] == [
        True,
        True,
        True,
        False,
    ]


async def test_every_key_has_a_ttl(redis_client: aioredis.Redis) -> None:
    store = store_for(redis_client)
    granted = await decide(store, MORNING, request_id="with-id")
    effect = await store.record_outcome("app", "u1", granted.decision_id, "tap", to_ms(MORNING))
    await store.learn("app", granted.decision_id, effect)
    keys = [key async for key in redis_client.scan_iter("*")]
    assert len(keys) >= 6
    for key in keys:
        assert await redis_client.ttl(key) > 0, key


async def test_holdout_and_quiet_hours_are_explained(redis_client: aioredis.Redis) -> None:
    store = store_for(redis_client)
    held = (campaign(holdout_share=0.5),)
    reasons = Counter()
    for i in range(40):
        reasons[(await decide(store, MORNING, campaigns=held, user=f"user-{i}")).reason] += 1
    assert reasons[Reason.HOLDOUT] > 5 and reasons[Reason.OK] > 5
    night = dt.datetime(2026, 6, 1, 14, 30, tzinfo=UTC)  # 23:30 in Tokyo
    quiet = await decide(store, night, user="night-owl")
    assert quiet.reason is Reason.QUIET_HOURS
    assert quiet.next_eligible_at == dt.datetime(2026, 6, 1, 23, 0, tzinfo=UTC)  # 08:00 JST
    push = await decide(
        store,
        night,
        user="night-owl",
        channel=Channel.PUSH,
        campaigns=(campaign(channel=Channel.PUSH),),
    )
    assert push.show and push.deliver_at == dt.datetime(2026, 6, 1, 23, 0, tzinfo=UTC)


async def test_learning_is_idempotent_across_retries(redis_client: aioredis.Redis) -> None:
    store = store_for(redis_client)
    granted = await decide(store, MORNING)
    at = to_ms(MORNING)
    first = await store.record_outcome("app", "u1", granted.decision_id, "tap", at)
    assert first.status == "ok" and first.pull and first.reward
    await store.learn("app", granted.decision_id, first)
    # A retry after a crash: Redis says duplicate and repeats what the first report counted.
    retry = await store.record_outcome("app", "u1", granted.decision_id, "tap", at)
    assert retry.status == "duplicate" and retry.pull and retry.reward
    await store.learn("app", granted.decision_id, retry)
    await store.learn("app", granted.decision_id, retry)
    stats = await redis_client.hgetall("nudge:arms:{app:welcome}")
    assert stats == {b"a:n": b"1", b"a:r": b"1"}


async def test_an_ignore_is_negative_unless_the_user_responded(
    redis_client: aioredis.Redis,
) -> None:
    store = store_for(redis_client)
    policy = ThrottlePolicy(daily_cap=10)
    granted = await decide(store, MORNING, policy=policy)
    ignored = await store.record_outcome(
        "app", "u1", granted.decision_id, "ignore", to_ms(MORNING) + 1800_000
    )
    assert ignored.status == "ok" and ignored.pull and not ignored.reward
    later = await decide(store, MORNING + dt.timedelta(minutes=90), policy=policy)
    assert later.reason is Reason.BACKOFF
    tapped = await decide(store, MORNING, policy=policy, user="u2")
    tap = await store.record_outcome("app", "u2", tapped.decision_id, "tap", to_ms(MORNING))
    assert tap.status == "ok"
    late_ignore = await store.record_outcome(
        "app", "u2", tapped.decision_id, "ignore", to_ms(MORNING) + 3600_000
    )
    assert late_ignore.status == "responded"


async def test_switching_time_zones_never_opens_a_fresh_day_early(
    redis_client: aioredis.Redis,
) -> None:
    store = store_for(redis_client)
    policy = ThrottlePolicy(min_interval_s=0, quiet_start=dt.time(0), quiet_end=dt.time(0))
    # 11:00 UTC: 01:00 the next day in Kiritimati (UTC+14), 11:00 today in UTC.
    now = dt.datetime(2026, 6, 1, 11, 0, tzinfo=UTC)
    granted = 0
    for zone_name in ["Pacific/Kiritimati"] * 6 + ["UTC"] * 6 + ["Etc/GMT+12"] * 6:
        verdict = await decide(store, now, policy=policy, tz=ZoneInfo(zone_name))
        granted += verdict.show
        now += dt.timedelta(seconds=1)
    assert granted == 3
    # The day pinned by the first call is Kiritimati's: it ends at its midnight, 10:00 UTC.
    nxt = await decide(store, now, policy=policy, tz=ZoneInfo("UTC"))
    assert nxt.reason is Reason.DAILY_CAP
    assert nxt.next_eligible_at == dt.datetime(2026, 6, 2, 10, 0, tzinfo=UTC)


async def test_never_more_than_two_days_of_prompts_in_24_hours(
    redis_client: aioredis.Redis,
) -> None:
    store = store_for(redis_client)
    policy = ThrottlePolicy(
        min_interval_s=0, daily_cap=2, quiet_start=dt.time(0), quiet_end=dt.time(0)
    )

    async def at(hour: int, zone_name: str) -> Verdict:
        when = dt.datetime(2026, 6, 1, hour, 0, tzinfo=UTC)
        return await decide(store, when, policy=policy, tz=ZoneInfo(zone_name))

    # Each zone's day ends an hour later: UTC+13 at 11:00, UTC+12 at 12:00, UTC+11 at 13:00.
    assert [(await at(10, "Etc/GMT-13")).show for _ in range(3)] == [True, True, False]
    assert [(await at(11, "Etc/GMT-12")).show for _ in range(3)] == [True, True, False]
    blocked = await at(12, "Etc/GMT-11")
    assert blocked.reason is Reason.DAILY_CAP
    assert blocked.next_eligible_at == dt.datetime(2026, 6, 2, 10, 0, tzinfo=UTC)


async def test_deferred_pushes_count_against_the_day_and_interval_they_are_delivered_in(
    redis_client: aioredis.Redis,
) -> None:
    store = store_for(redis_client)
    push = (campaign(channel=Channel.PUSH),)
    utc = ZoneInfo("UTC")
    night = [dt.datetime(2026, 12, 10, 22, m, tzinfo=UTC) for m in (10, 15, 20)] + [
        dt.datetime(2026, 12, 11, 0, 0, tzinfo=UTC),
        dt.datetime(2026, 12, 11, 2, 30, tzinfo=UTC),
    ]
    morning = dt.datetime(2026, 12, 11, 8, 0, tzinfo=UTC)
    # With the one-hour interval, only one push may land at 08:00.
    spaced = [await decide(store, t, campaigns=push, tz=utc, channel=Channel.PUSH) for t in night]
    assert [v.show for v in spaced] == [True, False, False, False, False]
    assert spaced[0].deliver_at == morning and spaced[1].reason is Reason.COOLDOWN
    # Without an interval, the delivery day's cap (3) holds, and counts the morning's prompts.
    loose = ThrottlePolicy(min_interval_s=0)
    pushes = [
        await decide(
            store, t, campaigns=push, tz=utc, channel=Channel.PUSH, policy=loose, user="u2"
        )
        for t in night
    ]
    assert sum(v.show for v in pushes) == 3
    assert all(v.deliver_at == morning for v in pushes if v.show)
    in_app = await decide(store, morning + dt.timedelta(hours=1), tz=utc, policy=loose, user="u2")
    assert in_app.reason is Reason.DAILY_CAP


async def test_a_request_id_reused_for_another_request_is_refused(
    redis_client: aioredis.Redis,
) -> None:
    from nudge_server.errors import FailedPrecondition

    store = store_for(redis_client)
    first = await decide(store, MORNING, request_id="same")
    assert first.show and first.channel is Channel.IN_APP
    with pytest.raises(FailedPrecondition, match="client_request_id"):
        await decide(
            store,
            MORNING,
            request_id="same",
            channel=Channel.PUSH,
            campaigns=(campaign(channel=Channel.PUSH),),
        )
    again = await decide(store, MORNING, request_id="same")
    assert again.replayed and again.decision_id == first.decision_id


async def test_the_attribution_window_of_a_delayed_push_starts_at_delivery(
    redis_client: aioredis.Redis,
) -> None:
    store = store_for(redis_client)
    delayed = Campaign(
        app_id="app",
        campaign_id="later",
        arms=(Arm("in-10s", Prompt(title="Hi"), delay_s=10),),
        trigger_events=frozenset({"opened"}),
        channel=Channel.PUSH,
        attribution_window_s=5,
    )
    screening = screen(
        (delayed,), app_id="app", user_id="u", now=MORNING, tz=TOKYO, policy=DEFAULT_POLICY
    )
    deliver_at = MORNING + dt.timedelta(seconds=10)
    call = build_call(
        app_id="app",
        user_id="u",
        decision_id=str(uuid.uuid4()),
        client_request_id="",
        fingerprint="f",
        now=MORNING,
        tz=TOKYO,
        policy=DEFAULT_POLICY,
        channel=Channel.PUSH,
        candidates=[Candidate(delayed, delayed.arms[0], 1.0, deliver_at)],
        screening=screening,
    )
    granted = await store.decide(call)
    assert granted.show and granted.deliver_at == deliver_at
    before = await store.record_outcome(
        "app", "u", granted.decision_id, "tap", to_ms(MORNING + dt.timedelta(seconds=5))
    )
    assert before.status == "early"
    tap = await store.record_outcome(
        "app", "u", granted.decision_id, "tap", to_ms(deliver_at + dt.timedelta(seconds=3))
    )
    assert tap.status == "ok" and tap.reward
    ttl = await redis_client.ttl(call.keys[3])
    assert ttl >= 10 + 86400  # the delay plus the (longer) response window, 24 h for a push
