"""ConfigStore, ConfigSnapshot and ConfigCache against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import os
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from nudge_server.config import campaign_to_doc, parse_app, parse_campaign
from nudge_server.config_store import ConfigCache, ConfigSnapshot, ConfigStore
from nudge_server.errors import NotFound, StoreUnavailable
from nudge_server.model import App, Campaign, CampaignStatus, Channel
from nudge_server.settings import DecisionSettings

ADMIN_URL = os.environ.get(
    "NUDGE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def app(app_id: str = "fit-app", **policy: Any) -> App:
    return parse_app({"app_id": app_id, "display_name": app_id.title(), "policy": policy})


def campaign(campaign_id: str = "streak", app_id: str = "fit-app", **overrides: Any) -> Campaign:
    doc: dict[str, Any] = {
        "app_id": app_id,
        "campaign_id": campaign_id,
        "trigger_events": ["workout_finished"],
        "arms": [{"arm_id": "a", "prompt": {"title": "Go"}}, {"arm_id": "b"}],
    }
    doc.update(overrides)
    return parse_campaign(doc)


@pytest.fixture
def store(pg_pool: asyncpg.Pool) -> ConfigStore:
    return ConfigStore(pg_pool)


async def test_put_and_get_an_app(store: ConfigStore) -> None:
    stored = await store.put_app(app(daily_cap=5, quiet_hours_start="23:00"))
    assert stored == app(daily_cap=5, quiet_hours_start="23:00")
    fetched = await store.get_app("fit-app")
    assert fetched == stored
    assert fetched.policy.daily_cap == 5
    assert fetched.policy.quiet_start == dt.time(23, 0)

    await store.put_app(app(daily_cap=2))  # replaces the policy whole
    replaced = await store.get_app("fit-app")
    assert replaced.policy.daily_cap == 2
    assert replaced.policy.quiet_start == dt.time(22, 0)


async def test_get_a_missing_app_is_not_found(store: ConfigStore) -> None:
    with pytest.raises(NotFound, match="nope"):
        await store.get_app("nope")


async def test_put_get_and_list_campaigns(store: ConfigStore) -> None:
    await store.put_app(app())
    before = dt.datetime.now(dt.UTC)
    stored = await store.put_campaign(campaign("zeta", channel="push", priority=3))
    await store.put_campaign(campaign("alpha", status="archived"))
    assert stored.updated_at is not None
    assert stored.updated_at >= before - dt.timedelta(seconds=5)

    fetched = await store.get_campaign("fit-app", "zeta")
    assert fetched == stored
    assert fetched.channel is Channel.PUSH
    assert fetched.priority == 3

    listed = await store.list_campaigns("fit-app")
    assert [c.campaign_id for c in listed] == ["alpha", "zeta"]
    assert listed[0].status is CampaignStatus.ARCHIVED


async def test_put_campaign_replaces_it_whole_and_sets_updated_at(store: ConfigStore) -> None:
    await store.put_app(app())
    first = await store.put_campaign(campaign(arms=[{"arm_id": "a"}, {"arm_id": "b"}]))
    await asyncio.sleep(0.01)
    second = await store.put_campaign(campaign(arms=[{"arm_id": "c"}]))
    assert [a.arm_id for a in (await store.get_campaign("fit-app", "streak")).arms] == ["c"]
    assert first.updated_at is not None and second.updated_at is not None
    assert second.updated_at > first.updated_at


async def test_campaign_of_a_missing_app_is_not_found(store: ConfigStore) -> None:
    with pytest.raises(NotFound, match="ghost"):
        await store.put_campaign(campaign(app_id="ghost"))
    with pytest.raises(NotFound):
        await store.get_campaign("ghost", "streak")
    with pytest.raises(NotFound):
        await store.list_campaigns("ghost")
    assert await store.revision() == 0


async def test_get_a_missing_campaign_is_not_found(store: ConfigStore) -> None:
    await store.put_app(app())
    with pytest.raises(NotFound, match="streak"):
        await store.get_campaign("fit-app", "streak")
    assert await store.list_campaigns("fit-app") == []


async def test_every_write_bumps_the_revision(store: ConfigStore) -> None:
    seen = [await store.revision()]
    assert seen == [0]
    await store.put_app(app())
    seen.append(await store.revision())
    await store.put_app(app())  # a put always counts as a write
    seen.append(await store.revision())
    await store.put_campaign(campaign())
    seen.append(await store.revision())
    counts = await store.apply([app("other")], [campaign(app_id="other")])
    seen.append(await store.revision())
    assert counts["revision"] == seen[-1]
    assert seen == sorted(set(seen))  # strictly increasing


async def test_a_recreated_database_never_reuses_a_revision(
    store: ConfigStore, pg_pool: asyncpg.Pool
) -> None:
    await store.put_app(app())
    seen = await store.revision()
    # As after restoring an old backup: the counter is back at an old value.
    await pg_pool.execute("UPDATE config_revision SET revision = 0")
    await store.put_app(app("other"))
    assert await store.revision() > seen


async def test_apply_counts_created_updated_and_unchanged(store: ConfigStore) -> None:
    apps = [app("a1"), app("a2")]
    campaigns = [campaign("c1", app_id="a1"), campaign("c2", app_id="a2")]
    first = await store.apply(apps, campaigns)
    assert first == {
        "apps_created": 2,
        "apps_updated": 0,
        "apps_unchanged": 0,
        "campaigns_created": 2,
        "campaigns_updated": 0,
        "campaigns_unchanged": 0,
        "revision": await store.revision(),
    }
    assert first["revision"] > 0
    again = await store.apply(apps, campaigns)
    assert again["apps_unchanged"] == 2 and again["campaigns_unchanged"] == 2
    assert again["revision"] == first["revision"]  # nothing changed, nothing bumped

    changed = await store.apply(
        [app("a1", daily_cap=9), app("a2")],
        [campaign("c1", app_id="a1", priority=5), campaign("c3", app_id="a2")],
    )
    assert (changed["apps_updated"], changed["apps_unchanged"]) == (1, 1)
    assert (changed["campaigns_updated"], changed["campaigns_created"]) == (1, 1)
    assert changed["revision"] > first["revision"]
    assert (await store.get_app("a1")).policy.daily_cap == 9
    assert (await store.get_campaign("a1", "c1")).priority == 5


async def test_apply_is_all_or_nothing(store: ConfigStore, pg_pool: asyncpg.Pool) -> None:
    await store.put_app(app("existing"))
    revision = await store.revision()
    with pytest.raises(NotFound, match="ghost"):
        await store.apply(
            [app("new-app"), app("existing", daily_cap=7)],
            [
                campaign("ok", app_id="new-app"),
                campaign("ok2", app_id="existing"),
                campaign("bad", app_id="ghost"),
            ],
        )
    assert await store.revision() == revision
    with pytest.raises(NotFound):
        await store.get_app("new-app")
    assert (await store.get_app("existing")).policy.daily_cap == 3
    assert await pg_pool.fetchval("SELECT count(*) FROM campaigns") == 0


async def test_a_campaign_may_reference_an_app_of_the_same_apply(store: ConfigStore) -> None:
    counts = await store.apply([app("fresh")], [campaign(app_id="fresh")])
    assert counts["campaigns_created"] == 1
    assert (await store.get_campaign("fresh", "streak")).app_id == "fresh"


async def test_snapshot_holds_everything(store: ConfigStore) -> None:
    await store.apply(
        [app("a1"), app("a2")],
        [campaign("c2", app_id="a1"), campaign("c1", app_id="a1"), campaign("c1", app_id="a2")],
    )
    snapshot = await store.load_snapshot()
    assert snapshot.revision == await store.revision()
    assert set(snapshot.apps) == {"a1", "a2"}
    assert [c.campaign_id for c in snapshot.campaigns["a1"]] == ["c1", "c2"]
    assert snapshot.campaign("a2", "c1") is not None
    assert snapshot.campaign("a2", "c2") is None
    assert snapshot.campaigns["a1"][0].updated_at is not None


async def test_triggered_filters_and_orders(store: ConfigStore) -> None:
    await store.apply(
        [app("a1"), app("a2")],
        [
            campaign("low", app_id="a1", priority=1),
            campaign("high", app_id="a1", priority=10),
            campaign("b-tie", app_id="a1", priority=5),
            campaign("a-tie", app_id="a1", priority=5),
            campaign("paused", app_id="a1", priority=99, status="paused"),
            campaign("archived", app_id="a1", priority=99, status="archived"),
            campaign("push", app_id="a1", priority=99, channel="push"),
            campaign("other-event", app_id="a1", trigger_events=["app_opened"]),
            campaign("multi", app_id="a1", trigger_events=["app_opened", "workout_finished"]),
            campaign("other-app", app_id="a2", priority=99),
        ],
    )
    snapshot = await store.load_snapshot()
    found = snapshot.triggered("a1", "workout_finished", Channel.IN_APP)
    assert [c.campaign_id for c in found] == ["high", "a-tie", "b-tie", "low", "multi"]
    assert [c.campaign_id for c in snapshot.triggered("a1", "workout_finished", Channel.PUSH)] == [
        "push"
    ]
    assert [c.campaign_id for c in snapshot.triggered("a1", "app_opened", Channel.IN_APP)] == [
        "multi",
        "other-event",
    ]
    assert snapshot.triggered("a1", "unknown", Channel.IN_APP) == ()
    assert snapshot.triggered("nope", "workout_finished", Channel.IN_APP) == ()
    assert [
        c.campaign_id for c in snapshot.triggered("a2", "workout_finished", Channel.IN_APP)
    ] == ["other-app"]


def test_snapshot_build_without_a_database() -> None:
    snapshot = ConfigSnapshot.build(7, [app("a1")], [campaign("x", app_id="a1")])
    assert snapshot.revision == 7
    assert [
        c.campaign_id for c in snapshot.triggered("a1", "workout_finished", Channel.IN_APP)
    ] == ["x"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.revision = 8  # type: ignore[misc]


async def test_an_invalid_stored_campaign_is_left_out_of_the_snapshot(
    store: ConfigStore, pg_pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    await store.apply([app()], [campaign("good")])
    spec = campaign_to_doc(campaign("broken"))
    spec["arms"] = []  # no longer valid
    await pg_pool.execute(
        "INSERT INTO campaigns (app_id, campaign_id, status, spec) VALUES ($1, $2, $3, $4::jsonb)",
        "fit-app",
        "broken",
        "active",
        json.dumps(spec),
    )
    snapshot = await store.load_snapshot()
    assert [c.campaign_id for c in snapshot.campaigns["fit-app"]] == ["good"]
    errors = [r for r in caplog.records if r.getMessage() == "config_invalid_campaign"]
    assert errors and errors[0].levelno == logging.ERROR


async def test_connection_errors_become_store_unavailable() -> None:
    pool = await asyncpg.create_pool(
        "postgresql://postgres@127.0.0.1:1/none", min_size=0, max_size=1, timeout=1
    )
    try:
        store = ConfigStore(pool)
        with pytest.raises(StoreUnavailable) as info:
            await store.get_app("fit-app")
        assert isinstance(info.value.__cause__, OSError)
        with pytest.raises(StoreUnavailable):
            await store.revision()
        with pytest.raises(StoreUnavailable):
            await store.apply([app()], [])
    finally:
        await pool.close()


# --- the cache -----------------------------------------------------------------------------

REFRESH = DecisionSettings(config_refresh_s=0.1)


async def wait_for(predicate: Any, timeout: float) -> float:
    """Seconds until predicate() held; fails after `timeout`."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not predicate():
        if loop.time() - start > timeout:
            raise AssertionError(f"not reached within {timeout}s")
        await asyncio.sleep(0.01)
    return loop.time() - start


