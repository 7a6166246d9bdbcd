"""PostgreSQL I/O for configuration (apps and campaigns), and the in-process snapshot of it.

Apps and campaigns are stored as their validated documents (`config.app_to_doc`,
`config.campaign_to_doc`) and re-validated when read. Every write bumps `config_revision` in the
same transaction, so that servers notice a change by reading one row. A revision is opaque: it
only grows, and two snapshots with one revision have the same content.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType, TracebackType
from typing import Any, Self

import asyncpg

from .background import periodic
from .config import app_to_doc, campaign_to_doc, parse_app, parse_campaign
from .errors import ConfigError, NotFound, ResourceExhausted, shown
from .model import App, Campaign, CampaignStatus, Channel
from .postgres import connection
from .settings import DecisionSettings

log = logging.getLogger(__name__)

_UPSERT_APP = """
INSERT INTO apps (app_id, display_name, policy)
VALUES ($1, $2, $3::jsonb)
ON CONFLICT (app_id) DO UPDATE
    SET display_name = EXCLUDED.display_name, policy = EXCLUDED.policy, updated_at = now()
    WHERE apps.display_name IS DISTINCT FROM EXCLUDED.display_name
       OR apps.policy IS DISTINCT FROM EXCLUDED.policy
       OR $4::boolean
RETURNING (xmax = 0) AS created
"""
_UPSERT_CAMPAIGN = """
INSERT INTO campaigns (app_id, campaign_id, status, spec)
VALUES ($1, $2, $3, $4::jsonb)
ON CONFLICT (app_id, campaign_id) DO UPDATE
    SET status = EXCLUDED.status, spec = EXCLUDED.spec, updated_at = now()
    WHERE campaigns.status IS DISTINCT FROM EXCLUDED.status
       OR campaigns.spec IS DISTINCT FROM EXCLUDED.spec
       OR $5::boolean
