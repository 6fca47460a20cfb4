"""Is PostgreSQL listening where `ASR_DATABASE_URL` points? `asrctl serve` asks before Granian starts.

The probe opens a plain socket to each place asyncpg would try (`asr_daemon.dsn.targets`: socket
directories, then hosts) and closes it at once, sending nothing (PostgreSQL logs nothing for such a
connection). It imports neither asyncpg nor the app, so a start with PostgreSQL up pays well under a
millisecond for it, and the Granian worker forked afterwards still imports the app while the model
loads. With nothing listening it waits as the worker's `runtime.open_database` does (`DB_WAIT_S`, one
`database_wait` line per retry) and then gives up with the one `database_unreachable` line: the
daemon exits 1 before Granian runs, instead of failing in the ASGI lifespan with tracebacks.

A socket that accepts is not a database that lets us in: a refused login or a missing database is
still found, and waited for, by `runtime.open_database` in the worker.
"""

from __future__ import annotations

import logging
import socket
import time

from asr_daemon import dsn
from asr_daemon.config import Settings

log = logging.getLogger("asr_daemon.runtime")  # the same events, under the same name, as the worker's wait

#: how long a starting process waits for PostgreSQL to come up (here and in `runtime.open_database`)
DB_WAIT_S = 30.0


class Unreachable(Exception):
    """Nothing listens where the DSN points; the message is the one-line explanation (no DSN in it)."""


def probe(url: str, timeout: float) -> OSError | None:
    """None when one of `url`'s targets accepts a connection; else the last target's error."""
    error: OSError = ConnectionRefusedError("nothing to try")
    for host, port in dsn.targets(url):
        try:
            if host.startswith("/"):
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.settimeout(timeout)
                    sock.connect(f"{host}/.s.PGSQL.{port}")
            else:
                socket.create_connection((host, int(port)), timeout=timeout).close()
        except OSError as exc:
            error = exc
            continue
        return None
    return error


def wait_listening(settings: Settings, budget: float = DB_WAIT_S) -> None:
    """Return once PostgreSQL accepts connections; raise `Unreachable` (logged) after `budget` seconds."""
    url, timeout = dsn.for_asyncpg(settings.database_url.get_secret_value(), 10)
    error = probe(url, timeout)
    if error is None:
        return
    import stamina  # only when waiting: kept off the cold start

    deadline = time.monotonic() + budget
    try:
        for attempt in stamina.retry_context(
            on=OSError, attempts=None, timeout=budget, wait_initial=1.0, wait_jitter=0
        ):
            with attempt:
                if attempt.num > 1:
                    log.warning("database_wait", extra={"attempt": attempt.num})
                    error = probe(url, max(0.1, min(timeout, deadline - time.monotonic())))
                if error is not None:
                    raise error
    except OSError as exc:
        from asr_daemon import db  # asyncpg: only to word the failure

        message = db.connect_error(settings.database_url.get_secret_value(), exc)
        log.error("database_unreachable", extra={"error": message})
        raise Unreachable(message) from None
