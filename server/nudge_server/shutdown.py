"""Graceful shutdown: new calls are turned away with UNAVAILABLE while the calls in flight end.

grpc's own `server.stop(grace)` lets calls in flight finish, but a call that reaches the server
after it began stopping is answered CANCELLED, which a client cannot tell from its own
cancellation. So on SIGTERM the server first drains: `Draining.start()` makes every new call
(but the health service's) answer UNAVAILABLE, which clients retry elsewhere, for
`NUDGE_SHUTDOWN_DRAIN` seconds; only then does grpc stop.
"""

from __future__ import annotations

import grpc

from .auth import OPEN_PREFIX, Continuation, refusal

SHUTTING_DOWN = "the server is shutting down; retry (another server will answer)"


class Draining(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses new calls with UNAVAILABLE once `start` is called. First of the interceptors:
    a refused call costs neither a key check nor decoding."""

    def __init__(self) -> None:
        self.draining = False
        self.refused = 0

    def start(self) -> None:
        self.draining = True

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if not self.draining or details.method.startswith(OPEN_PREFIX):
            return handler
        self.refused += 1
        return refusal(handler, grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
