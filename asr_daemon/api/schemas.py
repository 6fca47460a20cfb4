"""Wire shapes: msgspec Structs for response bodies (the OpenAPI schema is generated from them), and
the OpenAPI description of the multipart forms (parsed by hand, so described by hand)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
)

from asr_daemon import formats, jobs
from asr_daemon.diarization.events import SpeakerSummary


class JobAudio(msgspec.Struct):
    """The uploaded audio: stored under its SHA-256 until the retention deletes it."""

    sha256: str
    bytes: int
    duration_s: float
    deleted: bool


class JobProgress(msgspec.Struct):
    """Seconds of audio transcribed so far (segments stored), of the whole."""

    processed_s: float
    duration_s: float
    fraction: float | None


class JobError(msgspec.Struct):
    """Why a job failed, and a stable code (`transcription_failed`, `internal_error`, ...)."""

    message: str
    code: str | None


class JobLinks(msgspec.Struct):
    """Where to look next."""

    self_: str = msgspec.field(name="self")
    transcript: str
    events: str


class WebhookDelivery(msgspec.Struct):
    """One POST of the job's summary to its webhook_url, and what the receiver answered."""

    attempt: int
    status_code: int | None
    error: str | None
    at: datetime


class Job(msgspec.Struct, omit_defaults=True):
    """A transcription job: its status, progress, options, timings, attempts and error."""

    id: str
    object: str
    status: jobs.Status
    #: the front door it came through: `file` (an upload), `live` (a WebSocket session), `wyoming`
    kind: jobs.Kind
    model: str
    task: jobs.Task
    #: as stored (free-form JSON: keys of other versions shown as they are)
    options: dict[str, Any]
    priority: int
    filename: str | None
    audio: JobAudio
    language: str | None
    language_probability: float | None
    progress: JobProgress
    attempts: int
    max_attempts: int
    error: JobError | None
    device: str | None
    timings: dict[str, float]
    webhook_url: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    links: JobLinks
    #: only on GET /v1/jobs/{id} of a job with a webhook_url
    webhook_deliveries: list[WebhookDelivery] | None = None
    #: only on GET /v1/jobs/{id} of a diarized job: status, engine, num_speakers, speakers (label, name, seconds)
    speakers: SpeakerSummary | None = None


class SpeakerNames(msgspec.Struct):
    """A diarized job's speakers after a rename: each label with its display name (the label when unnamed)."""

    id: str
    speakers: dict[str, str]


class JobList(msgspec.Struct):
    """A page of jobs, newest first; `next_cursor` (when not null) fetches the next page."""

    object: str
    data: list[Job]
    next_cursor: str | None


def job_view(job: jobs.Job, *, base: str = "") -> Job:
    """A job as the API shows it."""
    jid = str(job.id)
    duration = formats.seconds(job.duration_s or 0.0)
    return Job(
        id=jid,
        object="transcription.job",
        status=job.status,
        kind=job.kind,
        model=job.model,
        task=job.options.task,
        options=dict(job.options_json),
        priority=job.priority,
        filename=job.filename,
        audio=JobAudio(
            sha256=job.audio_sha256,
            bytes=job.audio_bytes,
            duration_s=duration,
            deleted=job.audio_deleted_at is not None,
        ),
        language=job.language,
        language_probability=job.language_probability,
        progress=JobProgress(
            processed_s=round(job.progress_s, 3),
            duration_s=duration,
            fraction=round(min(1.0, job.progress_s / duration), 4) if duration else None,
        ),
        attempts=job.attempts,
        max_attempts=job.max_attempts,
        error=JobError(message=job.error, code=job.error_code) if job.error else None,
        device=job.device,
        timings=formats.round_times(job.timings),
        webhook_url=job.webhook_url,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        links=JobLinks(
            self_=f"{base}/v1/jobs/{jid}",
            transcript=f"{base}/v1/jobs/{jid}/transcript",
            events=f"{base}/v1/jobs/{jid}/events",
        ),
    )


