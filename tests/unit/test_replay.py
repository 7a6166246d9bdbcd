"""The replay: rows to requests, the user hash, the summary maths, and its loop against an
in-process fake DecisionService (loopback gRPC; no Redis or PostgreSQL)."""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import grpc
import grpc.aio
import pytest
from nudge.v1 import decision_pb2, decision_pb2_grpc
from nudge_server import replay
from nudge_server.replay import (
    DatabaseCounts,
    LoggedEvent,
    Tally,
    decide_request,
    format_summary,
    parse_row,
    parse_rows,
    percentile,
    read_csv,
    summarize,
    user_id_for,
    wilson_interval,
)

ROOT = Path(__file__).resolve().parents[2]
FEATURES = (
    "81ce123cbb5bd8ce818f60fb3586bba5",
    "03a5648a76832f83c859d46bc06cb64a",
    "c2e4f76cdbabecd33b8c762aeef386b3",
    "f97571b9c14a786aab269f0b427d2a85",
)


def row(
    index: str, timestamp: str, item: str = "14", click: str = "0", **extra: str
) -> dict[str, str]:
    """A CSV row as csv.DictReader gives it (the trimmed copy's columns)."""
    base = {
        "index": index,
        "timestamp": timestamp,
        "item_id": item,
        "position": "3",
        "click": click,
        "propensity_score": "0.0125",
    }
    base.update({f"user_feature_{i}": value for i, value in enumerate(FEATURES)})
    base.update(extra)
    return base


# --- the user hash ------------------------------------------------------------------------------


def test_user_id_is_a_stable_short_hash() -> None:
    # A fixed vector: the id must not change between runs, machines or Python versions
    # (so it is not Python's salted hash()).
    assert user_id_for(FEATURES) == "u-b9dc18e436ac"
    assert user_id_for(list(FEATURES)) == user_id_for(FEATURES)


def test_user_id_depends_on_every_feature_and_their_order() -> None:
    ids = {user_id_for(FEATURES)}
    for i in range(4):
        changed = list(FEATURES)
        changed[i] = "0" * 32
        ids.add(user_id_for(changed))
    ids.add(user_id_for(tuple(reversed(FEATURES))))
    # Joining with a separator: ("ab", "c") and ("a", "bc") are different users.
    assert user_id_for(("ab", "c", "d", "e")) != user_id_for(("a", "bc", "d", "e"))
    assert len(ids) == 6


# --- rows to requests ---------------------------------------------------------------------------


def test_row_becomes_a_decide_request() -> None:
    event = parse_row(row("7", "2019-11-24 00:00:34.762830+00:00", item="14", click="1"), 0)
    assert event == LoggedEvent(
        index=7,
        time=dt.datetime(2019, 11, 24, 0, 0, 34, 762830, tzinfo=dt.UTC),
        item_id=14,
        position=3,
        click=True,
        propensity=0.0125,
        user_id="u-b9dc18e436ac",
    )
    assert event.arm_id == "item-14"
    assert decide_request(event) == {
        "app_id": "obd",
        "user_id": "u-b9dc18e436ac",
        "event_name": "item_slot_view",
        "properties": {"position": 3},
        "channel": "in_app",
        "surface": "slot-3",
        "time_zone": "Asia/Tokyo",
        "locale": "ja-JP",
        "platform": "web",
        "client_request_id": "obd-7",
        "event_time": dt.datetime(2019, 11, 24, 0, 0, 34, 762830, tzinfo=dt.UTC),
    }


def test_row_index_from_the_original_unnamed_column_or_the_position() -> None:
    original = row("", "2019-11-24 00:00:34+00:00")
    del original["index"]
    original[""] = "42"
    assert parse_row(original, 3).index == 42
    missing = row("", "2019-11-24 00:00:34+00:00")
    del missing["index"]
    assert parse_row(missing, 3).index == 3


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"timestamp": "2019-11-24 00:00:34"}, "no UTC offset"),
        ({"item_id": "x"}, "row 5"),
        ({"timestamp": "yesterday"}, "row 5"),
    ],
)
def test_malformed_rows_are_rejected(change: dict[str, str], message: str) -> None:
    broken = row("1", "2019-11-24 00:00:34+00:00")
    broken.update(change)
    with pytest.raises(ValueError, match=message):
        parse_row(broken, 5)


def test_missing_column_is_named() -> None:
    broken = row("1", "2019-11-24 00:00:34+00:00")
    del broken["click"]
    with pytest.raises(ValueError, match="'click'"):
        parse_row(broken, 5)


def test_rows_are_sorted_by_time_stably_and_limited() -> None:
    rows = [
        row("0", "2019-11-24 00:00:02+00:00"),
        row("1", "2019-11-24 00:00:01+00:00"),
        row("2", "2019-11-24 00:00:02+00:00"),
        row("3", "2019-11-24 09:00:00+09:00"),  # 00:00:00 UTC: sorted by instant, not by text
        row("4", "2019-11-23 00:00:00+00:00"),  # beyond the limit
    ]
    assert [event.index for event in parse_rows(rows, limit=4)] == [3, 1, 0, 2]
    assert len(parse_rows(rows)) == 5
    assert parse_rows(rows, limit=0) == []


