"""The services a request handler may ask for, injected by Litestar (`Provide`) as typed parameters.

The lifespan (`asr_daemon.api.app`) opens them and stores one `Services` in the app's state; the
providers below are the only readers of that state. A handler names what it needs — `pool:
asyncpg.Pool`, `hub: queue.Hub`, `intake: Intake`, `settings: Settings`, … — and gets exactly that,
typed. The HTTP side holds no worker: it talks to the workers (in this process or another) only
through the job table and notifications (`asr_daemon.pipeline.cancels`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from redis import asyncio as aioredis

from asr_daemon.config import Settings
from asr_daemon.engine import models
from asr_daemon.live.manager import LiveManager
from asr_daemon.ops.metrics import Metrics
from asr_daemon.pipeline import limits, queue
from asr_daemon.pipeline.intake import Intake

#: the state key of the `Services` (and of the settings and metrics, there before the lifespan runs)
SERVICES, SETTINGS, METRICS = "services", "settings", "metrics"


@dataclass(frozen=True)
class Services:
    """What the lifespan opened for the HTTP side of this process."""

    pool: asyncpg.Pool
    redis: aioredis.Redis
    hub: queue.Hub
    cache: models.ModelCache
    intake: Intake
    limiter: limits.RateLimiter
    live: LiveManager
    #: jobs this process runs now (always 0 in an API-only process, `ASR_RUN_WORKER=false`)
    running: Callable[[], int]


def services(app: Litestar) -> Services:
    """The app's services; a clear error when asked for before the lifespan opened them."""
    return _services(app.state)


def settings_of(app: Litestar) -> Settings:
    """The app's settings (there from `create_app` on)."""
    return provide_settings(app.state)


def _services(state: State) -> Services:
    found = state.get(SERVICES)
    if not isinstance(found, Services):
        raise TypeError("the app's services are opened by its lifespan: not started yet")
    return found


def provide_settings(state: State) -> Settings:
    """The process's settings."""
    settings: Settings = state[SETTINGS]
    return settings


def provide_metrics(state: State) -> Metrics:
    """The process's Prometheus metrics."""
    meter: Metrics = state[METRICS]
    return meter


def provide_pool(state: State) -> asyncpg.Pool:
    """The PostgreSQL pool."""
    return _services(state).pool


def provide_redis(state: State) -> aioredis.Redis:
    """The Redis client (Redis may be down: callers guard their calls)."""
    return _services(state).redis


def provide_hub(state: State) -> queue.Hub:
    """Per-job notifications and the workers' doorbell."""
    return _services(state).hub


def provide_cache(state: State) -> models.ModelCache:
    """The models loaded in this process."""
    return _services(state).cache


def provide_intake(state: State) -> Intake:
    """Uploads to job rows."""
    return _services(state).intake


def provide_live(state: State) -> LiveManager:
    """The live sessions of this process."""
    return _services(state).live


def provide_running(state: State) -> int:
    """Jobs this process's worker runs now (0 without one)."""
    running: int = _services(state).running()
    return running


#: the app's dependencies, by the parameter name a handler uses
DEPENDENCIES: dict[str, Provide] = {
    "settings": Provide(provide_settings, sync_to_thread=False),
    "meter": Provide(provide_metrics, sync_to_thread=False),
    "pool": Provide(provide_pool, sync_to_thread=False),
    "redis": Provide(provide_redis, sync_to_thread=False),
    "hub": Provide(provide_hub, sync_to_thread=False),
    "cache": Provide(provide_cache, sync_to_thread=False),
    "intake": Provide(provide_intake, sync_to_thread=False),
    "live": Provide(provide_live, sync_to_thread=False),
    "running": Provide(provide_running, sync_to_thread=False),
}

# what a handler writes for each: `pool: PoolDep` (Litestar 3 injects only parameters marked so)
SettingsDep = NamedDependency[Settings]
MetricsDep = NamedDependency[Metrics]
PoolDep = NamedDependency[asyncpg.Pool]
RedisDep = NamedDependency[aioredis.Redis]
HubDep = NamedDependency[queue.Hub]
CacheDep = NamedDependency[models.ModelCache]
IntakeDep = NamedDependency[Intake]
LiveDep = NamedDependency[LiveManager]
RunningDep = NamedDependency[int]
