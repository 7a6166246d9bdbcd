"""Validation of configuration documents: defaults, bounds, enum forms, durations, round trips."""

from __future__ import annotations

import copy
import datetime as dt
import json
from typing import Any

import pytest
from google.protobuf import json_format
from nudge.v1 import admin_pb2, decision_pb2
from nudge_server.admin_api import campaign_to_proto
from nudge_server.config import (
    MAX_CAMPAIGN_BYTES,
    app_to_doc,
    campaign_size,
    campaign_to_doc,
    load_yaml,
    parse_app,
    parse_campaign,
    parse_document,
)
from nudge_server.errors import ConfigError
from nudge_server.model import (
    DAY,
    HOUR,
    Campaign,
    CampaignStatus,
    Channel,
    QuietHoursPolicy,
    RewardMetric,
)


def campaign_doc(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "app_id": "fit-app",
        "campaign_id": "streak",
        "trigger_events": ["workout_finished"],
        "arms": [
            {"arm_id": "a", "prompt": {"title": "Keep going", "body": "Day 3!"}},
            {"arm_id": "b", "prompt": {"title": "Nice", "body": "Streak!"}},
        ],
    }
    doc.update(overrides)
    return doc


def error_of(parse: Any, doc: object) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(doc)
    return info.value


# --- apps ----------------------------------------------------------------------------------


def test_minimal_app_gets_every_documented_default() -> None:
    app = parse_app({"app_id": "fit-app"})
    assert app.app_id == "fit-app"
    assert app.display_name == ""
    policy = app.policy
    assert policy.daily_cap == 3
    assert policy.min_interval_s == HOUR
    assert policy.backoff_factor == 2.0
    assert policy.backoff_ceiling_s == 7 * DAY
    assert policy.quiet_start == dt.time(22, 0)
    assert policy.quiet_end == dt.time(8, 0)
    assert dict(policy.channel_daily_caps) == {}
    assert policy.snooze_after == 8
    assert policy.adaptive is True


def test_zero_values_mean_the_defaults() -> None:
    policy = parse_app(
        {
            "app_id": "a",
            "policy": {
                "daily_cap": 0,
                "min_interval": 0,
                "backoff_factor": 0,
                "backoff_ceiling": "0s",
                "snooze_after": 0,
                "quiet_hours_start": "",
            },
        }
    ).policy
    assert policy.daily_cap == 3
    assert policy.min_interval_s == HOUR
    assert policy.backoff_factor == 2.0
    assert policy.backoff_ceiling_s == 7 * DAY
    assert policy.snooze_after == 8
    assert policy.quiet_start == dt.time(22, 0)


