"""Diarization as a stored step of a job, run by the worker before transcription.

Done once: when the job's `diarizations` row says done (a job resumed after a crash or a drain), the
step is skipped and its stored turns serve. Otherwise the engine runs in a thread; each block's
progress is stored (and heartbeats the job, and rings the job's event channel), a cancel or drain
stops it between blocks (`engine.Stopped`), and the turns are stored with the done mark in one
transaction. Known speakers (from the request) name the clusters whose centroid is close enough.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

import asyncpg
import numpy as np

from asr_daemon import jobs
from asr_daemon.diarization import request, store
from asr_daemon.diarization.engine import Engine, Holder, Params, Stopped, speaker_label
from asr_daemon.pipeline.queue import Hub

log = logging.getLogger(__name__)

#: cosine similarity from which a cluster is taken to be a known speaker
KNOWN_MATCH = 0.75


def params(spec: jobs.DiarizationOptions, duration_s: float | None = None) -> Params:
    """The engine's parameters from a job's diarization options; `duration_s`, the length its file
    declared, bounds what may be decoded as transcription bounds it (that plus 5 % and 30 s)."""
    bound = None if duration_s is None else duration_s * 1.05 + 30
    return Params(spec.num_speakers, spec.min_speakers, spec.max_speakers, bound)


def match_known(centroids: Mapping[int, np.ndarray], known: list[tuple[str, np.ndarray]]) -> dict[str, str]:
    """Label → name for the clusters a known speaker matches (best pairs first, each used once)."""
    pairs = sorted(
        ((float(c @ v), spk, name) for spk, c in centroids.items() for name, v in known),
        reverse=True,
    )
    names: dict[str, str] = {}
    used: set[str] = set()
    for sim, spk, name in pairs:
        label = speaker_label(spk)
        if sim >= KNOWN_MATCH and label not in names and name not in used:
            names[label] = name
            used.add(name)
    return names


async def run(
    pool: asyncpg.Pool,
    hub: Hub,
    holder: Holder,
    worker: str,
    job: jobs.Job,
    path: Path,
    spec: jobs.DiarizationOptions,
    stop: threading.Event,
    tick: Callable[[], None],
) -> float:
    """Run (or skip, when stored) the step for `job`; seconds it took. Raises `Stopped` or `Unavailable`."""
    job_id = job.id
    done = await store.state(pool, job_id)
    if done is not None and done["status"] == "done":
        log.info("diarization_reused", extra={"job_id": str(job_id), "speakers": done["num_speakers"]})
        return 0.0
    t0 = time.perf_counter()
    eng = await asyncio.to_thread(holder.acquire)
    try:
        return await _run(pool, hub, eng, worker, job, path, spec, stop, tick, t0)
    finally:
        await asyncio.to_thread(holder.release)  # its lock may be held by a load; the last use may unload


async def _run(
    pool: asyncpg.Pool,
    hub: Hub,
    eng: Engine,
    worker: str,
    job: jobs.Job,
    path: Path,
    spec: jobs.DiarizationOptions,
    stop: threading.Event,
    tick: Callable[[], None],
    t0: float,
) -> float:
    job_id = job.id
    loop = asyncio.get_running_loop()
    if not await store.begin(pool, job_id, worker, eng.name):
        raise Stopped
    await hub.notify(job_id)

    def on_progress(seconds: float) -> None:
        tick()
        fut = asyncio.run_coroutine_threadsafe(_progress(pool, hub, job_id, worker, seconds), loop)
        if not fut.result():
            stop.set()

    result = await asyncio.to_thread(eng.run, path, params(spec, job.duration_s), on_progress, stop.is_set)
    names = match_known(result.centroids, request.known_vectors(spec))
    took = time.perf_counter() - t0
    if not await store.finish(pool, job_id, worker, result.turns, names, round(took, 4), job.duration_s):
        raise Stopped
    await hub.notify(job_id)
    log.info(
        "diarization_done",
        extra={
            "job_id": str(job_id),
            "speakers": len(result.centroids),
            "turns": len(result.turns),
            "known_matched": len(names),
            "seconds": round(took, 3),
        },
    )
    return took


async def _progress(pool: asyncpg.Pool, hub: Hub, job_id: uuid.UUID, worker: str, seconds: float) -> bool:
    ok = await store.progress(pool, job_id, worker, seconds)
    await hub.notify(job_id)
    return ok