class Model(msgspec.Struct):
    """A Whisper model in OpenAI's shape, with this server's state beside it."""

    id: str
    object: str
    created: int
    owned_by: str
    #: the Hugging Face repository `asrctl models pull` fetches it from (null: a local model)
    repository: str | None
    local: bool
    size_bytes: int
    default: bool
    loading: bool
    loaded: bool
    device: str | None
    compute_type: str | None
    in_use: int
    #: heap (CPU: malloc's bytes in use) or VRAM (CUDA) growth measured while it loaded
    memory_bytes: int | None
    #: what the memory budget counts for it beside the others
    memory_budget_bytes: int | None


class ModelList(msgspec.Struct):
    """The models this host can serve (with `?all=true`: the whole catalogue, `local` marking each)."""

    object: str
    data: list[Model]


def _form_schema(with_job_fields: bool) -> Schema:
    s, n, b = OpenAPIType.STRING, OpenAPIType.NUMBER, OpenAPIType.BOOLEAN
    props: dict[str, Schema] = {
        "file": Schema(type=s, format=OpenAPIFormat.BINARY, description="The audio file (any format FFmpeg decodes)."),
        "model": Schema(type=s, description="Model name (see GET /v1/models); `whisper-1` means the default."),
        "language": Schema(type=s, enum=sorted(jobs.LANGUAGES), description="ISO-639-1 code of the speech."),
        "prompt": Schema(type=s, max_length=jobs.MAX_PROMPT_CHARS, description="Text to guide the style."),
        "response_format": Schema(type=s, enum=[f.value for f in jobs.ResponseFormat]),
        "temperature": Schema(type=n, minimum=0, maximum=1),
        "timestamp_granularities[]": Schema(type=OpenAPIType.ARRAY, items=Schema(type=s, enum=["segment", "word"])),
        "vad_filter": Schema(type=b, description="Skip silence with Silero VAD."),
        "chunking_strategy": Schema(
            type=s,
            description="OpenAI's: `auto` (30 s windows), or the fields `chunking_strategy[type]=server_vad`, "
            "`[threshold]`, `[silence_duration_ms]`, `[prefix_padding_ms]`: Silero VAD with those settings.",
        ),
        "beam_size": Schema(type=OpenAPIType.INTEGER, minimum=1, maximum=20),
        "batch_size": Schema(
            type=OpenAPIType.INTEGER,
            minimum=0,
            maximum=64,
            description="Chunks decoded at once (batched path); 0 forces sequential. Default: ASR_BATCH_SIZE "
            "for audio of at least ASR_BATCH_MIN_SECONDS.",
        ),
        "stream": Schema(type=b, description="Stream segments as server-sent events."),
    }
    if with_job_fields:
        props["task"] = Schema(type=s, enum=[t.value for t in jobs.Task])
        props["priority"] = Schema(type=OpenAPIType.INTEGER, minimum=-100, maximum=100)
        props["webhook_url"] = Schema(
            type=s, format=OpenAPIFormat.URI, description="POSTed the job summary when it ends."
        )
        del props["stream"]
    return Schema(type=OpenAPIType.OBJECT, properties=props, required=["file"])  # type: ignore[arg-type]  # dict of Schema is accepted


#: the transcript's renderings besides JSON, by media type (their bodies are plain strings)
_TEXT_RENDERINGS = {
    formats.MEDIA_TYPES[f]: f.value
    for f in (jobs.ResponseFormat.TEXT, jobs.ResponseFormat.SRT, jobs.ResponseFormat.VTT)
}


