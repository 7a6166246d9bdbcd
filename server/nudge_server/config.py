"""Validation of configuration documents: apps (with their throttle policy) and campaigns.

Pure: plain dicts in (as parsed from YAML, or from protobuf by
`json_format.MessageToDict(msg, preserving_proto_field_name=True)`), `model` dataclasses out, no
I/O. Field names are those of the proto messages in `proto/nudge/v1`; defaults and bounds are the
ones their comments document. Every problem raises `ConfigError(path, message)` with the dotted,
indexed location of the field (`campaigns[2].arms[0].arm_id`); nothing is returned half-parsed.

Choices the proto leaves open, written down here:
- Durations are whole seconds in the model; a fraction of a second ("1.5s") is rounded up, so a
  minimum interval is never shortened. At most 3650 days.
- "Control characters" are Unicode category Cc (and lone surrogates, which cannot be stored);
  a prompt's body alone may contain line breaks and tabs.
- Duplicate trigger events, arm ids, app ids or campaign ids in one document are errors, and
  so are duplicate keys of one YAML mapping (YAML itself would keep the last one silently).
- A campaign is at most MAX_CAMPAIGN_BYTES (128 KiB) as compact JSON, so that a campaign and the
  answers that carry it stay well under the server's request limit (256 KiB by default): what
  GetCampaign returns can be sent back with PutCampaign. Stored campaigns are read without this
  bound, so that one written before it existed still loads.
- Error messages repeat at most 80 characters of any value or key (`errors.shown`).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any, TypeVar

import yaml

from .errors import MAX_SHOWN, ConfigError, shown
from .model import (
    DAY,
    HOUR,
    App,
    Arm,
    Campaign,
    CampaignStatus,
    Channel,
    Prompt,
    QuietHoursPolicy,
    RewardMetric,
    ThrottlePolicy,
)

__all__ = [
    "app_to_doc",
    "campaign_size",
    "campaign_to_doc",
    "identifier",
    "load_yaml",
    "parse_app",
    "parse_campaign",
    "parse_document",
]

ROOT = "(document)"
ID_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_HHMM_RE = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
_DURATION_RE = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?[dhms])+")
_DURATION_PART_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)([dhms])")
_UNIT_SECONDS = {"d": DAY, "h": HOUR, "m": 60, "s": 1}

MAX_DURATION_S = 3650 * DAY
INT32_MAX = 2**31 - 1
MAX_NAME = 200
MAX_EVENT_NAME = 128
MAX_TRIGGER_EVENTS = 256
MAX_ARMS = 200
MAX_DAILY_CAP = 1000
MAX_LIFETIME_CAP = 1_000_000
MAX_SNOOZE_AFTER = 1000
MAX_TITLE = 200
MAX_BODY = 2000
MAX_ACTION_URL = 2048
MAX_DATA_ENTRIES = 32
MAX_DATA_KEY = 64
MAX_DATA_VALUE = 2048
MAX_CAMPAIGN_BYTES = 128 * 1024
#: Arm ids listed at most in an error message about the arms.
MAX_LISTED = 5

DEFAULT_POLICY = ThrottlePolicy()
DEFAULT_EXPLORATION_FLOOR = 0.05
DEFAULT_ATTRIBUTION_WINDOW_S = 7 * DAY

E = TypeVar("E", bound=StrEnum)

# The proto enum name of every model enum value is PREFIX + member name.
_PROTO_PREFIX: dict[type[StrEnum], str] = {
    Channel: "CHANNEL_",
    CampaignStatus: "CAMPAIGN_STATUS_",
    RewardMetric: "REWARD_METRIC_",
    QuietHoursPolicy: "QUIET_HOURS_POLICY_",
}

_APP_FIELDS = frozenset({"app_id", "display_name", "policy"})
_POLICY_FIELDS = frozenset(
    {
        "daily_cap",
        "min_interval",
        "backoff_factor",
        "backoff_ceiling",
        "quiet_hours_start",
        "quiet_hours_end",
        "channel_daily_caps",
        "snooze_after",
        "disable_adaptive",
    }
)
_CAMPAIGN_FIELDS = frozenset(
    {
        "app_id",
        "campaign_id",
        "display_name",
        "status",
        "trigger_events",
        "channel",
        "priority",
        "arms",
        "caps",
        "holdout_share",
        "reward_metric",
        "attribution_window",
        "response_window",
        "quiet_hours_policy",
        "control_arm_id",
        "exploration_floor",
        "updated_at",
    }
)
_ARM_FIELDS = frozenset({"arm_id", "prompt", "delay"})
_PROMPT_FIELDS = frozenset({"title", "body", "action_url", "data"})
_CAPS_FIELDS = frozenset({"per_day", "lifetime", "min_interval"})
_DOCUMENT_FIELDS = frozenset({"apps", "campaigns"})


# --- paths -------------------------------------------------------------------------------------


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _index(path: str, i: int) -> str:
    return f"{path or ROOT}[{i}]"


def _where(path: str) -> str:
    return path or ROOT


def _key(key: object) -> str:
    """A document's key as a path segment, cut short: paths are part of error messages."""
    text = str(key)
    return text if len(text) <= MAX_SHOWN else f"{text[:MAX_SHOWN]}..."


