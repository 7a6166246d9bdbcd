"""The service's errors. Each subclass's docstring is its meaning; `api_errors` maps them to gRPC
status codes in one place."""

from __future__ import annotations

#: At most this many characters of a caller's value are repeated in an error message.
MAX_SHOWN = 80


def shown(value: str, limit: int = MAX_SHOWN) -> str:
    """`value` quoted for an error message, cut to `limit` characters: a message never carries
    a caller's whole input (gRPC sends it in a trailer, and clients drop oversized metadata)."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


class NudgeError(Exception):
    """Base class of every error the service raises on purpose."""


class InvalidArgument(NudgeError):
    """A request field is malformed or out of range. `field` names it (dotted path)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def __reduce__(self) -> tuple[type[InvalidArgument], tuple[str, str]]:
        # Picklable (a report's child process sends its errors back): rebuilt from both parts.
        return type(self), (self.field, self.message)


class NotFound(NudgeError):
    """The app, campaign or decision named by the request does not exist (for this caller)."""


class FailedPrecondition(NudgeError):
    """The request is well-formed but does not fit the state it refers to."""


class StoreUnavailable(NudgeError):
    """Redis or PostgreSQL did not answer in time or refused the connection."""


class StoreTimeout(StoreUnavailable):
    """PostgreSQL took longer than its command timeout to answer (a query too slow for it, or a
    database that stopped answering): the work was abandoned."""


class ResourceExhausted(NudgeError):
    """A limit of the service was reached: too many reports running and waiting, or an answer
    larger than the server sends. Retry later, or ask for less."""


class ReportFailed(NudgeError):
    """A report could not be computed for a reason that is not the caller's (its process died,
    or an unexpected error, logged by the server)."""


class ConfigError(NudgeError):
    """A configuration document (app, campaign, settings) is invalid. `path` names the field."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message

    def __reduce__(self) -> tuple[type[ConfigError], tuple[str, str]]:
        return type(self), (self.path, self.message)
