"""`asrctl keys`: create, list and revoke API keys (stored hashed; a token is shown only once)."""

from __future__ import annotations

import asyncpg
import typer

from asr_daemon import keys
from asr_daemon.cli import common

app = typer.Typer(help="API keys: create, ls, revoke.", no_args_is_help=True)


@app.command("create")
def create_cmd(
    name: str = typer.Option(..., "--name", help="Who or what the key is for (unique among active keys)."),
    rate: int | None = typer.Option(
        None, "--rate", min=0, help="Requests per minute (default ASR_DEFAULT_RATE; 0: unlimited)."
    ),
    admin: bool = typer.Option(False, "--admin", help="The key sees and cancels every job."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Create a key and print its token once: store it now, it cannot be shown again."""
    if not 1 <= len(name) <= 100:
        common.fail("--name must be 1 to 100 characters", code=2)

    async def go(conn: asyncpg.Connection) -> tuple[keys.Key, str]:
        try:
            return await keys.create(conn, name, rate=rate, admin=admin)
        except keys.KeyExists as exc:
            common.fail(str(exc))

    key, token = common.with_db(go)
    if as_json:
        common.print_json({**key.to_json(), "token": token})
        return
    typer.echo(token)
    typer.echo(
        f"created key {key.id} {key.name!r}{' (admin)' if key.admin else ''}: "
        "the token above is shown only now; send it as `Authorization: Bearer <token>`",
        err=True,
    )


@app.command("ls")
def ls_cmd(
    include_revoked: bool = typer.Option(False, "--all", help="Include revoked keys."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """List keys (id, name, token prefix, rate, admin, created, revoked); never the tokens."""

    found = common.with_db(lambda conn: keys.list_keys(conn, include_revoked=include_revoked))
    if as_json:
        common.print_json([k.to_json() for k in found])
        return
    typer.echo(f"{'ID':>5}  {'NAME':<24} {'PREFIX':<13} {'RATE':>6}  ADMIN  CREATED              REVOKED")
    for k in found:
        rate = "-" if k.rate is None else str(k.rate)
        revoked = k.revoked_at.strftime("%Y-%m-%d %H:%M") if k.revoked_at else ""
        typer.echo(
            f"{k.id:>5}  {k.name:<24.24} {k.prefix:<13} {rate:>6}  {'yes' if k.admin else 'no':<5}  "
            f"{k.created_at:%Y-%m-%d %H:%M:%S}  {revoked}"
        )


@app.command("revoke")
def revoke_cmd(
    ref: str | None = typer.Argument(
        None, help="The key's name, id, shown prefix or token; refused when it names more than one key."
    ),
    key_id: int | None = typer.Option(None, "--id", min=1, help="The key's id, and nothing else."),
) -> None:
    """Revoke one key at once: its next request gets 401. Its jobs and transcripts stay."""
    if (ref is None) == (key_id is None):
        common.fail("name the key: REF (its name, id, prefix or token) or --id N, not both", code=2)

    async def go(conn: asyncpg.Connection) -> keys.Key | None:
        if key_id is not None:
            return await keys.revoke_id(conn, key_id)
        assert ref is not None
        try:
            return await keys.revoke(conn, ref)
        except keys.AmbiguousKey as exc:
            common.fail(str(exc), code=2)

    done = common.with_db(go)
    if done is None:
        what = f"id {key_id}" if key_id is not None else f"{(ref or '')[:40]!r}"
        common.fail(f"no active key matches {what} (see `asrctl keys ls`)")
    typer.echo(f"revoked key {done.id} {done.name!r}")
