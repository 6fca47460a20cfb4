"""Operator queries on the job table: list, show, retry, cancel, purge, and the counts `status` shows.

One function per SQL statement, SQL inline (like `queries.py`, kept apart so the daemon's hot path
and the operator's tools evolve separately). Every state change is one guarded statement: no row
back means the job was not in a state that allows it.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from typing import Any, TypeAlias

import asyncpg
from redis.exceptions import RedisError

from asr_daemon import jobs, queue

TERMINAL = sorted(s.value for s in jobs.TERMINAL)
SHA256 = re.compile(r"^[0-9a-f]{64}$")
AGE = re.compile(r"^(\d+)\s*([smhdw])$")
AGE_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

Conn: TypeAlias = "asyncpg.Connection[Any]"


def parse_age(text: str) -> timedelta:
    """'30d' -> 30 days; units s, m, h, d, w. Raises ValueError on anything else."""
    m = AGE.match(text.strip().lower())
    if not m or int(m.group(1)) == 0:
        raise ValueError(f"{text!r} is not an age like 30d, 12h, 2w")
    return timedelta(**{AGE_UNITS[m.group(2)]: int(m.group(1))})


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
    return rows[0]["id"] if rows else None


async def list_jobs(conn: Conn, status: str | None, limit: int) -> list[asyncpg.Record]:
    """Newest first, optionally one status."""
    return await conn.fetch(
        "SELECT id, status, model, filename, duration_s, progress_s, attempts, max_attempts, error_code,"
        " created_at, started_at, finished_at FROM jobs WHERE ($1::text IS NULL OR status = $1)"
        " ORDER BY created_at DESC, id DESC LIMIT $2",
        status,
        limit,
    )


async def get_job(conn: Conn, job_id: uuid.UUID) -> asyncpg.Record | None:
    """Every column, plus how many segments are stored."""
    return await conn.fetchrow(
        "SELECT j.*, (SELECT count(*) FROM segments s WHERE s.job_id = j.id) AS segments FROM jobs j WHERE id = $1",
        job_id,
    )


async def retry(conn: Conn, job_id: uuid.UUID) -> bool:
    """failed/cancelled -> queued with a fresh set of attempts (stored segments stay: the worker
    resumes after them). False when the job is in another state or its audio is gone."""
    row = await conn.fetchrow(
        "UPDATE jobs SET status = 'queued', attempts = 0, error = NULL, error_code = NULL,"
        " cancel_requested = false, worker = NULL, heartbeat_at = NULL, run_after = now(),"
        " started_at = NULL, finished_at = NULL, updated_at = now()"
        " WHERE id = $1 AND status IN ('failed', 'cancelled') AND audio_deleted_at IS NULL RETURNING id",
        job_id,
    )
    return row is not None


async def cancel(conn: Conn, job_id: uuid.UUID) -> str | None:
    """queued -> cancelled at once; running -> cancel_requested (the worker stops between segments).
    Returns the status after the statement, None when the job was not queued or running."""
    status: str | None = await conn.fetchval(
        "UPDATE jobs SET"
        " status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END,"
        " finished_at = CASE WHEN status = 'queued' THEN now() ELSE finished_at END,"
        " cancel_requested = true, updated_at = now()"
        " WHERE id = $1 AND status IN ('queued', 'running') RETURNING status",
        job_id,
    )
    return status


async def delete_finished_before(conn: Conn, cutoff: datetime) -> list[asyncpg.Record]:
    """Delete finished jobs older than `cutoff` (segments and deliveries cascade); returns their audio."""
    return await conn.fetch(
        "DELETE FROM jobs WHERE status = ANY($1::text[]) AND coalesce(finished_at, created_at) < $2"
        " RETURNING audio_sha256, audio_bytes",
        TERMINAL,
        cutoff,
    )


async def forget_audio_before(conn: Conn, cutoff: datetime) -> list[asyncpg.Record]:
    """Mark the audio of finished jobs older than `cutoff` deleted; returns the hashes marked."""
    return await conn.fetch(
        "UPDATE jobs SET audio_deleted_at = now(), updated_at = now()"
        " WHERE status = ANY($1::text[]) AND coalesce(finished_at, created_at) < $2"
        " AND audio_deleted_at IS NULL RETURNING audio_sha256, audio_bytes",
        TERMINAL,
        cutoff,
    )


async def unreferenced(conn: Conn, hashes: list[str]) -> list[str]:
    """The hashes no job still needs (no row with that audio and audio_deleted_at unset)."""
    rows = await conn.fetch(
        "SELECT h FROM unnest($1::text[]) AS h WHERE NOT EXISTS"
        " (SELECT 1 FROM jobs WHERE audio_sha256 = h AND audio_deleted_at IS NULL)",
        hashes,
    )
    return [r["h"] for r in rows if SHA256.match(r["h"])]


async def queue_counts(conn: Conn) -> dict[str, Any]:
    """Running and queued jobs, and the age in seconds of the oldest queued one."""
    row = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE status = 'running') AS running,"
        " count(*) FILTER (WHERE status = 'queued') AS queued,"
        " extract(epoch FROM now() - min(created_at) FILTER (WHERE status = 'queued'))::float8 AS oldest"
        " FROM jobs WHERE status IN ('queued', 'running')"
    )
    assert row is not None  # an aggregate always returns one row
    return {"running": row["running"], "queued": row["queued"], "oldest_queued_age_s": row["oldest"]}


async def database_size(conn: Conn) -> int:
    """Size in bytes of the current database."""
    size: int = await conn.fetchval("SELECT pg_database_size(current_database())")
    return size


async def wake(redis_url: str, job_id: uuid.UUID) -> bool:
    """Ring the worker's doorbell and tell the job's event followers it changed (the daemon's own
    `queue` keys). False when Redis is unreachable: the worker and the event streams then notice
    at their next database poll."""
    client = queue.connect(redis_url)
    try:
        if not await queue.ring(client):
            return False
        await client.publish(queue.CHANNEL_PREFIX + str(job_id), "1")
        return True
    except (RedisError, OSError):
        return False
    finally:
        await client.aclose()
