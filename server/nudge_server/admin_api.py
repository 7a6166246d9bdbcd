"""The AdminService servicer: converts proto messages to and from `model` types, validates with
`config`, and stores with `ConfigStore`; DeleteUser erases with `erasure.UserEraser`. Domain
errors become status codes in `api_errors`."""

from __future__ import annotations

import datetime as dt
import inspect
import logging
from collections.abc import Awaitable, Callable

import grpc
from google.protobuf import duration_pb2, json_format, timestamp_pb2
from google.protobuf.message import Message
from nudge.v1 import admin_pb2, admin_pb2_grpc, decision_pb2

from .api_errors import grpc_errors
from .config import identifier, parse_app, parse_campaign
from .config_store import ConfigStore
from .erasure import ErasureCounts, UserEraser
from .errors import MAX_SHOWN, InvalidArgument
from .model import (
    App,
    Campaign,
    CampaignStatus,
    Channel,
    Prompt,
    QuietHoursPolicy,
    RewardMetric,
)

log = logging.getLogger(__name__)

OnChange = Callable[[], Awaitable[object] | object]

_CHANNEL_TO_PROTO = {
    Channel.IN_APP: decision_pb2.CHANNEL_IN_APP,
    Channel.PUSH: decision_pb2.CHANNEL_PUSH,
    Channel.EMAIL: decision_pb2.CHANNEL_EMAIL,
}
_STATUS_TO_PROTO = {
    CampaignStatus.ACTIVE: admin_pb2.CAMPAIGN_STATUS_ACTIVE,
    CampaignStatus.PAUSED: admin_pb2.CAMPAIGN_STATUS_PAUSED,
    CampaignStatus.ARCHIVED: admin_pb2.CAMPAIGN_STATUS_ARCHIVED,
}
_METRIC_TO_PROTO = {
    RewardMetric.TAP: admin_pb2.REWARD_METRIC_TAP,
    RewardMetric.CONVERSION: admin_pb2.REWARD_METRIC_CONVERSION,
}
_QUIET_TO_PROTO = {
    QuietHoursPolicy.DEFER: admin_pb2.QUIET_HOURS_POLICY_DEFER,
    QuietHoursPolicy.DROP: admin_pb2.QUIET_HOURS_POLICY_DROP,
}


# The ranges of google/protobuf/duration.proto and timestamp.proto.
_MAX_DURATION_SECONDS = 315_576_000_000
_MIN_TIMESTAMP_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z
_MAX_TIMESTAMP_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z
_NANOS = 1_000_000_000


def _duration_problem(value: duration_pb2.Duration) -> str | None:
    if not -_MAX_DURATION_SECONDS <= value.seconds <= _MAX_DURATION_SECONDS:
        return f"seconds must be between {-_MAX_DURATION_SECONDS} and {_MAX_DURATION_SECONDS}"
    if not -_NANOS < value.nanos < _NANOS:
        return "nanos must be between -999999999 and 999999999"
    if (value.seconds > 0 and value.nanos < 0) or (value.seconds < 0 and value.nanos > 0):
        return "seconds and nanos must not have opposite signs"
    return None


def _timestamp_problem(value: timestamp_pb2.Timestamp) -> str | None:
    if not _MIN_TIMESTAMP_SECONDS <= value.seconds <= _MAX_TIMESTAMP_SECONDS:
        return "seconds must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z"
    if not 0 <= value.nanos < _NANOS:
        return "nanos must be between 0 and 999999999"
    return None


def _check_times(message: Message, path: str) -> None:
    """Raises InvalidArgument at the first Duration or Timestamp, at any depth, outside its
    type's documented range: json_format refuses to convert one, without saying which."""
    name = message.DESCRIPTOR.full_name
    if name in ("google.protobuf.Duration", "google.protobuf.Timestamp"):
        is_duration = name == "google.protobuf.Duration"
        problem = _duration_problem(message) if is_duration else _timestamp_problem(message)
        if problem is not None:
            raise InvalidArgument(
                path,
                f"is not a valid {'Duration' if is_duration else 'Timestamp'}: {problem}, "
                f"got seconds={message.seconds} nanos={message.nanos}",
            )
        return
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        where = f"{path}.{field.name}"
        if field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["value"].message_type is not None:
                for key, item in value.items():
                    _check_times(item, f"{where}.{str(key)[:MAX_SHOWN]}")
        elif field.is_repeated:
            for i, item in enumerate(value):
                _check_times(item, f"{where}[{i}]")
        else:
            _check_times(value, where)


def _doc(message: Message, path: str) -> dict[str, object]:
    """The document of an App or Campaign message, for `config`; `path` names it in errors."""
    _check_times(message, path)
    doc: dict[str, object] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return doc


def _duration(seconds: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=seconds)


def _timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def app_to_proto(app: App) -> admin_pb2.App:
    """The App message of a model app."""
    policy = app.policy
    return admin_pb2.App(
        app_id=app.app_id,
        display_name=app.display_name,
        policy=admin_pb2.ThrottlePolicy(
            daily_cap=policy.daily_cap,
            min_interval=_duration(policy.min_interval_s),
            backoff_factor=policy.backoff_factor,
            backoff_ceiling=_duration(policy.backoff_ceiling_s),
            quiet_hours_start=policy.quiet_start.strftime("%H:%M"),
            quiet_hours_end=policy.quiet_end.strftime("%H:%M"),
            channel_daily_caps={
                Channel(channel).value: cap for channel, cap in policy.channel_daily_caps.items()
            },
            snooze_after=policy.snooze_after,
            disable_adaptive=not policy.adaptive,
        ),
    )


def _prompt_to_proto(prompt: Prompt) -> decision_pb2.Prompt:
    return decision_pb2.Prompt(
        title=prompt.title, body=prompt.body, action_url=prompt.action_url, data=dict(prompt.data)
    )


