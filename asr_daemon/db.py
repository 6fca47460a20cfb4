"""PostgreSQL connections: one asyncpg pool per process, with JSON codecs installed."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from asr_daemon.config import Settings


async def _init(conn: asyncpg.Connection[Any]) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(settings: Settings, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool[Any]:
    """Open the pool; raises `OSError`/`asyncpg.PostgresError` when the database is unreachable."""
    pool: asyncpg.Pool[Any] = await asyncpg.create_pool(
        settings.database_url.get_secret_value(),
        min_size=min_size,
        max_size=max_size,
        init=_init,
        command_timeout=30,
        timeout=10,
    )
    return pool


async def connect(settings: Settings) -> asyncpg.Connection[Any]:
    """One connection, for the CLI."""
    conn: asyncpg.Connection[Any] = await asyncpg.connect(settings.database_url.get_secret_value(), timeout=10)
    await _init(conn)
    return conn
