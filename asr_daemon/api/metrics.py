"""`/metrics`: the daemon's Prometheus metrics in the text exposition format.

Scrape-time values (queue depth, oldest queued job, job totals) are read from PostgreSQL here; when
it does not answer the endpoint still serves the process metrics, with `asr_database_up 0`.
"""

from __future__ import annotations

import asyncio

from litestar import Response, get

from asr_daemon import db, jobs, queries
from asr_daemon.api.deps import CacheDep, LiveDep, MetricsDep, PoolDep, RunningDep

#: The Prometheus text exposition format (Litestar appends `; charset=utf-8`).
MEDIA_TYPE = "text/plain; version=0.0.4"


@get("/metrics", include_in_schema=True, summary="Prometheus metrics", media_type=MEDIA_TYPE)
async def metrics(
    meter: MetricsDep, pool: PoolDep, cache: CacheDep, live: LiveDep, running: RunningDep
) -> Response[bytes]:
    """Prometheus text format; not counted as activity by the idle watcher."""
    m = meter
    stats: queries.QueueStats | None = None
    totals: dict[jobs.Status, int] | None = None
    try:
        async with asyncio.timeout(2):
            stats = await queries.queue_stats(pool)
            totals = await queries.jobs_finished_totals(pool)
    except db.ERRORS:
        pass
    m.refresh(stats, totals, running, cache)
    m.live_sessions.set(len(live.sessions))  # issue 21
    return Response(m.render(), media_type=MEDIA_TYPE)