async def test_cache_loads_on_enter_and_picks_up_changes(
    store: ConfigStore, pg_pool: asyncpg.Pool
) -> None:
    await store.apply([app()], [campaign("first")])
    async with ConfigCache(store, REFRESH) as cache:
        assert [c.campaign_id for c in cache.snapshot.campaigns["fit-app"]] == ["first"]
        revision = cache.snapshot.revision

        other_writer = ConfigStore(pg_pool)  # another server's write
        await other_writer.put_campaign(campaign("second"))
        waited = await wait_for(lambda: cache.snapshot.revision > revision, timeout=0.5)
        assert waited <= 3 * REFRESH.config_refresh_s + 0.1
        ids = [
            c.campaign_id
            for c in cache.snapshot.triggered("fit-app", "workout_finished", Channel.IN_APP)
        ]
        assert ids == ["first", "second"]


async def test_refresh_now_is_immediate(store: ConfigStore) -> None:
    await store.put_app(app())
    async with ConfigCache(store, DecisionSettings(config_refresh_s=3600)) as cache:
        await store.put_campaign(campaign())
        assert cache.snapshot.campaign("fit-app", "streak") is None
        snapshot = await cache.refresh_now()
        assert snapshot is cache.snapshot
        assert cache.snapshot.campaign("fit-app", "streak") is not None


