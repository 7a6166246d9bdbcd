"""Domain errors as gRPC status messages."""

from __future__ import annotations

import pickle

import grpc
import pytest
from nudge_server.api_errors import MAX_MESSAGE_BYTES, status_for, status_message
from nudge_server.errors import (
    ConfigError,
    InvalidArgument,
    NotFound,
    NudgeError,
    ReportFailed,
    ResourceExhausted,
    StoreTimeout,
    StoreUnavailable,
    shown,
)


def test_shown_cuts_a_long_value_and_says_how_long_it_was() -> None:
    assert shown("abc") == "'abc'"
    assert shown("a" * 81) == f"{'a' * 80!r}... (81 characters)"


def test_a_status_message_is_never_longer_than_the_bound() -> None:
    assert status_message(NotFound("app 'x' does not exist")) == "app 'x' does not exist"
    for text in ("x" * 100_000, "é" * 100_000, "💪" * 100_000):
        message = status_message(InvalidArgument("field", text))
        assert len(message.encode()) <= MAX_MESSAGE_BYTES
        assert message.startswith("field: ") and message.endswith("...")


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidArgument("start_time", "is outside the Timestamp range"), "INVALID_ARGUMENT"),
        (StoreTimeout("PostgreSQL timed out"), "DEADLINE_EXCEEDED"),
        (StoreUnavailable("PostgreSQL is unavailable"), "UNAVAILABLE"),
        (ResourceExhausted("1 reports are running"), "RESOURCE_EXHAUSTED"),
        (ReportFailed("the report process died"), "INTERNAL"),
    ],
)
def test_each_error_has_its_status_code(error: NudgeError, code: str) -> None:
    assert status_for(error) == getattr(grpc.StatusCode, code)


def test_errors_survive_pickling_for_the_report_processes() -> None:
    for error in (
        InvalidArgument("segment.locale", "must not contain control characters"),
        ConfigError("campaigns[0].arms", "must have between 1 and 200 arms"),
        NotFound("campaign 'x' of app 'y' does not exist"),
        StoreTimeout("PostgreSQL timed out"),
    ):
        back = pickle.loads(pickle.dumps(error))
        assert type(back) is type(error) and str(back) == str(error)
        assert vars(back) == vars(error)
