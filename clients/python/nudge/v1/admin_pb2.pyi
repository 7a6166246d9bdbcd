import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from nudge.v1 import decision_pb2 as _decision_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CampaignStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CAMPAIGN_STATUS_UNSPECIFIED: _ClassVar[CampaignStatus]
    CAMPAIGN_STATUS_ACTIVE: _ClassVar[CampaignStatus]
    CAMPAIGN_STATUS_PAUSED: _ClassVar[CampaignStatus]
    CAMPAIGN_STATUS_ARCHIVED: _ClassVar[CampaignStatus]

class RewardMetric(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REWARD_METRIC_UNSPECIFIED: _ClassVar[RewardMetric]
    REWARD_METRIC_TAP: _ClassVar[RewardMetric]
    REWARD_METRIC_CONVERSION: _ClassVar[RewardMetric]

class QuietHoursPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QUIET_HOURS_POLICY_UNSPECIFIED: _ClassVar[QuietHoursPolicy]
    QUIET_HOURS_POLICY_DEFER: _ClassVar[QuietHoursPolicy]
    QUIET_HOURS_POLICY_DROP: _ClassVar[QuietHoursPolicy]
CAMPAIGN_STATUS_UNSPECIFIED: CampaignStatus
CAMPAIGN_STATUS_ACTIVE: CampaignStatus
CAMPAIGN_STATUS_PAUSED: CampaignStatus
CAMPAIGN_STATUS_ARCHIVED: CampaignStatus
REWARD_METRIC_UNSPECIFIED: RewardMetric
REWARD_METRIC_TAP: RewardMetric
REWARD_METRIC_CONVERSION: RewardMetric
QUIET_HOURS_POLICY_UNSPECIFIED: QuietHoursPolicy
QUIET_HOURS_POLICY_DEFER: QuietHoursPolicy
QUIET_HOURS_POLICY_DROP: QuietHoursPolicy

class ThrottlePolicy(_message.Message):
    __slots__ = ("daily_cap", "min_interval", "backoff_factor", "backoff_ceiling", "quiet_hours_start", "quiet_hours_end", "channel_daily_caps", "snooze_after", "disable_adaptive")
    class ChannelDailyCapsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    DAILY_CAP_FIELD_NUMBER: _ClassVar[int]
    MIN_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_FACTOR_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_CEILING_FIELD_NUMBER: _ClassVar[int]
    QUIET_HOURS_START_FIELD_NUMBER: _ClassVar[int]
    QUIET_HOURS_END_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_DAILY_CAPS_FIELD_NUMBER: _ClassVar[int]
    SNOOZE_AFTER_FIELD_NUMBER: _ClassVar[int]
    DISABLE_ADAPTIVE_FIELD_NUMBER: _ClassVar[int]
    daily_cap: int
    min_interval: _duration_pb2.Duration
    backoff_factor: float
    backoff_ceiling: _duration_pb2.Duration
    quiet_hours_start: str
    quiet_hours_end: str
    channel_daily_caps: _containers.ScalarMap[str, int]
    snooze_after: int
    disable_adaptive: bool
    def __init__(self, daily_cap: _Optional[int] = ..., min_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., backoff_factor: _Optional[float] = ..., backoff_ceiling: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., quiet_hours_start: _Optional[str] = ..., quiet_hours_end: _Optional[str] = ..., channel_daily_caps: _Optional[_Mapping[str, int]] = ..., snooze_after: _Optional[int] = ..., disable_adaptive: _Optional[bool] = ...) -> None: ...

class App(_message.Message):
    __slots__ = ("app_id", "display_name", "policy")
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    app_id: str
    display_name: str
    policy: ThrottlePolicy
    def __init__(self, app_id: _Optional[str] = ..., display_name: _Optional[str] = ..., policy: _Optional[_Union[ThrottlePolicy, _Mapping]] = ...) -> None: ...

class Arm(_message.Message):
    __slots__ = ("arm_id", "prompt", "delay")
    ARM_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    DELAY_FIELD_NUMBER: _ClassVar[int]
    arm_id: str
    prompt: _decision_pb2.Prompt
    delay: _duration_pb2.Duration
    def __init__(self, arm_id: _Optional[str] = ..., prompt: _Optional[_Union[_decision_pb2.Prompt, _Mapping]] = ..., delay: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class CampaignCaps(_message.Message):
    __slots__ = ("per_day", "lifetime", "min_interval")
    PER_DAY_FIELD_NUMBER: _ClassVar[int]
    LIFETIME_FIELD_NUMBER: _ClassVar[int]
    MIN_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    per_day: int
    lifetime: int
    min_interval: _duration_pb2.Duration
    def __init__(self, per_day: _Optional[int] = ..., lifetime: _Optional[int] = ..., min_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class Campaign(_message.Message):
    __slots__ = ("app_id", "campaign_id", "display_name", "status", "trigger_events", "channel", "priority", "arms", "caps", "holdout_share", "reward_metric", "attribution_window", "response_window", "quiet_hours_policy", "control_arm_id", "exploration_floor", "updated_at")
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_EVENTS_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    ARMS_FIELD_NUMBER: _ClassVar[int]
    CAPS_FIELD_NUMBER: _ClassVar[int]
    HOLDOUT_SHARE_FIELD_NUMBER: _ClassVar[int]
    REWARD_METRIC_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTION_WINDOW_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_WINDOW_FIELD_NUMBER: _ClassVar[int]
    QUIET_HOURS_POLICY_FIELD_NUMBER: _ClassVar[int]
    CONTROL_ARM_ID_FIELD_NUMBER: _ClassVar[int]
    EXPLORATION_FLOOR_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    app_id: str
    campaign_id: str
    display_name: str
    status: CampaignStatus
    trigger_events: _containers.RepeatedScalarFieldContainer[str]
    channel: _decision_pb2.Channel
    priority: int
    arms: _containers.RepeatedCompositeFieldContainer[Arm]
    caps: CampaignCaps
    holdout_share: float
    reward_metric: RewardMetric
    attribution_window: _duration_pb2.Duration
    response_window: _duration_pb2.Duration
    quiet_hours_policy: QuietHoursPolicy
    control_arm_id: str
    exploration_floor: float
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, app_id: _Optional[str] = ..., campaign_id: _Optional[str] = ..., display_name: _Optional[str] = ..., status: _Optional[_Union[CampaignStatus, str]] = ..., trigger_events: _Optional[_Iterable[str]] = ..., channel: _Optional[_Union[_decision_pb2.Channel, str]] = ..., priority: _Optional[int] = ..., arms: _Optional[_Iterable[_Union[Arm, _Mapping]]] = ..., caps: _Optional[_Union[CampaignCaps, _Mapping]] = ..., holdout_share: _Optional[float] = ..., reward_metric: _Optional[_Union[RewardMetric, str]] = ..., attribution_window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., response_window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., quiet_hours_policy: _Optional[_Union[QuietHoursPolicy, str]] = ..., control_arm_id: _Optional[str] = ..., exploration_floor: _Optional[float] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PutAppRequest(_message.Message):
    __slots__ = ("app",)
    APP_FIELD_NUMBER: _ClassVar[int]
    app: App
    def __init__(self, app: _Optional[_Union[App, _Mapping]] = ...) -> None: ...

class PutAppResponse(_message.Message):
    __slots__ = ("app",)
    APP_FIELD_NUMBER: _ClassVar[int]
    app: App
    def __init__(self, app: _Optional[_Union[App, _Mapping]] = ...) -> None: ...

class GetAppRequest(_message.Message):
    __slots__ = ("app_id",)
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    app_id: str
    def __init__(self, app_id: _Optional[str] = ...) -> None: ...

class GetAppResponse(_message.Message):
    __slots__ = ("app",)
    APP_FIELD_NUMBER: _ClassVar[int]
    app: App
    def __init__(self, app: _Optional[_Union[App, _Mapping]] = ...) -> None: ...

class PutCampaignRequest(_message.Message):
    __slots__ = ("campaign",)
    CAMPAIGN_FIELD_NUMBER: _ClassVar[int]
    campaign: Campaign
    def __init__(self, campaign: _Optional[_Union[Campaign, _Mapping]] = ...) -> None: ...

class PutCampaignResponse(_message.Message):
    __slots__ = ("campaign",)
    CAMPAIGN_FIELD_NUMBER: _ClassVar[int]
    campaign: Campaign
    def __init__(self, campaign: _Optional[_Union[Campaign, _Mapping]] = ...) -> None: ...

class GetCampaignRequest(_message.Message):
    __slots__ = ("app_id", "campaign_id")
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    app_id: str
    campaign_id: str
    def __init__(self, app_id: _Optional[str] = ..., campaign_id: _Optional[str] = ...) -> None: ...

class GetCampaignResponse(_message.Message):
    __slots__ = ("campaign",)
    CAMPAIGN_FIELD_NUMBER: _ClassVar[int]
    campaign: Campaign
    def __init__(self, campaign: _Optional[_Union[Campaign, _Mapping]] = ...) -> None: ...

class ListCampaignsRequest(_message.Message):
    __slots__ = ("app_id",)
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    app_id: str
    def __init__(self, app_id: _Optional[str] = ...) -> None: ...

class ListCampaignsResponse(_message.Message):
    __slots__ = ("campaigns",)
    CAMPAIGNS_FIELD_NUMBER: _ClassVar[int]
    campaigns: _containers.RepeatedCompositeFieldContainer[Campaign]
    def __init__(self, campaigns: _Optional[_Iterable[_Union[Campaign, _Mapping]]] = ...) -> None: ...

class DeleteUserRequest(_message.Message):
    __slots__ = ("app_id", "user_id")
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    app_id: str
    user_id: str
    def __init__(self, app_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class DeleteUserResponse(_message.Message):
    __slots__ = ("redis_keys_deleted", "devices_deleted", "push_deliveries_deleted", "decisions_pseudonymised", "outcomes_pseudonymised", "push_jobs_pseudonymised", "push_jobs_cancelled", "erased_at")
    REDIS_KEYS_DELETED_FIELD_NUMBER: _ClassVar[int]
    DEVICES_DELETED_FIELD_NUMBER: _ClassVar[int]
    PUSH_DELIVERIES_DELETED_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_PSEUDONYMISED_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_PSEUDONYMISED_FIELD_NUMBER: _ClassVar[int]
    PUSH_JOBS_PSEUDONYMISED_FIELD_NUMBER: _ClassVar[int]
    PUSH_JOBS_CANCELLED_FIELD_NUMBER: _ClassVar[int]
    ERASED_AT_FIELD_NUMBER: _ClassVar[int]
    redis_keys_deleted: int
    devices_deleted: int
    push_deliveries_deleted: int
    decisions_pseudonymised: int
    outcomes_pseudonymised: int
    push_jobs_pseudonymised: int
    push_jobs_cancelled: int
    erased_at: _timestamp_pb2.Timestamp
    def __init__(self, redis_keys_deleted: _Optional[int] = ..., devices_deleted: _Optional[int] = ..., push_deliveries_deleted: _Optional[int] = ..., decisions_pseudonymised: _Optional[int] = ..., outcomes_pseudonymised: _Optional[int] = ..., push_jobs_pseudonymised: _Optional[int] = ..., push_jobs_cancelled: _Optional[int] = ..., erased_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