async def test_cache_keeps_the_last_good_snapshot_through_an_outage(
    pg_dsn: str, pg_template: str, caplog: pytest.LogCaptureFixture
) -> None:
    name = urlsplit(pg_dsn).path.lstrip("/")
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2, timeout=2)
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        store = ConfigStore(pool)
        await store.apply([app()], [campaign("before")])
        async with ConfigCache(store, REFRESH) as cache:
            good = cache.snapshot
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            await asyncio.sleep(5 * REFRESH.config_refresh_s)
            assert cache.snapshot is good
            assert [r for r in caplog.records if r.getMessage() == "config_refresh_failed"]
            with pytest.raises(StoreUnavailable):
                await cache.refresh_now()
            assert cache.snapshot is good

            await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
            await store.apply([app("restored")], [campaign("after", app_id="restored")])
            await wait_for(lambda: "restored" in cache.snapshot.apps, timeout=3)
            assert "fit-app" not in cache.snapshot.apps
    finally:
        await admin.close()
        await pool.close()


async def test_cache_does_not_start_without_postgres() -> None:
    pool = await asyncpg.create_pool(
        "postgresql://postgres@127.0.0.1:1/none", min_size=0, max_size=1, timeout=1
    )
    try:
        with pytest.raises(StoreUnavailable):
            async with ConfigCache(ConfigStore(pool), REFRESH):
                pass
    finally:
        await pool.close()
