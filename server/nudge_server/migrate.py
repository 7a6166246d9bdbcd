"""Applies the numbered SQL migrations of `migrations/` to a PostgreSQL database.

Each `NNNN_name.sql` file runs in its own transaction and is recorded in `schema_migrations`
(version = the file name without `.sql`). A migration counts as applied when its number is
recorded, so renaming the descriptive part of an applied file never re-runs it. The whole run
holds a PostgreSQL advisory lock: a second process started at the same time waits, then finds
everything applied.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from .errors import NudgeError, StoreUnavailable

log = logging.getLogger(__name__)

MIGRATION_RE = re.compile(r"(?P<number>[0-9]{4})_(?P<name>[A-Za-z0-9_\-]+)\.sql")

#: Key of the advisory lock held for a whole run ("nudge" in ASCII); any constant would do, as
#: long as every version of the service uses the same one.
LOCK_KEY = 0x6E75646765

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
_SELECT_APPLIED = "SELECT version FROM schema_migrations"
_RECORD = "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, now())"


class MigrationError(NudgeError):
    """The migrations directory is malformed (a badly named file, a number used twice)."""


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    number: str
    version: str
    path: Path


def default_migrations_dir() -> Path:
    """$NUDGE_MIGRATIONS_DIR, else the repository's `migrations/` beside the package."""
    env = os.environ.get("NUDGE_MIGRATIONS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "migrations"


def discover(directory: Path) -> list[Migration]:
    """The migrations of `directory` in order. Hidden files and subdirectories are ignored."""
    if not directory.is_dir():
        raise MigrationError(f"migrations directory {str(directory)!r} does not exist")
    by_number: dict[str, Migration] = {}
    for path in sorted(directory.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        match = MIGRATION_RE.fullmatch(path.name)
        if match is None:
            raise MigrationError(
                f"{path.name!r} in {str(directory)!r} is not a migration: "
                "names must look like NNNN_name.sql (four digits, letters, digits, '_', '-')"
            )
        number = match.group("number")
        if number in by_number:
            raise MigrationError(
                f"{by_number[number].path.name!r} and {path.name!r} share the number {number}"
            )
        by_number[number] = Migration(number=number, version=path.stem, path=path)
    return [by_number[n] for n in sorted(by_number)]


async def apply_migrations(dsn: str, directory: Path | None = None) -> list[str]:
    """Applies the pending migrations in order; returns the versions applied by this call."""
    migrations = discover(directory if directory is not None else default_migrations_dir())
    try:
        conn = await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
    try:
        # Session-level lock, so that it spans the per-migration transactions; closing the
        # connection releases it even when a migration fails.
        await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
        await conn.execute(_CREATE_TABLE)
        applied_numbers = {str(row["version"])[:4] for row in await conn.fetch(_SELECT_APPLIED)}
        done: list[str] = []
        for migration in migrations:
            if migration.number in applied_numbers:
                continue
            sql = migration.path.read_text(encoding="utf-8")
            try:
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(_RECORD, migration.version)
            except asyncpg.PostgresConnectionError:
                raise
            except asyncpg.PostgresError as exc:
                raise MigrationError(
                    f"{migration.path.name} failed and was rolled back: {type(exc).__name__}: {exc}"
                ) from exc
            log.info("migration_applied", extra={"version": migration.version})
            done.append(migration.version)
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
        return done
    except (OSError, asyncpg.PostgresConnectionError, TimeoutError) as exc:
        raise StoreUnavailable(f"PostgreSQL connection lost while migrating: {exc}") from exc
    finally:
        await conn.close()