def _got(value: object) -> str:
    """A value for an error message: strings cut short, other scalars as they are."""
    return shown(value) if isinstance(value, str) else repr(value)


def _listing(names: Sequence[str]) -> str:
    """At most MAX_LISTED names, comma-separated, and how many more there are."""
    listed = ", ".join(names[:MAX_LISTED])
    more = len(names) - MAX_LISTED
    return f"{listed} and {more} more" if more > 0 else listed


class _Fields:
    """A mapping whose keys have been checked against the allowed field names."""

    def __init__(self, doc: object, path: str, allowed: frozenset[str]) -> None:
        if not isinstance(doc, Mapping):
            raise ConfigError(_where(path), f"must be a mapping, got {_kind(doc)}")
        for key in doc:
            if not isinstance(key, str) or key not in allowed:
                raise ConfigError(
                    _join(path, _key(key)),
                    f"unknown field; allowed fields: {', '.join(sorted(allowed))}",
                )
        self._doc: Mapping[str, object] = doc
        self.path = path

    def at(self, key: str) -> str:
        """The path of one field."""
        return _join(self.path, key)

    def get(self, key: str) -> object:
        """The field's value; None when absent (an explicit null counts as absent)."""
        return self._doc.get(key)


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"a string ({value[:40]!r})"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, Sequence):
        return "a list"
    return f"a {type(value).__name__}"


# --- scalars -----------------------------------------------------------------------------------


def _bad_char(value: str, allow_breaks: bool) -> str | None:
    for ch in value:
        if allow_breaks and ch in "\n\r\t":
            continue
        category = unicodedata.category(ch)
        if category in ("Cc", "Cs"):
            return ch
    return None


def _string(
    value: object, path: str, *, max_len: int, allow_breaks: bool = False, required: bool = False
) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise ConfigError(path, f"must be a string, got {_kind(value)}")
    if required and not value:
        raise ConfigError(path, "is required and must not be empty")
    if len(value) > max_len:
        raise ConfigError(path, f"must be at most {max_len} characters, got {len(value)}")
    bad = _bad_char(value, allow_breaks)
    if bad is not None:
        raise ConfigError(path, f"must not contain control characters (found U+{ord(bad):04X})")
    return value


def _identifier(value: object, path: str, *, required: bool = True) -> str:
    if value is None or value == "":
        if required:
            raise ConfigError(
                path, "is required: 1 to 64 characters of letters, digits, '-', '_' and '.'"
            )
        return ""
    if not isinstance(value, str):
        raise ConfigError(path, f"must be a string, got {_kind(value)}")
    if not ID_RE.fullmatch(value):
        raise ConfigError(
            path,
            f"must be 1 to 64 characters of letters, digits, '-', '_' and '.', got {shown(value)}",
        )
    return value


def identifier(value: object, path: str) -> str:
    """A required app, campaign or arm id: 1 to 64 letters, digits, '-', '_' and '.'."""
    return _identifier(value, path)


