"""The one place where domain errors become gRPC status codes."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from .errors import (
    ConfigError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    NudgeError,
    ReportFailed,
    ResourceExhausted,
    StoreTimeout,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

Servicer = TypeVar("Servicer")
Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Servicer, Req, grpc.aio.ServicerContext], Awaitable[Resp]]

_CODES: list[tuple[type[NudgeError], grpc.StatusCode]] = [
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (ConfigError, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    # Before StoreUnavailable, of which it is a kind.
    (StoreTimeout, grpc.StatusCode.DEADLINE_EXCEEDED),
    (StoreUnavailable, grpc.StatusCode.UNAVAILABLE),
    (ReportFailed, grpc.StatusCode.INTERNAL),
]


#: Longest status message sent, in UTF-8 bytes. gRPC sends it percent-encoded in a trailer, and
#: a client drops a call whose metadata passes about 8 KiB; messages are kept short where they
#: are made (`errors.shown`), this is the backstop.
MAX_MESSAGE_BYTES = 1024


def status_message(exc: NudgeError) -> str:
    """The status message of a domain error, cut to MAX_MESSAGE_BYTES."""
    text = str(exc)
    raw = text.encode("utf-8", errors="replace")
    if len(raw) <= MAX_MESSAGE_BYTES:
        return text
    return raw[: MAX_MESSAGE_BYTES - 3].decode("utf-8", errors="ignore") + "..."


def status_for(exc: NudgeError) -> grpc.StatusCode:
    """The gRPC status code of a domain error."""
    for error_type, code in _CODES:
        if isinstance(exc, error_type):
            return code
    return grpc.StatusCode.INTERNAL


def grpc_errors(handler: Handler[Servicer, Req, Resp]) -> Handler[Servicer, Req, Resp]:
    """Wraps a servicer method so that domain errors abort the call with their status code."""

    @functools.wraps(handler)
    async def wrapper(self: Servicer, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        try:
            return await handler(self, request, context)
        except NudgeError as exc:
            code = status_for(exc)
            if isinstance(exc, ReportFailed):  # its cause was logged where it happened
                log.error("report_failed", extra={"rpc": handler.__name__, "error": str(exc)})
            elif code is grpc.StatusCode.INTERNAL:
                log.exception("unmapped_error", extra={"rpc": handler.__name__})
            await context.abort(code, status_message(exc))
            raise  # unreachable: abort raises

    return wrapper
