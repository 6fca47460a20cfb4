"""`asrctl db`: apply and inspect schema migrations."""

from __future__ import annotations

import asyncpg
import typer

from asr_daemon.cli import common
from asr_daemon.ops import migrate

app = typer.Typer(help="Database schema: migrate, status.", no_args_is_help=True)


@app.command("migrate")
def migrate_cmd() -> None:
    """Apply pending migrations (safe to run twice, and from two processes at once)."""

    done = common.with_db(migrate.migrate)
    typer.echo(f"applied {len(done)} migration(s){': ' + ', '.join(done) if done else ''}")


@app.command("status")
def status_cmd(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Show applied and pending migrations; exit 1 when some are pending."""

    async def go(conn: asyncpg.Connection) -> tuple[dict[int, str], list[str]]:
        return await migrate.applied(conn), await migrate.pending(conn)

    applied, pending = common.with_db(go)
    if as_json:
        common.print_json({"applied": list(applied.values()), "pending": pending})
    else:
        for name in applied.values():
            typer.echo(f"applied  {name}")
        for name in pending:
            typer.echo(f"pending  {name}")
    if pending:
        raise typer.Exit(1)
