-- The bandit's full arm-choice distribution each decision was drawn from, so that reports can
-- compare the observed allocation with the expected one (the sum of every arm's probability).
CREATE TABLE policy_snapshots (
    snapshot_id   text PRIMARY KEY,          -- a hash of the campaign, its arm ids and probabilities
    app_id        text NOT NULL,
    campaign_id   text NOT NULL,
    arm_ids       text[] NOT NULL,           -- in the campaign's arm order
    probabilities double precision[] NOT NULL, -- the probability of drawing each arm; sums to 1
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX policy_snapshots_campaign ON policy_snapshots (app_id, campaign_id);

ALTER TABLE decisions ADD COLUMN policy_snapshot text;  -- the snapshot the chosen arm was drawn from
