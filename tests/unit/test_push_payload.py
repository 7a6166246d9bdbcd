"""Push payloads within the providers' limits, and the pure parts of delivery: how answers are
classified, back-off, Retry-After, token validation, settings."""

from __future__ import annotations

import datetime as dt
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nudge_server.delivery import apns, fcm
from nudge_server.delivery.payload import (
    APNS_MAX_BYTES,
    ELLIPSIS,
    FCM_MAX_BYTES,
    PayloadTooLarge,
    PushContent,
    apns_encode,
    apns_message,
    fcm_encode,
    fcm_message,
    safe_cut,
    shorten,
)
from nudge_server.delivery.results import SendStatus, parse_retry_after, retry_delay
from nudge_server.delivery.settings import DeliverySettings
from nudge_server.devices import AppEnvironment, device_token, registration
from nudge_server.errors import ConfigError, InvalidArgument
from nudge_server.model import Platform

DECISION = "3f1c2a9e-8d7b-4c6a-9e5f-1a2b3c4d5e6f"


def content(title: str = "Nice!", body: str = "Well done.", **kw: object) -> PushContent:
    return PushContent(decision_id=DECISION, title=title, body=body, **kw)  # type: ignore[arg-type]


def fcm_size(message: dict[str, object]) -> int:
    return len(fcm_encode({"notification": message["notification"], "data": message["data"]}))


# --- payloads --------------------------------------------------------------------------------


def test_a_small_payload_is_left_as_it_is() -> None:
    message = apns_message(content(action_url="app://x", data={"quiz": "7"}))
    assert message == {
        "aps": {"alert": {"title": "Nice!", "body": "Well done."}, "sound": "default"},
        "decision_id": DECISION,
        "action_url": "app://x",
        "data": {"quiz": "7"},
    }
    android = fcm_message(content(data={"quiz": "7"}), "tok", 3600)
    assert android["notification"] == {"title": "Nice!", "body": "Well done."}
    assert android["data"] == {"quiz": "7", "decision_id": DECISION}
    assert android["android"]["collapse_key"] == DECISION
    assert android["android"]["ttl"] == "3600s"


def test_multibyte_text_over_the_limit_is_shortened_by_whole_characters() -> None:
    body = "Grüße aus Köln 😀👍🏽 👨‍👩‍👧 🇩🇪 é " * 400  # e + U+0301
    title = "Täglich 🔥"
    message = apns_message(content(title=title, body=body))
    encoded = apns_encode(message)
    assert len(encoded) <= APNS_MAX_BYTES
    assert len(encoded) > APNS_MAX_BYTES - 40  # it used the room it had
    encoded.decode("utf-8", errors="strict")  # never a cut UTF-8 sequence
    sent = message["aps"]["alert"]
    assert sent["title"] == title
    assert sent["body"].endswith(ELLIPSIS)
    kept = sent["body"].removesuffix(ELLIPSIS)
    assert body.startswith(kept)
    # The cut is a safe one: the next character does not belong to the last one kept.
    assert safe_cut(body, len(kept)) == len(kept) or body[len(kept)] == " "


def test_fcm_text_is_shortened_within_its_limit() -> None:
    message = fcm_message(content(body="Ünïcödé ✓ " * 1000), "tok", 60)
    assert fcm_size(message) <= FCM_MAX_BYTES
    assert message["notification"]["body"].endswith(ELLIPSIS)


def test_the_title_is_shortened_only_when_the_body_cannot_make_room() -> None:
    message = apns_message(content(title="Ü" * 5000, body="short"))
    alert = message["aps"]["alert"]
    assert "body" not in alert
    assert alert["title"].endswith(ELLIPSIS)
    assert len(apns_encode(message)) <= APNS_MAX_BYTES


def test_data_too_large_to_fit_is_refused() -> None:
    with pytest.raises(PayloadTooLarge):
        apns_message(content(data={"blob": "x" * 5000}))
    with pytest.raises(PayloadTooLarge):
        fcm_message(content(data={"blob": "x" * 5000}), "tok", 60)


