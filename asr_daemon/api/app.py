"""The Litestar application: `create_app(settings)`, and `build` for Granian's entry point (`asr_daemon.startup`).

The lifespan opens PostgreSQL (applying pending migrations) and Redis, starts the in-process job
worker and the Redis listeners, and on shutdown drains the worker so nothing accepted is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import Future
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from litestar import Litestar, Request, Response
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from redis.exceptions import RedisError

from asr_daemon import accesslog, db, device, errors, limits, logs, metrics, migrate, models, queue, systemd, uploads
from asr_daemon.api import archive, auth, cors, diarization, health, jobs, search, transcriptions, unread
from asr_daemon.api import metrics as metrics_api
from asr_daemon.api import models as api_models
from asr_daemon.config import Settings
from asr_daemon.diarization import announce as announce_diarization
from asr_daemon.diarization import holder_from_settings
from asr_daemon.intake import Intake
from asr_daemon.live import routes as live_routes
from asr_daemon.live.manager import LiveManager
from asr_daemon.web import routes as web
from asr_daemon.worker import Worker
from asr_daemon.wyoming import server as wyoming_server

log = logging.getLogger(__name__)

DB_UNAVAILABLE = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncio.TimeoutError,
    # what asyncpg raises on a pooled connection PostgreSQL closed while it sat idle (server stop):
    # "cannot switch to state ...; another operation is in progress"
    asyncpg.InternalClientError,
)


def _error(
    request: Request[Any, Any, Any], status: int, body: dict[str, Any], retry_after: int | None = None
) -> Response[Any]:
    headers = {"Retry-After": str(retry_after)} if retry_after else {}
    if _has_body(request):
        # an error can be raised before the body was read (queue full, database down, a bad header)
        # or half-way through it (too large, too slow); the rest is read and dropped after the reply
        # (api/unread.py, bounded) and Granian closes the connection: a keep-alive client that sent
        # its next request on it would get "server disconnected". `Connection: close` says so.
        headers["Connection"] = "close"
    return Response(body, status_code=status, headers=headers or None, media_type="application/json")


def _has_body(request: Request[Any, Any, Any]) -> bool:
    h = request.headers
    return "transfer-encoding" in h or h.get("content-length", "0") not in ("", "0")


def on_asr_error(request: Request[Any, Any, Any], exc: errors.AsrError) -> Response[Any]:
    """Domain errors: their own status and OpenAI-style body; 429/503 say when to retry."""
    retry = exc.retry_after or (5 if exc.status in (429, 503, 507) else None)
    response = _error(request, exc.status, exc.body(), retry)
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="asr-server"'
    return response


def on_http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """Litestar's own errors (404 route, 405, 400 validation) in the same shape as ours."""
    code = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
        exc.status_code, "http_error"
    )
    message = str(exc.detail)
    if exc.status_code in (404, 405):
        what = "no such route" if exc.status_code == 404 else "method not allowed on this route"
        message = f"{what}: {request.method} {request.url.path[:200]} (see /docs/openapi.json)"
    body: dict[str, Any] = {"error": {"message": message, "type": code, "code": code}}
    if exc.extra:
        body["error"]["details"] = exc.extra
    response = _error(request, exc.status_code, body, 5 if exc.status_code in (429, 503) else None)
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value  # e.g. Allow on 405
    return response


def on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """A bug: log it with its traceback (Litestar would not) and answer a 500 in our error shape."""
    log.error(
        "request_failed",
        exc_info=exc,
        extra={"method": request.method, "path": request.url.path[:200], "error": type(exc).__name__},
    )
    return _error(request, 500, errors.AsrError("internal error: the server logged the details").body())


