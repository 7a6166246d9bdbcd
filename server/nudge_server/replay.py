"""Replays the Open Bandit Dataset sample through a running nudge server and reports the result.

Usage: ``python -m nudge_server.replay [--target HOST:PORT] [--limit N] [--database-url URL]
[--server-pid PID] [--reset --redis-url URL]`` (``--help`` lists every option).

Each logged impression (one CSV row) becomes one ``Decide`` call, sent in timestamp order
through `nudge_client.NudgeClient`. Evaluation follows the replay method of Li, Chu, Langford
and Wang (WSDM 2011): when the service shows a prompt whose arm is the item the logging policy
showed, the logged outcome is what the user did with it, and is reported through
``ReportOutcome`` (an impression, plus a tap if the logged click is 1); every other row only
feeds the throttle. Because the logging policy was uniform, the click rate over the matched
rows is an unbiased estimate of the service's click rate.

The server must trust event times (``NUDGE_TRUST_EVENT_TIME=1``) so that throttling follows the
logged clock. With ``--server-pid`` the replay stops the server with SIGTERM once it is done (a
graceful shutdown flushes the decision log) and then checks that PostgreSQL holds one row per
decision made; it exits 1 when it does not, when outcome rows are missing, or when calls failed.

The report goes to stdout; progress and errors go to stderr. The pure pieces (`parse_rows`,
`decide_request`, `summarize`, `format_summary`, `wilson_interval`, `percentile`) do no I/O.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import gzip
import hashlib
import math
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import grpc.aio
import redis.asyncio as aioredis
import redis.exceptions
from nudge_client import NudgeClient, reason_name

from . import ope

#: The app and campaign of data/obd/campaign.yaml.
APP_ID = "obd"
CAMPAIGN_ID = "all"
EVENT_NAME = "item_slot_view"
#: ZOZOTOWN is a Japanese site: its users' local time is Japan's.
TIME_ZONE = "Asia/Tokyo"
LOCALE = "ja-JP"
PLATFORM = "web"
#: The two-sided 95% quantile of the standard normal distribution.
Z95 = 1.959963984540054
#: Stop replaying after this many failed calls: something is wrong with the server.
MAX_ERRORS = 20
USER_FEATURES = tuple(f"user_feature_{i}" for i in range(4))
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "data" / "obd" / "random_all.csv.gz"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/nudge"


# --- the pure pieces ----------------------------------------------------------------------------


def user_id_for(features: Sequence[str]) -> str:
    """A stable short user id for a combination of hashed user attributes.

    The dataset has no user ids; its `user_feature_0..3` stand in for one. The id is the first
    12 hex digits of the SHA-256 of the features joined by a unit separator, prefixed "u-".
    """
    digest = hashlib.sha256("\x1f".join(features).encode("utf-8")).hexdigest()
    return f"u-{digest[:12]}"


@dataclass(frozen=True)
class LoggedEvent:
    """One row of the log: what the uniform-random policy showed, and what the user did."""

    index: int
    time: dt.datetime
    item_id: int
    position: int
    click: bool
    propensity: float
    user_id: str

    @property
    def arm_id(self) -> str:
        """The campaign arm that stands for the logged item."""
        return f"item-{self.item_id}"


def parse_row(row: Mapping[str, str], fallback_index: int) -> LoggedEvent:
    """One CSV row (a dict of strings, as `csv.DictReader` gives it) as a `LoggedEvent`.

    The row index comes from the `index` column (the trimmed copy) or the unnamed first column
    (the original file), else `fallback_index`. Raises ValueError for a malformed row.
    """
    raw_index = row.get("index", row.get(""))
    try:
        time_ = dt.datetime.fromisoformat(row["timestamp"])
        if time_.tzinfo is None:
            raise ValueError(f"timestamp {row['timestamp']!r} has no UTC offset")
        return LoggedEvent(
            index=int(raw_index) if raw_index not in (None, "") else fallback_index,
            time=time_,
            item_id=int(row["item_id"]),
            position=int(row["position"]),
            click=int(row["click"]) == 1,
            propensity=float(row["propensity_score"]),
            user_id=user_id_for([row[name] for name in USER_FEATURES]),
        )
    except KeyError as exc:
        raise ValueError(f"row {fallback_index}: missing column {exc.args[0]!r}") from None
    except ValueError as exc:
        raise ValueError(f"row {fallback_index}: {exc}") from None


def parse_rows(rows: Iterable[Mapping[str, str]], limit: int | None = None) -> list[LoggedEvent]:
    """The first `limit` rows (all when None) as events, in timestamp order.

    The sort is stable, so rows with equal timestamps keep their file order (and every user's
    events keep theirs).
    """
    events: list[LoggedEvent] = []
    for position, row in enumerate(rows):
        if limit is not None and position >= limit:
            break
        events.append(parse_row(row, position))
    events.sort(key=lambda event: event.time)
    return events


def decide_request(event: LoggedEvent, app_id: str = APP_ID) -> dict[str, Any]:
    """The keyword arguments of `NudgeClient.decide` that replay one logged event."""
    return {
        "app_id": app_id,
        "user_id": event.user_id,
        "event_name": EVENT_NAME,
        "properties": {"position": event.position},
        "channel": "in_app",
        "surface": f"slot-{event.position}",
        "time_zone": TIME_ZONE,
        "locale": LOCALE,
        "platform": PLATFORM,
        "client_request_id": f"obd-{event.index}",
        "event_time": event.time,
    }


def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95% by default).

    (0.0, 1.0) when there are no trials: nothing is known.
    """
    if not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")
    if trials == 0:
        return (0.0, 1.0)
    p = successes / trials
    z2 = z * z
    denominator = 1 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0 < q <= 100) by the nearest-rank method; NaN for no values."""
    if not 0 < q <= 100:
        raise ValueError(f"q must be in (0, 100], got {q}")
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = math.ceil(q / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


@dataclass
class Tally:
    """What a replay saw, counted as it went (plain data, filled by `replay`)."""

    rows: int = 0
    logged_clicks: int = 0
    decisions: int = 0
    decision_ids: set[str] = field(default_factory=set)
    replayed: int = 0
    granted: int = 0
    no_reasons: Counter[str] = field(default_factory=Counter)
    matched: int = 0
    matched_clicks: int = 0
    #: ReportOutcome answers with recorded=True, by outcome type.
    outcomes_recorded: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    #: Failed calls by "Method/STATUS_CODE".
    errors: Counter[str] = field(default_factory=Counter)
    aborted: bool = False


@dataclass(frozen=True)
class DatabaseCounts:
    """The rows PostgreSQL holds for the replay's decisions."""

    decisions: int
    outcomes: Mapping[str, int]
    app_decisions: int

    @property
    def outcome_total(self) -> int:
        """All outcome rows, every type."""
        return sum(self.outcomes.values())


