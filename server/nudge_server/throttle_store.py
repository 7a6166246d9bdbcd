"""Redis I/O of per-user throttle state and arm statistics.

All Redis access of the `Decide` hot path goes through `ThrottleStore.decide`: one EVALSHA.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from . import keys
from .errors import FailedPrecondition, StoreUnavailable
from .local_time import from_ms, to_ms, utc_now
from .settings import RedisSettings
from .throttle import CONFLICT, ThrottleCall, Verdict, parse_verdict

_HERE = Path(__file__).resolve().parent
#: Weight of the newest response in a user's responsiveness average.
RESPONSIVENESS_WEIGHT = 0.3


@dataclass(frozen=True)
class OutcomeEffect:
    """What outcome.lua did: status (ok, duplicate, missing, early) and what to learn."""

    status: str
    campaign_id: str = ""
    arm_id: str = ""
    decided_at_ms: int = 0
    window_ms: int = 0
    pull: bool = False
    reward: bool = False
    late: bool = False


class ThrottleStore:
    """The service's Redis operations. It does not own (or close) the client it is handed."""

    def __init__(self, client: aioredis.Redis, settings: RedisSettings) -> None:
        self._client = client
        self._settings = settings
        # register_script sends EVALSHA and reloads the script after a Redis restart.
        self._decide = client.register_script((_HERE / "decide.lua").read_text())
        self._outcome = client.register_script((_HERE / "outcome.lua").read_text())
        self._learn = client.register_script((_HERE / "learn.lua").read_text())

    async def load_scripts(self) -> None:
        """Loads the scripts once at start-up, so the first decision needs no SCRIPT LOAD."""
        try:
            async with asyncio.timeout(self._settings.command_timeout_s):
                for script in (self._decide, self._outcome, self._learn):
                    await self._client.script_load(script.script)
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"redis: cannot load scripts: {exc}") from exc

    async def decide(self, call: ThrottleCall) -> Verdict:
        """Checks and records one decision atomically, within the decision deadline."""
        try:
            async with asyncio.timeout(self._settings.decision_timeout_s):
                status, encoded = await self._decide(keys=list(call.keys), args=list(call.args))
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc
        if int(status) == CONFLICT:
            raise FailedPrecondition(
                "client_request_id: already used for a different request (another event, "
                "channel or time zone) within the last 24 hours"
            )
        return parse_verdict(int(status), encoded)

    async def record_outcome(
        self, app_id: str, user_id: str, decision_id: str, kind: str, at_ms: int
    ) -> OutcomeEffect:
        """Applies one outcome to the decision record and the user's backoff, at most once."""
        tag = keys.user_tag(app_id, user_id)
        try:
            async with asyncio.timeout(self._settings.command_timeout_s):
                encoded = await self._outcome(
                    keys=[keys.user_state(tag), keys.user_decision(tag, decision_id)],
                    args=[kind, at_ms, RESPONSIVENESS_WEIGHT, keys.USER_STATE_TTL_S],
                )
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc
        doc = json.loads(encoded)
        return OutcomeEffect(
            status=str(doc["s"]),
            campaign_id=str(doc.get("c") or ""),
            arm_id=str(doc.get("a") or ""),
            decided_at_ms=int(doc.get("t") or 0),
            window_ms=int(doc.get("aw") or 0),
            pull=bool(doc.get("pull")),
            reward=bool(doc.get("reward")),
            late=bool(doc.get("late")),
        )

    async def learn(self, app_id: str, decision_id: str, effect: OutcomeEffect) -> None:
        """Adds an outcome's pull and/or reward to its arm's statistics, at most once each."""
        if not (effect.pull or effect.reward):
            return
        decision_day = from_ms(effect.decided_at_ms).date().isoformat()
        learned_ttl = (
            max(0, effect.decided_at_ms + effect.window_ms - to_ms(utc_now())) // 1000
            + keys.LEARNED_TTL_MARGIN_S
        )
        try:
            async with asyncio.timeout(self._settings.command_timeout_s):
                await self._learn(
                    keys=[
                        keys.arm_stats(app_id, effect.campaign_id),
                        keys.arm_learned(app_id, effect.campaign_id, decision_day),
                    ],
                    args=[
                        effect.arm_id,
                        decision_id,
                        int(effect.pull),
                        int(effect.reward),
                        keys.ARM_STATS_TTL_S,
                        learned_ttl,
                    ],
                )
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc

    async def read_arm_stats(self, campaigns: list[tuple[str, str]]) -> list[dict[bytes, bytes]]:
        """The raw statistics hashes of several campaigns, in one pipelined round trip."""
        if not campaigns:
            return []
        try:
            async with asyncio.timeout(self._settings.command_timeout_s):
                async with self._client.pipeline(transaction=False) as pipe:
                    for app_id, campaign_id in campaigns:
                        pipe.hgetall(keys.arm_stats(app_id, campaign_id))
                    results: list[dict[bytes, bytes]] = await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc
        return results

    async def ping(self) -> bool:
        """Whether Redis answers within the command timeout."""
        try:
            async with asyncio.timeout(self._settings.command_timeout_s):
                return bool(await self._client.ping())
        except (RedisError, OSError, TimeoutError):
            return False
