"""Typed job and segment rows for in-process tests, built the way `asr_daemon.queries` builds them
(`Job.from_row` / `Segment.from_row`) from a full set of columns, so a test names only what it needs."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from asr_daemon import jobs

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def job(**columns: Any) -> jobs.Job:  # column values of any type, as a record holds them
    """A job row: every column of `jobs` at its default, with `columns` over them."""
    row: dict[str, Any] = {
        "id": uuid.UUID(int=1),
        "status": "completed",
        "model": "tiny.en",
        "options": jobs.Options().to_json(),
        "fingerprint": "f" * 64,
        "priority": 0,
        "audio_sha256": "0" * 64,
        "audio_bytes": 1,
        "audio_deleted_at": None,
        "filename": None,
        "duration_s": 1.0,
        "language": None,
        "language_probability": None,
        "progress_s": 0.0,
        "attempts": 1,
        "max_attempts": 3,
        "worker": None,
        "heartbeat_at": None,
        "run_after": T0,
        "cancel_requested": False,
        "idempotency_key": None,
        "webhook_url": None,
        "error": None,
        "error_code": None,
        "device": None,
        "timings": {},
        "created_at": T0,
        "started_at": None,
        "finished_at": None,
        "updated_at": T0,
        "api_key_id": None,
        "kind": "file",
        **columns,
    }
    return jobs.Job.from_row(row)


def segment(**columns: Any) -> jobs.Segment:  # as above
    """A segment row: every column of `segments` at a plain default, with `columns` over them."""
    row: dict[str, Any] = {
        "job_id": uuid.UUID(int=1),
        "seq": 0,
        "start_s": 0.0,
        "end_s": 1.0,
        "text": "",
        "avg_logprob": None,
        "no_speech_prob": None,
        "compression_ratio": None,
        "temperature": None,
        "tokens": None,
        "words": None,
        **columns,
    }
    return jobs.Segment.from_row(row)
