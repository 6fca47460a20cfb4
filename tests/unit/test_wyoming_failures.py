"""A failed voice-command job is told to its Wyoming client by what went wrong: bad audio as the client's
`invalid_audio`, a missing model or audio as such, the server's own failures as `internal_error`."""

from __future__ import annotations

import pytest

from asr_daemon import errors, jobs
from asr_daemon.wyoming.commands import failure


@pytest.mark.parametrize(
    ("code", "wyoming_code", "status", "says"),
    [
        (jobs.ErrorCode.TRANSCRIPTION_FAILED, "invalid_audio", 400, "could not be transcribed"),
        (jobs.ErrorCode.MODEL_NOT_FOUND, "model_not_found", 404, "model is not on this host"),
        (jobs.ErrorCode.AUDIO_MISSING, "unavailable", 503, "audio was removed"),
        (jobs.ErrorCode.INTERNAL_ERROR, "internal_error", 500, "server failed"),
        (jobs.ErrorCode.WORKER_LOST, "internal_error", 500, "server failed"),
        ("some_future_code", "internal_error", 500, "server failed"),
        (None, "internal_error", 500, "server failed"),
    ],
)
def test_a_failed_jobs_error_code_maps_to_a_fitting_wyoming_error(
    code: jobs.ErrorCode | str | None, wyoming_code: str, status: int, says: str
) -> None:
    """Each job error code gets its own Wyoming code and text (not `invalid_audio` for every failure)."""
    err = failure(code, "the reason the worker recorded")
    assert isinstance(err, errors.AsrError)
    assert (err.code, err.status) == (wyoming_code, status)
    assert says in err.message and "the reason the worker recorded" in err.message


def test_a_failure_without_a_recorded_reason_still_says_something() -> None:
    """No error text stored: the message names the code rather than ending in `None`."""
    err = failure(jobs.ErrorCode.INTERNAL_ERROR, None)
    assert err.message.endswith(": internal_error")
