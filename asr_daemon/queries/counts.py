"""How many jobs wait and run: the one count behind /metrics, `asrctl status`, systemd's STATUS= line
and the idle watcher; and the totals of jobs that reached each final state."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from asr_daemon.jobs import Status
from asr_daemon.queries.conn import Conn, Row


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Jobs queued and running now, and how long the oldest queued one has waited."""

    queued: int
    running: int
    #: seconds; None when nothing is queued
    oldest_queued_s: float | None

    @property
    def active(self) -> int:
        """Jobs queued or running (the idle watcher holds the daemon up while there are any)."""
        return self.queued + self.running


async def queue_stats(conn: Conn) -> QueueStats:
    """Queued and running counts and the oldest queued job's age in seconds."""
    row: Row | None = await conn.fetchrow(
        """
        SELECT count(*) FILTER (WHERE status = 'queued') AS queued,
               count(*) FILTER (WHERE status = 'running') AS running,
               extract(epoch FROM now() - min(created_at) FILTER (WHERE status = 'queued'))::float8
                   AS oldest_queued_s
        FROM jobs WHERE status IN ('queued', 'running')
        """
    )
    assert row is not None  # an aggregate always returns one row
    return QueueStats(int(row["queued"]), int(row["running"]), row["oldest_queued_s"])


async def count_queued(conn: Conn) -> int:
    """Jobs waiting for a worker (the queue bound, under `submit.lock_queue`)."""
    n: int = await conn.fetchval("SELECT count(*) FROM jobs WHERE status = 'queued'")
    return n


async def jobs_finished_totals(conn: Conn) -> dict[Status, int]:
    """Arrivals in each final state since the database was made (never decrease; for /metrics)."""
    rows: Sequence[Row] = await conn.fetch("SELECT status, n FROM job_totals")
    return {Status(r["status"]): int(r["n"]) for r in rows}
