"""The Wyoming listener inside the daemon: started and stopped by the app's lifespan, beside the worker.

It listens on ASR_WYOMING_UDS when set (under systemd: asr-wyoming.socket holds the TCP port and
asr-wyoming-proxy.service forwards to this Unix socket, as for HTTP), else on
ASR_WYOMING_HOST:ASR_WYOMING_PORT. Each connection is a `CommandHandler` task. Stopping closes the
listener first; commands under way get `grace` seconds (ASR_DRAIN_TIMEOUT) to be answered before
the worker is drained, then every connection is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

import asyncpg

from asr_daemon.accesslog import AccessLog
from asr_daemon.config import Settings
from asr_daemon.pipeline.intake import Intake
from asr_daemon.pipeline.queue import Hub
from asr_daemon.pipeline.uploads import AudioLocks
from asr_daemon.wyoming.activity import Activity
from asr_daemon.wyoming.commands import Services
from asr_daemon.wyoming.handler import CommandHandler

log = logging.getLogger(__name__)


class WyomingServer:
    """Accepts Wyoming connections for the daemon's lifetime."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.activity = Activity(svc.access_log)
        self.handlers: dict[asyncio.Task[None], CommandHandler] = {}
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> str:
        """Where it listens, as a Wyoming URI."""
        s = self.svc.settings
        if s.wyoming_uds is not None:
            return f"unix://{s.wyoming_uds}"
        host = f"[{s.wyoming_host}]" if ":" in s.wyoming_host else s.wyoming_host
        return f"tcp://{host}:{s.wyoming_port}"

    async def start(self) -> None:
        """Bind and listen (raises OSError when the address is taken)."""
        s = self.svc.settings
        if s.wyoming_uds is not None:
            with contextlib.suppress(FileNotFoundError):
                s.wyoming_uds.unlink()  # a socket file a crash left behind
            self._server = await asyncio.start_unix_server(self._accept, path=s.wyoming_uds)
            os.chmod(s.wyoming_uds, 0o660)
        else:
            self._server = await asyncio.start_server(self._accept, host=s.wyoming_host, port=s.wyoming_port)
        log.info("wyoming_listening", extra={"address": self.address})

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = CommandHandler(self.svc, reader, writer, self.activity)
        cap = self.svc.settings.wyoming_max_connections
        if len(self.handlers) >= cap:
            await self._busy(handler, cap)
            return
        task = asyncio.current_task()
        assert task is not None  # asyncio runs each connection's callback as a task
        self.handlers[task] = handler
        self.activity.opened()
        try:
            await handler.run()
        except asyncio.CancelledError:
            # our own stop closed the connection; this is the task's top, and asyncio's stream callback
            # would log a task that ends cancelled as an error
            pass
        except Exception as exc:  # a bug: logged here with its traceback, not as asyncio's bare one
            log.error("wyoming_connection_failed", exc_info=exc, extra={"error": type(exc).__name__})
        finally:
            self.activity.closed()
            self.handlers.pop(task, None)

    async def _busy(self, handler: CommandHandler, cap: int) -> None:
        """Refuse a connection over the cap before reading anything: an `error` event, then close."""
        log.warning("wyoming_busy", extra={"connections": len(self.handlers), "max_connections": cap})
        text = f"the server is serving {cap} Wyoming connections already (ASR_WYOMING_MAX_CONNECTIONS); retry shortly"
        with contextlib.suppress(asyncio.CancelledError):  # our own stop: this is the task's top (see _accept)
            await handler.refuse_busy(text)

    def close(self) -> None:
        """Stop accepting connections (those open go on)."""
        if self._server is not None:
            self._server.close()

    async def stop(self, grace: float = 5.0) -> None:
        """Close the listener; commands under way (audio arriving or being transcribed, the worker still
        running) get `grace` seconds to be answered, as Granian lets in-flight requests finish; then
        every connection is closed."""
        self.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while any(h.busy for h in self.handlers.values()) and loop.time() < deadline:
            self.activity.changed.clear()
            with contextlib.suppress(TimeoutError):  # a command ended or a client left: look again
                await asyncio.wait_for(self.activity.changed.wait(), min(0.5, deadline - loop.time()))
        rest = list(self.handlers)
        for t in rest:
            t.cancel()
        for t in rest:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
        s = self.svc.settings
        if s.wyoming_uds is not None:
            with contextlib.suppress(FileNotFoundError):
                s.wyoming_uds.unlink()
        log.info("wyoming_stopped")


async def start(
    settings: Settings, pool: asyncpg.Pool, hub: Hub, intake: Intake, locks: AudioLocks, access_log: AccessLog | None
) -> WyomingServer | None:
    """The app's Wyoming server, listening; its services are the app's.

    None when ASR_WYOMING_PORT=0, or when the address cannot be bound (logged as an error): the HTTP
    API must not go down because another program, e.g. wyoming-faster-whisper, holds port 10300.
    """
    if settings.wyoming_port == 0:
        return None
    svc = Services(settings, pool, hub, intake, locks, access_log)
    server = WyomingServer(svc)
    try:
        await server.start()
    except OSError as exc:
        log.error("wyoming_bind_failed", extra={"address": server.address, "error": str(exc)})
        return None
    return server
