"""The fault drill's pure parts: its plan (faults, users, configuration) and its checks, fed
with call records and rows made up to show each kind of failure."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from nudge_server.config import parse_document
from nudge_server.drill import checks, plan
from nudge_server.drill.checks import FaultEvent, LoggedDecision, LoggedOutcome, ServerExit
from nudge_server.drill.load import CallRecord, outcome_types
from nudge_server.drill.plan import FaultKind

CAP = plan.DAILY_CAP
T0 = dt.datetime(2026, 3, 10, 9, 0, tzinfo=dt.UTC)


def decide(
    request_id: str,
    decision_id: str = "",
    *,
    code: str = "OK",
    show: bool = False,
    reason: str = "cooldown",
    user: str = "u1",
    at_s: float = 5.0,
    replayed: bool = False,
    repeat: bool = False,
) -> CallRecord:
    return CallRecord(
        rpc="decide",
        server=0,
        user_id=user,
        request_id=request_id,
        attempt=1,
        code=code,
        started_s=at_s,
        latency_s=0.004,
        decision_id=decision_id if code == "OK" else "",
        show=show if code == "OK" else False,
        reason=("ok" if show else reason) if code == "OK" else "",
        replayed=replayed,
        repeat=repeat,
    )


def outcome(
    decision_id: str, kind: str = "impression", *, code: str = "OK", recorded: bool = True
) -> CallRecord:
    return CallRecord(
        rpc="outcome",
        server=1,
        user_id="u1",
        request_id=f"{decision_id}/{kind}",
        attempt=1,
        code=code,
        started_s=6.0,
        latency_s=0.01,
        decision_id=decision_id,
        outcome_type=kind,
        recorded=recorded and code == "OK",
    )


def row(
    decision_id: str,
    request_id: str | None,
    *,
    show: bool = False,
    user: str = "u1",
    tz: str = "UTC",
    at: dt.datetime = T0,
    reason: str = "cooldown",
) -> LoggedDecision:
    return LoggedDecision(decision_id, user, tz, at, show, "ok" if show else reason, request_id)


def ids(n: int) -> list[str]:
    return [str(uuid.UUID(int=i + 1)) for i in range(n)]


def test_a_clean_drill_passes_and_says_so() -> None:
    a, b, c = ids(3)
    records = [
        decide("r1", a, show=True),
        decide("r2", b),
        decide("r3", code="UNAVAILABLE"),
        decide("r3", c, show=True, replayed=True),
        outcome(a),
        outcome(a, recorded=False),
        outcome(c, "tap", code="UNAVAILABLE"),
        outcome(c, "tap"),
    ]
    rows = [row(a, "r1", show=True), row(b, "r2"), row(c, "r3", show=True)]
    figures = checks.compute(
        records, rows, [LoggedOutcome(a, "impression"), LoggedOutcome(c, "tap")], cap=CAP
    )
    assert checks.failures(figures) == []
    assert figures.decisions_answered == 3 and figures.prompts_granted == 2
    assert figures.cut_requests == 1 and figures.decide_requests_unanswered == 0
    assert figures.outcomes_acknowledged == 2
    summary = checks.format_summary(figures, header=["drill"], faults=[], exits=[])
    assert summary.endswith("result: PASS")
    assert "cap violations:               0" in summary
    assert "answered decisions lost:      0" in summary
    assert "INTERNAL:                     0" in summary


def test_prompts_are_counted_per_local_day_in_the_users_own_time_zone() -> None:
    # Five prompts within one UTC day, but in Kiritimati (UTC+14) three fall on 10 March and two
    # on 11 March (10:30 UTC is 00:30 there).
    kiritimati = [
        T0.replace(hour=h, minute=m) for h, m in ((6, 0), (8, 0), (9, 59), (10, 30), (11, 0))
    ]
    rows = [
        row(d, f"k{i}", show=True, user="k", tz="Pacific/Kiritimati", at=at)
        for i, (d, at) in enumerate(zip(ids(5), kiritimati, strict=True))
    ]
    most, violations = checks.cap_violations(rows, cap=3)
    assert most == 3 and violations == []
    # Four in one local day of Pago Pago (UTC-11), although they span two UTC days.
    pago = [
        T0.replace(hour=12),
        T0.replace(hour=20),
        T0.replace(hour=23),
        T0 + dt.timedelta(hours=16),
    ]
    rows = [
        row(d, f"p{i}", show=True, user="p", tz="Pacific/Pago_Pago", at=at)
        for i, (d, at) in enumerate(zip(ids(4), pago, strict=True))
    ]
    most, violations = checks.cap_violations(rows, cap=3)
    assert most == 4
    assert violations == [checks.CapViolation("p", dt.date(2026, 3, 10), 4)]


def test_a_cap_violation_fails_the_drill() -> None:
    decisions = ids(4)
    records = [decide(f"r{i}", d, show=True) for i, d in enumerate(decisions)]
    rows = [row(d, f"r{i}", show=True) for i, d in enumerate(decisions)]
    problems = checks.failures(checks.compute(records, rows, [], cap=3))
    assert problems == ["1 users over the daily cap of 3 in a local day (e.g. u1 2026-03-10 4)"]


def test_lost_duplicated_and_unexplained_decisions_fail_but_rows_of_cut_calls_do_not() -> None:
    a, b, d, e = ids(4)
    records = [
        decide("r1", a, show=True),
        decide("r2", b),
        decide("r3", code="DEADLINE_EXCEEDED"),  # decided by the server, answer lost
        decide("r3", code="UNAVAILABLE"),
    ]
    rows = [
        row(a, "r1", show=True),
        row(a, "r1", show=True),  # twice (a log partitioned by time could allow it)
        row(d, "r3"),  # the cut call's row
        row(e, "never-sent"),
    ]
    figures = checks.compute(records, rows, [], cap=CAP)
    assert figures.decisions_lost == [b]
    assert figures.decisions_duplicated == [a]
    assert figures.rows_of_cut_calls == 1
    assert figures.rows_unexplained == [e]
    assert figures.decide_requests_unanswered == 1
    problems = checks.failures(figures)
    assert len(problems) == 3
    assert problems[0].startswith(f"1 answered decisions missing in PostgreSQL (e.g. {b})")


def test_a_logged_show_flag_must_be_the_answered_one() -> None:
    a, b = ids(2)
    # b: first answered "unavailable", then its retry returned the grant Redis had recorded:
    # the log must say shown.
    records = [
        decide("r1", a, show=True),
        decide("r2", b, reason="unavailable"),
        decide("r2", b, show=True, replayed=True, repeat=True),
    ]
    figures = checks.compute(records, [row(a, "r1"), row(b, "r2", show=True)], [], cap=CAP)
    assert figures.show_mismatches == [a]
    assert figures.prompts_granted == 2


def test_outcomes_lost_duplicated_or_counted_twice_fail() -> None:
    a, b = ids(2)
    records = [
        decide("r1", a, show=True),
        decide("r2", b, show=True),
        outcome(a),
        outcome(a, recorded=True),  # a repeat that counted again
        outcome(b, "tap"),
        outcome(b, "dismiss", code="UNAVAILABLE"),
    ]
    logged = [LoggedOutcome(a, "impression"), LoggedOutcome(a, "impression")]
    rows = [row(a, "r1", show=True), row(b, "r2", show=True)]
    figures = checks.compute(records, rows, logged, cap=CAP)
    assert figures.outcomes_lost == [f"{b}/tap"]
    assert figures.outcomes_duplicated == [f"{a}/impression"]
    assert figures.outcomes_counted_twice == [f"{a}/impression"]
    assert len(checks.failures(figures)) == 3


def test_a_repeat_must_return_the_first_decision_unless_redis_failed_safe() -> None:
    a, b, c, d = ids(4)
    records = [
        decide("r1", a, show=True),
        decide("r1", a, show=True, replayed=True, repeat=True),
        decide("r2", b),
        decide("r2", c, reason="unavailable", repeat=True),  # fail-safe: a fresh decision
        decide("r3", d),
        decide("r3", str(uuid.uuid4()), repeat=True),  # not deduplicated
    ]
    figures = checks.compute(records, [], [], cap=CAP)
    assert figures.decide_repeats == 3
    assert figures.repeats_unavailable == 1
    assert figures.repeats_not_deduplicated == ["r3"]
    assert figures.reasons == {"ok": 1, "cooldown": 2}


def test_internal_and_unknown_fail_and_cancelled_only_outside_a_shutdown() -> None:
    a = ids(1)[0]
    records = [
        decide("r1", a, show=True),
        decide("r2", code="INTERNAL"),
        decide("r3", code="UNKNOWN"),
        decide("r4", code="CANCELLED", at_s=30.2),  # server-0 was shutting down
        decide("r5", code="CANCELLED", at_s=50.0),
        outcome(a, code="INVALID_ARGUMENT"),
    ]
    exits = [ServerExit("server-0", 0, 1.5, started_s=29.0)]
    figures = checks.compute(records, [row(a, "r1", show=True)], [], cap=CAP, exits=exits)
    assert figures.internal == 1 and figures.unknown == 1
    assert figures.cancelled_in_shutdowns == 1
    assert figures.unexpected == {
        "INTERNAL": 1,
        "UNKNOWN": 1,
        "CANCELLED": 1,
        "INVALID_ARGUMENT": 1,
    }
    problems = checks.failures(figures, exits)
    assert "1 calls answered INTERNAL (1x 'decide: ')" in problems
    assert len(problems) == 4


def test_a_server_that_exits_non_zero_after_sigterm_fails_the_drill() -> None:
    a = ids(1)[0]
    figures = checks.compute([decide("r1", a, show=True)], [row(a, "r1", show=True)], [], cap=CAP)
    problems = checks.failures(figures, [ServerExit("server-1", 1, 3.0)])
    assert problems == ["server-1 exited with status 1 after SIGTERM"]


def test_a_drill_that_decided_nothing_fails() -> None:
    figures = checks.compute([decide("r1", code="UNAVAILABLE")], [], [], cap=CAP)
    assert checks.failures(figures)[0].startswith("the load got no decision")


def test_unavailable_answers_are_split_by_the_redis_faults() -> None:
    records = [
        decide(f"r{i}", d, reason="unavailable", at_s=at)
        for i, (d, at) in enumerate(zip(ids(3), (10.0, 13.5, 40.0), strict=True))
    ]
    faults = [FaultEvent(FaultKind.REDIS_KILL.value, 9.0, 12.0)]
    figures = checks.compute(records, [], [], cap=CAP, faults=faults)
    assert figures.unavailable_answers == 3
    assert figures.unavailable_outside_redis_faults == 1


def test_the_fault_plan_covers_every_fault_in_order_and_scales() -> None:
    steps = plan.fault_plan(180, servers=2)
    assert {s.kind for s in steps} == set(FaultKind)
    assert [s.at_s for s in steps] == sorted(s.at_s for s in steps)
    assert all(s.at_s + s.hold_s < 180 * 0.85 for s in steps)
    restarts = [s.server for s in steps if "SERVER" in s.kind.name]
    assert restarts == [0, 1, 0]
    short = plan.fault_plan(20, servers=1)
    assert min(s.hold_s for s in short if s.hold_s) >= 1.0
    assert {s.server for s in short} == {0}
    with pytest.raises(ValueError, match="at least 20"):
        plan.fault_plan(10, servers=2)


def test_users_join_over_time_across_the_time_zones() -> None:
    users = plan.drill_users(400, duration_s=100)
    assert len({u.user_id for u in users}) == 400
    assert {u.time_zone for u in users} == set(plan.TIME_ZONES)
    assert plan.active_count(users, 0.0) == 100
    assert plan.active_count(users, 40.0) == 250
    assert plan.active_count(users, 80.0) == 400
    assert [u.joins_at_s for u in users] == sorted(u.joins_at_s for u in users)


def test_the_drill_configuration_is_valid_and_leaves_the_daily_cap_binding() -> None:
    apps, campaigns = parse_document(plan.drill_config())
    (app,) = apps
    assert app.app_id == plan.APP_ID
    assert app.policy.daily_cap == CAP
    assert app.policy.min_interval_s == plan.MIN_INTERVAL_S
    assert not app.policy.adaptive
    assert [c.campaign_id for c in campaigns] == [plan.CAMPAIGN_ID]


def test_outcome_types_start_with_an_impression_or_a_response() -> None:
    import random

    rng = random.Random(3)
    seen = [outcome_types(rng) for _ in range(500)]
    assert all(set(t) <= {"impression", "tap", "dismiss", "conversion"} for t in seen)
    assert all(len([k for k in t if k != "impression"]) <= 1 for t in seen)
    assert any(t == ("impression", "tap") for t in seen)
