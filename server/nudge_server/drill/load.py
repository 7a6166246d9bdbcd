"""The drill's load: paced Decide calls for the joined users, ReportOutcome for the prompts
shown, and a record of every call's outcome as the client saw it.

A Decide that fails (UNAVAILABLE, DEADLINE_EXCEEDED: a server restarting) is retried with the
same client_request_id on the next server, as a client behind a load balancer would; a
ReportOutcome is retried the same way, for longer (it needs PostgreSQL). Now and then an
answered Decide is sent again on purpose (it must come back `replayed`, with the same
decision), and an acknowledged outcome is reported again (it must answer `recorded=false`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
import grpc.aio
from google.protobuf import timestamp_pb2
from nudge.v1 import decision_pb2, decision_pb2_grpc
from nudge_client import bearer_metadata, outcome_type_value, platform_value, reason_name

from .plan import APP_ID, EVENT_NAME, DrillUser, active_count

#: Status codes after which a call is tried again (on the next server). CANCELLED is what gRPC
#: answers a call that reached a server as it shut down, before any handler took it.
RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)
#: Pauses before the 2nd, 3rd, ... attempt of a Decide.
DECIDE_BACKOFF_S = (0.05, 0.1, 0.2, 0.4, 0.8)
#: Pauses before the 2nd, 3rd, ... attempt of a ReportOutcome: about 20 s in all, longer than
#: the drill's PostgreSQL outages.
OUTCOME_BACKOFF_S = (0.25, 0.5, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0)
#: Share of answered Decides sent again with the same client_request_id.
REPEAT_DECIDE_SHARE = 0.03
#: Share of acknowledged outcomes reported again.
REPEAT_OUTCOME_SHARE = 0.05
#: Reconnect quickly to a server that restarted (gRPC's default backoff starts at 1 s and grows
#: to 2 minutes).
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One attempt of one call, as the client saw it."""

    rpc: str  # "decide" or "outcome"
    server: int
    user_id: str
    #: The Decide's client_request_id, or "<decision_id>/<type>" for an outcome.
    request_id: str
    attempt: int
    #: The gRPC status code's name ("OK", "UNAVAILABLE", ...).
    code: str
    #: Seconds into the load when the attempt started, and how long it took.
    started_s: float
    latency_s: float
    decision_id: str = ""
    show: bool = False
    reason: str = ""
    replayed: bool = False
    outcome_type: str = ""
    recorded: bool = False
    #: A deliberate repeat of a call already answered OK.
    repeat: bool = False
    #: The status details of a failed attempt.
    detail: str = ""


def outcome_types(rng: random.Random) -> tuple[str, ...]:
    """What one user does with a prompt shown: usually an impression, then sometimes a tap, a
    dismissal or a conversion."""
    types = ["impression"] if rng.random() < 0.8 else []
    roll = rng.random()
    if roll < 0.25:
        types.append("tap")
    elif roll < 0.5:
        types.append("dismiss")
    elif roll < 0.6:
        types.append("conversion")
    return tuple(types)


