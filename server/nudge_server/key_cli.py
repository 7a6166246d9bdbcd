"""`nudge keys create|list|revoke`: API keys, straight in PostgreSQL (NUDGE_DATABASE_URL).

The first key of a deployment can only come from here: every RPC needs one.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .api_keys import SCOPES, ApiKey, ApiKeyStore, scope_list
from .postgres import open_pool
from .settings import PostgresSettings


def _doc(key: ApiKey) -> dict[str, Any]:
    return {
        "key_id": key.key_id,
        "app_id": key.app_id,
        "name": key.name,
        "scopes": scope_list(key.scopes),
        "created_at": key.created_at.isoformat(),
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
    }


async def _create(args: argparse.Namespace) -> int:
    async with open_pool(PostgresSettings.from_env()) as pool:
        issued = await ApiKeyStore(pool).create(args.app, args.scopes.split(","), args.name)
    key = issued.key
    print(
        f"created API key {key.key_id} for app {key.app_id!r} with scopes "
        f"{scope_list(key.scopes)}; it is printed once, below, and cannot be shown again",
        file=sys.stderr,
    )
    print(issued.token)
    return 0


async def _list(args: argparse.Namespace) -> int:
    async with open_pool(PostgresSettings.from_env()) as pool:
        keys = await ApiKeyStore(pool).list(args.app, include_revoked=args.all)
    if args.json:
        print(json.dumps([_doc(key) for key in keys], indent=2))
        return 0
    print(f"{'KEY_ID':<17} {'SCOPES':<20} {'CREATED_AT':<26} {'REVOKED_AT':<26} NAME")
    for key in keys:
        revoked = key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else "-"
        print(
            f"{key.key_id:<17} {scope_list(key.scopes):<20} "
            f"{key.created_at.isoformat(timespec='seconds'):<26} {revoked:<26} {key.name}"
        )
    return 0


async def _revoke(args: argparse.Namespace) -> int:
    async with open_pool(PostgresSettings.from_env()) as pool:
        key = await ApiKeyStore(pool).revoke(args.app, args.key_id)
    print(
        f"revoked API key {key.key_id} of app {key.app_id!r}; servers refuse it within their "
        "key refresh interval (NUDGE_KEY_REFRESH, 2 s by default)"
    )
    return 0


def add_parser(commands: Any) -> None:
    """Adds `keys` and its actions to the `nudge` command's subparsers."""
    keys = commands.add_parser("keys", help="create, list and revoke API keys")
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create", help="create a key; prints it once on stdout (details on stderr)"
    )
    create.add_argument("--app", required=True, help="the app the key belongs to")
    create.add_argument(
        "--scopes",
        required=True,
        help=f"comma-separated, of {', '.join(SCOPES)} (decide: Decide, ReportOutcome and "
        "devices; report: arm reports; admin: apps, campaigns, keys, user deletion, status)",
    )
    create.add_argument("--name", default="", help="a label, e.g. who uses it")
    create.set_defaults(run=_create)
    listing = actions.add_parser("list", help="list an app's keys (never their secrets)")
    listing.add_argument("--app", required=True, help="the app id")
    listing.add_argument("--all", action="store_true", help="include revoked keys")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(run=_list)
    revoke = actions.add_parser("revoke", help="revoke a key (idempotent)")
    revoke.add_argument("--app", required=True, help="the app the key belongs to")
    revoke.add_argument("key_id", help="the key's id (the 16 hex digits after 'nk_')")
    revoke.set_defaults(run=_revoke)
