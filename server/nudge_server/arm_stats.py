"""The in-process cache of bandit policies, refreshed from Redis in the background.

The hot path only reads `policy_for`, which never does I/O: it returns the policy built from the
latest statistics snapshot, or the uniform policy for a campaign whose arms have no data yet.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import numpy as np

from .background import periodic
from .bandit import ArmStats, CampaignPolicy
from .errors import StoreUnavailable
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


@dataclass(frozen=True)
class PolicySnapshot:
    """A row of policy_snapshots."""

    snapshot_id: str
    app_id: str
    campaign_id: str
    arm_ids: tuple[str, ...]
    probabilities: tuple[float, ...]


SnapshotWriter = Callable[[list[PolicySnapshot]], Awaitable[None]]


class PolicyCache:
    """Bandit policies per campaign, rebuilt whenever their arm statistics change."""

    def __init__(
        self,
        store: ThrottleStore,
        active_campaigns: Callable[[], Iterable[Campaign]],
        refresh_s: float,
        seed: int | None = None,
        save_snapshots: SnapshotWriter | None = None,
    ) -> None:
        self._store = store
        self._active_campaigns = active_campaigns
        self._rng = np.random.default_rng(seed)
        self._policies: dict[CampaignKey, CampaignPolicy] = {}
        self._save_snapshots = save_snapshots
        #: Snapshots decisions were (or may be) drawn from, not yet in the log.
        self._unsaved: dict[str, PolicySnapshot] = {}
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
        """The policy with its snapshot id, queued for the log."""
        name = snapshot_id(campaign, policy)
        self._unsaved.setdefault(
            name,
            PolicySnapshot(
                name, campaign.app_id, campaign.campaign_id, policy.arm_ids, policy.probabilities
            ),
        )
        return dataclasses.replace(policy, snapshot_id=name)

    async def flush_snapshots(self) -> None:
        """Writes the snapshots not yet in the log; kept for the next try when that fails."""
        if self._save_snapshots is None or not self._unsaved:
            return
        batch = list(self._unsaved.values())
        await self._save_snapshots(batch)
        for snapshot in batch:
            self._unsaved.pop(snapshot.snapshot_id, None)

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
        """One background round: refresh the policies (the last ones stay when it fails), then
        save the snapshots."""
        try:
            await self.refresh()
        except StoreUnavailable as exc:
            log.warning("arm_stats_refresh_failed", extra={"error": str(exc)})
        except Exception:  # keep refreshing whatever happens; the last policies stay
            log.exception("arm_stats_refresh_crashed")
        try:
            await self.flush_snapshots()
        except StoreUnavailable as exc:  # the snapshots wait for the next round
            log.warning("policy_snapshots_not_saved", extra={"error": str(exc)})

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
        try:
            await self.flush_snapshots()
        except StoreUnavailable as error:
            log.error(
                "policy_snapshots_lost", extra={"error": str(error), "count": len(self._unsaved)}
            )