def test_full_policy_is_read() -> None:
    policy = parse_app(
        {
            "app_id": "a",
            "display_name": "Fit App",
            "policy": {
                "daily_cap": 5,
                "min_interval": "30m",
                "backoff_factor": 1.0,
                "backoff_ceiling": "2d",
                "quiet_hours_start": "23:30",
                "quiet_hours_end": "06:15",
                "channel_daily_caps": {"push": 2, "CHANNEL_EMAIL": 1},
                "snooze_after": -1,
                "disable_adaptive": True,
            },
        }
    ).policy
    assert policy.daily_cap == 5
    assert policy.min_interval_s == 1800
    assert policy.backoff_factor == 1.0
    assert policy.backoff_ceiling_s == 2 * DAY
    assert policy.quiet_start == dt.time(23, 30)
    assert policy.quiet_end == dt.time(6, 15)
    assert dict(policy.channel_daily_caps) == {Channel.PUSH: 2, Channel.EMAIL: 1}
    assert policy.snooze_after == -1
    assert policy.adaptive is False


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        ({}, "app_id"),
        ({"app_id": ""}, "app_id"),
        ({"app_id": "has space"}, "app_id"),
        ({"app_id": "x" * 65}, "app_id"),
        ({"app_id": 12}, "app_id"),
        ({"app_id": "a", "display_name": "bad\x00name"}, "display_name"),
        ({"app_id": "a", "display_name": "x" * 201}, "display_name"),
        ({"app_id": "a", "colour": "red"}, "colour"),
        ({"app_id": "a", "policy": []}, "policy"),
        ({"app_id": "a", "policy": {"dialy_cap": 3}}, "policy.dialy_cap"),
        ({"app_id": "a", "policy": {"daily_cap": -1}}, "policy.daily_cap"),
        ({"app_id": "a", "policy": {"daily_cap": 1001}}, "policy.daily_cap"),
        ({"app_id": "a", "policy": {"daily_cap": 2.5}}, "policy.daily_cap"),
        ({"app_id": "a", "policy": {"daily_cap": True}}, "policy.daily_cap"),
        ({"app_id": "a", "policy": {"daily_cap": "3"}}, "policy.daily_cap"),
        ({"app_id": "a", "policy": {"min_interval": "-5s"}}, "policy.min_interval"),
        ({"app_id": "a", "policy": {"min_interval": -5}}, "policy.min_interval"),
        ({"app_id": "a", "policy": {"min_interval": "5 minutes"}}, "policy.min_interval"),
        ({"app_id": "a", "policy": {"min_interval": "90"}}, "policy.min_interval"),
        ({"app_id": "a", "policy": {"min_interval": "4000d"}}, "policy.min_interval"),
        ({"app_id": "a", "policy": {"backoff_factor": 0.5}}, "policy.backoff_factor"),
        ({"app_id": "a", "policy": {"backoff_factor": 10.5}}, "policy.backoff_factor"),
        ({"app_id": "a", "policy": {"backoff_factor": -2}}, "policy.backoff_factor"),
        ({"app_id": "a", "policy": {"backoff_factor": "NaN"}}, "policy.backoff_factor"),
        ({"app_id": "a", "policy": {"backoff_factor": float("inf")}}, "policy.backoff_factor"),
        (
            {"app_id": "a", "policy": {"min_interval": "2d", "backoff_ceiling": "1d"}},
            "policy.backoff_ceiling",
        ),
        ({"app_id": "a", "policy": {"quiet_hours_start": "24:00"}}, "policy.quiet_hours_start"),
        ({"app_id": "a", "policy": {"quiet_hours_start": "7:00"}}, "policy.quiet_hours_start"),
        ({"app_id": "a", "policy": {"quiet_hours_end": "08:60"}}, "policy.quiet_hours_end"),
        ({"app_id": "a", "policy": {"quiet_hours_end": 1320}}, "policy.quiet_hours_end"),
        (
            {"app_id": "a", "policy": {"channel_daily_caps": {"sms": 1}}},
            "policy.channel_daily_caps.sms",
        ),
        (
            {"app_id": "a", "policy": {"channel_daily_caps": {"push": 0}}},
            "policy.channel_daily_caps.push",
        ),
        (
            {"app_id": "a", "policy": {"channel_daily_caps": {"push": 1, "CHANNEL_PUSH": 2}}},
            "policy.channel_daily_caps.CHANNEL_PUSH",
        ),
        (
            {"app_id": "a", "policy": {"channel_daily_caps": {"CHANNEL_UNSPECIFIED": 2}}},
            "policy.channel_daily_caps.CHANNEL_UNSPECIFIED",
        ),
        ({"app_id": "a", "policy": {"channel_daily_caps": [1]}}, "policy.channel_daily_caps"),
        ({"app_id": "a", "policy": {"snooze_after": -2}}, "policy.snooze_after"),
        ({"app_id": "a", "policy": {"disable_adaptive": "yes"}}, "policy.disable_adaptive"),
    ],
)
def test_invalid_app_names_the_field(doc: dict[str, Any], path: str) -> None:
    error = error_of(parse_app, doc)
    assert error.path == path
    assert error.message


def test_error_messages_say_what_is_allowed() -> None:
    error = error_of(parse_app, {"app_id": "a", "policy": {"daily_cap": 5000}})
    assert "between 0 and 1000" in error.message and "5000" in error.message
    error = error_of(parse_app, {"app_id": "a", "policy": {"quiet_hours_start": "25:00"}})
    assert "HH:MM" in error.message
    error = error_of(parse_app, {"app_id": "a", "policy": {"bogus": 1}})
    assert "allowed fields" in error.message and "daily_cap" in error.message
    assert str(error).startswith("policy.bogus: ")