@dataclass(frozen=True)
class Summary:
    """The replay's result, ready to print."""

    rows: int
    decisions: int
    distinct_decisions: int
    replayed: int
    granted: int
    no_reasons: tuple[tuple[str, int], ...]
    matched: int
    matched_clicks: int
    replay_rate: float | None
    replay_interval: tuple[float, float]
    logged_clicks: int
    logged_rate: float | None
    logged_interval: tuple[float, float]
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    errors: tuple[tuple[str, int], ...]
    aborted: bool
    outcomes_recorded: int
    server_stop: str | None
    database: DatabaseCounts | None

    @property
    def decisions_match(self) -> bool | None:
        """Whether PostgreSQL holds one row per decision made; None when not counted."""
        if self.database is None:
            return None
        return self.database.decisions == self.distinct_decisions

    @property
    def outcomes_match(self) -> bool | None:
        """Whether PostgreSQL holds every outcome the server acknowledged; None when not counted."""
        if self.database is None:
            return None
        return self.database.outcome_total == self.outcomes_recorded

    @property
    def ok(self) -> bool:
        """True when every call succeeded and PostgreSQL holds every decision and outcome."""
        return (
            not self.errors
            and not self.aborted
            and self.decisions_match is True
            and self.outcomes_match is True
        )


def summarize(
    tally: Tally, database: DatabaseCounts | None = None, server_stop: str | None = None
) -> Summary:
    """The summary of a replay: rates, intervals and latency percentiles from its tally."""
    latencies = tally.latencies_ms
    return Summary(
        rows=tally.rows,
        decisions=tally.decisions,
        distinct_decisions=len(tally.decision_ids),
        replayed=tally.replayed,
        granted=tally.granted,
        no_reasons=tuple(sorted(tally.no_reasons.items(), key=lambda item: (-item[1], item[0]))),
        matched=tally.matched,
        matched_clicks=tally.matched_clicks,
        replay_rate=tally.matched_clicks / tally.matched if tally.matched else None,
        replay_interval=wilson_interval(tally.matched_clicks, tally.matched),
        logged_clicks=tally.logged_clicks,
        logged_rate=tally.logged_clicks / tally.rows if tally.rows else None,
        logged_interval=wilson_interval(tally.logged_clicks, tally.rows),
        latency_p50_ms=percentile(latencies, 50),
        latency_p99_ms=percentile(latencies, 99),
        latency_max_ms=max(latencies) if latencies else math.nan,
        errors=tuple(sorted(tally.errors.items())),
        aborted=tally.aborted,
        outcomes_recorded=sum(tally.outcomes_recorded.values()),
        server_stop=server_stop,
        database=database,
    )


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _interval(bounds: tuple[float, float]) -> str:
    return f"{100 * bounds[0]:.2f}% to {100 * bounds[1]:.2f}%"


