"""Wake-ups between processes: self-wakeups per submission and per segment, and the latency of a ring.

`python -m bench.wakeups [--old REV]` starts a throwaway PostgreSQL and Redis (tests.services), builds two
`queue.Hub`s on one Redis (two daemon processes, in one event loop) and measures:

- wakes of the submitting process's doorbell per `Hub.ring()` (with its worker idle, each wake is one
  claim query: the first claims the job, the others find nothing);
- wakes of a local follower per `Hub.notify()` (one per stored segment);
- the share of rings that never reach the other process, and the latency from `ring()` in one process
  to the other's doorbell (Redis), beside PostgreSQL's
  LISTEN/NOTIFY between two connections (the alternative the issue names).

`--old REV` runs the same against `asr_daemon/pipeline/queue.py` as of git revision REV (e.g. the one before
the change), loaded from `git show`, for a before/after row.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
import types
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from tests import services

RINGS = 50
SETTLE_S = 0.3


class Counting(asyncio.Event):
    """An event that counts how often it is set."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def set(self) -> None:
        """Count, then set."""
        self.count += 1
        super().set()


def load_queue(rev: str | None) -> types.ModuleType:
    """asr_daemon.pipeline.queue now, or as of git revision `rev`."""
    if rev is None:
        from asr_daemon.pipeline import queue

        return queue
    source = subprocess.run(
        ["git", "show", f"{rev}:asr_daemon/pipeline/queue.py"], check=True, capture_output=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "queue_old.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("queue_old", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def hub_figures(q: Any, redis_url: str) -> dict[str, float]:
    """Self-wakeups and cross-process ring latency of the Hub in module `q`."""
    a, b = q.Hub(q.connect(redis_url), 2.0), q.Hub(q.connect(redis_url), 2.0)
    tasks = [asyncio.create_task(h.listen_bell()) for h in (a, b)]
    tasks += [asyncio.create_task(h.listen_events()) for h in (a, b)]
    await asyncio.sleep(0.5)  # subscribed
    a.bell, b.bell = Counting(), Counting()
    for _ in range(RINGS):
        await a.ring()
        await asyncio.sleep(0.02)
    await asyncio.sleep(SETTLE_S)
    own_bell = a.bell.count / RINGS
    job = uuid.uuid4()
    follower = Counting()
    a._waiters[job].add(follower)  # a follower of the job in the process that stores its segments
    for _ in range(RINGS):
        await a.notify(job)
        await asyncio.sleep(0.02)
    await asyncio.sleep(SETTLE_S)
    own_follower = follower.count / RINGS
    latencies, missed = [], 0
    for _ in range(RINGS):
        b.bell.clear()
        t0 = time.perf_counter()
        await a.ring()
        try:
            await asyncio.wait_for(b.bell.wait(), 1.0)
            latencies.append(time.perf_counter() - t0)
        except TimeoutError:  # the ring never reached the other process (it waits for its next poll)
            missed += 1
        await asyncio.sleep(0.02)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await a.client.aclose()
    await b.client.aclose()
    return {
        "bell_wakes_per_ring": own_bell,
        "follower_wakes_per_notify": own_follower,
        "rings_missed_by_other_process": missed / RINGS,
        "ring_to_other_process_ms_p50": statistics.median(latencies) * 1000 if latencies else float("nan"),
        "ring_to_other_process_ms_max": max(latencies) * 1000 if latencies else float("nan"),
    }


async def pg_notify_latency(dsn: str) -> dict[str, float]:
    """NOTIFY on one connection to its delivery on another that LISTENs."""
    listener, sender = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    got = asyncio.Event()
    await listener.add_listener("asr_wake", lambda *_: got.set())
    latencies = []
    for _ in range(RINGS):
        got.clear()
        t0 = time.perf_counter()
        await sender.execute("SELECT pg_notify('asr_wake', 'x')")
        await asyncio.wait_for(got.wait(), 5)
        latencies.append(time.perf_counter() - t0)
    await listener.close()
    await sender.close()
    return {"pg_notify_ms_p50": statistics.median(latencies) * 1000, "pg_notify_ms_max": max(latencies) * 1000}


async def run(rev: str | None, redis_url: str, dsn: str) -> dict[str, float]:
    """Every figure for queue.py at `rev` (None: the working tree)."""
    return {**await hub_figures(load_queue(rev), redis_url), **await pg_notify_latency(dsn)}


def main(argv: list[str] | None = None) -> int:
    """Print the figures, one `name value` per line (before and after with --old)."""
    ap = argparse.ArgumentParser(prog="python -m bench.wakeups", description=__doc__.split("\n")[0])
    ap.add_argument("--old", metavar="REV", help="also measure asr_daemon/pipeline/queue.py as of this git revision")
    args = ap.parse_args(argv)
    with services.postgres() as pg, services.redis() as rd:
        pg.psql("CREATE DATABASE bench")
        rows = {"now": asyncio.run(run(None, rd.url, pg.url("bench")))}
        if args.old:
            rows[args.old] = asyncio.run(run(args.old, rd.url, pg.url("bench")))
    names = list(rows["now"])
    print(f"{'':34}" + "".join(f"{k:>14}" for k in rows))
    for n in names:
        print(f"{n:34}" + "".join(f"{rows[k][n]:14.3f}" for k in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