RETURNING (xmax = 0) AS created, updated_at
"""
# The revision grows with every write and is at least the write's time in milliseconds, so that a
# database restored from a backup (or recreated) never shows servers a revision they already saw
# with other content.
_BUMP_REVISION = """
UPDATE config_revision
SET revision = greatest(revision + 1, (extract(epoch FROM clock_timestamp()) * 1000)::bigint)
RETURNING revision
"""
_SELECT_REVISION = "SELECT revision FROM config_revision"
_SELECT_APP = "SELECT app_id, display_name, policy FROM apps WHERE app_id = $1"
_APP_EXISTS = "SELECT 1 FROM apps WHERE app_id = $1"
_SELECT_APPS = "SELECT app_id, display_name, policy FROM apps ORDER BY app_id"
_SELECT_CAMPAIGN = """
SELECT spec, updated_at FROM campaigns WHERE app_id = $1 AND campaign_id = $2
"""
_SELECT_APP_CAMPAIGNS = """
SELECT spec, updated_at FROM campaigns WHERE app_id = $1 ORDER BY campaign_id
"""
_SELECT_CAMPAIGNS = "SELECT spec, updated_at FROM campaigns ORDER BY app_id, campaign_id"


def _app_from_row(row: Mapping[str, Any]) -> App:
    return parse_app(
        {
            "app_id": row["app_id"],
            "display_name": row["display_name"],
            "policy": json.loads(row["policy"]),
        }
    )


def _campaign_from_row(row: Mapping[str, Any]) -> Campaign:
    # No size bound on reading: a campaign stored before the bound existed must still load.
    campaign = parse_campaign(json.loads(row["spec"]), max_bytes=None)
    return replace(campaign, updated_at=row["updated_at"])


def _policy_json(app: App) -> str:
    return json.dumps(app_to_doc(app)["policy"], sort_keys=True)


def _spec_json(campaign: Campaign) -> str:
    doc = campaign_to_doc(campaign)
    doc.pop("updated_at", None)  # a column of its own, set by the database
    return json.dumps(doc, sort_keys=True)


@dataclass(frozen=True)
class ConfigSnapshot:
    """All configuration as of one revision, indexed for the hot path."""

    revision: int
    apps: Mapping[str, App]
    #: Every campaign of each app (paused and archived included), ordered by campaign id.
    campaigns: Mapping[str, tuple[Campaign, ...]]
    _triggered: Mapping[tuple[str, str, Channel], tuple[Campaign, ...]] = field(
        init=False, repr=False, compare=False
    )
    _by_id: Mapping[tuple[str, str], Campaign] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[tuple[str, str, Channel], list[Campaign]] = {}
        by_id: dict[tuple[str, str], Campaign] = {}
        for app_id, campaigns in self.campaigns.items():
            for campaign in campaigns:
                by_id[(app_id, campaign.campaign_id)] = campaign
                if campaign.status is not CampaignStatus.ACTIVE:
                    continue
                for event in campaign.trigger_events:
                    index.setdefault((app_id, event, campaign.channel), []).append(campaign)
        frozen = {
            key: tuple(sorted(found, key=lambda c: (-c.priority, c.campaign_id)))
            for key, found in index.items()
        }
        # Frozen dataclass: the derived indexes are set once, here.
        object.__setattr__(self, "_triggered", MappingProxyType(frozen))
        object.__setattr__(self, "_by_id", MappingProxyType(by_id))

    @classmethod
    def build(
        cls, revision: int, apps: Iterable[App], campaigns: Iterable[Campaign]
    ) -> ConfigSnapshot:
        """A snapshot from plain lists of apps and campaigns."""
        grouped: dict[str, list[Campaign]] = {}
        for campaign in campaigns:
            grouped.setdefault(campaign.app_id, []).append(campaign)
        return cls(
            revision=revision,
            apps=MappingProxyType({app.app_id: app for app in apps}),
            campaigns=MappingProxyType(
                {
                    app_id: tuple(sorted(found, key=lambda c: c.campaign_id))
                    for app_id, found in grouped.items()
                }
            ),
        )

    def triggered(self, app_id: str, event_name: str, channel: Channel) -> tuple[Campaign, ...]:
        """Active campaigns of the app triggered by the event on the channel, best first
        (priority descending, then campaign id)."""
        return self._triggered.get((app_id, event_name, channel), ())

    def campaign(self, app_id: str, campaign_id: str) -> Campaign | None:
        """One campaign, whatever its status, or None."""
        return self._by_id.get((app_id, campaign_id))


EMPTY_SNAPSHOT = ConfigSnapshot.build(0, (), ())


#: Campaigns not archived that one app may have. Every one is in every server's memory and
#: tried on each event it triggers, so one app with thousands would slow every app's decisions.
MAX_LIVE_CAMPAIGNS_PER_APP = 100
_LOCK_APP = "SELECT 1 FROM apps WHERE app_id = $1 FOR UPDATE"
_COUNT_LIVE_CAMPAIGNS = """
SELECT count(*) FROM campaigns WHERE app_id = $1 AND campaign_id <> $2 AND status <> 'archived'
"""


async def _check_live_campaigns(conn: asyncpg.Connection, campaign: Campaign) -> None:
    """ResourceExhausted when the campaign would be one more than the app may have live. The
    app's row is locked, so that two writes at once cannot both take the last place."""
    await conn.execute(_LOCK_APP, campaign.app_id)
    live = await conn.fetchval(_COUNT_LIVE_CAMPAIGNS, campaign.app_id, campaign.campaign_id)
    if live >= MAX_LIVE_CAMPAIGNS_PER_APP:
        raise ResourceExhausted(
            f"app {shown(campaign.app_id)} has {live} campaigns that are not archived, as many "
            f"as an app may ({MAX_LIVE_CAMPAIGNS_PER_APP}); archive one first"
        )


