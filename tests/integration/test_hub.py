"""queue.Hub against a real Redis: two processes' hubs wake each other, never themselves; Redis down is harmless."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from asr_daemon.pipeline import queue
from tests import services

SETTLE_S = 0.3  # longer than any Redis echo takes on localhost


class Counting(asyncio.Event):
    """An event that counts how often it is set."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def set(self) -> None:
        """Count, then set."""
        self.count += 1
        super().set()


@pytest.fixture
async def hubs(redis_server: services.Redis) -> AsyncIterator[tuple[queue.Hub, queue.Hub]]:
    """Two hubs on one Redis, as two daemon processes have, with their listeners running and subscribed."""
    pair = (queue.Hub(queue.connect(redis_server.url), 2.0), queue.Hub(queue.connect(redis_server.url), 2.0))
    tasks = [asyncio.create_task(listen()) for h in pair for listen in (h.listen_bell, h.listen_events)]
    probe = aioredis.Redis.from_url(redis_server.url)
    job = uuid.uuid4()
    seen = [h.subscribe(job) for h in pair]
    async with asyncio.timeout(10):  # both doorbells subscribed, and both event listeners (heard a probe)
        while (await probe.pubsub_numsub(queue.DOORBELL))[0][1] < 2 or not all(ev.is_set() for ev in seen):
            await probe.publish(queue.CHANNEL_PREFIX + str(job), queue.EXTERNAL)
            await asyncio.sleep(0.05)
    for h, ev in zip(pair, seen, strict=True):
        h.unsubscribe(job, ev)
    for h in pair:
        h.bell = Counting()
    yield pair
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for h in pair:
        await h.client.aclose()
    await probe.aclose()


async def test_a_ring_wakes_the_other_process_and_not_its_own_listener(hubs: tuple[queue.Hub, queue.Hub]) -> None:
    """A submission's ring wakes the local worker once (no second, empty claim from Redis's echo) and the
    other process's worker once."""
    a, b = hubs
    await a.ring()
    await asyncio.sleep(SETTLE_S)
    assert (a.bell.count, b.bell.count) == (1, 1)  # type: ignore[attr-defined]  # Counting


async def test_a_notify_wakes_each_follower_once(hubs: tuple[queue.Hub, queue.Hub]) -> None:
    """A stored segment wakes a follower in the same process once and one in another process once."""
    a, b = hubs
    job = uuid.uuid4()
    here, there = Counting(), Counting()
    a._waiters[job].add(here)
    b._waiters[job].add(there)
    for _ in range(3):
        await a.notify(job)
    await asyncio.sleep(SETTLE_S)
    assert (here.count, there.count) == (3, 3)


async def test_an_untagged_ring_from_outside_wakes_every_process(
    hubs: tuple[queue.Hub, queue.Hub], redis_server: services.Redis
) -> None:
    """`asrctl jobs retry` rings with queue.ring (no process tag): every daemon's worker wakes."""
    a, b = hubs
    client = queue.connect(redis_server.url)
    assert await queue.ring(client)
    await client.aclose()
    await asyncio.sleep(SETTLE_S)
    assert (a.bell.count, b.bell.count) == (1, 1)  # type: ignore[attr-defined]  # Counting


async def test_subscribe_wait_and_unsubscribe(hubs: tuple[queue.Hub, queue.Hub]) -> None:
    """A follower subscribed on one hub is woken by a notify from the other; unsubscribed, it is forgotten."""
    a, b = hubs
    job = uuid.uuid4()
    ev = b.subscribe(job)
    waiting = asyncio.create_task(b.wait(ev, 5))
    await a.notify(job)
    async with asyncio.timeout(2):
        await waiting
    assert not ev.is_set()  # wait() clears it for the next round
    b.unsubscribe(job, ev)
    assert job not in b._waiters


async def test_redis_down_wakes_local_waiters_and_raises_nothing() -> None:
    """With nothing listening on Redis's port, ring and notify return at once and still wake this
    process's worker and followers; the listeners keep retrying without raising."""
    hub = queue.Hub(queue.connect(f"redis://127.0.0.1:{services.free_port()}/0"), 0.1)
    listeners = [asyncio.create_task(hub.listen_bell()), asyncio.create_task(hub.listen_events())]
    job = uuid.uuid4()
    ev = hub.subscribe(job)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await hub.ring()
    await hub.notify(job)
    assert loop.time() - t0 < queue.REDIS_TIMEOUT * 2
    assert hub.bell.is_set() and ev.is_set()
    assert not await queue.ring(hub.client)
    await asyncio.sleep(0.2)
    assert not any(t.done() for t in listeners)
    assert hub.redis_up is False
    for t in listeners:
        t.cancel()
    await asyncio.gather(*listeners, return_exceptions=True)
    await hub.client.aclose()


async def test_wait_gives_up_after_the_poll_interval() -> None:
    """wait() returns after the poll interval when nothing wakes it (Redis down: the caller polls)."""
    hub = queue.Hub(queue.connect(f"redis://127.0.0.1:{services.free_port()}/0"), 0.05)
    ev = hub.subscribe(uuid.uuid4())
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await hub.wait(ev)
    assert 0.04 < loop.time() - t0 < 1
    await hub.wait_bell(0.05)
    await hub.client.aclose()