def operation_class(
    *, form: bool | None = None, transcript: bool = False, stream: bool = False, deduplicated: bool = False
) -> type[Operation]:
    """An Operation class documenting what Litestar cannot see in the handler's signature.

    `form`: the request is the multipart form (parsed by hand), with the job fields when True and
    OpenAI's fields when False. `transcript`: the 200 answer may also be text, SRT or WebVTT (its
    JSON shapes come from `transcript_response`). `stream`: or server-sent events (`stream=true`).
    `deduplicated`: the 200 answer (a deduplicated job) carries the 202's headers too.
    """

    @dataclass
    class DocumentedOperation(Operation):
        def __post_init__(self) -> None:
            if form is not None:
                self.request_body = RequestBody(
                    content={"multipart/form-data": OpenAPIMediaType(schema=_form_schema(form))},
                    required=True,
                )
            ok = (self.responses or {}).get("200")
            accepted = (self.responses or {}).get("202")
            if deduplicated and isinstance(ok, OpenAPIResponse) and isinstance(accepted, OpenAPIResponse):
                ok.headers = dict(accepted.headers or {})
            content = getattr(ok, "content", None)
            if content is None:
                return
            if transcript:
                json_schema = content["application/json"].schema
                if isinstance(json_schema, Schema) and json_schema.one_of:  # verbose_json is a json too
                    json_schema.any_of, json_schema.one_of = json_schema.one_of, None
                for media_type, fmt in _TEXT_RENDERINGS.items():
                    described = Schema(type=OpenAPIType.STRING, description=f"response_format={fmt}")
                    content[media_type] = OpenAPIMediaType(schema=described)
            if stream:
                events = Schema(
                    type=OpenAPIType.STRING, description="stream=true: transcript.text.delta events, then done"
                )
                content["text/event-stream"] = OpenAPIMediaType(schema=events)

    return DocumentedOperation


def transcript_response() -> dict[int, ResponseSpec]:
    """The 200 answer of a transcript: `Transcription` (json) or `VerboseTranscription` (verbose_json)."""
    return {
        200: ResponseSpec(
            data_container=formats.Transcription | formats.VerboseTranscription,
            description="The transcript: JSON for json and verbose_json; text, SRT or WebVTT otherwise.",
            generate_examples=False,
        )
    }


class ErrorDetail(msgspec.Struct):
    """What went wrong, in words a person understands, and a stable code (more fields may be present:
    `job_id`, the job's `status`, Litestar's validation `details`)."""

    message: str
    type: str
    code: str


class ErrorBody(msgspec.Struct):
    """Every error response: OpenAI's `{"error": {...}}` shape."""

    error: ErrorDetail


_ERROR_TEXT = {
    400: "The request is malformed or a field has a value this server does not accept.",
    401: "A valid API key is required (`Authorization: Bearer <key>`).",
    403: "Only an admin key (or an anonymous caller while keys are optional) may do this.",
    404: "No such job (or it belongs to another key), or no such model.",
    408: "The upload stalled or took too long.",
    409: "The job is not in a state that allows this.",
    413: "The upload or its audio duration is over this server's limit.",
    415: "The body is not multipart/form-data, or the file is not audio.",
    429: "Rate limit, concurrent uploads or queue full; see Retry-After.",
    503: "The database is unavailable; nothing was stored. See Retry-After.",
    504: "The transcription is still running after ASR_SYNC_TIMEOUT; follow the job.",
    507: "The server's disk is full; nothing was stored. See Retry-After.",
}

#: errors every route behind the key guard may answer
GUARDED = (401, 429, 503)


def error_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI declarations of the error statuses a route answers (plus the guard's), all `ErrorBody`."""
    return {
        status: ResponseSpec(data_container=ErrorBody, description=_ERROR_TEXT[status], generate_examples=False)
        for status in sorted({*statuses, *GUARDED})
    }


#: POST /v1/jobs: how a client tells a new job (202) from a deduplicated one (200)
DEDUP_200 = (
    "Deduplicated (ASR_DEDUP): a job of the same caller with this audio and the same model and options is"
    " queued, running or completed; this is that job (follow it like your own). `X-Deduplicated: true` says so."
)
SUBMIT_HEADERS = {
    "Location": "The job's URL (/v1/jobs/{id}).",
    "X-Job-Id": "The job's id.",
    "X-Deduplicated": "`true` when the answer is an existing job (status 200); absent otherwise.",
    "Idempotent-Replayed": "`true` when the Idempotency-Key was seen before and this is the job it made.",
}


#: the statuses of an upload (both /v1/audio endpoints and POST /v1/jobs)
UPLOAD_ERRORS = (400, 404, 408, 409, 413, 415, 507)
