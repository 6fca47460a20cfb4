"""Per-key limits: requests per minute (counted in Redis) and uploads streaming at once (in process).

The rate limiter fails open: when Redis is unreachable requests pass, and one log line says so (and
one more when counting works again), so a Redis outage never takes the API down.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from asr_daemon import errors
from asr_daemon.pipeline.queue import Guard

log = logging.getLogger(__name__)

RATE_PREFIX = "asr:rate:"


class RateLimiter:
    """Fixed one-minute windows per key: `INCR asr:rate:<bucket>:<minute>` with a two-minute expiry.

    The bucket is the key's shown token prefix (48 random bits), not its row id, so that daemons
    with different databases sharing one Redis never count each other's requests.
    """

    def __init__(self, client: aioredis.Redis, guard: Guard) -> None:
        self.client = client
        self.guard = guard  # shared with the hub: one hung Redis, one wait
        self.degraded = False

    async def check(self, bucket: str, per_minute: int) -> None:
        """Count one request in `bucket`; raise `RateLimited` beyond `per_minute` (0: unlimited)."""
        if per_minute <= 0:
            return
        now = time.time()
        window = int(now // 60)
        name = f"{RATE_PREFIX}{bucket}:{window}"
        try:
            count = await self.guard(lambda: self._count(name))
        except (RedisError, OSError, TimeoutError) as exc:
            if not self.degraded:
                self.degraded = True
                log.warning("rate_limit_unavailable", extra={"error": type(exc).__name__, "action": "fail_open"})
            return
        if self.degraded:
            self.degraded = False
            log.info("rate_limit_restored")
        if int(count) > per_minute:
            retry = max(1, int((window + 1) * 60 - now) + 1)
            raise errors.RateLimited(
                f"this key may make {per_minute} requests per minute; retry in {retry} s", retry_after=retry
            )

    async def _count(self, name: str) -> int:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.incr(name)
            pipe.expire(name, 120)
            count, _ = await pipe.execute()
        return int(count)


class UploadSlots:
    """Counts uploads in progress per owner (a key id, or None for anonymous clients)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active: dict[int | None, int] = {}

    @contextlib.contextmanager
    def hold(self, owner: int | None) -> Iterator[None]:
        """Occupy one slot of `owner` while the block runs; 429 when all its slots are taken."""
        n = self.active.get(owner, 0)
        if n >= self.limit:
            raise errors.RateLimited(
                f"{n} uploads of this key are already in progress, the most allowed at once "
                "(ASR_MAX_UPLOADS_PER_KEY); wait for one to finish",
                retry_after=2,
            )
        self.active[owner] = n + 1
        try:
            yield
        finally:
            left = self.active[owner] - 1
            if left:
                self.active[owner] = left
            else:
                del self.active[owner]