@pytest.mark.parametrize(
    ("text", "index", "expected"),
    [
        ("ab👍🏽cd", 3, 2),  # before the skin-tone modifier: the thumb goes too
        ("ab👍🏽cd", 4, 4),  # after the modifier: fine
        ("x👨‍👩‍👧y", 3, 1),  # inside a ZWJ family
        ("x👨‍👩‍👧y", 6, 6),  # after it
        ("🇩🇪🇫🇷", 1, 0),  # half a flag
        ("🇩🇪🇫🇷", 3, 2),  # half of the second flag
        ("🇩🇪🇫🇷", 2, 2),
        ("cafe\u0301!", 4, 3),  # before a combining accent
        ("❤\ufe0fok", 1, 0),  # before a variation selector
    ],
)
def test_safe_cut_keeps_user_perceived_characters_whole(
    text: str, index: int, expected: int
) -> None:
    assert safe_cut(text, index) == expected


def test_shorten() -> None:
    assert shorten("hello", 10) == "hello"
    assert shorten("hello world", 6) == "hello" + ELLIPSIS
    assert shorten("hello", 0) == ""


@settings(max_examples=60, deadline=None)
@given(title=st.text(max_size=300), body=st.text(min_size=0, max_size=3000))
def test_any_text_fits_both_providers(title: str, body: str) -> None:
    message = apns_message(content(title=title * 3, body=body * 3))
    assert len(apns_encode(message)) <= APNS_MAX_BYTES
    alert = message["aps"]["alert"]
    sent_body = alert.get("body", "")
    assert (body * 3).startswith(sent_body.removesuffix(ELLIPSIS))
    android = fcm_message(content(title=title * 3, body=body * 3), "tok", 60)
    assert fcm_size(android) <= FCM_MAX_BYTES


def test_content_from_a_job_payload_cleans_what_cannot_be_encoded() -> None:
    payload = {"title": "a\ud800b", "body": 5, "data": {"k": 1}, "decision_id": DECISION}
    got = PushContent.from_job("job", payload)
    assert got.title == "a\ufffdb" and got.body == "5" and got.data == {"k": "1"}
    json.dumps(apns_message(got), ensure_ascii=False).encode()


# --- what answers mean -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason", "expected"),
    [
        ("200", "", SendStatus.SENT),
        ("410", "Unregistered", SendStatus.TOKEN_GONE),
        ("410", "ExpiredToken", SendStatus.TOKEN_GONE),
        ("400", "BadDeviceToken", SendStatus.TOKEN_GONE),
        ("400", "DeviceTokenNotForTopic", SendStatus.REJECTED),
        ("400", "BadTopic", SendStatus.MISCONFIGURED),
        ("403", "InvalidProviderToken", SendStatus.MISCONFIGURED),
        ("413", "PayloadTooLarge", SendStatus.REJECTED),
        ("429", "TooManyRequests", SendStatus.RETRY),
        ("500", "InternalServerError", SendStatus.RETRY),
        ("503", "ServiceUnavailable", SendStatus.RETRY),
        ("", "", SendStatus.UNKNOWN),
    ],
)
def test_apns_answers(status: str, reason: str, expected: SendStatus) -> None:
    assert apns.classify(status, reason).status is expected


def test_apns_410_carries_since_when_and_429_its_retry_after() -> None:
    gone = apns.classify("410", "Unregistered", timestamp_ms=1_700_000_000_000)
    assert gone.gone_since == dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.UTC)
    assert apns.classify("429", "TooManyRequests", retry_after=b"7").retry_after_s == 7


def fcm_error(code: int, status: str, *codes: str) -> dict[str, object]:
    details = [{"@type": fcm.FCM_ERROR_TYPE, "errorCode": c} for c in codes]
    return {"error": {"code": code, "status": status, "message": "m", "details": details}}