def _int(value: object, path: str, *, lo: int, hi: int, default: int = 0) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(path, f"must be a whole number, got {_kind(value)}")
    if isinstance(value, float):
        if not value.is_integer():
            raise ConfigError(path, f"must be a whole number, got {value!r}")
        value = int(value)
    if not lo <= value <= hi:
        raise ConfigError(path, f"must be between {lo} and {hi}, got {value}")
    return value


def _number(value: object, path: str) -> float | None:
    """A finite number, or None when absent."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(path, f"must be a number, got {_kind(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(path, f"must be a finite number, got {value!r}")
    return number


def _bool(value: object, path: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ConfigError(path, f"must be true or false, got {_kind(value)}")
    return value


def _duration(value: object, path: str, *, default: int = 0) -> int:
    """Whole seconds from an int (seconds) or a string such as "90s", "30m", "1h", "7d"."""
    expected = 'a duration: whole seconds (90) or a string such as "90s", "1.5s", "30m", "1h", "7d"'
    if value is None:
        return default
    seconds: float
    if isinstance(value, bool):
        raise ConfigError(path, f"must be {expected}, got {_kind(value)}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ConfigError(path, f"must be {expected}, got {value!r}")
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        negative = text.startswith("-")
        if negative:
            text = text[1:]
        if not _DURATION_RE.fullmatch(text):
            raise ConfigError(path, f"must be {expected}, got {shown(value)}")
        seconds = sum(
            float(number) * _UNIT_SECONDS[unit] for number, unit in _DURATION_PART_RE.findall(text)
        )
        if negative:
            seconds = -seconds
    else:
        raise ConfigError(path, f"must be {expected}, got {_kind(value)}")
    if seconds < 0:
        raise ConfigError(path, f"must not be negative, got {_got(value)}")
    whole = math.ceil(seconds)
    if whole > MAX_DURATION_S:
        raise ConfigError(path, f"must be at most 3650 days, got {_got(value)}")
    return whole


def _enum(value: object, path: str, enum_type: type[E], default: E) -> E:
    """An enum from its short form ("push") or its proto name ("CHANNEL_PUSH")."""
    prefix = _PROTO_PREFIX[enum_type]
    if value is None or value == "":
        return default
    if isinstance(value, str):
        if value.upper() == f"{prefix}UNSPECIFIED":
            return default
        for member in enum_type:
            if value.lower() == member.value or value.upper() == prefix + member.name:
                return member
    allowed = ", ".join(m.value for m in enum_type)
    proto = ", ".join(prefix + m.name for m in enum_type)
    raise ConfigError(path, f"must be one of {allowed} (or {proto}), got {_kind(value)}")


def _time_of_day(value: object, path: str, default: dt.time) -> dt.time:
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise ConfigError(path, f'must be a time "HH:MM" (00:00 to 23:59), got {_kind(value)}')
    match = _HHMM_RE.fullmatch(value)
    if not match:
        raise ConfigError(path, f'must be a time "HH:MM" (00:00 to 23:59), got {shown(value)}')
    return dt.time(int(match.group(1)), int(match.group(2)))


def _timestamp(value: object, path: str) -> dt.datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, str):
        # Protobuf JSON may carry nanoseconds; datetime keeps microseconds.
        text = re.sub(r"(\.[0-9]{6})[0-9]+", r"\1", value.strip())
        try:
            parsed = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ConfigError(
                path,
                f'must be an RFC 3339 time such as "2024-05-01T12:00:00Z", got {shown(value)}',
            ) from None
    else:
        raise ConfigError(path, f"must be an RFC 3339 time, got {_kind(value)}")
    if parsed.tzinfo is None:
        raise ConfigError(path, "must carry a time zone offset (for example a trailing Z)")
    return parsed


def _list(value: object, path: str) -> Sequence[object]:
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ConfigError(path, f"must be a list, got {_kind(value)}")
    return value


# --- apps --------------------------------------------------------------------------------------


def _parse_policy(doc: object, path: str) -> ThrottlePolicy:
    if doc is None:
        return DEFAULT_POLICY
    f = _Fields(doc, path, _POLICY_FIELDS)

    daily_cap = _int(f.get("daily_cap"), f.at("daily_cap"), lo=0, hi=MAX_DAILY_CAP)
    min_interval = _duration(f.get("min_interval"), f.at("min_interval"))
    factor = _number(f.get("backoff_factor"), f.at("backoff_factor"))
    if factor is not None and factor != 0 and not 1.0 <= factor <= 10.0:
        raise ConfigError(
            f.at("backoff_factor"), f"must be between 1 and 10 (1 turns backoff off), got {factor}"
        )
    ceiling = _duration(f.get("backoff_ceiling"), f.at("backoff_ceiling"))
    policy_min_interval = min_interval or DEFAULT_POLICY.min_interval_s
    policy_ceiling = ceiling or DEFAULT_POLICY.backoff_ceiling_s
    if policy_ceiling < policy_min_interval:
        raise ConfigError(
            f.at("backoff_ceiling"),
            f"must not be shorter than min_interval ({policy_min_interval}s), "
            f"got {policy_ceiling}s",
        )

    snooze_after = _int(f.get("snooze_after"), f.at("snooze_after"), lo=-1, hi=MAX_SNOOZE_AFTER)
    return ThrottlePolicy(
        daily_cap=daily_cap or DEFAULT_POLICY.daily_cap,
        min_interval_s=policy_min_interval,
        backoff_factor=factor or DEFAULT_POLICY.backoff_factor,
        backoff_ceiling_s=policy_ceiling,
        quiet_start=_time_of_day(
            f.get("quiet_hours_start"), f.at("quiet_hours_start"), DEFAULT_POLICY.quiet_start
        ),
        quiet_end=_time_of_day(
            f.get("quiet_hours_end"), f.at("quiet_hours_end"), DEFAULT_POLICY.quiet_end
        ),
        channel_daily_caps=_parse_channel_caps(
            f.get("channel_daily_caps"), f.at("channel_daily_caps")
        ),
        snooze_after=snooze_after or DEFAULT_POLICY.snooze_after,
        adaptive=not _bool(f.get("disable_adaptive"), f.at("disable_adaptive")),
    )


def _parse_channel_caps(doc: object, path: str) -> dict[Channel, int]:
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise ConfigError(path, f"must be a mapping of channel to cap, got {_kind(doc)}")
    caps: dict[Channel, int] = {}
    for key, value in doc.items():
        key_path = _join(path, _key(key))
        if key in (None, "") or str(key).upper() == "CHANNEL_UNSPECIFIED":
            raise ConfigError(key_path, "must name a channel: in_app, push or email")
        channel = _enum(key, key_path, Channel, Channel.IN_APP)
        if channel in caps:
            raise ConfigError(key_path, f"duplicate cap for channel {channel.value}")
        if value is None:
            raise ConfigError(key_path, f"must be between 1 and {MAX_DAILY_CAP}, got nothing")
        caps[channel] = _int(value, key_path, lo=1, hi=MAX_DAILY_CAP)
    return caps


def parse_app(doc: object, path: str = "") -> App:
    """Validates an App document; `path` prefixes every error path (e.g. "apps[0]")."""
    f = _Fields(doc, path, _APP_FIELDS)
    return App(
        app_id=_identifier(f.get("app_id"), f.at("app_id")),
        display_name=_string(f.get("display_name"), f.at("display_name"), max_len=MAX_NAME),
        policy=_parse_policy(f.get("policy"), f.at("policy")),
    )


# --- campaigns ---------------------------------------------------------------------------------


def _parse_prompt(doc: object, path: str) -> Prompt:
    if doc is None:
        return Prompt()
    f = _Fields(doc, path, _PROMPT_FIELDS)
    data_doc = f.get("data")
    data_path = f.at("data")
    data: dict[str, str] = {}
    if data_doc is not None:
        if not isinstance(data_doc, Mapping):
            raise ConfigError(data_path, f"must be a mapping of strings, got {_kind(data_doc)}")
        if len(data_doc) > MAX_DATA_ENTRIES:
            raise ConfigError(
                data_path, f"must have at most {MAX_DATA_ENTRIES} entries, got {len(data_doc)}"
            )
        for key, value in data_doc.items():
            key_path = _join(data_path, _key(key))
            if not isinstance(key, str) or not key:
                raise ConfigError(key_path, "keys must be non-empty strings")
            _string(key, key_path, max_len=MAX_DATA_KEY)
            data[key] = _string(value, key_path, max_len=MAX_DATA_VALUE)
    return Prompt(
        title=_string(f.get("title"), f.at("title"), max_len=MAX_TITLE),
        body=_string(f.get("body"), f.at("body"), max_len=MAX_BODY, allow_breaks=True),
        action_url=_string(f.get("action_url"), f.at("action_url"), max_len=MAX_ACTION_URL),
        data=data,
    )


def _parse_arms(doc: object, path: str) -> tuple[Arm, ...]:
    items = _list(doc, path)
    if not 1 <= len(items) <= MAX_ARMS:
        raise ConfigError(path, f"must have between 1 and {MAX_ARMS} arms, got {len(items)}")
    arms: list[Arm] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        f = _Fields(item, _index(path, i), _ARM_FIELDS)
        arm_id = _identifier(f.get("arm_id"), f.at("arm_id"))
        if arm_id in seen:
            raise ConfigError(
                f.at("arm_id"), f"duplicate arm id {arm_id!r} (also arms[{seen[arm_id]}])"
            )
        seen[arm_id] = i
        arms.append(
            Arm(
                arm_id=arm_id,
                prompt=_parse_prompt(f.get("prompt"), f.at("prompt")),
                delay_s=_duration(f.get("delay"), f.at("delay")),
            )
        )
    return tuple(arms)


def _parse_triggers(doc: object, path: str) -> frozenset[str]:
    items = _list(doc, path)
    if not 1 <= len(items) <= MAX_TRIGGER_EVENTS:
        raise ConfigError(
            path, f"must list between 1 and {MAX_TRIGGER_EVENTS} event names, got {len(items)}"
        )
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        item_path = _index(path, i)
        if not isinstance(item, str):
            raise ConfigError(item_path, f"must be a string, got {_kind(item)}")
        if not 1 <= len(item) <= MAX_EVENT_NAME or not item.isprintable():
            raise ConfigError(
                item_path,
                f"must be 1 to {MAX_EVENT_NAME} printable characters, got {shown(item)}",
            )
        if item in seen:
            raise ConfigError(item_path, f"duplicate event {shown(item)} (also [{seen[item]}])")
        seen[item] = i
    return frozenset(seen)


def parse_campaign(
    doc: object, path: str = "", *, max_bytes: int | None = MAX_CAMPAIGN_BYTES
) -> Campaign:
    """Validates a Campaign document; `path` prefixes every error path (e.g. "campaigns[0]").

    The campaign may be at most `max_bytes` as compact JSON; None (stored campaigns being read)
    skips that check."""
    f = _Fields(doc, path, _CAMPAIGN_FIELDS)
    app_id = _identifier(f.get("app_id"), f.at("app_id"))
    campaign_id = _identifier(f.get("campaign_id"), f.at("campaign_id"))
    display_name = _string(f.get("display_name"), f.at("display_name"), max_len=MAX_NAME)
    status = _enum(f.get("status"), f.at("status"), CampaignStatus, CampaignStatus.ACTIVE)
    triggers = _parse_triggers(f.get("trigger_events"), f.at("trigger_events"))
    channel = _enum(f.get("channel"), f.at("channel"), Channel, Channel.IN_APP)
    priority = _int(f.get("priority"), f.at("priority"), lo=-INT32_MAX - 1, hi=INT32_MAX)
    arms = _parse_arms(f.get("arms"), f.at("arms"))

    caps_doc = f.get("caps")
    caps = _Fields({} if caps_doc is None else caps_doc, f.at("caps"), _CAPS_FIELDS)
    per_day = _int(caps.get("per_day"), caps.at("per_day"), lo=0, hi=MAX_DAILY_CAP)
    lifetime = _int(caps.get("lifetime"), caps.at("lifetime"), lo=0, hi=MAX_LIFETIME_CAP)
    cap_min_interval = _duration(caps.get("min_interval"), caps.at("min_interval"))

    holdout = _number(f.get("holdout_share"), f.at("holdout_share")) or 0.0
    if not 0.0 <= holdout <= 0.5:
        raise ConfigError(f.at("holdout_share"), f"must be between 0 and 0.5, got {holdout}")

    floor = _number(f.get("exploration_floor"), f.at("exploration_floor")) or 0.0
    if floor == 0.0:
        floor = DEFAULT_EXPLORATION_FLOOR
    elif not 0.01 <= floor <= 0.5:
        raise ConfigError(
            f.at("exploration_floor"),
            f"must be between 0.01 and 0.5 (0 or absent means {DEFAULT_EXPLORATION_FLOOR}), "
            f"got {floor}",
        )

    control = _identifier(f.get("control_arm_id"), f.at("control_arm_id"), required=False)
    if control and all(arm.arm_id != control for arm in arms):
        raise ConfigError(
            f.at("control_arm_id"),
            f"must be one of the campaign's arms ({_listing([a.arm_id for a in arms])}), "
            f"got {control!r}",
        )

    campaign = Campaign(
        app_id=app_id,
        campaign_id=campaign_id,
        arms=arms,
        trigger_events=triggers,
        channel=channel,
        display_name=display_name,
        status=status,
        priority=priority,
        cap_per_day=per_day,
        cap_lifetime=lifetime,
        cap_min_interval_s=cap_min_interval,
        holdout_share=holdout,
        reward_metric=_enum(
            f.get("reward_metric"), f.at("reward_metric"), RewardMetric, RewardMetric.TAP
        ),
        attribution_window_s=_duration(f.get("attribution_window"), f.at("attribution_window"))
        or DEFAULT_ATTRIBUTION_WINDOW_S,
        response_window_s=_duration(f.get("response_window"), f.at("response_window")),
        quiet_hours_policy=_enum(
            f.get("quiet_hours_policy"),
            f.at("quiet_hours_policy"),
            QuietHoursPolicy,
            QuietHoursPolicy.DEFER,
        ),
        control_arm_id=control,
        exploration_floor=floor,
        updated_at=_timestamp(f.get("updated_at"), f.at("updated_at")),
    )
    if max_bytes is not None:
        size = campaign_size(campaign)
        if size > max_bytes:
            raise ConfigError(
                _where(path),
                f"is {size} bytes as JSON; at most {max_bytes} (fewer arms or shorter texts)",
            )
    return campaign


def campaign_size(campaign: Campaign) -> int:
    """The campaign's size in bytes as compact UTF-8 JSON (`campaign_to_doc`)."""
    text = json.dumps(campaign_to_doc(campaign), ensure_ascii=False, separators=(",", ":"))
    return len(text.encode("utf-8", errors="surrogatepass"))


