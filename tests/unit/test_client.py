"""The Python client's mapping of plain strings to the proto enums (no server needed)."""

from __future__ import annotations

import datetime as dt

import pytest
from nudge.v1 import decision_pb2
from nudge_client import (
    CHANNELS,
    OUTCOME_TYPES,
    PLATFORMS,
    NudgeClient,
    channel_value,
    outcome_type_value,
    platform_value,
    reason_name,
)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("in_app", decision_pb2.CHANNEL_IN_APP),
        ("push", decision_pb2.CHANNEL_PUSH),
        ("email", decision_pb2.CHANNEL_EMAIL),
    ],
)
def test_channel_names(name: str, value: int) -> None:
    assert channel_value(name) == value


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("unspecified", decision_pb2.PLATFORM_UNSPECIFIED),
        ("ios", decision_pb2.PLATFORM_IOS),
        ("android", decision_pb2.PLATFORM_ANDROID),
        ("web", decision_pb2.PLATFORM_WEB),
    ],
)
def test_platform_names(name: str, value: int) -> None:
    assert platform_value(name) == value


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("impression", decision_pb2.OUTCOME_TYPE_IMPRESSION),
        ("tap", decision_pb2.OUTCOME_TYPE_TAP),
        ("dismiss", decision_pb2.OUTCOME_TYPE_DISMISS),
        ("conversion", decision_pb2.OUTCOME_TYPE_CONVERSION),
    ],
)
def test_outcome_names(name: str, value: int) -> None:
    assert outcome_type_value(name) == value


def test_every_specified_enum_value_has_a_name() -> None:
    # A value added to the proto without a name here would be unreachable from the client.
    assert set(CHANNELS.values()) == set(decision_pb2.Channel.values()) - {0}
    assert set(PLATFORMS.values()) == set(decision_pb2.Platform.values())
    assert set(OUTCOME_TYPES.values()) == set(decision_pb2.OutcomeType.values()) - {0}


@pytest.mark.parametrize("lookup", [channel_value, platform_value, outcome_type_value])
@pytest.mark.parametrize("name", ["", "IN_APP", "CHANNEL_IN_APP", "unspecified_x", "Tap", "sms"])
def test_unknown_names_raise_value_error(lookup: object, name: str) -> None:
    assert callable(lookup)
    with pytest.raises(ValueError, match="unknown"):
        lookup(name)


def test_unspecified_is_not_a_channel_or_outcome() -> None:
    with pytest.raises(ValueError):
        channel_value("unspecified")
    with pytest.raises(ValueError):
        outcome_type_value("unspecified")


def test_reason_names() -> None:
    assert reason_name(decision_pb2.REASON_OK) == "ok"
    assert reason_name(decision_pb2.REASON_DAILY_CAP) == "daily_cap"
    assert reason_name(decision_pb2.REASON_NO_ELIGIBLE_CAMPAIGN) == "no_eligible_campaign"
    assert reason_name(999) == "reason_999"


async def test_decide_rejects_bad_arguments_before_calling() -> None:
    # Nothing listens on port 9 (discard): a call that got that far would fail differently.
    async with NudgeClient("127.0.0.1:9", timeout_s=0.2) as client:
        with pytest.raises(ValueError, match="channel"):
            await client.decide("app", "user", "event", time_zone="UTC", channel="sms")
        with pytest.raises(ValueError, match="platform"):
            await client.decide("app", "user", "event", time_zone="UTC", platform="windows")
        with pytest.raises(ValueError, match="timezone-aware"):
            await client.decide(
                "app", "user", "event", time_zone="UTC", event_time=dt.datetime(2024, 1, 1)
            )
        with pytest.raises(ValueError, match="outcome type"):
            await client.report_outcome("app", "user", "id", "click")


async def test_stubs_need_an_open_client() -> None:
    client = NudgeClient("127.0.0.1:9")
    with pytest.raises(RuntimeError, match="not open"):
        _ = client.decisions
    async with client:
        assert client.admin is not None
        assert client.decisions is not None
    with pytest.raises(RuntimeError, match="not open"):
        _ = client.admin


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError):
        NudgeClient("127.0.0.1:9", timeout_s=0)
