"""limits.RateLimiter against a real Redis: per-key windows, the 429's Retry-After, failing open."""

from __future__ import annotations

import logging
import uuid

import pytest

from asr_daemon import errors
from asr_daemon.pipeline import limits, queue
from tests import services


def limiter(url: str) -> limits.RateLimiter:
    """A limiter on Redis at `url`, with its own guard."""
    return limits.RateLimiter(queue.connect(url), queue.Guard())


async def test_a_key_gets_its_requests_per_minute_then_a_429(redis_server: services.Redis) -> None:
    """per_minute requests pass; the next is RateLimited with a Retry-After within the minute; another
    bucket (key) is counted apart; 0 means unlimited."""
    rl = limiter(redis_server.url)
    bucket, other = uuid.uuid4().hex, uuid.uuid4().hex
    for _ in range(3):
        await rl.check(bucket, 3)
    with pytest.raises(errors.RateLimited, match="3 requests per minute") as exc:
        await rl.check(bucket, 3)
    assert exc.value.retry_after is not None and 1 <= exc.value.retry_after <= 61
    await rl.check(other, 3)
    for _ in range(10):
        await rl.check(bucket, 0)
    keys = [k async for k in rl.client.scan_iter(f"{limits.RATE_PREFIX}{bucket}:*")]
    assert len(keys) == 1 and 0 < await rl.client.ttl(keys[0]) <= 120
    await rl.client.aclose()


async def test_redis_down_fails_open_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    """With Redis unreachable every request passes, and one warning says the limit is off."""
    rl = limiter(f"redis://127.0.0.1:{services.free_port()}/0")
    with caplog.at_level(logging.INFO, logger="asr_daemon.pipeline.limits"):
        for _ in range(5):
            await rl.check("k", 1)
    assert [r.message for r in caplog.records] == ["rate_limit_unavailable"]
    assert rl.degraded
    await rl.client.aclose()


async def test_counting_again_when_redis_returns_is_logged(
    redis_server: services.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """After an outage, the first counted request logs rate_limit_restored once."""
    rl = limiter(redis_server.url)
    rl.degraded = True  # as after test_redis_down_fails_open_and_says_so_once
    with caplog.at_level(logging.INFO, logger="asr_daemon.pipeline.limits"):
        await rl.check(uuid.uuid4().hex, 5)
        await rl.check(uuid.uuid4().hex, 5)
    assert [r.message for r in caplog.records] == ["rate_limit_restored"]
    assert not rl.degraded
    await rl.client.aclose()
