"""Log rows as PostgreSQL can store them and as the spool keeps them.

Cleaning: NUL and lone surrogates, which text and jsonb cannot hold, become U+FFFD; non-finite
numbers in JSON become null. COPY records: a row as the tuple of its column values, cleaned.
Spool payloads: an entry as versioned ASCII JSON, read back into the same rows exactly (the
cleaning happens when a row is written to PostgreSQL, not before). No I/O here except
`read_segment` and `append_entries`, which a worker thread runs on the spool.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import re
import typing
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .log_rows import (
    DECISION_COLUMNS,
    JSON_COLUMNS,
    OUTCOME_COLUMNS,
    PUSH_JOB_COLUMNS,
    SNAPSHOT_COLUMNS,
    DecisionRow,
    LogEntry,
    OutcomeRow,
    PolicySnapshotRow,
    PushJobRow,
    row_columns,
)
from .spool import Record, Spool, SpoolStats

# --- cleaning ----------------------------------------------------------------------------------

# NUL cannot be stored in text or jsonb; lone surrogates cannot even be encoded as UTF-8.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def clean_text(value: str) -> str:
    """The string with every character PostgreSQL cannot store replaced by U+FFFD."""
    text = str(value)  # a StrEnum member becomes its plain value
    if _UNSTORABLE.search(text) is None:
        return text
    return _UNSTORABLE.sub(REPLACEMENT, text)


def clean_json(value: object) -> object:
    """A copy of a JSON-like value that jsonb can store: strings and keys cleaned, non-finite
    numbers as null, anything else that is not JSON as its string."""
    if isinstance(value, str):
        return clean_text(value)
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {clean_text(str(k)): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    return clean_text(str(value))


def _encode_json(value: object) -> str | None:
    if value is None:
        return None
    return json.dumps(clean_json(value), ensure_ascii=False, allow_nan=False)


def _clean_value(value: object) -> object:
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, tuple):  # a text[] or double precision[] column
        return [_clean_value(v) for v in value]
    return value


# --- COPY records ------------------------------------------------------------------------------


def copy_record(row: object, columns: Sequence[str]) -> tuple[object, ...]:
    """A row as the values of `columns`, cleaned, for COPY."""
    values: list[object] = []
    for name in columns:
        value = getattr(row, name)
        values.append(_encode_json(value) if name in JSON_COLUMNS else _clean_value(value))
    return tuple(values)


@dataclass(slots=True)
class EncodedEntry:
    """An entry encoded as COPY records."""

    entry: LogEntry
    decision: tuple[object, ...] | None
    push_job: tuple[object, ...] | None
    outcome: tuple[object, ...] | None
    snapshot: tuple[object, ...] | None


def encode_entry(entry: LogEntry) -> EncodedEntry:
    """The entry's rows as COPY records. ValueError, TypeError or RecursionError when a value
    cannot be encoded."""
    return EncodedEntry(
        entry=entry,
        decision=None if entry.decision is None else copy_record(entry.decision, DECISION_COLUMNS),
        push_job=None if entry.push_job is None else copy_record(entry.push_job, PUSH_JOB_COLUMNS),
        outcome=None if entry.outcome is None else copy_record(entry.outcome, OUTCOME_COLUMNS),
        snapshot=None if entry.snapshot is None else copy_record(entry.snapshot, SNAPSHOT_COLUMNS),
    )


def describe_entry(entry: LogEntry) -> dict[str, Any]:
    """The entry as JSON-able data, for logging what could not be written."""
    out: dict[str, Any] = {}
    for name in _ROW_TYPES:
        row = getattr(entry, name)
        if row is not None:
            out[name] = clean_json(
                {f.name: _loggable(getattr(row, f.name)) for f in dataclasses.fields(row)}
            )
    return out


def _loggable(value: object) -> object:
    if isinstance(value, (dt.datetime, uuid.UUID)):
        return str(value)
    return value


# --- the spool's record format -----------------------------------------------------------------

#: Version of the JSON payload of a spool record; a reader refuses any other. (Snapshots came
#: later as a key of their own: a reader of format 1 that predates them counts such a record
#: as unreadable, and reads every other record as before.)
SPOOL_FORMAT = 1
_ROW_TYPES: dict[str, type] = {
    "decision": DecisionRow,
    "push_job": PushJobRow,
    "outcome": OutcomeRow,
    "snapshot": PolicySnapshotRow,
}


def _field_kinds(row_type: type) -> dict[str, str]:
    """Which fields of a row type hold datetimes, UUIDs or tuples (JSON carries them as strings
    and lists)."""
    kinds: dict[str, str] = {}
    for name, hint in typing.get_type_hints(row_type).items():
        options = typing.get_args(hint) or (hint,)
        if dt.datetime in options:
            kinds[name] = "datetime"
        elif uuid.UUID in options:
            kinds[name] = "uuid"
        elif typing.get_origin(hint) is tuple:
            kinds[name] = "tuple"
    return kinds


_FIELD_KINDS = {name: _field_kinds(row_type) for name, row_type in _ROW_TYPES.items()}
_FIELD_NAMES = {name: frozenset(row_columns(row_type)) for name, row_type in _ROW_TYPES.items()}


def _row_to_json(kind: str, row: object) -> dict[str, Any]:
    kinds = _FIELD_KINDS[kind]
    out: dict[str, Any] = {}
    for name in row_columns(type(row)):
        value = getattr(row, name)
        if value is not None and kinds.get(name) in ("datetime", "uuid"):
            value = value.isoformat() if kinds[name] == "datetime" else str(value)
        out[name] = value
    return out


def _row_from_json(kind: str, data: Mapping[str, Any]) -> Any:
    unknown = set(data) - _FIELD_NAMES[kind]
    if unknown:
        raise ValueError(f"{kind}: unknown fields {sorted(unknown)}")
    kinds = _FIELD_KINDS[kind]
    values: dict[str, Any] = {}
    for name, value in data.items():
        if value is not None and name in kinds:
            if kinds[name] == "datetime":
                value = dt.datetime.fromisoformat(value)
            elif kinds[name] == "uuid":
                value = uuid.UUID(value)
            else:
                value = tuple(value)
        values[name] = value
    return _ROW_TYPES[kind](**values)


def entry_payload(entry: LogEntry) -> bytes:
    """An entry as a spool record's payload (JSON; ASCII, so that any string survives)."""
    doc: dict[str, Any] = {"v": SPOOL_FORMAT}
    for kind in _ROW_TYPES:
        row = getattr(entry, kind)
        if row is not None:
            doc[kind] = _row_to_json(kind, row)
    return json.dumps(doc, separators=(",", ":"), default=str).encode("ascii")


