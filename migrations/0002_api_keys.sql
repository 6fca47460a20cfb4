-- API keys (issue 8). Only a SHA-256 of each token is stored; the token is shown once at creation.

CREATE TABLE api_keys (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    hash        text NOT NULL UNIQUE,                 -- hex sha256 of the whole token
    prefix      text NOT NULL,                        -- first characters of the token, to recognise it
    rate        integer CHECK (rate IS NULL OR rate >= 0),  -- requests per minute; NULL: the default
    admin       boolean NOT NULL DEFAULT false,       -- sees and cancels every job
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
-- one active key per name (a revoked name can be reused)
CREATE UNIQUE INDEX api_keys_active_name_idx ON api_keys (name) WHERE revoked_at IS NULL;

-- the key that created a job; NULL for jobs created without a key (loopback, or keys switched off)
ALTER TABLE jobs ADD COLUMN api_key_id bigint REFERENCES api_keys (id);
CREATE INDEX jobs_api_key_created_idx ON jobs (api_key_id, created_at DESC, id DESC);