# --- documents ---------------------------------------------------------------------------------


def parse_document(doc: object) -> tuple[list[App], list[Campaign]]:
    """Validates a file of the form `{apps: [...], campaigns: [...]}` (either key optional)."""
    if doc is None:
        doc = {}
    f = _Fields(doc, "", _DOCUMENT_FIELDS)
    apps: list[App] = []
    app_index: dict[str, int] = {}
    for i, item in enumerate(_list(f.get("apps"), "apps")):
        app = parse_app(item, _index("apps", i))
        if app.app_id in app_index:
            raise ConfigError(
                _join(_index("apps", i), "app_id"),
                f"duplicate app {app.app_id!r} (also apps[{app_index[app.app_id]}])",
            )
        app_index[app.app_id] = i
        apps.append(app)
    campaigns: list[Campaign] = []
    campaign_index: dict[tuple[str, str], int] = {}
    for i, item in enumerate(_list(f.get("campaigns"), "campaigns")):
        campaign = parse_campaign(item, _index("campaigns", i))
        key = (campaign.app_id, campaign.campaign_id)
        if key in campaign_index:
            raise ConfigError(
                _join(_index("campaigns", i), "campaign_id"),
                f"duplicate campaign {campaign.campaign_id!r} of app {campaign.app_id!r} "
                f"(also campaigns[{campaign_index[key]}])",
            )
        campaign_index[key] = i
        campaigns.append(campaign)
    return apps, campaigns