def test_quiet_hours_bounds_are_accepted() -> None:
    policy = parse_app(
        {"app_id": "a", "policy": {"quiet_hours_start": "00:00", "quiet_hours_end": "23:59"}}
    ).policy
    assert (policy.quiet_start, policy.quiet_end) == (dt.time(0, 0), dt.time(23, 59))


def test_a_prefix_is_put_before_every_path() -> None:
    error = error_of(lambda d: parse_app(d, "app"), {"app_id": "a", "policy": {"daily_cap": -4}})
    assert error.path == "app.policy.daily_cap"


# --- durations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0),
        (90, 90),
        (90.0, 90),
        ("90s", 90),
        ("30m", 1800),
        ("1h", 3600),
        ("7d", 7 * DAY),
        ("1.5s", 2),  # rounded up to whole seconds
        ("1.500s", 2),
        ("0.000000001s", 1),
        ("1.5m", 90),
        ("1h30m", 5400),
        ("3600s", 3600),
    ],
)
def test_durations(value: object, seconds: int) -> None:
    campaign = parse_campaign(campaign_doc(arms=[{"arm_id": "a", "delay": value}]))
    assert campaign.arms[0].delay_s == seconds


@pytest.mark.parametrize("value", ["-1s", -1, "1x", "s", "", "1 h", True, [], {}, "1e3s"])
def test_invalid_durations(value: object) -> None:
    doc = campaign_doc(arms=[{"arm_id": "a", "delay": value}])
    error = error_of(parse_campaign, doc)
    assert error.path == "arms[0].delay"


# --- campaigns -----------------------------------------------------------------------------


def test_minimal_campaign_gets_every_documented_default() -> None:
    campaign = parse_campaign(campaign_doc())
    assert campaign.app_id == "fit-app"
    assert campaign.campaign_id == "streak"
    assert campaign.trigger_events == frozenset({"workout_finished"})
    assert campaign.status is CampaignStatus.ACTIVE
    assert campaign.channel is Channel.IN_APP
    assert campaign.priority == 0
    assert [a.arm_id for a in campaign.arms] == ["a", "b"]
    assert campaign.arms[0].prompt.title == "Keep going"
    assert campaign.arms[0].delay_s == 0
    assert (campaign.cap_per_day, campaign.cap_lifetime, campaign.cap_min_interval_s) == (0, 0, 0)
    assert campaign.holdout_share == 0.0
    assert campaign.reward_metric is RewardMetric.TAP
    assert campaign.attribution_window_s == 7 * DAY
    assert campaign.response_window_s == 0
    assert campaign.effective_response_window_s == 30 * 60
    assert campaign.quiet_hours_policy is QuietHoursPolicy.DEFER
    assert campaign.control_arm_id == ""
    assert campaign.exploration_floor == 0.05
    assert campaign.updated_at is None


