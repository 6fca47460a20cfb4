-- Speaker diarization (issue 19): a stored step of a job. The row in `diarizations` is the step's state
-- (running with its progress, then done with the speaker count); the turns are written in the same
-- transaction that marks it done, so a job resumed after a crash either has all its turns or reruns the
-- step. `names` maps speaker labels (A, B, …) to the names a client gave (known speakers, PATCH).

CREATE TABLE diarizations (
    job_id       uuid PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    engine       text NOT NULL,
    status       text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'done')),
    progress_s   double precision NOT NULL DEFAULT 0,
    num_speakers integer CHECK (num_speakers >= 0),
    names        jsonb NOT NULL DEFAULT '{}',
    seconds      double precision,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE diarization_turns (
    job_id  uuid NOT NULL REFERENCES diarizations (job_id) ON DELETE CASCADE,
    seq     integer NOT NULL CHECK (seq >= 0),
    start_s double precision NOT NULL,
    end_s   double precision NOT NULL CHECK (end_s >= start_s),
    speaker integer NOT NULL CHECK (speaker >= 0),
    PRIMARY KEY (job_id, seq)
);