def _duration_doc(seconds: int) -> str:
    return f"{seconds}s"


def app_to_doc(app: App) -> dict[str, Any]:
    """The JSON-serialisable document of an app; `parse_app` reads it back unchanged."""
    policy = app.policy
    return {
        "app_id": app.app_id,
        "display_name": app.display_name,
        "policy": {
            "daily_cap": policy.daily_cap,
            "min_interval": _duration_doc(policy.min_interval_s),
            "backoff_factor": policy.backoff_factor,
            "backoff_ceiling": _duration_doc(policy.backoff_ceiling_s),
            "quiet_hours_start": policy.quiet_start.strftime("%H:%M"),
            "quiet_hours_end": policy.quiet_end.strftime("%H:%M"),
            "channel_daily_caps": {
                Channel(channel).value: cap for channel, cap in policy.channel_daily_caps.items()
            },
            "snooze_after": policy.snooze_after,
            "disable_adaptive": not policy.adaptive,
        },
    }


def campaign_to_doc(campaign: Campaign) -> dict[str, Any]:
    """The JSON-serialisable document of a campaign; `parse_campaign` reads it back unchanged."""
    doc: dict[str, Any] = {
        "app_id": campaign.app_id,
        "campaign_id": campaign.campaign_id,
        "display_name": campaign.display_name,
        "status": campaign.status.value,
        "trigger_events": sorted(campaign.trigger_events),
        "channel": campaign.channel.value,
        "priority": campaign.priority,
        "arms": [
            {
                "arm_id": arm.arm_id,
                "prompt": {
                    "title": arm.prompt.title,
                    "body": arm.prompt.body,
                    "action_url": arm.prompt.action_url,
                    "data": dict(arm.prompt.data),
                },
                "delay": _duration_doc(arm.delay_s),
            }
            for arm in campaign.arms
        ],
        "caps": {
            "per_day": campaign.cap_per_day,
            "lifetime": campaign.cap_lifetime,
            "min_interval": _duration_doc(campaign.cap_min_interval_s),
        },
        "holdout_share": campaign.holdout_share,
        "reward_metric": campaign.reward_metric.value,
        "attribution_window": _duration_doc(campaign.attribution_window_s),
        "response_window": _duration_doc(campaign.response_window_s),
        "quiet_hours_policy": campaign.quiet_hours_policy.value,
        "control_arm_id": campaign.control_arm_id,
        "exploration_floor": campaign.exploration_floor,
    }
    if campaign.updated_at is not None:
        doc["updated_at"] = campaign.updated_at.isoformat()
    return doc


