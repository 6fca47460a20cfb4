"""What every daemon process opens and runs, whatever its kind.

Three kinds share one PostgreSQL: the full daemon (`asrctl serve`: HTTP API and job worker in one
process), the HTTP side alone (`asrctl serve --no-worker`, `ASR_RUN_WORKER=false`) and the worker
alone (`asrctl worker`, no HTTP). `Core` is their common part: the database (migrated), Redis and its
listeners, the model cache, the outbox of finished jobs, housekeeping, and — where jobs run — the
worker. The HTTP side adds its own (`asr_daemon.api.app`'s lifespan); `asrctl worker` runs `Core`
alone (`asr_daemon.cli.worker`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg
import stamina
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from asr_daemon import db
from asr_daemon.config import Settings
from asr_daemon.dbprobe import DB_WAIT_S  # how long a starting process waits for PostgreSQL
from asr_daemon.diarization import engine as diarization_engine
from asr_daemon.diarization import holder_from_settings
from asr_daemon.engine import models
from asr_daemon.ops import metrics, migrate, systemd
from asr_daemon.pipeline import housekeeping, queue, uploads, webhooks
from asr_daemon.pipeline.worker import Worker, process_name

log = logging.getLogger(__name__)


async def open_database(settings: Settings) -> asyncpg.Pool:
    """Connect (waiting up to `DB_WAIT_S` for PostgreSQL to come up) and apply pending migrations."""
    try:
        async for attempt in stamina.retry_context(
            on=(OSError, asyncpg.PostgresError), attempts=None, timeout=DB_WAIT_S, wait_initial=1.0, wait_jitter=0
        ):
            with attempt:
                if attempt.num > 1:
                    log.warning("database_wait", extra={"attempt": attempt.num})
                pool = await db.create_pool(settings)
    except (OSError, asyncpg.PostgresError) as exc:
        log.error(
            "database_unreachable", extra={"error": db.connect_error(settings.database_url.get_secret_value(), exc)}
        )
        raise
    async with pool.acquire() as conn:
        applied = await migrate.migrate(conn)  # type: ignore[arg-type]  # a pool proxy is a Connection
    if applied:
        log.info("migrations_applied", extra={"names": applied})
    return pool


class Idle:
    """The watchdog's view of a process that runs no jobs: never stalled."""

    running = 0
    last_progress = 0.0


@dataclass
class Core:
    """The open parts of a process (see the module's doc)."""

    settings: Settings
    pool: asyncpg.Pool
    redis: aioredis.Redis
    hub: queue.Hub
    cache: models.ModelCache
    life: systemd.Lifecycle
    outbox: webhooks.Outbox
    diarizer: diarization_engine.Holder
    housekeeping: housekeeping.Housekeeping
    worker: Worker | None
    name: str
    redis_up: bool
    timings: dict[str, float] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)  # Redis listeners
    preload: asyncio.Task[None] | None = None  # the default model's load at start
    draining: asyncio.Future[None] | None = None  # the drain, once begun (`drain`)

    def running(self) -> int:
        """Jobs this process runs now."""
        return self.worker.running if self.worker is not None else 0

    def stop_soon(self, keep: tuple[str, ...] = ()) -> None:
        """The stop began (SIGTERM): claim no new job (but of the kinds in `keep`, until called again without),
        and end event streams and waiters whose job will not end here (`asr_daemon.pipeline.events.holds`);
        the running jobs go on until `drain`."""
        if self.worker is not None:
            if keep:
                self.worker.claim_only(keep)
            else:
                self.worker.stop_claiming()
        self.hub.stop(drained=self.worker is None)

    async def drain(self) -> None:
        """Once, whoever asks first: STOPPING=1, the running jobs finish within the drain timeout or are
        checkpointed back to the queue; then the waiters still on a job of this process are woken."""
        if self.draining is None:
            self.stop_soon()
            worker = self.worker
            drain = (lambda: worker.drain(self.settings.drain_timeout)) if worker is not None else None

            async def run() -> None:
                try:
                    await self.life.stop(drain)  # issue 5: STOPPING=1 first
                finally:
                    self.hub.stop(drained=True)

            self.draining = asyncio.ensure_future(run())
        await asyncio.shield(self.draining)

    def go(self, *, listening: bool = True) -> None:
        """The last step of a start: the preload (where jobs run), the worker, READY=1 and the watchdog.

        `listening`: READY=1 waits for the HTTP socket to accept (not in `asrctl worker`, which has none).
        """
        s = self.settings
        preload_path = models.local_path(s.models_dir, s.model) if s.preload and self.worker is not None else None
        # /readyz answers 503 "loading <model>" until the preload is done
        self.preload = self.cache.start_preload(s.model, preload_path) if preload_path else None
        if self.worker is not None:
            self.worker.start()
        self.housekeeping.start()
        progress = self.worker if self.worker is not None else Idle()
        # issue 5: READY=1 once the socket accepts (HTTP), the preload is over (its EXTEND_TIMEOUT_USEC
        # keeps TimeoutStartSec from firing meanwhile) and the DB is migrated; watchdog; STATUS=
        self.life.start(
            progress=progress,
            ready_check=systemd.after(self.preload, systemd.database_ready(self.pool)),
            status=systemd.job_status(s, self.pool, progress),
            listening=listening,
        )


@contextlib.asynccontextmanager
async def open_core(
    settings: Settings,
    cache: models.ModelCache,
    life: systemd.Lifecycle,
    meter: metrics.Metrics,
    *,
    locks: uploads.AudioLocks | None,
) -> AsyncIterator[Core]:
    """Open the database and Redis and build the parts; on exit drain the worker and close everything.

    `locks`: the intake's audio locks in a process that accepts uploads (its housekeeping sweeps
    them); the worker runs when `settings.run_worker`.
    """
    t0 = time.perf_counter()
    pool = await open_database(settings)
    t1 = time.perf_counter()
    client = queue.connect(settings.redis_url.get_secret_value())
    try:
        redis_up = await queue.ping(client)
        t2 = time.perf_counter()
        hub = queue.Hub(client, settings.poll_interval)
        outbox = webhooks.Outbox(settings, pool)
        diarizer = holder_from_settings(settings)  # issue 19: one engine for the intake and the worker
        worker = Worker(settings, pool, hub, cache, outbox, meter, diarizer) if settings.run_worker else None
        chores = housekeeping.Housekeeping(settings, pool, hub, outbox, locks=locks, redeliver=worker is not None)
        core = Core(
            settings=settings,
            pool=pool,
            redis=client,
            hub=hub,
            cache=cache,
            life=life,
            outbox=outbox,
            diarizer=diarizer,
            housekeeping=chores,
            worker=worker,
            name=worker.name if worker is not None else process_name(),
            redis_up=redis_up,
            timings={"db_s": round(t1 - t0, 4), "redis_s": round(t2 - t1, 4)},
        )
        core.tasks += [asyncio.create_task(hub.listen_bell()), asyncio.create_task(hub.listen_events())]
    except BaseException:
        await _close(client, pool)
        raise
    try:
        yield core
    finally:
        await core.drain()
        await chores.stop()
        await outbox.close()
        for t in [*core.tasks, *([core.preload] if core.preload else [])]:
            t.cancel()
        await _close(client, pool)


async def _close(client: aioredis.Redis, pool: asyncpg.Pool) -> None:
    with contextlib.suppress(RedisError, OSError):
        await client.aclose()
    await pool.close()
