"""Redis, used only for speed: a doorbell that wakes the worker, and a channel per job for live events.

Both are pub/sub channels, and every message carries the sending process's tag (`Hub.origin`): a
process wakes its own waiters directly and skips its own messages when Redis echoes them back, so a
submission costs one claim query and a stored segment wakes each follower once. Messages from other
processes (or an untagged "1" from `asrctl`, a script) wake the local waiters.

Nothing here is needed to recover: every call fails soft (a Redis outage only means the worker and
event streams fall back to polling PostgreSQL), and redis-py reconnects by itself when Redis returns.
Within the process, wake-ups and job notifications also go directly to local waiters.

A Redis that is stopped answers "connection refused" at once; one that hangs (stopped with SIGSTOP,
swapping, a full network buffer) would not answer at all. So the calls made on a request's or a
job's path (ring, publish, the rate limiter's count) go through a `Guard`: they give up after
REDIS_TIMEOUT, and after such a timeout Redis is left alone for HUNG_BACKOFF_S, so a hung Redis
costs a job or a client at most one wait every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

DOORBELL = "asr:doorbell"
CHANNEL_PREFIX = "asr:job:"
EXTERNAL = "1"  # the tag of a message from outside a daemon (asrctl, scripts): never a Hub's own
RECONNECT_S = 1.0  # how soon a lost Redis is tried again
REDIS_TIMEOUT = 0.5  # seconds a guarded call may wait for Redis
HUNG_BACKOFF_S = 5.0  # after a timed-out call, Redis is skipped this long
T = TypeVar("T")


def connect(url: str) -> aioredis.Redis:
    """A client that gives up quickly when Redis is down (it is never worth waiting for)."""
    return aioredis.Redis.from_url(
        url, socket_connect_timeout=0.5, socket_timeout=None, retry_on_timeout=False, health_check_interval=10
    )


class Guard:
    """Bounds the Redis calls on a request's or a job's path (see the module docstring)."""

    def __init__(self) -> None:
        self._hung_until = 0.0

    async def __call__(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run `call` within REDIS_TIMEOUT; raise TimeoutError when it does not answer in time, or at
        once while a recent timeout says Redis hangs (RedisError/OSError pass through as they come)."""
        if time.monotonic() < self._hung_until:
            raise TimeoutError("Redis hung a moment ago")
        try:
            async with asyncio.timeout(REDIS_TIMEOUT):
                return await call()
        except TimeoutError:
            self._hung_until = time.monotonic() + HUNG_BACKOFF_S
            log.warning("redis_hung", extra={"event": "redis_hung", "skip_s": HUNG_BACKOFF_S})
            raise


async def ring(client: aioredis.Redis, origin: str = EXTERNAL, guard: Guard | None = None) -> bool:
    """Ring the doorbell for the workers of every process (a broadcast: SKIP LOCKED decides who gets the
    job); False when Redis is unreachable or hung. `origin` tags the ring so its sender can skip it."""
    try:
        await (guard or Guard())(lambda: client.publish(DOORBELL, origin))
        return True
    except (RedisError, OSError, TimeoutError):
        return False


async def ping(client: aioredis.Redis) -> bool:
    """True when Redis answers."""
    try:
        return bool(await asyncio.wait_for(client.ping(), 1.0))
    except (RedisError, OSError, TimeoutError):
        return False


class Hub:
    """Wake-ups for the worker and per-job notifications for event streams, local and over Redis."""

    def __init__(self, client: aioredis.Redis, poll_interval: float) -> None:
        self.client = client
        self.poll_interval = poll_interval
        self.bell = asyncio.Event()
        self._waiters: dict[uuid.UUID, set[asyncio.Event]] = defaultdict(set)
        self.redis_up = False
        self.guard = Guard()
        self.origin = uuid.uuid4().hex  # tags this process's messages (see the module docstring)
        self.stopping = asyncio.Event()  # SIGTERM reached this process: followers and waiters end (events.py)
        self.drained = asyncio.Event()  # ... and it runs no job any more (its drain is over, or it runs none)

    async def _quick(self, call: Callable[[], Awaitable[object]]) -> None:
        """One guarded Redis call that may fail: local waiters were woken already."""
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await self.guard(call)

    # --- worker doorbell -------------------------------------------------------------------
    async def ring(self) -> None:
        """Wake the local worker now and workers elsewhere through Redis."""
        self.bell.set()
        await ring(self.client, self.origin, self.guard)

    async def wait_bell(self, timeout: float) -> None:
        """Wait for the doorbell or `timeout` seconds, whichever comes first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.bell.wait(), timeout)
        self.bell.clear()

    async def listen_bell(self) -> None:
        """Forever: wake the local worker when another process rings the doorbell."""
        await self._relay(lambda p: p.subscribe(DOORBELL), lambda _channel: self.bell.set())

    # --- job events ------------------------------------------------------------------------
    def subscribe(self, job_id: uuid.UUID) -> asyncio.Event:
        """An event set whenever job `job_id` changes; pair with `unsubscribe`."""
        ev = asyncio.Event()
        self._waiters[job_id].add(ev)
        return ev

    def unsubscribe(self, job_id: uuid.UUID, ev: asyncio.Event) -> None:
        """Stop notifying `ev`."""
        waiters = self._waiters.get(job_id)
        if waiters is not None:
            waiters.discard(ev)
            if not waiters:
                del self._waiters[job_id]

    def _wake(self, job_id: uuid.UUID) -> None:
        for ev in self._waiters.get(job_id, ()):
            ev.set()

    def stop(self, *, drained: bool = False) -> None:
        """The process is stopping (`drained`: and runs no job now): wake every follower and waiter to look."""
        self.stopping.set()
        if drained:
            self.drained.set()
        self.bell.set()
        for waiters in self._waiters.values():
            for ev in waiters:
                ev.set()

    async def notify(self, job_id: uuid.UUID) -> None:
        """Job `job_id` changed (state or a new segment): wake local and remote followers."""
        self._wake(job_id)
        await self._quick(lambda: self.client.publish(CHANNEL_PREFIX + str(job_id), self.origin))

    async def listen_events(self) -> None:
        """Forever: relay job notifications published by other processes to local followers."""
        await self._relay(lambda p: p.psubscribe(CHANNEL_PREFIX + "*"), self._wake_channel)

    def _wake_channel(self, channel: str) -> None:
        with contextlib.suppress(ValueError):
            self._wake(uuid.UUID(channel.removeprefix(CHANNEL_PREFIX)))

    async def _relay(
        self,
        subscribe: Callable[[PubSub], Awaitable[object]],
        handle: Callable[[str], None],
    ) -> None:
        """Forever: pass the channel of each message another process sent to `handle`; reconnect when lost."""
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await subscribe(pubsub)
                self.redis_up = True
                async for msg in pubsub.listen():
                    if msg.get("type") not in ("message", "pmessage"):  # e.g. a health check's pong
                        continue
                    if _text(msg.get("data")) != self.origin:  # our own: its waiters were woken directly
                        handle(_text(msg.get("channel")))
            except (RedisError, OSError):
                self.redis_up = False
                await asyncio.sleep(RECONNECT_S)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated

    async def wait(self, ev: asyncio.Event, timeout: float | None = None) -> None:
        """Wait until `ev` is set or the poll interval passes (Redis may be down), then clear it."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ev.wait(), timeout or self.poll_interval)
        ev.clear()


def _text(raw: object) -> str:
    return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
