"""`nudge status`: asks one server process's StatusService and prints what it says.

The target is --target, else $NUDGE_TARGET, else 127.0.0.1:50051; the API key (admin scope)
is --api-key, else $NUDGE_API_KEY, sent as `authorization: Bearer <key>`; TLS comes from the
client's NUDGE_TLS_* variables. Exit code 0 when every component is OK or degraded, 1 when one
is failing or the server cannot be asked, 2 when the server refuses the key.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import grpc
from google.protobuf import json_format
from nudge.v1 import status_pb2, status_pb2_grpc
from nudge_client import TlsOptions, open_channel

DEFAULT_TARGET = "127.0.0.1:50051"
EXIT_OK = 0
EXIT_FAILING = 1
EXIT_REFUSED = 2


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def render(response: status_pb2.GetStatusResponse) -> str:
    """The status as lines for a person."""
    lines = [f"checked at {response.checked_at.ToDatetime().isoformat(timespec='seconds')}Z"]
    for component in response.components:
        health = status_pb2.Health.Name(component.health).removeprefix("HEALTH_").lower()
        latency = ""
        if component.HasField("latency"):
            latency = f" ({component.latency.ToTimedelta().total_seconds() * 1000:.1f} ms)"
        lines.append(f"{component.name:<13} {health:<9} {component.detail}{latency}")
    log = response.decision_log
    lines.append("decision log:")
    figures: list[tuple[str, str]] = [
        ("rows in memory", str(log.rows_in_memory)),
        ("rows written", str(log.rows_written)),
        ("rows duplicate", str(log.rows_duplicate)),
        ("rows rejected", str(log.rows_rejected)),
        ("rows dropped", str(log.rows_dropped)),
        ("postgresql failing", "yes" if log.postgresql_failing else "no"),
    ]
    if log.last_error:
        figures.append(("last error", log.last_error))
    if log.spool_capacity_bytes:
        age = "-"
        if log.HasField("oldest_spooled_row_age"):
            age = f"{log.oldest_spooled_row_age.ToTimedelta().total_seconds():.1f} s"
        used = 100 * log.spool_bytes / log.spool_capacity_bytes
        figures += [
            ("rows in spool", str(log.rows_in_spool)),
            (
                "spool size",
                f"{_size(log.spool_bytes)} of {_size(log.spool_capacity_bytes)} ({used:.1f}%)",
            ),
            (
                "spool full",
                "YES: new rows are dropped once memory is full" if log.spool_full else "no",
            ),
            ("oldest spooled row", age),
            ("rows spooled", str(log.rows_spooled)),
            ("rows replayed", str(log.rows_replayed)),
            ("spool directory", log.spool_directory),
        ]
        if log.spool_error:
            figures.append(("spool error", log.spool_error))
    else:
        figures.append(("spool", "none (NUDGE_SPOOL_MAX_BYTES=0)"))
    lines += [f"  {name:<20} {value}" for name, value in figures]
    return "\n".join(lines)


def exit_code(response: status_pb2.GetStatusResponse) -> int:
    """EXIT_FAILING when a component is failing, else EXIT_OK."""
    if any(c.health == status_pb2.HEALTH_FAILING for c in response.components):
        return EXIT_FAILING
    return EXIT_OK


async def _status(args: argparse.Namespace) -> int:
    target = args.target or os.environ.get("NUDGE_TARGET") or DEFAULT_TARGET
    api_key = args.api_key or os.environ.get("NUDGE_API_KEY") or None
    try:
        channel = open_channel(target, tls=TlsOptions.from_env(), api_key=api_key)
    except ValueError as exc:
        print(f"nudge: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    async with channel:
        stub = status_pb2_grpc.StatusServiceStub(channel)
        try:
            response = await stub.GetStatus(status_pb2.GetStatusRequest(), timeout=args.timeout)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            print(
                f"nudge: {target}: {code.name if code else 'error'}: {exc.details()}",
                file=sys.stderr,
            )
            if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                return EXIT_REFUSED
            return EXIT_FAILING
    if args.json:
        doc: dict[str, Any] = json_format.MessageToDict(
            response, always_print_fields_with_no_presence=True
        )
        print(json.dumps(doc, indent=2))
    else:
        print(render(response))
    return exit_code(response)


def add_parser(commands: Any) -> None:
    """Adds `nudge status` to the CLI's subcommands."""
    status = commands.add_parser(
        "status",
        help="a server's status: Redis, PostgreSQL, the decision log and its spool",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument(
        "--target", default=None, help=f"HOST:PORT (default: $NUDGE_TARGET, else {DEFAULT_TARGET})"
    )
    status.add_argument(
        "--api-key", default=None, help="an API key with the admin scope (default: $NUDGE_API_KEY)"
    )
    status.add_argument("--timeout", type=float, default=5.0, help="seconds to wait (default 5)")
    status.add_argument("--json", action="store_true", help="print the answer as JSON")
    status.set_defaults(run=_status)
