"""events.follow and events.wait_finished through a stop (SIGTERM) and a PostgreSQL outage, on real servers."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import pytest

from asr_daemon import queries
from asr_daemon.pipeline import events, queue
from tests import services
from tests.integration.test_events import WORKER, hub, pool, queued, run_to_completion, segment

__all__ = ["hub", "pool"]  # fixtures, shared with test_events


async def test_a_stop_ends_the_followers_and_waiters_of_a_queued_job_at_once(
    pool: asyncpg.Pool, hub: queue.Hub
) -> None:
    """Hub.stop: the stream and the sync waiter of a queued job end at once with `Stopping` naming the job."""
    job_id = await queued(pool)
    stream = events.follow(pool, hub, job_id)
    assert (await anext(stream)).type == "queued"  # type: ignore[union-attr]  # None fails the test too
    waiter = asyncio.create_task(events.wait_finished(pool, hub, job_id, 60))
    ended = asyncio.create_task(anext(stream))
    await asyncio.sleep(0.2)
    assert not waiter.done() and not ended.done()
    hub.stop(drained=False)
    async with asyncio.timeout(5):
        with pytest.raises(events.Stopping) as caught:
            await waiter
        with pytest.raises(events.Stopping):
            await ended
    assert caught.value.status == 503 and caught.value.extra["job_id"] == str(job_id)
    assert caught.value.body()["error"]["code"] == "server_stopping"
    assert await queries.job_status(pool, job_id) == "queued"


async def test_a_job_running_here_is_followed_through_the_drain(pool: asyncpg.Pool, hub: queue.Hub) -> None:
    """A job running here is followed through the drain to its end; once drained without it, `Stopping`."""
    done_id, left_id = await queued(pool), await queued(pool)
    await run_to_completion_later(pool, done_id)
    waiter = asyncio.create_task(events.wait_finished(pool, hub, done_id, 60))
    got: list[int] = []

    async def follow() -> None:
        async for ev in events.follow(pool, hub, done_id):
            if ev is not None:
                got.append(ev.id)

    follower = asyncio.create_task(follow())
    await asyncio.sleep(0.2)
    hub.stop(drained=False)
    await asyncio.sleep(0.3)
    assert not waiter.done() and not follower.done()  # the drain may finish it: they stay
    await segment(pool, done_id, 1)
    assert await queries.complete(pool, done_id, WORKER, {}, "cpu")
    await hub.notify(done_id)
    async with asyncio.timeout(5):
        assert (await waiter).status == "completed"  # type: ignore[union-attr]  # None fails the test too
        await follower
    assert got == [0, 1, 2, 3, 4]
    assert await queries.claim(pool, WORKER + "/2") is not None  # the other job runs, and is checkpointed
    left = asyncio.create_task(events.wait_finished(pool, hub, left_id, 60))
    await asyncio.sleep(0.2)
    assert not left.done()
    assert await queries.checkpoint(pool, left_id, WORKER + "/2")
    hub.stop(drained=True)
    async with asyncio.timeout(5):
        with pytest.raises(events.Stopping):
            await left


async def run_to_completion_later(pool: asyncpg.Pool, job_id: uuid.UUID) -> None:
    """Claim the job and store its first segment: it runs here."""
    claimed = await queries.claim(pool, WORKER)
    assert claimed is not None and claimed.id == job_id
    await segment(pool, job_id, 0)


@pytest.mark.slow
async def test_a_waiter_and_a_stream_ride_out_a_short_database_outage(
    pool: asyncpg.Pool, hub: queue.Hub, pg: services.Postgres
) -> None:
    """PostgreSQL down 3 s: no error escapes the waiter or the stream (keep-alives go on); both see the end."""
    job_id = await queued(pool)
    waiter = asyncio.create_task(events.wait_finished(pool, hub, job_id, 60))
    stream = events.follow(pool, hub, job_id, heartbeat=0.3)
    assert (await anext(stream)).type == "queued"  # type: ignore[union-attr]  # None fails the test too
    ticks: list[events.Event | None] = []

    async def follow() -> None:
        async for ev in stream:
            ticks.append(ev)

    follower = asyncio.create_task(follow())
    await asyncio.sleep(0.1)
    pg.stop()
    try:
        await hub.notify(job_id)  # each wakes and reads: the database is gone
        await asyncio.sleep(3)
        assert not waiter.done() and not follower.done()
    finally:
        pg.start()
    await run_to_completion(pool, job_id, 1)
    await hub.notify(job_id)
    async with asyncio.timeout(15):
        assert (await waiter).status == "completed"  # type: ignore[union-attr]  # None fails the test too
        await follower
    assert None in ticks  # keep-alives while the database was away
    assert [(e.id, e.type) for e in ticks if e is not None] == [(1, "started"), (2, "segment"), (3, "completed")]


@pytest.mark.slow
async def test_a_waiter_gives_up_at_its_deadline_with_the_job_named(
    pool: asyncpg.Pool, hub: queue.Hub, pg: services.Postgres
) -> None:
    """PostgreSQL down past the deadline: `Lost` naming the stored job; a stop in an outage ends the stream."""
    job_id = await queued(pool)
    stream = events.follow(pool, hub, job_id, outage=60)
    assert (await anext(stream)).type == "queued"  # type: ignore[union-attr]  # None fails the test too
    pending = asyncio.create_task(anext(stream))
    pg.stop()
    try:
        t0 = time.monotonic()
        with pytest.raises(events.Lost) as caught:
            await events.wait_finished(pool, hub, job_id, 1.5)
        assert 1.4 < time.monotonic() - t0 < 5
        assert caught.value.status == 503 and caught.value.extra["job_id"] == str(job_id)
        assert "stored" in caught.value.message
        await hub.notify(job_id)
        await asyncio.sleep(0.5)
        assert not pending.done()
        hub.stop(drained=True)
        async with asyncio.timeout(5):
            with pytest.raises(events.Stopping):
                await pending
    finally:
        pg.start()
