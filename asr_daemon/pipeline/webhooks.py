"""Webhooks: POST a finished job's summary to the URL its submitter gave, signed and retried.

Runs as its own task, so a slow or dead receiver never holds up the worker. The body is signed with
HMAC-SHA256 over `<timestamp>.<body>` using `ASR_WEBHOOK_SECRET`; receivers check
`X-Asr-Signature: t=<timestamp>,v1=<hex>`. Every attempt is recorded on the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Coroutine, Sequence
from datetime import datetime
from typing import NamedTuple

import asyncpg
import stamina

from asr_daemon import db, formats, jobs, queries
from asr_daemon.config import Settings
from asr_daemon.diarization import events as diarization_events

log = logging.getLogger(__name__)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The `X-Asr-Signature` header value for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, body: bytes, tolerance: float = 300) -> bool:
    """Check a signature header as a receiver would (used by the tests and documented for users)."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        ts = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - ts) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, ts, body), header)


def summary(job: jobs.Job) -> dict[str, object]:
    """The webhook payload: the job's outcome without its transcript (fetch it from the links)."""
    jid = str(job.id)
    return {
        "type": f"job.{job.status}",
        "id": jid,
        "status": job.status,
        "model": job.model,
        "duration_s": formats.seconds(job.duration_s) if job.duration_s is not None else None,
        "language": job.language,
        "error": job.error,
        "finished_at": formats.timestamp(job.finished_at) if job.finished_at else None,
        "links": {"self": f"/v1/jobs/{jid}", "transcript": f"/v1/jobs/{jid}/transcript"},
    }


async def deliver(settings: Settings, pool: asyncpg.Pool, job_id: uuid.UUID) -> bool:
    """Deliver the webhook of `job_id` with exponential backoff; True once a 2xx came back."""
    job = await queries.get_job(pool, job_id)
    if job is None or not job.webhook_url:
        return False
    earlier = await deliveries(pool, job_id)
    if any(d.status_code is not None and 200 <= d.status_code < 300 for d in earlier):
        return True
    import httpx  # here, not at the top: it costs ~0.1 s of every cold start (docs/benchmarks.md)

    body = json.dumps({**summary(job), **await diarization_events.webhook_fields(pool, job)}).encode()
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
    left = settings.webhook_attempts - len(earlier)
    if left <= 0:
        return False
    async with httpx.AsyncClient(timeout=settings.webhook_timeout, follow_redirects=False) as client:
        try:
            # 0.5 s before the second attempt of all (earlier runs' included), doubling, at most 300 s
            async for retry in stamina.retry_context(
                on=_NotDelivered,
                attempts=left,
                timeout=None,
                wait_initial=0.5 * 2 ** len(earlier),
                wait_max=300.0,
                wait_jitter=0,
            ):
                with retry:
                    attempt = len(earlier) + retry.num
                    headers = {"Content-Type": "application/json", "User-Agent": "asr-server"}
                    if secret:  # always, for jobs accepted since intake refuses a webhook_url without one
                        headers["X-Asr-Signature"] = sign(secret, int(time.time()), body)
                    code: int | None = None
                    error: str | None = None
                    try:
                        resp = await client.post(job.webhook_url, content=body, headers=headers)
                        code = resp.status_code
                    except httpx.HTTPError as exc:
                        error = type(exc).__name__
                    try:
                        await record_delivery(pool, job_id, attempt, code, error)
                    except asyncpg.ForeignKeyViolationError:  # the job was deleted meanwhile (POST .../delete)
                        log.info("webhook_job_deleted", extra={"job_id": str(job_id)})
                        return False
                    if code is not None and 200 <= code < 300:
                        log.info("webhook_delivered", extra={"job_id": str(job_id), "attempt": attempt})
                        return True
                    log.warning(
                        "webhook_failed",
                        extra={"job_id": str(job_id), "attempt": attempt, "status": code, "error": error},
                    )
                    raise _NotDelivered
        except _NotDelivered:
            pass
    return False


