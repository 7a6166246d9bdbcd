"""Migrations against real, freshly created PostgreSQL databases."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from nudge_server.errors import StoreUnavailable
from nudge_server.migrate import MigrationError, apply_migrations, default_migrations_dir

ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS = ROOT / "migrations"
ADMIN_URL = os.environ.get(
    "NUDGE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
EXPECTED_TABLES = {
    "apps",
    "campaigns",
    "config_revision",
    "decisions",
    "outcomes",
    "push_jobs",
    "schema_migrations",
}


def database_url(name: str) -> str:
    return urlunsplit(urlsplit(ADMIN_URL)._replace(path=f"/{name}"))


@pytest.fixture
async def empty_dsn() -> AsyncIterator[str]:
    """A brand-new, empty database (no template), dropped afterwards."""
    name = f"nudge_migrate_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield database_url(name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def tables(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row["tablename"] for row in rows}
    finally:
        await conn.close()


async def recorded(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        return [row["version"] for row in rows]
    finally:
        await conn.close()


def all_versions() -> list[str]:
    return sorted(p.stem for p in MIGRATIONS.glob("*.sql"))


async def test_applies_every_migration_then_nothing(empty_dsn: str) -> None:
    first = await apply_migrations(empty_dsn, MIGRATIONS)
    assert first == all_versions()
    assert "0001_initial" in first
    assert await tables(empty_dsn) >= EXPECTED_TABLES
    assert await recorded(empty_dsn) == all_versions()

    second = await apply_migrations(empty_dsn, MIGRATIONS)
    assert second == []
    assert await recorded(empty_dsn) == all_versions()


async def test_two_concurrent_runs_on_an_empty_database(empty_dsn: str) -> None:
    results = await asyncio.gather(
        apply_migrations(empty_dsn, MIGRATIONS), apply_migrations(empty_dsn, MIGRATIONS)
    )
    assert sorted(results, key=len) == [[], all_versions()]
    assert await tables(empty_dsn) >= EXPECTED_TABLES
    assert await recorded(empty_dsn) == all_versions()


async def test_the_second_run_waits_for_a_slow_first(empty_dsn: str, tmp_path: Path) -> None:
    for path in MIGRATIONS.glob("*.sql"):
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "9000_slow.sql").write_text(
        "SELECT pg_sleep(0.5);\nCREATE TABLE slow_done (id int);\n", encoding="utf-8"
    )
    loop = asyncio.get_running_loop()

    async def run() -> tuple[list[str], float]:
        start = loop.time()
        applied = await apply_migrations(empty_dsn, tmp_path)
        return applied, loop.time() - start

    results = sorted(await asyncio.gather(run(), run()), key=lambda r: len(r[0]))
    (nothing, waited), (everything, _) = results
    assert everything == [*all_versions(), "9000_slow"]
    assert nothing == []
    # The run that found nothing to do had waited for the other's lock, pg_sleep included.
    assert waited >= 0.45
    assert "slow_done" in await tables(empty_dsn)


async def test_new_migrations_are_applied_in_order(empty_dsn: str, tmp_path: Path) -> None:
    (tmp_path / "0002_second.sql").write_text(
        "INSERT INTO log_order (step) VALUES ('second');", encoding="utf-8"
    )
    (tmp_path / "0001_first.sql").write_text(
        "CREATE TABLE log_order (n serial, step text);\n"
        "INSERT INTO log_order (step) VALUES ('first');",
        encoding="utf-8",
    )
    assert await apply_migrations(empty_dsn, tmp_path) == ["0001_first", "0002_second"]
    (tmp_path / "0003_third.sql").write_text(
        "INSERT INTO log_order (step) VALUES ('third');", encoding="utf-8"
    )
    assert await apply_migrations(empty_dsn, tmp_path) == ["0003_third"]
    conn = await asyncpg.connect(empty_dsn)
    try:
        steps = [r["step"] for r in await conn.fetch("SELECT step FROM log_order ORDER BY n")]
    finally:
        await conn.close()
    assert steps == ["first", "second", "third"]


async def test_renaming_an_applied_file_does_not_rerun_it(empty_dsn: str, tmp_path: Path) -> None:
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE once (id int);", encoding="utf-8")
    assert await apply_migrations(empty_dsn, tmp_path) == ["0001_first"]
    (tmp_path / "0001_first.sql").rename(tmp_path / "0001_renamed.sql")
    assert await apply_migrations(empty_dsn, tmp_path) == []


async def test_a_failing_migration_is_rolled_back_whole(empty_dsn: str, tmp_path: Path) -> None:
    (tmp_path / "0001_good.sql").write_text("CREATE TABLE good (id int);", encoding="utf-8")
    (tmp_path / "0002_bad.sql").write_text(
        "CREATE TABLE half (id int);\nSELECT * FROM no_such_table;", encoding="utf-8"
    )
    with pytest.raises(MigrationError, match="0002_bad.sql"):
        await apply_migrations(empty_dsn, tmp_path)
    assert await recorded(empty_dsn) == ["0001_good"]
    found = await tables(empty_dsn)
    assert "good" in found
    assert "half" not in found


@pytest.mark.parametrize(
    "name",
    ["1_short.sql", "0001-dash.sql", "0001_.sql", "0001_name.txt", "README.md", "00010_x.sql"],
)
async def test_a_badly_named_file_is_an_error_naming_it(tmp_path: Path, name: str) -> None:
    (tmp_path / "0001_ok.sql").write_text("SELECT 1;", encoding="utf-8")
    (tmp_path / name).write_text("SELECT 1;", encoding="utf-8")
    with pytest.raises(MigrationError) as info:
        # Validated before connecting: the unreachable DSN is never tried.
        await apply_migrations("postgresql://postgres@127.0.0.1:1/none", tmp_path)
    assert name in str(info.value)


async def test_two_files_with_one_number_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "0001_one.sql").write_text("SELECT 1;", encoding="utf-8")
    (tmp_path / "0001_other.sql").write_text("SELECT 1;", encoding="utf-8")
    with pytest.raises(MigrationError) as info:
        await apply_migrations("postgresql://postgres@127.0.0.1:1/none", tmp_path)
    assert "0001_one.sql" in str(info.value) and "0001_other.sql" in str(info.value)


async def test_hidden_files_and_directories_are_ignored(empty_dsn: str, tmp_path: Path) -> None:
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE ok (id int);", encoding="utf-8")
    (tmp_path / ".0002_ok.sql.swp").write_text("garbage", encoding="utf-8")
    (tmp_path / "old").mkdir()
    assert await apply_migrations(empty_dsn, tmp_path) == ["0001_ok"]


async def test_a_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match="does not exist"):
        await apply_migrations("postgresql://postgres@127.0.0.1:1/none", tmp_path / "nope")


async def test_unreachable_database_is_unavailable() -> None:
    with pytest.raises(StoreUnavailable):
        await apply_migrations("postgresql://postgres@127.0.0.1:1/none", MIGRATIONS)


async def test_a_database_that_does_not_exist_is_unavailable() -> None:
    with pytest.raises(StoreUnavailable):
        await apply_migrations(database_url(f"missing_{uuid.uuid4().hex}"), MIGRATIONS)


def test_default_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NUDGE_MIGRATIONS_DIR", raising=False)
    assert default_migrations_dir() == MIGRATIONS
    monkeypatch.setenv("NUDGE_MIGRATIONS_DIR", str(tmp_path))
    assert default_migrations_dir() == tmp_path


async def test_default_directory_is_used(
    empty_dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "0001_env.sql").write_text("CREATE TABLE from_env (id int);", encoding="utf-8")
    monkeypatch.setenv("NUDGE_MIGRATIONS_DIR", str(tmp_path))
    assert await apply_migrations(empty_dsn) == ["0001_env"]
    assert "from_env" in await tables(empty_dsn)
