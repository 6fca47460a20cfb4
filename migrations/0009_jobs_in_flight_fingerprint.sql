-- Deduplication of jobs still in flight: a submission with the same audio, model and options as a job
-- of the same key that is queued or running joins that job (pipeline/intake.py, queries.find_same).
-- 0001's jobs_fingerprint_idx covers completed jobs only.

CREATE INDEX jobs_in_flight_fingerprint_idx ON jobs (fingerprint) WHERE status IN ('queued', 'running');
