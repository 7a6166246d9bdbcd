import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from nudge.v1 import decision_pb2 as _decision_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AppEnvironment(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    APP_ENVIRONMENT_UNSPECIFIED: _ClassVar[AppEnvironment]
    APP_ENVIRONMENT_PRODUCTION: _ClassVar[AppEnvironment]
    APP_ENVIRONMENT_SANDBOX: _ClassVar[AppEnvironment]

class DeviceStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEVICE_STATUS_UNSPECIFIED: _ClassVar[DeviceStatus]
    DEVICE_STATUS_ACTIVE: _ClassVar[DeviceStatus]
    DEVICE_STATUS_RETIRED: _ClassVar[DeviceStatus]
    DEVICE_STATUS_UNREGISTERED: _ClassVar[DeviceStatus]
APP_ENVIRONMENT_UNSPECIFIED: AppEnvironment
APP_ENVIRONMENT_PRODUCTION: AppEnvironment
APP_ENVIRONMENT_SANDBOX: AppEnvironment
DEVICE_STATUS_UNSPECIFIED: DeviceStatus
DEVICE_STATUS_ACTIVE: DeviceStatus
DEVICE_STATUS_RETIRED: DeviceStatus
DEVICE_STATUS_UNREGISTERED: DeviceStatus

class Device(_message.Message):
    __slots__ = ("device_id", "app_id", "user_id", "platform", "token", "environment", "status", "status_reason", "created_at", "updated_at", "retired_at")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STATUS_REASON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    RETIRED_AT_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    app_id: str
    user_id: str
    platform: _decision_pb2.Platform
    token: str
    environment: AppEnvironment
    status: DeviceStatus
    status_reason: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    retired_at: _timestamp_pb2.Timestamp
    def __init__(self, device_id: _Optional[str] = ..., app_id: _Optional[str] = ..., user_id: _Optional[str] = ..., platform: _Optional[_Union[_decision_pb2.Platform, str]] = ..., token: _Optional[str] = ..., environment: _Optional[_Union[AppEnvironment, str]] = ..., status: _Optional[_Union[DeviceStatus, str]] = ..., status_reason: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., retired_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RegisterDeviceRequest(_message.Message):
    __slots__ = ("app_id", "user_id", "platform", "token", "environment")
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    app_id: str
    user_id: str
    platform: _decision_pb2.Platform
    token: str
    environment: AppEnvironment
    def __init__(self, app_id: _Optional[str] = ..., user_id: _Optional[str] = ..., platform: _Optional[_Union[_decision_pb2.Platform, str]] = ..., token: _Optional[str] = ..., environment: _Optional[_Union[AppEnvironment, str]] = ...) -> None: ...

class RegisterDeviceResponse(_message.Message):
    __slots__ = ("device", "created")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    device: Device
    created: bool
    def __init__(self, device: _Optional[_Union[Device, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class UnregisterDeviceRequest(_message.Message):
    __slots__ = ("app_id", "user_id", "platform", "token")
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    app_id: str
    user_id: str
    platform: _decision_pb2.Platform
    token: str
    def __init__(self, app_id: _Optional[str] = ..., user_id: _Optional[str] = ..., platform: _Optional[_Union[_decision_pb2.Platform, str]] = ..., token: _Optional[str] = ...) -> None: ...

class UnregisterDeviceResponse(_message.Message):
    __slots__ = ("unregistered",)
    UNREGISTERED_FIELD_NUMBER: _ClassVar[int]
    unregistered: bool
    def __init__(self, unregistered: _Optional[bool] = ...) -> None: ...

class ListDevicesRequest(_message.Message):
    __slots__ = ("app_id", "user_id", "include_inactive")
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_INACTIVE_FIELD_NUMBER: _ClassVar[int]
    app_id: str
    user_id: str
    include_inactive: bool
    def __init__(self, app_id: _Optional[str] = ..., user_id: _Optional[str] = ..., include_inactive: _Optional[bool] = ...) -> None: ...

class ListDevicesResponse(_message.Message):
    __slots__ = ("devices",)
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    devices: _containers.RepeatedCompositeFieldContainer[Device]
    def __init__(self, devices: _Optional[_Iterable[_Union[Device, _Mapping]]] = ...) -> None: ...
