"""`asrctl backup`, `asrctl backup ls`, `asrctl restore`: PostgreSQL dumps for the operator and cron.

Talks to PostgreSQL with pg_dump/pg_restore (newest installed, or ASR_PG_BINDIR) and never to the
daemon. The database password travels in PGPASSWORD, never on a command line or in output.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import asyncpg
import typer
from rich.console import Console
from rich.table import Table

from asr_daemon import db as dbmod
from asr_daemon.cli import common
from asr_daemon.cli.common import human_age, human_size
from asr_daemon.ops import backup as bk
from asr_daemon.ops import host
from asr_daemon.ops import restore as rs

T = TypeVar("T")

app = typer.Typer(
    help="Back up the database (pg_dump -Fc, verified, rotated); `backup ls` lists backups.",
    invoke_without_command=True,
)

DirOpt = Annotated[
    Path | None, typer.Option("--dir", help="Backup directory (ASR_BACKUP_DIR, else <state_dir>/backups).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
AUDIO_NOTE = "uploaded audio is not in the dump: use --with-audio or back up {} (docs/operations.md)"


def _db(coro: Coroutine[Any, Any, T]) -> T:
    """Run a database coroutine; one error line when PostgreSQL cannot be reached or refuses."""
    try:
        return common.run(coro)
    except bk.BackupError as exc:
        common.fail(str(exc))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        common.fail(dbmod.connect_error(common.settings().database_url.get_secret_value(), exc))


@app.callback()
def backup_cmd(
    ctx: typer.Context,
    directory: DirOpt = None,
    keep_daily: Annotated[int | None, typer.Option(min=0, help="Days to keep (default ASR_BACKUP_KEEP_DAILY).")] = None,
    keep_weekly: Annotated[
        int | None, typer.Option(min=0, help="Weeks to keep (default ASR_BACKUP_KEEP_WEEKLY).")
    ] = None,
    with_audio: Annotated[bool, typer.Option("--with-audio", help="Also tar the uploads directory.")] = False,
    verify: Annotated[
        bool, typer.Option("--verify", help="Also trial-restore into a scratch database (needs CREATEDB).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Dump the database, verify the dump, rename it into place, then prune old backups."""
    if ctx.invoked_subcommand is not None:
        return
    s = common.settings()
    target = directory or s.backups_dir
    url = s.database_url.get_secret_value()
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(bk.locked(target))
            uploads = s.uploads_dir if with_audio else None
            taken = bk.take(url, target, bindir=s.pg_bindir, uploads_dir=uploads)
        except bk.BackupError as exc:
            common.fail(f"backup failed, nothing replaced or pruned: {exc}")
        except OSError as exc:
            common.fail(f"backup failed, nothing replaced or pruned: {exc.strerror}: {exc.filename}")
        sanity = _db(rs.verify_restore(url, taken.backup.path, bindir=s.pg_bindir)) if verify else None
        removed = bk.prune(
            target,
            s.backup_keep_daily if keep_daily is None else keep_daily,
            s.backup_keep_weekly if keep_weekly is None else keep_weekly,
        )
    if as_json:
        common.print_json(
            {
                "file": str(taken.backup.path),
                "size_bytes": taken.backup.size,
                "toc_entries": taken.toc_entries,
                "audio_file": str(taken.backup.audio) if with_audio else None,
                "audio_files": taken.audio_files,
                "restore_verified": sanity is not None,
                "tables": sanity.tables if sanity else None,
                "pruned": [str(p) for p in removed],
            }
        )
        return
    typer.echo(f"backup {taken.backup.path} ({human_size(taken.backup.size)}, {taken.toc_entries} objects, verified)")
    if sanity is not None:
        rows = ", ".join(f"{k}={v}" for k, v in sanity.tables.items())
        typer.echo(f"trial restore ok: {sanity.latest_migration}; {rows}")
    if with_audio:
        typer.echo(f"audio {taken.backup.audio} ({taken.audio_files} files)")
    else:
        typer.echo("note: " + AUDIO_NOTE.format(s.uploads_dir))
    for path in removed:
        typer.echo(f"pruned {path.name}")


def _state(check: Callable[[bk.Backup], T], b: bk.Backup, unreadable: list[str]) -> T | str:
    """`check(b)`, or `unreadable` (its reason kept in `unreadable`) when a file cannot be read."""
    try:
        return check(b)
    except bk.BackupError as exc:
        unreadable.append(str(exc))
        return "unreadable"


