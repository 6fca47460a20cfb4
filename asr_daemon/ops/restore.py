"""Restoring a `asrctl backup` dump, and trial restores that prove a dump is usable.

`restore` loads a dump into the configured database (or `--into` another one, created when
absent) in one transaction: tables the dump does not have (newer migrations) are dropped, the dump's
objects are dropped and recreated (`--clean --if-exists`) and its data loaded; a failure leaves the
target as it was, and drops it when this run created it (nothing is left behind). A target that
holds jobs or API keys is refused unless the caller forces it, a template database and `postgres` always.
`verify_restore` loads a dump into a scratch database, runs sanity queries and drops it.

Objects are restored without owners and grants (`--no-owner --no-privileges`), owned by the role
that restores: the dump then loads on a fresh host whose roles differ.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import asyncpg

from asr_daemon import db
from asr_daemon.ops import backup

DBNAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
LOCK_TIMEOUT = "30s"
TOC_TABLE = re.compile(r"^\d+; \d+ \d+ TABLE public (\S+) ")


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
    return await db.connect_url(url)  # the libpq-only parameters of a DSN left to pg_restore


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


#: What a restore would overwrite that an operator would miss: table → how a refusal names its rows.
HELD = {"jobs": "job(s)", "api_keys": "API key(s)"}


async def held(url: str) -> str:
    """What the database at `url` holds of `HELD` ("3 job(s) and 1 API key(s)"); "" when nothing
    (it does not exist, has no such tables, or they are empty)."""
    try:
        conn = await _connect(url)
    except asyncpg.InvalidCatalogNameError:
        return ""
    try:
        counts = []
        for table, what in HELD.items():
            if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"public.{table}"):
                n: int = await conn.fetchval(f"SELECT count(*) FROM public.{table}")  # table names from HELD only
                if n:
                    counts.append(f"{n} {what}")
        return " and ".join(counts)
    finally:
        await conn.close()


async def _admin(url: str, name: str) -> asyncpg.Connection[Any]:
    """A connection for CREATE/DROP DATABASE `name`: the configured database, else `postgres`, else
    `template1` (also when the configured database is `name`: a session cannot drop its own database)."""
    if backup.dbname_of(url) != name:
        with contextlib.suppress(asyncpg.InvalidCatalogNameError):
            return await _connect(url)
    try:
        return await _connect(backup.with_dbname(url, "postgres"))
    except (asyncpg.InvalidCatalogNameError, asyncpg.InsufficientPrivilegeError):
        return await _connect(backup.with_dbname(url, "template1"))


async def create_database(url: str, name: str) -> bool:
    """Create database `name` on the server of `url` unless it exists; True when created."""
    try:
        await (await _connect(backup.with_dbname(url, name))).close()
        return False  # it exists (and we may connect to it)
    except asyncpg.InvalidCatalogNameError:
        pass
    conn = await _admin(url, name)
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return False
        await conn.execute(f"CREATE DATABASE {_quote_ident(name)}")
        return True
    finally:
        await conn.close()


async def drop_database(url: str, name: str) -> None:
    """Drop database `name` (closing its sessions) if it exists."""
    conn = await _admin(url, name)
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


def pg_restore(dump: Path, target_url: str, bindir: Path | None) -> None:
    """Load `dump` into an empty database in one transaction (all or nothing)."""
    url, env = backup.libpq_args(target_url)
    argv = [backup.pg_tool("pg_restore", bindir), "--no-password", "--exit-on-error", "--single-transaction"]
    backup.run_tool([*argv, "--no-owner", "--no-privileges", f"--dbname={url}", str(dump)], env)


def dump_tables(dump: Path, bindir: Path | None) -> set[str]:
    """Tables of the public schema in the dump's table of contents."""
    toc = backup.run_tool([backup.pg_tool("pg_restore", bindir), "--list", str(dump)])
    return {m.group(1) for line in toc.splitlines() if (m := TOC_TABLE.match(line))}


def _first_error(log: IO[bytes], tool: str) -> str:
    log.seek(0)
    lines = [ln.strip() for ln in log.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if "ERROR" in ln or "error:" in ln or "FATAL" in ln]
    return f"{tool} failed: {(errors or lines or ['no message'])[0]}"


