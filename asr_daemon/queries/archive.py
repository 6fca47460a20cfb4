"""Jobs as the archive sees them: look one up, list them, cancel, retry, delete (one, or every finished
job older than a date, or only their audio).

Every state change is one guarded statement: no row back means the job was not in a state that allows it.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import NamedTuple

from asr_daemon.jobs import TERMINAL, Job, Status
from asr_daemon.queries.conn import Conn, Row

#: the final states as a SQL array parameter
_FINAL = sorted(s.value for s in TERMINAL)


async def get_job(conn: Conn, job_id: uuid.UUID) -> Job | None:
    """One job by id."""
    row: Row | None = await conn.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
    return None if row is None else Job.from_row(row)


async def job_status(conn: Conn, job_id: uuid.UUID) -> Status | None:
    """Only the state of one job (None: no such job), for waiters that poll it."""
    status: str | None = await conn.fetchval("SELECT status FROM jobs WHERE id = $1", job_id)
    return None if status is None else Status(status)


async def resolve_id(conn: Conn, text: str) -> uuid.UUID | None:
    """A full job id, or a unique prefix of one (at least 4 hex digits). None when nothing matches;
    raises ValueError when the text is not an id or the prefix is ambiguous."""
    text = text.strip().lower()
    try:
        return uuid.UUID(text)
    except ValueError:
        pass
    if not re.fullmatch(r"[0-9a-f-]{4,35}", text):
        raise ValueError(f"{text[:40]!r} is not a job id")
    rows = await conn.fetch("SELECT id FROM jobs WHERE id::text LIKE $1 || '%' LIMIT 2", text)
    if len(rows) > 1:
        raise ValueError(f"job id prefix {text!r} is ambiguous")
    found: uuid.UUID | None = rows[0]["id"] if rows else None
    return found


async def list_jobs(
    conn: Conn,
    *,
    status: Status | None,
    limit: int,
    before: tuple[datetime, uuid.UUID] | None = None,
    everyone: bool = True,
    api_key_id: int | None = None,
) -> list[Job]:
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
        None if status is None else str(status),
        before[0] if before else None,
        before[1] if before else None,
        limit,
        everyone,
        api_key_id,
    )
    return [Job.from_row(r) for r in rows]


class Cancelled(NamedTuple):
    """What a cancel did: the job's status after it, and whether it changed anything."""

    status: Status
    #: False for a job that had already finished (left exactly as it was)
    changed: bool


async def request_cancel(conn: Conn, job_id: uuid.UUID) -> Cancelled | None:
    """Cancel: queued → cancelled at once; running → cancel_requested (the worker stops it between
    segments). A finished job is left alone, `updated_at` included. None when the job does not exist."""
    row: Row | None = await conn.fetchrow(
        """
        WITH moved AS (
            UPDATE jobs SET status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END,
                            finished_at = CASE WHEN status = 'queued' THEN now() ELSE finished_at END,
                            cancel_requested = true, updated_at = now()
            WHERE id = $1 AND status IN ('queued', 'running')
            RETURNING status
        )
        SELECT status, true AS changed FROM moved
        UNION ALL
        SELECT status, false FROM jobs WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM moved)
        """,
        job_id,
    )
    return None if row is None else Cancelled(Status(row["status"]), row["changed"])


async def retry(conn: Conn, job_id: uuid.UUID) -> bool:
    """failed/cancelled → queued with a fresh set of attempts (stored segments stay: the worker
    resumes after them). False when the job is in another state or its audio is gone."""
    row = await conn.fetchrow(
        "UPDATE jobs SET status = 'queued', attempts = 0, error = NULL, error_code = NULL,"
        " cancel_requested = false, worker = NULL, heartbeat_at = NULL, run_after = now(),"
        " started_at = NULL, finished_at = NULL, updated_at = now()"
        " WHERE id = $1 AND status IN ('failed', 'cancelled') AND audio_deleted_at IS NULL RETURNING id",
        job_id,
    )
    return row is not None


async def delete_finished(conn: Conn, job_id: uuid.UUID) -> str | None:
    """Delete a finished job (segments and webhook deliveries cascade); its audio's name, None when it
    is not finished (or not there)."""
    sha: str | None = await conn.fetchval(
        "DELETE FROM jobs WHERE id = $1 AND status = ANY($2::text[]) RETURNING audio_sha256", job_id, _FINAL
    )
    return sha


class Purged(NamedTuple):
    """A job a purge deleted (or whose audio it forgot)."""

    audio_sha256: str
    audio_bytes: int


async def delete_finished_before(conn: Conn, cutoff: datetime) -> list[Purged]:
    """Delete finished jobs older than `cutoff` (segments and deliveries cascade); returns their audio."""
    rows: list[Row] = await conn.fetch(
        "DELETE FROM jobs WHERE status = ANY($1::text[]) AND coalesce(finished_at, created_at) < $2"
        " RETURNING audio_sha256, audio_bytes",
        _FINAL,
        cutoff,
    )
    return [Purged(r["audio_sha256"], r["audio_bytes"]) for r in rows]


async def forget_audio_before(conn: Conn, cutoff: datetime) -> list[Purged]:
    """Mark the audio of finished jobs older than `cutoff` deleted; returns the hashes marked."""
    rows: list[Row] = await conn.fetch(
        "UPDATE jobs SET audio_deleted_at = now(), updated_at = now()"
        " WHERE status = ANY($1::text[]) AND coalesce(finished_at, created_at) < $2"
        " AND audio_deleted_at IS NULL RETURNING audio_sha256, audio_bytes",
        _FINAL,
        cutoff,
    )
    return [Purged(r["audio_sha256"], r["audio_bytes"]) for r in rows]