def test_full_campaign_is_read() -> None:
    campaign = parse_campaign(
        campaign_doc(
            display_name="Streak nudges",
            status="paused",
            channel="push",
            priority=7,
            caps={"per_day": 1, "lifetime": 10, "min_interval": "12h"},
            holdout_share=0.1,
            reward_metric="conversion",
            attribution_window="3d",
            response_window="2h",
            quiet_hours_policy="drop",
            control_arm_id="b",
            exploration_floor=0.2,
            updated_at="2024-05-01T12:00:00.123456789Z",
        )
    )
    assert campaign.status is CampaignStatus.PAUSED
    assert campaign.channel is Channel.PUSH
    assert campaign.priority == 7
    assert (campaign.cap_per_day, campaign.cap_lifetime, campaign.cap_min_interval_s) == (
        1,
        10,
        12 * HOUR,
    )
    assert campaign.holdout_share == 0.1
    assert campaign.reward_metric is RewardMetric.CONVERSION
    assert campaign.attribution_window_s == 3 * DAY
    assert campaign.response_window_s == 2 * HOUR
    assert campaign.quiet_hours_policy is QuietHoursPolicy.DROP
    assert campaign.control_arm_id == "b"
    assert campaign.exploration_floor == 0.2
    assert campaign.updated_at == dt.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("channel", "push", Channel.PUSH),
        ("channel", "CHANNEL_PUSH", Channel.PUSH),
        ("channel", "in_app", Channel.IN_APP),
        ("channel", "CHANNEL_EMAIL", Channel.EMAIL),
        ("channel", "CHANNEL_UNSPECIFIED", Channel.IN_APP),
        ("channel", "Push", Channel.PUSH),
        ("status", "CAMPAIGN_STATUS_ARCHIVED", CampaignStatus.ARCHIVED),
        ("status", "active", CampaignStatus.ACTIVE),
        ("status", "CAMPAIGN_STATUS_UNSPECIFIED", CampaignStatus.ACTIVE),
        ("reward_metric", "REWARD_METRIC_CONVERSION", RewardMetric.CONVERSION),
        ("reward_metric", "REWARD_METRIC_UNSPECIFIED", RewardMetric.TAP),
        ("quiet_hours_policy", "defer", QuietHoursPolicy.DEFER),
        ("quiet_hours_policy", "QUIET_HOURS_POLICY_DROP", QuietHoursPolicy.DROP),
        ("quiet_hours_policy", "QUIET_HOURS_POLICY_UNSPECIFIED", QuietHoursPolicy.DEFER),
    ],
)
def test_enum_forms(field: str, value: str, expected: object) -> None:
    campaign = parse_campaign(campaign_doc(**{field: value}))
    assert getattr(campaign, field) is expected


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("channel", "sms"),
        ("channel", "CHANNEL_SMS"),
        ("channel", 2),
        ("status", "deleted"),
        ("status", "unspecified"),
        ("reward_metric", "click"),
        ("quiet_hours_policy", "skip"),
    ],
)
def test_invalid_enum_values(field: str, value: object) -> None:
    error = error_of(parse_campaign, campaign_doc(**{field: value}))
    assert error.path == field
    assert "must be one of" in error.message


def arms(n: int) -> list[dict[str, Any]]:
    return [{"arm_id": f"arm{i}"} for i in range(n)]


