"""`nudge users delete`: erase one user of one app, straight in PostgreSQL and Redis
(NUDGE_DATABASE_URL, NUDGE_REDIS_URL), as AdminService.DeleteUser does (`erasure`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from .erasure import ErasureCounts, UserEraser
from .postgres import open_pool
from .settings import PostgresSettings, RedisSettings
from .throttle_store import open_redis


def describe(counts: ErasureCounts) -> str:
    """One line saying what an erasure changed."""
    return (
        f"erased at {counts.erased_at.isoformat()}: deleted {counts.redis_keys_deleted} Redis "
        f"keys, {counts.devices_deleted} devices, {counts.push_deliveries_deleted} push "
        f"deliveries; pseudonymised {counts.decisions_pseudonymised} decisions, "
        f"{counts.outcomes_pseudonymised} outcomes, {counts.push_jobs_pseudonymised} push jobs "
        f"({counts.push_jobs_cancelled} not yet delivered, cancelled)"
    )


async def _delete(args: argparse.Namespace) -> int:
    redis_settings = RedisSettings.from_env()
    redis_client = open_redis(redis_settings)
    try:
        async with open_pool(PostgresSettings.from_env()) as pool:
            counts = await UserEraser(pool, redis_client, redis_settings).erase(args.app, args.user)
    finally:
        await redis_client.aclose()
    if args.json:
        doc = dataclasses.asdict(counts)
        doc["erased_at"] = counts.erased_at.isoformat()
        print(json.dumps(doc, indent=2))
    else:
        print(f"user of app {args.app!r} {describe(counts)}")
    return 0


def add_parser(commands: Any) -> None:
    """Adds `users` and its actions to the `nudge` command's subparsers."""
    users = commands.add_parser("users", help="erase a user's data")
    actions = users.add_subparsers(dest="action", required=True, metavar="ACTION")
    delete = actions.add_parser(
        "delete",
        help="erase one user of one app: Redis state and devices deleted, decisions and "
        "outcomes pseudonymised (idempotent)",
    )
    delete.add_argument("--app", required=True, help="the app id")
    delete.add_argument("--user", required=True, help="the user id, as sent to Decide")
    delete.add_argument("--json", action="store_true", help="print the counts as JSON")
    delete.set_defaults(run=_delete)
