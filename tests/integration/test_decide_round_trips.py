"""The Decide path makes exactly one Redis round trip, counted by Redis itself (MONITOR)."""

from __future__ import annotations

import asyncio
import datetime as dt
import random

import asyncpg
import redis.asyncio as aioredis
from nudge_server.arm_stats import PolicyCache
from nudge_server.config_store import ConfigSnapshot
from nudge_server.decision_log import LogWriter
from nudge_server.decisions import DecisionEngine
from nudge_server.model import App, Arm, Campaign, Channel, Platform, Prompt, ThrottlePolicy
from nudge_server.requests import decide_input
from nudge_server.settings import DecisionSettings, LogSettings, RedisSettings
from nudge_server.throttle_store import ThrottleStore

NOW = dt.datetime(2026, 6, 1, 3, 0, tzinfo=dt.UTC)


def snapshot() -> ConfigSnapshot:
    campaigns = [
        Campaign(
            app_id="app",
            campaign_id=f"c{i}",
            priority=i,
            arms=tuple(Arm(f"a{j}", Prompt(title=f"{i}/{j}")) for j in range(5)),
            trigger_events=frozenset({"opened"}),
            cap_per_day=1,
            cap_min_interval_s=60,
        )
        for i in range(3)
    ]
    return ConfigSnapshot.build(
        1, [App("app", ThrottlePolicy(min_interval_s=0, daily_cap=5))], campaigns
    )


async def test_each_decide_sends_one_command_to_redis(
    redis_client: aioredis.Redis, redis_url: str, pg_pool: asyncpg.Pool
) -> None:
    config = snapshot()
    # One connection, so that MONITOR's lines of this client are told apart by its port.
    client = aioredis.Redis.from_url(redis_url, max_connections=1)
    store = ThrottleStore(client, RedisSettings(decision_timeout_s=2.0))
    await store.load_scripts()
    port = str((await client.client_info())["addr"]).rsplit(":", 1)[1]
    # The policy cache is not entered: no background refresh competes with the count.
    policies = PolicyCache(store, list, refresh_s=3600)
    monitor_client = aioredis.Redis.from_url(redis_url)
    seen: list[str] = []
    async with LogWriter(pg_pool, LogSettings()) as log_writer:
        engine = DecisionEngine(
            lambda: config,
            policies,
            store,
            log_writer,
            DecisionSettings(trust_event_time=True, seed=1),
        )
        async with monitor_client.monitor() as monitor:

            async def collect() -> None:
                while True:
                    command = await monitor.next_command()
                    # Commands a script runs are listed as client "lua": not round trips.
                    if str(command.get("client_port")) == port:
                        seen.append(command["command"])

            collector = asyncio.create_task(collect())
            await asyncio.sleep(0.2)
            decisions = 40
            for i in range(decisions):
                request = decide_input(
                    app="app",
                    user=f"user-{random.randrange(8)}",
                    event_name="opened",
                    event_properties={},
                    channel=Channel.IN_APP,
                    surface="",
                    tz_name="Asia/Tokyo",
                    locale="",
                    platform=Platform.WEB,
                    client_request_id=f"r{i}" if i % 2 else "",
                    event_time=NOW + dt.timedelta(minutes=i),
                    now=NOW,
                )
                await engine.decide(request)
            await asyncio.sleep(0.3)
            collector.cancel()
    await client.aclose()
    await monitor_client.aclose()
    evalsha = [c for c in seen if c.upper().startswith("EVALSHA")]
    assert len(evalsha) == decisions
    assert len(seen) == decisions, seen[:10]
