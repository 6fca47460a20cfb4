"""Schema migrations: plain SQL files applied in order, recorded, under an advisory lock.

Safe to run twice (applied files are skipped) and from two processes at once (the second waits for
the first's lock, then finds nothing to do). Each file runs in its own transaction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg

LOCK_ID = 0x617372  # "asr": pg_advisory_lock key shared by every migrating process
NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    """One SQL file."""

    version: int
    name: str
    sql: str


def migrations_dir() -> Path:
    """Where the SQL files are: inside the installed wheel, or the repository's `migrations/`."""
    packaged = Path(str(resources.files("asr_daemon"))) / "migrations"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "migrations"


def load(directory: Path | None = None) -> list[Migration]:
    """All migrations, sorted by version; raises on a badly named file or a duplicate version."""
    found: dict[int, Migration] = {}
    for path in sorted((directory or migrations_dir()).glob("*.sql")):
        m = NAME.match(path.name)
        if not m:
            raise ValueError(f"migration file {path.name!r} is not named NNNN_snake_case.sql")
        version = int(m.group(1))
        if version in found:
            raise ValueError(f"two migrations share version {version:04d}")
        found[version] = Migration(version, path.stem, path.read_text())
    return [found[v] for v in sorted(found)]


async def applied(conn: asyncpg.Connection[Any]) -> dict[int, str]:
    """Versions already applied (empty when the bookkeeping table does not exist yet)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return {}
    rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
    return {r["version"]: r["name"] for r in rows}


async def migrate(conn: asyncpg.Connection[Any], directory: Path | None = None) -> list[str]:
    """Apply every pending migration; returns the names applied now."""
    todo = load(directory)
    done: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_ID)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        have = await applied(conn)
        for mig in todo:
            if mig.version in have:
                continue
            async with conn.transaction():
                await conn.execute(mig.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", mig.version, mig.name
                )
            done.append(mig.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_ID)
    return done


async def pending(conn: asyncpg.Connection[Any], directory: Path | None = None) -> list[str]:
    """Names of migrations not yet applied."""
    have = await applied(conn)
    return [m.name for m in load(directory) if m.version not in have]
