"""The DecisionService servicer: converts between proto messages and domain types, nothing more."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, TypeVar

import grpc
from google.protobuf import struct_pb2, timestamp_pb2
from nudge.v1 import decision_pb2, decision_pb2_grpc

from . import requests, wire
from .api_errors import grpc_errors
from .decisions import Clock, Decision, DecisionEngine
from .errors import MAX_SHOWN, InvalidArgument
from .local_time import utc_now
from .model import Channel, OutcomeType, Platform, Reason
from .outcomes import OutcomeRecorder

CHANNELS = {
    decision_pb2.CHANNEL_UNSPECIFIED: Channel.IN_APP,
    decision_pb2.CHANNEL_IN_APP: Channel.IN_APP,
    decision_pb2.CHANNEL_PUSH: Channel.PUSH,
    decision_pb2.CHANNEL_EMAIL: Channel.EMAIL,
}
CHANNEL_PROTO = {
    Channel.IN_APP: decision_pb2.CHANNEL_IN_APP,
    Channel.PUSH: decision_pb2.CHANNEL_PUSH,
    Channel.EMAIL: decision_pb2.CHANNEL_EMAIL,
}
PLATFORMS = {
    decision_pb2.PLATFORM_UNSPECIFIED: Platform.UNSPECIFIED,
    decision_pb2.PLATFORM_IOS: Platform.IOS,
    decision_pb2.PLATFORM_ANDROID: Platform.ANDROID,
    decision_pb2.PLATFORM_WEB: Platform.WEB,
}
OUTCOMES = {
    decision_pb2.OUTCOME_TYPE_IMPRESSION: OutcomeType.IMPRESSION,
    decision_pb2.OUTCOME_TYPE_TAP: OutcomeType.TAP,
    decision_pb2.OUTCOME_TYPE_DISMISS: OutcomeType.DISMISS,
    decision_pb2.OUTCOME_TYPE_CONVERSION: OutcomeType.CONVERSION,
}
REASON_PROTO = {reason: decision_pb2.Reason.Value(f"REASON_{reason.name}") for reason in Reason}
T = TypeVar("T")


def enum_value(mapping: Mapping[Any, T], value: int, field: str) -> T:
    """The domain value of a proto enum; unknown numbers (open enums) are rejected."""
    try:
        return mapping[value]
    except KeyError:
        raise InvalidArgument(field, f"unknown value {value}") from None


def to_timestamp(value: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    return None if value is None else wire.to_timestamp(value)


def struct_value(value: struct_pb2.Value, field: str, depth: int = 0) -> Any:
    """A Python value from a protobuf Value, keeping floats as floats and bounding the depth."""
    if depth > requests.MAX_PROPERTY_DEPTH:
        raise InvalidArgument(field, f"nests deeper than {requests.MAX_PROPERTY_DEPTH} levels")
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return {
            k: struct_value(v, f"{field}.{k[:MAX_SHOWN]}", depth + 1)
            for k, v in value.struct_value.fields.items()
        }
    if kind == "list_value":
        return [
            struct_value(v, f"{field}[{i}]", depth + 1)
            for i, v in enumerate(value.list_value.values)
        ]
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        return value.number_value
    if kind == "bool_value":
        return value.bool_value
    return None


def decision_response(decision: Decision) -> decision_pb2.DecideResponse:
    """The proto form of a decision."""
    response = decision_pb2.DecideResponse(
        show=decision.show,
        decision_id=decision.decision_id,
        reason=REASON_PROTO[decision.reason],
        campaign_id=decision.campaign_id,
        arm_id=decision.arm_id,
        channel=CHANNEL_PROTO[decision.channel],
        propensity=decision.propensity,
        replayed=decision.replayed,
        next_eligible_at=to_timestamp(decision.next_eligible_at),
        deliver_at=to_timestamp(decision.deliver_at),
    )
    if decision.prompt is not None:
        response.prompt.CopyFrom(
            decision_pb2.Prompt(
                title=decision.prompt.title,
                body=decision.prompt.body,
                action_url=decision.prompt.action_url,
                data=dict(decision.prompt.data),
            )
        )
    return response


class DecisionServicer(decision_pb2_grpc.DecisionServiceServicer):
    """Serves Decide and ReportOutcome."""

    def __init__(
        self, engine: DecisionEngine, outcomes: OutcomeRecorder, clock: Clock = utc_now
    ) -> None:
        self._engine = engine
        self._outcomes = outcomes
        self._clock = clock

    @grpc_errors
    async def Decide(
        self, request: decision_pb2.DecideRequest, context: grpc.aio.ServicerContext
    ) -> decision_pb2.DecideResponse:
        properties = {
            key: struct_value(value, f"event.properties.{key[:MAX_SHOWN]}")
            for key, value in request.event.properties.fields.items()
        }
        decide_input = requests.decide_input(
            app=request.app_id,
            user=request.user_id,
            event_name=request.event.name,
            event_properties=properties,
            channel=enum_value(CHANNELS, request.channel, "channel"),
            surface=request.surface,
            tz_name=request.time_zone,
            locale=request.locale,
            platform=enum_value(PLATFORMS, request.platform, "platform"),
            client_request_id=request.client_request_id,
            event_time=wire.timestamp(
                request.event_time, request.HasField("event_time"), "event_time"
            ),
            now=self._clock(),
        )
        decision = await self._engine.decide(decide_input)
        return decision_response(decision)

    @grpc_errors
    async def ReportOutcome(
        self, request: decision_pb2.ReportOutcomeRequest, context: grpc.aio.ServicerContext
    ) -> decision_pb2.ReportOutcomeResponse:
        if request.type == decision_pb2.OUTCOME_TYPE_UNSPECIFIED:
            raise InvalidArgument("type", "is required (impression, tap, dismiss or conversion)")
        outcome = requests.outcome_input(
            app=request.app_id,
            user=request.user_id,
            decision_id=request.decision_id,
            kind=enum_value(OUTCOMES, request.type, "type"),
            value=request.value,
            occurred_at=wire.timestamp(
                request.occurred_at, request.HasField("occurred_at"), "occurred_at"
            ),
            now=self._clock(),
        )
        result = await self._outcomes.report(outcome)
        return decision_pb2.ReportOutcomeResponse(
            recorded=result.recorded, rewarded=result.rewarded
        )
