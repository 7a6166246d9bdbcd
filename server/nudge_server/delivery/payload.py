"""Push payloads for APNs and FCM, kept within each provider's size limit. Pure: no I/O.

Text that does not fit is shortened by whole characters, the body first and then the title,
and ends with an ellipsis. A cut never falls inside a UTF-8 sequence (Python strings are code
points) nor, as far as a cheap rule can tell, inside a user-perceived character: combining
marks, variation selectors, emoji modifiers and zero-width-joiner sequences stay with their
base, and a flag (a pair of regional indicators) is never split.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import NudgeError
from ..log_encoding import clean_text

#: The largest APNs payload for a regular (non-VoIP) notification, in bytes.
APNS_MAX_BYTES = 4096
#: The largest FCM message payload (notification and data), in bytes.
FCM_MAX_BYTES = 4096
ELLIPSIS = "\u2026"
_ZWJ = "\u200d"


class PayloadTooLarge(NudgeError):
    """The payload exceeds the provider's limit even with its text shortened to nothing (its
    data alone is too large)."""


@dataclass(frozen=True)
class PushContent:
    """What a push says, from a push job's payload."""

    decision_id: str
    title: str = ""
    body: str = ""
    action_url: str = ""
    data: Mapping[str, str] = field(default_factory=dict)
    locale: str = ""

    @classmethod
    def from_job(cls, job_id: str, payload: Mapping[str, Any]) -> PushContent:
        """The content of a push job (payload as written by the decision engine)."""
        raw_data = payload.get("data") or {}
        data = (
            {clean_text(str(k)): clean_text(str(v)) for k, v in raw_data.items()}
            if isinstance(raw_data, Mapping)
            else {}
        )
        return cls(
            decision_id=str(payload.get("decision_id") or job_id),
            title=clean_text(str(payload.get("title") or "")),
            body=clean_text(str(payload.get("body") or "")),
            action_url=clean_text(str(payload.get("action_url") or "")),
            data=data,
            locale=clean_text(str(payload.get("locale") or "")),
        )


# --- shortening ----------------------------------------------------------------------------


def _extends_previous(char: str) -> bool:
    """Whether `char` belongs to the character before it (a cut must not fall before it)."""
    code = ord(char)
    return (
        char == _ZWJ
        or unicodedata.category(char) in ("Mn", "Me", "Mc")
        or 0xFE00 <= code <= 0xFE0F  # variation selectors
        or 0xE0100 <= code <= 0xE01EF  # variation selectors supplement
        or 0x1F3FB <= code <= 0x1F3FF  # emoji skin-tone modifiers
        or 0xE0020 <= code <= 0xE007F  # emoji tag sequences
    )


def _regional_indicator(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF


def safe_cut(text: str, index: int) -> int:
    """The largest cut position <= `index` that keeps every user-perceived character of
    text[:cut] whole (by the rule of the module docstring)."""
    cut = max(0, min(index, len(text)))
    while 0 < cut < len(text):
        if _extends_previous(text[cut]) or text[cut - 1] == _ZWJ:
            cut -= 1
            continue
        if _regional_indicator(text[cut]) and _regional_indicator(text[cut - 1]):
            run = 0
            while cut - 1 - run >= 0 and _regional_indicator(text[cut - 1 - run]):
                run += 1
            if run % 2 == 1:  # text[cut - 1] is the first half of a flag
                cut -= 1
                continue
        break
    return cut


def shorten(text: str, keep: int) -> str:
    """`text` cut to at most `keep` characters (a safe cut) plus an ellipsis; unchanged when it
    is not longer than `keep`; empty for `keep` 0."""
    if keep >= len(text):
        return text
    cut = safe_cut(text, keep)
    kept = text[:cut].rstrip()
    return kept + ELLIPSIS if kept else ""


def _longest_fitting(length: int, fits: Callable[[int], bool]) -> int | None:
    """The largest k in [0, length] with fits(k), by bisection (fits is monotone in k up to
    the small wobble of safe cuts; the answer is always checked), or None."""
    if not fits(0):
        return None
    low, high = 0, length
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return low


def fit_text(
    title: str, body: str, size: Callable[[str, str], int], limit: int
) -> tuple[str, str, bool]:
    """(title, body, shortened?) such that size(title, body) <= limit: the body is shortened
    first, the title only when the body alone cannot make room. PayloadTooLarge when even
    empty texts do not fit."""
    if size(title, body) <= limit:
        return title, body, False
    keep = _longest_fitting(len(body), lambda k: size(title, shorten(body, k)) <= limit)
    if keep is not None:
        return title, shorten(body, keep), True
    keep = _longest_fitting(len(title), lambda k: size(shorten(title, k), "") <= limit)
    if keep is not None:
        return shorten(title, keep), "", True
    raise PayloadTooLarge(f"the payload's data alone exceeds the provider's {limit} bytes")


# --- APNs ------------------------------------------------------------------------------------


def apns_encode(message: Mapping[str, Any]) -> bytes:
    """The bytes aioapns sends for a message (it uses json.dumps with ensure_ascii=False)."""
    return json.dumps(message, ensure_ascii=False).encode()


def _apns_message(content: PushContent, title: str, body: str) -> dict[str, Any]:
    alert: dict[str, str] = {}
    if title:
        alert["title"] = title
    if body:
        alert["body"] = body
    message: dict[str, Any] = {
        "aps": {"alert": alert, "sound": "default"},
        "decision_id": content.decision_id,
    }
    if content.action_url:
        message["action_url"] = content.action_url
    if content.data:
        message["data"] = dict(content.data)
    return message


def apns_message(content: PushContent, limit: int = APNS_MAX_BYTES) -> dict[str, Any]:
    """The APNs payload (the "aps" alert plus decision_id, action_url and data), at most
    `limit` bytes as sent."""
    title, body, _ = fit_text(
        content.title,
        content.body,
        lambda t, b: len(apns_encode(_apns_message(content, t, b))),
        limit,
    )
    return _apns_message(content, title, body)


# --- FCM -------------------------------------------------------------------------------------


def fcm_encode(value: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON, as sent to FCM."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _fcm_parts(content: PushContent, title: str, body: str) -> dict[str, Any]:
    notification: dict[str, str] = {}
    if title:
        notification["title"] = title
    if body:
        notification["body"] = body
    data = dict(content.data)
    data["decision_id"] = content.decision_id
    if content.action_url:
        data["action_url"] = content.action_url
    return {"notification": notification, "data": data}


def fcm_message(
    content: PushContent, token: str, ttl_s: int, limit: int = FCM_MAX_BYTES
) -> dict[str, Any]:
    """The FCM v1 `message` for one token: notification, data (all strings), and Android
    options: high priority, a TTL, and the decision id as collapse key and notification tag
    (so that a duplicate, should one ever happen, replaces the first on the device). The
    notification and data together are at most `limit` bytes."""
    title, body, _ = fit_text(
        content.title,
        content.body,
        lambda t, b: len(fcm_encode(_fcm_parts(content, t, b))),
        limit,
    )
    message = _fcm_parts(content, title, body)
    message["token"] = token
    message["android"] = {
        "priority": "HIGH",
        "ttl": f"{max(0, ttl_s)}s",
        "collapse_key": content.decision_id,
        "notification": {"tag": content.decision_id},
    }
    return message
