"""Accepting a job: the row of a new job, idempotency, deduplication and the queue bound."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from asr_daemon.jobs import Job, Kind
from asr_daemon.queries.conn import Conn, Row, Tx

#: pg_advisory_xact_lock key of `lock_queue` ("asrq")
QUEUE_LOCK = 0x61737271
#: first key of `lock_fingerprint`'s two-key advisory locks ("asrf"); the second is a hash of the fingerprint
FINGERPRINT_LOCK_SPACE = 0x61737266


async def insert_job(
    conn: Conn,
    *,
    job_id: uuid.UUID,
    model: str,
    options: Mapping[str, object],
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
    kind: Kind = Kind.FILE,
) -> Job:
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
        str(kind),
    )
    assert row is not None  # the statement always returns one row
    return Job.from_row(row)


async def get_by_idempotency_key(conn: Conn, key: str) -> Job | None:
    """The job created with this Idempotency-Key, if any."""
    row: Row | None = await conn.fetchrow("SELECT * FROM jobs WHERE idempotency_key = $1", key)
    return None if row is None else Job.from_row(row)


async def find_same(conn: Conn, fingerprint: str, api_key_id: int | None = None) -> Job | None:
    """The job a new submission joins instead of running the model again: one of the same key with the same
    audio, model and options still queued or running (no cancel asked), else the latest completed one."""
    row: Row | None = await conn.fetchrow(
        """
        SELECT * FROM (
            (SELECT * FROM jobs WHERE fingerprint = $1 AND status IN ('queued', 'running') AND NOT cancel_requested
               AND api_key_id IS NOT DISTINCT FROM $2 ORDER BY created_at LIMIT 1)
            UNION ALL
            (SELECT * FROM jobs WHERE fingerprint = $1 AND status = 'completed' AND api_key_id IS NOT DISTINCT FROM $2
             ORDER BY finished_at DESC LIMIT 1)
        ) same ORDER BY status = 'completed' LIMIT 1
        """,
        fingerprint,
        api_key_id,
    )
    return None if row is None else Job.from_row(row)


async def lock_fingerprint(conn: Tx, fingerprint: str, api_key_id: int | None) -> None:
    """Hold the lock of (fingerprint, key) until the transaction on `conn` ends: a `find_same` and an insert
    under it are one step, so identical submissions arriving together (in any process) make one job."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))", FINGERPRINT_LOCK_SPACE, f"{fingerprint}:{api_key_id}"
    )


async def lock_queue(conn: Tx) -> None:
    """Hold the queue lock until the transaction on `conn` ends: a count and an insert under it are one step,
    so submissions that finish their uploads together cannot overshoot ASR_MAX_QUEUED_JOBS."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", QUEUE_LOCK)
