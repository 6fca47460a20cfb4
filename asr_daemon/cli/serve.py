"""`asrctl serve`: run the daemon under Granian (one worker process, one model copy).

Granian runs in this process instead of through its command line: the process that parsed the
settings is Granian's main process (`granian.server.Server`, what its command line runs), and the
worker is forked from it. That saves the start-up of a second Python and its imports on every cold
start (docs/benchmarks.md), and the worker inherits the settings and pydantic already imported.
The worker imports and builds the app itself, from the settings this process parsed (handed over
explicitly: `asr_daemon.startup.app_for`): nothing that starts threads is imported before the fork.

`--no-worker` serves the HTTP side only (`ASR_RUN_WORKER=false`): jobs are run by `asrctl worker`
processes against the same PostgreSQL (`asr_daemon.cli.worker`).

This command is on every cold start's path, so it parses its options with argparse and imports
neither typer nor the other commands (`asr_daemon.cli.main` sends `asrctl serve` here).
"""

from __future__ import annotations

import argparse
import functools
import ipaddress
import math
import signal
import sys
from pathlib import Path

from pydantic import ValidationError

from asr_daemon.config import Settings, invalid

#: Granian's import path of the app factory (named in its process title; `serve` hands it the settings)
TARGET = "asr_daemon.startup:app_from_env"

#: beyond the three drains of a stop (`kill_timeout`): checkpointing, closing, a request still being read
KILL_MARGIN_S = 60

HELP = "Serve the API in the foreground (Ctrl-C or SIGTERM stops it cleanly)."


def parser() -> argparse.ArgumentParser:
    """`asrctl serve`'s options; each overrides its `ASR_*` variable."""
    p = argparse.ArgumentParser(prog="asrctl serve", description=HELP, allow_abbrev=False)  # as click: no --po
    p.add_argument("--host", help="Listen address (default ASR_HOST).")
    p.add_argument("--port", type=int, help="Listen port (default ASR_PORT).")
    p.add_argument("--uds", type=Path, help="Listen on this Unix socket instead (default ASR_UDS).")
    p.add_argument(
        "--no-worker",
        dest="run_worker",
        action="store_false",
        default=None,
        help="Serve the HTTP API only; `asrctl worker` processes on the same database run the jobs "
        "(ASR_RUN_WORKER=false).",
    )
    return p


def main(argv: list[str]) -> int:
    """Parse the options, build the settings and serve until stopped; the exit status."""
    args = parser().parse_args(argv)  # exits 2 with argparse's message on a bad option
    given = {name: getattr(args, name) for name in ("host", "port", "uds", "run_worker")}
    try:
        s = Settings(**{k: v for k, v in given.items() if v is not None})  # over the ASR_* variables
    except ValidationError as exc:
        print(f"asrctl: error: {invalid(exc)}", file=sys.stderr)
        return 2
    from asr_daemon import dbprobe, logs  # light: no asyncpg, nothing that starts a thread before the fork

    logs.configure(s.log_level)
    try:
        dbprobe.wait_listening(s)  # PostgreSQL down: one `database_unreachable` line and exit 1, before Granian
    except dbprobe.Unreachable:
        return 1
    except KeyboardInterrupt:  # Ctrl-C while it waits: nothing started, nothing to stop
        return 130
    return serve(s)


def _fail(message: str, code: int) -> int:
    print(f"asrctl: error: {message}", file=sys.stderr)
    return code


def _listen_error(exc: BaseException) -> str | None:
    """What went wrong binding the socket, from Granian's error (an OS error from its Rust side, or its
    address parser); None for anything else."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, OSError):
        return exc.strerror or text
    if isinstance(exc, RuntimeError) and "(os error " in text:
        return text.split(" (os error ")[0]
    if isinstance(exc, ValueError) and "address" in text:
        return text
    return None


def kill_timeout(s: Settings) -> int:
    """Seconds Granian's main process gives its worker after SIGTERM before it kills it (a backstop)."""
    return math.ceil(3 * s.drain_timeout + KILL_MARGIN_S)


def serve(s: Settings) -> int:
    """Run Granian on the settings' socket until it stops; 1 when it could not start (one error line:
    the port is taken, the socket's directory is missing), 2 when the address is not one."""
    from granian.constants import Interfaces
    from granian.errors import FatalError
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.server import Server

    listen: dict[str, object] = {"address": s.host, "port": s.port}
    where = f"{s.host} port {s.port}"
    if s.uds is not None:
        listen, where = {"uds": s.uds, "uds_permissions": 0o660}, str(s.uds)
    else:
        try:
            ipaddress.ip_address(s.host)
        except ValueError:
            return _fail(f"cannot listen on {s.host!r}: not an IP address (e.g. 127.0.0.1, ::1, 0.0.0.0)", 2)
    server = Server(
        TARGET,
        interface=Interfaces.ASGI,
        factory=True,
        workers=1,
        websockets=True,  # live transcription (issue 21)
        log_level=LogLevels.warning,
        # a backstop: the stop itself ends streams and waiters at once and drains within the drain timeout
        # (live sessions, voice commands, the running jobs: each bounded by it); a worker still there
        # this long after SIGTERM is killed (its job, left running, is requeued by the reaper)
        workers_kill_timeout=kill_timeout(s),
        # how long a client may take to send its request headers
        http1_settings=HTTP1Settings(header_read_timeout=max(1, round(s.header_timeout * 1000))),
        **listen,  # type: ignore[arg-type]  # address/port or uds/uds_permissions, each typed by Server
    )
    from asr_daemon import startup  # light: the settings and logging only

    try:
        # Granian's worker calls this (forked: it inherits `s`) instead of importing TARGET
        server.serve(target_loader=functools.partial(startup.app_for, s), wrap_loader=False)
    except FatalError:
        return 1
    except (OSError, RuntimeError, ValueError) as exc:
        reason = _listen_error(exc)
        if reason is None:
            raise
        return _fail(f"cannot listen on {where}: {reason}", 1)
    finally:
        # stopped: a late Ctrl-C has nothing left to interrupt. `uv run` may pass the terminal's
        # SIGINT on once more, and during interpreter shutdown Python puts SIGINT back to the default
        # action (death by signal: `make run` then reports "Error 130"); an ignored signal stays ignored
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return 0
