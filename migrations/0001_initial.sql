-- The initial schema: configuration, the decision log, outcomes and push jobs.

-- Apps (tenants) and their throttle policy, stored as the validated JSON document.
CREATE TABLE apps (
    app_id       text PRIMARY KEY,
    display_name text NOT NULL DEFAULT '',
    policy       jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Campaigns, arms included, stored as the validated JSON document.
CREATE TABLE campaigns (
    app_id      text NOT NULL REFERENCES apps (app_id),
    campaign_id text NOT NULL,
    status      text NOT NULL CHECK (status IN ('active', 'paused', 'archived')),
    spec        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (app_id, campaign_id)
);

-- One row; bumped by every configuration write so that servers notice changes cheaply.
CREATE TABLE config_revision (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    revision  bigint NOT NULL
);
INSERT INTO config_revision (singleton, revision) VALUES (true, 0);

-- Every Decide, shown or not. Written in batches by the log writer, never on the request path.
CREATE TABLE decisions (
    decision_id       uuid PRIMARY KEY,
    app_id            text NOT NULL,
    user_id           text NOT NULL,
    decided_at        timestamptz NOT NULL,   -- the decision time (the event time in replays)
    received_at       timestamptz NOT NULL,   -- the server's clock when the request arrived
    event_time        timestamptz,            -- as sent by the client
    event_name        text NOT NULL,
    event_properties  jsonb,
    requested_channel text NOT NULL,
    surface           text NOT NULL DEFAULT '',
    time_zone         text NOT NULL,
    locale            text NOT NULL DEFAULT '',
    platform          text NOT NULL DEFAULT 'unspecified',
    client_request_id text,
    show              boolean NOT NULL,
    reason            text NOT NULL,
    campaign_id       text,
    arm_id            text,
    channel           text,
    propensity        double precision,
    next_eligible_at  timestamptz,
    deliver_at        timestamptz,
    candidates        jsonb                   -- what was considered, for explaining the decision
);
CREATE INDEX decisions_campaign_time ON decisions (app_id, campaign_id, decided_at);
CREATE INDEX decisions_user_time ON decisions (app_id, user_id, decided_at);

-- Every accepted outcome. One row per decision and outcome type.
CREATE TABLE outcomes (
    outcome_id  bigserial PRIMARY KEY,
    decision_id uuid NOT NULL,
    app_id      text NOT NULL,
    user_id     text NOT NULL,
    campaign_id text,
    arm_id      text,
    type        text NOT NULL,
    value       double precision,
    occurred_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    rewarded    boolean NOT NULL DEFAULT false,
    UNIQUE (decision_id, type)
);
CREATE INDEX outcomes_campaign_time ON outcomes (app_id, campaign_id, occurred_at);

-- Push jobs, one per granted push decision, consumed by the delivery worker.
CREATE TABLE push_jobs (
    job_id      uuid PRIMARY KEY,            -- equals the decision id
    app_id      text NOT NULL,
    user_id     text NOT NULL,
    campaign_id text NOT NULL,
    arm_id      text NOT NULL,
    payload     jsonb NOT NULL,              -- title, body, action_url, data, locale
    deliver_at  timestamptz NOT NULL,        -- not before this time
    expires_at  timestamptz NOT NULL,        -- not after this time
    time_zone   text NOT NULL,
    status      text NOT NULL DEFAULT 'queued',
    attempts    integer NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX push_jobs_ready ON push_jobs (status, deliver_at);
