"""Every SQL statement of the job pipeline, one function each (the webhook_deliveries table's own
statements live in webhooks.py, the orphan sweep's one in orphans.py).

State changes are single statements guarded by the state they expect (`WHERE status = ... AND
worker = ...`); when no row comes back, someone else moved the job first and the caller backs off.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import asyncpg.pool

#: a pool, or one connection (a plain one, or one acquired from the pool, e.g. for a transaction)
Conn = asyncpg.Connection | asyncpg.Pool | asyncpg.pool.PoolConnectionProxy
Row = asyncpg.Record

#: pg_advisory_xact_lock key of `lock_queue` ("asrq")
QUEUE_LOCK = 0x61737271

#: Within a priority, shortest audio first, aged: each second waited counts as this many seconds
#: less audio, so a long file waits at most (its duration / AGING) behind a stream of short ones.
AGING = 10.0


async def insert_job(
    conn: Conn,
    *,
    job_id: uuid.UUID,
    model: str,
    options: dict[str, Any],
    fingerprint: str,
    priority: int,
    audio_sha256: str,
    audio_bytes: int,
    filename: str | None,
    duration_s: float,
    max_attempts: int,
    idempotency_key: str | None,
    webhook_url: str | None,
    api_key_id: int | None = None,
    kind: str = "file",
) -> Row:
    """Insert a queued job; raises `UniqueViolationError` on a reused idempotency key."""
    row: Row | None = await conn.fetchrow(
        """
        INSERT INTO jobs (id, model, options, fingerprint, priority, audio_sha256, audio_bytes, filename,
                          duration_s, max_attempts, idempotency_key, webhook_url, api_key_id, kind)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
        RETURNING *
        """,
        job_id,
        model,
        options,
        fingerprint,
        priority,
        audio_sha256,
        audio_bytes,
        filename,
        duration_s,
        max_attempts,
        idempotency_key,
        webhook_url,
        api_key_id,
        kind,
    )
    assert row is not None  # the statement always returns one row
    return row


async def get_job(conn: Conn, job_id: uuid.UUID) -> Row | None:
    """One job by id."""
    row: Row | None = await conn.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
    return row


async def get_by_idempotency_key(conn: Conn, key: str) -> Row | None:
    """The job created with this Idempotency-Key, if any."""
    row: Row | None = await conn.fetchrow("SELECT * FROM jobs WHERE idempotency_key = $1", key)
    return row


async def find_completed(conn: Conn, fingerprint: str, api_key_id: int | None = None) -> Row | None:
    """A completed job of the same key with the same audio, model and options (deduplication)."""
    row: Row | None = await conn.fetchrow(
        "SELECT * FROM jobs WHERE fingerprint = $1 AND status = 'completed' AND api_key_id IS NOT DISTINCT FROM $2 "
        "ORDER BY finished_at DESC LIMIT 1",
        fingerprint,
        api_key_id,
    )
    return row


async def lock_queue(conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy) -> None:
    """Hold the queue lock until the transaction on `conn` ends: a count and an insert under it are one step,
    so submissions that finish their uploads together cannot overshoot ASR_MAX_QUEUED_JOBS."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", QUEUE_LOCK)


async def count_queued(conn: Conn) -> int:
    """Jobs waiting for a worker."""
    n: int = await conn.fetchval("SELECT count(*) FROM jobs WHERE status = 'queued'")
    return n


async def queue_stats(conn: Conn) -> Row:
    """Queued and running counts and the oldest queued job's age in seconds."""
    row: Row | None = await conn.fetchrow(
        """
        SELECT count(*) FILTER (WHERE status = 'queued') AS queued,
               count(*) FILTER (WHERE status = 'running') AS running,
               coalesce(extract(epoch FROM now() - min(created_at) FILTER (WHERE status = 'queued')), 0)
                   AS oldest_queued_s
        FROM jobs WHERE status IN ('queued', 'running')
        """
    )
    assert row is not None  # the statement always returns one row
    return row


async def list_jobs(
    conn: Conn,
    *,
    status: str | None,
    limit: int,
    before: tuple[datetime, uuid.UUID] | None,
    everyone: bool = True,
    api_key_id: int | None = None,
) -> list[Row]:
    """Newest first, optionally one status, keyset-paginated by (created_at, id).

    Unless `everyone`, only the jobs of key `api_key_id` (None: the jobs made without a key).
    """
    rows: list[Row] = await conn.fetch(
        """
        SELECT * FROM jobs
        WHERE ($1::text IS NULL OR status = $1)
          AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid))
          AND ($5 OR api_key_id IS NOT DISTINCT FROM $6::bigint)
        ORDER BY created_at DESC, id DESC
        LIMIT $4
        """,
        status,
        before[0] if before else None,
        before[1] if before else None,
        limit,
        everyone,
        api_key_id,
    )
    return rows


