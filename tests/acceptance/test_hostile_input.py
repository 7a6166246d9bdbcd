"""Hostile input against one running server (issue 5, item 7).

hypothesis draws requests for every RPC of the nudge services, built from their descriptors:
each field gets either a plausible value (so that calls get past the first check and reach the
stores) or a hostile one: text with NUL and other control characters, random unicode, huge
strings, odd time zones, huge maps and repeated fields, int32/int64 limits, NaN and infinities,
negative and huge durations, timestamps outside their range, unknown enum values. Some calls
carry random raw bytes instead of a message, a valid message cut short or with junk appended,
more than NUDGE_MAX_MESSAGE_BYTES, or a bad `authorization` header and random metadata.

Properties, per call: the server never answers INTERNAL, UNKNOWN or DATA_LOSS, answers within
the call's deadline, and is still running; a call without a valid key never succeeds. After the
run: the server is healthy and stops cleanly; the rows of apps, campaigns, decisions, devices
and api_keys in PostgreSQL are exactly those of the calls that were answered OK; Redis holds
keys only of users (and campaigns) whose calls were accepted; the log holds no traceback.

hypothesis runs in a worker thread (its test function is synchronous); each example is sent on
the test's event loop with `run_coroutine_threadsafe`, so one server serves the whole run.
`derandomize=True` makes every run draw the same examples: a failure is reproduced by running
the test again, and hypothesis prints the shrunk falsifying call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import json
import math
import pkgutil
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import grpc
import nudge.v1
import pytest
import redis.asyncio as aioredis
from conftest import ServerProcess
from google.protobuf import message_factory, text_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from nudge.v1 import admin_pb2, decision_pb2, report_pb2
from nudge_server import keys
from nudge_server.api_keys import parse_token
from nudge_server.auth import RULES

# --- what is under test --------------------------------------------------------------------------


def _services() -> list[Any]:
    """Every service of the nudge.v1 package, from its generated modules."""
    found = []
    for module in pkgutil.iter_modules(nudge.v1.__path__):
        if module.name.endswith("_pb2"):
            descriptor = importlib.import_module(f"nudge.v1.{module.name}").DESCRIPTOR
            found.extend(descriptor.services_by_name.values())
    return sorted(found, key=lambda s: s.full_name)


@dataclass(frozen=True)
class Rpc:
    """One unary RPC: its path and its request and response classes."""

    path: str
    name: str
    request: type[Message]
    response: type[Message]

    @classmethod
    def of(cls, method: MethodDescriptor) -> Rpc:
        return cls(
            f"/{method.containing_service.full_name}/{method.name}",
            method.name,
            message_factory.GetMessageClass(method.input_type),
            message_factory.GetMessageClass(method.output_type),
        )


RPCS = [Rpc.of(method) for service in _services() for method in service.methods]
BY_NAME = {rpc.name: rpc for rpc in RPCS}
#: Examples per RPC; reports are computed in a child process and cost more.
EXAMPLES = 150
FEWER_EXAMPLES = {"GetArmReport": 100}
RAW_EXAMPLES = 150
METADATA_EXAMPLES = 150
#: Chances (in %) that a field is hostile, one drawn per request.
HOSTILITY = [0, 2, 5, 15, 40, 100]
CALL_TIMEOUT_S = 20.0

FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}
APP = "fuzz"
OTHER_APP = "other"
USERS = ["u0", "u1", "u2"]
CAMPAIGNS = ["c1", "c2"]
EVENT = "opened"
MAX_MESSAGE_BYTES = 262_144

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT32 = (0, 2**32 - 1)
UINT64 = (0, 2**64 - 1)
TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)
DURATION_SECONDS = 315_576_000_000
NOW = int(time.time())
YEAR = 365 * 86400

# --- hostile values ------------------------------------------------------------------------------

CONTROL = (
    "".join(map(chr, [*range(32), 127, *range(0x80, 0xA0)])) + "\u2028\u2029\u200b\ufeff\u202e"
)
ODD_TEXT = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\t\n\r",
    "../../etc/passwd",
    "'; DROP TABLE decisions; --",
    "%s%n%x",
    "{user}",
    "{{}}",
    "\\",
    "null",
    "NaN",
    "nk_",
    "\U0001f600" * 65,
    "e\u0301" * 40,
    "\u202eevil",
    "a" * 64,
    "a" * 65,
    "x" * 129,
]
ODD_ZONES = [
    "",
    "UTC+5",
    "../../etc/passwd",
    "Europe/Berlin\x00",
    "europe/berlin",
    " Europe/Berlin",
    "Europe/Berlin ",
    "/usr/share/zoneinfo/UTC",
    "Europe//Berlin",
    "Europe/Berlin/..",
    "Europe",
    "UTC\n",
    "+05:00",
    "Z",
    "localtime",
    "posixrules",
    "Factory",
    "right/UTC",
    "posix/Europe/Berlin",
    "EST5EDT",
    "Etc/GMT+12",
    "Etc/GMT-14",
    "Antarctica/Troll",
    "Pacific/Kiritimati",
    "Pacific/Chatham",
    "Australia/Lord_Howe",
    "Africa/Casablanca",
    "America/Santiago",
]
ZONES = ["Europe/Berlin", "UTC", "America/New_York", "Asia/Kathmandu", "Pacific/Apia"]
HUGE_LENGTHS = [65, 129, 257, 2049, 4097, 70_000, MAX_MESSAGE_BYTES + 1]
HUGE_COUNTS = [100, 1_000, 5_000, 30_000]
#: About the largest request drawn: several times what the server accepts.
HUGE_BYTES = 1_000_000

_any_char = st.characters(codec="utf-8")  # every code point but the surrogates


def _repeat(seed: str, length: int) -> str:
    return (seed * (length // len(seed) + 1))[:length]


hostile_text: st.SearchStrategy[str] = st.one_of(
    st.sampled_from(ODD_TEXT),
    st.text(_any_char, max_size=40),
    st.text(st.sampled_from(CONTROL + "aZ09_-.:/ "), min_size=1, max_size=20),
    st.builds(_repeat, st.text(_any_char, min_size=1, max_size=3), st.sampled_from(HUGE_LENGTHS)),
    st.sampled_from(ODD_ZONES),
)
EDGE_DOUBLES = [
    math.nan,
    math.inf,
    -math.inf,
    -0.0,
    5e-324,
    1e308,
    -1e308,
    -1.0,
    0.0099999,
    0.5000001,
    10.000001,
    2.0**63,
]
hostile_double = st.one_of(st.sampled_from(EDGE_DOUBLES), st.floats())


def hostile_int(lo: int, hi: int) -> st.SearchStrategy[int]:
    edges = [lo, hi, 0, -1, 1, 1000, 1001, 10**6, 10**6 + 1, hi - 1, lo + 1]
    return st.one_of(st.sampled_from([e for e in edges if lo <= e <= hi]), st.integers(lo, hi))


INT_RANGES = {
    FieldDescriptor.TYPE_INT32: INT32,
    FieldDescriptor.TYPE_SINT32: INT32,
    FieldDescriptor.TYPE_SFIXED32: INT32,
    FieldDescriptor.TYPE_INT64: INT64,
    FieldDescriptor.TYPE_SINT64: INT64,
    FieldDescriptor.TYPE_SFIXED64: INT64,
    FieldDescriptor.TYPE_UINT32: UINT32,
    FieldDescriptor.TYPE_FIXED32: UINT32,
    FieldDescriptor.TYPE_UINT64: UINT64,
    FieldDescriptor.TYPE_FIXED64: UINT64,
}
DOUBLES = (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT)


def hostile_enum(field: FieldDescriptor) -> st.SearchStrategy[int]:
    known = [value.number for value in field.enum_type.values]
    return st.sampled_from([*known, max(known) + 1, -1, 99, *INT32])


hostile_timestamp = st.tuples(
    st.one_of(
        st.sampled_from(
            [
                TIMESTAMP_SECONDS[0] - 1,
                TIMESTAMP_SECONDS[0],
                TIMESTAMP_SECONDS[1],
                TIMESTAMP_SECONDS[1] + 1,
                *INT64,
                0,
                -1,
                NOW - 10 * YEAR - 86400,
                NOW + 10 * YEAR + 86400,
                NOW - 9 * YEAR,
                NOW + 9 * YEAR,
            ]
        ),
        st.integers(*INT64),
        st.integers(NOW - 10 * YEAR, NOW + 10 * YEAR),  # valid, far from now
    ),
    # Mostly valid nanos, so that the seconds are what is tried.
    st.sampled_from([0, 0, 0, 999_999_999, -1, 10**9, *INT32]),
)
hostile_duration = st.tuples(
    st.one_of(
        st.sampled_from(
            [
                -1,
                *INT64,
                DURATION_SECONDS,
                DURATION_SECONDS + 1,
                3650 * 86400,
                3650 * 86400 + 1,
                10**10,
            ]
        ),
        st.integers(*INT64),
        st.integers(0, 3650 * 86400),
    ),
    st.sampled_from([0, 0, 0, 1, -1, 999_999_999, -999_999_999, 10**9, *INT32]),
)
json_scalar = st.one_of(st.none(), st.booleans(), hostile_double, hostile_text)
hostile_json: st.SearchStrategy[Any] = st.recursive(
    json_scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(hostile_text, inner, max_size=4)
    ),
    max_leaves=12,
)


def _nested(levels: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"leaf": "x"}
    for _ in range(levels):
        doc = {"a": doc}
    return doc


def _wide(key: str, value: Any, count: int) -> dict[str, Any]:
    """`count` keys like `key` (fewer when they would pass HUGE_BYTES), all with `value`."""
    count = min(count, max(3, HUGE_BYTES // (len(key) + len(str(value)) + 1)))
    return {f"{key}{i}": value for i in range(count)}


hostile_properties = st.one_of(
    st.dictionaries(hostile_text, hostile_json, max_size=6),
    st.builds(_nested, st.sampled_from([7, 8, 9, 30, 60])),
    st.builds(_wide, hostile_text, json_scalar, st.sampled_from(HUGE_COUNTS)),
)

# --- plausible values: what a well-behaved caller sends -------------------------------------------


@dataclass
class World:
    """What the setup made, for plausible references to it."""

    decision_ids: list[str] = field(default_factory=list)
    #: The user of each of decision_ids.
    owners: dict[str, str] = field(default_factory=dict)
    revocable_key_id: str = ""
    strings: dict[str, st.SearchStrategy[str]] = field(default_factory=dict)


def plausible_strings(world: World) -> dict[str, st.SearchStrategy[str]]:
    """Plausible values of string fields, by `Message.field` or by field name."""
    apns = st.text("0123456789abcdef", min_size=64, max_size=64)
    fcm = st.from_regex(r"[A-Za-z0-9_:.-]{16,40}", fullmatch=True)
    ids = st.sampled_from(["a0", "a1", "a2"])
    return {
        "app_id": st.sampled_from([APP] * 8 + [OTHER_APP, ""]),
        "user_id": st.sampled_from([*USERS, "u3", "user with spaces", "\u00fcser"]),
        "nudge.v1.ReportOutcomeRequest.user_id": st.sampled_from(USERS),
        # Not the users of the setup's decisions: ReportOutcome needs them.
        "nudge.v1.DeleteUserRequest.user_id": st.sampled_from(["u3", "\u00fcser"]),
        "time_zone": st.sampled_from(ZONES),
        "nudge.v1.Event.name": st.sampled_from([EVENT, EVENT, "closed"]),
        "decision_id": st.sampled_from(world.decision_ids or [str(uuid.uuid4())]),
        "campaign_id": st.sampled_from([*CAMPAIGNS, "c3", "new-1"]),
        "arm_id": ids,
        "control_arm_id": st.sampled_from(["", "a0"]),
        "token": st.one_of(apns, fcm),
        "key_id": st.sampled_from([world.revocable_key_id, "0123456789abcdef"]),
        "trigger_events": st.sampled_from([EVENT, "closed"]),
        "quiet_hours_start": st.sampled_from(["", "22:00", "00:00", "23:59"]),
        "quiet_hours_end": st.sampled_from(["", "08:00", "22:00"]),
        "locale": st.sampled_from(["", "de-DE", "en"]),
        "surface": st.sampled_from(["", "home_banner"]),
        "client_request_id": st.sampled_from(["", "", "r1", "r2"]),
        "nudge.v1.GetArmReportRequest.segment": st.sampled_from(
            ["platform", "locale", "surface", "time_zone", "requested_channel"]
        ),
        "nudge.v1.GetArmReportRequest.SegmentEntry.value": st.sampled_from(
            ["ios", "in_app", "push", "de-DE", "Europe/Berlin", "home_banner"]
        ),
        "nudge.v1.ThrottlePolicy.channel_daily_caps": st.sampled_from(["in_app", "push", "email"]),
    }


PLAUSIBLE_NUMBERS: dict[str, st.SearchStrategy[float]] = {
    "backoff_factor": st.sampled_from([0.0, 1.0, 2.0, 3.5]),
    "holdout_share": st.sampled_from([0.0, 0.1, 0.5]),
    "exploration_floor": st.sampled_from([0.0, 0.05, 0.2]),
    "value": st.sampled_from([0.0, 1.5, 100.0]),
}
#: Plausible values of enum fields where only some of the defined ones are valid.
PLAUSIBLE_ENUMS: dict[str, dict[str, list[int]]] = {
    "nudge.v1.RegisterDeviceRequest": {"platform": [1, 2]},
    "nudge.v1.UnregisterDeviceRequest": {"platform": [1, 2]},
    "nudge.v1.ReportOutcomeRequest": {"type": [1, 2, 3, 4]},
}
plausible_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12)
plausible_properties = st.dictionaries(
    st.sampled_from(["plan", "n", "ok", "tags"]),
    st.one_of(plausible_text, st.floats(-1e6, 1e6), st.booleans(), st.lists(plausible_text)),
    max_size=3,
)
#: After the setup's decisions (so that outcomes may follow them), not in the future.
plausible_timestamp = st.tuples(st.integers(NOW - 3600, NOW), st.just(0))
plausible_duration = st.tuples(st.sampled_from([0, 60, 3600, 86400]), st.just(0))

# --- messages from descriptors --------------------------------------------------------------------

MAX_DEPTH = 4
SPECIAL = ("google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.Struct")


@dataclass
class Drawer:
    """Draws field values: hostile ones with probability `level` %, plausible otherwise.
    One map or repeated field per request may be huge, up to about HUGE_BYTES."""

    draw: Callable[[st.SearchStrategy[Any]], Any]
    level: int
    strings: dict[str, st.SearchStrategy[str]]
    huge_left: int = 1

    def hostile(self) -> bool:
        return bool(self.level and self.draw(st.integers(0, 99)) < self.level)

    def string(self, owner: Descriptor, field: FieldDescriptor) -> str:
        if self.hostile():
            return str(self.draw(hostile_text))
        plausible = self.strings.get(f"{owner.full_name}.{field.name}")
        if plausible is None:
            plausible = self.strings.get(field.name, plausible_text)
        return str(self.draw(plausible))

    def scalar(self, owner: Descriptor, field: FieldDescriptor) -> Any:
        kind = field.type
        if kind == FieldDescriptor.TYPE_STRING:
            return self.string(owner, field)
        if kind == FieldDescriptor.TYPE_BYTES:
            return self.draw(st.binary(max_size=64))
        if kind == FieldDescriptor.TYPE_BOOL:
            return self.draw(st.booleans())
        if kind == FieldDescriptor.TYPE_ENUM:
            if self.hostile():
                return self.draw(hostile_enum(field))
            known = [v.number for v in field.enum_type.values]
            return self.draw(
                st.sampled_from(PLAUSIBLE_ENUMS.get(owner.full_name, {}).get(field.name, known))
            )
        if kind in DOUBLES:
            if self.hostile():
                return self.draw(hostile_double)
            return self.draw(PLAUSIBLE_NUMBERS.get(field.name, st.sampled_from([0.0, 0.5, 1.0])))
        lo, hi = INT_RANGES[kind]
        if self.hostile():
            return self.draw(hostile_int(lo, hi))
        return self.draw(st.integers(max(lo, -1), 5))

    def fill(self, message: Message, depth: int = 0) -> None:
        """Sets (some of) the fields of `message`, recursively."""
        descriptor = message.DESCRIPTOR
        name = descriptor.full_name
        if name in SPECIAL:
            self._special(message, name)
            return
        for f in descriptor.fields:
            if self.draw(st.integers(0, 15)) == 15:  # now and then a field is left unset
                continue
            target = getattr(message, f.name)
            if f.message_type is not None and f.message_type.GetOptions().map_entry:
                self._map(descriptor, f, target, depth)
            elif f.is_repeated:
                self._repeated(descriptor, f, target, depth)
            elif f.message_type is not None:
                if depth < MAX_DEPTH:
                    self.fill(target, depth + 1)
                    if not target.ListFields():
                        target.SetInParent()
            else:
                setattr(message, f.name, self.scalar(descriptor, f))

    def _special(self, message: Any, name: str) -> None:
        if name == "google.protobuf.Struct":
            doc = self.draw(hostile_properties if self.hostile() else plausible_properties)
            message.update(doc)
            return
        timestamp = name == "google.protobuf.Timestamp"
        if self.hostile():
            seconds, nanos = self.draw(hostile_timestamp if timestamp else hostile_duration)
        else:
            seconds, nanos = self.draw(plausible_timestamp if timestamp else plausible_duration)
        message.seconds, message.nanos = seconds, nanos

    def _count(self) -> tuple[int, bool]:
        """How many entries a map or repeated field gets, and whether that is hostile."""
        if not self.hostile():
            return int(self.draw(st.integers(1, 3))), False
        count = int(self.draw(st.sampled_from([0, 1, 7, *(HUGE_COUNTS * self.huge_left)])))
        if count in HUGE_COUNTS:
            self.huge_left = 0
        return count, True

    @staticmethod
    def _capped(count: int, element_bytes: int) -> int:
        return min(count, max(3, HUGE_BYTES // max(1, element_bytes)))

    def _repeated(self, owner: Descriptor, f: FieldDescriptor, target: Any, depth: int) -> None:
        count, hostile = self._count()
        if f.message_type is not None:
            if depth >= MAX_DEPTH:
                return
            # A few drawn elements; a huge count repeats the last one.
            drawn = []
            for _ in range(min(count, 3)):
                element = message_factory.GetMessageClass(f.message_type)()
                self.fill(element, depth + 1)
                drawn.append(element)
            count = self._capped(count, max((e.ByteSize() for e in drawn), default=0))
            for i in range(count):
                target.add().CopyFrom(drawn[min(i, len(drawn) - 1)])
            return
        values = [self.scalar(owner, f) for _ in range(min(count, 3))]
        if not hostile:  # a plausible list names each thing once
            values = list(dict.fromkeys(values))
            count = len(values)
        count = self._capped(count, max((len(str(v)) for v in values), default=0))
        for i in range(count):
            value = values[min(i, len(values) - 1)]
            # Distinct strings beyond the drawn ones, so that huge lists are not all duplicates.
            target.append(f"{value}{i}" if isinstance(value, str) and i >= len(values) else value)

    def _map(self, owner: Descriptor, f: FieldDescriptor, target: Any, depth: int) -> None:
        key_field = f.message_type.fields_by_name["key"]
        value_field = f.message_type.fields_by_name["value"]
        plausible_keys = self.strings.get(f"{owner.full_name}.{f.name}", plausible_text)
        key: Any = None
        value: Any = None
        count = self._count()[0] if self.hostile() else int(self.draw(st.integers(0, 2)))
        for i in range(count):
            if i == 3:
                count = self._capped(count, len(str(key)) + len(str(value)))
            if i >= count:
                break
            if i < 3:  # drawn entries
                if key_field.type != FieldDescriptor.TYPE_STRING:
                    key = self.scalar(f.message_type, key_field)
                else:
                    key = self.draw(hostile_text if self.hostile() else plausible_keys)
                if value_field.message_type is None:
                    value = self.scalar(f.message_type, value_field)
                elif depth < MAX_DEPTH:
                    self.fill(target[key], depth + 1)
            if i >= 3:  # a huge map: more keys like the last one drawn, the same value
                extra: Any = f"{key}{i}" if isinstance(key, str) else i
                if value_field.message_type is not None:
                    target[extra].SetInParent()
                else:
                    target[extra] = value
            elif value_field.message_type is None:
                target[key] = value


def cohere(request: Message, world: World) -> None:
    """Makes fields that depend on each other agree, as a well-behaved caller's do (half of the
    requests go through here): an outcome names the decision's own user, a report's range is
    not reversed."""
    if isinstance(request, decision_pb2.ReportOutcomeRequest):
        request.user_id = world.owners.get(request.decision_id, request.user_id)
    elif isinstance(request, report_pb2.GetArmReportRequest):
        start, end = request.start_time, request.end_time
        if (
            request.HasField("start_time")
            and request.HasField("end_time")
            and start.seconds > end.seconds
        ):
            start.seconds, end.seconds = end.seconds, start.seconds


@dataclass
class Call:
    """One call: the bytes sent, the key it carries (or a hostile one), extra metadata."""

    rpc: Rpc
    payload: bytes
    auth: str  # "app", "other", "decide-only" or "bad"
    metadata: tuple[tuple[str, str | bytes], ...]
    request: Message | None  # None when the payload is not a serialized request

    def __repr__(self) -> str:
        shown = (
            text_format.MessageToString(self.request, as_one_line=True)
            if self.request is not None
            else repr(self.payload[:300])
        )
        if len(shown) > 1500:
            shown = f"{shown[:1500]}... ({len(self.payload)} bytes)"
        metadata = [(k, v if len(v) < 100 else v[:100]) for k, v in self.metadata]
        return f"Call({self.rpc.path}, auth={self.auth}, metadata={metadata!r}, {shown})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """How hypothesis prints a falsifying call: short, never the whole payload."""
        printer.text(repr(self))


@dataclass(frozen=True)
class Keys:
    """The API keys of the run."""

    app: str
    other: str
    decide_only: str


def bad_authorization(keys_: Keys) -> st.SearchStrategy[list[tuple[str, str | bytes]]]:
    """Metadata whose `authorization` is missing, malformed, unknown or a near miss."""
    printable = st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=80)
    key_id, _secret = parse_token(keys_.app) or ("", "")
    forged = st.builds(
        lambda hex_id, secret: f"nk_{hex_id}_{secret}",
        st.text("0123456789abcdef", min_size=16, max_size=16),
        st.from_regex(r"[A-Za-z0-9_-]{43}", fullmatch=True),
    )
    near_miss = st.builds(
        lambda secret: f"nk_{key_id}_{secret}", st.from_regex(r"[A-Za-z0-9_-]{43}", fullmatch=True)
    )
    value = st.one_of(
        st.builds(lambda v: f"Bearer {v}", st.one_of(printable, forged, near_miss)),
        st.sampled_from(
            [
                "",
                "Bearer",
                "Bearer ",
                f"Basic {keys_.app}",
                f"Bearer {keys_.app}x",
                f"Bearer {keys_.app[:-1]}",
                f"Bearer{keys_.app}",
                f"Token {keys_.app}",
                keys_.app,
            ]
        ),
        printable,
    )
    return st.one_of(
        st.just([]),
        st.builds(lambda v: [("authorization", v)], value),
        st.just([("authorization-bin", keys_.app.encode())]),
        st.builds(lambda v: [("x-authorization", f"Bearer {v}")], st.just(keys_.app)),
    )


extra_metadata = st.lists(
    st.one_of(
        st.tuples(
            st.from_regex(r"[a-z0-9_.-]{1,24}", fullmatch=True).filter(
                lambda k: not k.startswith("grpc-") and not k.endswith("-bin")
            ),
            st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=200),
        ),
        st.tuples(
            st.from_regex(r"[a-z0-9_.-]{1,20}-bin", fullmatch=True).filter(
                lambda k: not k.startswith("grpc-")
            ),
            st.binary(max_size=200),
        ),
    ),
    max_size=4,
)


@st.composite
def calls(
    draw: Callable[[st.SearchStrategy[Any]], Any],
    rpc: Rpc,
    keys_: Keys,
    world: World,
    *,
    mangle: bool = False,
    hostile_metadata: bool = False,
) -> Call:
    """A call of `rpc`; `mangle` sends bytes that are not (only) a request, `hostile_metadata` a
    bad key and random metadata."""
    # Many requests are all plausible but one or two fields, so that they reach the stores.
    level = draw(st.sampled_from(HOSTILITY))
    request = rpc.request()
    Drawer(draw, level, world.strings).fill(request)
    if draw(st.booleans()):
        cohere(request, world)
    payload = request.SerializeToString()
    kept: Message | None = request
    if mangle:
        how = draw(st.sampled_from(["raw", "truncated", "appended", "oversized"]))
        kept = None
        if how == "raw":
            payload = draw(st.binary(max_size=600))
        elif how == "truncated" and payload:
            payload = payload[: draw(st.integers(0, len(payload) - 1))]
        elif how == "appended":
            payload += draw(st.binary(min_size=1, max_size=40))
        else:
            filler = draw(st.sampled_from([b"\x00", b"\xff", b"\x0a\x05hello"]))
            payload += filler * (MAX_MESSAGE_BYTES // len(filler) + 1)
    auth = "app"
    metadata: list[tuple[str, str | bytes]]
    if hostile_metadata:
        auth = draw(st.sampled_from(["bad", "bad", "other", "decide-only", "app"]))
        if auth == "bad":
            metadata = draw(bad_authorization(keys_))
        else:
            token = {"app": keys_.app, "other": keys_.other, "decide-only": keys_.decide_only}
            metadata = [("authorization", f"Bearer {token[auth]}")]
        metadata += draw(extra_metadata)
    else:
        metadata = [("authorization", f"Bearer {keys_.app}")]
    return Call(rpc, payload, auth, tuple(metadata), kept)


# --- what was accepted ---------------------------------------------------------------------------


@dataclass
class Ledger:
    """Everything the server said yes to, and the answers it gave."""

    apps: set[str] = field(default_factory=set)
    campaigns: set[tuple[str, str]] = field(default_factory=set)
    decisions: set[str] = field(default_factory=set)
    devices: dict[tuple[int, str], tuple[str, str]] = field(default_factory=dict)
    key_ids: set[str] = field(default_factory=set)
    #: (app, user) of accepted calls that may write the user's Redis state.
    users_accepted: set[tuple[str, str]] = field(default_factory=set)
    users_refused: set[tuple[str, str]] = field(default_factory=set)
    codes: Counter[tuple[str, str]] = field(default_factory=Counter)

    def record(self, call: Call, code: grpc.StatusCode, answer: bytes | None) -> None:
        name = call.rpc.name
        self.codes[(name, code.name)] += 1
        if answer is None:
            if call.request is not None and "user_id" in call.request.DESCRIPTOR.fields_by_name:
                request: Any = call.request
                self.users_refused.add((request.app_id, request.user_id))
            return
        # What the server read: for a mangled call, not the message it was made from.
        request = call.rpc.request.FromString(call.payload)
        response: Any = call.rpc.response.FromString(answer)
        if name == "PutApp":
            self.apps.add(response.app.app_id)
        elif name == "PutCampaign":
            self.campaigns.add((response.campaign.app_id, response.campaign.campaign_id))
        elif name == "Decide":
            self.decisions.add(response.decision_id)
        elif name == "RegisterDevice":
            device = response.device
            self.devices[(device.platform, device.token)] = (device.app_id, device.user_id)
        elif name == "CreateKey":
            self.key_ids.add(response.api_key.key_id)
        elif name == "DeleteUser":
            erased = (request.app_id, request.user_id)
            self.devices = {k: v for k, v in self.devices.items() if v != erased}
        if name in ("Decide", "ReportOutcome"):
            self.users_accepted.add((request.app_id, request.user_id))

    def summary(self) -> str:
        lines = []
        for rpc in RPCS:
            counts = {code: n for (name, code), n in self.codes.items() if name == rpc.name}
            lines.append(f"{rpc.name:18} {dict(sorted(counts.items()))}")
        return "\n".join(lines)


async def send(channel: grpc.aio.Channel, call: Call) -> tuple[grpc.StatusCode, bytes | None, str]:
    """The call's status code, its answer (OK only) and its details."""
    stub = channel.unary_unary(call.rpc.path)  # no serializers: bytes in, bytes out
    try:
        answer: bytes = await stub(call.payload, metadata=call.metadata, timeout=CALL_TIMEOUT_S)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), None, exc.details() or ""
    return grpc.StatusCode.OK, answer, ""


