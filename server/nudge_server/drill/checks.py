"""The drill's verdict: figures from the client's call records and PostgreSQL's rows, the
checks they must pass, and the printed summary. Pure: no I/O.

The checks:
- no user got more prompts (`show = true` in `decisions`) in one local calendar day, in their
  own time zone, than the daily cap;
- every decision the client got an OK answer for is in `decisions`, exactly once; a row no
  client was answered about must belong to a call that was cut (an attempt that failed: the
  server may have decided before the answer was lost); its show flag is the one answered;
- every acknowledged ReportOutcome (an OK answer) is in `outcomes`, exactly once, and a repeat
  of it never counted again (`recorded=true` twice);
- a Decide sent again with the same client_request_id came back `replayed`, same decision;
- no call got INTERNAL, UNKNOWN or any code other than OK, UNAVAILABLE and DEADLINE_EXCEEDED
  (CANCELLED is counted apart, and allowed, for calls that reached a server as it shut down);
- every server exited 0 after SIGTERM.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from .load import CallRecord

#: Codes a call may get during the drill: answers, and the failures of a restarting server.
EXPECTED_CODES = frozenset({"OK", "UNAVAILABLE", "DEADLINE_EXCEEDED"})
#: Faults whose windows make REASON_UNAVAILABLE answers expected.
REDIS_FAULT_MARK = "redis"
#: A CANCELLED answer this soon after a server exited still counts as cut by its shutdown.
SHUTDOWN_SLACK_S = 1.0
#: A REASON_UNAVAILABLE answer this soon after a Redis fault ended still counts as inside it
#: (connections are re-made, scripts loaded again).
REDIS_RECOVERY_S = 2.0


@dataclass(frozen=True)
class LoggedDecision:
    """A row of `decisions`, the columns the checks need."""

    decision_id: str
    user_id: str
    time_zone: str
    decided_at: dt.datetime
    show: bool
    reason: str
    client_request_id: str | None


@dataclass(frozen=True)
class LoggedOutcome:
    """A row of `outcomes`, the columns the checks need."""

    decision_id: str
    type: str


@dataclass(frozen=True)
class FaultEvent:
    """A fault as it happened: its label, its window in seconds into the load, and notes."""

    label: str
    started_s: float
    ended_s: float
    notes: str = ""

    @property
    def seconds(self) -> float:
        return self.ended_s - self.started_s


@dataclass(frozen=True)
class ServerExit:
    """A server process that was sent SIGTERM: its exit status and how long it took."""

    server: str
    status: int
    seconds: float
    while_postgres_down: bool = False
    #: When SIGTERM was sent, in seconds into the load.
    started_s: float = 0.0


@dataclass(frozen=True)
class CapViolation:
    user_id: str
    local_day: dt.date
    prompts: int


@dataclass
class Figures:
    """Everything the summary prints."""

    cap: int
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: Calls answered with a code other than the expected ones (INTERNAL, UNKNOWN, ...).
    unexpected: Counter[str] = field(default_factory=Counter)
    #: Per unexpected code, its details (with the RPC's name) and how often each came.
    unexpected_details: dict[str, Counter[str]] = field(default_factory=dict)
    #: CANCELLED answers to calls that reached a server as it shut down, before a handler took
    #: them (gRPC core cancels those: grpc/grpc#41785); the call did nothing, a retry is safe.
    cancelled_in_shutdowns: int = 0
    decide_requests: int = 0
    decide_requests_unanswered: int = 0
    decisions_answered: int = 0
    prompts_granted: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    unavailable_answers: int = 0
    unavailable_outside_redis_faults: int = 0
    decide_latency_s: tuple[float, float, float] | None = None
    decisions_logged: int = 0
    decisions_lost: list[str] = field(default_factory=list)
    decisions_duplicated: list[str] = field(default_factory=list)
    rows_of_cut_calls: int = 0
    cut_requests: int = 0
    rows_unexplained: list[str] = field(default_factory=list)
    show_mismatches: list[str] = field(default_factory=list)
    prompts_logged: int = 0
    most_prompts_in_a_day: int = 0
    cap_violations: list[CapViolation] = field(default_factory=list)
    outcomes_acknowledged: int = 0
    #: Outcomes whose every attempt failed (the client gave up on them).
    outcomes_given_up: int = 0
    outcomes_recorded: int = 0
    outcomes_logged: int = 0
    outcomes_lost: list[str] = field(default_factory=list)
    outcomes_duplicated: list[str] = field(default_factory=list)
    outcomes_counted_twice: list[str] = field(default_factory=list)
    outcome_rows_of_unacknowledged_calls: int = 0
    decide_repeats: int = 0
    repeats_unavailable: int = 0
    repeats_not_deduplicated: list[str] = field(default_factory=list)
    outcome_repeats: int = 0

    @property
    def internal(self) -> int:
        return self.unexpected["INTERNAL"]

    @property
    def unknown(self) -> int:
        return self.unexpected["UNKNOWN"]


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile of sorted `values` (share in [0, 1])."""
    if not values:
        raise ValueError("no values")
    rank = max(1, math.ceil(share * len(values)))
    return values[rank - 1]