class ConfigStore:
    """Reads and writes apps and campaigns. Handed a pool; never closes it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def put_app(self, app: App) -> App:
        """Creates the app or replaces it whole; returns it as stored."""
        async with connection(self._pool) as conn, conn.transaction():
            await conn.fetchrow(_UPSERT_APP, app.app_id, app.display_name, _policy_json(app), True)
            await conn.execute(_BUMP_REVISION)
        return app

    async def get_app(self, app_id: str) -> App:
        """The app; NotFound when it does not exist."""
        async with connection(self._pool) as conn:
            row = await conn.fetchrow(_SELECT_APP, app_id)
        if row is None:
            raise NotFound(f"app {shown(app_id)} does not exist")
        return _app_from_row(row)

    async def put_campaign(self, campaign: Campaign) -> Campaign:
        """Creates the campaign or replaces it whole; NotFound when its app does not exist.
        Returns it as stored, with `updated_at` set."""
        async with connection(self._pool) as conn, conn.transaction():
            if campaign.status is not CampaignStatus.ARCHIVED:
                await _check_live_campaigns(conn, campaign)
            row = await self._upsert_campaign(conn, campaign, force=True)
            await conn.execute(_BUMP_REVISION)
        assert row is not None  # forced: the row is always written
        return replace(campaign, updated_at=row["updated_at"])

    async def get_campaign(self, app_id: str, campaign_id: str) -> Campaign:
        """One campaign; NotFound when it does not exist."""
        async with connection(self._pool) as conn:
            row = await conn.fetchrow(_SELECT_CAMPAIGN, app_id, campaign_id)
        if row is None:
            raise NotFound(f"campaign {shown(campaign_id)} of app {shown(app_id)} does not exist")
        return _campaign_from_row(row)

    async def list_campaigns(self, app_id: str) -> list[Campaign]:
        """Every campaign of the app, ordered by id; NotFound when the app does not exist."""
        async with connection(self._pool) as conn, conn.transaction(readonly=True):
            if await conn.fetchval(_APP_EXISTS, app_id) is None:
                raise NotFound(f"app {shown(app_id)} does not exist")
            rows = await conn.fetch(_SELECT_APP_CAMPAIGNS, app_id)
        return [_campaign_from_row(row) for row in rows]

    async def apply(self, apps: Iterable[App], campaigns: Iterable[Campaign]) -> dict[str, int]:
        """Writes apps, then campaigns, in ONE transaction: all or nothing.

        Rows equal to what is stored are left alone (counted as unchanged). Returns the counts
        `apps_created`, `apps_updated`, `apps_unchanged`, the same for campaigns, and `revision`.
        NotFound when a campaign's app is neither stored nor among `apps`.
        """
        counts = dict.fromkeys(
            (
                "apps_created",
                "apps_updated",
                "apps_unchanged",
                "campaigns_created",
                "campaigns_updated",
                "campaigns_unchanged",
            ),
            0,
        )
        async with connection(self._pool) as conn, conn.transaction():
            for app in apps:
                row = await conn.fetchrow(
                    _UPSERT_APP, app.app_id, app.display_name, _policy_json(app), False
                )
                counts[_outcome("apps", row)] += 1
            for campaign in campaigns:
                row = await self._upsert_campaign(conn, campaign, force=False)
                counts[_outcome("campaigns", row)] += 1
            changed = any(v for k, v in counts.items() if not k.endswith("_unchanged"))
            if changed:
                revision = await conn.fetchval(_BUMP_REVISION)
            else:
                revision = await conn.fetchval(_SELECT_REVISION)
        counts["revision"] = int(revision)
        return counts

    async def revision(self) -> int:
        """The current configuration revision."""
        async with connection(self._pool) as conn:
            return int(await conn.fetchval(_SELECT_REVISION))

    async def load_snapshot(self) -> ConfigSnapshot:
        """Everything, read consistently in one transaction. A stored campaign that no longer
        validates is logged and left out rather than failing the whole snapshot."""
        async with (
            connection(self._pool) as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            revision = int(await conn.fetchval(_SELECT_REVISION))
            app_rows = await conn.fetch(_SELECT_APPS)
            campaign_rows = await conn.fetch(_SELECT_CAMPAIGNS)
        apps: list[App] = []
        for row in app_rows:
            try:
                apps.append(_app_from_row(row))
            except ConfigError as exc:
                log.error(
                    "config_invalid_app",
                    extra={"app_id": row["app_id"], "path": exc.path, "error": exc.message},
                )
        known = {app.app_id for app in apps}
        campaigns: list[Campaign] = []
        for row in campaign_rows:
            try:
                campaign = _campaign_from_row(row)
            except ConfigError as exc:
                log.error("config_invalid_campaign", extra={"path": exc.path, "error": exc.message})
                continue
            if campaign.app_id in known:
                campaigns.append(campaign)
        return ConfigSnapshot.build(revision, apps, campaigns)

    async def _upsert_campaign(
        self, conn: asyncpg.Connection, campaign: Campaign, *, force: bool
    ) -> Mapping[str, Any] | None:
        """The upserted row; None when `force` is false and the stored row was equal."""
        try:
            row: Mapping[str, Any] | None = await conn.fetchrow(
                _UPSERT_CAMPAIGN,
                campaign.app_id,
                campaign.campaign_id,
                campaign.status.value,
                _spec_json(campaign),
                force,
            )
        except asyncpg.ForeignKeyViolationError as exc:
            raise NotFound(
                f"app {shown(campaign.app_id)} of campaign {shown(campaign.campaign_id)} "
                "does not exist"
            ) from exc
        return row


def _outcome(kind: str, row: Mapping[str, Any] | None) -> str:
    if row is None:
        return f"{kind}_unchanged"
    return f"{kind}_created" if row["created"] else f"{kind}_updated"


class ConfigCache:
    """Keeps a fresh ConfigSnapshot in memory.

    Loads it on enter, then polls `revision()` every `settings.config_refresh_s` and reloads when
    it changed. Errors are logged and retried at the next tick; the last good snapshot stays.
    """

    def __init__(self, store: ConfigStore, settings: DecisionSettings) -> None:
        self._store = store
        self._snapshot = EMPTY_SNAPSHOT
        self._lock = asyncio.Lock()
        self._failing = False
        self._poller = periodic(
            "nudge-config-refresh",
            settings.config_refresh_s,
            self._poll,
            crash_event="config_refresh_crashed",
        )

    @property
    def snapshot(self) -> ConfigSnapshot:
        """The latest snapshot loaded."""
        return self._snapshot

    async def __aenter__(self) -> Self:
        await self.refresh_now()
        self._poller.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._poller.stop()

    async def refresh_now(self) -> ConfigSnapshot:
        """Reloads the snapshot at once (raises StoreUnavailable when PostgreSQL is down)."""
        async with self._lock:
            # Loads are serialised by the lock, so the one that finishes last read last: it
            # wins even with a lower revision (a database restored from a backup).
            snapshot = await self._store.load_snapshot()
            if snapshot.revision != self._snapshot.revision:
                log.info("config_reloaded", extra={"revision": snapshot.revision})
            self._snapshot = snapshot
            return snapshot

    async def _poll(self) -> None:
        """One poll: reload when the revision changed. A failure is logged once, until a poll
        succeeds again; the last good snapshot stays."""
        try:
            if await self._store.revision() != self._snapshot.revision:
                await self.refresh_now()
            if self._failing:
                log.info("config_refresh_recovered", extra={"revision": self._snapshot.revision})
            self._failing = False
        except Exception as exc:  # noqa: BLE001 - the loop must outlive any failure
            if not self._failing:
                log.warning(
                    "config_refresh_failed",
                    extra={
                        "error": f"{type(exc).__name__}: {exc}",
                        "revision": self._snapshot.revision,
                    },
                )
            self._failing = True