@app.command("ls")
def ls_cmd(directory: DirOpt = None, as_json: JsonOpt = False) -> None:
    """List backups, newest first, with age, size and verification state (sha256 against the sidecar)."""
    s = common.settings()
    target = directory or s.backups_dir
    now = datetime.now(UTC)
    try:
        backups = bk.list_backups(target)
    except OSError as exc:
        common.fail(f"cannot list {target}: {exc.strerror}")
    unreadable: list[str] = []
    states = {b.path: _state(bk.checksum_state, b, unreadable) for b in backups}
    audio = {b.path: _state(bk.audio_state, b, unreadable) for b in backups}
    verified = {b.path: bk.restore_verified_at(b) for b in backups}
    if as_json:
        common.print_json(
            {
                "dir": str(target),
                "backups": [
                    {
                        "file": str(b.path),
                        "taken_at": b.taken_at.isoformat(),
                        "age_s": (now - b.taken_at).total_seconds(),
                        "size_bytes": b.size,
                        "checksum": states[b.path],
                        "audio": str(b.audio) if b.audio.exists() else None,
                        "audio_checksum": audio[b.path],
                        "restore_verified_at": (v := verified[b.path]) and v.isoformat(),
                    }
                    for b in backups
                ],
            }
        )
    elif not backups:
        typer.echo(f"no backups in {target}")
    else:
        table = Table(title=str(target))
        for col in ("file", "age", "size", "checksum", "audio", "trial restore"):
            table.add_column(col)
        for b in backups:
            when = verified[b.path]
            table.add_row(
                b.path.name,
                human_age((now - b.taken_at).total_seconds()),
                human_size(b.size),
                _colored(states[b.path]),
                "-" if audio[b.path] is None else _colored(str(audio[b.path])),
                when.strftime("%Y-%m-%d %H:%M") if when else "-",
            )
        Console().print(table)
    if unreadable:
        more = f" (and {len(unreadable) - 1} more)" if len(unreadable) > 1 else ""
        common.fail(unreadable[0] + more)


def _colored(state: str) -> str:
    color = {"ok": "green", "mismatch": "bold red", "missing": "bold red", "unreadable": "bold red"}.get(state)
    return f"[{color or 'yellow'}]{state}[/]"


def restore_cmd(
    file: Annotated[Path, typer.Argument(help="A dump written by `asrctl backup`.")],
    into: Annotated[str | None, typer.Option("--into", help="Restore into this database (created if absent).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite a database that holds jobs or API keys.")] = False,
    verify: Annotated[
        bool, typer.Option("--verify", help="Only prove the dump restores: scratch database, sanity queries, dropped.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Restore a backup (one transaction: on failure the target is unchanged)."""
    if into is not None and (not rs.DBNAME.match(into) or into == rs.MAINTENANCE_DB):
        what = (
            "PostgreSQL's maintenance database: restore into another one"
            if into == rs.MAINTENANCE_DB
            else "use letters, digits and _ (at most 63)"
        )
        common.fail(f"--into {into[:70]!r}: {what}", code=2)
    s = common.settings()
    url = s.database_url.get_secret_value()
    if verify:
        result = _db(rs.verify_restore(url, file, bindir=s.pg_bindir))
    else:
        if into is None and host.unit_active("asr-server.service"):
            common.fail("asr-server.service is running: stop asr-server.socket and asr-server.service first")
        result = _db(rs.restore(url, file, into=into, force=force, bindir=s.pg_bindir))
    audio = _audio_note(file)
    if as_json:
        common.print_json(
            {
                "verified" if verify else "restored": str(file),
                "audio_checksum": audio[0],
                "database": result.database,
                "tables": result.tables,
                "latest_migration": result.latest_migration,
                "latest_job_at": result.latest_job_at,
            }
        )
        return
    verb = "trial restore ok (scratch database dropped)" if verify else f"restored into {result.database!r}"
    typer.echo(f"{verb}: latest migration {result.latest_migration}, latest job {result.latest_job_at}")
    typer.echo("rows: " + ", ".join(f"{k}={v}" for k, v in result.tables.items()))
    if not verify:
        typer.echo("next: `asrctl db migrate` if the code is newer than the dump")
    if audio[1]:
        typer.echo(f"note: {audio[1]}")


def _audio_note(dump: Path) -> tuple[str | None, str | None]:
    """The dump's audio tar state, and a note when it is not usable (the database is restored anyway:
    the tar is unpacked by hand, docs/operations.md)."""
    b = bk.Backup(dump, datetime.now(UTC), 0)
    try:
        state = bk.audio_state(b)
    except bk.BackupError as exc:
        return "unreadable", f"audio tar: {exc}"
    notes = {
        "missing": f"{b.audio.name} is listed in {b.sidecar.name} but absent: the uploaded audio is not restored",
        "mismatch": f"{b.audio.name}: sha256 differs from {b.sidecar.name}; the audio tar is damaged",
    }
    return state, notes.get(state or "")
