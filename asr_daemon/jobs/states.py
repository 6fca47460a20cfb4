"""The job state machine: states, final states, error codes, kinds, and the moves between states.

Pure domain: imports nothing of the project, does no I/O. Every move is made by one guarded SQL
statement of `asr_daemon.queries`; `MOVES` names each such statement and the moves it may make, and
tests/integration/test_transitions.py drives every statement from every state against PostgreSQL and
checks that the moves the database makes are exactly these.
"""

from __future__ import annotations

import enum


class Status(enum.StrEnum):
    """Lifecycle of a job (column `jobs.status`)."""

    #: accepted, waiting for a worker
    QUEUED = "queued"
    #: claimed by a worker (or a live session) that heartbeats
    RUNNING = "running"
    #: every segment stored
    COMPLETED = "completed"
    #: gave up: bad audio, or attempts exhausted
    FAILED = "failed"
    #: cancelled by a client before it completed
    CANCELLED = "cancelled"


#: The final states: a job in one of these never runs again unless an operator retries it.
TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})
#: States a job may still run from (it holds its audio, counts in the queue bound, keeps the daemon up).
ACTIVE = frozenset({Status.QUEUED, Status.RUNNING})


class ErrorCode(enum.StrEnum):
    """Why a job failed (column `jobs.error_code`; `error.code` in the API, SSE and webhooks)."""

    #: the uploaded audio was deleted before the job ran
    AUDIO_MISSING = "audio_missing"
    #: the job's model is not on this host
    MODEL_NOT_FOUND = "model_not_found"
    #: the decoder refused the audio (bad audio: the client's fault)
    TRANSCRIPTION_FAILED = "transcription_failed"
    #: diarization was asked for and its engine cannot run here
    DIARIZATION_UNAVAILABLE = "diarization_unavailable"
    #: the worker hit an unexpected error on every attempt
    INTERNAL_ERROR = "internal_error"
    #: the worker stopped heartbeating on every attempt (the reaper gave up)
    WORKER_LOST = "worker_lost"


class Kind(enum.StrEnum):
    """The front door a job came through (column `jobs.kind`)."""

    #: an upload to /v1/audio/* or /v1/jobs
    FILE = "file"
    #: a live WebSocket session (/v1/realtime)
    LIVE = "live"
    #: a Home Assistant voice command over Wyoming
    WYOMING = "wyoming"


Move = tuple[Status, Status]

#: Every statement of `asr_daemon.queries` that changes a job's status, and the moves it may make.
#: Nothing else changes a status (inserts start a job `queued`, or `running` for a live session).
MOVES: dict[str, frozenset[Move]] = {
    # the worker takes the next job
    "claim": frozenset({(Status.QUEUED, Status.RUNNING)}),
    # the worker stored every segment
    "complete": frozenset({(Status.RUNNING, Status.COMPLETED)}),
    # a failure retrying cannot fix (bad audio, model or engine missing)
    "fail": frozenset({(Status.RUNNING, Status.FAILED)}),
    # an unexpected error: back to the queue after a backoff, failed once attempts are spent (and, as for
    # checkpoint and reap, cancelled when a cancel was requested meanwhile: a cancelled job never runs again)
    "retry_or_fail": frozenset(
        {(Status.RUNNING, Status.QUEUED), (Status.RUNNING, Status.FAILED), (Status.RUNNING, Status.CANCELLED)}
    ),
    # drain on shutdown, or a CUDA failure moving to the CPU: back to the queue, no attempt spent
    "checkpoint": frozenset({(Status.RUNNING, Status.QUEUED), (Status.RUNNING, Status.CANCELLED)}),
    # the worker stopped a job whose cancel was requested
    "mark_cancelled": frozenset({(Status.RUNNING, Status.CANCELLED)}),
    # DELETE /v1/jobs/{id}, `asrctl jobs cancel`: a queued job at once (a running one is only flagged)
    "request_cancel": frozenset({(Status.QUEUED, Status.CANCELLED)}),
    # stale heartbeat: back to the queue, failed once attempts are spent
    "reap": frozenset(
        {(Status.RUNNING, Status.QUEUED), (Status.RUNNING, Status.FAILED), (Status.RUNNING, Status.CANCELLED)}
    ),
    # `asrctl jobs retry`
    "retry": frozenset({(Status.FAILED, Status.QUEUED), (Status.CANCELLED, Status.QUEUED)}),
    # a live session closed: completed, or cancelled when a client cancelled it meanwhile
    "finish_live": frozenset({(Status.RUNNING, Status.COMPLETED), (Status.RUNNING, Status.CANCELLED)}),
    # a live session closed before every utterance was transcribed: a worker transcribes the rest
    "requeue_live": frozenset({(Status.RUNNING, Status.QUEUED), (Status.RUNNING, Status.CANCELLED)}),
}

#: Allowed transitions, from the statements above; anything else is refused by their guards.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    src: frozenset(dst for moves in MOVES.values() for a, dst in moves if a is src) for src in Status
}

#: States `asrctl jobs retry` puts back in the queue.
RETRYABLE = frozenset(src for src, _ in MOVES["retry"])


def can_move(src: Status, dst: Status) -> bool:
    """True when a job may go from `src` to `dst`."""
    return dst in TRANSITIONS[src]
