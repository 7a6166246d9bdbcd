"""What the running server answers to bytes that are no valid request, to input that must not be
echoed whole, and with answers larger than the requests it accepts."""

from __future__ import annotations

import asyncpg
import grpc
import pytest
from conftest import ServerProcess
from google.protobuf import descriptor_pool, json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from grpc_health.v1 import health_pb2
from nudge.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    decision_pb2,
    decision_pb2_grpc,
    report_pb2,
    report_pb2_grpc,
)
from nudge_server.config import parse_campaign
from nudge_server.config_store import ConfigStore
from nudge_server.server import SERVICE_NAMES

SERVICES = [descriptor_pool.Default().FindServiceByName(name) for name in SERVICE_NAMES]
METHODS = [
    (f"/{service.full_name}/{method.name}", method.input_type)
    for service in SERVICES
    for method in service.methods
]


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def length_delimited(number: int, payload: bytes) -> bytes:
    """One field of wire type 2 (string, bytes or message)."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def bad_utf8(message: Descriptor) -> bytes:
    """A message whose first string field (depth-first) holds bytes that are not UTF-8."""
    for field in message.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            return length_delimited(field.number, b"ok\xff\xfe")
    for field in message.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            inner = bad_utf8(field.message_type)
            if inner:
                return length_delimited(field.number, inner)
    return b""


def deep_properties(levels: int) -> bytes:
    """A DecideRequest whose event properties nest `levels` Structs deep; from 34 levels on
    (372 bytes) protobuf refuses to decode it."""
    value = length_delimited(3, b"x")  # Value.string_value
    struct = b""
    for _ in range(levels):
        entry = length_delimited(1, b"a") + length_delimited(2, value)  # map entry: key, value
        struct = length_delimited(1, entry)  # Struct.fields
        value = length_delimited(5, struct)  # Value.struct_value
    return length_delimited(3, length_delimited(2, struct))  # DecideRequest.event.properties


async def raw_call(
    target: str, method: str, payload: bytes, key: str | None = None
) -> grpc.aio.AioRpcError | bytes:
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(method)  # no serializers: bytes in, bytes out
        metadata = (("authorization", f"Bearer {key}"),) if key else None
        try:
            answer: bytes = await call(payload, timeout=5, metadata=metadata)
            return answer
        except grpc.aio.AioRpcError as exc:
            return exc


def assert_invalid_argument(result: grpc.aio.AioRpcError | bytes, method: str) -> None:
    assert isinstance(result, grpc.aio.AioRpcError), f"{method} answered {result!r}"
    assert result.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, result.details())
    assert f"the request is not a valid message of {method}" in (result.details() or "")


async def test_undecodable_requests_are_invalid_argument_on_every_rpc(
    server: ServerProcess,
) -> None:
    assert len(METHODS) >= 16  # every RPC of every nudge service
    key = await server.key("shop")
    for method, request_type in METHODS:
        for payload in (
            bad_utf8(request_type),
            b"\xff\xff\xff\xff",  # garbage
            length_delimited(1, b"abcdef")[:-3],  # truncated
        ):
            if not payload:  # a message without string fields has no invalid UTF-8
                assert not request_type.fields or method.endswith("/GetStatus"), method
                continue
            assert_invalid_argument(await raw_call(server.target, method, payload, key), method)

    method = "/nudge.v1.DecisionService/Decide"
    payload = deep_properties(34)
    assert len(payload) < 400
    assert_invalid_argument(await raw_call(server.target, method, payload, key), method)
    # The health service is behind the same interceptor.
    method = "/grpc.health.v1.Health/Check"
    assert_invalid_argument(await raw_call(server.target, method, b"\x0a\x01\xff"), method)


async def test_valid_bytes_still_reach_the_servicers(server: ServerProcess) -> None:
    answer = await raw_call(
        server.target,
        "/nudge.v1.AdminService/GetApp",
        admin_pb2.GetAppRequest(app_id="shop").SerializeToString(),
        await server.key("shop"),
    )
    assert isinstance(answer, grpc.aio.AioRpcError)
    assert answer.code() == grpc.StatusCode.NOT_FOUND
    health = await raw_call(
        server.target,
        "/grpc.health.v1.Health/Check",
        health_pb2.HealthCheckRequest().SerializeToString(),
    )
    assert isinstance(health, bytes)
    assert health_pb2.HealthCheckResponse.FromString(health).status == (
        health_pb2.HealthCheckResponse.SERVING
    )


async def status_of(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value


async def test_over_long_input_is_refused_without_being_echoed(server: ServerProcess) -> None:
    long = "a" * 200_000
    async with server.channel("shop") as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        await admin.PutApp(admin_pb2.PutAppRequest(app=admin_pb2.App(app_id="shop")), timeout=5)
        calls = [
            admin.GetApp(admin_pb2.GetAppRequest(app_id=long), timeout=5),
            admin.ListCampaigns(admin_pb2.ListCampaignsRequest(app_id=long), timeout=5),
            admin.GetCampaign(
                admin_pb2.GetCampaignRequest(app_id="shop", campaign_id=long), timeout=5
            ),
        ]
        # An app id that is not the key's is refused before its value is looked at.
        expected = [grpc.StatusCode.PERMISSION_DENIED] * 2 + [grpc.StatusCode.INVALID_ARGUMENT]
        for call, code in zip(calls, expected, strict=True):
            error = await status_of(call)
            assert error.code() == code, error.details()
            assert len(error.details() or "") < 300
        reports = report_pb2_grpc.ReportServiceStub(channel)
        error = await status_of(
            reports.GetArmReport(
                report_pb2.GetArmReportRequest(app_id=long, campaign_id="streak"), timeout=5
            )
        )
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error.details()
        assert len(error.details() or "") < 300
        for request in (
            report_pb2.GetArmReportRequest(app_id="shop", campaign_id=long),
            report_pb2.GetArmReportRequest(app_id="shop", campaign_id="c", segment={long: "x"}),
            report_pb2.GetArmReportRequest(
                app_id="shop", campaign_id="c", segment={"platform": long}
            ),
            report_pb2.GetArmReportRequest(
                app_id="shop", campaign_id="c", segment={"surface": "home\x00"}
            ),
        ):
            error = await status_of(reports.GetArmReport(request, timeout=5))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
            assert len(error.details() or "") < 300

        decide = decision_pb2.DecideRequest(app_id="shop", user_id="u", time_zone="Europe/Berlin")
        decide.event.name = "opened"
        decide.event.properties.fields["k" * 100_000].string_value = "nul\x00"
        error = await status_of(
            decision_pb2_grpc.DecisionServiceStub(channel).Decide(decide, timeout=5)
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert len(error.details() or "") < 300


def big_campaign(campaign_id: str, arm_count: int) -> admin_pb2.Campaign:
    return admin_pb2.Campaign(
        app_id="shop",
        campaign_id=campaign_id,
        trigger_events=["opened"],
        arms=[
            admin_pb2.Arm(
                arm_id=f"arm{i}",
                prompt=decision_pb2.Prompt(title="t" * 200, body="b" * 2000, action_url="u" * 2048),
            )
            for i in range(arm_count)
        ],
    )


async def test_answers_may_be_larger_than_the_requests_the_server_accepts(
    server: ServerProcess,
) -> None:
    async with server.channel("shop") as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        await admin.PutApp(admin_pb2.PutAppRequest(app=admin_pb2.App(app_id="shop")))

        # A campaign of 255 KB fits in a request, but is over the campaign bound: refused, and
        # not stored (it was once stored, and its answer failed with RESOURCE_EXHAUSTED).
        huge = big_campaign("huge", 60)
        assert 240_000 < huge.ByteSize() < 256 * 1024
        error = await status_of(admin.PutCampaign(admin_pb2.PutCampaignRequest(campaign=huge)))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "at most 131072" in (error.details() or "")
        error = await status_of(
            admin.GetCampaign(admin_pb2.GetCampaignRequest(app_id="shop", campaign_id="huge"))
        )
        assert error.code() == grpc.StatusCode.NOT_FOUND

        # Campaigns at the bound: three of them make an answer over 256 KiB.
        for campaign_id in ("a", "b", "c"):
            put = await admin.PutCampaign(
                admin_pb2.PutCampaignRequest(campaign=big_campaign(campaign_id, 29))
            )
            assert len(put.campaign.arms) == 29
        listed = await admin.ListCampaigns(admin_pb2.ListCampaignsRequest(app_id="shop"))
        assert [c.campaign_id for c in listed.campaigns] == ["a", "b", "c"]
        assert listed.ByteSize() > 256 * 1024

        # Two campaigns of 200 KB stored before campaigns were bounded still list.
        pool = await asyncpg.create_pool(server.dsn, min_size=1, max_size=1)
        try:
            store = ConfigStore(pool)
            for campaign_id in ("old1", "old2"):
                doc = big_campaign(campaign_id, 48)
                assert doc.ByteSize() > 200_000
                stored = parse_campaign(
                    json_format.MessageToDict(doc, preserving_proto_field_name=True),
                    max_bytes=None,
                )
                await store.put_campaign(stored)
        finally:
            await pool.close()
        listed = await admin.ListCampaigns(admin_pb2.ListCampaignsRequest(app_id="shop"))
        assert [c.campaign_id for c in listed.campaigns] == ["a", "b", "c", "old1", "old2"]
        got = await admin.GetCampaign(
            admin_pb2.GetCampaignRequest(app_id="shop", campaign_id="old1")
        )
        assert len(got.campaign.arms) == 48
