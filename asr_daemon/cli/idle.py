"""`asrctl idle-watch`: stop asr-server when quiet (run by `asr-idle-watcher.service`)."""

from __future__ import annotations

import typer

from asr_daemon import logs
from asr_daemon.cli import common
from asr_daemon.idle import IdleWatcher


def idle_watch(
    window: float | None = typer.Option(None, help="Quiet seconds before a stop (ASR_IDLE_STOP_AFTER)."),
    interval: float | None = typer.Option(None, help="Seconds between looks (ASR_IDLE_CHECK_INTERVAL)."),
    systemctl: str | None = typer.Option(None, help="systemctl command to run (ASR_IDLE_SYSTEMCTL)."),
    once: bool = typer.Option(False, "--once", help="Look once, stop if quiet, print the verdict, exit."),
) -> None:
    """Stop asr-server (and its proxy) after a quiet window: no request, no job queued or running."""
    s = common.settings()
    logs.configure(s.log_level)
    # a one-shot look has no start of its own to count from: only the log and the jobs count
    watcher = IdleWatcher(s, systemctl=systemctl, window=window, since=0.0 if once else None)
    if watcher.window <= 0:
        common.fail("the idle window is 0: idle stops are off (ASR_IDLE_STOP_AFTER)", code=2)
    every = interval if interval is not None else min(s.idle_check_interval, max(watcher.window / 4, 0.5))
    verdict = common.run(watcher.run(every, once=once))
    if once:
        typer.echo(f"{'stop' if verdict.stop else 'keep'}: {verdict.reason} (quiet {verdict.quiet_s:.0f} s)")
