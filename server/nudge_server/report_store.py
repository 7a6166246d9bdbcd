"""PostgreSQL I/O of the arm report: the rows `report.build_report` is computed from.

Every query is scoped by app_id and takes its values as $n parameters. Segment filters are
equality on decision columns; a filter left out is passed as NULL and matches everything.
The queries run in one read-only, repeatable-read transaction, so that they see one
snapshot of the log. The policy snapshots the decisions name are fetched by id (scoped by app
and campaign) and joined to the decisions in `report.build_report`.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg

from .config_store import ConfigStore
from .model import Campaign
from .postgres import connection
from .report import (
    COHORT_WINDOW_DAYS,
    SEGMENT_KEYS,
    ArmReport,
    PolicyDistribution,
    ReportData,
    ReportQuery,
    ShownDecision,
    UserFact,
    build_report,
)

#: $1 app, $2 end of range (NULL: none).
_DATA_END = """
SELECT max(decided_at)
FROM decisions
WHERE app_id = $1 AND decided_at < coalesce($2::timestamptz, 'infinity')
"""

# Segment parameters, in SEGMENT_KEYS order: platform, locale, surface, time_zone,
# requested_channel. The SQL below hard-codes that order.
assert SEGMENT_KEYS == ("platform", "locale", "surface", "time_zone", "requested_channel")

#: $1 app, $2 campaign, $3 start, $4 end, $5-$9 segment.
_SHOWN_DECISIONS = """
SELECT d.decision_id::text AS decision_id, d.user_id, d.arm_id, d.propensity, d.decided_at,
       d.policy_snapshot,
       coalesce(o.impression, false) AS impression,
       coalesce(o.tap, false) AS tap,
       coalesce(o.dismiss, false) AS dismiss,
       coalesce(o.conversion, false) AS conversion,
       coalesce(o.ignore, false) AS ignore,
       coalesce(o.rewarded, false) AS rewarded
FROM decisions d
LEFT JOIN LATERAL (
    SELECT bool_or(x.type = 'impression') AS impression,
           bool_or(x.type = 'tap') AS tap,
           bool_or(x.type = 'dismiss') AS dismiss,
           bool_or(x.type = 'conversion') AS conversion,
           bool_or(x.type = 'ignore') AS ignore,
           bool_or(x.rewarded) AS rewarded
    FROM outcomes x
    WHERE x.decision_id = d.decision_id AND x.app_id = $1
) o ON true
WHERE d.app_id = $1
  AND d.campaign_id = $2
  AND d.show
  AND d.arm_id IS NOT NULL
  AND d.decided_at >= coalesce($3::timestamptz, '-infinity')
  AND d.decided_at < coalesce($4::timestamptz, 'infinity')
  AND ($5::text IS NULL OR d.platform = $5)
  AND ($6::text IS NULL OR d.locale = $6)
  AND ($7::text IS NULL OR d.surface = $7)
  AND ($8::text IS NULL OR d.time_zone = $8)
  AND ($9::text IS NULL OR d.requested_channel = $9)
ORDER BY d.decided_at, d.decision_id
"""

#: $1 app, $2 campaign, $3 snapshot ids.
_POLICY_SNAPSHOTS = """
SELECT snapshot_id, arm_ids, probabilities
FROM policy_snapshots
WHERE app_id = $1 AND campaign_id = $2 AND snapshot_id = ANY($3::text[])
"""

#: $1 app, $2 campaign, $3 trigger events, $4 campaign channel, $5 start, $6 end,
#: $7 data end, $8 reward metric (outcome type), $9 cohort window (days), $10-$14 segment.
_USERS = """
WITH triggered AS (
    SELECT user_id, min(decided_at) AS first_at
    FROM decisions
    WHERE app_id = $1
      AND event_name = ANY($3::text[])
      AND requested_channel = $4
      AND decided_at >= coalesce($5::timestamptz, '-infinity')
      AND decided_at < coalesce($6::timestamptz, 'infinity')
      AND ($10::text IS NULL OR platform = $10)
      AND ($11::text IS NULL OR locale = $11)
      AND ($12::text IS NULL OR surface = $12)
      AND ($13::text IS NULL OR time_zone = $13)
      AND ($14::text IS NULL OR requested_channel = $14)
    GROUP BY user_id
)
SELECT t.user_id, t.first_at,
       (SELECT max(d.decided_at) FROM decisions d
        WHERE d.app_id = $1 AND d.user_id = t.user_id AND d.decided_at <= $7) AS last_at,
       (SELECT count(*) FROM outcomes o
        WHERE o.app_id = $1 AND o.user_id = t.user_id AND o.type = $8
          AND o.occurred_at >= coalesce($5::timestamptz, '-infinity')
          AND o.occurred_at < coalesce($6::timestamptz, 'infinity')) AS reward_events,
       (SELECT count(DISTINCT d.decision_id) FROM decisions d
        JOIN outcomes o ON o.decision_id = d.decision_id AND o.app_id = $1
        WHERE d.app_id = $1 AND d.user_id = t.user_id AND d.campaign_id = $2 AND d.show
          AND d.decided_at >= t.first_at
          AND d.decided_at < t.first_at + make_interval(days => $9)
          AND o.type IN ('tap', 'conversion')) AS engaged_first_week