def format_summary(summary: Summary) -> str:
    """The summary as the lines the CLI prints."""
    share = summary.granted / summary.decisions if summary.decisions else None
    lines = [
        f"rows replayed:          {summary.rows}",
        f"decisions made:         {summary.decisions}"
        + (f" ({summary.replayed} repeated an earlier decision)" if summary.replayed else ""),
        f"prompts granted:        {summary.granted} ({_pct(share)} of decisions)",
        f'"no" by reason:         {sum(count for _, count in summary.no_reasons)}',
    ]
    lines += [f"  {reason:<22}{count}" for reason, count in summary.no_reasons]
    lines += [
        f"matched impressions:    {summary.matched} (granted prompts whose arm is the logged item)",
        (
            f"replay click rate:      {_pct(summary.replay_rate)} ({summary.matched_clicks} "
            f"clicks in {summary.matched} matched; 95% Wilson interval "
            f"{_interval(summary.replay_interval)})"
        ),
        (
            f"logged policy:          {_pct(summary.logged_rate)} ({summary.logged_clicks} "
            f"clicks in {summary.rows} rows, uniform random; 95% Wilson interval "
            f"{_interval(summary.logged_interval)})"
        ),
    ]
    if summary.logged_rate is not None and summary.matched:
        low, high = summary.replay_interval
        inside = low <= summary.logged_rate <= high
        lines.append(
            "                        the logged rate is "
            + ("inside" if inside else "OUTSIDE")
            + " the replay's interval"
        )
    lines.append(
        f"Decide latency (client): p50 {summary.latency_p50_ms:.2f} ms, "
        f"p99 {summary.latency_p99_ms:.2f} ms, max {summary.latency_max_ms:.2f} ms"
    )
    if summary.errors:
        lines.append("failed calls:           " + ", ".join(f"{k} {v}" for k, v in summary.errors))
    if summary.aborted:
        lines.append(f"replay ABORTED after {MAX_ERRORS} failed calls")
    if summary.server_stop is not None:
        lines.append(f"server:                 {summary.server_stop}")
    database = summary.database
    if database is None:
        lines.append("PostgreSQL:             not counted")
    else:
        by_type = ", ".join(f"{kind} {count}" for kind, count in sorted(database.outcomes.items()))
        lines += [
            f"PostgreSQL rows:        decisions {database.decisions}, outcomes "
            f"{database.outcome_total}" + (f" ({by_type})" if by_type else ""),
            (
                f"decisions in PostgreSQL == decisions made: "
                f"{'yes' if summary.decisions_match else 'NO'} "
                f"({database.decisions} of {summary.distinct_decisions}; app {APP_ID!r} has "
                f"{database.app_decisions} in all)"
            ),
            (
                f"outcomes in PostgreSQL == outcomes recorded: "
                f"{'yes' if summary.outcomes_match else 'NO'} "
                f"({database.outcome_total} of {summary.outcomes_recorded})"
            ),
        ]
    return "\n".join(lines)


