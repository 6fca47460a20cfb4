-- Jobs and their segments. PostgreSQL is the only source of truth for both.

CREATE TABLE jobs (
    id                   uuid PRIMARY KEY,
    status               text NOT NULL DEFAULT 'queued'
                         CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    model                text NOT NULL,
    options              jsonb NOT NULL DEFAULT '{}',
    fingerprint          text NOT NULL,            -- sha256 of (audio, model, options): deduplication
    priority             integer NOT NULL DEFAULT 0,
    audio_sha256         text NOT NULL,
    audio_bytes          bigint NOT NULL,
    audio_deleted_at     timestamptz,              -- retention removed the file; the transcript stays
    filename             text,
    duration_s           double precision NOT NULL CHECK (duration_s >= 0),
    language             text,
    language_probability double precision,
    progress_s           double precision NOT NULL DEFAULT 0,
    attempts             integer NOT NULL DEFAULT 0,
    max_attempts         integer NOT NULL DEFAULT 3,
    worker               text,
    heartbeat_at         timestamptz,
    run_after            timestamptz NOT NULL DEFAULT now(),
    cancel_requested     boolean NOT NULL DEFAULT false,
    idempotency_key      text UNIQUE,
    webhook_url          text,
    error                text,
    error_code           text,
    device               text,
    timings              jsonb NOT NULL DEFAULT '{}',
    created_at           timestamptz NOT NULL DEFAULT now(),
    started_at           timestamptz,
    finished_at          timestamptz,
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- the claim query: queued jobs by priority, then shortest first
CREATE INDEX jobs_queued_idx ON jobs (priority DESC, duration_s, created_at) WHERE status = 'queued';
CREATE INDEX jobs_running_idx ON jobs (heartbeat_at) WHERE status = 'running';
CREATE INDEX jobs_created_idx ON jobs (created_at DESC, id DESC);
CREATE INDEX jobs_fingerprint_idx ON jobs (fingerprint) WHERE status = 'completed';
CREATE INDEX jobs_audio_idx ON jobs (audio_sha256);

CREATE TABLE segments (
    job_id            uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq               integer NOT NULL CHECK (seq >= 0),
    start_s           double precision NOT NULL,
    end_s             double precision NOT NULL,
    text              text NOT NULL,
    avg_logprob       double precision,
    no_speech_prob    double precision,
    compression_ratio double precision,
    temperature       double precision,
    tokens            integer[],
    words             jsonb,
    PRIMARY KEY (job_id, seq)
);

CREATE TABLE webhook_deliveries (
    id           bigserial PRIMARY KEY,
    job_id       uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt      integer NOT NULL,
    status_code  integer,
    error        text,
    delivered_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_job_idx ON webhook_deliveries (job_id);
