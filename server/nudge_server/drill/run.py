"""`python -m nudge_server.drill`: the fault drill's command line, timeline and clean-up.

Usage: ``python -m nudge_server.drill [--duration S] [--users N] [--rate R] [--concurrency C]
[--servers 1|2] [--drain-timeout S] [--seed N] [--no-redis-persistence] [--work-dir DIR]
[--logs-dir DIR] [--keep]`` (``--help`` explains each); ``--cleanup DIR`` stops what a killed
drill left running in DIR and removes it (scripts/fault-drill calls it on exit).

The summary goes to stdout, progress to stderr. Exit status: 0 when every check passed, 1 when
one failed, 2 for bad arguments, 3 when the drill could not run (a service did not start, the
hard time limit), 130 on Ctrl-C, 143 on SIGTERM. Everything the drill started is stopped and
its work directory removed on every exit; the servers' logs, the summary and the call records
are kept in `.run/drill-last/`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
import grpc.aio
from nudge.v1 import status_pb2, status_pb2_grpc
from nudge_client import bearer_metadata

from . import checks, plan, services
from .checks import FaultEvent, LoggedDecision, LoggedOutcome, ServerExit
from .load import CallRecord, LoadGenerator
from .plan import FaultKind, FaultStep
from .services import Ledger, PrivatePostgres, PrivateRedis, ServerProcess, ServiceError

REPO = Path(__file__).resolve().parents[3]
DEFAULT_RUN_DIR = REPO / ".run"
DATABASE = "nudge"
#: Seconds the drill may take beyond its load: set-up, draining, checks, clean-up.
OVERHEAD_S = 240.0
#: Grace of a server's SIGTERM (shorter than the default: the drill waits for it under load).
SHUTDOWN_GRACE_S = 5.0
#: How often the StatusService of each server is asked for the decision log's figures.
STATUS_INTERVAL_S = 1.0
#: Variables of the caller's environment the servers keep; every other NUDGE_* is dropped, so
#: that the drill never points a server at the machine's own Redis or PostgreSQL.
KEPT_NUDGE_VARIABLES = frozenset({"NUDGE_LOG_LEVEL"})


def say(message: str) -> None:
    """Progress, on stderr."""
    print(f"fault-drill: {message}", file=sys.stderr, flush=True)


@dataclass
class LogFigures:
    """The decision log's counters as the servers' StatusService last told them, per process."""

    available: bool | None = None
    latest: dict[tuple[int, int], status_pb2.DecisionLogStatus] = field(default_factory=dict)
    most_in_spool: int = 0

    def total(self, name: str) -> int:
        return sum(int(getattr(s, name)) for s in self.latest.values())


def _child_env(env: Mapping[str, str], **nudge: str) -> dict[str, str]:
    """The caller's environment without its NUDGE_* settings, plus `nudge`."""
    kept = {k: v for k, v in env.items() if not k.startswith("NUDGE_") or k in KEPT_NUDGE_VARIABLES}
    return {**kept, **nudge}