# --- I/O ----------------------------------------------------------------------------------------


def read_csv(path: Path) -> Iterator[dict[str, str]]:
    """The rows of a CSV file, gzip-compressed when its name ends in .gz."""
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8", newline="") as text:
            yield from csv.DictReader(text)
    else:
        with path.open(encoding="utf-8", newline="") as plain:
            yield from csv.DictReader(plain)


def _progress(message: str) -> None:
    print(f"replay: {message}", file=sys.stderr, flush=True)


def _record_error(tally: Tally, method: str, exc: grpc.aio.AioRpcError) -> None:
    key = f"{method}/{exc.code().name}"
    if not tally.errors:
        _progress(f"{method} failed: {exc.code().name}: {exc.details()}")
    tally.errors[key] += 1
    if sum(tally.errors.values()) >= MAX_ERRORS:
        tally.aborted = True


async def _report_logged_outcome(
    client: NudgeClient, event: LoggedEvent, decision_id: str, tally: Tally
) -> None:
    """Reports what the logged user did with the item: an impression, and a tap if clicked."""
    for outcome in ("impression", "tap") if event.click else ("impression",):
        try:
            ack = await client.report_outcome(
                APP_ID, event.user_id, decision_id, outcome, occurred_at=event.time
            )
        except grpc.aio.AioRpcError as exc:
            _record_error(tally, "ReportOutcome", exc)
            continue
        if ack.recorded:
            tally.outcomes_recorded[outcome] += 1


async def replay(
    events: Sequence[LoggedEvent], target: str, timeout_s: float = 1.0, progress_every: int = 2000
) -> Tally:
    """Sends every event as a Decide call, in order, and reports the matched outcomes.

    TLS and the API key come from NUDGE_TLS_* and NUDGE_API_KEY (`NudgeClient.from_env`)."""
    tally = Tally()
    async with NudgeClient.from_env(target, timeout_s=timeout_s) as client:
        for number, event in enumerate(events, start=1):
            tally.rows += 1
            tally.logged_clicks += event.click
            started = time.perf_counter()
            try:
                answer = await client.decide(**decide_request(event))
            except grpc.aio.AioRpcError as exc:
                _record_error(tally, "Decide", exc)
            else:
                tally.latencies_ms.append(1000 * (time.perf_counter() - started))
                tally.decisions += 1
                tally.decision_ids.add(answer.decision_id)
                tally.replayed += answer.replayed
                if not answer.show:
                    tally.no_reasons[reason_name(answer.reason)] += 1
                else:
                    tally.granted += 1
                    # Li et al.: only a prompt that shows the logged item has a known outcome.
                    if answer.campaign_id == CAMPAIGN_ID and answer.arm_id == event.arm_id:
                        tally.matched += 1
                        tally.matched_clicks += event.click
                        await _report_logged_outcome(client, event, answer.decision_id, tally)
            if tally.aborted:
                break
            if progress_every and number % progress_every == 0:
                _progress(f"{number}/{len(events)} rows, {tally.granted} granted")
    return tally


