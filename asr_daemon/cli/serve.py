"""`asrctl serve`: run the daemon under Granian (one worker process, one model copy)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import typer

from asr_daemon.cli import common


def granian_argv(uds: Path | None, host: str, port: int, header_timeout: float = 10.0) -> list[str]:
    """The Granian command line for the app factory; listens on `uds` if given, else host:port.

    `header_timeout` (seconds) bounds how long a client may take to send its request headers.
    """
    exe = shutil.which("granian", path=os.path.dirname(sys.executable)) or "granian"
    argv = [
        exe,
        "--interface",
        "asgi",
        "--factory",
        "--workers",
        "1",
        "--no-ws",
        "--log-level",
        "warning",
        "--http1-header-read-timeout",
        str(max(1, round(header_timeout * 1000))),
    ]
    if uds is not None:
        argv += ["--uds", str(uds), "--uds-permissions", "0660"]
    else:
        argv += ["--host", host, "--port", str(port)]
    return [*argv, "asr_daemon.api.app:app_from_env"]


def serve(
    host: str | None = typer.Option(None, help="Listen address (default ASR_HOST)."),
    port: int | None = typer.Option(None, help="Listen port (default ASR_PORT)."),
    uds: Path | None = typer.Option(None, help="Listen on this Unix socket instead (default ASR_UDS)."),
) -> None:
    """Serve the API in the foreground (Ctrl-C or SIGTERM stops it cleanly)."""
    s = common.settings()
    env = dict(os.environ)
    if host is not None:
        env["ASR_HOST"] = host
    if port is not None:
        env["ASR_PORT"] = str(port)
    if uds is not None:
        env["ASR_UDS"] = str(uds)
    argv = granian_argv(uds or s.uds, host or s.host, port or s.port, s.header_timeout)
    os.execve(argv[0], argv, env)
