"""The log writer's memory bookkeeping: every row is pending once, until stored or spooled."""

from __future__ import annotations

import datetime as dt
import uuid

from nudge_server.log_buffer import InFlight, LogBuffer
from nudge_server.log_rows import DecisionRow, LogEntry, OutcomeRow, PushJobRow

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


def decision_entry(with_job: bool = False) -> LogEntry:
    row = DecisionRow(
        decision_id=uuid.uuid4(),
        app_id="app",
        user_id="u",
        decided_at=NOW,
        received_at=NOW,
        event_name="e",
        requested_channel="push",
        time_zone="UTC",
        show=with_job,
        reason="ok" if with_job else "daily_cap",
    )
    job = PushJobRow(
        job_id=row.decision_id,
        app_id="app",
        user_id="u",
        campaign_id="c",
        arm_id="a",
        payload={},
        deliver_at=NOW,
        expires_at=NOW,
        time_zone="UTC",
    )
    return LogEntry(seq=0, decision=row, push_job=job if with_job else None)


def outcome_entry() -> LogEntry:
    row = OutcomeRow(
        decision_id=uuid.uuid4(),
        app_id="app",
        user_id="u",
        type="tap",
        occurred_at=NOW,
        received_at=NOW,
    )
    return LogEntry(seq=0, outcome=row)


def test_rows_stay_pending_until_stored_or_spooled_and_count_once() -> None:
    buffer = LogBuffer(max_rows=10)
    pushed, outcome = decision_entry(with_job=True), outcome_entry()
    assert buffer.add(pushed) and buffer.add(outcome)
    assert buffer.pending == 3 and (pushed.seq, outcome.seq) == (1, 2) and buffer.last_seq == 2
    batch = buffer.take_batch(until_seq=2, max_rows=10)
    assert batch == [pushed, outcome] and len(buffer) == 0 and buffer.pending == 3
    buffer.mark_spooled(pushed)
    buffer.settle(pushed)  # a spooled copy landed too: nothing more to count
    buffer.mark_spooled(pushed)
    assert buffer.pending == 1 and buffer.rows_spooled == 2
    buffer.settle(outcome)
    buffer.settle(outcome)
    assert buffer.pending == 0
    buffer.put_back(batch)  # settled or spooled: none goes back
    assert len(buffer) == 0 and buffer.unstored() == []


def test_memory_holds_its_bound_and_counts_what_it_drops() -> None:
    buffer = LogBuffer(max_rows=3)
    assert buffer.add(decision_entry(with_job=True))
    assert not buffer.add(decision_entry(with_job=True))
    assert buffer.add(outcome_entry())
    assert not buffer.add(outcome_entry())
    assert buffer.pending == 3 and buffer.rows_dropped == 3 and len(buffer) == 2


def test_a_batch_put_back_comes_out_again_in_the_order_it_went_in() -> None:
    buffer = LogBuffer(max_rows=100)
    entries = [decision_entry() for _ in range(5)]
    for entry in entries:
        buffer.add(entry)
    first = buffer.take_batch(until_seq=5, max_rows=3)
    assert first == entries[:3]
    buffer.put_back(first)
    assert buffer.take_batch(until_seq=4, max_rows=100) == entries[:4]
    assert buffer.waiting(until_seq=5) and not buffer.waiting(until_seq=4)


def test_rows_read_back_from_the_spool_are_never_pending() -> None:
    buffer = LogBuffer(max_rows=100)
    replayed = decision_entry()
    replayed.from_spool = True
    buffer.settle(replayed)
    buffer.mark_spooled(replayed)
    assert replayed.settled and buffer.pending == 0 and buffer.rows_spooled == 0


def test_letting_go_drops_the_queue_and_the_batch_in_flight_once() -> None:
    buffer = LogBuffer(max_rows=100)
    queued, flying, stored = decision_entry(), decision_entry(with_job=True), outcome_entry()
    for entry in (flying, stored, queued):
        buffer.add(entry)
    batch = buffer.take_batch(until_seq=2, max_rows=100)
    buffer.in_flight = InFlight(batch, started=0.0, oldest_ms=flying.added_ms)
    buffer.settle(stored)
    assert buffer.oldest_ms() == flying.added_ms
    assert buffer.let_go() == [queued, flying]
    assert buffer.pending == 0 and buffer.rows_dropped == 3 and len(buffer) == 0
    buffer.settle(flying)  # a stuck write that finishes after all changes nothing
    assert buffer.pending == 0
