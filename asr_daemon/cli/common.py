"""Helpers every command shares: settings at the edge, one clear error line, JSON output."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError

from asr_daemon.config import Settings, invalid

if TYPE_CHECKING:
    import asyncpg

T = TypeVar("T")


def settings() -> Settings:
    """Build the settings from the environment, or exit 2 with the field that is wrong."""
    try:
        return Settings()
    except ValidationError as exc:
        fail(invalid(exc), code=2)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one error line to stderr and exit with `code`."""
    typer.echo(f"asrctl: error: {message}", err=True)
    raise typer.Exit(code)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from a synchronous command."""
    return asyncio.run(coro)


def print_json(data: object) -> None:
    """Write `data` as JSON to stdout (for `--json`), times (`*_s`, `timings`) to the millisecond."""
    from asr_daemon.formats import round_times  # msgspec: only for the commands that print JSON

    if isinstance(data, dict):
        data = round_times(data)
    elif isinstance(data, list):
        data = [round_times(d) if isinstance(d, dict) else d for d in data]
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def with_db(work: Callable[[asyncpg.Connection[Any]], Awaitable[T]]) -> T:
    """Connect with the configured settings, run `work`, close; one error line when PostgreSQL is
    unreachable or refuses."""

    import asyncpg  # kept off `asrctl serve`'s cold-start import path

    from asr_daemon import db as dbmod  # same reason

    async def go() -> T:
        conn = await dbmod.connect(settings())
        try:
            return await work(conn)
        finally:
            await conn.close()

    try:
        return run(go())
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        fail(dbmod.connect_error(settings().database_url.get_secret_value(), exc))


def human_size(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # unreachable, keeps mypy's return check simple


def human_age(seconds: float) -> str:
    """90061 -> '1d 1h'."""
    s = max(0, int(seconds))
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"
