"""Every SQL statement on the job pipeline's tables (`jobs`, `segments`), one function each, split by noun:

| module | statements |
|---|---|
| `submit` | a new job's row, idempotency keys, deduplication, the queue lock |
| `pipeline` | the worker's moves: claim, heartbeat, complete, fail, retry, checkpoint, cancel; the reaper |
| `segments` | store and read segments; where an interrupted job resumes |
| `archive` | look up, list, cancel, retry and delete jobs (the API and `asrctl jobs`) |
| `audio` | which audio files the job table still needs (retention, orphan sweep, purge) |
| `counts` | queued/running counts (metrics, status, systemd, idle watcher); final-state totals |
| `live` | a live session's job (`queries.live.create_job`, ...; not re-exported here) |
| `search` | full-text search over segments, its cursor and match offsets (`queries.search.search`) |

Functions return typed rows (`jobs.Job`, `jobs.Segment`, small NamedTuples), never asyncpg records.
Tables of their own live with their owners: `webhook_deliveries` in webhooks.py, `diarizations` and
`diarization_turns` in diarization/store.py (their writes check the job's owner), `api_keys` in keys.py.
`from asr_daemon import queries` then `queries.claim(...)`: the names below.
"""

from asr_daemon.queries.archive import (
    Cancelled,
    Purged,
    delete_finished,
    delete_finished_before,
    forget_audio_before,
    get_job,
    job_status,
    list_jobs,
    request_cancel,
    resolve_id,
    retry,
)
from asr_daemon.queries.audio import (
    AUDIO_LOCK_SPACE,
    audio_expired,
    audio_in_use,
    audio_needed,
    audio_referenced,
    lock_audio,
    mark_audio_deleted,
)
from asr_daemon.queries.conn import Conn, Row, Tx
from asr_daemon.queries.counts import QueueStats, count_queued, jobs_finished_totals, queue_stats
from asr_daemon.queries.pipeline import (
    AGING,
    Reaped,
    checkpoint,
    claim,
    complete,
    fail,
    heartbeat,
    mark_cancelled,
    reap,
    retry_or_fail,
    set_language,
)
from asr_daemon.queries.segments import ResumePoint, insert_segment, resume_point, segment_count, segments
from asr_daemon.queries.submit import (
    QUEUE_LOCK,
    find_same,
    get_by_idempotency_key,
    insert_job,
    lock_fingerprint,
    lock_queue,
)

__all__ = [
    "AGING",
    "AUDIO_LOCK_SPACE",
    "QUEUE_LOCK",
    "Cancelled",
    "Conn",
    "Purged",
    "QueueStats",
    "Reaped",
    "ResumePoint",
    "Row",
    "Tx",
    "audio_expired",
    "audio_in_use",
    "audio_needed",
    "audio_referenced",
    "checkpoint",
    "claim",
    "complete",
    "count_queued",
    "delete_finished",
    "delete_finished_before",
    "fail",
    "find_same",
    "forget_audio_before",
    "get_by_idempotency_key",
    "get_job",
    "heartbeat",
    "insert_job",
    "insert_segment",
    "job_status",
    "jobs_finished_totals",
    "list_jobs",
    "lock_audio",
    "lock_fingerprint",
    "lock_queue",
    "mark_audio_deleted",
    "mark_cancelled",
    "queue_stats",
    "reap",
    "request_cancel",
    "resolve_id",
    "resume_point",
    "retry",
    "retry_or_fail",
    "segment_count",
    "segments",
    "set_language",
]