class Drill:
    """One drill: its services, its load, its faults and its verdict."""

    def __init__(self, args: argparse.Namespace, work_dir: Path, logs_dir: Path) -> None:
        self.args = args
        self.work = work_dir
        self.logs_dir = logs_dir
        self.ledger = Ledger(work_dir)
        if args.keep:
            self.ledger.keep()
        self.redis: PrivateRedis | None = None
        self.postgres: PrivatePostgres | None = None
        self.servers: list[ServerProcess] = []
        self.faults: list[FaultEvent] = []
        self.exits: list[ServerExit] = []
        self.log_figures = LogFigures()
        self.api_key = ""
        self.run_id = uuid.uuid4().hex[:8]

    # --- set-up --------------------------------------------------------------------------------

    async def _nudge(self, env: Mapping[str, str], *args: str) -> str:
        """Runs a `nudge` command; returns its stdout, or raises ServiceError with its stderr."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "nudge_server",
            *args,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await process.communicate()
        if process.returncode != 0:
            raise ServiceError(
                f"nudge {' '.join(args)} failed ({process.returncode}): "
                f"{err.decode(errors='replace').strip()}"
            )
        return out.decode()

    async def set_up(self) -> None:
        """Private Redis and PostgreSQL, the schema, the app and its campaign, an API key, the
        servers (SERVING)."""
        self.redis = PrivateRedis(
            self.work / "redis", self.ledger, persistent=not self.args.no_redis_persistence
        )
        self.postgres = PrivatePostgres(self.work, self.ledger)
        say(
            f"starting a private redis-server on 127.0.0.1:{self.redis.port} and a private "
            f"PostgreSQL on 127.0.0.1:{self.postgres.port} (as {self.postgres.user}) in {self.work}"
        )
        await self.redis.start()
        await self.postgres.init()
        await self.postgres.start()
        connection = await asyncpg.connect(self.postgres.dsn(), timeout=10)
        try:
            await connection.execute(f'CREATE DATABASE "{DATABASE}"')
        finally:
            await connection.close()
        env = _child_env(
            os.environ,
            NUDGE_DATABASE_URL=self.postgres.dsn(DATABASE),
            NUDGE_REDIS_URL=self.redis.url,
        )
        await self._nudge(env, "migrate")
        config = self.work / "drill.yaml"
        # JSON is YAML: the document of plan.drill_config as it is.
        config.write_text(json.dumps(plan.drill_config(), indent=2), encoding="utf-8")
        await self._nudge(env, "apply", str(config))
        self.api_key = (
            await self._nudge(
                env,
                "keys",
                "create",
                "--app",
                plan.APP_ID,
                "--scopes",
                "decide,report,admin",
                "--name",
                "fault-drill",
            )
        ).strip()
        server_env = {
            **env,
            "NUDGE_SPOOL_DIR": str(self.work / "spool"),
            "NUDGE_SHUTDOWN_GRACE": str(SHUTDOWN_GRACE_S),
            # The drill's own load must not be refused as one app's flood.
            "NUDGE_APP_RATE": "inf",
            "NUDGE_APP_BURST": "1000000",
        }
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.servers = []
        for index in range(self.args.servers):
            log_path = self.logs_dir / f"server-{index}.log"
            log_path.unlink(missing_ok=True)
            self.servers.append(ServerProcess(index, server_env, log_path, self.ledger))
        await asyncio.gather(*(server.start() for server in self.servers))
        say(
            "serving: "
            + ", ".join(f"{s.name} on {s.target} (pid {s.pid})" for s in self.servers)
            + f"; logs in {self.logs_dir}"
        )

    # --- the faults ----------------------------------------------------------------------------

    async def _redis_kill(self, load: LoadGenerator, step: FaultStep) -> None:
        assert self.redis is not None
        sha = await self.redis.load_script(f"return '{self.run_id}'")
        started = load.elapsed()
        await self.redis.kill()
        await asyncio.sleep(step.hold_s)
        await self.redis.start()
        ended = load.elapsed()
        forgot = await self.redis.forgot_script(sha)
        self.faults.append(
            FaultEvent(
                step.kind.value,
                started,
                ended,
                f"scripts forgotten: {'yes' if forgot else 'NO'}",
            )
        )

    async def _redis_hang(self, load: LoadGenerator, step: FaultStep) -> None:
        assert self.redis is not None
        started = load.elapsed()
        self.redis.freeze()
        try:
            await asyncio.sleep(step.hold_s)
        finally:
            self.redis.thaw()
        self.faults.append(FaultEvent(step.kind.value, started, load.elapsed()))

    async def _postgres_stop(self, load: LoadGenerator, step: FaultStep) -> None:
        assert self.postgres is not None
        started = load.elapsed()
        await self.postgres.stop_immediate()
        await asyncio.sleep(step.hold_s)
        await self.postgres.start()
        self.faults.append(FaultEvent(step.kind.value, started, load.elapsed()))

    async def _both_down(self, load: LoadGenerator, step: FaultStep) -> None:
        assert self.redis is not None and self.postgres is not None
        sha = await self.redis.load_script(f"return '{self.run_id}-both'")
        started = load.elapsed()
        await asyncio.gather(self.redis.kill(), self.postgres.stop_immediate())
        await asyncio.sleep(step.hold_s)
        await asyncio.gather(self.redis.start(), self.postgres.start())
        ended = load.elapsed()
        forgot = await self.redis.forgot_script(sha)
        self.faults.append(
            FaultEvent(
                step.kind.value,
                started,
                ended,
                f"redis scripts forgotten: {'yes' if forgot else 'NO'}",
            )
        )

    async def _stop_server(
        self, server: ServerProcess, load: LoadGenerator, *, postgres_down: bool
    ) -> None:
        """SIGTERM (under load, during the faults) and waits for the exit."""
        began, started_s = time.monotonic(), load.elapsed()
        status = await server.terminate()
        self.exits.append(
            ServerExit(server.name, status, time.monotonic() - began, postgres_down, started_s)
        )

    async def _server_restart(self, load: LoadGenerator, step: FaultStep) -> None:
        server = self.servers[step.server]
        started = load.elapsed()
        await self._stop_server(server, load, postgres_down=False)
        await server.start()
        self.faults.append(
            FaultEvent(
                f"{server.name} stopped (SIGTERM) and restarted",
                started,
                load.elapsed(),
                f"pid {server.pid} now",
            )
        )

    async def _server_restart_while_postgres_down(
        self, load: LoadGenerator, step: FaultStep
    ) -> None:
        assert self.postgres is not None
        server = self.servers[step.server]
        started = load.elapsed()
        await self.postgres.stop_immediate()
        await asyncio.sleep(step.hold_s / 3)
        server_started = load.elapsed()
        await self._stop_server(server, load, postgres_down=True)
        await asyncio.sleep(max(0.0, started + step.hold_s - load.elapsed()))
        await self.postgres.start()
        self.faults.append(
            FaultEvent(
                "postgresql stopped (immediate) and restarted",
                started,
                load.elapsed(),
                f"{server.name} stopped meanwhile",
            )
        )
        await server.start()
        self.faults.append(
            FaultEvent(
                f"{server.name} stopped (SIGTERM) while postgresql was down, restarted after",
                server_started,
                load.elapsed(),
                f"pid {server.pid} now",
            )
        )

    async def run_faults(self, load: LoadGenerator) -> None:
        """Every step of the plan, each at its time (or right after the one before)."""
        actions = {
            FaultKind.REDIS_KILL: self._redis_kill,
            FaultKind.REDIS_HANG: self._redis_hang,
            FaultKind.POSTGRES_STOP: self._postgres_stop,
            FaultKind.BOTH_DOWN: self._both_down,
            FaultKind.SERVER_RESTART: self._server_restart,
            FaultKind.SERVER_RESTART_WHILE_POSTGRES_DOWN: self._server_restart_while_postgres_down,
        }
        for step in plan.fault_plan(self.args.duration, len(self.servers)):
            await asyncio.sleep(max(0.0, step.at_s - load.elapsed()))
            say(f"{load.elapsed():6.1f} s: {step.kind.value}")
            await actions[step.kind](load, step)

    # --- watching the decision log -------------------------------------------------------------

    async def watch_log(self, stop: asyncio.Event) -> None:
        """Asks each server's StatusService for the decision log's figures until `stop`; does
        nothing when the servers have no StatusService."""
        metadata = bearer_metadata(self.api_key)
        while not stop.is_set() and self.log_figures.available is not False:
            for server in self.servers:
                if server.pid is None:
                    continue
                async with grpc.aio.insecure_channel(server.target) as channel:
                    try:
                        answer = await status_pb2_grpc.StatusServiceStub(channel).GetStatus(
                            status_pb2.GetStatusRequest(), timeout=2.0, metadata=metadata
                        )
                    except grpc.aio.AioRpcError as exc:
                        if exc.code() is grpc.StatusCode.UNIMPLEMENTED:
                            self.log_figures.available = False
                        continue
                self.log_figures.available = True
                figures = answer.decision_log
                self.log_figures.latest[(server.index, server.starts)] = figures
                self.log_figures.most_in_spool = max(
                    self.log_figures.most_in_spool, int(figures.rows_in_spool)
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STATUS_INTERVAL_S)

    # --- afterwards ----------------------------------------------------------------------------

    async def wait_until_logged(
        self, decision_ids: set[str], outcome_keys: set[tuple[str, str]]
    ) -> tuple[int, int, float]:
        """Waits until PostgreSQL holds every answered decision and acknowledged outcome, or
        the drain timeout; returns what is still missing and how long it took."""
        assert self.postgres is not None
        began = time.monotonic()
        ids = sorted(decision_ids)
        outcome_ids = [uuid.UUID(d) for d, _ in sorted(outcome_keys)]
        outcome_types = [t for _, t in sorted(outcome_keys)]
        missing = (len(ids), len(outcome_ids))
        while True:
            with contextlib.suppress(OSError, asyncpg.PostgresError, TimeoutError):
                connection = await asyncpg.connect(self.postgres.dsn(DATABASE), timeout=5)
                try:
                    logged = await connection.fetchval(
                        "SELECT count(*) FROM decisions WHERE app_id = $1 "
                        "AND decision_id = ANY($2::uuid[])",
                        plan.APP_ID,
                        [uuid.UUID(d) for d in ids],
                    )
                    outcomes = await connection.fetchval(
                        "SELECT count(*) FROM outcomes o JOIN unnest($1::uuid[], $2::text[]) "
                        "AS k(decision_id, type) USING (decision_id, type)",
                        outcome_ids,
                        outcome_types,
                    )
                finally:
                    await connection.close()
                missing = (len(ids) - logged, len(outcome_ids) - outcomes)
                if missing == (0, 0):
                    break
            if time.monotonic() - began > self.args.drain_timeout:
                break
            await asyncio.sleep(0.5)
        return missing[0], missing[1], time.monotonic() - began

    async def fetch_rows(self) -> tuple[list[LoggedDecision], list[LoggedOutcome]]:
        """The app's decisions and outcomes in PostgreSQL."""
        assert self.postgres is not None
        connection = await asyncpg.connect(self.postgres.dsn(DATABASE), timeout=10)
        try:
            decisions = await connection.fetch(
                "SELECT decision_id::text, user_id, time_zone, decided_at, show, reason, "
                "client_request_id FROM decisions WHERE app_id = $1",
                plan.APP_ID,
            )
            outcomes = await connection.fetch(
                "SELECT decision_id::text, type FROM outcomes WHERE app_id = $1", plan.APP_ID
            )
        finally:
            await connection.close()
        return (
            [
                LoggedDecision(
                    r["decision_id"],
                    r["user_id"],
                    r["time_zone"],
                    r["decided_at"],
                    r["show"],
                    r["reason"],
                    r["client_request_id"],
                )
                for r in decisions
            ],
            [LoggedOutcome(r["decision_id"], r["type"]) for r in outcomes],
        )

    def _save_records(self, records: Sequence[CallRecord]) -> None:
        """Every call attempt as one JSON line, for a person looking into a failure."""
        path = self.logs_dir / "calls.jsonl.gz"
        with gzip.open(path, "wt", encoding="utf-8") as out:
            for record in records:
                out.write(json.dumps(dataclasses.asdict(record)) + "\n")
        say(f"{len(records)} call records in {path}")

    def spool_left(self) -> int:
        """Segment files still in the spool directory."""
        return sum(1 for _ in (self.work / "spool").rglob("*.seg"))

    async def run(self) -> int:
        """The whole drill; its exit status."""
        began = time.monotonic()
        await self.set_up()
        users = plan.drill_users(self.args.users, self.args.duration, self.args.seed)
        load = LoadGenerator(
            [s.target for s in self.servers],
            self.api_key,
            users,
            rate_per_s=self.args.rate,
            concurrency=self.args.concurrency,
            run_id=self.run_id,
            seed=self.args.seed,
        )
        stop_load, stop_watch = asyncio.Event(), asyncio.Event()
        say(
            f"load: {self.args.duration:g} s, {self.args.rate:g} Decide/s at most, "
            f"{self.args.concurrency} at once, {len(users)} users in {len(plan.TIME_ZONES)} time "
            "zones"
        )
        load_task = asyncio.create_task(load.run(stop_load), name="drill-load")
        watch_task = asyncio.create_task(self.watch_log(stop_watch), name="drill-watch")
        try:
            await self.run_faults(load)
            await asyncio.sleep(max(0.0, self.args.duration - load.elapsed()))
            say(f"{load.elapsed():6.1f} s: load stops; finishing the calls in progress")
            stop_load.set()
            await load_task
            self._save_records(load.records)
            decision_ids = checks.answered_decisions(load.records)
            outcome_keys = checks.acknowledged_outcomes(load.records)
            say(
                f"waiting until PostgreSQL holds the {len(decision_ids)} answered decisions and "
                f"{len(outcome_keys)} acknowledged outcomes (at most "
                f"{self.args.drain_timeout:g} s)"
            )
            missing_decisions, missing_outcomes, drained_s = await self.wait_until_logged(
                decision_ids, outcome_keys
            )
            stop_watch.set()
            await watch_task
        finally:
            # On a failure or Ctrl-C: stop the load and the watcher before the processes go.
            stop_load.set()
            stop_watch.set()
            for task in (load_task, watch_task):
                task.cancel()
            await asyncio.gather(load_task, watch_task, return_exceptions=True)
        for server in self.servers:
            await self._stop_server(server, load, postgres_down=False)
        decisions, outcomes = await self.fetch_rows()
        figures = checks.compute(
            load.records,
            decisions,
            outcomes,
            cap=plan.DAILY_CAP,
            faults=self.faults,
            exits=self.exits,
        )
        problems = checks.failures(figures, self.exits)
        spool_left = self.spool_left()
        if spool_left:
            problems.append(f"{spool_left} spool segment files left after the servers stopped")
        if load.outcomes_not_sent:
            problems.append(f"{load.outcomes_not_sent} outcomes never sent (the drain timed out)")
        drained = (
            f"everything within {drained_s:.1f} s"
            if (missing_decisions, missing_outcomes) == (0, 0)
            else f"NOT within {drained_s:.1f} s: {missing_decisions} decisions and "
            f"{missing_outcomes} outcomes were missing when the servers were stopped"
        )
        lag, lag_at = load.loop_lag_s
        extra = [
            f"PostgreSQL held after the load: {drained}",
            f"client event loop: at most {1000 * lag:.0f} ms late (at {lag_at:.1f} s)",
        ]
        if self.log_figures.available:
            f = self.log_figures
            extra.append(
                "decision log (StatusService, last seen per process): rows spooled "
                f"{f.total('rows_spooled')}, replayed from the spool {f.total('rows_replayed')}, "
                f"duplicates skipped {f.total('rows_duplicate')}, dropped {f.total('rows_dropped')}, "
                f"rejected {f.total('rows_rejected')}; at most {f.most_in_spool} rows in one spool"
            )
        else:
            extra.append("decision log: the servers have no StatusService; figures not shown")
        extra.append(f"spool after the drill: {spool_left} segment files left")
        header = [
            (
                f"fault drill {self.run_id}: {self.args.duration:g} s of load against "
                f"{len(self.servers)} servers, {len(users)} users in {len(plan.TIME_ZONES)} time "
                f"zones, daily cap {plan.DAILY_CAP}; {time.monotonic() - began:.0f} s in all"
            ),
        ]
        if self.args.no_redis_persistence:
            header.append(
                "Redis ran WITHOUT persistence (--no-redis-persistence): each restart forgot "
                "every user's counters"
            )
        summary = checks.format_summary(
            figures,
            header=header,
            faults=self.faults,
            exits=self.exits,
            extra=extra,
            problems=problems,
        )
        print(summary, flush=True)
        (self.logs_dir / "summary.txt").write_text(summary + "\n", encoding="utf-8")
        return 1 if problems else 0

    def close(self) -> None:
        """Stops everything at once (the drill's own processes only) and keeps the services'
        logs beside the servers'."""
        for server in self.servers:
            server.close()
        if self.redis is not None:
            self.redis.close()
            self._keep(self.redis.directory / "redis.log", "redis.log")
        if self.postgres is not None:
            self.postgres.close()
            self._keep(self.postgres.log_path, "postgresql.log")

    def _keep(self, source: Path, name: str) -> None:
        with contextlib.suppress(OSError):
            self.logs_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, self.logs_dir / name)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nudge_server.drill",
        description="The fault drill: load while Redis, PostgreSQL and the servers fail, then "
        "checks from PostgreSQL. Loopback only; private Redis and PostgreSQL servers.",
    )
    parser.add_argument(
        "--duration", type=float, default=180.0, help="seconds of load (default 180; at least 20)"
    )
    parser.add_argument("--users", type=int, default=400, help="users (default 400)")
    parser.add_argument(
        "--rate", type=float, default=150.0, help="Decide calls per second at most (default 150)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=32, help="Decide calls in flight at most (default 32)"
    )
    parser.add_argument(
        "--servers",
        type=int,
        choices=(1, 2),
        default=2,
        help="nudge serve processes sharing Redis and PostgreSQL (default 2)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=60.0,
        help="seconds to wait for PostgreSQL to hold everything (default 60)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of users and load (default 0)")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="an empty directory for the services' data (default: a new one under .run/drill/)",
    )
    parser.add_argument(
        "--no-redis-persistence",
        action="store_true",
        help="run Redis without its append-only file, so that a restart forgets every user's "
        "counters: shows what the checks report then (cap violations)",
    )
    parser.add_argument(
        "--logs-dir",
        type=Path,
        default=DEFAULT_RUN_DIR / "drill-last",
        help="where the servers' logs, the summary and the call records go (default "
        ".run/drill-last/, replaced by each drill)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory (data, spool) after the drill"
    )
    parser.add_argument(
        "--cleanup",
        type=Path,
        metavar="DIR",
        default=None,
        help="stop what a drill left running in DIR, remove DIR, and exit",
    )
    return parser