async def claim(conn: Conn, worker: str) -> Row | None:
    """Take the next runnable job (FOR UPDATE SKIP LOCKED) and mark it running for `worker`."""
    row: Row | None = await conn.fetchrow(
        f"""
        UPDATE jobs SET status = 'running', worker = $1, attempts = attempts + 1, heartbeat_at = now(),
                        started_at = coalesce(started_at, now()), updated_at = now()
        WHERE id = (
            SELECT id FROM jobs
            WHERE status = 'queued' AND run_after <= now()
            ORDER BY priority DESC,
                     duration_s - {AGING} * extract(epoch FROM now() - created_at),
                     created_at
            LIMIT 1
            FOR UPDATE SKIP LOCKED
        )
        RETURNING *
        """,
        worker,
    )
    return row


async def heartbeat(conn: Conn, worker: str, progress: dict[uuid.UUID, float]) -> dict[uuid.UUID, bool]:
    """Heartbeat the running jobs of `worker`; returns {job id: cancel requested} for those still ours."""
    if not progress:
        return {}
    ids = list(progress)
    rows = await conn.fetch(
        """
        UPDATE jobs j SET heartbeat_at = now(), progress_s = greatest(j.progress_s, p.progress)
        FROM unnest($2::uuid[], $3::float8[]) AS p(id, progress)
        WHERE j.id = p.id AND j.status = 'running' AND j.worker = $1
        RETURNING j.id, j.cancel_requested
        """,
        worker,
        ids,
        [progress[i] for i in ids],
    )
    return {r["id"]: r["cancel_requested"] for r in rows}


async def insert_segment(conn: Conn, job_id: uuid.UUID, worker: str, seg: dict[str, Any]) -> bool:
    """Store one segment (idempotent on (job, seq)) and advance progress; False if the job is not ours."""
    row = await conn.fetchrow(
        """
        WITH owner AS (
            UPDATE jobs SET progress_s = greatest(progress_s, $5), heartbeat_at = now()
            WHERE id = $1 AND status = 'running' AND worker = $2
            RETURNING id
        )
        INSERT INTO segments (job_id, seq, start_s, end_s, text, avg_logprob, no_speech_prob,
                              compression_ratio, temperature, tokens, words)
        SELECT id, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12 FROM owner
        ON CONFLICT (job_id, seq) DO NOTHING
        RETURNING seq
        """,
        job_id,
        worker,
        seg["seq"],
        seg["start"],
        seg["end"],
        seg["text"],
        seg["avg_logprob"],
        seg["no_speech_prob"],
        seg["compression_ratio"],
        seg["temperature"],
        seg["tokens"],
        seg["words"],
    )
    return row is not None


async def set_language(conn: Conn, job_id: uuid.UUID, worker: str, language: str, probability: float) -> None:
    """Record the detected language of a running job."""
    await conn.execute(
        "UPDATE jobs SET language = $3, language_probability = $4 WHERE id = $1 AND worker = $2",
        job_id,
        worker,
        language,
        probability,
    )


async def segments(conn: Conn, job_id: uuid.UUID, from_seq: int = 0) -> list[Row]:
    """Stored segments of a job in order, from `from_seq` on."""
    rows: list[Row] = await conn.fetch(
        "SELECT * FROM segments WHERE job_id = $1 AND seq >= $2 ORDER BY seq", job_id, from_seq
    )
    return rows


async def resume_point(conn: Conn, job_id: uuid.UUID, tokens: int = 0) -> Row:
    """Where an interrupted job resumes: next seq, end of the last segment, and the last `tokens`
    tokens of its segments since the last one decoded hotter than 0.5 (the prompt the resumed run
    carries on from, as `transcriber.transcribe` keeps it)."""
    row: Row | None = await conn.fetchrow(
        """
        SELECT coalesce(max(seq) + 1, 0) AS next_seq,
               coalesce(max(end_s), 0) AS resume_from,
               coalesce((SELECT array_agg(tok ORDER BY seq, ord)
                         FROM (SELECT s.seq, u.tok, u.ord
                               FROM segments s, unnest(s.tokens) WITH ORDINALITY AS u(tok, ord)
                               WHERE s.job_id = $1 AND s.seq > coalesce(
                                   (SELECT max(seq) FROM segments WHERE job_id = $1 AND temperature > 0.5), -1)
                               ORDER BY s.seq DESC, u.ord DESC LIMIT $2) AS t), '{}') AS prompt_tokens
        FROM segments WHERE job_id = $1
        """,
        job_id,
        tokens,
    )
    assert row is not None  # the statement always returns one row
    return row


