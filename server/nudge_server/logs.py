"""Structured logs: one JSON object per line, the event name as `event`, fields beside it."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time

# Attributes every LogRecord has; anything else came from `extra=` and is a field of the event.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD:
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure_logging(level: str | None = None) -> None:
    """Sends JSON logs to stderr at NUDGE_LOG_LEVEL (default INFO)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or os.environ.get("NUDGE_LOG_LEVEL") or "INFO").upper())


class EveryFewSeconds:
    """Lets one log line through per `interval_s` and counts the ones held back, so that an
    event repeated on every call of an outage reads as one line every few seconds."""

    def __init__(self, interval_s: float = 5.0) -> None:
        self._interval_s = interval_s
        self._last = -math.inf
        self._held = 0

    def due(self) -> int | None:
        """None while the line is to be held back; otherwise how many were held back since the
        last line that went through."""
        now = time.monotonic()
        if now - self._last < self._interval_s:
            self._held += 1
            return None
        held, self._held, self._last = self._held, 0, now
        return held
