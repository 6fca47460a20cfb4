"""`asrctl worker`: run jobs without the HTTP side, against the PostgreSQL of an `asrctl serve --no-worker`.

It claims, transcribes, stores and finishes jobs exactly as the full daemon's worker does (same
`asr_daemon.runtime.Core`: the worker, the cancel listener, housekeeping's reaper and webhook
redelivery, the model cache with `ASR_PRELOAD`), and hears about new jobs and cancels through Redis
and PostgreSQL NOTIFY (both optional: it polls every `ASR_POLL_INTERVAL` without them). Audio is
read from `ASR_STATE_DIR/uploads`, which must be the API's (shared storage on another host).

Under systemd it is a plain long-running service (`Type=notify`): READY=1 once the database is
migrated and the preload is over, the watchdog as in the daemon, STOPPING=1 and a drain on SIGTERM
(running jobs finish within `ASR_DRAIN_TIMEOUT` or are checkpointed back to the queue). It has no
socket and writes no access log, so the idle watcher has nothing to watch: it does not stop by itself.

Like `asrctl serve`, it parses its options with argparse and imports no typer: the early model load
starts before the heavy imports.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from concurrent.futures import Future
from typing import Any

from pydantic import ValidationError

from asr_daemon.config import Settings, invalid

HELP = "Run jobs without the HTTP side, against the same PostgreSQL as `asrctl serve --no-worker`."

log = logging.getLogger(__name__)


def parser() -> argparse.ArgumentParser:
    """`asrctl worker`'s options (everything else is an `ASR_*` variable)."""
    return argparse.ArgumentParser(prog="asrctl worker", description=HELP, allow_abbrev=False)


def main(argv: list[str]) -> int:
    """Parse, build the settings, run until SIGTERM/SIGINT; the exit status."""
    parser().parse_args(argv)  # exits 2 with argparse's message on a bad option
    try:
        s = Settings(run_worker=True)
    except ValidationError as exc:
        print(f"asrctl: error: {invalid(exc)}", file=sys.stderr)
        return 2
    from asr_daemon import logs, startup

    logs.configure(s.log_level)
    early = startup.start_load(s) if s.preload else None  # overlaps with the imports below
    return asyncio.run(run(s, early))


async def run(settings: Settings, early: Future[Any] | None = None, stop: asyncio.Event | None = None) -> int:
    """Run the worker until `stop` is set (by SIGTERM or SIGINT when not given), then drain."""
    import asyncpg

    from asr_daemon import runtime
    from asr_daemon.engine import models
    from asr_daemon.ops import metrics, systemd

    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    meter = metrics.Metrics(workers=settings.workers, start_reason=settings.start_reason)
    life = systemd.Lifecycle(settings)
    cache = models.cache_from_settings(settings, load_guard=life.loading)  # EXTEND_TIMEOUT_USEC while loading
    if early is not None:
        cache.adopt(settings.model, early)
    settings.uploads_dir.mkdir(parents=True, exist_ok=True)
    try:
        async with runtime.open_core(settings, cache, life, meter, locks=None) as core:
            core.go(listening=False)
            log.info(
                "worker_started",
                extra={"worker": core.name, "model": settings.model, "redis": core.redis_up, **core.timings},
            )
            await stop.wait()
            log.info("worker_draining", extra={"running": core.running()})
    except (OSError, asyncpg.PostgresError) as exc:
        log.error("worker_failed", extra={"error": type(exc).__name__})
        return 1
    log.info("worker_stopped")
    return 0
