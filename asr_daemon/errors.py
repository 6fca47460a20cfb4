"""Domain errors. Each maps to one HTTP status and carries a message a person understands."""

from __future__ import annotations


class AsrError(Exception):
    """Base of every error the daemon reports to a client."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str | None = None, *, retry_after: int | None = None, **extra: object) -> None:
        super().__init__(message or (self.__doc__ or "").strip())
        self.message = message or (self.__doc__ or "").strip()
        self.retry_after = retry_after
        self.extra = extra

    def body(self) -> dict[str, object]:
        """The JSON error body: OpenAI's `{"error": {...}}` shape."""
        return {"error": {"message": self.message, "type": self.code, "code": self.code, **self.extra}}


class BadRequest(AsrError):
    """The request is malformed."""

    status = 400
    code = "invalid_request"


class BadAudio(AsrError):
    """The file is not audio we can decode."""

    status = 400
    code = "invalid_audio"


class UnsupportedMedia(AsrError):
    """The file is not a recognised audio or video format."""

    status = 415
    code = "unsupported_media"


class Unauthorized(AsrError):
    """A valid API key is required."""

    status = 401
    code = "unauthorized"


class RequestTimeout(AsrError):
    """The request body did not arrive in time."""

    status = 408
    code = "request_timeout"


class Forbidden(AsrError):
    """This key may not do that (an admin key can)."""

    status = 403
    code = "forbidden"


class NotFound(AsrError):
    """No such resource."""

    status = 404
    code = "not_found"


class ModelNotFound(NotFound):
    """The model is not present on this host."""

    code = "model_not_found"

    def __init__(self, name: str, known: bool) -> None:
        hint = (
            f"run `asrctl models pull {name}` on the server to download it"
            if known
            else "see `asrctl models ls` (or GET /v1/models) for the models this host has"
        )
        super().__init__(f"model {name!r} is not available here: {hint}")


class StillRunning(AsrError):
    """The synchronous transcription outlived ASR_SYNC_TIMEOUT; the job goes on (follow it)."""

    status = 504
    code = "timeout"


class Conflict(AsrError):
    """The resource is not in a state that allows this."""

    status = 409
    code = "conflict"


class TooLarge(AsrError):
    """The upload is larger than this server accepts."""

    status = 413
    code = "too_large"


class QueueFull(AsrError):
    """Too many jobs are queued; retry later."""

    status = 429
    code = "queue_full"


class RateLimited(AsrError):
    """Too many requests for this key; retry later."""

    status = 429
    code = "rate_limited"


class Unavailable(AsrError):
    """A service the daemon needs is unavailable; retry later."""

    status = 503
    code = "unavailable"


class InsufficientStorage(AsrError):
    """The server has no space left to store the upload."""

    status = 507
    code = "insufficient_storage"


class JobFailed(Exception):
    """A transcription failed for a reason retrying cannot fix (bad audio, unknown language)."""
