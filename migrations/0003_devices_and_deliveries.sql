-- Devices (push tokens) and push delivery: the state of the delivery worker.
-- Depends only on 0001 (apps, push_jobs).

-- A device token registered by an app for one of its users. One row per (app, platform, token):
-- a token registered again by another user moves to that user (the phone changed hands), so a
-- push can never reach the previous user's account. Rows are never deleted, only retired
-- (the provider reported the token gone) or unregistered (the app said so), because
-- push_deliveries refers to them.
CREATE TABLE devices (
    device_id     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    app_id        text NOT NULL REFERENCES apps (app_id),
    user_id       text NOT NULL,
    platform      text NOT NULL CHECK (platform IN ('ios', 'android')),
    token         text NOT NULL,
    environment   text NOT NULL CHECK (environment IN ('production', 'sandbox')),
    status        text NOT NULL DEFAULT 'active'
                  CHECK (status IN ('active', 'retired', 'unregistered')),
    status_reason text NOT NULL DEFAULT '',   -- e.g. 'apns 410 Unregistered', 'fcm UNREGISTERED'
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),   -- the last (re-)registration or change
    retired_at    timestamptz,
    UNIQUE (app_id, platform, token)
);
CREATE INDEX devices_active_user ON devices (app_id, user_id) WHERE status = 'active';

-- The worker's columns of push_jobs. Job status values: waiting 'queued' (as written by the
-- server), 'deferred' (moved past quiet hours by the worker), 'retrying' (a device waits for
-- its back-off); 'sending' while a worker holds the lease; final 'sent' (at least one device
-- got it), 'unknown' (none surely, at least one possibly), 'dead_lettered', 'failed',
-- 'expired', 'dropped' (quiet hours, campaign says drop).
ALTER TABLE push_jobs
    ADD COLUMN run_after   timestamptz,   -- not before this (NULL: deliver_at)
    ADD COLUMN claimed_by  text,          -- the worker holding the lease
    ADD COLUMN lease_until timestamptz,   -- the lease ends; another worker may then take over
    ADD COLUMN last_error  text NOT NULL DEFAULT '';
CREATE INDEX push_jobs_due ON push_jobs ((coalesce(run_after, deliver_at)))
    WHERE status IN ('queued', 'deferred', 'retrying', 'sending');

-- One row per (job, device): the unit of at-most-once delivery. 'sending' is committed before
-- the request goes out and replaced by the result after it; a row found in 'sending' by a later
-- worker was possibly sent, and becomes 'unknown' instead of being sent again.
CREATE TABLE push_deliveries (
    job_id        uuid NOT NULL REFERENCES push_jobs (job_id),
    device_id     uuid NOT NULL REFERENCES devices (device_id),
    status        text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'sending', 'sent', 'unknown', 'retrying',
                                    'failed', 'token_retired', 'dead_lettered', 'skipped')),
    attempts      integer NOT NULL DEFAULT 0,   -- requests started (a 'sending' mark each)
    run_after     timestamptz,                  -- 'retrying': not before this
    attempt_id    uuid,                         -- the attempt that holds or held 'sending'
    worker        text NOT NULL DEFAULT '',     -- the worker of that attempt
    provider_id   text NOT NULL DEFAULT '',     -- apns-id, or the FCM message name
    error         text NOT NULL DEFAULT '',     -- the last provider answer or failure
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    sent_at       timestamptz,
    PRIMARY KEY (job_id, device_id)
);
CREATE INDEX push_deliveries_dead ON push_deliveries (updated_at) WHERE status = 'dead_lettered';
CREATE INDEX push_deliveries_device ON push_deliveries (device_id);

-- Every delivery transition, append-only, against the decision (job_id = decision_id).
-- device_id is NULL for events of the job as a whole (deferred, expired, dropped, ...).
CREATE TABLE push_delivery_events (
    event_id  bigserial PRIMARY KEY,
    job_id    uuid NOT NULL,
    device_id uuid,
    status    text NOT NULL,
    detail    text NOT NULL DEFAULT '',
    worker    text NOT NULL DEFAULT '',
    at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX push_delivery_events_job ON push_delivery_events (job_id, event_id);
