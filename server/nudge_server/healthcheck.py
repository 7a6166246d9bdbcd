"""A one-shot probe of the server's gRPC health service, for container health checks.

``python -m nudge_server.healthcheck [--target HOST:PORT] [--timeout SECONDS] [--service NAME]``
exits 0 when the server answers SERVING and 1 otherwise (not listening, NOT_SERVING because
Redis is down, or no answer within the timeout). The default target is 127.0.0.1 on the port of
$NUDGE_LISTEN (50051 when unset), which is right inside the server's own container.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .logs import configure_logging

log = logging.getLogger("nudge_server.healthcheck")

DEFAULT_PORT = 50051


def default_target(env: Mapping[str, str]) -> str:
    """127.0.0.1 and the port of NUDGE_LISTEN ("HOST:PORT", e.g. "0.0.0.0:50051")."""
    listen = env.get("NUDGE_LISTEN") or ""
    port = listen.rpartition(":")[2] if ":" in listen else ""
    return f"127.0.0.1:{port if port.isdigit() else DEFAULT_PORT}"


def check(target: str, timeout_s: float, service: str = "") -> tuple[bool, str]:
    """Asks the health service once; (serving?, what was seen)."""
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            return False, code.name if code is not None else type(exc).__name__
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    return answer.status == health_pb2.HealthCheckResponse.SERVING, status


def main(
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] = os.environ,
    prog: str = "python -m nudge_server.healthcheck",
    description: str | None = __doc__,
) -> int:
    """The CLI: 0 when SERVING, 1 otherwise (the reason is logged to stderr)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--target", default=default_target(env), help="HOST:PORT to probe")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait (default 3)")
    parser.add_argument("--service", default="", help='health service name ("" = the server)')
    args = parser.parse_args(argv)
    serving, status = check(args.target, args.timeout, args.service)
    if not serving:
        configure_logging()
        log.warning("healthcheck_failed", extra={"target": args.target, "status": status})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