def local_day(at: dt.datetime, time_zone: str) -> dt.date:
    """The calendar day of `at` in `time_zone`."""
    return at.astimezone(ZoneInfo(time_zone)).date()


def cap_violations(decisions: Iterable[LoggedDecision], cap: int) -> tuple[int, list[CapViolation]]:
    """The most prompts any user got in one local day, and every (user, day) over `cap`."""
    per_day: Counter[tuple[str, dt.date]] = Counter()
    for row in decisions:
        if row.show:
            per_day[(row.user_id, local_day(row.decided_at, row.time_zone))] += 1
    violations = [
        CapViolation(user, day, n) for (user, day), n in sorted(per_day.items()) if n > cap
    ]
    return max(per_day.values(), default=0), violations


def answered_decisions(records: Iterable[CallRecord]) -> set[str]:
    """The decision ids of every Decide answered OK."""
    return {r.decision_id for r in records if r.rpc == "decide" and r.code == "OK"}


def acknowledged_outcomes(records: Iterable[CallRecord]) -> set[tuple[str, str]]:
    """(decision id, type) of every ReportOutcome answered OK."""
    return {
        (r.decision_id, r.outcome_type) for r in records if r.rpc == "outcome" and r.code == "OK"
    }


def _in_windows(at_s: float, windows: Sequence[tuple[float, float]], slack_s: float) -> bool:
    return any(start <= at_s <= end + slack_s for start, end in windows)


def compute(
    records: Sequence[CallRecord],
    decisions: Sequence[LoggedDecision],
    outcomes: Sequence[LoggedOutcome],
    *,
    cap: int,
    faults: Sequence[FaultEvent] = (),
    exits: Sequence[ServerExit] = (),
) -> Figures:
    """The figures of a drill from the client's records and the app's rows in PostgreSQL.

    Deliberate repeats count like any call (an answer to one is an answered decision: a repeat
    answered "unavailable" was decided afresh), except that only they are checked for being
    replays of the first answer.
    """
    figures = Figures(cap=cap)
    redis_windows = [
        (f.started_s, f.ended_s) for f in faults if REDIS_FAULT_MARK in f.label.lower()
    ]
    shutdown_windows = [(e.started_s, e.started_s + e.seconds) for e in exits]
    for record in records:
        figures.calls[(record.rpc, record.code)] += 1
        if record.code in EXPECTED_CODES:
            continue
        if record.code == "CANCELLED" and _in_windows(
            record.started_s, shutdown_windows, SHUTDOWN_SLACK_S
        ):
            figures.cancelled_in_shutdowns += 1
            continue
        figures.unexpected[record.code] += 1
        figures.unexpected_details.setdefault(record.code, Counter())[
            f"{record.rpc}: {record.detail[:160]}"
        ] += 1

    # --- the client's side of the decisions
    decides = [r for r in records if r.rpc == "decide"]
    answered_show: dict[str, bool] = {}
    request_answered: dict[str, bool] = {}
    first_answer: dict[str, str] = {}
    cut_requests: set[str] = set()
    latencies = []
    for r in decides:
        request_answered[r.request_id] = request_answered.get(r.request_id, False) or (
            r.code == "OK"
        )
        if r.code != "OK":
            cut_requests.add(r.request_id)
            continue
        latencies.append(r.latency_s)
        answered_show[r.decision_id] = answered_show.get(r.decision_id, False) or r.show
        if r.reason == "unavailable":
            figures.unavailable_answers += 1
            if not _in_windows(r.started_s, redis_windows, REDIS_RECOVERY_S):
                figures.unavailable_outside_redis_faults += 1
        if not r.repeat:
            figures.reasons[r.reason] += 1
            first_answer.setdefault(r.request_id, r.decision_id)
            continue
        # A deliberate repeat: the same decision again, marked replayed, unless Redis did not
        # answer in time (then it fails safe with a fresh "unavailable" decision).
        figures.decide_repeats += 1
        if r.reason == "unavailable":
            figures.repeats_unavailable += 1
        elif not r.replayed or r.decision_id != first_answer.get(r.request_id):
            figures.repeats_not_deduplicated.append(r.request_id)
    figures.decide_requests = len(request_answered)
    figures.decide_requests_unanswered = sum(not ok for ok in request_answered.values())
    figures.decisions_answered = len(answered_show)
    figures.prompts_granted = sum(answered_show.values())
    figures.cut_requests = len(cut_requests)
    if latencies:
        latencies.sort()
        figures.decide_latency_s = (
            percentile(latencies, 0.5),
            percentile(latencies, 0.99),
            latencies[-1],
        )

    # --- PostgreSQL's side of the decisions
    logged: dict[str, LoggedDecision] = {}
    seen: Counter[str] = Counter()
    for row in decisions:
        seen[row.decision_id] += 1
        logged[row.decision_id] = row
    figures.decisions_logged = len(decisions)
    figures.decisions_duplicated = sorted(d for d, n in seen.items() if n > 1)
    figures.decisions_lost = sorted(d for d in answered_show if d not in logged)
    for decision_id, row in logged.items():
        if decision_id in answered_show:
            if row.show != answered_show[decision_id]:
                figures.show_mismatches.append(decision_id)
        elif row.client_request_id in cut_requests:
            figures.rows_of_cut_calls += 1
        else:
            figures.rows_unexplained.append(decision_id)
    figures.prompts_logged = sum(row.show for row in logged.values())
    figures.most_prompts_in_a_day, figures.cap_violations = cap_violations(logged.values(), cap)

    # --- outcomes
    acknowledged = acknowledged_outcomes(records)
    recorded: Counter[tuple[str, str]] = Counter()
    for r in records:
        if r.rpc == "outcome" and r.code == "OK":
            figures.outcome_repeats += r.repeat
            if r.recorded:
                recorded[(r.decision_id, r.outcome_type)] += 1
    logged_outcomes: Counter[tuple[str, str]] = Counter((o.decision_id, o.type) for o in outcomes)
    figures.outcomes_acknowledged = len(acknowledged)
    figures.outcomes_recorded = len(recorded)
    figures.outcomes_logged = len(outcomes)
    figures.outcomes_lost = sorted(f"{d}/{t}" for d, t in acknowledged - set(logged_outcomes))
    figures.outcomes_duplicated = sorted(
        f"{d}/{t}" for (d, t), n in logged_outcomes.items() if n > 1
    )
    figures.outcomes_counted_twice = sorted(f"{d}/{t}" for (d, t), n in recorded.items() if n > 1)
    figures.outcome_rows_of_unacknowledged_calls = len(set(logged_outcomes) - acknowledged)
    attempted = {(r.decision_id, r.outcome_type) for r in records if r.rpc == "outcome"}
    figures.outcomes_given_up = len(attempted - acknowledged)
    return figures


