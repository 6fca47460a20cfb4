"""Cancel requests over PostgreSQL NOTIFY (`asr_daemon.pipeline.cancels`), against a real server."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg

from asr_daemon.config import Settings
from asr_daemon.pipeline import cancels


async def test_the_listener_hears_requests_and_listens_again_after_its_connection_dies(
    database: str, tmp_path: Path
) -> None:
    """Each `NOTIFY asr_cancel` reaches `on_cancel` with its job id; garbage payloads are ignored; when
    PostgreSQL ends the listening connection the listener reconnects and hears the next one."""
    heard: asyncio.Queue[uuid.UUID] = asyncio.Queue()
    listener = cancels.Listener(
        Settings(database_url=database, state_dir=tmp_path, poll_interval=0.1), heard.put_nowait
    )
    task = asyncio.create_task(listener.run())
    conn = await asyncpg.connect(database)
    try:
        await asyncio.wait_for(listener.listening.wait(), 10)
        first, second = uuid.uuid4(), uuid.uuid4()
        await conn.execute("SELECT pg_notify($1, 'not a job id')", cancels.CHANNEL)
        await conn.execute("SELECT pg_notify($1, $2)", cancels.CHANNEL, str(first))
        assert await asyncio.wait_for(heard.get(), 5) == first

        killed = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE query ILIKE 'LISTEN%' AND pid <> pg_backend_pid()"
        )
        assert killed == 1
        for _ in range(100):  # the listener notices the loss...
            if not listener.listening.is_set():
                break
            await asyncio.sleep(0.05)
        assert not listener.listening.is_set()
        await asyncio.wait_for(listener.listening.wait(), 10)  # ...and listens again
        await conn.execute("SELECT pg_notify($1, $2)", cancels.CHANNEL, str(second))
        assert await asyncio.wait_for(heard.get(), 5) == second
        assert heard.empty()
    finally:
        task.cancel()
        await conn.close()