def _process_gone(pid: int) -> bool:
    """True once `pid` has exited (a zombie waiting for its parent counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state in ("Z", "X")


async def stop_server(pid: int, timeout_s: float) -> str:
    """Sends SIGTERM to the server and waits for it to exit; a line for the report.

    Raises TimeoutError when it is still running after `timeout_s`.
    """
    started = time.monotonic()
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return f"pid {pid} had already exited"
    while not _process_gone(pid):
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"server pid {pid} still running {timeout_s:g} s after SIGTERM")
        await asyncio.sleep(0.05)
    return f"stopped with SIGTERM (pid {pid}, exited after {time.monotonic() - started:.1f} s)"


async def count_rows(database_url: str, decision_ids: Iterable[str]) -> DatabaseCounts:
    """Counts the decision and outcome rows of these decisions in PostgreSQL."""
    ids = sorted(decision_ids)
    connection = await asyncpg.connect(database_url)
    try:
        decisions = await connection.fetchval(
            "SELECT count(*) FROM decisions WHERE decision_id = ANY($1::uuid[])", ids
        )
        outcome_rows = await connection.fetch(
            "SELECT type, count(*) AS n FROM outcomes WHERE decision_id = ANY($1::uuid[])"
            " GROUP BY type",
            ids,
        )
        app_decisions = await connection.fetchval(
            "SELECT count(*) FROM decisions WHERE app_id = $1", APP_ID
        )
    finally:
        await connection.close()
    return DatabaseCounts(
        decisions=int(decisions),
        outcomes={str(row["type"]): int(row["n"]) for row in outcome_rows},
        app_decisions=int(app_decisions),
    )


async def settle_rows(database_url: str, tally: Tally, wait_s: float) -> DatabaseCounts:
    """Counts the rows, re-counting for up to `wait_s` while some are still missing.

    Used when the server keeps running: its log writer flushes in the background.
    """
    deadline = time.monotonic() + wait_s
    while True:
        counts = await count_rows(database_url, tally.decision_ids)
        complete = counts.decisions >= len(tally.decision_ids) and counts.outcome_total >= sum(
            tally.outcomes_recorded.values()
        )
        if complete or time.monotonic() >= deadline:
            return counts
        await asyncio.sleep(0.2)


async def reset_state(database_url: str, redis_url: str | None, app_id: str = APP_ID) -> str:
    """Gives the replay a fresh state; a line for the report.

    Deletes the app's decisions, outcomes and push jobs from PostgreSQL (its configuration is
    kept) and, when `redis_url` is given, flushes that whole Redis database, so that it must be
    a database of the replay's own.
    """
    connection = await asyncpg.connect(database_url)
    try:
        async with connection.transaction():
            outcomes = await connection.execute("DELETE FROM outcomes WHERE app_id = $1", app_id)
            decisions = await connection.execute("DELETE FROM decisions WHERE app_id = $1", app_id)
            jobs = await connection.execute("DELETE FROM push_jobs WHERE app_id = $1", app_id)
    finally:
        await connection.close()

    def deleted(status: str) -> str:
        return status.rsplit(" ", 1)[-1]

    message = (
        f"deleted {deleted(decisions)} decisions, {deleted(outcomes)} outcomes and "
        f"{deleted(jobs)} push jobs of app {app_id!r} from PostgreSQL"
    )
    if redis_url:
        client = aioredis.Redis.from_url(redis_url)
        try:
            await client.flushdb()
        finally:
            await client.aclose()
        message += f"; flushed Redis database {redis_url}"
    else:
        message += "; Redis not flushed (no --redis-url)"
    return f"fresh state: {message}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nudge_server.replay",
        description="Replay the Open Bandit Dataset sample (ZOZOTOWN, CC BY 4.0) through a nudge "
        "server and report the replay click rate (Li et al. 2011).",
    )
    parser.add_argument(
        "--target",
        default=os.environ.get("NUDGE_TARGET", "127.0.0.1:50051"),
        help="the server, HOST:PORT (default: $NUDGE_TARGET or 127.0.0.1:50051)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help=f"the CSV or CSV.gz (default: {DEFAULT_DATA})",
    )
    parser.add_argument(
        "--limit", type=int, default=None, metavar="N", help="replay the first N rows"
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("NUDGE_DATABASE_URL", DEFAULT_DATABASE_URL),
        help="the server's PostgreSQL, for the row counts (default: $NUDGE_DATABASE_URL or "
        f"{DEFAULT_DATABASE_URL})",
    )
    parser.add_argument(
        "--server-pid",
        type=int,
        default=None,
        metavar="PID",
        help="stop this server process with SIGTERM after the replay, before counting rows",
    )
    parser.add_argument(
        "--stop-timeout", type=float, default=30.0, help="seconds to wait for the server to exit"
    )
    parser.add_argument(
        "--timeout-s", type=float, default=1.0, help="deadline of each call in seconds (default 1)"
    )
    parser.add_argument(
        "--reset",
        action="store_true",
        help="first delete the decisions and outcomes of app obd from PostgreSQL and flush "
        "--redis-url",
    )
    parser.add_argument(
        "--reset-only", action="store_true", help="do the --reset, then exit without replaying"
    )
    parser.add_argument(
        "--redis-url",
        default=None,
        help="the replay's own Redis database (the server's NUDGE_REDIS_URL), flushed by --reset",
    )
    return parser


N_ITEMS = 80


def logged_off_policy(events: Sequence[LoggedEvent]) -> list[str]:
    """Off-policy estimates from the sample's own log (items, clicks, logged propensities).

    The IPS estimate of the uniform policy must reproduce the logged click rate, since the log
    was collected by that very policy; "always item k" shows how far the log reaches.
    """
    if not events:
        return []
    arms = [e.item_id for e in events]
    clicks = [float(e.click) for e in events]
    propensities = [e.propensity for e in events]
    best_item = max(range(N_ITEMS), key=lambda k: sum(c for a, c in zip(arms, clicks) if a == k))
    report = ope.evaluate(
        arms,
        clicks,
        propensities,
        [ope.uniform(N_ITEMS), ope.always(best_item, N_ITEMS, f"always item {best_item}*")],
        N_ITEMS,
    )
    lines = ["off-policy, logged data (IPS / SNIPS, standard error):"]
    for estimate in report.estimates:
        if estimate.ips is None or estimate.snips is None:
            continue
        lines.append(
            f"  {estimate.policy:<22}{_pct(estimate.ips.value)} ± {_pct(estimate.ips.standard_error)}"
            f" / {_pct(estimate.snips.value)} ± {_pct(estimate.snips.standard_error)}"
            f" (effective sample size {estimate.effective_sample_size:.0f})"
        )
        lines += [f"    warning: {w}" for w in estimate.warnings]
    lines.append("  * the most clicked item, chosen on this same data: its estimate is optimistic")
    return lines


async def _run(args: argparse.Namespace) -> int:
    if args.reset or args.reset_only:
        print(await reset_state(args.database_url, args.redis_url), flush=True)
        if args.reset_only:
            return 0
    if not args.data.exists():
        print(f"replay: no data file {args.data} (use --data)", file=sys.stderr)
        return 2
    events = parse_rows(read_csv(args.data), limit=args.limit)
    _progress(f"replaying {len(events)} rows from {args.data} against {args.target}")
    tally = await replay(events, args.target, timeout_s=args.timeout_s)
    server_stop = None
    if args.server_pid is not None:
        server_stop = await stop_server(args.server_pid, args.stop_timeout)
        database = await count_rows(args.database_url, tally.decision_ids)
    else:
        server_stop = "left running (rows counted once the log writer caught up, within 5 s)"
        database = await settle_rows(args.database_url, tally, wait_s=5.0)
    summary = summarize(tally, database, server_stop)
    print(format_summary(summary), flush=True)
    print("\n".join(logged_off_policy(events)), flush=True)
    return 0 if summary.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI: replay, print the report, exit 0 only when every check passed."""
    args = _parser().parse_args(argv)
    if args.limit is not None and args.limit < 0:
        _parser().error("--limit must not be negative")
    try:
        return asyncio.run(_run(args))
    except (OSError, TimeoutError, asyncpg.PostgresError, redis.exceptions.RedisError) as exc:
        print(f"replay: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