def on_db_down(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """PostgreSQL unreachable: 503 with Retry-After, never a 500.

    OSError is in DB_UNAVAILABLE for asyncpg's connection errors, which name no file; one that names
    a file is the server's own disk: full (507), or a fault that must not pass for a database outage.
    """
    if isinstance(exc, OSError) and exc.filename is not None:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return on_asr_error(request, errors.InsufficientStorage("the server's disk is full; nothing was stored"))
        return on_unexpected(request, exc)
    log.warning("database_unavailable", extra={"error": type(exc).__name__})
    body = errors.Unavailable("the database is unavailable; nothing was stored, retry shortly").body()
    return _error(request, 503, body, 5)


async def _open_db(settings: Settings) -> asyncpg.Pool:
    """Connect (waiting up to 30 s for PostgreSQL to come up) and apply pending migrations."""
    deadline = time.monotonic() + 30
    while True:
        try:
            pool = await db.create_pool(settings)
            break
        except (OSError, asyncpg.PostgresError) as exc:
            if time.monotonic() > deadline:
                log.error(
                    "database_unreachable",
                    extra={"error": db.connect_error(settings.database_url.get_secret_value(), exc)},
                )
                raise
            log.warning("database_wait", extra={"error": type(exc).__name__})
            await asyncio.sleep(1)
    async with pool.acquire() as conn:
        applied = await migrate.migrate(conn)  # type: ignore[arg-type]  # a pool proxy is a Connection
    if applied:
        log.info("migrations_applied", extra={"names": applied})
    return pool


@asynccontextmanager
async def lifespan(app: Litestar) -> AsyncIterator[None]:
    """Open connections and start the worker; on shutdown drain it, then close everything."""
    settings: Settings = app.state.settings
    settings.uploads_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pool = await _open_db(settings)
    t1 = time.perf_counter()
    try:
        await auth.require_keys_exist(settings, pool)
    except BaseException:
        await pool.close()
        raise
    client = queue.connect(settings.redis_url.get_secret_value())
    redis_up = await queue.ping(client)
    t2 = time.perf_counter()
    hub = queue.Hub(client, settings.poll_interval)
    life = systemd.Lifecycle(settings)  # issue 5
    # EXTEND_TIMEOUT_USEC while loading; the first load of the default model takes over the early one
    cache = models.cache_from_settings(settings, load_guard=life.loading, early=app.state.early_load)
    locks = uploads.AudioLocks()
    diarizer = holder_from_settings(settings)  # issue 19: one engine for the intake and the worker
    announce_diarization(settings)  # issue 19: an engine that cannot load is named at the start
    worker = Worker(settings, pool, hub, cache, locks, app.state.metrics, diarizer)
    app.state.update(
        pool=pool,
        redis=client,
        hub=hub,
        models=cache,
        worker=worker,
        intake=Intake(settings, pool, hub, locks, diarizer),
        started_at=time.time(),
        limiter=limits.RateLimiter(client, hub.guard),
        live=LiveManager(settings, pool, cache, hub, worker.name),  # issue 21
    )
    app.state.live.start()
    listeners = [asyncio.create_task(hub.listen_bell()), asyncio.create_task(hub.listen_events())]
    listeners.append(asyncio.create_task(_announce_ready(settings, cache)))
    worker.start()
    # issue 22: Home Assistant's Wyoming port, same process and model; listening before READY=1
    voice = await wyoming_server.start(settings, app.state, locks)
    preload_path = models.local_path(settings.models_dir, settings.model) if settings.preload else None
    # /readyz answers 503 "loading <model>" until the preload is done
    preload = cache.start_preload(settings.model, preload_path) if preload_path else None
    log.info(
        "daemon_started",
        extra={
            "worker": worker.name,
            "model": settings.model,
            "keys_required": settings.keys_required,
            "redis": redis_up,
            "db_s": round(t1 - t0, 4),
            "redis_s": round(t2 - t1, 4),
            "since_process_start_s": round(metrics.process_age(), 4),
        },
    )
    # issue 5: READY=1 once Granian's socket accepts, the preload is over (its EXTEND_TIMEOUT_USEC keeps
    # TimeoutStartSec from firing meanwhile) and the DB is migrated; watchdog; STATUS=
    life.start(
        progress=worker,
        ready_check=systemd.after(preload, systemd.database_ready(pool)),
        status=systemd.job_status(settings, pool, worker),
    )
    try:
        yield
    finally:
        log.info("daemon_draining", extra={"running": worker.running})
        await app.state.live.drain(settings.drain_timeout)  # issue 21: each session's utterance, then a close
        if voice is not None:  # like Granian's in-flight requests: voice commands under way answer first
            await voice.stop(grace=settings.drain_timeout)
        await life.stop(lambda: worker.drain(settings.drain_timeout))  # issue 5: STOPPING=1 first
        for t in [*listeners, *([preload] if preload else [])]:
            t.cancel()
        with contextlib.suppress(RedisError, OSError):
            await client.aclose()
        await pool.close()
        log.info("daemon_stopped")


async def _announce_ready(settings: Settings, cache: models.ModelCache) -> None:
    """The one human line of a foreground daemon once it serves (not behind systemd's socket: ASR_UDS)."""
    if settings.uds is not None:
        return
    kind = await asyncio.to_thread(cache.target_device)  # may import ctranslate2 to probe CUDA
    compute = device.resolve_compute_type(settings.compute_type, kind)
    logs.announce(logs.ready_line(settings.host, settings.port, settings.model, kind, compute))


def create_app(settings: Settings, early: Future[models.Loaded | None] | None = None) -> Litestar:
    """Build the application for `settings` (nothing is opened until the lifespan runs).

    `early` is the default model's load begun at the worker's start (`asr_daemon.startup`).
    """
    meter = metrics.Metrics(workers=settings.workers, start_reason=settings.start_reason)
    return Litestar(
        route_handlers=[
            health.healthz,
            health.readyz,
            transcriptions.TranscriptionsController,
            jobs.JobsController,
            diarization.diarization,
            diarization.rename_speakers,
            api_models.ModelsController,
            metrics_api.metrics,
            search.search_segments,  # issue 20: search, audio, deletion, the page
            archive.ArchiveController,
            web.router(),
            live_routes.realtime,
            live_routes.client_secrets,
        ],
        cors_config=cors.config(settings),
        lifespan=[lifespan],
        guards=[auth.guard],
        before_send=[metrics.on_send],
        state=State({"settings": settings, "metrics": meter, "early_load": early}),
        exception_handlers={
            errors.AsrError: on_asr_error,
            HTTPException: on_http_error,
            **{e: on_db_down for e in DB_UNAVAILABLE},
            Exception: on_unexpected,
        },
        openapi_config=OpenAPIConfig(title="asr-server", version="0.1.0", path="/docs"),
        request_max_body_size=1 << 20,
        debug=False,
    )


def build(settings: Settings, early: Future[models.Loaded | None] | None = None) -> accesslog.ASGIApp:
    """The app as Granian serves it (`asr_daemon.startup.app_from_env`, logging already configured).

    The app is wrapped in the JSON access log (issue 5), so every request is logged, and outermost
    in the drain of unread bodies (issue 18), so an early refusal reaches a client still sending.
    """
    log.info("app_created", extra={"since_process_start_s": round(metrics.process_age(), 4)})
    app = create_app(settings, early)
    logged = accesslog.with_access_log(app, settings)
    app.state.access_log = logged.access_log  # Wyoming traffic goes to the same log (issue 22)
    return unread.with_drain(logged, settings)
