"""`asrctl`: the one entry point — serve the daemon, migrate, manage models, jobs and backups.

Each command group lives in its own module of this package and is registered in `build_app`.
`asrctl serve` and `asrctl worker` take a fast path that import only their own module, without
typer: they are on the daemon's cold-start path, and the other commands' modules cost 0.2–0.5 s to import
(docs/benchmarks.md). `asrctl idle-watch`, a unit started beside every daemon, takes one too: the
command tree imports numpy and av (through `doctor` and the diarization commands), which would slow
the watcher's start and call syscalls its unit filters.
"""

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer


def build_app() -> "typer.Typer":  # a string: typer is imported only here (`serve_command` needs it real)
    """The whole command tree (imports every command module)."""
    import typer

    from asr_daemon.cli import (
        backup,
        config,
        db,
        doctor,
        idle,
        jobs,
        keys,
        models,
        search,
        serve,
        status,
        transcribe,
        worker,
    )

    def serve_command(ctx: typer.Context) -> None:
        raise typer.Exit(serve.main(ctx.args))  # argparse reads the options: one definition of them

    def worker_command(ctx: typer.Context) -> None:
        raise typer.Exit(worker.main(ctx.args))

    _flags_without_type()
    app = typer.Typer(
        name="asrctl",
        help="Operate asr-server: serve it, migrate its database, manage models, jobs and backups.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
    )
    app.command(
        "serve",
        help=serve.HELP,
        add_help_option=False,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(serve_command)
    app.command(
        "worker",
        help=worker.HELP,
        add_help_option=False,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(worker_command)
    app.add_typer(db.app, name="db")
    app.add_typer(models.app, name="models")
    app.command("doctor")(doctor.doctor)
    app.add_typer(backup.app, name="backup")
    app.command("restore")(backup.restore_cmd)
    app.add_typer(jobs.app, name="jobs")
    app.command("status")(status.status)
    app.command("transcribe")(transcribe.transcribe)
    app.command("search")(search.search)
    app.add_typer(config.app, name="config")
    app.add_typer(keys.app, name="keys")
    app.command("idle-watch")(idle.idle_watch)
    return app


def _flags_without_type() -> None:
    """Help shows no `<bool>` beside a flag (`--json`, `--help`, the completion flags): a flag takes
    no value, and typer 0.2x labels every option with its type. Idempotent."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich
    if getattr(shown, "asr_flags_without_type", False):
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag and not self.metavar else shown(self, ctx)

    display_type_rich.asr_flags_without_type = True  # type: ignore[attr-defined]  # marks our wrapper
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]  # see the docstring


def __getattr__(name: str) -> Any:
    """`asr_daemon.cli.app` is built on first use (importing this package stays cheap)."""
    if name == "app":
        app = globals()["app"] = build_app()
        return app
    raise AttributeError(name)


def main() -> None:
    """Console-script entry point."""
    if sys.argv[1:2] == ["serve"]:
        from asr_daemon.cli import serve

        sys.exit(serve.main(sys.argv[2:]))
    if sys.argv[1:2] == ["worker"]:
        from asr_daemon.cli import worker

        sys.exit(worker.main(sys.argv[2:]))
    if sys.argv[1:2] == ["idle-watch"]:  # a systemd unit of its own, started with every daemon: no numpy, no av
        import typer

        from asr_daemon.cli import idle

        _flags_without_type()
        sys.argv[1:2] = []
        typer.run(idle.idle_watch)
        return
    build_app()()
