"""The typed, immutable rows of the job pipeline: `Job` (table `jobs`) and `Segment` (table `segments`).

Built from asyncpg records in one place, `Job.from_row` / `Segment.from_row`, called only by
`asr_daemon.queries`; everything above the SQL (API views, events, webhooks, formats, the worker, the
CLI) reads attributes, never column names.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Protocol, TypedDict

from asr_daemon.jobs.request import Options
from asr_daemon.jobs.states import TERMINAL, ErrorCode, Kind, Status

_CODES = frozenset(c.value for c in ErrorCode)


class Columns(Protocol):
    """A database row by column name (an asyncpg Record; a dict in tests)."""

    def __getitem__(self, column: str, /) -> Any: ...  # a column's value, typed by from_row


class Word(TypedDict):
    """One word of a segment (column `segments.words`, when word timestamps were asked for)."""

    start: float
    end: float
    word: str
    probability: float


def _json(value: object) -> Any:  # decoded JSON: its shape is checked by the caller
    """A json/jsonb column: decoded already by the pool's codec, or text on a connection without it."""
    return json.loads(value) if isinstance(value, str) else value


@dataclass(frozen=True, slots=True)
class Job:
    """One row of `jobs`: a transcription (an upload, a live session, a voice command) and its state."""

    id: uuid.UUID
    status: Status
    model: str
    options: Options
    #: sha256 of (audio, model, options): deduplication
    fingerprint: str
    priority: int
    #: the audio's name in uploads/ (its sha256; `live-<id>` for a live session)
    audio_sha256: str
    audio_bytes: int
    #: the retention (or a purge) deleted the audio; the transcript stays
    audio_deleted_at: datetime | None
    filename: str | None
    duration_s: float
    #: detected (or asked for) language
    language: str | None
    language_probability: float | None
    #: seconds of audio transcribed (end of the last stored segment)
    progress_s: float
    attempts: int
    max_attempts: int
    #: the process holding a running job
    worker: str | None
    heartbeat_at: datetime | None
    run_after: datetime
    cancel_requested: bool
    idempotency_key: str | None
    webhook_url: str | None
    error: str | None
    #: an `ErrorCode`; a code this version does not know (another version, an operator) stays as text
    error_code: ErrorCode | str | None
    device: str | None
    #: model_load_s, transcribe_s, windows, first_segment_s, diarize_s ... (seconds, a count)
    timings: Mapping[str, float]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    #: the API key that created it; None without one
    api_key_id: int | None = None
    kind: Kind = Kind.FILE
    #: the options as stored (`jobs.options`), for the API and the CLI to show as they are
    options_json: Mapping[str, object] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: Columns) -> Job:
        """The job of an asyncpg record (`SELECT *` / `RETURNING *` of `jobs`)."""
        options = _json(row["options"]) or {}
        code = row["error_code"]
        return cls(
            id=row["id"],
            status=Status(row["status"]),
            model=row["model"],
            options=Options.from_json(options),
            fingerprint=row["fingerprint"],
            priority=row["priority"],
            audio_sha256=row["audio_sha256"],
            audio_bytes=row["audio_bytes"],
            audio_deleted_at=row["audio_deleted_at"],
            filename=row["filename"],
            duration_s=row["duration_s"],
            language=row["language"],
            language_probability=row["language_probability"],
            progress_s=row["progress_s"],
            attempts=row["attempts"],
            max_attempts=row["max_attempts"],
            worker=row["worker"],
            heartbeat_at=row["heartbeat_at"],
            run_after=row["run_after"],
            cancel_requested=row["cancel_requested"],
            idempotency_key=row["idempotency_key"],
            webhook_url=row["webhook_url"],
            error=row["error"],
            error_code=ErrorCode(code) if code in _CODES else code,
            device=row["device"],
            timings=_json(row["timings"]) or {},
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            updated_at=row["updated_at"],
            api_key_id=row["api_key_id"],
            kind=Kind(row["kind"]),
            options_json=options,
        )

    @property
    def finished(self) -> bool:
        """True in a final state (completed, failed, cancelled)."""
        return self.status in TERMINAL

    @property
    def diarized(self) -> bool:
        """True when the request asked for speaker diarization."""
        return self.options.diarization is not None

    def columns(self) -> dict[str, object]:
        """Every column by name, in the table's order, options and timings as stored (for `asrctl jobs show`)."""
        out: dict[str, object] = {}
        for f in fields(self):
            if f.name != "options_json":
                out[f.name] = getattr(self, f.name)
        out["options"] = dict(self.options_json)
        out["timings"] = dict(self.timings)
        return out


#: The largest segment number (column `segments.seq` is a PostgreSQL `integer`): ids clients send back
#: (cursors, Last-Event-ID) above it are not ones this server made.
MAX_SEQ = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Segment:
    """One stored segment of a transcript (table `segments`), times in seconds from the file's start."""

    job_id: uuid.UUID
    seq: int
    start_s: float
    end_s: float
    text: str
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    compression_ratio: float | None = None
    temperature: float | None = None
    tokens: tuple[int, ...] = ()
    words: tuple[Word, ...] = ()

    @classmethod
    def from_row(cls, row: Columns) -> Segment:
        """The segment of an asyncpg record (`SELECT *` of `segments`)."""
        return cls(
            job_id=row["job_id"],
            seq=row["seq"],
            start_s=row["start_s"],
            end_s=row["end_s"],
            text=row["text"],
            avg_logprob=row["avg_logprob"],
            no_speech_prob=row["no_speech_prob"],
            compression_ratio=row["compression_ratio"],
            temperature=row["temperature"],
            tokens=tuple(row["tokens"] or ()),
            words=tuple(_json(row["words"]) or ()),
        )
