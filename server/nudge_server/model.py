"""Plain domain types shared by the decision logic, the stores and the API layer.

No I/O and no protobuf here: the servicer converts proto messages to and from these.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class Channel(StrEnum):
    """Where a prompt is shown."""

    IN_APP = "in_app"
    PUSH = "push"
    EMAIL = "email"


class Platform(StrEnum):
    """The device platform an event came from."""

    UNSPECIFIED = "unspecified"
    IOS = "ios"
    ANDROID = "android"
    WEB = "web"


class Reason(StrEnum):
    """Why a decision came out as it did; every "no" has one of the non-OK values."""

    OK = "ok"
    DAILY_CAP = "daily_cap"
    COOLDOWN = "cooldown"
    BACKOFF = "backoff"
    QUIET_HOURS = "quiet_hours"
    CAMPAIGN_CAP = "campaign_cap"
    HOLDOUT = "holdout"
    NO_ELIGIBLE_CAMPAIGN = "no_eligible_campaign"
    UNAVAILABLE = "unavailable"
    CHANNEL_CAP = "channel_cap"
    SNOOZED = "snoozed"


class OutcomeType(StrEnum):
    """What a user did with a prompt."""

    IMPRESSION = "impression"
    TAP = "tap"
    DISMISS = "dismiss"
    CONVERSION = "conversion"
    IGNORE = "ignore"  # recorded by the sweeper, never reported


class CampaignStatus(StrEnum):
    """Whether a campaign takes part in decisions."""

    ACTIVE = "active"
    PAUSED = "paused"
    ARCHIVED = "archived"


class RewardMetric(StrEnum):
    """The outcome the bandit learns from."""

    TAP = "tap"
    CONVERSION = "conversion"


class QuietHoursPolicy(StrEnum):
    """What a push campaign does inside the user's quiet hours."""

    DEFER = "defer"
    DROP = "drop"


HOUR = 3600
DAY = 86400


@dataclass(frozen=True)
class ThrottlePolicy:
    """An app's per-user throttle rules (durations in seconds)."""

    daily_cap: int = 3
    min_interval_s: int = HOUR
    backoff_factor: float = 2.0
    backoff_ceiling_s: int = 7 * DAY
    quiet_start: dt.time = dt.time(22, 0)
    quiet_end: dt.time = dt.time(8, 0)
    channel_daily_caps: Mapping[Channel, int] = field(default_factory=dict)
    snooze_after: int = 8
    adaptive: bool = True


@dataclass(frozen=True)
class Prompt:
    """The content an app renders."""

    title: str = ""
    body: str = ""
    action_url: str = ""
    data: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Arm:
    """One variant of a campaign."""

    arm_id: str
    prompt: Prompt
    delay_s: int = 0


@dataclass(frozen=True)
class Campaign:
    """A prompt with its variants, triggers and limits (durations in seconds)."""

    app_id: str
    campaign_id: str
    arms: tuple[Arm, ...]
    trigger_events: frozenset[str]
    channel: Channel = Channel.IN_APP
    display_name: str = ""
    status: CampaignStatus = CampaignStatus.ACTIVE
    priority: int = 0
    cap_per_day: int = 0
    cap_lifetime: int = 0
    cap_min_interval_s: int = 0
    holdout_share: float = 0.0
    reward_metric: RewardMetric = RewardMetric.TAP
    attribution_window_s: int = 7 * DAY
    response_window_s: int = 0  # 0: the channel's default (24 h push, 30 min otherwise)
    quiet_hours_policy: QuietHoursPolicy = QuietHoursPolicy.DEFER
    control_arm_id: str = ""
    exploration_floor: float = 0.05
    updated_at: dt.datetime | None = None

    def arm(self, arm_id: str) -> Arm | None:
        """The arm with this id, or None."""
        for arm in self.arms:
            if arm.arm_id == arm_id:
                return arm
        return None

    @property
    def effective_response_window_s(self) -> int:
        """The response window after which a shown prompt with no response is "ignored"."""
        if self.response_window_s:
            return self.response_window_s
        return DAY if self.channel is Channel.PUSH else 30 * 60


@dataclass(frozen=True)
class App:
    """One tenant of the service."""

    app_id: str
    policy: ThrottlePolicy = field(default_factory=ThrottlePolicy)
    display_name: str = ""
