import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Health(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEALTH_UNSPECIFIED: _ClassVar[Health]
    HEALTH_OK: _ClassVar[Health]
    HEALTH_DEGRADED: _ClassVar[Health]
    HEALTH_FAILING: _ClassVar[Health]
HEALTH_UNSPECIFIED: Health
HEALTH_OK: Health
HEALTH_DEGRADED: Health
HEALTH_FAILING: Health

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("components", "decision_log", "checked_at")
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    DECISION_LOG_FIELD_NUMBER: _ClassVar[int]
    CHECKED_AT_FIELD_NUMBER: _ClassVar[int]
    components: _containers.RepeatedCompositeFieldContainer[ComponentStatus]
    decision_log: DecisionLogStatus
    checked_at: _timestamp_pb2.Timestamp
    def __init__(self, components: _Optional[_Iterable[_Union[ComponentStatus, _Mapping]]] = ..., decision_log: _Optional[_Union[DecisionLogStatus, _Mapping]] = ..., checked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ComponentStatus(_message.Message):
    __slots__ = ("name", "health", "detail", "latency")
    NAME_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    name: str
    health: Health
    detail: str
    latency: _duration_pb2.Duration
    def __init__(self, name: _Optional[str] = ..., health: _Optional[_Union[Health, str]] = ..., detail: _Optional[str] = ..., latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class DecisionLogStatus(_message.Message):
    __slots__ = ("rows_in_memory", "rows_in_spool", "spool_bytes", "spool_capacity_bytes", "spool_full", "rows_dropped", "rows_written", "rows_rejected", "oldest_spooled_row_age", "rows_duplicate", "rows_spooled", "rows_replayed", "postgresql_failing", "last_error", "spool_directory", "spool_error")
    ROWS_IN_MEMORY_FIELD_NUMBER: _ClassVar[int]
    ROWS_IN_SPOOL_FIELD_NUMBER: _ClassVar[int]
    SPOOL_BYTES_FIELD_NUMBER: _ClassVar[int]
    SPOOL_CAPACITY_BYTES_FIELD_NUMBER: _ClassVar[int]
    SPOOL_FULL_FIELD_NUMBER: _ClassVar[int]
    ROWS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    ROWS_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    ROWS_REJECTED_FIELD_NUMBER: _ClassVar[int]
    OLDEST_SPOOLED_ROW_AGE_FIELD_NUMBER: _ClassVar[int]
    ROWS_DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    ROWS_SPOOLED_FIELD_NUMBER: _ClassVar[int]
    ROWS_REPLAYED_FIELD_NUMBER: _ClassVar[int]
    POSTGRESQL_FAILING_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    SPOOL_DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    SPOOL_ERROR_FIELD_NUMBER: _ClassVar[int]
    rows_in_memory: int
    rows_in_spool: int
    spool_bytes: int
    spool_capacity_bytes: int
    spool_full: bool
    rows_dropped: int
    rows_written: int
    rows_rejected: int
    oldest_spooled_row_age: _duration_pb2.Duration
    rows_duplicate: int
    rows_spooled: int
    rows_replayed: int
    postgresql_failing: bool
    last_error: str
    spool_directory: str
    spool_error: str
    def __init__(self, rows_in_memory: _Optional[int] = ..., rows_in_spool: _Optional[int] = ..., spool_bytes: _Optional[int] = ..., spool_capacity_bytes: _Optional[int] = ..., spool_full: _Optional[bool] = ..., rows_dropped: _Optional[int] = ..., rows_written: _Optional[int] = ..., rows_rejected: _Optional[int] = ..., oldest_spooled_row_age: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., rows_duplicate: _Optional[int] = ..., rows_spooled: _Optional[int] = ..., rows_replayed: _Optional[int] = ..., postgresql_failing: _Optional[bool] = ..., last_error: _Optional[str] = ..., spool_directory: _Optional[str] = ..., spool_error: _Optional[str] = ...) -> None: ...