# --- the run -------------------------------------------------------------------------------------


@pytest.fixture
def server_env() -> dict[str, str]:
    """No request rate limit: the run sends thousands of calls of one app at once."""
    return {"NUDGE_APP_RATE": "inf", "NUDGE_MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES)}


class Runner:
    """Sends calls from hypothesis's thread on the test's event loop, and checks each answer."""

    def __init__(
        self,
        server: ServerProcess,
        channel: grpc.aio.Channel,
        ledger: Ledger,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.server = server
        self.channel = channel
        self.ledger = ledger
        self.loop = loop

    async def call(self, call: Call) -> tuple[grpc.StatusCode, bytes | None, str]:
        code, answer, details = await send(self.channel, call)
        self.ledger.record(call, code, answer)
        return code, answer, details

    def check(self, call: Call) -> None:
        future = asyncio.run_coroutine_threadsafe(self.call(call), self.loop)
        code, _answer, details = future.result(CALL_TIMEOUT_S + 10)
        note(f"answer: {code.name} {details[:300]!r}")
        assert self.server.process.poll() is None, "the server died:\n" + self.server.log_tail()
        assert code not in FORBIDDEN, (code, details)
        assert code != grpc.StatusCode.DEADLINE_EXCEEDED, "no answer within the deadline"
        # A message over the size limit is refused before its key is looked at.
        if len(call.payload) > MAX_MESSAGE_BYTES:
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, details)
        if call.auth == "bad" and code != grpc.StatusCode.RESOURCE_EXHAUSTED:
            assert code == grpc.StatusCode.UNAUTHENTICATED, (code, details)
        if call.auth == "decide-only" and RULES[call.rpc.path].scope != "decide":
            assert code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.RESOURCE_EXHAUSTED)

    def run(self, strategy: st.SearchStrategy[Call], examples: int) -> None:
        """Runs hypothesis over `strategy` (in the calling thread)."""

        @settings(
            max_examples=examples,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[
                HealthCheck.too_slow,
                HealthCheck.data_too_large,
                HealthCheck.large_base_example,
            ],
        )
        @given(strategy)
        def every_answer_is_sane(call: Call) -> None:
            self.check(call)

        every_answer_is_sane()


