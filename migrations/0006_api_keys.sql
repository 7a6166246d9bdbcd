-- API keys: every RPC but health carries one. A key belongs to one app and holds scopes; only
-- a hash of its secret is kept. The key id is the public part of the key, shown in listings
-- and logs; the secret is shown once, when the key is created.
CREATE TABLE api_keys (
    key_id      text PRIMARY KEY CHECK (key_id ~ '^[0-9a-f]{16}$'),
    app_id      text NOT NULL CHECK (app_id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    name        text NOT NULL DEFAULT '' CHECK (length(name) <= 128),
    scopes      text[] NOT NULL
                CHECK (cardinality(scopes) > 0 AND scopes <@ ARRAY['decide', 'report', 'admin']),
    secret_hash bytea NOT NULL CHECK (length(secret_hash) = 32),  -- SHA-256 of the secret
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_app ON api_keys (app_id, created_at);
