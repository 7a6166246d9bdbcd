"""Every Redis key of the service, with its TTL.

A user's keys share one hash tag, derived from (app, user), so that one Lua script can touch them
all on Redis Cluster. Hashing the ids keeps tags short and free of '{' and '}'.
"""

from __future__ import annotations

import hashlib

PREFIX = "nudge"

#: TTL of a user's state hash (last prompt, backoff, responsiveness, per-campaign lifetime
#: counts), refreshed on every write: a user silent this long starts afresh.
USER_STATE_TTL_S = 400 * 86400
#: A day hash lives until its local day is over plus this margin (late events, clock skew).
DAY_TTL_MARGIN_S = 86400
#: A granted decision's record lives for the longest attribution window plus this margin.
DECISION_TTL_MARGIN_S = 86400
#: A client_request_id is remembered this long.
REQUEST_TTL_S = 86400
#: A learned set outlives the last outcome that can still be learned by this much.
LEARNED_TTL_MARGIN_S = 2 * 86400
#: Arm statistics of a campaign, refreshed on every reward: kept while the campaign is in use.
ARM_STATS_TTL_S = 400 * 86400


def user_tag(app_id: str, user_id: str) -> str:
    """The hash tag shared by all keys of one user of one app."""
    digest = hashlib.sha256(f"{app_id}\x00{user_id}".encode()).hexdigest()[:24]
    return f"{{{digest}}}"


def user_state(tag: str) -> str:
    """Hash: neg, lneg, resp, c:<campaign>:n, c:<campaign>:t. TTL USER_STATE_TTL_S."""
    return f"{PREFIX}:u:{tag}:state"


def user_day(tag: str) -> str:
    """Hash of the user's counted local day (and the next, for deferred pushes): start, end, n,
    ch:<channel>, c:<campaign>, and the same prefixed "x". TTL to the last day's end + margin."""
    return f"{PREFIX}:u:{tag}:day"


def user_grants(tag: str) -> str:
    """List of the effective times (ms) of the user's latest grants. TTL USER_STATE_TTL_S."""
    return f"{PREFIX}:u:{tag}:grants"


def user_request(tag: str, client_request_id: str) -> str:
    """String: the stored result of a client_request_id. TTL REQUEST_TTL_S."""
    digest = hashlib.sha256(client_request_id.encode()).hexdigest()[:32]
    return f"{PREFIX}:u:{tag}:req:{digest}"


def user_decision(tag: str, decision_id: str) -> str:
    """Hash: a granted decision's campaign, arm, time, window and outcomes. TTL see above."""
    return f"{PREFIX}:u:{tag}:dec:{decision_id}"


def user_keys_pattern(tag: str) -> str:
    """SCAN pattern of every key above of one user (the erasure deletes what it matches)."""
    return f"{PREFIX}:u:{tag}:*"


def arm_stats(app_id: str, campaign_id: str) -> str:
    """Hash of <arm>:n (pulls) and <arm>:r (rewards). TTL ARM_STATS_TTL_S, refreshed."""
    return f"{PREFIX}:arms:{{{app_id}:{campaign_id}}}"


def arm_learned(app_id: str, campaign_id: str, decision_day: str) -> str:
    """Set of "<decision>:n" / "<decision>:r" already counted, for decisions of one UTC day.

    TTL: the campaign's attribution window plus LEARNED_TTL_MARGIN_S, so a retry within the
    window never counts twice.
    """
    return f"{PREFIX}:arms:{{{app_id}:{campaign_id}}}:learned:{decision_day}"
