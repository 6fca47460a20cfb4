"""The daemon's side of systemd's notify protocol: READY, STATUS, WATCHDOG, EXTEND_TIMEOUT_USEC, STOPPING.

Runs inside the Granian *worker* (a child of the unit's main process), so the unit needs
`NotifyAccess=all`. `WATCHDOG_PID` names Granian's main process, not us: it is ignored and
`WATCHDOG_USEC` is read directly. Without `NOTIFY_SOCKET` (tests, `make run`) every call is a no-op.

`Lifecycle` is what the app's lifespan uses:

    life = Lifecycle(settings)
    cache = models.cache_from_settings(settings, load_guard=life.loading)  # EXTEND while a model loads
    preload = cache.start_preload(...)                                      # before READY: TimeoutStartSec
    life.start(ready_check=after(preload, ...), progress=worker, status=...) # READY once the socket accepts
    ...                                                       # serve
    await life.stop(lambda: worker.drain(settings.drain_timeout))   # STOPPING=1, then drain
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol

import asyncpg
import sdnotify
import stamina

from asr_daemon import queries
from asr_daemon.config import Settings
from asr_daemon.ops import migrate

log = logging.getLogger(__name__)

SERVER_UNIT = "asr-server.service"
PROXY_UNIT = "asr-server-proxy.service"
WYOMING_PROXY_UNIT = "asr-wyoming-proxy.service"
"""The Wyoming port's proxy (issue 22): while it runs a Home Assistant client holds a connection."""
EXTEND_EVERY = 10.0
"""Seconds between two EXTEND_TIMEOUT_USEC messages while loading or draining."""
EXTEND_BY = 30.0
"""Each EXTEND_TIMEOUT_USEC moves systemd's deadline this many seconds past now."""
LOAD_LIMIT = 600.0
"""Longest a model load is covered by EXTEND_TIMEOUT_USEC (and by the watchdog); a hung load then
meets systemd's own timeout 30 s later."""
STATUS_EVERY = 5.0
"""Seconds between two looks at the STATUS= line (sent only when it changed)."""


class Progress(Protocol):
    """What the watchdog needs from the job worker."""

    @property
    def running(self) -> int:
        """Jobs running now."""
        ...

    @property
    def last_progress(self) -> float:
        """`time.monotonic()` of the last claim or stored segment."""
        ...


