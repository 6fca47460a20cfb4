"""`/healthz` (the process is up) and `/readyz` (PostgreSQL, Redis and the model are ready).

`/readyz` also says which device the next model load goes to:
`"device": {"kind": "cuda"|"cpu", "compute_type": str, "cpu_fallback": bool,
"gpu": {"index", "name", "memory_total_mib", "memory_free_mib", "memory_used_mib"}|null}`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Response, get
from litestar.openapi.datastructures import ResponseSpec

from asr_daemon.api.deps import CacheDep, PoolDep, RedisDep, SettingsDep
from asr_daemon.engine import device, models
from asr_daemon.pipeline import queue


@get("/healthz", sync_to_thread=False, include_in_schema=True)
def healthz() -> dict[str, str]:
    """The process is up and its event loop answers."""
    return {"status": "ok"}


def device_report(settings: SettingsDep, cache: CacheDep) -> dict[str, Any]:
    """The device the next load goes to, its compute type and, on CUDA, the GPU's VRAM (blocking)."""
    kind = cache.target_device()
    report = device.describe(kind, device.resolve_compute_type(settings.compute_type, kind))
    return {**report, "cpu_fallback": cache.cpu_only}


@get("/readyz", responses={503: ResponseSpec(data_container=dict[str, Any], description="Not ready: see checks.")})
async def readyz(pool: PoolDep, redis: RedisDep, settings: SettingsDep, cache: CacheDep) -> Response[dict[str, Any]]:
    """200 when PostgreSQL answers, Redis answers and the default model is present (and not loading;
    not asked of an API-only process, `ASR_RUN_WORKER=false`)."""
    checks: dict[str, Any] = {}
    try:
        await pool.fetchval("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001  # any failure means "not ready"; the type is reported
        checks["database"] = f"unavailable: {type(exc).__name__}"
    checks["redis"] = "ok" if await queue.ping(redis) else "unavailable"
    if not settings.run_worker:
        pass  # an API-only process runs no model: the workers' hosts need it, not this one
    elif settings.model in cache.loading:
        checks["model"] = f"loading {settings.model}"
    elif models.local_path(settings.models_dir, settings.model) is None:
        checks["model"] = f"missing {settings.model}: run `asrctl models pull {settings.model}`"
    else:
        checks["model"] = "ok"
    ready = all(v == "ok" for v in checks.values())
    dev = await asyncio.to_thread(device_report, settings, cache)  # may import ctranslate2 or run nvidia-smi
    body = {"status": "ready" if ready else "not ready", "checks": checks, "device": dev}
    return Response(body, status_code=200 if ready else 503)
