"""What the server does with request bytes that are not a valid message of their RPC.

grpc.aio decodes a request with the handler's `request_deserializer` before any servicer code
runs, and reports whatever that raises as UNKNOWN ("Unexpected DecodeError"): the deserializer
has no context to abort with. `DecodeErrors`, a server interceptor, therefore hands grpc every
unary-unary handler without a deserializer and decodes the raw bytes itself, inside the call,
where a `DecodeError` (invalid UTF-8 in a string, truncated or garbage bytes, messages nested
past protobuf's depth limit) can abort with INVALID_ARGUMENT. Streaming handlers (health's
Watch, reflection) are left as they are; every RPC of the nudge services is unary-unary.

A message that decodes can still carry values no domain type holds: `timestamp` turns a
`google.protobuf.Timestamp` field into a datetime, or an InvalidArgument naming the field when
it is outside the Timestamp range (protobuf itself would raise a ValueError, which grpc reports
as UNKNOWN).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from google.protobuf.message import DecodeError

from .errors import InvalidArgument

#: Characters of protobuf's own explanation kept in the status message.
MAX_REASON = 200

#: The Timestamp range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
MIN_SECONDS = -62135596800
MAX_SECONDS = 253402300799

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]
Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def _decoding(method: str, deserialize: Callable[[bytes], Any], behavior: Behavior) -> Behavior:
    """`behavior` taking raw bytes: undecodable ones abort with INVALID_ARGUMENT."""

    async def decode_then_call(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        try:
            request = deserialize(raw)
        except DecodeError as exc:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the request is not a valid message of {method}: {str(exc)[:MAX_REASON]}",
            )
        return await behavior(request, context)

    return decode_then_call


class DecodeErrors(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Answers INVALID_ARGUMENT, instead of UNKNOWN, to requests that fail to decode."""

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if (
            handler is None
            or handler.request_streaming
            or handler.response_streaming
            or handler.request_deserializer is None
        ):
            return handler
        return grpc.unary_unary_rpc_method_handler(
            _decoding(
                handler_call_details.method, handler.request_deserializer, handler.unary_unary
            ),
            request_deserializer=None,
            response_serializer=handler.response_serializer,
        )


def timestamp(message: timestamp_pb2.Timestamp, present: bool, field: str) -> dt.datetime | None:
    """An aware UTC datetime from a Timestamp field, or None when it is unset. InvalidArgument
    names `field` when seconds or nanos are outside the Timestamp range."""
    if not present:
        return None
    if not MIN_SECONDS <= message.seconds <= MAX_SECONDS or not 0 <= message.nanos < 10**9:
        raise InvalidArgument(
            field,
            "is outside the Timestamp range (seconds from 0001-01-01T00:00:00Z to "
            f"9999-12-31T23:59:59Z, nanos from 0 to 999999999), got seconds={message.seconds} "
            f"nanos={message.nanos}",
        )
    return dt.datetime.fromtimestamp(message.seconds, dt.UTC) + dt.timedelta(
        microseconds=message.nanos // 1000
    )


def to_timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    """The Timestamp of an aware datetime."""
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(value)
    return message
