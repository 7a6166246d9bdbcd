"""What the server does with request bytes that are not a valid message of their RPC.

grpc.aio decodes a request with the handler's `request_deserializer` before any servicer code
runs, and reports whatever that raises as UNKNOWN ("Unexpected DecodeError"): the deserializer
has no context to abort with. `DecodeErrors`, a server interceptor, therefore hands grpc every
unary-unary handler without a deserializer and decodes the raw bytes itself, inside the call,
where a `DecodeError` (invalid UTF-8 in a string, truncated or garbage bytes, messages nested
past protobuf's depth limit) can abort with INVALID_ARGUMENT. Streaming handlers (health's
Watch, reflection) are left as they are; every RPC of the nudge services is unary-unary.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

#: Characters of protobuf's own explanation kept in the status message.
MAX_REASON = 200

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