# --- YAML --------------------------------------------------------------------------------------


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader without YAML 1.1's base-60 numbers, so that `22:00` stays the string "22:00"."""


_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT_TAG, _FLOAT_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_YamlLoader.add_implicit_resolver(
    _INT_TAG,
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_YamlLoader.add_implicit_resolver(
    _FLOAT_TAG,
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?"
        r"|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _check_unique_keys(node: yaml.Node, path: str, seen: set[int]) -> None:
    """Raises ConfigError at the second of two equal keys of one mapping. A node reached again
    through an alias is checked once."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first_line: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            value_path = path
            # "<<" merges another mapping in; keys given beside it override it, on purpose.
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                key = (key_node.tag, key_node.value)
                line = key_node.start_mark.line + 1
                value_path = _join(path, _key(key_node.value))
                if key in first_line:
                    raise ConfigError(
                        value_path,
                        f"duplicate key {shown(key_node.value)} at line {line} "
                        f"(first given at line {first_line[key]})",
                    )
                first_line[key] = line
            _check_unique_keys(value_node, value_path, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_unique_keys(item, _index(path, i), seen)


def load_yaml(text: str) -> object:
    """Parses YAML text into plain data. Raises ConfigError (with the line) on a syntax error
    and on a key given twice in one mapping."""
    loader = _YamlLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_unique_keys(node, "", set())
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ROOT
        raise ConfigError(where, f"invalid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(ROOT, f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()
