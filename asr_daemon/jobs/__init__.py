"""What a job is, in one place: its state machine (`states`), the typed rows (`model`), and what a
request may ask of it (`request`, its speaker options in `speakers`). Pure: imports nothing of the
project outside this package, does no I/O; the SQL that moves jobs lives in `asr_daemon.queries`.

`from asr_daemon import jobs` then `jobs.Status`, `jobs.Job`, `jobs.Options`, ... : the names below.
"""

from asr_daemon.jobs.model import MAX_SEQ, Job, Segment, Word
from asr_daemon.jobs.request import (
    DIARIZATION_FIELDS,
    LANGUAGES,
    MAX_PROMPT_CHARS,
    Invalid,
    Options,
    Request,
    ResponseFormat,
    Task,
    VadParameters,
    parse_request,
)
from asr_daemon.jobs.speakers import DiarizationOptions, KnownSpeaker
from asr_daemon.jobs.states import (
    ACTIVE,
    MOVES,
    RETRYABLE,
    TERMINAL,
    TRANSITIONS,
    ErrorCode,
    Kind,
    Move,
    Status,
    can_move,
)

__all__ = [
    "ACTIVE",
    "DIARIZATION_FIELDS",
    "LANGUAGES",
    "MAX_PROMPT_CHARS",
    "MAX_SEQ",
    "MOVES",
    "RETRYABLE",
    "TERMINAL",
    "TRANSITIONS",
    "DiarizationOptions",
    "ErrorCode",
    "Invalid",
    "Job",
    "Kind",
    "KnownSpeaker",
    "Move",
    "Options",
    "Request",
    "ResponseFormat",
    "Segment",
    "Status",
    "Task",
    "VadParameters",
    "Word",
    "can_move",
    "parse_request",
]