@pytest.mark.parametrize(
    ("overrides", "path"),
    [
        ({"app_id": None}, "app_id"),
        ({"campaign_id": "bad/id"}, "campaign_id"),
        ({"campaign_id": "x" * 65}, "campaign_id"),
        ({"display_name": "tab\there"}, "display_name"),
        ({"trigger_events": []}, "trigger_events"),
        ({"trigger_events": None}, "trigger_events"),
        ({"trigger_events": "workout_finished"}, "trigger_events"),
        ({"trigger_events": ["ok", ""]}, "trigger_events[1]"),
        ({"trigger_events": ["ok", "x" * 129]}, "trigger_events[1]"),
        ({"trigger_events": ["new\nline"]}, "trigger_events[0]"),
        ({"trigger_events": ["nul\x00"]}, "trigger_events[0]"),
        ({"trigger_events": [3]}, "trigger_events[0]"),
        ({"trigger_events": ["a", "b", "a"]}, "trigger_events[2]"),
        ({"arms": []}, "arms"),
        ({"arms": arms(201)}, "arms"),
        ({"arms": {"arm_id": "a"}}, "arms"),
        ({"arms": ["a"]}, "arms[0]"),
        ({"arms": [{"arm_id": "a"}, {"arm_id": "a"}]}, "arms[1].arm_id"),
        ({"arms": [{"arm_id": "a"}, {"prompt": {}}]}, "arms[1].arm_id"),
        ({"arms": [{"arm_id": "a", "weight": 2}]}, "arms[0].weight"),
        ({"arms": [{"arm_id": "a", "prompt": {"title": "x" * 201}}]}, "arms[0].prompt.title"),
        ({"arms": [{"arm_id": "a", "prompt": {"title": "a\nb"}}]}, "arms[0].prompt.title"),
        ({"arms": [{"arm_id": "a", "prompt": {"body": "x" * 2001}}]}, "arms[0].prompt.body"),
        ({"arms": [{"arm_id": "a", "prompt": {"body": "bell\x07"}}]}, "arms[0].prompt.body"),
        (
            {"arms": [{"arm_id": "a", "prompt": {"action_url": "x" * 2049}}]},
            "arms[0].prompt.action_url",
        ),
        (
            {"arms": [{"arm_id": "a", "prompt": {"data": {f"k{i}": "v" for i in range(33)}}}]},
            "arms[0].prompt.data",
        ),
        (
            {"arms": [{"arm_id": "a", "prompt": {"data": {"img": 3}}}]},
            "arms[0].prompt.data.img",
        ),
        (
            {"arms": [{"arm_id": "a", "prompt": {"data": {"img": "nul\x00"}}}]},
            "arms[0].prompt.data.img",
        ),
        ({"arms": [{"arm_id": "a", "prompt": {"icon": "x"}}]}, "arms[0].prompt.icon"),
        ({"arms": [{"arm_id": "a", "prompt": "hello"}]}, "arms[0].prompt"),
        ({"priority": 2**31}, "priority"),
        ({"priority": "high"}, "priority"),
        ({"caps": {"per_day": -1}}, "caps.per_day"),
        ({"caps": {"lifetime": -1}}, "caps.lifetime"),
        ({"caps": {"min_interval": "-1h"}}, "caps.min_interval"),
        ({"caps": {"per_week": 2}}, "caps.per_week"),
        ({"caps": []}, "caps"),
        ({"holdout_share": 0.51}, "holdout_share"),
        ({"holdout_share": -0.1}, "holdout_share"),
        ({"holdout_share": "Infinity"}, "holdout_share"),
        ({"exploration_floor": 0.005}, "exploration_floor"),
        ({"exploration_floor": 0.6}, "exploration_floor"),
        ({"exploration_floor": -0.1}, "exploration_floor"),
        ({"attribution_window": "-1d"}, "attribution_window"),
        ({"response_window": "soon"}, "response_window"),
        ({"control_arm_id": "c"}, "control_arm_id"),
        ({"control_arm_id": "bad id"}, "control_arm_id"),
        ({"updated_at": "yesterday"}, "updated_at"),
        ({"updated_at": "2024-05-01T12:00:00"}, "updated_at"),
        ({"targeting": {}}, "targeting"),
    ],
)
def test_invalid_campaign_names_the_field(overrides: dict[str, Any], path: str) -> None:
    error = error_of(parse_campaign, campaign_doc(**overrides))
    assert error.path == path
    assert error.message


def test_campaign_bounds_that_are_allowed() -> None:
    campaign = parse_campaign(
        campaign_doc(
            arms=arms(200),
            holdout_share=0.5,
            exploration_floor=0.01,
            trigger_events=["x" * 128, "with space"],
            priority=-(2**31),
        )
    )
    assert len(campaign.arms) == 200
    assert campaign.holdout_share == 0.5
    assert campaign.exploration_floor == 0.01
    assert "with space" in campaign.trigger_events
    assert campaign.priority == -(2**31)


def test_a_campaign_may_be_128_kib_as_json_and_no_more() -> None:
    def big(arm_count: int) -> dict[str, Any]:
        prompt = {"title": "t" * 200, "body": "b" * 2000, "action_url": "u" * 2048}
        return campaign_doc(
            arms=[{"arm_id": f"arm{i}", "prompt": prompt} for i in range(arm_count)]
        )

    fits = parse_campaign(big(30))
    assert campaign_size(fits) <= MAX_CAMPAIGN_BYTES == 128 * 1024
    error = error_of(lambda doc: parse_campaign(doc, "campaigns[3]"), big(40))
    assert error.path == "campaigns[3]"
    assert f"at most {MAX_CAMPAIGN_BYTES}" in error.message
    # Stored campaigns are read without the bound (written before it existed).
    assert len(parse_campaign(big(40), max_bytes=None).arms) == 40