def entry_from_payload(payload: bytes, stamp_ms: int) -> LogEntry:
    """The entry of a spool record's payload. ValueError (or TypeError) when it is not one."""
    doc = json.loads(payload)
    if not isinstance(doc, dict) or doc.get("v") != SPOOL_FORMAT:
        raise ValueError("not a spool record of format 1")
    entry = LogEntry(seq=0, added_ms=stamp_ms, from_spool=True)
    for kind in _ROW_TYPES:
        if doc.get(kind) is not None:
            setattr(entry, kind, _row_from_json(kind, doc[kind]))
    if entry.decision is None and entry.outcome is None and entry.snapshot is None:
        raise ValueError("a spool record holds neither a decision, an outcome nor a snapshot")
    return entry


# --- entries in the spool (run in a worker thread) ---------------------------------------------


@dataclass(frozen=True)
class SegmentRead:
    """A spool segment read back and decoded."""

    seq: int
    entries: list[LogEntry]
    torn_bytes: int
    undecodable: list[str]  # why each bad record could not be decoded


def read_segment(spool: Spool, seq: int) -> SegmentRead:
    """Reads and decodes one segment of the spool (blocking file I/O)."""
    contents = spool.read(seq)
    entries: list[LogEntry] = []
    undecodable: list[str] = []
    for record in contents.records:
        try:
            entries.append(entry_from_payload(record.payload, record.stamp_ms))
        except (ValueError, TypeError, KeyError) as exc:
            undecodable.append(f"{type(exc).__name__}: {exc}")
    return SegmentRead(seq, entries, contents.torn_bytes, undecodable)


@dataclass(frozen=True)
class SpoolAppend:
    """What an append of entries to the spool did with them."""

    spooled: list[LogEntry]
    refused: list[LogEntry]  # no room (or the disk failed): still in memory
    unencodable: list[tuple[LogEntry, BaseException]]
    stats: SpoolStats


def append_entries(spool: Spool, entries: Sequence[LogEntry]) -> SpoolAppend:
    """Encodes entries and appends them to the spool, oldest first, as far as it has room
    (blocking file I/O)."""
    encoded: list[tuple[LogEntry, Record]] = []
    unencodable: list[tuple[LogEntry, BaseException]] = []
    for entry in entries:
        try:
            encoded.append((entry, Record(entry.added_ms, entry_payload(entry), entry.rows)))
        except (ValueError, TypeError, RecursionError) as exc:
            unencodable.append((entry, exc))
    taken = spool.append([record for _, record in encoded]) if encoded else 0
    return SpoolAppend(
        spooled=[entry for entry, _ in encoded[:taken]],
        refused=[entry for entry, _ in encoded[taken:]],
        unencodable=unencodable,
        stats=spool.stats(),
    )