def decide_request(
    user: DrillUser, request_id: str, now: dt.datetime
) -> decision_pb2.DecideRequest:
    """The Decide of one drill event of `user`, happening `now`."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(now)
    return decision_pb2.DecideRequest(
        app_id=APP_ID,
        user_id=user.user_id,
        event=decision_pb2.Event(name=EVENT_NAME),
        channel=decision_pb2.CHANNEL_IN_APP,
        time_zone=user.time_zone,
        platform=platform_value(user.platform),
        client_request_id=request_id,
        event_time=stamp,
    )


@dataclass(frozen=True)
class _OutcomeJob:
    user_id: str
    decision_id: str
    types: tuple[str, ...]


class LoadGenerator:
    """Sends the load against `targets` (HOST:PORT of each server) until told to stop."""

    def __init__(
        self,
        targets: Sequence[str],
        api_key: str,
        users: tuple[DrillUser, ...],
        *,
        rate_per_s: float,
        concurrency: int,
        run_id: str,
        seed: int = 0,
        decide_timeout_s: float = 2.0,
        outcome_timeout_s: float = 3.0,
    ) -> None:
        self._targets = list(targets)
        self._metadata = bearer_metadata(api_key)
        self._users = users
        self._interval_s = 1.0 / rate_per_s
        self._concurrency = concurrency
        self._run_id = run_id
        self._rng = random.Random(seed)
        self._decide_timeout_s = decide_timeout_s
        self._outcome_timeout_s = outcome_timeout_s
        self._sequence = itertools.count(1)
        self._next_slot = 0.0
        self._t0 = time.monotonic()
        self._stubs: list[decision_pb2_grpc.DecisionServiceStub] = []
        self._outcomes: asyncio.Queue[_OutcomeJob] = asyncio.Queue()
        self.records: list[CallRecord] = []
        #: Outcome jobs left unsent when the drain ran out of time.
        self.outcomes_not_sent = 0
        #: The longest the client's own event loop was late (seconds), and when (seconds into
        #: the load): a client that stalls sees deadlines expire that the server kept.
        self.loop_lag_s = (0.0, 0.0)

    def elapsed(self) -> float:
        """Seconds since the load started."""
        return time.monotonic() - self._t0

    async def run(self, stop: asyncio.Event, drain_timeout_s: float = 30.0) -> None:
        """Sends until `stop` is set, then finishes the calls in progress (retries included)
        and the outcomes still queued, for at most `drain_timeout_s`."""
        channels = [
            grpc.aio.insecure_channel(target, options=list(CHANNEL_OPTIONS))
            for target in self._targets
        ]
        self._stubs = [decision_pb2_grpc.DecisionServiceStub(c) for c in channels]
        self._t0 = time.monotonic()
        self._next_slot = self._t0
        outcome_workers = [
            asyncio.create_task(self._outcome_worker(), name=f"drill-outcomes-{i}")
            for i in range(max(2, self._concurrency // 2))
        ]
        outcome_workers.append(asyncio.create_task(self._watch_lag(), name="drill-lag"))
        try:
            deciders = [
                asyncio.create_task(self._decide_worker(stop), name=f"drill-decide-{i}")
                for i in range(self._concurrency)
            ]
            await asyncio.gather(*deciders)
            try:
                await asyncio.wait_for(self._outcomes.join(), drain_timeout_s)
            except TimeoutError:
                pass
            self.outcomes_not_sent = self._outcomes.qsize()
        finally:
            for worker in outcome_workers:
                worker.cancel()
            await asyncio.gather(*outcome_workers, return_exceptions=True)
            for channel in channels:
                await channel.close()

    async def _watch_lag(self, tick_s: float = 0.05) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(tick_s)
            lag = time.monotonic() - before - tick_s
            if lag > self.loop_lag_s[0]:
                self.loop_lag_s = (lag, before - self._t0)

    async def _pace(self) -> None:
        """Waits for this worker's slot: together the workers send at most the rate."""
        slot = max(self._next_slot, time.monotonic())
        self._next_slot = slot + self._interval_s
        delay = slot - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _decide_worker(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._pace()
            if stop.is_set():
                return
            user = self._users[self._rng.randrange(active_count(self._users, self.elapsed()))]
            request_id = f"{self._run_id}-{next(self._sequence)}"
            now = dt.datetime.now(dt.UTC)
            request = decide_request(user, request_id, now)
            answer = await self._decide(user, request)
            if answer is None:
                continue
            if answer.show:
                types = outcome_types(self._rng)
                if types:
                    self._outcomes.put_nowait(_OutcomeJob(user.user_id, answer.decision_id, types))
            if (
                answer.reason != decision_pb2.REASON_UNAVAILABLE
                and self._rng.random() < REPEAT_DECIDE_SHARE
            ):
                await self._decide_once(
                    user, request, self._rng.randrange(len(self._stubs)), 1, repeat=True
                )

    async def _decide(
        self, user: DrillUser, request: decision_pb2.DecideRequest
    ) -> decision_pb2.DecideResponse | None:
        """A Decide with its retries; the answer, or None when every attempt failed."""
        server = self._rng.randrange(len(self._stubs))
        for attempt in range(1, len(DECIDE_BACKOFF_S) + 2):
            answer, code = await self._decide_once(user, request, server, attempt)
            if answer is not None:
                return answer
            if code not in RETRYABLE or attempt > len(DECIDE_BACKOFF_S):
                return None
            await asyncio.sleep(DECIDE_BACKOFF_S[attempt - 1])
            server = (server + 1) % len(self._stubs)
        return None

    async def _decide_once(
        self,
        user: DrillUser,
        request: decision_pb2.DecideRequest,
        server: int,
        attempt: int,
        *,
        repeat: bool = False,
    ) -> tuple[decision_pb2.DecideResponse | None, grpc.StatusCode]:
        started = time.monotonic()
        try:
            answer = await self._stubs[server].Decide(
                request, timeout=self._decide_timeout_s, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as exc:
            self.records.append(
                CallRecord(
                    rpc="decide",
                    server=server,
                    user_id=user.user_id,
                    request_id=request.client_request_id,
                    attempt=attempt,
                    code=exc.code().name,
                    started_s=started - self._t0,
                    latency_s=time.monotonic() - started,
                    repeat=repeat,
                    detail=exc.details() or "",
                )
            )
            return None, exc.code()
        self.records.append(
            CallRecord(
                rpc="decide",
                server=server,
                user_id=user.user_id,
                request_id=request.client_request_id,
                attempt=attempt,
                code="OK",
                started_s=started - self._t0,
                latency_s=time.monotonic() - started,
                decision_id=answer.decision_id,
                show=answer.show,
                reason=reason_name(answer.reason),
                replayed=answer.replayed,
                repeat=repeat,
            )
        )
        return answer, grpc.StatusCode.OK

    async def _outcome_worker(self) -> None:
        while True:
            job = await self._outcomes.get()
            try:
                for kind in job.types:
                    acknowledged = await self._report(job, kind)
                    if acknowledged and self._rng.random() < REPEAT_OUTCOME_SHARE:
                        await self._report_once(
                            job, kind, self._rng.randrange(len(self._stubs)), 1, repeat=True
                        )
            finally:
                self._outcomes.task_done()

    async def _report(self, job: _OutcomeJob, kind: str) -> bool:
        """A ReportOutcome with its retries; whether it was acknowledged (OK)."""
        server = self._rng.randrange(len(self._stubs))
        for attempt in range(1, len(OUTCOME_BACKOFF_S) + 2):
            code = await self._report_once(job, kind, server, attempt)
            if code is grpc.StatusCode.OK:
                return True
            if code not in RETRYABLE or attempt > len(OUTCOME_BACKOFF_S):
                return False
            await asyncio.sleep(OUTCOME_BACKOFF_S[attempt - 1])
            server = (server + 1) % len(self._stubs)
        return False

    async def _report_once(
        self, job: _OutcomeJob, kind: str, server: int, attempt: int, *, repeat: bool = False
    ) -> grpc.StatusCode:
        request = decision_pb2.ReportOutcomeRequest(
            app_id=APP_ID,
            user_id=job.user_id,
            decision_id=job.decision_id,
            type=outcome_type_value(kind),
            value=9.5 if kind == "conversion" else 0.0,
        )
        started = time.monotonic()
        code = grpc.StatusCode.OK
        recorded = False
        detail = ""
        try:
            answer = await self._stubs[server].ReportOutcome(
                request, timeout=self._outcome_timeout_s, metadata=self._metadata
            )
            recorded = answer.recorded
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            detail = exc.details() or ""
        self.records.append(
            CallRecord(
                rpc="outcome",
                server=server,
                user_id=job.user_id,
                request_id=f"{job.decision_id}/{kind}",
                attempt=attempt,
                code=code.name,
                started_s=started - self._t0,
                latency_s=time.monotonic() - started,
                decision_id=job.decision_id,
                outcome_type=kind,
                recorded=recorded,
                repeat=repeat,
                detail=detail,
            )
        )
        return code
