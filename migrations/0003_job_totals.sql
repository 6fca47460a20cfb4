-- Jobs that reached a final state, counted at each arrival and never decremented: /metrics exports
-- them as a Prometheus counter (asr_jobs_finished_total), which must not go down when `asrctl jobs
-- purge` deletes rows or `asrctl jobs retry` moves a failed job back to the queue.

CREATE TABLE job_totals (
    status  text PRIMARY KEY CHECK (status IN ('completed', 'failed', 'cancelled')),
    n       bigint NOT NULL DEFAULT 0 CHECK (n >= 0)
);

-- what the table already holds counts as arrived
INSERT INTO job_totals (status, n)
SELECT status, count(*) FROM jobs WHERE status IN ('completed', 'failed', 'cancelled') GROUP BY status;

CREATE FUNCTION jobs_count_final_state() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_totals (status, n) VALUES (NEW.status, 1)
    ON CONFLICT (status) DO UPDATE SET n = job_totals.n + 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_final_state_update AFTER UPDATE OF status ON jobs FOR EACH ROW
    WHEN (NEW.status IN ('completed', 'failed', 'cancelled') AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION jobs_count_final_state();

CREATE TRIGGER jobs_final_state_insert AFTER INSERT ON jobs FOR EACH ROW
    WHEN (NEW.status IN ('completed', 'failed', 'cancelled'))
    EXECUTE FUNCTION jobs_count_final_state();
