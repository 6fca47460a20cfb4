"""`asrctl jobs`: list, show, retry, cancel and purge jobs, directly in PostgreSQL.

Works whether the daemon runs or not (it never talks to it). Job ids may be shortened to a unique
prefix of at least 4 hex digits, as printed by `jobs ls`.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeAlias, TypeVar

import asyncpg
import typer
from redis.exceptions import RedisError
from rich.console import Console, RenderableType
from rich.table import Table

from asr_daemon import jobs as jobsmod
from asr_daemon import queries
from asr_daemon.cli import common
from asr_daemon.diarization.events import SpeakerSummary
from asr_daemon.diarization.events import summary as diarization_summary
from asr_daemon.formats import round_times
from asr_daemon.pipeline import queue

T = TypeVar("T")
Conn: TypeAlias = "asyncpg.Connection[Any]"

app = typer.Typer(help="Jobs in the database: ls, show, retry, cancel, purge.", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
IdArg = Annotated[str, typer.Argument(help="Job id, or a unique prefix of it (4+ hex digits).")]
COLORS = {
    jobsmod.Status.QUEUED: "cyan",
    jobsmod.Status.RUNNING: "yellow",
    jobsmod.Status.COMPLETED: "green",
    jobsmod.Status.FAILED: "bold red",
    jobsmod.Status.CANCELLED: "dim",
}
#: the columns `asrctl jobs ls --json` shows of each job
LS_COLUMNS = (
    "id", "status", "model", "filename", "duration_s", "progress_s", "attempts", "max_attempts", "error_code",
    "created_at", "started_at", "finished_at",
)  # fmt: skip
SHA256 = re.compile(r"^[0-9a-f]{64}$")
AGE = re.compile(r"^(\d+)\s*([smhdw])$")
AGE_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


with_db = common.with_db


def parse_age(text: str) -> timedelta:
    """'30d' -> 30 days; units s, m, h, d, w. Raises ValueError on anything else."""
    m = AGE.match(text.strip().lower())
    if not m or int(m.group(1)) == 0:
        raise ValueError(f"{text!r} is not an age like 30d, 12h, 2w")
    try:
        return timedelta(**{AGE_UNITS[m.group(2)]: int(m.group(1))})
    except OverflowError:
        raise ValueError(f"{text!r} is longer ago than dates go") from None


async def wake(redis_url: str, job_id: uuid.UUID) -> bool:
    """Ring the worker's doorbell and tell the job's event followers it changed (the daemon's own
    `queue` keys). False when Redis is unreachable: the worker and the event streams then notice
    at their next database poll; also when the URL is unusable (Redis is optional: the change stands)."""
    try:
        client = queue.connect(redis_url)
    except ValueError:  # redis-py's answer to a URL it cannot read
        return False
    try:
        if not await queue.ring(client):
            return False
        await client.publish(queue.CHANNEL_PREFIX + str(job_id), "1")
        return True
    except (RedisError, OSError):
        return False
    finally:
        await client.aclose()


def plain(record: Mapping[str, object]) -> dict[str, object]:
    """A job's columns as JSON-able values (ids and times as strings)."""
    out: dict[str, object] = {}
    for key, value in record.items():
        if isinstance(value, uuid.UUID):
            value = str(value)
        elif isinstance(value, datetime):
            value = value.isoformat()
        out[key] = value
    return out


async def _resolve(conn: Conn, text: str) -> uuid.UUID:
    try:
        job_id = await queries.resolve_id(conn, text)
    except ValueError as exc:  # not an id, or a prefix of several: a bad argument
        common.fail(str(exc), code=2)
    if job_id is None:
        common.fail(f"no job {text!r}")
    return job_id


