"""The worker's health: a gRPC health service of its own, and a one-shot probe for it.

The worker is SERVING while its polls of the queue succeed; when PostgreSQL has not answered a
poll for `max(5 s, 5 polls)` it turns NOT_SERVING. Probe it with
``python -m nudge_server.delivery.health`` (target: 127.0.0.1 and the port of
NUDGE_WORKER_HEALTH_LISTEN, default 50052; exit 0 when SERVING, 1 otherwise), which is
`nudge_server.healthcheck` pointed at the worker.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Self

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from .. import healthcheck
from ..background import periodic

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger(__name__)

#: The health service name of the worker (besides "", the process as a whole).
SERVICE_NAME = "nudge.worker.Delivery"
DEFAULT_LISTEN = "127.0.0.1:50052"
CHECK_INTERVAL_S = 1.0


class WorkerHealth:
    """Serves the standard gRPC health service for a worker. An async context manager."""

    def __init__(self, worker: Worker, listen: str, poll_interval_s: float) -> None:
        self._worker = worker
        self._listen = listen
        self._stale_after_s = max(5.0, 5 * poll_interval_s)
        self._server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        self._servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, self._server)
        self._current: bool | None = None
        self._watcher = periodic(
            "nudge-worker-health",
            CHECK_INTERVAL_S,
            self._check,
            crash_event="worker_health_crashed",
            immediately=True,
        )
        self.port = 0

    def serving(self) -> bool:
        """Whether the worker polled the queue successfully lately."""
        return time.monotonic() - self._worker.last_poll_ok < self._stale_after_s

    async def __aenter__(self) -> Self:
        self.port = self._server.add_insecure_port(self._listen)
        if self.port == 0:
            raise OSError(f"worker health: cannot listen on {self._listen}")
        await self._server.start()
        self._watcher.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._watcher.stop()
        await self._servicer.enter_graceful_shutdown()
        await self._server.stop(1.0)

    async def _check(self) -> None:
        ok = self.serving()
        if ok != self._current:
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if ok
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            for name in ("", SERVICE_NAME):
                await self._servicer.set(name, status)
            if self._current is not None:
                log.warning("worker_health_changed", extra={"serving": ok})
            self._current = ok


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] = os.environ) -> int:
    """The worker's probe: `nudge_server.healthcheck` with the worker's port as default."""
    listen = env.get("NUDGE_WORKER_HEALTH_LISTEN") or DEFAULT_LISTEN
    return healthcheck.main(
        argv,
        {**env, "NUDGE_LISTEN": listen},
        prog="python -m nudge_server.delivery.health",
        description="Probes the push worker's gRPC health service (NUDGE_WORKER_HEALTH_LISTEN, "
        "default 127.0.0.1:50052): exit 0 when SERVING, 1 otherwise.",
        tls_from_env=False,  # the worker's health service is plaintext, loopback by default
    )


if __name__ == "__main__":
    sys.exit(main())
