"""Throttle rules: the stateless ones decided here, the stateful ones handed to decide.lua.

Everything here is pure: it turns a request's time, zone, policy and candidate campaigns into the
arguments of the one Redis call, and that call's answer back into a verdict.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from . import keys
from .local_time import first_instant_of, from_ms, local_day, quiet_hours, to_ms
from .model import Arm, Campaign, Channel, QuietHoursPolicy, Reason, ThrottlePolicy

_HOLDOUT_SCALE = float(2**64)


def in_holdout(app_id: str, campaign_id: str, user_id: str, share: float) -> bool:
    """Whether the user is in the campaign's holdout: a stable hash, so the choice is sticky."""
    if share <= 0:
        return False
    digest = hashlib.sha256(f"{app_id}\x00{campaign_id}\x00{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _HOLDOUT_SCALE < share


@dataclass(frozen=True)
class Eligible:
    """A campaign that passed the stateless rules; a push may have to wait until `not_before`."""

    campaign: Campaign
    not_before: dt.datetime | None = None


@dataclass(frozen=True)
class Screening:
    """The campaigns left after the stateless rules, or the reason none is."""

    eligible: tuple[Eligible, ...]
    reason: Reason | None = None  # set when `eligible` is empty
    reason_campaign: str = ""
    reason_next: dt.datetime | None = None


def screen(
    campaigns: Sequence[Campaign],
    *,
    app_id: str,
    user_id: str,
    now: dt.datetime,
    tz: ZoneInfo,
    policy: ThrottlePolicy,
) -> Screening:
    """Applies holdouts and quiet hours to the campaigns an event triggers (in priority order).

    When nothing is left, the reason is that of the most preferred campaign.
    """
    if not campaigns:
        return Screening((), Reason.NO_ELIGIBLE_CAMPAIGN)
    quiet = quiet_hours(now, tz, policy.quiet_start, policy.quiet_end)
    eligible: list[Eligible] = []
    first_no: tuple[Reason, str, dt.datetime | None] | None = None
    for campaign in campaigns:
        if in_holdout(app_id, campaign.campaign_id, user_id, campaign.holdout_share):
            first_no = first_no or (Reason.HOLDOUT, campaign.campaign_id, None)
            continue
        if quiet.active:
            deferrable = (
                campaign.channel is Channel.PUSH
                and campaign.quiet_hours_policy is QuietHoursPolicy.DEFER
            )
            if not deferrable:
                first_no = first_no or (Reason.QUIET_HOURS, campaign.campaign_id, quiet.ends_at)
                continue
            eligible.append(Eligible(campaign, quiet.ends_at))
            continue
        eligible.append(Eligible(campaign))
    if eligible:
        return Screening(tuple(eligible))
    assert first_no is not None
    reason, campaign_id, next_at = first_no
    return Screening((), reason, campaign_id, next_at)


@dataclass(frozen=True)
class Candidate:
    """An eligible campaign with the arm its bandit drew."""

    campaign: Campaign
    arm: Arm
    propensity: float
    deliver_at: dt.datetime | None
    snapshot_id: str = ""  # the policy snapshot the arm was drawn from


def deliver_time(now: dt.datetime, arm: Arm, not_before: dt.datetime | None) -> dt.datetime | None:
    """When a push is delivered: after the arm's delay and not before the end of quiet hours."""
    at = now + dt.timedelta(seconds=arm.delay_s) if arm.delay_s else None
    if not_before is not None and (at is None or at < not_before):
        at = not_before
    return at


@dataclass(frozen=True)
class ThrottleCall:
    """The keys and arguments of one call of decide.lua."""

    keys: tuple[str, str, str, str, str]
    args: tuple[str | int, ...]


def request_fingerprint(event_name: str, channel: Channel, time_zone: str) -> str:
    """What a retry with the same client_request_id must repeat to get the stored decision."""
    text = f"{event_name}\x00{channel.value}\x00{time_zone}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_call(
    *,
    app_id: str,
    user_id: str,
    decision_id: str,
    client_request_id: str,
    fingerprint: str,
    now: dt.datetime,
    tz: ZoneInfo,
    policy: ThrottlePolicy,
    channel: Channel,
    candidates: Sequence[Candidate],
    screening: Screening,
) -> ThrottleCall:
    """The arguments of decide.lua for this decision."""
    tag = keys.user_tag(app_id, user_id)
    today = local_day(now, tz)
    # A granted decision's record must outlive its delivery plus the longer of its windows.
    record_life = max(
        (
            max(0, int((c.deliver_at - now).total_seconds()) if c.deliver_at else 0)
            + max(c.campaign.attribution_window_s, c.campaign.effective_response_window_s)
            for c in candidates
        ),
        default=0,
    )
    policy_doc = {
        "cap": policy.daily_cap,
        "min": policy.min_interval_s * 1000,
        "factor": policy.backoff_factor,
        "ceil": policy.backoff_ceiling_s * 1000,
        "snooze": policy.snooze_after,
        "adaptive": 1 if policy.adaptive else 0,
        "ch": channel.value,
        "chcap": policy.channel_daily_caps.get(channel, 0),
    }
    candidate_docs = []
    for c in candidates:
        day_start = day_end = 0
        if c.deliver_at is not None and c.deliver_at >= today.ends_at:
            later = local_day(c.deliver_at, tz)
            day_start, day_end = to_ms(first_instant_of(later.date, tz)), to_ms(later.ends_at)
        candidate_docs.append(
            {
                "c": c.campaign.campaign_id,
                "a": c.arm.arm_id,
                "pd": c.campaign.cap_per_day,
                "lt": c.campaign.cap_lifetime,
                "mi": c.campaign.cap_min_interval_s * 1000,
                "p": c.propensity,
                "da": to_ms(c.deliver_at) if c.deliver_at else 0,
                "aw": c.campaign.attribution_window_s * 1000,
                "m": c.campaign.reward_metric.value,
                "ds": day_start,
                "de": day_end,
            }
        )
    meta = {
        "id": decision_id,
        "req": 1 if client_request_id else 0,
        "fp": fingerprint,
        "pre": screening.reason.value if screening.reason else "",
        "prec": screening.reason_campaign,
        "pren": to_ms(screening.reason_next) if screening.reason_next else 0,
    }
    request_key = (
        keys.user_request(tag, client_request_id) if client_request_id else keys.user_state(tag)
    )
    return ThrottleCall(
        keys=(
            keys.user_state(tag),
            keys.user_day(tag),
            request_key,
            keys.user_decision(tag, decision_id),
            keys.user_grants(tag),
        ),
        args=(
            to_ms(now),
            to_ms(first_instant_of(today.date, tz)),
            to_ms(today.ends_at),
            keys.DAY_TTL_MARGIN_S,
            keys.USER_STATE_TTL_S,
            record_life + keys.DECISION_TTL_MARGIN_S,
            keys.REQUEST_TTL_S,
            json.dumps(policy_doc, separators=(",", ":")),
            json.dumps(candidate_docs, separators=(",", ":")),
            json.dumps(meta, separators=(",", ":")),
        ),
    )