def test_the_size_bound_keeps_a_campaign_message_under_the_request_limit() -> None:
    # The fattest campaign the field limits allow, cut to the size bound: as a protobuf
    # message (what GetCampaign answers and PutCampaign accepts) it is under 256 KiB.
    prompt = {
        "title": "t" * 200,
        "body": "\n" * 2000,
        "action_url": "u" * 2048,
        "data": {f"k{i}": "é" * 400 for i in range(32)},
    }
    arm_list = [{"arm_id": "arm0", "prompt": prompt}]
    campaign = parse_campaign(campaign_doc(arms=arm_list))
    while True:
        arm_list.append({"arm_id": f"arm{len(arm_list)}", "prompt": prompt})
        try:
            campaign = parse_campaign(campaign_doc(arms=arm_list))
        except ConfigError:
            break
    assert len(campaign.arms) > 1
    assert campaign_to_proto(campaign).ByteSize() < 200 * 1024


def test_error_messages_repeat_at_most_80_characters_of_a_value_or_key() -> None:
    long = "x" * 100_000
    for doc in (
        campaign_doc(campaign_id=long),
        campaign_doc(trigger_events=[long + "\n"]),
        campaign_doc(response_window=long),
        campaign_doc(updated_at=long),
        campaign_doc(arms=[{"arm_id": "a", "prompt": {"data": {long: "v"}}}]),
        campaign_doc(**{long: 1}),
        campaign_doc(arms=arms(200), control_arm_id="nope"),
    ):
        error = error_of(parse_campaign, doc)
        assert len(str(error)) < 400, str(error)[:500]
    for policy in ({"channel_daily_caps": {long: 1}}, {"quiet_hours_end": long}):
        error = error_of(parse_app, {"app_id": "a", "policy": policy})
        assert len(str(error)) < 400, str(error)[:500]


def test_exploration_floor_zero_means_default_and_half_is_allowed() -> None:
    assert parse_campaign(campaign_doc(exploration_floor=0)).exploration_floor == 0.05
    assert parse_campaign(campaign_doc(exploration_floor=0.5)).exploration_floor == 0.5


def test_attribution_window_zero_means_seven_days() -> None:
    assert parse_campaign(campaign_doc(attribution_window=0)).attribution_window_s == 7 * DAY
    assert parse_campaign(campaign_doc(attribution_window="0s")).attribution_window_s == 7 * DAY


def test_body_may_hold_line_breaks() -> None:
    campaign = parse_campaign(
        campaign_doc(arms=[{"arm_id": "a", "prompt": {"body": "line one\nline two\ttab"}}])
    )
    assert campaign.arms[0].prompt.body == "line one\nline two\ttab"


def test_prompt_limits_that_are_allowed() -> None:
    prompt = {
        "title": "t" * 200,
        "body": "b" * 2000,
        "action_url": "u" * 2048,
        "data": {f"k{i}": "v" for i in range(32)},
    }
    campaign = parse_campaign(campaign_doc(arms=[{"arm_id": "a", "prompt": prompt}]))
    assert len(campaign.arms[0].prompt.data) == 32
    assert len(campaign.arms[0].prompt.action_url) == 2048


def test_unicode_text_is_fine() -> None:
    campaign = parse_campaign(
        campaign_doc(
            display_name="Série 🏃",
            arms=[{"arm_id": "a", "prompt": {"title": "Weiter so 💪", "body": "日本語"}}],
        )
    )
    assert campaign.arms[0].prompt.title == "Weiter so 💪"


def test_root_that_is_not_a_mapping() -> None:
    error = error_of(parse_campaign, ["not", "a", "mapping"])
    assert error.path == "(document)"
    assert "mapping" in error.message


# --- documents -----------------------------------------------------------------------------


def test_document_with_both_keys() -> None:
    apps, campaigns = parse_document(
        {
            "apps": [{"app_id": "fit-app"}],
            "campaigns": [campaign_doc(), campaign_doc(campaign_id="x")],
        }
    )
    assert [a.app_id for a in apps] == ["fit-app"]
    assert [c.campaign_id for c in campaigns] == ["streak", "x"]


