"""events.follow and events.wait_finished against real PostgreSQL and Redis, driven by the job's own statements."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from asr_daemon import db, jobs, queries
from asr_daemon.config import Settings
from asr_daemon.pipeline import events, queue
from tests import services

WORKER = "w-test"
POLL_S = 30.0  # so long that only a notification can wake a follower within a test


@pytest.fixture
async def pool(tmp_path: Path, database: str) -> AsyncIterator[asyncpg.Pool]:
    """The daemon's pool (JSON codecs) on a fresh database."""
    p = await db.create_pool(Settings(state_dir=tmp_path, database_url=database))
    yield p
    await p.close()


@pytest.fixture
async def hub(redis_server: services.Redis) -> AsyncIterator[queue.Hub]:
    """A hub whose poll interval is too long to matter: wakes come from notify()."""
    h = queue.Hub(queue.connect(redis_server.url), POLL_S)
    yield h
    await h.client.aclose()


async def queued(pool: asyncpg.Pool, duration: float = 10.0) -> uuid.UUID:
    """A queued job of `duration` seconds of audio."""
    job_id = uuid.uuid4()
    await queries.insert_job(
        pool,
        job_id=job_id,
        model="tiny.en",
        options=jobs.Options().to_json(),
        fingerprint=job_id.hex,
        priority=0,
        audio_sha256="0" * 64,
        audio_bytes=1,
        filename=None,
        duration_s=duration,
        max_attempts=3,
        idempotency_key=None,
        webhook_url=None,
    )
    return job_id


async def segment(pool: asyncpg.Pool, job_id: uuid.UUID, seq: int) -> None:
    """Store segment `seq` (two seconds each) as the worker does."""
    seg = {
        "seq": seq,
        "start": 2.0 * seq,
        "end": 2.0 * seq + 2,
        "text": f" part {seq}",
        "avg_logprob": -0.1,
        "no_speech_prob": 0.0,
        "compression_ratio": 1.0,
        "temperature": 0.0,
        "tokens": [seq],
        "words": None,
    }
    assert await queries.insert_segment(pool, job_id, WORKER, seg)


async def run_to_completion(pool: asyncpg.Pool, job_id: uuid.UUID, n: int) -> None:
    """Claim the job, store `n` segments, complete it."""
    claimed = await queries.claim(pool, WORKER)
    assert claimed is not None and claimed.id == job_id
    for seq in range(n):
        await segment(pool, job_id, seq)
    assert await queries.complete(pool, job_id, WORKER, {}, "cpu")


async def collect(pool: asyncpg.Pool, hub: queue.Hub, job_id: uuid.UUID, last_id: int = -1) -> list[events.Event]:
    """Every event follow() yields (keep-alive ticks left out)."""
    return [ev async for ev in events.follow(pool, hub, job_id, last_id) if ev is not None]


async def test_a_finished_jobs_history_is_replayed_in_order(pool: asyncpg.Pool, hub: queue.Hub) -> None:
    """queued (0), started (1), one segment per stored segment (2 + seq) with progress, completed (2 + n)."""
    job_id = await queued(pool)
    await run_to_completion(pool, job_id, 3)
    got = await collect(pool, hub, job_id)
    assert [(e.id, e.type) for e in got] == [
        (0, "queued"),
        (1, "started"),
        (2, "segment"),
        (3, "segment"),
        (4, "segment"),
        (5, "completed"),
    ]
    assert got[3].data["text"] == " part 1" and got[3].data["progress"] == 0.4
    assert got[-1].data == {"id": str(job_id), "status": "completed", "segments": 3}


async def test_last_event_id_resumes_after_that_event_only(pool: asyncpg.Pool, hub: queue.Hub) -> None:
    """A client reconnecting with Last-Event-ID n gets each later event once; after the final one, nothing."""
    job_id = await queued(pool)
    await run_to_completion(pool, job_id, 3)
    assert [e.id for e in await collect(pool, hub, job_id, last_id=2)] == [3, 4, 5]
    assert await collect(pool, hub, job_id, last_id=5) == []


async def test_a_failed_job_ends_with_its_error(pool: asyncpg.Pool, hub: queue.Hub) -> None:
    """The final event of a failed job carries its message and code."""
    job_id = await queued(pool)
    await queries.claim(pool, WORKER)
    await segment(pool, job_id, 0)
    assert await queries.fail(pool, job_id, WORKER, "bad audio", "transcription_failed")
    final = (await collect(pool, hub, job_id))[-1]
    assert (final.id, final.type) == (3, "failed")
    assert final.data["error"] == {"message": "bad audio", "code": "transcription_failed"}


