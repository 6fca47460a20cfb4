"""A live session whose client streams faster than it is transcribed (real PostgreSQL, real tiny.en, a
real LiveManager and LiveSession; the WebSocket is an in-memory stand-in that hands over the client's
events as fast as the session reads them)."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pytest
import redis.asyncio as aioredis

from asr_daemon.config import Settings
from asr_daemon.engine import models
from asr_daemon.live.manager import LiveManager
from asr_daemon.live.session import LiveSession
from asr_daemon.pipeline.queue import Hub
from tests import live
from tests.integration.test_live_reaper import pool

__all__ = ["pool"]  # a fixture, imported for pytest

pytestmark = pytest.mark.slow


class Socket:
    """In-memory stand-in for Litestar's WebSocket (receive / send_text / close)."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        """The client's next message."""
        return await self.inbox.get()

    async def send_text(self, text: str) -> None:
        """Keep a server event."""
        self.sent.append(json.loads(text))

    async def close(self, code: int, reason: str) -> None:
        """Nothing to close in memory."""

    def put(self, ev: dict[str, Any]) -> None:
        """The client sends `ev`."""
        self.inbox.put_nowait({"type": "websocket.receive", "text": json.dumps(ev)})


async def test_committed_audio_waiting_for_its_decode_is_bounded(
    pool: asyncpg.Pool, models_dir: Path, tmp_path: Path
) -> None:
    """Twelve 20 s utterances committed at once against a 30 s bound: the session holds at most the bound
    plus one utterance of undecoded audio and stops reading (the rest waits in the socket) until the
    finisher catches up; the client then leaving leaves nothing behind."""
    (tmp_path / "uploads").mkdir()
    (tmp_path / "models").symlink_to(models_dir)
    s = Settings(database_url="postgresql://unused", state_dir=tmp_path, workers=1, model="tiny.en",
                 live_max_buffer_s=30)  # fmt: skip
    m = LiveManager(s, pool, models.cache_from_settings(s), Hub(aioredis.Redis(port=1), 1.0), "host:1:live")
    sock = Socket()
    sess = LiveSession(sock, m, None, None)
    m.admit(sess)
    serve = asyncio.create_task(m.serve(sess))
    sock.put(live.session_update(rate=16000, vad=None))
    noise = (np.random.default_rng(0).standard_normal(16000 * 20) * 300).astype("<i2").tobytes()
    for _ in range(12):
        sock.put({"type": "input_audio_buffer.append", "audio": base64.b64encode(noise).decode()})
        sock.put({"type": "input_audio_buffer.commit"})
    held = 0
    for _ in range(40):  # 2 s: long enough to read everything without the bound
        await asyncio.sleep(0.05)
        queued = [it for it in list(sess.commits._queue) if it is not None]  # type: ignore[attr-defined]  # a peek
        held = max(held, sum(it.end - it.start for it in queued))
    assert held <= (30 + 20) * 16000, held / 16000
    assert sock.inbox.qsize() >= 8, "the session read on past its bound"  # most of the 24 events wait
    sock.inbox.put_nowait({"type": "websocket.disconnect"})
    await asyncio.wait_for(serve, 300)
    assert m.sessions == {} and sess.entry is None


async def test_a_session_whose_audio_cannot_be_stored_leaves_no_job(
    pool: asyncpg.Pool, models_dir: Path, tmp_path: Path
) -> None:
    """When the audio file cannot be made (here uploads/ is a file, not a folder), the session ends with an
    error and its job row is gone: no job a worker would later fail for missing audio."""
    (tmp_path / "uploads").write_text("not a folder")
    (tmp_path / "models").symlink_to(models_dir)
    s = Settings(database_url="postgresql://unused", state_dir=tmp_path, workers=1, model="tiny.en")
    m = LiveManager(s, pool, models.cache_from_settings(s), Hub(aioredis.Redis(port=1), 1.0), "host:1:live")
    sock = Socket()
    sess = LiveSession(sock, m, None, None)
    m.admit(sess)
    sock.put(live.session_update(rate=16000, vad=None))
    await asyncio.wait_for(m.serve(sess), 60)
    assert [e["error"]["message"] for e in sock.sent if e["type"] == "error"] == ["audio not stored"]
    assert await pool.fetchval("SELECT count(*) FROM jobs") == 0
    assert m.sessions == {} and sess.entry is None
