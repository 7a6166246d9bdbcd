"""Decision ids: UUIDs (version 8) that carry a short fingerprint of their app and user, so that
an outcome reported for the wrong user is told apart from an unknown decision, and the time
they were issued, so that an outcome for a decision not yet in the log can be told "retry".

Layout: bytes 0-1 app fingerprint, 2-3 app+user fingerprint, 10-15 issue time (ms since the
epoch, 48 bits); the rest random (42 bits) but for the version and variant bits.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import uuid
from enum import Enum


def _fingerprint(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()[:2]


def new_decision_id(app_id: str, user_id: str, issued_at: dt.datetime) -> str:
    """A fresh decision id for this app and user, issued now (the server's clock)."""
    raw = bytearray(os.urandom(16))
    raw[0:2] = _fingerprint(app_id)
    raw[2:4] = _fingerprint(f"{app_id}\x00{user_id}")
    raw[10:16] = (int(issued_at.timestamp() * 1000) & 0xFFFF_FFFF_FFFF).to_bytes(6, "big")
    raw[6] = (raw[6] & 0x0F) | 0x80  # version 8: custom layout
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 9562 variant
    return str(uuid.UUID(bytes=bytes(raw)))


class Owner(Enum):
    """Whom a decision id may belong to, judged from its fingerprint."""

    MAYBE_THIS_USER = "maybe_this_user"
    OTHER_USER = "other_user"
    OTHER_APP = "other_app"


def owner_of(decision_id: str, app_id: str, user_id: str) -> Owner:
    """Whether the id can be this user's (a 1 in 65,536 chance of a false "maybe")."""
    raw = uuid.UUID(decision_id).bytes
    if raw[0:2] != _fingerprint(app_id):
        return Owner.OTHER_APP
    if raw[2:4] != _fingerprint(f"{app_id}\x00{user_id}"):
        return Owner.OTHER_USER
    return Owner.MAYBE_THIS_USER


def issued_at(decision_id: str) -> dt.datetime:
    """When the server issued this id (meaningful for ids it made)."""
    ms = int.from_bytes(uuid.UUID(decision_id).bytes[10:16], "big")
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
