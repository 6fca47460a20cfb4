"""`asrctl config show`: the effective settings, with every secret masked."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from asr_daemon.cli import common
from asr_daemon.configdocs import field_docs, masked

app = typer.Typer(help="Effective configuration (ASR_* environment variables).", no_args_is_help=True)


@app.command("show")
def show(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Every setting with its value (passwords masked) and the paths derived from them."""
    s = common.settings()
    values = masked(s)
    derived = {
        "uploads_dir": s.uploads_dir,
        "models_dir": s.models_dir,
        "access_log_path": s.access_log_path,
        "backups_dir": s.backups_dir,
    }
    if as_json:
        common.print_json({"settings": values, "derived": {k: str(v) for k, v in derived.items()}})
        return
    table = Table(box=None)
    for col in ("variable", "value", "meaning"):
        table.add_column(col)
    docs = field_docs()
    for name, value in values.items():
        table.add_row(f"ASR_{name.upper()}", "-" if value is None else str(value), docs.get(name, "").split(". ")[0])
    for name, path in derived.items():
        table.add_row(f"({name})", str(path), "derived")
    Console().print(table)
