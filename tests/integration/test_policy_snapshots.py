"""Every shown decision names the full distribution its arm was drawn from, in the log, also
when PostgreSQL was away while the snapshot was made."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis
from fakes.tcp_proxy import TcpProxy
from nudge_server.arm_stats import PolicyCache
from nudge_server.config_store import ConfigSnapshot
from nudge_server.decision_log import LogWriter
from nudge_server.decisions import DecisionEngine
from nudge_server.model import App, Arm, Campaign, Channel, Platform, Prompt, ThrottlePolicy
from nudge_server.requests import DecideInput, decide_input
from nudge_server.settings import DecisionSettings, LogSettings, RedisSettings
from nudge_server.spool import Spool
from nudge_server.throttle_store import ThrottleStore

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)  # noon in UTC, outside quiet hours
CAMPAIGN = Campaign(
    app_id="app",
    campaign_id="c",
    trigger_events=frozenset({"e"}),
    arms=tuple(Arm(f"a{i}", Prompt()) for i in range(3)),
)
CONFIG = ConfigSnapshot.build(
    1, [App("app", ThrottlePolicy(min_interval_s=0, daily_cap=50))], [CAMPAIGN]
)
SPOOLING = LogSettings(batch_size=100, flush_interval_s=0.05, spill_after_s=0.2)
DECISIONS_WITH_THEIR_SNAPSHOT = """
SELECT d.arm_id, d.propensity, s.arm_ids, s.probabilities
FROM decisions d JOIN policy_snapshots s ON s.snapshot_id = d.policy_snapshot
"""


def ask(user: str) -> DecideInput:
    return decide_input(
        app="app",
        user=user,
        event_name="e",
        event_properties={},
        channel=Channel.IN_APP,
        surface="",
        tz_name="UTC",
        locale="",
        platform=Platform.WEB,
        client_request_id="",
        event_time=None,
        now=NOW,
    )


async def favour_arm_a1(redis_client: aioredis.Redis) -> ThrottleStore:
    """Gives arm a1 a clear lead, so that the refreshed policy is not uniform."""
    await redis_client.hset("nudge:arms:{app:c}", mapping={"a1:n": 50, "a1:r": 40, "a0:n": 50})
    return ThrottleStore(redis_client, RedisSettings(decision_timeout_s=2.0))


async def test_decisions_reference_saved_snapshots_whose_probabilities_match(
    pg_pool: asyncpg.Pool, redis_client: aioredis.Redis
) -> None:
    store = await favour_arm_a1(redis_client)
    async with LogWriter(pg_pool, LogSettings()) as writer:
        policies = PolicyCache(
            store, lambda: [CAMPAIGN], refresh_s=3600, seed=1, add_snapshot=writer.add_snapshot
        )
        engine = DecisionEngine(
            lambda: CONFIG, policies, store, writer, DecisionSettings(seed=2), clock=lambda: NOW
        )
        before = await engine.decide(ask("early"))  # no refresh yet: the uniform policy
        await policies.refresh()
        after = [await engine.decide(ask(f"u{i}")) for i in range(20)]
        await writer.flush()
    assert before.show and before.propensity == 1 / 3  # exact, not rounded by the script
    rows = await pg_pool.fetch(DECISIONS_WITH_THEIR_SNAPSHOT)
    assert len(rows) == 1 + len(after)
    for row in rows:
        index = list(row["arm_ids"]).index(row["arm_id"])
        assert row["probabilities"][index] == row["propensity"]
        assert abs(sum(row["probabilities"]) - 1) < 1e-9
    assert await pg_pool.fetchval("SELECT count(*) FROM policy_snapshots") == 2
    favoured = {r["arm_id"] for r in rows if r["propensity"] > 0.5}
    assert favoured == {"a1"}


async def test_snapshots_made_while_postgres_is_cut_land_when_a_new_writer_replays_the_spool(
    pg_pool: asyncpg.Pool,
    pg_dsn: str,
    redis_client: aioredis.Redis,
    tcp_proxy: Callable[[str], Awaitable[TcpProxy]],
    tmp_path: Path,
) -> None:
    store = await favour_arm_a1(redis_client)
    proxy = await tcp_proxy(pg_dsn)
    proxied = await asyncpg.create_pool(proxy.url_for(pg_dsn), min_size=0, max_size=2, timeout=2)
    try:
        await proxy.cut()
        with Spool(tmp_path, 10_000_000) as spool:
            # Entered (and left) while PostgreSQL is away: the cache needs only Redis.
            async with (
                LogWriter(proxied, SPOOLING, spool=spool) as writer,
                PolicyCache(
                    store,
                    lambda: [CAMPAIGN],
                    refresh_s=3600,
                    seed=1,
                    add_snapshot=writer.add_snapshot,
                ) as policies,
            ):
                engine = DecisionEngine(
                    lambda: CONFIG,
                    policies,
                    store,
                    writer,
                    DecisionSettings(seed=2),
                    clock=lambda: NOW,
                )
                made = [await engine.decide(ask(f"u{i}")) for i in range(10)]
                await policies.refresh()  # statistics unchanged: no new snapshot
            # Closed while PostgreSQL is still down: the snapshot and the decisions wait on disk.
            assert writer.rows_dropped == 0
            assert writer.rows_spooled == 1 + len(made)
        assert await pg_pool.fetchval("SELECT count(*) FROM decisions") == 0
        assert await pg_pool.fetchval("SELECT count(*) FROM policy_snapshots") == 0
    finally:
        await proxied.close()

    with Spool(tmp_path, 10_000_000) as spool:  # the next process, on the same directory
        assert spool.stats().rows == 1 + len(made)
        async with LogWriter(pg_pool, SPOOLING, spool=spool) as second:
            async with asyncio.timeout(20):
                while spool.stats().rows:
                    await asyncio.sleep(0.05)
        assert second.rows_replayed == 1 + len(made)
    assert all(d.show and d.propensity is not None for d in made)
    rows = await pg_pool.fetch(DECISIONS_WITH_THEIR_SNAPSHOT)
    assert len(rows) == len(made)  # every decision finds the snapshot it was drawn from
    for row in rows:
        assert row["probabilities"][list(row["arm_ids"]).index(row["arm_id"])] == row["propensity"]
    assert await pg_pool.fetchval("SELECT count(*) FROM policy_snapshots") == 1
    assert max(rows[0]["probabilities"]) > 0.5  # the refreshed policy, not the uniform one
