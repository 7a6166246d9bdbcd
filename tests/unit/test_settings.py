"""Settings from the environment: the gRPC message limits, the report workers."""

from __future__ import annotations

import pytest
from nudge_server.errors import ConfigError
from nudge_server.settings import GrpcSettings, ReportSettings, ServerSettings


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


def test_report_workers_come_from_the_environment() -> None:
    assert ServerSettings.from_env({}).report == ReportSettings(
        workers=1, max_waiting=4, command_timeout_s=60.0
    )
    settings = ReportSettings.from_env(
        {
            "NUDGE_REPORT_WORKERS": "2",
            "NUDGE_REPORT_MAX_WAITING": "0",
            "NUDGE_REPORT_COMMAND_TIMEOUT": "5",
        }
    )
    assert (settings.workers, settings.max_waiting, settings.command_timeout_s) == (2, 0, 5.0)


@pytest.mark.parametrize(
    ("env", "path"),
    [
        ({"NUDGE_REPORT_WORKERS": "0"}, "NUDGE_REPORT_WORKERS"),
        ({"NUDGE_REPORT_MAX_WAITING": "-1"}, "NUDGE_REPORT_MAX_WAITING"),
        ({"NUDGE_REPORT_COMMAND_TIMEOUT": "0"}, "NUDGE_REPORT_COMMAND_TIMEOUT"),
    ],
)
def test_bad_report_settings_are_refused(env: dict[str, str], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        ReportSettings.from_env(env)
    assert info.value.path == path
