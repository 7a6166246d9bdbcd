"""`nudge worker` and `nudge deadletter`: run the delivery worker, inspect and replay dead letters.

    nudge worker                              run until SIGTERM (settings: NUDGE_WORKER_*, ...)
    nudge deadletter list [--app A] [--limit N] [--json]
    nudge deadletter replay JOB_ID | --all [--app A]

They read PostgreSQL directly (NUDGE_DATABASE_URL), like the other commands. A replayed
delivery gets a fresh set of attempts and is due at once; one whose job has expired stays in the
list (it would only be expired again).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import uuid
from collections.abc import Sequence

from ..errors import InvalidArgument
from ..postgres import open_pool
from ..settings import PostgresSettings

EXIT_OK = 0


def _worker(args: argparse.Namespace) -> int:
    from .settings import DeliverySettings
    from .worker import run_worker  # loads the providers only to run

    run_worker(DeliverySettings.from_env(), PostgresSettings.from_env())
    return EXIT_OK


def _json_default(value: object) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    if not rows:
        print("(none)")
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    for line in (header, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())


async def _list(args: argparse.Namespace) -> int:
    from .jobs import JobStore

    async with open_pool(PostgresSettings.from_env()) as pool:
        letters = await JobStore(pool, "cli").dead_letters(args.app, args.limit)
    if args.json:
        print(json.dumps(letters, indent=2, default=_json_default))
        return EXIT_OK
    rows = [
        (
            str(d["job_id"]),
            d["app_id"],
            d["user_id"],
            d["platform"],
            str(d["device_id"]),
            str(d["attempts"]),
            d["updated_at"].isoformat(timespec="seconds"),
            d["error"][:80],
        )
        for d in letters
    ]
    _table(("JOB", "APP", "USER", "PLATFORM", "DEVICE", "ATTEMPTS", "SINCE", "LAST ERROR"), rows)
    return EXIT_OK


async def _replay(args: argparse.Namespace) -> int:
    from .jobs import JobStore

    if (args.job_id is None) == (not args.all):
        raise InvalidArgument("JOB_ID", "give one job id or --all, not both and not neither")
    job_id: uuid.UUID | None = None
    if args.job_id is not None:
        try:
            job_id = uuid.UUID(args.job_id)
        except ValueError:
            raise InvalidArgument("JOB_ID", f"must be a job (decision) id, got {args.job_id!r}")
    async with open_pool(PostgresSettings.from_env()) as pool:
        replayed, expired = await JobStore(pool, "cli").replay(
            dt.datetime.now(dt.UTC), job_id=job_id, app_id=args.app
        )
    print(f"replayed {replayed} dead-lettered deliveries; they are due now")
    if expired:
        print(f"left {expired} whose job has expired (they would only expire again)")
    return EXIT_OK


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `nudge worker` and `nudge deadletter` to the `nudge` command."""
    worker = commands.add_parser(
        "worker",
        help="run the push delivery worker (APNs, FCM) until SIGTERM",
        description="Sends the queued push jobs of every app in NUDGE_DATABASE_URL through APNs "
        "and FCM, configured by the NUDGE_APNS_*, NUDGE_FCM_*, NUDGE_WORKER_* and NUDGE_PUSH_* "
        "variables (README: Push delivery). A provider left unconfigured dead-letters its "
        "deliveries: do not point an unconfigured worker at a database others rely on.",
    )
    worker.set_defaults(run=_worker, sync=True)

    dead = commands.add_parser("deadletter", help="inspect and replay dead-lettered pushes")
    actions = dead.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="list dead-lettered deliveries, newest first")
    listing.add_argument("--app", default=None, help="only this app")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (1-1000)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(run=_list)
    replay = actions.add_parser("replay", help="send dead-lettered deliveries again")
    replay.add_argument("job_id", nargs="?", default=None, metavar="JOB_ID")
    replay.add_argument("--all", action="store_true", help="every dead-lettered delivery")
    replay.add_argument("--app", default=None, help="with --all: only this app")
    replay.set_defaults(run=_replay)
