"""The Python client's TLS options and API key, against an in-process gRPC server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from fakes.keys import TlsFiles, make_tls_files
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from nudge.v1 import decision_pb2, decision_pb2_grpc
from nudge_client import (
    NudgeClient,
    TlsOptions,
    bearer_interceptors,
    bearer_metadata,
    channel_from_env,
    open_channel,
    wait_until_serving,
)
from nudge_server.settings import TlsSettings
from nudge_server.tls import server_credentials


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("pki"))


# --- options -------------------------------------------------------------------------------------


def test_options_refuse_contradictions(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ca_file or ca_pem"):
        TlsOptions(ca_file=tmp_path / "ca.pem", ca_pem=b"x")
    with pytest.raises(ValueError, match="cert_file and key_file"):
        TlsOptions(cert_file=tmp_path / "client.pem")
    with pytest.raises(ValueError, match="cert_file and key_file"):
        TlsOptions(key_file=tmp_path / "client.key")
    with pytest.raises(ValueError, match="server_name_override"):
        TlsOptions(server_name_override="")


def test_options_from_env() -> None:
    assert TlsOptions.from_env({}) is None
    assert TlsOptions.from_env({"NUDGE_TLS_CA": ""}) is None
    assert TlsOptions.from_env({"NUDGE_TLS_CA": "/ca.pem"}) == TlsOptions(ca_file="/ca.pem")
    assert TlsOptions.from_env({"NUDGE_TLS_SERVER_NAME": "nudge.internal"}) == TlsOptions(
        server_name_override="nudge.internal"
    )
    both = {"NUDGE_TLS_CLIENT_CERT": "/c.pem", "NUDGE_TLS_CLIENT_KEY": "/c.key"}
    assert TlsOptions.from_env(both) == TlsOptions(cert_file="/c.pem", key_file="/c.key")
    with pytest.raises(ValueError, match="NUDGE_TLS_CLIENT_CERT and NUDGE_TLS_CLIENT_KEY"):
        TlsOptions.from_env({"NUDGE_TLS_CLIENT_CERT": "/c.pem"})


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "ca.pem"
    with pytest.raises(ValueError, match=f"ca_file: cannot read {missing}"):
        TlsOptions(ca_file=missing).credentials()
    with pytest.raises(ValueError, match="key_file: cannot read"):
        TlsOptions(cert_file=__file__, key_file=missing).credentials()


def test_server_name_override_is_a_channel_option() -> None:
    assert TlsOptions().channel_options() == ()
    assert TlsOptions(server_name_override="localhost").channel_options() == (
        ("grpc.ssl_target_name_override", "localhost"),
    )


@pytest.mark.parametrize("key", ["", " key", "key\n", "a\r\nb: c", "k\0"])
def test_malformed_api_keys_are_refused(key: str) -> None:
    with pytest.raises(ValueError, match="api_key"):
        bearer_metadata(key)
    with pytest.raises(ValueError, match="api_key"):
        NudgeClient("127.0.0.1:1", api_key=key)


def test_bearer_metadata() -> None:
    assert bearer_metadata("nk_abc") == (("authorization", "Bearer nk_abc"),)
    assert len(bearer_interceptors("nk_abc")) == 2


# --- against a server ----------------------------------------------------------------------------


@dataclass
class RecordingDecisions(decision_pb2_grpc.DecisionServiceServicer):  # type: ignore[misc]
    """A DecisionService that remembers the authorization metadata of each call."""

    seen: list[str | None] = field(default_factory=list)

    async def Decide(
        self, request: decision_pb2.DecideRequest, context: grpc.aio.ServicerContext
    ) -> decision_pb2.DecideResponse:
        metadata = dict(context.invocation_metadata() or ())
        self.seen.append(metadata.get("authorization"))
        return decision_pb2.DecideResponse(decision_id="d-1")


async def _echo_stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            yield str(value).encode()


@dataclass
class InProcessServer:
    target: str
    decisions: RecordingDecisions


async def _start(
    credentials: grpc.ServerCredentials | None,
) -> tuple[grpc.aio.Server, InProcessServer]:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    decisions = RecordingDecisions()
    decision_pb2_grpc.add_DecisionServiceServicer_to_server(decisions, server)
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "test.Echo", {"Stream": grpc.unary_stream_rpc_method_handler(_echo_stream)}
            ),
        )
    )
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    return server, InProcessServer(f"127.0.0.1:{port}", decisions)


@pytest.fixture
async def plain_server() -> AsyncIterator[InProcessServer]:
    server, handle = await _start(None)
    try:
        yield handle
    finally:
        await server.stop(None)


@pytest.fixture
async def tls_server(tls_files: TlsFiles) -> AsyncIterator[InProcessServer]:
    settings = TlsSettings(tls_files.server_cert, tls_files.server_key)
    server, handle = await _start(server_credentials(settings))
    try:
        yield handle
    finally:
        await server.stop(None)


async def _decide(client: NudgeClient) -> None:
    await client.decide("app", "user-1", "opened", time_zone="UTC", timeout_s=5)


async def test_api_key_rides_on_every_call_raw_stubs_included(
    plain_server: InProcessServer,
) -> None:
    async with NudgeClient(plain_server.target, api_key="nk_secret") as client:
        await _decide(client)
        await client.decisions.Decide(
            decision_pb2.DecideRequest(app_id="app", user_id="u"), timeout=5
        )
        # A call that brings its own authorization keeps it.
        await client.decisions.Decide(
            decision_pb2.DecideRequest(app_id="app", user_id="u"),
            timeout=5,
            metadata=(("authorization", "Bearer other"),),
        )
    async with NudgeClient(plain_server.target) as client:
        await _decide(client)
    assert plain_server.decisions.seen == [
        "Bearer nk_secret",
        "Bearer nk_secret",
        "Bearer other",
        None,
    ]


async def test_bearer_interceptors_cover_unary_stream_calls(
    plain_server: InProcessServer,
) -> None:
    async with grpc.aio.insecure_channel(
        plain_server.target, interceptors=bearer_interceptors("nk_stream")
    ) as channel:
        call: Any = channel.unary_stream("/test.Echo/Stream")(b"", timeout=5)
        assert [item async for item in call] == [b"Bearer nk_stream"]


async def test_channel_from_env_carries_tls_and_the_key(
    tls_server: InProcessServer, tls_files: TlsFiles
) -> None:
    env = {"NUDGE_TLS_CA": str(tls_files.ca), "NUDGE_API_KEY": "nk_env"}
    async with channel_from_env(tls_server.target, env) as channel:
        stub = decision_pb2_grpc.DecisionServiceStub(channel)
        await stub.Decide(decision_pb2.DecideRequest(app_id="app"), timeout=5)
    async with NudgeClient.from_env(tls_server.target, timeout_s=5, env=env) as client:
        await _decide(client)
    assert tls_server.decisions.seen == ["Bearer nk_env", "Bearer nk_env"]


async def test_tls_with_the_right_roots(tls_server: InProcessServer, tls_files: TlsFiles) -> None:
    for tls in (TlsOptions(ca_file=tls_files.ca), TlsOptions(ca_pem=tls_files.ca.read_bytes())):
        async with NudgeClient(tls_server.target, tls=tls, timeout_s=5) as client:
            await _decide(client)
    assert len(tls_server.decisions.seen) == 2


async def _fails_to_connect(target: str, tls: bool | TlsOptions) -> grpc.StatusCode:
    async with NudgeClient(target, tls=tls, timeout_s=5) as client:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await _decide(client)
    code: grpc.StatusCode = failure.value.code()
    return code


async def test_tls_refuses_a_server_it_does_not_trust(
    tls_server: InProcessServer, tls_files: TlsFiles
) -> None:
    # Another CA, the default roots, and plaintext against TLS all fail; nothing reached Decide.
    assert (
        await _fails_to_connect(tls_server.target, TlsOptions(ca_file=tls_files.other_ca))
        == grpc.StatusCode.UNAVAILABLE
    )
    assert await _fails_to_connect(tls_server.target, True) == grpc.StatusCode.UNAVAILABLE
    assert await _fails_to_connect(tls_server.target, False) == grpc.StatusCode.UNAVAILABLE
    assert tls_server.decisions.seen == []


async def test_server_name_override(tls_server: InProcessServer, tls_files: TlsFiles) -> None:
    port = tls_server.target.rpartition(":")[2]
    # The certificate names 127.0.0.1 and localhost: "localhost" is a name it carries...
    named = TlsOptions(ca_file=tls_files.ca, server_name_override="localhost")
    async with NudgeClient(f"127.0.0.1:{port}", tls=named, timeout_s=5) as client:
        await _decide(client)
    # ...and another name is refused although the CA is right.
    wrong = TlsOptions(ca_file=tls_files.ca, server_name_override="nudge.example")
    assert await _fails_to_connect(tls_server.target, wrong) == grpc.StatusCode.UNAVAILABLE
    assert len(tls_server.decisions.seen) == 1


async def test_wait_until_serving_over_tls(
    tls_server: InProcessServer, tls_files: TlsFiles
) -> None:
    # In a thread: it blocks, and the server answers on this event loop.
    tls = TlsOptions(ca_file=tls_files.ca)
    await asyncio.to_thread(wait_until_serving, tls_server.target, 5, tls=tls)
    with pytest.raises(TimeoutError, match="UNAVAILABLE"):
        await asyncio.to_thread(wait_until_serving, tls_server.target, 0.5)


async def test_health_over_open_channel(plain_server: InProcessServer) -> None:
    async with open_channel(plain_server.target, api_key="nk_x") as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