#: decide.lua's status codes.
DECIDED, REPLAYED, CONFLICT = 0, 1, 3


@dataclass(frozen=True)
class Verdict:
    """What decide.lua answered."""

    decision_id: str
    reason: Reason
    campaign_id: str
    arm_id: str
    propensity: float
    next_eligible_at: dt.datetime | None
    deliver_at: dt.datetime | None
    replayed: bool
    channel: Channel | None = None  # of the stored decision, for a replay

    @property
    def show(self) -> bool:
        return self.reason is Reason.OK


def parse_verdict(status: int, encoded: bytes | str) -> Verdict:
    """Decodes decide.lua's reply (not for CONFLICT, which the caller turns into an error)."""
    doc = json.loads(encoded)
    next_ms = int(doc.get("n") or 0)
    deliver_ms = int(doc.get("da") or 0)
    return Verdict(
        decision_id=str(doc["id"]),
        reason=Reason(doc["r"]),
        campaign_id=str(doc.get("c") or ""),
        arm_id=str(doc.get("a") or ""),
        propensity=float(doc.get("p") or 0.0),
        next_eligible_at=from_ms(next_ms) if next_ms > 0 else None,
        deliver_at=from_ms(deliver_ms) if deliver_ms > 0 else None,
        replayed=status == REPLAYED,
        channel=Channel(doc["ch"]) if doc.get("ch") else None,
    )


def push_back_from_quiet_hours(
    at: dt.datetime | None, tz: ZoneInfo, policy: ThrottlePolicy
) -> dt.datetime | None:
    """An in-app "next eligible" time that falls in quiet hours moves to their end."""
    if at is None:
        return None
    quiet = quiet_hours(at, tz, policy.quiet_start, policy.quiet_end)
    return quiet.ends_at if quiet.active and quiet.ends_at else at
