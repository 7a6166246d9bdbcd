"""Outcomes of decisions: recorded once, fed to the user's backoff and to the bandit, logged."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .decisions import Clock
from .errors import FailedPrecondition, InvalidArgument, NotFound, StoreUnavailable
from .ids import Owner, issued_at, owner_of
from .local_time import to_ms, utc_now
from .log_rows import OutcomeRow
from .model import App, OutcomeType, Reason
from .outcome_store import OutcomeStore
from .requests import OutcomeInput
from .settings import DecisionSettings
from .throttle_store import ThrottleStore

log = logging.getLogger(__name__)

#: How long a decision may take to reach the log from any server (batching, a short database
#: hiccup): an unknown decision younger than this answers UNAVAILABLE (retry) rather than
#: NOT_FOUND. A backlog of this process's own log writer (rows in memory or in its spool since
#: some time T) stretches it back to T - LOG_LAG: such a decision may be in that backlog, and
#: other servers most likely share the outage that made it.
LOG_LAG = dt.timedelta(seconds=30)
#: Servers' clocks may differ by this much; an id "issued" further in the future is not ours.
CLOCK_SKEW = dt.timedelta(minutes=1)


@dataclass(frozen=True)
class OutcomeResult:
    """What ReportOutcome answers."""

    recorded: bool
    rewarded: bool


class OutcomeRecorder:
    """Records outcomes. It owns none of the resources it is handed."""

    def __init__(
        self,
        apps: Callable[[], Mapping[str, App]],
        store: ThrottleStore,
        outcomes: OutcomeStore,
        settings: DecisionSettings,
        clock: Clock = utc_now,
        *,
        log_backlog_since: Callable[[], dt.datetime | None] = lambda: None,
    ) -> None:
        """`log_backlog_since` tells when the oldest row the log writer has not stored yet was
        added (None: none), so that an outcome for a decision still in it is told to retry."""
        self._apps = apps
        self._store = store
        self._decisions = outcomes
        self._settings = settings
        self._clock = clock
        self._log_backlog_since = log_backlog_since

    async def report(self, outcome: OutcomeInput) -> OutcomeResult:
        """Applies one outcome, at most once per decision and type.

        Redis first (the decision record dedups and tells what to learn), then the bandit's
        statistics (deduped per decision), then the outcome row, written before the answer
        (deduped by the database): a retry after a crash at any point repeats the missing steps
        and counts nothing twice, and an acknowledged outcome is never lost.
        """
        if outcome.app_id not in self._apps():
            raise NotFound(f"app_id: app {outcome.app_id!r} is not configured")
        owner = owner_of(outcome.decision_id, outcome.app_id, outcome.user_id)
        if owner is Owner.OTHER_APP:
            raise NotFound(f"decision_id: no decision {outcome.decision_id} in this app")
        if owner is Owner.OTHER_USER:
            raise InvalidArgument(
                "decision_id", f"decision {outcome.decision_id} was made for another user"
            )
        received_at = self._clock()
        at = received_at
        if self._settings.trust_event_time and outcome.occurred_at is not None:
            at = outcome.occurred_at
        effect = await self._store.record_outcome(
            outcome.app_id, outcome.user_id, outcome.decision_id, outcome.type.value, to_ms(at)
        )
        if effect.status == "missing":
            return await self._report_unknown_to_redis(outcome, at, received_at)
        if effect.status == "early":
            raise InvalidArgument(
                "occurred_at", "is earlier than the decision (or its push's delivery time)"
            )
        await self._store.learn(outcome.app_id, outcome.decision_id, effect)
        # Written before the answer, so an acknowledged outcome survives a crash; if this fails
        # the caller retries, and the steps above repeat without counting twice.
        inserted = await self._decisions.insert_outcome(
            self._row(outcome, effect.campaign_id, effect.arm_id, at, received_at, effect.reward)
        )
        if effect.late:
            log.info("outcome_after_attribution_window", extra={"decision_id": outcome.decision_id})
        # A "duplicate" in Redis whose row was not yet in the log is this call's recording: the
        # first try reached Redis but its answer was lost (a timeout), so it told the caller
        # UNAVAILABLE.
        recorded = effect.status == "ok" or inserted
        return OutcomeResult(recorded=recorded, rewarded=effect.reward)

    async def _report_unknown_to_redis(
        self, outcome: OutcomeInput, at: dt.datetime, received_at: dt.datetime
    ) -> OutcomeResult:
        """An outcome for a decision Redis has no record of: a "no", an expired record, or an
        unknown id. Only the log can tell; nothing is learned."""
        logged = await self._decisions.find_decision(outcome.app_id, outcome.decision_id)
        if logged is None and self._may_be_unlogged(outcome.decision_id, received_at):
            # Still in some server's log buffer or spool: worth a retry.
            raise StoreUnavailable(
                f"decision_id: decision {outcome.decision_id} is not in the log yet; retry later"
            )
        if logged is None or logged.user_id != outcome.user_id:
            raise NotFound(f"decision_id: no decision {outcome.decision_id} for this user")
        if at < logged.decided_at:
            raise InvalidArgument("occurred_at", "is earlier than the decision it reports on")
        holdout_conversion = (
            logged.reason == Reason.HOLDOUT.value and outcome.type is OutcomeType.CONVERSION
        )
        if not logged.show and not holdout_conversion:
            raise FailedPrecondition(
                f"decision {outcome.decision_id} showed nothing (reason {logged.reason}): it "
                f"can have no {outcome.type.value}; only a held-out user's conversion is "
                "recorded against a decision that showed nothing"
            )
        # A held-out user's conversion (the holdout comparison needs it), or an outcome that
        # arrived after the decision's record expired: logged, not learned.
        inserted = await self._decisions.insert_outcome(
            self._row(outcome, logged.campaign_id, logged.arm_id, at, received_at, False)
        )
        return OutcomeResult(recorded=inserted, rewarded=False)

    def _may_be_unlogged(self, decision_id: str, now: dt.datetime) -> bool:
        """Whether a decision PostgreSQL does not have may still be on its way there."""
        issued = issued_at(decision_id)
        if issued > now + CLOCK_SKEW:
            return False  # not an id a server made
        horizon = now
        backlog_since = self._log_backlog_since()
        if backlog_since is not None and backlog_since < horizon:
            horizon = backlog_since
        return issued >= horizon - LOG_LAG

    @staticmethod
    def _row(
        outcome: OutcomeInput,
        campaign_id: str | None,
        arm_id: str | None,
        at: dt.datetime,
        received_at: dt.datetime,
        rewarded: bool,
    ) -> OutcomeRow:
        return OutcomeRow(
            decision_id=uuid.UUID(outcome.decision_id),
            app_id=outcome.app_id,
            user_id=outcome.user_id,
            campaign_id=campaign_id or None,
            arm_id=arm_id or None,
            type=outcome.type.value,
            value=outcome.value,
            occurred_at=at,
            received_at=received_at,
            rewarded=rewarded,
        )
