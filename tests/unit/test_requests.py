"""Request validation: every bad field is named; decision ids carry their owner."""

import datetime as dt
import uuid

import pytest
from nudge_server.errors import InvalidArgument
from nudge_server.ids import Owner, issued_at, new_decision_id, owner_of
from nudge_server.model import Channel, OutcomeType, Platform
from nudge_server.requests import decide_input, outcome_input

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
GOOD = {
    "app": "shop",
    "user": "user-1",
    "event_name": "opened",
    "event_properties": {"n": 1.5, "tags": ["a"]},
    "channel": Channel.IN_APP,
    "surface": "home",
    "tz_name": "Europe/Berlin",
    "locale": "de-DE",
    "platform": Platform.IOS,
    "client_request_id": "r1",
    "event_time": None,
    "now": NOW,
}


def test_a_good_request_passes() -> None:
    parsed = decide_input(**GOOD)
    assert parsed.tz.key == "Europe/Berlin" and parsed.properties == {"n": 1.5, "tags": ["a"]}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"app": ""}, "app_id"),
        ({"app": "a b"}, "app_id"),
        ({"app": "x" * 65}, "app_id"),
        ({"user": ""}, "user_id"),
        ({"user": "u" * 129}, "user_id"),
        ({"user": "bad\x00id"}, "user_id"),
        ({"user": "tab\tid"}, "user_id"),
        ({"event_name": ""}, "event.name"),
        ({"tz_name": ""}, "time_zone"),
        ({"tz_name": "Mars/Base"}, "time_zone"),
        ({"locale": "de DE"}, "locale"),
        ({"surface": "s" * 65}, "surface"),
        ({"client_request_id": "r" * 129}, "client_request_id"),
        ({"event_properties": {f"k{i}": i for i in range(65)}}, "event.properties"),
        ({"event_properties": {"big": "x" * 17000}}, "event.properties"),
        ({"event_properties": {"nul": "a\x00b"}}, "event.properties.nul"),
        ({"event_properties": {"k\x00": "v"}}, "event.properties"),
        ({"event_properties": {"n": float("nan")}}, "event.properties.n"),
        (
            {
                "event_properties": {
                    "deep": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": 1}}}}}}}}
                }
            },
            "event.properties.deep.a.b.c.d.e.f.g.h",
        ),
        ({"event_time": NOW + dt.timedelta(days=4000)}, "event_time"),
    ],
)
def test_each_bad_field_is_named(change: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        decide_input(**{**GOOD, **change})  # type: ignore[arg-type]
    assert caught.value.field == field
    assert str(caught.value).startswith(field)


def test_outcome_validation() -> None:
    decision_id = new_decision_id("shop", "user-1", NOW)
    ok = outcome_input(
        app="shop",
        user="user-1",
        decision_id=decision_id,
        kind=OutcomeType.CONVERSION,
        value=9.5,
        occurred_at=None,
        now=NOW,
    )
    assert ok.value == 9.5
    tap = outcome_input(
        app="shop",
        user="user-1",
        decision_id=decision_id,
        kind=OutcomeType.TAP,
        value=9.5,
        occurred_at=None,
        now=NOW,
    )
    assert tap.value is None
    for bad_id in ("", "not-a-uuid"):
        with pytest.raises(InvalidArgument, match="decision_id"):
            outcome_input(
                app="shop",
                user="u",
                decision_id=bad_id,
                kind=OutcomeType.TAP,
                value=0,
                occurred_at=None,
                now=NOW,
            )
    with pytest.raises(InvalidArgument, match="value"):
        outcome_input(
            app="shop",
            user="u",
            decision_id=decision_id,
            kind=OutcomeType.CONVERSION,
            value=float("inf"),
            occurred_at=None,
            now=NOW,
        )


def test_decision_ids_know_their_app_and_user() -> None:
    decision_id = new_decision_id("shop", "user-1", NOW)
    assert uuid.UUID(decision_id).version == 8
    assert owner_of(decision_id, "shop", "user-1") is Owner.MAYBE_THIS_USER
    assert owner_of(decision_id, "shop", "user-2") is Owner.OTHER_USER
    assert owner_of(decision_id, "other", "user-1") is Owner.OTHER_APP
    assert len({new_decision_id("shop", "user-1", NOW) for _ in range(1000)}) == 1000
    assert issued_at(decision_id) == NOW