def failures(figures: Figures, exits: Sequence[ServerExit] = ()) -> list[str]:
    """What went wrong, one line each; empty when the drill passed."""
    found = []

    def check(count: int, what: str, examples: Sequence[object] = ()) -> None:
        if count:
            shown = f" (e.g. {', '.join(str(e) for e in examples[:3])})" if examples else ""
            found.append(f"{count} {what}{shown}")

    if figures.decisions_answered == 0 or figures.prompts_granted == 0:
        found.append("the load got no decision (or no prompt) answered: nothing was tested")
    check(
        len(figures.cap_violations),
        f"users over the daily cap of {figures.cap} in a local day",
        [f"{v.user_id} {v.local_day} {v.prompts}" for v in figures.cap_violations],
    )
    check(
        len(figures.decisions_lost),
        "answered decisions missing in PostgreSQL",
        figures.decisions_lost,
    )
    check(
        len(figures.decisions_duplicated),
        "decisions logged more than once",
        figures.decisions_duplicated,
    )
    check(
        len(figures.rows_unexplained),
        "logged decisions that no call was answered or cut for",
        figures.rows_unexplained,
    )
    check(
        len(figures.show_mismatches),
        "logged decisions whose show flag differs from the answer",
        figures.show_mismatches,
    )
    check(
        len(figures.outcomes_lost),
        "acknowledged outcomes missing in PostgreSQL",
        figures.outcomes_lost,
    )
    check(
        len(figures.outcomes_duplicated),
        "outcomes logged more than once",
        figures.outcomes_duplicated,
    )
    check(
        len(figures.outcomes_counted_twice),
        "outcomes answered recorded=true twice",
        figures.outcomes_counted_twice,
    )
    check(
        len(figures.repeats_not_deduplicated),
        "repeated Decides (same client_request_id) not answered with the same decision",
        figures.repeats_not_deduplicated,
    )
    for code, n in sorted(figures.unexpected.items()):
        details = figures.unexpected_details.get(code, Counter()).most_common(2)
        shown = "; ".join(f"{n}x {detail!r}" for detail, n in details)
        found.append(f"{n} calls answered {code}" + (f" ({shown})" if shown else ""))
    for server_exit in exits:
        if server_exit.status != 0:
            found.append(
                f"{server_exit.server} exited with status {server_exit.status} after SIGTERM"
            )
    return found


