"""A one-shot probe of the server's gRPC health service, for container health checks.

``python -m nudge_server.healthcheck [--target HOST:PORT] [--timeout SECONDS] [--service NAME]``
exits 0 when the server answers SERVING and 1 otherwise (not listening, NOT_SERVING because
Redis is down, or no answer within the timeout). The default target is 127.0.0.1 on the port of
$NUDGE_LISTEN (50051 when unset), which is right inside the server's own container.

Against a server serving TLS the probe needs the client's TLS variables (`TlsOptions.from_env`):
NUDGE_TLS_CA, NUDGE_TLS_SERVER_NAME when the certificate does not name 127.0.0.1, and under
mTLS NUDGE_TLS_CLIENT_CERT and NUDGE_TLS_CLIENT_KEY.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nudge_client import TlsOptions, open_sync_channel

from .logs import configure_logging

log = logging.getLogger("nudge_server.healthcheck")

DEFAULT_PORT = 50051


def default_target(env: Mapping[str, str]) -> str:
    """127.0.0.1 and the port of NUDGE_LISTEN ("HOST:PORT", e.g. "0.0.0.0:50051")."""
    listen = env.get("NUDGE_LISTEN") or ""
    port = listen.rpartition(":")[2] if ":" in listen else ""
    return f"127.0.0.1:{port if port.isdigit() else DEFAULT_PORT}"


def check(
    target: str, timeout_s: float, service: str = "", tls: TlsOptions | None = None
) -> tuple[bool, str]:
    """Asks the health service once, over TLS when `tls` is given; (serving?, what was seen)."""
    try:
        channel = open_sync_channel(target, tls=tls)
    except ValueError as exc:  # a TLS file that cannot be read
        return False, str(exc)
    with channel:
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
    *,
    tls_from_env: bool = True,
) -> int:
    """The CLI: 0 when SERVING, 1 otherwise (the reason is logged to stderr).

    `tls_from_env` False probes in plaintext whatever the environment says (a health service
    that never serves TLS, like the push worker's)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--target", default=default_target(env), help="HOST:PORT to probe")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait (default 3)")
    parser.add_argument("--service", default="", help='health service name ("" = the server)')
    args = parser.parse_args(argv)
    fields = {"target": args.target}
    try:
        tls = TlsOptions.from_env(env) if tls_from_env else None
    except ValueError as exc:
        serving, fields["status"] = False, str(exc)
    else:
        serving, fields["status"] = check(args.target, args.timeout, args.service, tls)
        if tls is None and tls_from_env and env.get("NUDGE_TLS_CERT"):
            fields["hint"] = "the server serves TLS (NUDGE_TLS_CERT is set): set NUDGE_TLS_CA"
    if not serving:
        configure_logging()
        log.warning("healthcheck_failed", extra=fields)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