async def prepare(runner: Runner, world: World, keys_: Keys) -> None:
    """An app with a policy, two campaigns, decisions of three users (logged), a device."""

    async def ok(rpc: str, request: Message) -> bytes:
        call = Call(
            BY_NAME[rpc],
            request.SerializeToString(),
            "app",
            (("authorization", f"Bearer {keys_.app}"),),
            request,
        )
        code, answer, details = await runner.call(call)
        assert code == grpc.StatusCode.OK and answer is not None, (rpc, code, details)
        return answer

    await ok("PutApp", admin_pb2.PutAppRequest(app=admin_pb2.App(app_id=APP)))
    for campaign_id, channel in zip(
        CAMPAIGNS, (decision_pb2.CHANNEL_IN_APP, decision_pb2.CHANNEL_PUSH), strict=True
    ):
        campaign = admin_pb2.Campaign(
            app_id=APP,
            campaign_id=campaign_id,
            trigger_events=[EVENT],
            channel=channel,
            arms=[
                admin_pb2.Arm(arm_id=f"a{i}", prompt=decision_pb2.Prompt(title=f"Hi {i}"))
                for i in range(2)
            ],
        )
        await ok("PutCampaign", admin_pb2.PutCampaignRequest(campaign=campaign))
    for user in USERS:
        for hours_ago in (30, 20, 10):
            request = decision_pb2.DecideRequest(
                app_id=APP,
                user_id=user,
                event=decision_pb2.Event(name=EVENT),
                channel=decision_pb2.CHANNEL_IN_APP,
                time_zone="Europe/Berlin",
            )
            request.event_time.FromSeconds(NOW - hours_ago * 3600)
            answer = decision_pb2.DecideResponse.FromString(await ok("Decide", request))
            world.decision_ids.append(answer.decision_id)
            world.owners[answer.decision_id] = user
    # ReportOutcome answers UNAVAILABLE for a decision not yet in the log: wait until it is.
    conn = await asyncpg.connect(runner.server.dsn)
    try:
        for _ in range(200):
            logged = await conn.fetchval("SELECT count(*) FROM decisions")
            if logged == len(world.decision_ids):
                break
            await asyncio.sleep(0.05)
        assert logged == len(world.decision_ids)
    finally:
        await conn.close()