async def complete(conn: Conn, job_id: uuid.UUID, worker: str, timings: dict[str, Any], device: str) -> bool:
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


async def fail(conn: Conn, job_id: uuid.UUID, worker: str, error: str, code: str) -> bool:
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
        code,
    )
    return row is not None


async def retry_or_fail(conn: Conn, job_id: uuid.UUID, worker: str, error: str, backoff: float) -> str | None:
    """running → queued after a backoff (doubling per attempt), or → failed when attempts are spent."""
    status: str | None = await conn.fetchval(
        """
        UPDATE jobs SET status = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END,
                        finished_at = CASE WHEN attempts >= max_attempts THEN now() END,
                        error = $3, error_code = 'internal_error', updated_at = now(),
                        run_after = now() + make_interval(secs => $4 * power(2, greatest(attempts - 1, 0))),
                        worker = NULL, heartbeat_at = NULL
        WHERE id = $1 AND status = 'running' AND worker = $2
        RETURNING status
        """,
        job_id,
        worker,
        error,
        backoff,
    )
    return status


async def checkpoint(conn: Conn, job_id: uuid.UUID, worker: str) -> bool:
    """running → queued without spending an attempt (drain on shutdown; segments so far are kept)."""
    row = await conn.fetchrow(
        """
        UPDATE jobs SET status = 'queued', attempts = greatest(attempts - 1, 0), worker = NULL,
                        heartbeat_at = NULL, updated_at = now()
        WHERE id = $1 AND status = 'running' AND worker = $2
        RETURNING id
        """,
        job_id,
        worker,
    )
    return row is not None


async def request_cancel(conn: Conn, job_id: uuid.UUID) -> str | None:
    """Cancel: queued → cancelled at once; running → cancel_requested (the worker stops it).

    Returns the job's status after the statement, or None when the job does not exist.
    """
    status: str | None = await conn.fetchval(
        """
        UPDATE jobs SET status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END,
                        finished_at = CASE WHEN status = 'queued' THEN now() ELSE finished_at END,
                        cancel_requested = (status IN ('queued', 'running')) OR cancel_requested,
                        updated_at = now()
        WHERE id = $1
        RETURNING status
        """,
        job_id,
    )
    return status


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


async def reap(conn: Conn, stale_after: float, backoff: float) -> list[Row]:
    """Hand running jobs with a stale heartbeat back to the queue, or fail them when attempts are spent."""
    rows: list[Row] = await conn.fetch(
        """
        UPDATE jobs SET status = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END,
                        finished_at = CASE WHEN attempts >= max_attempts THEN now() END,
                        error = CASE WHEN attempts >= max_attempts
                                     THEN 'the worker stopped answering on every attempt' ELSE error END,
                        error_code = CASE WHEN attempts >= max_attempts THEN 'worker_lost' ELSE error_code END,
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
    )
    return rows


async def audio_expired(conn: Conn, days: float) -> list[str]:
    """Audio hashes whose every job is finished and older than `days`, with the file not yet deleted."""
    rows: Sequence[Row] = await conn.fetch(
        """
        SELECT audio_sha256 FROM jobs
        WHERE audio_deleted_at IS NULL
        GROUP BY audio_sha256
        HAVING bool_and(status IN ('completed', 'failed', 'cancelled'))
           AND max(coalesce(finished_at, created_at)) < now() - make_interval(days => 0, secs => $1 * 86400)
        """,
        days,
    )
    return [r["audio_sha256"] for r in rows]


async def mark_audio_deleted(conn: Conn, sha256: str) -> None:
    """Record that the audio with this hash is gone (transcripts stay)."""
    await conn.execute(
        "UPDATE jobs SET audio_deleted_at = now() WHERE audio_sha256 = $1 AND audio_deleted_at IS NULL", sha256
    )


async def audio_needed(conn: Conn, sha256: str) -> bool:
    """True when some job that may still run refers to this audio."""
    needed: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM jobs WHERE audio_sha256 = $1 AND status IN ('queued', 'running'))", sha256
    )
    return needed


async def jobs_finished_totals(conn: Conn) -> dict[str, int]:
    """Arrivals in each final state since the database was made (never decrease; for /metrics)."""
    rows: Sequence[Row] = await conn.fetch("SELECT status, n FROM job_totals")
    return {r["status"]: int(r["n"]) for r in rows}
