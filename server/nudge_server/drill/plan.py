"""What the drill does when, and to whom: the fault timeline, the users and the app's
configuration. Pure: no I/O, no clock.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from typing import Any

#: The drill's app, campaign and event.
APP_ID = "drill"
CAMPAIGN_ID = "drill-campaign"
EVENT_NAME = "drill_event"
#: Prompts per user per local day: small, so that most users reach it during the drill.
DAILY_CAP = 3
#: Seconds between two prompts to one user: short, so that a user's prompts spread over a few
#: seconds (and over the faults) instead of all landing at once.
MIN_INTERVAL_S = 5
#: Shortest drill that leaves room for every fault.
MIN_DURATION_S = 20.0
#: Far apart on the clock (UTC+14 to UTC-11, half hours included), so that users' local days
#: differ at the same instant.
TIME_ZONES = (
    "Pacific/Kiritimati",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Europe/Berlin",
    "UTC",
    "America/Sao_Paulo",
    "America/New_York",
    "America/Los_Angeles",
    "Pacific/Honolulu",
    "Pacific/Pago_Pago",
)
PLATFORMS = ("ios", "android", "web")
#: Share of users active from the start; the others join one by one until JOIN_UNTIL of the
#: drill, so that new users keep earning prompts (and reaching the cap) during every fault.
STARTING_SHARE = 0.25
JOIN_UNTIL = 0.8


class FaultKind(enum.Enum):
    """A fault the drill injects."""

    #: redis-server killed with SIGKILL, started again on the same port after the hold (its
    #: append-only file keeps the data; its script cache is gone, as after any restart).
    REDIS_KILL = "redis killed (SIGKILL) and restarted"
    #: redis-server frozen with SIGSTOP for the hold, then SIGCONT: a Redis that hangs.
    REDIS_HANG = "redis hung (SIGSTOP) and resumed"
    #: `pg_ctl stop -m immediate`, started again after the hold.
    POSTGRES_STOP = "postgresql stopped (immediate) and restarted"
    #: Both of the above at once.
    BOTH_DOWN = "redis and postgresql down together"
    #: SIGTERM to one server under load, started again as soon as it has exited.
    SERVER_RESTART = "server stopped (SIGTERM) and restarted"
    #: PostgreSQL stopped, then SIGTERM to one server while it is down (its rows stay in the
    #: spool), PostgreSQL restarted, then the server restarted: the spool must cross the restart.
    SERVER_RESTART_WHILE_POSTGRES_DOWN = "server stopped (SIGTERM) while postgresql was down"


@dataclass(frozen=True)
class FaultStep:
    """One fault: when it starts (seconds into the load), how long it holds, which server."""

    at_s: float
    kind: FaultKind
    hold_s: float = 0.0
    server: int = 0


#: (start, hold, minimum hold) as shares of the duration, minimum in seconds.
_TIMELINE = (
    (0.06, FaultKind.REDIS_KILL, 0.06, 2.0),
    (0.18, FaultKind.POSTGRES_STOP, 0.07, 2.5),
    (0.32, FaultKind.SERVER_RESTART, 0.0, 0.0),
    (0.42, FaultKind.BOTH_DOWN, 0.06, 2.0),
    (0.55, FaultKind.REDIS_HANG, 0.025, 1.0),
    (0.64, FaultKind.SERVER_RESTART, 0.0, 0.0),
    (0.74, FaultKind.SERVER_RESTART_WHILE_POSTGRES_DOWN, 0.07, 2.5),
)


def fault_plan(duration_s: float, servers: int) -> tuple[FaultStep, ...]:
    """The faults of a drill of `duration_s` seconds against `servers` server processes, in
    order. A step that would start before the previous one is over starts right after it."""
    if duration_s < MIN_DURATION_S:
        raise ValueError(f"duration must be at least {MIN_DURATION_S:g} s, got {duration_s:g}")
    if servers < 1:
        raise ValueError(f"servers must be at least 1, got {servers}")
    steps = []
    restarts = 0
    for start, kind, hold, minimum in _TIMELINE:
        server = 0
        if kind in (FaultKind.SERVER_RESTART, FaultKind.SERVER_RESTART_WHILE_POSTGRES_DOWN):
            server = restarts % servers
            restarts += 1
        hold_s = max(minimum, hold * duration_s) if hold else 0.0
        steps.append(FaultStep(round(start * duration_s, 1), kind, round(hold_s, 1), server))
    return tuple(steps)


@dataclass(frozen=True)
class DrillUser:
    """One user of the drill's app."""

    user_id: str
    time_zone: str
    platform: str
    #: Seconds into the load from which the user sends events.
    joins_at_s: float


def drill_users(count: int, duration_s: float, seed: int = 0) -> tuple[DrillUser, ...]:
    """`count` users spread over the time zones, in the order they join."""
    if count < len(TIME_ZONES):
        raise ValueError(f"need at least {len(TIME_ZONES)} users (one per time zone), got {count}")
    rng = random.Random(seed)
    starting = max(1, round(count * STARTING_SHARE))
    joining = count - starting
    users = []
    for i in range(count):
        joins = 0.0 if i < starting else (i - starting + 1) / joining * JOIN_UNTIL * duration_s
        users.append(
            DrillUser(
                user_id=f"drill-user-{i:04d}",
                time_zone=TIME_ZONES[i % len(TIME_ZONES)],
                platform=rng.choice(PLATFORMS),
                joins_at_s=round(joins, 3),
            )
        )
    return tuple(users)


def active_count(users: tuple[DrillUser, ...], elapsed_s: float) -> int:
    """How many of `users` (in join order) have joined `elapsed_s` seconds into the load."""
    low, high = 0, len(users)
    while low < high:
        middle = (low + high) // 2
        if users[middle].joins_at_s <= elapsed_s:
            low = middle + 1
        else:
            high = middle
    return max(1, low)


def drill_config(arms: int = 3) -> dict[str, Any]:
    """The `nudge apply` document of the drill's app and campaign.

    The daily cap is the only rule that binds for long: a short minimum interval, no quiet
    hours (start equal to end), no backoff, no snoozing, no adaptive suppression, no holdout.
    """
    return {
        "apps": [
            {
                "app_id": APP_ID,
                "display_name": "Fault drill (scripts/fault-drill)",
                "policy": {
                    "daily_cap": DAILY_CAP,
                    "min_interval": f"{MIN_INTERVAL_S}s",
                    "backoff_factor": 1.0,
                    "quiet_hours_start": "00:00",
                    "quiet_hours_end": "00:00",
                    "snooze_after": -1,
                    "disable_adaptive": True,
                },
            }
        ],
        "campaigns": [
            {
                "app_id": APP_ID,
                "campaign_id": CAMPAIGN_ID,
                "display_name": "Fault drill prompt",
                "trigger_events": [EVENT_NAME],
                "channel": "in_app",
                "reward_metric": "tap",
                "arms": [
                    {"arm_id": f"arm-{i}", "prompt": {"title": f"Drill prompt {i}"}}
                    for i in range(arms)
                ],
            }
        ],
    }
