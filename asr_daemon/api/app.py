"""The Litestar application: `create_app(settings)`, and `build` for Granian's entry point (`asr_daemon.startup`).

The lifespan opens the process's core (`asr_daemon.runtime`: PostgreSQL with pending migrations
applied, Redis, housekeeping and, unless `ASR_RUN_WORKER=false`, the job worker) and the HTTP side's
services, handed to handlers by dependency injection (`asr_daemon.api.deps`). The stop begins the
moment SIGTERM arrives (`asr_daemon.ops.sigterm`): no new job is claimed, event streams and waiters
whose job will not end here end, live sessions, voice commands and the worker drain, so nothing
accepted is lost; Granian runs the lifespan's shutdown once every connection closed, and it awaits that drain.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import AsyncIterator
from concurrent.futures import Future
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, Response
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, YamlRenderPlugin

from asr_daemon import accesslog, db, errors, logs, runtime
from asr_daemon.api import (
    archive,
    auth,
    cors,
    deps,
    diarization,
    health,
    jobs,
    sameorigin,
    search,
    transcriptions,
    unread,
)
from asr_daemon.api import metrics as metrics_api
from asr_daemon.api import models as api_models
from asr_daemon.config import Settings
from asr_daemon.diarization import announce as announce_diarization
from asr_daemon.engine import device, models
from asr_daemon.jobs import Kind
from asr_daemon.live import routes as live_routes
from asr_daemon.live.manager import LiveManager
from asr_daemon.ops import metrics, sigterm, systemd
from asr_daemon.pipeline import limits, uploads
from asr_daemon.pipeline.intake import Intake
from asr_daemon.urls import daemon_url
from asr_daemon.web import routes as web
from asr_daemon.wyoming import server as wyoming_server

log = logging.getLogger(__name__)

#: state keys of what exists before the lifespan runs (beside `deps.SETTINGS` and `deps.METRICS`)
CACHE, LIFE = "model_cache", "lifecycle"

DB_UNAVAILABLE = db.UNAVAILABLE


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
    # a read stores nothing either way; an accepted transcription answers its own 503 (api/transcriptions.py)
    stored = "" if request.method in ("GET", "HEAD") else " nothing was stored,"
    body = errors.Unavailable(f"the database is unavailable;{stored} retry shortly").body()
    return _error(request, 503, body, 5)


@asynccontextmanager
async def lifespan(app: Litestar) -> AsyncIterator[None]:
    """Open the process's core (`asr_daemon.runtime`) and the HTTP side's services; on shutdown drain
    live sessions and voice commands, then the worker, then close everything."""
    settings = deps.settings_of(app)
    settings.uploads_dir.mkdir(parents=True, exist_ok=True)
    cache: models.ModelCache = app.state[CACHE]
    life: systemd.Lifecycle = app.state[LIFE]
    locks = uploads.AudioLocks()
    announce_diarization(settings)  # issue 19: an engine that cannot load is named at the start
    async with runtime.open_core(settings, cache, life, app.state[deps.METRICS], locks=locks) as core:
        await auth.require_keys_exist(settings, core.pool)
        hub, pool = core.hub, core.pool
        intake = Intake(settings, pool, hub, locks, core.diarizer)
        live = LiveManager(settings, pool, cache, hub, core.name)  # issue 21
        app.state[deps.SERVICES] = deps.Services(
            pool=pool,
            redis=core.redis,
            hub=hub,
            cache=cache,
            intake=intake,
            limiter=limits.RateLimiter(core.redis, hub.guard),
            live=live,
            running=core.running,
        )
        live.start()
        announce = asyncio.create_task(_announce_ready(settings, cache))
        # issue 22: Home Assistant's Wyoming port (its commands are jobs), listening before READY=1
        voice = await wyoming_server.start(settings, pool, hub, intake, locks, app.state.get("access_log"))
        core.go()
        log.info(
            "daemon_started",
            extra={
                "worker": core.name,
                "run_worker": settings.run_worker,
                "model": settings.model,
                "keys_required": settings.keys_required,
                "redis": core.redis_up,
                **core.timings,
                "since_process_start_s": round(metrics.process_age(), 4),
            },
        )

        async def stop() -> None:
            # no new job (but voice commands a Wyoming client here waits on, until its stop below); event
            # streams and waiters end, so that Granian's connections close
            core.stop_soon(keep=(Kind.WYOMING,) if voice is not None else ())
            log.info("daemon_draining", extra={"running": core.running()})
            await live.drain(settings.drain_timeout)  # issue 21: each session's utterance, then a close
            if voice is not None:  # like Granian's in-flight requests: voice commands under way answer first
                await voice.stop(grace=settings.drain_timeout)
            await core.drain()

        stopping: list[asyncio.Task[None]] = []

        # the stop begins when SIGTERM arrives, not once Granian has seen every connection close
        def begin_stop() -> None:
            if not stopping:
                stopping.append(asyncio.create_task(stop()))

        undo = sigterm.on_terminate(begin_stop)
        try:
            yield
        finally:
            undo()
            await (stopping[0] if stopping else stop())
            announce.cancel()
    log.info("daemon_stopped")


async def _announce_ready(settings: Settings, cache: models.ModelCache) -> None:
    """The one human line of a foreground daemon once it serves (not behind systemd's socket: ASR_UDS)."""
    if settings.uds is not None:
        return
    if not settings.run_worker:
        logs.announce(
            f"asr-server ready (HTTP API only, jobs run in `asrctl worker`): {daemon_url(settings.host, settings.port)}"
        )
        return
    kind = await asyncio.to_thread(cache.target_device)  # may import ctranslate2 to probe CUDA
    compute = device.resolve_compute_type(settings.compute_type, kind)
    logs.announce(logs.ready_line(settings.host, settings.port, settings.model, kind, compute))


def create_app(settings: Settings) -> Litestar:
    """Build the application for `settings` (nothing is opened until the lifespan runs).

    Handlers get the process's services as typed parameters (`asr_daemon.api.deps`). The model cache
    exists from here on, so that the early preload can be handed to it (`ModelCache.adopt`).
    """
    meter = metrics.Metrics(workers=settings.workers, start_reason=settings.start_reason)
    life = systemd.Lifecycle(settings)  # issue 5
    # EXTEND_TIMEOUT_USEC while a model loads
    cache = models.cache_from_settings(settings, load_guard=life.loading)
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
        state=State({deps.SETTINGS: settings, deps.METRICS: meter, CACHE: cache, LIFE: life}),
        dependencies=deps.DEPENDENCIES,
        exception_handlers={
            errors.AsrError: on_asr_error,
            HTTPException: on_http_error,
            **{e: on_db_down for e in DB_UNAVAILABLE},
            Exception: on_unexpected,
        },
        # the schema only: Litestar's HTML viewers load unpinned script from CDNs onto this origin
        openapi_config=OpenAPIConfig(
            title="asr-server",
            version="0.1.0",
            path="/docs",
            render_plugins=[JsonRenderPlugin(), YamlRenderPlugin()],
        ),
        request_max_body_size=1 << 20,
        debug=False,
    )


def build(settings: Settings, early: Future[models.Loaded | None] | None = None) -> accesslog.ASGIApp:
    """The app as Granian serves it (`asr_daemon.startup.app_for`, logging already configured).

    `early`, the default model's load begun before the app was imported, is adopted by the model
    cache. The app is wrapped in the JSON access log (issue 5), so every request is logged, and
    outermost in the drain of unread bodies (issue 18), so an early refusal reaches a client still sending.
    """
    log.info("app_created", extra={"since_process_start_s": round(metrics.process_age(), 4)})
    app = create_app(settings)
    if early is not None:
        app.state[CACHE].adopt(settings.model, early)
    logged = accesslog.with_access_log(sameorigin.SameOrigin(app, settings), settings)
    app.state.access_log = logged.access_log  # Wyoming traffic goes to the same log (issue 22)
    return unread.with_drain(logged, settings)