def test_document_keys_are_optional() -> None:
    assert parse_document({}) == ([], [])
    assert parse_document(None) == ([], [])
    apps, campaigns = parse_document({"campaigns": [campaign_doc()]})
    assert apps == [] and len(campaigns) == 1


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        ({"apps": [{"app_id": "a"}], "campaign": []}, "campaign"),
        ({"apps": {"app_id": "a"}}, "apps"),
        ({"apps": [{"app_id": "a"}, {"app_id": "bad id"}]}, "apps[1].app_id"),
        ({"apps": [{"app_id": "a"}, {"app_id": "a"}]}, "apps[1].app_id"),
        (
            {"campaigns": [campaign_doc(), campaign_doc(caps={"per_day": -3})]},
            "campaigns[1].caps.per_day",
        ),
        (
            {
                "campaigns": [
                    campaign_doc(),
                    campaign_doc(),
                    campaign_doc(campaign_id="ok", arms=[{"arm_id": "a"}, {"arm_id": ""}]),
                ]
            },
            "campaigns[1].campaign_id",
        ),
        (
            {
                "campaigns": [
                    campaign_doc(),
                    campaign_doc(campaign_id="z", arms=[{"arm_id": "-"}, {"arm_id": "!"}]),
                ]
            },
            "campaigns[1].arms[1].arm_id",
        ),
        (
            {"campaigns": [{**campaign_doc(), "arms": [{"arm_id": "a", "prompt": {"x": 1}}]}]},
            "campaigns[0].arms[0].prompt.x",
        ),
        ("apps: []", "(document)"),
    ],
)
def test_invalid_document_names_the_location(doc: object, path: str) -> None:
    error = error_of(parse_document, doc)
    assert error.path == path


def test_same_campaign_id_in_two_apps_is_fine() -> None:
    _, campaigns = parse_document({"campaigns": [campaign_doc(), campaign_doc(app_id="other-app")]})
    assert {(c.app_id, c.campaign_id) for c in campaigns} == {
        ("fit-app", "streak"),
        ("other-app", "streak"),
    }


def test_parsing_does_not_modify_the_input() -> None:
    doc = {"apps": [{"app_id": "a"}], "campaigns": [campaign_doc()]}
    before = copy.deepcopy(doc)
    parse_document(doc)
    assert doc == before


# --- round trips ---------------------------------------------------------------------------


def full_campaign() -> Campaign:
    return parse_campaign(
        campaign_doc(
            display_name="Streak",
            status="archived",
            channel="email",
            priority=-3,
            trigger_events=["b_event", "a_event"],
            arms=[
                {
                    "arm_id": "now",
                    "prompt": {
                        "title": "T",
                        "body": "B\nB",
                        "action_url": "app://x",
                        "data": {"k": "v"},
                    },
                },
                {"arm_id": "later", "delay": "10m"},
            ],
            caps={"per_day": 2, "lifetime": 5, "min_interval": "1d"},
            holdout_share=0.25,
            reward_metric="conversion",
            attribution_window="2d",
            response_window="1h",
            quiet_hours_policy="drop",
            control_arm_id="now",
            exploration_floor=0.1,
            updated_at="2024-05-01T12:00:00+02:00",
        )
    )


def test_campaign_round_trip_through_json() -> None:
    campaign = full_campaign()
    doc = json.loads(json.dumps(campaign_to_doc(campaign)))
    assert parse_campaign(doc) == campaign
    minimal = parse_campaign(campaign_doc())
    assert parse_campaign(json.loads(json.dumps(campaign_to_doc(minimal)))) == minimal


def test_app_round_trip_through_json() -> None:
    app = parse_app(
        {
            "app_id": "a",
            "display_name": "A",
            "policy": {
                "daily_cap": 9,
                "min_interval": "10m",
                "backoff_factor": 3.5,
                "backoff_ceiling": "3d",
                "quiet_hours_start": "21:05",
                "quiet_hours_end": "07:00",
                "channel_daily_caps": {"push": 1, "in_app": 4},
                "snooze_after": -1,
                "disable_adaptive": True,
            },
        }
    )
    doc = json.loads(json.dumps(app_to_doc(app)))
    assert parse_app(doc) == app
    assert doc["policy"]["quiet_hours_start"] == "21:05"
    default = parse_app({"app_id": "b"})
    assert parse_app(json.loads(json.dumps(app_to_doc(default)))) == default


