"""The `nudge` command: migrate, apply configuration, inspect campaigns and push jobs, serve.

Settings come from the environment (`settings.*.from_env`). Expected errors print one line to
stderr, without a traceback: exit code 2 for bad input, 1 for an unavailable service.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import asyncpg

from . import key_cli, report_cli, status_cli, user_cli
from .config import campaign_to_doc, load_yaml, parse_document
from .config_store import ConfigStore
from .delivery import cli as delivery_cli
from .errors import (
    ConfigError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    NudgeError,
    StoreUnavailable,
)
from .migrate import MigrationError, apply_migrations
from .postgres import open_pool
from .push_jobs import list_push_jobs
from .settings import PostgresSettings, ServerSettings

EXIT_OK = 0
EXIT_UNAVAILABLE = 1
EXIT_BAD_INPUT = 2


class CliError(Exception):
    """An error to report as one line, with its exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


async def _migrate(args: argparse.Namespace) -> int:
    settings = PostgresSettings.from_env()
    applied = await apply_migrations(settings.dsn, args.directory)
    if applied:
        for version in applied:
            print(f"applied {version}")
    else:
        print("nothing to apply: the database is up to date")
    return EXIT_OK


async def _apply(args: argparse.Namespace) -> int:
    path: Path = args.file
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {path}: {exc}", EXIT_BAD_INPUT) from exc
    try:
        apps, campaigns = parse_document(load_yaml(text))
    except ConfigError as exc:
        raise CliError(f"{path}: {exc.path}: {exc.message}", EXIT_BAD_INPUT) from exc
    if args.check:
        print(f"{path}: valid ({len(apps)} apps, {len(campaigns)} campaigns); nothing applied")
        return EXIT_OK
    async with open_pool(PostgresSettings.from_env()) as pool:
        counts = await ConfigStore(pool).apply(apps, campaigns)
    print(
        f"applied {path}: apps {counts['apps_created']} created, {counts['apps_updated']} "
        f"updated, {counts['apps_unchanged']} unchanged; campaigns "
        f"{counts['campaigns_created']} created, {counts['campaigns_updated']} updated, "
        f"{counts['campaigns_unchanged']} unchanged; revision {counts['revision']}"
    )
    return EXIT_OK


async def _campaigns_list(args: argparse.Namespace) -> int:
    async with open_pool(PostgresSettings.from_env()) as pool:
        campaigns = await ConfigStore(pool).list_campaigns(args.app)
    if args.json:
        print(json.dumps([campaign_to_doc(c) for c in campaigns], indent=2))
        return EXIT_OK
    rows = [
        (
            c.campaign_id,
            c.status.value,
            c.channel.value,
            str(c.priority),
            str(len(c.arms)),
            ",".join(sorted(c.trigger_events)),
        )
        for c in campaigns
    ]
    _table(("CAMPAIGN", "STATUS", "CHANNEL", "PRIORITY", "ARMS", "TRIGGERS"), rows)
    return EXIT_OK


async def _push_list(args: argparse.Namespace) -> int:
    async with open_pool(PostgresSettings.from_env()) as pool:
        jobs = await list_push_jobs(pool, app_id=args.app, status=args.status, limit=args.limit)
    if args.json:
        print(json.dumps(jobs, indent=2, default=_json_default))
        return EXIT_OK
    rows = [
        (
            str(job["job_id"]),
            job["app_id"],
            job["user_id"],
            job["campaign_id"],
            job["arm_id"],
            job["status"],
            str(job["attempts"]),
            job["deliver_at"].isoformat(),
        )
        for job in jobs
    ]
    _table(("JOB", "APP", "USER", "CAMPAIGN", "ARM", "STATUS", "ATTEMPTS", "DELIVER_AT"), rows)
    return EXIT_OK


def _json_default(value: object) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value)  # UUIDs


def _serve(args: argparse.Namespace) -> int:
    from nudge_server.server import run_server  # written separately; loaded only to serve

    run_server(ServerSettings.from_env())
    return EXIT_OK


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    if not rows:
        print("(none)")
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    for line in (header, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nudge",
        description="The nudge decisioning service. Settings come from NUDGE_* variables.",
    )
    parser.set_defaults(sync=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    migrate = commands.add_parser("migrate", help="apply database migrations (NUDGE_DATABASE_URL)")
    migrate.add_argument(
        "--directory", type=Path, default=None, help="migrations directory (default: built in)"
    )
    migrate.set_defaults(run=_migrate)

    apply = commands.add_parser(
        "apply", help="validate a YAML file of apps and campaigns, apply it"
    )
    apply.add_argument("file", type=Path, metavar="FILE.yaml")
    apply.add_argument("--check", action="store_true", help="validate only; change nothing")
    apply.set_defaults(run=_apply)

    campaigns = commands.add_parser("campaigns", help="inspect campaigns")
    campaigns_commands = campaigns.add_subparsers(dest="action", required=True, metavar="ACTION")
    campaigns_list = campaigns_commands.add_parser("list", help="list the campaigns of an app")
    campaigns_list.add_argument("--app", required=True, help="the app id")
    campaigns_list.add_argument("--json", action="store_true", help="print JSON documents")
    campaigns_list.set_defaults(run=_campaigns_list)

    push = commands.add_parser("push", help="inspect push jobs")
    push_commands = push.add_subparsers(dest="action", required=True, metavar="ACTION")
    push_list = push_commands.add_parser("list", help="list push jobs, newest first")
    push_list.add_argument("--app", default=None, help="only this app")
    push_list.add_argument("--status", default=None, help="only this status (queued, sent, ...)")
    push_list.add_argument("--limit", type=int, default=50, help="at most this many (1-1000)")
    push_list.add_argument("--json", action="store_true", help="print JSON")
    push_list.set_defaults(run=_push_list)

    serve = commands.add_parser("serve", help="run the gRPC server")
    serve.set_defaults(run=_serve, sync=True)

    report_cli.add_parser(commands)  # `nudge report`
    key_cli.add_parser(commands)  # `nudge keys`
    status_cli.add_parser(commands)  # `nudge status`
    user_cli.add_parser(commands)  # `nudge users delete`
    delivery_cli.add_parser(commands)  # `nudge worker`, `nudge deadletter`
    return parser


def _exit_code(exc: NudgeError) -> int:
    if isinstance(exc, StoreUnavailable):
        return EXIT_UNAVAILABLE
    if isinstance(
        exc, (ConfigError, InvalidArgument, NotFound, FailedPrecondition, MigrationError)
    ):
        return EXIT_BAD_INPUT
    return EXIT_UNAVAILABLE


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the `nudge` command; returns its exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.sync:
            sync_run: Callable[[argparse.Namespace], int] = args.run
            return sync_run(args)
        async_run: Callable[[argparse.Namespace], Coroutine[Any, Any, int]] = args.run
        return asyncio.run(async_run(args))
    except CliError as exc:
        print(f"nudge: {exc}", file=sys.stderr)
        return exc.code
    except NudgeError as exc:
        print(f"nudge: {exc}", file=sys.stderr)
        return _exit_code(exc)
    except asyncpg.PostgresError as exc:
        print(
            f"nudge: PostgreSQL refused the request: {type(exc).__name__}: {exc}", file=sys.stderr
        )
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