def test_the_bundled_sample_is_the_whole_random_all_log() -> None:
    events = parse_rows(read_csv(ROOT / "data" / "obd" / "random_all.csv.gz"))
    assert len(events) == 10_000
    assert [event.index for event in events] == list(range(10_000))  # already in time order
    assert sum(event.click for event in events) == 38  # the README's 0.38%
    assert {event.item_id for event in events} == set(range(80))
    assert {event.position for event in events} == {1, 2, 3}
    assert {event.propensity for event in events} == {0.0125}
    assert len({event.user_id for event in events}) == 240


# --- the maths ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("successes", "trials", "low", "high"),
    [
        # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I.
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
        (29, 29, 0.8830, 1.0),
        (5, 10, 0.2366, 0.7634),
    ],
)
def test_wilson_interval_matches_published_values(
    successes: int, trials: int, low: float, high: float
) -> None:
    got_low, got_high = wilson_interval(successes, trials)
    assert got_low == pytest.approx(low, abs=5e-5)
    assert got_high == pytest.approx(high, abs=5e-5)


def test_wilson_interval_edges() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    with pytest.raises(ValueError):
        wilson_interval(-1, 2)


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # unsorted on purpose
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile(values, 0)


def tally() -> Tally:
    return Tally(
        rows=10_000,
        logged_clicks=38,
        decisions=10_000,
        decision_ids={f"id-{n}" for n in range(10_000)},
        granted=2_000,
        no_reasons=Counter({"quiet_hours": 3_000, "cooldown": 3_000, "daily_cap": 2_000}),
        matched=25,
        matched_clicks=1,
        outcomes_recorded=Counter({"impression": 25, "tap": 1}),
        latencies_ms=[float(v) for v in range(1, 101)],
    )


def test_summary_maths() -> None:
    database = DatabaseCounts(
        decisions=10_000, outcomes={"impression": 25, "tap": 1}, app_decisions=10_000
    )
    summary = summarize(tally(), database, server_stop="stopped")
    assert summary.replay_rate == pytest.approx(0.04)
    assert summary.replay_interval == wilson_interval(1, 25)
    assert summary.logged_rate == pytest.approx(0.0038)
    assert summary.logged_interval[0] == pytest.approx(0.002770, abs=1e-6)
    assert summary.logged_interval[1] == pytest.approx(0.005211, abs=1e-6)
    # "no"s sorted by count (largest first), ties by name.
    assert summary.no_reasons == (("cooldown", 3_000), ("quiet_hours", 3_000), ("daily_cap", 2_000))
    assert (summary.latency_p50_ms, summary.latency_p99_ms, summary.latency_max_ms) == (
        50.0,
        99.0,
        100.0,
    )
    assert summary.decisions_match is True
    assert summary.outcomes_match is True
    assert summary.ok


def test_summary_without_matches_has_no_rate() -> None:
    empty = Tally(rows=10, logged_clicks=0, decisions=10, decision_ids={"a"})
    summary = summarize(empty)
    assert summary.replay_rate is None
    assert summary.replay_interval == (0.0, 1.0)
    assert math.isnan(summary.latency_p50_ms)
    assert summary.decisions_match is None
    assert not summary.ok  # nothing was counted in PostgreSQL
    assert "PostgreSQL:             not counted" in format_summary(summary)


@pytest.mark.parametrize(
    ("decisions", "outcomes", "errors"),
    [
        (9_999, {"impression": 25, "tap": 1}, {}),
        (10_000, {"impression": 25}, {}),
        (10_000, {"impression": 25, "tap": 1}, {"Decide/UNAVAILABLE": 1}),
    ],
)
def test_summary_is_not_ok_when_rows_are_missing_or_calls_failed(
    decisions: int, outcomes: dict[str, int], errors: dict[str, int]
) -> None:
    counts = tally()
    counts.errors.update(errors)
    summary = summarize(counts, DatabaseCounts(decisions, outcomes, decisions))
    assert not summary.ok


def test_formatted_summary() -> None:
    database = DatabaseCounts(
        decisions=9_999, outcomes={"impression": 25, "tap": 1}, app_decisions=9_999
    )
    text = format_summary(summarize(tally(), database, server_stop="stopped with SIGTERM"))
    lines = text.splitlines()
    assert "decisions made:         10000" in lines
    assert "prompts granted:        2000 (20.00% of decisions)" in lines
    assert lines.index("  cooldown              3000") < lines.index("  daily_cap             2000")
    assert any(
        line.startswith("replay click rate:      4.00% (1 clicks in 25 matched") for line in lines
    )
    assert any(
        line.startswith("logged policy:          0.38% (38 clicks in 10000 rows") for line in lines
    )
    assert "Decide latency (client): p50 50.00 ms, p99 99.00 ms, max 100.00 ms" in lines
    assert "server:                 stopped with SIGTERM" in lines
    assert any(line.startswith("decisions in PostgreSQL == decisions made: NO") for line in lines)