class _NotDelivered(Exception):
    """An attempt got no 2xx: retried while attempts are left."""


class Outbox:
    """What leaves this process when a job ends: its webhook, delivered by a task of its own (a slow or
    dead receiver never holds up the worker), and, debug only (ASR_LOG_TRANSCRIPTS), its text in the log."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.pool = pool
        self._tasks: set[asyncio.Task[object]] = set()

    def ended(self, job_id: uuid.UUID, webhook_url: str | None, *, completed: bool = False) -> None:
        """A job finished (completed, or failed): tell its webhook, if any; log its text if asked to."""
        if webhook_url:
            self.send(job_id)
        if completed and self.settings.log_transcripts:
            self._spawn(self._log_transcript(job_id))

    def send(self, job_id: uuid.UUID) -> None:
        """Deliver the webhook of `job_id` in the background (it checks that the job has one)."""
        self._spawn(deliver(self.settings, self.pool, job_id))

    def _spawn(self, coro: Coroutine[object, object, object]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _log_transcript(self, job_id: uuid.UUID) -> None:
        """ASR_LOG_TRANSCRIPTS (debug only): a finished job's text at its own event, `job_transcript`."""
        try:
            text = formats.text_of(await queries.segments(self.pool, job_id))
        except db.ERRORS as exc:
            log.warning("job_transcript_unavailable", extra={"job_id": str(job_id), "error": type(exc).__name__})
            return
        log.info("job_transcript", extra={"job_id": str(job_id), "text": text})

    async def redeliver(self) -> None:
        """Webhooks interrupted by a stop or crash are delivered after the next start."""
        try:
            pending = await undelivered(self.pool, self.settings.webhook_attempts)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("webhook_scan_failed", extra={"error": type(exc).__name__})
            return
        for job_id in pending:
            self.send(job_id)

    async def close(self, grace: float = 5.0) -> None:
        """Let deliveries under way finish for up to `grace` seconds each, then cancel them (the next
        start redelivers them)."""
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, grace)


# --- the webhook_deliveries table ---------------------------------------------------------------


async def record_delivery(
    conn: queries.Conn, job_id: uuid.UUID, attempt: int, status_code: int | None, error: str | None
) -> None:
    """Log one webhook delivery attempt on the job."""
    await conn.execute(
        "INSERT INTO webhook_deliveries (job_id, attempt, status_code, error) VALUES ($1, $2, $3, $4)",
        job_id,
        attempt,
        status_code,
        error,
    )


class Delivery(NamedTuple):
    """One attempt to deliver a job's webhook, and what the receiver answered."""

    attempt: int
    status_code: int | None
    error: str | None
    delivered_at: datetime


async def deliveries(conn: queries.Conn, job_id: uuid.UUID) -> list[Delivery]:
    """Webhook delivery attempts of a job, oldest first."""
    rows: list[queries.Row] = await conn.fetch(
        "SELECT attempt, status_code, error, delivered_at FROM webhook_deliveries WHERE job_id = $1 ORDER BY id",
        job_id,
    )
    return [Delivery(r["attempt"], r["status_code"], r["error"], r["delivered_at"]) for r in rows]


async def undelivered(conn: queries.Conn, max_attempts: int) -> list[uuid.UUID]:
    """Finished jobs whose webhook never got a 2xx and has attempts left (redelivered after a restart)."""
    rows: Sequence[queries.Row] = await conn.fetch(
        """
        SELECT j.id FROM jobs j
        WHERE j.webhook_url IS NOT NULL AND j.status IN ('completed', 'failed')
          AND j.finished_at > now() - interval '1 day'
          AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d
                          WHERE d.job_id = j.id AND d.status_code BETWEEN 200 AND 299)
          AND (SELECT count(*) FROM webhook_deliveries d WHERE d.job_id = j.id) < $1
        """,
        max_attempts,
    )
    return [r["id"] for r in rows]