async def stored_rows(dsn: str) -> dict[str, set[Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        return {
            "apps": {r[0] for r in await conn.fetch("SELECT app_id FROM apps")},
            "campaigns": {
                (r[0], r[1]) for r in await conn.fetch("SELECT app_id, campaign_id FROM campaigns")
            },
            "decisions": {str(r[0]) for r in await conn.fetch("SELECT decision_id FROM decisions")},
            "devices": {
                (r[0], r[1], r[2], r[3])
                for r in await conn.fetch("SELECT platform, token, app_id, user_id FROM devices")
            },
            "api_keys": {r[0] for r in await conn.fetch("SELECT key_id FROM api_keys")},
        }
    finally:
        await conn.close()


PLATFORM_NAMES = {decision_pb2.PLATFORM_IOS: "ios", decision_pb2.PLATFORM_ANDROID: "android"}
USER_KEY = re.compile(r"nudge:u:(\{[0-9a-f]{24}\}):")
ARMS_KEY = re.compile(r"nudge:arms:\{(.*):([^:]*)\}")


def tracebacks(log_text: str) -> list[str]:
    """Log lines that carry a traceback (a JSON `exception` field, or Python's own print)."""
    found = []
    for line in log_text.splitlines():
        if "Traceback" in line:
            found.append(line)
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and "exception" in doc:
            found.append(line)
    return found


@pytest.mark.timeout(170)
async def test_hostile_requests_never_break_the_server(
    server: ServerProcess, redis_client: aioredis.Redis
) -> None:
    keys_ = Keys(
        await server.key(APP), await server.key(OTHER_APP), await server.key(APP, ("decide",))
    )
    revocable = await server.key(APP, ("report",))
    world = World(revocable_key_id=(parse_token(revocable) or ("", ""))[0])
    ledger = Ledger()
    ledger.key_ids = {
        (parse_token(k) or ("", ""))[0] for k in (*dataclasses.astuple(keys_), revocable)
    }
    options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    async with grpc.aio.insecure_channel(server.target, options=options) as channel:
        runner = Runner(server, channel, ledger, asyncio.get_running_loop())
        await prepare(runner, world, keys_)
        world.strings = plausible_strings(world)

        for rpc in RPCS:
            examples = FEWER_EXAMPLES.get(rpc.name, EXAMPLES)
            await asyncio.to_thread(runner.run, calls(rpc, keys_, world), examples)
        every_rpc = st.sampled_from(RPCS)
        await asyncio.to_thread(
            runner.run,
            every_rpc.flatmap(lambda r: calls(r, keys_, world, mangle=True)),
            RAW_EXAMPLES,
        )
        await asyncio.to_thread(
            runner.run,
            every_rpc.flatmap(lambda r: calls(r, keys_, world, hostile_metadata=True)),
            METADATA_EXAMPLES,
        )
        print(ledger.summary())

        # Each RPC was reached by valid calls and refused for invalid ones: the run is meaningful.
        for rpc in RPCS:
            assert ledger.codes[(rpc.name, "OK")] > 0, f"{rpc.name} never succeeded"
            if rpc.request.DESCRIPTOR.fields:
                assert ledger.codes[(rpc.name, "INVALID_ARGUMENT")] > 0, rpc.name
        assert sum(n for (_, code), n in ledger.codes.items() if code == "RESOURCE_EXHAUSTED")

        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

    # A graceful stop flushes the decision log: every accepted decision is in PostgreSQL then.
    assert await server.stop() == 0, server.log_tail()
    rows = await stored_rows(server.dsn)
    assert rows["apps"] == ledger.apps
    assert rows["campaigns"] == ledger.campaigns
    assert rows["decisions"] == ledger.decisions, (
        f"{len(rows['decisions'] - ledger.decisions)} rows of refused calls, "
        f"{len(ledger.decisions - rows['decisions'])} accepted decisions missing"
    )
    assert rows["devices"] == {
        (PLATFORM_NAMES[platform], token, app, user)
        for (platform, token), (app, user) in ledger.devices.items()
    }
    assert rows["api_keys"] == ledger.key_ids

    accepted_tags = {keys.user_tag(app, user) for app, user in ledger.users_accepted}
    refused_only = ledger.users_refused - ledger.users_accepted
    assert refused_only, "no user had all of their calls refused"
    stray = []
    async for raw in redis_client.scan_iter(match=b"nudge:*", count=1000):
        name = raw.decode(errors="replace")
        if name.startswith("nudge:u:"):
            match = USER_KEY.match(name)
            if match is None or match[1] not in accepted_tags:
                stray.append(name)
        elif (match := ARMS_KEY.match(name)) and (match[1], match[2]) not in ledger.campaigns:
            stray.append(name)
    assert not stray, f"Redis keys of refused calls: {stray[:10]}"

    found = tracebacks(server.log_path.read_text(errors="replace"))
    assert not found, "\n".join(found[:5])
