"""queue.Guard: a Redis call that hangs costs one REDIS_TIMEOUT, then Redis is skipped for a while."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from asr_daemon.pipeline import queue


async def test_a_quick_call_passes_its_result_through() -> None:
    """An answering call returns its value."""

    async def answer() -> int:
        return 7

    assert await queue.Guard()(answer) == 7


async def test_a_hung_call_times_out_then_redis_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A call that does not answer raises TimeoutError after REDIS_TIMEOUT; the next calls fail at once
    without being made, until HUNG_BACKOFF_S has passed."""
    monkeypatch.setattr(queue, "REDIS_TIMEOUT", 0.05)
    monkeypatch.setattr(queue, "HUNG_BACKOFF_S", 0.3)
    guard, calls = queue.Guard(), []

    async def hang() -> None:
        calls.append(1)
        await asyncio.sleep(10)

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(TimeoutError):
        await guard(hang)
    assert 0.04 < loop.time() - t0 < 1
    with pytest.raises(TimeoutError, match="hung a moment ago"):
        await guard(hang)
    assert len(calls) == 1
    await asyncio.sleep(0.35)

    async def answer() -> str:
        return "back"

    assert await guard(answer) == "back"


async def test_a_refused_connection_passes_through_and_does_not_count_as_hung() -> None:
    """Redis down (connection refused) raises its own error, and the next call is still made."""
    guard, calls = queue.Guard(), []

    async def refused() -> None:
        calls.append(1)
        raise RedisConnectionError("refused")

    for _ in range(2):
        with pytest.raises(RedisConnectionError):
            await guard(refused)
    assert len(calls) == 2
