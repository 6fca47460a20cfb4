"""`asrctl idle-watch`: hold asr-server up until it is quiet (run by `asr-idle-watcher.service`)."""

from __future__ import annotations

import asyncio
import logging

import typer

from asr_daemon import logs
from asr_daemon.cli import common
from asr_daemon.ops.idle import IdleWatcher

log = logging.getLogger(__name__)


def idle_watch(
    window: float | None = typer.Option(None, help="Quiet seconds before a stop (ASR_IDLE_STOP_AFTER)."),
    interval: float | None = typer.Option(None, help="Seconds between looks (ASR_IDLE_CHECK_INTERVAL)."),
    systemctl: str | None = typer.Option(None, help="systemctl command to run (ASR_IDLE_SYSTEMCTL)."),
    once: bool = typer.Option(False, "--once", help="Look once, print the verdict, exit."),
) -> None:
    """Run until asr-server has been quiet for the window (no request, no job queued or running, no
    client connected), then exit: systemd stops the daemon once neither this nor the proxy needs it."""
    s = common.settings()
    logs.configure(s.log_level)
    # a one-shot look has no start of its own to count from: only the log and the jobs count
    watcher = IdleWatcher(s, systemctl=systemctl, window=window, since=0.0 if once else None)
    if watcher.window <= 0:
        if once:
            common.fail("the idle window is 0: idle stops are off (ASR_IDLE_STOP_AFTER)", code=2)
        # exiting would let the daemon stop: hold it up until systemd stops us with it
        log.info("idle.off", extra={"event": "idle.off", "window_s": watcher.window})
        common.run(asyncio.Event().wait())
        return
    every = interval if interval is not None else min(s.idle_check_interval, max(watcher.window / 4, 0.5))
    verdict = common.run(watcher.run(every, once=once))
    if once:
        typer.echo(f"{'stop' if verdict.stop else 'keep'}: {verdict.reason} (quiet {verdict.quiet_s:.0f} s)")