def campaign_to_proto(campaign: Campaign) -> admin_pb2.Campaign:
    """The Campaign message of a model campaign. A response window of zero (the channel's
    default) is left unset."""
    message = admin_pb2.Campaign(
        app_id=campaign.app_id,
        campaign_id=campaign.campaign_id,
        display_name=campaign.display_name,
        status=_STATUS_TO_PROTO[campaign.status],
        trigger_events=sorted(campaign.trigger_events),
        channel=_CHANNEL_TO_PROTO[campaign.channel],
        priority=campaign.priority,
        arms=[
            admin_pb2.Arm(
                arm_id=arm.arm_id,
                prompt=_prompt_to_proto(arm.prompt),
                delay=_duration(arm.delay_s),
            )
            for arm in campaign.arms
        ],
        caps=admin_pb2.CampaignCaps(
            per_day=campaign.cap_per_day,
            lifetime=campaign.cap_lifetime,
            min_interval=_duration(campaign.cap_min_interval_s),
        ),
        holdout_share=campaign.holdout_share,
        reward_metric=_METRIC_TO_PROTO[campaign.reward_metric],
        attribution_window=_duration(campaign.attribution_window_s),
        quiet_hours_policy=_QUIET_TO_PROTO[campaign.quiet_hours_policy],
        control_arm_id=campaign.control_arm_id,
        exploration_floor=campaign.exploration_floor,
    )
    if campaign.response_window_s:
        message.response_window.CopyFrom(_duration(campaign.response_window_s))
    if campaign.updated_at is not None:
        message.updated_at.CopyFrom(_timestamp(campaign.updated_at))
    return message


def _required_id(value: str, field: str) -> str:
    """An id of a Get or List request, checked like the ids of stored documents before any
    query (PostgreSQL refuses a NUL character; an unbounded id must not reach the messages)."""
    return identifier(value, field)


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    """Manages apps and campaigns. Every write is validated whole; an invalid request changes
    nothing. `on_change` (sync or async) runs after each successful write, so that the local
    configuration cache can refresh at once; its failure is logged, never reported. Without an
    `eraser`, DeleteUser answers UNIMPLEMENTED."""

    def __init__(
        self,
        store: ConfigStore,
        on_change: OnChange | None = None,
        *,
        eraser: UserEraser | None = None,
    ) -> None:
        self._store = store
        self._on_change = on_change
        self._eraser = eraser

    async def _written(self) -> None:
        if self._on_change is None:
            return
        try:
            result = self._on_change()
            if inspect.isawaitable(result):
                await result
        except Exception:  # the write itself succeeded; the cache catches up on its own
            log.exception("admin_on_change_failed")

    @grpc_errors
    async def PutApp(
        self, request: admin_pb2.PutAppRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.PutAppResponse:
        """Creates an app or replaces its throttle policy."""
        app = parse_app(_doc(request.app, "app"), "app")
        stored = await self._store.put_app(app)
        await self._written()
        return admin_pb2.PutAppResponse(app=app_to_proto(stored))

    @grpc_errors
    async def GetApp(
        self, request: admin_pb2.GetAppRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.GetAppResponse:
        """Returns an app and its policy."""
        app = await self._store.get_app(_required_id(request.app_id, "app_id"))
        return admin_pb2.GetAppResponse(app=app_to_proto(app))

    @grpc_errors
    async def PutCampaign(
        self, request: admin_pb2.PutCampaignRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.PutCampaignResponse:
        """Creates a campaign or replaces it whole; its app must exist."""
        campaign = parse_campaign(_doc(request.campaign, "campaign"), "campaign")
        stored = await self._store.put_campaign(campaign)
        await self._written()
        return admin_pb2.PutCampaignResponse(campaign=campaign_to_proto(stored))

    @grpc_errors
    async def GetCampaign(
        self, request: admin_pb2.GetCampaignRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.GetCampaignResponse:
        """Returns one campaign."""
        campaign = await self._store.get_campaign(
            _required_id(request.app_id, "app_id"),
            _required_id(request.campaign_id, "campaign_id"),
        )
        return admin_pb2.GetCampaignResponse(campaign=campaign_to_proto(campaign))

    @grpc_errors
    async def ListCampaigns(
        self, request: admin_pb2.ListCampaignsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListCampaignsResponse:
        """Returns every campaign of an app, archived ones included, ordered by id."""
        campaigns = await self._store.list_campaigns(_required_id(request.app_id, "app_id"))
        return admin_pb2.ListCampaignsResponse(campaigns=[campaign_to_proto(c) for c in campaigns])

    @grpc_errors
    async def DeleteUser(
        self, request: admin_pb2.DeleteUserRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.DeleteUserResponse:
        """Erases one user of one app (see `erasure`)."""
        if self._eraser is None:
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED, "user erasure is not configured on this server"
            )
        assert self._eraser is not None  # abort raised
        counts = await self._eraser.erase(request.app_id, request.user_id)
        return erasure_to_proto(counts)


def erasure_to_proto(counts: ErasureCounts) -> admin_pb2.DeleteUserResponse:
    """The DeleteUserResponse of an erasure."""
    return admin_pb2.DeleteUserResponse(
        redis_keys_deleted=counts.redis_keys_deleted,
        devices_deleted=counts.devices_deleted,
        push_deliveries_deleted=counts.push_deliveries_deleted,
        decisions_pseudonymised=counts.decisions_pseudonymised,
        outcomes_pseudonymised=counts.outcomes_pseudonymised,
        push_jobs_pseudonymised=counts.push_jobs_pseudonymised,
        push_jobs_cancelled=counts.push_jobs_cancelled,
        erased_at=_timestamp(counts.erased_at),
    )