def _codes(calls: Counter[tuple[str, str]], rpc: str) -> str:
    mine = sorted(((code, n) for (r, code), n in calls.items() if r == rpc), key=lambda c: -c[1])
    return "  ".join(f"{code} {n}" for code, n in mine) or "none"


def format_summary(
    figures: Figures,
    *,
    header: Sequence[str],
    faults: Sequence[FaultEvent],
    exits: Sequence[ServerExit],
    extra: Sequence[str] = (),
    problems: Sequence[str] = (),
) -> str:
    """The printed summary: what was done, the figures, the checks and the verdict."""
    f = figures
    lines = [*header, "faults (seconds into the load):"]
    for fault in faults:
        notes = f"; {fault.notes}" if fault.notes else ""
        lines.append(
            f"  {fault.started_s:6.1f} to {fault.ended_s:6.1f}  {fault.label}: "
            f"{fault.seconds:.1f} s{notes}"
        )
    for server_exit in exits:
        note = " (postgresql down)" if server_exit.while_postgres_down else ""
        lines.append(
            f"  SIGTERM {server_exit.server}{note}: exit status {server_exit.status} after "
            f"{server_exit.seconds:.1f} s"
        )
    lines += [
        "calls by status code:",
        f"  Decide          {_codes(f.calls, 'decide')}",
        f"  ReportOutcome   {_codes(f.calls, 'outcome')}",
        (
            f"Decide requests:        {f.decide_requests} ({f.decide_requests_unanswered} unanswered "
            f"after every retry; {f.cut_requests} needed a retry)"
        ),
        f"decisions answered:     {f.decisions_answered}",
        f"prompts granted:        {f.prompts_granted} (answered show=true)",
        "answers by reason:      (repeats left out) "
        + "  ".join(f"{reason} {n}" for reason, n in f.reasons.most_common()),
        (
            f"REASON_UNAVAILABLE:     {f.unavailable_answers} answers "
            f"({f.unavailable_outside_redis_faults} outside the Redis faults and "
            f"{REDIS_RECOVERY_S:g} s after them)"
        ),
    ]
    if f.decide_latency_s is not None:
        p50, p99, top = (1000 * x for x in f.decide_latency_s)
        lines.append(
            f"Decide latency (client): p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {top:.2f} ms"
        )
    lines += [
        (
            f"ReportOutcome:          {f.outcomes_acknowledged} acknowledged ({f.outcomes_recorded} "
            f"recorded=true, {f.outcomes_given_up} given up after every retry); "
            f"{f.outcome_repeats} deliberate repeats"
        ),
        *extra,
        "checks, from PostgreSQL:",
        (
            f"  cap violations:               {len(f.cap_violations)} (the most prompts to one user "
            f"in one local day: {f.most_prompts_in_a_day}; cap {f.cap})"
        ),
        (
            f"  answered decisions lost:      {len(f.decisions_lost)} (of {f.decisions_answered}; "
            f"{f.decisions_logged} rows of app drill, {f.prompts_logged} shown)"
        ),
        f"  decisions duplicated:         {len(f.decisions_duplicated)}",
        (
            f"  rows of calls cut:            {f.rows_of_cut_calls} (decided, answer lost; of "
            f"{f.cut_requests} requests that needed a retry)"
        ),
        f"  rows unexplained:             {len(f.rows_unexplained)}",
        f"  show flag differs from answer: {len(f.show_mismatches)}",
        (
            f"  acknowledged outcomes lost:   {len(f.outcomes_lost)} (of {f.outcomes_acknowledged}; "
            f"{f.outcomes_logged} rows, {f.outcome_rows_of_unacknowledged_calls} of calls not "
            "acknowledged)"
        ),
        f"  outcomes duplicated:          {len(f.outcomes_duplicated)}",
        f"  outcomes counted twice:       {len(f.outcomes_counted_twice)}",
        (
            f"  repeats not deduplicated:     {len(f.repeats_not_deduplicated)} (of {f.decide_repeats} "
            f"Decides sent again with the same client_request_id; {f.repeats_unavailable} "
            "answered unavailable)"
        ),
        f"  INTERNAL:                     {f.internal}",
        f"  UNKNOWN:                      {f.unknown}",
        (
            f"  other unexpected codes:       {sum(f.unexpected.values()) - f.internal - f.unknown}"
            f" (CANCELLED by a server's shutdown, not counted: {f.cancelled_in_shutdowns})"
        ),
    ]
    if problems:
        lines.append("FAILED:")
        lines += [f"  {p}" for p in problems]
    else:
        lines.append("result: PASS")
    return "\n".join(lines)
