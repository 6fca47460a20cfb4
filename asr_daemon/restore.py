"""Restoring a `asrctl backup` dump, and trial restores that prove a dump is usable.

`restore` loads a dump into the configured database (or `--into` another one, created when
absent) in one transaction (`pg_restore --single-transaction --clean --if-exists`): a failure leaves
the target as it was. A target that holds jobs is refused unless the caller forces it.
`verify_restore` loads a dump into a scratch database, runs sanity queries and drops it.

Objects are restored without owners and grants (`--no-owner --no-privileges`), owned by the role
that restores: the dump then loads on a fresh host whose roles differ.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from asr_daemon import backup

DBNAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
LOCK_TIMEOUT = "30s"


@dataclass
class Sanity:
    """What a restored database holds."""

    database: str
    tables: dict[str, int] = field(default_factory=dict)
    latest_migration: str | None = None
    latest_job_at: str | None = None

    def problems(self) -> list[str]:
        """Reasons the restored data does not look like an asr-server database."""
        out = []
        if self.latest_migration is None:
            out.append("no applied migration recorded (schema_migrations missing or empty)")
        if "jobs" not in self.tables:
            out.append("no jobs table")
        return out


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _connect(url: str) -> asyncpg.Connection[Any]:
    conn: asyncpg.Connection[Any] = await asyncpg.connect(url, timeout=10)
    return conn


async def sanity(url: str) -> Sanity:
    """Row counts of every table in the public schema, latest migration, latest job."""
    conn = await _connect(url)
    try:
        out = Sanity(database=await conn.fetchval("SELECT current_database()"))
        names = await conn.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY c.relname"
        )
        for row in names:
            name = row["relname"]
            out.tables[name] = await conn.fetchval(f"SELECT count(*) FROM public.{_quote_ident(name)}")
        if out.tables.get("schema_migrations"):
            out.latest_migration = await conn.fetchval(
                "SELECT name FROM schema_migrations ORDER BY version DESC LIMIT 1"
            )
        if out.tables.get("jobs"):
            latest = await conn.fetchval("SELECT max(created_at) FROM jobs")
            out.latest_job_at = latest.isoformat() if latest else None
        return out
    finally:
        await conn.close()


async def job_count(url: str) -> int | None:
    """Jobs in the database at `url`: None when it does not exist or has no jobs table."""
    try:
        conn = await _connect(url)
    except asyncpg.InvalidCatalogNameError:
        return None
    try:
        if not await conn.fetchval("SELECT to_regclass('public.jobs') IS NOT NULL"):
            return None
        count: int = await conn.fetchval("SELECT count(*) FROM public.jobs")
        return count
    finally:
        await conn.close()


async def _admin(url: str) -> asyncpg.Connection[Any]:
    """A connection for CREATE/DROP DATABASE: the configured database, else `postgres`."""
    try:
        return await _connect(url)
    except asyncpg.InvalidCatalogNameError:
        return await _connect(backup.with_dbname(url, "postgres"))


async def create_database(url: str, name: str) -> bool:
    """Create database `name` on the server of `url` unless it exists; True when created."""
    conn = await _admin(url)
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return False
        await conn.execute(f"CREATE DATABASE {_quote_ident(name)}")
        return True
    finally:
        await conn.close()


async def drop_database(url: str, name: str) -> None:
    """Drop database `name` (closing its sessions) if it exists."""
    conn = await _admin(url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")
    finally:
        await conn.close()


def _check_file(dump: Path, bindir: Path | None) -> None:
    """Refuse a missing dump, one whose sidecar disagrees, or one pg_restore cannot read."""
    if not dump.is_file():
        raise backup.BackupError(f"{dump}: no such file")
    b = backup.Backup(dump, datetime.now(UTC), dump.stat().st_size)
    if backup.checksum_state(b) == "mismatch":
        raise backup.BackupError(f"{dump.name}: sha256 differs from {b.sidecar.name}; the file is damaged")
    backup.verify_dump(dump, bindir)


def pg_restore(dump: Path, target_url: str, bindir: Path | None, *, clean: bool) -> None:
    """Load `dump` into `target_url` in one transaction (all or nothing)."""
    url, env = backup.libpq_args(target_url)
    env["PGOPTIONS"] = f"{env.get('PGOPTIONS', '')} -c lock_timeout={LOCK_TIMEOUT}".strip()
    argv = [
        backup.pg_tool("pg_restore", bindir),
        "--no-password",
        "--exit-on-error",
        "--single-transaction",
        "--no-owner",
        "--no-privileges",
    ]
    if clean:
        argv += ["--clean", "--if-exists"]
    backup.run_tool([*argv, f"--dbname={url}", str(dump)], env)


class TargetHoldsJobs(backup.BackupError):
    """The restore target is not empty and the caller did not force it."""


async def restore(
    database_url: str,
    dump: Path,
    *,
    into: str | None = None,
    force: bool = False,
    bindir: Path | None = None,
) -> Sanity:
    """Restore `dump` into the configured database, or into `into` (created when absent)."""
    if into is not None and not DBNAME.match(into):
        raise backup.BackupError(f"--into {into!r}: use letters, digits and _ (at most 63)")
    _check_file(dump, bindir)
    name = into or backup.dbname_of(database_url)
    target = backup.with_dbname(database_url, name)
    jobs = await job_count(target)
    if jobs and not force:
        raise TargetHoldsJobs(f"database {name!r} holds {jobs} job(s): not overwriting it without --force")
    await create_database(database_url, name)
    pg_restore(dump, target, bindir, clean=True)
    return await sanity(target)


async def verify_restore(database_url: str, dump: Path, *, bindir: Path | None = None) -> Sanity:
    """Trial-restore `dump` into a scratch database, check it, drop it; record success next to the
    dump. Raises BackupError when the restore fails or the data does not look right."""
    _check_file(dump, bindir)
    name = f"asr_verify_{datetime.now(UTC).strftime('%Y%m%d%H%M%S')}_{os.getpid()}"
    scratch = backup.with_dbname(database_url, name)
    await create_database(database_url, name)
    try:
        pg_restore(dump, scratch, bindir, clean=False)
        result = await sanity(scratch)
    finally:
        await drop_database(database_url, name)
    problems = result.problems()
    if problems:
        raise backup.BackupError(f"{dump.name}: restored, but {'; '.join(problems)}")
    marker = backup.Backup(dump, datetime.now(UTC), 0).verified_marker
    with contextlib.suppress(OSError):  # a read-only backup directory still verifies
        marker.write_text(json.dumps({"verified_at": datetime.now(UTC).isoformat(), **asdict(result)}))
    return result
