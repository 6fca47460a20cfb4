"""The reaper and live jobs, against real PostgreSQL: a late heartbeat never takes a live job from its
open session (no worker finishes it from the stored audio while the client still speaks), but the
job of a session whose process died is still handed back and resumed (issue 21)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from asr_daemon import jobs, queries
from asr_daemon.live import store


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on a fresh migrated database, with JSON codecs (as the daemon's)."""

    async def init(c: asyncpg.Connection) -> None:
        for typ in ("json", "jsonb"):
            await c.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")

    p = await asyncpg.create_pool(database, min_size=1, max_size=4, init=init)
    yield p
    try:  # a failed test may leave a connection acquired (a Liveness lock): close waits for it forever
        await asyncio.wait_for(p.close(), 10)
    except TimeoutError:
        p.terminate()


async def live_job(pool: asyncpg.Pool, owner: str = "host:1:live") -> uuid.UUID:
    """A live session's job, running and owned by `owner`, as LiveSession creates it."""
    job_id = uuid.uuid4()
    await store.create_job(pool, job_id=job_id, owner=owner, model="tiny.en", options=jobs.Options(),
                           api_key_id=None, max_attempts=3)  # fmt: skip
    return job_id


async def make_late(pool: asyncpg.Pool, job_id: uuid.UUID) -> None:
    """The heartbeat is an hour old: a busy event loop or database held the live manager's beats back."""
    await pool.execute("UPDATE jobs SET heartbeat_at = now() - interval '1 hour' WHERE id = $1", job_id)


async def test_a_late_heartbeat_does_not_reap_an_open_session(pool: asyncpg.Pool) -> None:
    """While its session is open a live job with a stale heartbeat stays running and owned: not
    requeued, not claimable by a worker, and the session can still store segments and finish it."""
    liveness = store.Liveness(pool)
    job_id = await live_job(pool)
    await liveness.hold(job_id)
    try:
        await make_late(pool, job_id)
        assert await queries.reap(pool, 30, 1) == []
        assert await queries.claim(pool, "host:2:worker") is None
        # hashtext() is negative for about half the ids: sessions on both sides of the oid cast are sheltered
        signs: set[bool] = set()
        while len(signs) < 2:
            other = await live_job(pool)
            await liveness.hold(other)
            await make_late(pool, other)
            signs.add(await pool.fetchval("SELECT hashtext($1::uuid::text) < 0", other))
        assert await queries.reap(pool, 30, 1) == []
        row = await pool.fetchrow("SELECT status, worker, attempts FROM jobs WHERE id = $1", job_id)
        assert (row["status"], row["worker"], row["attempts"]) == ("running", "host:1:live", 1)
        seg = {"seq": 0, "start": 0.0, "end": 1.0, "text": " hello", "avg_logprob": -0.1, "no_speech_prob": 0.0,
               "compression_ratio": 1.0, "temperature": 0.0, "tokens": [1], "words": None}  # fmt: skip
        assert await queries.insert_segment(pool, job_id, "host:1:live", seg)
        assert await store.finish(pool, job_id, "host:1:live", duration=1.0, audio_bytes=32000, language="en",
                                  timings={}, device="cpu")  # fmt: skip
    finally:
        await liveness.close()


async def test_a_file_job_with_a_late_heartbeat_is_still_reaped(pool: asyncpg.Pool) -> None:
    """The open-session rule is for live jobs only: a live lock held beside it does not shelter a file job."""
    liveness = store.Liveness(pool)
    job_id = await live_job(pool)
    await liveness.hold(job_id)
    try:
        file_job = uuid.uuid4()
        await queries.insert_job(pool, job_id=file_job, model="tiny.en", options=jobs.Options().to_json(),
                                 fingerprint=file_job.hex, priority=0, audio_sha256="0" * 64, audio_bytes=1,
                                 filename=None, duration_s=5, max_attempts=3, idempotency_key=None,
                                 webhook_url=None)  # fmt: skip
        claimed = await queries.claim(pool, "host:2:worker")
        assert claimed is not None and claimed.id == file_job
        await make_late(pool, file_job)
        await make_late(pool, job_id)
        reaped = await queries.reap(pool, 30, 0)
        assert [r.id for r in reaped] == [file_job]
    finally:
        await liveness.close()


async def test_the_job_of_a_dead_process_is_reaped_and_resumable(database: str, pool: asyncpg.Pool) -> None:
    """A process that died (its connection gone) leaves its live job to the reaper: queued, then
    claimed by the next worker, which resumes it from the stored audio."""
    other = await asyncpg.create_pool(database, min_size=1, max_size=2)  # the process that will die
    liveness = store.Liveness(other)
    job_id = await live_job(pool)
    await liveness.hold(job_id)
    await make_late(pool, job_id)
    assert await queries.reap(pool, 30, 0) == []
    other.terminate()  # SIGKILL: PostgreSQL sees the connection close and drops its locks
    await make_late(pool, job_id)
    for _ in range(50):  # the server notices the closed socket within a moment
        reaped = await queries.reap(pool, 30, 0)
        if reaped:
            break
        await pool.execute("SELECT pg_sleep(0.05)")
    assert [(r.id, r.status) for r in reaped] == [(job_id, "queued")]
    claimed = await queries.claim(pool, "host:3:worker")
    assert claimed is not None and claimed.id == job_id and claimed.kind == "live"


async def test_a_closed_session_releases_its_job_and_the_connection(pool: asyncpg.Pool) -> None:
    """After `release` a job left running (its close failed) is reaped as before; with no session
    open the lock connection is back in the pool; a broken lock connection is replaced on refresh."""
    liveness = store.Liveness(pool)
    kept, closed = await live_job(pool), await live_job(pool)
    await liveness.hold(kept)
    await liveness.hold(closed)
    await liveness.release(closed)
    await make_late(pool, kept)
    await make_late(pool, closed)
    assert [r.id for r in await queries.reap(pool, 30, 0)] == [closed]
    # the database cut the lock connection (a restart): the next heartbeat's refresh takes the locks again
    await pool.execute("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND classid = $1",
                       store.LOCK_SPACE)  # fmt: skip
    await liveness.refresh()
    await make_late(pool, kept)
    assert await queries.reap(pool, 30, 0) == []
    await liveness.release(kept)
    assert liveness.held == set()
    assert await queries.reap(pool, 30, 0) != []
