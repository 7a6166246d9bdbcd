"""The status surface's pure parts: how the decision log's figures are judged and shown, and
the spool's record format of log rows."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from pathlib import Path

import pytest
from nudge.v1 import status_pb2
from nudge_server.decision_log import LogStatus
from nudge_server.errors import ConfigError
from nudge_server.log_encoding import entry_from_payload, entry_payload
from nudge_server.log_rows import DecisionRow, LogEntry, OutcomeRow, PolicySnapshotRow, PushJobRow
from nudge_server.settings import LogSettings
from nudge_server.spool import SpoolStats
from nudge_server.status_api import Health, decision_log_health, decision_log_proto
from nudge_server.status_cli import exit_code, render

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
SPOOL = SpoolStats(
    bytes=0,
    records=0,
    rows=0,
    segments=0,
    capacity_bytes=1024**3,
    oldest_stamp_ms=None,
    full=False,
    error=None,
    directory=Path("/var/lib/nudge/spool/p-1-abc"),
)
IDLE = LogStatus(
    rows_in_memory=3,
    rows_written=1000,
    rows_duplicate=0,
    rows_dropped=0,
    rows_rejected=0,
    rows_spooled=0,
    rows_replayed=0,
    postgres_failing=False,
    last_error=None,
    oldest_pending_at=None,
    spool=SPOOL,
)


def test_a_log_that_keeps_up_is_ok() -> None:
    check = decision_log_health(IDLE, max_buffered_rows=200_000)
    assert check.health is Health.OK
    assert "1000 rows written" in check.detail


def test_rows_waiting_make_it_degraded() -> None:
    failing = dataclasses.replace(IDLE, postgres_failing=True, last_error="OSError: refused")
    assert decision_log_health(failing, 200_000).health is Health.DEGRADED
    assert "OSError: refused" in decision_log_health(failing, 200_000).detail
    replaying = dataclasses.replace(IDLE, spool=dataclasses.replace(SPOOL, rows=40, records=30))
    check = decision_log_health(replaying, 200_000)
    assert check.health is Health.DEGRADED and "40 in the spool" in check.detail


def test_a_full_or_failing_spool_or_full_memory_is_failing() -> None:
    full = dataclasses.replace(IDLE, spool=dataclasses.replace(SPOOL, full=True, rows=9))
    check = decision_log_health(full, 200_000)
    assert check.health is Health.FAILING and check.detail.startswith("spool full")
    broken = dataclasses.replace(IDLE, spool=dataclasses.replace(SPOOL, error="OSError: EIO"))
    assert decision_log_health(broken, 200_000).health is Health.FAILING
    no_spool = dataclasses.replace(IDLE, spool=None, rows_in_memory=10)
    assert decision_log_health(no_spool, 10).health is Health.FAILING
    assert decision_log_health(no_spool, 11).health is Health.OK


def test_the_message_carries_the_figures_and_the_spooled_rows_age() -> None:
    spooled = dataclasses.replace(
        IDLE,
        rows_dropped=7,
        spool=dataclasses.replace(
            SPOOL,
            rows=12,
            bytes=4096,
            full=True,
            oldest_stamp_ms=int(NOW.timestamp() * 1000) - 90_000,
        ),
    )
    message = decision_log_proto(spooled, NOW)
    assert (message.rows_in_spool, message.spool_bytes, message.spool_full) == (12, 4096, True)
    assert message.spool_capacity_bytes == 1024**3 and message.rows_dropped == 7
    assert message.oldest_spooled_row_age.ToTimedelta() == dt.timedelta(seconds=90)
    assert not decision_log_proto(IDLE, NOW).HasField("oldest_spooled_row_age")
    assert decision_log_proto(dataclasses.replace(IDLE, spool=None), NOW).spool_capacity_bytes == 0


def test_the_cli_shows_each_component_and_fails_on_a_failing_one() -> None:
    response = status_pb2.GetStatusResponse(decision_log=decision_log_proto(IDLE, NOW))
    response.checked_at.FromDatetime(NOW)
    response.components.add(name="redis", health=status_pb2.HEALTH_OK, detail="answered")
    response.components.add(name="postgresql", health=status_pb2.HEALTH_OK, detail="answered")
    assert exit_code(response) == 0
    text = render(response)
    assert "redis         ok        answered" in text
    assert "spool size           0 B of 1.0 GiB (0.0%)" in text
    response.components[1].health = status_pb2.HEALTH_FAILING
    assert exit_code(response) == 1


@pytest.mark.parametrize("with_job", [False, True])
def test_log_rows_survive_the_spool_format_exactly(with_job: bool) -> None:
    decision = DecisionRow(
        decision_id=uuid.uuid4(),
        app_id="app",
        user_id="us\x00er \ud800 ü",
        decided_at=NOW,
        received_at=NOW + dt.timedelta(microseconds=7),
        event_name="e",
        event_properties={"k": [1, 2.5, None, True, {"deep": "\x00"}], "inf": float("inf")},
        requested_channel="push",
        time_zone="Asia/Tokyo",
        show=True,
        reason="ok",
        propensity=0.25,
        candidates=[{"campaign_id": "c"}],
    )
    job = PushJobRow(
        job_id=decision.decision_id,
        app_id="app",
        user_id=decision.user_id,
        campaign_id="c",
        arm_id="a",
        payload={"title": "T"},
        deliver_at=NOW,
        expires_at=NOW + dt.timedelta(days=1),
        time_zone="Asia/Tokyo",
    )
    entry = LogEntry(seq=1, decision=decision, push_job=job if with_job else None)
    back = entry_from_payload(entry_payload(entry), 123)
    assert back.decision == decision and back.push_job == entry.push_job
    assert back.added_ms == 123 and back.from_spool and back.rows == entry.rows
    outcome = OutcomeRow(
        decision_id=decision.decision_id,
        app_id="app",
        user_id="u",
        type="tap",
        occurred_at=NOW,
        received_at=NOW,
    )
    assert entry_from_payload(entry_payload(LogEntry(seq=2, outcome=outcome)), 1).outcome == outcome


def test_a_policy_snapshot_survives_the_spool_format_exactly() -> None:
    snapshot = PolicySnapshotRow(
        snapshot_id="0123abcd",
        app_id="app",
        campaign_id="c",
        arm_ids=("a", "b \x00 \ud800"),
        probabilities=(0.1, 1 / 3, 0.5666666666666667),
        created_at=NOW,
    )
    back = entry_from_payload(entry_payload(LogEntry(seq=1, snapshot=snapshot)), 5)
    assert back.snapshot == snapshot  # tuples again, every float to the last bit
    assert back.decision is None and back.outcome is None and back.rows == 1
    assert back.identity() == {"snapshot_id": "0123abcd"}


def test_a_payload_of_another_format_is_refused() -> None:
    with pytest.raises(ValueError):
        entry_from_payload(b'{"v": 2, "decision": {}}', 1)
    with pytest.raises(ValueError):
        entry_from_payload(b'{"v": 1}', 1)
    with pytest.raises(ValueError, match="unknown fields"):
        entry_from_payload(b'{"v": 1, "outcome": {"surprise": 1}}', 1)


def test_spool_settings_come_from_the_environment_and_are_checked() -> None:
    default = LogSettings.from_env({})
    assert default.spool_dir == Path(".run/spool") and default.spool_max_bytes == 1024**3
    assert default.spool_enabled and default.spill_after_s == 1.0
    custom = LogSettings.from_env(
        {
            "NUDGE_SPOOL_DIR": "/var/lib/nudge/spool",
            "NUDGE_SPOOL_MAX_BYTES": "0",
            "NUDGE_LOG_SPILL_AFTER": "0.5",
        }
    )
    assert custom.spool_dir == Path("/var/lib/nudge/spool") and not custom.spool_enabled
    assert custom.spill_after_s == 0.5
    for env, name in (
        ({"NUDGE_SPOOL_MAX_BYTES": "-1"}, "NUDGE_SPOOL_MAX_BYTES"),
        ({"NUDGE_SPOOL_MAX_BYTES": "1000"}, "NUDGE_SPOOL_MAX_BYTES"),
        ({"NUDGE_LOG_SPILL_AFTER": "0"}, "NUDGE_LOG_SPILL_AFTER"),
    ):
        with pytest.raises(ConfigError) as refused:
            LogSettings.from_env(env)
        assert refused.value.path == name
