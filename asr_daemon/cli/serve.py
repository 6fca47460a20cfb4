"""`asrctl serve`: run the daemon under Granian (one worker process, one model copy).

Granian runs in this process instead of through its command line: the process that parsed the
settings is Granian's main process (`granian.server.Server`, what its command line runs), and the
worker is forked from it. That saves the start-up of a second Python and its imports on every cold
start (docs/benchmarks.md), and the worker inherits the settings and pydantic already imported.
The worker imports and builds the app itself (`asr_daemon.startup`): nothing that starts threads
is imported before the fork.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from asr_daemon.cli import common

#: Granian's import path of the app factory (it runs in the worker)
TARGET = "asr_daemon.startup:app_from_env"


def serve(
    host: str | None = typer.Option(None, help="Listen address (default ASR_HOST)."),
    port: int | None = typer.Option(None, help="Listen port (default ASR_PORT)."),
    uds: Path | None = typer.Option(None, help="Listen on this Unix socket instead (default ASR_UDS)."),
) -> None:
    """Serve the API in the foreground (Ctrl-C or SIGTERM stops it cleanly)."""
    # the worker builds its own settings from the environment: the options go there too
    if host is not None:
        os.environ["ASR_HOST"] = host
    if port is not None:
        os.environ["ASR_PORT"] = str(port)
    if uds is not None:
        os.environ["ASR_UDS"] = str(uds)
    s = common.settings()

    from granian.constants import Interfaces
    from granian.errors import FatalError
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.server import Server

    listen: dict[str, object] = {"address": s.host, "port": s.port}
    if s.uds is not None:
        listen = {"uds": s.uds, "uds_permissions": 0o660}
    server = Server(
        TARGET,
        interface=Interfaces.ASGI,
        factory=True,
        workers=1,
        websockets=False,
        log_level=LogLevels.warning,
        # how long a client may take to send its request headers
        http1_settings=HTTP1Settings(header_read_timeout=max(1, round(s.header_timeout * 1000))),
        **listen,  # type: ignore[arg-type]  # address/port or uds/uds_permissions, each typed by Server
    )
    try:
        server.serve()
    except FatalError as exc:
        raise typer.Exit(1) from exc
