"""`asrctl`: the one entry point — serve the daemon, migrate, manage models, jobs and backups.

Each command group lives in its own module of this package and is registered here.
"""

from __future__ import annotations

import typer

from asr_daemon.cli import backup, config, db, doctor, jobs, models, serve, status, transcribe

app = typer.Typer(
    name="asrctl",
    help="Operate asr-server: serve it, migrate its database, manage models, jobs and backups.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("serve")(serve.serve)
app.add_typer(db.app, name="db")
app.add_typer(models.app, name="models")
app.command("doctor")(doctor.doctor)
app.add_typer(backup.app, name="backup")
app.command("restore")(backup.restore_cmd)
app.add_typer(jobs.app, name="jobs")
app.command("status")(status.status)
app.command("transcribe")(transcribe.transcribe)
app.add_typer(config.app, name="config")


def main() -> None:
    """Console-script entry point."""
    app()