def test_cli_rejects_a_negative_limit(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        replay.main(["--limit", "-1"])
    assert exit_info.value.code == 2
    assert "--limit" in capsys.readouterr().err


# --- the replay loop, against an in-process fake DecisionService --------------------------------


class ScriptedDecisions(decision_pb2_grpc.DecisionServiceServicer):
    """Shows the arm `choose(request)` names (or nothing for None); records every outcome."""

    def __init__(self, choose: Callable[[decision_pb2.DecideRequest], str | None]) -> None:
        self.choose = choose
        self.requests: list[decision_pb2.DecideRequest] = []
        self.outcomes: list[tuple[str, int]] = []

    async def Decide(
        self, request: decision_pb2.DecideRequest, context: grpc.aio.ServicerContext
    ) -> decision_pb2.DecideResponse:
        self.requests.append(request)
        arm = self.choose(request)
        decision_id = str(uuid.uuid4())
        if arm is None:
            return decision_pb2.DecideResponse(
                decision_id=decision_id, reason=decision_pb2.REASON_COOLDOWN
            )
        return decision_pb2.DecideResponse(
            show=True,
            decision_id=decision_id,
            reason=decision_pb2.REASON_OK,
            campaign_id="all",
            arm_id=arm,
        )

    async def ReportOutcome(
        self, request: decision_pb2.ReportOutcomeRequest, context: grpc.aio.ServicerContext
    ) -> decision_pb2.ReportOutcomeResponse:
        self.outcomes.append((request.decision_id, request.type))
        return decision_pb2.ReportOutcomeResponse(recorded=True)


@contextlib.asynccontextmanager
async def fake_server(servicer: ScriptedDecisions) -> AsyncIterator[str]:
    server = grpc.aio.server()
    decision_pb2_grpc.add_DecisionServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


def events() -> list[LoggedEvent]:
    base = dt.datetime(2019, 11, 24, tzinfo=dt.UTC)
    return [
        LoggedEvent(n, base + dt.timedelta(minutes=n), item, 1, click, 0.0125, f"u-{n % 2}")
        for n, (item, click) in enumerate([(1, True), (2, False), (3, True), (4, False)])
    ]


async def test_replay_reports_outcomes_only_for_matched_prompts() -> None:
    # Row 0: shown, matched, clicked. Row 1: shown, matched, not clicked. Row 2: shown another
    # item (no outcome). Row 3: not shown.
    shown = {"obd-0": "item-1", "obd-1": "item-2", "obd-2": "item-9"}
    servicer = ScriptedDecisions(lambda request: shown.get(request.client_request_id))
    async with fake_server(servicer) as target:
        tally = await replay.replay(events(), target, timeout_s=2.0)
    assert [r.client_request_id for r in servicer.requests] == ["obd-0", "obd-1", "obd-2", "obd-3"]
    assert servicer.requests[0].event_time.ToDatetime(dt.UTC) == events()[0].time
    assert (tally.rows, tally.decisions, tally.granted, tally.matched) == (4, 4, 3, 2)
    assert tally.matched_clicks == 1
    assert tally.logged_clicks == 2
    assert tally.no_reasons == Counter({"cooldown": 1})
    assert tally.outcomes_recorded == Counter({"impression": 2, "tap": 1})
    assert [kind for _, kind in servicer.outcomes] == [
        decision_pb2.OUTCOME_TYPE_IMPRESSION,
        decision_pb2.OUTCOME_TYPE_TAP,
        decision_pb2.OUTCOME_TYPE_IMPRESSION,
    ]
    assert len(tally.latencies_ms) == 4
    assert len(tally.decision_ids) == 4
    assert not tally.errors


async def test_replay_stops_after_too_many_failed_calls() -> None:
    class Failing(ScriptedDecisions):
        async def Decide(
            self, request: decision_pb2.DecideRequest, context: grpc.aio.ServicerContext
        ) -> decision_pb2.DecideResponse:
            self.requests.append(request)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "down for the test")
            raise AssertionError("unreachable")

    servicer = Failing(lambda request: None)
    many = [replace(events()[0], index=n) for n in range(replay.MAX_ERRORS + 10)]
    async with fake_server(servicer) as target:
        tally = await replay.replay(many, target, timeout_s=2.0)
    assert tally.aborted
    assert tally.errors == Counter({"Decide/UNAVAILABLE": replay.MAX_ERRORS})
    assert len(servicer.requests) == replay.MAX_ERRORS
    assert not summarize(tally).ok


def test_logged_off_policy_reproduces_the_logged_click_rate_for_the_uniform_policy() -> None:
    from pathlib import Path

    from nudge_server.replay import logged_off_policy, parse_rows, read_csv

    data = Path(__file__).resolve().parents[2] / "data" / "obd" / "random_all.csv.gz"
    events = parse_rows(read_csv(data))
    clicks = sum(e.click for e in events)
    lines = logged_off_policy(events)
    uniform = next(line for line in lines if line.strip().startswith("uniform"))
    assert f"{100 * clicks / len(events):.2f}%" in uniform
    assert clicks == 38 and len(events) == 10_000