@app.command("ls")
def ls_cmd(
    status: Annotated[str | None, typer.Option("--status", help="Only jobs in this state.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10000, help="At most this many.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """List jobs, newest first."""
    if status is not None and status not in {s.value for s in jobsmod.Status}:
        common.fail(f"--status must be one of {', '.join(s.value for s in jobsmod.Status)}", code=2)
    rows = with_db(lambda conn: queries.list_jobs(conn, status=jobsmod.Status(status) if status else None, limit=limit))
    if as_json:
        common.print_json([plain({k: v for k, v in r.columns().items() if k in LS_COLUMNS}) for r in rows])
        return
    now = datetime.now(UTC)
    table = Table(box=None)
    for col in ("id", "status", "model", "file", "audio", "progress", "tries", "age", "error"):
        table.add_column(col)
    for r in rows:
        done = r.progress_s / r.duration_s if r.duration_s else 0.0
        table.add_row(
            str(r.id)[:8],
            f"[{COLORS.get(r.status, '')}]{r.status}[/]",
            r.model,
            (r.filename or "-")[:30],
            f"{r.duration_s:.0f}s",
            f"{min(done, 1.0):.0%}",
            f"{r.attempts}/{r.max_attempts}",
            common.human_age((now - r.created_at).total_seconds()),
            r.error_code or "",
        )
    Console().print(table if rows else "no jobs")


@app.command("show")
def show_cmd(job: IdArg, as_json: JsonOpt = False) -> None:
    """Every field of one job and how many segments it has stored."""

    async def go(conn: Conn) -> tuple[jobsmod.Job | None, int, SpeakerSummary | None]:
        found = await queries.get_job(conn, await _resolve(conn, job))
        if found is None:
            return None, 0, None
        return found, await queries.segment_count(conn, found.id), await diarization_summary(conn, found)

    row, n_segments, speakers = with_db(go)
    if row is None:  # deleted between resolve and read
        common.fail(f"no job {job!r}")
    data = plain({**row.columns(), "segments": n_segments})
    if speakers is not None:  # issue 19: who spoke, and for how long
        data["speakers"] = dataclasses.asdict(speakers) if as_json else _speakers_line(speakers)
    if as_json:
        common.print_json(data)
        return
    Console().print(details(round_times(data)))


def details(data: Mapping[str, object]) -> Table:
    """One job as a two-column table; `options` and `timings` as tables of their own (never a repr)."""
    table = Table(box=None, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in data.items():
        table.add_row(key, _cell(value))
    return table


def _cell(value: object) -> RenderableType:
    """A value as a person reads it: `-` for nothing, nested dicts as tables, lists comma-separated."""
    if value is None or value == {} or value == []:
        return "-"
    if isinstance(value, dict):
        inner = Table(box=None, show_header=False, pad_edge=False)
        inner.add_column(style="dim")
        inner.add_column()
        for key, item in value.items():
            inner.add_row(str(key), _cell(item))
        return inner
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _speakers_line(s: SpeakerSummary) -> str:
    if s.status == "stopped":
        return f"stopped after {s.progress_s:.0f} s"
    if s.status != "done":
        return f"diarizing ({s.progress_s:.0f} s done)"
    people = [p.label + (f" ({p.name})" if p.name != p.label else "") + f" {p.seconds:.1f} s" for p in s.speakers]
    return f"{s.num_speakers}: " + ", ".join(people) if people else "none found"


@app.command("retry")
def retry_cmd(job: IdArg) -> None:
    """Put a failed or cancelled job back in the queue with a fresh set of attempts."""
    s = common.settings()

    async def go(conn: Conn) -> tuple[uuid.UUID, bool, jobsmod.Job | None]:
        job_id = await _resolve(conn, job)
        row = await queries.get_job(conn, job_id)
        audio_gone = row is not None and not (s.uploads_dir / row.audio_sha256).is_file()
        if audio_gone and row is not None and row.audio_deleted_at is None and row.status in jobsmod.RETRYABLE:
            common.fail(f"job {job_id}: its audio file is missing from {s.uploads_dir}; cannot retry")
        return job_id, await queries.retry(conn, job_id), row

    job_id, done, row = with_db(go)
    if not done:
        if row is not None and row.audio_deleted_at is not None:
            common.fail(f"job {job_id}: its audio was deleted by retention; cannot retry")
        state = row.status if row is not None else "gone"
        common.fail(f"job {job_id} is {state}: only failed or cancelled jobs can be retried")
    rang = common.run(wake(s.redis_url.get_secret_value(), job_id))
    note = "" if rang else " (Redis unreachable: the worker finds it at its next poll)"
    typer.echo(f"job {job_id} queued again{note}")


@app.command("cancel")
def cancel_cmd(job: IdArg) -> None:
    """Cancel a queued job at once, or ask a running one to stop between segments."""

    async def go(conn: Conn) -> tuple[uuid.UUID, queries.Cancelled | None]:
        job_id = await _resolve(conn, job)
        return job_id, await queries.request_cancel(conn, job_id)

    job_id, outcome = with_db(go)
    if outcome is None or not outcome.changed:
        common.fail(f"job {job_id} is {outcome.status if outcome else 'gone'}: nothing to cancel")
    rang = common.run(wake(common.settings().redis_url.get_secret_value(), job_id))
    note = "" if rang else " (Redis unreachable: the worker notices at its next poll)"
    if outcome.status == jobsmod.Status.CANCELLED:
        typer.echo(f"job {job_id} cancelled{note}")
    else:
        typer.echo(f"job {job_id} is running: cancellation requested (it stops between segments){note}")


@app.command("purge")
def purge_cmd(
    older_than: Annotated[str, typer.Option("--older-than", help="Finished longer ago than this: 30d, 12h.")],
    audio_only: Annotated[
        bool, typer.Option("--audio-only", help="Delete only the audio files; keep jobs and transcripts.")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would go; change nothing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete finished jobs (or only their audio) older than an age; queued and running jobs stay."""
    try:
        age = parse_age(older_than)
        cutoff = datetime.now(UTC) - age
    except ValueError as exc:
        common.fail(f"--older-than: {exc}", code=2)
    except OverflowError:
        common.fail(f"--older-than: {older_than!r} is longer ago than dates go", code=2)
    s = common.settings()

    async def go(conn: Conn) -> tuple[int, list[str]]:
        async with conn.transaction():
            rows = await (queries.forget_audio_before if audio_only else queries.delete_finished_before)(conn, cutoff)
            hashes = sorted({r.audio_sha256 for r in rows})
            kept = await queries.audio_referenced(conn, hashes)
            orphans = [h for h in hashes if h not in kept and SHA256.match(h)]
            if dry_run:
                raise _Rollback(len(rows), orphans)
        return len(rows), orphans

    try:
        count, orphans = with_db(go)
    except _Rollback as rb:
        count, orphans = rb.count, rb.orphans

    async def remove(conn: Conn) -> tuple[int, int]:
        """Delete each orphan's file under its audio lock, unless a job was given it since (an upload in
        the daemon reuses a stored file by its hash, holding the same lock until its row is committed)."""
        freed = removed = 0
        for sha in orphans:
            path = s.uploads_dir / sha
            async with conn.transaction():
                if not dry_run:
                    await queries.lock_audio(conn, sha)
                    if await queries.audio_referenced(conn, [sha]):
                        continue
                try:
                    size = path.stat().st_size
                    if not dry_run:
                        path.unlink()
                except FileNotFoundError:
                    continue
            freed += size
            removed += 1
        return freed, removed

    freed, removed = with_db(remove) if orphans else (0, 0)
    if as_json:
        common.print_json(
            {
                "dry_run": dry_run,
                "jobs": count,
                "audio_only": audio_only,
                "files_removed": removed,
                "bytes_freed": freed,
            }
        )
        return
    what = "jobs whose audio was forgotten" if audio_only else "jobs deleted"
    prefix = "would be: " if dry_run else ""
    typer.echo(f"{prefix}{count} {what}, {removed} audio file(s) removed ({common.human_size(freed)})")


class _Rollback(Exception):
    """Ends a dry-run transaction, carrying what it would have done."""

    def __init__(self, count: int, orphans: list[str]) -> None:
        super().__init__("dry run")
        self.count, self.orphans = count, orphans