def _validate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.duration < plan.MIN_DURATION_S:
        parser.error(f"--duration must be at least {plan.MIN_DURATION_S:g}")
    if args.users < len(plan.TIME_ZONES):
        parser.error(f"--users must be at least {len(plan.TIME_ZONES)}")
    if not args.rate > 0:
        parser.error("--rate must be greater than 0")
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    if not args.drain_timeout > 0:
        parser.error("--drain-timeout must be greater than 0")


def _watchdog(limit_s: float) -> None:
    """Ends the process if the event loop is stuck past the hard limit (the wrapper's exit trap
    then runs `--cleanup`)."""

    def expire() -> None:
        print(
            f"fault-drill: stuck past the hard limit of {limit_s:.0f} s; exiting",
            file=sys.stderr,
            flush=True,
        )
        os._exit(3)

    timer = threading.Timer(limit_s, expire)
    timer.daemon = True
    timer.start()


async def _main(args: argparse.Namespace, work_dir: Path, limit_s: float) -> int:
    task = asyncio.current_task()
    assert task is not None
    terminated = False

    def on_sigterm() -> None:
        nonlocal terminated
        terminated = True
        task.cancel()

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, on_sigterm)
    drill = Drill(args, work_dir, args.logs_dir.resolve())
    budget = asyncio.timeout(limit_s)
    try:
        async with budget:
            return await drill.run()
    except asyncio.CancelledError:
        # SIGTERM, or Ctrl-C (asyncio.run cancels the main task on SIGINT).
        say(f"{'terminated' if terminated else 'interrupted'}; stopping everything it started")
        return 143 if terminated else 130
    except TimeoutError as exc:
        if budget.expired():
            say(f"the hard time limit of {limit_s:.0f} s was reached; stopping everything")
        else:
            say(f"the drill could not run: timed out: {exc!r}")
        return 3
    except (ServiceError, OSError, asyncpg.PostgresError, grpc.aio.AioRpcError) as exc:
        say(f"the drill could not run: {exc}")
        return 3
    finally:
        drill.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the drill; returns its exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.cleanup is not None:
        for line in services.cleanup(args.cleanup):
            say(line)
        return 0
    _validate(parser, args)
    if args.work_dir is None:
        (DEFAULT_RUN_DIR / "drill").mkdir(parents=True, exist_ok=True)
        work_dir = Path(tempfile.mkdtemp(prefix="run-", dir=DEFAULT_RUN_DIR / "drill"))
    else:
        work_dir = args.work_dir.resolve()
        work_dir.mkdir(parents=True, exist_ok=True)
        if any(p.name != services.LEDGER_NAME for p in work_dir.iterdir()):
            parser.error(f"--work-dir {work_dir} is not empty")
    limit_s = args.duration + args.drain_timeout + OVERHEAD_S
    _watchdog(limit_s + 60)
    try:
        return asyncio.run(_main(args, work_dir, limit_s))
    except KeyboardInterrupt:
        say("interrupted; everything it started is stopped")
        return 130
    finally:
        services.cleanup(work_dir, remove=not args.keep)
        if args.keep:
            say(f"kept {work_dir}")


if __name__ == "__main__":
    sys.exit(main())