async def test_an_unknown_job_has_no_events(pool: asyncpg.Pool, hub: queue.Hub) -> None:
    """follow() of a job that does not exist ends at once."""
    assert await collect(pool, hub, uuid.uuid4()) == []


async def test_a_live_follower_hears_each_change_when_notified(pool: asyncpg.Pool, hub: queue.Hub) -> None:
    """Following a queued job: start, each segment and the end arrive as they are notified, long before
    the 30-s poll."""
    job_id = await queued(pool)
    got: list[tuple[int, str]] = []
    seen = asyncio.Event()

    async def follow() -> None:
        async for ev in events.follow(pool, hub, job_id):
            if ev is not None:
                got.append((ev.id, ev.type))
                seen.set()

    task = asyncio.create_task(follow())

    async def step(expect: tuple[int, str]) -> None:
        async with asyncio.timeout(5):
            while expect not in got:
                seen.clear()
                await seen.wait()

    await step((0, "queued"))
    await queries.claim(pool, WORKER)
    await hub.notify(job_id)
    await step((1, "started"))
    await segment(pool, job_id, 0)
    await hub.notify(job_id)
    await step((2, "segment"))
    assert await queries.complete(pool, job_id, WORKER, {}, "cpu")
    await hub.notify(job_id)
    async with asyncio.timeout(5):
        await task
    assert got == [(0, "queued"), (1, "started"), (2, "segment"), (3, "completed")]


async def test_a_quiet_stream_sends_keep_alive_ticks(pool: asyncpg.Pool, redis_server: services.Redis) -> None:
    """A job that does not move yields None (a keep-alive comment) every `heartbeat` seconds."""
    job_id = await queued(pool)
    quick = queue.Hub(queue.connect(redis_server.url), 0.02)
    stream = events.follow(pool, quick, job_id, heartbeat=0.05)
    got = [await anext(stream) for _ in range(3)]
    await stream.aclose()
    await quick.client.aclose()
    assert [e.type if e else None for e in got] == ["queued", None, None]


async def test_wait_finished_returns_the_finished_row_when_notified(pool: asyncpg.Pool, hub: queue.Hub) -> None:
    """The synchronous endpoint's wait ends as soon as the job's end is notified, with the whole row."""
    job_id = await queued(pool)
    waiter = asyncio.create_task(events.wait_finished(pool, hub, job_id, 60))
    await asyncio.sleep(0.1)
    await run_to_completion(pool, job_id, 1)
    await hub.notify(job_id)
    async with asyncio.timeout(5):
        row = await waiter
    assert row is not None and row.status == "completed" and row.id == job_id


async def test_wait_finished_reads_only_the_status_until_the_end(
    pool: asyncpg.Pool, hub: queue.Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each wake (here ten segments) reads only the status; the whole row is read once, at the end."""
    reads: list[uuid.UUID] = []
    get_job = queries.get_job

    async def counted(conn: Any, job_id: uuid.UUID) -> Any:
        reads.append(job_id)
        return await get_job(conn, job_id)

    monkeypatch.setattr(queries, "get_job", counted)
    job_id = await queued(pool)
    waiter = asyncio.create_task(events.wait_finished(pool, hub, job_id, 60))
    await queries.claim(pool, WORKER)
    for seq in range(10):
        await segment(pool, job_id, seq)
        await hub.notify(job_id)
        await asyncio.sleep(0.01)
    assert await queries.complete(pool, job_id, WORKER, {}, "cpu")
    await hub.notify(job_id)
    async with asyncio.timeout(5):
        assert (await waiter).status == "completed"  # type: ignore[union-attr]  # None fails the test too
    assert reads == [job_id]


async def test_wait_finished_gives_up_at_its_timeout_and_knows_unknown_jobs(pool: asyncpg.Pool, hub: queue.Hub) -> None:
    """Past the timeout the job's current row comes back (still queued); an unknown job gives None."""
    job_id = await queued(pool)
    row = await events.wait_finished(pool, hub, job_id, 0.1)
    assert row is not None and row.status == "queued"
    assert await events.wait_finished(pool, hub, uuid.uuid4(), 1) is None
