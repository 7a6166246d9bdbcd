"""What one send to a provider came to, and when to try again. Pure: no I/O.

Every provider answer and every failure is sorted into one `SendStatus`. The line that matters
most is between RETRY and UNKNOWN: RETRY means the provider surely did not take the message
(it answered with an error, or the request never left: no connection, a stream refused by
GOAWAY), so sending again cannot duplicate it; UNKNOWN means it may have (the connection died or
the time ran out after the request was written), so it is never sent again.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import random
from dataclasses import dataclass
from enum import StrEnum


class SendStatus(StrEnum):
    """The kinds of result of one send."""

    #: The provider accepted the message.
    SENT = "sent"
    #: Not delivered, and safe to send again later (5xx, 429, no connection, refused stream).
    RETRY = "retry"
    #: The provider says the token is gone: retire it (APNs 410 / BadDeviceToken, FCM
    #: UNREGISTERED).
    TOKEN_GONE = "token_gone"
    #: The provider refused this message for good (a payload or token it will never accept).
    REJECTED = "rejected"
    #: Our configuration is wrong (credentials, topic, project, endpoint): dead-letter at once,
    #: so that the deliveries can be replayed once it is fixed.
    MISCONFIGURED = "misconfigured"
    #: Possibly delivered, possibly not: never sent again (at most once).
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class SendResult:
    """The result of one send: its kind, what the provider said, and for RETRY how long the
    provider asked us to wait (Retry-After)."""

    status: SendStatus
    detail: str = ""
    provider_id: str = ""
    retry_after_s: float | None = None
    #: For TOKEN_GONE: since when the provider knows the token is invalid, when it says so.
    gone_since: dt.datetime | None = None


def parse_retry_after(value: str | bytes | None, now: dt.datetime) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None when the
    header is missing or malformed."""
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    if not text:
        return None
    if text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - now).total_seconds())


def retry_delay(
    attempt: int,
    *,
    base_s: float,
    max_s: float,
    retry_after_s: float | None = None,
    max_retry_after_s: float = 3600.0,
    rng: random.Random | None = None,
) -> float:
    """Seconds before attempt `attempt + 1`, after `attempt` (1-based) failed.

    Exponential back-off, base * 2^(attempt-1) up to `max_s`, with "equal jitter" (a random
    point in the upper half, so that workers retrying together spread out but never retry
    at once). A Retry-After from the provider is a floor: never earlier than it asked, up to
    `max_retry_after_s`.
    """
    ceiling = min(max_s, base_s * 2.0 ** max(0, attempt - 1))
    draw = rng.uniform(0.5, 1.0) if rng is not None else random.uniform(0.5, 1.0)
    delay = ceiling * draw
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, max_retry_after_s))
    return delay
