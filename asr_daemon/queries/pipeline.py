"""The worker's moves: claim the next job, heartbeat it, and end it (completed, failed, retried,
checkpointed, cancelled); the reaper's hand-back of jobs whose worker died.

Each state change is one statement guarded by the state it expects (`WHERE status = ... AND worker =
...`); when no row comes back, someone else moved the job first and the caller backs off. The moves
each may make are `jobs.MOVES`, checked against PostgreSQL by tests/integration/test_transitions.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from asr_daemon.jobs import ErrorCode, Job, Status
from asr_daemon.queries.conn import Conn, Row

#: Within a priority, shortest audio first, aged: each second waited counts as this many seconds
#: less audio, so a long file waits at most (its duration / AGING) behind a stream of short ones.
AGING = 10.0


class Reaped(NamedTuple):
    """A job the reaper handed back to the queue (or failed: its attempts were spent)."""

    id: uuid.UUID
    status: Status
    attempts: int


async def claim(conn: Conn, worker: str, kinds: Sequence[str] | None = None) -> Job | None:
    """Take the next runnable job (FOR UPDATE SKIP LOCKED) and mark it running for `worker`, a name
    unique to this claim (the statements below are guarded by it: a name per process would let a run
    whose job was handed back and claimed again by the same process go on writing); `kinds`: only those."""
    row: Row | None = await conn.fetchrow(
        f"""
        UPDATE jobs SET status = 'running', worker = $1, attempts = attempts + 1, heartbeat_at = now(),
                        started_at = coalesce(started_at, now()), updated_at = now()
        WHERE id = (
            SELECT id FROM jobs
            WHERE status = 'queued' AND run_after <= now() AND ($2::text[] IS NULL OR kind = ANY($2::text[]))
            ORDER BY priority DESC,
                     duration_s - {AGING} * extract(epoch FROM now() - created_at),
                     created_at
            LIMIT 1
            FOR UPDATE SKIP LOCKED
        )
        RETURNING *
        """,
        worker,
        None if kinds is None else list(kinds),
    )
    return None if row is None else Job.from_row(row)


async def heartbeat(conn: Conn, runs: Mapping[uuid.UUID, tuple[str, float]]) -> dict[uuid.UUID, bool]:
    """Heartbeat running jobs, given as {job id: (the claim's worker, progress)}; returns {job id: cancel
    requested} for those each claim still holds."""
    if not runs:
        return {}
    ids = list(runs)
    rows = await conn.fetch(
        """
        UPDATE jobs j SET heartbeat_at = now(), progress_s = greatest(j.progress_s, p.progress)
        FROM unnest($1::uuid[], $2::text[], $3::float8[]) AS p(id, worker, progress)
        WHERE j.id = p.id AND j.status = 'running' AND j.worker = p.worker
        RETURNING j.id, j.cancel_requested
        """,
        ids,
        [runs[i][0] for i in ids],
        [runs[i][1] for i in ids],
    )
    return {r["id"]: r["cancel_requested"] for r in rows}


async def set_language(conn: Conn, job_id: uuid.UUID, worker: str, language: str, probability: float) -> None:
    """Record the detected language of a running job."""
    await conn.execute(
        "UPDATE jobs SET language = $3, language_probability = $4 WHERE id = $1 AND worker = $2",
        job_id,
        worker,
        language,
        probability,
    )


async def complete(conn: Conn, job_id: uuid.UUID, worker: str, timings: Mapping[str, float], device: str) -> bool:
    """running → completed, for the worker that holds the job."""
    row = await conn.fetchrow(
        """
        UPDATE jobs SET status = 'completed', finished_at = now(), updated_at = now(), progress_s = duration_s,
                        timings = timings || $3, device = $4, worker = NULL, heartbeat_at = NULL
        WHERE id = $1 AND status = 'running' AND worker = $2
        RETURNING id
        """,
        job_id,
        worker,
        timings,
        device,
    )
    return row is not None


async def fail(conn: Conn, job_id: uuid.UUID, worker: str, error: str, code: ErrorCode) -> bool:
    """running → failed (no retry)."""
    row = await conn.fetchrow(
        """
        UPDATE jobs SET status = 'failed', finished_at = now(), updated_at = now(), error = $3, error_code = $4,
                        worker = NULL, heartbeat_at = NULL
        WHERE id = $1 AND status = 'running' AND worker = $2
        RETURNING id
        """,
        job_id,
        worker,
        error,
        str(code),
    )
    return row is not None


#: Where a running job goes when its run ends unfinished (a crash, a drain, a dead worker): a client
#: asked to cancel it → cancelled (it must not run again); else `otherwise`.
_UNFINISHED = "CASE WHEN cancel_requested THEN 'cancelled' {otherwise} END"
_AGAIN = _UNFINISHED.format(otherwise="WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued'")
_SPENT = "cancel_requested OR attempts >= max_attempts"  # the run is over for good


async def retry_or_fail(conn: Conn, job_id: uuid.UUID, worker: str, error: str, backoff: float) -> Status | None:
    """running → queued after a backoff (doubling per attempt), → failed when attempts are spent, or
    → cancelled when a cancel was asked for meanwhile."""
    status: str | None = await conn.fetchval(
        f"""
        UPDATE jobs SET status = {_AGAIN},
                        finished_at = CASE WHEN {_SPENT} THEN now() END,
                        error = CASE WHEN cancel_requested THEN error ELSE $3 END,
                        error_code = CASE WHEN cancel_requested THEN error_code ELSE $5 END, updated_at = now(),
                        run_after = now() + make_interval(secs => $4 * power(2, greatest(attempts - 1, 0))),
                        worker = NULL, heartbeat_at = NULL
        WHERE id = $1 AND status = 'running' AND worker = $2
        RETURNING status
        """,
        job_id,
        worker,
        error,
        backoff,
        str(ErrorCode.INTERNAL_ERROR),
    )
    return None if status is None else Status(status)


async def checkpoint(conn: Conn, job_id: uuid.UUID, worker: str) -> bool:
    """running → queued without spending an attempt (drain on shutdown; segments so far are kept), or
    → cancelled when a cancel was asked for meanwhile."""
    row = await conn.fetchrow(
        f"""
        UPDATE jobs SET status = {_UNFINISHED.format(otherwise="ELSE 'queued'")},
                        finished_at = CASE WHEN cancel_requested THEN now() END,
                        attempts = greatest(attempts - 1, 0), worker = NULL, heartbeat_at = NULL, updated_at = now()
        WHERE id = $1 AND status = 'running' AND worker = $2
        RETURNING id
        """,
        job_id,
        worker,
    )
    return row is not None


async def mark_cancelled(conn: Conn, job_id: uuid.UUID, worker: str) -> bool:
    """running → cancelled, by the worker that stopped it."""
    row = await conn.fetchrow(
        """
        UPDATE jobs SET status = 'cancelled', finished_at = now(), updated_at = now(), worker = NULL,
                        heartbeat_at = NULL
        WHERE id = $1 AND status = 'running' AND worker = $2
        RETURNING id
        """,
        job_id,
        worker,
    )
    return row is not None


async def reap(conn: Conn, stale_after: float, backoff: float) -> list[Reaped]:
    """Hand running jobs with a stale heartbeat back to the queue, fail them when attempts are spent, or
    cancel them when a client asked to (the dead worker never heard it)."""
    rows: list[Row] = await conn.fetch(
        f"""
        UPDATE jobs SET status = {_AGAIN},
                        finished_at = CASE WHEN {_SPENT} THEN now() END,
                        error = CASE WHEN attempts >= max_attempts AND NOT cancel_requested
                                     THEN 'the worker stopped answering on every attempt' ELSE error END,
                        error_code = CASE WHEN attempts >= max_attempts AND NOT cancel_requested
                                          THEN $3 ELSE error_code END,
                        run_after = now() + make_interval(secs => $2 * power(2, greatest(attempts - 1, 0))),
                        worker = NULL, heartbeat_at = NULL, updated_at = now()
        WHERE status = 'running' AND heartbeat_at < now() - make_interval(secs => $1)
          -- a live job whose session is open (its process holds live.store.LOCK_SPACE's lock) is not stale
          AND NOT (kind = 'live' AND EXISTS (
              SELECT 1 FROM pg_locks l
              WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.classid = 1279874629
                AND l.objid = hashtext(jobs.id::text)::oid
                AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())))
        RETURNING id, status, attempts
        """,
        stale_after,
        backoff,
        str(ErrorCode.WORKER_LOST),
    )
    return [Reaped(r["id"], Status(r["status"]), r["attempts"]) for r in rows]
