"""What every statement of `asr_daemon.queries` runs on."""

from __future__ import annotations

import asyncpg
import asyncpg.pool

#: a pool, or one connection (a plain one, or one acquired from the pool, e.g. for a transaction)
Conn = asyncpg.Connection | asyncpg.Pool | asyncpg.pool.PoolConnectionProxy
#: one connection, for what must run inside a transaction
Tx = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
Row = asyncpg.Record
