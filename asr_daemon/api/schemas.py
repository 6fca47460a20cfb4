"""Wire shapes: job views for responses, and the OpenAPI description of the multipart forms."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIFormat, OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema

from asr_daemon import jobs


def job_view(row: Any, *, base: str = "") -> dict[str, Any]:
    """A job as the API shows it: status, progress, timings, attempts, error and links."""
    jid = str(row["id"])
    duration = row["duration_s"] or 0.0
    return {
        "id": jid,
        "object": "transcription.job",
        "status": row["status"],
        "model": row["model"],
        "task": (row["options"] or {}).get("task", "transcribe"),
        "options": row["options"],
        "priority": row["priority"],
        "filename": row["filename"],
        "audio": {
            "sha256": row["audio_sha256"],
            "bytes": row["audio_bytes"],
            "duration_s": duration,
            "deleted": row["audio_deleted_at"] is not None,
        },
        "language": row["language"],
        "language_probability": row["language_probability"],
        "progress": {
            "processed_s": round(row["progress_s"], 3),
            "duration_s": duration,
            "fraction": round(min(1.0, row["progress_s"] / duration), 4) if duration else None,
        },
        "attempts": row["attempts"],
        "max_attempts": row["max_attempts"],
        "error": {"message": row["error"], "code": row["error_code"]} if row["error"] else None,
        "device": row["device"],
        "timings": row["timings"],
        "webhook_url": row["webhook_url"],
        "created_at": row["created_at"].isoformat(),
        "started_at": row["started_at"].isoformat() if row["started_at"] else None,
        "finished_at": row["finished_at"].isoformat() if row["finished_at"] else None,
        "links": {
            "self": f"{base}/v1/jobs/{jid}",
            "transcript": f"{base}/v1/jobs/{jid}/transcript",
            "events": f"{base}/v1/jobs/{jid}/events",
        },
    }


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
        "beam_size": Schema(type=OpenAPIType.INTEGER, minimum=1, maximum=20),
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


def multipart_operation(with_job_fields: bool) -> type[Operation]:
    """An Operation class whose request body documents the multipart form (parsed by hand)."""

    @dataclass
    class MultipartOperation(Operation):
        def __post_init__(self) -> None:
            self.request_body = RequestBody(
                content={"multipart/form-data": OpenAPIMediaType(schema=_form_schema(with_job_fields))},
                required=True,
            )

    return MultipartOperation


@dataclass
class ErrorDetail:
    """What went wrong, in words a person understands, and a stable code."""

    message: str
    type: str
    code: str


@dataclass
class ErrorBody:
    """Every error response: OpenAI's `{"error": {...}}` shape (more fields may be present)."""

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


#: the statuses of an upload (both /v1/audio endpoints and POST /v1/jobs)
UPLOAD_ERRORS = (400, 404, 408, 409, 413, 415, 507)