FROM triggered t
ORDER BY t.user_id
"""


class ReportStore:
    """Fetches the report's rows. Handed a pool; never closes it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._config = ConfigStore(pool)

    async def campaign(self, query: ReportQuery) -> Campaign:
        """The campaign of the query; NotFound when the app has no such campaign."""
        return await self._config.get_campaign(query.app_id, query.campaign_id)

    async def fetch(self, campaign: Campaign, query: ReportQuery) -> ReportData:
        """The shown decisions, users and data end of the query, from one snapshot."""
        segment = [query.segment_value(key) for key in SEGMENT_KEYS]
        async with (
            connection(self._pool) as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            data_end: dt.datetime | None = await conn.fetchval(_DATA_END, query.app_id, query.end)
            decision_rows = await conn.fetch(
                _SHOWN_DECISIONS,
                query.app_id,
                campaign.campaign_id,
                query.start,
                query.end,
                *segment,
            )
            names = sorted({r["policy_snapshot"] for r in decision_rows} - {None})
            snapshot_rows = []
            if names:
                snapshot_rows = await conn.fetch(
                    _POLICY_SNAPSHOTS, query.app_id, campaign.campaign_id, names
                )
            user_rows = []
            if data_end is not None:
                user_rows = await conn.fetch(
                    _USERS,
                    query.app_id,
                    campaign.campaign_id,
                    sorted(campaign.trigger_events),
                    campaign.channel.value,
                    query.start,
                    query.end,
                    data_end,
                    campaign.reward_metric.value,
                    COHORT_WINDOW_DAYS,
                    *segment,
                )
        decisions = [
            ShownDecision(
                decision_id=row["decision_id"],
                user_id=row["user_id"],
                arm_id=row["arm_id"],
                propensity=row["propensity"],
                decided_at=row["decided_at"],
                impression=row["impression"],
                tap=row["tap"],
                dismiss=row["dismiss"],
                conversion=row["conversion"],
                ignore=row["ignore"],
                rewarded=row["rewarded"],
                policy_snapshot=row["policy_snapshot"],
            )
            for row in decision_rows
        ]
        snapshots = {
            row["snapshot_id"]: PolicyDistribution(
                snapshot_id=row["snapshot_id"],
                arm_ids=tuple(row["arm_ids"]),
                probabilities=tuple(
                    float("nan") if p is None else float(p) for p in row["probabilities"]
                ),
            )
            for row in snapshot_rows
        }
        users = [
            UserFact(
                user_id=row["user_id"],
                first_at=row["first_at"],
                last_at=row["last_at"] if row["last_at"] is not None else row["first_at"],
                reward_events=int(row["reward_events"]),
                engaged_first_week=int(row["engaged_first_week"]),
            )
            for row in user_rows
        ]
        return ReportData(decisions=decisions, users=users, data_end=data_end, snapshots=snapshots)

    async def report(self, query: ReportQuery) -> ArmReport:
        """The arm report of a validated query (NotFound for an unknown campaign).

        The statistics are CPU work (Monte Carlo, tests): they run in a worker thread, so that
        the event loop keeps serving while a report is computed."""
        campaign = await self.campaign(query)
        data = await self.fetch(campaign, query)
        return await asyncio.to_thread(build_report, campaign, query, data)