def test_documents_from_protobuf_json() -> None:
    message = admin_pb2.Campaign(
        app_id="fit-app",
        campaign_id="streak",
        status=admin_pb2.CAMPAIGN_STATUS_PAUSED,
        trigger_events=["workout_finished"],
        channel=decision_pb2.CHANNEL_PUSH,
        arms=[
            admin_pb2.Arm(
                arm_id="a",
                prompt=decision_pb2.Prompt(title="T", data={"k": "v"}),
            )
        ],
        reward_metric=admin_pb2.REWARD_METRIC_CONVERSION,
        holdout_share=0.2,
    )
    message.arms[0].delay.FromSeconds(600)
    message.attribution_window.FromMilliseconds(1500)
    message.caps.per_day = 2
    doc = json_format.MessageToDict(message, preserving_proto_field_name=True)
    campaign = parse_campaign(doc)
    assert campaign.status is CampaignStatus.PAUSED
    assert campaign.channel is Channel.PUSH
    assert campaign.reward_metric is RewardMetric.CONVERSION
    assert campaign.arms[0].delay_s == 600
    assert campaign.arms[0].prompt.data == {"k": "v"}
    assert campaign.attribution_window_s == 2
    assert campaign.cap_per_day == 2

    app_message = admin_pb2.App(app_id="a", policy=admin_pb2.ThrottlePolicy(snooze_after=-1))
    app_message.policy.min_interval.FromSeconds(120)
    app = parse_app(json_format.MessageToDict(app_message, preserving_proto_field_name=True))
    assert app.policy.min_interval_s == 120
    assert app.policy.snooze_after == -1
    assert app.policy.daily_cap == 3


# --- YAML ----------------------------------------------------------------------------------


def test_yaml_keeps_clock_times_as_strings() -> None:
    doc = load_yaml(
        """
apps:
  - app_id: fit-app
    policy:
      quiet_hours_start: 22:00
      quiet_hours_end: 07:30
      daily_cap: 4
      backoff_factor: 1.5
"""
    )
    apps, _ = parse_document(doc)
    assert apps[0].policy.quiet_start == dt.time(22, 0)
    assert apps[0].policy.quiet_end == dt.time(7, 30)
    assert apps[0].policy.daily_cap == 4
    assert apps[0].policy.backoff_factor == 1.5


def test_yaml_refuses_a_key_given_twice_naming_the_path_and_lines() -> None:
    with pytest.raises(ConfigError) as info:
        load_yaml(
            """
apps:
  - app_id: fit-app
    policy:
      daily_cap: 1
      min_interval: 1h
      daily_cap: 50
"""
        )
    assert info.value.path == "apps[0].policy.daily_cap"
    assert "duplicate key 'daily_cap' at line 7" in info.value.message
    assert "first given at line 5" in info.value.message


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("apps: []\ncampaigns: []\napps: []\n", "apps"),
        ("campaigns:\n  - {app_id: a, app_id: b}\n", "campaigns[0].app_id"),
        ("apps:\n  - app_id: a\n    'app_id': b\n", "apps[0].app_id"),
    ],
)
def test_yaml_duplicate_keys_anywhere(text: str, path: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_yaml(text)
    assert info.value.path == path
    assert "duplicate key" in info.value.message


def test_yaml_merge_keys_may_be_overridden() -> None:
    doc = load_yaml(
        """
defaults: &defaults {daily_cap: 1, min_interval: 1h}
apps:
  - app_id: a
    policy:
      <<: *defaults
      daily_cap: 5
  - app_id: b
    policy: *defaults
"""
    )
    assert isinstance(doc, dict)
    assert doc["apps"][0]["policy"] == {"daily_cap": 5, "min_interval": "1h"}
    assert doc["apps"][1]["policy"] == {"daily_cap": 1, "min_interval": "1h"}


def test_yaml_syntax_error_names_the_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_yaml("apps:\n  - app_id: [unclosed\n")
    assert info.value.path.startswith("line ")
    assert "invalid YAML" in info.value.message
