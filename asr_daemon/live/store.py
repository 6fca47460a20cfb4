"""A live session as a durable job: its row (kind `live`) and its audio file in `uploads/`.

The row is inserted `running`, owned by this process's live owner name, with one attempt spent. Its
audio is a 16 kHz mono WAV, `uploads/live-<job id hex>` (the name stands in `audio_sha256`),
appended as audio arrives; the header's sizes are rewritten on every flush and the file fsynced
on every commit, so after a crash it decodes up to the last flush. While the session lives, the
manager heartbeats the row; once it closes the row is completed (the statements: `queries.live`). If
the process dies, the reaper of the next start finds the stale heartbeat and queues the job: the worker
then resumes it like any file job from the end of its last stored segment, over the stored audio.

A late heartbeat alone does not make a live job stale: while its session is open the process holds
a PostgreSQL advisory lock on it (`Liveness`), and the reaper leaves a live job whose lock is held
(queries.reap). The lock lives as long as the process's database connection, so a process that
really died (SIGKILL, power loss) leaves its sessions' jobs to the reaper as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import uuid
from pathlib import Path

import asyncpg

from asr_daemon import db, jobs
from asr_daemon.live.codec import RATE
from asr_daemon.queries import Conn
from asr_daemon.queries import live as live_sql

log = logging.getLogger(__name__)

HEADER = 44
#: The most audio a WAV's 32-bit sizes can describe (a session stores at most this, or ASR_MAX_AUDIO_SECONDS).
MAX_SECONDS = ((1 << 32) - 1 - 36) // (2 * RATE)
#: The advisory-lock space of open live sessions (`pg_try_advisory_lock(LOCK_SPACE, hashtext(job id))`;
#: "try": a hash shared with another process's open job is covered by its lock, never waited on);
#: queries.reap spells the same number.
LOCK_SPACE = 1279874629  # "LIVE"
_LOCK = "SELECT pg_try_advisory_lock($1, hashtext($2::uuid::text))"
_UNLOCK = "SELECT pg_advisory_unlock($1, hashtext($2::uuid::text))"


def audio_name(job_id: uuid.UUID) -> str:
    """The file name (and `audio_sha256`) of a live job's audio."""
    return f"live-{job_id.hex}"


def _header(data_bytes: int) -> bytes:
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, RATE, RATE * 2, 2, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


class AudioFile:
    """The session's WAV, append-only. Every method blocks: call them off the event loop."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            os.write(self.fd, _header(0))
        except OSError:  # a full disk: no empty file left behind
            os.close(self.fd)
            path.unlink(missing_ok=True)
            raise
        self.data_bytes = 0

    def append(self, pcm: bytes) -> None:
        """Append 16-bit samples and rewrite the header's sizes (no fsync).

        A write the disk refuses (ENOSPC, a quota, the file-size limit) raises OSError and leaves the file as
        it was: a short write is cut back, the header still tells the audio stored before.
        """
        if pcm:
            end = HEADER + self.data_bytes
            done = 0
            try:
                while done < len(pcm):  # a write may take only part of it when the disk fills up
                    done += os.pwrite(self.fd, memoryview(pcm)[done:], end + done)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(self.fd, end)
                raise
            self.data_bytes += len(pcm)
        os.pwrite(self.fd, struct.pack("<I", 36 + self.data_bytes), 4)
        os.pwrite(self.fd, struct.pack("<I", self.data_bytes), 40)

    def sync(self) -> None:
        """Make what was appended durable."""
        os.fsync(self.fd)

    def close(self) -> None:
        """fsync and close (closed even when the fsync fails)."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    @property
    def seconds(self) -> float:
        """Audio stored so far."""
        return self.data_bytes / (2 * RATE)


async def create_job(
    conn: Conn, *, job_id: uuid.UUID, owner: str, model: str, options: jobs.Options, api_key_id: int | None,
    max_attempts: int,
) -> jobs.Job:  # fmt: skip
    """Insert the session's job, running and owned by `owner` (the statement: `queries.live`)."""
    return await live_sql.create_job(
        conn, job_id=job_id, owner=owner, model=model, options=options, api_key_id=api_key_id,
        max_attempts=max_attempts, audio_name=audio_name(job_id),
    )  # fmt: skip


heartbeat = live_sql.heartbeat
set_model = live_sql.set_model
finish = live_sql.finish
requeue = live_sql.requeue
discard = live_sql.discard


class Liveness:
    """Advisory locks that tell every reaper which live jobs have an open session in this process.

    One pooled connection holds them while any session is open (given back when none is). If that
    connection breaks, `refresh` (each heartbeat) takes a new one and locks every open job again.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.held: set[uuid.UUID] = set()
        self._conn: asyncpg.pool.PoolConnectionProxy[asyncpg.Record] | None = None  # held while any job is
        self._mutex = asyncio.Lock()

    async def hold(self, job_id: uuid.UUID) -> None:
        """Mark `job_id`'s session open (until `release`)."""
        async with self._mutex:
            self.held.add(job_id)
            if await self._connect() or self._conn is None:  # a fresh connection locked every held job already
                return
            await self._conn.execute(_LOCK, LOCK_SPACE, job_id)

    async def release(self, job_id: uuid.UUID) -> None:
        """The session closed: its job may be reaped again once its heartbeat is stale."""
        async with self._mutex:
            self.held.discard(job_id)
            if self._conn is None:
                return
            try:
                await self._conn.execute(_UNLOCK, LOCK_SPACE, job_id)
            except db.ERRORS as exc:
                log.warning("live_unlock_failed", extra={"error": type(exc).__name__})
                await self._drop()
                return
            if not self.held:
                await self._drop()

    async def refresh(self) -> None:
        """Take the locks again if their connection was lost (the database restarted)."""
        async with self._mutex:
            if not self.held:
                return
            if self._conn is not None:
                try:
                    await self._conn.execute("SELECT 1")
                except db.ERRORS:
                    await self._drop()
            if await self._connect():
                log.info("live_locks_retaken", extra={"sessions": len(self.held)})

    async def close(self) -> None:
        """Release every lock (the pool's reset unlocks all)."""
        async with self._mutex:
            self.held.clear()
            await self._drop()

    async def _connect(self) -> bool:
        """Make sure a live connection holds the locks; True if it was (re)made and locked them all."""
        if self._conn is not None and not self._conn.is_closed():
            return False
        await self._drop()
        conn = await self.pool.acquire()
        try:
            for job_id in self.held:
                await conn.execute(_LOCK, LOCK_SPACE, job_id)
        except BaseException:
            await self.pool.release(conn)
            raise
        self._conn = conn
        return True

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # the pool resets it (pg_advisory_unlock_all) or discards it
                await self.pool.release(conn)