def replace_contents(dump: Path, target_url: str, bindir: Path | None, drop: list[str]) -> None:
    """In ONE transaction: drop the tables `drop` (those of newer migrations, absent from the dump),
    drop the dump's own objects (`--clean --if-exists`) and load the dump. The SQL that pg_restore
    writes is fed to psql between our BEGIN and a COMMIT sent only once pg_restore succeeded; psql
    stops at the first error (ON_ERROR_STOP) and the server rolls everything back."""
    url, env = backup.libpq_args(target_url)
    env["PGOPTIONS"] = f"{env.get('PGOPTIONS', '')} -c lock_timeout={LOCK_TIMEOUT}".strip()
    prelude = "BEGIN;\n" + "".join(f"DROP TABLE IF EXISTS public.{_quote_ident(t)} CASCADE;\n" for t in drop)
    produce = [backup.pg_tool("pg_restore", bindir), "--no-owner", "--no-privileges", "--clean", "--if-exists"]
    consume = [backup.pg_tool("psql", bindir), "-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=1"]
    with tempfile.TemporaryFile() as produce_log, tempfile.TemporaryFile() as consume_log:
        producer = subprocess.Popen([*produce, "--file=-", str(dump)], stdout=subprocess.PIPE, stderr=produce_log)
        consumer = subprocess.Popen(
            [*consume, f"--dbname={url}", "--file=-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=consume_log,
            env=env,
        )
        assert producer.stdout is not None and consumer.stdin is not None  # both are pipes
        produced = None
        try:
            consumer.stdin.write(prelude.encode())
            shutil.copyfileobj(producer.stdout, consumer.stdin, 1 << 20)
            produced = producer.wait()
            consumer.stdin.write(b"COMMIT;\n" if produced == 0 else b"ROLLBACK;\n")
        except BrokenPipeError:
            pass  # psql stopped at an error; its transaction dies with its connection
        finally:
            with contextlib.suppress(OSError):
                consumer.stdin.close()
            if producer.poll() is None:
                producer.kill()
            producer.wait()
            producer.stdout.close()
            consumed = consumer.wait()
        if consumed != 0:
            raise backup.BackupError(_first_error(consume_log, "psql"))
        if produced != 0:
            raise backup.BackupError(_first_error(produce_log, "pg_restore"))


async def public_tables(url: str) -> set[str]:
    """Tables of the public schema of the database at `url`."""
    conn = await _connect(url)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r["tablename"] for r in rows}
    finally:
        await conn.close()


class TargetHoldsJobs(backup.BackupError):
    """The restore target holds jobs or API keys and the caller did not force it."""


MAINTENANCE_DB = "postgres"


async def refuse_system_database(database_url: str, name: str) -> None:
    """Refuse a template database (every CREATE DATABASE would copy asr's tables from it, and later
    trial restores would fail) and `postgres`, the maintenance database tools connect to."""
    if name == MAINTENANCE_DB:
        raise backup.BackupError(f"database {name!r} is PostgreSQL's maintenance database: restore into another one")
    conn = await _admin(database_url, name)
    try:
        template = await conn.fetchval("SELECT datistemplate FROM pg_database WHERE datname = $1", name)
    finally:
        await conn.close()
    if template:
        raise backup.BackupError(
            f"database {name!r} is a template (CREATE DATABASE copies it): restore into another one"
        )


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
    await refuse_system_database(database_url, name)
    target = backup.with_dbname(database_url, name)
    holds = await held(target)
    if holds and not force:
        raise TargetHoldsJobs(f"database {name!r} holds {holds}: not overwriting it without --force")
    created = await create_database(database_url, name)
    try:
        extra = sorted(await public_tables(target) - dump_tables(dump, bindir))
        replace_contents(dump, target, bindir, extra)
        return await sanity(target)
    except BaseException:
        if created:  # nothing left behind: the database this run created goes with the failure
            with contextlib.suppress(Exception):
                await drop_database(database_url, name)
        raise


async def verify_restore(database_url: str, dump: Path, *, bindir: Path | None = None) -> Sanity:
    """Trial-restore `dump` into a scratch database, check it, drop it; record success next to the
    dump. Raises BackupError when the restore fails or the data does not look right."""
    _check_file(dump, bindir)
    name = f"asr_verify_{datetime.now(UTC).strftime('%Y%m%d%H%M%S')}_{os.getpid()}"
    scratch = backup.with_dbname(database_url, name)
    created = await create_database(database_url, name)
    if not created:
        raise backup.BackupError(f"scratch database {name!r} already exists; try again")
    try:
        pg_restore(dump, scratch, bindir)
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
