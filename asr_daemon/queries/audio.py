"""Which audio files the job table still needs: for the retention, the orphan sweep, a purge and the
deletion of one job. A file is needed while some row names it with its audio not marked deleted."""

from __future__ import annotations

from collections.abc import Sequence

from asr_daemon.queries.conn import Conn, Row, Tx

#: The advisory-lock space of one audio file (`pg_advisory_xact_lock(AUDIO_LOCK_SPACE, hashtext(sha))`,
#: "AUDI"): held by a submission from storing the file until its job row is committed, and by
#: `asrctl jobs purge` from its last look at the job table until the file is gone. The daemon's own
#: deleters share a process with the intake and use its in-process locks (`uploads.AudioLocks`); a
#: purge runs in another process, where only PostgreSQL can tell it that an upload reuses the file.
AUDIO_LOCK_SPACE = 0x41554449


async def lock_audio(conn: Tx, sha256: str) -> None:
    """Hold the lock of the audio `sha256` until the transaction on `conn` ends."""
    await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", AUDIO_LOCK_SPACE, sha256)


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


async def audio_referenced(conn: Conn, shas: Sequence[str]) -> set[str]:
    """Those of `shas` that some job row points at, its audio not deleted (they must stay on disk)."""
    rows: Sequence[Row] = await conn.fetch(
        "SELECT DISTINCT audio_sha256 FROM jobs WHERE audio_sha256 = ANY($1::text[]) AND audio_deleted_at IS NULL",
        list(shas),
    )
    return {r["audio_sha256"] for r in rows}


async def audio_in_use(conn: Conn, sha256: str) -> bool:
    """True when some job still refers to this audio file."""
    return bool(await audio_referenced(conn, [sha256]))
