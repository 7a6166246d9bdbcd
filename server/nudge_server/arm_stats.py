"""The in-process cache of bandit policies, refreshed from Redis in the background.

The hot path only reads `policy_for`, which never does I/O: it returns the policy built from the
latest statistics snapshot, or the uniform policy for a campaign whose arms have no data yet.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Self

import numpy as np

from .background import periodic
from .bandit import ArmStats, CampaignPolicy
from .errors import StoreUnavailable
from .local_time import utc_now
from .log_rows import PolicySnapshotRow
from .model import Campaign
from .throttle_store import ThrottleStore

log = logging.getLogger(__name__)

CampaignKey = tuple[str, str]


def parse_stats(arm_ids: Iterable[str], raw: dict[bytes, bytes]) -> tuple[ArmStats, ...]:
    """Arm statistics from a stats hash of `<arm>:n` and `<arm>:r` fields."""
    counts = {key.decode(): int(value) for key, value in raw.items()}
    return tuple(
        ArmStats(pulls=counts.get(f"{arm}:n", 0), rewards=counts.get(f"{arm}:r", 0))
        for arm in arm_ids
    )


def uniform_policy(campaign: Campaign) -> CampaignPolicy:
    """The policy of a campaign with no data: every arm equally likely, exactly."""
    k = len(campaign.arms)
    return CampaignPolicy(
        tuple(a.arm_id for a in campaign.arms),
        tuple(ArmStats() for _ in campaign.arms),
        tuple(1.0 / k for _ in campaign.arms),
    )


def snapshot_id(campaign: Campaign, policy: CampaignPolicy) -> str:
    """A stable name for one campaign's arm-choice distribution (equal ones share it)."""
    text = "\x00".join(
        (campaign.app_id, campaign.campaign_id, *policy.arm_ids, *map(repr, policy.probabilities))
    )
    return hashlib.sha256(text.encode()).hexdigest()[:24]


#: Takes a new policy snapshot for the log, synchronously and without I/O (the log writer's
#: `add_snapshot`).
SnapshotSink = Callable[[PolicySnapshotRow], None]


class PolicyCache:
    """Bandit policies per campaign, rebuilt whenever their arm statistics change.

    Each new policy's snapshot (its full arm-choice distribution, which decisions drawn from it
    name) goes to `add_snapshot` before any decision can be drawn from it; the log writer then
    stores it like its other rows, spooling it while PostgreSQL is away.
    """

    def __init__(
        self,
        store: ThrottleStore,
        active_campaigns: Callable[[], Iterable[Campaign]],
        refresh_s: float,
        seed: int | None = None,
        add_snapshot: SnapshotSink | None = None,
    ) -> None:
        self._store = store
        self._active_campaigns = active_campaigns
        self._rng = np.random.default_rng(seed)
        self._policies: dict[CampaignKey, CampaignPolicy] = {}
        self._add_snapshot = add_snapshot
        self._refresher = periodic(
            "arm-stats-refresh", refresh_s, self._round, crash_event="arm_stats_refresh_crashed"
        )

    def policy_for(self, campaign: Campaign) -> CampaignPolicy:
        """The current policy of a campaign (no I/O)."""
        key = (campaign.app_id, campaign.campaign_id)
        policy = self._policies.get(key)
        if policy is None or policy.arm_ids != tuple(a.arm_id for a in campaign.arms):
            # A campaign the last refresh did not see: uniform, kept until the next refresh.
            policy = self._named(campaign, uniform_policy(campaign))
            self._policies[key] = policy
        return policy

    def _named(self, campaign: Campaign, policy: CampaignPolicy) -> CampaignPolicy:
        """The policy with its snapshot id, the snapshot handed to the log."""
        name = snapshot_id(campaign, policy)
        if self._add_snapshot is not None:
            self._add_snapshot(
                PolicySnapshotRow(
                    snapshot_id=name,
                    app_id=campaign.app_id,
                    campaign_id=campaign.campaign_id,
                    arm_ids=policy.arm_ids,
                    probabilities=policy.probabilities,
                    created_at=utc_now(),
                )
            )
        return dataclasses.replace(policy, snapshot_id=name)

    async def refresh(self) -> None:
        """Reads every active campaign's statistics (one round trip) and rebuilds what changed."""
        campaigns = list(self._active_campaigns())
        raw = await self._store.read_arm_stats([(c.app_id, c.campaign_id) for c in campaigns])
        fresh: dict[CampaignKey, CampaignPolicy] = {}
        for campaign, stats_hash in zip(campaigns, raw, strict=True):
            key = (campaign.app_id, campaign.campaign_id)
            arm_ids = tuple(a.arm_id for a in campaign.arms)
            stats = parse_stats(arm_ids, stats_hash)
            current = self._policies.get(key)
            if current is not None and current.arm_ids == arm_ids and current.stats == stats:
                fresh[key] = current
            elif all(s == stats[0] for s in stats):
                fresh[key] = self._named(campaign, uniform_policy(campaign))
            else:
                # The Monte Carlo estimate is numpy work: keep it off the event loop.
                built = await asyncio.to_thread(
                    CampaignPolicy.build, arm_ids, stats, campaign.exploration_floor, self._rng
                )
                fresh[key] = self._named(campaign, built)
        self._policies = fresh

    async def _round(self) -> None:
        """One background round: refresh the policies (the last ones stay when it fails)."""
        try:
            await self.refresh()
        except StoreUnavailable as exc:
            log.warning("arm_stats_refresh_failed", extra={"error": str(exc)})
        except Exception:  # keep refreshing whatever happens; the last policies stay
            log.exception("arm_stats_refresh_crashed")

    async def __aenter__(self) -> Self:
        try:
            await self.refresh()
        except StoreUnavailable as exc:
            log.warning("arm_stats_initial_refresh_failed", extra={"error": str(exc)})
        self._refresher.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._refresher.stop()
