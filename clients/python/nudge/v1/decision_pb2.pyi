import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Channel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANNEL_UNSPECIFIED: _ClassVar[Channel]
    CHANNEL_IN_APP: _ClassVar[Channel]
    CHANNEL_PUSH: _ClassVar[Channel]
    CHANNEL_EMAIL: _ClassVar[Channel]

class Platform(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PLATFORM_UNSPECIFIED: _ClassVar[Platform]
    PLATFORM_IOS: _ClassVar[Platform]
    PLATFORM_ANDROID: _ClassVar[Platform]
    PLATFORM_WEB: _ClassVar[Platform]

class Reason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REASON_UNSPECIFIED: _ClassVar[Reason]
    REASON_OK: _ClassVar[Reason]
    REASON_DAILY_CAP: _ClassVar[Reason]
    REASON_COOLDOWN: _ClassVar[Reason]
    REASON_BACKOFF: _ClassVar[Reason]
    REASON_QUIET_HOURS: _ClassVar[Reason]
    REASON_CAMPAIGN_CAP: _ClassVar[Reason]
    REASON_HOLDOUT: _ClassVar[Reason]
    REASON_NO_ELIGIBLE_CAMPAIGN: _ClassVar[Reason]
    REASON_UNAVAILABLE: _ClassVar[Reason]
    REASON_CHANNEL_CAP: _ClassVar[Reason]
    REASON_SNOOZED: _ClassVar[Reason]

class OutcomeType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_TYPE_UNSPECIFIED: _ClassVar[OutcomeType]
    OUTCOME_TYPE_IMPRESSION: _ClassVar[OutcomeType]
    OUTCOME_TYPE_TAP: _ClassVar[OutcomeType]
    OUTCOME_TYPE_DISMISS: _ClassVar[OutcomeType]
    OUTCOME_TYPE_CONVERSION: _ClassVar[OutcomeType]
CHANNEL_UNSPECIFIED: Channel
CHANNEL_IN_APP: Channel
CHANNEL_PUSH: Channel
CHANNEL_EMAIL: Channel
PLATFORM_UNSPECIFIED: Platform
PLATFORM_IOS: Platform
PLATFORM_ANDROID: Platform
PLATFORM_WEB: Platform
REASON_UNSPECIFIED: Reason
REASON_OK: Reason
REASON_DAILY_CAP: Reason
REASON_COOLDOWN: Reason
REASON_BACKOFF: Reason
REASON_QUIET_HOURS: Reason
REASON_CAMPAIGN_CAP: Reason
REASON_HOLDOUT: Reason
REASON_NO_ELIGIBLE_CAMPAIGN: Reason
REASON_UNAVAILABLE: Reason
REASON_CHANNEL_CAP: Reason
REASON_SNOOZED: Reason
OUTCOME_TYPE_UNSPECIFIED: OutcomeType
OUTCOME_TYPE_IMPRESSION: OutcomeType
OUTCOME_TYPE_TAP: OutcomeType
OUTCOME_TYPE_DISMISS: OutcomeType
OUTCOME_TYPE_CONVERSION: OutcomeType

class Event(_message.Message):
    __slots__ = ("name", "properties")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    name: str
    properties: _struct_pb2.Struct
    def __init__(self, name: _Optional[str] = ..., properties: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class DecideRequest(_message.Message):
    __slots__ = ("app_id", "user_id", "event", "channel", "surface", "time_zone", "locale", "platform", "client_request_id", "event_time")
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    SURFACE_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    LOCALE_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    CLIENT_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    app_id: str
    user_id: str
    event: Event
    channel: Channel
    surface: str
    time_zone: str
    locale: str
    platform: Platform
    client_request_id: str
    event_time: _timestamp_pb2.Timestamp
    def __init__(self, app_id: _Optional[str] = ..., user_id: _Optional[str] = ..., event: _Optional[_Union[Event, _Mapping]] = ..., channel: _Optional[_Union[Channel, str]] = ..., surface: _Optional[str] = ..., time_zone: _Optional[str] = ..., locale: _Optional[str] = ..., platform: _Optional[_Union[Platform, str]] = ..., client_request_id: _Optional[str] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Prompt(_message.Message):
    __slots__ = ("title", "body", "action_url", "data")
    class DataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TITLE_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    ACTION_URL_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    title: str
    body: str
    action_url: str
    data: _containers.ScalarMap[str, str]
    def __init__(self, title: _Optional[str] = ..., body: _Optional[str] = ..., action_url: _Optional[str] = ..., data: _Optional[_Mapping[str, str]] = ...) -> None: ...

class DecideResponse(_message.Message):
    __slots__ = ("show", "decision_id", "reason", "campaign_id", "arm_id", "prompt", "channel", "next_eligible_at", "propensity", "deliver_at", "replayed")
    SHOW_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    ARM_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    NEXT_ELIGIBLE_AT_FIELD_NUMBER: _ClassVar[int]
    PROPENSITY_FIELD_NUMBER: _ClassVar[int]
    DELIVER_AT_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    show: bool
    decision_id: str
    reason: Reason
    campaign_id: str
    arm_id: str
    prompt: Prompt
    channel: Channel
    next_eligible_at: _timestamp_pb2.Timestamp
    propensity: float
    deliver_at: _timestamp_pb2.Timestamp
    replayed: bool
    def __init__(self, show: _Optional[bool] = ..., decision_id: _Optional[str] = ..., reason: _Optional[_Union[Reason, str]] = ..., campaign_id: _Optional[str] = ..., arm_id: _Optional[str] = ..., prompt: _Optional[_Union[Prompt, _Mapping]] = ..., channel: _Optional[_Union[Channel, str]] = ..., next_eligible_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., propensity: _Optional[float] = ..., deliver_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class ReportOutcomeRequest(_message.Message):
    __slots__ = ("app_id", "user_id", "decision_id", "type", "value", "occurred_at")
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    app_id: str
    user_id: str
    decision_id: str
    type: OutcomeType
    value: float
    occurred_at: _timestamp_pb2.Timestamp
    def __init__(self, app_id: _Optional[str] = ..., user_id: _Optional[str] = ..., decision_id: _Optional[str] = ..., type: _Optional[_Union[OutcomeType, str]] = ..., value: _Optional[float] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ReportOutcomeResponse(_message.Message):
    __slots__ = ("recorded", "rewarded")
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    REWARDED_FIELD_NUMBER: _ClassVar[int]
    recorded: bool
    rewarded: bool
    def __init__(self, recorded: _Optional[bool] = ..., rewarded: _Optional[bool] = ...) -> None: ...