class Notifier:
    """sd_notify through the `sdnotify` package; a no-op without `NOTIFY_SOCKET`.

    The socket is connected on first use, inside the worker process, and reconnected once if a send
    fails (systemd re-executed itself).
    """

    def __init__(self) -> None:
        self._n: sdnotify.SystemdNotifier | None = None

    @property
    def enabled(self) -> bool:
        """Whether a notify socket was given to this process."""
        return bool(os.environ.get("NOTIFY_SOCKET"))

    def send(self, *fields: str) -> bool:
        """Send `KEY=VALUE` fields as one datagram; False when nobody listens or sending failed."""
        if not self.enabled:
            return False
        text = "\n".join(fields).encode("latin-1", "replace").decode("latin-1")
        for _ in range(2):
            try:
                if self._n is None:
                    # debug=True: errors raise here instead of silently turning the notifier off
                    self._n = sdnotify.SystemdNotifier(debug=True)
                self._n.notify(text)
            except OSError as exc:
                log.debug("notify.failed", extra={"event": "notify.failed", "error": str(exc)})
                self._n = None
                continue
            return True
        return False


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of `WatchdogSec=`), or None when no watchdog is set."""
    raw = (os.environ if env is None else env).get("WATCHDOG_USEC", "")
    try:
        usec = int(raw)
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


async def wait_listening(settings: Settings, poll: float = 0.005) -> None:
    """Return once Granian's socket (the UDS, else host:port) accepts a connection.

    Granian calls listen() only after the lifespan startup returned, and systemd-socket-proxyd never
    retries a refused connect, so READY=1 must wait for this. A bare connect and close is no HTTP
    request: it makes no access-log line and wakes nothing. On a socket-activated start the first
    request waits for READY=1, so the poll is short: a refused connect costs microseconds, and at
    50 ms READY=1 came 25 ms late on average (docs/benchmarks.md).
    """
    while True:
        try:
            if settings.uds is not None:
                _, writer = await asyncio.open_unix_connection(str(settings.uds))
            else:
                _, writer = await asyncio.open_connection(settings.host, settings.port)
        except OSError:
            await asyncio.sleep(poll)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


class Lifecycle:
    """READY/STATUS/WATCHDOG/EXTEND_TIMEOUT_USEC/STOPPING for one daemon process."""

    def __init__(
        self,
        settings: Settings,
        notifier: Notifier | None = None,
        *,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.notifier = notifier or Notifier()
        self.interval = watchdog_interval(env)
        self.clock = clock
        self.ready = asyncio.Event()
        self._busy = 0
        self._busy_until = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._status = ""
        self._withheld = False

    def send(self, *fields: str) -> bool:
        """Send fields to systemd (see `Notifier.send`)."""
        return self.notifier.send(*fields)

    @contextlib.asynccontextmanager
    async def extending(self, status: str, limit: float | None = None) -> AsyncIterator[None]:
        """While the body runs: STATUS=`status` and EXTEND_TIMEOUT_USEC every few seconds.

        Covers a slow model load (startup phase) and the drain (stop phase). The watchdog counts it as
        progress. After `limit` seconds it stops extending, so a hung body still meets systemd's timeout.
        """
        self.send(f"STATUS={status}", f"EXTEND_TIMEOUT_USEC={int(EXTEND_BY * 1e6)}")
        self._busy += 1
        deadline = self.clock() + limit if limit is not None else None
        self._busy_until = max(self._busy_until, deadline or float("inf"))
        task = asyncio.create_task(self._extend(deadline))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self._busy -= 1
            if not self._busy:
                self._busy_until = 0.0
            self._status = ""  # the next status tick sends the current line again

    async def _extend(self, deadline: float | None) -> None:
        while True:
            await asyncio.sleep(EXTEND_EVERY)
            if deadline is not None and self.clock() >= deadline:
                log.warning("notify.extend_limit", extra={"event": "notify.extend_limit"})
                return
            self.send(f"EXTEND_TIMEOUT_USEC={int(EXTEND_BY * 1e6)}")

    def loading(self, model: str) -> contextlib.AbstractAsyncContextManager[None]:
        """The model cache's load guard: STATUS=loading model <name> and EXTEND_TIMEOUT_USEC while it loads.

        Before READY (a preload) this stretches `TimeoutStartSec=`; after READY systemd applies it to the
        running phase (it only postpones a `RuntimeMaxSec=` cap or a watchdog deadline that is closer).
        """
        return self.extending(f"loading model {model}", limit=LOAD_LIMIT)

    def start(
        self,
        *,
        progress: Progress,
        ready_check: Callable[[], Awaitable[Any]] | None = None,
        status: Callable[[], Awaitable[str]] | None = None,
        listening: bool = True,
    ) -> None:
        """Start the background tasks: READY once listening, the watchdog, STATUS updates.

        Call it at the end of the lifespan startup (before `yield`): Granian listens only after that.
        `ready_check` (the database is reachable and migrated) must pass before READY=1; it is retried.
        `listening=False`: a process without an HTTP socket (`asrctl worker`) is ready without one.
        """
        self._tasks.append(asyncio.create_task(self._ready(ready_check, status, listening)))
        if self.interval:
            self._tasks.append(asyncio.create_task(self._watchdog(progress, self.interval)))
        if status is not None:
            self._tasks.append(asyncio.create_task(self._status_loop(status)))

    async def _ready(
        self,
        check: Callable[[], Awaitable[Any]] | None,
        status: Callable[[], Awaitable[str]] | None,
        listening: bool = True,
    ) -> None:
        if listening:
            await wait_listening(self.settings)
        if check is not None:
            # any failure means "not ready yet": retried for as long as it takes, 0.1 s doubling to 5 s
            async for attempt in stamina.retry_context(
                on=Exception, attempts=None, timeout=None, wait_initial=0.1, wait_max=5.0, wait_jitter=0
            ):
                with attempt:
                    try:
                        await check()
                    except Exception as exc:
                        log.warning("notify.not_ready", extra={"event": "notify.not_ready", "error": str(exc)})
                        raise
        line = await self._status_text(status) or "ready"
        self._status = line
        self.send("READY=1", f"STATUS={line}")
        self.ready.set()
        log.info("notify.ready", extra={"event": "notify.ready", "status": line})

    def healthy(self, progress: Progress) -> bool:
        """True unless a job runs and nothing progressed for `watchdog_stall_after` seconds."""
        if self._busy and self.clock() < self._busy_until:
            return True
        if progress.running <= 0:
            return True
        return self.clock() - progress.last_progress < self.settings.watchdog_stall_after

    async def _watchdog(self, progress: Progress, interval: float) -> None:
        await self.ready.wait()  # systemd arms the watchdog at READY=1
        while True:
            if self.healthy(progress):
                self.send("WATCHDOG=1")
                self._withheld = False
            elif not self._withheld:
                self._withheld = True
                log.error(
                    "watchdog.withheld",
                    extra={
                        "event": "watchdog.withheld",
                        "running": progress.running,
                        "stalled_s": round(self.clock() - progress.last_progress, 1),
                    },
                )
            await asyncio.sleep(interval)

    async def _status_text(self, status: Callable[[], Awaitable[str]] | None) -> str:
        if status is None:
            return ""
        try:
            return await status()
        except Exception as exc:  # noqa: BLE001  # a status line is cosmetic: never break on it
            log.debug("notify.status_failed", extra={"event": "notify.status_failed", "error": str(exc)})
            return ""

    async def _status_loop(self, status: Callable[[], Awaitable[str]]) -> None:
        await self.ready.wait()
        while True:
            await asyncio.sleep(STATUS_EVERY)
            if self._busy:
                continue
            line = await self._status_text(status)
            if line and line != self._status:
                self._status = line
                self.send(f"STATUS={line}")

    async def stop(self, drain: Callable[[], Awaitable[Any]] | None = None) -> None:
        """STOPPING=1 first, then drain (extending systemd's stop timeout), then end the tasks.

        Watchdog pings continue during the drain, so a slow but healthy drain is not killed.
        """
        self.send("STOPPING=1", "STATUS=draining: no new jobs, finishing the running ones")
        log.info("notify.stopping", extra={"event": "notify.stopping"})
        if drain is not None:
            async with self.extending("draining", limit=self.settings.drain_timeout + 2 * EXTEND_BY):
                await drain()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self.send("STATUS=stopped")


def status_line(model: str, running: int, queued: int | None) -> str:
    """The STATUS= text `systemctl status` shows: model, jobs running, queue depth."""
    queue = "?" if queued is None else str(queued)
    return f"model {model}; {running} job{'s' if running != 1 else ''} running; {queue} queued"


def database_ready(pool: asyncpg.Pool[Any]) -> Callable[[], Awaitable[None]]:
    """READY's check: PostgreSQL answers and no migration is pending (raises otherwise)."""

    async def check() -> None:
        async with pool.acquire() as conn:
            pending = await migrate.pending(conn)  # type: ignore[arg-type]  # a pool proxy is a Connection
        if pending:
            raise RuntimeError(f"migrations pending: {', '.join(pending)}")

    return check


def after(task: asyncio.Task[Any] | None, check: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """READY's check that first waits for `task` (the model preload) to end, however it ends."""

    async def ready() -> None:
        if task is not None:
            await asyncio.wait({task})  # a failed preload is logged by the cache; READY still comes
        await check()

    return ready


def job_status(settings: Settings, pool: asyncpg.Pool[Any], progress: Progress) -> Callable[[], Awaitable[str]]:
    """The STATUS= source: default model, jobs running here, queue depth from PostgreSQL."""

    async def status() -> str:
        try:
            queued: int | None = (await queries.queue_stats(pool)).queued
        except (OSError, asyncpg.PostgresError, TimeoutError):
            queued = None
        return status_line(settings.model, progress.running, queued)

    return status
