"""Domain errors as gRPC status messages."""

from __future__ import annotations

from nudge_server.api_errors import MAX_MESSAGE_BYTES, status_message
from nudge_server.errors import InvalidArgument, NotFound, shown


def test_shown_cuts_a_long_value_and_says_how_long_it_was() -> None:
    assert shown("abc") == "'abc'"
    assert shown("a" * 81) == f"{'a' * 80!r}... (81 characters)"


def test_a_status_message_is_never_longer_than_the_bound() -> None:
    assert status_message(NotFound("app 'x' does not exist")) == "app 'x' does not exist"
    for text in ("x" * 100_000, "é" * 100_000, "💪" * 100_000):
        message = status_message(InvalidArgument("field", text))
        assert len(message.encode()) <= MAX_MESSAGE_BYTES
        assert message.startswith("field: ") and message.endswith("...")
