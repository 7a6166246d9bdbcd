"""Settings from the environment: the gRPC message limits."""

from __future__ import annotations

import pytest
from nudge_server.errors import ConfigError
from nudge_server.settings import GrpcSettings


def test_the_server_sends_larger_messages_than_it_accepts_by_default() -> None:
    settings = GrpcSettings.from_env({})
    assert settings.max_message_bytes == 256 * 1024
    assert settings.max_send_message_bytes == 16 * 1024 * 1024


def test_the_send_limit_comes_from_the_environment() -> None:
    settings = GrpcSettings.from_env({"NUDGE_MAX_SEND_MESSAGE_BYTES": "1048576"})
    assert settings.max_send_message_bytes == 1024 * 1024


@pytest.mark.parametrize(
    "env",
    [
        {"NUDGE_MAX_SEND_MESSAGE_BYTES": "1000"},
        {"NUDGE_MAX_SEND_MESSAGE_BYTES": "lots"},
        {"NUDGE_MAX_MESSAGE_BYTES": str(32 * 1024 * 1024)},
    ],
)
def test_a_send_limit_below_the_receive_limit_is_refused(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        GrpcSettings.from_env(env)
    assert info.value.path == "NUDGE_MAX_SEND_MESSAGE_BYTES"
