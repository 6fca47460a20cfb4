"""`asrctl db`: apply and inspect schema migrations."""

from __future__ import annotations

import asyncpg
import typer

from asr_daemon import db as dbmod
from asr_daemon import migrate
from asr_daemon.cli import common

app = typer.Typer(help="Database schema: migrate, status.", no_args_is_help=True)


async def _connect() -> asyncpg.Connection:
    try:
        return await dbmod.connect(common.settings())
    except (OSError, asyncpg.PostgresError) as exc:
        common.fail(f"cannot reach PostgreSQL (ASR_DATABASE_URL): {exc}")


@app.command("migrate")
def migrate_cmd() -> None:
    """Apply pending migrations (safe to run twice, and from two processes at once)."""

    async def go() -> list[str]:
        conn = await _connect()
        try:
            return await migrate.migrate(conn)
        finally:
            await conn.close()

    done = common.run(go())
    typer.echo(f"applied {len(done)} migration(s){': ' + ', '.join(done) if done else ''}")


@app.command("status")
def status_cmd(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Show applied and pending migrations; exit 1 when some are pending."""

    async def go() -> tuple[dict[int, str], list[str]]:
        conn = await _connect()
        try:
            return await migrate.applied(conn), await migrate.pending(conn)
        finally:
            await conn.close()

    applied, pending = common.run(go())
    if as_json:
        common.print_json({"applied": list(applied.values()), "pending": pending})
    else:
        for name in applied.values():
            typer.echo(f"applied  {name}")
        for name in pending:
            typer.echo(f"pending  {name}")
    if pending:
        raise typer.Exit(1)
