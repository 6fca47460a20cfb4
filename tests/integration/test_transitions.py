"""The job state machine is executable: every status-changing statement, run against real PostgreSQL
from every state, makes exactly the moves `jobs.MOVES` lists for it, and no other code changes a status."""

from __future__ import annotations

import ast
import itertools
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

import asr_daemon
from asr_daemon import jobs, queries
from asr_daemon.jobs import ErrorCode, Status
from asr_daemon.queries import live as live_sql

W = "w"
Run = Callable[[queries.Conn, uuid.UUID], Awaitable[object]]

#: how the test runs each statement of `jobs.MOVES` on job `j`, as the worker `W` that holds it
STATEMENTS: dict[str, Run] = {
    "claim": lambda c, j: queries.claim(c, W),
    "complete": lambda c, j: queries.complete(c, j, W, {}, "cpu"),
    "fail": lambda c, j: queries.fail(c, j, W, "bad audio", ErrorCode.TRANSCRIPTION_FAILED),
    "retry_or_fail": lambda c, j: queries.retry_or_fail(c, j, W, "boom", 0.0),
    "checkpoint": lambda c, j: queries.checkpoint(c, j, W),
    "mark_cancelled": lambda c, j: queries.mark_cancelled(c, j, W),
    "request_cancel": lambda c, j: queries.request_cancel(c, j),
    "reap": lambda c, j: queries.reap(c, stale_after=1.0, backoff=0.0),
    "retry": lambda c, j: queries.retry(c, j),
    "finish_live": lambda c, j: live_sql.finish(
        c, j, W, duration=1.0, audio_bytes=2, language=None, timings={}, device="cpu"
    ),
    "requeue_live": lambda c, j: live_sql.requeue(c, j, W, duration=1.0, audio_bytes=2),
}
#: the statements of queries/live.py, by their name in jobs.MOVES
LIVE = {"finish_live": "finish", "requeue_live": "requeue"}

#: what else about a job decides where a statement sends it: attempts spent or not, a cancel asked or not
VARIANTS = list(itertools.product((1, 3), (False, True)))


@pytest.fixture
async def conn(database: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a fresh migrated database, with JSON codecs."""
    c = await asyncpg.connect(database)
    for typ in ("json", "jsonb"):
        await c.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    yield c
    await c.close()


async def _place(conn: asyncpg.Connection, status: Status, attempts: int, cancel: bool) -> uuid.UUID:
    """One job in `status`, held by `W` (when running) with a stale heartbeat, runnable now."""
    job = await queries.insert_job(
        conn,
        job_id=uuid.uuid4(),
        model="tiny.en",
        options=jobs.Options().to_json(),
        fingerprint="f",
        priority=0,
        audio_sha256="0" * 64,
        audio_bytes=1,
        filename=None,
        duration_s=1.0,
        max_attempts=3,
        idempotency_key=None,
        webhook_url=None,
    )
    await conn.execute(
        """
        UPDATE jobs SET status = $2, attempts = $3, cancel_requested = $4, run_after = now() - interval '1 minute',
                        worker = CASE WHEN $2 = 'running' THEN $5 END,
                        heartbeat_at = CASE WHEN $2 = 'running' THEN now() - interval '1 hour' END,
                        started_at = CASE WHEN $2 <> 'queued' THEN now() END,
                        finished_at = CASE WHEN $2 IN ('completed', 'failed', 'cancelled') THEN now() END
        WHERE id = $1
        """,
        job.id,
        str(status),
        attempts,
        cancel,
        W,
    )
    return job.id


async def _moves(conn: asyncpg.Connection, run: Run) -> set[jobs.Move]:
    """The moves `run` makes, from each state and variant, each tried alone in a rolled-back transaction."""
    seen: set[jobs.Move] = set()
    for status, (attempts, cancel) in itertools.product(Status, VARIANTS):
        tx = conn.transaction()
        await tx.start()
        try:
            job_id = await _place(conn, status, attempts, cancel)
            await run(conn, job_id)
            after = Status(await conn.fetchval("SELECT status FROM jobs WHERE id = $1", job_id))
        finally:
            await tx.rollback()
        if after is not status:
            seen.add((status, after))
    return seen


async def test_every_statement_makes_exactly_the_moves_of_the_table(conn: asyncpg.Connection) -> None:
    """Each statement of jobs.MOVES, from every state, moves a job exactly as the table says; together
    they allow exactly jobs.TRANSITIONS."""
    assert set(STATEMENTS) == set(jobs.MOVES), "every statement in the table is driven here, and only those"
    made = {name: await _moves(conn, run) for name, run in STATEMENTS.items()}
    assert made == {name: set(moves) for name, moves in jobs.MOVES.items()}
    allowed = {src: {dst for moves in made.values() for a, dst in moves if a is src} for src in Status}
    assert allowed == {src: set(dst) for src, dst in jobs.TRANSITIONS.items()}


#: an UPDATE of `jobs` that sets `status` (in its SET list: before the WHERE)
_WRITES_STATUS = re.compile(
    r"UPDATE\s+jobs\b(?:(?!WHERE).)*?\bSET\b(?:(?!WHERE).)*?\bstatus\s*=", re.IGNORECASE | re.DOTALL
)


def test_no_other_code_changes_a_status() -> None:
    """Only the functions of asr_daemon.queries named in jobs.MOVES write jobs.status."""
    root = Path(asr_daemon.__file__).parent
    writers: set[str] = set()
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef):
                texts = [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
                if any(_WRITES_STATUS.search(t) for t in texts):
                    writers.add(f"{path.relative_to(root).as_posix()}:{node.name}")
    named = {f"queries/{'live' if n in LIVE else _module(n)}.py:{_function(n)}" for n in jobs.MOVES}
    assert writers == named


def _function(name: str) -> str:
    return LIVE.get(name, name)


def _module(name: str) -> str:
    return str(getattr(queries, name).__module__).rsplit(".", 1)[1]
