"""The decision engine: one `Decide`, from a validated request to a logged decision.

The critical path is: in-memory campaign lookup, stateless rules, bandit draws from cached
policies, ONE Redis call, and a non-blocking append to the log buffer.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from .arm_stats import PolicyCache
from .decision_log import LogWriter
from .errors import NotFound, StoreUnavailable
from .ids import new_decision_id
from .local_time import utc_now
from .log_rows import DecisionRow, PushJobRow
from .logs import EveryFewSeconds
from .model import App, Campaign, Channel, Prompt, Reason
from .requests import DecideInput
from .settings import DecisionSettings
from .throttle import (
    Candidate,
    Verdict,
    build_call,
    deliver_time,
    push_back_from_quiet_hours,
    request_fingerprint,
    screen,
)
from .throttle_store import ThrottleStore

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]

#: How long a push job may wait past its delivery time before it is no longer worth sending.
PUSH_EXPIRY = dt.timedelta(hours=24)


class ConfigView(Protocol):
    """What the engine needs of the configuration snapshot."""

    @property
    def apps(self) -> Mapping[str, App]: ...

    @property
    def campaigns(self) -> Mapping[str, tuple[Campaign, ...]]: ...

    def triggered(self, app_id: str, event_name: str, channel: Channel) -> tuple[Campaign, ...]: ...


@dataclass(frozen=True)
class Decision:
    """The outcome of one Decide."""

    decision_id: str
    show: bool
    reason: Reason
    campaign_id: str
    arm_id: str
    prompt: Prompt | None
    channel: Channel
    next_eligible_at: dt.datetime | None
    propensity: float
    deliver_at: dt.datetime | None
    replayed: bool


class DecisionEngine:
    """Makes decisions. It owns none of the resources it is handed."""

    def __init__(
        self,
        config: Callable[[], ConfigView],
        policies: PolicyCache,
        store: ThrottleStore,
        log_writer: LogWriter,
        settings: DecisionSettings,
        clock: Clock = utc_now,
    ) -> None:
        self._config = config
        self._policies = policies
        self._store = store
        self._log = log_writer
        self._settings = settings
        self._clock = clock
        self._rng = random.Random(settings.seed)
        self._degraded_log = EveryFewSeconds()

    async def decide(self, request: DecideInput) -> Decision:
        """Decides for one user action. Raises NotFound for an unknown app."""
        config = self._config()
        app = config.apps.get(request.app_id)
        if app is None:
            raise NotFound(f"app_id: app {request.app_id!r} is not configured")
        received_at = self._clock()
        now = received_at
        if self._settings.trust_event_time and request.event_time is not None:
            now = request.event_time
        campaigns = config.triggered(request.app_id, request.event_name, request.channel)
        screening = screen(
            campaigns,
            app_id=request.app_id,
            user_id=request.user_id,
            now=now,
            tz=request.tz,
            policy=app.policy,
        )
        candidates = []
        for eligible in screening.eligible:
            policy = self._policies.policy_for(eligible.campaign)
            index, propensity = policy.choose(self._rng)
            arm = eligible.campaign.arms[index]
            candidates.append(
                Candidate(
                    eligible.campaign,
                    arm,
                    propensity,
                    deliver_time(now, arm, eligible.not_before),
                    policy.snapshot_id,
                )
            )
        decision_id = new_decision_id(request.app_id, request.user_id, received_at)
        call = build_call(
            app_id=request.app_id,
            user_id=request.user_id,
            decision_id=decision_id,
            client_request_id=request.client_request_id,
            fingerprint=request_fingerprint(request.event_name, request.channel, request.time_zone),
            now=now,
            tz=request.tz,
            policy=app.policy,
            channel=request.channel,
            candidates=candidates,
            screening=screening,
        )
        try:
            verdict = await self._store.decide(call)
        except StoreUnavailable as exc:
            held = self._degraded_log.due()
            if held is not None:
                log.warning(
                    "decide_degraded",
                    extra={"error": str(exc), "app_id": request.app_id, "held_back": held},
                )
            verdict = Verdict(decision_id, Reason.UNAVAILABLE, "", "", 0.0, None, None, False)
        decision = self._decision(verdict, app, candidates, request)
        if not verdict.replayed or verdict.show:
            # A replayed grant is logged again: it corrects a first answer of "unavailable"
            # whose script did run (the log ignores it otherwise).
            self._log_decision(decision, request, now, received_at, candidates)
        return decision

    def _decision(
        self, verdict: Verdict, app: App, candidates: list[Candidate], request: DecideInput
    ) -> Decision:
        # The candidate the script granted; a replay's stored decision is not this call's draw.
        chosen = (
            None
            if verdict.replayed
            else next(
                (
                    c
                    for c in candidates
                    if c.campaign.campaign_id == verdict.campaign_id
                    and c.arm.arm_id == verdict.arm_id
                ),
                None,
            )
        )
        prompt = None
        if verdict.show:
            # A replayed decision's arm may not be among this call's draws: look it up.
            campaign = chosen.campaign if chosen else self._campaign(app.app_id, verdict)
            arm = campaign.arm(verdict.arm_id) if campaign else None
            prompt = arm.prompt if arm else Prompt()
        next_eligible = verdict.next_eligible_at
        if request.channel is not Channel.PUSH:
            next_eligible = push_back_from_quiet_hours(next_eligible, request.tz, app.policy)
        return Decision(
            decision_id=verdict.decision_id,
            show=verdict.show,
            reason=verdict.reason,
            campaign_id=verdict.campaign_id,
            arm_id=verdict.arm_id if verdict.show else "",
            prompt=prompt,
            channel=verdict.channel or request.channel,
            next_eligible_at=next_eligible,
            # This call's own draw carries the exact probability (the script's JSON rounds it).
            propensity=(chosen.propensity if chosen else verdict.propensity)
            if verdict.show
            else 0.0,
            deliver_at=verdict.deliver_at,
            replayed=verdict.replayed,
        )

    @staticmethod
    def _response_deadline(
        decision: Decision, now: dt.datetime, candidates: list[Candidate]
    ) -> dt.datetime | None:
        """When a shown prompt with no response counts as ignored (from its delivery time)."""
        if not decision.show:
            return None
        for c in candidates:
            if c.campaign.campaign_id == decision.campaign_id:
                start = decision.deliver_at or now
                return start + dt.timedelta(seconds=c.campaign.effective_response_window_s)
        return None

    def _campaign(self, app_id: str, verdict: Verdict) -> Campaign | None:
        for campaign in self._config().campaigns.get(app_id, ()):
            if campaign.campaign_id == verdict.campaign_id:
                return campaign
        return None

    def _log_decision(
        self,
        decision: Decision,
        request: DecideInput,
        now: dt.datetime,
        received_at: dt.datetime,
        candidates: list[Candidate],
    ) -> None:
        row = DecisionRow(
            decision_id=uuid.UUID(decision.decision_id),
            app_id=request.app_id,
            user_id=request.user_id,
            decided_at=now,
            received_at=received_at,
            event_time=request.event_time,
            event_name=request.event_name,
            event_properties=request.properties,
            requested_channel=request.channel.value,
            surface=request.surface,
            time_zone=request.time_zone,
            locale=request.locale,
            platform=request.platform.value,
            client_request_id=request.client_request_id or None,
            show=decision.show,
            reason=decision.reason.value,
            campaign_id=decision.campaign_id or None,
            arm_id=decision.arm_id or None,
            channel=decision.channel.value if decision.show else None,
            propensity=decision.propensity if decision.show else None,
            next_eligible_at=decision.next_eligible_at,
            deliver_at=decision.deliver_at,
            response_deadline=self._response_deadline(decision, now, candidates),
            policy_snapshot=next(
                (
                    c.snapshot_id or None
                    for c in candidates
                    if decision.show
                    and not decision.replayed
                    and c.campaign.campaign_id == decision.campaign_id
                    and c.arm.arm_id == decision.arm_id
                ),
                None,
            ),
            candidates={
                "considered": [
                    {
                        "campaign_id": c.campaign.campaign_id,
                        "arm_id": c.arm.arm_id,
                        "propensity": c.propensity,
                    }
                    for c in candidates
                ]
            },
        )
        push_job = None
        if decision.show and decision.channel is Channel.PUSH and decision.prompt is not None:
            deliver_at = decision.deliver_at or now
            push_job = PushJobRow(
                job_id=row.decision_id,
                app_id=request.app_id,
                user_id=request.user_id,
                campaign_id=decision.campaign_id,
                arm_id=decision.arm_id,
                payload={
                    "title": decision.prompt.title,
                    "body": decision.prompt.body,
                    "action_url": decision.prompt.action_url,
                    "data": dict(decision.prompt.data),
                    "locale": request.locale,
                    "decision_id": decision.decision_id,
                },
                deliver_at=deliver_at,
                expires_at=deliver_at + PUSH_EXPIRY,
                time_zone=request.time_zone,
                status="queued",
                attempts=0,
                created_at=received_at,
                updated_at=received_at,
            )
        self._log.add_decision(row, push_job)
