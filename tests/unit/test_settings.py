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


def test_shutdown_connection_and_auth_settings_come_from_the_environment() -> None:
    settings = ServerSettings.from_env(
        {
            "NUDGE_SHUTDOWN_DRAIN": "0",
            "NUDGE_MAX_CONNECTION_AGE": "60",
            "NUDGE_KEY_REFRESH": "0.5",
            "NUDGE_APP_RATE": "inf",
            "NUDGE_APP_BURST": "10",
            "NUDGE_REPORT_MAX_PER_APP": "2",
        }
    )
    assert (settings.grpc.shutdown_drain_s, settings.grpc.max_connection_age_s) == (0.0, 60.0)
    assert (settings.auth.refresh_s, settings.auth.app_rate_per_s) == (0.5, float("inf"))
    assert (settings.auth.app_burst, settings.report.max_per_app) == (10.0, 2)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("NUDGE_SHUTDOWN_DRAIN", "-1"),
        ("NUDGE_MAX_CONNECTION_AGE", "0"),
        ("NUDGE_KEY_REFRESH", "0"),
        ("NUDGE_KEY_LOOKUPS_PER_S", "nan"),
        ("NUDGE_APP_RATE", "0"),
        ("NUDGE_APP_BURST", "0.5"),
        ("NUDGE_REPORT_MAX_PER_APP", "0"),
    ],
)
def test_bad_shutdown_connection_and_auth_settings_are_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        ServerSettings.from_env({name: value})
    assert info.value.path == name
