"""Cancelling a job through the database: the HTTP side writes the request, the worker running the
job hears it and stops.

`request` marks the row (`queries.request_cancel`: a queued job is cancelled at once, a running one
gets `cancel_requested`) and, for a running job, sends `NOTIFY asr_cancel, '<job id>'`. Every worker
process LISTENs on that channel (`Listener`) and stops the job at once if it runs there; whichever
process runs it — this one or another host on the same PostgreSQL. A lost notification (the listening
connection down for a moment) costs at most one heartbeat: each heartbeat reads `cancel_requested`
back (`queries.heartbeat`). Redis plays no part, so a cancel works with Redis down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg

from asr_daemon import db, jobs, queries
from asr_daemon.config import Settings
from asr_daemon.pipeline import events, queue

log = logging.getLogger(__name__)

#: the PostgreSQL notification channel; the payload is the job's id
CHANNEL = "asr_cancel"


async def request(pool: asyncpg.Pool, hub: queue.Hub, job_id: uuid.UUID) -> queries.Cancelled | None:
    """Ask for `job_id` to be cancelled; what the request did (None: no such job).

    A running job is told to its worker by NOTIFY (see the module's doc); followers are woken.
    """
    outcome = await queries.request_cancel(pool, job_id)
    if outcome is not None and outcome.status == jobs.Status.RUNNING:
        await pool.execute("SELECT pg_notify($1, $2)", CHANNEL, str(job_id))
    if outcome is not None:
        await hub.notify(job_id)
    return outcome


async def settle(pool: asyncpg.Pool, hub: queue.Hub, job_id: uuid.UUID, timeout: float) -> None:
    """Wait up to `timeout` for a running job whose cancel was requested to reach a final state.

    A worker that hears the notification marks the job cancelled within milliseconds, so the caller
    can answer with the outcome; a busy or unreachable worker leaves the job `running` (with
    `cancel_requested`) after the timeout, and its next heartbeat finishes the cancel.
    """
    await events.wait_finished(pool, hub, job_id, timeout)


class Listener:
    """One PostgreSQL connection LISTENing on `asr_cancel`; calls `on_cancel(job_id)` for each request.

    Reconnects after `poll_interval` when the connection is lost (PostgreSQL restarted); meanwhile
    the worker's heartbeat still finds cancel requests in the job table.
    """

    def __init__(self, settings: Settings, on_cancel: Callable[[uuid.UUID], object]) -> None:
        self.settings = settings
        self.on_cancel = on_cancel
        self.listening = asyncio.Event()  # set while the LISTEN is in place (tests wait for it)

    def _heard(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        try:
            job_id = uuid.UUID(str(payload))
        except ValueError:
            return
        self.on_cancel(job_id)

    async def run(self) -> None:
        """Forever: connect, LISTEN, wait for the connection to end, reconnect."""
        while True:
            conn: asyncpg.Connection[Any] | None = None
            try:
                conn = await db.connect(self.settings)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._heard)
                self.listening.set()
                await lost.wait()
                log.warning("cancel_listener_lost")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("cancel_listener_failed", extra={"error": type(exc).__name__})
            finally:
                self.listening.clear()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 2)
            await asyncio.sleep(self.settings.poll_interval)