@pytest.mark.parametrize(
    ("http", "doc", "expected"),
    [
        (200, {"name": "projects/p/messages/1"}, SendStatus.SENT),
        (404, fcm_error(404, "NOT_FOUND", "UNREGISTERED"), SendStatus.TOKEN_GONE),
        (400, fcm_error(400, "INVALID_ARGUMENT", "UNREGISTERED"), SendStatus.TOKEN_GONE),
        (404, fcm_error(404, "NOT_FOUND"), SendStatus.MISCONFIGURED),  # a bare 404
        (404, None, SendStatus.MISCONFIGURED),
        (400, fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT"), SendStatus.REJECTED),
        (403, fcm_error(403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH"), SendStatus.REJECTED),
        (
            401,
            fcm_error(401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR"),
            SendStatus.MISCONFIGURED,
        ),
        (429, fcm_error(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"), SendStatus.RETRY),
        (500, fcm_error(500, "INTERNAL", "INTERNAL"), SendStatus.RETRY),
        (503, None, SendStatus.RETRY),
    ],
)
def test_fcm_answers(http: int, doc: object, expected: SendStatus) -> None:
    assert fcm.classify(http, doc).status is expected


def test_fcm_retry_after() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    got = fcm.classify(503, None, retry_after="Thu, 01 Jan 2026 00:00:30 GMT", now=now)
    assert got.retry_after_s == 30


# --- back-off and Retry-After ----------------------------------------------------------------


def test_retry_delay_grows_exponentially_with_jitter_up_to_its_ceiling() -> None:
    rng = random.Random(1)
    for attempt, ceiling in [(1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (10, 60.0)]:
        delays = [retry_delay(attempt, base_s=2.0, max_s=60.0, rng=rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 100  # jittered


def test_retry_after_is_a_floor_with_a_cap() -> None:
    assert retry_delay(1, base_s=1, max_s=10, retry_after_s=30) == 30
    assert retry_delay(1, base_s=1, max_s=10, retry_after_s=9000, max_retry_after_s=3600) == 3600
    assert retry_delay(5, base_s=1, max_s=10, retry_after_s=0) >= 5


def test_parse_retry_after() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after(b" 5 ", now) == 5
    assert parse_retry_after("Thu, 01 Jan 2026 00:01:00 GMT", now) == 60
    assert parse_retry_after("Wed, 31 Dec 2025 00:00:00 GMT", now) == 0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


# --- tokens and settings ---------------------------------------------------------------------


def test_device_tokens_are_validated_per_platform() -> None:
    assert device_token(Platform.IOS, "AB" * 32) == "ab" * 32
    for bad in ("", "xyz", "ab" * 31, "a" * 65, "ab" * 101):
        with pytest.raises(InvalidArgument) as caught:
            device_token(Platform.IOS, bad)
        assert caught.value.field == "token"
    assert device_token(Platform.ANDROID, "dGVzdA:APA91b-x_y.z" + "q" * 20)
    for bad in ("short", "has space" * 5, "x" * 4097):
        with pytest.raises(InvalidArgument):
            device_token(Platform.ANDROID, bad)
    with pytest.raises(InvalidArgument) as caught:
        registration(
            app="shop",
            user="u",
            platform=Platform.WEB,
            token="ab" * 32,
            environment=AppEnvironment.PRODUCTION,
        )
    assert caught.value.field == "platform"
    android = registration(
        app="shop",
        user="u",
        platform=Platform.ANDROID,
        token="t" * 30,
        environment=AppEnvironment.SANDBOX,
    )
    assert android.environment is AppEnvironment.PRODUCTION


def test_delivery_settings_from_the_environment() -> None:
    settings = DeliverySettings.from_env(
        {
            "NUDGE_APNS_KEY_FILE": "/k.p8",
            "NUDGE_APNS_KEY_ID": "K",
            "NUDGE_APNS_TEAM_ID": "T",
            "NUDGE_APNS_TOPIC": "dev.x",
            "NUDGE_PUSH_MAX_ATTEMPTS": "3",
            "NUDGE_WORKER_HEALTH_LISTEN": "",
        }
    )
    assert settings.apns.enabled and not settings.fcm.enabled
    assert settings.max_attempts == 3 and settings.health_listen == ""
    assert settings.apns.production_url == "https://api.push.apple.com:443"
    for env, name in [
        ({"NUDGE_APNS_KEY_FILE": "/k.p8"}, "NUDGE_APNS_KEY_ID"),
        ({"NUDGE_APNS_SANDBOX_URL": "http://x"}, "NUDGE_APNS_SANDBOX_URL"),
        ({"NUDGE_WORKER_LEASE": "5"}, "NUDGE_WORKER_LEASE"),
        ({"NUDGE_PUSH_MAX_ATTEMPTS": "0"}, "NUDGE_PUSH_MAX_ATTEMPTS"),
        ({"NUDGE_FCM_URL": "ftp://x"}, "NUDGE_FCM_URL"),
    ]:
        with pytest.raises(ConfigError) as caught:
            DeliverySettings.from_env(env)
        assert caught.value.path == name
