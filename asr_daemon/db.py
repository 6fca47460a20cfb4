"""PostgreSQL connections: one asyncpg pool per process, with JSON codecs installed."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import asyncpg

from asr_daemon import dsn
from asr_daemon.config import Settings
from asr_daemon.dsn import targets  # there: `asrctl serve` probes PostgreSQL before it imports asyncpg

#: PostgreSQL cannot be reached, or dropped the connection: the API answers 503 with Retry-After.
UNAVAILABLE: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    TimeoutError,
    # what asyncpg raises on a pooled connection PostgreSQL closed while it sat idle (server stop):
    # "cannot switch to state ...; another operation is in progress"
    asyncpg.InternalClientError,
)
#: Every database failure a background loop (claim, heartbeat, reaper, metrics) outlives: the above, or any
#: error PostgreSQL answered with.
ERRORS: tuple[type[Exception], ...] = (*UNAVAILABLE, asyncpg.PostgresError)


async def _init(conn: asyncpg.Connection[Any]) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(settings: Settings, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool[Any]:
    """Open the pool; raises `OSError`/`asyncpg.PostgresError` when the database is unreachable."""
    url, timeout = dsn.for_asyncpg(settings.database_url.get_secret_value(), 10)
    pool: asyncpg.Pool[Any] = await asyncpg.create_pool(
        url, min_size=min_size, max_size=max_size, init=_init, command_timeout=30, timeout=timeout
    )
    return pool


async def connect(settings: Settings) -> asyncpg.Connection[Any]:
    """One connection, for the CLI."""
    conn = await connect_url(settings.database_url.get_secret_value())
    await _init(conn)
    return conn


async def connect_url(url: str, timeout: float = 10) -> asyncpg.Connection[Any]:
    """One plain connection to `url` (any form libpq reads; the libpq-only parameters left to the tools)."""
    target, wait = dsn.for_asyncpg(url, timeout)
    conn: asyncpg.Connection[Any] = await asyncpg.connect(target, timeout=wait)
    return conn


# --- what a failed connection tried, in words --------------------------------------------------------

#: host names that mean this machine (a local cluster: its socket directory and port are the fix)
LOCAL = ("localhost", "127.0.0.1", "::1")
#: the fix for a cluster that is not where the DSN points, with the form scripts/install writes
EXAMPLE = "postgresql:///asr?host=/var/run/postgresql&port=5433"


def describe_targets(pairs: Sequence[tuple[str, str]]) -> str:
    """The pairs in words: 'socket directories /run/postgresql, /tmp and host localhost, port 5432'."""
    dirs = [h for h, _ in pairs if h.startswith("/")]
    hosts = [h for h, _ in pairs if not h.startswith("/")]
    if len({p for _, p in pairs}) == 1:
        where = []
        if dirs:
            where.append(("socket directory " if len(dirs) == 1 else "socket directories ") + ", ".join(dirs))
        if hosts:
            where.append(("host " if len(hosts) == 1 else "hosts ") + ", ".join(hosts))
        return " and ".join(where) + f", port {pairs[0][1]}"
    return ", ".join(f"socket directory {h} port {p}" if h.startswith("/") else f"host {h} port {p}" for h, p in pairs)


def connect_error(dsn: str, exc: BaseException) -> str:
    """One line for a failed connection: what was tried, what went wrong and the likely fix.
    Never the DSN itself (it may hold a password)."""
    pairs = targets(dsn)
    where = describe_targets(pairs)
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return (
            f"PostgreSQL (ASR_DATABASE_URL, {where}): {exc}: create it (as postgres: createdb -O asr asr; "
            "`make services` on a development host), or point ASR_DATABASE_URL at the cluster that has it"
        )
    if isinstance(exc, (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidPasswordError)):
        return (
            f"PostgreSQL (ASR_DATABASE_URL, {where}) refused the login: {exc}: "
            "create the role, or check the user and password in ASR_DATABASE_URL and pg_hba.conf"
        )
    if isinstance(exc, (OSError, TimeoutError)):
        detail = str(exc) or type(exc).__name__
        if any(h.startswith("/") or h in LOCAL for h, _ in pairs):
            fix = (
                "is PostgreSQL running, and on which port? `pg_lsclusters` lists the clusters; set "
                f"ASR_DATABASE_URL to the socket directory and port of yours, e.g. {EXAMPLE}"
            )
        else:
            fix = "check the host and port in ASR_DATABASE_URL, and that the server accepts connections there"
        return f"PostgreSQL (ASR_DATABASE_URL) unreachable: tried {where} ({detail}): {fix}"
    return f"PostgreSQL (ASR_DATABASE_URL, {where}): {exc}"
