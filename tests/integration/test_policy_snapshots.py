"""Every shown decision names the full distribution its arm was drawn from, in the log."""

from __future__ import annotations

import datetime as dt

import asyncpg
import redis.asyncio as aioredis
from nudge_server.arm_stats import PolicyCache
from nudge_server.config_store import ConfigSnapshot
from nudge_server.decision_log import LogWriter
from nudge_server.decisions import DecisionEngine
from nudge_server.model import App, Arm, Campaign, Channel, Platform, Prompt, ThrottlePolicy
from nudge_server.requests import decide_input
from nudge_server.settings import DecisionSettings, LogSettings, RedisSettings
from nudge_server.snapshot_store import snapshot_writer
from nudge_server.throttle_store import ThrottleStore

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)  # noon in UTC, outside quiet hours


async def test_decisions_reference_saved_snapshots_whose_probabilities_match(
    pg_pool: asyncpg.Pool, redis_client: aioredis.Redis
) -> None:
    campaign = Campaign(
        app_id="app",
        campaign_id="c",
        trigger_events=frozenset({"e"}),
        arms=tuple(Arm(f"a{i}", Prompt()) for i in range(3)),
    )
    config = ConfigSnapshot.build(
        1, [App("app", ThrottlePolicy(min_interval_s=0, daily_cap=50))], [campaign]
    )
    store = ThrottleStore(redis_client, RedisSettings(decision_timeout_s=2.0))
    # Give arm a1 a clear lead, so the refreshed policy is not uniform.
    await redis_client.hset("nudge:arms:{app:c}", mapping={"a1:n": 50, "a1:r": 40, "a0:n": 50})
    policies = PolicyCache(
        store, lambda: [campaign], refresh_s=3600, seed=1, save_snapshots=snapshot_writer(pg_pool)
    )

    def ask(user: str):  # type: ignore[no-untyped-def]
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

    async with LogWriter(pg_pool, LogSettings()) as writer:
        engine = DecisionEngine(
            lambda: config, policies, store, writer, DecisionSettings(seed=2), clock=lambda: NOW
        )
        before = await engine.decide(ask("early"))  # no refresh yet: the uniform policy
        await policies.refresh()
        after = [await engine.decide(ask(f"u{i}")) for i in range(20)]
        await policies.flush_snapshots()
        await writer.flush()
    assert before.show and before.propensity == 1 / 3  # exact, not rounded by the script
    rows = await pg_pool.fetch(
        """SELECT d.arm_id, d.propensity, s.arm_ids, s.probabilities
           FROM decisions d JOIN policy_snapshots s ON s.snapshot_id = d.policy_snapshot"""
    )
    assert len(rows) == 1 + len(after)
    for row in rows:
        index = list(row["arm_ids"]).index(row["arm_id"])
        assert row["probabilities"][index] == row["propensity"]
        assert abs(sum(row["probabilities"]) - 1) < 1e-9
    assert await pg_pool.fetchval("SELECT count(*) FROM policy_snapshots") == 2
    favoured = {r["arm_id"] for r in rows if r["propensity"] > 0.5}
    assert favoured == {"a1"}
